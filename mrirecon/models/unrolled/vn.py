"""Variational network (Hammernik et al., MRM 2018): unrolled gradient descent on a learned
fields-of-experts energy plus a gradient-step data term.

Stage ``t``:  ``x <- x - sum_i K_i^T phi_i(K_i x) - eta_t A^H (A x - y)``, with ``K_i`` learned
zero-mean ``k x k`` filters acting on the real and imaginary parts (two input channels),
``K_i^T`` the transposed convolution and ``phi_i`` learned radial-basis-function activations.
Published defaults: 10 stages, 24 filters of 11 x 11, 31 Gaussian RBFs. Works with any
``LinearOperator``; real images (CT) use a zero imaginary channel.
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
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel


class RBFActivation(nn.Module):
    """Per-channel ``phi_c(z) = sum_j w_cj exp(-(z - mu_j)^2 / (2 sigma^2))``.

    Centres ``mu_j`` are uniform on ``[-vmax, vmax]``, ``sigma`` is their spacing; weights start
    as a line of slope ``init_slope`` (so the first stages act like a small linear filter).
    """

    def __init__(self, channels: int, num_rbf: int = 31, vmax: float = 1.0, init_slope: float = 0.04) -> None:
        super().__init__()
        mu = torch.linspace(-vmax, vmax, num_rbf)
        self.register_buffer("mu", mu)
        self.sigma = 2 * vmax / (num_rbf - 1)
        self.weight = nn.Parameter(init_slope * mu.repeat(channels, 1))  # (channels, num_rbf)

    def forward(self, z: Tensor) -> Tensor:
        """``(N, channels, H, W) -> (N, channels, H, W)``; loops over the RBFs to save memory."""
        out = torch.zeros_like(z)
        for j in range(self.mu.numel()):
            w = self.weight[:, j].reshape(1, -1, 1, 1)
            out = out + w * torch.exp(-((z - self.mu[j]) ** 2) / (2 * self.sigma**2))
        return out


class VNStage(nn.Module):
    """One VN gradient step (regulariser gradient + data-term gradient)."""

    def __init__(self, num_filters: int, kernel_size: int, num_rbf: int, eta: float):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"VNStage: kernel_size must be odd, got {kernel_size}")
        std = 1.0 / math.sqrt(2 * kernel_size**2)
        self.filters = nn.Parameter(torch.randn(num_filters, 2, kernel_size, kernel_size) * std)
        self.activation = RBFActivation(num_filters, num_rbf)
        self.dc = GradientDC(eta)

    def kernels(self) -> Tensor:
        """Zero-mean filters (the constraint of the paper, by projection)."""
        return self.filters - self.filters.mean(dim=(1, 2, 3), keepdim=True)

    def regulariser_gradient(self, x: Tensor) -> Tensor:
        """``sum_i K_i^T phi_i(K_i x)`` for images ``(..., H, W)``, same dtype."""
        flat, lead = flatten_image_batch(x)
        k = self.kernels()
        pad = k.shape[-1] // 2
        u = F.conv2d(to_channels(flat), k, padding=pad)
        r = F.conv_transpose2d(self.activation(u), k, padding=pad)
        return unflatten_image_batch(from_channels(r, x.is_complex()), lead)

    def forward(self, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """Images ``x`` ``(B, H, W)``, data ``y``: the next iterate."""
        return self.dc(x, y, op, aty) - self.regulariser_gradient(x)


class VariationalNetwork(UnrolledModel):
    """Hammernik's VN ``model(y, op) -> x`` (complex for MRI, real for CT).

    Parameters
    ----------
    iterations
        Unrolled gradient steps (10).
    num_filters, kernel_size, num_rbf
        Fields-of-experts size (24 filters, 11 x 11, 31 RBFs).
    eta
        Initial data-term step size.
    normalize
        Scale the data so that ``max |A^H y| = 1`` (the RBF range is fixed), undone at the end.
    checkpointing
        Recompute each stage in backward.
    init_seed
        Seed of the filter initialisation (:func:`~mrirecon.models.init.seeded_init`; 0 by
        default, so an untrained VN is reproducible).
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 10,
        num_filters: int = 24,
        kernel_size: int = 11,
        num_rbf: int = 31,
        eta: float = 0.5,
        normalize: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = 0,
    ) -> None:
        super().__init__()
        with seeded_init(init_seed):
            self.stages = nn.ModuleList(
                [VNStage(num_filters, kernel_size, num_rbf, eta) for _ in range(iterations)]
            )
        self.normalize, self.checkpointing = normalize, checkpointing

    def num_steps(self) -> int:
        return len(self.stages)

    def step(self, i: int, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """One gradient step on the data term and the learned regulariser."""
        return self.stages[i](x, y, op, aty)
