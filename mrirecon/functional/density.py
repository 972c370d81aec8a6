"""Density compensation weights for non-Cartesian k-space (normalised coordinates).

Scale convention: a weight is ``H W`` times the k-space area a sample stands for (in
normalised units, where the full grid ``[-0.5, 0.5)^2`` has area 1). Then the gridding
reconstruction ``N^H (w * N x)`` of an image ``x`` is ``x`` low-pass filtered to the sampled
region, at the right intensity (with the orthonormal scaling of
:func:`mrirecon.functional.nufft.nufft`).

* :func:`radial_density`: the analytic ramp ``|k|`` for radial spokes (uniform or golden).
* :func:`pipe_menon_density`: Pipe and Menon's fixed-point iteration ``w <- w / (G G^T w)`` with
  a positive spreading kernel ``G`` (any trajectory); the kernel's integral sets the scale.
* :func:`gridding_gain`: the intensity that weights give a gridded image (1 at this scale).
"""

from __future__ import annotations

import math
import numbers
import re

import torch
from torch import Tensor

from mrirecon.core.caches import BoundedLRU, register as register_cache
from mrirecon.core.names import OutdatedPackage, accepts_deprecated_names
from mrirecon.functional.nufft import (_execute, _plan, _same_values, checked_eps,
                                       checked_trajectory)


def _check(trajectory: Tensor, shape: tuple[int, int], who: str) -> Tensor:
    """The shared trajectory check of :func:`~mrirecon.operators.nufft.nufft_sense` (real,
    finite naming the readout, normalised): weights for a trajectory in radians or cycles/FOV
    were returned for another k-space without a word."""
    return checked_trajectory(trajectory, shape, who)


def check_radial(trajectory: Tensor, who: str = "radial_density") -> None:
    """Refuse a trajectory ``(readouts, samples, 2)`` whose readouts are not straight lines
    through the k-space centre (radial spokes, full or centre-out). A sample may lie off its
    readout's line through the centre by the rounding of single-precision coordinates (ISMRMRD
    stores float32): 64 float32 ulps of the largest ``|k|``; a spiral interleave lies off by a
    sizeable share of its radius (its ramp weights gave a gridded image at 0.144 of the
    object's intensity)."""
    t = trajectory.detach().to(torch.float64).cpu()
    rho = torch.linalg.vector_norm(t, dim=-1)
    far = t[torch.arange(t.shape[0]), rho.argmax(-1)]  # (readouts, 2): each readout's direction
    length = torch.linalg.vector_norm(far, dim=-1, keepdim=True)
    u = far / length.clamp_min(torch.finfo(t.dtype).tiny)
    off = (t[..., 0] * u[:, None, 1] - t[..., 1] * u[:, None, 0]).abs()  # distance from the line
    f32 = torch.finfo(torch.float32)
    tol = 64 * f32.eps * max(float(rho.max()), f32.tiny)
    worst = off.amax(-1)
    if bool((worst > tol).any()):
        bad = (worst > tol).nonzero().flatten()
        r = int(bad[0])
        raise ValueError(
            f"{who}: {len(bad)} of {t.shape[0]} readouts are not straight lines through the "
            f"k-space centre (first: readout {r}, a sample {float(worst[r]):.3g} off its line, "
            f"allowed {tol:.2g}): the analytic ramp holds for radial spokes only; use "
            "pipe_menon_density for spirals and other trajectories")


def radial_density(trajectory: Tensor, shape: tuple[int, int]) -> Tensor:
    """Analytic ramp weights ``(spokes, samples)`` for a radial trajectory ``(spokes, samples, 2)``.

    Every readout must be a straight line through the centre (:func:`check_radial`; spirals:
    :func:`pipe_menon_density`), with finite, normalised coordinates.

    A sample on one of ``S`` spokes stands for the ring sector between the midpoints to its
    neighbours along its line, ``dphi / 2 (r_hi^2 - r_lo^2)`` (``rho * dphi * drho`` for
    evenly spaced samples), with ``dphi = pi / S`` for full spokes (each spoke is two half
    lines) or ``2 pi / S`` for centre-out spokes; a full spoke's sample whose stretch crosses
    the centre covers both half lines, a centre-out spoke's first sample the sector from the
    centre (whatever its distance from it). Each sample's own spacing counts (ramp-sampled UTE
    spokes). Times ``H W``.
    """
    trajectory = _check(trajectory, shape, "radial_density")
    if trajectory.ndim != 3 or trajectory.shape[1] < 2:
        raise ValueError(f"radial_density: need (spokes, samples >= 2, 2), got {tuple(trajectory.shape)}")
    check_radial(trajectory)
    t = trajectory.to(torch.float64)
    centre_out = centre_out_spokes(t)
    dphi = (2 * math.pi if centre_out else math.pi) / t.shape[0]
    s, _ = _along(t)
    mid = (s[:, 1:] + s[:, :-1]) / 2  # the sample's stretch of its line: between the midpoints
    lo = torch.cat([s[:, :1] - (mid[:, :1] - s[:, :1]), mid], dim=1)
    hi = torch.cat([mid, s[:, -1:] + (s[:, -1:] - mid[:, -1:])], dim=1)
    if centre_out:  # the half line starts at the centre, whose disc the spokes' firsts share
        lo, hi = lo.clamp_min(0), hi.clamp_min(0)
    # the sector's area dphi / 2 (hi^2 - lo^2) by signed squares: a stretch across the centre
    # covers both half lines of a full spoke (dphi = pi / S each)
    w = (dphi / 2) * (hi * hi.abs() - lo * lo.abs()).abs()
    return w * (int(shape[0]) * int(shape[1]))


def _along(t: Tensor) -> tuple[Tensor, Tensor]:
    """``(s, step)`` ``(readouts, samples)`` of radial readouts ``t``: each sample's signed
    position along its readout's line (positive towards its farthest sample) and the k-space
    length it stands for along it, half the distance between its neighbours (the end samples:
    the distance to their one neighbour). (One step for all, measured between spoke 0's first
    two samples, weighted ramp-sampled (UTE) spokes as if evenly sampled: a gridded image at
    0.095 of the object's intensity.)"""
    rho = torch.linalg.vector_norm(t, dim=-1)
    far = t[torch.arange(t.shape[0]), rho.argmax(-1)]
    u = far / torch.linalg.vector_norm(far, dim=-1, keepdim=True).clamp_min(
        torch.finfo(t.dtype).tiny)
    s = (t * u[:, None, :]).sum(-1)
    gap = (s[:, 1:] - s[:, :-1]).abs()
    step = torch.cat([gap[:, :1], (gap[:, 1:] + gap[:, :-1]) / 2, gap[:, -1:]], dim=1)
    return s, step


def centre_out_spokes(trajectory: Tensor) -> bool:
    """Every readout of ``trajectory`` ``(readouts, samples, 2)`` lies on one side of the
    k-space centre (no sample more than half its step behind it): centre-out spokes, half
    lines, two to a full spoke (the radial density's angular step, the undersampling a card's
    range is read in). Whether the first sample sits at the centre does not matter: spokes
    starting half a step out were taken for full spokes, every weight halved."""
    if trajectory.ndim != 3 or trajectory.shape[1] < 2:
        return False
    s, step = _along(trajectory.detach().to(torch.float64))
    return bool(torch.all(s > -step / 2))


@accepts_deprecated_names
def pipe_menon_density(trajectory: Tensor, shape: tuple[int, int], *, iterations: int = 30,
                       oversampling: float = 2.0, eps: float = 1e-3) -> Tensor:
    """Iterative density compensation (Pipe and Menon 1999) for any 2-D trajectory ``(*K, 2)``.

    ``w <- w / (G G^T w)``, ``G`` the backend's interpolation from an ``oversampling``-times finer
    grid with its (positive, compact) kernel at tolerance ``eps`` and ``G^T`` the spreading. At
    the fixed point ``sum_i w_i phi(k_j - k_i) = 1``, so ``w_i`` approximates the area around
    ``k_i`` divided by the kernel's integral, which is measured once (a unit sample spread onto
    the grid) to give the weights the scale of :func:`radial_density`.

    ``iterations`` must be an integer >= 1 (0 or less returned the starting weights, all 1: a
    gridded image 150x too bright) and ``oversampling`` a number >= 2 (1 and below failed in the
    backend with a bare RuntimeError; 1.25 and 1.5 gave weights that grid a smooth object with
    17 % and 7 % error, 0.4 % at 2).

    The spreading needs finufft >= 2.4 (its ``spreadinterponly`` option); an older finufft is
    refused with an ``ImportError`` naming the version (:func:`_check_backend`).

    Returns
    -------
    Tensor
        ``K``-shaped float64 weights.
    """
    trajectory = _check(trajectory, shape, "pipe_menon_density")
    iterations, oversampling = _checked_settings(iterations, oversampling)
    eps = 1e-3 if eps is None else checked_eps(eps, torch.complex128, "pipe_menon_density")
    _check_backend()
    h, w = int(shape[0]), int(shape[1])
    grid = (int(math.ceil(oversampling * h)), int(math.ceil(oversampling * w)))
    pts = trajectory.detach().reshape(-1, 2).to(torch.float64).cpu().contiguous()
    m = pts.shape[0]
    opts = {"spreadinterponly": 1, "upsampfac": float(oversampling)}
    spread = _plan(1, pts, grid, 1, torch.complex128, eps, **opts)
    interp = _plan(2, pts, grid, 1, torch.complex128, eps, **opts)
    weights = torch.ones(m, dtype=torch.complex128)
    for _ in range(int(iterations)):
        density = _execute(interp, _execute(spread, weights, grid), (m,)).real
        weights = weights / density.clamp_min(1e-12)
    # integral of the kernel in normalised k units: one unit sample at the origin
    origin = torch.zeros(1, 2, dtype=torch.float64)
    unit = _plan(1, origin, grid, 1, torch.complex128, eps, **opts)
    one = _execute(unit, torch.ones(1, dtype=torch.complex128), grid)
    # G G^T convolves with psi = sum_g phi(g - k) phi(g - k'), whose integral is
    # (sum_g phi(g))^2 times the grid cell area
    integral = float(one.real.sum()) ** 2 / (grid[0] * grid[1])
    return (weights.real * integral * h * w).reshape(trajectory.shape[:-1])


def _check_backend() -> None:
    """Refuse a finufft older than 2.4, which has no ``spreadinterponly`` option: finufft 2.3
    drops an unknown option with only a warning and runs the full (deconvolved) NUFFT, whose
    weights came out 1e144 times too large (a gridded image 9e109 too bright, then NaN)."""
    import finufft

    version = str(getattr(finufft, "__version__", "") or _distribution_version("finufft"))
    found = re.match(r"(\d+)\.(\d+)", version)
    if found is None or (int(found[1]), int(found[2])) < _SPREADINTERPONLY:
        raise OutdatedPackage(
            f"pipe_menon_density needs finufft >= 2.4 (its spreadinterponly option: the plain "
            f"spreading and interpolation), found finufft {version or '(unknown version)'}, which "
            f"ignores that option and gives weights 1e144 times too large: "
            f"pip install 'finufft>=2.4'")


_SPREADINTERPONLY = (2, 4)  # the first finufft with the spreadinterponly option


def _distribution_version(name: str) -> str:
    import importlib.metadata as md

    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return ""


def _checked_settings(iterations, oversampling) -> tuple[int, float]:
    """``iterations`` (an integer >= 1) and ``oversampling`` (a finite number >= 2) of
    :func:`pipe_menon_density`, else a ``ValueError`` naming the argument."""
    whole = isinstance(iterations, numbers.Integral) or (
        isinstance(iterations, numbers.Real) and float(iterations).is_integer())
    if isinstance(iterations, bool) or not whole or iterations < 1:
        raise ValueError(f"pipe_menon_density: iterations must be an integer >= 1 (the fixed-point "
                         f"iterations; default 30), got {iterations!r}")
    if isinstance(oversampling, bool) or not isinstance(oversampling, numbers.Real) \
            or not 2 <= float(oversampling) < math.inf:
        raise ValueError(f"pipe_menon_density: oversampling must be a number >= 2 (the fine "
                         f"grid's size over the image's; default 2: at 1.5 the weights grid a "
                         f"smooth object with 7 % error, at 1.25 17 %), got {oversampling!r}")
    return int(iterations), float(oversampling)


def gridding_gain(weights: Tensor, trajectory: Tensor, shape: tuple[int, int]) -> float:
    """The intensity that ``weights`` give a gridded image: ``N^H (w * N x)`` at the centre of
    a smooth object ``x`` (a Gaussian of ``min(H, W) / 6`` pixels, whose spectrum falls to
    ``1 / e`` within 1.35 grid cells), divided by ``x`` there; 1 for weights of this module's
    scale. The object's spectrum is taken analytically (the samples of an isotropic Gaussian):
    ``2 pi s^2 / (H W) sum_j w_j exp(-2 pi^2 s^2 |k_j|^2)`` with ``s`` in pixels and ``k`` in
    normalised units.

    It is set by the samples near the k-space centre, which every usable trajectory samples
    densely: unlike the weights' sum, which also counts the sparse periphery (Pipe-Menon's
    weights saturate there on undersampled radial spokes and sum to 0.39 of the analytic ramp
    on 40 spokes at 128 x 128, where both grid a smooth object at its intensity within 1 %)."""
    h, w = int(shape[0]), int(shape[1])
    s = min(h, w) / 6
    k = torch.as_tensor(trajectory).detach().to(torch.float64).cpu().reshape(-1, 2)
    wt = torch.as_tensor(weights).detach().to(torch.float64).cpu()
    wt = torch.broadcast_to(wt, trajectory.shape[:-1]).reshape(-1)
    spectrum = torch.exp(-2 * math.pi**2 * s**2 * (k**2).sum(-1))
    return float(2 * math.pi * s**2 / (h * w) * (wt * spectrum).sum())


_CACHE = BoundedLRU(4)
register_cache(_CACHE.clear)


def cached_pipe_menon_density(trajectory: Tensor, shape: tuple[int, int]) -> Tensor:
    """:func:`pipe_menon_density` of ``trajectory`` for an image ``shape`` on the trajectory's
    device, computed (on the host) and moved there once per trajectory tensor (the last four
    are kept): models call it on every forward pass with the operator's trajectory, which stays
    the same tensor across slices and training steps (the cache held the host weights, and each
    use copied them to the device again). A cached result is returned only while the tensor
    holds the coordinates it was computed for (a snapshot is compared: writes through a numpy
    view of the tensor bump no version). Threads may call it at once (the cache is an
    :class:`~mrirecon.core.caches.BoundedLRU`)."""
    if trajectory.is_inference():  # no version counter: an in-place edit would go unseen
        return pipe_menon_density(trajectory, shape).to(trajectory.device)
    key = (trajectory.data_ptr(), tuple(trajectory.shape), tuple(int(n) for n in shape),
           str(trajectory.device))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is trajectory and hit[1] == trajectory._version \
            and _same_values(hit[2], trajectory.detach()):
        return hit[3]
    w = pipe_menon_density(trajectory, shape).to(trajectory.device)
    _CACHE.put(key, (trajectory, trajectory._version, trajectory.detach().clone(), w))
    return w
