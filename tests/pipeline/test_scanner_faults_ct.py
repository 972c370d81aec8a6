"""Dropped CT projections (views reading zero in every bin) in a LoDoPaB-layout part, and the
input names of the warnings (the s18 scanner-data audit): a dropped view was taken as a measured
zero (``ct_tv`` 29.6 -> 27.8 dB for one of 30 views), blamed on a transposed or fan-beam
sinogram, and the warnings named ``observation_test_000.hdf5`` whatever its folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.pipeline.ct_consistency import DEAD_VIEW_SHARE, dead_views
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import simulated_ct_dir

OBS = "observation_test_000.hdf5"


@pytest.fixture(scope="module")
def part(tmp_path_factory) -> Path:
    return simulated_ct_dir(tmp_path_factory.mktemp("ct"), views=60, size=64, seed=0)


def _variant(part: Path, folder: Path, views: list[int]) -> Path:
    folder.mkdir(parents=True)
    for f in (OBS, "ground_truth_test_000.hdf5"):
        shutil.copy(part / f, folder / f)
    with h5py.File(folder / OBS, "r+") as f:
        for v in views:
            f["data"][:, v, :] = 0
    return folder / OBS


def _run(inputs: list[Path], out: Path, *extra: str) -> list[dict]:
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false", *extra])[0]
    run_pipeline(config, [str(p) for p in inputs], out, progress=False)
    return json.loads((out / "provenance.json").read_text())["files"]


def _image(out: Path, name: str) -> np.ndarray:
    with h5py.File(out / "reconstructions" / f"{name}.h5") as f:
        return f["reconstruction"][()]


def test_dropped_views_are_named_and_left_out(part, tmp_path):
    clean = _variant(part, tmp_path / "in" / "clean", [])
    dead = _variant(part, tmp_path / "in" / "dead", [12, 20])
    entries = {Path(e["input"]).parent.name: e for e in _run([clean, dead], tmp_path / "out")}
    assert not any("zero in every detector bin" in w for w in entries["clean"]["warnings"])
    (w,) = [w for w in entries["dead"]["warnings"] if "zero in every detector bin" in w]
    # named by its folder, as metrics.csv and the ERROR lines name it
    assert w.startswith(f"dead/{OBS}: all 2 slices: views 12, 20 (as stored in the file) read")
    assert "left out of the sinogram and the angles" in w and "other 58 views" in w
    assert not any("vary by" in x or "transposed" in x for x in entries["dead"]["warnings"])
    # the image is FBP of the 58 views measured: the library's, on the file without them
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.pipeline.stages_ct import CTStages

    config = load_pipeline("ct_fbp", [])[0]
    stages = CTStages(config)
    src = stages.load(dead)
    s = stages.undersample(stages.preprocess(src.read(0)))
    keep = [v for v in range(60) if v not in (12, 20)]
    g = LoDoPaBFiles(part, "test").geometry
    assert s.geometry.num_views == 58 and s.dropped == (12, 20)
    assert np.allclose(s.geometry.angles, [g.angles[v] for v in keep])
    full = LoDoPaBFiles(part, "test").sinogram(0).data[0]
    assert torch.equal(s.sinogram, full[keep])
    # the metrics of the file with two dropped views of 60 stay within 0.3 dB of the clean file's
    assert entries["dead"]["metrics"]["psnr"] > entries["clean"]["metrics"]["psnr"] - 0.3


def test_dropped_views_under_sparse_view_keep_the_same_pattern(part, tmp_path):
    """undersample.views keeps every k-th view of the file; a dropped view among them is left out
    afterwards (the pattern stays that of the clean file), one outside them says nothing."""
    clean = _variant(part, tmp_path / "in" / "clean", [])
    kept = _variant(part, tmp_path / "in" / "kept", [12])  # every 4th of 60 views: 0, 4, ... 12
    other = _variant(part, tmp_path / "in" / "other", [13])
    sv = ["undersample.enabled=true", "undersample.views=15"]
    entries = {Path(e["input"]).parent.name: e for e in _run([clean, kept, other], tmp_path / "o", *sv)}
    (w,) = [w for w in entries["kept"]["warnings"] if "zero in every detector bin" in w]
    assert "view 12 (as stored in the file) reads" in w and "other 14 views" in w
    assert not any("zero in every detector bin" in x for x in entries["other"]["warnings"])
    assert np.array_equal(_image(tmp_path / "o", "other/observation_test_000"),
                          _image(tmp_path / "o", "clean/observation_test_000"))


def test_dead_views_rule_on_a_clean_sinogram(part):
    """No view of a clean part (a phantom at 4096 photons) is anywhere near the bar."""
    from mrirecon.io.lodopab import LoDoPaBFiles

    files = LoDoPaBFiles(part, "test")
    for i in range(2):
        sino = files.sinogram(i).data[0]
        assert not bool(dead_views(sino).any())
        totals = sino.double().abs().sum(-1)
        assert float(totals.min()) > 4 * DEAD_VIEW_SHARE * float(totals.median())
    assert not bool(dead_views(torch.zeros(5, 7)).any())  # nothing to compare with
