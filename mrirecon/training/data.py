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
information outside the measured data leaks into the operator. The cache
(:class:`~mrirecon.training.maps_cache.MapsCache`) holds at most its byte budget
(``data.maps_cache_mb``); maps it dropped are recomputed, the same bit for bit.
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from mrirecon.core.names import accepts_deprecated_names
from mrirecon.operators.mri import SenseOperator, sense
from mrirecon.sampling import apply_mask, center_mask, create_mask_for_mask_type, file_seed
from mrirecon.training.config import MaskConfig
from mrirecon.training.maps_cache import MapsCache, default_budget_bytes
from mrirecon.training.mask_bands import drawn_accelerations, drawn_bands
from mrirecon.training.sample_sets import SampleSet, ShortRepr

MAPS = ("learned", "espirit", "walsh")


def mri_training_range(matrices, coils, accelerations, ratios, maps: str, bands) -> dict:
    """A card's MRI ``training_range`` (the keys :mod:`mrirecon.pipeline.model_range` reads):
    the intervals of the k-space ``matrices`` ``(H, W)``, ``coils``, ``accelerations`` and
    readout oversampling ``ratios`` (4 decimals), the coil ``maps`` kind, the centre ``bands``
    (``acs_columns``) and, for ESPIRiT maps, ``maps_crop: [0, 0]``."""
    out = {"matrix": {"min": [min(m[0] for m in matrices), min(m[1] for m in matrices)],
                      "max": [max(m[0] for m in matrices), max(m[1] for m in matrices)]},
           "coils": [min(coils), max(coils)],
           "accelerations": [round(min(accelerations), 4), round(max(accelerations), 4)],
           "readout_oversampling": [round(min(ratios), 4), round(max(ratios), 4)],
           "maps": [maps], "acs_columns": [min(bands), max(bands)]}
    if maps == "espirit":
        out["maps_crop"] = [0.0, 0.0]
    return out


def _readout_oversampling(header, rows: int) -> float:
    """Encoded / recon readout rows of k-space with ``rows`` rows, 1 when the header states no
    oversampling (``Header.oversampled_readout_rows``, the preprocess stage's crop rule)."""
    recon = header.oversampled_readout_rows(rows)
    return rows / recon if recon else 1.0


@dataclass
class TrainingSample(ShortRepr):
    """One slice ready for ``model(y, operator())`` and the loss.

    Attributes
    ----------
    y
        ``(1, coils, H, W)`` complex64 undersampled k-space (unsampled columns are zero).
    maps
        ``(1, coils, H, W)`` complex64 coil sensitivities (unit maps for ``"learned"``).
    mask
        ``(W,)`` bool sampled columns, or ``(H, W)`` sampled columns x measured readout rows for
        acquired data with a partial echo (:func:`mrirecon.training.data_acquired.readout_rows`).
    target
        ``(1, h, w)`` float32 reference magnitude at the recon size, or ``None`` (data without
        a reference, self-supervised training).
    max_value
        ``(1,)`` float32 maximum of the reference volume (SSIM / PSNR data range).
    fname, slice_index
        Source file name and slice number.
    acceleration
        Columns over sampled columns of the drawn mask (a property): the achieved rate, header
        padding included (:meth:`MRITrainingSet.training_range` and ``mrirecon run`` leave it
        out; the two agree on files without padding).
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
            self, y=self.y.to(device), maps=self.maps.to(device), mask=self.mask.to(device),
            target=None if self.target is None else self.target.to(device),
            max_value=self.max_value.to(device),
        )

    def operator(self) -> SenseOperator:
        """``sense(maps, mask)``: ``P F S`` mapping ``(1, H, W)`` images to ``(1, C, H, W)``."""
        return sense(self.maps, self.mask)

    @property
    def acceleration(self) -> float:
        columns = self.mask.reshape(-1, self.mask.shape[-1]).any(0)  # (H, W): the columns
        return float(columns.numel()) / max(int(columns.sum()), 1)


class MRITrainingSet(SampleSet):
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
    maps_cache
        Where computed maps are kept (one ``(C, H, W)`` complex64 tensor per slice), within its
        byte budget, least recently used dropped first
        (:class:`~mrirecon.training.maps_cache.MapsCache`; ``MapsCache(0)`` keeps none).
        ``None``: a cache of its own with the default budget
        (:func:`~mrirecon.training.maps_cache.default_budget_bytes`). ``mrirecon train`` gives
        its training and validation sets one cache of ``data.maps_cache_mb``. The old
        ``cache_maps=False`` / ``True`` is still taken (a ``FutureWarning``) as ``MapsCache(0)``
        / ``None``.
    """

    @accepts_deprecated_names(cache_maps=("maps_cache", lambda keep: None if keep else
                                          MapsCache(0)))
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
        maps_cache: MapsCache | None = None,
    ) -> None:
        from mrirecon.data.dataset import SliceDataset, check_subset

        if maps not in MAPS:
            raise ValueError(f"MRITrainingSet: maps must be one of {MAPS}, got {maps!r}")
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"MRITrainingSet: data folder {folder} does not exist")
        self.mask_config = mask or MaskConfig()
        cfg = self.mask_config
        self.mask_fn = create_mask_for_mask_type(cfg.type, cfg.center_fractions, cfg.accelerations)
        self.maps, self.train = maps, bool(train)
        rate = check_subset("MRITrainingSet", sample_rate, max_slices)
        files = fastmri_files(folder)
        self.dataset = SliceDataset(files, sample_rate=rate, seed=seed)
        if len(self.dataset) == 0:
            kinds = "/".join(sorted({f.suffix.lower() for f in files}))
            why = (f"sample_rate {sample_rate:g} kept none of its {len(files)} {kinds} files"
                   if rate is not None and files else
                   "expected fastMRI-layout .h5 / .hdf5 files")
            raise ValueError(f"MRITrainingSet: no slices found in {folder} ({why})")
        from mrirecon.io import FastMRIFile

        self.folder = folder
        n = len(self.dataset) if max_slices is None else min(max_slices, len(self.dataset))
        used = {volume for volume, _ in self.dataset.samples[:n]}
        no_reference, blank = [], set()
        for v, info in enumerate(self.dataset.volumes):  # a second mask: doubly masked data
            with FastMRIFile(info.path) as f:
                if f.mask is not None:
                    raise ValueError(
                        f"MRITrainingSet: {info.path} is already undersampled (it has a 'mask' "
                        f"dataset, acceleration {f.acceleration}); supervised training draws its "
                        "masks on fully sampled k-space; train on undersampled files "
                        "self-supervised (loss.ssdu), which splits their samples")
                if v not in used:
                    continue
                self._check_width(info)  # up front: these failed when first drawn, steps in
                if f.reference_key is None:
                    no_reference.append(str(info.path))
                    continue
                empty = blank_slices(f, f"MRITrainingSet: {info.path}")
                blank |= {(v, i) for i in empty}
                check_reference_layout(f, checked_slices(len(f), empty))
        if no_reference:  # found up front, not when the sample is first drawn (many steps in)
            shown = ", ".join(no_reference[:3]) + (
                f" and {len(no_reference) - 3} more" if len(no_reference) > 3 else "")
            raise ValueError(
                f"MRITrainingSet: {len(no_reference)} of the {len(used)} file(s) used in "
                f"{folder} have no reference (reconstruction_rss): {shown}; supervised training "
                "and validation compare with it: remove them, or train self-supervised "
                "(loss.ssdu), which needs no reference")
        # all-zero slices (a zeroed disk block): ESPIRiT, the operator or VarNet failed on
        # them when first drawn, naming no file; `mrirecon run` writes them as zeros
        self.indices = [i for i in range(n) if self.dataset.samples[i] not in blank]
        if not self.indices:
            raise ValueError(f"MRITrainingSet: every slice used in {folder} has all-zero k-space")
        self.maps_cache = MapsCache(default_budget_bytes()) if maps_cache is None else maps_cache
        self._volume_max: dict[int, float] = {}

    def __len__(self) -> int:
        return len(self.indices)

    def volume_keys(self) -> list[str]:
        """The file name of each sample (its ``fname``), read without loading it: validation
        scores one volume at a time (:func:`~mrirecon.training.validation.volume_groups`)."""
        return [self.dataset.volumes[self.dataset.samples[i][0]].path.name for i in self.indices]

    def source_files(self) -> list[Path]:
        """The files whose slices this set uses (after ``sample_rate`` and ``max_slices``)."""
        used = sorted({self.dataset.samples[i][0] for i in self.indices})
        return [self.dataset.volumes[v].path for v in used]

    def training_range(self) -> dict:
        """What a model trained on this set saw, in a model card's ``training_range`` schema
        (:mod:`mrirecon.pipeline.model_range`): the k-space matrices ``(H, W)`` and coil counts of
        the files used, the masks' accelerations on their widths (nominal and as drawn:
        acquirable / sampled columns, the header's padding columns left out as :meth:`get`
        leaves them out of the mask and ``mrirecon run`` counts them), ``maps_crop: [0, 0]``
        for ESPIRiT maps (crop 0 here), the kind of coil maps (``maps``: ``data.maps``, which
        ``mrirecon run`` compares with ``calibrate.method``) and the files' readout oversampling
        (``readout_oversampling``: encoded / recon rows, 1 for none; the matrix is as acquired,
        and ``mrirecon run`` compares the matrix the model gets, after
        ``preprocess.remove_oversampling``, with it and with its recon grid) and the masks'
        centre bands (``acs_columns``: :func:`drawn_bands`)."""
        volumes = [self.dataset.volumes[v] for v in
                   sorted({self.dataset.samples[i][0] for i in self.indices})]
        shapes = [tuple(int(n) for n in info.shape) for info in volumes]
        ratios = [_readout_oversampling(info.header, s[-2]) for s, info in zip(shapes, volumes)]
        grids = {(int(info.shape[-1]), info.header.padding_left, info.header.padding_right):
                 info.header.acquired_columns(int(info.shape[-1])) for info in volumes}
        cfg = self.mask_config
        accelerations = [float(a) for a in cfg.accelerations] + drawn_accelerations(
            cfg.type, zip(cfg.center_fractions, cfg.accelerations), grids.values())
        bands = drawn_bands(cfg.type, zip(cfg.center_fractions, cfg.accelerations), grids.values())
        return mri_training_range([s[-2:] for s in shapes], [s[1] for s in shapes],
                                  accelerations, ratios, self.maps, bands)

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
        if self.train and mask_seed is None:
            raise ValueError("MRITrainingSet.get: training samples need a mask_seed")
        volume, slice_index = self.dataset.samples[self.indices[index]]
        where = (self.dataset.volumes[volume].path, slice_index)
        with _naming(*where, f"remove the file from {self.folder} or repair it"):
            s = self.dataset[self.indices[index]]
        if s.reference is None:
            raise ValueError(f"MRITrainingSet: {s.file_name} has no reference (reconstruction_rss)")
        seed = mask_seed if self.train else file_seed(s.file_name)
        padding = (s.header.padding_left, s.header.padding_right)
        kspace = s.kspace.to(torch.complex64)
        cfg = self.mask_config
        with _naming(*where, f"drawing its mask (data.mask: {cfg.type}, center_fractions "
                             f"{list(cfg.center_fractions)}, accelerations {list(cfg.accelerations)})"):
            y, mask, num_low = apply_mask(kspace, self.mask_fn, seed=seed, padding=padding)
        band = int(self.common_center(kspace.shape[-1]).sum())
        with _naming(*where, f"calibrating its coil maps (data.maps: {self.maps}, from the {band} "
                             "centre columns every mask acquires, data.mask.center_fractions; "
                             "data.maps: learned needs none)"):
            maps = self._maps(kspace, str(where[0]), s.slice_index)
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

    def _check_width(self, info) -> None:
        """Refuse a file (:class:`~mrirecon.data.dataset.VolumeInfo`) whose k-space is too narrow
        for the masks of the configuration (each pair of centre fraction and acceleration must
        draw a mask that keeps a column inside the header's padding) or for the coil maps
        (ESPIRiT's minimum band; Walsh needs one centre column). A 12 x 8 file among 32 x 32
        ones trained until it was drawn, then stopped with "ESPIRiT needs a fully sampled centre
        band of at least 3 columns, got 1 (use calibrate.method=walsh, ...)", a pipeline key."""
        height, width = (int(n) for n in info.shape[-2:])
        cols = info.header.acquired_columns(width)
        left, right = info.header.padding_left, min(info.header.padding_right, width)
        cfg = self.mask_config
        where = f"MRITrainingSet: {info.path}: kspace is {height} x {width}"
        for cf, acc in zip(cfg.center_fractions, cfg.accelerations):
            try:
                kept = int((create_mask_for_mask_type(cfg.type, (cf,), (acc,))(width, seed=0)
                            & cols).sum())
            except ValueError as err:
                raise ValueError(f"{where}: data.mask ({cfg.type}, center fraction {cf:g}, "
                                 f"acceleration {acc:g}) draws no mask on its {width} columns: "
                                 f"{err}: change data.mask or remove the file") from None
            if kept == 0:
                raise ValueError(f"{where}: the masks of data.mask ({cfg.type}, center fraction "
                                 f"{cf:g}, acceleration {acc:g}) keep none of the columns "
                                 f"{left}..{right - 1} its header says were acquired: change "
                                 "data.mask or remove the file")
        band = int(self.common_center(width).sum())
        fix = "widen data.mask.center_fractions"
        if self.maps == "espirit" and not _espirit_fits(band, height):
            least = next((b for b in range(band + 1, width + 1) if _espirit_fits(b, height)), None)
            if least is not None:
                fix += f" to at least {math.ceil(1000 * least / width) / 1000:g}"
            raise ValueError(
                f"{where}: data.maps: espirit calibrates from the centre columns that every "
                f"mask acquires, here {band} (round({width} x {min(cfg.center_fractions):g}), "
                f"data.mask.center_fractions), fewer than ESPIRiT needs"
                + (f" ({least})" if least is not None else "")
                + f": {fix}, use data.maps: walsh or learned, or remove the file")
        elif self.maps == "walsh" and band == 0:
            raise ValueError(f"{where}: data.maps: walsh calibrates from the centre columns that "
                             f"every mask acquires, here none (round({width} x "
                             f"{min(cfg.center_fractions):g})): {fix}, use data.maps: learned, "
                             "or remove the file")

    def _maps(self, kspace: Tensor, path: str, slice_index: int) -> Tensor:
        c = kspace.shape[0]
        if self.maps == "learned":
            return torch.full_like(kspace, 1.0 / math.sqrt(c))
        # what the maps depend on besides the slice: a cache shared by sets of other settings
        # never hands out another set's maps
        cfg = self.mask_config
        key = ("MRITrainingSet", self.maps, cfg.type, tuple(cfg.center_fractions),
               tuple(cfg.accelerations), path, slice_index)
        if (maps := self.maps_cache.get(key)) is not None:
            return maps
        maps = calibrate_maps(kspace, self.maps, self.common_center(kspace.shape[-1]))
        if not bool((maps != 0).any()):  # sense() refused them later, naming no file
            raise ValueError(f"the {self.maps} coil maps {tuple(maps.shape)} are all zero (no "
                             "signal in the centre columns?)")
        self.maps_cache.put(key, maps)
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


def _check_scale(f, who: str, slices: list[int], refs: Tensor, images: Tensor) -> None:
    """Refuse references ``refs`` (slices ``slices`` of ``f``) on another scale than the
    zero-filled RSS images ``images`` of the fully sampled k-space: their L2 norms, centre-cropped
    to the grid they share, differ by more than
    :data:`~mrirecon.data.dataset.REFERENCE_SCALE_FACTOR` (the factor at which ``mrirecon run``
    warns; a reference and ``max`` multiplied by 1e-3 trained with the loss stuck at 0.99999,
    exit 0: the network sees the k-space's scale, the loss the reference's). All-zero slices are
    not judged."""
    from mrirecon.data.dataset import off_scale
    from mrirecon.functional import center_crop

    grid = (min(refs.shape[-2], images.shape[-2]), min(refs.shape[-1], images.shape[-1]))
    if (ratio := off_scale(center_crop(refs, grid), center_crop(images, grid))) is None:
        return
    shown = "slice" + ("s " if len(slices) > 1 else " ") + " and ".join(map(str, slices))
    raise ValueError(
        f"{who}: {f.path}: {f.reference_key}: its scale is {ratio:.3g}x that of the zero-filled "
        f"image of its k-space (L2 norms of {shown} on the {grid[0]} x {grid[1]} grid; fastMRI's "
        "reconstruction_rss of the same k-space is 1.0x): the model sees the k-space's scale "
        "and the loss compares it with the reference's, so nothing is learned (the loss stays "
        "near its start): store the reference (and attrs/max) on the k-space's scale, or scale "
        f"the k-space by {ratio:.3g}")


def checked_slices(n: int, blank: set[int]) -> list[int]:
    """The slices :func:`check_reference_layout` reads of a volume of ``n`` slices: two placed
    symmetrically, ``n // 4`` and ``n - 1 - n // 4`` (a reversed reference swaps them; the
    edges of a brain volume hold little anatomy), all-zero ones (``blank``) left out, else the
    middle non-blank slice."""
    pair = sorted({n // 4, n - 1 - n // 4} - blank)
    live = [i for i in range(n) if i not in blank]
    return pair or live[len(live) // 2:len(live) // 2 + 1]


def check_reference_layout(f, slices: list[int], who: str = "MRITrainingSet", *,
                           consequence: str | None = None) -> None:
    """Refuse a training file (an open :class:`~mrirecon.io.FastMRIFile`) whose reference does
    not describe its k-space, judged on ``slices`` (one or two, :func:`checked_slices`; only
    they are read) against the zero-filled RSS of the fully sampled k-space: a reference larger
    than the k-space's image grid (the target is the model's output centre-cropped to it: "
    center_crop: crop size (48, 48) does not fit input (32, 32)" when first drawn), on another
    scale (:func:`_check_scale`), flipped, transposed or rotated, or (two slices) in reverse
    order (:func:`~mrirecon.training.reference_checks.orientation_note` / ``slice_order_note``,
    the rules of ``mrirecon run`` and ``bench``; a rotated reference trained with exit 0 and no
    word, the model learning to rotate its images). ``consequence``: what the caller does with a
    reference as read (a validation set scores against it)."""
    from mrirecon.functional import center_crop, ifft2c, rss
    from mrirecon.training.readout_roll import check_readout_roll
    from mrirecon.training.reference_checks import orientation_note, slice_order_note

    key, (height, width) = f.reference_key, f.shape[-2:]
    where = f"{who}: {f.path}: {key}"
    consequence = (consequence or "Training would teach the model to map the data to the "
                   "reference as read") + (f": store {key} as the RSS image of its k-space (rows "
                   "and columns as the inverse FFT gives them, slices in k-space order), or "
                   "remove the file")
    read, refs, images = [], [], []
    for i in slices:
        sample = f.read_slice(i)
        check_readout_roll(sample.data[0], f.header, f"{who}: {f.path}: slice {i}")
        ref = sample.reference[0].double()
        if ref.shape[-2] > height or ref.shape[-1] > width:
            raise ValueError(
                f"{where}: its images are {ref.shape[-2]} x {ref.shape[-1]}, larger than the "
                f"{height} x {width} image grid of its k-space: the training target must be the "
                "image of that k-space (the model's output) centre-cropped to the recon size; "
                "a reference on another grid (resampled, or of other data) cannot be compared "
                "with it: store the RSS image of this k-space, or remove the file")
        if not bool(torch.isfinite(ref).all()):  # refused by checked_volume_max on first use
            continue
        read.append(i)
        refs.append(ref)
        images.append(center_crop(rss(ifft2c(sample.data[0].to(torch.complex64))), ref.shape))
    if not read:
        return
    _check_scale(f, who, read, torch.stack(refs), torch.stack(images))
    against = "the RSS image of its k-space"
    for i, ref, image in zip(read, refs, images):
        if note := orientation_note(ref, image, against, consequence=consequence):
            raise ValueError(f"{where}: slice {i}: {note}")
    if len(read) == 2 and (note := slice_order_note(torch.stack(refs), torch.stack(images),
                                                    consequence=consequence)):
        raise ValueError(f"{where}: slices {read[0]} and {read[1]} against the RSS images of "
                         f"their k-space: {note}")


def blank_slices(f, who: str) -> set[int]:
    """The slices of ``f`` (an open :class:`~mrirecon.io.FastMRIFile`) whose k-space is all zero,
    with a warning naming them; a file blank in every slice is refused (``who`` starts the
    message). Reads the k-space centre sample of every slice and coil (``slices x coils``
    values: a real slice's DC is never zero in every coil) and, only where that is zero, the
    whole slice to confirm. Chunked (compressed) k-space, where those samples would decompress
    all of it, is screened by its reference instead (slices whose reference is all zero); a
    blank slice it misses fails when drawn, naming the file and slice."""
    n = len(f)
    dc = f.centre_samples()
    if dc is None:
        ref = f.reference()
        suspects = [] if ref is None else [i for i in range(n) if not bool((ref[i] != 0).any())]
    else:
        suspects = [i for i in range(n) if not bool((dc[i] != 0).any())]
    found = {i for i in suspects
             if not bool((f.read_slice(i, with_reference=False).data != 0).any())}
    if len(found) == n:
        raise ValueError(f"{who}: kspace: all {n} slices are all zero: the file holds no "
                         "signal: remove it")
    if found:
        import logging

        shown = ", ".join(map(str, sorted(found)))
        logging.getLogger("mrirecon.train").warning(
            "%s: slice(s) %s of %d: k-space is all zero (a zeroed block of the file?); left out "
            "of the data set: there is nothing to learn from or score on them", who, shown, n)
    return found


def _espirit_fits(band: int, rows: int) -> bool:
    from mrirecon.calib.centre import espirit_block

    try:
        espirit_block(band, rows)
    except ValueError:
        return False
    return True


@contextmanager
def _naming(path, slice_index: int, doing: str):
    """Re-raise a ``ValueError`` of the block prefixed with the file, the slice and what was
    being done (with the training key to change): ESPIRiT's "calibration block of kspace is all
    zero" or a mask function's refusal stopped training steps in, naming neither."""
    try:
        yield
    except ValueError as err:
        text = str(err)
        text = text[len(f"{path}: "):] if text.startswith(f"{path}: ") else text
        raise ValueError(f"MRITrainingSet: {path}: slice {slice_index}: {text} ({doing})") from err


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
