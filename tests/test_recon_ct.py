"""CT reconstructions: SIRT and TV-PDHG beat FBP on sparse-view Shepp-Logan; SIRT's weighted
residual decreases; both TV step rules reach the same minimum; registry dispatch."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from skimage.data import shepp_logan_phantom
from skimage.transform import resize

from mrirecon.metrics import psnr
from mrirecon.operators import ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.recon import fbp, run, sirt, tv_objective, tv_pdhg
from tests.helpers import random_like_shape

N = 128
VIEWS = 60
LAM_TV = 1.0  # chosen once on this phantom
ITER_SIRT = 150
ITER_TV = 100


@pytest.fixture(scope="module")
def sparse_view():
    gt = resize(shepp_logan_phantom(), (N, N), anti_aliasing=True)
    op = ParallelBeam(CTGeometry.parallel((N, N), num_views=VIEWS))
    y = op(torch.tensor(gt, dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    y = y + 0.01 * float(y.max()) * torch.randn(y.shape, generator=g)  # 1 % noise
    return gt, op, y


def _psnr(gt, x):
    return float(psnr(gt[None], np.asarray(x)[None]))


def test_sirt_and_tv_beat_fbp_with_sparse_views(sparse_view):
    gt, op, y = sparse_view
    p_fbp = _psnr(gt, fbp(y, op))
    x_sirt = sirt(y, op, ITER_SIRT)
    x_tv = tv_pdhg(y, op, LAM_TV, ITER_TV)
    p_sirt, p_tv = _psnr(gt, x_sirt), _psnr(gt, x_tv)
    print(f"\n{VIEWS} views PSNR: fbp {p_fbp:.2f}, sirt {p_sirt:.2f}, tv {p_tv:.2f} dB")
    assert p_sirt > p_fbp + 1.0
    assert p_tv > p_sirt + 2.0
    assert float(x_sirt.min()) >= 0 and float(x_tv.min()) >= 0  # non-negativity holds
    assert x_tv.dtype == torch.float32 and x_tv.shape == (N, N)


def _small_ct(n=24, views=20):
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=views))
    x = torch.rand((n, n), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return op, x, op(x)


def test_sirt_decreases_weighted_residual_and_batches():
    op, _x, y = _small_ct()
    row = op(torch.ones(24, 24, dtype=torch.float64))
    R = torch.where(row > 0, 1.0 / row.clamp(min=1e-300), 0.0)  # rays that miss the image: 0
    res = []
    sirt(y, op, 30, nonneg=False,
         callback=lambda it, xi, rel: res.append(float((R * (y - op(xi)) ** 2).sum())))
    assert len(res) == 30
    assert all(b <= a * (1 + 1e-12) for a, b in itertools.pairwise(res))  # monotone (SIRT theory)
    assert res[-1] < 0.15 * res[0]
    # batched slices equal single-slice runs
    yb = torch.stack([y, 2 * y])
    xb = sirt(yb, op, 5)
    torch.testing.assert_close(xb[1], sirt(2 * y, op, 5))
    with pytest.raises(ValueError, match=r"relaxation must lie in \(0, 2\)"):
        sirt(y, op, 1, relaxation=2.5)
    with pytest.raises(TypeError, match="sirt: the sinogram must be a real tensor"):
        sirt(y.to(torch.complex128), op, 1)


def test_tv_pdhg_preconditioned_and_scalar_steps_reach_same_minimum():
    op, _x, y = _small_ct(n=16, views=12)
    y = y + 0.05 * random_like_shape(y.shape, y.dtype, 3)
    lam = 0.5
    a = tv_pdhg(y, op, lam, 800)
    b = tv_pdhg(y, op, lam, 800, preconditioned=False)
    fa, fb = float(tv_objective(y, op, a, lam)), float(tv_objective(y, op, b, lam))
    assert abs(fa - fb) <= 2e-5 * fa
    assert float(a.min()) >= 0
    # a constrained minimum: non-negative perturbations cannot lower the objective
    for seed in range(3):
        d = 1e-3 * torch.rand(a.shape, generator=torch.Generator().manual_seed(seed), dtype=a.dtype)
        assert float(tv_objective(y, op, a + d, lam)) > fa * (1 - 1e-5)
    with pytest.raises(ValueError, match="lam must be >= 0"):
        tv_pdhg(y, op, -1.0)


def test_registry_ct_entries_match_direct_calls(sparse_view):
    _gt, op, y = sparse_view
    torch.testing.assert_close(run("fbp", y, op, filter="hann"), fbp(y, op, filter="hann"))
    torch.testing.assert_close(run("sirt", y, op, iterations=3), sirt(y, op, 3))
    torch.testing.assert_close(run("tv_ct", y, op, lam=1.0, iterations=3),
                               tv_pdhg(y, op, 1.0, 3))
    with pytest.raises(TypeError, match=r"sirt: unknown parameter\(s\) iters; valid: "
                                        r"iterations, nonneg, relaxation"):
        run("sirt", y, op, iters=3)
