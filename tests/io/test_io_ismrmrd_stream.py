"""ISMRMRD memory: the reader holds the grid and one chunk of samples, ``open_ismrmrd`` (what
``mrirecon run`` reads through) streams 2-D multi-slice data one slice at a time, and a file too
large for memory is refused before its samples are read, naming the file (non-Cartesian data:
test_io_ismrmrd_noncartesian_stream.py)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import fastmri_to_ismrmrd, fresh_python, simulated_volume

COILS, SIZE = 8, (64, 48)
SLICE_BYTES = 8 * COILS * SIZE[0] * SIZE[1]  # complex64 k-space of one slice


def _ismrmrd(folder: Path, slices: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    src = simulated_volume(folder, coils=COILS, slices=slices, size=SIZE)
    dst = folder / f"raw{slices}.h5"
    fastmri_to_ismrmrd(src, dst)
    return dst


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    return {n: _ismrmrd(root / str(n), n) for n in (4, 32)}


def test_streamed_slices_equal_the_whole_read_bit_for_bit(files):
    from mrirecon.io import read_ismrmrd
    from mrirecon.io.ismrmrd_stream import open_ismrmrd

    whole = read_ismrmrd(files[4])
    sl = open_ismrmrd(files[4])
    assert sl.streamed and sl.held_bytes() == 0 and len(sl) == whole.data.shape[0]
    for i in range(len(sl)):
        k = sl.read(i)
        assert torch.equal(k.data, whole.data[i: i + 1])
        assert repr(k.header) == repr(whole.header)
        assert (k.mask is None) == (whole.mask is None)
        if k.mask is not None:
            assert torch.equal(k.mask, whole.mask)
        assert k.slice_indices == (i,)


_HELD = """
import json, sys, tracemalloc
from pathlib import Path
from mrirecon.pipeline.stages_mri import _MRISource
tracemalloc.start()
source = _MRISource(Path(sys.argv[1] if len(sys.argv) > 1 else {path!r}), "ismrmrd")
held, peak = tracemalloc.get_traced_memory()
s = source.read(0)
print(json.dumps({{"held": held, "peak": peak, "n": len(source)}}))
"""


def test_the_run_source_holds_one_slice_at_4_and_32_slices(files):
    """``mrirecon run``'s source (tracemalloc, numpy's allocations) after opening a 4- and a
    32-slice file: what grows with the slices is bookkeeping, the heads (340 bytes a readout,
    kept) and, while the volume is planned, about 16 bytes a grid point (2/coils of the k-space:
    repeat counts and their checks); the
    k-space itself is read a slice at a time. Was: 28 more slices of k-space held (5.5 MiB here),
    and twice that at the peak."""
    got = {n: json.loads(fresh_python(_HELD.format(path=str(files[n])), timeout=300))
           for n in files}
    assert got[32]["n"] == 32
    per_slice = SIZE[1] * 512 + 16 * SIZE[0] * SIZE[1]  # heads, repeat counts and their checks
    assert got[32]["held"] - got[4]["held"] < 28 * per_slice, got
    assert got[32]["peak"] - got[4]["peak"] < 28 * per_slice + SLICE_BYTES, got


def test_the_readers_peak_is_the_grid_and_one_chunk(files, tmp_path):
    """Peak RSS of ``read_ismrmrd`` (VmHWM, reset after a first read has done the imports) on 16
    slices x 16 coils x 128 x 96 (25 MiB of k-space) with 256-KiB chunks: below 1.5x the grid
    (the grid, its repeat counts at 8 bytes a grid point, the heads, one chunk; 1.41x measured).
    Was 2.6x: every acquisition's samples read at once (``table[()]``) beside the grid."""
    import os

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    src = simulated_volume(tmp_path, coils=16, slices=16, size=(128, 96))
    fastmri_to_ismrmrd(src, tmp_path / "big.h5")
    code = textwrap.dedent(f"""
        import json
        import mrirecon.io.ismrmrd_stream as stream
        from mrirecon.io import read_ismrmrd
        def status(key):
            return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                    if l.startswith(key)][0]
        stream.CHUNK_BYTES = 1 << 18
        read_ismrmrd({str(files[4])!r})  # the imports and caches of a first read
        base = status("VmRSS")
        open("/proc/self/clear_refs", "w").write("5")
        v = read_ismrmrd({str(tmp_path / "big.h5")!r})
        print(json.dumps({{"peak": status("VmHWM") - base, "grid": v.data.nbytes}}))
    """)
    got = json.loads(fresh_python(code, timeout=300))
    assert got["grid"] == 16 * 16 * 128 * 96 * 8
    assert got["peak"] < 1.5 * got["grid"], got


def test_an_oversized_cartesian_file_is_refused_before_its_samples_are_read(files, monkeypatch):
    import mrirecon.io.ismrmrd_raw as raw
    import mrirecon.io.ismrmrd_stream as stream
    from mrirecon.io import DataFormatError, read_ismrmrd

    def no_samples(*args, **kwargs):
        raise AssertionError("samples read before the memory check")

    # half of it is below the grid, its repeat counts and one chunk of samples
    monkeypatch.setattr(raw, "memory_bytes", lambda: 2 * stream.CHUNK_BYTES)
    monkeypatch.setattr(stream.Rows, "iter", no_samples)
    with pytest.raises(DataFormatError, match=r"raw4\.h5.*GiB"):
        read_ismrmrd(files[4])
    with pytest.raises(DataFormatError, match=r"raw4\.h5.*GiB"):
        stream.open_ismrmrd(files[4])


def _stream_with_memory_for_one_slice(monkeypatch, path, slices: int, slice_need: int,
                                      volume_need: int) -> None:
    """With memory (64-KiB chunks) for what one slice of ``path`` needs (``slice_need`` bytes
    and a chunk) but not for the volume (``volume_need`` and a chunk), ``open_ismrmrd`` streams
    every slice, each bit-identical to the whole read done beforehand."""
    import mrirecon.io.ismrmrd_raw as raw
    import mrirecon.io.ismrmrd_stream as stream
    from mrirecon.io import read_ismrmrd

    whole = read_ismrmrd(path)
    chunk = 64 << 10
    slice_need, volume_need = slice_need + chunk, volume_need + chunk
    half = 2 * slice_need
    assert slice_need < half < volume_need
    monkeypatch.setattr(raw, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(stream, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(raw, "memory_bytes", lambda: 2 * half)
    sl = stream.open_ismrmrd(path)
    assert sl.streamed and len(sl) == slices
    for i in range(slices):
        assert torch.equal(sl.read(i).data, whole.data[i: i + 1])


def test_a_file_whose_slice_fits_but_volume_does_not_streams_and_the_whole_read_refuses(
        files, monkeypatch):
    """Memory for one slice (its grid and repeat counts, the planning pass's repeat counts of
    every slice, one chunk) but not the 32-slice volume: ``open_ismrmrd`` reads every slice,
    bit-identical to the whole read done beforehand; ``read_ismrmrd`` is refused for the memory,
    not as corrupt indices. Was: ``open_ismrmrd`` refused too, by the check after the slab plan
    counting every slice in the planning pass, blaming "corrupt" indices."""
    from mrirecon.io import DataFormatError, read_ismrmrd

    points = SIZE[0] * SIZE[1]
    _stream_with_memory_for_one_slice(  # a slice's grid and counts + the planning pass's counts
        monkeypatch, files[32], 32, (8 * COILS + 8) * points + 8 * 32 * points,
        (8 * COILS + 8) * 32 * points)
    with pytest.raises(DataFormatError, match=r"raw32\.h5.*needs .* GiB.*split the file or run "
                                              r"with more memory") as err:
        read_ismrmrd(files[32])
    assert "corrupt" not in str(err.value)


def test_an_oversized_radial_file_is_refused_before_its_samples_are_read(tmp_path, monkeypatch):
    """Non-Cartesian samples are read in chunks into the volume: a file whose volume (and one
    chunk) exceeds half the memory is refused by the memory check before a sample is read, naming
    the file and the size, while ``open_ismrmrd``, which holds one slice, reads it, bit-identical
    to the whole read. Was: read whole (``table[()]``, 3.3x the samples), refused when 3.5x the
    samples exceeded half the memory, by the stream too."""
    import mrirecon.io.ismrmrd_stream as stream
    from mrirecon.io import DataFormatError, read_ismrmrd
    from tests.helpers import radial_ismrmrd

    readouts, samples, slices, coils = 32, 64, 8, 4
    path, k, traj = radial_ismrmrd(tmp_path / "radial.h5", readouts, samples, slices, coils)
    points = readouts * samples
    _stream_with_memory_for_one_slice(  # a slice's samples + every slice's counts
        monkeypatch, path, slices, 8 * coils * points + 8 * slices * points,
        (8 * coils + 8) * slices * points)

    def no_samples(*args, **kwargs):
        raise AssertionError("samples read before the memory check")

    monkeypatch.setattr(stream.Rows, "iter", no_samples)
    with pytest.raises(DataFormatError, match=r"radial\.h5.*needs .* GiB.*split the file"):
        read_ismrmrd(path)


def test_read_heads_payload_counts_the_samples_and_the_trajectories(tmp_path):
    """Fails if ismrmrd_stream.py:42 ``("data", "traj")`` -> ``("data",)``. ``read_heads``'s
    payload (what the oversized-file check weighs before any sample is held) is the bytes of
    every acquisition's samples *and* trajectory, exactly as stored; the heads are the
    table's."""
    from mrirecon.io.ismrmrd_stream import read_heads
    from tests.helpers import radial_ismrmrd

    path, _, _ = radial_ismrmrd(tmp_path / "r.h5", readouts=8, samples=16, slices=2, coils=1)
    with h5py.File(path, "r") as h5:
        table = h5["dataset/data"]
        records = table[()]
        heads, payload = read_heads(table)
    expected = sum(np.asarray(r["data"]).nbytes + np.asarray(r["traj"]).nbytes for r in records)
    assert sum(np.asarray(r["traj"]).nbytes for r in records) > 0
    assert payload == expected
    np.testing.assert_array_equal(heads, records["head"])


def test_a_slice_whose_rows_have_one_gap_streams_its_own_rows(tmp_path):
    """Fails if ismrmrd_stream.py:111 ``sel[-1] - sel[0] + 1 == sel.size`` -> ``sel[-1] -
    sel[0] == sel.size``. Rows stored by slice except that the last line of slice 0 and the
    first of slice 1 are swapped (one row of another slice inside each slice's run, as an
    interleaved or navigator acquisition leaves): each slice's selection spans one row more
    than it holds. The streamed slices must equal the whole read bit for bit (the contiguous
    read is only for selections without gaps)."""
    from mrirecon.io import read_ismrmrd
    from mrirecon.io.ismrmrd_stream import open_ismrmrd
    from tests.helpers import fastmri_to_ismrmrd, simulated_volume

    src = simulated_volume(tmp_path, coils=2, slices=2, size=(32, 24))
    path = tmp_path / "raw.h5"
    fastmri_to_ismrmrd(src, path)
    with h5py.File(path, "r+") as h5:
        xml, records = h5["dataset/xml"][()], h5["dataset/data"][()]
        key = records["head"]["idx"]["slice"].astype(np.int64) * 10**6 + \
            records["head"]["idx"]["kspace_encode_step_1"].astype(np.int64)
        records = records[np.argsort(key, kind="stable")]
        n = int((records["head"]["idx"]["slice"] == 0).sum())
        records[[n - 1, n]] = records[[n, n - 1]]
        del h5["dataset"]
        group = h5.create_group("dataset")
        group.create_dataset("xml", data=xml)
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    whole = read_ismrmrd(path)
    sl = open_ismrmrd(path)
    assert sl.streamed and len(sl) == 2
    for i in range(len(sl)):
        assert torch.equal(sl.read(i).data, whole.data[i: i + 1])
