"""Non-Cartesian ISMRMRD memory: the samples and trajectories are read in chunks of rows (never
``table[()]``), and ``open_ismrmrd`` (what ``mrirecon run`` reads through) reads one slice's
acquisitions when it is asked for, bit-identical to that slice of ``read_ismrmrd``; the checks
that need every slice run over the file once when it is opened."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.containers import Header
from mrirecon.io import DataFormatError, read_ismrmrd, write_ismrmrd_noncartesian
from mrirecon.io.ismrmrd_stream import open_ismrmrd
from mrirecon.sampling import spiral_trajectory
from tests.helpers import fresh_python

N = 32


def _trajectory(kind: str, readouts: int, samples: int) -> torch.Tensor:
    if kind == "spiral":
        return spiral_trajectory(N, 0.2, readouts).float()
    angles = torch.arange(readouts) * np.pi / readouts
    r = torch.linspace(-0.5, 0.5, samples)
    return torch.stack([r[None] * torch.cos(angles)[:, None],
                        r[None] * torch.sin(angles)[:, None]], -1)


def _file(path: Path, kind: str, slices: int, coils: int = 3, readouts: int = 12,
          samples: int = 48, edit=None) -> tuple[Path, torch.Tensor, np.ndarray]:
    """A ``kind`` (radial, spiral) file of ``slices`` slices whose acquisitions are stored
    shuffled (a slice's rows apart from each other) and whose slice positions run backwards
    (read in position order: slice ``S - 1`` first): ``(path, k, order)``, slice ``p`` of the
    volume read being ``k[order[p]]``. ``edit(records)`` changes the rows before they are
    written."""
    traj = _trajectory(kind, readouts, samples)
    g = torch.Generator().manual_seed(slices)
    k = torch.randn(slices, coils, *traj.shape[:2], dtype=torch.complex64, generator=g)
    header = Header(encoded_matrix=(N, N, 1), recon_matrix=(N, N, 1),
                    encoded_fov_mm=(200.0, 200.0, 5.0), recon_fov_mm=(200.0, 200.0, 5.0),
                    extra={"trajectory": kind})
    write_ismrmrd_noncartesian(path, k, traj, header)
    with h5py.File(path, "r+") as h5:
        xml, records = h5["dataset/xml"][()], h5["dataset/data"][()]
        positions = {int(r["head"]["idx"]["slice"]): r["head"]["position"].copy() for r in records}
        for r in records:  # slice s at slice S - 1 - s's position
            r["head"]["position"] = positions[slices - 1 - int(r["head"]["idx"]["slice"])]
        records = records[np.random.default_rng(0).permutation(len(records))]
        if edit is not None:
            records = edit(records)
        del h5["dataset"]
        group = h5.create_group("dataset")
        group.create_dataset("xml", data=xml)
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path, k, np.arange(slices)[::-1].copy()


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of about two rows: every slice's rows span several chunks."""
    import mrirecon.io.ismrmrd_raw as raw
    import mrirecon.io.ismrmrd_stream as stream

    monkeypatch.setattr(stream, "CHUNK_BYTES", 2500)
    monkeypatch.setattr(raw, "CHUNK_BYTES", 2500)


def _same_slices(path, whole):
    sl = open_ismrmrd(path)
    assert sl.streamed and len(sl) == whole.data.shape[0]
    held = sum(t.nbytes for t in (whole.trajectory, whole.density))  # no sample held
    assert sl.held_bytes() == held
    for i in reversed(range(len(sl))):
        k = sl.read(i)
        assert k.data.dtype == whole.data.dtype and torch.equal(k.data, whole.data[i: i + 1])
        assert repr(k.header) == repr(whole.header)
        assert torch.equal(k.trajectory, whole.trajectory)
        assert torch.equal(k.density, whole.density)
        assert k.slice_indices == (i,) and k.mask is None and k.calibration is None
        assert (k.noise is None) == (whole.noise is None)
    return sl


@pytest.mark.parametrize("kind", ["radial", "spiral"])
def test_chunked_and_streamed_reads_equal_the_samples_written(tmp_path, small_chunks, kind):
    """5 slices, rows shuffled, slices in reverse position order, chunks of 2 rows: the whole
    read returns the written samples to the bit (in position order), and every slice streamed
    equals that slice of the whole read (data, header, trajectory, weights). Was: read whole
    (``table[()]``, 2.3-2.5x the samples at 64 slices; the run held the volume)."""
    path, k, order = _file(tmp_path / f"{kind}.h5", kind, slices=5)
    whole = read_ismrmrd(path)
    assert torch.equal(whole.data, k[order])
    _same_slices(path, whole)


def test_repeats_and_unmeasured_samples_are_judged_over_every_slice(tmp_path, small_chunks):
    """A readout of slice 3 stored twice (the second 5x the first, whose spread about their
    mean is (13 - 9) / 13 = 31 % of their energy, beyond the note's 20 %: the repeats' note) and
    the last 5 samples of every readout zero (dropped, with a note): the streamed slices carry
    the whole read's notes and samples; the repeat is the mean of its two copies. (3x gave a
    spread of exactly 20 %, noted or not by the last bit of a BLAS dot product.)"""
    def edit(records):
        for r in records:
            n = int(r["head"]["number_of_samples"])
            x = np.asarray(r["data"]).view(np.complex64).reshape(-1, n)
            x[:, -5:] = 0
            r["data"] = x.view(np.float32).reshape(-1)
        first = np.flatnonzero((records["head"]["idx"]["slice"] == 3)
                               & (records["head"]["idx"]["kspace_encode_step_1"] == 4))[0]
        extra = records[first: first + 1].copy()
        extra[0]["data"] = 5 * np.asarray(records[first]["data"])
        extra[0]["head"]["idx"]["average"] = 1
        return np.concatenate([records, extra])

    path, k, order = _file(tmp_path / "radial.h5", "radial", slices=5, edit=edit)
    whole = read_ismrmrd(path)
    assert "repeats_note" in whole.header.extra and "zero_samples_note" in whole.header.extra
    assert whole.data.shape[-1] == k.shape[-1] - 5
    p = int(np.flatnonzero(order == 3)[0])
    x = k[3, :, 4, :-5].numpy()
    mean = ((x.astype(np.complex128) + (5 * x).astype(np.complex128)) / 2).astype(np.complex64)
    assert np.array_equal(whole.data[p, :, 4].numpy(), mean)
    _same_slices(path, whole)


@pytest.mark.parametrize("field, problem", [("data", "NaN or Inf samples"),
                                            ("traj", "different trajectory in slice")])
def test_a_bad_row_of_the_last_slice_is_refused_when_the_file_is_opened(tmp_path, small_chunks,
                                                                        field, problem):
    """The checks the whole read makes run over every slice, in chunks, when the file is
    opened: a NaN sample or a trajectory of another shape in the file's last row (slice 4's in
    every chunk size) is refused by ``open_ismrmrd`` with the whole read's message, before a
    slice is asked for."""
    def edit(records):
        a = len(records) - 1
        values = np.asarray(records[a][field]).copy()
        values[2] = np.nan if field == "data" else values[2] + 0.01
        records[a][field] = values
        return records

    path, _, _ = _file(tmp_path / "radial.h5", "radial", slices=5, edit=edit)
    for read in (read_ismrmrd, open_ismrmrd):
        with pytest.raises(DataFormatError, match=rf"radial\.h5.*\.{field}.*{problem}"):
            read(path)


_HELD = """
import json, tracemalloc
from pathlib import Path
from mrirecon.pipeline.stages_mri import _MRISource
tracemalloc.start()
source = _MRISource(Path({path!r}), "ismrmrd")
held, peak = tracemalloc.get_traced_memory()
tracemalloc.reset_peak()
s = source.read(len(source) - 1)
print(json.dumps({{"held": held, "peak": peak, "read": tracemalloc.get_traced_memory()[1] - held,
                   "n": len(source), "slice": s.kspace.numel() * 8}}))
"""


def test_the_run_source_holds_no_slice_of_a_radial_file_at_4_and_32_slices(tmp_path):
    """``mrirecon run``'s source (tracemalloc, numpy's allocations) on a radial file of 4 and
    32 slices (8 coils x 32 spokes x 128 samples, 256 KiB a slice): what grows with the slices
    while it opens and holds the file is the heads (340 bytes a readout) and 16 bytes a readout
    of repeat counts and energies (12 KiB a slice measured), not the samples; a slice read holds
    that slice and its rows (2.5x the slice measured). Was: the volume held (28 more slices,
    7.3 MB more here) and 15.6 MB more at the peak."""
    got = {}
    for n in (4, 32):
        path, _, _ = _file(tmp_path / f"r{n}.h5", "radial", slices=n, coils=8, readouts=32,
                           samples=128)
        got[n] = json.loads(fresh_python(_HELD.format(path=str(path)), timeout=300))
    slice_bytes = got[32]["slice"]
    assert got[32]["n"] == 32 and slice_bytes == 8 * 32 * 128 * 8
    per_slice = 32 * 512  # heads (340 bytes), counts and energies (16), their bookkeeping
    assert got[32]["held"] - got[4]["held"] < 28 * per_slice, got
    assert got[32]["peak"] - got[4]["peak"] < 28 * per_slice + slice_bytes, got
    assert got[32]["read"] < 3 * slice_bytes, got


def test_the_whole_reads_peak_grows_by_the_samples_it_returns(tmp_path):
    """Peak RSS of ``read_ismrmrd`` (VmHWM, reset after a first read has done the imports and
    the heap trimmed; a fresh process each) on radial files of 4 and 16 slices, 8 coils x 64
    spokes x 256 samples (1 MiB a slice), 256-KiB chunks: the peak grows by less than 1.3x the
    samples the 12 more slices add (1.13x measured: the volume; the chunks and the trajectory's
    work do not grow). Was 3.2x (``table[()]``: h5py's objects for every row beside the
    volume)."""
    import os

    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak")
    warm, _, _ = _file(tmp_path / "warm.h5", "radial", slices=1)
    got = {}
    for n in (4, 16):
        big, _, _ = _file(tmp_path / f"r{n}.h5", "radial", slices=n, coils=8, readouts=64,
                          samples=256)
        code = textwrap.dedent(f"""
            import ctypes, json
            import mrirecon.io.ismrmrd_stream as stream
            from mrirecon.io import read_ismrmrd
            def status(key):
                return [int(l.split()[1]) * 1024 for l in open("/proc/self/status")
                        if l.startswith(key)][0]
            stream.CHUNK_BYTES = 1 << 18
            read_ismrmrd({str(warm)!r})  # the imports and caches of a first read
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            base = status("VmRSS")
            open("/proc/self/clear_refs", "w").write("5")
            v = read_ismrmrd({str(big)!r})
            print(json.dumps({{"peak": status("VmHWM") - base, "samples": v.data.nbytes}}))
        """)
        got[n] = json.loads(fresh_python(code, timeout=300))
    grown = got[16]["samples"] - got[4]["samples"]
    assert grown == 12 * 8 * 64 * 256 * 8
    assert got[16]["peak"] - got[4]["peak"] < 1.3 * grown, got


@pytest.mark.parametrize("change", ["rows cut", "another file"])
def test_a_file_changed_after_it_was_opened_is_named_when_a_slice_is_read(tmp_path, change):
    """``open_ismrmrd`` reads a slice's rows when asked: a file whose rows were cut in half
    after opening gave a raw ``IndexError: Fancy indexing out of range``, and another radial file
    written over it "readout 4 has a different trajectory in slice 2". Now: the file changed
    since it was opened, named."""
    path, _, _ = _file(tmp_path / "radial.h5", "radial", slices=5)
    sl = open_ismrmrd(path)
    sl.read(0)
    if change == "rows cut":
        with h5py.File(path, "r+") as h5:
            records = h5["dataset/data"][()]
            h5["dataset/data"].resize((len(records) // 2,))
    else:
        _file(tmp_path / "other.h5", "radial", slices=5, readouts=16)  # other spokes
        (tmp_path / "other.h5").replace(path)
    with pytest.raises(DataFormatError, match=r"radial\.h5: dataset/data: the file changed since "
                                              r"it was opened"):
        for i in range(len(sl)):
            sl.read(i)
