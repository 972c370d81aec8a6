"""Where an ISMRMRD acquisition lies: its ``position`` and ``read_dir`` / ``phase_dir`` /
``slice_dir`` (float32 fields of the binary acquisition header), which give the output's
origin and orientation (:func:`acquisition_geometry`) and the order of its slices along the slice
normal (:func:`slice_order`); shared by the Cartesian and the non-Cartesian readers.

All zero means "not set" (the geometry then stays a placeholder). A NaN or Inf compares false
with every tolerance, so it passed the "set?" tests and reached the exported geometry: a NIfTI
affine of NaN with exit 0, a DICOM export that failed with "value nan is not finite", naming
neither file nor field.
"""

from __future__ import annotations

import numpy as np

from mrirecon.containers import MAX_LENGTH_MM, Header, ImageGeometry
# the tolerances of slice placement, shared with the DICOM reader
from mrirecon.io.slice_placement import (
    NORMAL_ANGLE_TOL,
    ORIENTATION_TOL,
    POSITION_TOL_MM,
    position_tolerance,
)

#: The acquisition-header fields that place the image in the patient.
PLACEMENT_FIELDS = ("position", "read_dir", "phase_dir", "slice_dir")
DIRECTION_FIELDS = ("read_dir", "phase_dir", "slice_dir")


def check_placement(heads: np.ndarray, imaging: np.ndarray, fail) -> None:
    """Refuse NaN or Inf in the placement fields of the imaging acquisitions ``imaging`` of the
    acquisition headers ``heads``; ``fail(field, problem)`` makes the error naming the file."""
    for name in PLACEMENT_FIELDS:
        values = np.asarray(heads[name][imaging], dtype=np.float64)
        bad = ~np.isfinite(values).all(axis=-1)
        if bad.any():
            first = int(np.argmax(bad))
            raise fail(f"data[{int(imaging[first])}].head.{name}",
                       f"{values[first].tolist()} is not finite ({int(bad.sum())} of "
                       f"{imaging.size} imaging acquisitions): the image's position and "
                       "orientation in the patient would be NaN in the NIfTI and DICOM outputs")
    far = np.abs(np.asarray(heads["position"][imaging], dtype=np.float64)).max(axis=-1) > MAX_LENGTH_MM
    if far.any():  # float32 holds 1e30, the image's geometry refuses it (inf once cast)
        first = int(np.argmax(far))
        raise fail(f"data[{int(imaging[first])}].head.position",
                   f"{np.asarray(heads['position'][imaging][first]).tolist()} mm lies beyond "
                   f"{MAX_LENGTH_MM:g} mm (100 m) from the isocentre ({int(far.sum())} of "
                   f"{imaging.size} imaging acquisitions): no patient position is that far; "
                   "the acquisition headers are corrupt")


def check_orientation(heads: np.ndarray, imaging: np.ndarray, fail) -> None:
    """Refuse imaging acquisitions whose ``read_dir``, ``phase_dir`` or ``slice_dir`` differ from
    the first imaging acquisition's by more than :data:`ORIENTATION_TOL`: the output takes its
    orientation from the first, so a 3-plane localizer or a stack with one slice turned in its
    plane was stacked as one volume of the first slice's orientation (exit 0)."""
    first = int(imaging[0])
    worst = None  # (acquisition, field) of the first acquisition that differs
    for name in DIRECTION_FIELDS:
        values = np.asarray(heads[name][imaging], dtype=np.float64)
        off = np.abs(values - values[0]).max(axis=-1) > ORIENTATION_TOL
        if off.any() and (worst is None or int(np.argmax(off)) < worst[0]):
            worst = (int(np.argmax(off)), name)
    if worst is None:
        return
    k, name = worst
    a = int(imaging[k])
    s_a, s_0 = int(heads["idx"]["slice"][a]), int(heads["idx"]["slice"][first])

    def vec(i):
        return np.round(np.asarray(heads[name][i], np.float64), 4).tolist()

    where = (f"{vec(a)} (idx.slice {s_a}) differs from {vec(first)} of data[{first}] (idx.slice "
             f"{s_0}), the first imaging acquisition, by more than {ORIENTATION_TOL:g}")
    if s_a == s_0:
        raise fail(f"data[{a}].head.{name}",
                   f"{where}: acquisitions of one slice in different orientations (readouts "
                   "turned from one to the next) cannot be placed on one k-space grid")
    raise fail(f"data[{a}].head.{name}",
               f"{where}: slices of different orientation (a 3-plane localizer, a slice turned "
               "in its plane or tilted) are not one volume (it would be written in the first "
               "slice's orientation); reconstruct one slice at a time with --set "
               "load.counters.slice=N (mrirecon run) or counters={'slice': N} (read_ismrmrd)")


def check_slice_indices(slices: np.ndarray, fail, dataset: str) -> None:
    """Refuse ``idx.slice`` values (of the imaging acquisitions) that skip an index below their
    maximum: the missing slice would be an empty slice of the volume (the run failed later on
    "the sampling mask selects no k-space column", naming neither field nor index)."""
    present = np.unique(slices)
    num_slices = int(present.max()) + 1
    if present.size == num_slices:
        return
    missing = sorted(set(range(num_slices)) - {int(v) for v in present})
    listed = ", ".join(map(str, missing[:8])) + (", ..." if len(missing) > 8 else "")
    raise fail(f"{dataset}/data[].idx.slice",
               f"no imaging acquisition has idx.slice {listed} ({len(missing)} of 0.."
               f"{num_slices - 1} missing; found {present.size} slice indices): a volume cannot "
               "have an empty slice; reconstruct the slices there are one at a time with --set "
               "load.counters.slice=N (mrirecon run) or counters={'slice': N} (read_ismrmrd)")


def directions_set(head, fail, acquisition: int | None = None) -> bool:
    """Whether the acquisition header ``head`` (``data[acquisition]``, the first imaging
    acquisition) sets ``read_dir`` and ``phase_dir``: ``False`` when both are all zero (not set:
    the image stays unplaced), ``True`` when they are unit vectors (within 1e-3) at right
    angles (within 1e-3); any other pair is refused with ``fail(field, problem)`` naming them.
    The one check of :func:`acquisition_geometry` and :func:`slice_order`: parallel directions
    had no slice normal ``phase x read`` (0 / 0, "lies nan mm off the slice normal (allowed nan
    mm)" after a numpy "invalid value" warning for 2 slices; 1 slice read as unplaced, no word)."""
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    if not read.any() and not phase.any():
        return False
    where = f"data[{acquisition}].head" if acquisition is not None else "data[].head"
    for name, v in (("read_dir", read), ("phase_dir", phase)):
        length = float(np.linalg.norm(v))
        if abs(length - 1) > 1e-3:
            raise fail(f"{where}.{name}",
                       f"{np.round(v, 4).tolist()} has length {length:.4g}, not 1: direction "
                       "cosines are unit vectors (read_dir and phase_dir both all zero when "
                       "the orientation is not known)")
    cos = float(read @ phase)
    if abs(cos) > 1e-3:
        raise fail(f"{where}.read_dir / phase_dir",
                   f"{np.round(read, 4).tolist()} and {np.round(phase, 4).tolist()} are not "
                   f"orthogonal (cosine {cos:.4g}{', parallel' if abs(cos) > 1 - 1e-3 else ''}):"
                   " they define no slice plane (a broken export?); both all zero when the "
                   "orientation is not known")
    return True


def acquisition_geometry(
    head, header: Header, num_slices: int, positions: dict[int, np.ndarray], partitions: int = 1,
    *, fail, acquisition: int | None = None, centre_index: int | None = None
) -> ImageGeometry:
    """Orientation and origin from the acquisition directions, spacing from the header.

    ``position`` is the centre of a slice, or of a 3-D slab of ``partitions``: partition
    ``centre_index`` (default ``partitions // 2``, the centred FFT's; another after the slab was
    cropped to its recon partitions, :mod:`~mrirecon.io.ismrmrd_slab`). The first partition lies
    :func:`partitions_before` partition thicknesses (``header.geometry.spacing[0]``) before it
    along the slice normal.

    Directions all zero leave the header's placeholder geometry; directions set but not
    orthonormal are refused (:func:`directions_set`; ``fail``, ``acquisition`` as there).
    """
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    base = header.geometry
    if not directions_set(head, fail, acquisition):
        return base
    spacing = list(base.spacing)
    normal = np.cross(phase, read)
    if partitions == 1 and num_slices > 1 and 0 in positions and 1 in positions:
        # along the slice normal: an in-plane offset between slices is no slice spacing
        # (slice_order refuses one beyond rounding)
        gap = abs(float((positions[1] - positions[0]) @ normal)) / float(np.linalg.norm(normal))
        if gap > 0:
            spacing[0] = gap
    rows, cols = header.fov_centre  # the recon-grid voxel at ``position``
    centre = positions.get(0, np.asarray(head["position"], float))
    origin = (centre - rows * spacing[1] * read - cols * spacing[2] * phase
              - partitions_before(head, partitions, centre_index) * spacing[0] * normal
              / np.linalg.norm(normal))
    try:  # positions within bounds may still place the image beyond any (a 180 m slice gap)
        return ImageGeometry(
            spacing=tuple(spacing), origin=tuple(origin),
            orientation=tuple(phase) + tuple(read), slice_thickness=base.slice_thickness,
        )
    except ValueError as err:
        where = f"data[{acquisition}]" if acquisition is not None else "data[]"
        raise fail(f"{where}.head.position", f"the slices' positions give {err}") from None


def gap_known(header: Header, geometry: ImageGeometry) -> Header:
    """``header`` without ``z`` in ``extra["fov_unknown_axes"]`` when ``geometry`` (from
    :func:`acquisition_geometry`) took its slice spacing from the slice positions, not the FOV's 1 mm."""
    unknown = header.extra.get("fov_unknown_axes", ())
    if "z" not in unknown or geometry.spacing[0] == header.geometry.spacing[0]:
        return header
    return header.with_(extra={**header.extra,
                               "fov_unknown_axes": tuple(a for a in unknown if a != "z")})


def partitions_before(head, partitions: int, centre_index: int | None = None) -> int:
    """How many partitions of a slab lie before its centre (``position``) along the slice normal
    once the output is in normal order: ``centre_index`` (the index of the partition at
    ``position`` in acquisition order; default ``partitions // 2``), or ``partitions - 1 -
    centre_index`` when the partitions were reversed (:func:`partitions_reversed`)."""
    c = partitions // 2 if centre_index is None else int(centre_index)
    return partitions - 1 - c if partitions_reversed(head) else c


def partitions_reversed(head) -> bool:
    """Whether the acquisition's ``slice_dir`` (the direction of increasing partition index after
    the FFT along ``kspace_encode_step_2``) points against ``phase_dir x read_dir``, the slice
    normal of :class:`~mrirecon.containers.ImageGeometry` (then the partitions are reversed)."""
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    slice_dir = np.asarray(head["slice_dir"], float)
    if abs(np.linalg.norm(slice_dir) - 1) > 1e-3:
        return False  # not set
    return float(slice_dir @ np.cross(phase, read)) < 0


def slice_order(head, positions: dict[int, np.ndarray], num_slices: int, fail,
                 dataset: str, partitions: int = 1, thickness: float = 0.0,
                 sources: dict[int, int] | None = None, acquisition: int | None = None,
                 centre_index: int | None = None) -> np.ndarray | None:
    """The permutation that puts the slices in order along the slice normal (``phase x read``
    of the first imaging acquisition), or ``None`` when they already are (or positions or
    directions are not set). Slices stored in descending or interleaved index order were
    written mirrored or at wrong positions. Unevenly spaced or coincident slices cannot be one
    volume: refused.

    3-D slabs of ``partitions`` partitions ``thickness`` mm apart (``positions`` are their
    centres, partition ``centre_index`` as in :func:`acquisition_geometry`): the rule holds for
    every partition, placed as :func:`acquisition_geometry` places it, so
    slabs must be contiguous; overlapping or gapped ones are refused naming the overlap or gap
    (they were stacked as if contiguous: every slab after the first off by the sum of them).

    Coinciding positions that are not all zero (not set), and slices off the line along the
    normal through the first (:func:`off_normal`) are refused too; ``sources`` maps a slice
    to the acquisition its position came from, for the error message. Directions set but not
    orthonormal are refused (:func:`directions_set`, ``head`` being ``data[acquisition]``)."""
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    if not directions_set(head, fail, acquisition) or num_slices < 2 \
            or len(positions) != num_slices:
        return None
    normal = np.cross(phase, read)
    normal = normal / np.linalg.norm(normal)
    points = np.array([positions[s] for s in range(num_slices)], dtype=np.float64)
    if not points.any():
        return None  # positions not set (all zero): the header's spacing stands
    along = points @ normal
    order = np.argsort(along, kind="stable")
    what = "slabs" if partitions > 1 else "slices"
    if np.ptp(along) <= POSITION_TOL_MM:  # the same place: a series mislabelled as slices?
        raise fail(f"{dataset}/data[].head.position",
                   f"the {num_slices} {what} (idx.slice 0..{num_slices - 1}) all lie at "
                   f"{along[0]:.3f} mm along the slice normal: coinciding {what} are not one "
                   "volume (repetitions or echoes labelled as slices?); reconstruct one at a "
                   "time with --set load.counters.slice=N (mrirecon run) or counters={'slice': "
                   "N} (read_ismrmrd)")
    offsets = (np.arange(partitions) - partitions_before(head, partitions, centre_index)) \
        * thickness
    gaps = np.diff((along[order][:, None] + offsets).ravel())  # every output slice, in order
    # Even spacing is judged otherwise than for DICOM (dicom_read._check_spacing, a bound from
    # the decimal rounding of ImagePositionPatient): these positions are float32 with no decimal
    # rounding to bound, and with slabs the gaps include partition offsets made from the
    # header's slice thickness, so the gaps are compared with one another: a spread of 1 % of
    # the mean gap.
    if gaps.min() <= 0 or gaps.max() - gaps.min() > 0.01 * gaps.mean():
        if partitions > 1:
            raise fail(f"{dataset}/data[].idx.slice / head.position",
                       slab_problem(along, order, partitions, thickness))
        raise fail(f"{dataset}/data[].head.position",
                   f"the {num_slices} slices lie at {np.round(along[order], 3).tolist()} mm along "
                   "the slice normal: not evenly spaced (or coinciding); one volume needs one "
                   "slice spacing")
    off_normal(points, along, order, normal, gaps.mean(), fail, dataset, sources)
    return None if (order == np.arange(num_slices)).all() else order


def off_normal(points: np.ndarray, along: np.ndarray, order: np.ndarray, normal: np.ndarray,
               spacing: float, fail, dataset: str, sources: dict[int, int] | None = None) -> None:
    """Refuse slice centres ``points`` ``(slices, 3)`` that leave the line along the unit
    ``normal`` through the first slice (in position ``order``) by more than rounding, as the
    DICOM reader refuses them (``dicom_read._check_spacing``): the volume is placed from the
    first slice and stacked along the normal, so a slice shifted in its plane was exported where
    it is not, and its offset taken into the slice spacing (a 10 mm shift per 5 mm slice gave
    11.2 mm slices).

    float32 positions are rounded to ``q = 2**-23 |p|``; as for DICOM a position may be off
    the line by :func:`~mrirecon.io.slice_placement.position_tolerance` of the spacing and ``q``
    (``2 sqrt(3) q``, at least ``POSITION_TOL_MM`` or 1e-3 of the spacing and at most a quarter
    of it), plus :data:`NORMAL_ANGLE_TOL` times its distance from the first slice."""
    quantum = float(np.abs(points).max()) * 2.0 ** -23
    tol = position_tolerance(spacing, quantum)
    first = int(order[0])
    distance = along - along[first]
    drift = np.linalg.norm(points - points[first] - distance[:, None] * normal, axis=1)
    excess = drift - (tol + NORMAL_ANGLE_TOL * np.abs(distance))
    if excess.max() <= 0:
        return
    s = int(np.argmax(excess))
    field = f"data[{sources[s]}].head.position" if sources and s in sources else \
        f"{dataset}/data[].head.position"
    raise fail(field, f"idx.slice {s} at {np.round(points[s], 3).tolist()} lies {drift[s]:.3f} "
               f"mm off the slice normal through idx.slice {first} at "
               f"{np.round(points[first], 3).tolist()} "
               f"(allowed {tol + NORMAL_ANGLE_TOL * abs(distance[s]):.3g} mm): slices shifted in "
               "their plane are not one volume (stacked along the normal, they would be exported "
               "where they are not); reconstruct one at a time with --set load.counters.slice=N "
               "(mrirecon run) or counters={'slice': N} (read_ismrmrd)")


def slab_problem(along: np.ndarray, order: np.ndarray, partitions: int, thickness: float) -> str:
    """Which neighbouring slabs overlap or leave a gap, by how many mm, and what to do."""
    slab = partitions * thickness
    junctions = [(int(a), int(b), float(step - slab))
                 for a, b, step in zip(order[:-1], order[1:], np.diff(along[order]))]
    worst = max(abs(off) for _, _, off in junctions)
    named = [f"idx.slice {a} and {b} {'overlap by' if off < 0 else 'leave a gap of'} "
             f"{abs(off):.3f} mm ({abs(off) / thickness:.3g} "
             f"partition{'' if abs(off) == thickness else 's'})"
             for a, b, off in junctions if abs(off) > min(0.005 * thickness, worst / 2)]
    centres = ", ".join(f"{along[s]:.3f} (idx.slice {int(s)})" for s in order)
    return (f"the {len(order)} slabs of {partitions} partitions x {thickness:g} mm = {slab:g} mm "
            f"have their centres at {centres} mm along the slice normal: "
            + "; ".join(named[:4]) + (f"; ... ({len(named)} junctions)" if len(named) > 4 else "")
            + f". One volume needs contiguous slabs, {slab:g} mm apart (an overlap or a gap has "
            "no place on one slice grid); reconstruct one slab at a time with --set "
            "load.counters.slice=N (mrirecon run) or counters={'slice': N} (read_ismrmrd)")
