"""Training samples from k-space as acquired: no fully sampled data, no reference needed.

For self-supervised training (``loss.ssdu``). A folder may hold fastMRI-layout files (test /
challenge files: undersampled ``kspace`` with a ``mask``, no ``reconstruction_rss``) and ISMRMRD
files (``.h5`` / ``.mrd``; unacquired lines are zero). Each slice's acquired columns are the
file's mask (fastMRI: ``mask`` and the header padding; ISMRMRD: the encoded lines), or, when a
file turns out to be fully sampled, a fastMRI mask of ``data.mask`` seeded by the file name (the
fixed retrospective undersampling of a study; never a fresh mask per epoch, which would leak the
full data into training). A reference found in a file is kept as ``target`` for validation
metrics only; the loss never reads it.

Coil maps: ``espirit`` / ``walsh`` from the fully sampled centre band of the slice's own mask
(cached per slice), or unit maps (``learned``). An ISMRMRD scan whose calibration lines are a
separate reference scan (``KSpace.calibration``) takes ``espirit`` / ``walsh`` maps from the
reference's band; ``learned`` maps (estimated from the data's own centre) are refused for it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from mrirecon.sampling import apply_mask, create_mask_for_mask_type, file_seed
from mrirecon.sampling.acs import held_columns
from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MAPS, TrainingSample, calibrate_maps

SUFFIXES = (".h5", ".mrd")


def centre_band(mask: Tensor) -> Tensor:
    """``(W,)`` bool: the contiguous run of acquired columns through the centre column
    ``W // 2`` (the fully sampled ACS band of a fastMRI-style mask; empty if the centre is not
    acquired)."""
    m = mask.reshape(-1).bool()
    out = torch.zeros_like(m)
    c = m.numel() // 2
    if not bool(m[c]):
        return out
    lo = c
    while lo > 0 and bool(m[lo - 1]):
        lo -= 1
    hi = c
    while hi < m.numel() - 1 and bool(m[hi + 1]):
        hi += 1
    out[lo:hi + 1] = True
    return out


def centre_run(mask: Tensor) -> int:
    """Width of :func:`centre_band`."""
    return int(centre_band(mask).sum())


class AcquiredMRISet:
    """Slices of a folder of fastMRI-layout or ISMRMRD files, used as acquired.

    Parameters
    ----------
    folder
        Folder of ``*.h5`` / ``*.mrd`` files (or a single file).
    mask
        Retrospective mask for files that are fully sampled (seeded by the file name).
    maps
        ``"espirit"`` / ``"walsh"`` (from the acquired centre band) or ``"learned"`` (unit maps).
    train
        Only recorded (``evaluate_reconstructor`` reads it); samples never change with the seed.
    max_slices
        Keep at most this many slices (file order).
    """

    def __init__(self, folder: str | os.PathLike, mask: MaskConfig | None = None,
                 maps: str = "espirit", train: bool = True, *, max_slices: int | None = None,
                 sample_rate: float = 1.0, seed: int = 0) -> None:
        from mrirecon.io.probe import hdf5_layout

        if maps not in MAPS:
            raise ValueError(f"AcquiredMRISet: maps must be one of {MAPS}, got {maps!r}")
        root = Path(folder)
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = sorted(p for p in root.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
        else:
            raise FileNotFoundError(f"AcquiredMRISet: data folder {root} does not exist")
        cfg = mask or MaskConfig()
        self.mask_fn = create_mask_for_mask_type(cfg.type, cfg.center_fractions, cfg.accelerations)
        self.maps, self.train = maps, bool(train)
        self.items: list[tuple[Path, str, int]] = []
        for p in files:
            layout = hdf5_layout(p)
            if layout not in ("fastmri", "ismrmrd"):
                raise ValueError(f"AcquiredMRISet: {p} holds {layout} data, not MRI k-space")
            self.items += [(p, layout, i) for i in range(self._num_slices(p, layout))]
        if not self.items:
            raise ValueError(f"AcquiredMRISet: no k-space files (*.h5, *.mrd) in {root}")
        if sample_rate < 1.0:
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(self.items), generator=g)[:max(1, round(sample_rate * len(self.items)))]
            self.items = [self.items[i] for i in sorted(keep.tolist())]
        if max_slices is not None:
            self.items = self.items[:max_slices]
        self._volume: tuple[Path, object] | None = None  # last ISMRMRD volume read
        self._maps_cache: dict[tuple[str, int], Tensor] = {}

    @staticmethod
    def _num_slices(path: Path, layout: str) -> int:
        if layout == "fastmri":
            from mrirecon.io import FastMRIFile

            with FastMRIFile(path) as f:
                return len(f)
        from mrirecon.io import read_ismrmrd

        return int(read_ismrmrd(path).data.shape[0])

    def __len__(self) -> int:
        return len(self.items)

    def _read(self, index: int):
        """``(kspace (C, H, W), acquired columns (W,) or None, reference (h, w) or None,
        volume max or None, padding, separate reference scan (C, H, W) or None)``."""
        path, layout, i = self.items[index]
        if layout == "fastmri":
            from mrirecon.io import FastMRIFile

            with FastMRIFile(path) as f:
                ks = f.read_slice(i)
                vmax = f.attrs.get("max")
                padding = f.padding
            ref = ks.reference[0] if ks.reference is not None else None
            return ks.data[0], ks.mask, ref, vmax, padding, None
        if self._volume is None or self._volume[0] != path:
            from mrirecon.io import read_ismrmrd

            self._volume = (path, read_ismrmrd(path))
        vol = self._volume[1]
        if vol.trajectory is not None:
            raise ValueError(f"AcquiredMRISet: {path} is non-Cartesian; SSDU here needs Cartesian data")
        mask = vol.mask if vol.mask is None or vol.mask.ndim == 1 else vol.mask[i]
        cal = None if vol.calibration is None else vol.calibration[i]
        return vol.data[i], mask, None, None, (0, vol.data.shape[-1]), cal

    def get(self, index: int, mask_seed: int | None = None) -> TrainingSample:
        """Slice ``index`` as acquired (``mask_seed`` is ignored: the data are fixed)."""
        if not 0 <= index < len(self):
            raise IndexError(f"AcquiredMRISet: index {index} out of range for {len(self)} slices")
        path, _, i = self.items[index]
        kspace, mask, ref, vmax, padding, cal = self._read(index)
        kspace = kspace.to(torch.complex64)
        if mask is None:  # no stored mask: the columns that hold data
            mask = held_columns(kspace)
        mask = mask.reshape(-1).bool()
        if bool(mask.all()):  # fully sampled file: the study's fixed retrospective mask
            kspace, m, _ = apply_mask(kspace, self.mask_fn, seed=file_seed(path.name),
                                      padding=padding)
            mask = m.reshape(-1).bool()
        else:
            kspace = kspace * mask
        maps = self._maps(kspace, mask, path.name, i, cal)
        target = ref.to(torch.float32).unsqueeze(0) if ref is not None else None
        if vmax is None and ref is not None:
            vmax = float(ref.max())
        return TrainingSample(
            y=kspace.unsqueeze(0), maps=maps.unsqueeze(0), mask=mask, target=target,
            max_value=torch.tensor([float("nan") if vmax is None else float(vmax)]),
            fname=path.name, slice_index=i, num_low_frequencies=centre_run(mask))

    def _maps(self, kspace: Tensor, mask: Tensor, fname: str, i: int,
              calibration: Tensor | None = None) -> Tensor:
        separate = calibration is not None and bool((calibration != 0).any())
        if self.maps == "learned":
            if separate:
                raise ValueError(f"AcquiredMRISet: {fname} slice {i}: the calibration lines are a "
                                 "separate reference scan, and learned maps are estimated from "
                                 "the data's own centre, which these imaging lines lack; use "
                                 "data.maps: espirit or walsh (maps from the reference)")
            return torch.full_like(kspace, 1.0 / math.sqrt(kspace.shape[0]))
        key = (fname, i)
        if key not in self._maps_cache:
            if separate:  # the reference's band, never mixed into the data
                kspace = calibration.to(torch.complex64)
                mask = held_columns(kspace)
            centre = centre_band(mask)
            width = int(centre.sum())
            if width < 3:
                raise ValueError(f"AcquiredMRISet: {fname} slice {i} has {width} fully sampled "
                                 "centre column(s); ESPIRiT / Walsh maps need at least 3 "
                                 "(use data.maps: learned)")
            self._maps_cache[key] = calibrate_maps(kspace, self.maps, centre)
        return self._maps_cache[key]
