"""The fastMRI submission files are named as ``fastmri.evaluate`` looks them up: by the target
file's own name, suffix included."""

from __future__ import annotations

import argparse
import shutil

import pytest

from mrirecon.cli import main


def test_hdf5_inputs_keep_their_file_name_so_fastmri_evaluate_finds_them(tmp_path):
    """Fails if an input named ``vol_a.hdf5`` or ``UPPER.H5`` gets ``reconstructions/vol_a.h5``
    / ``UPPER.h5``: ``fastmri.evaluate`` opens ``predictions / target.name`` and failed with
    FileNotFoundError (mrirecon's own metrics.csv scored the file all the same)."""
    evaluate = pytest.importorskip("fastmri.evaluate")
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    made = tmp_path / "made"
    simulate_mri_dataset(made, volumes=2, slices=1, coils=4, size=(48, 32), seed=5, resolution=2)
    data = tmp_path / "data"
    data.mkdir()
    first, second = sorted(made.glob("*.h5"))
    shutil.copy(first, data / "vol_a.hdf5")
    shutil.copy(second, data / "UPPER.H5")
    out = tmp_path / "out"
    assert main(["run", "mri_retrospective", "--input", str(data), "--output", str(out),
                 "--no-progress", "--set", "reconstruct.method=zero_filled_rss",
                 "--set", "export.formats=[hdf5]"]) == 0
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["UPPER.H5", "vol_a.hdf5"]
    args = argparse.Namespace(target_path=data, predictions_path=out / "reconstructions",
                              acquisition=None, acceleration=None)
    metrics = evaluate.evaluate(args, "reconstruction_rss")
    assert metrics.means()["PSNR"] > 10
