"""recon.run on the NUFFT operator: the same solvers as Cartesian, only the operator changes."""

import numpy as np
import pytest
import torch

from mrirecon.calib import noncartesian_maps
from mrirecon.data.anatomy import shepp_logan
from mrirecon.data.simulate_mri import birdcage_maps
from mrirecon.functional.density import radial_density
from mrirecon.operators import nufft_sense
from mrirecon.recon import run
from mrirecon.sampling import golden_angle_radial

N, COILS, SPOKES = 48, 6, 30


@pytest.fixture(scope="module")
def radial_problem():
    img = torch.from_numpy(shepp_logan((N, N))).to(torch.complex64)
    yy, xx = np.mgrid[:N, :N]
    maps = torch.from_numpy(birdcage_maps(COILS, (xx - N / 2) / (N / 2), (yy - N / 2) / (N / 2)))
    maps = maps.to(torch.complex64)
    traj = golden_angle_radial(SPOKES, 2 * N)
    y = nufft_sense(maps, traj)(img)
    g = torch.Generator().manual_seed(0)
    noise = torch.complex(torch.randn(y.shape, generator=g), torch.randn(y.shape, generator=g))
    y = y + 2e-3 * float(y.abs().max()) * noise
    return img, maps, traj, y


def _nrmse(x, ref, mask):
    s = torch.vdot(x.flatten(), ref.flatten()) / torch.vdot(x.flatten(), x.flatten())
    return float((s * x - ref)[mask].norm() / ref[mask].norm())


@pytest.mark.parametrize("method", ["espirit", "walsh"])
def test_maps_from_gridded_centre(radial_problem, method):
    img, maps, traj, y = radial_problem
    options = {"crop": 0.0} if method == "espirit" else {}
    est = noncartesian_maps(y, traj, (N, N), method=method, calib_width=16, **options)
    assert est.shape == maps.shape
    inside = img.abs() > 0.05
    corr = (est.conj() * maps).sum(0).abs()  # 1 where equal up to a phase per pixel
    assert float(corr[inside].mean()) > 0.99


# (name, parameters): few iterations, lam in the units of y (maps with unit RSS). CG-SENSE
# runs 20: at 10 its error is 0.835 of gridding's in complex128 but 0.856 in complex64 on an
# Intel Xeon (the float32 Toeplitz gram's rounding, see below), across the 0.85 bound; at 20
# it is 0.70.
METHODS = [
    ("cg_sense", {"iterations": 20}),
    ("l1_wavelet", {"lam": 2e-3, "iterations": 30}),
    ("tv", {"lam": 3e-3, "iterations": 15}),
    ("tgv", {"lam": 3e-3, "iterations": 60}),
]


@pytest.mark.parametrize("name,params", METHODS, ids=[m[0] for m in METHODS])
def test_recon_run_on_radial_beats_gridding(radial_problem, name, params):
    img, maps, traj, y = radial_problem
    op = nufft_sense(maps, traj)
    weights = radial_density(traj, (N, N)).to(torch.float32)
    inside = img.abs() > 0.05
    gridding = op.H(weights * y)
    x = run(name, y, op, **params)
    assert x.shape == (N, N) and x.dtype == torch.complex64
    assert _nrmse(x, img, inside) < 0.85 * _nrmse(gridding, img, inside)


# ---- single precision: rounding of the FFT-based normal operator, amplified by conditioning ----
#
# In complex64 the Toeplitz gram is a normwise stable product: an FFT pair has a relative rms
# rounding error of O(u sqrt(log2 n)) (u = float32 unit roundoff, n the FFT size), and the
# kernel multiplies it by at most lambda_max, so |G32 v - G64 v| <~ u sqrt(log2 n) lambda_max
# ||v|| whatever v is (the rms estimate; the worst case has log2 n). CG then
# amplifies each step's error by at most the condition number kappa of the system it solves,
# so after k iterations the complex64 and complex128 iterates agree to k * kappa * that
# relative error. Radial CG-SENSE without regularisation or density weights has a near-null
# A^H A (k-space corners are never sampled), kappa is unbounded, and the complex64 iterate of
# *any* FFT-based implementation (ours or SigPy's) drifts from the float64 one by ~5e-3 after
# 20 iterations (benchmarks/README.md, non-Cartesian section); with lam > 0 the bound holds.

U32 = torch.finfo(torch.float32).eps / 2


def _relative_gram_error():
    """Rms rounding of the (2N)^2 FFT pair relative to lambda_max, with a factor 2 margin."""
    return 2 * U32 * np.sqrt(np.log2(4 * N * N))


def _lmax(op):
    from mrirecon.solvers import max_eigenvalue

    return float(max_eigenvalue(op.gram, torch.zeros(N, N, dtype=torch.complex128), iterations=50,
                                generator=torch.Generator().manual_seed(0)))


def test_toeplitz_gram_complex64_rounding_within_fft_bound(radial_problem):
    """|G32 v - G64 v| <= 2 u sqrt(log2(4 N^2)) lambda_max |v| for any v, including the weakly sampled
    (high-frequency) directions where |G v| << lambda_max |v|: a kernel built or stored with
    less than float32 accuracy relative to lambda_max, or a NUFFT tolerance in its place,
    breaks it."""
    _, maps, traj, _ = radial_problem
    op32 = nufft_sense(maps, traj)
    op64 = nufft_sense(maps.to(torch.complex128), traj)
    lmax = _lmax(op64)
    g = torch.Generator().manual_seed(3)
    white = torch.randn(N, N, dtype=torch.complex128, generator=g)
    # a high-pass vector: mostly k-space corners, nearly in the null space of A^H A
    k = torch.fft.fftshift(torch.fft.fft2(white))
    ky, kx = torch.meshgrid(torch.arange(N) - N // 2, torch.arange(N) - N // 2, indexing="ij")
    corner = torch.fft.ifft2(torch.fft.ifftshift(k * ((ky**2 + kx**2) > (N // 2) ** 2)))
    bound = _relative_gram_error() * lmax
    for v in (white, corner):
        err = float((op32.gram(v.to(torch.complex64)).to(torch.complex128) - op64.gram(v)).norm())
        assert err <= bound * float(v.norm())


@pytest.mark.parametrize("kappa", [10.0, 30.0])
def test_cg_sense_complex64_agrees_with_complex128(radial_problem, kappa):
    """20 CG-SENSE iterations with lam = lambda_max / kappa: complex64 equals complex128 to
    iterations * kappa * (relative gram error). (At kappa 100 the measured error is already 0.8x
    that estimate and at lam = 0 ~2e-2: the growth is faster than linear, so only well-conditioned
    systems are pinned here. A NUFFT tolerance of 1e-3 in place of the default fails it by 14x.)"""
    _, maps, traj, y = radial_problem
    op64 = nufft_sense(maps.to(torch.complex128), traj)
    lam = _lmax(op64) / kappa
    its = 20
    x64 = run("cg_sense", y.to(torch.complex128), op64, lam=lam, iterations=its)
    x32 = run("cg_sense", y, nufft_sense(maps, traj), lam=lam, iterations=its)
    assert x32.dtype == torch.complex64
    err = float((x32.to(torch.complex128) - x64).norm() / x64.norm())
    assert err <= its * (kappa + 1) * _relative_gram_error()
