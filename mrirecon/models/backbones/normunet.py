"""Normalised U-Net of the E2E-VarNet: complex in, complex out, any image size.

complex ``(B, C, H, W)`` -> channels ``(B, 2C, H, W)`` -> subtract mean / divide by std per
real and imaginary group (a constant group, std 0, comes back as that constant) -> zero-pad to
a multiple of 16 -> :class:`Unet` -> crop -> undo the normalisation -> complex. Module names follow ``fastmri.models.varnet.NormUnet`` (``unet.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrirecon.models.backbones.complex import from_channels, to_channels
from mrirecon.models.backbones.unet import Unet


def _pad_to_multiple(n: int, multiple: int = 16) -> tuple[int, int]:
    """(before, after) for padding ``n`` up to a multiple, centred (extra goes after)."""
    padded = -(-n // multiple) * multiple
    before = (padded - n) // 2
    return before, padded - n - before


class NormUnet(nn.Module):
    """U-Net on normalised complex images.

    Parameters
    ----------
    chans, num_pools
        First-level channels and number of pooling levels of the inner :class:`Unet`.
    in_chans, out_chans
        Real channel counts (twice the complex ones): ``2`` for one complex image.
    drop_prob
        Dropout of the inner U-Net.
    """

    def __init__(
        self, chans: int, num_pools: int, in_chans: int = 2, out_chans: int = 2, drop_prob: float = 0.0
    ) -> None:
        super().__init__()
        if in_chans % 2 or out_chans % 2:
            raise ValueError(f"NormUnet: in_chans/out_chans must be even (real+imag), got {in_chans}/{out_chans}")
        self.unet = Unet(in_chans, out_chans, chans=chans, num_pool_layers=num_pools, drop_prob=drop_prob)

    def forward(self, x: Tensor) -> Tensor:
        """Complex ``(B, C, H, W)`` -> complex ``(B, C_out, H, W)`` (``C = in_chans // 2``)."""
        if x.ndim != 4:
            raise ValueError(f"NormUnet: input must be (B, C, H, W), got {tuple(x.shape)}")
        z = to_channels(x)
        b, c2, h, w = z.shape
        groups = z.reshape(b, 2, -1)
        mean = groups.mean(dim=2).reshape(b, 2, 1, 1, 1)
        std = groups.std(dim=2).reshape(b, 2, 1, 1, 1)
        # a constant group (an all-zero image: a dead coil in the sensitivity network) has std 0:
        # divide by 1 there instead of 0 / 0 = NaN, and multiply back by its 0, so the output is
        # the constant (fastMRI's NormUnet gave NaN); every other group as fastMRI, bit for bit
        divisor = torch.where(std > 0, std, torch.ones_like(std))
        z = ((z.reshape(b, 2, c2 // 2, h, w) - mean) / divisor).reshape(b, c2, h, w)
        top, bottom = _pad_to_multiple(h)
        left, right = _pad_to_multiple(w)
        z = F.pad(z, [left, right, top, bottom])
        z = self.unet(z)[..., top : top + h, left : left + w]
        co2 = z.shape[1]
        z = (z.reshape(b, 2, co2 // 2, h, w) * std + mean).reshape(b, co2, h, w)
        return from_channels(z, complex_output=True)
