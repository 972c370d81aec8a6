"""Learned denoising-based AMP (LDAMP; Metzler, Mousavi & Baraniuk, NeurIPS 2017).

D-AMP (Metzler, Maleki & Baraniuk 2016) with ``x_0 = 0``, ``z_{-1} = 0``:

    z_t     = y - A x_t + (1/m) z_{t-1} div D_{t-1}(x_{t-1} + A^T z_{t-1})     (Onsager term)
    sigma_t = ||z_t|| / sqrt(m)
    x_{t+1} = D_t(x_t + A^T z_t; sigma_t)

``m`` is the number of measurements and ``div D`` the divergence of the denoiser at its input,
estimated by Monte Carlo (Ramani, Blu & Unser 2008): ``div D(r) ~ b^T (D(r + eps b) - D(r)) /
eps`` with ``b ~ N(0, I)`` and ``eps = max|r| / 1000``. LDAMP unrolls ``T`` iterations with one
DnCNN denoiser per iteration (20 layers, 64 features in the paper).

Validity
--------
The Onsager correction makes ``x_t + A^T z_t`` behave like the signal plus white Gaussian
noise of variance ``sigma_t^2`` only for measurement matrices with i.i.d. (sub-)Gaussian
entries of variance ``1/m`` (large-system limit), which is what state evolution assumes. For
orthogonally invariant, partial-Fourier (MRI) or Radon (CT) operators the correction is wrong
and AMP can diverge; those need VAMP / D-VDAMP (Metzler & Wetzstein 2021), not implemented
here. :func:`valid_for` therefore accepts only :class:`DenseMatrix` operators marked i.i.d.
(e.g. from :func:`gaussian_matrix`), real-valued, and :class:`LDAMP` raises on anything else.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.input_checks import check_model_input
from mrirecon.operators.dense import DenseMatrix
from mrirecon.models.init import seeded_init


def valid_for(op: LinearOperator) -> tuple[bool, str]:
    """Whether the AMP Onsager correction is valid for ``op``, and why (not)."""
    if isinstance(op, DenseMatrix):
        if not op.iid:
            return False, "DenseMatrix not marked iid (AMP needs i.i.d. sub-Gaussian entries)"
        if op.matrix.is_complex():
            return False, "complex DenseMatrix (this LDAMP is for real signals and matrices)"
        return True, "i.i.d. Gaussian DenseMatrix"
    return False, (
        f"{type(op).__name__} is not an i.i.d. Gaussian matrix; for Fourier undersampling (MRI) "
        "use D-VDAMP / VAMP and for CT projectors an unrolled optimisation model (e.g. MoDL)"
    )


def check_valid(op: LinearOperator, who: str = "LDAMP") -> None:
    """Raise ``TypeError`` naming the operator unless :func:`valid_for` accepts it."""
    ok, why = valid_for(op)
    if not ok:
        raise TypeError(f"{who}: the AMP Onsager correction is valid only for real i.i.d. "
                        f"(sub-)Gaussian measurement matrices (DenseMatrix(iid=True), see "
                        f"gaussian_matrix); got {why}")


def mc_divergence(
    denoiser, r: Tensor, sigma: Tensor, *, denoised: Tensor | None = None, epsilon: Tensor | None = None,
    probes: int = 1, generator: torch.Generator | None = None, shared: bool = False,
) -> Tensor:
    """Monte-Carlo divergence ``sum_i dD_i/dr_i`` of ``denoiser(r, sigma)`` per batch item.

    Parameters
    ----------
    denoiser
        Callable ``(r (B, ...), sigma (B,)) -> (B, ...)``.
    r
        Real input ``(B, ...)``.
    sigma
        ``(B,)`` noise levels passed to the denoiser.
    denoised
        ``denoiser(r, sigma)`` if already computed.
    epsilon
        Finite-difference step ``(B,)``; default ``max|r| / 1000`` per item (Metzler et al.).
    probes
        Number of Gaussian probe vectors averaged (the estimate is unbiased up to O(eps)).
    generator
        Source of the probes.
    shared
        ``False``: an independent probe per batch item (copies of one ``r`` in a batch are
        that many probes). ``True``: each probe is drawn once in the per-item shape
        ``r.shape[1:]`` and used for every item, so an item's estimate does not depend on the
        batch size or on its position in the batch (a batch of one gets the same draw either
        way); :class:`LDAMP` uses this.

    Returns
    -------
    Tensor
        ``(B,)`` divergence estimates (differentiable).
    """
    b = r.shape[0]
    view = (b,) + (1,) * (r.ndim - 1)
    if denoised is None:
        denoised = denoiser(r, sigma)
    if epsilon is None:
        epsilon = r.detach().abs().reshape(b, -1).amax(1) / 1000 + torch.finfo(r.dtype).eps
    total = torch.zeros(b, dtype=r.dtype, device=r.device)
    for _ in range(probes):
        probe = torch.randn(r.shape[1:] if shared else r.shape, generator=generator, dtype=r.dtype,
                            device=r.device)
        diff = denoiser(r + epsilon.reshape(view) * probe, sigma) - denoised
        total = total + (probe * diff).reshape(b, -1).sum(1) / epsilon
    return total / probes


class SoftThreshold(nn.Module):
    """``eta(r) = sign(r) max(|r| - alpha sigma, 0)``: D-AMP with it is classical AMP for sparse
    signals (Donoho, Maleki & Montanari 2009). ``alpha`` may be learned."""

    def __init__(self, alpha: float = 1.5, learnable: bool = False) -> None:
        super().__init__()
        a = torch.tensor(float(alpha))
        if learnable:
            self.alpha = nn.Parameter(a)
        else:
            self.register_buffer("alpha", a)

    def forward(self, r: Tensor, sigma: Tensor) -> Tensor:
        thr = (self.alpha * sigma).reshape((-1,) + (1,) * (r.ndim - 1)).to(r.dtype)
        return torch.sign(r) * torch.clamp(r.abs() - thr, min=0)


class DnCNNDenoiser(nn.Module):
    """A residual DnCNN on real images ``(B, H, W)`` (one channel); ``sigma`` is not an input
    (LDAMP trains one denoiser per iteration, each for its own noise level).

    Batch norm is off by default: in training mode it would make ``D`` depend on the batch,
    and the finite-difference divergence compares two separate calls.
    """

    def __init__(self, depth: int = 20, features: int = 64, batchnorm: bool = False) -> None:
        super().__init__()
        self.cnn = DnCNN(1, 1, depth=depth, features=features, batchnorm=batchnorm, residual=True)

    def forward(self, r: Tensor, sigma: Tensor) -> Tensor:
        if r.ndim != 3:
            raise ValueError(f"DnCNNDenoiser: expected real images (B, H, W), got {tuple(r.shape)}")
        return self.cnn(r[:, None])[:, 0]


class LDAMP(nn.Module):
    """Learned D-AMP ``model(y, op) -> x`` for i.i.d. Gaussian measurements.

    Parameters
    ----------
    iterations
        Unrolled AMP iterations ``T`` (10 in the paper).
    depth, features, batchnorm
        DnCNN denoiser per iteration (20 layers, 64 features; see :class:`DnCNNDenoiser`).
    denoiser
        A fixed denoiser module ``(r, sigma) -> x`` used in every iteration instead (e.g.
        :class:`SoftThreshold` for sparse vectors); ``depth``/``features`` are then ignored.
    shared
        One DnCNN for all iterations instead of one per iteration.
    probes
        Monte-Carlo probes of the divergence estimate.
    seed
        Seed of the probe generator (re-seeded on every call, so the model is deterministic).
        The probes are shared by the batch items (:func:`mc_divergence`'s ``shared``), so item
        ``i`` of a batch gives what it gives run alone.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).

    Notes
    -----
    ``y`` is ``(B, m)``; the result has the operator's domain shape ``(B, *domain_shape)``.
    Raises ``TypeError`` (see :func:`check_valid`) for operators the Onsager term is not valid
    for.
    """

    def __init__(
        self,
        iterations: int = 10,
        depth: int = 20,
        features: int = 64,
        batchnorm: bool = False,
        denoiser: nn.Module | None = None,
        shared: bool = False,
        probes: int = 1,
        seed: int = 0,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        if denoiser is not None:
            self.denoisers = nn.ModuleList([denoiser])
        else:
            count = 1 if shared else iterations
            with seeded_init(init_seed):
                self.denoisers = nn.ModuleList(
                    [DnCNNDenoiser(depth, features, batchnorm) for _ in range(count)])
        self.iterations, self.probes, self.seed = int(iterations), int(probes), int(seed)

    def denoiser(self, t: int) -> nn.Module:
        return self.denoisers[min(t, len(self.denoisers) - 1)]

    def forward(self, y: Tensor, op: LinearOperator, *, return_history: bool = False):
        """Measurements ``y`` ``(B, m)`` -> estimate ``(B, *domain)``; with ``return_history``
        also the list of ``(r_t, sigma_t, x_{t+1})`` per iteration (denoiser input, its noise
        estimate ``(B,)`` and output)."""
        check_valid(op)
        check_model_input("LDAMP", self, y, op, batch_ndim=2)
        if y.is_complex():
            raise TypeError("LDAMP: complex measurements are not supported (real AMP)")
        gen = torch.Generator(device=y.device).manual_seed(self.seed)
        m = y.shape[-1]
        x = torch.zeros_like(op.H(y))
        z = y
        history = []
        for t in range(self.iterations):
            r = x + op.H(z)
            sigma = torch.linalg.vector_norm(z, dim=-1) / math.sqrt(m)
            d = self.denoiser(t)
            x = d(r, sigma)
            div = mc_divergence(d, r, sigma, denoised=x, probes=self.probes, generator=gen,
                                 shared=True)
            z = y - op(x) + z * (div / m)[:, None]
            history.append((r, sigma, x))
        return (x, history) if return_history else x
