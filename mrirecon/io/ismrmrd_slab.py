"""From the Cartesian ISMRMRD reader's accumulated k-space grid to its slices
(:mod:`mrirecon.io.ismrmrd_raw`): repeats averaged sample by sample, the readouts that lack
rows, and the partitions of a 3-D slab put on the recon slab's grid.

* :func:`average_per_sample`: a line acquired several times (``idx.average``, repeated
  calibration lines) is the mean of the repeats that hold each sample. Repeats with different
  readout extents (averages with different partial echoes) were divided by the line's repeat
  count on every row, so the rows one repeat alone holds came out at half their value (and were
  said to be "never sampled").
* :func:`short_lines_note`: lines whose repeats together lack readout rows that other lines hold.
* :func:`slab_plan` / :func:`slab_header` / :func:`to_slices`: a 3-D encoding
  (``encodedSpace`` ``z > 1``) gives ``z`` partitions ``encoded FOV z / z`` mm apart once
  transformed along kz. The recon slab may differ (Siemens' *slice resolution* below 100 % /
  slice interpolation: ``reconSpace`` ``z`` larger over the same FOV; *slice oversampling*:
  ``encodedSpace`` FOV z larger than the recon FOV at the same partition thickness; both
  together). As :func:`~mrirecon.io.ismrmrd_encoding.interpolate_phase` does along phase
  encoding (and the scanner along both), kz is zero-filled (centred) to the partitions that
  cover the encoded FOV at the recon thickness, and the centre ``reconSpace z`` partitions (the
  recon slab) are kept, as the readout oversampling crop keeps the recon rows. The returned
  slices are then the recon grid the header labels. Was: the encoded partitions labelled with
  the recon thickness (6 partitions of 8 mm as 6 mm: a point 16 mm below the centre exported at
  -12 mm) and the oversampled partitions exported (10 for 8, the slab edges' aliasing with
  them), contiguous multi-slab TOF refused as "overlapping by 2 partitions". A recon slab that
  does not fit the encoded partitions (another FOV not a whole number of recon partitions) is
  not resampled: the partitions are kept at their acquired spacing, with a note.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from mrirecon.containers import Header
from mrirecon.functional import center_crop, fft2c, ifft2c
from mrirecon.io.partial_echo import is_partial_echo

#: Share of their energy by which repeated acquisitions of the same lines may differ before the
#: reader notes it (:func:`repeat_note_of`): noise and motion between averages stay far below.
REPEAT_MISMATCH = 0.2
#: At most this many zero-filled partitions per acquired one (Siemens' slice resolution goes down
#: to 50 %: 2); a header asking for more is not resampled.
MAX_PARTITION_FILL = 4


@dataclass(frozen=True)
class SlabPlan:
    """How the ``partitions`` acquired partitions become slices: zero-filled (centred) to
    ``fill`` along kz, transformed, and partitions ``start .. start + keep - 1`` kept,
    ``thickness`` mm apart. ``centre`` is the kept partition at the slab's ``position``
    (acquisition order); ``note`` what the reader says, ``None`` for nothing."""

    partitions: int
    fill: int
    keep: int
    start: int
    thickness: float
    note: tuple[str, str] | None = None
    from_encoded_fov: bool = False

    @property
    def centre(self) -> int:
        return self.fill // 2 - self.start


def slab_plan(header: Header) -> SlabPlan:
    """The :class:`SlabPlan` of ``header`` (see the module docstring): for ``encodedSpace``
    ``z = n`` over ``fe`` mm and ``reconSpace`` ``z = r`` over ``fr`` mm, recon partitions
    ``t = fr / r`` mm, ``m = fe / t`` of them cover the encoded FOV; when ``m`` is a whole
    number (within the FOVs' rounding, 0.5 mm each), ``n <= m <= MAX_PARTITION_FILL * n`` and
    ``r <= m``: zero-filled to ``m``, the centre ``r`` kept. Otherwise the ``n`` partitions are
    kept ``fe / n`` mm apart (the header's own spacing when ``fe`` is 0: unknown)."""
    n, r = header.encoded_matrix[2], header.recon_matrix[2]
    fe, fr = header.encoded_fov_mm[2], header.recon_fov_mm[2]
    spacing = header.geometry.spacing[0]
    if n < 2:
        return SlabPlan(n, n, n, 0, spacing)
    if fe > 0 and fr > 0:
        t = fr / r
        m = round(fe / t)
        fits = abs(m * t - fe) <= 0.5 + 0.5 * m / r
        if fits and m == n == r:  # the recon slab is the encoded one
            return SlabPlan(n, n, n, 0, spacing)
        if fits and n <= m <= MAX_PARTITION_FILL * n and r <= m:
            note = None
            if m > n:
                note = ("partition_interpolation_note", (
                    f"reconSpace z = {r} over {fr:g} mm is finer than the {n} encoded partitions "
                    f"over {fe:g} mm (slice interpolation, e.g. a slice resolution below 100 %): "
                    f"kz is zero-filled to {m} partitions, as the scanner interpolates, so the "
                    f"slices are {t:.4g} mm apart as labelled (the acquired resolution along z "
                    f"is {fe / n:.4g} mm)"
                    + (f"; the {m - r} oversampled partitions are cropped" if r < m else "")))
            return SlabPlan(n, m, r, (m - r) // 2, t, note)
    if not fe > 0:
        return SlabPlan(n, n, n, 0, spacing)
    note = None
    if fr > 0:
        note = ("partition_spacing_note", (
            f"reconSpace z = {r} over {fr:g} mm does not describe the {n} encoded partitions over "
            f"{fe:g} mm ({fe / n:.4g} mm each, not a whole number of {fr / r:.4g} mm recon "
            f"partitions): the {n} partitions are kept at their acquired spacing, {fe / n:.4g} mm"))
    return SlabPlan(n, n, n, 0, fe / n, note, from_encoded_fov=not fr > 0)


def slab_header(header: Header, plan: SlabPlan) -> Header:
    """``header`` describing the slices :func:`to_slices` returns: partition thickness and
    spacing ``plan.thickness``, ``encodedSpace`` ``z`` (and FOV) the kept partitions' when the
    slab was resampled, the plan's note; ``z`` no longer among ``extra["fov_unknown_axes"]``
    when the encoded FOV gave the spacing."""
    if plan.partitions < 2:
        return header
    g = header.geometry
    extra = dict(header.extra)
    if plan.note is not None:
        extra[plan.note[0]] = plan.note[1]
    if plan.from_encoded_fov and "z" in extra.get("fov_unknown_axes", ()):
        extra["fov_unknown_axes"] = tuple(a for a in extra["fov_unknown_axes"] if a != "z")
    changes = {}
    if (plan.fill, plan.keep) != (plan.partitions, plan.partitions):
        changes = {"encoded_matrix": header.encoded_matrix[:2] + (plan.keep,),
                   "encoded_fov_mm": header.encoded_fov_mm[:2] + (plan.keep * plan.thickness,)}
    if not math.isclose(g.spacing[0], plan.thickness, rel_tol=1e-12):
        g = dataclasses.replace(g, spacing=(plan.thickness,) + tuple(g.spacing[1:]),
                                slice_thickness=plan.thickness)
    return header.with_(geometry=g, extra=extra, **changes)


def to_slices(grid: np.ndarray, new_x: int, reversed_: bool, plan: SlabPlan) -> torch.Tensor:
    """A k-space grid ``(slices, z, coils, x, y)`` as ``(slices * plan.keep, coils, x', y)``:
    along the partitions of a 3-D encoding (``z > 1``) zero-filled to ``plan.fill`` (the k-space
    centre from ``z // 2`` to ``fill // 2``), inverse Fourier transformed, cropped to
    ``plan.keep`` from ``plan.start`` and flipped when they run against the slice normal
    (:func:`~mrirecon.io.ismrmrd_placement.partitions_reversed`); for ``0 < new_x < x`` cropped
    to ``new_x`` readout samples in image space (readout oversampling removal)."""
    num_slices, enc_z, channels, enc_x, enc_y = grid.shape
    if enc_z > 1 and plan.fill > enc_z:
        left = plan.fill // 2 - enc_z // 2
        grid = np.pad(grid, [(0, 0), (left, plan.fill - enc_z - left), (0, 0), (0, 0), (0, 0)])
    data = torch.from_numpy(grid)
    keep = plan.keep if enc_z > 1 else 1
    if enc_z > 1:  # inverse FT along partitions: ifft2c over (z, 1)
        data = ifft2c(data.permute(0, 2, 3, 4, 1).unsqueeze(-1)).squeeze(-1).permute(0, 4, 1, 2, 3)
        data = data[:, plan.start: plan.start + keep]
        if reversed_:  # slices run along phase x read
            data = data.flip(1)
    data = data.reshape(num_slices * keep, channels, enc_x, enc_y).contiguous()
    if 0 < new_x < enc_x and channels == 0:  # the heads alone (ismrmrd_stream): no samples
        data = data[..., :new_x, :]
    elif 0 < new_x < enc_x:
        hybrid = ifft2c(data.transpose(-1, -2).unsqueeze(-1))  # FT along readout only
        hybrid = center_crop(hybrid, (new_x, 1))
        data = fft2c(hybrid).squeeze(-1).transpose(-1, -2).contiguous()
    return data


def average_per_sample(grids: dict, held: dict) -> None:
    """Make each grid of ``grids`` (``{calibration_only: (sum, count, energy, rows)}``, ``sum``
    ``(slices, z, coils, x, y)``, ``count`` / ``energy`` ``(slices, z, y)`` per line) give the
    mean of the repeats that hold each sample when divided by its line's ``count``, in place.
    ``held[key] = (hits, power)``, ``(slices, z, x, y)``: how many repeats hold each sample and
    the sum of their ``|samples|^2`` over coils. ``energy`` becomes ``count`` times the per-sample
    mean of ``power`` summed along the line, so ``energy / count`` is a repeat's mean energy as
    :func:`repeat_note_of` compares it (on lines whose repeats hold the
    same rows: the sum of their energies, as before)."""
    for key, (grid, count, energy, _) in grids.items():
        hits, power = held[key]
        lines = count[:, :, None, :]
        some = hits > 0
        energy[...] = (np.divide(power, hits, out=np.zeros_like(power), where=some)
                       .sum(axis=2, dtype=np.float64) * count)
        if not (some & (hits != lines)).any():  # every repeat holds the same rows: sum / count
            continue
        scale = np.divide(lines, hits, out=np.zeros(hits.shape, np.float32), where=some)
        grid *= scale[:, :, None]


def short_lines_note(header: Header, spans: list, grids: dict, held: dict, enc_x: int,
                     steps) -> Header:
    """``header`` with ``extra["short_lines_note"]`` when some lines hold fewer samples than the
    rows the others fill (``grids[calibration_only][3] = [first, stop]``, the union): a partial
    echo on some lines only. A line is short when its repeats together (``held[key][0]``,
    samples held per repeat count) lack such rows, as many as a partial echo the reader would
    mark (:func:`~mrirecon.io.partial_echo.is_partial_echo`); they stay zero on the grid and are
    reconstructed as measured zeros (``readout_range`` marks one row range for every line, the
    union), so the run says which lines and rows. ``spans`` ``(acquisition, slice, partition,
    column, calibration_only)`` in acquisition order name them; ``steps`` their
    ``kspace_encode_step_1``. A repeat with a partial echo beside a full one leaves no row
    unsampled and is not named."""
    short, taken, missing = set(), set(), np.zeros(enc_x, bool)
    for key, (_, count, _, (first, last)) in grids.items():
        band = np.zeros(enc_x, bool)
        band[first:last] = True
        lacking = (held[key][0] == 0) & band[None, None, :, None] & (count > 0)[:, :, None, :]
        bad = (count > 0) & is_partial_echo(lacking.sum(axis=2), enc_x)
        taken |= {tuple(map(int, i)) for i in zip(*np.nonzero(count > 0))}
        if bad.any():
            missing |= np.moveaxis(lacking, 2, -1)[bad].any(axis=0)
            short |= {(key,) + tuple(map(int, i)) for i in zip(*np.nonzero(bad))}
    if not short:
        return header
    named = [(a, s, p, c) for a, s, p, c, calib in spans if (calib, s, p, c) in short]
    cols = sorted({int(steps[a]) for a, *_ in named})
    listed = ", ".join(map(str, cols[:8])) + (", ..." if len(cols) > 8 else "")
    where = np.flatnonzero(np.diff(np.r_[0, missing.astype(np.int8), 0]))
    ranges = ", ".join(f"{lo}..{hi - 1}" for lo, hi in zip(where[::2], where[1::2]))
    return header.with_(extra={**header.extra, "short_lines_note": (
        f"{len({k[1:] for k in short})} of {len(taken)} k-space lines ("
        f"{len({k[1] for k in short})} slice(s); idx.kspace_encode_step_1 {listed}; first "
        f"data[{named[0][0]}]) hold fewer readout samples than the others (a partial echo on some "
        f"lines only): their readout rows {ranges} of {enc_x} were never sampled and are "
        "reconstructed as measured zeros")})


def repeat_parts(kspace: np.ndarray, count: np.ndarray, energy: np.ndarray) -> list[tuple]:
    """Per slice of a Cartesian grid ``(slices, z, coils, x, y)`` (averaged; ``count`` /
    ``energy`` ``(slices, z, y)``) with repeated lines: ``(lines, most repeats, sum of a repeat's
    mean energy, sum of the averages' energy)``, what :func:`repeat_note_of` sums (slice by
    slice, so that a volume read whole and one read a slice at a time give the same note)."""
    parts = []
    for s in range(kspace.shape[0]):
        rep = count[s] > 1
        if rep.any():
            lines = np.moveaxis(kspace[s], 3, 1)[rep]
            parts.append((int(rep.sum()), int(count[s][rep].max()),
                          float((energy[s][rep] / count[s][rep]).sum()),
                          float(np.vdot(lines, lines).real)))
    return parts


def repeat_note_of(header: Header, parts: list[tuple], averages: np.ndarray) -> Header:
    """``header`` with ``extra["repeats_note"]`` when readouts acquired several times (averages,
    or repeats under the same counters) disagree by more than :data:`REPEAT_MISMATCH` of their
    energy, from the sums of :func:`repeat_parts` (per slice: lines, most repeats, the sum of a
    repeat's mean energy ``|x|^2``, the sum of the averages' energy): the share is the repeats'
    spread about their average over their mean energy. Averages of one scan differ by noise (a
    few percent); a repeat that is another echo or contrast without its counter, or empty,
    blended into the average without a word (one of two repeats empty: 50 %; two unrelated
    echoes: about 50 %)."""
    if not parts:
        return header
    mean_energy = sum(p[2] for p in parts)
    share = (mean_energy - sum(p[3] for p in parts)) / mean_energy if mean_energy > 0 else 0.0
    if share <= REPEAT_MISMATCH:
        return header
    return header.with_(extra={**header.extra, "repeats_note": (
        f"{sum(p[0] for p in parts)} readouts were acquired up to {max(p[1] for p in parts)} "
        f"times (idx.average "
        f"{np.unique(averages).tolist()}) and their repeats differ by {share:.0%} of their energy "
        "(averages of one scan differ by noise, a few percent): they were averaged anyway; if "
        "they are different echoes, contrasts or a corrupted repeat, the image mixes them")})
