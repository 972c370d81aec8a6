"""Metrics: NMSE / PSNR / SSIM equal fastmri.evaluate (and skimage), SSIMLoss equals
fastmri.losses.SSIMLoss, the per-volume report equals fastMRI's Metrics summary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrirecon.functional import fft2c, ifft2c
from mrirecon.metrics import (
    SSIMLoss,
    crop_to_target,
    evaluate_volumes,
    metrics_table,
    nmse,
    psnr,
    ssim,
    ssim_map,
)
from mrirecon.sampling import EquispacedFractionMask, apply_mask, file_seed


def _scalar(x) -> float:
    return float(np.asarray(x).reshape(-1)[0])


def _random_pair(seed: int, shape=(3, 40, 37), dtype=np.float64):
    rng = np.random.default_rng(seed)
    gt = rng.random(shape)
    pred = np.abs(gt + 0.1 * rng.standard_normal(shape))
    return gt.astype(dtype), pred.astype(dtype)


def _realistic_pair(dtype=np.float32):
    """Phantom and camera slices as the target, a 4x zero-filled reconstruction as prediction."""
    data = pytest.importorskip("skimage.data")
    gt = np.stack([data.shepp_logan_phantom()[::2, ::2], data.camera()[100:300, 150:350] / 255.0])
    gt = torch.from_numpy(gt)
    k = fft2c(gt.to(torch.complex128))
    under, _, _ = apply_mask(k, EquispacedFractionMask([0.08], [4]), seed=file_seed("file1.h5"))
    pred = ifft2c(under).abs()
    return gt.numpy().astype(dtype), pred.numpy().astype(dtype)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------------------------------------
# against fastmri.evaluate (live)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_fastmri_on_random_volumes(seed):
    fe = pytest.importorskip("fastmri.evaluate")
    gt, pred = _random_pair(seed)
    assert _rel(nmse(gt, pred), _scalar(fe.nmse(gt, pred))) < 1e-10
    assert _rel(psnr(gt, pred), _scalar(fe.psnr(gt, pred))) < 1e-10
    assert _rel(ssim(gt, pred), _scalar(fe.ssim(gt, pred))) < 1e-10
    # explicit maxval
    assert _rel(psnr(gt, pred, maxval=2.0), _scalar(fe.psnr(gt, pred, maxval=2.0))) < 1e-10
    assert _rel(ssim(gt, pred, maxval=2.0), _scalar(fe.ssim(gt, pred, maxval=2.0))) < 1e-10


def test_metrics_equal_fastmri_on_realistic_images():
    fe = pytest.importorskip("fastmri.evaluate")
    gt, pred = _realistic_pair(np.float32)
    values = {"nmse": nmse(gt, pred), "psnr": psnr(gt, pred), "ssim": ssim(gt, pred)}
    # a 4x zero-filled reconstruction is visibly degraded but not garbage
    assert 0.0 < values["nmse"] < 0.2 and 15 < values["psnr"] < 45 and 0.3 < values["ssim"] < 0.99
    g64, p64 = gt.astype(np.float64), pred.astype(np.float64)
    for name, fn in (("nmse", fe.nmse), ("psnr", fe.psnr), ("ssim", fe.ssim)):
        # our float64 evaluation of float32 data equals the reference run in float64 ...
        assert _rel(values[name], _scalar(fn(g64, p64))) < 1e-6, name
        # ... and the reference's own float32 arithmetic to float32 accuracy
        assert _rel(values[name], _scalar(fn(gt, pred))) < 1e-5, name
    # torch inputs give the same numbers, as 0-dim tensors
    t = ssim(torch.from_numpy(gt), torch.from_numpy(pred))
    assert isinstance(t, torch.Tensor) and t.ndim == 0
    assert _rel(float(t), values["ssim"]) < 1e-12


def test_ssim_equals_skimage_per_slice():
    metrics = pytest.importorskip("skimage.metrics")
    gt, pred = _random_pair(5, shape=(2, 33, 50))
    L = gt.max()
    ref = np.mean([metrics.structural_similarity(g, p, data_range=L) for g, p in zip(gt, pred)])
    assert _rel(ssim(gt, pred), ref) < 1e-10
    # the valid-region map is the skimage full map without its 3-pixel border
    _, full = metrics.structural_similarity(gt[0], pred[0], data_range=L, full=True)
    local = ssim_map(torch.from_numpy(gt[0]), torch.from_numpy(pred[0]), L).numpy()
    np.testing.assert_allclose(local, full[3:-3, 3:-3], rtol=1e-10, atol=1e-12)


def test_metric_identities():
    gt, _ = _random_pair(3)
    assert nmse(gt, gt) == 0.0
    assert abs(ssim(gt, gt) - 1.0) < 1e-12
    # constant error 0.1 with data range gt.max(): PSNR = 20 log10(max / 0.1)
    assert abs(psnr(gt, gt + 0.1) - 20 * math.log10(gt.max() / 0.1)) < 1e-9
    assert abs(nmse(gt, 0 * gt) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="does not match"):
        nmse(gt, gt[:, :-1])
    with pytest.raises(ValueError, match="slices, H, W"):
        ssim(gt[0], gt[0])
    with pytest.raises(ValueError, match="complex"):
        psnr(gt.astype(np.complex128), gt)


def test_ssim_is_differentiable():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(1, 10, 9, dtype=torch.float64, generator=g)
    pred = (gt + 0.1 * torch.randn(gt.shape, dtype=torch.float64, generator=g)).requires_grad_()
    assert torch.autograd.gradcheck(lambda p: ssim(gt, p), (pred,))
    value = ssim(gt, pred)
    value.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------------------------------------
# SSIMLoss against fastmri.losses.SSIMLoss


def test_ssim_loss_equals_reference():
    losses = pytest.importorskip("fastmri.losses")
    g = torch.Generator().manual_seed(2)
    X = torch.rand(3, 1, 24, 20, dtype=torch.float64, generator=g)
    Y = (X + 0.2 * torch.randn(X.shape, dtype=torch.float64, generator=g)).abs()
    data_range = torch.tensor([1.0, 0.7, 1.3], dtype=torch.float64)
    ref = losses.SSIMLoss().double()
    ours = SSIMLoss()
    # the reference builds its 1/49 window in float32; .double() keeps that 1e-8 rounding
    assert abs(float(ours(X, Y, data_range)) - float(ref(X, Y, data_range))) < 1e-7
    ref.w = torch.ones(1, 1, 7, 7, dtype=torch.float64) / 49  # exact window: compare tightly
    torch.testing.assert_close(ours(X, Y, data_range), ref(X, Y, data_range), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        ours(X, Y, data_range, reduced=False), ref(X, Y, data_range, reduced=False), rtol=1e-10, atol=1e-12
    )
    # gradients agree as well
    Xa, Xb = X.clone().requires_grad_(), X.clone().requires_grad_()
    ours(Xa, Y, data_range).backward()
    ref(Xb, Y, data_range).backward()
    torch.testing.assert_close(Xa.grad, Xb.grad, rtol=1e-9, atol=1e-12)
    # float32 agrees to single precision
    r32 = losses.SSIMLoss()(X.float(), Y.float(), data_range.float())
    assert abs(float(ours(X.float(), Y.float(), data_range.float())) - float(r32)) < 1e-5


def test_ssim_loss_shapes_and_errors():
    X = torch.rand(2, 16, 16)
    loss = SSIMLoss()
    assert float(loss(X, X, torch.ones(2))) == pytest.approx(0.0, abs=1e-6)
    assert loss(X, X, torch.ones(2), reduced=False).shape == (2, 10, 10)
    with pytest.raises(ValueError, match="batch of 2"):
        loss(X, X, torch.ones(3))


# ---------------------------------------------------------------------------------------------
# per-volume evaluation report


def test_evaluate_volumes_equals_fastmri_report():
    fe = pytest.importorskip("fastmri.evaluate")
    transforms = pytest.importorskip("fastmri.data.transforms")
    rng = np.random.default_rng(7)
    targets, preds = {}, {}
    for i in range(4):
        gt = rng.random((2, 24, 20)).astype(np.float32)  # target narrower than tall: crop to 20 x 20
        pred = rng.random((2, 30, 26)).astype(np.float32) * 0.2 + np.pad(gt, ((0, 0), (3, 3), (3, 3)))
        targets[f"file{i}.h5"], preds[f"file{i}.h5"] = gt, pred
    report = evaluate_volumes(targets, preds)

    ref = fe.Metrics(fe.METRIC_FUNCS)
    for name in targets:
        t = transforms.center_crop(targets[name], (20, 20)).astype(np.float64)
        r = transforms.center_crop(preds[name], (20, 20)).astype(np.float64)
        ref.push(t, r)
    means, stds = ref.means(), ref.stddevs()
    assert report.names == list(targets)
    for m in ("MSE", "NMSE", "PSNR", "SSIM"):
        assert _rel(report.mean()[m], _scalar(means[m])) < 1e-9, m
        assert _rel(report.std()[m], _scalar(stds[m])) < 1e-6, m
    # fastmri's own Metrics.__repr__ fails on numpy 2 (SSIM is a 1-element array): same format here
    expected = " ".join(
        f"{m} = {_scalar(means[m]):.4g} +/- {2 * _scalar(stds[m]):.4g}" for m in sorted(means)
    )
    assert str(report) == expected

    table = metrics_table({"zero-filled": report})
    assert "| zero-filled | 4 |" in table and "±" in table


def test_crop_to_target_follows_fastmri():
    gt = np.arange(2 * 6 * 4, dtype=np.float64).reshape(2, 6, 4)
    pred = np.arange(2 * 8 * 7, dtype=np.float64).reshape(2, 8, 7)
    g, p = crop_to_target(gt, pred)
    assert g.shape == (2, 4, 4) and p.shape == (2, 4, 4)
    np.testing.assert_array_equal(g.numpy(), gt[:, 1:5, :])
    np.testing.assert_array_equal(p.numpy(), pred[:, 2:6, 1:5])
    with pytest.raises(ValueError, match="smaller than the crop"):
        crop_to_target(gt, pred[:, :3])
    with pytest.raises(ValueError, match="2 targets but 1 predictions"):
        evaluate_volumes([gt, gt], [pred])


@pytest.mark.parametrize("k1,k2", [(0.05, 0.03), (0.01, 0.2), (0.1, 0.3)])
def test_ssim_map_constants_match_skimage(k1, k2):
    from skimage.metrics import structural_similarity
    g = np.random.default_rng(0)
    x = g.random((40, 36))
    y = x + 0.3 * g.standard_normal((40, 36))
    L, w = 1.7, 7
    _, full = structural_similarity(x, y, win_size=w, data_range=L, K1=k1, K2=k2, full=True,
                                    use_sample_covariance=True, gaussian_weights=False)
    p = w // 2
    ref = full[p:-p, p:-p]
    from mrirecon.metrics.ssim_loss import SSIMLoss, ssim_map
    got = ssim_map(torch.from_numpy(x), torch.from_numpy(y), L, win_size=w, k1=k1, k2=k2)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-12)
    loss = SSIMLoss(win_size=w, k1=k1, k2=k2)(torch.from_numpy(x)[None, None],
                                              torch.from_numpy(y)[None, None],
                                              torch.tensor([L], dtype=torch.float64))
    assert abs(float(loss) - (1 - ref.mean())) < 1e-12
