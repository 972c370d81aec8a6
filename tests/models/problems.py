"""Small simulated MRI and CT problems shared by the model tests (checked in test_models_support.py)."""

from __future__ import annotations

import math

import numpy as np
import torch

from mrirecon.core import FunctionOperator
from mrirecon.core.kinds import real_dtype
from mrirecon.functional import rss
from mrirecon.data.anatomy import random_ellipses_hu
from mrirecon.data.simulate_ct import MU_WATER_70KEV_PER_MM, poisson_postlog
from mrirecon.operators import sense
from mrirecon.sampling import sparse_view

H, W, COILS = 32, 24, 2
VIEWS, DETECTORS = 12, 20


def phantom(b: int, h: int = H, w: int = W, dtype=torch.complex64, seed: int = 0) -> torch.Tensor:
    """Smooth test images ``(b, h, w)``: a few Gaussian blobs with random phases (complex)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    images = []
    for _ in range(b):
        img = torch.zeros(h, w)
        for _ in range(4):
            cy, cx = (torch.rand(2, generator=g) - 0.5).tolist()
            r = 0.15 + 0.3 * float(torch.rand(1, generator=g))
            img = img + torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
        images.append(img)
    x = torch.stack(images).to(real_dtype(dtype))
    if dtype.is_complex:
        phase = torch.exp(1j * math.pi / 4 * (yy + xx)).to(dtype)
        return x.to(dtype) * phase
    return x


def coil_maps(c: int = COILS, h: int = H, w: int = W, dtype=torch.complex64, seed: int = 5) -> torch.Tensor:
    """Smooth coil maps ``(c, h, w)`` with unit sum of squares."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    g = torch.Generator().manual_seed(seed)
    maps = []
    for i in range(c):
        angle = 2 * math.pi * i / c
        mag = torch.exp(-((yy - 0.8 * math.sin(angle)) ** 2 + (xx - 0.8 * math.cos(angle)) ** 2))
        phase = torch.exp(1j * (float(torch.rand(1, generator=g)) * 2 * math.pi + xx))
        maps.append(mag * phase)
    m = torch.stack(maps).to(dtype)
    return m / rss(m, dim=0)


def column_mask(w: int = W, acs: int = 6, seed: int = 2, batch: int | None = None) -> torch.Tensor:
    """Random column mask with a fully sampled centre; ``(w,)`` or ``(batch, 1, w)``."""
    g = torch.Generator().manual_seed(seed)
    n = 1 if batch is None else batch
    m = torch.rand(n, w, generator=g) < 0.3
    m[:, w // 2 - acs // 2 : w // 2 + acs // 2] = True
    return m[0] if batch is None else m[:, None, :]


def mri_problem(b: int = 2, dtype=torch.complex64):
    """``(x_true (b, H, W), y (b, C, H, W), op)`` for a 2-coil Cartesian problem."""
    x = phantom(b, dtype=dtype)
    op = sense(coil_maps(dtype=dtype), column_mask())
    return x, op(x), op


def dense_ct_operator(h: int = 16, w: int = 16, views: int = VIEWS, detectors: int = DETECTORS, seed: int = 3,
                      dtype=torch.float32) -> FunctionOperator:
    """A real "projector" ``(B, h, w) -> (B, views, detectors)``: a fixed random non-negative
    matrix whose rows are smooth line-like integrals (stand-in until a CT projector lands)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    rows = []
    for v in range(views):
        theta = math.pi * v / views
        t = xx * math.cos(theta) + yy * math.sin(theta)
        for d in torch.linspace(-1, 1, detectors):
            rows.append(torch.exp(-((t - d) ** 2) / 0.01).reshape(-1))
    M = (torch.stack(rows) + 0.01 * torch.rand(views * detectors, h * w, generator=g)).to(dtype) / h

    def fwd(x):
        return (x.reshape(x.shape[:-2] + (h * w,)) @ M.T).reshape(x.shape[:-2] + (views, detectors))

    def adj(y):
        return (y.reshape(y.shape[:-2] + (views * detectors,)) @ M).reshape(y.shape[:-2] + (h, w))

    return FunctionOperator(fwd, adj, (h, w), (views, detectors))


def ct_operator(h: int = 16, w: int = 16):
    """The colleague's parallel-beam projector when ``mrirecon.operators.ct`` is present, else the
    dense stand-in above (the models only see a LinearOperator either way)."""
    try:
        from mrirecon.operators.ct import ParallelBeam
        from mrirecon.operators.ct_geometry import CTGeometry
    except ImportError:
        return None
    return ParallelBeam(CTGeometry.parallel((h, w), VIEWS))


def ct_problem(b: int = 2, h: int = 16, w: int = 16, dtype=torch.float32, dense: bool = False):
    """``(x_true (b, h, w) real, y (b, views, detectors), op)`` on a parallel-beam projector."""
    x = phantom(b, h, w, dtype=dtype, seed=4)
    op = None if dense else ct_operator(h, w)
    if op is None:
        op = dense_ct_operator(h, w, dtype=dtype)
    return x, op(x), op


def ct_phantom_mu(n: int, seed: int) -> np.ndarray:
    """Random-ellipse attenuation image ``(n, n)`` (/mm at 70 keV)."""
    hu = random_ellipses_hu((n, n), np.random.default_rng(seed))
    return np.maximum(MU_WATER_70KEV_PER_MM * (1.0 + hu / 1000.0), 0.0)


def sparse_ct_data(mu: np.ndarray, full, factor: int, seed: int, dtype=torch.float32):
    """``(y / ||A||, A / ||A||)`` at every ``factor``-th view with 4096-photon noise."""
    from mrirecon.operators.ct import ct_operator as geometry_operator, projector_norm

    g, _ = sparse_view(full, factor)
    op, norm = geometry_operator(g), projector_norm(g)
    with torch.no_grad():
        clean = op(torch.from_numpy(mu)).numpy()
    y = poisson_postlog(clean, 4096.0, np.random.default_rng(seed), min_count=0.1)
    return torch.from_numpy(y / norm).to(dtype)[None], op * (1.0 / norm)


def radial_problem(n: int, coils: int, spokes: int, batch: int = 1, normalise: bool = False):
    """``(target (batch, n, n), birdcage maps (batch, coils, n, n), golden-angle trajectory)``:
    the Shepp-Logan phantom (flipped for the second item), maps of unit RSS if ``normalise``."""
    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.data.simulate_mri import birdcage_maps
    from mrirecon.sampling import golden_angle_radial

    img = torch.from_numpy(shepp_logan((n, n))).to(torch.complex64)
    target = torch.stack([img, img.flip(-1)])[:batch]
    yy, xx = np.mgrid[:n, :n]
    maps = torch.from_numpy(birdcage_maps(coils, (xx - n / 2) / (n / 2), (yy - n / 2) / (n / 2)))
    maps = maps.to(torch.complex64).expand(batch, coils, n, n).clone()
    if normalise:
        maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    return target, maps, golden_angle_radial(spokes, 2 * n)
