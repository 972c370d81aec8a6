"""Staged CT reconstruction: FBP, then U-Net corrections alternating with exact CG data consistency.

``model(y, op) -> x`` for CT projectors with the :class:`~mrirecon.core.HasFBP` capability
(also after ``op * c``):

1. ``x_0 = FBP_hann(y)`` (linear in ``y``; its intensities do not depend on the number of views
   or the matrix size, unlike ``A^H y``);
2. ``s`` = the 99th percentile of that FBP per sample; with ``lam0`` the FBP is then pulled to
   the data by one data-consistency step (below) of weight ``lam0``: the network sees ``x / s`` and its output
   is multiplied by ``s`` again, so ``model(c y, op) = c model(y, op)`` for ``c > 0`` and the
   scale never depends on the operator's norm, view count or image size. ``s`` has no floor
   and is differentiable in ``y`` (:func:`~mrirecon.models.common.sample_scale`); ``forward``
   first divides ``y`` by the power of two nearest above its peak (exact: the result is bit
   for bit that of ``y``) so that CG's squares neither underflow nor overflow float32, which
   keeps the equivariance from ``c = 1e-30`` to ``1e30``; an all-zero sample gives 0;
3. for each stage ``k``: ``z = x + s U_k(x / s)`` (a bias-free-input residual U-Net without
   normalisation layers, so that patch training transfers to whole images), then, when
   ``lam[k]`` is not ``None``, the exact proximal data-consistency step
   ``x = argmin ||A x - y||^2 + lam_k ||x - z||^2`` by ``cg_iterations`` CG iterations warm
   started at ``z``; ``lam`` is relative to ``||A||^2``, i.e. the model works on the unit-norm
   projector ``A / ||A||`` and data ``y / ||A||`` (as :mod:`mrirecon.pipeline.stages_ct` and
   the training pass them; ``forward`` scales a bare CT projector and its data so itself,
   :func:`~mrirecon.models.ct_scale.unit_norm_ct`, bit for bit as the pipeline does, and uses
   any other operator as given);
4. the output is real, in the units of ``x_0``.

With ``ensemble`` each U-Net correction is the geometric self-ensemble
(:func:`~mrirecon.models.common.dihedral_mean`): the mean over the 8 flips / transposes of its
input, mapped back (8 U-Net calls per stage). The trainer chooses it on the validation split.

The stages are trained one after the other (greedy), each on image patches of the previous
stage's whole-image output (:mod:`mrirecon.training.ct_staged`); the U-Nets are fully
convolutional and norm-free, so they run on the whole image at inference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from mrirecon.core import HasFBP, LinearOperator, require_capability
from mrirecon.core.magnitude import sample_power_of_two
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.ct_scale import unit_norm_ct
from mrirecon.models.common import dihedral_mean, sample_scale, zero_blank
from mrirecon.models.input_checks import check_model_input
from mrirecon.models.init import seeded_init
from mrirecon.solvers import cg


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.1),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1))


class PlainUNet(nn.Module):
    """U-Net ``(N, 1, H, W) -> (N, 1, H, W)`` without normalisation layers.

    ``num_pools`` average-pool levels with ``chans * 2**i`` features; inputs are zero padded to a
    multiple of ``2**num_pools`` and the output cropped back.
    """

    def __init__(self, chans: int = 16, num_pools: int = 4) -> None:
        super().__init__()
        w = [chans * 2**i for i in range(num_pools + 1)]
        self.down = nn.ModuleList([_block(1 if i == 0 else w[i - 1], w[i]) for i in range(num_pools)])
        self.middle = _block(w[num_pools - 1], w[num_pools])
        self.up = nn.ModuleList([nn.ConvTranspose2d(w[i + 1], w[i], 2, 2) for i in reversed(range(num_pools))])
        self.decode = nn.ModuleList([_block(2 * w[i], w[i]) for i in reversed(range(num_pools))])
        self.out = nn.Conv2d(w[0], 1, 1)
        self.multiple = 2**num_pools

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, 2)
        x = self.middle(x)
        for up, block in zip(self.up, self.decode):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        return self.out(x)[..., :h, :w]


def robust_scale(x: Tensor, q: float = 0.99) -> Tensor:
    """Per-sample ``q``-quantile of ``x`` ``(B, H, W)`` -> ``(B, 1, 1)`` (``max |x|`` if that is
    not positive, 1 for an all-zero sample): :func:`~mrirecon.models.common.sample_scale` with
    ``signed``; no floor, differentiable."""
    return sample_scale(x, q, signed=True)


class StagedCTNet(nn.Module):
    """FBP + ``iterations`` x (residual U-Net, CG data consistency); see the module docstring.

    Parameters
    ----------
    iterations
        Number of U-Net / data-consistency stages (the vocabulary's ``iterations``; ``stages``,
        its name before 2026-12-07, is accepted with a ``FutureWarning``). The state-dict keys
        (``nets.*``) are unchanged.
    chans, num_pools
        U-Net width and depth (16, 4).
    lam0
        Weight of the data-consistency step applied to the FBP before the first stage (``None``:
        none).
    lam
        Per-stage data-consistency weight relative to ``||A||^2`` (a float for all stages or a
        sequence; ``None`` skips the data-consistency step of that stage).
    cg_iterations
        CG iterations per data-consistency step.
    filter
        FBP filter of ``x_0``.
    ensemble
        Average each correction over the 8 flips / transposes of the image (see the module
        docstring).
    init_seed
        Seed of the weight initialisation.
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 2,
        chans: int = 16,
        num_pools: int = 4,
        lam: float | Sequence[float | None] | None = 0.1,
        lam0: float | None = None,
        cg_iterations: int = 15,
        filter: str = "hann",
        ensemble: bool = False,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        lams = list(lam) if isinstance(lam, (list, tuple)) else [lam] * iterations
        if len(lams) != iterations:
            raise ValueError(f"StagedCTNet: lam needs one value per stage (iterations = {iterations}), "
                             f"got {lams}")
        for v in lams + [lam0]:
            if v is not None and not float(v) > 0:
                raise ValueError(f"StagedCTNet: every lam / lam0 must be > 0 or None, got {lams}, {lam0}")
        with seeded_init(init_seed):
            self.nets = nn.ModuleList([PlainUNet(chans, num_pools) for _ in range(iterations)])
        self.lam = [None if v is None else float(v) for v in lams]
        self.lam0 = None if lam0 is None else float(lam0)
        self.cg_iterations, self.filter, self.ensemble = int(cg_iterations), filter, bool(ensemble)

    def initial(self, y: Tensor, op: LinearOperator, aty: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(x_0, s)``: the FBP ``(B, H, W)`` (after the ``lam0`` data-consistency step) and the
        FBP's robust scale ``(B, 1, 1)``."""
        x0 = require_capability(op, HasFBP, "StagedCTNet").fbp(y, filter=self.filter)
        x0 = x0.real if x0.is_complex() else x0
        s = robust_scale(x0)
        if self.lam0 is not None:
            x0 = self.solve(self.lam0, x0, y, op, aty)
        return x0, s

    def correct(self, k: int, x: Tensor, s: Tensor) -> Tensor:
        """``x + s U_k(x / s)`` for ``x`` ``(B, H, W)`` (``U_k`` self-ensembled with ``ensemble``)."""
        u = (x / s).unsqueeze(1)
        r = dihedral_mean(self.nets[k], u) if self.ensemble else self.nets[k](u)
        return x + s * r.squeeze(1)

    def data_consistency(self, k: int, z: Tensor, y: Tensor, op: LinearOperator,
                         aty: Tensor | None = None) -> Tensor:
        """The proximal point of ``||A x - y||^2`` at ``z`` with weight ``lam[k]`` (or ``z``)."""
        return z if self.lam[k] is None else self.solve(self.lam[k], z, y, op, aty)

    def solve(self, lam: float, z: Tensor, y: Tensor, op: LinearOperator,
              aty: Tensor | None = None) -> Tensor:
        """``(A^H A + lam I)^{-1} (A^H y + lam z)`` by CG warm started at ``z``."""
        aty = op.H(y) if aty is None else aty
        return cg(lambda v: op.gram(v) + lam * v, aty + lam * z, z,
                  iterations=self.cg_iterations, batch_dims=1)

    def stage(self, k: int, x: Tensor, s: Tensor, y: Tensor, op: LinearOperator,
              aty: Tensor | None = None) -> Tensor:
        """Stage ``k``: correction, then data consistency."""
        return self.data_consistency(k, self.correct(k, x, s), y, op, aty)

    @accepts_deprecated_names
    def forward(self, y: Tensor, op: LinearOperator, iterations: int | None = None) -> Tensor:
        """Data ``(..., B, views, detectors)`` -> image ``(..., B, H, W)``; ``iterations`` runs
        only the first that many stages (used by the stage-wise training; ``stages`` before
        2026-12-07, accepted with a ``FutureWarning``). A bare CT projector and its data
        are scaled to unit norm first (:func:`~mrirecon.models.ct_scale.unit_norm_ct`)."""
        check_model_input(type(self).__name__, self, y, op, batch_ndim=3)
        if y.is_complex():
            raise TypeError("StagedCTNet: CT data must be real")
        lead = y.shape[:-2]  # (..., B): one batch axis through the U-Nets (their conv2d took
        # (1, 1, 1, H, W) for "Expected 3D (unbatched) or 4D (batched) input"), restored at the end
        y = y.reshape(-1, *y.shape[-2:])
        y, op = unit_norm_ct(y, op)  # the scale the weights were trained at (lam, the U-Net)
        # an exact rescale (a power of two): at 1e-30 CG's <r, r> underflowed to 0 and the
        # data-consistency steps returned their start unchanged; at 1e30 they overflowed
        p = sample_power_of_two(y)
        yp = y / p
        aty = op.H(yp) if any(v is not None for v in self.lam + [self.lam0]) else None
        x, s = self.initial(yp, op, aty)
        for k in range(len(self.nets) if iterations is None else iterations):
            x = self.stage(k, x, s, yp, op, aty)
        x = zero_blank(x * p, y)
        return x.reshape(*lead, *x.shape[-2:])
