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

from mrirecon.containers import Header, ImageGeometry

#: The acquisition-header fields that place the image in the patient.
PLACEMENT_FIELDS = ("position", "read_dir", "phase_dir", "slice_dir")


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


def acquisition_geometry(
    head, header: Header, num_slices: int, positions: dict[int, np.ndarray], partitions: int = 1
) -> ImageGeometry:
    """Orientation and origin from the acquisition directions, spacing from the header.

    ``position`` is the centre of a slice, or of a 3-D slab of ``partitions``: partition
    ``partitions // 2`` after the centred FFT. The first partition lies ``partitions // 2``
    partition thicknesses before it along the slice normal, or ``partitions - 1 -
    partitions // 2`` when the partitions were reversed (:func:`partitions_reversed`).
    """
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    base = header.geometry
    if abs(np.linalg.norm(read) - 1) > 1e-3 or abs(np.linalg.norm(phase) - 1) > 1e-3 \
            or abs(read @ phase) > 1e-3:
        return base  # directions not set
    spacing = list(base.spacing)
    if partitions == 1 and num_slices > 1 and 0 in positions and 1 in positions:
        gap = float(np.linalg.norm(positions[1] - positions[0]))
        if gap > 0:
            spacing[0] = gap
    rows, cols = header.recon_matrix[0], header.recon_matrix[1]
    centre = positions.get(0, np.asarray(head["position"], float))
    normal = np.cross(phase, read)
    origin = (centre - (rows // 2) * spacing[1] * read - (cols // 2) * spacing[2] * phase
              - partitions_before(head, partitions) * spacing[0] * normal / np.linalg.norm(normal))
    return ImageGeometry(
        spacing=tuple(spacing), origin=tuple(origin),
        orientation=tuple(phase) + tuple(read), slice_thickness=base.slice_thickness,
    )


def gap_known(header: Header, geometry: ImageGeometry) -> Header:
    """``header`` without ``z`` in ``extra["fov_unknown_axes"]`` when ``geometry`` (from
    :func:`acquisition_geometry`) took its slice spacing from the slice positions, not the FOV's 1 mm."""
    unknown = header.extra.get("fov_unknown_axes", ())
    if "z" not in unknown or geometry.spacing[0] == header.geometry.spacing[0]:
        return header
    return header.with_(extra={**header.extra,
                               "fov_unknown_axes": tuple(a for a in unknown if a != "z")})


def partitions_before(head, partitions: int) -> int:
    """How many partitions of a slab lie before its centre (``position``) along the slice normal
    once the output is in normal order: ``partitions // 2``, or ``partitions - 1 - partitions //
    2`` when the partitions were reversed (:func:`partitions_reversed`)."""
    return partitions - 1 - partitions // 2 if partitions_reversed(head) else partitions // 2


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
                 dataset: str, partitions: int = 1, thickness: float = 0.0) -> np.ndarray | None:
    """The permutation that puts the slices in order along the slice normal (``phase x read``
    of the first imaging acquisition), or ``None`` when they already are (or positions or
    directions are not set). Slices stored in descending or interleaved index order were
    written mirrored or at wrong positions. Unevenly spaced or coincident slices cannot be one
    volume: refused.

    3-D slabs of ``partitions`` partitions ``thickness`` mm apart (``positions`` are their
    centres): the rule holds for every partition, placed as :func:`acquisition_geometry` places it, so
    slabs must be contiguous; overlapping or gapped ones are refused naming the overlap or gap
    (they were stacked as if contiguous: every slab after the first off by the sum of them)."""
    read, phase = np.asarray(head["read_dir"], float), np.asarray(head["phase_dir"], float)
    if num_slices < 2 or len(positions) != num_slices or abs(np.linalg.norm(read) - 1) > 1e-3:
        return None
    normal = np.cross(phase, read)
    along = np.array([float(positions[s] @ normal) for s in range(num_slices)])
    if np.ptp(along) == 0:
        return None  # positions not set: the header's spacing stands
    order = np.argsort(along, kind="stable")
    offsets = (np.arange(partitions) - partitions_before(head, partitions)) * thickness
    gaps = np.diff((along[order][:, None] + offsets).ravel())  # every output slice, in order
    if gaps.min() <= 0 or gaps.max() - gaps.min() > 0.01 * gaps.mean():
        if partitions > 1:
            raise fail(f"{dataset}/data[].idx.slice / head.position",
                       slab_problem(along, order, partitions, thickness))
        raise fail(f"{dataset}/data[].head.position",
                   f"the {num_slices} slices lie at {np.round(along[order], 3).tolist()} mm along "
                   "the slice normal: not evenly spaced (or coinciding); one volume needs one "
                   "slice spacing")
    return None if (order == np.arange(num_slices)).all() else order


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
