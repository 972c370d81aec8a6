"""Dictionary learning (DLMRI-style): patch operator checks, OMP against brute force and
scikit-learn, K-SVD never worsens the fit, sparse projection and hard threshold against brute
force, DLMRI improves over zero-filled with a decreasing objective (MRI), CT, registry."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sigpy as sp
import torch
from scipy.ndimage import gaussian_filter
from sklearn.linear_model import orthogonal_mp

from mrirecon.metrics import psnr
from mrirecon.operators import ParallelBeam, Patches
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.recon import available, run
from mrirecon.recon.dictionary import ksvd_sweep, omp, overcomplete_dct
from mrirecon.solvers.prox_extra import hard_threshold, project_sparse
from tests.helpers import check_operator, random_like_shape
from tests.helpers import shepp_sense_problem

N = 48


@pytest.mark.parametrize("stride", [1, 2])
def test_patch_operator(stride, cdtype, rdtype):
    for dtype in (cdtype, rdtype):
        op = Patches((7, 8), patch_size=3, stride=stride, border="drop")
        check_operator(op, random_like_shape((2, 7, 8), dtype), norm=True)
    counts = Patches((7, 8), 3, 1, border="drop").gram(torch.ones(7, 8, dtype=torch.float64))
    assert float(counts[3, 3]) == 9 and float(counts[0, 0]) == 1  # overlap-add counts


def test_omp_against_brute_force_and_sklearn():
    g = torch.Generator().manual_seed(0)
    # exactly 2-sparse signals in [I, Hadamard/4] (coherence 1/4 < 1/(2s-1)): OMP must find the
    # exact code (the brute-force optimum, residual 0)
    from scipy.linalg import hadamard
    s = 2
    D = torch.cat([torch.eye(16), torch.tensor(hadamard(16)) / 4.0], dim=1).double()
    true = torch.zeros(20, 32, dtype=torch.float64)
    for i in range(20):
        idx = torch.randperm(32, generator=g)[:s]
        true[i, idx] = torch.randn(s, dtype=torch.float64, generator=g)
    codes = omp(true @ D.T, D, s)
    assert torch.allclose(codes, true, atol=1e-10)
    d, k = 6, 9
    D = torch.randn(d, k, dtype=torch.float64, generator=g)
    D = D / torch.linalg.vector_norm(D, dim=0)
    # random signals: same codes as scikit-learn's OMP, least squares on the support, and a
    # residual no better than the best of all supports of size s (brute force)
    X = torch.randn(15, d, dtype=torch.float64, generator=g)
    codes = omp(X, D, s)
    ref = orthogonal_mp(D.numpy(), X.numpy().T, n_nonzero_coefs=s).T
    assert np.allclose(codes.numpy(), ref, atol=1e-8)
    for x, c in zip(X, codes):
        sup = torch.nonzero(c).flatten()
        ls = torch.linalg.lstsq(D[:, sup], x[:, None]).solution.flatten()
        assert torch.allclose(c[sup], ls, atol=1e-10)
        best = min(float(torch.linalg.vector_norm(x - D[:, list(t)] @ torch.linalg.lstsq(D[:, list(t)], x[:, None]).solution.flatten()))
                   for t in itertools.combinations(range(k), s))
        assert float(torch.linalg.vector_norm(x - D @ c)) >= best - 1e-12


def test_ksvd_sweep_never_worsens_the_fit():
    g = torch.Generator().manual_seed(1)
    D = overcomplete_dct(4, 5)
    assert torch.allclose(torch.linalg.vector_norm(D, dim=0), torch.ones(25, dtype=torch.float64))
    X = torch.randn(200, 16, dtype=torch.float64, generator=g)
    codes = omp(X, D, 3)
    err = [float(torch.linalg.vector_norm(X - codes @ D.T))]
    for _ in range(3):
        D, codes = ksvd_sweep(X, D, codes)
        err.append(float(torch.linalg.vector_norm(X - codes @ D.T)))
    assert all(b <= a + 1e-10 for a, b in itertools.pairwise(err)) and err[-1] < 0.95 * err[0]
    assert torch.allclose(torch.linalg.vector_norm(D, dim=0), torch.ones(25, dtype=torch.float64))
    assert int((codes != 0).sum(1).max()) <= 3


def test_sparse_projection_and_hard_threshold_against_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5))
    got = project_sparse(torch.tensor(x), 2, dim=1).numpy()
    for row, out in zip(x, got):
        best = min((np.sum(np.abs(row[list(set(range(5)) - set(t))]) ** 2), t)
                   for t in itertools.combinations(range(5), 2))
        ref = np.zeros_like(row)
        ref[list(best[1])] = row[list(best[1])]
        assert np.allclose(out, ref)
    t = 0.4
    v = torch.tensor(rng.standard_normal(50))
    h = hard_threshold(v, t)
    cost = lambda z: t * (z != 0) + 0.5 * (z - v) ** 2
    assert torch.all(cost(h) <= torch.minimum(cost(torch.zeros_like(v)), cost(v)) + 1e-15)


@pytest.fixture(scope="module")
def mri_4x():
    return shepp_sense_problem(N, noise=0.001)


def _psnr(gt, x):
    return float(psnr(gt[None], np.abs(np.asarray(x))[None]))


def test_dlmri_improves_and_objective_decreases(mri_4x):
    gt, op, y = mri_4x
    obj = []
    x = run("dlmri", y, op, iterations=6, objective=obj)
    p_zf, p_dl = _psnr(gt, op.H(y)), _psnr(gt, x)
    print(f"\nPSNR zero-filled {p_zf:.2f}, DLMRI {p_dl:.2f} dB; objective {np.round(obj, 4)}")
    assert x.dtype == torch.complex128 and x.shape == (N, N)
    assert p_dl > p_zf + 5.0
    assert len(obj) == 6 and np.all(np.diff(obj) <= 1e-10 * obj[0]) and obj[-1] < 0.8 * obj[0]


def test_dlmri_ct():
    n = 48
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=24))
    gt = gaussian_filter(np.abs(sp.shepp_logan((n, n))), 0.7).astype(np.float32)
    y = op(torch.tensor(gt))
    y = y + 0.01 * float(y.max()) * torch.randn(y.shape, generator=torch.Generator().manual_seed(0))
    assert "dlmri" in available()
    obj = []
    x = run("dlmri", y, op, lam=0.1, iterations=4, patch_size=4, atoms_per_axis=6,
            objective=obj)
    assert x.dtype == torch.float32 and x.shape == (n, n)
    assert np.all(np.diff(obj) <= 1e-5 * obj[0])  # float32
    # sparse-view CT: better than FBP (on par with CG least squares, see the report)
    p_dl, p_fbp = _psnr(gt, x), _psnr(gt, run("fbp", y, op))
    print(f"\nCT PSNR: FBP {p_fbp:.2f}, DLMRI {p_dl:.2f} dB")
    assert p_dl > p_fbp + 1.0


def test_overcomplete_dct_atoms_but_the_first_have_zero_mean():
    """Elad & Aharon's DCT dictionary, every
    1-D atom but the constant one has zero mean, so every 2-D atom but the first does; all
    have unit norm and the first is constant."""
    from mrirecon.recon.dictionary import overcomplete_dct

    for p, k in ((4, 6), (5, 8), (8, 11)):
        d = overcomplete_dct(p, k)
        assert d.shape == (p * p, k * k)
        eps = torch.finfo(d.dtype).eps
        assert float(d[:, 1:].sum(0).abs().max()) <= 10 * p * p * eps
        assert float((torch.linalg.vector_norm(d, dim=0) - 1).abs().max()) <= 10 * eps
        assert float(d[:, 0].max() - d[:, 0].min()) <= 10 * eps


def test_ksvd_sweep_codes_are_the_least_squares_fit_on_the_new_atom():
    """Fails if dictionary.py:160 ``g_new = e @ d`` -> ``g``: for a one-atom dictionary
    the sweep is one rank-1 alternating step, after which the residual is orthogonal to the
    atom (g = E^T d is the exact minimiser for the new d)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, dtype=torch.float64, generator=g)
    d0 = torch.randn(8, 1, dtype=torch.float64, generator=g)
    d0 = d0 / d0.norm()
    c0 = torch.randn(50, 1, dtype=torch.float64, generator=g)
    d1, c1 = ksvd_sweep(x, d0, c0)
    residual = x - c1 @ d1.T
    eps = torch.finfo(torch.float64).eps
    assert float((residual @ d1).abs().max()) <= 100 * eps * float(x.abs().max()) * 8
    assert residual.norm() <= (x - c0 @ d0.T).norm()
