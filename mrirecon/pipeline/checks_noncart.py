"""Checks of non-Cartesian (radial, spiral) k-space that need its trajectory: a gradient delay
estimated from the data (:func:`gradient_delay`, RING-style: where pairs of spokes meet), an
isolated spike along a readout (:func:`check_readouts`: the Cartesian rule of
:func:`mrirecon.pipeline.checks_mri.check_kspace` with each readout as a k-space column), the
outer samples that estimate a coil's receiver DC offset (:func:`outer_samples`, for
:func:`mrirecon.pipeline.checks_mri.dc_offsets`) and the data residual of a reconstruction
against the noise level (:func:`residual_warning`). Thresholds and the figures that set them:
``docs/robustness.md``."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from mrirecon.pipeline.slice_mri import MRISlice

#: An estimated gradient delay (the largest shift along any readout direction, in readout
#: samples) above this is named: a quarter of a sample cost 4-6 dB on a 64 x 64 radial scan,
#: and clean simulated spokes (radial over pi and 2 pi, golden and uniform, several noise
#: seeds) gave at most 0.003 (``tests/pipeline/test_scanner_faults_noncart.py``).
DELAY_WARN_SAMPLES = 0.2
#: Delays are searched within this many readout samples of the nominal centre.
DELAY_SEARCH = 4.0
#: Sub-sample resolution of the search (the spokes are interpolated band-limited to it).
DELAY_UPSAMPLE = 16
#: At most this many spoke pairs are matched per slice: the cost grows with coils x pairs x
#: (2 DELAY_SEARCH DELAY_UPSAMPLE + 1)^2; measured 0.29 s at 256 spokes x 512 samples x 8 coils,
#: one thread.
DELAY_PAIRS = 96


def spoke_geometry(trajectory: Tensor) -> tuple[Tensor, Tensor, float] | None:
    """``(directions, centre positions, spacing)`` of readouts that are straight, uniformly
    sampled spokes through the k-space centre (``trajectory`` ``(readouts, samples, 2)``):
    ``(readouts, 2)`` unit directions of travel, ``(readouts,)`` the nominal centre's position
    in samples from each readout's first, and the sample spacing (normalised units); ``None``
    for any other trajectory (spiral, centre-out half spokes, curved readouts)."""
    t = trajectory.detach().to(torch.float64).cpu()
    if t.ndim != 3 or t.shape[1] < 8 or t.shape[0] < 4:
        return None
    step = t[:, 1:] - t[:, :-1]
    spacing = float(step.norm(dim=-1).median())
    if spacing <= 0:
        return None
    u = t[:, -1] - t[:, 0]
    length = u.norm(dim=-1, keepdim=True)
    if bool((length <= 0).any()):
        return None
    u = u / length
    along = (t * u[:, None]).sum(-1)  # (readouts, samples)
    across = t[..., 0] * u[:, None, 1] - t[..., 1] * u[:, None, 0]
    index = torch.arange(t.shape[1], dtype=torch.float64)
    straight = float(across.abs().max()) <= 0.05 * spacing
    uniform = float((along - along[:, :1] - index * spacing).abs().max()) <= 0.05 * spacing
    centre = -along[:, 0] / spacing
    through = bool(((centre > 1) & (centre < t.shape[1] - 2)).all())
    if not (straight and uniform and through):
        return None
    return u, centre, spacing


def _profiles(spokes: Tensor, centre: Tensor, positions: Tensor) -> Tensor:
    """Band-limited interpolation of ``spokes`` ``(coils, readouts, samples)`` at ``positions``
    samples from each readout's nominal centre -> ``(coils, readouts, len(positions))``."""
    n = spokes.shape[-1]
    spectrum = torch.fft.fft(spokes.to(torch.complex128), dim=-1)  # along the readout
    freq = torch.fft.fftfreq(n, dtype=torch.float64)
    where = centre[:, None] + positions[None, :]  # (readouts, positions) sample index
    out = []
    for r in range(0, spokes.shape[1], 16):  # (16, positions, samples) at a time
        phase = torch.exp(2j * math.pi * freq * where[r:r + 16, :, None])
        out.append(torch.einsum("crn,rpn->crp", spectrum[:, r:r + 16], phase) / n)
    return torch.cat(out, 1)


def estimate_gradient_delay(data: Tensor, trajectory: Tensor,
                            geometry: tuple[Tensor, Tensor, float] | None = None) -> Tensor | None:
    """The gradient delay of radial spokes, estimated from the data alone: ``(2, 2)`` symmetric
    ``S`` (readout samples) such that a spoke of direction ``u`` measured ``k + spacing * S u``
    where the trajectory says ``k`` (``S[1, 1]``: the delay along ``trajectory[..., 1]``, kx;
    ``S[0, 0]`` along ky; the off-diagonal: their cross term). ``None`` for readouts that are not
    spokes through the centre (:func:`spoke_geometry`) or all-zero data.

    RING-style (Rosenzweig, Holme and Uecker, MRM 2018): two spokes of different directions
    cross at one point of k-space, where every coil measured the same value; the sample
    positions at which the two spokes agree (searched within :data:`DELAY_SEARCH` samples, the
    spokes interpolated band-limited to 1 / :data:`DELAY_UPSAMPLE` of a sample and the minimum
    refined by a quadratic fit) give two linear equations in ``S`` per pair, solved by least
    squares over up to :data:`DELAY_PAIRS` pairs of near-perpendicular spokes. Unlike an echo
    centroid, it does not take the object's k-space as symmetric (spokes over ``pi`` only).
    ``geometry``: :func:`spoke_geometry` of ``trajectory`` when the caller has it."""
    geometry = spoke_geometry(trajectory) if geometry is None else geometry
    if geometry is None or not bool((data != 0).any()):
        return None
    u, centre, _ = geometry
    spokes = data.detach().cpu()
    readouts = spokes.shape[1]
    live = (spokes != 0).any(0).any(-1)  # lost readouts hold no sample
    angle = torch.atan2(u[:, 0], u[:, 1])
    chosen = torch.nonzero(live).flatten()
    chosen = chosen[torch.linspace(0, chosen.numel() - 1, min(DELAY_PAIRS, chosen.numel()))
                    .round().long()].unique()
    sine = torch.sin(angle[chosen, None] - angle[None, :]).abs() * live[None, :]
    partner = sine.argmax(1)
    keep = sine.gather(1, partner[:, None])[:, 0] > math.sin(math.radians(30))
    first, second = chosen[keep], partner[keep]
    if first.numel() < 3:
        return None
    step = 1.0 / DELAY_UPSAMPLE
    positions = torch.arange(-DELAY_SEARCH, DELAY_SEARCH + step / 2, step, dtype=torch.float64)
    need = torch.unique(torch.cat([first, second]))
    profile = torch.zeros((spokes.shape[0], readouts, positions.numel()), dtype=torch.complex128)
    profile[:, need] = _profiles(spokes[:, need], centre[need], positions)
    rows, rhs = [], []
    for i, j in zip(first.tolist(), second.tolist()):
        a, b = profile[:, i], profile[:, j]  # (coils, positions)
        cost = (a[:, :, None] - b[:, None, :]).abs().square().sum(0)  # (p_i, p_j)
        flat = int(cost.argmin())
        p, q = divmod(flat, positions.numel())
        if not (0 < p < positions.numel() - 1 and 0 < q < positions.numel() - 1):
            continue  # the minimum at the search's edge: no crossing found within it
        ti, tj = _refine(cost[p - 1:p + 2, q - 1:q + 2])
        ti, tj = float(positions[p]) + ti * step, float(positions[q]) + tj * step
        v = u[j] - u[i]  # t_i u_i - t_j u_j = S (u_j - u_i), S = [[s0, s2], [s2, s1]]
        d = ti * u[i] - tj * u[j]
        rows += [[float(v[0]), 0.0, float(v[1])], [0.0, float(v[1]), float(v[0])]]
        rhs += [float(d[0]), float(d[1])]
    if len(rows) < 6:
        return None
    s0, s1, s2 = torch.linalg.lstsq(torch.tensor(rows, dtype=torch.float64),
                                  torch.tensor(rhs, dtype=torch.float64)[:, None]).solution[:, 0]
    return torch.stack([torch.stack([s0, s2]), torch.stack([s2, s1])])


def _refine(patch: Tensor) -> tuple[float, float]:
    """Sub-grid offset ``(di, dj)`` (grid steps, within +-1) of the minimum of a quadratic
    fitted to a 3 x 3 ``patch`` of costs centred on the grid minimum."""
    g = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    x, y = torch.meshgrid(g, g, indexing="ij")
    a = torch.stack([torch.ones(9, dtype=torch.float64), x.flatten(), y.flatten(),
                     x.flatten() ** 2, x.flatten() * y.flatten(), y.flatten() ** 2], 1)
    c = torch.linalg.lstsq(a, patch.flatten()[:, None]).solution[:, 0]
    hessian = torch.tensor([[2 * c[3], c[4]], [c[4], 2 * c[5]]], dtype=torch.float64)
    if float(torch.linalg.det(hessian)) <= 0 or float(hessian[0, 0]) <= 0:
        return 0.0, 0.0
    offset = -torch.linalg.solve(hessian, c[1:3])
    return float(offset[0].clamp(-1, 1)), float(offset[1].clamp(-1, 1))


def delay_shift(trajectory: Tensor, delay: Tensor,
                geometry: tuple[Tensor, Tensor, float] | None = None) -> Tensor:
    """``trajectory`` ``(readouts, samples, 2)`` of spokes moved to where a gradient ``delay``
    (:func:`estimate_gradient_delay`) put their samples: each spoke by ``spacing * S u``. The
    few end samples moved past the edge of k-space (``[-0.5, 0.5)``, which the NUFFT accepts)
    are held at the edge: they carry almost no signal. ``geometry``: :func:`spoke_geometry` of
    ``trajectory`` when the caller has it."""
    u, _, spacing = spoke_geometry(trajectory) if geometry is None else geometry
    shift = spacing * (u @ delay.T)  # (readouts, 2): S u per spoke (S symmetric)
    moved = trajectory + shift[:, None, :].to(trajectory.dtype).to(trajectory.device)
    return moved.clamp(-0.5, math.nextafter(0.5, 0.0))


def delay_density(density: Tensor, trajectory: Tensor, delay: Tensor,
                  geometry: tuple[Tensor, Tensor, float] | None = None) -> Tensor:
    """Density weights ``(readouts, samples)`` of ``trajectory``'s spokes moved by ``delay``
    (:func:`delay_shift`): a weight belongs to a k-space position, not to a sample index, so each
    spoke's weights move with its samples (sample ``i`` now lies where sample ``i + a`` lay, ``a``
    the shift along the spoke in samples; linear interpolation, the end weights held). Kept at
    the nominal positions, a ramp's smallest weight stayed at the nominal centre sample while a
    1-sample delay had moved k = 0 to its neighbour: the k-space centre weighted 4x, the gridded
    image's mean 1.5x, the coil maps and data scale off: ``mri_radial_cs`` 36.5 instead of
    39.6 dB and a data residual 2.3x the noise. ``geometry``: :func:`spoke_geometry` of
    ``trajectory`` when the caller has it."""
    u, _, _ = spoke_geometry(trajectory) if geometry is None else geometry
    along = (u * (u @ delay.T)).sum(-1)  # (readouts,) u . S u, samples along each spoke
    w = density.to(torch.float64)
    n = w.shape[-1]
    where = (torch.arange(n, dtype=torch.float64)[None, :] + along[:, None].to(w.device)).clamp(0, n - 1)
    low = where.floor().long().clamp(max=n - 2)
    frac = where - low
    moved = w.gather(1, low) * (1 - frac) + w.gather(1, low + 1) * frac
    return moved.to(density.dtype)


def delay_text(delay: Tensor) -> str:
    """``S`` of :func:`estimate_gradient_delay` in words: per axis, in readout samples."""
    return (f"{float(delay[1, 1]):+.2f} samples along kx (trajectory[..., 1]), "
            f"{float(delay[0, 0]):+.2f} along ky (trajectory[..., 0]), cross term "
            f"{float(delay[0, 1]):+.2f}")


def gradient_delay(s: MRISlice, mode: str) -> MRISlice:
    """``preprocess.gradient_delay`` on a non-Cartesian slice: ``ignore``: ``s`` as it is;
    ``warn`` (the default): a warning (``notes["gradient_delay"]``) when the delay
    :func:`estimate_gradient_delay` finds shifts some readout direction by more than
    :data:`DELAY_WARN_SAMPLES` samples; ``correct``: the trajectory moved by the estimate
    (:func:`delay_shift`) and its density weights with it (the reader's Pipe-Menon weights
    computed again for the moved trajectory, a file's moved along the spokes:
    :func:`delay_density`), with the same warning saying so, and a note when the readouts are
    not spokes (no estimate: spiral, centre-out). Was: a 1-sample delay cost ``mri_radial_cs``
    20 dB with exit 0 and no word; then 36.5 dB corrected, the weights left at the nominal
    positions (39.6 now, as the file holding the delayed trajectory)."""
    if mode == "ignore" or s.trajectory is None:
        return s
    geometry = spoke_geometry(s.trajectory)  # once: the estimate and the correction share it
    delay = None if geometry is None else estimate_gradient_delay(s.kspace, s.trajectory, geometry)
    if delay is None:
        if mode != "correct":
            return s
        return replace(s, notes={**s.notes, "gradient_delay_unestimated": (
            "preprocess.gradient_delay=correct: the readouts are not straight spokes through the "
            "k-space centre (spiral, centre-out or curved readouts), whose crossings estimate a "
            "delay; nothing was corrected")})
    largest = float(torch.linalg.eigvalsh(delay).abs().max())
    if largest <= DELAY_WARN_SAMPLES:
        return s
    found = (f"gradient delay: the spokes' crossings put the samples {delay_text(delay)} off "
             f"their trajectory (up to {largest:.2f} samples along a readout; RING-style "
             "estimate from the data): a delay blurs and shades the image (1 sample cost 20 dB "
             "on a 64 x 64 radial scan)")
    if mode == "correct":
        moved = delay_shift(s.trajectory, delay, geometry)
        density = s.density
        if density is not None and s.header.extra.get("density_source") == "pipe_menon":
            from mrirecon.functional.density import pipe_menon_density

            density = pipe_menon_density(moved, tuple(s.header.encoded_matrix[:2])).to(
                s.density.device)  # the reader's weights, computed again for where samples lie
        elif density is not None:  # the file's weights, moved with their samples
            density = delay_density(density, s.trajectory, delay, geometry).to(s.density.device)
        return replace(s, trajectory=moved, density=density, notes={
            **s.notes, "gradient_delay": found + "; the trajectory was shifted by the estimate "
            "(preprocess.gradient_delay=correct)"})
    return replace(s, notes={**s.notes, "gradient_delay": found + "; set "
                             "preprocess.gradient_delay=correct to shift the trajectory by it"})


def outer_samples(trajectory: Tensor, share: float) -> Tensor:
    """``(readouts, samples)`` bool: the samples of ``trajectory`` ``(readouts, samples, 2)``
    farther from the k-space centre than ``share`` of its largest radius, where an object's
    k-space is small and averages to ~0 (the non-Cartesian counterpart of the Cartesian outer
    readout rows, :func:`mrirecon.pipeline.checks_mri.dc_offsets`)."""
    radius = trajectory.detach().to(torch.float64).norm(dim=-1)
    return radius > share * radius.max()


#: Share of k-space at its outer edge whose samples estimate the noise (:func:`outer_noise`): the
#: outermost 10 % of a trajectory's radius, the outer 10 % of the readout rows on each side of a
#: Cartesian grid. Its own constant: the DC-offset rule (``checks_mri.DC_OFFSET_BAND``) reads a
#: wider band for a mean, not for the noise.
NOISE_BAND = 0.1
#: Order of the differences along the readout that :func:`outer_noise` takes: a difference of
#: order m passes white noise with power gain C(2m, m) and an object at ``x`` of the readout's
#: field of view (``|x| <= 1/2``) with ``(2 sin(pi x))^(2m)``, so the object's k-space cancels
#: where it is narrower than the field of view (2x oversampled readouts). On the simulator's
#: radial data (8 coils, 30 dB) the estimate read 1.12 / 1.11 / 1.03 / 1.01x the true noise at
#: 64 / 128 / 256 / 320 (second differences: 1.63 / 1.67 / 1.16 / 1.06; the neighbour
#: differences beyond 3/4 of the radius this replaces: 3.1 / 3.05 / 1.45); spiral readouts
#: (sample spacing near the grid's at the edge) 2.26 / 2.43 / 1.31 / 1.15.
NOISE_DIFFERENCE_ORDER = 4


def outer_noise(kspace: Tensor, trajectory: Tensor | None = None) -> float | None:
    """Robust rms noise of one complex sample of k-space, the square root of the mean over the
    coils of each coil's noise power: Cartesian ``(coils, H, W)`` (readout along ``H``) from the
    outer :data:`NOISE_BAND` of the readout rows on each side, non-Cartesian ``(coils, readouts,
    samples)`` on ``trajectory`` ``(readouts, samples, 2)`` from the samples beyond ``1 -``
    :data:`NOISE_BAND` of its largest radius (:func:`outer_samples`). Differences of order
    :data:`NOISE_DIFFERENCE_ORDER` along the readout over runs of non-zero samples there cancel
    the object's k-space (smooth along an oversampled readout) and a DC offset; the median of
    their squared magnitude is ``ln 2 C(2m, m)`` times the noise power (exponentially
    distributed), so a few large ones (the object's edges, a spike) do not move it. Filtered
    readouts whose noise falls off at the edges of the oversampled field of view read low: a
    noise scan, where the slice has one, is the better figure. ``None`` with fewer than 16 such
    differences in every coil."""
    m = NOISE_DIFFERENCE_ORDER
    if trajectory is not None:  # (coils, readouts, samples), the outer samples of each readout
        runs = [(kspace, outer_samples(trajectory, 1 - NOISE_BAND).to(kspace.device)[None])]
    elif kspace.ndim == 3 and kspace.shape[-2] >= 2 * (m + 1):  # each band (coils, W, rows)
        b = max(m + 1, math.ceil(kspace.shape[-2] * NOISE_BAND))
        q = kspace.shape[-1] // 4  # and the outer quarter of the columns on each side
        runs = [(k[:, :, cols].transpose(-1, -2), True) for k in (kspace[:, :b], kspace[:, -b:])
                for cols in (slice(None, q), slice(kspace.shape[-1] - q, None))]
    else:
        return None
    found: list[list[Tensor]] = [[] for _ in range(kspace.shape[0])]
    for data, region in runs:
        d, live = data.to(torch.complex128), (data != 0) & region
        for _ in range(m):
            d, live = d[..., 1:] - d[..., :-1], live[..., 1:] & live[..., :-1]
        for c in range(d.shape[0]):
            found[c].append(d[c][live[c]].abs().square())
    scale = math.log(2) * math.comb(2 * m, m)
    powers = [float(torch.cat(v).median()) / scale for v in found if sum(map(len, v)) >= 16]
    if not powers:
        return None
    return (sum(powers) / len(powers)) ** 0.5


def check_readouts(data: Tensor, trajectory: Tensor, shape: tuple[int, int], where: str) -> None:
    """Refuse non-Cartesian k-space ``(coils, readouts, samples)`` on ``trajectory``
    ``(readouts, samples, 2)`` (image grid ``shape``) holding an isolated spike: the Cartesian
    rule (:func:`mrirecon.pipeline.checks_mri.refuse_spikes`) with each readout as a k-space
    column, its centre the samples within the central 5 x 5 grid cells. Was: never checked; one
    sample at 10x / 1e9x the k-space maximum gave ``mri_radial_cs`` 23.5 / -137 dB with exit 0
    (at 1000x and more blamed on a mis-scaled coil)."""
    from mrirecon.pipeline.checks_mri import refuse_spikes

    if not bool(torch.isfinite(data).all()) or not bool((data != 0).any()):
        return  # check_slice names NaN / Inf samples and all-zero k-space
    cells = trajectory.detach().to(torch.float64).abs() * torch.tensor(
        [float(shape[0]), float(shape[1])], dtype=torch.float64, device=trajectory.device)
    centre = (cells <= 2.5).all(-1).to(data.device)  # (readouts, samples)
    refuse_spikes(data.abs().transpose(-1, -2), centre.T, where,
                  lambda sample, readout: f"readout {readout}, sample {sample}")


#: A reconstruction whose data residual ``||A x - y||`` (rms over the samples) stands more than
#: :data:`RESIDUAL_RATIO` times above the noise level (:func:`slice_noise`) and whose excess over
#: the noise (``sqrt(residual^2 - noise^2)``) is more than :data:`RESIDUAL_EXCESS` of the data's
#: rms does not explain its data. A consistent regularised fit leaves, besides the noise, a bias
#: that scales with the signal, not with the noise, so the ratio alone grows with the SNR: on
#: clean simulated files (``mrirecon simulate mri``, 8 coils, 64 / 128 / 192 / 256 / 320, 20 /
#: 30 / 40 dB, one seed each; scratch s18/f_rr1/calib.py) ``mri_radial_cs`` left 1.15-11.6x
#: the noise on golden-angle radial files (1.64 / 3.85 / 10.6 at 256), 0.58-3.63x on spirals,
#: and beyond the noise 1.06-1.43 % of the data (spirals 0-0.87 %). On the 64 x 64 fault files
#: of ``tests/pipeline/test_scanner_faults_noncart.py`` (20 / 30 / 40 dB) a 0.25-sample
#: uncorrected gradient delay left 11 % (5.3-26.9x the noise), a wrong golden-angle increment
#: 32 % (15-79x); clean 1.3-1.4 % (1.2-3.5x). A spiral labelled with a 10 % longer dwell is not
#: caught.
RESIDUAL_RATIO = 1.5
#: See :data:`RESIDUAL_RATIO`: about 3x above the clean files' largest excess, 3x below the
#: 0.25-sample delay's.
RESIDUAL_EXCESS = 0.04


def slice_noise(s: MRISlice, prewhitened: bool) -> tuple[float, str] | None:
    """``(rms noise of one complex sample, what it was estimated from)`` of MRI slice ``s`` as
    the reconstruction gets it (the square root of the mean over the coils of the noise power):
    the noise scan's when the slice has one (1 when ``preprocess.prewhiten`` whitened the data
    with it, ``prewhitened``; not when coil compression changed the channels), else
    :func:`outer_noise` of its k-space. ``None`` when neither tells it."""
    if s.noise is not None and prewhitened:
        return 1.0, "the noise scan"  # whitened with it: unit complex variance per channel
    if (s.noise is not None and s.header.extra.get("acquired_coils") is None
            and int(s.noise.shape[0]) == int(s.kspace.shape[0]) and s.noise.shape[-1] > 1):
        from mrirecon.calib.prewhiten import noise_covariance

        power = float(noise_covariance(s.noise.to(torch.complex128)).diagonal().real.mean())
        return power ** 0.5, "the noise scan"
    sigma = outer_noise(s.kspace, s.trajectory)
    if sigma is None:
        return None
    return sigma, ("the outer readout rows" if s.trajectory is None
                   else "the outer k-space samples")


def residual_warning(s: MRISlice, image: Tensor, prewhitened: bool = False) -> str | None:
    """A warning when the reconstruction ``image`` ``(H, W)`` of non-Cartesian slice ``s`` leaves
    a data residual ``||A x - y||`` more than :data:`RESIDUAL_RATIO` times the noise level
    (:func:`slice_noise`: the noise scan's, else :func:`outer_noise`; ``prewhitened``: the data
    were whitened with the scan) and more than :data:`RESIDUAL_EXCESS` of the data beyond the
    noise (what a consistent regularised fit leaves grows with the signal), with ``A`` the
    slice's operator and maps (one forward NUFFT): the data do not fit the trajectory (a wrong
    angle increment, dwell time or gradient delay; was: silent, 13-20 dB). ``None`` for
    Cartesian slices, a slice without maps or a magnitude image."""
    from mrirecon.pipeline.slice_mri import operator

    if (s.trajectory is None or s.maps is None or image.ndim != 2 or not image.is_complex()
            or tuple(image.shape) != tuple(s.maps.shape[-2:])):
        return None
    noise = slice_noise(s, prewhitened)
    if noise is None or not noise[0] > 0:
        return None
    sigma, source = noise
    with torch.no_grad():
        fitted = operator(s, s.maps.to(image.dtype))(image).to(s.kspace.dtype)
    measured = s.kspace != 0
    residual = float((fitted - s.kspace)[measured].abs().double().square().mean().sqrt())
    data = float(s.kspace[measured].abs().double().square().mean().sqrt())
    ratio = residual / sigma
    excess = max(residual ** 2 - sigma ** 2, 0.0) ** 0.5 / data
    if ratio <= RESIDUAL_RATIO or excess <= RESIDUAL_EXCESS:
        return None
    return (f"the reconstruction leaves a data residual {ratio:.3g}x the noise level (rms over "
            f"the samples; the noise from {source}; beyond the noise {100 * excess:.2g} % of the "
            "data's rms): the data are inconsistent "
            "with the trajectory: a gradient delay (preprocess.gradient_delay=correct, radial), "
            "a wrong angle increment or readout dwell time in the trajectory, or k-space from "
            "another trajectory?")
