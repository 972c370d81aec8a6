"""2-D sampling patterns: variable-density Poisson disc, variable-density random masks, and
radial / golden-angle radial trajectories.

Masks are boolean ``(H, W)`` tensors over the ``(ky, kz)`` phase-encoding plane (3-D
Cartesian) or ``(ky, kx)`` of a 2-D simulation. Trajectories are ``(spokes, samples, 2)``
coordinates in cycles per field of view, axis 0 along ``H`` and axis 1 along ``W``, within
``[-N/2, N/2)`` per axis: the convention of ``sigpy.mri.radial`` and of sigpy/torchkbnufft NUFFTs.
All randomness comes from an explicit integer ``seed`` (``numpy.random.Generator``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

GOLDEN_RATIO = (1 + math.sqrt(5)) / 2
#: golden angle for full-diameter spokes over [0, pi): pi / golden ratio (about 111.25 deg)
GOLDEN_ANGLE_FULL = math.pi / GOLDEN_RATIO
#: golden angle for centre-out spokes over [0, 2 pi): pi (3 - sqrt 5) (about 137.51 deg)
GOLDEN_ANGLE_HALF = math.pi * (3 - math.sqrt(5))


def _check_shape(shape, who: str) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"{who}: shape must be (H, W) with positive sizes, got {shape}")
    return shape


def _check_calib(calib, shape, who: str) -> tuple[int, int]:
    calib = tuple(int(c) for c in calib)
    if len(calib) != 2 or not (0 <= calib[0] <= shape[0] and 0 <= calib[1] <= shape[1]):
        raise ValueError(f"{who}: calib must be (h, w) within {shape}, got {calib}")
    return calib


def calibration_region(shape: tuple[int, int], calib: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` with the centred ``calib`` block set (rows ``int(H/2 - h/2)`` on)."""
    (ny, nx), (cy, cx) = shape, calib
    region = np.zeros((ny, nx), dtype=bool)
    region[int(ny / 2 - cy / 2) : int(ny / 2 + cy / 2), int(nx / 2 - cx / 2) : int(nx / 2 + cx / 2)] = True
    return region


def _normalised_radius(shape: tuple[int, int], calib: tuple[int, int]) -> np.ndarray:
    """Distance from the calibration block, each axis scaled to at most 1: ``(H, W)`` in [0, sqrt 2]."""
    ny, nx = shape
    y, x = np.mgrid[:ny, :nx].astype(np.float64)
    x = np.maximum(np.abs(x - nx / 2) - calib[1] / 2, 0)
    y = np.maximum(np.abs(y - ny / 2) - calib[0] / 2, 0)
    x /= max(x.max(), 1e-12)
    y /= max(y.max(), 1e-12)
    return np.sqrt(x**2 + y**2)


def _sequential_disc(
    radius_y: np.ndarray, radius_x: np.ndarray, order: np.ndarray, seeded: np.ndarray
) -> np.ndarray:
    """Random sequential Poisson-disc selection on the grid.

    Candidates are visited in ``order`` (a random permutation of allowed flat indices); a
    candidate is accepted unless it lies inside the exclusion ellipse of an accepted point,
    whose semi-axes are that point's ``(radius_y, radius_x)``. ``seeded`` points are accepted
    first. The result is a maximal Poisson-disc set (no further point fits).
    """
    ny, nx = radius_y.shape
    mask = seeded.copy()
    blocked = seeded.copy()
    flat = blocked.reshape(-1)  # a view: stamping ``blocked`` updates ``flat``
    for idx in order:
        if flat[idx]:
            continue
        py, px = divmod(int(idx), nx)
        mask[py, px] = True
        ry, rx = radius_y[py, px], radius_x[py, px]
        y0, y1 = max(math.ceil(py - ry), 0), min(math.floor(py + ry) + 1, ny)
        x0, x1 = max(math.ceil(px - rx), 0), min(math.floor(px + rx) + 1, nx)
        dy = ((np.arange(y0, y1) - py) / ry) ** 2
        dx = ((np.arange(x0, x1) - px) / rx) ** 2
        blocked[y0:y1, x0:x1] |= (dy[:, None] + dx[None, :]) < 1
    return mask


def poisson_disc(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (0, 0),
    *,
    seed: int,
    crop_corner: bool = True,
    tol: float = 0.02,
    max_iterations: int = 40,
) -> Tensor:
    """Variable-density Poisson-disc mask ``(H, W)`` with a fully sampled calibration block.

    The exclusion radius grows as ``1 + s r`` with the distance ``r`` from the calibration
    block (each axis normalised to 1; radii scaled per axis for non-square grids, at least one
    pixel), as in ``sigpy.mri.poisson``. The slope ``s`` is found by bisection so that the
    achieved acceleration ``H W / mask.sum()`` is within ``tol`` (relative) of the target. For
    a fixed ``seed`` the candidate order is fixed, so the result is deterministic.

    Parameters
    ----------
    shape
        ``(H, W)`` grid.
    acceleration
        Target acceleration, > 1.
    calib
        ``(h, w)`` fully sampled centre block (counts towards the acceleration).
    seed
        Seed of the ``numpy.random.Generator`` drawing the candidate order.
    crop_corner
        Leave out the corners beyond normalised radius 1 (an elliptical k-space shutter).
    tol
        Relative tolerance on the achieved acceleration.
    max_iterations
        Bisection steps before giving up with a ``ValueError``.

    Returns
    -------
    Tensor
        Boolean ``(H, W)``.
    """
    shape = _check_shape(shape, "poisson_disc")
    calib = _check_calib(calib, shape, "poisson_disc")
    if not acceleration > 1:
        raise ValueError(f"poisson_disc: acceleration must be > 1, got {acceleration}")
    ny, nx = shape
    r = _normalised_radius(shape, calib)
    region = calibration_region(shape, calib)
    allowed = (r < 1) if crop_corner else np.ones(shape, dtype=bool)
    allowed &= ~region
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.flatnonzero(allowed))
    seeded = region & ((r < 1) if crop_corner else True)
    n = max(ny, nx)

    lo, hi = 0.0, float(n)
    best, best_err = None, math.inf
    for _ in range(max_iterations):
        slope = 0.5 * (lo + hi)
        radius_x = np.clip((1 + r * slope) * nx / n, 1, None)
        radius_y = np.clip((1 + r * slope) * ny / n, 1, None)
        mask = _sequential_disc(radius_y, radius_x, order, seeded)
        achieved = ny * nx / max(int(mask.sum()), 1)
        err = abs(achieved - acceleration) / acceleration
        if err < best_err:
            best, best_err = mask, err
        if err < tol:
            break
        if achieved < acceleration:
            lo = slope
        else:
            hi = slope
    if best_err >= tol:
        raise ValueError(
            f"poisson_disc: cannot reach acceleration {acceleration} within {tol:.0%} on {shape} "
            f"with calib {calib} (closest relative error {best_err:.3f})"
        )
    return torch.from_numpy(best)


def variable_density(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (0, 0),
    *,
    seed: int,
    power: float = 2.0,
    floor: float = 1e-3,
) -> Tensor:
    """Variable-density random mask ``(H, W)`` with exactly ``round(H W / acceleration)`` samples.

    Outside the fully sampled calibration block, points are drawn without replacement with
    probability proportional to ``(1 - r / r_max) ** power + floor``, ``r`` the distance from the
    calibration block with each axis normalised to 1 (``power = 0``: uniform random).

    Parameters
    ----------
    shape
        ``(H, W)`` grid.
    acceleration
        Target acceleration ``>= 1``; the calibration block must fit in the sample budget.
    calib
        ``(h, w)`` fully sampled centre block.
    seed
        Seed of the ``numpy.random.Generator``.
    power
        Decay exponent of the sampling density.
    floor
        Small positive density at the k-space edge.

    Returns
    -------
    Tensor
        Boolean ``(H, W)``.
    """
    shape = _check_shape(shape, "variable_density")
    calib = _check_calib(calib, shape, "variable_density")
    if not acceleration >= 1:
        raise ValueError(f"variable_density: acceleration must be >= 1, got {acceleration}")
    if power < 0 or floor <= 0:
        raise ValueError(f"variable_density: need power >= 0 and floor > 0, got {power}, {floor}")
    ny, nx = shape
    region = calibration_region(shape, calib)
    budget = int(round(ny * nx / acceleration))
    extra = budget - int(region.sum())
    if extra < 0:
        raise ValueError(
            f"variable_density: calibration block {calib} ({int(region.sum())} points) exceeds the "
            f"budget of {budget} points for acceleration {acceleration}"
        )
    r = _normalised_radius(shape, calib)
    weight = (1 - r / max(r.max(), 1e-12)) ** power + floor
    candidates = np.flatnonzero(~region)
    p = weight.reshape(-1)[candidates]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=extra, replace=False, p=p / p.sum())
    mask = region.copy().reshape(-1)
    mask[chosen] = True
    return torch.from_numpy(mask.reshape(shape))


def radial_trajectory(
    num_spokes: int,
    num_samples: int,
    image_shape: tuple[int, int],
    *,
    golden: bool = False,
    center_out: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Radial k-space trajectory ``(spokes, samples, 2)`` in cycles/FOV.

    Spoke ``k`` has angle ``theta_k`` from the ``W`` (kx) axis; coordinate ``[..., 1]`` is
    ``rho cos theta`` scaled by ``W`` and ``[..., 0]`` is ``rho sin theta`` scaled by ``H``.

    * full spokes (default): ``rho = (j - n/2) / n`` in ``[-1/2, 1/2)``, so every coordinate lies
      in ``[-N/2, N/2)``; uniform angles ``k pi / spokes`` or golden angles ``k pi / phi``
      (about 111.25 deg).
    * ``center_out``: ``rho = j / (2 n)`` in ``[0, 1/2)``; uniform angles ``2 pi k / spokes`` or
      ``k pi (3 - sqrt 5)`` (about 137.51 deg). This equals ``sigpy.mri.radial``.

    Parameters
    ----------
    num_spokes, num_samples
        Number of spokes and readout samples per spoke.
    image_shape
        ``(H, W)``; the coordinates are scaled to this grid.
    golden
        Golden-angle ordering (every prefix of spokes covers k-space nearly uniformly).
    center_out
        Half spokes from the centre instead of full diameters.
    dtype
        Real floating dtype of the result.
    """
    num_spokes, num_samples = int(num_spokes), int(num_samples)
    if num_spokes < 1 or num_samples < 1:
        raise ValueError(f"radial_trajectory: need spokes, samples >= 1, got {num_spokes}, {num_samples}")
    ny, nx = _check_shape(image_shape, "radial_trajectory")
    k = np.arange(num_spokes, dtype=np.float64)
    j = np.arange(num_samples, dtype=np.float64)
    if center_out:
        theta = k * (GOLDEN_ANGLE_HALF if golden else 2 * np.pi / num_spokes)
        rho = j * (0.5 / num_samples)
    else:
        theta = k * (GOLDEN_ANGLE_FULL if golden else np.pi / num_spokes)
        rho = (j - num_samples / 2) / num_samples
    coord = np.empty((num_spokes, num_samples, 2))
    coord[..., 1] = rho[None, :] * np.cos(theta)[:, None] * nx
    coord[..., 0] = rho[None, :] * np.sin(theta)[:, None] * ny
    return torch.from_numpy(coord).to(dtype)


def golden_angle_radial(
    num_spokes: int,
    num_samples: int,
    image_shape: tuple[int, int],
    *,
    center_out: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Golden-angle radial trajectory ``(spokes, samples, 2)``; see :func:`radial_trajectory`."""
    return radial_trajectory(
        num_spokes, num_samples, image_shape, golden=True, center_out=center_out, dtype=dtype
    )
