"""Learned primal-dual reconstruction (Adler & Oktem, IEEE TMI 2018) over any LinearOperator.

Primal memory ``f`` (``n_primal`` images) and dual memory ``h`` (``n_dual`` data-space arrays)
start at zero; iteration ``i``:

    h <- h + Gamma_i(h, A f[1], y)          (dual CNN)
    f <- f + Lambda_i(f, A^H h[0])          (primal CNN)

and the output is ``f[0]``. Each CNN is conv(3x3, 32)-PReLU-conv(32)-PReLU-conv; published
defaults: 10 iterations, 5 primal and 5 dual memory channels, unshared weights. The CNNs convolve
over the last two axes of their variables; extra axes (MRI coils in k-space) fold into the
batch, complex variables use [real, imag] channels, real ones a zero imaginary channel.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.backbones.complex import from_channels, to_channels
from mrirecon.models.common import normalized_data, require_batch, run_stage


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


class LearnedPrimalDual(nn.Module):
    """Learned primal-dual ``model(y, op) -> x``.

    Parameters
    ----------
    iterations, n_primal, n_dual, features
        10, 5, 5, 32 as published.
    normalize
        Scale data so that ``max |A^H y| = 1``; undone on output.
    checkpointing
        Recompute each iteration in backward.
    """

    def __init__(
        self,
        iterations: int = 10,
        n_primal: int = 5,
        n_dual: int = 5,
        features: int = 32,
        normalize: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if n_primal < 2 or n_dual < 1:
            raise ValueError(f"LearnedPrimalDual: need n_primal >= 2 and n_dual >= 1, got {n_primal}, {n_dual}")
        self.iterations = nn.ModuleList([PrimalDualIteration(n_primal, n_dual, features) for _ in range(iterations)])
        self.n_primal, self.n_dual = n_primal, n_dual
        self.normalize, self.checkpointing = normalize, checkpointing

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)``."""
        require_batch("LearnedPrimalDual", y)
        if self.normalize:
            y, aty, scale = normalized_data(y, op)
        else:
            aty, scale = op.H(y), None
        f = aty.new_zeros((aty.shape[0], self.n_primal) + tuple(aty.shape[1:]))
        h = y.new_zeros((y.shape[0], self.n_dual) + tuple(y.shape[1:]))
        for iteration in self.iterations:
            f, h = run_stage(iteration, f, h, y, op, checkpointing=self.checkpointing)
        x = f[:, 0]
        return x * scale if scale is not None else x
