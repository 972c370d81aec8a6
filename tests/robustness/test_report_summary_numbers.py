"""The numbers in ``report.html``'s summary: mean and twice the sample std of the inputs' metrics."""

from __future__ import annotations

import html
import json
import re
import shutil
import statistics

import numpy as np

from mrirecon.pipeline.report import _fmt
from mrirecon.pipeline.runner import run_pipeline
from tests.robustness.test_hostile_outputs import mri_config


def _inputs(mri_file, tmp_path, names=("a.h5", "b.h5")):
    folder = tmp_path / "in"
    folder.mkdir()
    for n in names:
        shutil.copy(mri_file, folder / n)
    return folder


def test_report_summary_is_mean_and_twice_the_sample_std_of_the_inputs_metrics(mri_file, tmp_path):
    """report.html's "mean ± 2 std over N volumes" is of the per-input metrics the status
    records hold (full precision), with the sample std (ddof = 1, as fastMRI and MetricsReport)."""
    from mrirecon.metrics.metrics import mean_spread
    from mrirecon.pipeline.report import _fmt

    folder = _inputs(mri_file, tmp_path)
    out = tmp_path / "out"
    # a mask drawn per file name: two inputs, two different scores (a spread to check)
    cfg = mri_config("report.enabled=true", "undersample.enabled=true", "undersample.seed=file")
    assert run_pipeline(cfg, [str(folder)], out, progress=False) == 0
    recs = [json.loads((out / ".status" / f"{n}.json").read_text())["metrics"] for n in ("a", "b")]
    report = html.unescape((out / "report.html").read_text())
    summary = re.search(r"<h2>Summary \(mean ± 2 std over 2 volumes\)</h2><table><tr>(.*?)</tr><tr>(.*?)</tr>",
                        report)
    assert summary, report[:2000]
    heads = re.findall(r"<th>(.*?)</th>", summary.group(1))
    cells = re.findall(r"<td>(.*?)</td>", summary.group(2))
    for head, cell in zip(heads, cells):
        vals = [r[head.lower()] for r in recs]
        assert statistics.stdev(vals) > 0  # else the check below cannot tell ddof apart
        assert cell == mean_spread(statistics.fmean(vals), statistics.stdev(vals), 2, _fmt), head


def test_report_numbers_keep_three_significant_digits_at_every_scale():
    """An NMSE of 0.00123 shown as 0.0012 has 2 digits: every magnitude from 1e-7 to 1e4, either
    sign, keeps at least 3 significant digits (relative rounding error at most half a unit of the
    3rd digit, 5e-3)."""
    for v in np.concatenate([np.logspace(-7, 4, 221), -np.logspace(-7, 4, 23)]):
        shown = float(_fmt(float(v)))
        assert abs(shown - v) <= 5e-3 * abs(v) * (1 + 1e-9), (v, shown)
