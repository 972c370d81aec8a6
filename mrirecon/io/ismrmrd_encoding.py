"""Encodings that the Cartesian ISMRMRD reader (:mod:`mrirecon.io.ismrmrd_raw`) cannot place as
they are, and the counter selection that must not lose a reference scan.

Each case below was read with exit 0 and gave a wrong image without a word:

* :func:`check_partitions`: a 3-D encoding (``encodedSpace`` ``z > 1``) whose slab lacks
  partitions. Gaps between acquired partitions (3-D acceleration along kz, every R-th
  partition) alias along z once the missing partitions are zero-filled and transformed (19 dB
  for 43 at R_z = 2) and are refused; partitions the header's
  ``encodingLimits/kspace_encoding_step_2`` says were acquired but that have no line are refused
  too. A contiguous block missing at one edge outside those limits (partial Fourier along kz)
  only blurs along z: it is zero-filled and noted (``header.extra["kz_partial_fourier_note"]``).
* :func:`check_partition_counter`: ``kspace_encode_step_2`` values that differ under a 2-D
  header (``z = 1``): the partitions of a 3-D scan were averaged into one slice.
* :func:`check_epi`: header ``encoding/trajectory`` ``epi`` with ramp sampling
  (``trajectoryDescription`` ``rampUpTime`` / ``rampDownTime``) or phase-correction lines
  (``ACQ_IS_PHASECORR_DATA``) was reconstructed as plain Cartesian lines: no regridding of the
  ramps (11 dB), no Nyquist-ghost correction (23 dB). Refused; an ``epi`` header without ramps
  and without phase-correction lines is read with a note, and phase-correction lines in a
  Cartesian file are noted as ignored.
* :func:`interpolate_phase`: a recon matrix finer than the encoded one along phase encoding
  over the same field of view (``reconSpace`` y 256 over 240 mm, ``encodedSpace`` y 192 over
  240 mm: Siemens' phase resolution below 100 %). The image was reconstructed on the 192
  acquired columns and labelled with the recon voxel (0.94 mm where they are 1.25 mm: features
  25 % too close to the centre). The k-space is zero-padded to the recon columns, as the
  scanner interpolates, and noted. With phase oversampling too (22 lines over 43.2 mm, recon
  24 over 36 mm: 1.96 mm columns labelled 1.5 mm, points at 9 mm exported at 7.5 mm) it is
  padded to the recon voxel (29 columns), which the recon crop cuts to 24; other
  contradictions of the two phase voxels are warned (:func:`phase_voxel_problem`).
* :func:`check_centre`: a slice whose k-space centre line (grid column ``y // 2``, where the
  header's ``encodingLimits`` centre puts it) no line of the data or of a separate reference
  holds (a lost centre line; :func:`check_centre_lines`), or a slab without its centre partition:
  refused naming ``idx.kspace_encode_step_1`` / ``_2`` and the centre's value.
* :func:`shift_note`: a line the header's ``encodingLimits`` centre moves off the grid is refused
  naming that header field and the shift it applied, not the acquisition alone.
* :func:`traj_ignored`: a header ``encoding/trajectory`` ``cartesian`` or ``epi`` whose
  acquisitions carry ``traj`` (some exporters write each line's grid coordinates) was read as
  non-Cartesian. ``traj`` on the Cartesian lines is ignored with a note (as Gadgetron ignores it);
  ``cartesian`` with readouts off those lines is refused naming both fields.
* :func:`select_counters`: ``counters={"repetition": 1}`` (or ``contrast``, ``phase``, ``set``)
  also selected the calibration-only lines, so a reference scan acquired once, under repetition
  0, was dropped without a word (with Walsh maps 11.5 dB for 34.2). Calibration-only lines of
  one other value are now kept (as a separate reference, never mixed into the image) and noted;
  references under several other values are refused.
"""

from __future__ import annotations

import numpy as np

from mrirecon.containers import Header

ACQ_IS_PHASECORR_DATA = 24
#: Counters whose calibration-only lines may come from another value (a reference scan taken
#: once for the whole series); never ``slice``: another slice's reference is another place.
SHARED_REFERENCE_COUNTERS = ("contrast", "phase", "repetition", "set")
STEP_2 = "idx.kspace_encode_step_2"
LIMITS_2 = "ismrmrd_header/encoding/encodingLimits/kspace_encoding_step_2"


def _flag(flags: np.ndarray, number: int) -> np.ndarray:
    return ((flags >> np.uint64(number - 1)) & np.uint64(1)).astype(bool)


def _numbers(values) -> str:
    values = [int(v) for v in values]
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return ", ".join(map(str, values[:12])) + (", ..." if len(values) > 12 else "")


def select_counters(idx, keep: np.ndarray, calib_only: np.ndarray, chosen: dict, fail,
                    counters: tuple, optional: tuple, header: Header):
    """Narrow ``keep`` (acquisitions still read) to the ``chosen`` counter values; refuse a
    counter with several values that was not chosen (``optional`` ones excepted).

    Calibration-only lines (``calib_only``) with none at a chosen value of a
    :data:`SHARED_REFERENCE_COUNTERS` counter are taken from the one other value that holds
    them (a reference scan acquired once, before the first repetition), with
    ``header.extra["reference_counter_note"]``; several other values are refused. Returns
    ``(keep, header, borrowed)``, ``borrowed`` naming where the reference came from (``None``
    when it came from the chosen values)."""
    borrowed = []
    for name in counters:
        values = np.unique(idx[name][keep])
        if name in chosen:
            value = chosen[name]
            if value not in values:
                raise fail(f"idx.{name}", f"no acquisition with {name}={value} "
                                          f"(found {values.tolist()})")
            ref = keep & calib_only
            here = idx[name] == value
            others = np.unique(idx[name][ref & ~here]).tolist()
            keep = keep & here
            if name in SHARED_REFERENCE_COUNTERS and others and not (ref & here).any():
                if len(others) > 1:
                    raise fail(f"idx.{name}", (
                        f"no calibration-only line (ACQ_IS_PARALLEL_CALIBRATION) has {name}="
                        f"{value}, and those of {name} {others} are {len(others)} reference "
                        f"scans: which one belongs to {name}={value} is unknown; select a "
                        f"{name} that has its own, or read without them (--set "
                        "load.include_calibration=false)"))
                keep = keep | (ref & (idx[name] == others[0]))
                borrowed.append(f"{name} {others[0]}")
        elif values.size > 1 and name not in optional:
            raise fail(f"idx.{name}", f"found values {values.tolist()}; select one with "
                                      f"--set load.counters.{name}=VALUE (mrirecon run) or "
                                      f"counters={{{name!r}: value}} (read_ismrmrd)")
    if "contrast" in chosen:  # which echo the image is: its TE for the DICOM export
        header = header.with_(extra={**header.extra, "selected_contrast": int(chosen["contrast"])})
    if not borrowed:
        return keep, header, None
    where = ", ".join(borrowed)
    selected = ", ".join(f"{k}={v}" for k, v in chosen.items() if k != "slice")
    lines = int((keep & calib_only).sum())
    return keep, header.with_(extra={**header.extra, "reference_counter_note": (
        f"the reference scan was taken from {where}: no calibration-only line "
        f"(ACQ_IS_PARALLEL_CALIBRATION) was acquired at {selected}, so the {lines} "
        f"calibration-only lines of {where} (a reference acquired once for the series) are used "
        "for calibration only, never in the image")}), where


def ramp_sampling(header: Header) -> str | None:
    """``"ramp sampling (trajectoryDescription rampUpTime 100, rampDownTime 100)"`` when the
    header's ramp times (``extra["trajectory_ramp_times"]``) say the readouts sample on the
    gradient ramps (any time not 0; NaN, unreadable, is not flat), else ``None``: the words of
    both readers' EPI refusals (:func:`mrirecon.io.ismrmrd_encoding.check_epi`,
    :func:`mrirecon.io.layout_hints.fastmri_trajectory_problem`)."""
    ramped = {k: v for k, v in dict(header.extra.get("trajectory_ramp_times", ())).items()
              if not v == 0}
    if not ramped:
        return None
    return ("ramp sampling (trajectoryDescription "
            + ", ".join(f"{k} {v:g}" for k, v in ramped.items()) + ")")


def check_epi(header: Header, flags: np.ndarray, keep_space: np.ndarray, carries_traj: bool,
              fail) -> Header:
    """Refuse an ``epi`` encoding that needs ramp-sampling regridding or Nyquist-ghost correction
    (see the module docstring); note phase-correction lines that are left out. ``keep_space``
    marks the acquisitions of encoding space 0 that are not noise; ``carries_traj`` whether the
    readouts are read by their ``traj`` (which regrids ramps; not when :func:`traj_ignored`
    ignores it)."""
    phasecorr = int((keep_space & _flag(flags, ACQ_IS_PHASECORR_DATA)).sum())
    kind = str(header.extra.get("trajectory", "cartesian")).strip()
    if kind.lower() != "epi":
        if not phasecorr:
            return header
        return header.with_(extra={**header.extra, "phasecorr_note": (
            f"{phasecorr} phase-correction acquisitions (ACQ_IS_PHASECORR_DATA) were ignored: "
            "no Nyquist-ghost correction is done (the header's encoding/trajectory is "
            f"{kind!r}; if these lines are EPI, odd/even echo misalignment stays as N/2 ghosts)")})
    problems = []
    if (ramped := ramp_sampling(header)) and not carries_traj:
        problems.append(ramped)
    if phasecorr:
        problems.append(f"{phasecorr} phase-correction acquisitions (ACQ_IS_PHASECORR_DATA)")
    if problems:
        raise fail("ismrmrd_header/encoding/trajectory", (
            f"'epi' with {' and '.join(problems)}: mrirecon reads EPI lines as Cartesian "
            "k-space lines only; it does no ramp-sampling regridding and no Nyquist-ghost "
            "(phase-correction) correction, so the image would be blurred and ghosted; convert "
            "the data to Cartesian k-space first, regridded and ghost-corrected (e.g. with the "
            "scanner's or Gadgetron's EPI reconstruction), and write it with encoding/trajectory "
            "'cartesian'"))
    return header.with_(extra={**header.extra, "epi_note": (
        "header encoding/trajectory 'epi' read as Cartesian lines (no ramp sampling described, "
        "no phase-correction lines): lines flagged ACQ_IS_REVERSE are flipped back (a plain "
        "flip, center_sample then marking k = 0: the convention of ISMRMRD's example writers; "
        "where reversed lines cross k = 0 at the same stored sample as the forward ones, as in "
        "Gadgetron's flat EPI model, they land one sample off), but no Nyquist-ghost correction "
        "is done: an odd/even echo misalignment, or that one-sample offset, would stay as N/2 "
        "ghosts")})


def check_partition_counter(idx, imaging: np.ndarray, enc_z: int, fail) -> None:
    """Refuse several ``kspace_encode_step_2`` values under ``encodedSpace`` ``z = 1``: the
    reader places every line on partition 0, so a 3-D scan's partitions were averaged into one
    slice (with a misleading note about disagreeing averages)."""
    steps = idx["kspace_encode_step_2"][imaging]
    if enc_z > 1 or np.unique(steps).size < 2:
        return
    k = int(np.argmax(steps != steps.min()))
    raise fail(f"data[{int(imaging[k])}].{STEP_2}", (
        f"{int(steps[k])} (the imaging acquisitions hold partitions {_numbers(np.unique(steps))}"
        "), but the header's encoding/encodedSpace/matrixSize/z = 1 (a 2-D encoding): the "
        "partitions of a 3-D scan would be averaged into one slice; the header's z or the "
        "acquisitions' kspace_encode_step_2 is wrong"))


def check_partitions(header: Header, partitions: np.ndarray, shift_z: int, fail) -> Header:
    """Refuse partitions missing from a 3-D slab, or note kz partial Fourier (see the module
    docstring). ``partitions`` ``(slices, z)`` marks the acquired grid partitions, grid
    partition ``p`` holding ``kspace_encode_step_2 = p - shift_z``; the k-space centre is grid
    partition ``z // 2``."""
    slabs, enc_z = partitions.shape
    if enc_z < 2 or partitions.all():
        return header
    limits = header.extra.get("encoding_limits_step_2")
    lo = hi = None
    if isinstance(limits, tuple) and limits[1] is not None:
        lo = max((limits[0] or 0) + shift_z, 0)
        hi = min(limits[1] + shift_z, enc_z - 1)
    runs = set()
    for s in range(slabs):
        got = np.flatnonzero(partitions[s])
        if not got.size:
            continue
        steps = got - shift_z
        slab = f"idx.slice {s}: partitions (kspace_encode_step_2) {_numbers(steps)} of {enc_z}"
        gaps = sorted(set(range(got[0], got[-1] + 1)) - set(got.tolist()))
        if gaps:
            raise fail(f"data[].{STEP_2}", (
                f"{slab}: {len(gaps)} partitions between them ({_numbers(np.array(gaps) - shift_z)}"
                ") hold no line: partition undersampling (3-D acceleration along kz) is not "
                "supported: the missing partitions would be zero-filled and the slices alias "
                "along z"))
        if lo is not None and (got[0] > lo or got[-1] < hi):
            missing = [p for p in range(lo, hi + 1) if not partitions[s, p]]
            raise fail(f"data[].{STEP_2}", (
                f"{slab}: the header's {LIMITS_2} minimum..maximum = {limits[0]}..{limits[1]} "
                f"says {_numbers(np.array(missing) - shift_z)} were acquired too, but they hold "
                "no line (a truncated file, or partition undersampling, which is not "
                "supported): zero-filled they would blur or alias the slices along z"))
        check_centre(partitions[s], shift_z, 2, fail, slab, limits)
        runs.add((int(got[0]), int(got[-1])))
    if not runs:
        return header
    counts = sorted({b - a + 1 for a, b in runs})
    one_edge = all(a == 0 or b == enc_z - 1 for a, b in runs)
    where = "; ".join(f"{a - shift_z}..{b - shift_z}" for a, b in sorted(runs)[:4])
    acquired = (f"{_numbers(counts)} of {enc_z} partitions acquired (kspace_encode_step_2 {where}"
                f"{' in different slabs' if len(runs) > 1 else ''}, missing at "
                f"{'one edge' if one_edge else 'both edges'})")
    note = (f"kz partial Fourier is zero-filled: {acquired}: the missing partitions are "
            "zero-filled (no partial-Fourier reconstruction along kz), so the slices are blurred "
            "along z" if one_edge else
            f"kz is zero-filled beyond the acquired partitions: {acquired}: the slices are "
            "interpolated, their resolution along z is that of the acquired partitions")
    return header.with_(extra={**header.extra, "kz_partial_fourier_note": note})


def check_centre(held: np.ndarray, shift: int, step: int, fail, where: str, limits) -> None:
    """Refuse a slice (or 3-D slab) whose k-space centre holds no line: ``held`` ``(n,)`` marks
    the grid lines (``step`` 1: phase-encoding columns) or partitions (``step`` 2) that hold one,
    grid line ``g`` holding ``kspace_encode_step_<step> = g - shift``; the centre is grid line
    ``n // 2``, where the header's ``encodingLimits`` centre (``limits``: ``(minimum, maximum,
    center)`` or ``None``) put it. ``where`` names the slice and what it holds. A lost centre
    line (31 of 32 lines acquired) was read without a word and then refused as "ESPIRiT needs a
    fully sampled centre band ..., got 0"; zero-filled it gave 9.2 dB."""
    centre = held.size // 2
    if held[centre]:
        return
    noun = "partition" if step == 2 else "line"
    axis = "z" if step == 2 else "y"
    source = (f"the header's encodingLimits/kspace_encoding_step_{step}/center = {limits[2]}"
              if isinstance(limits, tuple) and limits[2] is not None else
              f"encodedSpace/matrixSize/{axis} = {held.size} halved: the header gives no "
              "encodingLimits centre")
    raise fail(f"data[].idx.kspace_encode_step_{step}", (
        f"{where}: the k-space centre {noun} (kspace_encode_step_{step} {centre - shift}) "
        f"{'holds no line' if step == 2 else 'was not acquired'} (the centre by {source}), so "
        f"the slices cannot be reconstructed (the centre {noun} was lost, or the header's centre "
        "is wrong)"))


def check_centre_lines(held: np.ndarray, shift: int, fail, limits) -> None:
    """:func:`check_centre` of the phase-encoding lines of each slice: ``held`` ``(slices, y)``
    marks the grid columns that hold a line (of the data or of a separate reference, which GRAPPA
    fills the data's centre from)."""
    for s, row in enumerate(held):
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(np.int8), 0]))
        runs = [f"{a - shift}..{b - 1 - shift}" if b - a > 1 else f"{a - shift}"
                for a, b in zip(edges[::2], edges[1::2])]
        got = ", ".join(runs[:6]) + (f", ... ({len(runs)} runs)" if len(runs) > 6 else "")
        check_centre(row, shift, 1, fail, f"idx.slice {s}: lines (kspace_encode_step_1) {got} of "
                     f"{row.size}", limits)


def shift_note(header: Header, step: int, line: int, shift: int) -> str:
    """Why line ``line`` of ``kspace_encode_step_<step>`` left the grid when the header's
    ``encodingLimits`` centre moved it by ``shift`` (``""`` when it did not move): the refusal
    named the acquisition alone ("column 32 outside the 32 encoded lines"), not the header field
    that moved it."""
    if not shift:
        return ""
    centre = header.extra.get(f"encoding_limits_step_{step}", (0, 0, 0))[2]
    return (f" (line {line} was moved by {shift:+d}, to put the header's encodingLimits/"
            f"kspace_encoding_step_{step}/center = {centre} at the grid centre {centre + shift}: "
            "is the header's center wrong?)")


def traj_ignored(header: Header, records, imaging: np.ndarray,
                 fail) -> tuple[Header, bool]:
    """Whether the acquisitions that carry ``traj`` under a header ``encoding/trajectory``
    ``cartesian`` or ``epi`` are read by their counters, as Gadgetron reads them: ``(header with
    extra["cartesian_traj_note"], True)`` when every ``traj`` lies on a Cartesian line (evenly
    spaced along the readout, one phase-encoding coordinate per readout, affine in
    ``kspace_encode_step_1``: the two agree, whatever the unit); ``(header, False)`` (read by
    ``traj``, :mod:`~mrirecon.io.ismrmrd_noncartesian`) for other headers and for ``epi``
    readouts off the grid (ramp sampling, which their ``traj`` regrid). ``cartesian`` with
    readouts off the grid is refused naming both fields: which of the two is wrong is unknown.
    Was: every such file read as non-Cartesian ("non-Cartesian data have no acceleration", "slice
    0 has no readout 1 ...", or refused as a trajectory of no known unit). ``records``: the
    table's :class:`~mrirecon.io.ismrmrd_stream.Rows` (each ``traj`` read in chunks of rows)."""
    kind = str(header.extra.get("trajectory", "")).strip().lower()
    if kind not in ("cartesian", "epi"):
        return header, False
    heads = records["head"]
    carrying = imaging[heads["trajectory_dimensions"][imaging] > 0]
    rows = []  # (acquisition, mean ky, |kx step|, float32 rounding, carries ky)
    problem = None
    reading = records.iter(carrying)  # in chunks of rows (ismrmrd_stream.Rows)
    for a, record in reading:
        n, dims = int(heads["number_of_samples"][a]), int(heads["trajectory_dimensions"][a])
        t = np.asarray(record["traj"], np.float64)
        if t.size != n * dims or not np.isfinite(t).all() or n < 2:
            problem = (int(a), f"{t.size} values for {n} samples x {dims} dimensions, or not finite")
            break
        t = t.reshape(n, dims)
        kx, ky = t[:, 0], (t[:, 1] if dims > 1 else np.zeros(n))
        step = np.diff(kx)
        eps = 4 * np.finfo(np.float32).eps * float(np.abs(t[:, :2]).max())
        if np.ptp(ky) > 0.01 * abs(step.mean()) + eps:
            problem = (int(a), f"ky varies by {np.ptp(ky):.4g} along the readout, whose kx steps "
                               f"by {abs(step.mean()):.4g}: a readout that is no line along kx")
            break
        if abs(step.mean()) <= eps or np.ptp(step) > 0.01 * abs(step.mean()) + eps:
            problem = (int(a), f"kx steps {step.min():.4g}..{step.max():.4g} along the readout: "
                               "not evenly spaced (ramp sampling?)")
            break
        rows.append((int(a), float(ky.mean()), abs(float(step.mean())), eps, dims > 1))
    reading.close()  # the file, where a problem ended the loop early
    if problem is None and rows:
        acq, ky, dx, eps, has_ky = (np.array([r[i] for r in rows]) for i in range(5))
        acq, ky = acq[has_ky], ky[has_ky]  # a 1-D traj (kx alone) says nothing of the lines
        lines = heads["idx"]["kspace_encode_step_1"][acq].astype(np.float64)
        if np.ptp(dx) > 0.01 * dx.mean() + eps.max():
            k = int(np.argmax(np.abs(dx - dx[0])))
            problem = (rows[k][0], f"kx steps by {dx[k]:.4g} here, by {dx[0]:.4g} in "
                                   f"data[{rows[0][0]}]")
        elif lines.size and np.ptp(lines) > 0:
            slope, offset = np.polyfit(lines, ky, 1)
            off = np.abs(ky - (slope * lines + offset))
            if abs(slope) <= eps.max() or off.max() > 0.01 * abs(slope) + eps.max():
                k = int(np.argmax(off))
                problem = (int(acq[k]), (
                    f"ky {ky[k]:.4g} is not the line kspace_encode_step_1 {int(lines[k])} gives: "
                    "the readouts' ky are not affine in their line numbers"))
    if problem is None:
        dims = sorted({int(d) for d in heads["trajectory_dimensions"][carrying]})
        return header.with_(extra={**header.extra, "cartesian_traj_note": (
            f"the acquisitions carry traj (trajectory_dimensions {_numbers(dims)}) under the "
            f"header's encoding/trajectory {kind!r}: they lie on the Cartesian lines their "
            "counters give, so the lines are placed by kspace_encode_step_1 (as Gadgetron "
            "reads them) and traj is ignored")}), True
    if kind == "epi":  # ramp-sampled EPI readouts: their traj regrid them
        return header, False
    a, why = problem
    raise fail(f"ismrmrd_header/encoding/trajectory / data[{a}].traj", (
        f"'cartesian', but the acquisitions carry a traj that is not a Cartesian line ({why}): "
        "whether the header or the trajectory is wrong is unknown; write the header's "
        "trajectory (radial, spiral, other) for non-Cartesian readouts, or no traj "
        "(trajectory_dimensions 0) for Cartesian lines"))


#: The element :func:`phase_voxel_problem` names.
RECON_FOV_Y = "ismrmrd_header/encoding/reconSpace/fieldOfView_mm/y"


def same_voxel(v_enc: float, v_rec: float, fe: float, fr: float, ry: int) -> bool:
    """Encoded and recon voxel sizes equal within rounding: each FOV to the mm (0.5 mm off
    each) and the recon extent off by half a recon voxel (of the ``ry`` recon voxels); the one
    rule of the readout (:func:`~mrirecon.io.ismrmrd_header.readout_voxel_problem`) and of phase
    encoding (:func:`phase_voxel_problem`, :func:`interpolated_columns`)."""
    return abs(v_enc / v_rec - 1) <= 0.5 / fe + 0.5 / fr + 0.5 / ry


def interpolated_columns(header: Header, width: int) -> int | None:
    """The k-space columns that put ``width`` encoded lines on the recon voxel along phase
    encoding, when the recon voxel (``reconSpace y`` FOV / matrix) is finer than the encoded one
    (``encodedSpace``) and the encoded FOV covers the recon FOV (a phase resolution below
    100 %, with or without phase oversampling): ``ry`` when the two FOVs agree within rounding
    (1 mm), else ``round(encoded FOV y / recon voxel)``; ``None`` when nothing is to pad (the
    voxels agree, a FOV is 0, ``width`` is not the encoded ``y``, or the header contradicts
    itself otherwise: :func:`phase_voxel_problem`)."""
    ey, ry = header.encoded_matrix[1], header.recon_matrix[1]
    fe, fr = header.encoded_fov_mm[1], header.recon_fov_mm[1]
    if not (fe > 0 and fr > 0 and width == ey):
        return None
    v_enc, v_rec = fe / ey, fr / ry
    if v_rec >= v_enc or same_voxel(v_enc, v_rec, fe, fr, ry) or fe < fr - 1.0:
        return None
    target = ry if abs(fe - fr) <= 1.0 else int(round(fe / v_rec))
    return target if target > ey else None


def phase_voxel_problem(header: Header, width: int) -> str | None:
    """What is wrong when a Cartesian header's encoded and recon phase-encoding (``y``) voxel
    sizes differ in a way :func:`interpolate_phase` does not mend (``None`` when they agree, a
    FOV is 0, the trajectory is not Cartesian, or the k-space is padded to the recon voxel):
    a recon voxel coarser than the encoded one (a recon matrix 2.5x smaller over the same FOV),
    or finer over a recon FOV wider than the encoded one. The columns are sampled ``encoded FOV
    y / y`` mm apart and labelled ``recon FOV y / y``. Not a contradiction (``None``): up to
    twice the recon columns encoded over the same FOV (within rounding, 1 mm), ``ry < ey <= 2
    ry``, the encoded FOV leaving out the phase oversampling (siemens_to_ismrmrd writes
    ``dPhaseFOV * (1 + phaseOS)`` and takes ``phaseOS`` 0 when the raw data do not give it;
    fastMRI's knee headers: 368 lines and 320 recon columns, both over 140 mm): the recon crop
    keeps the centre ``ry`` columns, which are the labelled voxel. Mirrors
    :func:`~mrirecon.io.ismrmrd_header.readout_voxel_problem` (the readout's rule); a warning
    of the run naming :data:`RECON_FOV_Y` (``header.extra["phase_voxel_note"]``)."""
    kind = str(header.extra.get("trajectory", "cartesian")).strip().lower()
    ey, ry = header.encoded_matrix[1], header.recon_matrix[1]
    fe, fr = header.encoded_fov_mm[1], header.recon_fov_mm[1]
    if kind != "cartesian" or not (fe > 0 and fr > 0) or width != ey:
        return None
    v_enc, v_rec = fe / ey, fr / ry
    if same_voxel(v_enc, v_rec, fe, fr, ry) or interpolated_columns(header, width) is not None:
        return None
    if abs(fe - fr) <= 1.0 and ry < ey <= 2 * ry:  # phase oversampling left out of the FOV
        return None
    return (f"{RECON_FOV_Y}: {fr:g} mm over the recon matrix y = {ry} is {v_rec:.4g} mm a "
            f"column, but the encoded space samples {fe:g} mm over y = {ey}, {v_enc:.4g} mm a "
            f"column: the header contradicts itself (the image columns are {v_enc:.4g} mm, "
            f"labelled {v_rec:.4g} mm; {fr:g} mm are {round(fr / v_enc)} columns): the output's "
            "voxel size or extent along phase encoding is likely wrong; correct encodedSpace or "
            "reconSpace")


def interpolate_phase(header, data, columns, calibration):
    """``(header, data, columns, calibration)`` zero-padded along phase encoding so that the
    image columns are the recon voxel (``reconSpace`` FOV y / y) when that voxel is finer than
    the encoded one and the encoded FOV covers the recon FOV (:func:`interpolated_columns`),
    else as given. Over the same FOV (within rounding, 1 mm) the k-space is padded to the recon
    matrix's ``y`` (an interpolated phase matrix, Siemens' phase resolution below 100 %); with
    phase oversampling too (22 lines over 43.2 mm, recon 24 over 36 mm) to ``round(encoded FOV
    / recon voxel)`` (29) columns, which the pipeline's ``crop: recon_size`` cuts to the recon
    FOV. ``data`` / ``calibration`` are ``(..., W)`` tensors, ``columns`` a ``(..., W)`` bool
    array of the acquired columns; the padded columns are never acquired (outside the header's
    ``padding_left`` / ``padding_right``), the k-space centre moves from column ``W // 2`` to
    the new width's ``// 2``, the header's encoded ``y`` becomes that width, and
    ``header.extra`` gets a ``phase_interpolation_note``. Any other disagreement of the two
    voxel sizes is left as it is, with ``header.extra["phase_voxel_note"]``
    (:func:`phase_voxel_problem`). fastMRI files are read by another reader (their y FOV does
    not follow the matrix)."""
    import torch

    ey, ry = header.encoded_matrix[1], header.recon_matrix[1]
    fe, fr = header.encoded_fov_mm[1], header.recon_fov_mm[1]
    width = data.shape[-1]
    target = interpolated_columns(header, width)
    if target is None:
        if problem := phase_voxel_problem(header, width):
            header = header.with_(extra={**header.extra, "phase_voxel_note": problem})
        return header, data, columns, calibration
    left = target // 2 - ey // 2
    pad = (left, target - ey - left)
    data = torch.nn.functional.pad(data, pad)
    calibration = None if calibration is None else torch.nn.functional.pad(calibration, pad)
    columns = np.pad(columns, [(0, 0)] * (columns.ndim - 1) + [pad])
    if target == ry:
        note = (f"reconSpace y = {ry} over {fr:g} mm is finer than the {ey} encoded lines over "
                f"{fe:g} mm (an interpolated phase matrix, e.g. a phase resolution below 100 %): "
                f"the k-space is zero-padded to {ry} columns, as the scanner interpolates, so the "
                f"image columns are {fr / ry:.4g} mm as labelled (the acquired resolution is "
                f"{fe / ey:.4g} mm)")
    else:
        note = (f"reconSpace y = {ry} over {fr:g} mm is finer than the {ey} encoded lines over "
                f"{fe:g} mm (phase oversampling and a phase resolution below 100 %): the k-space "
                f"is zero-padded to {target} columns over the {fe:g} mm encoded, as the scanner "
                f"interpolates, so the image columns are {fe / target:.4g} mm (labelled "
                f"{fr / ry:.4g} mm) and the recon crop keeps {ry} of them (the acquired "
                f"resolution is {fe / ey:.4g} mm)")
    header = header.with_(encoded_matrix=(header.encoded_matrix[0], target,
                                          header.encoded_matrix[2]),
                          padding_left=header.padding_left + left,
                          padding_right=header.padding_right + left,
                          extra={**header.extra, "phase_interpolation_note": note})
    return header, data, columns, calibration
