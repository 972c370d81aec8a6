"""``results.jsonl`` (:class:`mrirecon.bench.table.ResultsFile`) on long benchmarks: each record
is appended as one line (the whole file was rewritten per record: 104 ms per append and 11 MiB
rewritten at 8000 records, O(n^2) in all), ``find`` is a lookup (it walked every record, once
per (file, method, acceleration) of every resumed run), and a line torn by a kill is dropped
with a warning. The bytes on disk are those the rewriting store wrote."""

from __future__ import annotations

import errno
import json
import os
import warnings

import pytest

from mrirecon.bench import table as bench_table


def _record(i: int, method: str = "zero_filled", config: str = "c0") -> dict:
    """A record the size of a real one (about 1.4 kB, as `mrirecon bench` writes)."""
    return {"method": method, "acceleration": 4.0 if i % 2 else 8.0, "volume": f"file_{i:05d}.h5",
            "config": config, "slices": 2, "MSE": 1e-8 * i, "NMSE": 0.2, "PSNR": 19.2,
            "SSIM": 0.58, "seconds_per_slice": 0.005, "recon_seconds": 0.002,
            "calib_seconds": 0.009, "num_params": 0, "threads": 1, "mask": "0807e200",
            "mask_width": 32, "acquirable_columns": 32, "mask_type": "equispaced_fraction",
            "center_fraction": 0.16, "num_low_frequencies": 5, "reference_notes": [],
            "data_notes": [f"file_{i:05d}.h5: all 2 slices: " + "n" * 400],
            "data_warnings": [f"file_{i:05d}.h5: all 2 slices: calibrate: " + "w" * 600]}


def _line(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


def _written_bytes() -> int:
    """Bytes this process has passed to write(2) so far (Linux ``/proc/self/io``)."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split()[1])


def test_each_append_writes_its_record_once_and_find_is_a_lookup(tmp_path, monkeypatch):
    try:  # absent (macOS), unreadable (hidepid, some sandboxes) or without wchar
        _written_bytes()
    except (OSError, StopIteration, ValueError, IndexError) as err:
        pytest.skip(f"needs /proc/self/io's wchar to count the bytes written ({err!r})")
    path = tmp_path / "results.jsonl"
    store = bench_table.ResultsFile(path)
    synced = []  # each record is flushed to disk (counted here: 3000 real fsyncs take 10 s)
    monkeypatch.setattr(os, "fsync", synced.append)
    n = 3000
    records = [_record(i) for i in range(n)]
    for i, rec in enumerate(records):
        before = _written_bytes()
        store.append(rec)
        written = _written_bytes() - before
        # O(record): the line, never the file (was the whole file: 2x at the 2nd record)
        assert written < 2 * len(_line(rec)), (i, written, len(_line(rec)))
    assert len(synced) == n - 1  # the first record created the file (atomically)
    # the same bytes the rewriting store wrote: one sorted-key JSON line per record
    assert path.read_text() == "".join(map(_line, records))

    calls = []
    key = bench_table._key
    monkeypatch.setattr(bench_table, "_key", lambda rec: calls.append(1) or key(rec))
    for i in (0, 1, n // 2, n - 1):  # the oldest too: find walked the list from the newest
        rec = records[i]
        assert store.find("zero_filled", rec["acceleration"], rec["volume"], "c0") == rec
        assert store.find("zero_filled", rec["acceleration"], rec["volume"], "other") is None
    assert len(calls) <= 8  # a lookup, not a walk over the 3000 records (was 5 * 3000)

    again = bench_table.ResultsFile(path)  # read back: the same records, found the same way
    assert again.records == records
    assert again.find("zero_filled", 8.0, "file_00000.h5", "c0") == records[0]


def test_latest_duplicate_wins_and_fresh_replaces_the_file_on_its_first_append(tmp_path):
    path = tmp_path / "results.jsonl"
    store = bench_table.ResultsFile(path)
    old, new, other = _record(1), {**_record(1), "NMSE": 0.1}, _record(1, config="c1")
    for rec in (old, other, new):
        store.append(rec)
    for s in (store, bench_table.ResultsFile(path)):
        assert s.find("zero_filled", 4, "file_00001.h5", "c0") == new
        assert s.find("zero_filled", 4.0, "file_00001.h5", "c1") == other
    fresh = bench_table.ResultsFile(path, fresh=True)
    assert fresh.records == [] and path.read_text() == "".join(map(_line, (old, other, new)))
    fresh.append(_record(2))
    fresh.append(_record(3))
    assert path.read_text() == _line(_record(2)) + _line(_record(3))
    memory = bench_table.ResultsFile(os.devnull, fresh=True)  # bench without --output
    memory.add(_record(4))
    assert memory.find("zero_filled", 8, "file_00004.h5", "c0") == _record(4)


def test_a_line_torn_by_a_kill_is_dropped_with_a_warning_and_not_glued_to(tmp_path):
    path = tmp_path / "results.jsonl"
    store = bench_table.ResultsFile(path)
    store.append(_record(1))
    store.append(_record(2))
    with path.open("a") as f:  # killed while it wrote the third record's line
        f.write(_line(_record(3))[:700])
    with pytest.warns(UserWarning, match=rf"{path}:3: .*torn.*dropped") as caught:
        resumed = bench_table.ResultsFile(path)
    assert len(caught) == 1
    assert resumed.records == [_record(1), _record(2)]
    resumed.append(_record(4))  # the torn bytes are cut off, not glued to the new line
    assert path.read_text() == "".join(map(_line, (_record(1), _record(2), _record(4))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bench_table.ResultsFile(path).records == [_record(1), _record(2), _record(4)]

    # a complete record without its line break (an editor's save) is kept, and ended
    path.write_text(_line(_record(5)).rstrip("\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = bench_table.ResultsFile(path)
    kept.append(_record(6))
    assert path.read_text() == _line(_record(5)) + _line(_record(6))

    # an unreadable line inside the file is skipped with its warning, as before
    path.write_text(_line(_record(7)) + "{not json\n" + _line(_record(8)))
    with pytest.warns(UserWarning, match=rf"{path}:2: unreadable benchmark record skipped"):
        assert bench_table.ResultsFile(path).records == [_record(7), _record(8)]


def test_a_failed_append_leaves_the_file_and_the_store_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    store = bench_table.ResultsFile(path)
    store.append(_record(1))
    before = path.read_bytes()
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills up halfway through the line
        real_write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError, match=rf"{path}: No space left on device"):
        store.append(_record(2))
    monkeypatch.setattr(os, "write", real_write)
    assert path.read_bytes() == before  # no half line left for the next append to follow
    assert store.records == [_record(1)] and store.find("zero_filled", 8, "file_00002.h5", "c0") is None
    store.append(_record(3))
    assert bench_table.ResultsFile(path).records == [_record(1), _record(3)]
