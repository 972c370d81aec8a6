"""Inputs the metrics met from users' own files and loops: big-endian and long-double NumPy
arrays (h5py reads a big-endian dataset as ``>f4``), NaNs outside fastMRI's crop under
``nonfinite="nan"``, and a perfect reconstruction's infinite PSNR in the tables."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mrirecon.metrics import evaluate_volumes, metrics_table, nmse, psnr, ssim


def _pair(shape=(2, 32, 32), seed=0):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape) + 0.5
    return gt, gt + 0.05 * rng.standard_normal(shape)


@pytest.mark.parametrize("dtype", [">f4", ">f8", np.longdouble])
def test_non_native_and_long_double_arrays_score_as_native_ones(dtype):
    gt, pred = _pair()
    native = np.float32 if dtype == ">f4" else np.float64
    for f in (psnr, nmse, ssim):
        want = f(gt.astype(native), pred.astype(native))
        assert f(gt.astype(dtype), pred.astype(dtype)) == want  # the same values, converted
    fastmri_eval = pytest.importorskip("fastmri.evaluate")
    got = psnr(gt.astype(">f8"), pred.astype(">f8"))
    assert got == pytest.approx(fastmri_eval.psnr(gt, pred), rel=1e-12)


def test_a_non_numeric_array_is_refused_naming_the_input():
    gt, _ = _pair()
    with pytest.raises(TypeError, match=r"psnr: pred: .*dtype object"):
        psnr(gt, gt.astype(object))


def test_nans_outside_the_crop_do_not_void_a_score_under_nonfinite_nan():
    gt, pred = _pair((2, 32, 16))
    wide = np.zeros((2, 32, 32))
    wide[..., 8:24] = pred
    clean = evaluate_volumes([gt], [wide]).values["PSNR"][0]
    wide[..., :8] = np.nan  # in the columns fastMRI's crop to the target's width drops
    assert evaluate_volumes([gt], [wide], nonfinite="nan").values["PSNR"][0] == clean
    wide[0, 16, 10] = np.nan  # in the scored region (rows and columns 8-23)
    assert np.isnan(evaluate_volumes([gt], [wide], nonfinite="nan").values["PSNR"][0])


def test_a_perfect_volume_reads_inf_not_na():
    gt, pred = _pair()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "invalid value" of inf - inf
        report = evaluate_volumes([gt, gt], [gt, pred])
        table = metrics_table({"m": report})
        text = str(report)
    assert np.isinf(report.values["PSNR"][0])
    assert "| inf |" in table and "PSNR = inf" in text
    diverged = evaluate_volumes([gt, gt], [np.full_like(gt, np.nan), pred], nonfinite="nan")
    assert "n/a" in metrics_table({"m": diverged})
