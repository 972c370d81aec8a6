"""Does a reference describe the image it is compared with? Orientation and slice order.

A reference (fastMRI ``reconstruction_rss``, LoDoPaB ``ground_truth_*``) stored in another layout
or slice order is compared as read: metrics drop to a few dB with exit 0 (``mrirecon run`` and
``bench`` report it, :mod:`mrirecon.pipeline.reference_checks`), and training learns to map the
data to a rotated or reordered image (the training data sets refuse it,
:func:`mrirecon.training.data_ct.check_ct_reference_orientation`). Here, below both, so that
training (which never imports ``pipeline``) applies the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor

#: A reference whose best-matching flip / rotation / shift correlates with the compared image
#: this much better than the reference as read is reported (correct ones: the identity wins by
#: far) ...
ORIENTATION_MARGIN = 0.2
#: ... or, gaining more than :data:`ORIENTATION_GAIN_FLOOR`, leaves at most this fraction of the
#: residual ``1 - correlation`` of the reference as read: a near-perfect match of a nearly
#: symmetric object (k-space reversed along the readout of a coronal brain: 1.000 flipped
#: up-down and shifted 1 row against 0.807 as read, a gain of 0.193 only: 14.5 dB, no word).
#: Measured on correct volumes, every transform :func:`orientation_note` tries (flips, rotations,
#: 1-pixel shifts, half-FOV rolls), the best one against the reference as read: the shipped demo
#: data (2 brain slices 128 x 128, 5 MRI pipelines at 4x: 0.975-0.999 as read, best gain -0.033,
#: residual ratio 2.3 or more; LoDoPaB-geometry CT, FBP of 30 / 100 views and the 2 learned CT
#: pipelines: gains -0.001 to -0.005, ratios 1.01 or more, a 1-pixel shift of a smooth image
#: scoring nearly as the identity); 126 simulated brains (axial, coronal, sagittal; 2-8 slices of
#: 64 x 48 to 320 x 320; SNR 5-30 dB; fully sampled, zero-filled 4x / 8x: 0.66-1.00 as read):
#: largest gain +0.005, smallest ratio 0.98; 120 symmetric phantoms (Shepp-Logan, an ellipse,
#: a ring, a square centred on the FFT centre, a disk on the pixel centre, whose flips match
#: almost as the identity; 128 x 128, 96 x 80, 63 x 63, 8 coils, two noise levels, zero-filled
#: up to 8x with a 2 % centre: down to 0.30 as read): largest gain +0.083 (a rotation of a
#: centred ellipse at 8x, 0.63 against 0.54), smallest ratio 0.82. None reported.
ORIENTATION_RESIDUAL = 0.5
#: ... a gain the relative rule needs besides: the ratio of two small residuals (outputs that
#: correlate 0.99 or more as read) does not decide alone. Not what held correct volumes back
#: above (their ratios stayed at 0.82 or more); the mistaken k-space of simulated brains that
#: the relative rule names gained 0.07 or more (zero-filled 4x, reversed along the readout of a
#: coronal brain: 0.94 flipped against 0.82 as read, ratio 0.33).
ORIENTATION_GAIN_FLOOR = 0.05
#: ... and correlates with it at least this much (a transform that anti-correlates less than
#: the reference as read matches nothing).
ORIENTATION_MATCH = 0.2
#: A correlation as read at or below minus this, with no flip or rotation matching, is reported
#: as an inverted image (pre-log CT transmission data: -0.85 to -0.91).
INVERTED_CORRELATION = 0.5
#: The 7 transforms ``t`` of :func:`mrirecon.models.common.dihedral` other than the identity
DIHEDRAL_NAMES = {1: "flipped up-down", 2: "flipped left-right", 3: "rotated 180 degrees",
                  4: "transposed", 5: "rotated 90 degrees", 6: "rotated 270 degrees",
                  7: "transposed and rotated 180 degrees"}
#: What a CT sinogram stored otherwise does to its image, for a reference that matches the FBP
#: of the data transformed (the ``causes`` of :func:`orientation_note` for CT): parallel-beam
#: views over a half turn with the detector reversed are those of the object rotated 180
#: degrees; views in reverse angle order (a -> -a) those of its mirror image; angles offset by
#: a constant (a start angle not recorded) those of the object rotated the other way
#: (``training.ct_reference_geometry`` fits the offset where a reference exists, and names these
#: rotations of the ground truth too).
CT_DATA_CAUSES = {
    "rotated 180 degrees": "; or is the sinogram's detector axis reversed, or are its angles "
                           "offset by 180 degrees (the start angle of the scan not recorded; the "
                           "output is then rotated 180 degrees)",
    "rotated 90 degrees": "; or are the sinogram's angles offset by about -90 degrees (the start "
                          "angle of the scan not recorded; the output is then rotated)",
    "rotated 270 degrees": "; or are the sinogram's angles offset by about +90 degrees (the start "
                           "angle of the scan not recorded; the output is then rotated)",
    **dict.fromkeys(("flipped up-down", "flipped left-right", "transposed",
                     "transposed and rotated 180 degrees"),
                    "; or are the views in reverse angle order (the output is then mirrored)"),
}


#: One pixel either way along the rows and the columns (the first is none): each transform of
#: :data:`DIHEDRAL_NAMES` and the identity are also tried shifted by one of these. An MRI image
#: made with another FFT convention is one: k-space made with the opposite sign (``ifft2`` as
#: the forward transform) gives the image rotated 180 degrees about pixel N / 2 instead of
#: (N - 1) / 2, i.e. rotated and shifted 1 pixel along each even axis; centring with
#: ``fftshift`` before the FFT (MATLAB ``fftshift(fft2(fftshift(x)))``) instead of
#: ``ifftshift`` shifts it 1 pixel along each odd axis. About the centre pixel alone, the rotated
#: reference of the first scored 0.78 against 0.71 as read (the margin is 0.2): 16.5 dB, no word.
SHIFTS = tuple((dr, dc) for dr in (0, 1, -1) for dc in (0, 1, -1))
#: The key of :data:`MRI_DATA_CAUSES` (and the name) of the identity rolled by half the field
#: of view (:func:`half_fov_rolls`).
HALF_FOV = "rolled by half the field of view"


def half_fov_rolls(rows: int, cols: int) -> tuple[tuple[int, int], ...]:
    """The rolls ``(dr, dc)`` by half the field of view tried on the identity: ``N // 2`` along
    either axis or both, and ``(N + 1) // 2`` too along an odd axis (``fftshift`` rolls an odd
    axis by ``N // 2``, ``ifftshift`` by ``(N + 1) // 2``: a centring shift missing, or applied
    once too often, leaves either). An MRI image of k-space made as ``fftshift(fft2(image))``,
    without the ``ifftshift`` (k-space times ``(-1) ** (row + col)`` on even sizes), is the object
    rolled by ``(H // 2, W // 2)``, quadrants swapped; one axis only, rolled along that one.
    3 rolls on an even matrix, 8 on an odd one."""
    along_rows = sorted({0, rows // 2, (rows + 1) // 2})
    along_cols = sorted({0, cols // 2, (cols + 1) // 2})
    return tuple((r, c) for r in along_rows for c in along_cols if (r, c) != (0, 0))


#: What an MRI k-space made with another FFT convention does to its image, for a reference
#: that matches it transformed (the default ``causes`` of :func:`orientation_note`; keys:
#: :data:`DIHEDRAL_NAMES` values, shifted or not, ``"shifted"`` for the identity shifted 1 pixel
#: and :data:`HALF_FOV` for it rolled by half the field of view).
MRI_DATA_CAUSES = {
    "rotated 180 degrees": "; or was the MRI k-space made with the opposite FFT sign convention "
                           "(the forward transform is fft2, not ifft2: the image comes out rotated "
                           "180 degrees, and 1 pixel off along even axes; conjugate the k-space, "
                           "or make it with fft2)",
    "flipped up-down": "; or is the MRI k-space reversed along its rows (the readout: the image "
                       "comes out flipped up-down, and 1 pixel off on an even number of rows)",
    "flipped left-right": "; or is the MRI k-space reversed along its columns (the phase "
                          "encoding: the image comes out flipped left-right, and 1 pixel off on an "
                          "even number of columns)",
    "shifted": "; or was the MRI k-space centred with fftshift / ifftshift in the wrong order on "
               "an odd matrix size (the image comes out 1 pixel off along each odd axis; centred "
               "k-space is fftshift(fft2(ifftshift(image))), MATLAB's too, not "
               "fftshift(fft2(fftshift(image))))",
    HALF_FOV: "; or was the MRI k-space made as fftshift(fft2(image)) instead of "
              "fftshift(fft2(ifftshift(image))) (k-space times (-1)^(row + column): the image "
              "comes out rolled by half the field of view, quadrants swapped), or is an "
              "image-domain fftshift missing, or applied once too often (make the k-space "
              "with the ifftshift, or fftshift the image back, along the rolled axes)",
}


def _shift_name(t: int, shift: tuple[int, int]) -> str:
    """``"rotated 180 degrees and shifted 1 pixel (rows +1, columns -1)"``, ``"shifted 1 pixel
    (columns +1)"`` (the identity), ``"rolled by half the field of view (rows 48, columns 40)"``
    (the identity rolled by more than a pixel: :func:`half_fov_rolls`), or the transform's name
    alone (no shift)."""
    base = DIHEDRAL_NAMES.get(t, "")
    if shift == (0, 0):
        return base
    if max(map(abs, shift)) > 1:
        axes = ", ".join(f"{axis} {d}" for axis, d in zip(("rows", "columns"), shift) if d)
        return f"{HALF_FOV} ({axes})"
    axes = ", ".join(f"{axis} {d:+d}" for axis, d in zip(("rows", "columns"), shift) if d)
    return f"{base + ' and ' if base else ''}shifted 1 pixel ({axes})"


#: Elements per chunk of slices of the correlations (2 MiB in float64; a few such temporaries are
#: alive at once): they do not grow with the volume (the evaluated volume of every ``mrirecon
#: run``), and the chunk loop costs nothing measurable next to the sums.
CHUNK_ELEMENTS = 1 << 18


def _slice_chunks(reference: Tensor, image: Tensor):
    """``(reference, image)`` views, a chunk of slices (the first axis) at a time; the last two
    axes (rows, columns) are never cut, so a flip, rotation or shift of a chunk is the chunk of
    the transformed volume. A 2-D image is one chunk."""
    if reference.ndim == 2:
        yield reference, image
        return
    rows = max(1, CHUNK_ELEMENTS // max(1, reference[0].numel()))
    for i in range(0, reference.shape[0], rows):
        yield reference[i : i + rows], image[i : i + rows]


def _correlations(reference: Tensor, image: Tensor, transforms) -> dict:
    """``{key: correlation of the transformed reference with image}`` over the whole volumes
    (Pearson, float64; 0 where either is constant), summed a chunk of slices at a time
    (:func:`_slice_chunks`): the float64 temporaries are a few chunks, not whole-volume copies.
    A key is ``t`` (:func:`mrirecon.models.common.dihedral` ``(reference, t)``) or ``(t, dr,
    dc)``: that rolled by ``dr`` rows and ``dc`` columns (``torch.roll``, circular). A flip,
    rotation or roll permutes the values, so the reference's mean and norm are those of every
    transform."""
    import torch

    from mrirecon.models.common import dihedral

    keys = {k: (k, 0, 0) if isinstance(k, int) else tuple(k) for k in transforms}
    shifts = sorted({(dr, dc) for _, dr, dc in keys.values()})
    n = reference.numel()
    mean_a = mean_b = 0.0
    for a, b in _slice_chunks(reference, image):
        mean_a += float(a.detach().double().sum())
        mean_b += float(b.detach().double().sum())
    mean_a, mean_b = mean_a / n, mean_b / n
    aa = bb = 0.0
    ab = dict.fromkeys(keys, 0.0)
    for a, b in _slice_chunks(reference, image):
        a = a.detach().double().sub_(mean_a)
        b = b.detach().double().sub_(mean_b)
        aa += float(torch.dot(a.reshape(-1), a.reshape(-1)))
        bb += float(torch.dot(b.reshape(-1), b.reshape(-1)))
        for dr, dc in shifts:  # roll(T a, s) . b == T a . roll(b, -s): one rolled chunk alive
            rolled = b.roll((-dr, -dc), (-2, -1)).reshape(-1) if (dr, dc) != (0, 0) else b.reshape(-1)
            for k, (t, r, c) in keys.items():
                if (r, c) == (dr, dc):
                    ab[k] += float(torch.dot(dihedral(a, t).contiguous().reshape(-1), rolled))
            del rolled
    den = (aa * bb) ** 0.5
    return {k: ab[k] / den if den > 0 else 0.0 for k in keys}


def orientation_note(reference: Tensor, image: Tensor, against: str, hint: str = "", *,
                     consequence: str = "The metrics compare against it as read",
                     causes: Mapping[str, str] = MRI_DATA_CAUSES) -> str | None:
    """A message when a flip / rotation of ``reference``, or it shifted by one pixel, flipped or
    not (:data:`SHIFTS`), or it rolled by half the field of view (:func:`half_fov_rolls`),
    matches ``image`` (same shape, the last two axes are rows and columns; leading axes are
    slices) far better than the reference as read (and correlates positively with it): by
    :data:`ORIENTATION_MARGIN`, or leaving at most :data:`ORIENTATION_RESIDUAL` of the residual
    as read (``1 - correlation``) while gaining more than :data:`ORIENTATION_GAIN_FLOOR`, and
    better than the reference's negative; or when ``image`` looks inverted (strongly
    anti-correlated as read, no transform matching it better than the negative), else
    ``None``. Non-square images try the flips only (a transpose changes the shape).
    ``against`` names ``image`` in the message; ``hint`` is appended to the
    layout question, then ``causes[name]`` of the matching transform's name
    (:data:`DIHEDRAL_NAMES`, shifted or not; ``"shifted"``: the identity shifted 1 pixel;
    :data:`HALF_FOV`: it rolled by half the field of view): another cause
    than the reference's layout (MRI, the default: :data:`MRI_DATA_CAUSES`, the FFT sign and
    centring conventions; CT: :data:`CT_DATA_CAUSES`); ``consequence`` ends the message (what the
    caller does with a reference as read)."""
    if reference.shape != image.shape or reference.ndim < 2:
        return None
    square = reference.shape[-1] == reference.shape[-2]
    keys = [(t, *s) for t in (0, *(t for t in DIHEDRAL_NAMES if square or t < 4)) for s in SHIFTS]
    halves = [(0, *s) for s in half_fov_rolls(*reference.shape[-2:])]
    scores = _correlations(reference, image, keys + halves)
    as_read = scores.pop((0, 0, 0))
    best = max(scores, key=scores.__getitem__)
    name = _shift_name(best[0], best[1:])
    cause = causes.get(HALF_FOV if best in halves and max(map(abs, best[1:])) > 1
                       else DIHEDRAL_NAMES.get(best[0], "shifted"), "")
    gain = scores[best] - as_read
    # a transform is named only where it matches: a positive correlation (pre-log CT
    # transmission data give an image that is the reference's negative, -0.90 as read, and a
    # rotation "matched" at -0.49), and one above the reference's negative (-as_read): the
    # half-FOV roll of a centred object puts its background in the middle, a negative of sorts
    # (0.39 against an exact negative, -1.00 as read)
    negative = -as_read
    if scores[best] >= ORIENTATION_MATCH and scores[best] > negative and (
            gain > ORIENTATION_MARGIN or (gain > ORIENTATION_GAIN_FLOOR and 1 - scores[best]
                                          <= ORIENTATION_RESIDUAL * (1 - as_read))):
        return (f"the reference matches {against} far better {name} (correlation "
                f"{scores[best]:.2f}) than as read ({as_read:.2f}): is it stored in another "
                f"layout{hint}{cause}? {consequence}")
    if as_read <= -INVERTED_CORRELATION and scores[best] <= negative:
        return (f"{against} looks inverted against the reference: their correlation is "
                f"{as_read:.2f} as read, and no flip, rotation or shift of the reference matches "
                f"it as well as its negative does (best {scores[best]:.2f}): was the input "
                "stored as something else "
                "than the method expects (CT: pre-log transmission I / I0 instead of line "
                f"integrals -log(I / I0); a sign flip)? {consequence}")
    return None


#: A reference whose slices, reversed (or in their best one-to-one order), correlate with the
#: output's this much better on average than as stored is reported. Measured with
#: :func:`slice_correlations` (mean over slices of output slice i against reference slice i, as
#: stored, minus against reference slice n-1-i, reversed), on correct volumes: the shipped demo
#: data (4 brain slices 128 x 128, 5 MRI pipelines: +0.42 to +0.69; 3 LoDoPaB-geometry CT
#: slices, 4 pipelines, FBP of 30 views included: +0.49 to +0.64); simulated brains with
#: zero-filled 4x / 8x outputs (8-32 slices 2-5 mm apart, SNR 5-30 dB: +0.33 to +0.70; 2-3
#: slices 2 mm apart: +0.03 to +0.04, where reversing barely changes the volume). No other
#: reference slice ever matched an output slice better than its own (the best order minus as
#: stored: +0.000), nor did a collapsed output (every slice alike) gain from any order. The same
#: volumes with the reference reversed: -0.33 to -0.70 (reported), the 2-3 thin slices -0.04
#: (not reported, nor worth it). Plain thumbnails (no high-pass) separated the demo brains by
#: 0.11 only: neighbouring slices share the head's outline, which dominates their correlation.
SLICE_ORDER_MARGIN = 0.2
#: Slices are compared as thumbnails of at most this many pixels a side (block means): bounded
#: work for a 128-slice LoDoPaB file, and the block means average the noise out.
THUMBNAIL = 64
#: ... minus their local mean over this many thumbnail pixels a side (a high-pass: the anatomy
#: that tells slices apart, not the outline they share).
DETAIL_WINDOW = 5


def slice_correlations(reference: Tensor, output: Tensor) -> Tensor:
    """``(n, n)`` float64: entry ``[i, j]`` is the correlation of output slice ``i`` with
    reference slice ``j`` (``(n, h, w)`` each; magnitudes when complex), compared by their detail:
    thumbnails of at most :data:`THUMBNAIL` pixels a side minus their local mean over
    :data:`DETAIL_WINDOW` pixels; 0 where either slice has none (constant)."""
    import torch
    from torch.nn.functional import adaptive_avg_pool2d, avg_pool2d

    size = (min(reference.shape[-2], THUMBNAIL), min(reference.shape[-1], THUMBNAIL))

    def rows(v: Tensor) -> Tensor:
        v = v.detach().abs() if v.is_complex() else v.detach()
        # block means in the input's precision (float32: no float64 copy of a 128-slice volume)
        t = adaptive_avg_pool2d(v.reshape(-1, 1, *v.shape[-2:]).float(), size).double()
        t = t - avg_pool2d(t, DETAIL_WINDOW, 1, DETAIL_WINDOW // 2, count_include_pad=False)
        t = t.flatten(1)
        t = t - t.mean(1, keepdim=True)
        norm = t.norm(dim=1, keepdim=True)
        return torch.where(norm > 0, t / norm.clamp_min(torch.finfo(t.dtype).tiny), 0.0)

    return rows(output) @ rows(reference).T


def slice_order_note(reference: Tensor, output: Tensor, *, consequence: str = (
        "The metrics compare output slice i with reference slice i as stored")) -> str | None:
    """A message when the slices of ``reference`` (``(n, h, w)``, the shape of ``output``) match
    the output's far better reversed, or each in another place, than as stored, else ``None``
    (also for fewer than 2 slices). The metrics compare slice ``i`` with reference slice ``i``:
    a reversed reference scored about as a bad reconstruction, exit 0 and no word.
    ``consequence`` ends the message (what the caller does with the slices as stored)."""
    if reference.shape != output.shape or reference.ndim != 3 or reference.shape[0] < 2:
        return None
    from scipy.optimize import linear_sum_assignment

    c = slice_correlations(reference, output)
    n = c.shape[0]
    stored = float(c.diagonal().mean())
    # the best one-to-one order (not each slice's best match: an output whose slices all look
    # alike, a collapsed model, matches one reference slice best from every slice)
    _, order = linear_sum_assignment(c.numpy(), maximize=True)
    matched = float(c.numpy()[range(n), order].mean())
    # the better order must itself match (correlate positively): an output that is the
    # reference's negative (pre-log CT data) "matched" reversed at -0.05 against -0.69 as stored
    if not matched > stored + SLICE_ORDER_MARGIN or not matched >= SLICE_ORDER_MARGIN:
        return None
    reversed_ = float(c.flip(1).diagonal().mean())
    # said reversed when reversing gains most of what the best order gains (a shuffled
    # reference's reverse order can beat its stored order by chance, and explains it no better)
    if reversed_ > max(stored + SLICE_ORDER_MARGIN, matched - SLICE_ORDER_MARGIN / 2):
        return (f"the reference slices match the output far better in reverse order (mean "
                f"correlation {reversed_:.2f}) than as stored ({stored:.2f}): are they stored "
                f"last to first? {consequence}")
    moved = [(i, int(j)) for i, j in enumerate(order) if j != i]
    shown = ", ".join(f"{i} -> {j}" for i, j in moved[:8]) + (", ..." if len(moved) > 8 else "")
    return (f"the reference slices match the output far better in another order (mean "
            f"correlation {matched:.2f}) than as stored ({stored:.2f}), output slice -> reference "
            f"slice of {n}: {shown}: are they stored in another order? {consequence}")
