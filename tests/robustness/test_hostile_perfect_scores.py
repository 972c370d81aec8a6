"""A reconstruction identical to its reference (PSNR = inf, e.g. a reference made by the same
method): the run files stay valid JSON, and no numpy warning leaks from the summary."""

from __future__ import annotations

import csv
import json
import shutil
import warnings

import h5py

from mrirecon.pipeline.run_files import finite_json
from mrirecon.pipeline.runner import run_pipeline
from tests.robustness.test_hostile_outputs import mri_config


def _strict_json(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_perfect_volume_keeps_provenance_valid_json_and_warns_nothing(mri_file, tmp_path):
    """provenance.json held `"psnr": Infinity` (JSON.parse threw, jq read 1.8e308), and the
    summary's spread over inf raised numpy's "invalid value encountered in subtract": under
    PYTHONWARNINGS=error the run ended "internal error" after every input was written, with
    no report, no metrics.csv and provenance left "running"."""
    config = mri_config("report.enabled=true")
    first = tmp_path / "first"
    assert run_pipeline(config, [str(mri_file)], first, progress=False) == 0
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mri_file, data / "a.h5")
    perfect = data / "same.h5"
    shutil.copy(mri_file, perfect)
    with h5py.File(first / "reconstructions" / mri_file.name, "r") as f:
        image = f["reconstruction"][()]
    with h5py.File(perfect, "r+") as f:
        f["reconstruction_rss"][...] = image
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert run_pipeline(config, [str(data)], out, progress=False) == 0
    prov = _strict_json((out / "provenance.json").read_text())
    metrics = {f["name"]: f["metrics"] for f in prov["files"]}
    assert metrics["same"]["psnr"] == "inf" and isinstance(metrics["a"]["psnr"], float)
    assert float(metrics["same"]["psnr"]) == float("inf")
    rows = {r["file"]: r for r in csv.DictReader((out / "metrics.csv").open())}
    assert rows["same.h5"]["psnr"] == "inf"
    assert (out / "report.html").is_file() and prov["status"] == "complete"


def test_finite_json_names_each_non_finite_number():
    value = {"a": [1.0, float("inf"), -float("inf")], "b": (float("nan"),), "c": 2, "d": "x"}
    assert finite_json(value) == {"a": [1.0, "inf", "-inf"], "b": ["nan"], "c": 2, "d": "x"}
    json.dumps(finite_json(value), allow_nan=False)
