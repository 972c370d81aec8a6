"""Is a CT sinogram what its geometry says? Consistency checks of the data against
``attrs/geometry``, for :func:`~mrirecon.pipeline.stages_ct.data_warnings`.

* Parallel beam: views half a turn apart hold the same rays, mirrored
  (:func:`opposite_view_mismatch`); rays that miss the image read air (:func:`missing_rays`).
* Fan beam: every ray is measured twice over a full turn (and over a short scan of 180° plus the
  fan): the ray at view angle ``β`` and fan angle ``γ`` is the ray at ``(β + π - 2γ, -γ)``
  (:func:`~mrirecon.pipeline.ct_fan_check.conjugate_mismatch`,
  :func:`~mrirecon.pipeline.ct_fan_check.fan_geometry_warning`, in their own module). A geometry whose lengths are in
  another unit or convention (detector pitch at the isocentre instead of at the detector,
  distances or pitch in pixels, a curved pitch as an angle, ASTRA's origin_det as the source
  distance, mirrored fan angles, the other detector shape) or a square sinogram stored
  transposed gave 7-23 dB images with no word naming the geometry
  (:func:`~mrirecon.pipeline.ct_fan_check._likely_causes`).
* Dropped projections: views that read zero in every bin are left out (:func:`dead_views`,
  :func:`drop_dead_views`), not taken as measured zeros.
* Parallel beam: the rotation axis projects where the geometry says (``detector_offset``): each
  view's centre of mass is ``c + a cos θ + b sin θ`` (Helgason-Ludwig, order 1), and ``c`` is
  the axis (:func:`centre_offset`, :func:`centre_warning`). skimage's ``radon`` with an even number
  of detector bins, or a scanner's centre-of-rotation error, put it 0.5-2 bins off: 21.6 / 20.3 / 16.7 dB
  where the right centre gives 29 dB, with no word.
* Pre-log data: transmission ``I / I0`` (or percent) stored where line integrals belong reads
  air as its brightest value (:func:`transmission_warning`); it was reported as truncated, at
  another scale, its reference rotated and its slices reversed (10 / -18.6 dB).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.ct_plausibility import FLOOR_RTOL, count_floor

if TYPE_CHECKING:
    from mrirecon.pipeline.schema import UndersampleConfig
    from mrirecon.pipeline.stages_ct import CTSlice

# ---- parallel beam ----------------------------------------------------------------------------

#: Parallel beam: the relative difference between views half a turn apart (one mirrored, both
#: box-averaged along the detector) above which the angles cannot be right. Photon noise gives
#: 0.01 / 0.10 / 0.19 at 4096 / 64 / 16 photons per bin; a half-turn scan labelled as a full
#: turn 0.34-0.38 (fan-beam data labelled parallel: only ~0.06, not detected).
OPPOSITE_MISMATCH = 0.25


def axis_mirror(p: Tensor, geometry: CTGeometry) -> Tensor:
    """``p (..., detectors)`` mirrored about the detector position of the rotation axis: bin
    ``i`` holds ``p`` at ``-u_i`` (``u`` from the axis; :attr:`CTGeometry.detector_positions`),
    i.e. at index ``n - 1 - i + 2 detector_offset / detector_spacing``, linearly interpolated
    and zero off the detector; the plain flip for a centred detector."""
    flipped = p.flip(-1)
    shift = 2 * geometry.detector_offset / geometry.detector_spacing
    if shift == 0:
        return flipped
    n = p.shape[-1]
    pos = torch.arange(n, dtype=torch.float64, device=p.device) - shift  # index into flipped
    i0 = torch.floor(pos)
    f = (pos - i0).to(p.dtype)
    i0 = i0.long()
    out = torch.zeros_like(p)
    for idx, w in ((i0, 1 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < n)
        out = out + torch.where(ok, flipped[..., idx.clamp(0, n - 1)] * w, 0.0)
    return out


def mirror_on_detector(geometry: CTGeometry, device=None) -> Tensor:
    """``(detectors,)`` bool: the bins whose mirror image about the rotation axis lies on the
    detector (every bin of a centred one; an offset detector's long side beyond its short one
    has no mirrored bin)."""
    ones = torch.ones(1, geometry.num_detectors, dtype=torch.float64, device=device)
    return axis_mirror(ones, geometry)[0] > 0.999


def opposite_pairs(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(i, j)``: the views ``i`` (ascending) that have a partner ``j`` half a turn away: the
    view whose angle is nearest to ``angle_i + pi`` (mod ``2 pi``; the first in view order of
    views at the same angle, or equally near), kept when within a quarter of the median
    angular step; both empty when no view has one (or the median step is 0).

    The angles are sorted once and each ``angle_i + pi`` is looked up by binary search between
    its two neighbours (wrapped around the circle): ``O(views log views)`` time and
    ``O(views)`` memory. Was: a views x views matrix of angle differences, 15.6 s and 11.9 GiB
    at 20 000 views (the FBP itself 0.2 s) and a ``MemoryError`` of 74.5 GiB at 100 000."""
    a = np.mod(np.asarray(angles, dtype=np.float64).reshape(-1), 2 * np.pi)
    n = len(a)
    none = np.zeros(0, dtype=np.int64)
    if n < 2:
        return none, none
    order = np.argsort(a, kind="stable")  # equal angles stay in view order
    s = a[order]
    step = np.median(np.diff(s))
    if not step > 0:
        return none, none
    k = np.searchsorted(s, np.mod(a + np.pi, 2 * np.pi))
    # the two neighbours of each target on the circle, each moved to the first of its equals
    cand = np.stack([(k - 1) % n, k % n], 1)
    cand = np.searchsorted(s, s[cand], side="left")
    j = order[cand]  # (views, 2): view indices, the first of equal angles being the lowest
    gap = np.abs(np.angle(np.exp(1j * (a[j] - a[:, None] - np.pi))))  # a_j - a_i - pi
    # the nearer one; equally near: the lower view index (as a scan in view order finds it)
    pick = np.where((gap[:, 1] < gap[:, 0]) | ((gap[:, 1] == gap[:, 0]) & (j[:, 1] < j[:, 0])),
                    1, 0)
    rows = np.arange(n)
    i = np.nonzero(gap[rows, pick] < step / 4)[0]
    return i, j[i, pick[i]]


def opposite_view_mismatch(sino: Tensor, geometry: CTGeometry) -> float | None:
    """``||p(a + pi, s) - p(a, -s)|| / ||p||`` over the views that have a partner half a turn
    away (within a quarter of the angular step, :func:`opposite_pairs`: ``O(views log
    views)``) and the bins whose mirror ``-s`` lies on the detector; ``None`` when no view has
    one or the beam is fan."""
    if geometry.beam != "parallel" or geometry.num_views < 2:
        return None
    pairs, partners = opposite_pairs(np.asarray(geometry.angles))
    if len(pairs) == 0:
        return None
    i, j = torch.as_tensor(pairs), torch.as_tensor(partners)
    width = max(1, sino.shape[-1] // 16) | 1  # odd: a box average centred on each bin; noise
    smooth = torch.nn.functional.avg_pool1d(  # falls by ~sqrt(width), a geometric mismatch stays
        sino[None], width, stride=1, padding=width // 2, count_include_pad=False)[0]
    # only bins whose mirror lies on the detector: an offset (half-fan) detector's long side
    # beyond its short one has no partner half a turn away (it read 48 % apart, correct data)
    inside = mirror_on_detector(geometry, sino.device)
    first = smooth[..., i, :][..., inside]
    second = axis_mirror(smooth[..., j, :], geometry)[..., inside]
    return float((second - first).norm() / first.norm().clamp_min(1e-30))


def missing_rays(sino: Tensor, geometry: CTGeometry) -> tuple[int, float, float] | None:
    """Parallel beam: ``(bins, line integral, radius mm)`` for the detector bins whose rays miss
    the image's circumscribed circle (by more than a pixel): how many, and the largest of their
    means over the views; ``None`` when fewer than 4 bins miss it.
    They can only read air; a geometry off by 2x (detector spacing, pixel size) left 10-14 dB
    images with exit 0 while such bins read up to 81 % of the 99th percentile."""
    if geometry.beam != "parallel":
        return None
    radius = geometry.image_radius
    outside = torch.from_numpy(np.abs(geometry.detector_positions) > radius + geometry.pixel_size)
    if int(outside.sum()) < 4:
        return None
    # the brightest such bin, averaged over the views (noise averages out; air reads ~0)
    return int(outside.sum()), float(sino[..., outside].mean(-2).max()), radius


def edge_levels(sino: Tensor, geometry: CTGeometry, k: int) -> list[float]:
    """``[first, last]``: the mean line integral of the ``k`` outer bins on either side of the
    detector that must read air for the object to lie inside the field of view. A full turn on
    an offset (half-fan) detector measures the object beyond its short side with the long one
    (:func:`~mrirecon.operators.fbp.offset_weights`): its short side's outer bins lie inside
    the object by design and read 0 here (a half-fan scan's one-sided profile was called
    "truncated")."""
    from mrirecon.operators.fbp import symmetric_detector, _redundancy

    edges = [float(sino[..., :k].mean()), float(sino[..., -k:].mean())]
    if _redundancy(geometry, None) == "offset":
        _, before, _ = symmetric_detector(geometry)
        edges[0 if before else 1] = 0.0  # the short side, extended below or above
    return edges



def offset_short_side_note(geometry: CTGeometry, edges: list[float], k: int,
                           air: float) -> str:
    """For projections truncated on the short side of an offset detector by a scan short of a
    full turn: the object beyond the short side is measured from one side of the axis only,
    which only a full turn completes (half-fan scans); else ``""``. Only where the long side
    reaches at least ``k`` bins (the edge window of ``edges``) beyond the short one and its own
    outer bins read air (at most ``air``): a detector a quarter channel off the axis, truncated
    on both sides, was told to scan a full turn, which measures no more of the object."""
    from mrirecon.operators.fbp import offset_weights, scan_coverage, symmetric_detector

    positions = geometry.fan_angles if geometry.beam == "fan" else geometry.detector_positions
    if offset_weights(positions) is None:
        return ""
    _, before, after = symmetric_detector(geometry)
    short, long = (0, 1) if before else (1, 0)
    if max(before, after) < k or edges[long] > air or edges[short] <= air:
        return ""  # no wider side, or truncated on the long side too: truly truncated
    span, _ = scan_coverage(np.asarray(geometry.angles, dtype=np.float64))
    return (f". The truncated side is the short side of an offset detector (detector_offset "
            f"{geometry.detector_offset:.4g} mm): what lies beyond it is measured by the long "
            "side half a turn later, so only a full turn measures it (a half-fan scan), and "
            f"these views span {math.degrees(span):.0f}°: scan a full turn, or is "
            "detector_offset right?")

#: Parallel beam: a rotation axis this many detector bins from where the geometry puts it is
#: reported (:func:`centre_warning`), and only when it also lies :data:`CENTRE_SE_FACTOR` standard
#: errors of the fit away. skimage's ``radon`` with an even bin count reads 0.50 (standard
#: error ~0).
CENTRE_TOLERANCE_BINS = 0.25
#: ... standard errors of the fitted axis (from the fit's residuals): photon noise in the air
#: bins moves each view's centre of mass with a lever arm of up to half the detector, so a
#: small object (20-30 % of the detector) at 30 views / 1024 photons per bin read up to 0.5
#: bins off with the right geometry (standard error ~0.26) and warned in 10 of 20 runs. The
#: standard error is calibrated (60 seeds each of 30-180 views at 256-4096 photons: the spread
#: of c 0.08-0.25 bins, the mean standard error 0.08-0.23), and the largest of 240 correct runs
#: read 3.29 standard errors off (0.79 bins at 180 views / 256 photons): 3 would still warn on
#: 1 in 60 of those, 3.5 on none (a Gaussian tail of 1 in 2000).
CENTRE_SE_FACTOR = 3.5
#: ... unless more than this fraction of the bins sit at the sinogram's maximum: rays starved of
#: photons, floored at the count floor, clip the projections and bias their centres of mass
#: (simulated heads at 64 photons per bin: a third of the bins, up to 0.84 bins of bias; at
#: 1024 and 4096 photons at most 1.1 % and 0.006 %, within 0.05 bins).
CENTRE_MAX_CLIPPED = 0.01
#: Each view's air level is the lower of the means of this fraction of its bins (at least 2)
#: at either end of the detector.
CENTRE_EDGE_FRACTION = 1 / 32


def centre_fit(sino: Tensor, geometry: CTGeometry) -> tuple[float, float] | None:
    """Parallel beam: ``(c, se)``: where the rotation axis projects, in bins from the detector's
    middle (``detector_offset / detector_spacing`` when the geometry is right), from the data,
    and the least-squares standard error of ``c`` (0 with 3 views: no residual).

    Every view's centre of mass along the detector is ``c + a cos θ + b sin θ`` (the object's
    centre of mass ``(a, b)`` projected: Helgason-Ludwig, order 1); the least-squares ``c`` over
    the views is the axis. Each view's air level (the lower of the mean of its outer bins on
    either side, :data:`CENTRE_EDGE_FRACTION`) is subtracted first: air reading above zero (an
    I0 calibration drift of 0.5-2 % of the 99th percentile) is mass centred on the detector's
    middle, and pulled a correctly stated 10-bin offset to 9.70 / 9.42 / 8.90 bins. (A window
    symmetric about the stated axis would cancel a baseline too, but it pulls every estimate
    towards the stated axis, hiding a real error, and its width needs the object's support,
    which noise blurs; zero-mean noise in the air is left in the fit, where its residuals set
    the standard error.) Valid only when no projection is truncated (the caller checks) and
    the views cover at least a half turn; ``None`` for fan beam, fewer than 3 views, views
    covering less than a half turn, views that hold no mass, or clipped projections
    (:data:`CENTRE_MAX_CLIPPED`)."""
    from mrirecon.operators.fbp import scan_coverage

    if geometry.beam != "parallel" or geometry.num_views < 3:
        return None
    span, step = scan_coverage(np.asarray(geometry.angles), math.pi)  # directions mod a half turn
    if span < math.pi - 0.5 * step:  # limited angle: cos, sin and 1 are nearly collinear
        return None
    p = sino.detach().double().reshape(-1, *sino.shape[-2:])[0].cpu().numpy()
    n = p.shape[-1]
    if not np.isfinite(p).all() or p.max() <= 0:
        return None
    if np.count_nonzero(p >= p.max() * (1 - 1e-6)) > CENTRE_MAX_CLIPPED * p.size:
        return None  # photon-starved rays floored at one count: the projections are clipped
    k = max(2, int(round(CENTRE_EDGE_FRACTION * n)))
    if 2 * k < n:  # the air level of each view (the object may graze one end)
        p = p - np.minimum(p[:, :k].mean(-1), p[:, -k:].mean(-1))[:, None]
    mass = p.sum(-1)
    if mass.max() <= 0 or np.any(mass <= 0.02 * np.abs(mass).max()):
        return None
    com = (p * np.arange(n)).sum(-1) / mass
    t = np.asarray(geometry.angles, dtype=np.float64)
    design = np.stack([np.ones_like(t), np.cos(t), np.sin(t)], 1)
    coef, *_ = np.linalg.lstsq(design, com, rcond=None)
    dof = len(t) - 3
    se = 0.0
    if dof > 0:
        s2 = float(np.sum((com - design @ coef) ** 2)) / dof
        se = math.sqrt(max(s2 * float(np.linalg.pinv(design.T @ design)[0, 0]), 0.0))
    return float(coef[0] - (n - 1) / 2), se


def centre_offset(sino: Tensor, geometry: CTGeometry) -> float | None:
    """Parallel beam: where the rotation axis projects, in bins from the detector's middle,
    from the data (:func:`centre_fit`); ``None`` where it cannot be measured."""
    fit = centre_fit(sino, geometry)
    return None if fit is None else fit[0]


def centre_warning(sino: Tensor, geometry: CTGeometry) -> str | None:
    """A warning when the parallel-beam data's rotation axis (:func:`centre_fit`) lies more
    than :data:`CENTRE_TOLERANCE_BINS` and more than :data:`CENTRE_SE_FACTOR` standard errors
    of the fit from the geometry's ``detector_offset``, naming the estimate and the setting;
    else ``None``. The caller skips truncated projections."""
    fit = centre_fit(sino, geometry)
    if fit is None:
        return None
    found, se = fit
    du = geometry.detector_spacing
    stated = geometry.detector_offset / du
    if abs(found - stated) <= max(CENTRE_TOLERANCE_BINS, CENTRE_SE_FACTOR * se):
        return None
    n = geometry.num_detectors
    skimage = (" (skimage.transform.radon puts it at bin n // 2 of its n bins, +0.5 bin for an "
               "even count: set detector_offset = +0.5 x detector_spacing)") if abs(found - 0.5) <= CENTRE_TOLERANCE_BINS and stated == 0 else ""
    return (f"the rotation axis projects {found:+.2f} bins ({found * du:+.4g} mm) from the "
            f"detector's middle (bin {(n - 1) / 2 + found:.2f} of {n}; standard error of the "
            f"fit {se:.2f} bins), where the geometry puts "
            f"it at {stated:+.2f} bins (detector_offset {geometry.detector_offset:.4g} mm), "
            f"measured from each view's centre of mass{skimage}: set detector_offset = "
            f"{found * du:.3g} mm in attrs/geometry (CTGeometry(..., detector_offset=...)); "
            "every method's image is blurred and doubled otherwise")


# ---- pre-log data -----------------------------------------------------------------------------

#: Pre-log transmission: the outer detector bins on both sides read at least this fraction of
#: the sinogram's 99th percentile (air transmits everything, up to photon noise: 1 + 2.3 / sqrt
#: I0 at the percentile, 0.90 of it at 500 photons per bin, 0.81 at 100; post-log air reads ~0)
AIR_BRIGHTEST = 0.8
#: ... and the object below this fraction of the outer bins (it absorbs).
OBJECT_DARKER = 0.8
#: ... and the 99th percentile at most this many noise standard deviations above the outer
#: bins (air is the top of pre-log data; the percentile of photon noise over all bins is ~2.3).
AIR_NOISE_MARGIN = 3.0
#: The largest line integral post-log data can hold without a stated dose: one count out of
#: ~1e13 photons per bin (the premise of ``stages_ct.MAX_LINE_INTEGRAL``; clinical doses of
#: 1e4-1e6 photons per bin reach 9-14, LoDoPaB's log(4096 / 0.1) 10.6). Outer bins at the top
#: of the sinogram but below it may be post-log data whose edges graze something dense (a scan
#: inside a pipe's wall: 2.3), so only air above it is called counts at another scale.
POST_LOG_REACH = math.log(1e13)


def transmission_warning(sino: Tensor, edge_bins: int) -> str | None:
    """A warning when the sinogram looks like pre-log transmission (``I / I0``, or percent):
    its ``edge_bins`` outer bins on both sides (air) read near its top and the object less,
    where post-log line integrals read ~0 in air and more through the object; else ``None``.
    Air at another level is called counts only above what post-log data can reach
    (:data:`POST_LOG_REACH`); data of a stated dose are refused above their count floor before
    (:func:`above_count_floor`)."""
    x = sino.detach().double()
    sample = x.flatten()[:: max(1, x.numel() // 100_000)]
    peak, low = (float(q) for q in torch.quantile(sample, torch.tensor(
        [0.99, 0.01], dtype=x.dtype, device=x.device)))  # on the data's device: CUDA refuses a host q
    if not peak > 0:
        return None
    sides = (x[..., :edge_bins], x[..., -edge_bins:])
    air = min(float(s.mean()) for s in sides)
    if air < AIR_BRIGHTEST * peak or low > OBJECT_DARKER * air:
        return None
    # air is the top (I <= I0): nothing reads above the outer bins by more than their noise
    # (neighbouring bins' differences: blind to a smooth object), where a post-log sinogram of
    # a scan that sees only the inside of a ring reads ~1 at its edges and more within
    noise = max(float(s.diff(dim=-1).std()) for s in sides) / 2 ** 0.5 if edge_bins > 1 else 0.0
    top = max(float(s.mean()) for s in sides)
    if peak > top + AIR_NOISE_MARGIN * noise + 1e-6 * top:
        return None
    if 0.8 <= air <= 1.2:
        kind = "pre-log transmission data (I / I0, air at 1)"
    elif 80 <= air <= 120:
        kind = "pre-log transmission data in percent (100 I / I0, air at 100)"
    elif air > POST_LOG_REACH:  # air is the top at another scale: counts (I, air at
        # I0), or I / I0 rescaled; a truncated post-log sinogram reads more inside than at its
        # edges (counts at <= 1000 photons were said "truncated" or "another scale", never
        # pre-log). Below it: post-log data of a scan inside a dense ring (its outer bins graze
        # the wall) were called counts, hiding their truncation warning
        kind = f"pre-log counts or transmission at another scale (air at I0 = {air:.3g}?)"
    else:
        return None
    return (f"these look like {kind}: the outer detector bins read {air:.3g} on both sides, "
            f"{air / peak:.0%} of the sinogram's 99th percentile {peak:.3g}, and the object less "
            f"(1st percentile {low:.3g}), where post-log line integrals -log(I / I0) read ~0 in "
            "air and more through the object. Store -log(I / I0) (of I / 100 for percent): "
            "every method's image of these data is the object's negative, off scale")


def above_count_floor(peak: float, photons: float | None, min_counts: float | None) -> str | None:
    """Why a sinogram whose largest line integral is ``peak`` cannot be post-log data of a file
    that states ``photons`` per bin and the count floor ``min_counts`` (``None`` when it can, or
    either is unknown): no ray reads above ``log(photons / min_counts)`` (no photon detected),
    beyond the rounding of the stored floor (:data:`~mrirecon.pipeline.ct_plausibility.
    FLOOR_RTOL`). Pre-log counts at 500, 256 or 10 photons per bin (peaks 516, 264, 10 above a
    floor of 8.3) gave images of +-260,000 HU with exit 0; line integrals 10x too large (1/cm
    for 1/mm: a peak of 32.6) were refused naming counts only."""
    if (floor := count_floor(photons, min_counts)) is None or not peak > floor * (1 + FLOOR_RTOL):
        return None
    return (f"the sinogram reaches {peak:.4g}, above log(photons / min_photon_count) = "
            f"log({photons:g} / {min_counts:g}) = {floor:.4g}, the largest line integral the "
            "file's attributes allow (attrs/photons, attrs/min_photon_count: no photon "
            "detected): pre-log counts (or I / I0) stored where -log(I / I0) belongs, or line "
            "integrals at another scale (attenuation per cm where per mm belongs reads 10x, a "
            "pixel size in the wrong unit scales them too) are the likely causes; otherwise "
            "these attributes are wrong")


# ---- dropped projections ------------------------------------------------------------------------

#: A view whose total absolute line integral is below this share of the median view's reads
#: (almost) zero in every bin: a dropped projection (any beam: the views of an object differ by
#: far less; a view all zero is 0 %).
DEAD_VIEW_SHARE = 0.05


def dead_views(sino: Tensor) -> Tensor:
    """``(views,)`` bool: the views of a post-log sinogram ``(views, detectors)`` whose total
    absolute line integral is below :data:`DEAD_VIEW_SHARE` of the median view's (a projection
    the scanner dropped, stored as zeros); none when the median view reads nothing."""
    totals = sino.detach().double().abs().sum(-1).reshape(-1).cpu()
    median = float(totals.median()) if totals.numel() else 0.0
    if median <= 0:
        return torch.zeros(totals.shape, dtype=torch.bool)
    return totals < DEAD_VIEW_SHARE * median


def dead_views_message(dropped: list[int], kept: int) -> str:
    """The warning of the views ``dropped`` (their indices in the file), ``kept`` left to
    reconstruct from."""
    shown = ", ".join(map(str, dropped[:8])) + (", ..." if len(dropped) > 8 else "")
    return (f"view{'s' * (len(dropped) > 1)} {shown} (as stored in the file) read"
            f"{'s' * (len(dropped) == 1)} (almost) zero in every detector bin (below "
            f"{DEAD_VIEW_SHARE:.0%} of the median view's total): dropped projections, a missing "
            "measurement and not a zero one, so they were left out of the sinogram and the "
            f"angles; the image is reconstructed from the other {kept} view{'s' * (kept != 1)}")


def mark_dead_views(s: CTSlice) -> CTSlice:
    """``s`` with its dropped projections (:func:`dead_views`) marked in ``dead`` by their index
    in the file, found before ``undersample`` can add noise to them."""
    dead = dead_views(s.sinogram)
    if not bool(dead.any()):
        return s
    return replace(s, dead=torch.where(dead, torch.arange(dead.numel()), -1))


def drop_dead_views(s: CTSlice) -> CTSlice:
    """``s`` without the views ``dead`` marks, from the sinogram and the angles (a dropped
    projection taken as measured zeros cost ``ct_tv`` 1.7 dB for one view of 30 and was blamed on
    a transposed sinogram), their file indices in ``dropped``."""
    if s.dead is None:
        return s
    live = s.dead < 0
    keep = live.nonzero().flatten()
    g = s.geometry
    return replace(s, sinogram=s.sinogram.index_select(-2, keep.to(s.sinogram.device)), dead=None,
                   geometry=replace(g, angles=tuple(g.angles[int(i)] for i in keep)),
                   dropped=tuple(sorted(int(i) for i in s.dead[~live])))


# ---- the notes of undersample (views kept, dose) ---------------------------------------------


def views_note(held: int, factor: int, kept: int, cfg: UndersampleConfig) -> str | None:
    """How ``undersample.views`` was met on data of ``held`` views, keeping every ``factor``-th
    (``kept`` views): a note when the count kept is not the count asked for, more than the data
    hold (all are kept) or another count "every k-th view" gives (21 of 60: every 3rd, 20), else
    ``None``. Provenance recorded the count asked for, without a word; built by
    :func:`~mrirecon.pipeline.stages_ct.undersample`, which knows ``held`` (21 of 60 was said "the data hold 20 views")."""
    if not cfg.enabled or cfg.views is None or cfg.views == kept:
        return None
    if cfg.views >= held:
        return (f"undersample.views={cfg.views}: the data hold {held} views, fewer, so all "
                f"{held} were kept")
    nth = {1: "st", 2: "nd", 3: "rd"}.get(factor % 10 if factor % 100 not in (11, 12, 13) else 0,
                                          "th")
    return (f"undersample.views={cfg.views}: every {factor}{nth} of the {held} views kept: "
            f"{kept} views ({cfg.views} asked)")


def dose_note(data_photons: float | None, cfg: UndersampleConfig) -> str | None:
    """How ``undersample.photons`` lowered the dose, for the provenance (``None`` without it):
    binomial thinning of the data's Poisson counts at ``data_photons`` per bin (exact), or
    Poisson noise at the dose asked for on noise-free data (:func:`~mrirecon.pipeline.stages_ct.undersample`)."""
    if not cfg.enabled or cfg.photons is None:
        return None
    x = float(cfg.photons)
    if not data_photons:
        return f"undersample.photons={x:g}: Poisson noise at {x:g} photons per bin on noise-free data"
    n = float(data_photons)
    if x >= n:
        return (f"undersample.photons={x:g}: the data's own dose ({n:g} photons per bin); "
                "the data are used unchanged")
    return (f"undersample.photons={x:g}: binomial thinning of the data's Poisson counts at "
            f"{n:g} photons per bin (each photon kept with probability {x / n:.4g}): the dose is "
            f"exactly {x:g}")
