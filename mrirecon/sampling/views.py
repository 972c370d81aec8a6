"""CT view selection (sparse view, limited angle) and low-dose Poisson noise on sinograms:
fresh noise on noise-free data (:func:`low_dose_noise`), binomial thinning of data that already
hold Poisson noise (:func:`thin_dose`)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from mrirecon.containers import Sinogram
from mrirecon.operators.ct_geometry import CTGeometry


def select_views(geometry: CTGeometry, indices) -> CTGeometry:
    """A copy of ``geometry`` keeping only the views ``indices`` (in the given order)."""
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        raise ValueError("select_views: no view selected")
    if idx.min() < 0 or idx.max() >= geometry.num_views:
        raise ValueError(
            f"select_views: view indices must lie in [0, {geometry.num_views}), got "
            f"[{idx.min()}, {idx.max()}]"
        )
    angles = np.asarray(geometry.angles)[idx]
    return dataclasses.replace(geometry, angles=tuple(angles))


#: How far the kept view count may be from the requested one (relative; at least one view):
#: LoDoPaB's 1000 angles give 31 / 63 for 30 / 60 (every 33rd / 16th).
VIEW_COUNT_TOLERANCE = 0.05


def view_factor(num_views: int, views: int, who: str = "views") -> int:
    """``k`` of "keep every k-th view" (:func:`sparse_view`) for about ``views`` of ``num_views``:
    ``k = num_views // views`` (which keeps ``ceil(num_views / k)``), or ``k + 1`` when only that
    keeps a count within :data:`VIEW_COUNT_TOLERANCE` (or one view) of ``views``; refused
    otherwise, naming ``who`` (40 of 60 views kept all 60 without a word)."""
    k = max(num_views // views, 1)
    for f in (k, k + 1):  # k + 1 when k overshoots (63 of 1000: k = 15 keeps 67, 16 keeps 63)
        if abs(math.ceil(num_views / f) - views) <= max(1.0, VIEW_COUNT_TOLERANCE * views):
            return f
    options = sorted({math.ceil(num_views / f) for f in (k, k + 1)} - {num_views})
    raise ValueError(f"{who}: {views} of {num_views} views cannot be kept by keeping every k-th "
                     f"view (k = {k} keeps {math.ceil(num_views / k)}); choose one of "
                     f"{', '.join(map(str, options)) or 'fewer views'}")


def sparse_view(geometry: CTGeometry, factor: int, offset: int = 0) -> tuple[CTGeometry, Tensor]:
    """Keep every ``factor``-th view, starting at ``offset``.

    Parameters
    ----------
    geometry
        The full acquisition.
    factor
        Angular undersampling factor (integer >= 1).
    offset
        First kept view, ``0 <= offset < factor``.

    Returns
    -------
    geometry
        New :class:`CTGeometry` with ``ceil((views - offset) / factor)`` angles.
    indices
        ``(kept_views,)`` int64 indices into the original views, to slice a sinogram with
        ``sinogram[..., indices, :]``.
    """
    if int(factor) != factor or factor < 1:
        raise ValueError(f"sparse_view: factor must be a positive integer, got {factor}")
    factor = int(factor)
    if not 0 <= offset < min(factor, geometry.num_views):
        raise ValueError(f"sparse_view: offset must be in [0, {factor}), got {offset}")
    idx = np.arange(offset, geometry.num_views, factor)
    return select_views(geometry, idx), torch.from_numpy(idx)


def limited_angle(
    geometry: CTGeometry, max_angle: float, start: float | None = None
) -> tuple[CTGeometry, Tensor]:
    """Keep the views whose angle lies in the arc ``[start, start + max_angle)``.

    Angles are compared modulo ``2 pi`` (the arc may wrap around). ``start`` defaults to the
    first view's angle.

    Parameters
    ----------
    geometry
        The full acquisition.
    max_angle
        Arc length in radians, ``0 < max_angle``.
    start
        Start of the arc in radians.

    Returns
    -------
    geometry
        New :class:`CTGeometry` with the kept angles, in the original order.
    indices
        ``(kept_views,)`` int64 indices into the original views.
    """
    if not max_angle > 0:
        raise ValueError(f"limited_angle: max_angle must be > 0 radians, got {max_angle}")
    angles = np.asarray(geometry.angles)
    start = float(angles[0]) if start is None else float(start)
    rel = np.mod(angles - start, 2 * math.pi)
    # views a rounding error below 2 pi belong to the start of the arc
    rel[np.isclose(rel, 2 * math.pi, rtol=0, atol=1e-12)] = 0.0
    idx = np.flatnonzero(rel < max_angle - 1e-12)
    if idx.size == 0:
        raise ValueError(f"limited_angle: no view within [{start}, {start + max_angle}) radians")
    return select_views(geometry, idx), torch.from_numpy(idx)


#: The most incident photons per bin a noise simulation takes: Poisson counts of int64 wrap
#: near 9.2e18 (1e20 gave counts of -9.2e18, clamped: -21 dB with exit 0), and at 1e15 the
#: relative noise, 3e-8, is already below float32 precision: use noise-free data instead.
MAX_PHOTONS = 1e15


def check_photons(photons: float, min_counts: float, who: str) -> None:
    """``0 < min_counts < photons <= MAX_PHOTONS`` or a ``ValueError`` naming ``who``'s options
    (``min_counts >= photons`` clamps every count, air included: a constant sinogram)."""
    if not (math.isfinite(photons) and 0 < photons <= MAX_PHOTONS):
        raise ValueError(f"{who}: photons must be in (0, {MAX_PHOTONS:g}] (more has no noise "
                         f"float32 can hold: use noise-free data), got {photons!r}")
    if not 0 < min_counts < photons:
        raise ValueError(f"{who}: the count floor ({min_counts!r}) must be > 0 and below the "
                         f"incident photons ({photons!r}); at or above them every count, air "
                         "included, is clamped to it")


def low_dose_noise(
    sinogram: Tensor | Sinogram,
    photons: float,
    generator: torch.Generator,
    *,
    attenuation_scale: float = 1.0,
    min_counts: float = 0.1,
) -> Tensor | Sinogram:
    """Simulate a low-dose scan: Poisson noise on the transmitted counts, then the log again.

    With post-log line integrals ``p`` (dimensionless, ``mu`` in 1/mm times length in mm),
    the expected counts are ``I0 exp(-s p)``, ``s = attenuation_scale``; the noisy
    measurement is ``-log(max(N, min_counts) / I0) / s`` with ``N ~ Poisson(I0 exp(-s p))``.
    Zero counts are replaced by ``min_counts`` photons (LoDoPaB-CT uses 0.1) so the log stays
    finite. LoDoPaB-CT: ``I0 = 4096``, ``s = mu_max`` when ``p`` is in its [0, 1] scaling.

    Parameters
    ----------
    sinogram
        Real tensor of line integrals, any shape (e.g. ``(slices, views, detectors)``), or a
        :class:`Sinogram` (a new one is returned with ``photons`` set).
    photons
        Incident photons per detector element and view, ``I0 > 0``.
    generator
        ``torch.Generator`` on the sinogram's device; the only source of randomness.
    attenuation_scale
        Factor ``s`` converting the stored values to line integrals.
    min_counts
        Count substituted for zero detections, ``> 0``.

    Returns
    -------
    Tensor or Sinogram
        Noisy post-log data, same shape, dtype and type as ``sinogram``.
    """
    if isinstance(sinogram, Sinogram):
        noisy = low_dose_noise(
            sinogram.data, photons, generator, attenuation_scale=attenuation_scale, min_counts=min_counts
        )
        return dataclasses.replace(sinogram, data=noisy, photons=float(photons))
    if not isinstance(sinogram, Tensor) or sinogram.is_complex() or not sinogram.is_floating_point():
        raise ValueError("low_dose_noise: sinogram must be a real floating-point tensor")
    if not attenuation_scale > 0:
        raise ValueError(f"low_dose_noise: attenuation_scale must be > 0, got {attenuation_scale}")
    check_photons(photons, min_counts, "low_dose_noise")
    if not isinstance(generator, torch.Generator):
        raise ValueError("low_dose_noise: generator must be a torch.Generator (explicit seed)")
    work = sinogram.detach().to(torch.float64)
    expected = photons * torch.exp(-attenuation_scale * work)
    counts = torch.poisson(expected, generator=generator).clamp_min(min_counts)
    noisy = -torch.log(counts / photons) / attenuation_scale
    return noisy.to(sinogram.dtype)


#: The largest median distance of the recovered counts ``N exp(-s p)`` from whole numbers that
#: data holding Poisson counts at ``N`` photons show: float32 post-log values resolve a count
#: of ``c`` photons to about ``c p 1.2e-7`` (below 0.05 up to ~1e6 photons per bin); counts of
#: noise-free or rescaled data lie anywhere between integers (median distance 0.25).
MAX_COUNT_RESIDUAL = 0.1


def check_thinning(data_photons: float, photons: float, who: str) -> None:
    """``photons <= data_photons`` or a ``ValueError`` naming ``who``: thinning keeps photons,
    it cannot add any, and adding fresh noise to noisy data lowers the dose instead (to
    ``1 / (1 / N + 1 / X)``), so a dose above the data's own cannot be simulated."""
    if not (math.isfinite(data_photons) and data_photons > 0):
        raise ValueError(f"{who}: the data's dose must be a positive number of photons per bin, "
                         f"got {data_photons!r}")
    if photons > data_photons:
        raise ValueError(f"{who}={photons:g} is above the dose of the Poisson noise the data "
                         f"already hold ({data_photons:g} photons per bin): a higher dose cannot "
                         "be simulated from noisier data (added noise would lower the dose to "
                         f"about {1 / (1 / data_photons + 1 / photons):.0f}); ask for at most "
                         f"{data_photons:g}, or use noise-free data")


def thin_dose(
    sinogram: Tensor,
    data_photons: float,
    photons: float,
    generator: torch.Generator,
    *,
    attenuation_scale: float = 1.0,
    min_counts: float = 0.1,
    who: str = "thin_dose",
    source: str | None = None,
) -> Tensor:
    """Lower the dose of post-log data that hold Poisson noise, exactly: binomial thinning.

    The data were made as :func:`low_dose_noise` makes them, at ``N = data_photons``: counts
    ``n ~ Poisson(N exp(-s p))``, floored at ``min_counts``, stored as
    ``-log(max(n, min_counts) / N) / s`` (LoDoPaB-CT: ``N = 4096``, floor 0.1). The counts are
    recovered (``N exp(-s y)``, rounded; a value at the floor is zero photons) and each photon is
    kept with probability ``q = X / N``: ``n' ~ Binomial(n, q)`` is then exactly
    ``Poisson(X exp(-s p))``, and the result ``-log(max(n', min_counts) / X) / s`` is the scan at
    ``X = photons`` (adding fresh noise at ``X`` instead gives about ``1 / (1 / N + 1 / X)``).
    A floored value stands for any count up to the floor; every thinned count of those stays at
    or below it, so the floor keeps the result exact.

    Parameters
    ----------
    sinogram
        Real tensor of noisy post-log line integrals, any shape.
    data_photons
        ``N``, the incident photons per bin of the noise the data hold.
    photons
        ``X <= N``, the dose to simulate (``X = N`` returns the data unchanged).
    generator
        ``torch.Generator`` on the sinogram's device; the only source of randomness.
    attenuation_scale, min_counts
        As in :func:`low_dose_noise`: the data's scaling and its count floor (also the floor of
        the result).
    who
        What the errors name (e.g. ``"file.hdf5: undersample.photons"``).
    source
        The file the data and ``data_photons`` (its ``photons`` attribute) come from, if any:
        a dose their noise contradicts is then a :class:`~mrirecon.io.errors.DataFormatError`
        naming it and ``attrs/photons``.

    Raises
    ------
    ValueError
        ``photons > data_photons`` (:func:`check_thinning`), data whose recovered counts
        are not whole numbers (median distance above :data:`MAX_COUNT_RESIDUAL`): noise-free or
        rescaled data, or a wrong ``data_photons``; or a ``data_photons`` the noise of the air
        bins contradicts (:func:`check_air_dose`).
    """
    if not isinstance(sinogram, Tensor) or sinogram.is_complex() or not sinogram.is_floating_point():
        raise ValueError(f"{who}: the sinogram must be a real floating-point tensor")
    if not attenuation_scale > 0:
        raise ValueError(f"{who}: attenuation_scale must be > 0, got {attenuation_scale}")
    check_photons(photons, min_counts, who)
    check_thinning(data_photons, photons, who)
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"{who}: generator must be a torch.Generator (explicit seed)")
    if photons == data_photons:  # every photon kept
        return sinogram.clone()
    line = sinogram.detach().to(torch.float64) * attenuation_scale  # line integrals, float64
    counts = data_photons * torch.exp(-line)
    at_floor = counts <= min_counts * (1 + 1e-4)
    whole = torch.round(counts)
    above = counts[~at_floor]
    if above.numel() >= 16:
        residual = float((above - torch.round(above)).abs().median())
        if residual > MAX_COUNT_RESIDUAL:
            raise ValueError(f"{who}: the data do not hold whole photon counts at "
                             f"{data_photons:g} photons per bin (N exp(-y) lies a median "
                             f"{residual:.2f} from an integer; Poisson data: ~0), so binomial "
                             "thinning cannot lower their dose: are they noise-free or rescaled, "
                             "or is their dose (the file's photons attribute) wrong?")
    whole = torch.where(at_floor, torch.zeros_like(whole), whole.clamp_min(0))
    check_air_dose(line, whole, data_photons, who, source)
    kept = torch.binomial(whole, torch.full_like(whole, photons / data_photons),
                          generator=generator)
    thinned = -torch.log(kept.clamp_min(min_counts) / photons) / attenuation_scale
    return thinned.to(sinogram.dtype)


#: Air bins, for the dose their noise tells: detector columns whose mean line integral over the
#: views is below this (0.5 mm of water; true air reads 0, its mean noise ~1 / (2 N)).
AIR_LINE_INTEGRAL = 0.01
#: How many standard errors of the air-bin estimate a dose attribute may be off before it is
#: refused; the check runs only where that margin is within a factor 2 (enough air bins to tell
#: a dose off by 2x). Correct simulated files (``simulate ct``: parallel and fan, 64 / 128
#: pixels, 60 / 360 views, 16 to 1e5 photons, 94 slices) stayed within 3.7 standard errors (the
#: tail: air columns that graze the object at 1e5 photons); 1024-photon data labelled 4096 read
#: 4x, 80 and more standard errors off.
DOSE_SIGMAS = 8.0


def air_dose_ratio(line_integrals: Tensor, counts: Tensor) -> tuple[float, float] | None:
    """``(D, sigma)``: the dispersion ``var / mean`` of the recovered whole ``counts`` in the
    air columns of a post-log sinogram ``(..., views, detectors)`` (line integrals: air reads 0)
    and its relative standard error; ``None`` without air columns or fewer than two views.
    Poisson counts recovered at their own dose give ``D = 1``; at a dose attribute ``k`` times
    theirs the recovered counts are ``k`` times the true ones and ``D = k``. Views are taken in
    disjoint pairs and differenced (a slowly varying mean cancels): ``D = sum (n_a - n_b)^2 /
    sum (n_a + n_b)``, whose relative error over ``m`` pairs is ``sqrt(2 / m)``."""
    y = line_integrals.reshape(-1, *line_integrals.shape[-2:])
    n = counts.reshape(y.shape).to(torch.float64)
    views = y.shape[-2] // 2 * 2
    if views < 2:
        return None
    air = y.mean(-2) < AIR_LINE_INTEGRAL  # (slices, detectors)
    a, b = n[:, 0:views:2, :], n[:, 1:views:2, :]
    mask = air[:, None, :].expand_as(a)
    m = int(mask.sum())
    total = float((a + b)[mask].sum())
    if m == 0 or not total > 0:
        return None
    return float(((a - b)[mask] ** 2).sum()) / total, math.sqrt(2.0 / m)


def check_air_dose(line_integrals: Tensor, counts: Tensor, data_photons: float, who: str,
                   source: str | None = None) -> None:
    """Refuse a dose ``data_photons`` that the noise of the air bins contradicts
    (:func:`air_dose_ratio`) by more than :data:`DOSE_SIGMAS` standard errors, when there are
    air bins enough to tell a factor 2: 1024-photon data labelled 4096 were "thinned exactly
    to 1024" into an effective 546, and noted exact. A :class:`DataFormatError` naming
    ``source`` and ``attrs/photons`` where given, else a ``ValueError`` naming ``who``."""
    found = air_dose_ratio(line_integrals, counts)
    if found is None:
        return
    ratio, sigma = found
    margin = math.log1p(DOSE_SIGMAS * sigma)
    if margin > math.log(2.0) or abs(math.log(max(ratio, 1e-30))) <= margin:
        return
    said = (f"the data's noise says about {data_photons / ratio:.0f} photons per bin (the "
            f"variance of the recovered counts N exp(-y) in their air bins is {ratio:.3g}x their "
            f"mean, 1 at the dose of the noise), not the {data_photons:g} stated")
    fix = ("the dose of the noise the data hold must be stated right for thinning to lower it "
           "exactly: correct the file's photons attribute")
    if source is not None:
        from mrirecon.io.errors import DataFormatError

        raise DataFormatError(source, "attrs/photons", f"{said}; {fix} ({who})")
    raise ValueError(f"{who}: {said} (the file's photons attribute, attrs/photons); {fix}")


#: Noise-free post-log data are non-negative up to the rounding of the projector's sums: a bin
#: below ``-NEGATIVE_ULPS * eps * detectors * peak`` (eps of the data's dtype) is noise.
NEGATIVE_ULPS = 4.0
#: ... and more than this fraction of such bins is the data's noise (air bins of noisy data:
#: about half of them), not a stray value.
NEGATIVE_FRACTION = 1e-3


def check_noise_free(sinogram: Tensor, who: str, noisy: str | None = None) -> None:
    """Refuse adding Poisson noise (:func:`low_dose_noise`) to data said to be noise-free (no
    dose stated) that hold noise: ``noisy`` (why the file's attributes say so, e.g. a
    ``min_photon_count``, written only with noise), or clearly negative line integrals, which
    no projection of an object gives. Fresh noise on noisy data lowers the dose to about
    ``1 / (1 / N + 1 / X)`` (1948 for 4096 asked) while the record says ``X``."""
    x = sinogram.detach()
    if noisy is None and x.numel():
        eps = torch.finfo(x.dtype).eps if x.is_floating_point() else 0.0
        peak = float(x.abs().max())
        limit = NEGATIVE_ULPS * eps * x.shape[-1] * peak
        neg = x < -limit
        share = float(neg.double().mean())
        if share > NEGATIVE_FRACTION:
            noisy = (f"{share:.1%} of the line integrals are negative, down to "
                     f"{float(x.min()):.3g}, which only noise gives")
    if noisy is not None:
        raise ValueError(f"{who}: the data hold noise but their dose is unknown ({noisy}): "
                         "set the file's photons attribute (attrs/photons: the incident photons "
                         "per bin of the noise they hold), and the dose is lowered exactly by "
                         "thinning; Poisson noise added to noisy data would give another dose "
                         "than the one asked for")
