"""E2E-VarNet soft k-space data consistency ``k - eta * M (k - y)`` (Sriram et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import HasSamplingMask, LinearOperator, require_capability


def kspace_mask(op: LinearOperator, who: str = "k-space data consistency") -> Tensor:
    """The sampling mask of a Cartesian operator, broadcastable to multi-coil k-space.

    Returns the :class:`~mrirecon.core.HasSamplingMask` mask with a coil axis,
    ``mask[..., None, :, :]``: boolean, broadcastable to ``(B, C, H, W)``. Raises ``TypeError``
    naming ``who`` for operators without one (k-space DC needs ``sense(...)``); scaled
    operators (``c * A``) keep their mask.
    """
    found = require_capability(op, HasSamplingMask, who, "use sense(maps, mask) or single_coil(mask)")
    return found.mask.bool().unsqueeze(-3)


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
