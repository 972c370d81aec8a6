"""E2E-VarNet soft k-space data consistency ``k - eta * M (k - y)`` (Sriram et al. 2020)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import HasSamplingMask, LinearOperator, require_capability


def kspace_mask(op: LinearOperator, who: str = "k-space data consistency", coils: bool = True) -> Tensor:
    """The sampling mask of a Cartesian operator, broadcastable to its k-space.

    Returns the :class:`~mrirecon.core.HasSamplingMask` mask, boolean. With ``coils`` (the
    default, multi-coil k-space ``(B, C, H, W)`` of ``sense(...)``) it gets a coil axis,
    ``mask[..., None, :, :]``; ``coils=False`` is for k-space without one (``single_coil(mask)``:
    ``(B, H, W)``), where that axis would line a batch of masks ``(B, 1, W)`` up with the image
    rows and widen the result to ``(B, B, H, W)``. Raises ``TypeError`` naming ``who`` for
    operators without a mask (k-space DC needs ``sense(...)`` or ``single_coil(...)``); scaled
    operators (``c * A``) keep their mask.
    """
    found = require_capability(op, HasSamplingMask, who, "use sense(maps, mask) or single_coil(mask)")
    mask = found.mask.bool()
    return mask.unsqueeze(-3) if coils else mask


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
