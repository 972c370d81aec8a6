"""Training samples: fastMRI-layout volumes -> (measured data, operator, target) per slice.

The trainer asks for ``train_set.get(index, mask_seed)`` and receives a :class:`TrainingSample`:
undersampled k-space ``y`` ``(1, coils, H, W)``, the operator the model is given
(``sense(maps, mask)``), the target magnitude ``(1, h, w)`` (``reconstruction_rss``, the recon
size) and the volume maximum (SSIM / PSNR data range). Training draws a fresh mask from
``mask_seed``; validation (``train=False``) ignores it and seeds by the file name, so every slice
of a volume shares the mask fastMRI would use.

Coil maps: ``"learned"`` gives unit maps ``1 / sqrt(C)`` (E2E-VarNet replaces them with its own
estimate through ``op.with_maps``); ``"espirit"`` / ``"walsh"`` compute maps once per
``(file, slice)`` from the central columns that *every* mask of the configuration acquires
(``round(W * min(center_fractions))``), so the cache is valid for any drawn mask and no
information outside the measured data leaks into the operator.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from mrirecon.operators.mri import SenseOperator, sense
from mrirecon.sampling import apply_mask, center_mask, create_mask_for_mask_type, file_seed
from mrirecon.training.config import MaskConfig

MAPS = ("learned", "espirit", "walsh")


@dataclass
class TrainingSample:
    """One slice ready for ``model(y, operator())`` and the loss.

    Attributes
    ----------
    y
        ``(1, coils, H, W)`` complex64 undersampled k-space (unsampled columns are zero).
    maps
        ``(1, coils, H, W)`` complex64 coil sensitivities (unit maps for ``"learned"``).
    mask
        ``(W,)`` bool sampled columns.
    target
        ``(1, h, w)`` float32 reference magnitude at the recon size, or ``None`` (data without
        a reference, self-supervised training).
    max_value
        ``(1,)`` float32 maximum of the reference volume (SSIM / PSNR data range).
    fname, slice_index
        Source file name and slice number.
    acceleration
        Nominal acceleration of the drawn mask (acquirable / sampled columns is its
        measured value).
    num_low_frequencies
        Fully sampled centre columns of the mask.
    """

    y: Tensor
    maps: Tensor
    mask: Tensor
    target: Tensor | None
    max_value: Tensor
    fname: str
    slice_index: int
    num_low_frequencies: int = 0

    def to(self, device: torch.device | str) -> TrainingSample:
        """The same sample with every tensor on ``device``."""
        return replace(
            self,
            y=self.y.to(device),
            maps=self.maps.to(device),
            mask=self.mask.to(device),
            target=None if self.target is None else self.target.to(device),
            max_value=self.max_value.to(device),
        )

    def operator(self) -> SenseOperator:
        """``sense(maps, mask)``: ``P F S`` mapping ``(1, H, W)`` images to ``(1, C, H, W)``."""
        return sense(self.maps, self.mask)

    @property
    def acceleration(self) -> float:
        return float(self.mask.numel()) / max(int(self.mask.sum()), 1)


class MRITrainingSet:
    """Slices of a folder of fastMRI-layout multi-coil files, undersampled on the fly.

    Parameters
    ----------
    folder
        Folder of ``*.h5`` files (fully sampled ``kspace`` and ``reconstruction_rss``).
    mask
        The mask function configuration (type, centre fractions, accelerations).
    maps
        ``"learned"`` (unit maps), ``"espirit"`` or ``"walsh"`` (cached per slice).
    train
        Draw masks from the ``mask_seed`` given to :meth:`get` (training) or from the file name
        (validation / test, fastMRI convention).
    sample_rate
        Fraction of slices kept (seeded by ``seed``).
    max_slices
        Keep at most this many slices (the first ones, in file order), e.g. for quick validation.
    cache_maps
        Keep computed maps in memory (one ``(C, H, W)`` complex64 tensor per slice).
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        mask: MaskConfig | None = None,
        maps: str = "learned",
        train: bool = True,
        *,
        sample_rate: float = 1.0,
        max_slices: int | None = None,
        seed: int = 0,
        cache_maps: bool = True,
    ) -> None:
        from mrirecon.data.dataset import SliceDataset

        if maps not in MAPS:
            raise ValueError(f"MRITrainingSet: maps must be one of {MAPS}, got {maps!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"MRITrainingSet: data folder {folder} does not exist")
        self.mask_config = mask or MaskConfig()
        cfg = self.mask_config
        self.mask_fn = create_mask_for_mask_type(cfg.type, cfg.center_fractions, cfg.accelerations)
        self.maps, self.train = maps, bool(train)
        rate = None if sample_rate >= 1.0 else sample_rate
        files = fastmri_files(folder)
        self.dataset = SliceDataset(files, sample_rate=rate, seed=seed)
        if len(self.dataset) == 0:
            kinds = "/".join(sorted({f.suffix.lower() for f in files}))
            why = (f"sample_rate {sample_rate:g} kept none of its {len(files)} {kinds} files"
                   if rate is not None and files else
                   "expected fastMRI-layout .h5 / .hdf5 files")
            raise ValueError(f"MRITrainingSet: no slices found in {folder} ({why})")
        from mrirecon.io import FastMRIFile

        n = len(self.dataset) if max_slices is None else min(max_slices, len(self.dataset))
        used = {volume for volume, _ in self.dataset.samples[:n]}
        no_reference = []
        for v, info in enumerate(self.dataset.volumes):  # a second mask: doubly masked data
            with FastMRIFile(info.path) as f:
                if f.mask is not None:
                    raise ValueError(
                        f"MRITrainingSet: {info.path} is already undersampled (it has a 'mask' "
                        f"dataset, acceleration {f.acceleration}); training draws its masks on "
                        "fully sampled k-space")
                if f.reference_key is None and v in used:
                    no_reference.append(str(info.path))
                elif v in used:
                    check_reference_scale(f)
        if no_reference:  # found up front, not when the sample is first drawn (many steps in)
            shown = ", ".join(no_reference[:3]) + (
                f" and {len(no_reference) - 3} more" if len(no_reference) > 3 else "")
            raise ValueError(
                f"MRITrainingSet: {len(no_reference)} of the {len(used)} file(s) used in "
                f"{folder} have no reference (reconstruction_rss): {shown}; supervised training "
                "and validation compare with it: remove them, or train self-supervised "
                "(loss.ssdu), which needs no reference")
        self.indices = list(range(n))
        self.cache_maps = cache_maps
        self._maps_cache: dict[tuple[str, int], Tensor] = {}
        self._volume_max: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def source_files(self) -> list[Path]:
        """The files whose slices this set uses (after ``sample_rate`` and ``max_slices``)."""
        used = sorted({self.dataset.samples[i][0] for i in self.indices})
        return [self.dataset.volumes[v].path for v in used]

    def training_range(self) -> dict:
        """What a model trained on this set saw, in a model card's ``training_range`` schema
        (:mod:`mrirecon.pipeline.model_range`): the k-space matrices ``(H, W)`` and coil counts of
        the files used, the masks' accelerations on their widths (nominal and as drawn:
        acquirable / sampled columns, the header's padding columns left out as :meth:`get`
        leaves them out of the mask and ``mrirecon run`` counts them), and ``maps_crop: [0, 0]``
        for ESPIRiT maps (crop 0 here)."""
        volumes = [self.dataset.volumes[v] for v in
                   sorted({self.dataset.samples[i][0] for i in self.indices})]
        shapes = [tuple(int(n) for n in info.shape) for info in volumes]
        columns = sorted({(int(info.shape[-1]), info.header.padding_left,
                           info.header.padding_right) for info in volumes})
        cfg = self.mask_config
        accelerations = [float(a) for a in cfg.accelerations]
        for cf, acc in zip(cfg.center_fractions, cfg.accelerations):
            fn = create_mask_for_mask_type(cfg.type, (cf,), (acc,))
            for w, left, right in columns:
                acquirable = max(min(right, w) - left, 1)
                for seed in range(4):  # random masks differ by seed; regular ones by offset
                    sampled = int(fn(w, seed=seed)[left:right].sum())
                    accelerations.append(acquirable / max(sampled, 1))
        out = {"matrix": {"min": [min(s[-2] for s in shapes), min(s[-1] for s in shapes)],
                          "max": [max(s[-2] for s in shapes), max(s[-1] for s in shapes)]},
               "coils": [min(s[1] for s in shapes), max(s[1] for s in shapes)],
               "accelerations": [round(min(accelerations), 4), round(max(accelerations), 4)]}
        if self.maps == "espirit":
            out["maps_crop"] = [0.0, 0.0]
        return out

    def volume_max(self, index: int) -> float:
        """``max`` attribute of the volume holding sample ``index`` (reference maximum), checked
        against the volume's reference on first use (:func:`checked_volume_max`)."""
        volume, _ = self.dataset.samples[self.indices[index]]
        if volume not in self._volume_max:
            self._volume_max[volume] = checked_volume_max(self.dataset.volumes[volume].path)
        return self._volume_max[volume]

    def get(self, index: int, mask_seed: int | tuple[int, ...] | None = None) -> TrainingSample:
        """Sample ``index``; training masks come from ``mask_seed``, validation masks from the
        file name."""
        if not 0 <= index < len(self):
            raise IndexError(f"MRITrainingSet: index {index} out of range for {len(self)} slices")
        s = self.dataset[self.indices[index]]
        if s.reference is None:
            raise ValueError(f"MRITrainingSet: {s.file_name} has no reference (reconstruction_rss)")
        seed = mask_seed if self.train else file_seed(s.file_name)
        if self.train and seed is None:
            raise ValueError("MRITrainingSet.get: training samples need a mask_seed")
        padding = (s.header.padding_left, s.header.padding_right)
        kspace = s.kspace.to(torch.complex64)
        y, mask, num_low = apply_mask(kspace, self.mask_fn, seed=seed, padding=padding)
        maps = self._maps(kspace, s.file_name, s.slice_index)
        return TrainingSample(
            y=y.unsqueeze(0),
            maps=maps.unsqueeze(0),
            mask=mask.reshape(-1),
            target=s.reference.to(torch.float32).unsqueeze(0),
            max_value=torch.tensor([self.volume_max(index)], dtype=torch.float32),
            fname=s.file_name,
            slice_index=s.slice_index,
            num_low_frequencies=int(num_low),
        )

    def common_center(self, width: int) -> Tensor:
        """``(W,)`` bool: centre columns acquired by every mask of the configuration."""
        num_low = round(width * min(self.mask_config.center_fractions))
        return torch.from_numpy(center_mask(width, num_low)).bool()

    def _maps(self, kspace: Tensor, fname: str, slice_index: int) -> Tensor:
        c = kspace.shape[0]
        if self.maps == "learned":
            return torch.full_like(kspace, 1.0 / math.sqrt(c))
        key = (fname, slice_index)
        if key in self._maps_cache:
            return self._maps_cache[key]
        maps = calibrate_maps(kspace, self.maps, self.common_center(kspace.shape[-1]))
        if self.cache_maps:
            self._maps_cache[key] = maps
        return maps


def calibrate_maps(kspace: Tensor, method: str, centre: Tensor) -> Tensor:
    """Coil maps ``(C, H, W)`` complex64 from the fully sampled centre columns ``centre`` ``(W,)``.

    The same rule as the pipeline's ``calibrate`` stage (:func:`mrirecon.calib.centre_maps`),
    with ESPIRiT ``crop=0`` as in ``pipelines/mri_modl.yaml``: a model trained with these maps
    sees the same maps at inference.
    """
    from mrirecon.calib import centre_maps

    if method not in ("espirit", "walsh"):
        raise ValueError(f"calibrate_maps: method must be 'espirit' or 'walsh', got {method!r}")
    return centre_maps(kspace.to(torch.complex64), centre, method=method, crop=0.0).to(torch.complex64)


def fastmri_files(folder: str | os.PathLike) -> list[Path]:
    """The files of a supervised training folder: those ``mrirecon run`` reads from it
    (:func:`mrirecon.data.dataset.list_data_files`: ``.h5`` / ``.hdf5`` / ``.mrd`` in any case,
    a warning naming subfolders, which are not searched), each of them fastMRI-layout k-space.
    A glob of ``*.h5`` dropped ``b.hdf5`` and ``c.H5`` without a word; a file of another layout
    (ISMRMRD raw data, a CT sinogram) is refused naming it rather than left out."""
    import logging

    from mrirecon.data.dataset import list_data_files
    from mrirecon.io.probe import hdf5_layout

    files = list_data_files(folder, log=logging.getLogger("mrirecon.train"),
                            advice="training reads the files at the top of data.train / data.val "
                                   "only: move theirs up to train on them")
    for p in files:
        layout = hdf5_layout(p)
        if layout != "fastmri":
            raise ValueError(
                f"MRITrainingSet: {p} holds {layout} data, not fastMRI-layout k-space with a "
                "reference (kspace, reconstruction_rss): supervised training reads only those; "
                + ("train self-supervised (loss.ssdu), which reads ISMRMRD files, or " if
                   layout == "ismrmrd" else "") + f"move it out of {Path(folder)}")
    return files


def check_reference_scale(f, who: str = "MRITrainingSet") -> None:
    """Refuse a fastMRI file (an open :class:`~mrirecon.io.FastMRIFile`) whose reference is on
    another scale than its k-space: the L2 norm of the reference of its middle slice against that
    of the zero-filled RSS image of the fully sampled k-space, centre-cropped to the grid they
    share, differ by more than :data:`~mrirecon.data.dataset.REFERENCE_SCALE_FACTOR` (the factor
    at which ``mrirecon run`` warns; a reference and ``max`` multiplied by 1e-3 trained with the
    loss stuck at 0.99999, exit 0: the network sees the k-space's scale, the loss the
    reference's). One slice per volume; an all-zero slice is not judged."""
    from mrirecon.data.dataset import off_scale
    from mrirecon.functional import center_crop, ifft2c, rss

    key, i = f.reference_key, len(f) // 2
    sample = f.read_slice(i)
    ref = sample.reference[0].double()
    image = rss(ifft2c(sample.data[0].to(torch.complex128)))
    grid = (min(ref.shape[-2], image.shape[-2]), min(ref.shape[-1], image.shape[-1]))
    if (ratio := off_scale(center_crop(ref, grid), center_crop(image, grid))) is None:
        return
    raise ValueError(
        f"{who}: {f.path}: {key}: its scale is {ratio:.3g}x that of the zero-filled image "
        f"of its k-space (L2 norms of slice {i} on the {grid[0]} x {grid[1]} grid; fastMRI's "
        "reconstruction_rss of the same k-space is 1.0x): the model sees the k-space's scale "
        "and the loss compares it with the reference's, so nothing is learned (the loss stays "
        "near its start): store the reference (and attrs/max) on the k-space's scale, or scale "
        f"the k-space by {ratio:.3g}")


#: How far above its reference's maximum a file's ``max`` may lie: fastMRI's ``max`` is the
#: reference volume's maximum, some converters take it before the crop to the recon size. At 2x
#: the SSIM loss's gradient keeps 0.69 of its size (C1, C2 grow as max^2), at 10x 0.27, at 1000x
#: 1e-4: nothing is learned.
MAX_ATTR_ABOVE = 2.0


def checked_volume_max(path: str | os.PathLike) -> float:
    """The ``max`` attribute of a training file (the SSIM loss's data range), after checking it
    and the reference it describes: the reference finite and somewhere positive, ``max`` at least
    its maximum (float rounding aside) and at most :data:`MAX_ATTR_ABOVE` times it. A NaN
    reference or ``max`` failed steps later as "cg: the right-hand side holds NaN" (the weights
    had become NaN), naming no file; a ``max`` 1000x too large gave a loss of 3e-5 and exit 0."""
    from mrirecon.io import FastMRIFile

    with FastMRIFile(path) as f:
        value, key = f.attrs.get("max"), f.reference_key
        if value is None:
            raise ValueError(f"MRITrainingSet: {path}: attrs/max: missing (the reference volume's "
                             "maximum, the SSIM loss's data range)")
        if key is None:
            raise ValueError(f"MRITrainingSet: {path} has no reference (reconstruction_rss)")
        ref = f.reference()
    bad = ~torch.isfinite(ref)
    if bool(bad.any()):
        slices = torch.nonzero(bad.flatten(1).any(1)).flatten().tolist()
        raise ValueError(f"MRITrainingSet: {path}: {key}: {int(bad.sum())} NaN or Inf values "
                         f"(slice(s) {', '.join(map(str, slices[:5]))}): the training target and "
                         "the loss would be NaN")
    peak = float(ref.max())
    if not peak > 0:
        raise ValueError(f"MRITrainingSet: {path}: {key}: nowhere positive (maximum {peak:g}): no "
                         "training target (a placeholder reference?)")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"MRITrainingSet: {path}: attrs/max: {value!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"MRITrainingSet: {path}: attrs/max: {value:g} is no data range (the "
                         f"maximum of its {key} is {peak:.6g}): correct the attribute "
                         f"(h5py: f.attrs['max'] = f['{key}'][()].max())")
    if not peak * (1 - 1e-3) <= value <= MAX_ATTR_ABOVE * peak:
        raise ValueError(
            f"MRITrainingSet: {path}: attrs/max: {value:.6g} is {value / peak:.3g}x the maximum "
            f"{peak:.6g} of its {key}; fastMRI's max is the reference volume's maximum, the SSIM "
            "loss's data range (a range off by 1000x leaves a loss near 0 and nothing is learned; "
            "below the maximum it is no range): correct the attribute "
            f"(h5py: f.attrs['max'] = f['{key}'][()].max())")
    return value
