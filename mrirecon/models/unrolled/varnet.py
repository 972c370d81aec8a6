"""End-to-end variational network (Sriram et al., MICCAI 2020) over the shared SENSE operator.

Each cascade updates multi-coil k-space ``k``:

    k <- k - eta * M (k - y) - F S NormUnet(S^H F^H k)

with the soft k-space DC of :class:`~mrirecon.models.blocks.SoftKspaceDC` and ``F S`` /
``S^H F^H`` taken from the operator (``op.expand`` / ``op.reduce``) after its coil maps were
replaced by those of the sensitivity network (``op.with_maps``). The output, as in the fastMRI
reference, is the root-sum-of-squares image ``(B, H, W)`` (real) of the final k-space; use
:meth:`VarNet.kspace` or :meth:`VarNet.image` for the complex quantities.

Published defaults (fastMRI): 12 cascades, U-Net 18 channels / 4 pools, sensitivity U-Net
8 channels / 4 pools. A fastMRI checkpoint loads through
:func:`mrirecon.models.convert.fastmri_varnet_state_dict`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.functional import rss
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.blocks.soft_dc import SoftKspaceDC, kspace_mask
from mrirecon.models.common import run_stage
from mrirecon.operators.mri import Fourier, SenseOperator
from mrirecon.sampling.acs import acs_bounds


def _column_mask(op: SenseOperator, batch: int) -> Tensor:
    """``(B, W)`` boolean column mask (first row of a 2-D mask, as fastMRI does)."""
    m = kspace_mask(op).squeeze(-3)
    cols = m[..., 0, :].reshape(-1, m.shape[-1])
    if cols.shape[0] not in (1, batch):
        raise ValueError(f"VarNet: mask batch {cols.shape[0]} does not match data batch {batch}")
    return cols.expand(batch, -1)


class SensitivityModel(nn.Module):
    """Coil sensitivities from the ACS k-space: ``F^H`` per coil, NormUnet per coil, RSS-normalise.

    Parameters
    ----------
    chans, num_pools
        Size of the per-coil :class:`NormUnet` (fastMRI: 8, 4).
    drop_prob
        U-Net dropout.
    mask_center
        Keep only the ACS band of ``y`` before estimating the maps (fastMRI default True).
    """

    def __init__(self, chans: int = 8, num_pools: int = 4, drop_prob: float = 0.0, mask_center: bool = True):
        super().__init__()
        self.mask_center = mask_center
        self.norm_unet = NormUnet(chans, num_pools, drop_prob=drop_prob)
        self.fourier = Fourier()

    def forward(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Masked k-space ``y`` ``(B, C, H, W)`` -> maps ``(B, C, H, W)`` with unit RSS."""
        b, c, h, w = y.shape
        if self.mask_center:
            start, stop = acs_bounds(_column_mask(op, b), num_low_frequencies)
            cols = torch.arange(w, device=y.device)
            keep = (cols >= start[:, None]) & (cols < stop[:, None])  # (B, W)
            y = y * keep[:, None, None, :]
        coil_images = self.fourier.H(y)
        maps = self.norm_unet(coil_images.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
        return maps / rss(maps, dim=1).unsqueeze(1)


class VarNetBlock(nn.Module):
    """One cascade: soft k-space DC minus the expanded image-domain regulariser."""

    def __init__(self, denoiser: nn.Module, dc_weight: float = 1.0) -> None:
        super().__init__()
        self.dc = SoftKspaceDC(dc_weight)
        self.denoiser = denoiser

    def forward(self, k: Tensor, y: Tensor, op: SenseOperator) -> Tensor:
        """``k, y``: ``(B, C, H, W)``; ``op`` carries the (estimated) maps and the mask."""
        image = op.reduce(k).unsqueeze(1)
        regulariser = op.expand(self.denoiser(image).squeeze(1))
        return self.dc(k, y, kspace_mask(op)) - regulariser


class VarNet(nn.Module):
    """E2E-VarNet ``model(y, op) -> rss image``.

    Parameters
    ----------
    num_cascades
        Number of unrolled cascades (12).
    sens_chans, sens_pools
        Sensitivity U-Net size (8, 4).
    chans, pools
        Cascade U-Net size (18, 4).
    mask_center
        Estimate the maps from the ACS band only.
    estimate_sensitivities
        ``False`` drops the sensitivity network and uses ``op.maps`` (e.g. ESPIRiT maps).
    checkpointing
        Recompute each cascade in backward (``torch.utils.checkpoint``) to save memory.
    """

    def __init__(
        self,
        num_cascades: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        mask_center: bool = True,
        estimate_sensitivities: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.sensitivity = (
            SensitivityModel(sens_chans, sens_pools, mask_center=mask_center) if estimate_sensitivities else None
        )
        self.cascades = nn.ModuleList([VarNetBlock(NormUnet(chans, pools)) for _ in range(num_cascades)])
        self.checkpointing = checkpointing
        self.fourier = Fourier()

    def kspace(
        self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None
    ) -> tuple[Tensor, SenseOperator]:
        """Final multi-coil k-space ``(B, C, H, W)`` and the operator carrying the maps used."""
        if not isinstance(op, SenseOperator):
            raise TypeError(f"VarNet needs a SenseOperator (sense(maps, mask)), got {type(op).__name__}")
        if y.ndim != 4 or not y.is_complex():
            raise ValueError(f"VarNet: y must be complex (B, coils, H, W), got {tuple(y.shape)} {y.dtype}")
        mask = kspace_mask(op)
        y = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
        if self.sensitivity is not None:
            op = op.with_maps(self.sensitivity(y, op, num_low_frequencies))
        k = y
        for cascade in self.cascades:
            k = run_stage(cascade, k, y, op, checkpointing=self.checkpointing)
        return k, op

    def image(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Complex coil-combined image ``S^H F^H k`` ``(B, H, W)``."""
        k, op = self.kspace(y, op, num_low_frequencies)
        return op.reduce(k)

    def forward(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Masked k-space ``y`` ``(B, C, H, W)`` complex -> RSS magnitude ``(B, H, W)`` real.

        Same quantity as ``fastmri.models.VarNet`` (no crop: crop with
        :func:`mrirecon.functional.center_crop` as the fastMRI evaluation does).
        """
        k, _ = self.kspace(y, op, num_low_frequencies)
        return rss(self.fourier.H(k), dim=1)
