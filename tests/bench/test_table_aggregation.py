"""``bench`` table aggregation: time per slice weighted by slices, the CSV's 2 std."""

from __future__ import annotations

import csv
import io
import statistics

import pytest
import torch


def _record(volume, slices, seconds_per_slice, nmse, psnr, ssim):
    from mrirecon.bench.table import encode_mask

    mask = torch.zeros(16, dtype=torch.bool)
    mask[::4] = True
    return {"method": "zero_filled", "acceleration": 4.0, "volume": volume, "slices": slices,
            "seconds_per_slice": seconds_per_slice, "num_params": 0, "NMSE": nmse, "PSNR": psnr,
            "SSIM": ssim, "mask": encode_mask(mask), "mask_width": 16, "acquirable_columns": 16}


def test_build_table_time_per_slice_weights_volumes_by_slices_and_csv_has_two_std():
    from mrirecon.bench.table import build_table

    recs = [_record("a.h5", 2, 1.0, 0.01, 30.0, 0.80),
            _record("b.h5", 8, 0.5, 0.03, 27.0, 0.70),
            _record("c.h5", 4, 0.25, 0.02, 28.5, 0.75)]
    table = build_table(recs, ["zero_filled"], [4.0])
    row = table.row("zero_filled", 4.0)
    total_seconds = sum(r["seconds_per_slice"] * r["slices"] for r in recs)
    total_slices = sum(r["slices"] for r in recs)
    # documented: total reconstruction time over the total number of slices (not the mean of
    # per-volume rates, which a 2-slice volume would weigh like an 8-slice one)
    assert row.seconds_per_slice == pytest.approx(total_seconds / total_slices, rel=1e-12)
    got = next(csv.DictReader(io.StringIO(table.to_csv())))
    for m in ("NMSE", "PSNR", "SSIM"):
        vals = [r[m] for r in recs]
        assert float(got[f"{m}_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-12)
        # the column is named 2std: twice the sample (ddof = 1) standard deviation
        assert float(got[f"{m}_2std"]) == pytest.approx(2 * statistics.stdev(vals), rel=1e-12)
    assert float(got["seconds_per_slice"]) == pytest.approx(total_seconds / total_slices, rel=1e-12)
