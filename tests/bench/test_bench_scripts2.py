"""The held-out and tuning scripts of ``benchmarks/`` run (``bench_pnp.py``, ``heldout.py``,
``adapt_heldout.py``, ``tune_bench_mri.py``), each in this process (``main(argv)``) on its
smallest input: the data folder a script reuses is seeded with a small simulated set of its own
recipe, a grid cut to its first points. Each checks what the script writes (the JSON rows and
keys its docstring names, sums and means recomputed, files written whole: no temporary file
left), and where the run reproduces a figure of record, that figure."""

from __future__ import annotations

import importlib
import json
import math
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "heldout_results"


@pytest.fixture
def scripts(monkeypatch):
    """``benchmarks/`` importable (the scripts import each other); torch's thread count and the
    writes through ``atomic_write_text`` recorded (``scripts.writes``)."""
    import mrirecon.io.atomic as atomic

    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    writes: list[Path] = []
    original = atomic.atomic_write_text
    monkeypatch.setattr(atomic, "atomic_write_text",
                        lambda path, text: (writes.append(Path(path)), original(path, text))[1])
    threads = torch.get_num_threads()  # the scripts' main sets it (--threads)

    def load(name):
        return importlib.import_module(name)

    load.writes = writes
    yield load
    torch.set_num_threads(threads)


def _finite(obj) -> bool:
    """Every number in the JSON value ``obj`` finite."""
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return not isinstance(obj, float) or math.isfinite(obj)


def _simulate(folder: Path, **kwargs) -> None:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    simulate_mri_dataset(folder, volumes=1, **kwargs)


# --- tune_bench_mri.py ------------------------------------------------------------------------


def test_tune_bench_mri_writes_each_grid_point_and_its_winner(scripts, tmp_path, monkeypatch,
                                                              capsys):
    """The bench's training-seed recipe (seed 5, 4 coils) at 64 x 64, one slice, cg_sense's first
    two grid points: ``tune_cg_sense.json`` holds both rows with their sums and the best."""
    tune = scripts("tune_bench_mri")
    from mrirecon.heldout.tune import best_of

    points = tune.GRIDS["cg_sense"][:2]
    monkeypatch.setitem(tune.GRIDS, "cg_sense", points)
    _simulate(tmp_path / "data", slices=1, coils=(4, 4), size=(64, 64), seed=5)
    tune.main(["--work", str(tmp_path), "--methods", "cg_sense"])
    out = capsys.readouterr().out
    path = tmp_path / "tune_cg_sense.json"
    assert scripts.writes == [path] and sorted(p.name for p in tmp_path.iterdir()) == [
        "data", "tune_cg_sense.json"]  # written whole: no temporary file beside it
    run = json.loads(path.read_text())
    assert set(run) == {"best", "grid"} and _finite(run)
    assert [r["params"] for r in run["grid"]] == points
    for r in run["grid"]:
        assert set(r) == {"params", "psnr4", "psnr8", "ssim4", "ssim8", "PSNR", "SSIM", "seconds"}
        assert r["PSNR"] == r["psnr4"] + r["psnr8"] and r["SSIM"] == r["ssim4"] + r["ssim8"]
        assert 10 < r["psnr8"] < r["psnr4"] < 60 and 0 < r["ssim8"] < r["ssim4"] <= 1
        assert r["seconds"] > 0
    assert run["best"] == best_of(run["grid"])
    best = run["best"]
    assert (f"cg_sense: best {best['params']} ({best['psnr4']:.2f} / {best['psnr8']:.2f} dB), "
            "on the grid's edge in iterations") in out  # two points: the winner is on an edge


def test_tune_bench_mri_refuses_an_unknown_method_before_simulating(scripts, tmp_path, capsys):
    """A mistyped ``--methods`` exits 2 naming the grids, with nothing written (it was a
    ``KeyError`` after the two volumes had been simulated)."""
    tune = scripts("tune_bench_mri")
    with pytest.raises(SystemExit) as exit_info:
        tune.main(["--work", str(tmp_path / "w"), "--methods", "cg_sense,tvv"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--methods tvv: no grid; valid: cg_sense" in err, err
    assert not (tmp_path / "w").exists()


# --- heldout.py -------------------------------------------------------------------------------


def _check_summary(row: dict, volumes: int) -> None:
    """A protocol row: mean and 2 sample stds of its per-volume scores (rounded there)."""
    assert row["volumes"] == volumes == len(row["per_volume"]) and _finite(row)
    for key, digits in (("PSNR", 3), ("SSIM", 4)):
        v = np.array([r[key] for r in row["per_volume"].values()])
        slack = v.size * 0.5 * 10.0**-digits
        assert abs(row[key] - v.mean()) <= slack
        assert abs(row[key + "_2std"] - 2 * v.std(ddof=1)) <= 4 * slack


def test_heldout_eval_reproduces_the_rows_of_record_and_merges(scripts, tmp_path, capsys):
    """``eval --parts mri,ct --methods zero_filled,fbp`` writes the held-out data and the two
    methods' rows; their per-volume scores are those of ``benchmarks/heldout_results`` (same
    seeds, same code path), a row already in the JSON (``sirt``) is kept and tabled."""
    heldout = scripts("heldout")
    from mrirecon.heldout import protocol as P
    from mrirecon.io.heldout_sources import HELDOUT_CT, HELDOUT_MR

    record_ct = json.loads((RESULTS / "heldout_ct.json").read_text())
    record_mri = json.loads((RESULTS / "heldout_mri.json").read_text())
    (tmp_path / "heldout_ct.json").write_text(json.dumps({"30": {"sirt": record_ct["30"]["sirt"]}}))
    heldout.main(["eval", "--work", str(tmp_path), "--parts", "mri,ct", "--methods",
                  "zero_filled,fbp"])
    capsys.readouterr()
    names = ["heldout_ct.json", "heldout_ct.md", "heldout_mri", "heldout_mri.json", "heldout_mri.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    assert sorted(p.name for p in scripts.writes) == [n for n in names if "." in n]
    mri, ct = (json.loads((tmp_path / f"heldout_{m}.json").read_text()) for m in ("mri", "ct"))
    assert set(mri) == {"4.0", "8.0"} and set(ct) == {"30", "60"}
    assert set(ct["30"]) == {"sirt", "fbp"} and ct["30"]["sirt"] == record_ct["30"]["sirt"]
    for key, res in [*mri.items(), *ct.items()]:
        method = "zero_filled" if key in mri else "fbp"
        row, record = res[method], (record_mri if key in mri else record_ct)[key][method]
        _check_summary(row, len(HELDOUT_MR if key in mri else HELDOUT_CT))
        assert row["params"] == (P.CT_PARAMS[int(key)]["fbp"] if key in ct else {})
        for vol, scores in row["per_volume"].items():
            assert abs(scores["PSNR"] - record["per_volume"][vol]["PSNR"]) < 0.01, (key, vol)
            assert abs(scores["SSIM"] - record["per_volume"][vol]["SSIM"]) < 1e-3, (key, vol)
    table = (tmp_path / "heldout_ct.md").read_text()
    assert "| sirt | 30 | 2 |" in table and "| fbp | 60 | 2 |" in table
    assert f"| zero_filled | 8 | {len(HELDOUT_MR)} |" in (tmp_path / "heldout_mri.md").read_text()


def test_heldout_tune_merges_one_methods_grid_and_eval_names_the_new_winners(
        scripts, tmp_path, monkeypatch, capsys):
    """``tune --parts mri --methods cg_sense`` on a small validation split (the split's recipe at
    128 x 128, one volume) with cg_sense's first two grid points: the winners go into
    ``tuned.json`` beside the earlier ones, flagged on the grid's edge, and eval's check names
    them as differing from the protocol."""
    heldout = scripts("heldout")
    from mrirecon.heldout import protocol as P
    from mrirecon.heldout import tune as T
    from mrirecon.heldout.validation import VAL_SEED

    points = T.MRI_GRID["cg_sense"][:2]
    monkeypatch.setitem(T.MRI_GRID, "cg_sense", points)
    _simulate(tmp_path / "val_mri", slices=1, coils=8, size=(128, 128), seed=VAL_SEED,
              snr_db=30.0, readout_oversampling=2)
    earlier = {"mri": {"4.0": {"tv": {"best": P.MRI_PARAMS[4.0]["tv"], "grid": [], "at_edge": []}}},
               "ct": {"30": {}}}
    (tmp_path / "tuned.json").write_text(json.dumps(earlier))
    with pytest.warns(UserWarning, match="cg_sense: best iterations at the edge of the grid"):
        heldout.main(["tune", "--work", str(tmp_path), "--parts", "mri", "--methods", "cg_sense"])
    assert scripts.writes == [tmp_path / "tuned.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuned.json", "val_mri"]
    tuned = json.loads((tmp_path / "tuned.json").read_text())
    assert tuned["ct"] == {"30": {}} and set(tuned["mri"]) == {"4.0", "8.0"} and _finite(tuned)
    assert tuned["mri"]["4.0"]["tv"] == earlier["mri"]["4.0"]["tv"]
    for acc in ("4.0", "8.0"):
        res = tuned["mri"][acc]["cg_sense"]
        assert [r["params"] for r in res["grid"]] == points and res["at_edge"] == ["iterations"]
        assert res["best"] == T.best_of(res["grid"])["params"]
        assert all(10 < r["PSNR"] < 60 and 0 < r["SSIM"] <= 1 for r in res["grid"])
    capsys.readouterr()
    heldout._warn_tuned_differs(tmp_path, "mri", P.MRI_PARAMS)
    note = capsys.readouterr().out
    assert f"cg_sense at 4.0: {tuned['mri']['4.0']['cg_sense']['best']}" in note, note
    assert "tv at" not in note  # the protocol runs that winner


# --- adapt_heldout.py -------------------------------------------------------------------------


def test_adapt_heldout_indist_writes_both_rows_and_their_gain(scripts, tmp_path):
    """``indist`` on its card's recipe (seed 13, 128 x 128) cut to one volume of two slices, two
    adaptation steps; ``--setting`` with a bracketed value (``acs_block=[4,4]``)."""
    adapt = scripts("adapt_heldout")
    _simulate(tmp_path / "indist_mri", slices=2, coils=(4, 4), size=(128, 128), seed=13)
    setting = "steps=2,val_every=1,time_budget_s=none,acs_block=[4,4]"
    adapt.main(["indist", "--work", str(tmp_path), "--volumes", "1", "--threads", "1",
                "--setting", setting])
    path = tmp_path / "adapt_indist.json"
    assert scripts.writes == [path]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapt_indist.json", "indist_mri"]
    run = json.loads(path.read_text())
    assert set(run) == {"without", setting} and _finite(run)
    (vol, base), = run["without"].items()
    row = run[setting]["volumes"][vol]
    assert 15 < base["PSNR"] < 50 and 0 < base["SSIM"] <= 1 and 15 < row["PSNR"] < 50
    assert row["gain_dB"] == row["PSNR"] - base["PSNR"] and row["slices"] == 2
    assert row["steps"] == 2 and row["stopped"] == "steps" and row["val_steps"] == [0, 1, 2]
    assert len(row["train_losses"]) == 2 and len(row["val_losses"]) == 3
    assert row["best_step"] == int(np.argmin(row["val_losses"]))
    assert run[setting]["mean_gain_dB"] == row["gain_dB"] and run[setting]["mean_seconds"] == row["seconds"]


@pytest.mark.parametrize("weights, cropped", [("modl_brain_sim", False),
                                               ("modl_fastmri_diverse", True)])
def test_adapt_heldout_prepares_the_data_as_the_protocol_row_of_its_weights(
        scripts, tmp_path, monkeypatch, weights, cropped):
    """``heldout`` cropped the readout oversampling as ``mri_learned_adapt`` does, which adapts
    modl_fastmri_diverse: with the default modl_brain_sim (its protocol row uncropped) the
    "without" rows were no longer the record's (31.45 against 31.37 dB on the mean)."""
    import mrirecon.heldout.tune as tune
    from mrirecon.heldout import protocol

    adapt = scripts("adapt_heldout")
    (tmp_path / "heldout_mri").mkdir()
    (tmp_path / "heldout_mri" / "x.h5").touch()  # the data folder is reused: nothing written
    seen = []
    monkeypatch.setattr(tune, "prepared_mri_slices",
                        lambda data, acc, **kw: seen.append(kw["remove_oversampling"]) or [])
    assert adapt._prepared("heldout", tmp_path, None, weights) == []
    assert seen == [cropped] == [protocol.readout_cropped(weights)]


def test_adapt_heldout_settings_are_read_as_set_reads_them(scripts, tmp_path, capsys):
    """``--setting`` values are typed by the config reader (``acs_block=[8,8]`` split at its comma
    and failed to unpack; an unknown field raised ``AttributeError`` after the model had loaded);
    a wrong one exits 2 naming it, before the work folder is made."""
    adapt = scripts("adapt_heldout")
    from mrirecon.training.adapt import AdaptConfig

    assert adapt._setting("acs_block=[8,8],rows=none,lr=3e-4,selection=uniform") == AdaptConfig(
        acs_block=(8, 8), rows=None, lr=3e-4, selection="uniform")
    assert adapt._setting("rows=64,steps=200,time_budget_s=60") == AdaptConfig(
        rows=64, steps=200, time_budget_s=60.0)  # a setting of record
    for bad, says in (("stepz=2", "stepz: unknown key (did you mean 'steps'?)"),
                      ("steps=1.5", "steps: expected an integer, got 1.5")):
        with pytest.raises(SystemExit) as exit_info:
            adapt.main(["indist", "--work", str(tmp_path / "w"), "--setting", bad])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and says in err, err
    with pytest.raises(SystemExit):
        adapt.main(["ct", "--work", str(tmp_path / "w"), "--setting", "steps=1", "--setting", "lr=1"])
    assert "ct: one --setting" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_adapt_heldout_ct_unadapted_rows_are_the_protocols(scripts, tmp_path):
    """``ct`` at 30 views with one adaptation step (``setting``, which the ``ct`` part ignored):
    the rows without adaptation are the protocol's ``primal_dual_lodopab`` rows of record."""
    adapt = scripts("adapt_heldout")
    from mrirecon.io.heldout_sources import HELDOUT_CT

    run = adapt.run_ct(tmp_path, views=(30,), setting="steps=1,val_every=1")
    path = tmp_path / "adapt_heldout_ct_primal_dual_lodopab.json"
    assert scripts.writes == [path] and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert json.loads(path.read_text()) == json.loads(json.dumps(run)) and _finite(run)
    assert run["weights"] == "primal_dual_lodopab" and run["setting"] == "steps=1,val_every=1"
    assert run["adapt"]["steps"] == 1 and set(run) == {"weights", "adapt", "threads", "setting", "30"}
    record = json.loads((RESULTS / "heldout_ct.json").read_text())["30"]["primal_dual_lodopab"]
    rows = run["30"]["slices"]
    assert len(rows) == len(HELDOUT_CT) and set(rows) == set(record["per_volume"])
    for name, r in rows.items():
        assert r["steps"] == 1 and r["val_steps"] == [0, 1] and r["best_step"] in (0, 1)
        assert abs(r["without"]["PSNR"] - record["per_volume"][name]["PSNR"]) < 0.01, name
        assert abs(r["without"]["SSIM"] - record["per_volume"][name]["SSIM"]) < 1e-3, name
        if r["best_step"] == 0:  # the initial model kept: the same image
            assert r["with"] == r["without"]
    gains = [r["with"]["PSNR"] - r["without"]["PSNR"] for r in rows.values()]
    assert run["30"]["mean_gain_dB"] == pytest.approx(float(np.mean(gains)), abs=1e-12)


# --- bench_pnp.py -----------------------------------------------------------------------------


def test_bench_pnp_runs_both_revisions_and_times_the_parts(scripts, capsys, monkeypatch):
    """``--size 128 128 --iterations 2`` against ``HEAD``: each child times what the docstring
    says (timers that fired: denoiser, gram, CG), the printed ratio is new / old of the medians,
    and the two revisions agree within the float32 bound."""
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("bench_pnp needs a git checkout (git archive of the baseline)")
    bench_pnp = scripts("bench_pnp")
    runs, run = [], bench_pnp._run
    monkeypatch.setattr(bench_pnp, "_run", lambda *a, **k: runs.append(run(*a, **k)) or runs[-1])
    bench_pnp.main(["--size", "128", "128", "--iterations", "2", "--threads", "1", "--repeats", "1",
                    "--rounds", "1", "--baseline", "HEAD"])
    out = capsys.readouterr().out
    assert "2 ADMM iterations, 1 slice 8 x 128 x 128 (readout cropped), old = HEAD" in out, out
    assert len(runs) == 2  # old, then new
    for r in runs:
        parts = r["parts_s"]
        assert len(r["times_s"]) == 1 and r["times_s"][0] > 0
        assert parts["denoiser"] > 0 and parts["gram"] > 0 and parts["cg_vector_ops"] + parts["gram"] > 0
        assert parts["total"] >= parts["denoiser"] + parts["gram"]
    old, new = (statistics.median(r["times_s"]) for r in runs)
    assert f"per slice old {old:.2f} s, new {new:.2f} s, ratio new/old {new / old:.3f}" in out, out
    diff = float(out.split("relative L2 difference new vs old: ")[1].split()[0])
    assert diff <= bench_pnp.tolerance(2) and "within)" in out
    assert bench_pnp.TOLERANCE == bench_pnp.tolerance(40) == pytest.approx(8.4e-4, rel=0.01)
