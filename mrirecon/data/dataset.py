"""A torch ``Dataset`` over the 2-D slices of fastMRI volumes.

Files are read through :class:`mrirecon.io.fastmri.FastMRIFile` (imported lazily, so
``import mrirecon.data`` does not pull in h5py). Index building opens each file once to read
its shape, header and attributes and closes it again; slice reads then go through handles
opened lazily *in the process that reads*. Handles inherited over ``fork`` (DataLoader
workers) are never used or closed in the child: each worker opens its own.
"""

from __future__ import annotations

import logging
import numbers
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mrirecon.containers import Header


@dataclass
class SliceSample:
    """One slice, as the dataset returns it without a transform.

    Attributes
    ----------
    kspace
        ``(coils, H, W)`` complex64 (single-coil files: ``coils = 1``).
    mask
        ``(W,)`` bool acquired columns (stored mask and header padding), ``None`` if all.
    reference
        ``(h, w)`` float32 target (``reconstruction_rss``/``_esc``) or ``None``.
    header
        The volume's acquisition header.
    file_name
        Base name of the file (fastMRI seeds validation masks from it).
    slice_index
        Index of the slice in its volume.
    """

    kspace: torch.Tensor
    mask: torch.Tensor | None
    reference: torch.Tensor | None
    header: Header
    file_name: str
    slice_index: int


@dataclass
class SliceBatch:
    """Stacked :class:`SliceSample` s (same shapes): ``kspace`` ``(B, coils, H, W)``, ``mask``
    ``(B, W)`` (all-True rows where a sample had ``None``), ``reference`` ``(B, h, w)`` or
    ``None``; per-sample ``headers``, ``file_names``, ``slice_indices``."""

    kspace: torch.Tensor
    mask: torch.Tensor
    reference: torch.Tensor | None
    headers: list[Header]
    file_names: list[str]
    slice_indices: list[int]


def collate_samples(samples: Sequence[SliceSample]) -> SliceBatch:
    """``collate_fn`` for a ``DataLoader`` over an untransformed :class:`SliceDataset`."""
    shapes = {tuple(s.kspace.shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(
            f"collate_samples: k-space shapes differ within the batch: {sorted(shapes)}")
    width = samples[0].kspace.shape[-1]
    masks = [s.mask if s.mask is not None else torch.ones(width, dtype=torch.bool) for s in samples]
    refs = [s.reference for s in samples]
    if any(r is None for r in refs):
        reference = None
    else:
        ref_shapes = {tuple(r.shape) for r in refs}
        if len(ref_shapes) != 1:
            raise ValueError(f"collate_samples: reference shapes differ: {sorted(ref_shapes)}")
        reference = torch.stack(refs)
    return SliceBatch(
        kspace=torch.stack([s.kspace for s in samples]), mask=torch.stack(masks),
        reference=reference, headers=[s.header for s in samples],
        file_names=[s.file_name for s in samples], slice_indices=[s.slice_index for s in samples],
    )


@dataclass(frozen=True)
class VolumeInfo:
    """What the index knows about one file (given to ``volume_filter``)."""

    path: Path
    num_slices: int
    shape: tuple[int, int, int, int]
    header: Header
    attrs: dict = field(default_factory=dict, compare=False)


#: Suffixes (any case) of the data files a folder holds: what ``mrirecon run`` takes from an input
#: folder (:func:`mrirecon.pipeline.runner.expand_inputs`) and what training reads from one.
DATA_SUFFIXES = (".h5", ".hdf5", ".mrd")

#: A reference whose L2 norm differs from the image it is compared with by more than this factor
#: (either way) is on another scale: undersampled zero-filled MRI is within 1.2x of its
#: reference, FBP within 1.1x. ``mrirecon run`` warns
#: (:func:`mrirecon.pipeline.reference_checks.scale_note`); training refuses such a file
#: (:func:`mrirecon.training.data.check_reference_layout`: its loss would compare images this far
#: apart and learn nothing).
REFERENCE_SCALE_FACTOR = 10.0


#: Elements per chunk of :func:`off_scale`'s float64 norms (2 MiB): they do not grow with the
#: volume (a whole-volume float64 copy of a 40-slice reference was 31 MiB, every evaluated volume).
NORM_CHUNK_ELEMENTS = 1 << 18


def _norm64(x: torch.Tensor) -> float:
    """The L2 norm of ``x`` in float64, summed a chunk of its first axis at a time."""
    x = x.detach()
    if x.ndim == 0:
        return float(x.double().abs())
    rows = max(1, NORM_CHUNK_ELEMENTS // max(1, x[0].numel()))
    total = 0.0
    for i in range(0, x.shape[0], rows):
        c = x[i : i + rows].double().reshape(-1)
        total += float(torch.dot(c, c))
    return total**0.5


def off_scale(reference: torch.Tensor, image: torch.Tensor) -> float | None:
    """``||reference|| / ||image||`` (L2 norms) when it lies outside
    ``1 / REFERENCE_SCALE_FACTOR .. REFERENCE_SCALE_FACTOR``, else ``None`` (also when either norm
    is 0 or not finite): the rule of ``mrirecon run``'s reference check and of training's. The
    norms are float64, summed a chunk of slices at a time (:data:`NORM_CHUNK_ELEMENTS`)."""
    a, b = _norm64(reference), _norm64(image)
    if not (0 < a < float("inf") and 0 < b < float("inf")):
        return None
    ratio = a / b
    return None if 1 / REFERENCE_SCALE_FACTOR <= ratio <= REFERENCE_SCALE_FACTOR else ratio


def list_data_files(folder: str | os.PathLike, *, log: logging.Logger | None = None,
                    advice: str = "only its top-level files are read",
                    what: str = "data folder") -> list[Path]:
    """The data files of ``folder`` by ``mrirecon run``'s rule for an input folder: its top-level
    entries whose suffix is one of :data:`DATA_SUFFIXES` in any case (``a.h5``, ``b.hdf5``,
    ``c.H5``, ``d.mrd``), sorted; a dangling link stays in (it fails by name when read);
    LoDoPaB-layout references (``ground_truth_<part>_NNN.hdf5``) beside their
    ``observation_<part>_NNN.hdf5`` are left out. Subfolders are not searched: when the folder
    holds data files and subfolders, ``log`` (default: the ``mrirecon.data`` logger) warns
    "``what`` F: N subfolder(s) not searched (names); ``advice``". A folder of references alone
    keeps them (a clear error follows if they are read)."""
    from mrirecon.io.lodopab import reference_file_name

    log = log or logging.getLogger("mrirecon.data")
    root = Path(folder)
    entries = sorted(root.iterdir())
    files = [f for f in entries if f.suffix.lower() in DATA_SUFFIXES
             and (f.is_file() or (f.is_symlink() and not f.exists()))]
    if apple := [f for f in files if _apple_double(f)]:
        log.info("%s: %d macOS metadata file(s) (AppleDouble ._NAME, left by a copy to a FAT / "
                 "exFAT / network drive) are not inputs: %s", root, len(apple),
                 ", ".join(f.name for f in apple[:3]) + (", ..." if len(apple) > 3 else ""))
        files = [f for f in files if f not in apple]
    paired = {reference_file_name(f.name) for f in files} - {None}
    if refs := [f for f in files if f.name in paired]:
        log.info("%s: %d ground_truth_* reference file(s) beside their observations are not inputs",
                 root, len(refs))
        files = [f for f in files if f not in refs]
    subfolders = [f.name for f in entries if f.is_dir()]
    if subfolders and files:  # never searched: say so rather than drop them unseen
        log.warning("%s %s: %d subfolder(s) not searched (%s); %s", what, root, len(subfolders),
                    ", ".join(subfolders[:5]) + (", ..." if len(subfolders) > 5 else ""), advice)
    return files


def _apple_double(path: Path) -> bool:
    """``._NAME`` holding the AppleDouble magic ``00 05 16 07``: the resource fork macOS writes
    beside each file it copies to a file system without one (``._file1000001.h5`` matched
    ``*.h5`` and failed the run as "not a readable HDF5 file")."""
    if not path.name.startswith("._"):
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x00\x05\x16\x07"
    except OSError:
        return False


def _list_files(paths_or_folder, pattern: str | None) -> list[Path]:
    if isinstance(paths_or_folder, (str, os.PathLike)):
        root = Path(paths_or_folder)
        if root.is_dir():
            if pattern is None:
                return list_data_files(root)
            return sorted(p for p in root.glob(pattern) if p.is_file())
        if root.is_file():
            return [root]
        raise FileNotFoundError(f"SliceDataset: {root} is neither a folder nor a file")
    files = [Path(p) for p in paths_or_folder]
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"SliceDataset: missing files {missing}")
    return files


def check_subset(who: str, sample_rate: float, max_slices: int | None) -> float | None:
    """A training set's ``sample_rate`` (a number in (0, 1]) and ``max_slices`` (``None`` or an
    integer >= 1) checked, naming ``who``; returns the rate to draw by (``None`` for 1: all kept).
    Unchecked, ``max_slices=0`` was "every slice has all-zero k-space", ``-1`` dropped the last
    slice, and a ``sample_rate`` of 2 or NaN kept every slice."""
    if (isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real)
            or not 0 < sample_rate <= 1):
        raise ValueError(f"{who}: sample_rate must be a number in (0, 1] (the share of slices "
                         f"kept), got {sample_rate!r}")
    if max_slices is not None and (isinstance(max_slices, bool)
                                   or not isinstance(max_slices, numbers.Integral)
                                   or max_slices < 1):
        raise ValueError(f"{who}: max_slices must be None (all) or an integer >= 1, got "
                         f"{max_slices!r}")
    return None if sample_rate == 1 else float(sample_rate)


def subsample_indices(n: int, rate: float | None, rng: np.random.Generator, what: str) -> np.ndarray:
    """The seeded ``rate`` share of ``range(n)`` that :class:`SliceDataset` keeps (of volumes or
    slices); the CT training set keeps its images by the same rule."""
    if rate is None:
        return np.arange(n)
    if not 0 < rate <= 1:
        raise ValueError(f"SliceDataset: {what} must be in (0, 1], got {rate}")
    return np.sort(rng.choice(n, size=round(n * rate), replace=False))


class SliceDataset(torch.utils.data.Dataset):
    """Slices of fastMRI HDF5 volumes.

    Parameters
    ----------
    paths_or_folder
        A folder (files matching ``pattern``, sorted), one file, or a sequence of files.
    transform
        ``transform(sample: SliceSample) -> anything``; ``None`` returns the sample.
    sample_rate
        Keep this fraction of all slices (drawn with ``seed``); exclusive with
        ``volume_sample_rate``.
    volume_sample_rate
        Keep this fraction of the volumes (all their slices).
    volume_filter
        ``volume_filter(info: VolumeInfo) -> bool``: keep a volume only when True (e.g. by
        ``info.header.acquisition`` or ``info.shape[-1]``).
    seed
        Seed of the generator that draws the subsets (the same seed gives the same subset
        on every machine).
    pattern
        Glob for files in a folder; ``None``: the files ``mrirecon run`` takes from a folder
        (:func:`list_data_files`: ``.h5`` / ``.hdf5`` / ``.mrd`` in any case, top level only).
    max_open_files
        Handles kept open per process (least recently used are closed).
    """

    def __init__(
        self,
        paths_or_folder: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Callable[[SliceSample], object] | None = None,
        *,
        sample_rate: float | None = None,
        volume_sample_rate: float | None = None,
        volume_filter: Callable[[VolumeInfo], bool] | None = None,
        seed: int = 0,
        pattern: str | None = None,
        max_open_files: int = 16,
    ) -> None:
        from mrirecon.io.fastmri import FastMRIFile

        if sample_rate is not None and volume_sample_rate is not None:
            raise ValueError("SliceDataset: set sample_rate or volume_sample_rate, not both")
        if max_open_files < 1:
            raise ValueError(f"SliceDataset: max_open_files must be >= 1, got {max_open_files}")
        self.transform = transform
        self.max_open_files = max_open_files
        volumes = []
        for path in _list_files(paths_or_folder, pattern):
            with FastMRIFile(path) as f:
                info = VolumeInfo(path=path, num_slices=len(f), shape=f.shape,
                                  header=f.header, attrs=f.attrs)
            if volume_filter is None or volume_filter(info):
                volumes.append(info)
        rng = np.random.default_rng(seed)
        volumes = [volumes[i] for i in subsample_indices(len(volumes), volume_sample_rate, rng,
                                                  "volume_sample_rate")]
        samples = [(v, s) for v, info in enumerate(volumes) for s in range(info.num_slices)]
        self.volumes: list[VolumeInfo] = volumes
        from mrirecon.io.ismrmrd_stream import file_stamp  # (the ISMRMRD reader's rule)

        self._states = [file_stamp(info.path) for info in volumes]  # what was checked
        self.samples: list[tuple[int, int]] = [
            samples[i] for i in subsample_indices(len(samples), sample_rate, rng, "sample_rate")]
        self._reset_handles()

    # ---- per-process file handles --------------------------------------------------------
    def _reset_handles(self) -> None:
        self._pid = os.getpid()
        self._handles: OrderedDict[int, object] = OrderedDict()
        self._inherited: list = []

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"], state["_inherited"], state["_pid"] = OrderedDict(), [], None
        return state

    def _file(self, volume: int):
        if self._pid != os.getpid():  # forked: leave the parent's handles untouched
            self._inherited.append(self._handles)
            self._handles, self._pid = OrderedDict(), os.getpid()
        handles = self._handles
        path = self.volumes[volume].path
        # the file as the dataset was built on (its shape, slice count and maximum): a replaced
        # or deleted file was read from the cached handle with no workers (the old data) and
        # anew in workers (unchecked data), so batches followed the worker count
        from mrirecon.io.ismrmrd_stream import file_stamp

        if (now := file_stamp(path)) != self._states[volume]:
            if volume in handles:
                handles.pop(volume).close()
            if now is None:
                raise FileNotFoundError(f"{path}: no such file (deleted or moved after the "
                                        "dataset was built)")
            raise ValueError(f"{path}: the file changed after the dataset was built (size, "
                             "modification time or inode); build the dataset again")
        if volume in handles:
            handles.move_to_end(volume)
            return handles[volume]
        from mrirecon.io.fastmri import FastMRIFile

        f = FastMRIFile(path)
        handles[volume] = f
        while len(handles) > self.max_open_files:
            handles.popitem(last=False)[1].close()
        return f

    def close(self) -> None:
        """Close the handles this process opened."""
        if self._pid == os.getpid():
            for f in self._handles.values():
                f.close()
        self._handles = OrderedDict()

    # ---- Dataset protocol -----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        volume, slice_index = self.samples[index]
        k = self._file(volume).read_slice(slice_index)
        sample = SliceSample(
            kspace=k.data[0], mask=k.mask,
            reference=None if k.reference is None else k.reference[0],
            header=k.header, file_name=self.volumes[volume].path.name, slice_index=slice_index,
        )
        return sample if self.transform is None else self.transform(sample)
