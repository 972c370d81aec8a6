"""Learned primal-dual reconstruction (Adler & Oktem, IEEE TMI 2018) over any LinearOperator.

Primal memory ``f`` (``n_primal`` images) and dual memory ``h`` (``n_dual`` data-space arrays)
start at zero; iteration ``i``:

    h <- h + Gamma_i(h, A f[1], y)          (dual CNN)
    f <- f + Lambda_i(f, A^H h[0])          (primal CNN)

and the output is ``f[0]``. Each CNN is conv(3x3, 32)-PReLU-conv(32)-PReLU-conv; published
defaults: 10 iterations, 5 primal and 5 dual memory channels, unshared weights. The CNNs convolve
over the last two axes of their variables; extra axes (MRI coils in k-space) fold into the
batch, complex variables use [real, imag] channels, real ones a zero imaginary channel.

CT: the CNNs are trained on the unit-norm projector ``A / ||A||`` and data ``y / ||A||``; given
the bare projector of a geometry (``model(y, ct_operator(geometry))``) the model applies that
scaling itself (:func:`~mrirecon.models.ct_scale.unit_norm_ct`, the pipeline's expressions: the
same output bit for bit); any other operator is used as given.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import HasFBP, LinearOperator, capability, require_capability
from mrirecon.models.backbones.complex import from_channels, to_channels
from mrirecon.models.ct_scale import unit_norm_ct
from mrirecon.models.common import zero_blank
from mrirecon.models.input_checks import check_model_input
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel
from mrirecon.models.unrolled.staged_ct import robust_scale


def _cnn(in_vars: int, out_vars: int, features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2 * in_vars, features, 3, padding=1),
        nn.PReLU(features),
        nn.Conv2d(features, features, 3, padding=1),
        nn.PReLU(features),
        nn.Conv2d(features, 2 * out_vars, 3, padding=1),
    )


def apply_over_last_two(net: nn.Module, x: Tensor) -> Tensor:
    """Apply a channel CNN to ``x`` ``(B, K, *extra, H, W)`` -> ``(B, K', *extra, H, W)``."""
    b, k = x.shape[:2]
    extra, hw = tuple(x.shape[2:-2]), tuple(x.shape[-2:])
    z = x.movedim(1, -3).reshape((-1, k) + hw)
    out = from_channels(net(to_channels(z)), x.is_complex())
    out = out.reshape((b,) + extra + (out.shape[1],) + hw)
    return out.movedim(-3, 1)


def _fbp(op: LinearOperator, y: Tensor) -> Tensor:
    """Real Hann FBP ``(B, H, W)`` of CT data ``y`` ``(B, views, detectors)``."""
    x = require_capability(op, HasFBP, "LearnedPrimalDual(fbp_start=True)").fbp(y, filter="hann")
    return x.real if x.is_complex() else x


class PrimalDualIteration(nn.Module):
    """One dual update followed by one primal update."""

    def __init__(self, n_primal: int, n_dual: int, features: int) -> None:
        super().__init__()
        self.dual = _cnn(n_dual + 2, n_dual, features)
        self.primal = _cnn(n_primal + 1, n_primal, features)

    def forward(self, f: Tensor, h: Tensor, y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor]:
        """Primal ``f`` ``(B, n_primal, *domain)``, dual ``h`` ``(B, n_dual, *range)``."""
        h = h + apply_over_last_two(self.dual, torch.cat([h, op(f[:, 1]).unsqueeze(1), y.unsqueeze(1)], dim=1))
        f = f + apply_over_last_two(self.primal, torch.cat([f, op.H(h[:, 0]).unsqueeze(1)], dim=1))
        return f, h


class LearnedPrimalDual(UnrolledModel):
    """Learned primal-dual ``model(y, op) -> x``.

    Parameters
    ----------
    iterations, n_primal, n_dual, features
        10, 5, 5, 32 as published.
    normalize
        Scale data so that ``max |A^H y| = 1``; undone on output.
    fbp_start
        CT (operators with an FBP, :class:`~mrirecon.core.HasFBP`): divide the data by the 99th
        percentile ``s`` of the Hann FBP instead (undone on output) and start every primal
        memory channel from the FBP ``/ s``. Unlike ``max |A^H y|``, ``s`` is the image's own
        intensity whatever the matrix, view count or ``||A||``, so the network always sees
        images of unit scale (``normalize`` is then ignored). The last convolution of each
        primal CNN starts at zero, so an untrained model returns the FBP. ``s`` has no floor
        (``model(c y) = c model(y)`` to rounding for ``c`` from 1e-30 to 1e30 on float32 data;
        an all-zero sample gives 0) and is differentiable in ``y``
        (:func:`~mrirecon.models.common.sample_scale`).
    checkpointing
        Recompute each iteration in backward.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).

    A bare CT projector (:func:`~mrirecon.operators.ct.ct_operator`) is replaced by ``A / ||A||``
    and the data by ``y / ||A||`` (:func:`~mrirecon.models.ct_scale.unit_norm_ct`), as the
    pipeline and the training pass them; other operators are used as given.

    The unrolled iterations are the module list ``self.iterations`` (its state-dict keys
    ``iterations.<i>.*`` are those of the shipped weights).
    """

    def __init__(
        self,
        iterations: int = 10,
        n_primal: int = 5,
        n_dual: int = 5,
        features: int = 32,
        normalize: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = None,
        fbp_start: bool = False,
    ) -> None:
        super().__init__()
        if n_primal < 2 or n_dual < 1:
            raise ValueError(f"LearnedPrimalDual: need n_primal >= 2 and n_dual >= 1, got {n_primal}, {n_dual}")
        with seeded_init(init_seed):
            self.iterations = nn.ModuleList([PrimalDualIteration(n_primal, n_dual, features)
                                             for _ in range(iterations)])
        self.n_primal, self.n_dual = n_primal, n_dual
        self.normalize, self.checkpointing = normalize, checkpointing
        self.fbp_start = bool(fbp_start)
        if self.fbp_start:  # start as the identity on the FBP: the last primal conv at zero
            for it in self.iterations:
                nn.init.zeros_(it.primal[-1].weight)
                nn.init.zeros_(it.primal[-1].bias)

    def num_steps(self) -> int:
        return len(self.iterations)

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``(B, ...)`` -> image ``(B, H, W)``; CT data ``(..., B, views, detectors)`` keep
        their extra leading axes, each slice scaled alone (as ``staged_ct``): one scale over a
        stack had made each slice's image depend on its neighbours (a 0.05x slice beside a
        phantom: 20.6 -> 12.6 dB) and left a blank slice non-zero."""
        if not (isinstance(y, Tensor) and y.ndim > 3 and capability(op, HasFBP) is not None):
            return super().forward(y, op)
        lead = y.shape[:-2]
        x = super().forward(y.reshape(-1, *y.shape[-2:]), op)
        return x.reshape(*lead, *x.shape[-2:])

    def prepare(self, y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor, Tensor | None]:
        """With ``fbp_start``: ``(y / s, A^H y / s, s)``, ``s`` the FBP's 99th percentile."""
        if not self.fbp_start:
            return super().prepare(y, op)
        y, aty, s, _ = self._fbp_prepare(y, op)
        return y, aty, s

    def _fbp_prepare(self, y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(y / s, A^H y / s, s, FBP(y) / s)`` from one FBP (it is linear in ``y``)."""
        # (B, views, detectors): a (views, detectors) sinogram's rows were taken for samples
        check_model_input(type(self).__name__, self, y, op, batch_ndim=3)
        x = _fbp(op, y)
        s = robust_scale(x)
        y = y / s.reshape((-1,) + (1,) * (y.ndim - 1))
        return y, op.H(y), s, x / s.reshape((-1,) + (1,) * (x.ndim - 1))

    def iterate(self, y: Tensor, op: LinearOperator) -> tuple[tuple[Tensor, Tensor], Tensor | None]:
        """A bare CT projector and its data scaled to unit norm first (:func:`unit_norm_ct`).
        With ``fbp_start`` the FBP gives both the scale and the primal start, computed once."""
        y, op = unit_norm_ct(y, op)
        if not self.fbp_start:
            return super().iterate(y, op)
        y, aty, s, x = self._fbp_prepare(y, op)
        return self.run_steps(self.initial_state(y, op, aty, fbp=x), y, op, aty), zero_blank(s, x)

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor,
                      fbp: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Dual memory at zero; primal memory at zero, or every channel at the FBP of the
        (scaled) data with ``fbp_start`` (``fbp``: that FBP when the caller has it)."""
        shape = (aty.shape[0], self.n_primal) + tuple(aty.shape[1:])
        if self.fbp_start:
            x = _fbp(op, y) if fbp is None else fbp
            f = x.to(aty.dtype).unsqueeze(1).expand(shape).contiguous()
        else:
            f = aty.new_zeros(shape)
        h = y.new_zeros((y.shape[0], self.n_dual) + tuple(y.shape[1:]))
        return f, h

    def step(self, i: int, state: tuple[Tensor, Tensor], y: Tensor, op: LinearOperator,
             aty: Tensor) -> tuple[Tensor, Tensor]:
        f, h = state
        return self.iterations[i](f, h, y, op)

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0][:, 0]
