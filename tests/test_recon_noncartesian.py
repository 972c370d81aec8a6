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


# (name, parameters): few iterations, lam in the units of y (maps with unit RSS)
METHODS = [
    ("cg_sense", {"iterations": 10}),
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
