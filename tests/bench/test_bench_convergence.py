"""``mrirecon bench`` and solver convergence: a method whose settings the user gave reports the
solves that stopped at their iteration limit short of the tolerance, per volume, as ``mrirecon
run`` does; the bench's own settings stay quiet (docs/robustness.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from mrirecon.bench import methods as bench_methods
from mrirecon.bench import run_bench

SHORT = {"iterations": 2, "tolerance": 1e-12}  # CG cannot reach 1e-12 in 2 iterations
STOPPED = "cg stopped at its iteration limit (2 iterations)"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("bench")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=2, size=(64, 48), seed=7, resolution=2)
    return out


def _bench(data_dir, out, params, methods=("zero_filled", "cg_sense")):
    return run_bench(data_dir, accelerations=[4], center_fractions={4: 0.16}, methods=list(methods),
                     params=params, output_dir=out, progress=False, verbose=False, resume=False)


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {r["method"]: r for r in map(json.loads, lines)}


def test_a_user_tolerance_not_reached_is_said_per_volume(data_dir, tmp_path, caplog):
    """--set cg_sense.iterations=2 --set cg_sense.tolerance=1e-12: exit 0 and no word in the
    log, results.jsonl or the tables (``run`` with those settings warns)."""
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        _bench(data_dir, tmp_path / "b", {"cg_sense": dict(SHORT)})
    logged = [r.getMessage() for r in caplog.records if STOPPED in r.getMessage()]
    assert len(logged) == 1, logged  # once per volume, both slices on one line
    assert "all 2 slices" in logged[0] and "(cg_sense)" in logged[0], logged
    recs = _records(tmp_path / "b")
    (line,) = [w for w in recs["cg_sense"]["data_warnings"] if STOPPED in w]
    name = next(data_dir.glob("*.h5")).name
    assert line.startswith(f"{name}: all 2 slices: ") and "tolerance 1e-12" in line, line
    assert not any(STOPPED in w for w in recs["zero_filled"]["data_warnings"])
    assert STOPPED in (tmp_path / "b" / "bench_volumes.csv").read_text()


def test_the_bench_own_settings_stay_quiet(data_dir, tmp_path, caplog, monkeypatch):
    """The same unconverged CG under the bench's own defaults (no --set) is not reported."""
    monkeypatch.setitem(bench_methods.DEFAULT_PARAMS, "cg_sense", dict(SHORT))
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        _bench(data_dir, tmp_path / "b", {})
    assert not [r for r in caplog.records if "iteration limit" in r.getMessage()]
    recs = _records(tmp_path / "b")
    assert not any("iteration limit" in w for r in recs.values() for w in r["data_warnings"])


def test_the_ct_bench_says_it_too(tmp_path, caplog):
    """The CT bench: sirt with the user's 2 iterations and tolerance 1e-12; fbp says nothing."""
    from mrirecon.bench.ct import run_ct_bench
    from tests.helpers import simulated_ct_dir

    data = simulated_ct_dir(tmp_path / "ct", views=24, size=16, seed=2)
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        run_ct_bench(data, (2,), "fbp,sirt", params={"sirt": dict(SHORT)},
                     output_dir=tmp_path / "b", progress=False)
    stopped = "sirt stopped at its iteration limit (2 iterations)"
    assert sum(stopped in r.getMessage() for r in caplog.records) == 1  # one line per volume
    recs = [json.loads(line) for line in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    for r in recs:
        said = [w for w in r["data_warnings"] if stopped in w]
        assert len(said) == (r["method"] == "sirt"), (r["method"], said)
        if said:
            assert said[0].startswith(f"{r['volume']}: all ") and "tolerance 1e-12" in said[0]
