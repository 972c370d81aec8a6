"""End-to-end variational network (Sriram et al., MICCAI 2020) over the shared SENSE operator.

Each cascade updates multi-coil k-space ``k``:

    k <- k - eta * M (k - y) - F S NormUnet(S^H F^H k)

with the soft k-space DC of :class:`~mrirecon.models.blocks.SoftKspaceDC` and ``F S`` /
``S^H F^H`` taken from the operator (``op.expand`` / ``op.reduce``) after its coil maps were
replaced by those of the sensitivity network (``op.with_maps``).

Output (the models' common contract, :mod:`mrirecon.models.output`): the complex coil-combined
image ``(B, H, W)`` whose magnitude is the root-sum-of-squares of the final k-space's coil
images, fastMRI's output, and whose phase is that of the sensitivity-weighted combination
``S^H F^H k``. Where the coil images are consistent with the maps (``F^H k = S x``, maps of
unit RSS) this is ``S^H F^H k`` itself; elsewhere ``|S^H F^H k| <= RSS``, and the RSS keeps
fastMRI's figures. :meth:`VarNet.rss` is the real RSS image, :meth:`VarNet.image` the plain
``S^H F^H k``, :meth:`VarNet.kspace` the final k-space.

Published defaults (fastMRI): 12 cascades, U-Net 18 channels / 4 pools, sensitivity U-Net
8 channels / 4 pools. A fastMRI checkpoint loads through
:func:`mrirecon.models.convert.fastmri_varnet_state_dict`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core.magnitude import sample_power_of_two
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.functional import ifft2c, rss
from mrirecon.functional.coils import sum_abs2
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.blocks.soft_dc import SoftKspaceDC, kspace_mask
from mrirecon.models.common import run_stage, zero_blank
from mrirecon.models.init import seeded_init
from mrirecon.models.input_checks import check_model_input
from mrirecon.models.output import rss_image
from mrirecon.operators.mri import Fourier, SenseOperator
from mrirecon.sampling.acs import acs_bounds


def _column_mask(op: SenseOperator, batch: int) -> Tensor:
    """``(B, W)`` boolean column mask: the columns sampled in any row of a 2-D mask (fastMRI
    takes the first row, which a partial echo leaves empty)."""
    m = kspace_mask(op).squeeze(-3)
    cols = m.any(dim=-2).reshape(-1, m.shape[-1])
    if cols.shape[0] not in (1, batch):
        raise ValueError(f"VarNet: mask batch {cols.shape[0]} does not match data batch {batch}")
    return cols.expand(batch, -1)


def _is_2d(mask: Tensor) -> bool:
    """A 2-D pattern: the rows that hold samples (a partial echo or padding leaves whole rows
    empty) do not all sample the same columns."""
    if mask.shape[-2] == 1:
        return False
    rows = mask.reshape(-1, *mask.shape[-2:])
    held = rows.any(-1, keepdim=True)  # (N, H, 1)
    first = torch.where(held, rows, True).all(-2, keepdim=True)  # columns in every held row
    return bool(((rows != first) & held).any())


def _centre_block(mask: Tensor) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` (stops exclusive) of the fully sampled rectangle about
    k-space centre ``(H // 2, W // 2)`` of a 2-D mask ``(H, W)``: grown one row or column at a
    time, on each side in turn, while the new edge is sampled throughout (BART's ``ecalib``
    finds its calibration region alike). Empty when the centre is not sampled."""
    h, w = mask.shape
    top, left = h // 2, w // 2
    if not bool(mask[top, left]):
        return top, top, left, left
    bottom, right = top + 1, left + 1
    grown = True
    while grown:
        grown = False
        if top > 0 and bool(mask[top - 1, left:right].all()):
            top, grown = top - 1, True
        if bottom < h and bool(mask[bottom, left:right].all()):
            bottom, grown = bottom + 1, True
        if left > 0 and bool(mask[top:bottom, left - 1].all()):
            left, grown = left - 1, True
        if right < w and bool(mask[top:bottom, right].all()):
            right, grown = right + 1, True
    return top, bottom, left, right


def _centre_blocks(mask: Tensor, batch: int, h: int, w: int) -> Tensor:
    """``(B, H, W)`` boolean: each sample's :func:`_centre_block` of a 2-D ``mask``
    (:func:`kspace_mask`'s)."""
    m = mask.squeeze(-3).reshape(-1, h, w)
    if m.shape[0] not in (1, batch):
        raise ValueError(f"VarNet: mask batch {m.shape[0]} does not match data batch {batch}")
    keep = torch.zeros(m.shape, dtype=torch.bool, device=m.device)
    for i, one in enumerate(m.cpu()):
        top, bottom, left, right = _centre_block(one)
        keep[i, top:bottom, left:right] = True
    return keep.expand(batch, h, w)


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
        # an all-zero sample (a blank slice, batch padding) holds no centre to blame: its maps
        # are 0 (NormUnet keeps a constant image), so its image is 0 as every model's is
        blank = y.abs().flatten(1).amax(1) == 0
        mask = kspace_mask(op) if self.mask_center else None
        if mask is not None and num_low_frequencies is None and _is_2d(mask):
            # a 2-D pattern (Poisson disc ...): the fully sampled centre block, not the band of
            # columns sampled in any row (127 of 128 columns of a 4x Poisson-disc mask: maps
            # from aliased k-space)
            y = y * _centre_blocks(mask, b, h, w)[:, None]
            empty = ((y.abs().flatten(1).amax(1) == 0) & ~blank).nonzero().flatten().tolist()
            if empty:
                raise ValueError(f"VarNet: sample {empty[0]}'s 2-D mask does not sample k-space "
                                 f"centre (row {h // 2}, column {w // 2}); its coil sensitivities "
                                 "are estimated from the fully sampled centre block, so the mask "
                                 "needs a calibration region (poisson_disc(..., calib=(24, 24)))")
        elif self.mask_center:
            start, stop = acs_bounds(_column_mask(op, b), num_low_frequencies)
            cols = torch.arange(w, device=y.device)
            keep = (cols >= start[:, None]) & (cols < stop[:, None])  # (B, W)
            y = y * keep[:, None, None, :]
            empty = ((y.abs().flatten(1).amax(1) == 0) & ~blank).nonzero().flatten().tolist()
            if empty:  # was: maps 0 / 0 and "the coil maps hold NaN" from the operator
                i = empty[0]
                raise ValueError(f"VarNet: sample {i}'s k-space centre (columns {int(start[i])}-"
                                 f"{int(stop[i]) - 1} of {w}) holds no data; its coil sensitivities "
                                 "are estimated from the fully sampled centre band, so the mask must "
                                 f"sample column {w // 2} (DC) and the columns beside it")
        coil_images = self.fourier.H(y)
        maps = self.norm_unet(coil_images.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
        # a pixel where every map is 0 (NormUnet keeps a dead coil's map 0) stays 0 instead of
        # 0 / 0; every other pixel as fastMRI, bit for bit
        # (the square root of 1 there, not of 0: its gradient is infinite, NaN for a blank slice)
        power = sum_abs2(maps, dim=1).unsqueeze(1)
        return maps / torch.where(power > 0, power, torch.ones_like(power)).sqrt()


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
    """E2E-VarNet ``model(y, op) -> x`` (complex, ``|x|`` the RSS image; module docstring).

    Parameters
    ----------
    iterations
        Number of unrolled cascades (12; fastMRI's ``num_cascades``).
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
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).

    ``acs_given``: the weights were trained with the centre width the mask function drew passed
    as ``num_low_frequencies`` (fastMRI's data transform; ``load_model`` sets it for converted
    fastMRI checkpoints), so the pipeline passes it; models trained here read the band from the
    mask (``False``).
    """

    #: see the class docstring; an attribute, not a parameter: the weights do not record it
    acs_given: bool = False

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 12,
        sens_chans: int = 8,
        sens_pools: int = 4,
        chans: int = 18,
        pools: int = 4,
        mask_center: bool = True,
        estimate_sensitivities: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        with seeded_init(init_seed):
            self.sensitivity = (
                SensitivityModel(sens_chans, sens_pools, mask_center=mask_center) if estimate_sensitivities else None
            )
            self.cascades = nn.ModuleList([VarNetBlock(NormUnet(chans, pools)) for _ in range(iterations)])
        self.checkpointing = checkpointing
        self.fourier = Fourier()

    def kspace(
        self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None
    ) -> tuple[Tensor, SenseOperator]:
        """Final multi-coil k-space ``(B, C, H, W)`` and the operator carrying the maps used."""
        k, op, scale = self._scaled_kspace(y, op, num_low_frequencies)
        return k * scale, op

    def _scaled_kspace(
        self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None
    ) -> tuple[Tensor, SenseOperator, Tensor]:
        """``(k / scale, op, scale)``: the final k-space of ``y / scale`` and ``scale``
        ``(B, 1, 1, 1)``, the power of two just above each sample's ``max |y|``.

        The network is scale-equivariant (NormUnet normalises, the rest is linear), and a power
        of two scales every float exactly, so the scaling adds no rounding: the result is fastMRI's
        to float32 rounding (about 1e-6 relative; the operations run in another order). Run at the
        data's own scale, the squares inside the NormUnet's std and the RSS underflowed (k-space
        at 1e-30) or overflowed (1e30) float32: NaN maps or an all-zero image."""
        if not isinstance(op, SenseOperator):
            raise TypeError(f"VarNet needs a SenseOperator (sense(maps, mask)), got {type(op).__name__}")
        check_model_input("VarNet", self, y, op)  # the rules of every model (also the mask's)
        if y.ndim != 4:  # real data: refused by check_model_input (an MRI operator's kind)
            raise ValueError(f"VarNet: y must be complex (B, coils, H, W), got {tuple(y.shape)} {y.dtype}")
        mask = kspace_mask(op)
        y = torch.where(mask, y, torch.zeros((), dtype=y.dtype, device=y.device))
        scale = sample_power_of_two(y)
        y = y / scale
        if self.sensitivity is not None:
            op = op.with_maps(self.sensitivity(y, op, num_low_frequencies))
        k = y
        for cascade in self.cascades:
            k = run_stage(cascade, k, y, op, checkpointing=self.checkpointing)
        return k, op, scale

    def image(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Complex coil-combined image ``S^H F^H k`` ``(B, H, W)``."""
        k, op, scale = self._scaled_kspace(y, op, num_low_frequencies)
        return op.reduce(k) * scale.reshape(-1, 1, 1)

    def rss(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Masked k-space ``y`` ``(B, C, H, W)`` complex -> RSS magnitude ``(B, H, W)`` real.

        Same quantity as ``fastmri.models.VarNet`` (no crop: crop with
        :func:`mrirecon.functional.center_crop` as the fastMRI evaluation does).
        """
        k, _, scale = self._scaled_kspace(y, op, num_low_frequencies)
        return _rss_of(k, y, op) * scale.reshape(-1, 1, 1)

    def forward(self, y: Tensor, op: SenseOperator, num_low_frequencies: int | None = None) -> Tensor:
        """Masked k-space ``y`` ``(B, C, H, W)`` complex -> complex image ``(B, H, W)``.

        ``|x|`` is the RSS image of :meth:`rss` (fastMRI's output), the phase that of
        ``S^H F^H k`` (a pixel where that is exactly 0 gets phase 0). The phase carries no
        gradient: training on magnitudes sees the RSS's gradient.
        """
        k, op, scale = self._scaled_kspace(y, op, num_low_frequencies)
        combined = op.reduce(k).detach()
        one = torch.ones((), dtype=combined.dtype, device=combined.device)
        phase = torch.where(combined == 0, one, torch.sgn(combined))
        return _rss_of(k, y, op) * scale.reshape(-1, 1, 1) * phase


def _rss_of(k: Tensor, y: Tensor, op: SenseOperator) -> Tensor:
    """``rss_image(k)``; for a sample with no data under the mask (a blank slice in a batch) 0,
    with a zero gradient: the square root's gradient at 0 is infinite, and a blank sample made
    every weight's gradient NaN."""
    held = torch.where(kspace_mask(op), y, torch.zeros((), dtype=y.dtype, device=y.device))
    blank = (held.reshape(held.shape[0], -1) == 0).all(dim=1).reshape(-1, 1, 1, 1)
    if not bool(blank.any()):
        return rss_image(k)
    one = torch.ones((), dtype=k.dtype, device=k.device)  # coil images of 1: RSS > 0
    return zero_blank(rss(torch.where(blank, one, ifft2c(k)), dim=-3), held)
