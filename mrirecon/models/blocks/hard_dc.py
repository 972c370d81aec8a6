"""Hard data projection for noise-free Cartesian data: replace the sampled k-space by ``y``.

Schlemper et al. (2018) use ``k <- (k + nu y) / (1 + nu)`` on sampled locations; ``nu -> inf``
(noise-free) is the replacement done here, a finite ``nu`` is the block's ``lam``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import CoilExpandReduce, LinearOperator, require_capability
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.blocks.soft_dc import kspace_mask


class HardProjectionDC(nn.Module):
    """Replace (or, with ``lam``, average) the sampled k-space values by the measured ones.

    Parameters
    ----------
    lam
        ``None`` (default): exact replacement. A float: Schlemper's noisy-data weighting
        ``(k + lam y) / (1 + lam)`` on sampled locations (the paper's ``nu``), learnable when
        ``learnable``. The keyword was ``nu`` before 2026-12-07 (as
        :class:`~mrirecon.models.CascadeNet`'s was): ``nu=`` still works, with a
        ``FutureWarning``. The weight keeps its state-dict key ``nu``.
    learnable
        Learn ``lam`` (only with a float ``lam``).
    """

    @accepts_deprecated_names
    def __init__(self, lam: float | None = None, learnable: bool = False) -> None:
        super().__init__()
        if lam is None:
            self.nu = None
        elif learnable:
            self.nu = nn.Parameter(torch.tensor([float(lam)]))
        else:
            self.register_buffer("nu", torch.tensor([float(lam)]))

    def forward(self, k: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """K-space ``k``, data ``y`` (same shape), boolean ``mask``: projected k-space."""
        if self.nu is None:
            return torch.where(mask, y, k)
        nu = self.nu.to(k.real.dtype)
        return torch.where(mask, (k + nu * y) / (1 + nu), k)

    def image(self, x: Tensor, y: Tensor, op: LinearOperator) -> Tensor:
        """Image-domain version for a sense-style operator: ``S^H F^H DC(F S x)``.

        Exact data consistency when ``S^H S = I`` per pixel with one coil (single-coil data);
        for several coils it is the usual coil-k-space projection followed by coil combination.
        The mask gets a coil axis only where the k-space has one: ``expand`` adds an axis to
        the image (``sense``: ``(B, H, W) -> (B, C, H, W)``), none for ``single_coil``, whose
        batch of masks ``(B, 1, W)`` then stays one mask per slice.
        """
        who = "HardProjectionDC.image"
        er = require_capability(op, CoilExpandReduce, who)
        k = er.expand(x)
        return er.reduce(self(k, y, kspace_mask(op, who, coils=k.ndim > x.ndim)))
