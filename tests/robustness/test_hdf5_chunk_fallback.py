"""The heap-ID check of ``io/hdf5_vlen.py`` on an h5py without ``DatasetID.chunk_iter``.

h5py has ``chunk_iter`` only when built against HDF5 >= 1.12.3 (PyPI wheels from 3.10 on; the
declared floor is 3.8, and distro or conda builds link older HDF5s). Without it every ISMRMRD
input was refused as "malformed (AttributeError ...)". The check now reads the chunks through
``read_direct_chunk``; these tests take ``chunk_iter`` away and compare with the path that has it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.helpers import fresh_python

# a Dataset whose low-level id has no chunk_iter, as under HDF5 < 1.12.3 (DatasetID is a Cython
# type: its attribute cannot be deleted, so ``Dataset.id`` returns a stand-in that lacks it)
_NO_CHUNK_ITER = """
import h5py

class NoChunkIter:
    def __init__(self, dsid):
        self._dsid = dsid

    def __getattr__(self, name):
        if name == "chunk_iter":
            raise AttributeError("'h5py.h5d.DatasetID' object has no attribute 'chunk_iter'")
        return getattr(self._dsid, name)

patched_id = property(lambda self: NoChunkIter(self._id)
                      if isinstance(self._id, h5py.h5d.DatasetID) else self._id)
"""


def _take_chunk_iter_away(monkeypatch) -> None:
    namespace: dict = {}
    exec(compile(_NO_CHUNK_ITER, "<no_chunk_iter>", "exec"), namespace)
    monkeypatch.setattr(h5py.Dataset, "id", namespace["patched_id"])


@pytest.fixture
def no_chunk_iter(monkeypatch):
    _take_chunk_iter_away(monkeypatch)


def _records(path: Path, name: str) -> bytes | str | None:
    from mrirecon.io.hdf5_vlen import _stored_records

    with h5py.File(path) as h5, open(path, "rb") as f:
        ds = h5[name]
        return _stored_records(ds, f, path.stat().st_size, ds.id.get_type().get_size())


def test_ismrmrd_file_reads_the_same_without_chunk_iter(ismrmrd_file, no_chunk_iter, monkeypatch):
    from mrirecon.io import read_ismrmrd

    with h5py.File(ismrmrd_file) as h5:
        table = h5["dataset/data"]
        assert not hasattr(table.id, "chunk_iter")
        assert table.chunks is not None and table.id.get_num_chunks() > 1  # the chunked path
    without = read_ismrmrd(ismrmrd_file)
    stored_without = _records(ismrmrd_file, "dataset/data")
    monkeypatch.undo()
    with h5py.File(ismrmrd_file) as h5:
        assert hasattr(h5["dataset/data"].id, "chunk_iter")
    with_iter = read_ismrmrd(ismrmrd_file)
    assert isinstance(stored_without, bytes) and stored_without == _records(ismrmrd_file,
                                                                            "dataset/data")
    assert np.array_equal(without.data, with_iter.data)
    assert np.array_equal(without.mask, with_iter.mask)


def test_sparse_and_partial_chunks_give_the_records_chunk_iter_gives(tmp_path, monkeypatch):
    """Chunks of 3 records, a last chunk past the extent, two chunks never written (fill values,
    no heap IDs): the same stored bytes both ways, and the check passes."""
    from mrirecon.io.hdf5_vlen import check_vlen_references

    path = tmp_path / "sparse.h5"
    dt = np.dtype([("head", "<u8"), ("data", h5py.vlen_dtype(np.float32))])
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("d", shape=(4,), maxshape=(None,), chunks=(3,), dtype=dt)
        ds[0] = (1, np.arange(3, dtype=np.float32))
        ds.resize((14,))
        ds[13] = (2, np.arange(5, dtype=np.float32))
    with h5py.File(path) as h5:
        assert h5["d"].id.get_num_chunks() == 2
        rec = h5["d"].id.get_type().get_size()  # 8 + a 16-byte heap ID
    with_iter = _records(path, "d")
    _take_chunk_iter_away(monkeypatch)
    without = _records(path, "d")
    # chunk 0 (records 0-2) and chunk 12 (records 12-13 of a 3-record chunk): 5 records
    assert isinstance(without, bytes) and without == with_iter and len(without) == 5 * rec
    with h5py.File(path) as h5:
        assert check_vlen_references(path, h5, h5["d"]) is None


def test_a_heap_that_hangs_hdf5_is_refused_without_chunk_iter(ismrmrd_file, tmp_path):
    """The check keeps its purpose on the fallback path: a data collection whose free space has
    size 0 (HDF5 1.12.2 and 2.0 loop for ever reading it) is refused, in a fresh interpreter
    (a hang inside HDF5 could not be stopped here)."""
    raw = ismrmrd_file.read_bytes()
    collections, at = [], raw.find(b"GCOL")
    while at >= 0:
        collections.append(at)
        at = raw.find(b"GCOL", at + 4)
    for at in collections[1:]:  # the first holds the xml header (not chunked)
        size, pos = struct.unpack_from("<Q", raw, at + 8)[0], at + 16
        while pos + 16 <= at + size and struct.unpack_from("<H", raw, pos)[0] != 0:
            pos += 16 + (struct.unpack_from("<Q", raw, pos + 8)[0] + 7) // 8 * 8
        if pos + 16 <= at + size:
            break
    else:
        pytest.fail("no data heap collection with a free space")
    bad = bytearray(raw)
    bad[pos + 8:pos + 16] = bytes(8)
    (tmp_path / "free.h5").write_bytes(bytes(bad))
    path = repr(str(tmp_path / "free.h5"))
    out = fresh_python(_NO_CHUNK_ITER + "h5py.Dataset.id = patched_id\n"
                       "from mrirecon.io import read_ismrmrd\n"
                       f"assert not hasattr(h5py.File({path})['dataset/data'].id, 'chunk_iter')\n"
                       f"try:\n    read_ismrmrd({path}); print('ok')\n"
                       "except Exception as e:\n    print(type(e).__name__, e)", timeout=60)
    assert out.startswith("DataFormatError") and "free.h5: dataset/data" in out, out
    assert f"collection at {at} has a free space of 0 bytes" in out


def test_a_heap_id_longer_than_its_object_in_elements_is_refused(tmp_path):
    """Fails if hdf5_vlen.py:186 ``< lengths * element`` -> ``< lengths``. A stored heap ID
    whose element count times the element size (float32: 4 bytes) exceeds its heap object is
    refused, although the count alone (in bytes) would fit: HDF5 would read past the object."""
    from mrirecon.io.hdf5_vlen import check_vlen_references

    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as h5:
        ds = h5.create_dataset("v", shape=(1,), dtype=h5py.vlen_dtype(np.float32))
        ds[0] = np.arange(4, dtype=np.float32)  # a 16-byte heap object
    with h5py.File(path, "r") as h5:
        assert check_vlen_references(path, h5, h5["v"]) is None
        offset = h5["v"].id.get_offset()
    with open(path, "r+b") as f:  # the heap ID's length: 4 -> 8 elements (32 bytes > 16)
        f.seek(offset)
        assert int.from_bytes(f.read(4), "little") == 4
        f.seek(offset)
        f.write((8).to_bytes(4, "little"))
    with h5py.File(path, "r") as h5:
        why = check_vlen_references(path, h5, h5["v"])
    assert why is not None and "8 x 4 bytes" in why
