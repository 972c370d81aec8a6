"""ISMRMRD HDF5 raw data -> :class:`~mrirecon.containers.KSpace` (Cartesian here;
acquisitions that carry a trajectory go to :mod:`mrirecon.io.ismrmrd_noncartesian`).

An ISMRMRD file holds a group (default ``/dataset``) with the XML header ``xml`` and a
compound dataset ``data`` of acquisitions: a fixed header (``flags``, ``idx`` encoding
counters, ``number_of_samples``, ``active_channels``, ``center_sample``, directions and
position in the DICOM patient frame, LPS mm) and the samples ``(channels, samples)``
complex64, stored as interleaved float32.

The reader places every readout on the fastMRI grid ``(slices, coils, H = readout,
W = phase encoding)``:

* column ``kspace_encode_step_1 + (y // 2 - limits.center)`` (the k-space centre lands on
  ``W // 2``), row ``sample + (x // 2 - center_sample)`` (partial echo stays centred);
* ``idx.slice`` picks the slice; for 3-D encodings (``z > 1``) ``kspace_encode_step_2`` picks
  the partition, the volume is inverse-Fourier transformed along it onto the recon slab's grid
  (kz zero-filled for slice interpolation, slice oversampling cropped:
  :mod:`mrirecon.io.ismrmrd_slab`), and the output has ``slices * reconSpace z`` 2-D slices
  (slice-major). Slices (or slabs) are put in position order and must form one evenly spaced
  volume: several slabs must be contiguous (overlapping or gapped slabs are refused;
  ``counters={"slice": s}`` reads slab ``s`` alone);
* lines acquired several times (``idx.average`` or repeated calibration lines) are averaged,
  each sample over the repeats that hold it (repeats with different partial echoes);
* noise-measurement acquisitions are returned as ``KSpace.noise`` ``(coils, samples)``;
  navigator, phase-correction, dummy, feedback, surface-coil-correction and phase
  stabilisation acquisitions are ignored, as are those of other encoding spaces
  (``encoding_space_ref != 0``; noted in ``header.extra["other_encodings_note"]``, and refused
  when they are calibration lines: a reference scan on another matrix, which cannot be used);
* calibration-only lines (``ACQ_IS_PARALLEL_CALIBRATION`` without ``..._AND_IMAGING``) of the
  same scan (integrated ACS) fill the positions no imaging line has; a separate reference scan
  (header ``calibrationMode`` ``separate`` / ``external``, or lines that differ from the imaging
  lines at the same positions by more than
  :data:`~mrirecon.io.ismrmrd_reference.CALIBRATION_MISMATCH`) is returned apart as
  ``KSpace.calibration``, placed, transformed and cropped like the imaging data, and never enters
  ``data`` (noted in ``header.extra["calibration_note"]``);
* unacquired lines stay zero; ``KSpace.mask`` ``(W,)`` (or ``(slices, W)`` when slices
  differ) marks acquired columns, ``None`` when all columns were acquired; a slice whose
  k-space centre line neither the data nor a separate reference holds is refused;
* acquisitions that carry ``traj`` under a ``cartesian`` / ``epi`` header are placed by their
  counters when ``traj`` lies on those lines (noted), refused under ``cartesian`` otherwise;
* a partial (asymmetric) echo, one side of every readout never sampled
  (:func:`mrirecon.io.partial_echo.is_partial_echo`), is recorded as
  ``header.extra["readout_range"] = [start, stop, rows]``: rows ``start .. stop - 1`` of the
  ``rows``-sample readout hold data (the pipeline's operators then treat the others as
  unsampled, :func:`mrirecon.pipeline.sampling_mri.readout_support`), with its
  ``partial_echo_note`` (:func:`mrirecon.io.partial_echo.partial_echo_extra`);
* readouts shorter than the others (a partial echo on some lines only) leave rows that no
  repeat of the line holds, read as measured zeros: noted in ``header.extra["short_lines_note"]``
  (:func:`~mrirecon.io.ismrmrd_slab.short_lines_note`);
* refused or noted (``io/ismrmrd_encoding.py``): partitions missing between acquired ones or
  inside the ``kspace_encoding_step_2`` limits (kz undersampling; kz partial Fourier outside the
  limits is zero-filled and noted), several ``kspace_encode_step_2`` under ``z = 1``, ``epi``
  with ramp sampling or phase-correction lines; a reference scan taken once (``repetition`` 0)
  serves the counter value selected, as a separate reference;
* refused (``io/ismrmrd_placement.py``): imaging acquisitions of another orientation than the
  first, a missing ``idx.slice`` below the largest, coinciding non-zero slice positions, slices
  off the line along the normal; a header whose encoded and recon readout voxel sizes differ is
  warned (:func:`~mrirecon.io.ismrmrd_header.readout_voxel_problem`);
* optionally, readout oversampling is removed by cropping the readout to
  ``x * recon_fov_x / encoded_fov_x`` samples in image space.

Memory (:mod:`mrirecon.io.ismrmrd_stream`): the acquisition heads are read first, in chunks of
rows; the samples are then read in bounded chunks into the grid, or for acquisitions that carry
``traj`` into the ``(slices, coils, readouts, samples)`` volume (the reader's peak is about the
grid and one chunk; :func:`_check_allocation` refuses, before reading a sample, a grid and its
working arrays above half the memory). :func:`~mrirecon.io.ismrmrd_stream.open_ismrmrd` reads
2-D multi-slice Cartesian and non-Cartesian data one slice at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.containers import Header, KSpace
from mrirecon.io.errors import (DataFormatError, hdf5_dataset, memory_bytes, one_string,
                                open_hdf5, refuse_oversized)
from mrirecon.io.hdf5_vlen import check_vlen_references
from mrirecon.io.ismrmrd_encoding import (SHARED_REFERENCE_COUNTERS, check_centre_lines,
                                          check_epi, check_partition_counter, check_partitions,
                                          interpolate_phase, select_counters, shift_note,
                                          traj_ignored)
from mrirecon.io.ismrmrd_reference import CALIBRATION_MISMATCH, separate_reference  # noqa: F401
from mrirecon.io.ismrmrd_header import NONCARTESIAN_KINDS, parse_ismrmrd_header
from mrirecon.io.partial_echo import is_partial_echo, partial_echo_extra
from mrirecon.io.ismrmrd_placement import (acquisition_geometry, check_orientation,
                                           check_placement, check_slice_indices, gap_known,
                                           partitions_reversed, slice_order)
from mrirecon.io.ismrmrd_slab import (average_per_sample, short_lines_note, slab_header,
                                      slab_plan, to_slices)
from mrirecon.io.ismrmrd_slab import (REPEAT_MISMATCH, repeat_note_of,  # noqa: F401
                                      repeat_parts)
from mrirecon.io.ismrmrd_stream import CHUNK_BYTES, Rows, read_heads

# ISMRMRD acquisition flag numbers (bit ``n - 1`` of ``flags``).
ACQ_IS_NOISE_MEASUREMENT = 19
ACQ_IS_PARALLEL_CALIBRATION = 20
ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING = 21
ACQ_IS_REVERSE = 22
ACQ_LAST_IN_MEASUREMENT = 25
IGNORED_FLAGS = {
    23: "navigation", 24: "phase correction", 26: "HP feedback", 27: "dummy scan",
    28: "RT feedback", 29: "surface coil correction", 30: "phase stabilisation reference",
    31: "phase stabilisation",
}
SELECTABLE_COUNTERS = ("contrast", "phase", "repetition", "set", "slice")
#: Counters whose several values are one volume (slices, slabs): selecting one is optional.
OPTIONAL_COUNTERS = ("slice",)


def _flag(flags: np.ndarray, number: int) -> np.ndarray:
    return ((flags >> np.uint64(number - 1)) & np.uint64(1)).astype(bool)


def _samples(record, fail, index: int) -> np.ndarray:
    head = record["head"]
    channels, n = int(head["active_channels"]), int(head["number_of_samples"])
    raw = np.asarray(record["data"], dtype=np.float32)
    if raw.size != 2 * channels * n:
        raise fail(f"data[{index}].data",
                   f"expected {2 * channels * n} floats ({channels} channels x {n} samples), "
                   f"got {raw.size}")
    return raw.view(np.complex64).reshape(channels, n)


MAX_GRID_PER_READOUT = 4096  # grid lines per acquired readout that a real scan never exceeds


def _check_allocation(fail, field: str, shape: tuple[int, ...], readouts: int,
                      grids: int = 1, held_slices: int | None = None) -> None:
    """Refuse a k-space grid that the acquisitions cannot justify or memory cannot hold, before
    allocating it (a corrupt index or matrix size would otherwise ask for many GiB). What the
    read holds is counted: ``grids`` grids (2 with calibration-only lines) of ``held_slices``
    slices (all, or 1 read at a time: the streamed read's planning pass and each slice it reads),
    the per-sample repeat counts of every slice (8 bytes a grid point; the planning pass holds
    them for the whole volume), a 3-D slab's kz transform (2 more grids) and one chunk of
    samples; above half the memory the read is refused before any sample is read. A grid far
    beyond what the readouts can fill is refused as corrupt indices or matrix size; one that is
    only too large for the memory here is refused as such (split the file, or more memory)."""
    slices, parts, channels, enc_x, enc_y = shape
    held = slices if held_slices is None else held_slices
    nbytes = 8 * slices * parts * channels * enc_x * enc_y
    points = held * parts * enc_x * enc_y
    need = grids * (8 * channels * points + 8 * slices * parts * enc_x * enc_y)
    need += (2 * 8 * channels * points if parts > 1 else 0) + CHUNK_BYTES
    lines = slices * parts * enc_y
    sizes = (f"{readouts} readouts would fill a k-space grid of shape {shape} "
             f"({nbytes / 2**30:.2f} GiB)")
    if lines > MAX_GRID_PER_READOUT * max(readouts, 1) and nbytes > 1 << 28:
        raise fail(field, f"{sizes}, more than {MAX_GRID_PER_READOUT} grid lines a readout: the "
                          "slice/encoding indices or the header's matrix size are corrupt")
    if need > memory_bytes() // 2:
        raise fail(field, f"{sizes}; the read needs {need / 2**30:.2f} GiB, the memory here "
                          f"allows {memory_bytes() // 2 / 2**30:.2f} GiB (half of it): split the "
                          "file or run with more memory")


def _check_limits(header: Header, idx, imaging: np.ndarray, fail, counters) -> None:
    """Refuse an acquisition whose counter exceeds the header's ``encodingLimits`` maximum."""
    for counter in counters:
        limit = header.extra.get(f"encoding_limits_{counter.replace('kspace_encode_', '')}")
        if isinstance(limit, tuple):  # (minimum, maximum, center) of a k-space step
            limit = limit[1]
        found = int(idx[counter][imaging].max())
        if limit is not None and found > limit:
            raise fail(f"data[{int(imaging[np.argmax(idx[counter][imaging])])}].idx.{counter}",
                       f"{found} exceeds the header's encodingLimits/"
                       f"{counter.replace('encode', 'encoding')}/maximum = {limit}")


def read_ismrmrd(path: str | os.PathLike, dataset: str = "dataset", **kwargs) -> KSpace:
    """Read Cartesian ISMRMRD raw data into the fastMRI layout (see :func:`_read_ismrmrd` for
    the parameters). A malformed file raises :class:`DataFormatError`, whatever is wrong in it."""
    import inspect

    inspect.signature(_read_ismrmrd).bind(path, dataset, **kwargs)  # a wrong keyword: TypeError
    try:
        return _read_ismrmrd(path, dataset, **kwargs)
    except (DataFormatError, FileNotFoundError, MemoryError):
        raise
    except ValueError as err:
        if "read_ismrmrd: counters" in str(err):
            raise
        raise DataFormatError(path, f"{dataset}/data", f"malformed ({err})") from err
    except (KeyError, IndexError, TypeError, OverflowError, AttributeError, OSError,
            RuntimeError) as err:
        raise DataFormatError(path, f"{dataset}/data",
                              f"malformed ({type(err).__name__}: {err})") from err


def _read_ismrmrd(
    path: str | os.PathLike,
    dataset: str = "dataset",
    *,
    crop_readout_oversampling: bool = False,
    include_calibration: bool = True,
    counters: Mapping[str, int] | None = None,
    _stream: bool = False,
) -> KSpace:
    """Read Cartesian ISMRMRD raw data into the fastMRI layout (``_stream``: an
    :class:`~mrirecon.io.ismrmrd_stream.ISMRMRDSlices` instead, :func:`~mrirecon.io.
    ismrmrd_stream.open_ismrmrd`).

    Parameters
    ----------
    path
        ISMRMRD HDF5 file.
    dataset
        Group holding ``xml`` and ``data``.
    crop_readout_oversampling
        Crop the readout (``H``) to the recon field of view in image space; the returned
        header's encoded ``x`` matrix and FOV are updated accordingly.
    include_calibration
        Keep the calibration-only acquisitions (``ACQ_IS_PARALLEL_CALIBRATION`` without
        ``..._AND_IMAGING``: ACS lines outside the imaging pattern; a separate reference scan's
        lines go to ``KSpace.calibration``). Lines flagged ``..._AND_IMAGING`` are imaging lines
        and are always kept.
    counters
        Values to select for ``contrast``, ``phase``, ``repetition``, ``set`` when the file
        has several (e.g. ``{"repetition": 2}``); ``slice`` reads that slice or 3-D slab
        alone (e.g. one of overlapping slabs).

    Returns
    -------
    KSpace
        ``data`` ``(slices, coils, H, W)`` complex64, ``mask``, ``noise`` ``(coils, samples)``
        or ``None``, ``header`` with geometry (orientation and origin from the first imaging
        acquisition when its directions are set), ``calibration`` ``(slices, coils, H, W)``
        (a separate reference scan's lines, zero elsewhere) or ``None``.

    Raises
    ------
    DataFormatError
        Unreadable file (or one open for writing elsewhere), missing group/``xml``/``data``
        (or compressed with a filter HDF5 lacks), an ``xml`` of other than one string, no imaging
        acquisition, encoding counters outside the encoded matrix, inconsistent channel counts,
        several values of a counter not selected with ``counters``, NaN/Inf samples.
    """
    path = Path(path)

    def fail(field: str, problem: str) -> DataFormatError:
        return DataFormatError(path, field, problem)

    h5 = open_hdf5(path, "ISMRMRD")
    with h5:
        if dataset not in h5 or not isinstance(h5[dataset], h5py.Group):
            raise fail(dataset, f"group missing (found {sorted(h5.keys())})")
        group = h5[dataset]
        for name in ("xml", "data"):
            if name not in group:
                raise fail(f"{dataset}/{name}", "dataset missing")
        field = f"{dataset}/xml"
        try:  # each a dataset whose filters this HDF5 has (hdf5_dataset)
            xml_ds = hdf5_dataset(h5, path, field)
            # heap IDs are checked before HDF5 follows them (a corrupt heap can hang it)
            if bad := check_vlen_references(path, h5, xml_ds):
                raise fail(field, bad)
            if xml_ds.size != 1:
                raise fail(field, f"expected one string, got shape {xml_ds.shape}")
            xml = one_string(path, field, xml_ds[()])  # a scalar (h5py, HDF5.jl) or (1,)
            field = f"{dataset}/data"
            table = hdf5_dataset(h5, path, field)
            if table.ndim != 1:
                raise fail(field, "expected a 1-D table of acquisitions")
            refuse_oversized(path, field, float(table.shape[0]) * max(
                table.dtype.itemsize, 1), f"a table of {table.shape[0]} acquisitions")
            if bad := check_vlen_references(path, h5, table):
                raise fail(field, bad)
            names = table.dtype.names
            table_dtype = table.dtype
            # the heads only (the samples in chunks, never held): see ismrmrd_stream
            heads = read_heads(table)[0] if names and "head" in names else None
        except DataFormatError:
            raise
        except (OSError, RuntimeError, ValueError, LookupError, TypeError) as err:
            raise fail(field, f"unreadable ({err})") from None
    header = parse_ismrmrd_header(xml, source=path)
    if heads is None:
        raise fail(f"{dataset}/data", f"not an acquisition table (dtype {table_dtype})")
    records = Rows(heads, path=path, dataset=dataset)
    flags = heads["flags"].astype(np.uint64)
    idx = heads["idx"]

    noise_sel = _flag(flags, ACQ_IS_NOISE_MEASUREMENT)
    other = ~noise_sel & (heads["encoding_space_ref"] != 0)
    if other.any():  # a second encoding space: read nothing of it, but never without a word
        spaces = sorted({int(v) for v in heads["encoding_space_ref"][other]})
        reference = other & _flag(flags, ACQ_IS_PARALLEL_CALIBRATION)
        if reference.any():
            raise fail(f"data[{int(np.argmax(reference))}].head.encoding_space_ref",
                       f"{int(reference.sum())} parallel-calibration acquisitions are in encoding "
                       f"space {spaces}: a reference scan in an encoding space of its own (its own "
                       "matrix and field of view), which mrirecon cannot use (a separate "
                       "reference in encoding space 0, with the imaging matrix, is used for "
                       "calibration; without one an undersampled scan has no calibration band)")
        header = header.with_(extra={**header.extra, "other_encodings_note": (
            f"{int(other.sum())} acquisitions of encoding space {spaces} were not read: only "
            "encoding space 0 is reconstructed")})
    # sample-free markers (ismrmrd.Acquisition(), an end of measurement: no direction, or
    # ACQ_LAST_IN_MEASUREMENT) hold nothing to place: their zero read_dir failed the
    # orientation check as "readouts turned from one to the next"; any other sample-free
    # acquisition is a readout without its data, refused below naming it
    empty = heads["number_of_samples"] == 0
    marker = empty & (_flag(flags, ACQ_LAST_IN_MEASUREMENT)
                      | ~np.asarray(heads["read_dir"]).any(axis=-1))
    keep = ~noise_sel & (heads["encoding_space_ref"] == 0) & ~marker
    for number in IGNORED_FLAGS:
        keep &= ~_flag(flags, number)
    # calibration only: lines flagged ..._AND_IMAGING too (Siemens' PATREFANDIMASCAN) are imaging
    calib_only = _flag(flags, ACQ_IS_PARALLEL_CALIBRATION) & \
        ~_flag(flags, ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    calibration = keep & calib_only  # what the switch leaves out
    header = header.with_(extra={**header.extra, "calibration_lines": int(calibration.sum())})
    if not include_calibration:
        keep &= ~calib_only
    chosen = dict(counters or {})
    unknown = set(chosen) - set(SELECTABLE_COUNTERS)
    if unknown:
        raise ValueError(
            f"read_ismrmrd: counters must be among {SELECTABLE_COUNTERS}, got {sorted(unknown)}")
    # a reference scan taken once (repetition 0) serves the other repetitions: never dropped
    keep, header, borrowed = select_counters(idx, keep, calib_only, chosen, fail,
                                             SELECTABLE_COUNTERS, OPTIONAL_COUNTERS, header)
    if "slice" in chosen:  # one slice or slab read alone is slice 0 of its volume (idx views
        # the records: the non-Cartesian reader sees it too)
        idx["slice"][keep] = 0
    imaging = np.flatnonzero(keep)
    if imaging.size == 0:
        raise fail(f"{dataset}/data", "no imaging acquisition")
    if (lost := imaging[empty[imaging]]).size:  # was: "slice 0 has no readout 5" (non-Cartesian)
        raise fail(f"data[{int(lost[0])}].head.number_of_samples",
                   f"0 samples: {lost.size} imaging acquisition(s) hold no data (first: "
                   f"idx.kspace_encode_step_1 {int(idx['kspace_encode_step_1'][lost[0]])}, "
                   f"slice {int(idx['slice'][lost[0]])}); a readout lost in the conversion?")
    check_placement(heads, imaging, fail)  # NaN reached the NIfTI affine
    check_orientation(heads, imaging, fail)  # a localizer was stacked in one orientation
    by_traj = int(heads["trajectory_dimensions"][imaging[0]]) > 0
    if by_traj:  # a Cartesian header's traj on the Cartesian lines: read by the counters
        header, ignored = traj_ignored(header, records, imaging, fail)
        by_traj = not ignored
    # EPI read as Cartesian lines: ramps not regridded, ghosts not corrected (exit 0, 11 dB)
    header = check_epi(header, flags, ~noise_sel & (heads["encoding_space_ref"] == 0), by_traj,
                       fail)
    if by_traj:  # radial / spiral readouts
        if borrowed is not None:  # this reader keeps no reference apart: another repetition's
            # calibration lines would be averaged into the image (repeats of a readout)
            other = np.zeros_like(keep)
            for name in SHARED_REFERENCE_COUNTERS:
                if name in chosen:
                    other |= idx[name] != chosen[name]
            imaging = np.flatnonzero(keep & ~(calib_only & other))
            header = header.with_(extra={k: v for k, v in header.extra.items()
                                         if k != "reference_counter_note"})
        from mrirecon.io.ismrmrd_noncartesian import read_traj_acquisitions

        return read_traj_acquisitions(path, header, records, imaging, noise_sel, calib_only,
                                      fail, dataset, _stream)
    kind = str(header.extra.get("trajectory", "cartesian")).strip()
    if kind.lower() in NONCARTESIAN_KINDS:  # readouts read as phase-encoding lines: garbage, exit 0
        raise fail(f"data[{int(imaging[0])}].head.trajectory_dimensions",
                   f"0: the acquisitions carry no k-space coordinates (traj), but the header's "
                   f"encoding/trajectory is {kind!r}: {kind} readouts cannot be placed without "
                   "them; write the trajectory into each acquisition (traj, "
                   "trajectory_dimensions 2 or 3)")

    select = _Selection(path, dataset, header, heads, imaging, _flag(flags, ACQ_IS_REVERSE),
                        calib_only, noise_sel, borrowed, crop_readout_oversampling, fail)
    select.rows = records
    if _stream:  # slice by slice where the data allow (ismrmrd_stream)
        from mrirecon.io.ismrmrd_stream import stream_cartesian

        return stream_cartesian(_cartesian, select, records)
    return _cartesian(select, records)[0]


class _Selection:
    """What the heads decided before the Cartesian grid is filled (:func:`_cartesian`)."""

    def __init__(self, path, dataset, header, heads, imaging, reverse, calib_only, noise_sel,
                 borrowed, crop, fail) -> None:
        self.path, self.dataset, self.header, self.heads = path, dataset, header, heads
        self.imaging, self.reverse, self.calib_only = imaging, reverse, calib_only
        self.noise_sel, self.borrowed, self.crop, self.fail = noise_sel, borrowed, crop, fail


def _cartesian(sel: _Selection, records: Rows | None, slices: np.ndarray | None = None,
               imaging: np.ndarray | None = None, noise=...) -> tuple[KSpace, dict]:
    """The Cartesian branch of :func:`_read_ismrmrd`: ``(KSpace, info)``. ``records``: the
    samples (``None``: the heads alone, a grid of no coils, every check and the header but the
    repeats' note; what :func:`~mrirecon.io.ismrmrd_stream.stream_cartesian` plans with).
    ``imaging`` / ``slices``: the acquisitions read and their slice numbers (one slice of the
    volume, read alone as slice 0), all of ``sel`` by default; ``noise``: the noise scans
    already read. ``info``: ``repeats`` (:func:`repeat_parts`), ``order`` (the position sort),
    ``needs_samples`` (calibration lines to compare with the imaging lines of every slice)."""
    path, dataset, header, heads, fail = sel.path, sel.dataset, sel.header, sel.heads, sel.fail
    imaging = sel.imaging if imaging is None else imaging
    reverse, calib_only, borrowed = sel.reverse, sel.calib_only, sel.borrowed
    crop_readout_oversampling, idx = sel.crop, heads["idx"]
    slices = idx["slice"] if slices is None else slices
    enc_x, enc_y, enc_z = header.encoded_matrix
    check_partition_counter(idx, imaging, enc_z, fail)  # 3-D partitions averaged into one slice
    shift_y = enc_y // 2 - header.extra.get("encoding_limits_step_1", (0, 0, enc_y // 2))[2]
    shift_z = enc_z // 2 - header.extra.get("encoding_limits_step_2", (0, 0, enc_z // 2))[2]
    channels = int(heads["active_channels"][imaging[0]])
    num_slices = int(slices[imaging].max()) + 1
    _check_limits(header, idx, imaging, fail, ("slice", "repetition", "contrast", "phase", "set",
                                               "average", "kspace_encode_step_1",
                                               "kspace_encode_step_2"))
    ngrids = 1 + bool(calib_only[imaging].any())
    _check_allocation(fail, f"{dataset}/data", (num_slices, enc_z, channels, enc_x, enc_y),
                      imaging.size, ngrids, 1 if records is None else None)
    check_slice_indices(slices[imaging], fail, dataset)  # an empty slice in the volume
    held_coils = channels if records is not None else 0  # heads alone: a grid of no coils
    kspace = np.zeros((num_slices, enc_z, held_coils, enc_x, enc_y), np.complex64)
    count = np.zeros((num_slices, enc_z, enc_y), np.int64)
    energy = np.zeros((num_slices, enc_z, enc_y))  # a repeat's mean |samples|^2 x count
    positions: dict[int, np.ndarray] = {}
    sources: dict[int, int] = {}  # the acquisition each slice's position came from
    spans = []  # (acquisition, slice, partition, column, calibration-only)
    # calibration-only lines (ACS outside the imaging pattern) go to a grid of their own first:
    # lines of the same scan then fill the positions no imaging line has (where an imaging line
    # exists it wins), a separate reference scan stays apart (KSpace.calibration)
    grids = {False: (kspace, count, energy, [enc_x, 0])}  # the rows any line fills
    if calib_only[imaging].any():
        grids[True] = (np.zeros_like(kspace), np.zeros_like(count), np.zeros_like(energy),
                       [enc_x, 0])
    # per sample: the repeats that hold it and their |samples|^2 (repeats of other extents)
    held = {k: (np.zeros((num_slices, enc_z, enc_x, enc_y), np.int32),
                np.zeros((num_slices, enc_z, enc_x, enc_y), np.float32)) for k in grids}
    reading = records.iter(imaging) if records is not None else ((a, None) for a in imaging)
    for a, record in reading:
        head = heads[a]
        if int(head["active_channels"]) != channels:
            raise fail(f"data[{a}].head.active_channels",
                       f"expected {channels} like the first imaging acquisition, "
                       f"got {head['active_channels']}")
        samples = (_samples(record, fail, a) if record is not None
                   else np.zeros((0, int(head["number_of_samples"])), np.complex64))
        pre, post = int(head["discard_pre"]), int(head["discard_post"])
        if pre + post >= int(head["number_of_samples"]):  # was: the line was both "treated as
            # unsampled" and "reconstructed as measured zeros", in two warnings
            raise fail(f"data[{a}].head.discard_pre",
                       f"discard_pre {pre} + discard_post {post} leave no sample of the "
                       f"{int(head['number_of_samples'])} stored")
        samples = samples[:, pre: samples.shape[1] - post]
        if reverse[a]:  # stored in acquisition order (EPI's odd lines): back to k-space order
            samples = samples[:, ::-1]
        n = samples.shape[1]
        centre = int(head["center_sample"]) - pre
        start = enc_x // 2 - (centre if head["center_sample"] > 0 else n // 2)
        if start < 0 or start + n > enc_x:
            raise fail(f"data[{a}].head.number_of_samples",
                       f"{n} samples centred at {centre} do not fit the encoded x = {enc_x}"
                       + (" (an ACQ_IS_REVERSE line: center_sample is read in k-space order, "
                          "after the flip)" if reverse[a] else ""))
        col = int(idx["kspace_encode_step_1"][a]) + shift_y
        part = int(idx["kspace_encode_step_2"][a]) + shift_z if enc_z > 1 else 0
        if not 0 <= col < enc_y:
            raise fail(f"data[{a}].idx.kspace_encode_step_1",
                       f"column {col} outside the {enc_y} encoded lines"
                       + shift_note(header, 1, col - shift_y, shift_y))
        if not 0 <= part < enc_z:
            raise fail(f"data[{a}].idx.kspace_encode_step_2",
                       f"partition {part} outside the {enc_z} encoded partitions"
                       + shift_note(header, 2, part - shift_z, shift_z))
        s = int(slices[a])
        grid, counts, _, rows = grids[bool(calib_only[a])]
        hits, power = held[bool(calib_only[a])]
        grid[s, part, :, start: start + n, col] += samples
        counts[s, part, col] += 1
        hits[s, part, start: start + n, col] += 1
        power[s, part, start: start + n, col] += (np.abs(samples) ** 2).sum(axis=0)
        rows[0], rows[1] = min(rows[0], start), max(rows[1], start + n)
        spans.append((a, s, part, col, bool(calib_only[a])))
        if not calib_only[a] and s not in positions:
            positions[s], sources[s] = np.asarray(head["position"], float), int(a)
    for a in imaging[calib_only[imaging]]:  # slices with reference lines alone
        if (s := int(slices[a])) not in positions:
            positions[s], sources[s] = np.asarray(heads[a]["position"], float), int(a)
    header = short_lines_note(header, spans, grids, held, enc_x, idx["kspace_encode_step_1"])
    average_per_sample(grids, held)  # then sum / count is each sample's mean over its repeats
    del held
    info = {"needs_samples": True in grids and borrowed is None
            and header.extra.get("calibration_mode", "") not in ("separate", "external")
            and bool(((grids[False][1] > 0) & (grids[True][1] > 0)).any())}
    calibration, header = separate_reference(header, grids, borrowed)
    readout = grids[False][3]
    if not all(np.isfinite(grid[s]).all() for grid in (kspace, calibration)  # a slice at a time
               if grid is not None for s in range(num_slices)):
        raise fail(f"{dataset}/data", "NaN or Inf samples")
    if is_partial_echo(enc_x - (readout[1] - readout[0]), enc_x):  # one side never sampled
        header = header.with_(extra={**header.extra,
                                     **partial_echo_extra(readout[0], readout[1], enc_x)})
    acquired = count > 0
    kspace /= np.maximum(count, 1)[:, :, None, None, :]
    info["repeats"] = repeat_parts(kspace, count, energy)
    header = repeat_note_of(header, info["repeats"], idx["average"][imaging])

    columns = acquired.any(axis=1)  # (slices, W)
    # the k-space centre line, held by the data or a separate reference (GRAPPA fills it from
    # that): lost, the run failed on ESPIRiT's "centre band ... got 0" (9.2 dB zero-filled)
    check_centre_lines(columns if calibration is None else columns | grids[True][1].any(axis=1),
                       shift_y, fail, header.extra.get("encoding_limits_step_1"))
    partitions = acquired.any(axis=2)  # (slices, z)
    # missing partitions: kz undersampling aliases (refused), kz partial Fourier blurs (noted)
    header = check_partitions(header, partitions, shift_z, fail)
    if (acquired != (partitions[:, :, None] & columns[:, None, :])).any():
        raise fail(f"{dataset}/data",
                   "3-D ky-kz undersampling is not separable; cannot express it as a column mask")
    plan = slab_plan(header)  # the partitions on the recon slab's grid (ismrmrd_slab)
    _check_allocation(fail, f"{dataset}/data", (num_slices, plan.fill, channels, enc_x, enc_y),
                      imaging.size, ngrids, 1 if records is None else None)
    header = slab_header(header, plan)
    order = slice_order(heads[imaging[0]], positions, num_slices, fail, dataset,
                        partitions=plan.keep, thickness=plan.thickness, sources=sources,
                        acquisition=int(imaging[0]), centre_index=plan.centre)
    info["order"] = order
    if order is not None:  # slice index order is not position order: sort by position
        kspace, columns, partitions = kspace[order], columns[order], partitions[order]
        calibration = None if calibration is None else calibration[order]
        positions = {i: positions[int(s)] for i, s in enumerate(order)}
    if enc_z > 1:
        columns = np.repeat(columns, plan.keep, axis=0)
    new_x = enc_x
    if crop_readout_oversampling:
        fx_enc, fx_rec = header.encoded_fov_mm[0], header.recon_fov_mm[0]
        new_x = int(round(enc_x * fx_rec / fx_enc)) if fx_enc > 0 and fx_rec > 0 else enc_x
        if 0 < new_x < enc_x:
            header = header.with_(
                encoded_matrix=(new_x,) + tuple(header.encoded_matrix[1:]),
                encoded_fov_mm=(fx_rec,) + tuple(header.encoded_fov_mm[1:]),
            )
    reversed_ = partitions_reversed(heads[imaging[0]])
    data = to_slices(kspace, new_x, reversed_, plan)
    if calibration is not None:  # the same placement, partition transform and crop
        calibration = to_slices(calibration, new_x, reversed_, plan)
    header, data, columns, calibration = interpolate_phase(header, data, columns, calibration)

    mask = torch.from_numpy(columns)
    mask = mask[0] if bool((mask == mask[0]).all()) else mask
    if bool(mask.all()):
        mask = None

    if noise is ...:
        noise = _noise_scans(heads, sel.rows, sel.noise_sel, imaging, calib_only, fail, dataset,
                             channels)
    # placed on the readout as acquired (N rows; the columns as returned, padded or not): the
    # readout crop kept rows (N - n) // 2 on, and the pipeline's recon crop of those n rows
    # starts (n - R) // 2 further: recon row 0 of the returned header, where the acquired
    # grid's starts (N - R) // 2 in (one row apart for an even N cropped to an odd n)
    acquired = header.with_(encoded_matrix=(enc_x, *header.encoded_matrix[1:]))
    geometry = acquisition_geometry(heads[imaging[0]], acquired, num_slices, positions,
                                    partitions=plan.keep, fail=fail, acquisition=int(imaging[0]),
                                    centre_index=plan.centre)
    kept, recon_x = header.encoded_matrix[0], header.recon_matrix[0]  # kept: n, or N uncropped
    geometry = geometry.shifted((enc_x - kept) // 2 + (kept - recon_x) // 2
                                - (enc_x - recon_x) // 2, 0)
    header = gap_known(header, geometry).with_(num_coils=channels, geometry=geometry)
    return KSpace(data=data, header=header, mask=mask, noise=noise, source=str(path),
                  calibration=calibration), info


def _noise_scans(heads, records, noise_sel, imaging, calib_only, fail, dataset: str,
                 channels: int | None = None) -> torch.Tensor | None:
    """The noise-measurement samples ``(coils, samples)``, each scan scaled to the imaging
    bandwidth: noise variance grows with the bandwidth ``1 / dwell``, so samples taken at dwell
    ``t_noise`` are multiplied by ``sqrt(t_noise / t_imaging)`` (as Gadgetron does; a scan at
    2.5 us beside imaging at 5 us made the prewhitened image 1.41x too dark). ``t_imaging`` is
    the dwell of the first acquisition of ``imaging`` that is not calibration-only
    (``calib_only``): a separate reference scan written first, at its own bandwidth, set it and
    scaled the noise 1.41x wrong (10 us reference, 5 us imaging)."""
    noise_idx = np.flatnonzero(noise_sel)
    if not noise_idx.size:
        return None
    blocks = [_samples(record, fail, a) for a, record in records.iter(noise_idx)]
    if bad := [int(a) for a, b in zip(noise_idx, blocks) if not np.isfinite(b).all()]:
        raise fail(f"{dataset}/data", f"NaN or Inf samples in the noise scan (acquisition"
                                      f"{'s' * (len(bad) > 1)} {', '.join(map(str, bad[:5]))}"
                                      f"{f' and {len(bad) - 5} more' * (len(bad) > 5)})")
    if channels is not None and any(b.shape[0] != channels for b in blocks):
        raise fail(f"{dataset}/data", f"noise scans have {[b.shape[0] for b in blocks]} channels, "
                                      f"imaging has {channels}")
    dwell = heads["sample_time_us"].astype(np.float64)
    image_lines = imaging[~calib_only[imaging]]
    t_image = float(dwell[image_lines[0] if image_lines.size else imaging[0]])
    scaled = []
    for a, block in zip(noise_idx, blocks):
        t_noise = float(dwell[a])
        ok = np.isfinite(t_noise) and np.isfinite(t_image) and t_noise > 0 and t_image > 0
        scaled.append(block * np.float32(np.sqrt(t_noise / t_image)) if ok and t_noise != t_image
                      else block)
    return torch.from_numpy(np.concatenate(scaled, axis=1))
