"""What an MRI acquisition's sampling lets a method do, and what the run says about it.

* Partial Fourier (asymmetric ``encodingLimits/kspace_encoding_step_1``): the symmetric band of
  lines around the centre gives the phase for phase-constrained CG-SENSE
  (:func:`phase_constrained`, used by :func:`mrirecon.pipeline.stages_mri.reconstruct`); the
  note says how this run filled the missing side.
* Partial echo (one side of every readout never sampled; the ISMRMRD reader's
  ``header.extra["readout_range"]``): operator-based methods and learned models see a 2-D
  sampling mask (:func:`sampling_mask`) that leaves those samples unsampled, as BART's ``pics``
  does for samples that hold no data, instead of taking them as measured zeros; ``cg_sense`` adds
  the phase of the symmetric part of the echo (:func:`symmetric_mask`), as for partial Fourier.
* The k-space methods (``zero_filled_rss``, ``grappa``) fill the never-sampled side of either
  by POCS (:func:`pocs_applies`, :func:`complete_partial_fourier`,
  :func:`mrirecon.recon.partial_fourier.pocs_partial_fourier`) instead of leaving zeros.
* GRAPPA: the default kernel for the centre band (:func:`grappa_kernel`) and the share of
  missing columns it cannot reach (:func:`grappa_note`).
* A classical reconstruction that put more energy into the columns it did not measure than the
  data show next to them, column by column (:func:`unsupported_energy_warning`): amplified
  noise or coil-map errors, a result below the zero-filled image.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from mrirecon.io.partial_echo import one_sided_band, partial_echo_extra
from mrirecon.sampling.acs import acs_width

if TYPE_CHECKING:
    from mrirecon.pipeline.schema import ReconstructConfig, UndersampleConfig
    from mrirecon.pipeline.slice_mri import MRISlice


#: Phase-encoding lines on the short side of the centre below this fraction of the long side's
#: make a partial Fourier acquisition (6/8 has 0.5; symmetric fastMRI headers differ by a line).
PARTIAL_FOURIER_SYMMETRY = 0.85


def _partial_fourier_limits(header) -> tuple[int, int, int, int, int] | None:
    """``(minimum, maximum, centre, before, after)`` of asymmetric phase-encoding limits, or
    ``None`` for a symmetric (or unknown) acquisition.

    The limits are first clamped to the lines the encoded matrix holds (line ``centre`` sits
    at column ``y // 2``), as the reader clamps the acquired columns: limits 0..200 around 32
    on 64 columns acquired lines 0..63, a symmetric acquisition, not 60 % of one.

    Limits that then cover every column are never partial Fourier: a full even matrix has one
    line more before its centre than after (``W / 2`` vs ``W / 2 - 1``), which the
    :data:`PARTIAL_FOURIER_SYMMETRY` rule alone took for one up to ``W = 12`` (5/6 < 0.85)."""
    limits = header.extra.get("encoding_limits_step_1") if header is not None else None
    if not limits or any(v is None for v in limits):
        return None
    minimum, maximum, centre = limits
    columns = header.encoded_matrix[1]
    first, last = centre - columns // 2, centre + columns - columns // 2 - 1
    minimum, maximum = max(minimum, first), min(maximum, last)
    if minimum == first and maximum == last:  # the whole matrix was acquired
        return None
    before, after = centre - minimum, maximum - centre
    if min(before, after) < 0 or max(before, after) == 0 \
            or min(before, after) >= PARTIAL_FOURIER_SYMMETRY * max(before, after):
        return None
    return minimum, maximum, centre, before, after


def partial_fourier_note(header, phase_constrained: bool = False, pocs: bool = False) -> str | None:
    """A note when the header's ``encodingLimits/kspace_encoding_step_1`` are asymmetric about
    their centre (partial Fourier), saying how the missing side is reconstructed: by the phase
    constraint of ``cg_sense`` (:func:`partial_fourier_band`), by POCS for the k-space methods
    (:func:`pocs_applies`), or as unsampled k-space."""
    found = _partial_fourier_limits(header)
    if found is None:
        return None
    minimum, maximum, centre, before, after = found
    fraction = (before + after + 1) / (2 * max(before, after) + 1)
    centre_lines = f"the symmetric {2 * min(before, after) + 1}-line centre"
    if phase_constrained:
        how = ("the missing side is filled by phase-constrained CG-SENSE (a real image times the "
               f"phase of {centre_lines})")
    elif pocs:
        how = ("the missing side is filled by POCS where conjugate symmetry reaches (a real image "
               f"times the phase of {centre_lines})")
    else:
        how = ("the missing side is reconstructed as unsampled k-space, so its resolution comes "
               "from the method's prior alone (cg_sense, zero_filled_rss and grappa fill it "
               "with a phase constraint under preprocess.partial_fourier=phase_constrained)")
    return (f"partial Fourier: phase-encoding lines {minimum}..{maximum} around the centre {centre} "
            f"({before} before, {after} after; {fraction:.0%} of a symmetric acquisition): {how}")


def partial_fourier_band(header, width: int) -> Tensor | None:
    """``(width,)`` bool: the k-space columns acquired on both sides of the centre ``width // 2``
    (the symmetric part of a partial Fourier acquisition), or ``None`` when it is symmetric."""
    found = _partial_fourier_limits(header)
    if found is None:
        return None
    m = min(found[3], found[4])
    band = torch.zeros(width, dtype=torch.bool)
    band[max(width // 2 - m, 0): width // 2 + m + 1] = True
    return band


#: Rows next to a never-sampled readout side that are also left unsampled once the readout has
#: been cropped in hybrid space (readout oversampling removal): the crop convolves k-space with
#: a kernel that mixes the measured edge with the zeros beside it.
READOUT_MARGIN = 2


def readout_support(header, rows: int) -> Tensor | None:
    """``(rows,)`` bool: the readout samples (k-space rows) that hold measured data, from the
    reader's ``header.extra["readout_range"] = [start, stop, n]``; ``None`` when every row does.

    On a readout of another length than the reader's ``n`` (oversampling removed), the range is
    scaled to ``rows`` and shrunk by :data:`READOUT_MARGIN` rows on each never-sampled side."""
    found = header.extra.get("readout_range") if header is not None else None
    if not found:
        return None
    start, stop, n = (int(v) for v in found)
    if rows != n:
        start = math.ceil(start * rows / n) + READOUT_MARGIN if start > 0 else 0
        stop = math.floor(stop * rows / n) - READOUT_MARGIN if stop < n else rows
    support = torch.zeros(rows, dtype=torch.bool)
    support[max(start, 0): min(stop, rows)] = True
    if not bool(support[rows // 2]):
        raise ValueError(f"readout_range {list(found)}: the echo's centre (row {rows // 2} of "
                         f"{rows}) was never sampled; the reader's readout rows do not match")
    return support


def zero_rows_echo(header, data: Tensor):
    """``header`` with :func:`~mrirecon.io.partial_echo.partial_echo_extra` when the Cartesian
    k-space ``data`` ``(coils, H, W)`` holds a band of readout rows zero in every coil and column
    on one side of the readout only, at least ``max(2, 5 %)`` of the rows
    (:func:`~mrirecon.io.partial_echo.one_sided_band`, the ISMRMRD reader's rule for an
    asymmetric echo): a fastMRI-layout file stores a partial echo so, and those rows were taken
    as measured zeros (``mri_tv`` 28.8 dB where the same echo read from ISMRMRD gave 32.6).
    ``header`` itself when the reader recorded a range already, or the zero rows lie on both
    sides or none."""
    if header is None or header.extra.get("readout_range") or data.ndim != 3:
        return header
    band = one_sided_band((data != 0).any(-1).any(0))
    if band is None:
        return header
    return header.with_(extra={**header.extra, **partial_echo_extra(*band, int(data.shape[-2]))})


def sampling_mask(s: MRISlice) -> Tensor:
    """The operator's sampling mask of a Cartesian slice: the columns ``s.mask`` ``(W,)``, or
    ``(H, W)`` columns x measured readout rows when one side of the echo was never sampled."""
    rows = readout_support(s.header, s.kspace.shape[-2])
    if rows is None:
        return s.mask
    return rows.to(s.mask.device)[:, None] & s.mask.reshape(1, -1).bool()


def symmetric_mask(s: MRISlice) -> Tensor:
    """The sampled part of slice ``s`` that is symmetric about the k-space centre, whose image
    gives the phase for phase-constrained CG-SENSE: the columns of :func:`partial_fourier_band`
    (all sampled columns for symmetric phase encoding) times, for a partial echo, the readout
    rows mirrored by a sampled row."""
    mask = s.mask.reshape(-1).bool()
    band = partial_fourier_band(s.header, mask.numel())
    if band is not None:
        mask = mask & band.to(mask.device)
    rows = readout_support(s.header, s.kspace.shape[-2])
    if rows is None:
        return mask
    h = rows.numel()
    idx = torch.arange(h)
    mirrored = (2 * (h // 2) - idx).clamp(0, h - 1)  # row k <-> -k about the centre h // 2
    both = rows & rows[mirrored] & (2 * (h // 2) - idx < h)
    return both.to(mask.device)[:, None] & mask[None, :]


def phase_constrained(s: MRISlice, cfg: ReconstructConfig, partial_fourier: str) -> bool:
    """Whether :func:`reconstruct` runs phase-constrained CG-SENSE on slice ``s``: a Cartesian
    partial Fourier or partial echo slice, ``cg_sense`` without a learned model or a given
    phase, and ``preprocess.partial_fourier`` (``partial_fourier``) ``phase_constrained``."""
    return (cfg.method == "cg_sense" and "phase" not in cfg.params
            and partial_fourier == "phase_constrained" and has_missing_side(s))


def has_missing_side(s: MRISlice) -> bool:
    """Whether Cartesian slice ``s`` has a never-sampled side: partial Fourier phase encoding
    (:func:`partial_fourier_band`) or a partial echo (:func:`readout_support`)."""
    return s.trajectory is None and (
        partial_fourier_band(s.header, s.kspace.shape[-1]) is not None
        or readout_support(s.header, s.kspace.shape[-2]) is not None)


def pocs_applies(s: MRISlice, cfg: ReconstructConfig, partial_fourier: str) -> bool:
    """Whether :func:`reconstruct` fills the never-sampled side of a Cartesian partial Fourier
    or partial echo slice by POCS (:func:`complete_partial_fourier`): a k-space method
    (``zero_filled_rss``, ``grappa``) and ``preprocess.partial_fourier`` ``phase_constrained``."""
    return (cfg.method in POCS_METHODS and partial_fourier == "phase_constrained"
            and has_missing_side(s))


#: The k-space methods whose never-sampled partial Fourier / partial echo side POCS fills.
POCS_METHODS = ("zero_filled_rss", "grappa")


def _mirror(v: Tensor) -> Tensor:
    """``(n,)`` bool: whether the conjugate-symmetric partner of each k-space index (``i <->
    2 (n // 2) - i``, about the centre ``n // 2``) is in ``v``; ``False`` where it has none."""
    n = v.numel()
    partner = 2 * (n // 2) - torch.arange(n, device=v.device)
    inside = partner < n
    out = torch.zeros_like(v)
    out[inside] = v[partner[inside]]
    return out


def _axis(v: Tensor, asymmetric: bool) -> tuple[Tensor, Tensor]:
    """``(fill, symmetric)`` along one axis with data at ``v`` ``(n,)``: the never-sampled
    indices beyond the data's extent whose partner holds data (none unless ``asymmetric``), and
    the data indices within the extent's symmetric part about the centre."""
    n = v.numel()
    idx = torch.arange(n, device=v.device)
    held = v.nonzero().flatten()
    lo, hi = int(held.min()), int(held.max())
    half = min(n // 2 - lo, hi - n // 2)
    symmetric = v & ((idx - n // 2).abs() <= half)
    if not asymmetric:
        return torch.zeros_like(v), symmetric
    return _mirror(v) & ((idx < lo) | (idx > hi)), symmetric


def complete_partial_fourier(s: MRISlice, kspace: Tensor) -> Tensor:
    """``kspace`` ``(coils, H, W)`` of slice ``s`` (as acquired, or as GRAPPA filled it) with
    the never-sampled side of a partial echo (rows, :func:`readout_support`) and of partial
    Fourier phase encoding (columns beyond the acquired ones on the header's short side) filled
    by POCS, where conjugate symmetry reaches: the columns filled are those whose mirror holds
    data, so an undersampled pattern stays undersampled. Everything measured (or filled by
    GRAPPA) is kept."""
    from mrirecon.recon.partial_fourier import pocs_partial_fourier

    h, w = kspace.shape[-2:]
    held = kspace.abs().amax(dim=-3) > 0  # (H, W): measured or GRAPPA-filled
    rows, cols = held.any(-1), held.any(-2)
    support = readout_support(s.header, h)
    if support is not None:
        rows = rows & support.to(rows.device)
    if not bool(rows.any()) or not bool(cols.any()):
        return kspace
    fill_rows, sym_rows = _axis(rows, support is not None)
    fill_cols, sym_cols = _axis(cols, partial_fourier_band(s.header, w) is not None)
    measured = rows[:, None] & cols[None, :]
    fill = (rows | fill_rows)[:, None] & (cols | fill_cols)[None, :] & ~measured
    symmetric = sym_rows[:, None] & sym_cols[None, :]
    return pocs_partial_fourier(kspace, measured, fill, symmetric)


def partial_echo_note(s: MRISlice, method: str, learned: bool, phase: bool,
                      pocs: bool = False) -> str | None:
    """How this run reconstructs the never-sampled side of a partial echo (``None`` without
    one): ``phase`` (:func:`phase_constrained`), ``pocs`` (:func:`pocs_applies`), an
    operator-based ``method`` or ``learned`` model (unsampled, filled by its prior), or a
    k-space method with ``preprocess.partial_fourier: none`` (measured zeros). It begins with
    the header's ``partial_echo_note`` (the reader's, or :func:`zero_rows_echo`'s;
    :func:`~mrirecon.io.partial_echo.partial_echo_extra` builds both)."""
    from mrirecon.recon.registry import needs_operator

    rows = readout_support(s.header, s.kspace.shape[-2])
    if rows is None:
        return None
    head = (s.header.extra.get("partial_echo_note")  # a header with the range alone: the same
            or partial_echo_extra(*s.header.extra["readout_range"])["partial_echo_note"])
    if phase:
        how = ("filled by phase-constrained CG-SENSE (a real image times the phase of the "
               f"{int(symmetric_mask(s).any(-1).sum())}-row symmetric part of the echo)")
    elif pocs:
        how = (f"{method}'s k-space is completed by POCS (a real image times the phase of the "
               f"{int(symmetric_mask(s).any(-1).sum())}-row symmetric part of the echo)")
    elif learned or needs_operator(method):
        how = ("left unsampled in the operator's mask (not taken as measured zeros), so only a "
               "regularised method's prior fills them; cg_sense fills them with a phase "
               "constraint under preprocess.partial_fourier=phase_constrained")
    else:
        how = (f"{method} takes them as measured zeros, which blurs the image along the readout "
               "(preprocess.partial_fourier=phase_constrained completes them by POCS)")
    return f"{head}: {how}"


def largest_gap(mask: Tensor) -> int:
    """The longest run of unsampled columns between two sampled ones (``mask`` ``(W,)``)."""
    cols = mask.reshape(-1).nonzero().flatten()
    return int((cols[1:] - cols[:-1]).max()) - 1 if cols.numel() > 1 else 0


def grappa_kernel(s: MRISlice, calib) -> tuple[int, int]:
    """GRAPPA's default kernel ``(5, ky)`` for slice ``s``: ``ky`` 5, or the widest odd width
    that fits in the centre band; a band of 1-2 columns (a 1-column kernel, which filled
    nothing: the zero-filled image, no word) is refused.

    Not widened to span the gaps of an 8x mask (11-12 columns): on simulated 128 x 128 brains a
    kernel as wide as the gaps, trained on a 10-column band, gave 9.7 dB against 18.9 dB for
    (5, 5) at 8x, and 21.2 against 21.7 dB at 4x (too few calibration windows for its weights).
    The columns it cannot reach stay empty and :func:`grappa_note` says how many."""
    acs = int(calib) if isinstance(calib, int) else int(calib.shape[-1])
    fit = acs if acs % 2 else acs - 1
    if fit < 3:
        raise ValueError(f"{s.file_name}: slice {s.index}: GRAPPA needs a fully sampled centre band "
                         f"of at least 3 columns to train a kernel that fills anything, got {acs}; "
                         "use a wider centre fraction or cg_sense")
    return (5, min(5, fit))


def grappa_params(s: MRISlice, params) -> dict:
    """GRAPPA's parameters for slice ``s``: the centre band as calibration (the separate
    reference scan's band ``(coils, H, w)`` when there is one,
    :func:`~mrirecon.pipeline.reference_mri.calibration_band`) and :func:`grappa_kernel` unless
    ``params`` (``reconstruct.params``) give them; an int ``calib`` in ``params`` is then that
    many of the reference's columns."""
    from mrirecon.pipeline.reference_mri import calibration_band

    if s.calibration is None:
        out = {"calib": acs_width(s.mask), **params}
    else:
        out = {**params, "calib": calibration_band(s, params.get("calib"))}
    if "kernel_size" not in out:
        out["kernel_size"] = grappa_kernel(s, out["calib"])
    else:  # one integer (5) for both axes, as grappa takes it: every input failed on [1]
        from mrirecon.recon.grappa import _kernel

        out["kernel_size"] = _kernel(out["kernel_size"])
    return out


def unreachable_share(mask: Tensor, width: int) -> float:
    """Share of the unsampled columns of ``mask`` ``(W,)`` with no sampled column in a window
    ``width`` columns wide centred on them (what a GRAPPA kernel that wide leaves empty)."""
    cols = mask.reshape(-1).cpu().bool()
    padded = torch.nn.functional.pad(cols.float()[None, None], (width // 2, width - 1 - width // 2))
    near = torch.nn.functional.max_pool1d(padded, width, 1)[0, 0]
    return float((~cols & (near == 0)).sum()) / max(int((~cols).sum()), 1)


def grappa_note(s: MRISlice, params: dict) -> str | None:
    """What share of the missing columns GRAPPA's kernel (``params["kernel_size"]``) cannot
    reach (no acquired column inside its window), said with the figures; ``None`` for none."""
    from mrirecon.pipeline.reference_mri import calibration_width

    ky = int(params["kernel_size"][1])
    share = unreachable_share(s.mask, ky)
    if share == 0:
        return None
    gap = largest_gap(s.mask)
    return (f"GRAPPA: {100 * share:.0f} % of the missing k-space columns stay empty: the kernel "
            f"spans {ky} columns and the gaps between acquired columns are up to {gap} wide (it "
            f"must span {2 * math.ceil(gap / 2) + 1} and fit in the {calibration_width(s)}-column "
            f"{'reference' if s.calibration is not None else 'centre'} band)")


def drawn_mask_note(s: MRISlice, cfg: UndersampleConfig) -> str | None:
    """The retrospective mask of Cartesian slice ``s``: the configured ``(center_fraction,
    acceleration)`` pair it drew (fastMRI's mask functions pick one per file, seeded by its
    name; with ``accelerations: [4, 8]`` nothing in ``metrics.csv``, ``provenance.json`` or the
    report said which factor a file got) and the acceleration its columns achieve, acquirable /
    sampled columns (the nominal factor is fastMRI's label: its centre band and rounding keep
    more columns, "8x" is 5.8x on 64 columns; one pair said nothing of it); ``None`` without
    undersampling or for non-Cartesian data."""
    pairs = list(dict.fromkeys(zip(cfg.center_fractions, cfg.accelerations)))
    if not cfg.enabled or s.trajectory is not None or s.num_low_frequencies is None:
        return None
    from mrirecon.pipeline.slice_mri import column_counts

    width = s.mask.numel()
    drawn = [(cf, acc) for cf, acc in pairs if round(width * cf) == s.num_low_frequencies]
    sampled, acquirable = column_counts(s)
    achieved = (f"{sampled} of {acquirable} acquirable columns, {acquirable / max(sampled, 1):.2f}x "
                "achieved")
    if len(pairs) == 1:
        return (f"undersample: the {pairs[0][1]:g}x mask (nominal) with centre fraction "
                f"{pairs[0][0]:g} ({s.num_low_frequencies} centre columns): {achieved}")
    said = (f"{drawn[0][1]:g}x with centre fraction {drawn[0][0]:g}" if len(drawn) == 1
            else f"one of {len(pairs)} configured pairs")
    return (f"undersample: the mask drew {said} ({s.num_low_frequencies} centre columns): "
            f"{achieved}")


def fully_sampled_warning(name: str, cfg: UndersampleConfig) -> str:
    """The warning of a volume of file ``name`` whose k-space holds every acquirable column
    while its metrics are computed, in the words of ``cfg.enabled`` (a mask that kept every
    column was said to come from ``undersample.enabled`` false)."""
    why = ("undersample.enabled is false" if not cfg.enabled else
           f"the undersample.mask={cfg.mask} mask at undersample.accelerations="
           f"{list(cfg.accelerations)} kept every acquirable column")
    fix = ("set undersample.enabled=true for a retrospective study" if not cfg.enabled else
           "raise undersample.accelerations or lower undersample.center_fractions")
    return (f"{name}: the k-space is fully sampled and {why}, so the metrics score a "
            f"reconstruction of complete data against its own reference ({fix})")


#: How much energy an unmeasured k-space column may hold relative to the nearest measured column
#: between it and the centre: an image's k-space energy falls off from the centre, so at most 1.
#: The energy above this bound, column by column, is what :func:`unsupported_energy_share` sums.
UNSUPPORTED_ENERGY_RATIO = 1.0

#: :func:`unsupported_energy_share` above which a classical reconstruction is warned about.
#: Measured on 660 reconstructions of 30 simulated slices (``simulate_mri_volume``; the set and
#: scripts of the a21 audit's fix): 8-coil brains (128 x 128 to 640 x 320, 4x / 8x, 5-20-column
#: bands, SNR 10 dB to noise-free, ESPIRiT maps as the pipeline makes them) and 4-5-coil ones
#: (64 x 64 to 128 x 128, 5-10-column bands, ESPIRiT with and without the crop safeguard, Walsh);
#: l1_wavelet, tv, cg_sense at the bench settings and at lam 1e-4 to 3e-3, 10 to 1000 iterations.
#: Every result above its zero-filled image had a share of 0-0.142 (l1_wavelet, lam 1e-4, 1000
#: iterations, +0.1 dB); 145 of the 262 at or below it more than 0.15 (139 of the 159 more than
#: 3 dB below; 8-coil 23 of 32, 4-5-coil 122 of 230). The earlier rule, the summed ratio
#: :func:`unmeasured_energy_ratio` above 1, warned for 13 results above zero filling (10 of them
#: 8-coil, up to 1.68 at +2.9 dB) and caught 122: one sum over all unmeasured columns dilutes the
#: energy amplified into the columns beside the band (notebook 02's quick mode, 5 coils, a
#: 5-column band, TV at lam 3e-4: ratio 0.65-0.72 at 2.9-3.4 dB below zero filling; share
#: 0.16-0.20). Left: results below zero filling by less than 1 dB mostly stay silent, and so do
#: some few-coil narrow-band ones 3-6 dB below it (Walsh maps, cg_sense at 150 iterations:
#: 0.10-0.14).
UNSUPPORTED_ENERGY_SHARE = 0.15


def _nearest_sampled_inward(mask: Tensor) -> Tensor:
    """For each column of ``mask`` ``(W,)``: the index of the nearest sampled column between it
    and the centre column ``W // 2`` (itself included), -1 where there is none."""
    m = mask.reshape(-1).bool().cpu()
    w = m.numel()
    out = torch.full((w,), -1, dtype=torch.long)
    for walk in (torch.arange(w // 2, w), torch.arange(w // 2, -1, -1)):  # outward, each side
        seen = torch.where(m[walk], torch.arange(walk.numel()), -1).cummax(0).values
        out[walk] = torch.where(seen >= 0, walk[seen.clamp(min=0)], -1)
    return out


def _column_energies(image: Tensor, maps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(energy, unmeasured, inward)``: the energy per column of ``fft2c(maps * image)``
    ``(W,)`` float64, the unmeasured columns that have a measured one inward of them (bool
    ``(W,)``) and, for those, that measured column's index."""
    from mrirecon.functional import fft2c

    m = mask.reshape(-1).bool().cpu()
    ref = _nearest_sampled_inward(m)
    unmeasured = ~m & (ref >= 0)
    energy = fft2c(maps * image).abs().pow(2).sum(dim=tuple(range(maps.ndim - 1))).double().cpu()
    return energy, unmeasured, ref[unmeasured]


def unmeasured_energy_ratio(image: Tensor, maps: Tensor, mask: Tensor) -> float | None:
    """Energy of a reconstruction's coil k-space in the unmeasured columns, relative to what the
    data show there: ``sum_j E_j / sum_j E_r(j)`` over the unmeasured columns ``j`` (``mask``
    ``(W,)`` False), ``E`` the energy per column of ``fft2c(maps * image)`` (``image`` ``(H, W)``,
    ``maps`` ``(coils, H, W)``) and ``r(j)`` the nearest measured column between ``j`` and the
    centre. Scale-free; ``None`` when no unmeasured column has a measured one inward of it (fully
    sampled) or those hold no energy. The warning judges :func:`unsupported_energy_share`: this
    one sum dilutes energy amplified into a few columns (:data:`UNSUPPORTED_ENERGY_SHARE`)."""
    energy, unmeasured, inward_cols = _column_energies(image, maps, mask)
    if not bool(unmeasured.any()):
        return None
    inward = float(energy[inward_cols].sum())
    if not 0 < inward < float("inf"):
        return None
    return float(energy[unmeasured].sum()) / inward


def unsupported_energy_share(image: Tensor, maps: Tensor, mask: Tensor) -> float | None:
    """Share of a reconstruction's coil k-space energy that the data do not support:
    ``sum_j max(E_j - R E_r(j), 0) / sum_k E_k``, ``j`` over the unmeasured columns (``mask``
    ``(W,)`` False), ``k`` over all columns, ``E`` the energy per column of
    ``fft2c(maps * image)`` (``image`` ``(H, W)``, ``maps`` ``(coils, H, W)``), ``r(j)`` the
    nearest measured column between ``j`` and the centre and ``R``
    :data:`UNSUPPORTED_ENERGY_RATIO`. Each column is judged on its own, so energy amplified into
    the one or two columns beside the band is not diluted by the others. Scale-free, in [0, 1);
    ``None`` when no unmeasured column has a measured one inward of it (fully sampled) or the
    image holds no energy. See :data:`UNSUPPORTED_ENERGY_SHARE`."""
    energy, unmeasured, inward_cols = _column_energies(image, maps, mask)
    total = float(energy.sum())
    if not bool(unmeasured.any()) or not 0 < total < float("inf"):
        return None
    excess = (energy[unmeasured] - UNSUPPORTED_ENERGY_RATIO * energy[inward_cols]).clamp(min=0)
    return float(excess.sum()) / total


#: Settings that weight a classical method's prior against the data, in the order
#: :func:`unsupported_energy_warning` looks for them among the method's parameters
#: (:func:`mrirecon.recon.registry.settable_parameters`) and advises raising the first it has:
#: ``lam`` (the regularisation weight), ``rho`` (PnP-ADMM / HQS: the penalty that ties the
#: image to the denoised one), ``noise_std`` (EPLL: the prior weight is ``noise_std^2``). A
#: method with ``iterations`` is also told to lower it (mri_cs at 8x: 1000 FISTA steps 11.7 dB,
#: 100 20.6). The warning named ``lam`` after every method, and pnp_nlm refused it at load.
PRIOR_WEIGHTS = ("lam", "rho", "noise_std")


def prior_advice(method: str) -> str:
    """What to change in ``method``'s settings when its result holds energy the data do not
    support (:data:`PRIOR_WEIGHTS`), as ``reconstruct.params`` keys it accepts; a method with
    none of them is told so."""
    from mrirecon.recon.registry import settable_parameters

    params = settable_parameters(method)
    weight = next((p for p in PRIOR_WEIGHTS if p in params), None)
    fewer = "lower reconstruct.params.iterations" if "iterations" in params else None
    if weight is not None:
        return f"raise reconstruct.params.{weight}" + (f" (or {fewer})" if fewer else "")
    if fewer is not None:
        return fewer
    return (f"{method} has no setting that weights a prior: use a wider centre band "
            "(undersample.center_fractions) or a lower acceleration, or a regularised method")


def unsupported_energy_warning(s: MRISlice, image: Tensor, method: str) -> str | None:
    """The warning of a classical reconstruction ``image`` ``(H, W)`` of Cartesian slice ``s``
    (with its coil maps) whose :func:`unsupported_energy_share` exceeds
    :data:`UNSUPPORTED_ENERGY_SHARE`: noise or coil-map errors amplified where the columns were
    not measured (too weak a prior for these data: a narrow centre band, low SNR, a high
    acceleration for the coils), with :func:`prior_advice` for ``method``; ``None`` otherwise.
    The message gives the share and the summed :func:`unmeasured_energy_ratio`."""
    if s.trajectory is not None or s.maps is None or s.mask.numel() != image.shape[-1]:
        return None
    maps = s.maps.to(image.dtype)
    share = unsupported_energy_share(image, maps, s.mask)
    if share is None or share <= UNSUPPORTED_ENERGY_SHARE:
        return None
    ratio = unmeasured_energy_ratio(image, maps, s.mask)
    nearest = "the nearest measured column between each and the centre"
    held = (f"energy where {nearest} holds none" if ratio is None else
            f"{ratio:.3g} times the energy of {nearest}")
    band = acs_width(s.mask)
    return (f"reconstruct ({method}): the unmeasured k-space columns of the image hold {held}, "
            f"{100 * share:.0f} % of the image's energy above it column by column (an image's "
            "k-space falls off from the centre: none; results above the zero-filled image on "
            "simulated data: at most 14 %): noise or coil-map errors amplified (a "
            f"{band}-column centre band, low SNR or a high acceleration for the coils); such "
            f"results scored below the zero-filled image on simulated data: {prior_advice(method)}")
