"""Does a CT sinogram's stated geometry describe it? Checked against its ground truth.

Without a reference, the conjugate rays of a fan beam tell a fan-angle scale, the detector shape
or mirrored angles (``pipeline.ct_fan_check``), but not a wrong ``source_isocenter``, and a
parallel beam's ``detector_spacing`` or ``pixel_size`` cannot be told at all. With the ground
truth ``x`` (training data; ``mrirecon run`` / ``bench`` on LoDoPaB-layout files that carry
``ground_truth_*``) every one of them can: the projection ``A x`` at the labelled geometry is
the sinogram up to noise, and a mislabelled geometry projects elsewhere. Here ``x`` is projected
at :data:`GEOMETRY_CHECK_VIEWS` of the views with the labelled geometry and with alternatives --
a continuous fit of the detector positions' scale (``detector_spacing`` / ``source_detector``,
parallel beam: or ``pixel_size``) and of an axis shift (``detector_offset``), fan beam also of
the source distance (``source_isocenter``, the magnification) and the other detector shape or
mirrored fan angles -- and of the angles offset by a constant (a start angle not recorded: the
image comes out rotated, and only a reference can tell) -- and :func:`reference_geometry_fit` says
whether another geometry fits the data far better (:data:`GEOMETRY_RESIDUAL_RATIO`, beyond the
noise: :data:`GEOMETRY_NOISE_FACTOR`).

The search projects once per source distance onto a fine virtual detector (half a pixel at the
isocentre) and interpolates every hypothesis from it; the angle offset is searched over the whole
turn on a reduced image (:func:`_angle_search`). The labelled geometry and the best alternatives
are then projected exactly, and the decision uses those. Here, below ``pipeline``,
so that training (which never imports ``pipeline``) and ``mrirecon run`` apply one rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from mrirecon.operators.ct_geometry import CTGeometry

#: Views projected (about this many, evenly spaced): a geometry error moves every view alike.
GEOMETRY_CHECK_VIEWS = 24
#: Another geometry is named when its residual ``min_a ||a A' x - y|| / ||y||`` (exact
#: projection, the amplitude ``a`` fitted for each geometry alike) is at most this fraction of
#: the labelled one's ...
GEOMETRY_RESIDUAL_RATIO = 0.5
#: ... and the labelled residual exceeds this many times the noise the data show (the RMS of the
#: best fit's residual differenced along the detector, over sqrt 2: white photon noise exactly,
#: more where edges remain), so that no fit of a noise-free file's discretisation error is named.
GEOMETRY_NOISE_FACTOR = 2.0
#: Scales of the detector positions searched, ``1 / SCALE_RANGE .. SCALE_RANGE`` (log grid of
#: ``SCALE_STEP``): the pitch at the isocentre (~0.55 / 1.8), in pixels, in degrees per channel.
SCALE_RANGE = 8.0
SCALE_STEP = 0.02
#: Axis shifts searched, in bins, up to this fraction of the detector either way.
OFFSET_RANGE = 0.25
#: Fan beam: source-isocentre distances searched, ``1 / SID_RANGE .. SID_RANGE`` times the
#: labelled one (golden section on the log, the scale refitted at each).
SID_RANGE = 1.5
#: Components of an alternative smaller than these are not another geometry (left at the
#: labelled value): a scale within 0.5 %, a source distance within 1 %, a shift within 0.25 bin.
MATERIAL_SCALE = 0.005
MATERIAL_SID = 0.01
MATERIAL_OFFSET = 0.25
#: Samples of the fine virtual detector per pixel at the isocentre.
FINE = 2
#: Angle offsets (radians) are searched over the whole turn on a grid of this step, the ground
#: truth reduced to at most :data:`COARSE_SIZE` pixels a side and projected once at the grid's
#: angles (each offset's views interpolated), then refined by golden section (to
#: :data:`ANGLE_TOLERANCE`) on exact projections of it reduced to at most :data:`REFINE_SIZE`.
ANGLE_STEP = math.radians(1.0)
COARSE_SIZE = 64
REFINE_SIZE = 128
ANGLE_TOLERANCE = math.radians(0.01)
#: An angle offset within this (radians) is not another geometry (0.16 pixel at the edge of a
#: 362-pixel image).
MATERIAL_ANGLE = math.radians(0.05)


@dataclass(frozen=True)
class Hypothesis:
    """A geometry relative to the labelled one: detector positions ``scale * (u - offset *
    detector_spacing)`` (``u / SDD`` for a fan beam), the source ``sid`` times as far (fan),
    the other detector shape, fan angles mirrored, every angle plus ``angle`` (radians, in
    ``(-pi, pi]``)."""

    scale: float = 1.0
    offset: float = 0.0
    sid: float = 1.0
    other_shape: bool = False
    mirrored: bool = False
    angle: float = 0.0

    def material(self) -> Hypothesis:
        """The same with immaterial components left at the labelled value."""
        return Hypothesis(
            self.scale if abs(math.log(self.scale)) > MATERIAL_SCALE else 1.0,
            self.offset if abs(self.offset) > MATERIAL_OFFSET else 0.0,
            self.sid if abs(math.log(self.sid)) > MATERIAL_SID else 1.0,
            self.other_shape, self.mirrored,
            self.angle if abs(self.angle) > MATERIAL_ANGLE else 0.0)

    def is_labelled(self) -> bool:
        return self.material() == Hypothesis()


@dataclass(frozen=True)
class GeometryFit:
    """What :func:`reference_geometry_fit` found: the residuals (relative, amplitude fitted) as
    labelled and with ``best``, the noise level the data show, the fitted amplitudes, and
    ``best`` (``None`` where no alternative is materially different)."""

    labelled: float
    residual: float
    noise: float
    best: Hypothesis | None
    amplitude: float
    views: int = 0

    @property
    def ratio(self) -> float:
        return self.labelled / max(self.residual, 1e-30)

    @property
    def refused(self) -> bool:
        return (self.best is not None and self.residual <= GEOMETRY_RESIDUAL_RATIO * self.labelled
                and self.labelled > GEOMETRY_NOISE_FACTOR * self.noise)


def hypothesis_geometry(g: CTGeometry, h: Hypothesis) -> CTGeometry:
    """The geometry ``h`` describes (mirrored fan angles: the geometry whose projection, the
    detector axis reversed, is the mirrored one's; :func:`_project`)."""
    ds, off = g.detector_spacing * h.scale, h.scale * (g.detector_offset
                                                       + h.offset * g.detector_spacing)
    if h.angle != 0.0:
        g = replace(g, angles=tuple(np.asarray(g.angles) + h.angle))
    if g.beam == "parallel":
        return replace(g, detector_spacing=ds, detector_offset=off)
    sid, sdd = g.source_isocenter * h.sid, g.source_detector
    k = max(1.0, 1.1 * sid / sdd)  # the detector beyond the source: farther, u / SDD kept
    shape = ("curved" if g.detector == "flat" else "flat") if h.other_shape else g.detector
    return replace(g, detector_spacing=ds * k, detector_offset=(-off if h.mirrored else off) * k,
                   source_isocenter=sid, source_detector=sdd * k, detector=shape)


def _project(image: Tensor, g: CTGeometry, h: Hypothesis) -> Tensor:
    from mrirecon.operators.ct import ct_operator

    p = ct_operator(hypothesis_geometry(g, h))(image).to(torch.float64)
    return p.flip(-1) if h.mirrored else p


def _fitted(p: np.ndarray, y: np.ndarray, axes=None) -> tuple[np.ndarray, np.ndarray]:
    """``(min_a ||a p - y||^2, a)`` over ``axes`` (all by default; ``a >= 0``, the amplitude
    fitted for every geometry alike), batched over the others: the one residual of the search
    (:func:`_fit_at`, :func:`_angle_search`) and the decision (:func:`_residual`)."""
    pp, py = (p * p).sum(axis=axes), (p * y).sum(axis=axes)
    a = np.clip(py / np.maximum(pp, 1e-300), 0.0, None)
    return np.maximum((y * y).sum(axis=axes) - 2 * a * py + a * a * pp, 0.0), a


def _residual(p, y) -> tuple[float, float]:
    """``(min_a ||a p - y|| / ||y||, a)`` (``a >= 0``) of arrays or CPU tensors."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    r2, a = _fitted(p, y)
    return math.sqrt(float(r2) / max(float((y * y).sum()), 1e-300)), float(a)


class _Fine:
    """The ground truth projected at one source distance onto a fine virtual detector, and any
    hypothesis's bins interpolated from it (linear; zero beyond, where rays miss the image)."""

    def __init__(self, image: Tensor, g: CTGeometry, sid: float) -> None:
        from mrirecon.operators.ct import ct_operator

        r = g.image_radius
        if g.beam == "parallel":
            self.step = g.pixel_size / FINE
            n = 2 * int(math.ceil(r / self.step)) + 3
            fine = CTGeometry("parallel", g.image_shape, g.angles, n, g.pixel_size, self.step)
        else:
            s = g.source_isocenter * sid
            self.step = g.pixel_size / s / FINE
            n = 2 * int(math.ceil(math.asin(min(1.0, r / s)) / self.step)) + 3
            fine = CTGeometry("fan", g.image_shape, g.angles, n, g.pixel_size, 2 * s * self.step,
                              s, 2 * s, "curved")
        self.start = -(n - 1) / 2 * self.step
        self.p = ct_operator(fine)(image).to(torch.float64)[0].numpy()  # (views, n)
        self.g = g

    def positions(self, h: Hypothesis) -> np.ndarray:
        g = self.g
        u = h.scale * (g.detector_positions - h.offset * g.detector_spacing)
        if g.beam == "parallel":
            return u
        t = u / g.source_detector
        curved = (g.detector == "curved") != h.other_shape
        gam = t if curved else np.arctan(t)
        return -gam if h.mirrored else gam

    def __call__(self, h: Hypothesis) -> np.ndarray:
        q = (self.positions(h) - self.start) / self.step
        n = self.p.shape[1]
        ok = (q >= 0) & (q <= n - 1)
        i = np.clip(np.floor(q).astype(np.int64), 0, n - 2)
        f = np.clip(q - i, 0.0, 1.0)
        out = (1 - f) * self.p[:, i] + f * self.p[:, i + 1]
        return np.where(ok, out, 0.0)


def _golden(f, lo: float, hi: float, tol: float) -> tuple[float, float]:
    """``(x, f(x))`` minimising a unimodal ``f`` on ``[lo, hi]`` to ``tol``."""
    r = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return (c, fc) if fc < fd else (d, fd)


def _reduced(x: Tensor, g: CTGeometry, y: np.ndarray,
             size: int) -> tuple[Tensor, CTGeometry, np.ndarray]:
    """``(x, g, y)`` at most ``size`` pixels a side: the image resampled (the same field of view,
    anti-aliased), the detector's bins averaged in groups about a pixel wide at the isocentre
    (the geometry of the groups' centres)."""
    h, w = g.image_shape
    f = max(h, w) / size
    if f <= 1:
        return x, g, y
    h2, w2 = max(1, round(h / f)), max(1, round(w / f))
    xs = torch.nn.functional.interpolate(x[None], size=(h2, w2), mode="bilinear",
                                         antialias=True, align_corners=False)[0]
    px = g.pixel_size * h / h2
    pitch = g.detector_spacing * (g.source_isocenter / g.source_detector if g.beam == "fan" else 1)
    k = max(1, min(int(px / pitch), g.num_detectors))
    n, m = g.num_detectors, max(1, g.num_detectors // k)
    ds = g.detector_spacing
    off = g.detector_offset - ds * ((k - 1) / 2 - (n - 1) / 2 + (m - 1) * k / 2)
    gs = replace(g, image_shape=(h2, w2), pixel_size=px, num_detectors=m, detector_spacing=ds * k,
                 detector_offset=off)
    return xs, gs, y[:, :m * k].reshape(y.shape[0], m, k).mean(-1)


def _angle_search(x: Tensor, y: np.ndarray, g: CTGeometry) -> float:
    """The constant added to every angle of ``g`` that projects ``x`` best onto ``y`` (radians,
    in ``(-pi, pi]``): a grid over the whole turn (:data:`ANGLE_STEP`) on ``x`` reduced to
    :data:`COARSE_SIZE`, projected once at the grid's angles and every offset's views
    interpolated linearly, then golden section about the best on exact projections of ``x``
    reduced to :data:`REFINE_SIZE`."""
    from mrirecon.operators.ct import ct_operator

    xs, gs, ys = _reduced(x, g, y, COARSE_SIZE)
    grid = round(2 * math.pi / ANGLE_STEP)
    step = 2 * math.pi / grid
    dense = ct_operator(replace(gs, angles=tuple(np.arange(grid) * step)))(xs)
    dense = dense.to(torch.float64)[0].numpy()  # (grid, bins)
    at = np.asarray(g.angles) / step
    i = np.floor(at).astype(np.int64)
    idx = (i[:, None] + np.arange(grid)[None, :]) % grid  # (views, offsets)
    w = (at - i)[:, None, None]
    p = (1 - w) * dense[idx] + w * dense[(idx + 1) % grid]  # (views, offsets, bins)
    coarse = int(np.argmin(_fitted(p, ys[:, None, :], axes=(0, 2))[0])) * step

    xr, gr, yr = _reduced(x, g, y, REFINE_SIZE)
    angles = np.asarray(gr.angles)

    def exact(d: float) -> float:
        return float(_fitted(ct_operator(replace(gr, angles=tuple(angles + d)))(xr).to(
            torch.float64)[0].numpy(), yr)[0])

    d, _ = _golden(exact, coarse - 1.5 * step, coarse + 1.5 * step, ANGLE_TOLERANCE)
    return math.remainder(d, 2 * math.pi)


def named_hypotheses(g: CTGeometry) -> dict[str, Hypothesis]:
    """The mislabellings users' files carry (those of ``pipeline.ct_fan_check._likely_causes``,
    as whole geometries: the source distance too), by what the message says of them."""
    px = g.pixel_size
    if g.beam == "parallel":
        return {f"detector_spacing in pixels, not mm (x pixel_size = {px:.3g})": Hypothesis(px),
                f"pixel_size in mm given as 1 pixel (pixel_size {px:.3g})": Hypothesis(1 / px)}
    sid, sdd = g.source_isocenter, g.source_detector
    other = "flat" if g.detector == "curved" else "curved"
    curved = g.detector == "curved"
    return {
        f"the pitch given at the isocentre, not at the detector (x SDD / SID = {sdd / sid:.3g})":
            Hypothesis(sdd / sid),
        f"detector_spacing in pixels, not mm (x pixel_size = {px:.3g})": Hypothesis(px),
        f"source_isocenter and source_detector in pixels, not mm (x pixel_size = {px:.3g})":
            Hypothesis(1 / px, sid=px),
        "detector_spacing given in degrees per channel (a curved detector's pitch as scanners "
        "quote it)": Hypothesis(sdd * math.pi / 180, other_shape=not curved),
        "detector_spacing given in radians per channel": Hypothesis(sdd, other_shape=not curved),
        "source_detector given as the isocentre-to-detector distance (ASTRA's origin_det)":
            Hypothesis(sdd / (sid + sdd)),
        f"data of a {other} detector labelled {g.detector}": Hypothesis(other_shape=True),
        "the fan angles mirrored (a clockwise rotation written counter-clockwise, or the "
        "channels numbered the other way)": Hypothesis(mirrored=True),
    }


def _valid(g: CTGeometry, h: Hypothesis) -> bool:
    try:
        hypothesis_geometry(g, h)
    except ValueError:
        return False
    return True


def _fit_at(fine: _Fine, y: np.ndarray, g: CTGeometry, base: Hypothesis,
            scales: np.ndarray | None, shifts: int | None = None) -> tuple[Hypothesis, float]:
    """The best scale (from the grid ``scales``, else around ``base``'s) and axis shift for
    ``base``'s source distance, shape and mirror, by the interpolated projections."""
    yy = float((y * y).sum())

    def res(h: Hypothesis) -> float:
        return float(_fitted(fine(h), y)[0])

    def with_(h: Hypothesis, **kw) -> Hypothesis:
        return replace(h, **kw)

    starts = [base]  # the shift is searched from base's scale and from the grid's best at no
    if scales is not None:  # shift: an axis some bins off picked a wrong scale at no shift, and
        starts.append(min((with_(base, scale=float(s)) for s in scales), key=res))  # stayed
    n = g.num_detectors  # whole-bin shifts over the range, or ``shifts`` about base's
    span = max(1, int(OFFSET_RANGE * n)) if shifts is None else shifts
    at = 0 if shifts is None else round(base.offset)
    h = min((with_(h0, offset=float(at + d)) for h0 in dict.fromkeys(starts)
             for d in range(-span, span + 1)), key=res)
    for _ in range(2):  # refine the scale and the shift in turn
        ls, _ = _golden(lambda v: res(with_(h, scale=math.exp(v))), math.log(h.scale) - 2 * SCALE_STEP,
                        math.log(h.scale) + 2 * SCALE_STEP, 1e-4)
        h = with_(h, scale=math.exp(ls))
        d, _ = _golden(lambda v: res(with_(h, offset=v)), h.offset - 1.5, h.offset + 1.5, 0.02)
        h = with_(h, offset=d)
    return h, res(h) / max(yy, 1e-300)


def reference_geometry_fit(sinogram: Tensor, image: Tensor, geometry: CTGeometry,
                           views: int = GEOMETRY_CHECK_VIEWS) -> GeometryFit | None:
    """Project ``image`` (``(H, W)`` or ``(1, H, W)``, the sinogram's units) at about ``views``
    of ``geometry``'s views, as labelled and under alternatives, against ``sinogram``
    (``(views, detectors)`` or ``(1, ...)``), and return the residuals as labelled and with the
    best materially different alternative (:class:`GeometryFit`; its ``refused`` says whether the
    alternative fits far better). The alternatives: the continuous fit of the detector positions
    (scale, axis shift; fan: source distance, shape, mirror), the named mislabellings, and the
    angles offset by a constant over the whole turn (:func:`_angle_search`; an offset alone, the
    rest as labelled). ``None`` where nothing can be judged (an empty sinogram or image,
    non-finite values)."""
    from mrirecon.sampling import sparse_view

    y_all = sinogram.detach().reshape(-1, *sinogram.shape[-2:])[0].to(torch.float64).cpu()
    x = image.detach().reshape(-1, *image.shape[-2:])[:1].to(torch.float64).cpu()
    if not (bool(torch.isfinite(y_all).all()) and bool(torch.isfinite(x).all())):
        return None
    g, kept = sparse_view(geometry, max(1, geometry.num_views // views), 0)
    y = y_all[torch.as_tensor(kept)]
    if float(y.norm()) == 0 or float(x.abs().max()) == 0:
        return None
    yn = y.numpy()
    fines = {1.0: _Fine(x, g, 1.0)}
    grid = np.exp(np.arange(-math.log(SCALE_RANGE), math.log(SCALE_RANGE) + 1e-9, SCALE_STEP))
    grid = np.concatenate([grid, [1.0]])
    found: list[tuple[float, Hypothesis]] = []
    shapes = [(False, False)] if g.beam == "parallel" else [
        (o, m) for o in (False, True) for m in (False, True)]
    for other, mirrored in shapes:  # the continuous fit at the labelled source distance
        h, r = _fit_at(fines[1.0], yn, g, Hypothesis(other_shape=other, mirrored=mirrored), grid)
        found.append((r, h))
    for h in named_hypotheses(g).values():  # the named ones as they are (no shift)
        if not _valid(g, h):
            continue
        fine = fines.get(h.sid) or fines.setdefault(h.sid, _Fine(x, g, h.sid))
        p = fine(h)
        found.append((_residual(p, y)[0] ** 2, h))
    if g.beam == "fan":  # the source distance: golden section, the scale and shift refitted
        best = min(found, key=lambda t: t[0])[1]
        low = max(-math.log(SID_RANGE), math.log(1.05 * g.image_radius / g.source_isocenter))

        def at_sid(v: float) -> float:
            m = math.exp(v)
            fine = fines.get(m) or fines.setdefault(m, _Fine(x, g, m))
            near = best.scale * np.exp(np.arange(-0.3, 0.3 + 1e-9, SCALE_STEP))
            h, r = _fit_at(fine, yn, g, replace(best, sid=m), near, shifts=3)
            found.append((r, h))
            return r

        if low < math.log(SID_RANGE):
            _golden(at_sid, low, math.log(SID_RANGE), 0.02)
    # exact projections of the labelled geometry, the best few distinct alternatives, each with
    # one component left at its labelled value, and the named ones: the simplest that fits within
    # SIMPLER of the best is named (a symmetric phantom fits a scale and a source distance
    # together about as well as the one that is off)
    p0 = _project(x, g, Hypothesis())[0]
    labelled, a0 = _residual(p0, y)
    named = [h for h in named_hypotheses(g).values() if _valid(g, h)]
    top: list[Hypothesis] = []
    for _, h in sorted(found, key=lambda t: t[0]):
        h = h.material()
        if not h.is_labelled() and h not in top and _valid(g, h):
            top.append(h)
        if len(top) >= 3:
            break
    turned = [Hypothesis(angle=_angle_search(x, yn, g)).material()]  # a start angle not recorded
    if g.beam == "parallel" and abs(g.detector_offset) > MATERIAL_OFFSET * g.detector_spacing:
        # the channels numbered the other way on an offset detector: p(a + pi, -u) with the axis
        # mirrored too, which neither an angle alone nor a shift alone fits
        turned.append(reversed_channels(g))
    candidates = list(dict.fromkeys([*top, *_simpler(top[0]), *named, *turned] if top
                                    else [*named, *turned]))
    exact = {}
    for h in candidates:
        if h.is_labelled() or not _valid(g, h):
            continue
        p = _project(x, g, h)[0]
        exact[h] = (*_residual(p, y), p)
    best_r = min((v[0] for v in exact.values()), default=math.inf)
    if not best_r < labelled:
        noise = float((y - a0 * p0).diff(dim=-1).norm() / math.sqrt(2) / y.norm())
        return GeometryFit(labelled, labelled, noise, None, a0, len(kept))
    fits = [h for h, v in exact.items() if v[0] <= SIMPLER * best_r]
    h = min(fits, key=lambda h: (_components(h, named), exact[h][0]))
    r, a, p = exact[h]
    noise = float((y - a * p).diff(dim=-1).norm() / math.sqrt(2) / y.norm())
    return GeometryFit(labelled, r, noise, h, a, len(kept))


#: An alternative with fewer changed fields is preferred to the best fit when its residual is
#: within this factor of the best one's.
SIMPLER = 1.05


def _simpler(h: Hypothesis) -> list[Hypothesis]:
    """``h`` with any of its components left at the labelled value (each subset)."""
    from itertools import product

    keep = {"scale": h.scale != 1.0, "offset": h.offset != 0.0, "sid": h.sid != 1.0,
            "other_shape": h.other_shape, "mirrored": h.mirrored, "angle": h.angle != 0.0}
    names = [k for k, v in keep.items() if v]
    labelled = Hypothesis()
    out = []
    for mask in product((False, True), repeat=len(names)):
        c = replace(h, **{k: getattr(labelled, k) for k, drop in zip(names, mask) if drop})
        if c != h and not c.is_labelled():
            out.append(c)
    return out


def _components(h: Hypothesis, named: list[Hypothesis]) -> int:
    """How many fields ``h`` changes; a named mislabelling counts as one."""
    if h in named:
        return 1
    return ((h.scale != 1.0) + (h.offset != 0.0) + (h.sid != 1.0) + h.other_shape
            + h.mirrored + (h.angle != 0.0))


#: A named mislabelling is offered as the cause only where it changes the geometry by more
#: than this (log of its scale or source distance): a pitch "in pixels" at pixels of 1.016 mm is
#: a 1.6 % error, which any few-percent error of the pitch or the distances matches as well.
NAMED_CAUSE_MIN = 0.1


def _matches(a: Hypothesis, b: Hypothesis) -> bool:
    """Does fitted ``a`` match named ``b`` (within 3 %), ``b`` a material change of its own?"""
    distinct = (b.other_shape or b.mirrored or abs(math.log(b.scale)) > NAMED_CAUSE_MIN
                or abs(math.log(b.sid)) > NAMED_CAUSE_MIN)
    return (distinct and a.other_shape == b.other_shape and a.mirrored == b.mirrored
            and abs(math.log(a.scale / b.scale)) < 0.03 and abs(math.log(a.sid / b.sid)) < 0.03)


def geometry_fields(g: CTGeometry, fit: GeometryFit) -> str:
    """The fields and values of ``fit.best`` against the labelled ones, and a named cause that
    explains them, e.g. ``"detector_spacing 2.03 mm (as labelled 3.71): the pitch given at the
    isocentre, not at the detector?"``."""
    h = fit.best
    assert h is not None
    if g.beam == "parallel" and h.angle != 0.0 and h.offset != 0.0 and _matches_reversed(g, h):
        return (f"the detector channels numbered the other way (the sinogram's detector axis "
                f"reversed: on this detector, {g.detector_offset:.4g} mm off the axis, the data "
                "fit the angles turned half a turn with the axis mirrored): reverse the "
                "sinogram's detector axis (sinogram[..., ::-1])?")
    if h.angle != 0.0 and h.offset == 0.0:
        return _angle_fields(g, h.angle)
    t = hypothesis_geometry(g, h)
    parts = []
    px_error = abs(math.log(fit.amplitude * h.scale * (h.sid if g.beam == "fan" else 1.0))) \
        < abs(math.log(max(fit.amplitude, 1e-30)))
    if g.beam == "parallel" and h.scale != 1.0:
        if px_error:  # the data are 1 / scale as bright: the object's pixels, not the detector
            parts.append(f"pixel_size {g.pixel_size / h.scale:.4g} mm (as labelled "
                         f"{g.pixel_size:.4g})")
        else:
            parts.append(f"detector_spacing {t.detector_spacing:.4g} mm (as labelled "
                         f"{g.detector_spacing:.4g})")
    elif h.scale != 1.0:
        sdd = g.source_detector / h.scale
        parts.append(f"detector_spacing {g.detector_spacing * h.scale:.4g} mm (as labelled "
                     f"{g.detector_spacing:.4g})" + (f" or source_detector {sdd:.4g} mm (as "
                                                    f"labelled {g.source_detector:.4g})"
                                                    if sdd > g.source_isocenter + g.image_radius
                                                    else ""))
    if h.sid != 1.0:  # a fan beam scaled as a whole projects alike: the pixels' size, or
        sid = (f"source_isocenter {t.source_isocenter:.4g} mm (as labelled "  # the source's
               f"{g.source_isocenter:.4g})")  # distance where the data's brightness says not
        parts.append(f"pixel_size {g.pixel_size / h.sid:.4g} mm (as labelled {g.pixel_size:.4g})"
                     + ("" if h.scale == 1.0 else f" or {sid}") if px_error else sid)
    if h.other_shape:
        parts.append(f"detector \"{t.detector}\" (as labelled \"{g.detector}\")")
    if h.angle != 0.0:
        parts.append(f"the angles offset by {math.degrees(h.angle):+.1f} degrees")
    if h.offset != 0.0:
        off = t.detector_offset * (-1 if h.mirrored else 1)
        off = 0.0 if abs(off) < 1e-9 * g.detector_spacing else off
        parts.append(f"detector_offset {off:.4g} mm (as labelled {g.detector_offset:.4g}: the "
                     f"rotation axis {h.offset:+.3g} bins away)")
    causes = [text for text, n in named_hypotheses(g).items()
              if h.offset == 0.0 and _matches(h, n)]
    if h.mirrored and not causes:
        parts.append("the fan angles mirrored")
    return " and ".join(parts) + (f": {causes[0]}?" if causes and parts else
                                  f"{causes[0]}" if causes else "")


def reversed_channels(g: CTGeometry) -> Hypothesis:
    """A parallel beam's detector channels numbered the other way, as a :class:`Hypothesis`:
    bin ``k`` reads the ray at ``-u_k + 2 detector_offset``, which is the ray at angle + pi and
    ``u_k - 2 detector_offset`` (the angles turned half a turn, the axis mirrored)."""
    return Hypothesis(angle=math.pi, offset=-2 * g.detector_offset / g.detector_spacing)


def _angle_fields(g: CTGeometry, angle: float) -> str:
    """The angles offset by ``angle`` (radians), the fix, and what else gives the same data: a
    parallel beam's detector reversed with the angles offset by ``angle - pi``; a ground truth
    stored rotated by a multiple of 90 degrees (the orientation check's other cause)."""
    deg, first = math.degrees(angle), math.degrees(g.angles[0])
    if abs(abs(deg) - 180) < 0.05:
        deg, angle = 180.0, math.pi
    text = (f"the angles offset by {deg:+.1f} degrees (the first view at "
            f"{(first + deg) % 360:.1f} degrees, not {first:.1f})")
    fix = f"the start angle of the scan not recorded (add {angle:+.4g} rad to every angle)"
    centred = abs(g.detector_offset) <= MATERIAL_OFFSET * g.detector_spacing
    if g.beam == "parallel" and abs(deg) > 90 and centred:  # p(theta + pi, u) = p(theta, -u)
        rest = deg - math.copysign(180.0, deg)
        text += (", or (the same data of a parallel beam) " + (
            f"by {rest:+.1f} degrees with " if abs(rest) >= 0.05 else "") +
                 "the detector axis reversed")
        fix += ", or the channels numbered the other way"
    quarter = round(deg / 90)
    if quarter and abs(deg - 90 * quarter) < 1.0:  # as the orientation check names it
        fix += f", or the ground truth stored rotated {(-90 * quarter) % 360} degrees"
    return f"{text}: {fix}?"


def _matches_reversed(g: CTGeometry, h: Hypothesis) -> bool:
    r = reversed_channels(g)
    return (abs(abs(h.angle) - math.pi) < math.radians(0.5)
            and abs(h.offset - r.offset) <= MATERIAL_OFFSET)


def reference_geometry_note(sinogram: Tensor, image: Tensor, geometry: CTGeometry,
                            reference: str = "the ground truth") -> str | None:
    """A message when another geometry projects ``image`` onto ``sinogram`` far better than the
    labelled one (:func:`reference_geometry_fit`), naming the fields and the values that fit;
    else ``None``. ``reference`` names the image in the message."""
    fit = reference_geometry_fit(sinogram, image, geometry)
    if fit is None or not fit.refused:
        return None
    return (f"{reference} projects onto the sinogram {fit.ratio:.2g}x closer with "
            f"{geometry_fields(geometry, fit)} (relative residual {fit.residual:.3g} against "
            f"{fit.labelled:.3g} as labelled, noise about {fit.noise:.2g}; {fit.views} of the "
            f"{geometry.num_views} views compared)")
