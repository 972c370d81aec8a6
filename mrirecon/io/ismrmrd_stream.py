"""Bounded-memory access to an ISMRMRD acquisition table (:mod:`mrirecon.io.ismrmrd_raw`), and
the per-slice reader :class:`ISMRMRDSlices` that ``mrirecon run`` streams 2-D multi-slice
files through.

* :func:`read_heads`: the acquisition headers. h5py's field read (``table.fields("head")``,
  ``table["head"]``) converts every row's variable-length samples too and never frees them
  (h5py issues #1579, #2374: +277 MiB kept per read of a 256-MiB table), so whole rows are read
  in chunks of about :data:`CHUNK_BYTES` and their heads kept: the reader's peak is one chunk,
  and the samples' size (:func:`read_heads`'s ``payload``) is known before any is held.
* :class:`Rows`: the samples (and trajectories) of chosen acquisitions, read from the file in
  chunks of about :data:`CHUNK_BYTES` (never ``table[()]``, which converts every field of every
  row: 2.2-3.8x the samples).
* :class:`ISMRMRDSlices`: ``len()`` and ``read(i)`` (one slice as a :class:`KSpace`). 2-D
  multi-slice Cartesian data are planned from the heads (every check of the whole-file read),
  checked slice by slice for what needs the samples (NaN/Inf, the repeats' agreement), and
  slice ``i``'s acquisitions are read when it is asked for: bit-identical to slice ``i`` of
  :func:`~mrirecon.io.read_ismrmrd`. Non-Cartesian data (acquisitions that carry ``traj``) are
  checked over the file once, in chunks, when it is opened (the trajectory, repeat counts and
  measured samples kept) and read a slice at a time the same way
  (:func:`~mrirecon.io.ismrmrd_noncartesian.read_noncartesian`). 3-D slabs (the kz transform
  needs every partition) and calibration lines that must be compared with the imaging lines of
  every slice (:func:`~mrirecon.io.ismrmrd_reference.separate_reference`) are read whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from mrirecon.containers import KSpace

#: Samples read from the file at once (the reader's transient beside its k-space grid).
CHUNK_BYTES = 16 << 20


def _row_bytes(rows: np.ndarray) -> int:
    names = rows.dtype.names or ()
    return sum(int(np.asarray(x).nbytes) for name in ("data", "traj") if name in names
               for x in rows[name])


def read_heads(table) -> tuple[np.ndarray, int]:
    """``(heads, payload)``: the ``head`` field of every acquisition of the ISMRMRD ``table``
    (an h5py dataset) and the bytes its samples and trajectories hold, read in chunks of whole
    rows of about :data:`CHUNK_BYTES` (see the module docstring for why not ``fields``)."""
    n = int(table.shape[0])
    heads = np.zeros(n, table.dtype["head"])
    payload, start, step = 0, 0, 1
    while start < n:
        block = table[start: start + step]
        heads[start: start + len(block)] = block["head"]
        size = _row_bytes(block)
        payload += size
        start += len(block)
        step = int(max(1, min(4096, CHUNK_BYTES // max(size // max(len(block), 1), 1))))
        del block
    return heads, payload


def file_stamp(path) -> tuple[int, int, int] | None:
    """``(size, mtime_ns, inode)`` of ``path``, or ``None`` where it cannot be read (the open
    that follows says why)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


class Rows:
    """The acquisitions of one ISMRMRD table: ``heads`` in memory (``rows["head"]``, as
    selected: ``idx.slice`` set to 0 for a slice read alone); the samples and trajectories read
    from ``path`` / ``dataset`` in chunks of about :data:`CHUNK_BYTES` as :meth:`iter` asks for
    them."""

    def __init__(self, heads: np.ndarray, path: str | os.PathLike, dataset: str = "dataset") -> None:
        self.heads, self.path, self.dataset = heads, path, dataset
        self.stamp = file_stamp(path)  # the file as its heads were read

    def __getitem__(self, key):  # the ``records["head"]`` a table has
        if isinstance(key, str) and key == "head":
            return self.heads
        raise TypeError("Rows: the samples are read with iter()")

    def iter(self, indices) -> Iterator[tuple[int, np.ndarray]]:
        """``(acquisition, record)`` for each of ``indices`` (ascending), in that order, read in
        chunks of rows (one hyperslab where they are contiguous); the file is closed when the
        iteration ends or the iterator is closed."""
        indices = np.asarray(indices, np.int64)
        from mrirecon.io.errors import open_hdf5

        h = self.heads
        sizes = (8 * h["active_channels"].astype(np.int64) * h["number_of_samples"]
                 + 4 * h["trajectory_dimensions"].astype(np.int64) * h["number_of_samples"])
        if file_stamp(self.path) != self.stamp:  # rows cut or another file: a raw IndexError or
            from mrirecon.io.errors import DataFormatError  # another file's trajectory message

            raise DataFormatError(self.path, f"{self.dataset}/data", "the file changed since it "
                                  "was opened (size, modification time or inode): open it again")
        with open_hdf5(Path(self.path), "ISMRMRD") as h5:
            table = h5[self.dataset]["data"]
            i = 0
            while i < indices.size:
                total = np.cumsum(sizes[indices[i: i + 4096]])
                j = i + max(1, int(np.searchsorted(total, CHUNK_BYTES, side="right")))
                sel = indices[i:j]
                if sel[-1] - sel[0] + 1 == sel.size:  # contiguous: one hyperslab
                    block = table[int(sel[0]): int(sel[-1]) + 1]
                else:
                    block = table[sel.tolist()]
                for k, a in enumerate(sel):
                    yield int(a), block[k]
                del block
                i = j


class ISMRMRDSlices:
    """The slices of one ISMRMRD file, read one at a time where the data allow (see the module
    docstring): ``len()``, ``read(i)`` -> :class:`KSpace` of slice ``i`` (``data`` ``(1, coils,
    H, W)``, ``calibration`` ``(1, ...)`` or ``None``, the volume's ``header``, ``mask`` and
    ``noise``), ``streamed`` (whether the volume is never held whole), ``held_bytes()`` (the
    k-space held between reads) and ``header``.

    Build it with :func:`open_ismrmrd`."""

    def __init__(self, volume: KSpace, reader=None, order=None, calibrated: bool = False,
                 reference=None) -> None:
        self._volume, self._reader, self._order = volume, reader, order
        self._calibrated = calibrated
        self._reference = reference  # file slice s -> (1, rows, cols), or None
        self.header = volume.header

    @property
    def streamed(self) -> bool:
        """Whether the volume is read a slice at a time (never held whole)."""
        return self._reader is not None

    def __len__(self) -> int:
        return int(self._volume.data.shape[0])

    def read(self, i: int) -> KSpace:
        vol = self._volume
        if not 0 <= i < len(self):
            raise IndexError(f"slice {i} of {len(self)}")
        if self._reader is None:
            cal = vol.calibration
            return replace(vol, data=vol.data[i: i + 1], reference=None, slice_indices=(i,),
                           calibration=None if cal is None else cal[i: i + 1])
        s = int(self._order[i]) if self._order is not None else i
        data, cal = self._reader(s)
        if self._calibrated and cal is None:  # a slice without reference lines: zeros, as whole
            cal = np.zeros_like(data) if isinstance(data, np.ndarray) else data.new_zeros(data.shape)
        ref = None if self._reference is None else self._reference(s)
        return replace(vol, data=data, reference=ref, slice_indices=(i,),
                       calibration=cal if self._calibrated else None)

    def held_bytes(self) -> int:
        """Bytes of k-space this object holds between reads (what ``mrirecon run``'s volume
        memory check adds to the outputs, through ``_MRISource.held_bytes``): read whole, the
        volume's samples, calibration, trajectory and density weights; streamed, the trajectory
        and weights every slice shares (non-Cartesian; 0 for Cartesian slices)."""
        vol = self._volume
        held = (vol.trajectory, vol.density) if self._reader is not None else (
            vol.data, vol.calibration, vol.trajectory, vol.density)
        return int(sum(t.nbytes for t in held if t is not None))


def open_ismrmrd(path: str | os.PathLike, dataset: str = "dataset", **kwargs) -> ISMRMRDSlices:
    """:class:`ISMRMRDSlices` of an ISMRMRD file: the keywords, checks and errors of
    :func:`~mrirecon.io.read_ismrmrd`; every slice it reads equals that slice of the whole-file
    read, bit for bit, with the same header."""
    from mrirecon.io.ismrmrd_raw import read_ismrmrd

    return read_ismrmrd(path, dataset, _stream=True, **kwargs)


def stream_cartesian(cartesian, sel, rows: Rows) -> ISMRMRDSlices:
    """:class:`ISMRMRDSlices` of a Cartesian selection ``sel`` (``ismrmrd_raw._Selection``;
    ``cartesian`` is ``ismrmrd_raw._cartesian``). 2-D: the heads alone plan the volume (every
    check, the header, mask, geometry, noise), then each slice is filled once to check what needs
    its samples (NaN/Inf, sample counts, the repeats' note) and dropped; ``read(i)`` fills slice
    ``i`` again. Read whole: 3-D slabs, and calibration-only lines that overlap imaging lines
    under a header that does not say the reference is separate (whether they are the same scan
    is decided over every slice)."""
    from mrirecon.io.ismrmrd_raw import repeat_note_of

    if sel.header.encoded_matrix[2] > 1:  # a slab's kz transform needs every partition
        return ISMRMRDSlices(cartesian(sel, rows)[0])
    plan, info = cartesian(sel, None)
    if info["needs_samples"]:
        return ISMRMRDSlices(cartesian(sel, rows)[0])
    numbers = sel.heads["idx"]["slice"]
    alone = np.zeros_like(numbers)  # each slice read alone as slice 0

    def read_slice(s: int):
        volume, part = cartesian(sel, rows, alone, sel.imaging[numbers[sel.imaging] == s],
                                 plan.noise)
        return volume.data, volume.calibration, part["repeats"]

    repeats = []
    for s in range(int(numbers[sel.imaging].max()) + 1):  # the checks that need the samples
        repeats += read_slice(s)[2]
    header = repeat_note_of(plan.header, repeats,
                            sel.heads["idx"]["average"][sel.imaging])
    plan = replace(plan, header=header)
    return ISMRMRDSlices(plan, lambda s: read_slice(s)[:2], info["order"],
                         calibrated=plan.calibration is not None)


#: The root dataset of a non-Cartesian ISMRMRD file that holds the object's magnitude
#: ``(slices, rows, cols)`` (the simulator writes it), read as the reference to score against
REFERENCE = "reconstruction_rss"


def reference_reader(path: str | os.PathLike, num_slices: int, fail):
    """A reader of the file's :data:`REFERENCE` (``s`` -> ``(1, rows, cols)`` float32 of the
    file's slice ``s``, read alone; ``slice(None)``: all), ``None`` when the file has none."""
    import h5py
    import torch

    with h5py.File(path, "r") as h5:
        if REFERENCE not in h5:
            return None
        ds = h5[REFERENCE]
        if not isinstance(ds, h5py.Dataset) or ds.ndim != 3 or ds.shape[0] != num_slices \
                or ds.dtype.kind != "f":
            got = f"{ds.dtype} {ds.shape}" if isinstance(ds, h5py.Dataset) else "a group"
            raise fail(REFERENCE, f"expected a real (slices, rows, cols) image of the "
                       f"{num_slices} slices of the k-space, got {got}")

    def read(s) -> torch.Tensor:
        with h5py.File(path, "r") as h5:
            rows = h5[REFERENCE][s] if isinstance(s, slice) else h5[REFERENCE][s:s + 1]
        return torch.from_numpy(np.asarray(rows, dtype=np.float32))
    return read
