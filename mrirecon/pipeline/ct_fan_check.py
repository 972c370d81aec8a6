"""Fan beam: is the geometry of a fan-beam sinogram what its data say? Every ray is measured
twice over a full turn (and over a short scan of 180° plus the fan): the ray at view angle ``β``
and fan angle ``γ`` is the ray at ``(β + π - 2γ, -γ)``. :func:`conjugate_mismatch` measures how
well conjugate rays agree as labelled, with the fan angles scaled, and under named other
conventions (:func:`_likely_causes`, also beyond photon noise: :func:`_beyond_noise`), and
estimates the small scale error of ``u / SDD`` that a detector pitch or source-detector distance
a few percent off gives (:func:`_stretch`: the pitch and the distance that fit are named);
:func:`fan_geometry_warning` says which fits (split from
:mod:`mrirecon.pipeline.ct_consistency`, which holds the other checks of a sinogram against its
geometry)."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.ct_consistency import axis_mirror, mirror_on_detector

# ---- fan beam: conjugate rays -----------------------------------------------------------------

#: The fan angles of the bins are tried scaled by these factors (1/6 to 6, 9 % apart): a
#: detector pitch given at the isocentre reads as SID / SDD (~0.55) of the true fan angles, a
#: pitch in pixels as 1 / pixel_size, distances in pixels as ~pixel_size.
FAN_SCALES = tuple(float(c) for c in np.exp(np.linspace(-math.log(6.0), math.log(6.0), 43)))
#: Scales closer to 1 than this factor are not another geometry (noise picks among them).
FAN_SCALE_NEAR = 1.15
#: Conjugate rays that agree this many times better (relative mismatch) with the fan angles
#: scaled than as labelled: the geometry is wrong. On 332 correctly labelled simulations (64-362
#: pixels, 180-1000 views, full turns and 230-250° short scans through 0 / 2π, flat and curved
#: detectors, wider detectors, two source distances, phantoms and CT images, noise-free and
#: 4096 / 1000 / 500 / 250 photons per bin) no scale fitted more than 1.061x better; the same
#: data mislabelled (pitch at the isocentre, pitch or distances in pixels) 1.81-8.2x and more
#: at 4096 photons (every one reported), 1.1-3.1x at 500 (69-95 % reported) and 1.1-2.3x at 250
#: (35-94 %): the rest are left unsaid, photon noise hides them.
FAN_SCALE_RATIO = 1.5
#: Relative mismatch of conjugate rays as labelled above which no scale is needed to doubt the
#: geometry (a transposed square sinogram: 1.27-1.5; the correct data above: at most 0.064).
FAN_MISMATCH = 0.3
#: Fraction of the rays whose conjugate was measured, below which the check is not made.
FAN_MIN_PAIRS = 0.2
#: Named mislabellings are also weighed beyond photon noise (:func:`_beyond_noise`): a matched
#: filter over up to this many source views, the slope of each ray over the views up to
#: ``2 FAN_SLOPE_VIEWS`` away, and a lower confidence bound of ``FAN_NOISE_Z`` jackknife
#: standard errors over :data:`FAN_NOISE_BLOCKS` groups of ray directions or of channels (the
#: larger: one hot channel biases every direction alike); a cause counts with
#: the larger of its energy ratio and this one (same threshold, :data:`FAN_SCALE_RATIO`).
#: Calibration: 190 correctly labelled simulations (64, 128 and 362 pixels, 180-1000 views,
#: full turns and 230 / 250° short scans through 0 / 2π, flat and curved, SID / SDD 400 / 800
#: and 595 / 1085.6 mm, phantoms and CT images, 38 per dose) and the same data under each named
#: mislabelling (not ASTRA's origin_det: no valid geometry there): no correct case warned, the
#: largest ratio on correct data stayed 1.047 (the matched filter alone at most 0.38 at
#: ``z`` = 2; 0.59 at 1.5, 1.22 at 1); named before -> after, of 38 per dose (noise-free /
#: 4096 / 1000 / 500 / 250 photons): the other detector shape 36 -> 38 / 0 -> 17 / 0 -> 7 /
#: 0 -> 3 / 0 -> 2 (a ±27° fan with a CT image: 1.95-6.9x at 4096; small phantoms and short
#: scans stay below), pitch at the isocentre 38 / 32 -> 38 / 32 -> 38 / 29 -> 38 / 14 -> 36,
#: pitch in pixels 38 / 38 / 32 -> 38 / 31 -> 38 / 21 -> 38, mirrored 32 -> 33 at 250 (the
#: rest unchanged), distances in pixels 16 -> 20 of 20 at 250, the pitch in degrees or radians
#: 16 -> 19 of 19 at 1000 and below; no catch lost. ~0.07-0.1 s more per 362² / 513-bin /
#: 1000-view slice. Was: the energy ratio only (the other shape 1.04-1.07x at 4096 photons).
FAN_NOISE_SOURCES = 512
FAN_SLOPE_VIEWS = 6
FAN_NOISE_BLOCKS = 16
FAN_NOISE_Z = 2.0
#: Small errors of the fan angles' scale (a detector pitch or source-detector distance a few
#: percent off: another scanner model's data sheet, a rounded pitch), which
#: :data:`FAN_SCALES` leaves to noise (within :data:`FAN_SCALE_NEAR`), are estimated directly
#: (:func:`_stretch`: the scale ``s`` of ``u / SDD`` and its standard error) and warned when
#: ``|s - 1|`` exceeds ``FAN_STRETCH`` and ``FAN_STRETCH_Z`` standard errors. Cost of the
#: error (FBP, 128² / 256², SID 400 / SDD 800): 0.5 % 0.3-0.7 dB at 4096 photons, 1.1-4.2
#: noise-free; 1 % 1.2-2.1 / 3.1-8.5 dB; 2 % 2.9-5 / 6.6-12.6 dB. Calibration: 1008 correctly
#: labelled simulations (48 geometries of 64-362 pixels, 180-1000 views, full turns, 230 /
#: 250° short scans through 0 / 2π and full turns on half-fan offset detectors, flat and
#: curved, SID / SDD 400 / 800 and 595 / 1085.6 mm, phantoms and CT images, noise-free and
#: 4096 / 1000 / 500 / 250 photons; and 768 more of 64 / 128 pixels, 3 seeds each): none
#: warned, the largest ``|s - 1| / se`` 2.99 (z 5: 1.7x margin), the largest ``|s - 1|``
#: noise-free 0.0012 (0.5 %: 4x; with noise up to 0.13, at 1.3 standard errors). The same 240
#: sinograms with the pitch or SDD off (96 per dose and error, ``+-``) named, noise-free /
#: 4096 / 1000 / 500 / 250 photons: 1 % 188 / 88 / 26 / 8 / 2 of 192, 2 % 192 / 123 / 81 /
#: 47 / 26, 5 % 192 / 172 / 134 / 115 / 93, 10 % 192 / 180 / 160 / 150 / 127 (before: only
#: a wrong cause, the other detector shape, at 1 % 56 / 22 / 10 / 4 / 2, at 2 % 52 / 20 / 10 /
#: 6 / 6, at 5 % 8 noise-free; the rest silent). A named cause that a stretch also explains
#: is named only where it fits better beyond the stretch than the stretch beyond it. The estimate is unbiased: ``(s - s_true) / se`` mean -0.13, sd 0.85 (the
#: standard error errs large; the jackknife's alone read 2-3x small on small phantoms).
#: Three passes (:data:`FAN_STRETCH_PASSES`): noise-free ``0.9 .. 1.1`` to 0.2 %. ~0.05 s
#: more per 362² / 513-bin / 1000-view slice (0.146 -> 0.193 s).
FAN_STRETCH = 0.005
FAN_STRETCH_Z = 5.0
FAN_STRETCH_PASSES = 3


def _box(x: np.ndarray, width: int) -> np.ndarray:
    """Sums of ``x`` over ``width`` (odd) neighbouring columns, centred, zero outside."""
    half = width // 2
    c = np.cumsum(np.pad(x, ((0, 0), (half + 1, half))), axis=1)
    return c[:, width:] - c[:, :-width]


def sinogram_p99(sino: Tensor) -> float:
    """The 99th percentile of a sinogram's absolute line integrals (from at most ~100,000 of
    them, evenly strided): the scale the data checks of ``stages_ct.data_warnings`` compare
    levels with."""
    flat = sino.detach().double().abs().flatten()
    return float(torch.quantile(flat[:: max(1, flat.numel() // 100_000)], 0.99))


def dead_bins(sino: Tensor, p99: float | None = None) -> Tensor:
    """``(..., detectors)`` bool: the dead detector bins of a post-log sinogram ``(...,
    views, detectors)``: zero in every view while the median over the views of their smaller
    neighbour exceeds ``TRUNCATION_LEVEL`` of the 99th percentile ``p99`` (:func:`sinogram_p99`
    when not given): inside the object. The outermost bins are never called dead (one
    neighbour). ``stages_ct.data_warnings`` warns of them, and the conjugate-ray checks leave
    them out (:class:`_Conjugates`)."""
    from mrirecon.pipeline.stages_ct import TRUNCATION_LEVEL  # stages_ct imports this module

    sino = sino.detach().double()
    out = torch.zeros(sino.shape[:-2] + sino.shape[-1:], dtype=torch.bool, device=sino.device)
    if sino.shape[-1] < 3 or sino.shape[-2] < 1:
        return out
    p99 = sinogram_p99(sino) if p99 is None else p99
    neighbours = torch.minimum(sino[..., :-2], sino[..., 2:])
    out[..., 1:-1] = ((sino[..., 1:-1] == 0).all(-2)
                      & (neighbours.median(-2).values > TRUNCATION_LEVEL * p99))
    return out


class _Conjugates:
    """Conjugate-ray differences of one fan-beam sinogram ``(views, detectors)`` for any scale
    of its fan angles: ``p(β, γ) - p(β + π - 2 c γ, -γ)``, interpolated linearly between the
    views (the bin at ``-γ`` is the mirrored one about the axis, :func:`axis_mirror`), box-averaged along
    the detector (photon noise averages out, a geometric mismatch stays). Dead bins
    (:func:`dead_bins`) take part in no pair, neither as a source bin nor as a conjugate target
    (the bins whose mirror interpolates from one): their differences are the object's line
    integrals, which read as a geometric mismatch (a dead channel 566 of 736 on a clinical
    short scan was told "set detector=\"flat\"", 2.22x)."""

    MAX_SOURCES = 128  # source views (every k-th): bounded work for 1000-view files

    def __init__(self, sino: np.ndarray, geometry: CTGeometry,
                 max_sources: int = MAX_SOURCES, dead: np.ndarray | None = None) -> None:
        from mrirecon.operators.fbp import scan_coverage, scan_offsets

        views, bins = sino.shape
        beta = scan_offsets(geometry.angles)
        order = np.argsort(beta, kind="stable")
        b, p = beta[order], sino[order]
        self.sorted, self.beta = p, b  # the views in scan order (not closed)
        _, self.step = scan_coverage(geometry.angles)
        self.full = bool(2 * math.pi - b[-1] <= 1.5 * self.step)
        if self.full:  # a full turn: close the circle
            b, p = np.concatenate([b, [b[0] + 2 * math.pi]]), np.concatenate([p, p[:1]])
        self.b = b
        self.mirror = axis_mirror(torch.from_numpy(np.ascontiguousarray(p)), geometry).numpy()
        # bins whose mirror image about the axis lies on the detector (all of them on a centred
        # one; an offset detector's long side beyond its short one has no conjugate bin)
        self.inside = mirror_on_detector(geometry).numpy()
        dead = dead_bins(torch.from_numpy(sino)).numpy() if dead is None else dead
        if dead.any():  # neither a source nor a target (nor interpolated into one)
            hit = axis_mirror(torch.from_numpy(dead[None].astype(np.float64)), geometry)[0]
            self.inside &= ~dead & ~(hit.numpy() > 1e-9)
        self.src = np.arange(views)[:: max(1, -(-views // max_sources))]
        self.p = p[self.src]
        self.gam = geometry.fan_angles
        self.width = max(1, bins // 16) | 1  # odd: the box is symmetric about each bin

    def differences(self, scale: float, gam: np.ndarray | None = None, raw: bool = False
                    ) -> tuple[np.ndarray, ...]:
        """``(d, ok)``: the box-averaged differences ``(sources, bins)`` and where they hold,
        with the bins' fan angles ``scale`` times the geometry's, or ``gam`` (another
        geometry's fan angles, e.g. of the other detector shape or mirrored); with ``raw``
        also the differences before the box (0 where none) and the box's counts."""
        b, bins = self.b, self.p.shape[1]
        gam = scale * self.gam if gam is None else np.asarray(gam, dtype=np.float64)
        tgt = np.mod(b[self.src, None] + math.pi - 2 * gam[None, :], 2 * math.pi)
        k = np.searchsorted(b, tgt, side="right") - 1
        ok = (k >= 0) & (k < len(b) - 1)
        k = np.clip(k, 0, len(b) - 2)
        gap = b[k + 1] - b[k]
        ok &= gap <= 1.5 * self.step  # no conjugate across a gap in the views
        ok &= self.inside[None, :]
        f = (tgt - b[k]) / np.where(gap > 0, gap, 1.0)
        jj = np.broadcast_to(np.arange(bins), tgt.shape)
        d = np.where(ok, (1 - f) * self.mirror[k, jj] + f * self.mirror[k + 1, jj] - self.p, 0.0)
        s, n = _box(d, self.width), _box(ok.astype(np.float64), self.width)
        ok &= n >= 0.5 * self.width
        return (s / np.maximum(n, 1.0), ok) + ((d, n) if raw else ())

    def slopes(self, offsets: range) -> tuple[np.ndarray, np.ndarray]:
        """``(dp/dβ, ok)``: the least-squares slope ``(sources, bins)`` of each source view's
        bins over the views ``± offsets`` away in the scan (never the view itself), and the
        sources ``(sources,)`` that have them all, a step apart (around a full turn)."""
        n, s = len(self.beta), self.src
        num, den, ok = np.zeros_like(self.p), 0.0, np.ones(len(s), dtype=bool)
        for q in offsets:
            lo, hi = s - q, s + q
            if self.full:
                lo, hi = lo % n, hi % n
                h = np.mod(self.beta[hi] - self.beta[lo], 2 * math.pi)
            else:
                ok &= (lo >= 0) & (hi < n)
                lo, hi = np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1)
                h = self.beta[hi] - self.beta[lo]
            ok &= (h > 0) & (h <= (2 * q + 0.5) * self.step)
            num += q * (self.sorted[hi] - self.sorted[lo])
            den += 2.0 * q * q
        return num / (den * max(self.step, 1e-30)), ok

    def mismatch(self, d: np.ndarray, ok: np.ndarray) -> float:
        return float(np.linalg.norm(d[ok]) / max(float(np.linalg.norm(self.p[ok])), 1e-30))


def _matched(c: _Conjugates, d1: np.ndarray, ok1: np.ndarray,
             slopes: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
             gam1: np.ndarray, shift: np.ndarray,
             raw: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[float, float] | None:
    """``(a, se)``: the least-squares amplitude of the template ``dp/dβ shift`` in the
    conjugate differences ``d1`` taken at fan angles ``gam1``, and its jackknife standard
    error, the larger of two: over :data:`FAN_NOISE_BLOCKS` groups of ray directions ``β - γ
    (mod π)`` (a pair and its conjugate are the same two rays: one group) and over as many
    groups of channels by ``|γ|`` (a pair's two bins lie at ``±γ``: one group). One hot or
    miscalibrated channel offsets its pairs in every direction alike, which the first cannot
    see (+0.5 post-log on channel 566 of 736 read as ``u / SDD`` scaled by 1.0052 ± 0.0005 on
    a clinical short scan); the second puts it in one group. ``None`` where the template
    vanishes or one group holds all of it.
    Given ``raw`` (the differences before the box and the box's counts,
    :meth:`_Conjugates.differences`), the standard error is at least the one each raw
    difference's own square gives (``sqrt(2 Σ (d w)²) / <T1, T2>``, ``w`` the weight of the
    raw difference in ``<d1, T1>``, 2 for a pair counted from both ends): the jackknife's
    estimate rests on the few directions where the template's energy lies, and read 2-3x too
    small by chance on small phantoms.

    ``a = <d1, T1> / <T1, T2>``: the slopes ``dp/dβ`` come from each source's own neighbouring
    views, odd offsets for ``T1`` and even ones for ``T2`` (:meth:`_Conjugates.slopes`), so no
    sample's noise meets itself in a product and both sums are unbiased; the templates are
    box-averaged along the detector as the differences are."""
    (g1, v1), (g2, v2) = slopes
    shift = np.asarray(shift, dtype=np.float64)[None, :]
    ok = ok1 & v1[:, None] & v2[:, None]
    n = np.maximum(_box(ok.astype(np.float64), c.width), 1.0)
    t1 = np.where(ok, _box(np.where(ok, g1 * shift, 0.0), c.width) / n, 0.0)
    t2 = np.where(ok, _box(np.where(ok, g2 * shift, 0.0), c.width) / n, 0.0)
    k = FAN_NOISE_BLOCKS
    phi = np.mod(c.b[c.src, None] - gam1[None, :], math.pi)
    ud, vd = (np.where(ok, d1, 0.0) * t1).ravel(), (t1 * t2).ravel()
    u, v = float(ud.sum()), float(vd.sum())
    if not v > 0:
        return None
    se = 0.0
    # groups of ray directions, and groups of channels by |γ| (a pair's two bins lie at
    # ``±γ``: one group): a bad channel biases every direction alike, one channel group only
    paired = ok.any(0)  # the groups split the channels that hold pairs (a half-fan: its overlap)
    span = max(float(np.abs(gam1[paired]).max()) if paired.any() else 0.0, 1e-30)
    for g in (phi * (k / math.pi), np.broadcast_to(np.abs(gam1)[None, :] * (k / span), phi.shape)):
        grp = np.minimum(g.astype(np.int64), k - 1).ravel()
        ub, vb = np.bincount(grp, ud, k), np.bincount(grp, vd, k)
        if not (vb < v).all():
            return None
        jack = (u - ub) / (v - vb)
        se = max(se, math.sqrt((k - 1) / k * float(((jack - jack.mean()) ** 2).sum())))
    if raw is not None:
        w = _box(np.where(ok, t1 / np.maximum(raw[1], 1.0), 0.0), c.width)
        se = max(se, math.sqrt(2.0 * float(((raw[0] * w) ** 2).sum())) / v)
    return u / v, se


def _beyond_noise(c: _Conjugates, d1: np.ndarray, ok1: np.ndarray,
                  slopes: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
                  gam1: np.ndarray, gam: np.ndarray) -> float:
    """How many times better the geometric part of the conjugate pairs fits fan angles ``gam``
    than the labelled ``gam1``, photon noise set aside (0 when not significantly).

    Were ``gam`` right, the labelled differences ``d1`` would be ``p(t1) - p(t) ~ dp/dβ (t1 -
    t)``, ``t = β + π - 2 γ``: a matched filter ``a`` with that template (:func:`_matched`) is
    ~1 then and ~0 when the label is right, and photon noise averages out of it (the energy
    ratio of :func:`conjugate_mismatch` compares two energies both made of the same noise).
    Returns ``(a - z se) / (|1 - a| + z se)`` (``z`` = :data:`FAN_NOISE_Z`, ``se`` the
    jackknife's), the labelled geometric mismatch over the other's, each bounded on its
    unfavourable side; at most 100."""
    found = _matched(c, d1, ok1, slopes, gam1, 2.0 * (np.asarray(gam, dtype=np.float64) - gam1))
    if found is None:
        return 0.0
    a, se = found
    low = a - FAN_NOISE_Z * se
    if not low > 0:
        return 0.0
    return min(low / max(abs(1.0 - a) + FAN_NOISE_Z * se, 1e-30), 100.0)


def _stretch(c: _Conjugates, pairs: tuple[np.ndarray, ...],
             slopes: tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
             geometry: CTGeometry) -> tuple[float, float, np.ndarray, tuple] | None:
    """``(s, se, gam, pairs)``: the scale ``s`` of the bins' positions over the source-detector distance,
    ``u / SDD``, that the conjugate pairs fit (1 as labelled: a detector pitch or a
    source-detector distance ``s`` or ``1 / s`` times the geometry's), and its standard error.

    With ``u / SDD`` scaled by ``1 + ε`` a bin's fan angle moves by ``ε h(γ)``, ``h = γ`` on a
    curved detector (``γ = u / SDD``) and ``sin γ cos γ`` on a flat one (``γ = atan(u /
    SDD)``), so the labelled differences are ``~ dp/dβ 2 ε h(γ)``: :func:`_matched` with that
    template estimates ``ε`` beyond photon noise. The linearisation reads a 10 % error 0.4 %
    long on a centred detector and ~3 % on an offset (half-fan) one, so the pairs are taken
    again at the estimated scale and the rest estimated there (:data:`FAN_STRETCH_PASSES` in
    all; noise-free, ``0.9 .. 1.1`` are then recovered to 0.1 %). ``None`` where no template
    is left or a pass reads more than :data:`FAN_SCALE_NEAR` (the coarse scales' domain)."""
    u = geometry.detector_positions / geometry.source_detector
    curved = geometry.detector == "curved"
    s, gam, se = 1.0, c.gam, 0.0
    for i in range(FAN_STRETCH_PASSES):
        if i:
            gam = s * u if curved else np.arctan(s * u)
            pairs = c.differences(1.0, gam, raw=True)
        d, ok, *raw = pairs
        found = _matched(c, d, ok, slopes, gam,
                         2.0 * (gam if curved else np.sin(gam) * np.cos(gam)), tuple(raw))
        if found is None or not abs(found[0]) < FAN_SCALE_NEAR - 1.0:
            return None
        s, se = s * (1.0 + found[0]), s * found[1]
    return s, se, gam, pairs  # the pairs at the last pass's fan angles


class ConjugateFit(NamedTuple):
    """What :func:`conjugate_mismatch` found: ``mismatch`` of the conjugate rays as labelled,
    the ``scale`` of the fan angles (away from 1) that fits best and how many times better
    (``ratio``; 1 when none fits better), and ``causes``: ``(ratio, text)`` of the named
    mislabellings (:func:`_likely_causes`) that fit better than as labelled, best first (the
    larger of the energy ratio and the matched filter's beyond photon noise,
    :func:`_beyond_noise`); ``stretch`` and ``stretch_se``: the scale of ``u / SDD`` the pairs
    fit and its standard error (:func:`_stretch`; ``1, inf`` where it cannot be read)."""

    mismatch: float
    scale: float
    ratio: float
    causes: tuple[tuple[float, str], ...] = ()
    stretch: float = 1.0
    stretch_se: float = math.inf


def conjugate_mismatch(sino: Tensor, geometry: CTGeometry,
                       dead: Tensor | None = None) -> ConjugateFit | None:
    """Fan beam: :class:`ConjugateFit`: the relative difference of conjugate rays as
    ``geometry`` describes them, the scale of the fan angles (away from 1) that fits the data
    best and how many times better it fits (1 when none fits better), and how much better each
    named mislabelling's fan angles fit (:func:`_likely_causes`: mirrored angles, the pitch as
    an angle, the other detector shape, ...); ``None`` for parallel beams, fewer than 16 views
    or bins, or when fewer than :data:`FAN_MIN_PAIRS` of the rays have a measured conjugate (a
    scan short of 180° plus the fan). ``dead``: the dead bins (:func:`dead_bins`) where the caller
    has them (``stages_ct.data_warnings``), else found here."""
    if geometry.beam != "fan":
        return None
    p = sino.detach().double().reshape(-1, *sino.shape[-2:])[0].cpu().numpy()
    if min(p.shape) < 16 or not np.isfinite(p).all():
        return None
    dead = (dead_bins(torch.from_numpy(p)) if dead is None else dead.reshape(-1, p.shape[-1])[0])
    dead = dead.cpu().numpy()
    c = _Conjugates(p, geometry, dead=dead)
    pairs = c.differences(1.0, raw=True)
    d1, ok1 = pairs[:2]
    if ok1.mean() < FAN_MIN_PAIRS:
        return None
    m1 = c.mismatch(d1, ok1)

    def better(d: np.ndarray, ok: np.ndarray) -> float:  # how many times better than as labelled
        both = ok & ok1
        if both.mean() < 0.5 * FAN_MIN_PAIRS:
            return 0.0
        return float(np.linalg.norm(d1[both])) / max(float(np.linalg.norm(d[both])), 1e-30)

    fits: dict[int, float] = {}

    def fit(i: int) -> float:  # how many times better scale i fits than 1 (0: not tried)
        scale = FAN_SCALES[i]
        if i not in fits:
            fits[i] = 0.0
            if abs(math.log(scale)) >= math.log(FAN_SCALE_NEAR):
                fits[i] = better(*c.differences(scale))
        return fits[i]

    n = len(FAN_SCALES)
    coarse = max(range(0, n, 3), key=fit)  # every third scale, then the best one's neighbours
    best = max(range(max(0, coarse - 2), min(n, coarse + 3)), key=fit)
    # the named mislabellings: the energy ratio, or beyond photon noise where that says more
    fine = c if len(c.src) == p.shape[0] else _Conjugates(p, geometry, FAN_NOISE_SOURCES, dead)
    pairs = pairs if fine is c else fine.differences(1.0, raw=True)
    df, okf = pairs[:2]
    slopes = (fine.slopes(range(1, 2 * FAN_SLOPE_VIEWS, 2)),
              fine.slopes(range(2, 2 * FAN_SLOPE_VIEWS + 1, 2)))
    causes = sorted(((r, text, gam) for text, gam in _likely_causes(geometry)
                     if (r := max(better(*c.differences(1.0, gam)),
                                  _beyond_noise(fine, df, okf, slopes, c.gam, gam))) > 1.0),
                    key=lambda x: x[0], reverse=True)
    found = _stretch(fine, pairs, slopes, geometry)
    stretch = (1.0, math.inf) if found is None else found[:2]
    if found is not None and _stretch_off(*stretch):
        # a small stretch competes with the named causes (the other detector shape's fan
        # angles are nearly a stretch of the labelled ones): a cause stays named unless the
        # stretch fits better beyond it than it fits beyond the stretch
        gs, (ds, oks) = found[2], found[3][:2]

        def beyond(r: float, gam: np.ndarray) -> float:
            if r < FAN_SCALE_RATIO:
                return r
            over = _beyond_noise(fine, ds, oks, slopes, gs, gam)  # the cause, from the stretch
            under = _beyond_noise(fine, *fine.differences(1.0, gam), slopes, gam, gs)
            return r if over >= under else min(r, over)

        causes = sorted(((beyond(r, gam), text, gam) for r, text, gam in causes),
                        key=lambda x: x[0], reverse=True)
    named = tuple((r, text) for r, text, _ in causes if r > 1.0)
    if fits[best] <= 1.0:
        return ConjugateFit(m1, 1.0, 1.0, named, *stretch)
    return ConjugateFit(m1, FAN_SCALES[best], fits[best], named, *stretch)


def _fan(u: np.ndarray, sdd: float, detector: str) -> np.ndarray:
    """Fan angles of detector positions ``u`` (mm from the axis) at ``sdd`` (mm)."""
    return u / sdd if detector == "curved" else np.arctan(u / sdd)


def _likely_causes(geometry: CTGeometry) -> list[tuple[str, np.ndarray]]:
    """``(text, fan angles)``: the mislabellings of a fan-beam geometry that users' files
    carry, each with the fan angles its bins really have, from the same numbers: the pitch at
    the isocentre, in pixels or as an angle per channel (degrees or radians, as scanners quote
    a curved detector's), distances in pixels, ASTRA's ``origin_det`` (isocentre to detector)
    given as ``source_detector``, the other detector shape, and the fan angles mirrored (a
    clockwise rotation written counter-clockwise, or the channels numbered the other way).
    Those whose bins' fan angles are the geometry's (within 1 %) are left out."""
    g = geometry
    sid, sdd, px, ds = g.source_isocenter, g.source_detector, g.pixel_size, g.detector_spacing
    u, gam, other = g.detector_positions, g.fan_angles, "flat" if g.detector == "curved" else "curved"
    deg = sdd * math.pi / 180
    known = [
        (_fan(u * sdd / sid, sdd, g.detector),
         f"detector_spacing given at the isocentre, not at the detector (x SDD / SID = "
         f"{sdd / sid:.3g}: detector_spacing = {ds * sdd / sid:.4g} mm)"),
        (_fan(u * px, sdd, g.detector),
         f"detector_spacing in pixels, not mm (x pixel_size = {px:.3g}: detector_spacing = "
         f"{ds * px:.4g} mm)"),
        (_fan(u, sdd * px, g.detector),
         f"source_isocenter and source_detector in pixels, not mm (x pixel_size = {px:.3g}: "
         f"{sid * px:.4g} and {sdd * px:.4g} mm)"),
        (u * math.pi / 180,
         f"detector_spacing {ds:.4g} given in degrees per channel, as scanners quote a curved "
         f"detector's pitch (x SDD pi / 180 = {deg:.3g}): set detector=\"curved\" and "
         f"detector_spacing = {ds * deg:.4g} mm, the arc length at the detector"),
        (u,
         f"detector_spacing {ds:.4g} given in radians per channel (x SDD = {sdd:.4g}): set "
         f"detector=\"curved\" and detector_spacing = {ds * sdd:.4g} mm, the arc length at the "
         "detector"),
        (_fan(u, sid + sdd, g.detector),
         f"source_detector given as the isocentre-to-detector distance (ASTRA's origin_det; x "
         f"SDD / (SID + SDD) = {sdd / (sid + sdd):.3g}): set source_detector = source_isocenter "
         f"+ origin_det = {sid + sdd:.4g} mm"),
        (_fan(u, sdd, other),
         f"data of a {other} detector labelled {g.detector} (clinical third-generation scanners "
         f"have curved, equi-angular detectors): set detector=\"{other}\""),
        (-gam,
         "the fan angles mirrored: a clockwise rotation written as counter-clockwise angles, "
         "or the detector channels numbered the other way; negate the angles in attrs/geometry "
         "(or flip the sinogram's detector axis, sinogram[..., ::-1])"),
    ]
    span = max(float(np.abs(gam).max()), 1e-30)
    return [(text, a) for a, text in known if float(np.abs(a - gam).max()) > 0.01 * span]


#: Named mislabellings (:func:`_likely_causes`) that fit within this factor of the best one
#: are named with it (their fan angles nearly coincide: photon noise cannot choose).
FAN_CAUSE_NEAR = 1.25


def _stretch_off(s: float, se: float) -> bool:
    """Whether a scale ``s ± se`` of ``u / SDD`` (:func:`_stretch`) is materially and
    significantly off 1 (:data:`FAN_STRETCH`, :data:`FAN_STRETCH_Z`)."""
    return abs(s - 1.0) > FAN_STRETCH and abs(s - 1.0) > FAN_STRETCH_Z * se


def _stretch_text(found: ConjugateFit, geometry: CTGeometry) -> str | None:
    """What a small error of the fan angles' scale (:func:`_stretch`) says, where it is more
    than :data:`FAN_STRETCH` off 1 and :data:`FAN_STRETCH_Z` standard errors: the pitch or the
    source-detector distance that fits (``u / SDD`` scaled by ``s``: ``s`` times the pitch, or
    the distance over ``s``, on either detector shape; the source-isocentre distance does not
    change the fan angles); else ``None``."""
    s, se = found.stretch, found.stretch_se
    eps = s - 1.0
    if not _stretch_off(s, se):
        return None
    g = geometry
    ds, sdd = g.detector_spacing, g.source_detector
    of = "" if g.detector == "curved" else " (the tangents of the fan angles, a flat detector)"
    axis = ("" if g.detector_offset == 0.0 else
            f" with detector_offset = {g.detector_offset * s:.4g} mm (the axis at the same bin)")
    return (f"the fan angles of the detector bins fit the data {'wider' if eps > 0 else 'narrower'}"
            f": u / SDD{of} scaled by {s:.4f} ± {se:.4f}. Is detector_spacing ({ds:.4g} mm) or "
            f"source_detector ({sdd:.4g} mm) {abs(eps):.1%} off? detector_spacing = "
            f"{ds * s:.4g} mm{axis} or source_detector = {sdd / s:.4g} mm would fit")


def fan_geometry_warning(sino: Tensor, geometry: CTGeometry,
                         dead: Tensor | None = None) -> str | None:
    """A warning when the fan-beam sinogram's conjugate rays disagree as ``geometry`` describes
    them (:func:`conjugate_mismatch`), naming the geometry and the likely causes: the named
    mislabellings that fit :data:`FAN_SCALE_RATIO` times better (the best and those within
    :data:`FAN_CAUSE_NEAR` of it), else the scale of the fan angles that does; else ``None``."""
    found = conjugate_mismatch(sino, geometry, dead)
    if found is None:
        return None
    m1, scale, ratio, causes = found.mismatch, found.scale, found.ratio, found.causes
    named = [text for r, text in causes if r >= FAN_SCALE_RATIO and m1 / r < FAN_MISMATCH
             and r * FAN_CAUSE_NEAR >= causes[0][0]]
    coarse = ratio >= FAN_SCALE_RATIO and m1 / ratio < FAN_MISMATCH
    small = _stretch_text(found, geometry)
    if named:
        why = (f"the data's pairs agree {causes[0][0]:.3g}x better taken as "
               + " or ".join(named))
    elif small is not None and (not coarse or abs(math.log(scale / found.stretch))
                                < math.log(FAN_SCALE_NEAR)):
        why = small  # the same error as the coarse scale's, measured closer
    elif coarse:
        why = (f"the fan angles of the detector bins fit the data {ratio:.3g}x better scaled by "
               f"{scale:.2f}, which none of the usual mislabellings explains")
    elif m1 >= FAN_MISMATCH:
        why = ("far beyond photon noise, and no scale of the fan angles makes them agree (a "
               "sinogram stored transposed, or data of another beam)")
    else:
        return None
    g = geometry  # the source-isocentre distance does not move fan angles: not for a stretch
    sid = "" if why is small else f"source_isocenter {g.source_isocenter:.4g} mm, "
    return (f"fan-beam rays measured twice disagree: the ray at view angle β and fan angle γ is "
            f"the one at β + 180° - 2γ, -γ, and the data's pairs differ by {m1:.1%} (relative) "
            f"as attrs/geometry describes them; {why}. Does the geometry describe these data "
            f"(detector_spacing {g.detector_spacing:.4g} mm at the detector, "
            f"{sid}source_detector {g.source_detector:.4g} mm, "
            f"{g.detector} detector: lengths in mm, the pitch at the detector; angles "
            f"counter-clockwise), and is the sinogram stored (views, detectors), not transposed? "
            "Every method's image is blurred and distorted otherwise")
