"""Does a CT sinogram's noise match the dose its file states? (:func:`dose_warning`, for
:meth:`~mrirecon.pipeline.stages_ct.CTStages.data_messages`.)

A LoDoPaB-layout file states the incident photons per bin of the Poisson noise its post-log
sinogram holds (``attrs/photons``; the public layout's 4096 without it). That dose is used:
``undersample.photons`` lowers it by binomial thinning, ct_tv's noise-fit warning weighs the
residual against it, the records and cards quote it, and ``mrirecon train`` lowers training doses
from it. Nothing compared it with the data: a file stating 4096 whose data were noise-free, held
the noise of 1e5 or 256 photons, were smoothed along the detector after the log, took the log in
base 10 or another ``mu_max`` ran with exit 0 and no word (``undersample.photons`` refused most of
them, as "not whole photon counts"), and ct_tv was told its lam fitted noise that was not there.

The noise is measured where the projection is smooth: the second difference along the detector,
``d = y[j-1] - 2 y[j] + y[j+1]``, whose variance for Poisson noise at ``N`` photons per bin is
``v[j-1] + 4 v[j] + v[j+1]``, ``v = exp(p) / N`` after the log (``p`` the physical line
integral ``-log(I / I0)``, the pipeline's units: LoDoPaB's stored values times ``mu_max_per_m``,
as ``noise_fit_ratio`` and ``low_dose_noise`` take it), i.e. about ``6 exp(p) / N``.
``d^2 / (6 exp(level))`` (level: the three values' mean) is then ``1 / N`` times a chi-square of
one degree, and its median gives a dose. Differences along the detector do not depend on the
angular step, so sparse views (30 kept by ``undersample``) are judged as they are. Where the
slice has air around the object (:func:`_air`: the rim left out), the air's triples give the
dose: noise alone. Elsewhere the triples are grouped by line-integral level
(:data:`LEVEL_STEP`) and the largest group's dose is taken, since the object's edges add
variance to ``d`` and never remove it; for the same reason, without air a noise louder than
stated is not said (correct 1e5-photon data on a detector that sees only the object read down
to 0.02x), only a quieter one. Bins whose expected counts at the dose are below
:data:`MIN_COUNTS` (the log of few counts is not ``exp(p) / N``; the count floor) and runs of
three equal values (masked, floored or dropped data) are left out; air that is such runs is
noise-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

#: The median of a chi-square of one degree: ``median(d^2) = CHI2_MEDIAN var(d)`` for Gaussian
#: ``d`` (the variance of ``log(n)``, ``n ~ Poisson(λ)``, read so is ``1 / λ`` within 4 % from
#: 20 counts).
CHI2_MEDIAN = 0.454936423119573
#: Expected counts ``N exp(-level)`` below which a bin is left out: the log of few counts, and
#: the count floor, are not the post-log noise model (+8 % at 10 counts, +20 % at 5).
MIN_COUNTS = 20.0
#: Line integral below which a bin is air: a group of its own, noise alone (the object's rim
#: reaches into it in a minority of its bins).
AIR_LEVEL = 0.05
#: Bins whose mean decides whether a triple is air, and bins on either side along the detector
#: whose means must be air too (:func:`_air`).
AIR_WINDOW, AIR_MARGIN = 9, 2
#: Width of the other line-integral groups (expected counts 1.65x apart from group to group).
LEVEL_STEP = 0.5
#: The fewest bins a group needs to be judged (the median's relative error on the variance is
#: ``2.3 / sqrt(m)``: 12 % here). A slice with no such group is not judged: fewer than this many
#: detector triples at enough counts (8 views of 64 bins; a dose below 20 photons per bin).
MIN_GROUP = 400
#: The share of the air bins' triples that are exactly constant above which the data hold no
#: noise (noisy air is never three equal values in a row: at 250 photons one triple in 60,000).
FLAT_AIR = 0.5
#: How far the dose the noise fits may lie from the one stated (either way, a factor on the
#: noise variance) before a warning. Correct data read 0.81-1.28x in their air (576
#: ``simulate ct`` slices at 64-362 px, 180-1000 views and every 6th-33rd of them, parallel
#: and fan, phantoms and CT images, 250 / 1000 / 4096 / 1e5 photons), 0.92-1.06x on the
#: validation and held-out slices and on ASTRA projections of them (1000 / 4096 / 1e5 photons,
#: all views and 30); 4096 stated on data holding the noise of 1e5 photons read 20-28x, of 1e6
#: 204-290x, of 256 0.053-0.077x, smoothed along the detector ([1, 2, 1] / 4) 13.6-19.5x,
#: shifted half a bin by interpolation 5.2-7.2x, a base-10 log 4.7-6.6x, line integrals x 0.6
#: 2.5-3.5x and x 1.6 0.35-0.50x.
DOSE_RATIO = 2.0
#: Doses (photons per bin) above this are said as "no noise": the noise of 1e9 photons, 3e-5 in
#: air, is below what float32 values near LoDoPaB's ~0.1 hold of a line integral.
NOISE_FREE = 1e9


@dataclass(frozen=True)
class NoiseDose:
    """What :func:`noise_dose` measured: ``photons``, the dose (photons per bin) the noise fits
    (``inf``: none, the air bins exactly constant); ``level``, the mean line integral of the
    group that gave it; ``samples``, the detector triples of that group; ``air``, whether that
    group is the air around the object (noise alone; else the object's edges may have added to
    it, and the dose reads low)."""

    photons: float
    level: float
    samples: int
    air: bool


def _dose(z: Tensor) -> float:
    """The dose (photons per bin) of a group's ``z = d^2 / (6 exp(level))``."""
    var = float(z.median()) / CHI2_MEDIAN  # 1 / photons
    return 1 / var if var > 0 else math.inf


def _air(x: Tensor) -> Tensor:
    """The detector triples of the sinogram ``x`` ``(rows, bins)`` that are air: the mean of the
    :data:`AIR_WINDOW` bins around each is below :data:`AIR_LEVEL`, as are those
    :data:`AIR_MARGIN` bins to either side (the object's rim, where the projection rises from
    zero and its edge inflates the differences, left out). A wide mean weighs each value little,
    so low noise is not what selects a bin (three values' mean at 250 photons read the air's
    dose 7 % high)."""
    f = torch.nn.functional
    w, m = AIR_WINDOW, AIR_MARGIN
    mean = f.avg_pool1d(x[:, None], w, stride=1, padding=w // 2, count_include_pad=False)
    worst = f.max_pool1d(mean, 2 * m + 1, stride=1, padding=m)[:, 0]
    return (worst < AIR_LEVEL)[:, 1:-1]


def _fit(z: Tensor, level: Tensor, air: Tensor) -> NoiseDose | None:
    """The air group's dose where it has :data:`MIN_GROUP` triples (``air``: :func:`_air`), else
    the largest of the other line-integral groups' (:data:`LEVEL_STEP`: the rim's triples with
    the object's) that have; ``None`` where none has."""
    n = int(air.sum())
    if n >= MIN_GROUP:  # noise alone: the others are not needed
        return NoiseDose(_dose(z[air]), float(level[air].mean()), n, True)
    z, level = z[~air], level[~air]
    band = torch.floor(level.clamp_min(0) / LEVEL_STEP).long()
    counts = torch.bincount(band)
    found = None
    for k in torch.nonzero(counts >= MIN_GROUP).flatten().tolist():
        m = band == k
        fit = NoiseDose(_dose(z[m]), float(level[m].mean()), int(counts[k]), False)
        found = fit if found is None or fit.photons > found.photons else found
    return found


def noise_dose(sinogram: Tensor, photons: float) -> NoiseDose | None:
    """The dose (photons per bin) whose Poisson noise the post-log sinogram ``(..., views,
    detectors)`` of line integrals ``-log(I / I0)`` holds, measured along the detector (see the
    module docstring) from the stated ``photons`` (which bins have counts enough): the air
    group's where it has :data:`MIN_GROUP` triples (no object there: noise alone), else the
    largest of the other groups' (the object's edges only add variance); ``inf`` where
    :data:`FLAT_AIR` of the air's triples are exactly constant. ``None`` where no group has
    :data:`MIN_GROUP` triples at :data:`MIN_COUNTS` expected counts (too few views or bins, or
    nearly every ray starved)."""
    x = sinogram.detach().cpu().double()
    x = x.reshape(-1, x.shape[-1])
    if x.shape[-1] < 3:
        return None
    a, b, c = x[:, :-2], x[:, 1:-1], x[:, 2:]
    flat = (a == b) & (b == c)
    level = (a + b + c) / 3
    air = _air(x)
    n_air = int(air.sum())
    if n_air >= MIN_GROUP and int((flat & air).sum()) >= FLAT_AIR * n_air:
        return NoiseDose(math.inf, float(level[air].mean()), n_air, True)
    level, air = level[~flat], air[~flat]
    z = ((a - 2 * b + c)[~flat]).square() / (6 * level.exp())
    dose, found = float(photons), None
    for _ in range(3):  # a noisier dose than stated moves the cut to counts enough at that dose
        keep = dose * torch.exp(-level) >= MIN_COUNTS
        fit = _fit(z[keep], level[keep], air[keep])
        if fit is None:
            return found
        found = fit
        if not fit.photons < 0.9 * dose:
            break
        dose = fit.photons
    return found


def _about(n: float) -> str:
    """``n`` to two significant figures, written out below 1e7 (``100000``, ``2.3e+07``)."""
    r = float(f"{n:.2g}")
    return f"{int(r)}" if r < 1e7 else f"{r:.2g}"


def dose_warning(sinogram: Tensor, photons: float | None, stated: float | None = None,
                 lowered: bool = False) -> str | None:
    """A warning when the noise of the post-log sinogram (line integrals, ``(..., views,
    detectors)``) fits a dose more than :data:`DOSE_RATIO` x from ``photons``, the dose it is
    reconstructed at (``lowered``: ``undersample.photons`` thinned ``stated``, the file's
    ``attrs/photons``, to it; else ``photons`` is the stated dose), naming the dose it fits and
    the likely causes; ``None`` when it fits, when no dose is stated (noise-free data stating
    none are fine) or when the slice is too small to tell (:func:`noise_dose`)."""
    if photons is None or not math.isfinite(photons) or not photons > 0:
        return None
    found = noise_dose(sinogram, photons)
    if found is None:
        return None
    ratio = found.photons / photons
    if 1 / DOSE_RATIO <= ratio <= DOSE_RATIO or (ratio < 1 and not found.air):
        return None  # without air, the object's edges may be what reads as more noise
    stated = photons if stated is None else stated
    said = (f"not the {photons:g} that undersample.photons thinned the stated {stated:g} "
            "(attrs/photons) to" if lowered else f"not the {photons:g} attrs/photons states")
    if found.photons > NOISE_FREE:
        how = (f"the sinogram holds no photon noise: the air around the object reads exactly "
               f"constant along the detector ({found.samples} detector bins), {said}")
        causes = ("noise-free data (projected, or simulate ct --noise-free) stated with a dose: "
                  "state no photons for them, and undersample.photons adds Poisson noise at "
                  "the dose asked; or air masked to a constant")
    else:
        where = ("the air around the object" if found.air else
                 f"the bins of line integral near {found.level:.2g}")
        least = "" if found.air else "at least "  # the edges' variance may be in it
        how = (f"the sinogram's noise fits {least}about {_about(found.photons)} photons per bin, "
               f"{said}: "
               f"its variance along the detector is {1 / ratio:.3g}x that of Poisson noise at "
               f"{photons:g} photons after the log (exp(p) / photons for line integral p; "
               f"measured in {where}, {found.samples} detector bins)")
        causes = ("noise-free data (state no photons for them), another (higher) dose, data "
                  "smoothed or rebinned along the detector after the log, a base-10 log "
                  "(values and noise x 0.434), or line integrals at a smaller scale "
                  "(attrs/mu_max_per_m)" if ratio > 1 else
                  "another (lower) dose, noise added after the log, or line integrals at a "
                  "larger scale (attrs/mu_max_per_m)")
    return (f"{how}. Likely causes: {causes}. The stated dose is used: undersample.photons "
            f"lowers the dose from the stated {stated:g} (so the dose simulated would be wrong), "
            "ct_tv's noise-fit warning, the records and the model cards quote it, and mrirecon "
            "train lowers training doses from it: correct attrs/photons")
