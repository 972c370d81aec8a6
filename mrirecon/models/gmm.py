"""Patch Gaussian mixture prior (Zoran & Weiss 2011).

Patches are taken by :class:`mrirecon.operators.Patches`.

The prior models DC-removed ``p x p`` patches: a patch ``z`` (``d = p^2`` pixels) is written in
an orthonormal basis ``U`` (``d x (d-1)``, the 2-D DCT without its constant function) as
``w = U^T z``; its mean (DC) is unmodelled (flat prior) and ``w`` follows the mixture
``sum_k pi_k N(w; U^T mu_k, U^T Sigma_k U)``. Means, covariances and weights are stored in the
full ``d``-dimensional pixel space (``covs`` of rank ``d - 1``), like the published EPLL models.

Everything here is real; a complex image is handled by its callers as two real images (real
and imaginary parts, each with the same prior).

Contents
--------
:class:`PatchGMM`
    The mixture: log-likelihood, posterior responsibilities, Wiener (per-component MAP)
    estimates of noisy patches, EM fitting (:meth:`PatchGMM.fit`), built from tensors
    (:func:`patch_gmm_from_state_dict`; the shipped weights come through
    :func:`mrirecon.training.weights.load_patch_gmm`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator


# ---- the mixture -----------------------------------------------------------------------------


def dc_free_basis(patch_size: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Orthonormal basis ``(p*p, p*p - 1)`` of zero-mean patches: the 2-D DCT-II functions
    except the constant one (columns ordered by frequency index, row-major)."""
    p = int(patch_size)
    n = np.arange(p)
    c = np.sqrt(2.0 / p) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * p))
    c[0] /= np.sqrt(2.0)
    basis = np.kron(c, c).T  # column j: the j-th 2-D DCT function, row-major pixels
    return torch.tensor(basis[:, 1:], dtype=dtype)


class _Prepared:
    """Per-component quantities for one noise variance in DC-free coordinates."""

    def __init__(self, gmm: PatchGMM, noise_var: Tensor | float, dtype: torch.dtype) -> None:
        u = dc_free_basis(gmm.patch_size, dtype).to(gmm.means.device)
        means, covs, weights = gmm.effective()
        covs = covs.to(dtype)
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        cw = u.T @ covs @ u  # (K, d', d')
        eye = torch.eye(cw.shape[-1], dtype=dtype, device=cw.device)
        nv = noise_var if isinstance(noise_var, Tensor) else torch.tensor(float(noise_var), dtype=dtype)
        nv = nv.to(dtype=dtype, device=cw.device)
        chol = torch.linalg.cholesky(cw + (nv + gmm.eps) * eye)
        self.inv_chol = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
        self.logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        self.means = means.to(dtype) @ u  # (K, d')
        w = weights.to(dtype).clamp_min(1e-30)
        self.log_weights = torch.log(w / w.sum())
        self.basis, self.noise_var, self.dim = u, nv, cw.shape[-1]

    def whitened(self, w: Tensor) -> list[Tensor]:
        """``L_k^{-1} (w - m_k)`` for every component, each ``(N, d')``."""
        return [(w - self.means[k]) @ self.inv_chol[k].T for k in range(self.means.shape[0])]

    def log_joint(self, sols: list[Tensor]) -> Tensor:
        """``log pi_k + log N(w; m_k, C_k + s^2 I)`` as ``(N, K)``."""
        const = self.dim * math.log(2 * math.pi)
        cols = [
            self.log_weights[k] - 0.5 * (s.square().sum(-1) + self.logdet[k] + const)
            for k, s in enumerate(sols)
        ]
        return torch.stack(cols, dim=-1)


class PatchGMM(nn.Module):
    """Gaussian mixture over DC-removed ``p x p`` patches.

    Parameters
    ----------
    means
        ``(K, p*p)`` component means (zero for a Zoran-Weiss model), pixel space.
    covs
        ``(K, p*p, p*p)`` covariances (symmetric, positive semi-definite; the DC direction is
        ignored).
    weights
        ``(K,)`` mixing weights (normalised on use).
    eps
        Variance added to every DC-free direction (keeps the components invertible).
    trainable
        Add learnable corrections (``mean_shift``, ``cov_factor``, ``weight_logits``, zero at
        start) that keep every covariance positive semi-definite and the weights a
        distribution: the effective mixture is ``means + mean_shift``,
        ``(I + cov_factor) covs (I + cov_factor)^T`` and ``weights * exp(weight_logits)``
        renormalised (:meth:`effective`). ``means``, ``covs``, ``weights`` stay buffers.

    Notes
    -----
    Images are expected in roughly ``[0, 1]``: the shipped model was fitted on images scaled
    to that range. All methods take real patches ``(..., p*p)``; leading dims are batch dims.
    """

    def __init__(
        self, means: Tensor, covs: Tensor, weights: Tensor, *, eps: float = 1e-6, trainable: bool = False
    ) -> None:
        super().__init__()
        k, d = means.shape
        p = int(round(math.sqrt(d)))
        if p * p != d:
            raise ValueError(f"PatchGMM: means must be (K, p*p), got {tuple(means.shape)}")
        if tuple(covs.shape) != (k, d, d) or tuple(weights.shape) != (k,):
            raise ValueError(
                f"PatchGMM: expected covs {(k, d, d)} and weights {(k,)}, "
                f"got {tuple(covs.shape)} and {tuple(weights.shape)}"
            )
        for name, t in (("means", means), ("covs", covs), ("weights", weights)):
            self.register_buffer(name, t.detach().clone())
        self.trainable = bool(trainable)
        if self.trainable:
            # learnable corrections that keep the mixture valid: means + mean_shift,
            # F covs F^T with F = I + cov_factor, weights * exp(weight_logits) (renormalised)
            self.mean_shift = nn.Parameter(torch.zeros_like(self.means))
            self.cov_factor = nn.Parameter(torch.zeros_like(self.covs))
            self.weight_logits = nn.Parameter(torch.zeros_like(self.weights))
        self.patch_size, self.eps = p, float(eps)

    def effective(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(means, covs, weights)`` in use (with the learned corrections when trainable)."""
        if not self.trainable:
            return self.means, self.covs, self.weights
        f = torch.eye(self.covs.shape[-1], dtype=self.covs.dtype, device=self.covs.device) + self.cov_factor
        w = self.weights.clamp_min(1e-30) * torch.exp(self.weight_logits)
        return self.means + self.mean_shift, f @ self.covs @ f.transpose(-1, -2), w / w.sum()

    def folded(self) -> PatchGMM:
        """A fixed (non-trainable) copy with the learned corrections folded in."""
        means, covs, weights = (t.detach() for t in self.effective())
        return PatchGMM(means, covs, weights, eps=self.eps)

    @property
    def num_components(self) -> int:
        return int(self.means.shape[0])

    def extra_repr(self) -> str:
        return f"components={self.num_components}, patch={self.patch_size}x{self.patch_size}"

    @classmethod
    def isotropic(cls, components: int = 20, patch_size: int = 8, variance: float = 1e-2, **kw) -> PatchGMM:
        """An untrained mixture (zero means, ``variance * (I - 11^T/d)`` covariances), e.g. as
        the shell that a state dict is loaded into."""
        d = patch_size * patch_size
        centre = torch.eye(d) - torch.full((d, d), 1.0 / d)
        scales = torch.logspace(-2, 0, components)[:, None, None]
        return cls(torch.zeros(components, d), variance * scales * centre,
                   torch.full((components,), 1.0 / components), **kw)

    def _check(self, z: Tensor) -> None:
        d = self.patch_size**2
        if z.is_complex() or z.shape[-1] != d:
            raise ValueError(f"PatchGMM: patches must be real (..., {d}), got {tuple(z.shape)} {z.dtype}")

    def prepare(self, noise_var: Tensor | float = 0.0, dtype: torch.dtype = torch.float64) -> _Prepared:
        """Precompute Cholesky factors of ``Sigma_k + noise_var I`` (reuse across calls)."""
        return _Prepared(self, noise_var, dtype)

    def log_likelihood(self, z: Tensor, prepared: _Prepared | None = None) -> Tensor:
        """``log p(z)`` per patch ``(...,)`` (density of the DC-free coordinates; flat DC).

        With a ``prepared`` noise variance ``s^2`` this is the likelihood of a noisy patch,
        ``sum_k pi_k N(w; m_k, C_k + s^2 I)``.
        """
        self._check(z)
        prep = prepared or self.prepare(0.0, z.dtype)
        w = z.reshape(-1, z.shape[-1]) @ prep.basis
        return torch.logsumexp(prep.log_joint(prep.whitened(w)), dim=-1).reshape(z.shape[:-1])

    def responsibilities(self, z: Tensor, noise_var: Tensor | float = 0.0) -> Tensor:
        """Posterior component probabilities ``p(k | z)`` of noisy patches, ``(..., K)``."""
        self._check(z)
        prep = self.prepare(noise_var, z.dtype)
        w = z.reshape(-1, z.shape[-1]) @ prep.basis
        lj = prep.log_joint(prep.whitened(w))
        return torch.softmax(lj, dim=-1).reshape(*z.shape[:-1], -1)

    def denoise(self, z: Tensor, noise_var: Tensor | float, mode: str = "map") -> Tensor:
        """Estimate clean patches from noisy ``z = x + n``, ``n ~ N(0, noise_var I)``.

        Parameters
        ----------
        z
            Real patches ``(..., p*p)``.
        noise_var
            Noise variance ``s^2`` (scalar, same units as the squared patch values).
        mode
            ``"map"``: the Wiener estimate ``m_k + Sigma_k (Sigma_k + s^2 I)^{-1} (w - m_k)``
            under the most likely component ``k = argmax p(k | z)`` (EPLL's approximate MAP);
            ``"mean"``: the posterior mean ``sum_k p(k | z)`` times each component's Wiener
            estimate (the mean-field / soft-EM step, differentiable in every argument).

        Returns
        -------
        Tensor
            Estimates ``(..., p*p)``; the patch mean (DC) is kept from ``z``.
        """
        self._check(z)
        if mode not in ("map", "mean"):
            raise ValueError(f"PatchGMM.denoise: mode must be 'map' or 'mean', got {mode!r}")
        prep = self.prepare(noise_var, z.dtype)
        flat = z.reshape(-1, z.shape[-1])
        w = flat @ prep.basis
        sols = prep.whitened(w)
        lj = prep.log_joint(sols)
        # Wiener: w - s^2 (C_k + s^2 I)^{-1} (w - m_k) = w - s^2 L_k^{-T} sol_k
        if mode == "map":
            best = lj.argmax(dim=-1)
            corr = torch.zeros_like(w)
            for k, s in enumerate(sols):
                sel = best == k
                if bool(sel.any()):
                    corr[sel] = s[sel] @ prep.inv_chol[k]
        else:
            gamma = torch.softmax(lj, dim=-1)
            corr = sum(gamma[:, k : k + 1] * (s @ prep.inv_chol[k]) for k, s in enumerate(sols))
        w_hat = w - prep.noise_var * corr
        out = flat + (w_hat - w) @ prep.basis.T  # change only the DC-free part
        return out.reshape(z.shape)

    # ---- fitting -----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        patches: Tensor,
        components: int = 20,
        *,
        iterations: int = 50,
        zero_mean: bool = True,
        eps: float = 1e-6,
        callback=None,
    ) -> PatchGMM:
        """Fit a mixture to patches by EM (float64, deterministic).

        Parameters
        ----------
        patches
            Real ``(N, p*p)``; their DC is removed here.
        components
            ``K``.
        iterations
            EM iterations.
        zero_mean
            Keep the component means at zero (Zoran & Weiss 2011) instead of estimating them.
        eps
            Variance added to the covariances each M-step.
        callback
            ``callback(iteration, mean_log_likelihood)`` after each E-step.

        Notes
        -----
        Initialisation is deterministic: patches are assigned to ``components`` groups by
        quantiles of their standard deviation and, within each band, by the dominant gradient
        orientation (4 bins), followed by one M-step.
        """
        if patches.ndim != 2:
            raise ValueError(f"PatchGMM.fit: patches must be (N, p*p), got {tuple(patches.shape)}")
        n, d = patches.shape
        p = int(round(math.sqrt(d)))
        u = dc_free_basis(p, torch.float64).to(patches.device)
        w = patches.to(torch.float64) @ u  # (N, d'), DC removed
        labels = _initial_labels(patches.to(torch.float64).reshape(n, p, p), components)
        resp = torch.nn.functional.one_hot(labels, components).to(torch.float64)
        means, covs, weights = _m_step(w, resp, zero_mean, eps)
        for it in range(iterations):
            gmm = cls(means @ u.T, u @ covs @ u.T, weights, eps=0.0)
            prep = gmm.prepare(0.0, torch.float64)
            lj = prep.log_joint(prep.whitened(w))
            ll = torch.logsumexp(lj, dim=-1)
            if callback is not None:
                callback(it, float(ll.mean()))
            resp = torch.exp(lj - ll[:, None])
            means, covs, weights = _m_step(w, resp, zero_mean, eps)
        return cls(means @ u.T, u @ covs @ u.T, weights, eps=0.0)


def _initial_labels(patches: Tensor, components: int) -> Tensor:
    n = patches.shape[0]
    orient = 4 if components % 4 == 0 and components >= 8 else 1
    bands = components // orient
    std = patches.reshape(n, -1).std(dim=-1)
    edges = torch.quantile(std, torch.linspace(0, 1, bands + 1, dtype=std.dtype,
                                               device=std.device)[1:-1])
    band = torch.bucketize(std, edges)
    gy = (patches[:, 1:, :] - patches[:, :-1, :]).mean(dim=(1, 2))
    gx = (patches[:, :, 1:] - patches[:, :, :-1]).mean(dim=(1, 2))
    angle = torch.remainder(torch.atan2(gy, gx), math.pi)
    o = torch.clamp((angle / (math.pi / orient)).long(), max=orient - 1)
    return band * orient + o


def _m_step(w: Tensor, resp: Tensor, zero_mean: bool, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    nk = resp.sum(0).clamp_min(1e-10)
    means = (torch.zeros(resp.shape[1], w.shape[1], dtype=w.dtype, device=w.device) if zero_mean
             else (resp.T @ w) / nk[:, None])
    covs = []
    eye = torch.eye(w.shape[1], dtype=w.dtype, device=w.device)
    for k in range(resp.shape[1]):
        c = w - means[k]
        covs.append((c * resp[:, k : k + 1]).T @ c / nk[k] + eps * eye)
    return means, torch.stack(covs), nk / nk.sum()


# ---- shipped weights -------------------------------------------------------------------------


def patch_gmm_from_state_dict(state: dict[str, Tensor], *, trainable: bool = False,
                              where: str = "state dict") -> PatchGMM:
    """The mixture in a state dict with keys ``means``, ``covs``, ``weights`` (optionally
    prefixed ``gmm.``, as in an :class:`~mrirecon.models.unrolled.UnrolledEM` state dict; learned
    corrections, if saved, are folded in). ``trainable`` adds fresh learnable corrections.

    Reads no file: the shipped 8x8, 20-component model (``"patch_gmm"``, see its card) comes from
    :func:`mrirecon.training.weights.load_patch_gmm` (``where`` names the source in errors).
    """
    for prefix in ("", "gmm."):
        keys = [prefix + k for k in ("means", "covs", "weights")]
        if all(k in state for k in keys):
            learned = prefix + "cov_factor" in state
            gmm = PatchGMM(*(state[k] for k in keys), trainable=learned)
            if learned:
                n = len(prefix)
                gmm.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(prefix)})
                gmm = gmm.folded()
            if trainable:
                gmm = PatchGMM(gmm.means, gmm.covs, gmm.weights, eps=gmm.eps, trainable=True)
            return gmm
    raise ValueError(f"patch GMM: {where} has no 'means', 'covs', 'weights' tensors "
                     f"(keys: {sorted(state)[:8]})")


# ---- helpers shared by EPLL and the unrolled EM network ----------------------------------------


def split_complex(z: Tensor) -> Tensor:
    """Complex ``(..., d)`` -> real ``(2, ..., d)`` (real and imaginary parts as two patch sets);
    a real tensor is returned unchanged."""
    return torch.stack([z.real, z.imag]) if z.is_complex() else z


def merge_complex(z: Tensor, complex_output: bool) -> Tensor:
    """Inverse of :func:`split_complex`."""
    return torch.complex(z[0], z[1]) if complex_output else z


def normalise_problem(
    y: Tensor, op: LinearOperator, *, batch_dims: int = 0, ls_iterations: int = 10,
    power_iterations: int = 30, damping: float = 1e-3,
) -> tuple[Tensor, Tensor, Tensor]:
    """Scales that make one set of prior parameters serve MRI and CT.

    Returns ``(x_ls, scale, lipschitz)``: ``lipschitz = ||A||^2`` (power iteration) per batch
    item, a damped least-squares image ``x_ls`` (``ls_iterations`` of CG on
    ``(A^H A / lipschitz + damping I) x = A^H y / lipschitz``) and ``scale = max |x_ls|`` per
    batch item (over everything when ``batch_dims = 0``), both shaped to broadcast against
    images. Dividing ``y`` and ``x_ls`` by ``scale`` puts the image in about ``[0, 1]``, the range
    the patch prior was fitted on.

    Every batch item's power iteration starts from the vector one item alone starts from, so a
    batch gets the ``lipschitz`` (and the reconstruction) of each item alone. Was: the largest
    over the batch, so a slice whose coil maps were 3x weaker than its neighbour's took 9x
    smaller steps and scored 33.6 dB in the batch, 40.9 dB alone.

    ``x_ls`` and ``scale`` are differentiable (in ``y`` and in tensors of ``op`` that require
    a gradient), so a model that computes ``scale f(y / scale)`` gets the gradient of what it
    computes w.r.t. its data. ``lipschitz`` is a deliberate stop-gradient (the power iteration
    runs under ``no_grad``): it does not depend on ``y``, and inside the unrolled EM network's
    implicit CG a ``gram`` holding a tensor with its own graph to the coil maps cannot be
    differentiated (the implicit backward takes the maps as independent tensors); the gradient
    w.r.t. coil maps that require one therefore misses ``d lipschitz / d maps`` (4.8e-3 off
    finite differences on a 16 x 16, 3-coil case). Was: all three under ``no_grad``,
    and the network's gradient w.r.t. its data was 6.4e-2 off finite differences (5.9e-2 with
    40 CG steps, where it should vanish).
    """
    from mrirecon.solvers import cg, max_eigenvalue

    aty = op.H(y)
    tiny = torch.finfo(aty.real.dtype).tiny
    generator = torch.Generator(device=aty.device).manual_seed(0)
    lip = max_eigenvalue(op.gram, aty, batch_dims=batch_dims, iterations=power_iterations,
                         generator=generator).clamp_min(tiny)  # per slice, as each alone
    if batch_dims == 0:
        lip = lip.reshape(())
    x_ls = cg(lambda v: op.gram(v) / lip + damping * v, aty / lip, iterations=ls_iterations,
              batch_dims=batch_dims)
    dims = tuple(range(batch_dims, x_ls.ndim))
    scale = x_ls.abs().amax(dim=dims, keepdim=True).clamp_min(torch.finfo(aty.real.dtype).tiny)
    return x_ls, scale, lip
