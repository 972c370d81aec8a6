"""Checks that a CT slice's values are attenuation at a plausible scale, and how many of its rays
detected no photon: warnings for the volume's record (:meth:`CTStages.data_messages`); and of the
reconstruction, how many of its pixels read impossibly far below air (:func:`below_air_note`, a
note of the volume: these checks of the input never see the output).

A sinogram stored at another scale (line integrals not divided by LoDoPaB's MU_MAX, or divided
twice; another length unit) or a DICOM series whose values are not HU (HU + 1024 without its
intercept, attenuation labelled HU) passed every check of :func:`~mrirecon.pipeline.stages_ct.
check_slice`: images of 85,000 HU, or of air only, with exit 0. The image's bulk tells: in a CT
slice most of the object is soft tissue, near water's attenuation, whatever the anatomy (bone
and lung are a minority of its pixels), so the mode of the object's values in the Hann FBP is
compared with water's.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mrirecon.io.lodopab_attrs import MU_WATER_PER_M

#: Water's attenuation (1/mm) at diagnostic energies: LoDoPaB's 0.02 (0.015-0.03 from 120 to
#: 40 keV effective)
MU_WATER_NOMINAL = MU_WATER_PER_M / 1000
#: The object's most common value, relative to water, outside which the scale is doubted: fat
#: reads 0.9x, muscle and organs 1.0-1.1x, brain 1.03x; a slice whose bulk were bone (1.5-3x)
#: would still need more bone pixels than soft tissue ones. The data x 3 read 3x, / MU_MAX twice
#: 0.012x, HU + 1024 stored without the intercept 2x.
BULK_RANGE = (0.45, 1.8)
#: Where the bulk of correct data lies, relative to water: 0.89-1.04x on LoDoPaB's validation
#: slices, 0.95-1.03x on ``simulate ct`` (water 0.0192 / mm; 64-362 px, 0.7-4 mm pixels, 1024-1e5
#: photons, parallel and fan, real-anatomy and ellipse sources), soft tissue 0.9-1.1x. Outside
#: it, relative to the water a file states, a bulk that becomes water's when multiplied by the
#: pixel size (mm) is taken for line integrals in pixel units (:data:`PIXEL_UNITS_RTOL`). Not the
#: warning band: water itself reads 0.85-1.35x from 120 to 70 kVp, so a bulk of 1.4x may be a
#: low-kV scan (:data:`LOW_KV_RANGE`, where no water is stated).
SOFT_TISSUE_RANGE = (0.85, 1.1)
#: How close to water ``bulk x pixel_size`` must come (relative) for the data to be read as line
#: integrals in pixel units (skimage's ``radon``, ASTRA's default ``create_vol_geom(n, n)``:
#: lengths counted in pixels, not mm): with 0.7 mm pixels water read +430 HU, with no word. Pixels
#: within this of 1 mm leave both readings alike, and are not judged.
PIXEL_UNITS_RTOL = 0.1
#: Where the bulk may be water at some tube voltage, relative to the nominal
#: :data:`MU_WATER_NOMINAL`: water reads 0.85-1.35x from 120 to 70 kVp (a bulk of 1.2x at 0.8 mm
#: pixels is an 80 kVp paediatric scan, 1.35x at 0.7 mm a 70 kVp one), and correct data's bulk
#: lies within 0.95-1.04x of their water on ``simulate ct`` (:data:`SOFT_TISSUE_RANGE`):
#: 0.85 x 0.95 = 0.81 and 1.35 x 1.04 = 1.40 (LoDoPaB's lowest slices, 0.89x, would read 0.76x
#: at 120 kVp: with 1.3 mm pixels they would be named, the one overlap left). A file that states
#: no water attenuation of its own is named as pixel units only outside this band (0.7 mm
#: pixels: 1.43x; 0.6 mm: 1.67x; 1.4 mm: 0.71x); one that states it is judged against it
#: (:func:`image_warnings`).
LOW_KV_RANGE = (0.8, 1.4)
#: Pixels above this fraction of the image's 99th percentile are the object (air, and lung
#: beside soft tissue or bone, are below it); a scale-free choice.
OBJECT_FRACTION = 0.3
#: A slice whose FBP has fewer pixels than this fraction below half of water's attenuation holds
#: no air around the patient (a CT field of view does: at least its corners).
MIN_AIR_FRACTION = 1e-3
#: Images with fewer pixels are not judged (a 16 x 16 phantom has no bulk to speak of; real CT
#: slices have 256 x 256 or more)
MIN_PIXELS = 64 * 64
#: Rays at the count floor (no photon detected), as a fraction of the bins, above which streaks
#: from photon starvation are to be expected.
STARVED_FRACTION = 0.005


#: A sinogram whose projection averaged over its views stays below this (0.5 mm of water, mu
#: 0.0192 / mm) on every detector bin, beyond its noise, holds no patient: an air scan (a
#: series' end slice), or data scaled far down.
MIN_PEAK_LINE_INTEGRAL = 0.01


def empty_sinogram_message(sino: Tensor) -> str | None:
    """A message when post-log ``sino`` ``(views, detectors)`` holds no object
    (:data:`MIN_PEAK_LINE_INTEGRAL` plus 4 standard deviations of the view-averaged noise,
    estimated from neighbouring bins), else ``None``. Its largest single value alone was judged
    before: an air slice with 4096-photon noise passed it, and the checks of a patient's data
    then warned of the noise ("the views' total line integrals vary by 158 %: transposed?"),
    the image's scale and a bias of +0 HU."""
    x = sino.detach().double()
    sigma = 1.4826 * float((x[..., 1:] - x[..., :-1]).abs().median()) / math.sqrt(2)
    views = x.shape[-2]
    level = float(x.mean(-2).max())
    if level >= MIN_PEAK_LINE_INTEGRAL + 4 * sigma / math.sqrt(views):
        return None
    return (f"the projection averaged over the {views} views reaches {level:.3g}, less than "
            "0.5 mm of water on any ray beyond the noise: an air scan, or a sinogram scaled "
            "down (the image will be air, -1000 HU; the checks of the data's scale, geometry "
            "and the method's bias are not made on it)")


def bulk_attenuation(preview: Tensor) -> float | None:
    """The mode of the object's values (1/mm) in the FBP ``preview``, or ``None`` when the image
    holds no object (its 99th percentile not positive)."""
    x = preview.detach().double().flatten()
    p99 = float(torch.quantile(x, 0.99))
    if not p99 > 0:
        return None
    obj = x[x > OBJECT_FRACTION * p99]
    top = float(torch.quantile(obj, 0.999)) if obj.numel() > 1 else p99
    lo = OBJECT_FRACTION * p99
    if not top > lo:
        return float(obj.median())
    bins = 64
    hist = torch.histc(obj, bins=bins, min=lo, max=top)
    hist = torch.nn.functional.conv1d(hist[None, None], torch.tensor([[[1.0, 2.0, 1.0]]],
                                      dtype=hist.dtype), padding=1)[0, 0]  # noise: smoothed
    k = int(hist.argmax())
    return lo + (k + 0.5) * (top - lo) / bins


#: How close to water ``bulk x ln 10`` must come (relative) for the data to be named as a
#: logarithm taken in base 10 (``-log10(I / I0)``: every line integral x 0.434; water's bulk
#: then reads 0.43x, below :data:`BULK_RANGE`, or inside it from 1.04x water up, unsaid).
LOG10_RTOL = 0.15


def log10_cause(ratio: float) -> str:
    """``", or is the log taken in base 10 ..."`` where a bulk of ``ratio`` x water reads water
    once multiplied by ln 10 (:data:`LOG10_RTOL`), else ``""``."""
    if not abs(ratio * math.log(10) - 1) <= LOG10_RTOL:
        return ""
    return (f"; or is the log taken in base 10 ({ratio * math.log(10):.3g}x water once multiplied "
            "by ln 10: -log10(I / I0) is -ln(I / I0) x 0.434; multiply the sinogram by ln 10 = "
            "2.303)?")


def pixel_units_warning(ratio: float, pixel_size: float | None, water: float = MU_WATER_NOMINAL,
                        stated: bool = False) -> str | None:
    """The warning for an FBP whose bulk, ``ratio`` x ``water`` (1/mm), lies outside
    :data:`SOFT_TISSUE_RANGE` (``stated``: ``water`` is the file's own) or outside
    :data:`LOW_KV_RANGE` (nothing stated: water at 70-120 kVp reads anywhere in it), but within
    :data:`PIXEL_UNITS_RTOL` of water once multiplied by ``pixel_size`` (mm): line integrals in
    pixel units; ``None`` otherwise (or without a pixel size, or with one within
    :data:`PIXEL_UNITS_RTOL` of 1 mm)."""
    if not pixel_size or not abs(pixel_size - 1) > PIXEL_UNITS_RTOL:
        return None
    lo, hi = SOFT_TISSUE_RANGE if stated else LOW_KV_RANGE
    if lo <= ratio <= hi:
        return None
    if not abs(ratio * pixel_size - 1) <= PIXEL_UNITS_RTOL:
        return None
    whose = "the file's mu_water_per_mm, " if stated else ""
    return (f"the object's most common value in the FBP is {ratio:.3g}x water's attenuation "
            f"({whose}{water:.4g} / mm; {1000 * (ratio - 1):+.0f} HU), and "
            f"{ratio * pixel_size:.3g}x once multiplied by the pixel size, {pixel_size:.4g} mm: "
            "are the line integrals in pixel units (skimage's radon, ASTRA's default "
            "create_vol_geom(n, n))? Multiply the sinogram by the pixel size in mm "
            f"({pixel_size:.4g})" + (f"{cause} The image's HU would be wrong" if
                                     (cause := log10_cause(ratio)) else
                                     "; the image's HU would be wrong"))


def image_warnings(preview: Tensor | None, pixel_size: float | None = None,
                   mu_water: float | None = None) -> dict[str, str]:
    """``{kind: message}`` for an FBP (attenuation, 1/mm) whose bulk is not near water's or that
    holds no air. With the ``pixel_size`` (mm) of the geometry, a bulk that reads water's once
    multiplied by it is named as line integrals in pixel units (:func:`pixel_units_warning`),
    also inside :data:`BULK_RANGE`: against ``mu_water`` (1/mm) where the file states one (the
    water of its HU conversion, any tube voltage), else against :data:`MU_WATER_NOMINAL` and
    only outside :data:`LOW_KV_RANGE`."""
    out: dict[str, str] = {}
    if preview is None or preview.numel() < MIN_PIXELS:
        return out
    bulk = bulk_attenuation(preview)
    if bulk is not None:
        ratio = bulk / MU_WATER_NOMINAL
        if mu_water is not None and mu_water > 0:
            msg = pixel_units_warning(bulk / mu_water, pixel_size, mu_water, stated=True)
        else:
            msg = pixel_units_warning(ratio, pixel_size)
        if msg is not None:
            out["scale"] = msg
        elif not BULK_RANGE[0] <= ratio <= BULK_RANGE[1]:
            hu = 1000 * (ratio - 1)
            out["scale"] = (f"the object's most common value in the FBP is {bulk:.3g} / mm, "
                            f"{ratio:.3g}x water's attenuation ({MU_WATER_NOMINAL:g} / mm; "
                            f"{hu:+.0f} HU), where soft tissue reads 0.9-1.1x: are the data at "
                            "another scale (LoDoPaB stores line integrals / MU_MAX, 81.35858 / m: "
                            "its mu_max_per_m attribute; lengths in mm, not pixels?), or is a "
                            "DICOM series not in HU (RescaleIntercept, RescaleSlope)"
                            f"{log10_cause(ratio) or '?'} The image's HU would be wrong")
    x = preview.detach().double()
    air = float((x < 0.5 * MU_WATER_NOMINAL).double().mean())
    if air < MIN_AIR_FRACTION and float(x.max()) > 0:
        out["no_air"] = (f"no part of the FBP reads air: {air:.2%} of its pixels are below half of "
                         f"water's attenuation ({0.5 * MU_WATER_NOMINAL:g} / mm, -500 HU), where a "
                         "CT field of view holds air around the patient; if the field of view "
                         "lies inside the body this is expected, otherwise check the data's "
                         "scale (DICOM: RescaleIntercept; HU + 1024 stored as HU?)")
    return out


#: Relative distance from the count floor ``log(photons / min_counts)`` within which a line
#: integral is at it: the floor is stored as any float may hold it (float16: half an ulp, 4.9e-4
#: relative; float32 1e-7) and scaled by ``mu_max_per_m``; the next count above the floor (1
#: photon where the floor is 0.1) lies 0.2 below it, far outside.
FLOOR_RTOL = float(np.finfo(np.float16).eps)
#: A detector column that reads dead (at the count floor while a neighbour does not, or far
#: above both neighbours) in at least this fraction of the views is a dead element: rays through
#: every part of the object at that offset cannot all detect no photon while their neighbours
#: do (a few views of a starved neighbourhood may).
DEAD_VIEWS = 0.9
#: "Far above both neighbours": more than twice the larger one (a real projection is smooth
#: along the detector at this scale: its sharpest peak, the tangent of a ring, stays within 2x
#: of its neighbours) and by this many noise standard deviations (the noise of neighbouring
#: bins' differences, robust: their median absolute value).
DEAD_SIGMAS = 6.0


def count_floor(photons: float | None, min_counts: float | None) -> float | None:
    """The count floor ``log(photons / min_counts)``: the largest line integral post-log data at
    ``photons`` per bin can hold (no photon detected, ``min_counts`` logged in its place);
    ``None`` for data without a known dose."""
    if not photons or not min_counts or not photons > min_counts:
        return None
    return math.log(photons / min_counts)


def _at_floor(x: Tensor, photons: float | None, min_counts: float | None):
    """``(floor, mask of the bins at it)`` for the float64 sinogram ``x``, or ``None`` for data
    without a known dose (:func:`count_floor`)."""
    if (floor := count_floor(photons, min_counts)) is None:
        return None
    return floor, (x - floor).abs() <= FLOOR_RTOL * floor


def dead_columns(sinogram: Tensor, photons: float | None = None,
                 min_counts: float | None = None) -> tuple[list[int], str] | None:
    """``(columns, warning)`` for the detector columns of ``sinogram`` ``(..., views,
    detectors)`` that read dead in at least :data:`DEAD_VIEWS` of the views (at the count floor
    ``log(photons / min_counts)`` while both neighbours are not, or far above both neighbours:
    :data:`DEAD_SIGMAS`), whatever their share of the bins; ``None`` when none does. A dead
    element whose zero counts were logged at the floor read 10.6 in every view (LoDoPaB's 513
    bins: 0.19 % of the rays): 12 dB and HU -11991..+24301, with no word."""
    x = sinogram.detach().double()
    return _dead_columns(x, _at_floor(x, photons, min_counts), photons, min_counts)


def _dead_columns(x: Tensor, floor, photons: float | None, min_counts: float | None):
    """:func:`dead_columns` of the float64 sinogram ``x`` whose count floor and bins at it are
    ``floor`` (:func:`_at_floor`)."""
    x = x.reshape(-1, *x.shape[-2:])
    if x.shape[-1] < 3:
        return None
    left = torch.cat([x[..., 1:2], x[..., :-1]], -1)  # each bin's neighbours (edges: the one)
    right = torch.cat([x[..., 1:], x[..., -2:-1]], -1)
    near = torch.maximum(left, right)
    d = x.diff(dim=-1).flatten()
    sigma = 1.4826 * float(d.abs().median()) / math.sqrt(2)  # robust: edges are a minority
    dead = (x > 2 * near.clamp_min(0) + DEAD_SIGMAS * sigma) & (x - near > DEAD_SIGMAS * sigma)
    if floor is not None:
        floor = floor[0], floor[1].reshape(x.shape)
        at = floor[1]
        at_l = torch.cat([at[..., 1:2], at[..., :-1]], -1)
        at_r = torch.cat([at[..., 1:], at[..., -2:-1]], -1)
        dead |= at & ~at_l & ~at_r  # a starved band (metal at the centre) has edges; not
        # told apart: two neighbouring dead elements (each beside the floor), left unsaid
    share = dead.double().mean(-2).amax(0)  # per column, its worst slice
    cols = [int(c) for c in torch.nonzero(share >= DEAD_VIEWS).flatten()]
    if not cols:
        return None
    at_f = floor is not None and bool(floor[1][..., cols].double().mean() >= 0.5)
    how = (f"the count floor log({photons:g} / {min_counts:g}) = {floor[0]:.3g} (no photon "
           "detected) while its neighbours detect photons" if at_f else
           "far above both neighbouring bins")
    shown = ", ".join(map(str, cols[:8])) + (", ..." if len(cols) > 8 else "")
    many = len(cols) > 1
    least = float(share[cols].min())
    views = "every view" if least == 1 else f"{'at least ' * many}{least:.0%} of the views"
    return cols, (f"detector bin{'s' * many} {shown} read{'s' * (not many)} {how} in "
                  f"{views} (a dead or miscalibrated "
                  "detector element, whatever its share of the rays): expect a ring artefact in "
                  "every method's image")


def starved_rays(sinogram: Tensor, photons: float | None, min_counts: float | None) -> str | None:
    """A warning when more than :data:`STARVED_FRACTION` of the rays sit at the count floor
    ``log(photons / min_counts)`` (no photon detected: metal, a large patient, a low dose), else
    ``None``; data without a known dose are not judged (:func:`floor_warnings` leaves dead
    detector columns out of the share)."""
    x = sinogram.detach().double()
    return _starved_rays(_at_floor(x, photons, min_counts), photons, min_counts, ())


def _starved_rays(found, photons: float | None, min_counts: float | None,
                  dead: list[int] | tuple[int, ...]) -> str | None:
    """:func:`starved_rays` of a sinogram whose count floor and bins at it are ``found``
    (:func:`_at_floor`)."""
    if found is None:
        return None
    floor, at_floor = found
    if dead:
        keep = torch.ones(at_floor.shape[-1], dtype=torch.bool)
        keep[list(dead)] = False
        at_floor = at_floor[..., keep]
    frac = float(at_floor.double().mean()) if at_floor.numel() else 0.0
    if frac <= STARVED_FRACTION:
        return None
    return (f"{frac:.1%} of the rays ({int(at_floor.sum())} bins) detected no photon (line "
            f"integral at the count floor log({photons:g} / {min_counts:g}) = {floor:.3g}): photon "
            "starvation (metal, a large patient or a low dose); expect streaks along those rays "
            "in every method's image")


def floor_warnings(sinogram: Tensor, photons: float | None,
                   min_counts: float | None) -> dict[str, str]:
    """``{"dead": ..., "starved": ...}`` (either or none) for a slice's post-log sinogram
    reconstructed at ``photons`` with the count floor ``min_counts``: dead detector columns
    (:func:`dead_columns`) and photon starvation beside them (:func:`starved_rays`), from one
    float64 copy and one mask of the bins at the count floor."""
    out: dict[str, str] = {}
    x = sinogram.detach().double()
    at = _at_floor(x, photons, min_counts)
    found = _dead_columns(x, at, photons, min_counts)
    if found is not None:
        out["dead"] = found[1]
    msg = _starved_rays(at, photons, min_counts, found[0] if found else ())
    if msg is not None:
        out["starved"] = msg
    return out


#: Parallel beam: a gap between neighbouring view directions larger than this many median steps
#: (and :data:`MIN_GAP_DEG`) is missing coverage (sparse views keep their steps even; one view
#: missing doubles one step).
GAP_STEPS = 4.0
MIN_GAP_DEG = 10.0


def coverage_warning(geometry) -> str | None:
    """A warning when the views do not cover what an exact image needs: a half turn of
    directions (parallel beam), or for a fan beam short of a full turn, 180° plus the fan angle
    (Parker's short scan): the smaller of the image's (its circumscribed circle seen from the
    source) and the detector's (twice its largest fan angle; rays outside it are measured by
    no scan, and 180° plus it gave the full-scan image, 39.62 against 39.68 dB, yet was told
    to need the image's 212°); ``None`` otherwise. A 0-90° parallel scan (13 dB)
    and a 180° fan scan (Parker weights for views that do not exist: the object's mean 16 % low)
    ran with exit 0 and no word."""
    a = np.asarray(geometry.angles, dtype=np.float64)
    if a.size < 3:
        return None
    if geometry.beam == "parallel":
        d = np.sort(np.mod(a, math.pi))
        gaps = np.diff(np.concatenate([d, [d[0] + math.pi]]))
        k = int(np.argmax(gaps))
        step = float(np.median(gaps))
        if gaps[k] <= max(GAP_STEPS * step, math.radians(MIN_GAP_DEG)):
            return None
        start, end = math.degrees(d[k]), math.degrees(d[k] + gaps[k])
        return (f"the views leave a gap of {math.degrees(gaps[k]):.0f}° in their directions (from "
                f"{start:.0f}° to {end:.0f}°, modulo the half turn a parallel-beam image needs): "
                "limited-angle data; every method's image is smeared along the missing "
                "directions")
    from mrirecon.operators.fbp import is_full_turn, scan_coverage

    span, step = scan_coverage(a)  # circular: wherever the scan starts, however it is written
    if is_full_turn(span, step):
        return None
    image_fan = 2 * geometry.image_half_fan
    detector_fan = 2 * float(np.abs(geometry.fan_angles).max())
    fan = min(image_fan, detector_fan)  # no ray outside the detector's fan is measured at all
    if span >= math.pi + fan - 0.5 * step:
        return None
    what = "the image subtends" if image_fan <= detector_fan else "of the detector"
    return (f"the fan-beam views span {math.degrees(span):.0f}°, less than the 180° plus the "
            f"{math.degrees(fan):.0f}° fan angle {what} ({math.degrees(math.pi + fan):.0f}°) "
            "that a short scan needs: rays are missing, and FBP's short-scan (Parker) weights "
            "assume views that do not exist (intensities low, streaks)")


#: HU below which a reconstruction's value is impossible and beyond its noise: attenuation below
#: minus half of water's (air is -1000 HU, and nothing attenuates less). On simulated
#: LoDoPaB-geometry slices (362 x 362, 1000 views, 4096 photons) the shipped pipelines stayed
#: above it: ct_fbp down to -1251 HU (its noise in the air, all views), ct_learned -1100, ct_tv
#: -1000 (x >= 0); ct_pnp at 30 views reached -2862 HU (52 pixels below -1500).
BELOW_AIR_HU = -1500.0
#: A slice with more pixels than this below :data:`BELOW_AIR_HU` gets the volume a note; a
#: handful are noise.
BELOW_AIR_PIXELS = 10


def below_air_note(hu: Tensor, method: str) -> str | None:
    """A note naming how many pixels of the reconstruction ``hu`` ``(slices, rows, cols)`` read
    impossibly far below air, and down to what, when a slice has more than
    :data:`BELOW_AIR_PIXELS` of them; ``None`` otherwise. Such values (negative attenuation)
    come from the method, not the patient: streaks, or a denoiser outside its range (ct_pnp's
    -2862 HU passed without a word)."""
    x = hu.detach().double()
    low = x < BELOW_AIR_HU
    per_slice = low.flatten(1).sum(1)
    if not bool((per_slice > BELOW_AIR_PIXELS).any()):
        return None
    count, total = int(low.sum()), x.numel()
    slices = [int(i) for i in (per_slice > 0).nonzero().flatten()]
    shown = ", ".join(map(str, slices[:8])) + (", ..." if len(slices) > 8 else "")
    where = f"slice {slices[0]}" if len(slices) == 1 else f"{len(slices)} slices ({shown})"
    return (f"{count} pixels ({count / total:.2%}; {where}) read {float(x[low].min()):.0f} to "
            f"{float(x[low].max()):.0f} HU, below {BELOW_AIR_HU:.0f} HU: values below air "
            f"(-1000 HU) are impossible (negative attenuation), so these are artefacts of "
            f"reconstruct.method {method!r} (streaks, or a denoiser outside its range), kept in "
            "the outputs as reconstructed")



#: Pixels of the object's edge left out of :func:`bulk_shift`'s mean: the Hann FBP blurs an
#: edge over about this many pixels, where a sharper method moves mass across the object's mask.
EDGE_PIXELS = 2
#: Width (pixels) of the mean filter whose copy of the FBP draws :func:`bulk_shift`'s object
#: mask (its 99th percentile and threshold). On the raw FBP of sparse-view low-dose data
#: (LoDoPaB's geometry, 31 views, 1000 photons) streaks set the percentile, and the mask kept
#: 471 pixels of an object of ~78,000, where FBP read 1695 HU and every other method 337-789:
#: "-504 to -579 HU off" for ct_learned, ct_primal_dual and ct_pnp (over the smoothed mask:
#: 20-56 HU).
MASK_SMOOTH = 9
#: The filtered copy crosses :data:`OBJECT_FRACTION` of an edge this many pixels outside it
#: (``(0.5 - OBJECT_FRACTION) * MASK_SMOOTH``, rounded up): eroded as well.
MASK_EDGE = math.ceil((0.5 - OBJECT_FRACTION) * MASK_SMOOTH)
#: No judgement when the interior is less than this share of the thresholded pixels, or than
#: :data:`MIN_INTERIOR_IMAGE` of the image: the mask is noise, or the object a thin shell.
MIN_INTERIOR_SHARE = 0.25
MIN_INTERIOR_IMAGE = 0.01
#: The fraction of the FBP's noise and streak level per pixel that the mean over the interior
#: may move. Measured (simulated 64-362 px, 30-1000 views, 100-4096 photons per bin): the
#: object itself, ct_fbp, ct_tv, ct_pnp, ct_learned and ct_primal_dual at most 0.28 of it;
#: ct_primal_dual_sim 0.67 (LoDoPaB's geometry) to 2.2-9 (its own, 128 px).
BULK_SHIFT_FRACTION = 0.5


def _object_interior(p: Tensor) -> Tensor | None:
    """The object's interior in the float64 FBP ``p``: the pixels of its :data:`MASK_SMOOTH`
    mean filter above :data:`OBJECT_FRACTION` of that copy's 99th percentile, less
    :data:`EDGE_PIXELS` + :data:`MASK_EDGE` at the edge; ``None`` without an object or when the
    interior is too small a share (:data:`MIN_INTERIOR_SHARE`, :data:`MIN_INTERIOR_IMAGE`)."""
    f = torch.nn.functional
    low = f.avg_pool2d(p[None, None], MASK_SMOOTH, stride=1, padding=MASK_SMOOTH // 2,
                       count_include_pad=False)[0, 0]
    p99 = float(torch.quantile(low.flatten(), 0.99))
    if not p99 > 0:
        return None
    obj = (low > OBJECT_FRACTION * p99).double()
    e = EDGE_PIXELS + MASK_EDGE
    inner = (-f.max_pool2d(-obj[None, None], 2 * e + 1, stride=1, padding=e))[0, 0] > 0.5
    n = int(inner.sum())
    if n < 2 or n < MIN_INTERIOR_SHARE * float(obj.sum()) or n < MIN_INTERIOR_IMAGE * p.numel():
        return None
    return inner


def bulk_shift(image: Tensor, preview: Tensor) -> tuple[float, float] | None:
    """``(shift, bound)`` in HU: the mean of the reconstruction ``image`` over the object's
    interior (:func:`_object_interior`) minus the Hann FBP ``preview``'s mean there, and the
    bound it may reach: :data:`BULK_SHIFT_FRACTION` of the preview's noise and streak level per
    pixel (the robust spread of its interior values about their 3 x 3 mean). The object's mean
    attenuation is fixed by the data (every view's projection sums to the image's integral) and
    FBP reproduces it; a denoiser or regulariser moves pixels by about their noise, while the
    mean over thousands of them moves far less. ``None`` for images smaller than
    :data:`MIN_PIXELS`, without an object, or without an interior."""
    x, p = image.detach().double().cpu(), preview.detach().double().cpu()
    if p.numel() < MIN_PIXELS or x.shape != p.shape:
        return None
    if (inner := _object_interior(p)) is None:
        return None
    local = torch.nn.functional.avg_pool2d(p[None, None], 3, stride=1, padding=1,
                                           count_include_pad=False)[0, 0]
    resid = (p - local)[inner]  # white noise sigma: its std is sigma sqrt(8 / 9)
    sigma = 1.4826 * float((resid - resid.median()).abs().median()) * 3 / math.sqrt(8)
    shift = float(x[inner].mean() - p[inner].mean())
    return 1000 * shift / MU_WATER_NOMINAL, 1000 * BULK_SHIFT_FRACTION * sigma / MU_WATER_NOMINAL


def bulk_shift_warning(image: Tensor, preview: Tensor | None, method: str) -> str | None:
    """A warning when the reconstruction's mean over the object is off the Hann FBP's by more
    than :data:`BULK_SHIFT_FRACTION` of the FBP's noise and streak level per pixel
    (:func:`bulk_shift`), else ``None``. ``ct_primal_dual_sim`` on its own training geometry
    wrote every slice 130-290 HU too dark inside the object (2.2-9 of that level) with no word,
    and the DICOM / NIfTI exports carried it."""
    found = None if preview is None else bulk_shift(image, preview)
    if found is None or abs(found[0]) <= found[1]:
        return None
    shift, bound = found
    return (f"reconstruct.method {method!r}: the reconstruction's mean over the object is "
            f"{shift:+.0f} HU off the Hann FBP's, more than {BULK_SHIFT_FRACTION:g} x that "
            f"FBP's noise and streak level per pixel ({bound / BULK_SHIFT_FRACTION:.0f} HU), "
            "which a data-consistent method's mean over the object stays well within (at most "
            "0.3 x): its HU values are biased (a learned model off what its "
            "training constrained? see its card's known failures); compare with ct_fbp or ct_tv")


#: The regularised reconstructions whose data residual :func:`noise_fit_warning` weighs against
#: the photon noise (their weight ``lam`` sets how closely they fit it)
NOISE_FIT_METHODS = ("tv_ct",)
#: :func:`noise_fit_ratio` below which a regularised image has fitted the photon noise. ct_tv at
#: its shipped lam on 4096-photon data: 0.50-0.65 (128 px simulations), 0.81-1.38 (held-out
#: LoDoPaB-geometry slices, 30 and 60 views), 0.82 on a validation slice at 1024 photons; on the
#: audit's 1024-photon 128 px file 0.27 (12.50 dB, lam 50: 0.90 and 15.93 dB).
NOISE_FIT_RATIO = 0.35


def noise_fit_ratio(sinogram: Tensor, projected: Tensor, photons: float) -> float:
    """The data residual's mean square over the mean post-log Poisson noise variance the dose
    implies, ``mean((A x - y)^2) / mean(exp(A x) / photons)``: a post-log line integral ``p``
    measured with ``photons * exp(-p)`` expected counts has variance ``exp(p) / photons``
    (the variance of the expected counts is taken at the fit ``A x``, never below one count; the
    data's own ``exp(y)`` is dominated by the bins at the count floor). About 1 for the true
    image, 0 for an image that fits the sinogram exactly. ``projected`` is ``A x``."""
    y, ax = sinogram.detach().double().cpu(), projected.detach().double().cpu()
    var = torch.exp(ax).clamp(max=photons) / photons
    return float((ax - y).pow(2).mean() / var.mean())


def quieter_than_stated(sinogram: Tensor, photons: float) -> bool:
    """Does the sinogram's noise fit a dose more than
    :data:`~mrirecon.training.ct_dose_check.DOSE_RATIO` x above ``photons``
    (:func:`~mrirecon.training.ct_dose_check.noise_dose`; without air around the object its dose
    is a lower bound, which suffices)? Then a fit closer than the dose's noise says nothing of
    ``lam``: noise-free data stating 4096 photons were told to raise it (ratio 0.01)."""
    from mrirecon.training.ct_dose_check import DOSE_RATIO, noise_dose

    found = noise_dose(sinogram, photons)
    return found is not None and found.photons > DOSE_RATIO * photons


def noise_fit_warning(sinogram: Tensor, projected: Tensor, photons: float | None,
                      method: str) -> str | None:
    """A warning when ``method`` (one of :data:`NOISE_FIT_METHODS`) fits the sinogram closer than
    :data:`NOISE_FIT_RATIO` of the photon noise variance at ``photons`` (:func:`noise_fit_ratio`):
    its ``lam`` is too small for this noise, and the image holds fitted noise. ``None`` for
    other methods and data of unknown dose or noise-free (``photons`` ``None``). ct_tv's
    params_by_views were tuned at 4096 photons; on a 1024-photon 128 px file it gave 12.50 dB
    (lam 50: 15.93), below ct_fbp's 17.02 dB, with no word."""
    if method not in NOISE_FIT_METHODS or photons is None or not math.isfinite(photons):
        return None
    ratio = noise_fit_ratio(sinogram, projected, photons)
    if ratio >= NOISE_FIT_RATIO or quieter_than_stated(sinogram, photons):
        return None  # (quieter data: the dose warning of the input names that, lam is not at fault)
    return (f"reconstruct.method {method!r}: the image fits the sinogram to {ratio:.2f} of the "
            f"photon noise variance that the dose implies ({photons:g} photons per bin), below "
            f"{NOISE_FIT_RATIO:g}: lam is too small for this noise level and the image holds "
            "fitted noise (ct_tv's lam per view count was tuned on 4096-photon data, where this "
            "ratio is 0.5 to 1.4); raise reconstruct.params.lam until the ratio nears 1 (on a "
            "1024-photon 128 px file lam 7 -> 50 gained 3.4 dB), and compare with ct_fbp on all "
            "the views")
