"""Training samples from k-space as acquired: no fully sampled data, no reference needed.

For self-supervised training (``loss.ssdu``). A folder may hold fastMRI-layout files (test /
challenge files: undersampled ``kspace`` with a ``mask``, no ``reconstruction_rss``) and ISMRMRD
files (``.h5`` / ``.mrd``; unacquired lines are zero). Each slice's acquired columns are the
file's mask (fastMRI: ``mask`` and the header padding; ISMRMRD: the encoded lines), or, when a
file turns out to be fully sampled, a fastMRI mask of ``data.mask`` seeded by the file name (the
fixed retrospective undersampling of a study; never a fresh mask per epoch, which would leak the
full data into training). A partial echo (one side of every readout never sampled: the ISMRMRD
reader's ``readout_range``, or a fastMRI-layout file's band of zero rows on one side) makes the
sample's mask ``(H, W)``, the columns times the readout rows that hold data
(:func:`readout_rows`): the operator mask ``mrirecon run`` gives the slice
(``pipeline.sampling_mri.sampling_mask``), so SSDU never puts the never-sampled rows in its
data-consistency or loss set as measured zeros. A reference found in a file is kept as
``target`` for validation metrics only; the loss never reads it.

Each file is one volume: an ISMRMRD file with several echoes, contrasts, repetitions (or slabs
that do not form one volume) is refused with advice for training, which has no
``load.counters`` (:func:`read_volume`).

An ISMRMRD file with a noise scan is prewhitened with it, its separate reference scan too
(:func:`~mrirecon.calib.prewhiten_scan`, the rule of ``mrirecon run``'s ``preprocess`` stage,
whose ``prewhiten`` is on by default and in every shipped pipeline): the model trains on the
channels it meets at inference (unit, uncorrelated noise), and the maps are estimated from them.
The readout is kept as acquired and the coils are not compressed (a learned model's pipeline
defaults: ``remove_oversampling`` off, no ``coil_compression``).

Coil maps: ``espirit`` / ``walsh`` from the fully sampled centre band of the slice's own mask,
the columns the pipeline's ``calibrate`` stage takes (cached per slice), or unit maps
(``learned``). An ISMRMRD scan whose calibration lines are a
separate reference scan (``KSpace.calibration``) takes ``espirit`` / ``walsh`` maps from the
reference's band; ``learned`` maps (estimated from the data's own centre) are refused for it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import Tensor

from mrirecon.io.partial_echo import one_sided_band
from mrirecon.sampling import apply_mask, create_mask_for_mask_type, file_seed
from mrirecon.sampling.acs import acs_width, held_columns
from mrirecon.training.config import MaskConfig
from mrirecon.training.data import (MAPS, TrainingSample, _readout_oversampling, calibrate_maps,
                                    mri_training_range)
from mrirecon.training.mask_bands import drawn_accelerations, drawn_bands
from mrirecon.training.maps_cache import MapsCache, default_budget_bytes
from mrirecon.training.sample_sets import mask_text


def fully_sampled(mask: Tensor, padding: tuple[int, int]) -> bool:
    """Whether every column inside the scanner's acquired range ``[padding_left, padding_right)``
    is sampled in every row of ``mask`` (``(W,)`` or ``(rows, W)``): a fully sampled file. The
    columns outside the range were never acquired (fastMRI knee files: zero padding), so the
    file's own mask excludes them; judging the whole width took such a file for undersampled
    data, and SSDU trained on nearly complete k-space (56 of 64 columns, "acceleration 1.14")."""
    m = torch.as_tensor(mask).bool()
    m = m.reshape(-1, m.shape[-1])
    left, right = acquired_range(padding, m.shape[-1])
    return right > left and bool(m[:, left:right].all())


def acquired_range(padding: tuple[int, int], width: int) -> tuple[int, int]:
    """``[left, right)``: the header's acquired columns ``padding`` clamped to ``width``."""
    return max(int(padding[0]), 0), min(int(padding[1]), int(width))


def readout_rows(header, kspace: Tensor) -> Tensor | None:
    """``(H,)`` bool: the readout rows (k-space rows) of ``kspace`` ``(coils, H, W)`` that hold
    measured data, ``None`` when every row does. The rows ``mrirecon run``'s operator samples
    (``pipeline.sampling_mri.readout_support`` of the header, after ``zero_rows_echo``; training
    may not import the pipeline, and keeps the readout as acquired, so no rescaling): the
    reader's ``header.extra["readout_range"] = [start, stop, H]``, else a band of rows zero in
    every coil and column on one side only, as many as a partial echo
    (:func:`~mrirecon.io.partial_echo.one_sided_band`, as ``zero_rows_echo``)."""
    rows = int(kspace.shape[-2])
    found = header.extra.get("readout_range") if header is not None else None
    if found:
        start, stop, n = (int(v) for v in found)
        if n != rows:
            raise ValueError(f"readout_range {list(found)} describes {n} readout rows, the "
                             f"k-space has {rows}")
    else:
        band = one_sided_band((kspace != 0).any(-1).any(0))
        if band is None:
            return None
        start, stop = band
    support = torch.zeros(rows, dtype=torch.bool)
    support[max(start, 0): min(stop, rows)] = True
    return None if bool(support.all()) else support


def read_volume(path: Path):
    """:func:`~mrirecon.io.read_ismrmrd` of ``path``; a refusal that advises ``load.counters``
    (several echoes / contrasts / repetitions in one file, slabs or slices that are not one
    volume) says what to do in training instead, which reads every file whole."""
    import re

    from mrirecon.io import read_ismrmrd
    from mrirecon.io.errors import DataFormatError

    try:
        return read_ismrmrd(path)
    except DataFormatError as err:
        advice = err.problem.find("--set load.counters.")
        if advice < 0:
            raise
        name = re.match(r"--set load\.counters\.(\w+)", err.problem[advice:]).group(1)
        cut = err.problem.rfind("; ", 0, advice)
        problem = err.problem[:cut if cut > 0 else advice].rstrip(" ;:,")
        raise DataFormatError(err.file, err.field, (
            f"{problem}; training has no load.counters (each file of data.train / data.val is "
            f"read whole, as one volume): split the file into one file per idx.{name} value (its "
            f"acquisitions of that idx.{name}, with the header and the noise scans: e.g. with the "
            "ismrmrd package), or move it out of the data folder")) from None


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
        Keep at most this many slices (file order), applied after ``sample_rate``.
    sample_rate
        Fraction of slices kept, in (0, 1]: ``max(1, round(sample_rate * slices))`` of them,
        drawn with ``seed`` and kept in file order.
    seed
        Seed of the ``sample_rate`` draw and of nothing else (masks: by the file name).
    maps_cache
        Where ESPIRiT / Walsh maps are kept, within its byte budget (as
        :class:`~mrirecon.training.data.MRITrainingSet`'s; ``None``: one of the default budget).
    """

    def __init__(self, folder: str | os.PathLike, mask: MaskConfig | None = None,
                 maps: str = "espirit", train: bool = True, *, max_slices: int | None = None,
                 sample_rate: float = 1.0, seed: int = 0,
                 maps_cache: MapsCache | None = None) -> None:
        from mrirecon.data.dataset import check_subset
        from mrirecon.io.probe import hdf5_layout

        check_subset("AcquiredMRISet", sample_rate, max_slices)
        if maps not in MAPS:
            raise ValueError(f"AcquiredMRISet: maps must be one of {MAPS}, got {maps!r}")
        root = Path(folder)
        if root.is_file():
            files = [root]
        elif root.is_dir():  # mrirecon run's rule: .h5 / .hdf5 / .mrd in any case, top level
            import logging

            from mrirecon.data.dataset import list_data_files

            files = list_data_files(root, log=logging.getLogger("mrirecon.train"),
                                    advice="training reads the files at the top of data.train / "
                                           "data.val only: move theirs up to train on them")
        else:
            raise FileNotFoundError(f"AcquiredMRISet: data folder {root} does not exist")
        cfg = mask or MaskConfig()
        self.mask_fn = create_mask_for_mask_type(cfg.type, cfg.center_fractions, cfg.accelerations)
        self.maps, self.train = maps, bool(train)
        self.items: list[tuple[Path, str, int]] = []
        #: per file: ``(H, W)``, coils, ``(accelerations, centre bands)`` of its acquired
        #: columns (per slice where the mask is; ``None``: fully sampled, the retrospective mask
        #: of ``mask`` applies), readout oversampling (encoded / recon rows), acquired columns
        self._shapes: dict[Path, tuple] = {}
        for p in files:
            layout = hdf5_layout(p)
            if layout not in ("fastmri", "ismrmrd"):
                raise ValueError(f"AcquiredMRISet: {p} holds {layout} data, not MRI k-space")
            count, self._shapes[p] = self._scan(p, layout)
            self.items += [(p, layout, i) for i in range(count)]
        if not self.items:
            raise ValueError(f"AcquiredMRISet: no k-space files (.h5, .hdf5, .mrd) in {root}")
        self.mask_config = cfg
        if sample_rate < 1.0:
            g = torch.Generator().manual_seed(seed)
            keep = torch.randperm(len(self.items), generator=g)[:max(1, round(sample_rate * len(self.items)))]
            self.items = [self.items[i] for i in sorted(keep.tolist())]
        if max_slices is not None:
            self.items = self.items[:max_slices]
        if maps != "learned":  # up front, the files used: a band too narrow failed when its
            # slice was first drawn, steps in (supervised training checks before step 1 too)
            for p in self.source_files():
                self._check_band(p)
        if not self.train:  # validation scores against the references; training ignores them
            self._check_reference_scales()
            self._say_unreferenced(root)
        self._volume: tuple[Path, object] | None = None  # last ISMRMRD volume read
        self.maps_cache = MapsCache(default_budget_bytes()) if maps_cache is None else maps_cache

    def _check_reference_scales(self) -> None:
        """Refuse a fastMRI file used for validation whose reference does not describe its
        k-space (:func:`~mrirecon.training.data.check_reference_layout`, judged by the zero-filled
        image of the data as acquired, as ``mrirecon bench`` judges it): on another scale
        (validation NMSE / PSNR compared the model's output with a reference x 1000 and were
        reported as scores, -60 dB PSNR, exit 0), on a larger grid, rotated or transposed, or
        its slices in reverse order (scores of a model against the wrong image, no word)."""
        from mrirecon.io import FastMRIFile
        from mrirecon.training.data import check_reference_layout, checked_slices

        for p in self.source_files():
            if self._layout(p) == "fastmri":
                with FastMRIFile(p) as f:
                    if f.reference_key is not None:
                        check_reference_layout(f, checked_slices(len(f), set()), "AcquiredMRISet",
                                               consequence="Validation would score the model "
                                               "against the reference as read")

    def files_without_reference(self) -> list[str]:
        """Names of the files used that hold no reference image (test-layout fastMRI files,
        ISMRMRD files): their samples' ``target`` is ``None``, so SSDU validation scores NMSE /
        PSNR / SSIM on the other files only (``evaluate_reconstructor`` leaves them out)."""
        from mrirecon.io import FastMRIFile

        out = []
        for p in self.source_files():
            if self._layout(p) == "fastmri":
                with FastMRIFile(p) as f:
                    if f.reference_key is not None:
                        continue
            out.append(p.name)
        return out

    def _say_unreferenced(self, root: Path) -> None:
        """Name, once and up front (rank 0), the validation files without a reference: one of
        them had turned NMSE / PSNR / SSIM off for every volume, the card's validation record
        and its zero-filled bar with them, without a word; all of them (a test folder) is the
        usual self-supervised case, said at INFO."""
        import logging

        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            return
        without, total = self.files_without_reference(), len(self.source_files())
        log = logging.getLogger("mrirecon.train")
        if len(without) == total:
            log.info("AcquiredMRISet: %s: no validation file has a reference image: SSDU "
                     "validation reports val_ssdu_loss only (no NMSE / PSNR / SSIM)", root)
        elif without:
            log.warning("AcquiredMRISet: %s: %d of %d validation file(s) have no reference "
                        "image (%s): SSDU validation scores NMSE / PSNR / SSIM on the other %d "
                        "only (val_ssdu_loss on all); move them out of data.val to score every "
                        "file", root, len(without), total, ", ".join(without[:3])
                        + (", ..." if len(without) > 3 else ""), total - len(without))

    def _check_band(self, path: Path) -> None:
        """Refuse a fastMRI-layout file whose mask leaves fewer fully sampled centre columns
        than ``data.maps`` calibrates from (:data:`LEAST_BAND`, as :meth:`_maps`): its own mask,
        or, for a fully sampled file, the mask ``data.mask`` draws on it (seeded by its name, as
        :meth:`get` draws it). An ISMRMRD file may calibrate from a separate reference scan: it
        is checked when its slice is drawn."""
        if self._layout(path) != "fastmri":
            return
        (h, w), coils, own, _, acquired = self._shapes[path]
        if own is not None:
            width = min(own[1])
            if width < LEAST_BAND[self.maps]:
                raise ValueError(_narrow_band(path, width, self.maps, row=own[1].index(width)))
            return
        try:
            mask, _ = self.mask_fn.sample((coils, h, w), seed=file_seed(path.name))
        except ValueError as err:  # failed in get(), when the file was first drawn
            raise ValueError(f"AcquiredMRISet: {path} is fully sampled, and data.mask draws no "
                             f"mask on its {w} columns: {err}: change data.mask or leave the "
                             "file out of data.train / data.val") from None
        width = acs_width(mask.reshape(-1).bool() & acquired)
        if width < LEAST_BAND[self.maps]:
            raise ValueError(_narrow_band(path, width, self.maps, drawn=self.mask_config,
                                          columns=w))

    def _layout(self, path: Path) -> str:
        return next(layout for p, layout, _ in self.items if p == path)

    @staticmethod
    def _scan(path: Path, layout: str) -> tuple[int, tuple]:
        """``(slices, ((H, W), coils, (accelerations, centre bands) or None, readout
        oversampling, acquired columns (W,)))`` of a file (read once here; the oversampling is
        the supervised set's rule, ``_readout_oversampling``).

        Accelerations are acquirable / sampled columns, the header's padding left out of both
        (the rule of ``mrirecon run``'s model range, ``slice_mri.column_counts``, and of
        ``MRITrainingSet.training_range``): full width / sampled columns overstated it in the
        model card's training range (14 of 56 acquirable columns in a 64-column file: 4.57x).
        Centre bands: ``acs_width`` of the sampled acquirable columns, as ``mrirecon run``
        counts them (:func:`~mrirecon.training.mask_bands.drawn_bands` for drawn masks)."""
        def acceleration(mask, width: int, padding: tuple[int, int]):
            left, right = acquired_range(padding, width)
            acquired = torch.zeros(width, dtype=torch.bool)
            acquired[left:right] = True
            if mask is None:
                return None, acquired
            m = torch.as_tensor(mask).reshape(-1, width).bool()
            if fully_sampled(m, padding):  # get() gives it the retrospective mask
                return None, acquired
            return (tuple(max(right - left, 1) / max(float(k), 1.0)
                          for k in m[:, left:right].sum(-1).tolist()),
                    tuple(acs_width(row & acquired) for row in m)), acquired

        if layout == "fastmri":
            from mrirecon.io import FastMRIFile

            with FastMRIFile(path) as f:
                n, coils, h, w = f.shape
                own, acquired = acceleration(f.sampling_mask(), w, f.padding)
                return len(f), ((int(h), int(w)), int(coils), own,
                                _readout_oversampling(f.header, int(h)), acquired)
        data = read_volume(path)
        n, coils, h, w = data.data.shape
        mask = data.mask if data.mask is not None else torch.stack(
            [held_columns(data.data[i]) for i in range(n)])  # what get() takes as acquired
        own, acquired = acceleration(mask, w, (0, w))
        return int(n), ((int(h), int(w)), int(coils), own,
                        _readout_oversampling(data.header, int(h)), acquired)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        files = self.source_files()
        where = {p.parent for p in files}
        folder = repr(str(where.pop())) if len(where) == 1 else f"{len(where)} folders"
        return (f"AcquiredMRISet({folder}, {len(files)} files, {len(self)} samples, "
                f"mask={mask_text(self.mask_config)} (fully sampled files), maps={self.maps!r}, "
                f"train={self.train})")

    def volume_keys(self) -> list[str]:
        """The file name of each sample (its ``fname``), read without loading it
        (:func:`~mrirecon.training.validation.volume_groups`)."""
        return [p.name for p, _, _ in self.items]

    def source_files(self) -> list[Path]:
        """The files whose slices this set uses (after ``sample_rate`` and ``max_slices``)."""
        return list(dict.fromkeys(p for p, _, _ in self.items))

    def training_range(self) -> dict:
        """A model card's ``training_range`` for this set: matrices, coils and accelerations of
        the files used (their own masks; fully sampled files: ``mask``'s nominal rates and those
        its masks achieve on the files' acquired columns), their
        readout oversampling (``readout_oversampling``, encoded / recon rows: the matrix is as
        acquired, and ``mrirecon run`` accepts it and its recon grid) and the kind of coil maps
        (``maps``: ``data.maps``, which ``mrirecon run`` compares with ``calibrate.method``) and
        the centre bands (``acs_columns``: of the files' own masks, and of every mask ``mask``
        draws on a fully sampled file's acquired columns), as for supervised cards
        (:meth:`~mrirecon.training.data.MRITrainingSet.training_range`)."""
        info = [self._shapes[p] for p in self.source_files()]
        cfg = self.mask_config
        accelerations = [a for _, _, own, _, _ in info if own is not None for a in own[0]]
        bands = [b for _, _, own, _, _ in info if own is not None for b in own[1]]
        full = [acquired for _, _, own, _, acquired in info if own is None]
        if full:  # nominal and as drawn on the acquired columns, as MRITrainingSet ranges
            # them: the files' own masks are ranged as achieved, so a nominal 8x beside a test
            # file's achieved 7.95x gave a false "outside the training range" warning
            accelerations += [float(a) for a in cfg.accelerations]
            accelerations += drawn_accelerations(
                cfg.type, zip(cfg.center_fractions, cfg.accelerations), full)
            bands += drawn_bands(cfg.type, zip(cfg.center_fractions, cfg.accelerations), full)
        shapes, coils, ratios = [i[0] for i in info], [i[1] for i in info], [i[3] for i in info]
        return mri_training_range(shapes, coils, accelerations, ratios, self.maps, bands)

    def _read(self, index: int):
        """``(kspace (C, H, W), acquired columns (W,) or None, reference (h, w) or None,
        volume max or None, padding, separate reference scan (C, H, W) or None, readout rows
        (H,) that hold data or None)``; ISMRMRD k-space and reference prewhitened with the
        file's noise scan when it has one."""
        path, layout, i = self.items[index]
        if layout == "fastmri":
            from mrirecon.io import FastMRIFile

            with FastMRIFile(path) as f:
                ks = f.read_slice(i)
                vmax = f.attrs.get("max")
                padding = f.padding
            ref = ks.reference[0] if ks.reference is not None else None
            rows = readout_rows(ks.header, ks.data[0])
            return ks.data[0], ks.mask, ref, vmax, padding, None, rows
        if self._volume is None or self._volume[0] != path:
            self._volume = (path, read_volume(path))
        vol = self._volume[1]
        if vol.trajectory is not None:
            raise ValueError(f"AcquiredMRISet: {path} is non-Cartesian; SSDU here needs Cartesian data")
        mask = vol.mask if vol.mask is None or vol.mask.ndim == 1 else vol.mask[i]
        data, cal = vol.data[i], None if vol.calibration is None else vol.calibration[i]
        rows = readout_rows(vol.header, data)  # before prewhitening mixes the coils' zeros
        if vol.noise is not None:  # mrirecon run's preprocess: the data and the reference
            from mrirecon.calib import prewhiten_scan  # whitened with the file's noise scan

            try:
                data, cal = prewhiten_scan(data, cal, noise=vol.noise)
            except ValueError as err:  # mrirecon run refuses the file alike
                raise ValueError(f"AcquiredMRISet: {path} slice {i}: {err} (training always "
                                 "prewhitens a file with a noise scan, as mrirecon run does "
                                 "by default: move the file out of the data folder)") from None
        return data, mask, None, None, (0, vol.data.shape[-1]), cal, rows

    def get(self, index: int, mask_seed: int | None = None) -> TrainingSample:
        """Slice ``index`` as acquired (``mask_seed`` is ignored: the data are fixed). Its
        ``mask`` is the ``(W,)`` acquired columns, or ``(H, W)`` columns x readout rows for a
        partial echo (:func:`readout_rows`)."""
        if not 0 <= index < len(self):
            raise IndexError(f"AcquiredMRISet: index {index} out of range for {len(self)} slices")
        path, _, i = self.items[index]
        kspace, mask, ref, vmax, padding, cal, rows = self._read(index)
        kspace = kspace.to(torch.complex64)
        if mask is None:  # no stored mask: the columns that hold data
            mask = held_columns(kspace)
        mask = mask.reshape(-1).bool()
        if fully_sampled(mask, padding):  # fully sampled file: the study's fixed retrospective
            # mask, inside the acquired range (the padding stays unsampled)
            padding = acquired_range(padding, mask.numel())
            kspace, m, _ = apply_mask(kspace, self.mask_fn, seed=file_seed(path.name),
                                      padding=padding)
            mask = m.reshape(-1).bool()
        else:
            kspace = kspace * mask
        maps = self._maps(kspace, mask, path, i, cal)
        target = ref.to(torch.float32).unsqueeze(0) if ref is not None else None
        if vmax is None and ref is not None:
            vmax = float(ref.max())
        points = mask if rows is None else rows[:, None] & mask[None, :]  # mrirecon run's mask
        return TrainingSample(
            y=kspace.unsqueeze(0), maps=maps.unsqueeze(0), mask=points, target=target,
            max_value=torch.tensor([float("nan") if vmax is None else float(vmax)]),
            fname=path.name, slice_index=i, num_low_frequencies=acs_width(mask))

    def _maps(self, kspace: Tensor, mask: Tensor, path: Path, i: int,
              calibration: Tensor | None = None) -> Tensor:
        fname = path.name
        separate = calibration is not None and bool((calibration != 0).any())
        if self.maps == "learned":
            if separate:
                raise ValueError(f"AcquiredMRISet: {fname} slice {i}: the calibration lines are a "
                                 "separate reference scan, and learned maps are estimated from "
                                 "the data's own centre, which these imaging lines lack; use "
                                 "data.maps: espirit or walsh (maps from the reference)")
            return torch.full_like(kspace, 1.0 / math.sqrt(kspace.shape[0]))
        # what the maps depend on besides the slice (the retrospective mask of a fully sampled
        # file): a cache shared by sets of other settings never hands out another set's maps
        cfg = self.mask_config
        key = ("AcquiredMRISet", self.maps, cfg.type, tuple(cfg.center_fractions),
               tuple(cfg.accelerations), str(path), i)
        if (maps := self.maps_cache.get(key)) is None:
            from mrirecon.training.deploy_mri import centre_band

            if separate:  # the reference's band, never mixed into the data
                kspace = calibration.to(torch.complex64)
                mask = held_columns(kspace)
            # the pipeline's calibration columns (at most 24, centred on W // 2), so that the
            # maps are those the model meets in mrirecon run; the whole acquired run through the
            # centre was lop-sided where a random column touched the band (26-36 of 64: ESPIRiT
            # warned "pass calib_width=(24, 10)", an argument no training key sets)
            centre = centre_band(mask)
            width = int(centre.sum())
            if width < LEAST_BAND[self.maps]:
                info = getattr(self, "_shapes", {}).get(path)
                drawn = info is not None and info[2] is None  # the mask data.mask drew
                raise ValueError(_narrow_band(path, width, self.maps, row=None if drawn else i,
                                              drawn=cfg if drawn else None,
                                              columns=mask.shape[-1]))
            maps = calibrate_maps(kspace, self.maps, centre)
            self.maps_cache.put(key, maps)
        return maps


#: The fewest fully sampled centre columns the coil maps of ``data.maps`` are calibrated from
#: (:func:`~mrirecon.calib.centre.espirit_block`'s rule; Walsh maps take any band, as
#: ``MRITrainingSet._check_width`` and ``mrirecon run``'s ``calibrate`` stage take it: 3 for
#: both refused Walsh on the 1-2 columns it calibrates from).
LEAST_BAND = {"espirit": 3, "walsh": 1, "learned": 0}


def _narrow_band(path: Path, width: int, maps: str, *, row: int | None = None,
                 drawn: MaskConfig | None = None, columns: int | None = None) -> str:
    """The refusal of a file whose mask's centre band is too narrow for the coil maps ``maps``:
    its own mask (``row``: the mask row, a slice of a per-slice mask), or the mask ``drawn``
    (``data.mask``) draws on a fully sampled file of ``columns`` columns. Its advice was
    ``data.maps: learned``, which ``loss.ssdu`` (this set's only user) refuses; so is a model
    that estimates its own maps (``validate.py``): the advice is Walsh maps, the file or the
    mask."""
    least = LEAST_BAND[maps]
    need = (f"; the coil maps of data.maps: {maps}, through which loss.ssdu scores the model, "
            f"need at least {least}: ")
    if width >= LEAST_BAND["walsh"] and maps != "walsh":  # loss.ssdu takes walsh, not learned
        need += "use data.maps: walsh (calibrated from any centre band), "
    if drawn is None:
        where = "" if row is None else f" (mask row {row})"
        return (f"AcquiredMRISet: {path}{where} has {width} fully sampled centre column(s)"
                f"{need}leave the file out of data.train / data.val, or use files acquired with "
                "a wider centre band")
    fraction = math.ceil(1000 * least / max(int(columns or 1), 1)) / 1000
    return (f"AcquiredMRISet: {path} is fully sampled, and the mask data.mask draws on it "
            f"({drawn.type}, seeded by the file name) has {width} fully sampled centre "
            f"column(s) of its {columns}{need}widen data.mask.center_fractions (to at least "
            f"{fraction:g}: {least} of {columns} columns), or leave the file out of data.train "
            "/ data.val")
