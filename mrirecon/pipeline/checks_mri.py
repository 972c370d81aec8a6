"""Checks of MRI k-space as read, before any stage uses it: refuse what no method can use (an
isolated spike, DC off centre, k-space undersampled along the readout, a mask that does not
describe the data) and report what looks wrong but may be real (columns marked sampled that hold
no data, data the mask drops, dead, mis-scaled or duplicated coils). Thresholds and the figures
that set them: ``docs/robustness.md``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

from mrirecon.calib.espirit import MIN_KERNEL_POSITIONS, largest_kernel
from mrirecon.sampling.agreement import mask_disagreement

if TYPE_CHECKING:
    from mrirecon.pipeline.schema import CalibrateConfig
    from mrirecon.pipeline.slice_mri import MRISlice

#: A k-space sample this many times both its readout neighbours, and at least half the largest
#: other sample, is a spike: no object's k-space has an isolated peak outside its centre.
SPIKE_RATIO = 20.0
#: The same inside the central 5 x 5 samples, where the DC of a flat object can stand ~10x above
#: its neighbours (a scanner spike replacing DC stands 1e6x or more).
CENTRE_SPIKE_RATIO = 1e4
#: Inside the central 5 x 5 a sample this many times the median over the coils of the same
#: position, each coil's magnitude divided by the median of its own central 5 x 5, is a spike in
#: its coil (if it also passes the other bars: half the largest other sample, 100x the median):
#: an object's centre differs from coil to coil by a smooth sensitivity. On simulated brains (4-16
#: coils, 15-40 dB, fully and 4-8x undersampled, the demo's) central samples above half the
#: largest stood at most 2.9x (any central sample 5.3x); one coil's sample set to 10x the k-space
#: maximum beside DC stood 8.7x (64 x 48) and 15x (128 x 128).
CROSS_COIL_SPIKE_RATIO = 5.0
#: A spike also stands this far above the median sample magnitude (the largest of 10^6 noise
#: samples is ~5x their median, so a noise-only slice never holds one).
SPIKE_OVER_MEDIAN = 100.0
#: An energy profile (per row, per column) locates DC only when its peak stands this far above
#: its median: any object's k-space does by orders of magnitude, noise alone by ~1.5x.
PEAK_OVER_MEDIAN = 10.0
#: On a k-space axis the samples beside DC hold far more energy than the median position (an
#: object's spectrum falls off smoothly: 60x and 70x on the 128 x 128 phantom's rows); a coil louder
#: than the others has neighbours at the median's (noise: within a few % of it). Both neighbours
#: of a peaked middle coil must stand this far above the median for the coil axis to be read as
#: a k-space axis (:func:`refuse_coils_last`).
COIL_NEIGHBOUR_OVER_MEDIAN = 2.0


def check_kspace(data: Tensor, where: str) -> None:
    """Refuse Cartesian k-space ``(coils, H, W)`` that no reconstruction here can use: an
    isolated spike (RF interference or a corrupted sample: one 1e9 sample made an image 1e10x
    too bright, exit 0), or energy peaking far from the centre (DC at the corner: k-space
    stored without the centring shift gave 7 dB images, exit 0), or more than half the readout
    rows empty (undersampled along the readout: transposed data). Inside the central 5 x 5
    samples the readout neighbours are large, so only a far larger ratio to them counts
    (:data:`CENTRE_SPIKE_RATIO`: the DC of a flat object filling the field of view stands above
    its neighbours), or, with 3 coils or more, standing :data:`CROSS_COIL_SPIKE_RATIO` above the
    other coils at the same position, each coil scaled by its own centre
    (:func:`cross_coil_ratio`): a spike of 10-1000x the k-space maximum at or beside DC in one
    coil passed the first rule (exit 0 at -12 to -33 dB). Before the spikes, the k-space centre
    on the coil axis (coils last, :func:`refuse_coils_last`: its DC was called a spike)."""
    if not bool(torch.isfinite(data).all()) or not bool((data != 0).any()):
        return  # check_slice names NaN / Inf samples and all-zero k-space
    rows = data.shape[-2]
    empty_rows = int((~(data != 0).any(-1).any(0)).sum())  # (coils, rows, cols) -> rows
    if empty_rows > rows / 2:
        raise ValueError(f"{where}: {empty_rows} of {rows} k-space rows (readout positions) are zero "
                         "in every coil and column: the data are undersampled along the readout; "
                         "fastMRI stores (coils, readout, phase encoding): is the k-space "
                         "transposed?")
    mag = data.abs()
    h, w = mag.shape[-2:]
    centre = torch.zeros((h, w), dtype=torch.bool, device=mag.device)  # the central 5 x 5
    centre[max(h // 2 - 2, 0):h // 2 + 3, max(w // 2 - 2, 0):w // 2 + 3] = True
    energy = mag.double().square().sum(0)
    rows_e, cols_e = energy.sum(1), energy.sum(0)
    refuse_coils_last(mag.double().square().sum((-2, -1)), cols_e, where, rows_e)
    refuse_spikes(mag, centre, where)
    row, col = int(rows_e.argmax()), int(cols_e.argmax())
    peaked = all(_peaked(p) for p in (rows_e, cols_e))  # noise alone (an edge slice) has none
    if peaked and (abs(row - h // 2) > max(h / 10, 4) or abs(col - w // 2) > max(w / 10, 4)):
        raise ValueError(f"{where}: the k-space energy peaks at row {row}, column {col}, far from "
                         f"the centre ({h // 2}, {w // 2}): every method here expects DC at the "
                         "centre (fastMRI layout); is the k-space stored without the centring "
                         "shift (DC at the corner: apply fftshift over the last two axes)?")


def _peaked(profile: Tensor) -> bool:
    """Whether an energy profile's peak stands :data:`PEAK_OVER_MEDIAN` above the median of its
    non-zero entries (any object's k-space along a k-space axis; not noise, not coils)."""
    live = profile[profile > 0]
    return live.numel() > 0 and float(live.max()) > PEAK_OVER_MEDIAN * float(live.median())


def refuse_coils_last(coil_energy: Tensor, cols_energy: Tensor, where: str,
                      rows_energy: Tensor | None = None) -> None:
    """Refuse k-space whose coil axis holds the k-space centre: ``coil_energy`` (per coil) peaks
    :data:`PEAK_OVER_MEDIAN` above its median at the middle coil (``coils // 2``, +-1, 5 coils
    or more), where DC stands on a centred k-space axis, and falls off on both sides of it as a
    k-space axis does (both neighbours of the peak above :data:`COIL_NEIGHBOUR_OVER_MEDIAN` x the
    median), while ``cols_energy`` (per column) has no such peak, as no object's k-space lacks
    one, and ``rows_energy`` (per row, when given) has one: a coil-last array (BART
    ``(H, W, 1, coils)`` squeezed, MATLAB ``(H, W, coils)``) read as ``(coils, H, W)``. Real coil
    arrays never do all: their energies differ by gain and distance, and their columns hold the
    phase encodes; a noise-only slice (an edge slice) has no row peak, and one loud channel's
    neighbours read the median (16 channels, channel 8 at 3.5x the noise std: was refused as
    coil-last). Was (fully sampled 128 x 128, 8 coils, read as 128 coils of 128 x 8): "a spike
    (...); remove it (e.g. by its neighbours' mean)" about DC, advice that corrupts the data."""
    coils = coil_energy.numel()
    if coils < 5 or not _peaked(coil_energy) or _peaked(cols_energy):
        return
    if rows_energy is not None and not _peaked(rows_energy):
        return  # noise alone has no k-space centre to place (as the DC-position rule says)
    peak = int(coil_energy.argmax())
    if abs(peak - coils // 2) > 1:
        return
    median = float(coil_energy[coil_energy > 0].median())
    if not min(float(coil_energy[peak - 1]), float(coil_energy[peak + 1])) > \
            COIL_NEIGHBOUR_OVER_MEDIAN * median:
        return  # one loud coil, not the centre of a k-space axis
    ratio = float(coil_energy[peak]) / float(coil_energy[coil_energy > 0].median())
    raise ValueError(
        f"{where}: the k-space energy per coil peaks at coil {peak} of {coils}, {ratio:.3g}x the "
        f"median coil's, where a centred k-space axis holds DC, and the {cols_energy.numel()} "
        "columns show no such peak: the coil axis holds the k-space centre. Is the coil axis "
        "last (MATLAB (H, W, coils); BART's (H, W, 1, coils) with its third axis dropped)? "
        "fastMRI stores (slices, coils, H, W): write np.moveaxis(k, -1, -3), with the header's "
        "matrix from the last two axes after the move")


def refuse_spikes(mag: Tensor, centre: Tensor, where: str,
                  position: Callable[[int, int], str] = lambda r, k: f"row {r}, column {k}"
                  ) -> None:
    """Refuse an isolated sample among k-space magnitudes ``mag`` ``(coils, R, L)`` whose
    columns are readouts (the neighbours of a sample are the samples before and after it along
    ``R``): the isolated-sample rule of :func:`check_kspace`, shared with the non-Cartesian
    readouts (:func:`mrirecon.pipeline.checks_noncart.check_readouts`). ``centre`` ``(R, L)``
    bool marks the positions near DC, where :data:`CENTRE_SPIKE_RATIO` and, with 3 coils or
    more, :data:`CROSS_COIL_SPIKE_RATIO` (:func:`cross_coil_ratio` over those positions) apply
    instead of :data:`SPIKE_RATIO`. ``position(r, k)`` names a sample in the message."""
    if mag.shape[-2] < 3:
        return
    padded = torch.nn.functional.pad(mag[None], (0, 0, 1, 1), mode="replicate")[0]
    neighbours = torch.maximum(padded[..., :-2, :], padded[..., 2:, :])
    isolated = mag > SPIKE_RATIO * neighbours
    coils = cross_coil_ratio(mag[:, centre][:, None])  # (coils, 1, centre), or None below 3
    isolated[:, centre] = mag[:, centre] > CENTRE_SPIKE_RATIO * neighbours[:, centre]
    if coils is not None:
        isolated[:, centre] |= coils[:, 0] > CROSS_COIL_SPIKE_RATIO
    if not bool(isolated.any()):
        return
    others = float(torch.where(isolated, torch.zeros_like(mag), mag).max())
    nonzero = mag[mag > 0]
    typical = float(nonzero[:: max(1, nonzero.numel() // 1_000_000)].median())
    # noise alone reaches ~5x its median: a spike must also stand far above it
    spikes = isolated & (mag > 0.5 * others) & (mag > SPIKE_OVER_MEDIAN * typical)
    if not bool(spikes.any()):
        return
    c, r, k = (int(i) for i in torch.nonzero(spikes)[0])
    v, n = float(mag[c, r, k]), float(neighbours[c, r, k])
    standing = f"{v / max(n, 1e-300):.3g}x its readout neighbours"
    if coils is not None and bool(centre[r, k]) and v <= CENTRE_SPIKE_RATIO * n:  # the coils said it
        at = int(centre[:r].sum()) + int(centre[r, :k].sum())  # its place among the centre's
        standing = (f"{float(coils[c, 0, at]):.3g}x the other coils' median there "
                    "(each scaled by its coil's centre)")
    raise ValueError(
        f"{where}: k-space sample (coil {c}, {position(r, k)}) is {v:.3g}, "
        f"{standing} and {v / max(others, 1e-300):.3g}x "
        f"the largest other sample: a spike (RF interference, a corrupted sample; "
        f"{int(spikes.sum())} such sample(s)); remove it (e.g. by its neighbours' "
        "mean) and run again")


def cross_coil_ratio(centre: Tensor) -> Tensor | None:
    """``(coils, h, w)`` magnitudes of the central k-space samples -> each sample over the median,
    across the coils, of the same position, every coil divided first by the median of its own
    non-zero samples there (a coil's gain and sensitivity set its scale, not the position); 0
    where no coil reads anything, ``None`` below 3 coils (no median to stand above)."""
    if centre.shape[0] < 3:
        return None
    flat = centre.reshape(centre.shape[0], -1).double()
    scale = torch.stack([row[row > 0].median() if bool((row > 0).any()) else row.new_tensor(0.0)
                         for row in flat])
    live = scale > 0  # a dead coil has no scale and stays out of the median
    if int(live.sum()) < 3:
        return None
    scaled = torch.where(live[:, None], flat / scale.clamp_min(1e-300)[:, None], 0.0)
    median = scaled[live].median(0).values
    ratio = torch.where(median > 0, scaled / median.clamp_min(1e-300),
                        torch.where(scaled > 0, torch.inf, 0.0))
    return ratio.reshape(centre.shape)


#: Share of the samples of the columns that hold data which may be exactly zero in every coil,
#: outside rows zero in all of them (a partial echo, readout padding), before the k-space is
#: taken for a 2-D sampling pattern (:func:`check_column_sampling`): acquired samples are exactly
#: zero in every coil at once only where nothing was measured.
SCATTERED_ZERO_SHARE = 0.01


def check_column_sampling(data: Tensor, has_data: Tensor, where: str) -> None:
    """Refuse k-space ``(coils, H, W)`` whose columns that hold data (``has_data`` ``(W,)``) have
    samples exactly zero in every coil scattered inside them (above
    :data:`SCATTERED_ZERO_SHARE`; zeros that run from a column's ends are a shorter readout,
    padded): a 2-D (Poisson-disc, variable-density) sampling pattern. A
    fastMRI column mask cannot describe it and its zeros were taken as measured: read as fully
    sampled, ~20 dB, and a learned model's range warning blamed "acceleration 1.00787". The
    SENSE operators take a 2-D mask, but the slice's column mask also sets the acceleration, the
    ESPIRiT / GRAPPA centre band, retrospective undersampling and what the learned models were
    trained on: refused, not reconstructed through a 2-D mask (docs/robustness.md)."""
    cols = has_data.reshape(-1).bool()
    if data.ndim < 3 or not bool(cols.any()):
        return
    zero = (data == 0).flatten(0, -3).all(0)[:, cols]  # (H, sampled columns)
    # zeros that run from either end of a column are a readout shorter than the grid (an
    # ISMRMRD line with fewer samples, an asymmetric echo), padded: only interior ones are a
    # 2-D pattern; nor are whole zero rows (a partial echo, readout padding)
    ends = zero.int().cumprod(0).bool() | zero.flip(0).int().cumprod(0).flip(0).bool()
    scattered = zero & ~ends & ~zero.all(1, keepdim=True)
    share = float(scattered.sum()) / zero.numel()
    if share > SCATTERED_ZERO_SHARE:
        rows = int(scattered.any(1).sum())
        raise ValueError(
            f"{where}: {100 * share:.1f} % of the samples of the {int(cols.sum())} column(s) that "
            f"hold data are exactly zero in every coil, scattered over {rows} of {zero.shape[0]} "
            "rows: a 2-D (Poisson-disc / variable-density) sampling pattern, which a column mask "
            "cannot describe (its zeros would be taken as measured). The Cartesian pipelines "
            "take data undersampled along phase encoding only (whole columns); reconstruct "
            "2-D-undersampled k-space with its 2-D mask through mrirecon.operators.sense")


def reconcile_mask(data: Tensor, mask: Tensor, where: str,
                   acquired: Tensor | None = None) -> tuple[Tensor, dict[str, str]]:
    """The sampling mask checked against the columns that hold data (``(coils, H, W)``): columns
    marked sampled but exactly zero in every coil were not acquired (an undersampled file
    without a mask, or with an all-ones one, was scored as fully sampled at zero-filled
    quality); they leave the mask, with a note. Columns holding data that the mask calls
    unsampled are discarded by ``undersample``: a note. Both at once: the mask does not
    describe this k-space (reversed, transposed data), refused. ``acquired``: the header's
    acquirable columns; the zero padding outside them is left as the mask has it."""
    has_data = (data != 0).flatten(0, -2).any(0)
    check_column_sampling(data, has_data, where)
    # zero padding outside the acquirable columns: never "empty"
    empty, ignored = mask_disagreement(has_data, mask, acquired)
    n_empty, n_ignored = int(empty.sum()), int(ignored.sum())
    if n_empty and n_ignored:
        raise ValueError(f"{where}: mask: {n_empty} column(s) marked sampled hold no data and "
                         f"{n_ignored} column(s) holding data are marked unsampled: the mask does "
                         "not describe this k-space (reversed, or the k-space transposed?)")
    notes: dict[str, str] = {}
    if n_empty and bool((mask & has_data).any()):
        notes["unsampled"] = (f"{n_empty} of {int(mask.sum())} column(s) the mask marks sampled "
                              "hold no data in any coil: treated as unsampled (an undersampled "
                              "file without its mask?)")
        mask = mask & ~empty
    if n_ignored:
        notes["discarded"] = (f"{n_ignored} column(s) hold data the mask marks unsampled: "
                              "discarded (the file's mask disagrees with its k-space)")
    return mask, notes


#: Two coils whose k-space correlates above this are one channel written twice.
DUPLICATE_CORRELATION = 1 - 1e-4
#: A coil whose power is this many times the median coil's is mis-scaled (near and far
#: elements of a head array differ by ~10-100x).
LOUD_COIL_RATIO = 1e3


#: Share of the k-space rows on each side of the readout whose mean estimates a coil's receiver
#: DC offset (:func:`dc_offsets`): the object's k-space there averages to ~0. Not the noise
#: estimate's band (:func:`~mrirecon.pipeline.checks_noncart.outer_noise`, ``NOISE_BAND``): the
#: offset is a mean, whose standard error wants many samples and which differences along the
#: readout would cancel, so the rule reads a wider band and the samples' own spread there.
DC_OFFSET_BAND = 1 / 8
#: A coil's offset estimate must stand this many standard errors above zero (noise alone: a
#: Rayleigh tail, P ~ exp(-z^2) = 1e-11; clean simulated brains reached z 3.5 at 8x
#: undersampling, 2.2 fully sampled) ...
DC_OFFSET_Z = 5.0
#: ... and be at least this share of the per-sample noise std (the object's k-space in the band
#: left a mean of at most 0.23 of it on undersampled files, 0.05 on fully sampled ones).
DC_OFFSET_NOISE = 0.5


def dc_offsets(kspace: Tensor, trajectory: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The receiver DC offset of each coil of Cartesian k-space ``(coils, H, W)``, or of
    non-Cartesian k-space ``(coils, readouts, samples)`` on ``trajectory`` ``(readouts,
    samples, 2)``: a constant added to every sample of a coil (an uncorrected ADC offset),
    which puts a bright dot at the centre of the field of view (5x the noise std in one coil:
    ``mri_cs`` 29.4 -> 3.0 dB; 20x on radial spokes: ``mri_radial_cs`` 39.7 -> 33.5 dB).

    Estimated as the mean of the coil's non-zero samples in the outer :data:`DC_OFFSET_BAND` of
    the readout rows on each side, or, on a trajectory, of the samples beyond ``1 - 2 *
    DC_OFFSET_BAND`` of its largest radius (:func:`~mrirecon.pipeline.checks_noncart.outer_samples`;
    unsampled columns and never-sampled rows are zero and left
    out), where an object's k-space averages to ~0; its standard error is the samples' std over
    the square root of their count. Returns ``(offsets, size)``: ``(coils,)`` complex offsets, 0
    where the estimate is not :data:`DC_OFFSET_Z` standard errors and :data:`DC_OFFSET_NOISE`
    stds above zero, and ``(coils,)`` each estimate over the per-component std of those samples
    (the noise std, or a little more where the object's k-space adds to it: 4.5 for 5)."""
    coils, h = kspace.shape[0], kspace.shape[-2]
    offsets = torch.zeros(coils, dtype=torch.complex128)
    size = torch.zeros(coils, dtype=torch.float64)
    b = max(1, int(h * DC_OFFSET_BAND))
    if trajectory is not None:  # the samples far from the centre, on any readout
        from mrirecon.pipeline.checks_noncart import outer_samples

        band = kspace[:, outer_samples(trajectory, 1 - 2 * DC_OFFSET_BAND).to(kspace.device)]
        band = band.to(torch.complex128)
    elif kspace.ndim != 3 or h < 2 * b + 1:
        return offsets, size
    else:
        band = torch.cat([kspace[:, :b], kspace[:, -b:]], 1).reshape(coils, -1)
        band = band.to(torch.complex128)
    for c in range(coils):
        v = band[c][band[c] != 0].cpu()
        if v.numel() < 16:
            continue
        mean = v.mean()
        std = float((v - mean).abs().square().mean().div(2).sqrt())  # per component
        if std == 0:
            continue
        size[c] = float(mean.abs()) / std
        standard_error = std * (2 / v.numel()) ** 0.5  # of the complex mean's magnitude
        if float(mean.abs()) > DC_OFFSET_Z * standard_error and size[c] > DC_OFFSET_NOISE:
            offsets[c] = mean
    return offsets, size


def removable_dc_offsets(kspace: Tensor, trajectory: Tensor | None = None
                         ) -> tuple[Tensor, Tensor, bool]:
    """:func:`dc_offsets` and whether they are subtracted. A constant in one coil's k-space is a
    receiver offset or a point-like object at the exact centre of the field of view: one coil
    cannot tell them apart. An object is seen through every coil's sensitivity, so it shows in
    most coils; a receiver offset belongs to its channel. So the offsets are subtracted only
    when fewer than half of the coils hold one (the TOF slab of a test, a bright profile at the
    centre, showed in 3 of 3 coils); otherwise they are only named."""
    offsets, size = dc_offsets(kspace, trajectory)
    found = int((offsets != 0).sum())
    return offsets, size, 0 < 2 * found < kspace.shape[0]


def remove_dc_offsets(kspace: Tensor, trajectory: Tensor | None = None,
                      dc: tuple[Tensor, Tensor, bool] | None = None) -> Tensor:
    """``kspace`` ``(coils, H, W)`` (or ``(coils, readouts, samples)`` on ``trajectory``) with
    each coil's DC offset (:func:`dc_offsets`) subtracted from its non-zero samples (unsampled
    ones stay zero) when :func:`removable_dc_offsets` says so; ``kspace`` itself otherwise.
    ``dc``: :func:`removable_dc_offsets` of ``kspace`` when the caller has it (``preprocess``
    names and subtracts the same estimate)."""
    offsets, _, subtract = removable_dc_offsets(kspace, trajectory) if dc is None else dc
    if not subtract:
        return kspace
    shift = offsets.to(device=kspace.device, dtype=kspace.dtype)[:, None, None]
    return torch.where(kspace != 0, kspace - shift, kspace)


def coil_warnings(kspace: Tensor, trajectory: Tensor | None = None,
                  dc: tuple[Tensor, Tensor, bool] | None = None) -> dict[str, str]:
    """Dead (all-zero), mis-scaled and duplicated coils of ``(coils, ...)`` k-space (on
    ``trajectory`` when non-Cartesian). A duplicate adds no information, yet counts as a coil
    everywhere (a learned model's range check saw 8 coils where 2 were distinct); noise alone
    keeps distinct coils far below the threshold. A coil's receiver DC offset
    (:func:`dc_offsets`, which ``preprocess`` subtracts with :func:`remove_dc_offsets` where
    :func:`removable_dc_offsets` allows; ``dc``: that estimate when the caller has it)."""
    out: dict[str, str] = {}
    offsets, size, subtract = removable_dc_offsets(kspace, trajectory) if dc is None else dc
    found = (offsets != 0).nonzero().flatten().tolist()
    if found:
        shown = ", ".join(f"coil {c}: {float(size[c]):.3g}x" for c in found)
        outer = ("outer readout rows" if trajectory is None else
                 "samples far from the k-space centre")
        held = (f"{len(found)} of {kspace.shape[0]} coils hold a receiver DC offset (a "
                f"constant added to every k-space sample of the coil; {shown} the std of its "
                f"{outer}, where an object's k-space averages to zero): it puts a "
                "bright dot at the centre of the field of view, ")
        out["dc_offset"] = held + (
            "so it was estimated there and subtracted from the coil's samples" if subtract else
            "or it is a point-like bright structure at that centre, which shows in every coil "
            "alike: held by most coils, it was not subtracted (that would remove such a "
            "structure); if the image shows a lone bright dot at its centre, it is the offset")
    coils = kspace.shape[0]
    if coils < 2:
        return out
    flat = kspace.reshape(coils, -1)
    flat = flat[:, :: max(1, flat.shape[1] // 131072)].to(torch.complex128)  # <= 2^17 samples
    power = flat.abs().square().sum(1)
    dead = (power == 0).nonzero().flatten().tolist()
    if dead:
        out["dead_coils"] = (f"coil{'s' * (len(dead) > 1)} {', '.join(map(str, dead))} of {coils} "
                             "hold no signal (all zero: a dead or disconnected channel)")
    live = power[power > 0]
    if live.numel() >= 3 and float(power.max()) > LOUD_COIL_RATIO * float(live.median()):
        c = int(power.argmax())
        out["loud_coil"] = (f"coil {c}'s power is {float(power[c] / live.median()):.3g}x the median "
                            "coil's (a mis-scaled channel?): unless a noise scan prewhitens the "
                            "coils, its noise dominates every coil-combined image (one coil at "
                            "100x cost 7 dB)")
    norm = power.sqrt().clamp_min(1e-300)
    corr = (flat @ flat.conj().T).abs() / (norm[:, None] * norm[None, :])
    pairs = [(i, j) for i, j in torch.nonzero(torch.triu(corr, 1) > DUPLICATE_CORRELATION).tolist()
             if i not in dead and j not in dead]
    if pairs:
        copies = sorted({j for _, j in pairs})
        shown = ", ".join(f"{j} = {i}" for i, j in pairs[:6]) + (", ..." if len(pairs) > 6 else "")
        out["duplicate_coils"] = (
            f"{len(copies)} of {coils} coils repeat another coil's k-space (correlation > "
            f"{DUPLICATE_CORRELATION:g}: {shown}): duplicated channels add no information, and "
            f"the data hold {coils - len(copies)} distinct coils")
    return out


#: Fewer distinct readout directions than this (as the CT pipelines' ``MIN_VIEWS``) and less than
#: :data:`MIN_COVERAGE` of the grid cells: too little of k-space for an image.
MIN_DIRECTIONS = 8
#: Share of the grid cells inside the sampled disc that hold a sample. A single-shot spiral
#: covers most of them with one readout (one direction); 1-2 radial spokes or readouts copied
#: from the first cover 2-4 % at 64 x 64.
MIN_COVERAGE = 0.25


def trajectory_warnings(trajectory: Tensor, shape: tuple[int, int]) -> dict[str, str]:
    """What makes a non-Cartesian trajectory ``(readouts, samples, 2)`` on an ``shape`` grid too
    thin for an image: fewer than :data:`MIN_DIRECTIONS` distinct readout directions covering
    less than :data:`MIN_COVERAGE` of the grid cells inside the sampled disc (one or two spokes,
    or every readout copied from the first: TV then filled the image from a line, 9.2-9.6 dB,
    no word).

    A readout's direction is the angle of its sample farthest from the centre, modulo pi for a
    spoke through the centre and modulo 2 pi otherwise (a spiral interleave, a centre-out spoke),
    rounded to 0.5 degrees."""
    t = trajectory.detach().to(torch.float64).cpu()
    r = t.square().sum(-1)
    far = t[torch.arange(t.shape[0]), r.argmax(-1)]  # (readouts, 2)
    angle = torch.rad2deg(torch.atan2(far[:, 1], far[:, 0]))
    through = (r.argmin(-1) > 0) & (r.argmin(-1) < t.shape[1] - 1)  # the centre inside the readout
    angle = torch.where(through, angle % 180.0, angle % 360.0)
    distinct = int(torch.unique(torch.round(angle * 2) % 720).numel())
    n = torch.tensor([float(shape[0]), float(shape[1])], dtype=torch.float64)
    cells = torch.floor((t.reshape(-1, 2) + 0.5) * n).clamp(min=0).to(torch.int64)
    hit = int(torch.unique(cells[:, 0] * int(shape[1]) + cells[:, 1]).numel())
    disc = math.pi * float(r.max()) * float(n.prod())  # cells within the largest |k|
    coverage = min(hit / disc, 1.0) if disc > 0 else 0.0
    readouts = int(t.shape[0])
    if distinct >= MIN_DIRECTIONS or coverage >= MIN_COVERAGE:
        return {}
    return {"trajectory_coverage": (
        f"{readouts} readout{'s' * (readouts > 1)} in {distinct} distinct direction"
        f"{'s' * (distinct > 1)}, holding samples in {100 * coverage:.0f} % of the grid cells they "
        "span: k-space is a few lines and the image mostly the regulariser's guess (a trajectory "
        "copied from the first readout?)")}


def lost_readouts(data: Tensor, trajectory: Tensor, density: Tensor | None, header
                  ) -> tuple[Tensor, Tensor, Tensor | None, dict[str, str]]:
    """Drop the readouts of a non-Cartesian slice ``(coils, readouts, samples)`` that hold no
    sample in any coil (lost spokes a file stores as zeros: taken as measured zeros, 10 of 40
    radial spokes gave ``mri_radial_cs`` 18.9 dB where the file without them gives 36.2) from
    the data, the trajectory and the density weights, with a note naming them. Weights the
    reader computed (Pipe-Menon, ``header.extra["density_source"]``) are computed again for the
    readouts kept (the gaps the lost ones leave weigh more); the file's own are kept for the
    readouts kept. Samples zero at the start or end of every readout of this slice (the reader
    drops those zero in every slice) get a note: they stay, as measured zeros. Returns ``(data,
    trajectory, density, notes)``; all-zero data are returned as they are (``check_slice``
    refuses them)."""
    from mrirecon.operators.nufft import empty_readouts, listed, sample_runs_message

    lost = empty_readouts(data)
    n, total = int(lost.sum()), int(lost.numel())
    notes: dict[str, str] = {}
    if 0 < n < total:
        keep = ~lost
        data, trajectory = data[:, keep.to(data.device)], trajectory[keep.to(trajectory.device)]
        if density is not None and header.extra.get("density_source") == "pipe_menon":
            from mrirecon.functional.density import pipe_menon_density

            density = pipe_menon_density(trajectory, tuple(header.encoded_matrix[:2]))
        elif density is not None:
            density = density[keep.to(density.device)]
        notes["lost_readouts"] = (
            f"{n} of {total} readouts hold no sample in any coil (readouts "
            f"{listed(lost.nonzero().flatten())}): lost? they were dropped from the data, "
            f"trajectory and density weights (as measured zeros they pull the image towards "
            f"zero k-space); the image is reconstructed from the other {total - n}")
    if n < total:
        msg = sample_runs_message(data, "they are reconstructed as measured zeros")
        if msg:
            notes["zero_samples"] = msg
    return data, trajectory, density, notes


# ---- ESPIRiT kernels the calibration band clamped ---------------------------------------------


#: Narrowest ESPIRiT kernel across phase encoding that is not a warning. A kernel 1 column wide
#: (a 3-column centre band) does not constrain the maps across phase encoding at all: on an 8-coil
#: oblique ISMRMRD scan (48 x 40) at 4x, CG-SENSE (lam 0, 40 iterations) with its 6 x 1 kernels
#: wrote an image whose 99th percentile was 8.2e8 times the zero-filled one's (the same data as a
#: fastMRI file: -155 dB, where Walsh maps of the band give 34.5 dB; since CG stops at the gram's
#: null space, :data:`mrirecon.solvers.cg.RAYLEIGH_FLOOR`, 23.3 dB). Wider bands did not break
#: that way: 4 columns (6 x 2 kernels) 0.91 (33.2 dB), 5 columns 6.6 (1.6 and 26.7 dB on the
#: fastMRI copy), 6 columns 1.15; on simulated 8-coil brains ESPIRiT beat or matched Walsh with
#: 3 / 4-column bands (15.7-19.2 dB against 11.9-17.2), so even the warning is a prompt to look,
#: not a refusal. A kernel_width asked for below it is the user's choice.
MIN_KERNEL_COLUMNS = 2


def espirit_kernel(s: MRISlice) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
    """``(band, block, kernel)`` of the Cartesian ESPIRiT calibration :func:`~mrirecon.pipeline.stages_mri.calibrate` ran on
    ``s`` (recorded there, :attr:`MRISlice.espirit`), or ``None``: no ESPIRiT maps for this
    slice's method."""
    return s.espirit if s.maps is not None and s.trajectory is None else None


def kernel_note(s: MRISlice, cfg: CalibrateConfig) -> str | None:
    """What :func:`~mrirecon.pipeline.stages_mri.calibrate` did with a ``calibrate.kernel_width`` its ESPIRiT band cannot hold
    (:func:`mrirecon.calib.espirit_block` clamps it to the calibration rows - 2 along the readout
    and to the band's width - 2 across it: :func:`mrirecon.calib.espirit.largest_kernel`, the
    rule :func:`~mrirecon.calib.espirit_maps` refuses by), or ``None``: provenance records the
    value asked for.
    A kernel narrower than :data:`MIN_KERNEL_COLUMNS` is :func:`kernel_warning`'s."""
    found = espirit_kernel(s)
    if found is None or found[2] == (cfg.kernel_width, cfg.kernel_width):
        return None
    band, block, kernel = found
    return (f"calibrate.kernel_width={cfg.kernel_width}: ESPIRiT used {kernel[0]} x {kernel[1]} "
            f"kernels (readout x phase encoding): a kernel spans at most "
            f"{largest_kernel(block[0])} of the {block[0]} calibration rows, and at most "
            f"{largest_kernel(band)} columns across the {band}-column centre band "
            f"({MIN_KERNEL_POSITIONS} kernel positions must fit along each)")


def kernel_warning(s: MRISlice, cfg: CalibrateConfig) -> str | None:
    """A warning when the band clamped ESPIRiT's kernels below :data:`MIN_KERNEL_COLUMNS` across
    phase encoding (a 3-column centre band), else ``None``."""
    found = espirit_kernel(s)
    if found is None or not found[2][1] < min(MIN_KERNEL_COLUMNS, cfg.kernel_width):
        return None  # wide enough, or as narrow as asked for
    band, _, kernel = found
    return (f"calibrate: ESPIRiT's kernels are {kernel[0]} x {kernel[1]} (readout x phase "
            f"encoding; calibrate.kernel_width={cfg.kernel_width}): the {band}-column centre band "
            f"holds kernels at most {largest_kernel(band)} column(s) wide across phase encoding, "
            "which hardly constrain the coil maps there; on some data SENSE-type reconstructions "
            "with such maps amplify noise by orders of magnitude: use a wider centre band "
            "(undersample.center_fractions, or a lower acceleration) or calibrate.method=walsh")
