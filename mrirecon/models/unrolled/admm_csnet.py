"""ADMM-CSNet (Yang, Sun, Li & Xu, IEEE TPAMI 2020), the generic variant for any operator.

Each stage unrolls one ADMM iteration for ``min 0.5 ||A x - y||^2 + sum g(D x)``, split as
``z = D x`` with multiplier ``beta`` (cyclically ordered so that a stage ends with ``x``):

    z    <- S(D x + beta)                                      (nonlinear transform layer)
    beta <- beta + tau (D x - z)                               (multiplier update layer)
    x    <- x - eta [A^H (A x - y) + rho D^T (D x - z + beta)]   (reconstruction layer)

with learned convolution filters ``D`` (``D^T`` the transposed convolution), a learned
piecewise-linear shrinkage ``S`` per filter (control points on ``[-vmax, vmax]``, initialised to
soft thresholding) and learned ``eta``, ``rho``, ``tau`` per stage. Defaults: 10 stages, 8 filters
of 3 x 3, 101 control points.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.backbones.complex import (
    flatten_image_batch,
    from_channels,
    to_channels,
    unflatten_image_batch,
)
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel


class PiecewiseLinear(nn.Module):
    """Learned per-channel piecewise-linear function (linear extrapolation outside the range).

    Parameters
    ----------
    channels
        Number of independent functions.
    num_points
        Control points, uniform on ``[-vmax, vmax]``.
    vmax
        Half range of the control points.
    threshold
        Initial shape: soft thresholding ``sign(v) max(|v| - threshold, 0)``.
    """

    def __init__(self, channels: int, num_points: int = 101, vmax: float = 1.0, threshold: float = 0.01) -> None:
        super().__init__()
        if num_points < 2:
            raise ValueError(f"PiecewiseLinear: need >= 2 control points, got {num_points}")
        grid = torch.linspace(-vmax, vmax, num_points)
        self.vmin, self.step = -vmax, 2 * vmax / (num_points - 1)
        init = torch.sign(grid) * torch.clamp(grid.abs() - threshold, min=0)
        self.values = nn.Parameter(init.repeat(channels, 1))  # (channels, num_points)

    def forward(self, z: Tensor) -> Tensor:
        """Real ``(N, channels, H, W)`` -> same shape."""
        n, c, h, w = z.shape
        t = (z - self.vmin) / self.step
        idx = torch.clamp(torch.floor(t), 0, self.values.shape[1] - 2).long()
        frac = t - idx
        flat = idx.permute(1, 0, 2, 3).reshape(c, -1)
        lo = torch.gather(self.values, 1, flat).reshape(c, n, h, w).permute(1, 0, 2, 3)
        hi = torch.gather(self.values, 1, flat + 1).reshape(c, n, h, w).permute(1, 0, 2, 3)
        return lo + frac * (hi - lo)


class ADMMCSNetStage(nn.Module):
    """One unrolled ADMM iteration (reconstruction, nonlinear transform, multiplier update)."""

    def __init__(self, num_filters: int, kernel_size: int, num_points: int, eta: float, rho: float):
        super().__init__()
        std = 1.0 / math.sqrt(2 * kernel_size**2)
        self.filters = nn.Parameter(torch.randn(num_filters, 2, kernel_size, kernel_size) * std)
        self.eta = nn.Parameter(torch.tensor([float(eta)]))
        self.rho = nn.Parameter(torch.tensor([float(rho)]))
        self.tau = nn.Parameter(torch.tensor([1.0]))
        self.shrink = PiecewiseLinear(num_filters, num_points)

    def transform(self, x: Tensor) -> Tensor:
        """``D x``: images ``(B, H, W)`` -> real features ``(B, F, H, W)``."""
        flat, _ = flatten_image_batch(x)
        return F.conv2d(to_channels(flat), self.filters, padding=self.filters.shape[-1] // 2)

    def transform_adjoint(self, v: Tensor, like: Tensor) -> Tensor:
        """``D^T v``: features -> images shaped and typed like ``like``."""
        r = F.conv_transpose2d(v, self.filters, padding=self.filters.shape[-1] // 2)
        return unflatten_image_batch(from_channels(r, like.is_complex()), tuple(like.shape[:-2]))

    def forward(self, x: Tensor, beta: Tensor, y: Tensor, op: LinearOperator, aty: Tensor):
        """State ``(x, beta)`` -> next state (``z`` is recomputed from ``x`` each stage)."""
        dx = self.transform(x)
        z = self.shrink(dx + beta)
        beta = beta + self.tau * (dx - z)
        grad = op.gram(x) - aty + self.rho * self.transform_adjoint(dx - z + beta, x)
        return x - self.eta * grad, beta


class ADMMCSNet(UnrolledModel):
    """Generic ADMM-CSNet ``model(y, op) -> x``.

    Parameters
    ----------
    iterations, num_filters, kernel_size, num_points
        Unrolled iterations, transform filters, their size (odd: ``ValueError`` otherwise),
        shrinkage control points.
    eta, rho
        Initial step size and penalty.
    normalize
        Scale data so that ``max |A^H y| = 1`` (the shrinkage range is fixed), undone on output.
    checkpointing
        Recompute each stage in backward.
    init_seed
        Seed of the filter initialisation (:func:`~mrirecon.models.init.seeded_init`; 0 by
        default, so an untrained network is reproducible).
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 10,
        num_filters: int = 8,
        kernel_size: int = 3,
        num_points: int = 101,
        eta: float = 0.5,
        rho: float = 0.1,
        normalize: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = 0,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:  # padding k // 2 keeps the size only for odd k
            raise ValueError(f"ADMMCSNet: kernel_size must be odd and >= 1 (the filters pad by "
                             f"kernel_size // 2, so an even size changes the image size), got "
                             f"{kernel_size}")
        with seeded_init(init_seed):
            self.stages = nn.ModuleList(
                [ADMMCSNetStage(num_filters, kernel_size, num_points, eta, rho) for _ in range(iterations)]
            )
        self.normalize, self.checkpointing = normalize, checkpointing

    def num_steps(self) -> int:
        return len(self.stages)

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, beta) = (A^H y, 0)``."""
        n = math.prod(aty.shape[:-2])
        num_filters = self.stages[0].filters.shape[0] if len(self.stages) else 0
        beta = torch.zeros((n, num_filters) + tuple(aty.shape[-2:]), dtype=aty.real.dtype, device=aty.device)
        return aty, beta

    def step(self, i: int, state: tuple[Tensor, Tensor], y: Tensor, op: LinearOperator,
             aty: Tensor) -> tuple[Tensor, Tensor]:
        x, beta = state
        return self.stages[i](x, beta, y, op, aty)

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]
