"""DICOM import: a folder holding one series of single-frame MR/CT files -> :class:`Image`.

Slices are sorted by the projection of ImagePositionPatient on the slice normal
(ImageOrientationPatient row x column), so slice index grows along
:attr:`ImageGeometry.slice_direction`. Stored values are rescaled with
RescaleSlope/RescaleIntercept; CT series come back with ``kind="hu"`` when RescaleType is
``HU`` (or absent), else ``"attenuation"``.

Which files are slices: :mod:`mrirecon.io.dicom_files` (bare data sets are read; an empty or
cut-off file fails the series). The stored words: :mod:`mrirecon.io.dicom_pixels` (CT padding
read as air, bits above HighBit, lossy compression). What they mean:
:mod:`mrirecon.io.dicom_values` (colour, MR phase / real / imaginary images and lookup-table
Real World Value Mappings are refused). CT localizers (ImageType value 3
``LOCALIZER``) are left out with a warning, or refused when nothing else is there. What the
reader says without failing is a :class:`~mrirecon.io.errors.DataWarning` or
:class:`~mrirecon.io.errors.DataNote` (:func:`read_dicom_series_and_messages` returns them
for a run's record).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from mrirecon.containers import Image, ImageGeometry
from mrirecon.io.dicom_files import (acquisition_mismatch, check_subfolders, is_candidate,
                                     localizer, localizer_problem, looks_like_dicom,
                                     not_a_series_folder, read_candidate, refuse_projection_data,
                                     single_slice_spacing, uid_as_written)
from mrirecon.io.dicom_pixels import (
    PixelFacts,
    decode,
    lossy_compression,
    padding_as_air,
    warn_high_bits,
)
from mrirecon.io.dicom_values import (check_magnitude, check_photometric, real_world_scale,
                                      same_position_reason)
from mrirecon.io.errors import (DataFormatError, DataNote, DataWarning, collect_data_warnings,
                                refuse_oversized, warn_data)
from mrirecon.io.slice_placement import (DICOM_GEOMETRY_FIELDS, NORMAL_ANGLE_TOL, ORIENTATION_TOL,
                                         POSITION_TOL_MM, position_tolerance)

__all__ = ["looks_like_dicom", "read_dicom_series", "read_dicom_series_and_header",
           "read_dicom_series_and_messages"]

# Direction cosines written to 3 decimals are each off by up to 5e-4: a unit vector's norm by up
# to sqrt(3) * 5e-4 = 8.7e-4, the dot product of the two by up to 2 * sqrt(3) * 5e-4 = 1.7e-3.
# Within these bounds the cosines are made orthonormal (each moves by < 1e-3 rad: 0.25 mm at
# 250 mm from the origin); beyond them the orientation is refused.
_IOP_NORM_TOL = 1e-3
_IOP_DOT_TOL = 2e-3
# Rounded that way, the normal is up to NORMAL_ANGLE_TOL off (slice_placement). Cosines
# orthonormal to 1e-6 are taken as written in full.
# ImagePositionPatient is a DS (16 characters at most) and scanners round it: to 0.01 mm, or to
# 6 significant digits (a step of at most 1e-5 * |coordinate|). See _check_spacing.
_POSITION_QUANTUM_MM = 0.01
_PIXEL_DATA = 0x7FE00010
_POSITION_DIGITS_REL = 1e-5


def _required(ds: Dataset, path: Path, keyword: str):
    try:
        value = ds[keyword].value if keyword in ds else None
    except Exception as err:  # noqa: BLE001 - a malformed element fails on access
        raise DataFormatError(path, keyword, f"unreadable element ({err})") from None
    if value is None or (isinstance(value, (str, bytes)) and not value):
        raise DataFormatError(path, keyword, "missing")
    return value


def _int(ds: Dataset, path: Path, keyword: str) -> int:
    value = _required(ds, path, keyword)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, keyword, f"expected an integer, got {value!r}") from None


def _floats(ds: Dataset, path: Path, keyword: str, count: int) -> np.ndarray:
    value = _required(ds, path, keyword)
    try:
        values = np.atleast_1d(np.asarray([float(v) for v in np.atleast_1d(value)]))
    except (TypeError, ValueError):
        raise DataFormatError(path, keyword, f"expected {count} numbers, got {value!r}") from None
    if values.size != count:
        raise DataFormatError(path, keyword, f"has {values.size} values, expected {count}")
    if not np.isfinite(values).all():
        raise DataFormatError(path, keyword, f"non-finite values {values.tolist()}")
    return values


def _positive(ds: Dataset, keyword: str) -> float | None:
    """An optional positive length (SliceThickness, SpacingBetweenSlices); ``None`` when absent
    or not a finite positive number (it is then not used)."""
    try:
        value = float(ds.get(keyword, None))
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _rescale(ds: Dataset, path: Path, keyword: str, ct: bool) -> float | None:
    """RescaleSlope or RescaleIntercept as a finite number; ``None`` when absent (or, outside
    CT, present without a value: the MR IOD does not define a Modality LUT). Both are type 1
    in the CT Image Module, so an empty value there is an error, never a default: an empty
    intercept read as 0 put air at +24 HU. A slope of 0 is refused for every modality."""
    if keyword not in ds:
        return None
    try:
        value = ds[keyword].value
    except Exception as err:  # noqa: BLE001 - a malformed element fails on access
        raise DataFormatError(path, keyword, f"unreadable element ({err})") from None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        if ct:
            raise DataFormatError(path, keyword,
                                  "empty: type 1 in the CT Image Module; a default in its place "
                                  "gives wrong Hounsfield units (an empty RescaleIntercept read "
                                  "as 0 put air at +24 HU)")
        return None
    number = float(_floats(ds, path, keyword, 1)[0])
    if keyword == "RescaleSlope" and number == 0:
        raise DataFormatError(path, keyword, "is 0, not a valid slope: every pixel would map to "
                                             "RescaleIntercept")
    return number


def _text(value) -> str:
    """A string element's value as one string: several values (``T1\\T2`` in an element of
    VM 1) joined by the delimiter again, not shown as a Python list."""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


def _candidate_files(folder: Path) -> list[Path]:
    if not folder.is_dir():  # a slice file: "is one DICOM slice; pass the folder of its series"
        raise not_a_series_folder(folder)
    return sorted(p for p in folder.iterdir() if is_candidate(p))


def _read_headers(folder: Path) -> list[tuple[Path, Dataset]]:
    """Parse every candidate file (:func:`mrirecon.io.dicom_files.read_candidate`). A file that
    is clearly not DICOM (text such as a README, a known other format) is ignored; any other
    file that cannot be read as a data set with a SOPClassUID (empty, truncated, corrupt)
    makes the whole series an error: reconstructing the remaining slices would silently lose
    data. Bare data sets (no preamble and ``DICM`` prefix) are read."""
    candidates = _candidate_files(folder)
    found, broken = [], []
    for path in candidates:
        ds, why = read_candidate(path)
        if why is not None:
            broken.append((path, why))
        elif ds is not None:
            found.append((path, ds))
    if broken:
        path, why = broken[0]
        raise DataFormatError(
            folder, "<series>",
            f"{len(broken)} of {len(candidates)} files are unreadable (first: {path.name}: "
            f"{why}); fix or remove them: the series would be reconstructed with slices missing")
    if not found:
        if candidates:
            raise DataFormatError(folder, "<series>",
                                  f"no DICOM image files among its {len(candidates)} files")
        raise FileNotFoundError(f"read_dicom_series: no DICOM image files in {folder}")
    return found


def _select_series(
    found: list[tuple[Path, Dataset]], folder: Path, series_uid: str | None
) -> list[tuple[Path, Dataset]]:
    """The files of one series; CT localizers are left out with a warning naming them (a lone
    localizer, or a series of them only, is refused)."""
    scouts = [(path, ds) for path, ds in found if localizer(ds)]
    if scouts and series_uid is None:
        if len(scouts) == len(found):
            path, ds = scouts[0]
            raise DataFormatError(path, "ImageType", localizer_problem(ds) + (
                f" (nor can the other {len(scouts) - 1} localizer(s))" if len(scouts) > 1 else "")
                + "; pass the folder of the axial series")
        found = [item for item in found if not localizer(item[1])]
    items = _one_series(found, folder, series_uid)
    if series_uid is not None:
        scouts = [item for item in items if localizer(item[1])]
        if len(scouts) == len(items):
            raise DataFormatError(scouts[0][0], "ImageType", localizer_problem(scouts[0][1]))
        items = [item for item in items if not localizer(item[1])]
    if scouts:
        names = ", ".join(p.name for p, _ in scouts[:3]) + (", ..." if len(scouts) > 3 else "")
        warn_data(DataWarning(folder, "ImageType", (
            f"{len(scouts)} localizer image(s) left out ({names}): "
            + localizer_problem(scouts[0][1]) + f"; the volume holds the other {len(items)} "
            "image(s)"), kind="localizer"), stacklevel=3)
    return items


def _one_series(
    found: list[tuple[Path, Dataset]], folder: Path, series_uid: str | None
) -> list[tuple[Path, Dataset]]:
    by_series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in found:
        by_series.setdefault(str(_required(ds, path, "SeriesInstanceUID")), []).append((path, ds))
    if series_uid is not None:
        if series_uid not in by_series:
            raise ValueError(
                f"read_dicom_series: series {series_uid} not in {folder}; found {sorted(by_series)}"
            )
        return by_series[series_uid]
    if len(by_series) > 1:
        examples = ", ".join(f"{uid} ({items[0][0].name}, {len(items)} files)"
                             for uid, items in sorted(by_series.items()))
        raise DataFormatError(
            folder, "SeriesInstanceUID",
            f"mixes {len(by_series)} series: {examples}; move each series' files into a folder "
            "of its own and pass those folders as inputs (`mrirecon run` reads one series per "
            "folder; from Python, read_dicom_series(folder, series_uid=...) reads one of them)"
        )
    return next(iter(by_series.values()))


def _one_frame_of_reference(items: list[tuple[Path, Dataset]], folder: Path) -> None:
    """Refuse a series whose slices carry different FrameOfReferenceUID values: their
    ImagePositionPatient / ImageOrientationPatient are in different patient coordinate systems,
    so no one geometry places them (they were stacked into one volume). Slices without the
    element are not counted."""
    by_frame: dict[str, list[Path]] = {}
    for path, ds in items:
        try:
            uid = uid_as_written(ds, "FrameOfReferenceUID")  # an invalid one: shown below
        except Exception as err:  # noqa: BLE001 - a malformed element fails on access
            raise DataFormatError(path, "FrameOfReferenceUID",
                                  f"unreadable element ({err})") from None
        uid = uid.strip(" \x00")  # UI values are padded with NUL
        if uid:
            by_frame.setdefault(uid, []).append(path)
    if len(by_frame) > 1:
        shown = ", ".join(f"{uid if uid.isprintable() else ascii(uid)} ({len(paths)} slice"
                          f"{'s' * (len(paths) > 1)}, first: "
                          f"{min(paths).name})" for uid, paths in sorted(by_frame.items()))
        raise DataFormatError(
            folder, "FrameOfReferenceUID",
            f"the series' slices lie in {len(by_frame)} frames of reference: {shown}; slices "
            "from different frames of reference have no common coordinate system and cannot be "
            "stacked into one volume: put each frame of reference's slices in a folder of its own")


# Enhanced (multi-frame) image storage: the geometry lives per frame in functional groups
_ENHANCED = {
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.3": "Enhanced MR Color Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}


def _single_frame(ds: Dataset, path: Path) -> None:
    """Refuse multi-frame files before their geometry is looked for: an Enhanced CT/MR file
    holds ImageOrientationPatient per frame (functional groups), and was refused as
    "ImageOrientationPatient: missing"."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError) as err:
        raise DataFormatError(path, "NumberOfFrames", f"not an integer ({err})") from None
    sop = str(ds.get("SOPClassUID", ""))
    convert = ("; convert it to single-frame images first, e.g. with dcm4che's emf2sf "
               "(emf2sf --out-dir DIR FILE), and read DIR")
    if sop in _ENHANCED:
        raise DataFormatError(path, "SOPClassUID",
                              f"{_ENHANCED[sop]} (multi-frame, {frames} frame(s)) is not "
                              f"supported, only single-frame CT/MR Image Storage{convert}")
    if frames != 1:
        raise DataFormatError(path, "NumberOfFrames",
                              f"is {frames}; only single-frame images are supported"
                              + (convert if frames > 1 else ""))


def _pixels(ds: Dataset, path: Path) -> tuple[np.ndarray, PixelFacts]:
    """The slice's values (``stored * slope + intercept``) and what its stored words held
    (:func:`mrirecon.io.dicom_pixels.decode`: padding, bits above HighBit)."""
    if "PixelData" not in ds:
        raise DataFormatError(path, "PixelData", "missing")
    check_photometric(ds, path)  # palette indices or colour samples are no grey values
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
    except (TypeError, ValueError) as err:
        raise DataFormatError(path, "SamplesPerPixel", f"not an integer ({err})") from None
    if samples != 1:
        raise DataFormatError(path, "SamplesPerPixel", f"is {samples}, expected 1")
    ct = ds.get("Modality") == "CT"
    arr, facts = decode(ds, path, ct)
    if arr.ndim != 2:
        raise DataFormatError(path, "PixelData", f"expected one 2-D frame, got shape {arr.shape}")
    if ct and ("RescaleIntercept" not in ds or "RescaleSlope" not in ds):
        missing = [k for k in ("RescaleIntercept", "RescaleSlope") if k not in ds]
        raise DataFormatError(path, "/".join(missing),
                              "missing: a CT image must hold RescaleIntercept and RescaleSlope "
                              "(type 1 in the CT Image Module); without them the stored values "
                              "are not Hounsfield units (a stored HU + 1024 read as HU put air at "
                              "+24 HU)")
    slope = _rescale(ds, path, "RescaleSlope", ct)
    intercept = _rescale(ds, path, "RescaleIntercept", ct)
    has_modality_lut = slope is not None
    slope = 1.0 if slope is None else slope
    intercept = 0.0 if intercept is None else intercept
    # MR stored without a Modality LUT (as scanners and our writer do): the first linear
    # Real World Value Mapping gives the original units (a LUT-only one is refused)
    if not has_modality_lut and (mapping := real_world_scale(ds, path)) is not None:
        slope, intercept = mapping
    facts.scale = (slope, intercept)
    return arr.astype(np.float64) * slope + intercept, facts


def _orthonormal(iop: np.ndarray, path: Path) -> tuple[np.ndarray, float]:
    """ImageOrientationPatient made exactly orthonormal when it is within rounding of the
    cosines to 3 decimals (``_IOP_NORM_TOL``, ``_IOP_DOT_TOL``); a :class:`DataFormatError`
    naming the file and element otherwise. The two unit vectors are turned by the same angle
    in their plane (the nearest orthonormal pair), not one of them kept and the other bent.
    Also returns how far (rad) the normal may be from the true one: 0 for cosines written
    in full, ``NORMAL_ANGLE_TOL`` for rounded ones."""
    r, c = iop[:3], iop[3:]
    norms = np.array([np.linalg.norm(r), np.linalg.norm(c)])
    if not np.linalg.norm(np.cross(r, c)) > 1e-6:
        raise DataFormatError(path, "ImageOrientationPatient",
                              f"row and column directions {iop.tolist()} are parallel or zero")
    dot = float(r @ c) / float(norms.prod())
    if np.max(np.abs(norms - 1)) > _IOP_NORM_TOL or abs(dot) > _IOP_DOT_TOL:
        raise DataFormatError(
            path, "ImageOrientationPatient",
            f"{iop.tolist()} is not two orthogonal unit vectors (norms {np.round(norms, 6).tolist()}, "
            f"dot product {dot:.2g}; cosines rounded to 3 decimals stay within {_IOP_NORM_TOL:g} "
            f"and {_IOP_DOT_TOL:g})")
    a, b = r / norms[0], c / norms[1]
    u, v = a + b, a - b  # orthogonal, since |a| = |b|
    u, v = u / np.linalg.norm(u), v / np.linalg.norm(v)
    rounded = max(np.max(np.abs(norms - 1)), abs(dot)) > 1e-6
    return (np.concatenate([(u + v) / np.sqrt(2), (u - v) / np.sqrt(2)]),
            NORMAL_ANGLE_TOL if rounded else 0.0)


def _check_spacing(entries: list, normal: np.ndarray, folder: Path, angle: float = 0.0) -> float:
    """The slice spacing of positions sorted along ``normal``, after refusing duplicates, a
    missing slice, non-uniform steps and positions off the normal (gantry tilt).

    The tolerance comes from how positions are written. Rounded to a step ``q`` (0.01 mm, or
    1e-5 of the largest coordinate for 6 significant digits), each coordinate is off by up to
    ``q / 2``, a distance along the unit normal by up to ``q / 2 * |normal|_1 <= q * sqrt(3) / 2``;
    a step between two slices by ``sqrt(3) q``, the mean step by ``sqrt(3) q / (N - 1)``: so
    ``|step - mean| <= 2 sqrt(3) q`` (0.035 mm for 0.01 mm), and a position is at most
    ``sqrt(3) q`` off the line through the first slice. At least ``max(1e-3 mm, 1e-3 * spacing)``
    (the former bound) and at most a quarter of the spacing: one missing slice among N >= 3
    makes a step of twice the spacing, ``(N - 2) / (N - 1) >= 1/2`` spacing from the mean.
    ``angle`` (rad): how far ``normal`` may be off (rounded cosines, :func:`_orthonormal`); a
    position may leave the normal by that times its distance from the first slice as well."""
    positions = np.array([e[1] for e in entries])
    distances = np.array([e[0] for e in entries])
    steps = np.diff(distances)
    if steps.min() <= POSITION_TOL_MM:
        k = int(np.argmin(steps))
        uids = [str(entries[i][3].get("SOPInstanceUID", "") or "").strip(" \x00")
                for i in (k, k + 1)]
        why = (f"the same image twice (both SOPInstanceUID {uids[0]}: a copied file); remove "
               "the copy" if uids[0] and uids[0] == uids[1] else
               same_position_reason(entries[k][3], entries[k + 1][3], [e[3] for e in entries]) or
               "two images at one position (SOPInstanceUIDs differ: two acquisitions or "
               "reconstructions, or an image exported twice under new UIDs); keep the one you "
               "mean in the folder")
        raise DataFormatError(entries[k][2], "ImagePositionPatient",
                              f"same position along the slice normal as {entries[k + 1][2]} "
                              f"(same ImagePositionPatient): {why}")
    spacing = float(distances[-1] - distances[0]) / (len(entries) - 1)
    quantum = max(_POSITION_QUANTUM_MM, _POSITION_DIGITS_REL * float(np.abs(positions).max()))
    tol = position_tolerance(spacing, quantum)
    deviation = np.abs(steps - spacing)
    if deviation.max() > tol:
        k = int(np.argmax(steps))
        ratio = steps[k] / float(steps.min())
        missing = (f"; the step from {entries[k][2].name} to {entries[k + 1][2].name} is "
                   f"{ratio:.2f} times the smallest: is a slice missing?"
                   if ratio > 1.5 else "")
        raise DataFormatError(folder, "ImagePositionPatient",
                              f"slice spacing is not uniform (steps {np.round(steps, 4).tolist()} "
                              f"mm, mean {spacing:.4g} mm; positions rounded to {quantum:.2g} mm "
                              f"allow {tol:.2g} mm){missing}")
    expected = positions[0] + (distances - distances[0])[:, None] * normal
    drift = np.linalg.norm(positions - expected, axis=1)
    excess = drift - (tol + angle * (distances - distances[0]))
    if excess.max() > 0:
        k = int(np.argmax(excess))
        raise DataFormatError(entries[k][2], "ImagePositionPatient",
                              f"{drift[k]:.4f} mm off the slice normal through the first slice "
                              "(gantry tilt is not supported)")
    return spacing


def _one_orientation(iops: list[tuple[Path, np.ndarray]]) -> None:
    """Refuse slices of other orientations, naming the files that differ from the most common
    orientation (a coronal image among axial ones named the axial slice the odd one when it
    came first)."""
    groups: list[tuple[np.ndarray, list[Path]]] = []
    for path, iop in iops:
        for ref, members in groups:
            if np.max(np.abs(iop - ref)) <= ORIENTATION_TOL:
                members.append(path)
                break
        else:
            groups.append((iop, [path]))
    if len(groups) == 1:
        return
    ref, main = max(groups, key=lambda g: len(g[1]))  # ties: the first file's
    odd = [(p, iop) for p, iop in iops if p not in main]
    path, iop = odd[0]
    where = (f"the other {len(main)} slices' {ref.tolist()} (first: {main[0].name})"
             if len(main) > len(odd) else f"{main[0].name} {ref.tolist()}")
    more = (f"; so do {len(odd) - 1} more file(s) ("
            + ", ".join(p.name for p, _ in odd[1:4]) + (", ..." if len(odd) > 4 else "") + ")"
            if len(odd) > 1 else "")
    raise DataFormatError(path, "ImageOrientationPatient",
                          f"{iop.tolist()} differs from {where}{more}")


def read_dicom_series(
    folder: str | os.PathLike, *, series_uid: str | None = None
) -> Image:
    """Read one DICOM series (see :func:`read_dicom_series_and_header`, which also returns the
    header of its first slice)."""
    return read_dicom_series_and_header(folder, series_uid=series_uid)[0]


def read_dicom_series_and_header(
    folder: str | os.PathLike, *, series_uid: str | None = None
) -> tuple[Image, Dataset]:
    """Read one DICOM series into an :class:`Image` ``(slices, rows, cols)`` float32.

    Parameters
    ----------
    folder
        Folder of single-frame MR or CT image files (text and files of other known formats
        are ignored).
    series_uid
        SeriesInstanceUID to read when the folder holds several series.

    Returns
    -------
    image, header
        ``header``: the data set of the first slice (after sorting) without its pixel data,
        for :func:`~mrirecon.io.dicom.write_dicom_series`'s ``source_dataset`` (technique,
        and identity when kept, of the series written from it). ``image``: the
        rescaled data (``stored * RescaleSlope + RescaleIntercept``; for images without a
        Modality LUT the first linear Real World Value Mapping), geometry from
        ImagePositionPatient (first slice after sorting along the normal),
        ImageOrientationPatient, PixelSpacing, the slice-position spacing and
        SliceThickness; ``description`` is SeriesDescription. CT padding pixels
        (PixelPaddingValue) read as air (-1024 HU). When a slice was lossy compressed the
        header says LossyImageCompression 01 whatever the first slice says.

    Warns
    -----
    DataWarning, DataNote
        (``mrirecon.io.errors``) CT localizers left out, bits set above HighBit, padding read
        as air, lossy compression.

    Raises
    ------
    DataFormatError
        (a ``ValueError``) naming the file and field on unreadable, empty, truncated or
        gzip-compressed files, a folder of CT localizers only, DICOM-CT-PD projection files,
        multi-frame (Enhanced) files, missing PixelData/geometry, empty CT or zero rescale
        values, a PhotometricInterpretation other than MONOCHROME1/2, MR phase / real /
        imaginary images (ImageType value 3), a Real World Value Mapping by lookup table,
        orientation, size, spacing, modality or FrameOfReferenceUID that differ between files,
        mixed series, duplicate (two echoes, time points or acquisitions named when their
        headers tell) or non-collinear slice positions, non-uniform slice spacing, or direction
        cosines further from orthonormal than rounding to 3 decimals (positions and cosines
        within rounding are accepted: see :func:`_check_spacing`)
    """
    folder = Path(folder)
    items = _select_series(_read_headers(folder), folder, series_uid)
    check_subfolders(folder, str(items[0][1].SeriesInstanceUID).strip(" \x00"), len(items))
    _one_frame_of_reference(items, folder)
    path0, ds0 = items[0]
    modality = str(_required(ds0, path0, "Modality"))
    if modality not in ("MR", "CT"):
        raise DataFormatError(path0, "Modality", f"is {modality!r}, expected MR or CT")
    refuse_projection_data(ds0, path0)  # DICOM-CT-PD: projections, not images
    for path, ds in items:  # before the geometry: Enhanced files hold it per frame
        _single_frame(ds, path)
        if modality == "MR":  # phase, real or imaginary images are no magnitude
            check_magnitude(ds, path)
    iop0 = _floats(ds0, path0, "ImageOrientationPatient", 6)
    orientation, angle = _orthonormal(iop0, path0)
    spacing0 = _floats(ds0, path0, "PixelSpacing", 2)
    size0 = (_int(ds0, path0, "Rows"), _int(ds0, path0, "Columns"))
    # decoded slice by slice into float64, stacked, then a float32 copy: about 20 bytes a voxel
    refuse_oversized(path0, "Rows/Columns", 20.0 * len(items) * size0[0] * size0[1],
                     f"{len(items)} slice(s) of {size0[0]} x {size0[1]}")
    normal = np.cross(orientation[:3], orientation[3:])
    for path, ds in items:
        if str(ds.get("Modality", "")) != modality:
            raise DataFormatError(path, "Modality",
                                  f"is {ds.get('Modality')!r}, {path0.name} has {modality!r}")
    _one_orientation([(path, _floats(ds, path, "ImageOrientationPatient", 6))
                      for path, ds in items])
    entries = []
    for path, ds in items:
        size = (_int(ds, path, "Rows"), _int(ds, path, "Columns"))
        if size != size0:
            raise DataFormatError(path, "(Rows, Columns)", f"= {size}, {path0.name} has {size0}")
        spacing = _floats(ds, path, "PixelSpacing", 2)
        if np.max(np.abs(spacing - spacing0)) > POSITION_TOL_MM:
            raise DataFormatError(path, "PixelSpacing",
                                  f"{spacing.tolist()} differs from {path0.name} {spacing0.tolist()}")
        position = _floats(ds, path, "ImagePositionPatient", 3)
        entries.append((float(position @ normal), position, path, ds))
    entries.sort(key=lambda e: e[0])
    positions = np.array([e[1] for e in entries])
    if len(entries) > 1:
        slice_spacing = _check_spacing(entries, normal, folder, angle)
    else:
        slice_spacing = single_slice_spacing(ds0, path0, _positive)  # 1 mm, noted, if neither
    if not (spacing0 > 0).all():
        raise DataFormatError(path0, "PixelSpacing", f"must be positive, got {spacing0.tolist()}")
    try:
        geometry = ImageGeometry(
            spacing=(abs(slice_spacing), float(spacing0[0]), float(spacing0[1])),
            origin=tuple(positions[0]),
            orientation=tuple(orientation),
            slice_thickness=_positive(ds0, "SliceThickness"),
        )
    except ValueError as err:  # what the checks above missed still names the file
        field = next((f for w, f in DICOM_GEOMETRY_FIELDS if w in str(err)), "ImagePositionPatient")
        raise DataFormatError(path0, field, str(err)) from None
    pixels = [_pixels(ds, path) for _, _, path, ds in entries]
    data = np.stack([values for values, _ in pixels])
    facts, paths = [f for _, f in pixels], [e[2] for e in entries]
    kind = "magnitude"
    if modality == "CT":  # every slice's: one slice in US beside HU ones was read as HU
        types = {path: str(ds.get("RescaleType", "HU") or "HU").upper() for path, ds in items}
        odd = next((p for p, t in types.items() if t != types[path0]), None)
        if odd is not None:
            raise DataFormatError(odd, "RescaleType", f"is {types[odd]!r}, {path0.name} has "
                                  f"{types[path0]!r}: the slices' values are in different units")
        kind = "hu" if types[path0] == "HU" else "attenuation"
    padding_as_air(data, facts, paths, kind, folder)
    warn_high_bits(facts, paths, modality)
    first = entries[0][3]
    header = Dataset({tag: elem for tag, elem in first.items() if tag != _PIXEL_DATA})
    lossy_compression(items, header, folder)
    acquisition_mismatch(items, folder)  # slices of another thickness or kVp
    image = Image(
        data=torch.from_numpy(data.astype(np.float32)),
        geometry=geometry,
        kind=kind,
        modality=modality,
        description=_text(ds0.get("SeriesDescription", "")),
        source=str(folder),
    )
    return image, header


def read_dicom_series_and_messages(
    folder: str | os.PathLike, *, series_uid: str | None = None
) -> tuple[Image, Dataset, tuple[tuple[str, str, str], ...]]:
    """:func:`read_dicom_series_and_header`, with the reader's :class:`DataWarning` and
    :class:`DataNote` messages returned instead of emitted, for a run's record: ``(level, kind,
    text)`` with level ``"warning"`` or ``"note"`` and the text without the folder
    (``"slice_0001.dcm: BitsStored: ..."``, ``"PixelPaddingValue: ..."``). Other warnings
    (pydicom's) are emitted as before; on an error the collected ones are emitted too.

    Safe in several threads at once: the messages are gathered by
    :func:`~mrirecon.io.errors.collect_data_warnings` (a context variable), not by
    ``warnings.catch_warnings``, so the process's warning filters and display are never
    changed and each call returns its own series' messages."""
    done = False
    try:
        with collect_data_warnings() as caught:  # this thread's only: no warnings filters
            image, header = read_dicom_series_and_header(folder, series_uid=series_uid)
        done = True
    finally:
        if not done:  # on an error the collected ones are shown, as a plain read shows them
            for w in caught:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    messages = []
    for w in caught:
        m = w.message
        where = "" if Path(m.file) == Path(folder) else f"{Path(m.file).name}: "
        messages.append(("note" if isinstance(m, DataNote) else "warning", m.kind,
                         f"{where}{m.field}: {m.problem}"))
    return image, header, tuple(messages)
