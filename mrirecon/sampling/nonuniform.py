"""2-D sampling patterns: variable-density Poisson disc and variable-density random masks
(Cartesian), and non-Cartesian trajectories: radial (uniform, golden and tiny golden angle),
variable-density spiral with gradient and slew limits, and stack-of-stars.

Masks are boolean ``(H, W)`` tensors over the ``(ky, kz)`` phase-encoding plane (3-D
Cartesian) or ``(ky, kx)`` of a 2-D simulation.

Trajectories use one unit convention, that of :mod:`mrirecon.functional.nufft` and
:func:`~mrirecon.operators.nufft_sense`: *normalised* k-space, i.e. cycles per field of view
divided by the matrix size, so every coordinate lies in ``[-0.5, 0.5)`` and ``+-0.5`` is the
Nyquist edge of the image grid (multiply by ``(H, W)`` for cycles per FOV, the unit of
``sigpy.mri.radial``). Coordinate ``[..., 0]`` runs along ``H`` (rows, ky), ``[..., 1]`` along
``W`` (columns, kx). All randomness comes from an explicit integer ``seed``
(``numpy.random.Generator``); with ``seed=None`` a trajectory is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mrirecon.core.checks import check_seed
from mrirecon.core.names import accepts_deprecated_names

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
    """Boolean ``(H, W)`` with the ``calib`` block ``(h, w)`` set around the DC sample
    ``(H // 2, W // 2)`` of the centred FFT: rows ``H // 2 - h // 2`` on, as the other centre
    rules (:func:`~mrirecon.sampling.cartesian.center_mask`, ESPIRiT's
    :func:`~mrirecon.calib.espirit.calibration_region`, the SSDU ``centre_block``).

    ``sigpy.mri.poisson`` starts at ``int(H / 2 - h / 2)``: the same rows except for an odd
    block on an even grid, which it puts one row (column) lower, off DC: its ``(1, 1)`` block
    on 32 x 32 was ``(15, 15)``, leaving DC unsampled in 9 of 20 :func:`variable_density` masks,
    and its ``(5, 5)`` block rows 13-17 where ESPIRiT calibrates on 14-18. Masks of even blocks,
    or of any block on an odd grid, are sigpy's."""
    from mrirecon.sampling.split import centre_block

    return centre_block(tuple(shape), tuple(calib)).numpy()


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


@accepts_deprecated_names
def poisson_disc(
    shape: tuple[int, int],
    acceleration: float,
    calib: tuple[int, int] = (0, 0),
    *,
    seed: int,
    crop_corner: bool = True,
    tol: float = 0.02,
    iterations: int = 40,
) -> Tensor:
    """Variable-density Poisson-disc mask ``(H, W)`` with a fully sampled calibration block.

    The exclusion radius grows as ``1 + s r`` with the distance ``r`` from the calibration
    block (each axis normalised to 1; radii scaled per axis for non-square grids, at least one
    pixel), as in ``sigpy.mri.poisson``. The slope ``s`` is found by bisection so that the
    achieved acceleration ``H W / mask.sum()`` is within ``tol`` (relative) of the target. For
    a fixed ``seed`` the candidate order is fixed, so the result is deterministic.

    On the grid a radius above one pixel keeps every sample's 4-neighbours empty, so the disc
    alone reaches no acceleration below about 3.5 (2.8 without ``crop_corner``; sigpy's
    off-grid candidates reach lower). Below that, a centre ellipse (normalised radius ``r0``,
    found by bisection) is sampled fully and the disc of the smallest slope fills the rest: the
    2x and 3x masks sigpy draws, with a denser centre.

    For a fixed order the sample count is not monotone in ``s``, and one step of ``r0`` adds
    a whole ring of points, so bisection can step over every count within ``tol``; then up to 8
    more rings of the centre ellipse are sampled fully, each with a bisection of ``s``.

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
    iterations
        Steps of each bisection before giving up with a ``ValueError``.

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
    check_seed("poisson_disc", seed)
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.flatnonzero(allowed))
    seeded = region & ((r < 1) if crop_corner else True)
    n = max(ny, nx)
    best, best_err, best_acc = None, math.inf, math.nan
    sides = set()  # whether the masks drawn fell above / below the target

    def draw(slope: float, dense: np.ndarray) -> tuple[bool, float]:
        """Draw a mask and keep the closest yet: (within tol, acceleration)."""
        nonlocal best, best_err, best_acc
        radius_x = np.clip((1 + r * slope) * nx / n, 1, None)
        radius_y = np.clip((1 + r * slope) * ny / n, 1, None)
        mask = _sequential_disc(radius_y, radius_x, order, dense)
        achieved = ny * nx / max(int(mask.sum()), 1)
        err = abs(achieved - acceleration) / acceleration
        if err < best_err:
            best, best_err, best_acc = mask, err, achieved
        sides.add(achieved > acceleration)
        return err < tol, achieved

    def bisect_slope(dense: np.ndarray, floor: float) -> tuple[float, float]:
        """Bisect the slope; (acceleration, slope) of the smallest slope tried."""
        lo, hi, lowest = 0.0, float(n), (math.inf, float(n))
        for _ in range(iterations):
            slope = 0.5 * (lo + hi)
            hit, achieved = draw(slope, dense)
            lowest = min(lowest, (achieved, slope), key=lambda a: a[1])
            if hit:
                break
            if achieved < acceleration:
                lo = slope
            elif slope < floor:
                break  # no smaller slope samples more
            else:
                hi = slope
        return lowest

    # Below this slope every radius is under sqrt(2) and the short axis's is clipped to 1, so
    # every point excludes the same neighbours: the same mask, at the disc's lowest acceleration
    saturated = min(math.sqrt(2) - 1, n / min(ny, nx) - 1 if ny != nx else math.inf) / max(
        float(r.max()), 1e-12)
    lowest = bisect_slope(seeded, saturated)
    r_lo, r_hi = 0.0, 0.0
    if best_err >= tol and lowest[0] > acceleration:
        # Below the lowest acceleration of the disc itself: any radius above one pixel keeps
        # the grid's 4-neighbours apart, so a random sequential disc jams at about 36 % of the
        # grid (acceleration ~3.5 with crop_corner, where sigpy's off-grid candidates still go
        # lower). A centre ellipse of normalised radius r0 is then sampled fully, the disc of
        # the smallest slope around it; r0 by bisection (the acceleration falls as r0 grows).
        r_hi = float(r.max()) + 1.0
        for _ in range(iterations):
            r0 = 0.5 * (r_lo + r_hi)
            hit, achieved = draw(lowest[1], seeded | (allowed & (r < r0)))
            if hit:
                break
            if achieved > acceleration:
                r_lo = r0
            else:
                r_hi = r0
    if best_err >= tol and sides == {True, False}:
        # Masks on both sides, none within tol: bisection stepped over the counts within tol.
        # Grow the centre ellipse ring by ring from the densest r0 tried (none after the slope
        # alone), bisecting the slope for each.
        rings = np.unique(r[allowed])
        for ring in rings[max(int(np.searchsorted(rings, r_hi)) - 1, 0):][:8]:
            bisect_slope(seeded | (allowed & (r <= ring)), -1.0)
            if best_err < tol:
                break
    if best_err >= tol:
        calibrated, reachable = int(seeded.sum()), int((allowed | seeded).sum())
        if acceleration > ny * nx / max(calibrated, 1):
            why = (f"the calibration block alone samples {calibrated} of {ny * nx} points "
                   f"(acceleration at most {ny * nx / max(calibrated, 1):.3g})")
        elif acceleration < ny * nx / max(reachable, 1):
            why = (f"at most {reachable} of {ny * nx} points can be sampled (acceleration at "
                   f"least {ny * nx / max(reachable, 1):.3g}"
                   + (": crop_corner=True leaves out the corners)" if crop_corner else ")"))
        else:
            why = f"the closest mask reaches {best_acc:.4g}"
        raise ValueError(
            f"poisson_disc: cannot reach acceleration {acceleration} within {tol:.0%} on {shape} "
            f"with calib {calib}: {why} (closest relative error {best_err:.3f})"
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
    if not round(shape[0] * shape[1] / acceleration) >= 1:  # inf, 1e6: an all-zero mask came back
        raise ValueError(f"variable_density: acceleration {acceleration} leaves no sample of the "
                         f"{shape[0]} x {shape[1]} grid (at most {shape[0] * shape[1]})")
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
    check_seed("variable_density", seed)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(candidates, size=extra, replace=False, p=p / p.sum())
    mask = region.copy().reshape(-1)
    mask[chosen] = True
    return torch.from_numpy(mask.reshape(shape))


def tiny_golden_angle(n: int, *, center_out: bool = False) -> float:
    """The ``n``-th tiny golden angle (Wundrak et al. 2016): ``pi / (phi + n - 1)`` for full
    spokes over ``[0, pi)`` (``n = 1`` is the golden angle, about 111.25 deg; ``n = 7`` about
    23.63 deg); for centre-out spokes over ``[0, 2 pi)`` the same step doubled and taken
    clockwise, ``2 pi - 2 pi / (phi + n - 1)`` (``n = 1``: 137.51 deg, as ``sigpy.mri.radial``)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"tiny_golden_angle: n must be >= 1, got {n}")
    if center_out:
        return 2 * math.pi - 2 * math.pi / (GOLDEN_RATIO + n - 1)
    return math.pi / (GOLDEN_RATIO + n - 1)


def _rotation(seed: int | None, who: str) -> float:
    check_seed(who, seed)
    return 0.0 if seed is None else float(np.random.default_rng(seed).uniform(0, 2 * np.pi))


def nyquist_fraction(spokes: float, matrix: tuple[int, int], *, centre_out: bool = False) -> float:
    """Radial undersampling: ``spokes`` over Nyquist's spoke count ``pi/2 max(H, W)`` for an
    image grid ``matrix`` (centre-out spokes, half lines, count half): the
    ``training_range.nyquist_fraction`` a radial model's card states (written by ``mrirecon
    train radial``) and ``mrirecon run`` checks."""
    full = spokes / 2 if centre_out else spokes
    return float(full) / (math.pi / 2 * max(int(matrix[0]), int(matrix[1])))


def radial_trajectory(
    num_spokes: int,
    num_samples: int,
    *,
    golden: bool = False,
    tiny: int = 1,
    center_out: bool = False,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Radial trajectory ``(spokes, samples, 2)`` in normalised units ``[-0.5, 0.5)``.

    Spoke ``k`` has angle ``theta_k`` from the ``W`` (kx) axis: ``[..., 1] = rho cos theta``,
    ``[..., 0] = rho sin theta``.

    * full spokes (default): ``rho = (j - n/2) / n`` in ``[-1/2, 1/2)``; uniform angles
      ``k pi / spokes`` or golden angles ``k pi / (phi + tiny - 1)``.
    * ``center_out``: ``rho = j / (2 n)`` in ``[0, 1/2)``; uniform angles ``2 pi k / spokes``
      or ``k`` times :func:`tiny_golden_angle` ``(tiny, center_out=True)`` (``tiny = 1``: the
      137.51 deg pattern of ``sigpy.mri.radial``).

    Parameters
    ----------
    num_spokes, num_samples
        Number of spokes and readout samples per spoke.
    golden
        Golden-angle ordering (every prefix of spokes covers k-space nearly uniformly).
    tiny
        Tiny-golden-angle index ``N >= 1`` (with ``golden``): smaller angle steps for bSSFP /
        eddy-current friendly ordering with the same near-uniform coverage.
    center_out
        Half spokes from the centre instead of full diameters.
    seed
        ``None``: first spoke along kx. An integer: the whole pattern is rotated by a random
        angle drawn from it (e.g. a different rotation per frame or slice).
    dtype
        Real floating dtype of the result.
    """
    num_spokes, num_samples = int(num_spokes), int(num_samples)
    if num_spokes < 1 or num_samples < 1:
        raise ValueError(f"radial_trajectory: need spokes, samples >= 1, got {num_spokes}, {num_samples}")
    k = np.arange(num_spokes, dtype=np.float64)
    j = np.arange(num_samples, dtype=np.float64)
    if golden:
        step = tiny_golden_angle(tiny, center_out=center_out)
    else:
        step = (2 * np.pi if center_out else np.pi) / num_spokes
    theta = k * step + _rotation(seed, "radial_trajectory")
    rho = j * (0.5 / num_samples) if center_out else (j - num_samples / 2) / num_samples
    coord = np.empty((num_spokes, num_samples, 2))
    coord[..., 1] = rho[None, :] * np.cos(theta)[:, None]
    coord[..., 0] = rho[None, :] * np.sin(theta)[:, None]
    # the rotation can put an end point at +0.5 up to rounding: keep the half-open band
    np.clip(coord, -0.5, np.nextafter(0.5, 0), out=coord)
    return torch.from_numpy(coord).to(dtype)


def golden_angle_radial(
    num_spokes: int,
    num_samples: int,
    *,
    tiny: int = 1,
    center_out: bool = False,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Golden-angle radial trajectory ``(spokes, samples, 2)``; see :func:`radial_trajectory`."""
    return radial_trajectory(num_spokes, num_samples, golden=True, tiny=tiny,
                             center_out=center_out, seed=seed, dtype=dtype)


#: gyromagnetic ratio of 1H over 2 pi, Hz / T
GAMMA_HZ_PER_T = 42.577478e6


def spiral_trajectory(
    matrix_size: int,
    fov: float,
    num_interleaves: int,
    *,
    undersampling_edge: float = 1.0,
    density_power: float = 2.0,
    max_gradient: float = 40e-3,
    max_slew: float = 150.0,
    dwell_time: float = 4e-6,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Variable-density Archimedean spiral ``(interleaves, samples, 2)``, normalised units.

    The spiral ``k(theta) = r(theta) exp(i theta)`` has ring spacing
    ``dr/dtheta = interleaves / (2 pi FOV(r))`` with a field of view that shrinks from ``fov`` at
    the centre to ``fov / undersampling_edge`` at ``k_max = matrix_size / (2 fov)``:
    ``FOV(r) = fov / (1 + (undersampling_edge - 1) (r / k_max) ** density_power)``
    (``undersampling_edge = 1``: uniform density, fully sampled for ``interleaves`` shots).
    It is traversed in minimum time under the limits ``|G| <= max_gradient`` and
    ``|dG/dt| <= max_slew`` (curvature-limited speed, forward pass of Lustig et al.'s
    time-optimal design, starting at rest, with a 2 % margin on both limits), sampled every
    ``dwell_time``; interleave ``i`` is rotated by ``2 pi i / interleaves``.

    Parameters
    ----------
    matrix_size
        Image matrix ``N`` (the resolution is ``fov / N``).
    fov
        Field of view in metres.
    num_interleaves
        Number of spiral arms (shots).
    undersampling_edge, density_power
        Variable density: undersampling factor reached at ``k_max`` and the exponent of its rise.
    max_gradient, max_slew
        Limits in T/m and T/m/s.
    dwell_time
        Sampling interval in s.
    seed
        ``None``: first arm starts along kx; an integer rotates the pattern by a random angle.
    dtype
        Real floating dtype.

    Returns
    -------
    Tensor
        ``(interleaves, samples, 2)`` in ``[-0.5, 0.5)``; the readout lasts
        ``samples * dwell_time``.
    """
    shots = int(num_interleaves)
    k = _spiral_arm(matrix_size, fov, shots, undersampling_edge, density_power, max_gradient,
                    max_slew, dwell_time)
    arms = np.exp(1j * (2 * np.pi * np.arange(shots) / shots + _rotation(seed, "spiral_trajectory")))
    kk = arms[:, None] * k[None, :]
    coord = np.stack([kk.imag, kk.real], axis=-1)
    np.clip(coord, -0.5, np.nextafter(0.5, 0), out=coord)
    return torch.from_numpy(coord).to(dtype)


#: the spiral's design curve holds one point every 1 / _SPIRAL_STEPS of a turn
_SPIRAL_STEPS = 2000


def max_spiral_interleaves(matrix_size: int, undersampling_edge: float = 1.0,
                           density_power: float = 2.0) -> int:
    """The most arms :func:`spiral_trajectory` designs for ``matrix_size`` (about 1000 per pixel
    of ``matrix_size``): an arm's design curve needs at least three points (one every 1/2000 of
    a turn) before it reaches ``k_max``; with more arms its first step is already there, too few
    points to shape it. Far fewer are usual (``matrix_size // 8`` in the simulations)."""
    edge0 = float(undersampling_edge) if density_power == 0 else 1.0  # FOV(0) = fov / edge0
    return max(math.ceil(_SPIRAL_STEPS / 2 * int(matrix_size) / edge0) - 1, 1)


def _too_many_arms(shots: int, n: int, most: int) -> str:
    return (f"spiral_trajectory: num_interleaves {shots} is too many arms for matrix_size {n}: "
            f"each would reach the edge of k-space within one step of its design curve (1/"
            f"{_SPIRAL_STEPS} of a turn), too few points to shape it; use at most {most} "
            f"(matrix_size // 8 = {max(n // 8, 1)} is usual)")


def spiral_samples(matrix_size: int, fov: float, num_interleaves: int, *,
                   undersampling_edge: float = 1.0, density_power: float = 2.0,
                   max_gradient: float = 40e-3, max_slew: float = 150.0,
                   dwell_time: float = 4e-6) -> int:
    """Samples per arm of :func:`spiral_trajectory` with these arguments, without building the
    ``(interleaves, samples, 2)`` array (for memory estimates); raises as it does."""
    return int(_spiral_arm(matrix_size, fov, num_interleaves, undersampling_edge, density_power,
                           max_gradient, max_slew, dwell_time).size)


def _spiral_arm(matrix_size, fov, num_interleaves, undersampling_edge, density_power,
                max_gradient, max_slew, dwell_time) -> np.ndarray:
    """The first arm of :func:`spiral_trajectory` (complex, ``k_max`` -> 0.5), arguments checked."""
    n, fov, shots = int(matrix_size), float(fov), int(num_interleaves)
    if n < 2 or fov <= 0 or shots < 1:
        raise ValueError(f"spiral_trajectory: need matrix_size >= 2, fov > 0, interleaves >= 1; "
                         f"got {n}, {fov}, {shots}")
    if (undersampling_edge < 1 or density_power < 0 or max_gradient <= 0 or max_slew <= 0
            or dwell_time <= 0):
        raise ValueError("spiral_trajectory: need undersampling_edge >= 1, density_power >= 0 "
                         "and positive limits")
    most = max_spiral_interleaves(n, undersampling_edge, density_power)
    if shots > most:  # numpy's "Shape of array too small to calculate a numerical gradient"
        raise ValueError(_too_many_arms(shots, n, most))
    kmax = n / (2 * fov)  # cycles / m
    # in k units / s and / s^2; 2 % margin so that the sampled waveform keeps the limits too
    gmax, smax = 0.98 * GAMMA_HZ_PER_T * max_gradient, 0.98 * GAMMA_HZ_PER_T * max_slew

    # the curve: integrate dr/dtheta on a fine theta grid up to k_max
    dtheta = 2 * np.pi / _SPIRAL_STEPS
    rs, r = [0.0], 0.0
    while r < kmax:
        fov_r = fov / (1 + (undersampling_edge - 1) * (r / kmax) ** density_power)
        r += shots / (2 * np.pi * fov_r) * dtheta
        rs.append(r)
    if len(rs) < 3:  # the limit's rounding at its very edge
        raise ValueError(_too_many_arms(shots, n, shots - 1))
    rad = np.minimum(np.asarray(rs), kmax)
    theta = np.arange(rad.size) * dtheta
    curve = rad * np.exp(1j * theta)
    seg = np.abs(np.diff(curve))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    # curvature from the discrete curve, then the speed limit per point
    d1 = np.gradient(curve, s, edge_order=2)
    d2 = np.gradient(d1, s, edge_order=2)
    kappa = np.abs((d1.conj() * d2).imag) / np.maximum(np.abs(d1), 1e-12) ** 3
    vmax = np.minimum(gmax, np.sqrt(smax / np.maximum(kappa, 1e-12)))
    v = np.empty_like(s)
    v[0] = 0.0
    for i in range(1, s.size):  # forward pass: accelerate with what the slew leaves over
        centripetal = v[i - 1] ** 2 * kappa[i - 1]
        along = np.sqrt(max(smax**2 - centripetal**2, 0.0))
        v[i] = min(vmax[i], np.sqrt(v[i - 1] ** 2 + 2 * along * seg[i - 1]))
    v[0] = v[1] / 2 if s.size > 1 else 0.0
    dt = seg / np.maximum(0.5 * (v[1:] + v[:-1]), 1e-12)
    t = np.concatenate([[0.0], np.cumsum(dt)])
    samples = int(np.floor(t[-1] / dwell_time))
    if samples < 2:  # was an empty trajectory (interleaves, 0, 2), or one point per arm
        raise ValueError(f"spiral_trajectory: dwell_time {dwell_time:g} s gives {samples} "
                         f"sample(s) per arm over its {t[-1]:.3g} s readout; at least 2 are "
                         "needed: use a shorter dwell_time")
    ts = np.arange(samples) * dwell_time
    k = np.interp(ts, t, curve.real) + 1j * np.interp(ts, t, curve.imag)
    k = k / kmax * 0.5  # normalised: k_max -> 0.5
    return k


def stack_of_stars(
    num_partitions: int,
    num_spokes: int,
    num_samples: int,
    *,
    golden: bool = True,
    tiny: int = 1,
    rotate_partitions: bool = True,
    seed: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """3-D stack-of-stars ``(partitions, spokes, samples, 3)``: Cartesian ``kz`` partitions of
    radial spokes, normalised units, columns ``(kz, ky, kx)``.

    ``kz = (p - P/2) / P``; each partition holds :func:`radial_trajectory` (``golden``,
    ``tiny``). With ``rotate_partitions`` partition ``p`` is rotated by ``p`` golden-angle
    steps / ``spokes`` so neighbouring partitions interleave. After an inverse FFT along ``kz``
    each partition is a 2-D radial problem on ``traj[p, ..., 1:]``.
    """
    parts = int(num_partitions)
    if parts < 1:
        raise ValueError(f"stack_of_stars: need partitions >= 1, got {parts}")
    base = radial_trajectory(num_spokes, num_samples, golden=golden, tiny=tiny, seed=seed,
                             dtype=torch.float64).numpy()
    out = np.empty((parts, base.shape[0], base.shape[1], 3))
    step = tiny_golden_angle(tiny) / max(int(num_spokes), 1) if rotate_partitions else 0.0
    for p in range(parts):
        a = p * step
        c, s_ = np.cos(a), np.sin(a)
        out[p, ..., 0] = (p - parts / 2) / parts
        out[p, ..., 2] = c * base[..., 1] - s_ * base[..., 0]
        out[p, ..., 1] = s_ * base[..., 1] + c * base[..., 0]
    np.clip(out, -0.5, np.nextafter(0.5, 0), out=out)
    return torch.from_numpy(out).to(dtype)
