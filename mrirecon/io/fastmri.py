"""fastMRI HDF5 volumes: a lazy reader, a writer and the submission-layout writer.

Layout of one fastMRI file (one volume)::

    kspace               (slices, coils, H, W) complex64  multi-coil
                         (slices, H, W)        complex64  single-coil
    reconstruction_rss   (slices, h, w) float32           targets (train/val)
    reconstruction_esc   (slices, h, w) float32           single-coil targets
    mask                 (W,) bool                        test files only
    ismrmrd_header       ISMRMRD XML string
    attrs                acquisition, max, norm, patient_id, acceleration (test files)

``H`` is the readout axis (ISMRMRD ``x``), ``W`` the phase-encoding axis (``y``) that masks
act on. Columns outside ``[padding_left, padding_right)`` (from the header's encoding limits)
were never acquired; like fastMRI's ``VarNetDataTransform`` the reader removes them from the
sampling mask. Submissions hold one ``reconstruction`` dataset ``(slices, h, w)`` per volume,
the layout ``fastmri.evaluate`` reads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.containers import Header, KSpace
from mrirecon.io.atomic import atomic_hdf5
from mrirecon.io.errors import (DataFormatError, guard_reader, hdf5_dataset, memory_bytes,
                                one_string, open_hdf5, refuse_nonfinite, refuse_oversized)
from mrirecon.io.fastmri_attrs import _attr_value, header_labels
from mrirecon.io.hdf5_vlen import check_vlen_references
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
from mrirecon.io.layout_hints import (MISSING_HEADER_HINT, fastmri_trajectory_problem,
                                      kspace_dtype_hint, unread_datasets_note)

ArrayLike = np.ndarray | torch.Tensor
REFERENCE_KEYS = ("reconstruction_rss", "reconstruction_esc")
log = logging.getLogger("mrirecon.io")
_COMPLEX = (np.complex64, np.complex128)


class FastMRIFile:
    """Lazy reader of one fastMRI HDF5 volume; opens the file on first use.

    Use as a context manager (or call :meth:`close`). Only the requested slice is read from
    disk by :meth:`read_slice` and :meth:`reference`. The open HDF5 handle is dropped when
    the object is pickled, so a copy sent to a worker process reopens the file itself.

    Parameters
    ----------
    path
        The ``.h5`` file.

    Raises
    ------
    DataFormatError
        On first access, for a file that is not HDF5 (or is truncated, or open for writing in
        another process), lacks ``kspace``, or whose ``kspace`` has the wrong rank, a
        non-complex dtype (naming the conversion of interleaved real/imag floats and MATLAB's
        compound complex) or a filter this HDF5 cannot decode; later for a missing or invalid
        ``ismrmrd_header`` or one of a non-Cartesian trajectory (radial, spiral: the layout is a
        Cartesian grid), a malformed ``mask`` and NaN/Inf samples in a slice read.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = None
        self._header: Header | None = None
        self._kspace_ds: h5py.Dataset | None = None  # held open: its chunk cache lives with it

    # ---- file handle -------------------------------------------------------------------
    def _fail(self, field: str, problem: str) -> DataFormatError:
        return DataFormatError(self.path, field, problem)

    @property
    @guard_reader('file')
    def _file(self) -> h5py.File:
        if self._h5 is None:
            h5 = open_hdf5(self.path, "fastMRI")
            try:
                self._validate(h5)
                cache = self._chunk_cache_bytes(h5["kspace"])
            except BaseException:
                h5.close()
                raise
            if cache:  # reopen with a cache that holds one chunk (only k-space chunks are big)
                h5.close()
                h5 = h5py.File(self.path, "r", rdcc_nbytes=cache)
            self._h5 = h5
        return self._h5

    def _chunk_cache_bytes(self, ks: h5py.Dataset) -> int:
        """A chunk cache for k-space chunked across slices (``0``: HDF5's 1 MiB default will do).

        A compressed chunk that spans several slices (MATLAB's ``h5create`` with the whole
        volume as one chunk) was decompressed again for every slice read with the default
        cache: 1.25 s instead of 9 ms per slice for 30 x 8 x 320 x 320, time growing with
        slices squared. The cache keeps one chunk; one larger than a quarter of the memory is
        refused (the file cannot be streamed)."""
        if ks.chunks is None:
            return 0
        chunk = int(np.prod(ks.chunks, dtype=np.float64)) * ks.dtype.itemsize
        if chunk <= 1 << 20:
            return 0
        if chunk > memory_bytes() // 4:
            raise self._fail("kspace", f"stored in chunks {ks.chunks} of {chunk / 2**30:.1f} GiB, "
                                       "more than a quarter of the memory here; rechunk it per slice "
                                       f"(h5repack -l kspace:CHUNK=1x{'x'.join(map(str, ks.shape[1:]))})")
        if ks.chunks[0] > 1:
            log.info("%s: kspace chunks %s span %d slices (%.0f MiB each): one chunk is kept "
                     "decompressed in memory", self.path, ks.chunks, ks.chunks[0], chunk / 2**20)
        return int(chunk * 1.05) + (1 << 20)

    def _validate(self, h5: h5py.File) -> None:
        ks = hdf5_dataset(h5, self.path, "kspace")
        if ks.ndim not in (3, 4):
            raise self._fail(
                "kspace",
                f"expected (slices, coils, H, W) or (slices, H, W), got shape {ks.shape}"
                + kspace_dtype_hint(ks.dtype, ks.shape),
            )
        if ks.dtype.newbyteorder("=") not in _COMPLEX:  # big-endian complex reads as native
            raise self._fail("kspace", f"expected complex64 samples, got dtype {ks.dtype}"
                                       + kspace_dtype_hint(ks.dtype, ks.shape))
        if ks.shape[0] < 1 or min(ks.shape[1:]) < 1:
            raise self._fail("kspace", f"empty dataset of shape {ks.shape}")
        refuse_oversized(self.path, "kspace", float(np.prod(ks.shape[1:], dtype=np.float64))
                         * ks.dtype.itemsize, f"one slice of shape {ks.shape[1:]}")

    def close(self) -> None:
        """Close the HDF5 handle (reopened on next use)."""
        if self._h5 is not None:
            self._kspace_ds = None
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> FastMRIFile:
        self._file  # noqa: B018 - open and validate now
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {"path": self.path, "_h5": None, "_header": self._header, "_kspace_ds": None}

    def __repr__(self) -> str:
        return f"FastMRIFile({str(self.path)!r})"

    # ---- shape and metadata ------------------------------------------------------------
    @guard_reader('kspace')
    def __len__(self) -> int:
        return int(self._file["kspace"].shape[0])

    @property
    @guard_reader('kspace')
    def is_multicoil(self) -> bool:
        return self._file["kspace"].ndim == 4

    @property
    @guard_reader('kspace')
    def shape(self) -> tuple[int, int, int, int]:
        """``(slices, coils, H, W)``; single-coil files report ``coils = 1``."""
        s = self._file["kspace"].shape
        return tuple(s) if len(s) == 4 else (s[0], 1, s[1], s[2])

    @property
    @guard_reader('attrs')
    def attrs(self) -> dict:
        """Root attributes as Python values (bytes decoded, numpy scalars and 1-element arrays
        unwrapped)."""
        return {k: _attr_value(v) for k, v in self._file.attrs.items()}

    def _attr(self, name: str):
        return self.attrs.get(name)

    acquisition = property(lambda self: self._attr("acquisition"), doc="e.g. 'CORPD_FBK'.")
    max = property(lambda self: self._attr("max"), doc="Maximum of the target volume.")
    norm = property(lambda self: self._attr("norm"), doc="L2 norm of the target volume.")
    patient_id = property(lambda self: self._attr("patient_id"), doc="Anonymised hash.")
    acceleration = property(lambda self: self._attr("acceleration"), doc="Test files only.")

    @property
    @guard_reader('ismrmrd_header')
    def header(self) -> Header:
        """Parsed ``ismrmrd_header``; ``acquisition``/``patient_id`` from the attributes when
        present (one stored as an array of several values is ignored with a ``DataWarning``:
        :func:`~mrirecon.io.fastmri_attrs.header_labels`) and ``num_coils`` from the k-space
        shape. ``extra["emulated_single_coil"]`` marks 3-D k-space beside a
        ``reconstruction_esc``: fastMRI's single-coil files, whose header keeps the scanner's
        receiver channels."""
        if self._header is None:
            h5 = self._file
            if "ismrmrd_header" not in h5:
                raise self._fail("ismrmrd_header", f"dataset missing (found {sorted(h5.keys())})"
                                                   f"; {MISSING_HEADER_HINT}")
            try:
                ds = hdf5_dataset(h5, self.path, "ismrmrd_header")
                if bad := check_vlen_references(self.path, h5, ds):  # before HDF5 follows it
                    raise self._fail("ismrmrd_header", bad)  # (it can hang)
                # a header is kilobytes: not a 9-GiB array
                refuse_oversized(self.path, "ismrmrd_header", ds.size * (
                    64 if ds.dtype.kind == "O" else ds.dtype.itemsize),  # vlen: 64 B each
                    f"a {ds.shape} {ds.dtype} header")
                raw = ds[()]
            except (OSError, RuntimeError, KeyError) as err:
                raise self._fail("ismrmrd_header", f"unreadable ({err})") from None
            raw = one_string(self.path, "ismrmrd_header", raw)  # scalar or 1-element
            header = parse_ismrmrd_header(raw, source=self.path)
            if bad := fastmri_trajectory_problem(header):  # before the matrix: spokes x samples
                raise self._fail("ismrmrd_header/encoding/trajectory", bad)
            if bad := matrix_problem(header, self._file["kspace"].shape):
                raise self._fail("ismrmrd_header/encoding/encodedSpace/matrixSize", bad)
            attrs = self.attrs
            # the header's channel count and the file's slice count stay in extra: make_slice
            # reports k-space whose coil and slice axes contradict them
            extra = {**header.extra, "receiver_channels": header.num_coils,
                     "file_slices": self.shape[0]}
            if not self.is_multicoil and "reconstruction_esc" in h5:
                extra["emulated_single_coil"] = True  # no "is the slice axis missing?"
            if note := narrow_phase_note(header):
                extra["phase_voxel_note"] = note
            if note := unread_datasets_note(h5.keys()):  # named: not used without a word
                extra["unread_datasets_note"] = note
            changes = {"num_coils": self.shape[1], "extra": extra}
            changes.update(header_labels(attrs, self.path))  # an array of several: warned
            self._header = header.with_(**changes)
        return self._header

    @property
    def padding(self) -> tuple[int, int]:
        """Acquired phase-encoding columns ``[padding_left, padding_right)``."""
        return self.header.padding_left, self.header.padding_right

    def acquired_columns(self) -> torch.Tensor:
        """``(W,)`` bool, True inside ``[padding_left, padding_right)``."""
        width = self.shape[-1]
        cols = torch.zeros(width, dtype=torch.bool)
        left, right = self.padding
        cols[max(left, 0): min(right, width)] = True
        return cols

    @property
    @guard_reader('mask')
    def mask(self) -> torch.Tensor | None:
        """The stored ``mask`` dataset ``(W,)`` bool (test files), as stored, else ``None``."""
        h5 = self._file
        ds = hdf5_dataset(h5, self.path, "mask", required=False)
        if ds is None:
            return None
        refuse_oversized(self.path, "mask", ds.size * ds.dtype.itemsize,  # one value per column:
                         f"a {ds.shape} {ds.dtype} mask")  # not a (1e10,) array
        try:
            mask = np.asarray(ds[()])
        except (OSError, RuntimeError) as err:
            raise self._fail("mask", f"unreadable ({err})") from None
        width = self.shape[-1]
        mask = mask.reshape(-1) if mask.ndim > 1 and mask.size == width else mask
        if mask.shape != (width,):
            raise self._fail(
                "mask", f"expected one value per k-space column ({width},), got {mask.shape}")
        if mask.dtype.kind not in "biuf":
            raise self._fail("mask", f"expected 0/1 values, got dtype {mask.dtype}")
        if not np.isin(mask, (0, 1)).all():
            bad = mask[~np.isin(mask, (0, 1))]
            raise self._fail("mask", f"expected 0/1 values, got {bad.size} other value(s), e.g. "
                                     f"{bad.flat[0].item()!r} ({mask.dtype})")
        return torch.from_numpy(mask.astype(bool))

    @guard_reader('mask')
    def sampling_mask(self) -> torch.Tensor | None:
        """Columns that hold data: ``mask`` (if stored) and the padding range; ``None`` when
        every column is acquired. This is the mask fastMRI's ``VarNetDataTransform`` builds."""
        cols = self.acquired_columns()
        stored = self.mask
        if stored is not None:
            cols = cols & stored
        return None if bool(cols.all()) else cols

    # ---- data --------------------------------------------------------------------------
    def _check_index(self, index: int) -> int:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.path}: slice {index} out of range for {n} slices")
        return index % n

    def _read(self, name: str, index, field: str) -> np.ndarray:
        try:
            if name == "kspace":  # one handle: a chunk cache dies with its dataset handle
                if self._kspace_ds is None:
                    self._kspace_ds = self._file["kspace"]
                data = np.asarray(self._kspace_ds[index])
            else:
                data = np.asarray(self._file[name][index])
        except (OSError, RuntimeError, ValueError) as err:
            raise self._fail(field, f"unreadable ({err})") from None
        if data.dtype.byteorder not in ("=", "|"):  # big-endian storage: torch takes native only
            data = data.astype(data.dtype.newbyteorder("="))
        return data

    def centre_samples(self) -> np.ndarray | None:
        """The k-space sample at the grid centre ``(H // 2, W // 2)`` of every slice and coil,
        ``(slices, coils)`` (``(slices, 1)`` single-coil): one value per coil image, so that a
        training set can find all-zero slices without reading whole slices. ``None`` when the
        k-space is stored in chunks: each sample would decompress its whole chunk (2.9 s per
        12-slice gzip file of 15 coils at 640 x 368, the whole k-space)."""
        if self._file["kspace"].chunks is not None:
            return None
        n, h, w = len(self), self.shape[-2], self.shape[-1]
        index = (slice(None), slice(None), h // 2, w // 2) if self.is_multicoil else \
            (slice(None), h // 2, w // 2)
        return self._read("kspace", index, "kspace").reshape(n, -1)

    def data_line(self) -> bytes:
        """The centre k-space row of the first coil of the middle slice, as stored values in
        native byte order: a few kilobytes that tell two volumes' data apart whatever their
        chunks, compression, attributes or file name (``mrirecon train`` compares a validation
        file with the training files of its shape by them) without reading whole slices."""
        n, h = len(self), self.shape[-2]
        index = (n // 2, 0, h // 2) if self.is_multicoil else (n // 2, h // 2)
        return np.ascontiguousarray(self._read("kspace", index, f"kspace[{n // 2}]")).tobytes()

    def _kspace(self, index, field: str) -> torch.Tensor:
        data = self._read("kspace", index, field)
        if not np.isfinite(data).all():
            bad = int(np.size(data) - np.isfinite(data).sum())
            raise self._fail(field, f"{bad} NaN or Inf samples")
        tensor = torch.from_numpy(np.ascontiguousarray(data))
        if tensor.ndim == 2:  # one single-coil slice
            tensor = tensor.unsqueeze(0)
        elif tensor.ndim == 3 and not self.is_multicoil:  # single-coil volume
            tensor = tensor.unsqueeze(1)
        return tensor

    @property
    @guard_reader('reference')
    def reference_key(self) -> str | None:
        """``reconstruction_esc`` for single-coil files that have it, else
        ``reconstruction_rss`` if present, else ``None``."""
        keys = ("reconstruction_rss",) if self.is_multicoil else REFERENCE_KEYS[::-1]
        return next((k for k in keys if k in self._file), None)

    @guard_reader('reference')
    def reference(self, index: int | None = None, key: str | None = None) -> torch.Tensor | None:
        """Reference magnitude image(s) ``(h, w)`` of slice ``index`` (``(slices, h, w)`` when
        ``index`` is None) from ``key`` (default :attr:`reference_key`); ``None`` if absent."""
        key = key or self.reference_key
        if key is None:
            return None
        ds = hdf5_dataset(self._file, self.path, key)
        if ds.ndim != 3 or ds.shape[0] != len(self):
            raise self._fail(key, f"expected ({len(self)}, h, w), got shape {ds.shape}")
        if ds.dtype.kind not in "biuf":  # complex: the metrics took its real part, exit 0
            raise self._fail(key, f"expected real magnitude images, got {ds.dtype}" + (
                " (complex: store its magnitude, abs)" if ds.dtype.kind == "c" else ""))
        refuse_oversized(self.path, key, float(np.prod(ds.shape[1:], dtype=np.float64)) * 4 * (
            ds.shape[0] if index is None else 1), f"a {ds.shape} {ds.dtype} reference")
        sel = slice(None) if index is None else self._check_index(index)
        return torch.from_numpy(np.ascontiguousarray(self._read(key, sel, key)))

    @guard_reader('kspace')
    def read_slice(self, index: int, *, with_reference: bool = True) -> KSpace:
        """One slice as :class:`KSpace` with data ``(1, coils, H, W)``; only that slice is read.

        ``mask`` is :meth:`sampling_mask`, ``reference`` ``(1, h, w)`` when present.
        """
        index = self._check_index(index)
        data = self._kspace(index, f"kspace[{index}]").unsqueeze(0)
        ref = self.reference(index) if with_reference else None
        return KSpace(
            data=data, header=self.header, mask=self.sampling_mask(),
            reference=None if ref is None else ref.unsqueeze(0),
            slice_indices=(index,), source=str(self.path),
        )

    @guard_reader('kspace')
    def read_volume(self, *, with_reference: bool = True) -> KSpace:
        """All slices as :class:`KSpace` with data ``(slices, coils, H, W)``."""
        data = self._kspace(slice(None), "kspace")
        return KSpace(
            data=data, header=self.header, mask=self.sampling_mask(),
            reference=self.reference() if with_reference else None,
            source=str(self.path),
        )


def matrix_problem(header: Header, shape: tuple[int, ...]) -> str | None:
    """Why ``header``'s encoded matrix ``(x, y)`` does not describe k-space of ``shape`` (the
    stored ``(slices, coils, H, W)`` or ``(slices, H, W)``), else ``None``: the one rule of the
    reader and the writer. It names the two orders other tools store: ``(x, y)`` equal to
    ``(W, H)`` (transposed: MATLAB and Julia are column-major, so their ``(H, W, coils, slices)``
    arrays read as ``(slices, coils, W, H)``) and to the two axes before ``W`` (the coil axis
    last, as BART and MATLAB keep it)."""
    enc, (rows, cols) = tuple(header.encoded_matrix[:2]), tuple(shape[-2:])
    if enc == (rows, cols):
        return None
    hints = []
    if enc == (cols, rows):
        hints.append("transposed / MATLAB order? (MATLAB is column-major: h5write reverses "
                     "the dimensions; np.swapaxes(k, -1, -2) gives (..., H, W))")
    if len(shape) > 2 and enc == tuple(shape[-3:-1]):
        hints.append("coil axis last? (BART and MATLAB keep (H, W, coils); fastMRI stores "
                     "(slices, coils, H, W): np.moveaxis(k, -1, -3))")
    if len(shape) == 4 and shape[2] == 1 and enc == tuple(shape[:2]):
        hints.append("BART's (READ, PHS1, 1, COIL) order? drop the singleton and put the coils "
                     "first: np.moveaxis(k[..., 0, :], -1, 0)[None]")
    return (f"(x, y) = {enc} but kspace is (H, W) = ({rows}, {cols}); the header does not describe "
            "this k-space (padding and crop would be wrong)" + "".join(f"; {h}" for h in hints))


def narrow_phase_note(header: Header) -> str | None:
    """The warning for a fastMRI-layout header whose k-space (``W`` = encoded ``y`` columns) is
    narrower than its recon matrix (``y`` > ``W``) over the same phase FOV (within 1 mm), else
    ``None``. Such a header says the columns are ``FOV y / W`` mm and the recon voxel finer
    (a phase resolution below 100 %: the ISMRMRD reader zero-pads ky to the recon columns,
    :func:`~mrirecon.io.ismrmrd_encoding.interpolate_phase`). fastMRI's own headers give the
    encoded y FOV equal to the recon one whatever the matrix (knee: 368 encoded and 320 recon
    columns, both over 140 mm), so fastMRI brain's narrow "FLAIR 203" files meet this too and
    cannot be told from a consistent header: the file is read as fastMRI reads it (``crop:
    recon_size`` gives ``(W, W)``, columns labelled with the recon voxel), and the run says
    what that costs if the header is right."""
    ey, ry = header.encoded_matrix[1], header.recon_matrix[1]
    fe, fr = header.encoded_fov_mm[1], header.recon_fov_mm[1]
    if not (ry > ey and fe > 0 and fr > 0 and abs(fe - fr) <= 1.0):
        return None
    return (f"ismrmrd_header/encoding/reconSpace/matrixSize/y: the k-space has {ey} phase-encoding "
            f"columns over {fe:g} mm ({fe / ey:.4g} mm a column), narrower than reconSpace y = "
            f"{ry} over {fr:g} mm ({fr / ry:.4g} mm): read as fastMRI reads its narrow brain "
            f"files ('FLAIR 203', whose y FOV does not follow the matrix): columns labelled "
            f"{fr / ry:.4g} mm, and crop: recon_size gives {ey} x {ey} (the readout cut to {ey} "
            f"rows); if the header is right (a phase resolution below 100 %), the columns are "
            f"{fe / ey:.4g} mm and positions along them are {fe * ry / (fr * ey):.3g}x what the "
            f"output says: write the k-space zero-padded to {ry} columns (as the scanner "
            "interpolates) with encodedSpace y = reconSpace y, or as ISMRMRD raw data")


def read_fastmri(path: str | os.PathLike, *, with_reference: bool = True) -> KSpace:
    """Read a whole fastMRI volume (see :class:`FastMRIFile`)."""
    with FastMRIFile(path) as f:
        return f.read_volume(with_reference=with_reference)


def _numpy(name: str, value: ArrayLike) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().resolve_conj().numpy()
    if isinstance(value, np.ndarray):
        return value
    raise TypeError(
        f"write_fastmri: {name} must be a torch.Tensor or numpy array, got {type(value).__name__}")


def write_fastmri(
    path: str | os.PathLike,
    kspace: ArrayLike,
    header: Header | str,
    reference: ArrayLike | Mapping[str, ArrayLike] | None = None,
    mask: ArrayLike | None = None,
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """Write one volume in the fastMRI layout, atomically.

    Parameters
    ----------
    path
        Target ``.h5`` file (replaced only once the whole file is written).
    kspace
        ``(slices, coils, H, W)`` (multi-coil) or ``(slices, H, W)`` (single-coil slices)
        complex, stored as complex64: ``H`` the readout rows, ``W`` the phase-encoding columns,
        each slice centred (the sample at ``(H // 2, W // 2)`` is k = 0) and orthonormal:
        ``fftshift(fft2(ifftshift(image, axes), norm="ortho"), axes)`` over the last two axes.
        One multi-coil slice ``(coils, H, W)`` is ``kspace[None]``: 3-D k-space whose header
        names as many receiver channels as it has slices is refused.
    header
        :class:`Header` (serialised with :func:`header_to_xml`; one that names no channel count
        is written with the coil count of 4-D k-space) or an ISMRMRD XML string written
        verbatim. Its encoded matrix ``(x, y)`` must be ``(H, W)`` (:func:`matrix_problem`).
    reference
        ``(slices, h, w)`` real target, stored as float32 under ``reconstruction_rss``
        (multi-coil) or ``reconstruction_esc`` (single-coil); or a mapping ``{key: volume}``
        for explicit keys.
    mask
        ``(W,)`` 0/1 sampling mask (test files), stored as bool.
    attrs
        Root attributes. Defaults: ``acquisition`` and ``patient_id`` from the header (when
        set), ``max`` and ``norm`` (L2 norm) of the first reference volume.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        For k-space of another rank, a header that does not describe it (naming a transposed
        or coil-last array) or names a non-Cartesian trajectory (radial, spiral: write those
        with :func:`~mrirecon.io.ismrmrd_noncartesian.write_ismrmrd_noncartesian`), one
        multi-coil slice without its slice axis, NaN/Inf samples, or
        a reference or mask of the wrong shape.
    """
    ks = _numpy("kspace", kspace)
    if ks.ndim not in (3, 4):
        raise ValueError(
            "write_fastmri: kspace must be (slices, coils, H, W) or (slices, H, W), "
            f"got {ks.shape}")
    if not np.iscomplexobj(ks):
        raise TypeError(f"write_fastmri: kspace must be complex, got {ks.dtype}")
    refuse_nonfinite("write_fastmri", path, "kspace", ks, "samples")
    if not isinstance(header, str) and header.num_coils is None and ks.ndim == 4:
        header = header.with_(num_coils=ks.shape[1])  # the reader's slice-axis check uses it
    xml = header if isinstance(header, str) else header_to_xml(header)
    parsed = parse_ismrmrd_header(xml, source=str(path))
    if bad := fastmri_trajectory_problem(parsed):
        raise ValueError(f"write_fastmri: {path}: ismrmrd_header/encoding/trajectory: {bad}")
    if bad := matrix_problem(parsed, ks.shape):
        raise ValueError(f"write_fastmri: {path}: header encodedSpace/matrixSize {bad}")
    if ks.ndim == 3 and (parsed.num_coils or 0) > 1 and parsed.num_coils == ks.shape[0]:
        raise ValueError(  # the reader's "is the slice axis missing?" (pipeline.slice_mri)
            f"write_fastmri: {path}: kspace {ks.shape} is single-coil slices, but the header "
            f"names {parsed.num_coils} receiver channels, as many as its slices: one multi-coil "
            "slice is kspace[None] (slices, coils, H, W); for single-coil slices pass a header "
            "with num_coils=1")

    refs: dict[str, np.ndarray] = {}
    if reference is not None:
        items = reference.items() if isinstance(reference, Mapping) else [
            (REFERENCE_KEYS[0] if ks.ndim == 4 else REFERENCE_KEYS[1], reference)]
        for key, value in items:
            arr = _numpy(key, value)
            if np.iscomplexobj(arr) or arr.ndim != 3 or arr.shape[0] != ks.shape[0]:
                raise ValueError(
                    f"write_fastmri: {key} must be real ({ks.shape[0]}, h, w), got "
                    f"{arr.dtype} {arr.shape}"
                )
            refs[key] = arr.astype(np.float32)
    mask_arr = None
    if mask is not None:
        mask_arr = _numpy("mask", mask).reshape(-1)
        if mask_arr.shape != (ks.shape[-1],) or not np.isin(mask_arr, (0, 1)).all():
            raise ValueError(
                f"write_fastmri: mask must be ({ks.shape[-1]},) of 0/1, got {mask_arr.shape}")
        mask_arr = mask_arr.astype(bool)

    root_attrs: dict[str, object] = {}
    if parsed.acquisition:
        root_attrs["acquisition"] = parsed.acquisition
    if parsed.patient_id:
        root_attrs["patient_id"] = parsed.patient_id
    if refs:
        first = next(iter(refs.values()))
        root_attrs["max"] = float(first.max())
        root_attrs["norm"] = float(np.linalg.norm(first.astype(np.float64)))
    root_attrs.update(attrs or {})

    with atomic_hdf5(path) as h5:
        h5.create_dataset("kspace", data=ks.astype(np.complex64, copy=False))  # the image is a copy
        for key, arr in refs.items():
            h5.create_dataset(key, data=arr)
        if mask_arr is not None:
            h5.create_dataset("mask", data=mask_arr)
        h5.create_dataset("ismrmrd_header", data=xml)
        for key, value in root_attrs.items():
            h5.attrs[key] = value
    return Path(path)


def write_reconstruction(path: str | os.PathLike, volume: ArrayLike, **attrs: str | None) -> Path:
    """Write a reconstruction ``(slices, h, w)`` (real, magnitude) in the fastMRI submission
    layout: one float32 dataset ``reconstruction``; atomically. ``attrs`` that are not ``None``
    (``units="HU"``, a CT image's ``layout``) become the dataset's attributes, which fastMRI's
    readers ignore. Returns ``path``."""
    arr = _numpy("volume", volume)
    if np.iscomplexobj(arr) or arr.ndim != 3:
        raise ValueError(
            f"write_reconstruction: volume must be real (slices, h, w), got {arr.dtype} {arr.shape}"
        )
    refuse_nonfinite("write_reconstruction", path, "volume", arr)
    arr = arr.astype(np.float32, copy=False)
    # float64 beyond float32's 3.4e38 would be written as Inf, which the readers refuse
    refuse_nonfinite("write_reconstruction", path, "volume (as float32)", arr)
    with atomic_hdf5(path) as h5:
        dataset = h5.create_dataset("reconstruction", data=arr)
        for key, value in attrs.items():
            if value:
                dataset.attrs[key] = value
    return Path(path)
