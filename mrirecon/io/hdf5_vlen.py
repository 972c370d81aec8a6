"""Check the variable-length references of an HDF5 dataset before HDF5 follows them.

A variable-length element (an ISMRMRD acquisition's ``data`` and ``traj``, its ``xml`` string)
is stored as a heap ID: the element count, the file address of a global heap collection and
the object's index in it. HDF5 (2.0, as bundled with h5py 3.16) loops for ever inside
``H5Dread`` when the collection a heap ID names is corrupt in one way: a free-space entry
smaller than its own header, which never moves the loader's walk on (found by the reader fuzz
tests: one zeroed size field in an ISMRMRD file's xml heap). No Python signal handler runs
there, so the reader could not even time out. This module reads the stored heap IDs with plain
file I/O and checks each against the collection it names, walking the collection as HDF5's
loader does, so such a file is refused before HDF5 reads it.

Layout facts (HDF5 file format specification, version 3): a heap ID is ``length`` (4 bytes),
collection address (``sizeof_addr`` bytes), object index (4 bytes); a collection starts with
``GCOL``, version 1, 3 reserved bytes and its size (``sizeof_size`` bytes), then objects:
index (2), reference count (2), 4 reserved, object size (``sizeof_size``), data padded to 8
bytes; index 0 is free space, whose size includes its header.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np


def _vlen_fields(tid, base: int = 0) -> list[tuple[int, int]] | None:
    """``(offset, element size)`` of the variable-length sequences in type ``tid`` (nested
    compounds included), ``None`` when the stored layout cannot be derived from ``tid``.

    HDF5 reports the types of a dataset in their memory form: a sequence is an ``hvl_t`` of 16
    bytes, as large as its heap ID on disk with 8-byte addresses, so the member offsets are
    those of the file; a variable-length string is a pointer (8 bytes, its heap ID 16), so a
    compound holding one is not checked."""
    cls = tid.get_class()
    if cls == h5py.h5t.VLEN:
        return [(base, tid.get_super().get_size())]
    if cls == h5py.h5t.STRING and tid.is_variable_str():
        return None
    if cls == h5py.h5t.COMPOUND:
        out = []
        for i in range(tid.get_nmembers()):
            sub = _vlen_fields(tid.get_member_type(i), base + tid.get_member_offset(i))
            if sub is None:
                return None
            out += sub
        return out
    return []


def _stored_records(ds: h5py.Dataset, f, file_size: int, rec: int) -> bytes | str | None:
    """The stored bytes of the dataset's elements (``rec`` bytes each, in C order, inside its
    extent) read from the open file ``f`` of ``file_size`` bytes, why they cannot be read (a
    run past the end of the file), or ``None`` where they are not plain records (compact
    layout, filters, chunks of more than one dimension)."""
    dcpl = ds.id.get_create_plist()
    layout, total = dcpl.get_layout(), int(np.prod(ds.shape, dtype=np.int64))
    if layout == h5py.h5d.CONTIGUOUS:
        offset = ds.id.get_offset()
        extents = [] if offset is None else [(offset, total)]
    elif layout == h5py.h5d.CHUNKED and dcpl.get_nfilters() == 0 and ds.ndim == 1:
        chunk = dcpl.get_chunk()[0]
        if not hasattr(ds.id, "chunk_iter"):
            return _chunks_read_directly(ds, chunk, total, rec)
        extents = []

        def visit(info) -> None:
            extents.append((info.byte_offset, max(0, min(chunk, total - info.chunk_offset[0]))))

        # one pass over the chunk index (get_chunk_info(i) searches it anew: quadratic, 17 s
        # for 20 000 one-record chunks, the layout ISMRMRD writers use)
        ds.id.chunk_iter(visit)
    else:
        return None
    stored = []
    for offset, count in extents:
        if offset + count * rec > file_size:
            return (f"{count} stored elements at {offset} run past the end of the file "
                    f"({file_size} bytes)")
        f.seek(offset)
        stored.append(f.read(count * rec))
    return b"".join(stored)


def _chunks_read_directly(ds: h5py.Dataset, chunk: int, total: int, rec: int) -> bytes | str:
    """The stored records of a 1-D unfiltered chunked dataset, chunk by chunk through
    ``read_direct_chunk`` (raw bytes: HDF5 follows no heap ID), for an h5py without
    ``chunk_iter`` (built against HDF5 < 1.12.3: PyPI's h5py < 3.10, older distro builds).

    ``read_direct_chunk`` finds a chunk through the index as a read does: the whole check of a
    20 000-acquisition ISMRMRD file (one-record chunks) took 0.22 s under HDF5 1.12.2, where a
    ``get_chunk_info(i)`` loop (a scan of the index per call: quadratic) took 11 s. A chunk that
    was never written holds fill values (no heap IDs) and raises: it is skipped, and HDF5's own
    read of it finds no storage either."""
    stored = []
    for start in range(0, total, chunk):
        try:
            raw = ds.id.read_direct_chunk((start,))[1]
        except RuntimeError:  # "chunk storage is not allocated"
            continue
        count = min(chunk, total - start)
        if len(raw) < count * rec:
            return f"the chunk at element {start} holds {len(raw)} bytes, not {count * rec}"
        stored.append(raw[:count * rec])
    return b"".join(stored)


class _Collections:
    """The objects of each global heap collection a file's heap IDs name, parsed once."""

    def __init__(self, f, file_size: int, sizeof_size: int) -> None:
        self.f, self.file_size, self.ss = f, file_size, sizeof_size
        self.cache: dict[int, dict[int, int] | str] = {}

    def objects(self, addr: int) -> dict[int, int] | str:
        """``{index: size}`` of the collection at ``addr``, or why it is not one."""
        if addr not in self.cache:
            self.cache[addr] = self._parse(addr)
        return self.cache[addr]

    def _parse(self, addr: int) -> dict[int, int] | str:
        head = 8 + self.ss
        if addr + head > self.file_size:
            return f"heap address {addr} lies beyond the end of the file ({self.file_size} bytes)"
        self.f.seek(addr)
        raw = self.f.read(head)
        if raw[:4] != b"GCOL" or raw[4] != 1:
            return f"no global heap collection at address {addr}"
        size = int.from_bytes(raw[8:head], "little")
        if size < head or addr + size > self.file_size:
            return f"the heap collection at {addr} claims {size} bytes past the end of the file"
        body = self.f.read(size - head)
        # the walk of HDF5's collection loader (H5HG__cache_heap_deserialize): an object takes
        # its header plus its size padded to 8 bytes; the free space (index 0) takes its size,
        # header included. A free space smaller than its header would never move the walk on:
        # the loop that hangs HDF5.
        objs, pos, step = {}, 0, 8 + self.ss
        while pos + step <= len(body):
            index = int.from_bytes(body[pos:pos + 2], "little")
            n = int.from_bytes(body[pos + 8:pos + step], "little")
            need = step + (n + 7) // 8 * 8 if index else n
            if index == 0 and n < step:
                return f"the heap collection at {addr} has a free space of {n} bytes (corrupt)"
            if pos + need > len(body):
                return f"heap object {index} at {addr} runs past its collection"
            if index:
                objs[index] = n
            pos += need
        return objs


def check_vlen_references(path: str | os.PathLike, h5: h5py.File, ds: h5py.Dataset) -> str | None:
    """Why a heap ID of ``ds`` (in the open file ``h5`` at ``path``) would make HDF5 read
    outside a heap object, or ``None`` when every one names an object large enough (or the
    dataset's bytes cannot be checked: compact, filtered or no variable-length field)."""
    tid = ds.id.get_type()
    sizeof_addr, sizeof_size = h5.id.get_create_plist().get_sizes()
    hid_size = 8 + sizeof_addr
    if tid.get_class() == h5py.h5t.STRING and tid.is_variable_str():  # e.g. ISMRMRD's xml
        fields, rec = [(0, 1)], hid_size
    else:
        fields, rec = _vlen_fields(tid), tid.get_size()
        if fields and sizeof_addr != 8:  # the hvl_t size no longer matches the heap ID's
            return None
    if not fields:
        return None
    path = Path(path)
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        stored = _stored_records(ds, f, file_size, rec)
        if not isinstance(stored, bytes):
            return stored
        raw = np.frombuffer(stored, np.uint8).reshape(-1, rec)
        heaps = _Collections(f, file_size, sizeof_size)
        for field_offset, element in fields:
            ids = raw[:, field_offset:field_offset + hid_size]
            lengths = ids[:, :4].copy().view("<u4")[:, 0]
            indices = ids[:, 4 + sizeof_addr:hid_size].copy().view("<u4")[:, 0]
            for i in np.flatnonzero(lengths).tolist():  # empty elements name no heap object
                addr = int.from_bytes(ids[i, 4:4 + sizeof_addr].tobytes(), "little")
                objs = heaps.objects(addr)
                if isinstance(objs, str):
                    return objs
                if objs.get(int(indices[i]), -1) < int(lengths[i]) * element:
                    return (f"element {i}: {int(lengths[i])} x {element} bytes in heap object "
                            f"{int(indices[i])} at {addr}, which is missing or smaller")
    return None
