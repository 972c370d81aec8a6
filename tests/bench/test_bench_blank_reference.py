"""``mrirecon bench`` scores a target with an all-zero slice as ``mrirecon run`` does (the slice
left out, with a note), and its tables print ``(n = 1)`` rather than a spread of 0 for a row of
one volume."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.bench import run_bench
from mrirecon.bench.table import build_table
from mrirecon.metrics import MetricsReport, evaluate_volumes, metrics_table


@pytest.fixture(scope="module")
def blank_slice_dir(tmp_path_factory) -> Path:
    """One fully sampled 3-slice file whose ``reconstruction_rss`` slice 1 is all zero."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("blank_ref")
    (path,) = simulate_mri_dataset(out, volumes=1, slices=3, coils=2, size=(32, 24), seed=5,
                                   resolution=2)
    with h5py.File(path, "r+") as f:
        ref = f["reconstruction_rss"][()]
        ref[1] = 0
        f["reconstruction_rss"][...] = ref
    return out


def test_bench_leaves_a_blank_target_slice_out_as_run_does(blank_slice_dir, tmp_path, caplog):
    """The benchmark scored a target whose slice 1 is all zero with the volume's figure (17.4 dB
    where ``mrirecon run`` gave 27.1 with a warning), no word in the log, the record or the table.
    It now scores the other slices (the rule of ``mrirecon run``), and the record, the table
    and the log say which slice was left out."""
    (path,) = sorted(blank_slice_dir.glob("*.h5"))
    with h5py.File(path) as f:
        target = f["reconstruction_rss"][()]
    preds = {}
    with caplog.at_level("WARNING", logger="mrirecon.bench"):
        table = run_bench(blank_slice_dir, "multicoil", (4,), ["zero_filled_rss"],
                          output_dir=tmp_path / "out", progress=False, verbose=False,
                          on_record=lambda rec, pred: preds.update({rec["method"]: pred}))
    (rec,) = table.records
    pred = preds["zero_filled_rss"]
    assert pred.shape == target.shape  # the whole reconstruction reaches on_record
    assert not np.any(target[1]) and np.any(pred[1])
    keep = [0, 2]
    expected = evaluate_volumes({"v": target[keep]}, {"v": pred[keep]}, crop=True)
    whole = evaluate_volumes({"v": target}, {"v": pred}, crop=True)
    for m in ("NMSE", "PSNR", "SSIM"):  # the same arrays, the same function: equal to rounding
        assert rec[m] == pytest.approx(float(expected.values[m][0]), rel=1e-9), m
    assert float(whole.values["PSNR"][0]) < rec["PSNR"] - 1  # what the bench reported before
    note = (f"{path.name}: reconstruction_rss slice 1 is all zero while the reconstruction is "
            "not (a placeholder, or a reference that was not written?): left out of the metrics, "
            "which score the other 2 of 3 slices")
    assert rec["reference_notes"] == [note]
    assert f"- {note}" in table.to_markdown()
    (row,) = csv.DictReader(io.StringIO(table.volumes_csv()))
    assert row["reference_notes"] == note
    assert sum(note in m for m in caplog.messages) == 1


def test_a_target_nowhere_positive_is_still_refused_whole(blank_slice_dir, tmp_path):
    """Every slice blank: the volume is refused whole as before (its error has no norm), not
    scored on the zero slices the blank-slice rule would leave (a guard of the new rule)."""
    (src,) = sorted(blank_slice_dir.glob("*.h5"))
    folder = tmp_path / "data"
    folder.mkdir()
    dst = folder / src.name
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        f["reconstruction_rss"][...] = 0
    with pytest.raises(ValueError, match=r"gt of shape \(3, 24, 24\) is all zero"):
        run_bench(folder, "multicoil", (4,), ["zero_filled_rss"], output_dir=None,
                  progress=False, verbose=False)


def _records(psnrs: list[float]) -> list[dict]:
    return [{"method": "cg_sense", "acceleration": 4.0, "volume": f"v{i}.h5", "NMSE": 0.01,
             "PSNR": p, "SSIM": 0.9, "slices": 2, "seconds_per_slice": 0.1, "num_params": 0}
            for i, p in enumerate(psnrs)]


def test_one_volume_prints_n_1_not_a_spread_of_zero():
    """With one volume the tables printed "17.41 ± 0.00" (bench_table.md, metrics_table) and
    "PSNR = 17.41 +/- 0" (str(MetricsReport)): a spread that was never measured. They now say
    "(n = 1)", as report.html does; two volumes keep mean ± 2 std."""
    one = build_table(_records([17.41]), ["cg_sense"], [4.0]).to_markdown()
    row = next(line for line in one.splitlines() if line.startswith("| cg_sense"))
    assert "17.41 (n = 1)" in row and "0.9000 (n = 1)" in row and "±" not in row
    two = build_table(_records([17.0, 19.0]), ["cg_sense"], [4.0]).to_markdown()
    spread = 2 * np.std([17.0, 19.0], ddof=1)
    assert f"18.00 ± {spread:.2f}" in two and "(n = 1)" not in two

    report = MetricsReport(["v.h5"], {"PSNR": np.array([17.41]), "SSIM": np.array([0.9])})
    assert str(report) == "PSNR = 17.41 (n = 1) SSIM = 0.9 (n = 1)"
    table = metrics_table({"zero-filled": report}, ("PSNR", "SSIM"))
    assert "| zero-filled | 1 | 17.41 (n = 1) | 0.9000 (n = 1) |" in table
    assert "±" not in table
    pair = MetricsReport(["a", "b"], {"PSNR": np.array([17.0, 19.0])})
    assert str(pair) == f"PSNR = 18 +/- {spread:.4g}" and math.isfinite(spread)
