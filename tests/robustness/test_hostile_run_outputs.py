"""What a run's files say about it: unscored CT inputs, the rerun log, unique ``metrics.csv``
names, provenance paths that survive a moved folder, the interrupted-run warning, the metric
scale and units, ``--help`` defaults, the report's summary and outputs, ``--prune`` leftovers,
the bench's progress bar."""

from __future__ import annotations

import argparse
import csv
import html
import json
import logging
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon import cli
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.run_files import RunFiles, csv_name, csv_safe
from mrirecon.pipeline.runner import run_pipeline

FAST_MRI = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[hdf5]", "report.enabled=false"]


def mri_config(*extra):
    return load_pipeline("mri_cs", FAST_MRI + list(extra))[0]


def ct_config(*extra):
    return load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false", *extra])[0]


def _prov(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def _csv_rows(out: Path) -> list[list[str]]:
    with (out / "metrics.csv").open(newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def test_a_ct_input_without_ground_truth_among_scored_ones_is_warned(ct_dir, tmp_path, caplog):
    """observation_val_000.hdf5 without its ground_truth_val_000.hdf5 (another folder, another
    part) dropped out of metrics.csv and the summary mean: the report said "ok" with "–", the
    mean was over 1 of 2 inputs, nothing in the log, provenance or report (MRI warned)."""
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(ct_dir, a)
    b.mkdir()
    shutil.copy(ct_dir / "observation_test_000.hdf5", b / "observation_val_000.hdf5")
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        code = run_pipeline(ct_config("report.enabled=true"),
                            [str(a / "observation_test_000.hdf5"), str(b / "observation_val_000.hdf5")],
                            out, progress=False)
    assert code == 0
    said = ("observation_val_000.hdf5: no metrics: its ground truth ground_truth_val_000.hdf5 is "
            "not beside it, while 1 other input(s) of this run have theirs; it is missing from "
            "metrics.csv and from the mean over the inputs")
    assert said in caplog.messages
    entry = {Path(f["input"]).name: f for f in _prov(out)["files"]}["observation_val_000.hdf5"]
    assert entry["status"] == "ok" and entry["metrics"] == {} and said in entry["warnings"]
    assert html.escape(said) in (out / "report.html").read_text()
    assert [r[0] for r in _csv_rows(out)[1:]] == ["a/observation_test_000.hdf5"]
    # no input scored: one INFO line, as MRI's fastMRI test sets get
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(ct_config(), [str(b)], tmp_path / "none", progress=False) == 0
    assert any(m.startswith("evaluate: none of the 1 input(s) has a ground truth") for m in
               caplog.messages), caplog.messages
    assert not (tmp_path / "none" / "metrics.csv").exists()


def test_a_rerun_says_truly_why_it_removes_metrics_csv(mri_file, tmp_path, caplog):
    """Every rerun logged "removed metrics.csv: it described an earlier run, and this run writes
    none", then wrote one at its end."""
    out = tmp_path / "out"
    config = mri_config("undersample.enabled=true")
    assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
    removed = [m for m in caplog.messages if m.startswith("removed metrics.csv")]
    assert removed == ["removed metrics.csv: it described an earlier run, whose outputs this run "
                       "replaces; this run writes its own when it ends (if it scores an input)"]
    assert (out / "metrics.csv").is_file()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(mri_config("evaluate.enabled=false"), [str(mri_file)], out,
                            progress=False) == 0
    assert ("removed metrics.csv: it described an earlier run, and this run writes none "
            "(evaluate.enabled is false)") in caplog.messages
    assert not (out / "metrics.csv").exists()


@pytest.mark.parametrize("name", [
    "-minus.h5", "'-minus.h5", "''x.h5", "new\nline.h5", "new?line.h5", "tab\there.h5",
    "back\\slash.h5", "back\\x0aslash.h5", "=HYPERLINK(1),x.h5", "@x.h5", "+x.h5", "M\udcfcller.h5",
    "plain.h5", "a/same.h5", "\x7fdel.h5"])
def test_csv_names_are_reversible_and_formula_safe(name):
    cell = csv_safe(name)
    assert csv_name(cell) == name
    assert cell[:1] not in ("=", "+", "-", "@", "\t", "\r")
    assert all(c >= " " and c != "\x7f" for c in cell) and cell.encode("utf-8")


def test_metrics_csv_names_one_row_per_input(mri_file, tmp_path):
    """`-minus.h5` and `'-minus.h5` were both `'-minus.h5`; `new\\nline.h5` and `new?line.h5`
    both `new?line.h5`: two rows under one name, which a script joining on the name mixed."""
    folder = tmp_path / "in"
    folder.mkdir()
    names = ["-minus.h5", "'-minus.h5", "new\nline.h5", "new?line.h5"]
    for n in names:
        shutil.copy(mri_file, folder / n)
    out = tmp_path / "out"
    assert run_pipeline(mri_config("undersample.enabled=true"), [str(folder)], out,
                        progress=False) == 0
    rows = _csv_rows(out)
    assert rows[0] == ["file", "nmse", "psnr", "ssim"]
    cells = [r[0] for r in rows[1:]]
    assert len(set(cells)) == len(cells) == 4
    assert sorted(csv_name(c) for c in cells) == sorted(names)
    assert "''-minus.h5" in cells and "'-minus.h5" in cells and "new\\x0aline.h5" in cells


def test_control_characters_of_a_name_reach_no_log_line_or_page_raw(mri_file, tmp_path):
    """A name holding ESC sequences recoloured the terminal through the log, and one holding
    "\\nINFO fake.h5" forged a log line; report.html held the raw bytes too."""
    from mrirecon.cli import SafeLogFormatter

    record = logging.LogRecord("mrirecon.pipeline", logging.WARNING, __file__, 1,
                               "%s: fully sampled", ("\x1b[31mRED\x1b[0m\nINFO fake.h5",), None)
    line = SafeLogFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert "\x1b" not in line and "\\x1b[31mRED\\x1b[0m" in line
    assert all(not row.startswith("INFO") for row in line.splitlines()[1:])  # indented
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "\x1b[31mRED.h5")
    out = tmp_path / "out"
    config = mri_config("undersample.enabled=true", "report.enabled=true")
    assert run_pipeline(config, [str(folder)], out, progress=False) == 0
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and "\\x1b[31mRED.h5" in page


def test_provenance_paths_survive_a_moved_output_folder(ct_dir, tmp_path, monkeypatch):
    """provenance.json held outputs and figures relative to the working directory, which it did
    not record: after `mv out moved` none of them pointed at a file."""
    shutil.copytree(ct_dir, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config = ct_config("export.formats=[hdf5,nifti,png]", "report.enabled=true")
    assert run_pipeline(config, ["data/observation_test_000.hdf5"], "out", progress=False) == 0
    shutil.move("out", "moved")
    prov = _prov(tmp_path / "moved")
    (entry,) = prov["files"]
    assert entry["outputs"] and entry["figures"]
    for rel in [*entry["outputs"].values(), *entry["figures"]]:
        assert not Path(rel).is_absolute() and (tmp_path / "moved" / rel).exists(), rel
    src = str(tmp_path / "data" / "observation_test_000.hdf5")
    assert entry["input"] == src and list(prov["inputs"]) == [src]
    assert list(prov["references"]) == [str(tmp_path / "data" / "ground_truth_test_000.hdf5")]
    assert prov["working_directory"] == str(tmp_path)
    assert prov["output_folder"] == str(tmp_path / "out") and "relative" in prov["paths"]
    # the status record and the report already held paths relative to the output folder
    assert "src='figures/observation_test_000/" in (tmp_path / "moved" / "report.html").read_text()
    monkeypatch.chdir(tmp_path / "data")  # a --resume from elsewhere skips it, paths as before
    assert run_pipeline(config, ["observation_test_000.hdf5"], tmp_path / "moved",
                        progress=False, resume=True) == 0
    (again,) = _prov(tmp_path / "moved")["files"]
    assert again["status"] == "skipped" and again["input"] == src
    assert again["outputs"] == entry["outputs"] and again["figures"] == entry["figures"]


@pytest.mark.parametrize("report", [False, True])
def test_an_interrupted_run_names_only_the_run_files_it_wrote(mri_file, tmp_path, caplog, report):
    """The warning said "provenance.json, report.html, metrics.csv list the 1 input(s) it
    finished" with report.enabled=false and nothing scored: two of the three were not written."""
    config = mri_config(f"report.enabled={str(report).lower()}")
    out = tmp_path / "out"
    out.mkdir()
    run = RunFiles(config, out, [mri_file], time.time(), 0, 1, "", "cpu", [])
    run.invalidate()
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        run.stopped(KeyboardInterrupt())
    files = "provenance.json, report.html list" if report else "provenance.json lists"
    assert (f"the run was interrupted (SIGINT (Ctrl-C)): {files} the 0 input(s) it finished"
            in caplog.messages)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["provenance.json"] + ["report.html"] * report)


def test_ct_outputs_state_units_and_the_metrics_scale(ct_dir, mri_file, tmp_path):
    """CT metrics are computed on mu / MU_MAX (LoDoPaB's scale), while reconstructions/*.h5 is in
    HU: neither the HDF5 nor the report said which. The provenance of a CT run listed MRI's
    undersampling defaults (accelerations, center_fractions, mask) and sections it never reads."""
    out = tmp_path / "ct"
    assert run_pipeline(ct_config("report.enabled=true"), [str(ct_dir / "observation_test_000.hdf5")],
                        out, progress=False) == 0
    with h5py.File(out / "reconstructions" / "observation_test_000.h5") as f:
        assert list(f) == ["reconstruction"] and f["reconstruction"].attrs["units"] == "HU"
        assert float(f["reconstruction"][()].min()) < -500  # air, in HU
    report = (out / "report.html").read_text()
    assert "on the attenuation divided by MU_MAX = 0.0813586 / mm" in report
    assert "the images (reconstructions/*.h5, NIfTI, DICOM, figures) are in HU" in report
    assert "PSNR (in dB)" in report
    config = _prov(out)["config"]
    assert "preprocess" not in config and "calibrate" not in config and "postprocess" not in config
    assert not {"accelerations", "center_fractions", "mask"} & set(config["undersample"])
    assert "params_by_acceleration" not in config["reconstruct"] and "views" in config["undersample"]
    mri = tmp_path / "mri"
    assert run_pipeline(mri_config("report.enabled=true", "undersample.enabled=true"),
                        [str(mri_file)], mri, progress=False) == 0
    with h5py.File(mri / "reconstructions" / f"{mri_file.stem}.h5") as f:
        assert list(f) == ["reconstruction"] and f["reconstruction"].attrs["units"] == "a.u."
    assert "fastMRI&#x27;s NMSE, PSNR (in dB) and SSIM" in (mri / "report.html").read_text()
    config = _prov(mri)["config"]
    assert "views" not in config["undersample"] and "photons" not in config["undersample"]
    assert config["undersample"]["accelerations"] == [4]


def test_report_counts_its_volumes_and_lists_outputs_without_figures(mri_file, tmp_path):
    """A summary of one volume read "27.93 ± 0.00" "over volumes"; an input without PNG figures
    had no Outputs paragraph; a long file name pushed the metric columns off the page."""
    folder = tmp_path / "in"
    folder.mkdir()
    long = "x" * 150 + ".h5"
    shutil.copy(mri_file, folder / long)
    out = tmp_path / "out"
    assert run_pipeline(mri_config("report.enabled=true", "undersample.enabled=true"),
                        [str(folder)], out, progress=False) == 0
    report = (out / "report.html").read_text()
    assert "Summary (mean ± 2 std over 1 volume)" in report and "(n = 1)" in report
    assert "± 0.00" not in report
    assert f"Outputs — hdf5: <code>reconstructions/{'x' * 150}.h5</code>" in report
    assert "td.l{overflow-wrap:anywhere;white-space:normal}td.name{min-width:18ch}" in report
    shutil.copy(mri_file, folder / "b.h5")
    assert run_pipeline(mri_config("report.enabled=true", "undersample.enabled=true"),
                        [str(folder)], out, progress=False) == 0
    assert "Summary (mean ± 2 std over 2 volumes)" in (out / "report.html").read_text()


def test_prune_and_a_rerun_without_png_leave_no_empty_figures_folder(mri_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in ("a.h5", "b.h5"):
        shutil.copy(mri_file, folder / n)
    out = tmp_path / "out"
    png = mri_config("export.formats=[hdf5,png]")
    assert run_pipeline(png, [str(folder)], out, progress=False) == 0
    assert (out / "figures" / "b").is_dir() and (out / "figures" / "a").is_dir()
    (folder / "b.h5").unlink()
    assert run_pipeline(png, [str(folder)], out, progress=False, replace_others=True) == 0
    assert not (out / "figures" / "b").exists() and (out / "figures" / "a").is_dir()
    assert run_pipeline(mri_config(), [str(folder)], out, progress=False) == 0
    assert not (out / "figures" / "a").exists()


def test_bench_progress_bar_ends_at_its_total_when_a_volume_is_skipped(tmp_path, monkeypatch):
    import tqdm.auto

    from mrirecon.bench.core import BenchPlan, open_store, run_plan

    ends = []

    class Bar(tqdm.auto.tqdm):
        def close(self):
            ends.append((self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    files = []
    for n in ("a.h5", "b.h5", "c.h5"):
        (tmp_path / n).write_bytes(b"x")
        files.append(tmp_path / n)

    def score(path, acc, methods, bar):
        bar.update(len(methods))  # one slice of three
        if path.name == "b.h5":
            raise ValueError("b.h5: no target")
        bar.update(2 * len(methods))
        return {m.name: {"nmse": 0.1, "psnr": 30.0, "ssim": 0.9, "prediction": None} for m in methods}

    method = argparse.Namespace(name="zero_filled")
    plan = BenchPlan("multicoil", {"zero_filled": method}, [4.0], files,
                     {("zero_filled", 4.0): "f"}, {p: 3 for p in files})
    skipped = run_plan(plan, score, open_store(None, False), persist=False, progress=True)
    assert [s.volume for s in skipped] == ["b.h5"]
    assert ends == [(9, 9)]


def _parsers(parser: argparse.ArgumentParser, words=()):
    """``(words, parser)`` of every (sub)command of ``parser``."""
    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*words, name))


def test_help_shows_true_defaults_only(capsys):
    """`(default: None)` stood beside "(default 30)" and after required options; bench's
    --accelerations and --device had no help (defaults 4 8 and cpu unsaid), --center-fractions
    left out 0.32 / R; most train options had no help."""
    parser = cli.build_parser()
    checked = []
    for words, sub in _parsers(parser):
        if not words or words[0] not in ("simulate", "bench", "train") or len(words) == 1 and \
                words[0] != "bench":
            continue
        text = sub.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, words
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, (words, action.option_strings)
                shown = sub._get_formatter()._get_help_string(action)
                assert shown.count("default") <= 2, (words, action.option_strings, shown)
        checked.append(words)
    assert ("bench",) in checked and ("simulate", "mri") in checked and ("train", "modl") in checked
    bench = dict(_parsers(parser))[("bench",)].format_help()
    assert "(default: 4 8)" in " ".join(bench.split()) and "(default: cpu)" in " ".join(bench.split())
    assert "0.32 / R" in " ".join(bench.split())
    mri = " ".join(dict(_parsers(parser))[("simulate", "mri")].format_help().split())
    assert "variance) (default 30) --noise-free" in mri and "output folder (created); --output / -o as in run, bench and demo --volumes" in mri
    staged = " ".join(dict(_parsers(parser))[("train", "staged_ct")].format_help().split())
    assert "(default: --no-prefetch)" in staged and "(default: 4300.0)" in staged


def test_bench_volumes_csv_names_are_formula_safe(mri_file, tmp_path):
    """Review of a13: `bench_volumes.csv` wrote a file named like a formula raw (metrics.csv
    was fixed); its names and messages now go through the same `csv_safe`, reversibly."""
    import csv
    import io
    import shutil

    from mrirecon.bench import run_bench
    from mrirecon.pipeline.run_files import csv_name

    data = tmp_path / "data"
    data.mkdir()
    name = "=HYPERLINK(1).h5"
    shutil.copy(mri_file, data / name)
    table = run_bench(data, accelerations=(4,), methods="zero_filled_rss", progress=False,
                      verbose=False)
    (row,) = csv.DictReader(io.StringIO(table.volumes_csv()))
    assert row["volume"] == "'" + name and csv_name(row["volume"]) == name


def test_an_unscored_input_beside_a_resumed_scored_one_is_warned():
    """``warn_unscored`` judges the run's results "those resumed included" (its docstring): a new
    input without a reference among resumed, scored ones is missing from metrics.csv's mean and
    must be warned; a resumed unscored input likewise."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.report import VolumeResult
    from mrirecon.pipeline.volume import warn_unscored

    config = load_pipeline("mri_tv")[0]
    assert config.evaluate.enabled
    resumed = VolumeResult(input="/d/a.h5", name="a", status="skipped", metrics={"psnr": 30.0})
    new = VolumeResult(input="/d/b.h5", name="b", status="ok")
    warn_unscored(config, [resumed, new])
    assert any("b.h5: no metrics:" in w and "1 other input(s)" in w for w in new.warnings), \
        new.warnings
    resumed_unscored = VolumeResult(input="/d/c.h5", name="c", status="skipped")
    scored = VolumeResult(input="/d/d.h5", name="d", status="ok", metrics={"psnr": 30.0})
    warn_unscored(config, [resumed_unscored, scored])
    assert any("c.h5: no metrics:" in w for w in resumed_unscored.warnings)


def test_a_ct_reconstruction_file_states_its_layout_against_lodopabs(ct_dir, tmp_path):
    """Fails if reconstructions/*.h5 of a LoDoPaB input carries no ``layout`` attribute, or one
    whose rotation does not put the image in the ground truth's stored (ODL x, y) layout: scored
    as stored, the rotated images correlated 0.36-0.73 (0.96 aligned), without a word."""
    out = tmp_path / "ct"
    assert run_pipeline(ct_config(), [str(ct_dir / "observation_test_000.hdf5")], out,
                        progress=False) == 0
    with h5py.File(out / "reconstructions" / "observation_test_000.h5") as f:
        layout = f["reconstruction"].attrs["layout"]
        image = f["reconstruction"][()]
    with h5py.File(ct_dir / "ground_truth_test_000.hdf5") as f:
        truth = f["data"][()]
    assert "np.rot90(reconstruction, -1, axes=(1, 2))" in layout
    for k in range(len(truth)):
        corr = [np.corrcoef(np.rot90(image[k], turn).ravel(), truth[k].ravel())[0, 1]
                for turn in range(4)]
        assert corr[3] == max(corr) and corr[3] > 0.8  # rot90(.., -1): three quarter turns


def test_metrics_csv_columns_hold_their_own_metric(mri_file, tmp_path):
    """Each metrics.csv column is the metric its header names (the value provenance.json
    records, to the csv's 6 significant digits). Mutant: the values written in reverse
    header order (NMSE under ssim and SSIM under nmse; psnr, the middle one, unchanged)."""
    from tests.robustness.test_hostile_outputs import mri_config

    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    prov = json.loads((out / "provenance.json").read_text())
    want = {f["name"]: f["metrics"] for f in prov["files"]}
    rows = list(csv.DictReader((out / "metrics.csv").open(newline="")))
    assert len(rows) == 1 and set(rows[0]) == {"file", "nmse", "psnr", "ssim"}
    (name, metrics), = want.items()
    for m in ("nmse", "psnr", "ssim"):
        assert float(rows[0][m]) == pytest.approx(metrics[m], rel=1e-5), m
    assert 0 < float(rows[0]["ssim"]) <= 1 and float(rows[0]["nmse"]) < float(rows[0]["ssim"])

