"""E2E-VarNet soft k-space data consistency ``k - eta * M (k - y)`` (Sriram et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator


def kspace_mask(op: LinearOperator) -> Tensor:
    """The sampling mask of a Cartesian operator, broadcastable to multi-coil k-space.

    Returns ``op.mask[..., None, :, :]``: boolean, broadcastable to ``(B, C, H, W)``.
    Raises ``TypeError`` for operators without a ``mask`` (k-space DC needs ``sense(...)``).
    """
    mask = getattr(op, "mask", None)
    if not isinstance(mask, Tensor):
        raise TypeError(
            f"k-space data consistency needs a Cartesian operator with a .mask (e.g. sense(maps, mask)), "
            f"got {getattr(op, 'name', type(op).__name__)}"
        )
    return mask.bool().unsqueeze(-3)


class SoftKspaceDC(nn.Module):
    """``k - weight * M (k - y)`` with a learned scalar ``weight`` (fastMRI's ``dc_weight``).

    With ``weight = 1`` the sampled k-space locations equal ``y`` exactly; ``0`` does nothing.

    Parameters
    ----------
    weight
        Initial value (fastMRI starts at 1).
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor([float(weight)]))

    def forward(self, k: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """Multi-coil k-space ``k``, measured ``y`` (both ``(B, C, H, W)``), boolean ``mask``."""
        diff = torch.where(mask, k - y, torch.zeros((), dtype=k.dtype, device=k.device))
        return k - self.weight.to(k.real.dtype) * diff
