"""The attributes of LoDoPaB-layout files (:mod:`mrirecon.io.lodopab`): the public dataset's
constants and geometry, the ``geometry`` attribute's JSON, and the rules the reader applies to
the root attributes of each observation file.

* A file without ``attrs/geometry`` is read with LoDoPaB's geometry only at the public shape
  (1000 views x 513 detectors, 362 x 362 images): at any other shape a half-turn parallel
  geometry sized to its counts was invented (a full-turn or fan-beam scan read so gave
  15.5-16 dB, exit 0, no word), so it is refused naming the file and the attribute.
* Every observation file of a part is read with the same attributes (one geometry, one scale,
  one dose), :meth:`LoDoPaBFiles` checks each file against the first: a second file with another
  detector pitch or ``mu_max_per_m`` was read with the first file's (line integrals at 0.5x,
  the wrong geometry), and trained on without a word.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mrirecon.io.errors import DataFormatError, refuse_oversized
from mrirecon.operators.ct_geometry import CTGeometry

MU_WATER_PER_M = 20.0
MU_AIR_PER_M = 0.02
MU_MAX_PER_M = 3071 * (MU_WATER_PER_M - MU_AIR_PER_M) / 1000 + MU_WATER_PER_M  # 81.35858
MU_MAX_PER_MM = MU_MAX_PER_M / 1000.0
PHOTONS = 4096
MIN_PHOTON_COUNT = 0.1
NUM_ANGLES = 1000
NUM_DETECTORS = 513
IMAGE_SHAPE = (362, 362)
HALF_FOV_MM = 130.0


def lodopab_geometry(
    image_shape: tuple[int, int] = IMAGE_SHAPE,
    num_angles: int = NUM_ANGLES,
    num_detectors: int = NUM_DETECTORS,
    half_fov_mm: float = HALF_FOV_MM,
) -> CTGeometry:
    """The LoDoPaB-CT parallel-beam geometry (defaults: the public dataset), lengths in mm.

    Pixel ``2 half_fov / H`` (square pixels); ``num_angles`` angles
    ``(i + 1/2) pi / num_angles``; ``num_detectors`` bins covering the distance of the domain's
    corners, ``[-sqrt 2, sqrt 2] * half_fov`` for a square image (ODL's
    ``parallel_beam_geometry``).
    """
    h, w = (int(s) for s in image_shape)
    pixel = 2 * half_fov_mm / h
    angles = (np.arange(num_angles) + 0.5) * math.pi / num_angles
    reach = 0.5 * pixel * math.hypot(h, w)  # distance of the domain's corners from the centre
    return CTGeometry(
        "parallel",
        (h, w),
        tuple(angles),
        int(num_detectors),
        pixel_size=pixel,
        detector_spacing=2 * reach / num_detectors,
    )


def geometry_to_json(geometry: CTGeometry) -> str:
    """JSON of every :class:`CTGeometry` field (angles in radians; ``detector_offset`` in mm,
    where the rotation axis projects from the detector's middle). A zero ``detector_offset`` is
    left out: releases before the field refuse any key they do not know, so a centred
    detector's file stays readable by them (the reader takes a missing key as 0); a non-zero
    offset is written, and an older reader refusing it is right."""
    fields = asdict(geometry)
    if fields.get("detector_offset") == 0:
        del fields["detector_offset"]
    return json.dumps(fields)


#: The keys a stored geometry must state (fan beam: also :data:`FAN_KEYS`); the CTGeometry
#: defaults are for code, not for files. ``detector_offset`` is optional: files written before
#: it existed hold a centred detector and read as 0.
GEOMETRY_KEYS = ("beam", "image_shape", "angles", "num_detectors", "pixel_size", "detector_spacing")
FAN_KEYS = ("source_isocenter", "source_detector", "detector")
#: The widest angular range of one stored scan (rad): a full turn plus any overscan fits; the
#: same scan in degrees spans 57x more (a half turn: 180).
MAX_ANGLE_SPAN = 4 * math.pi


def geometry_from_json(text: str,
                       source: str | os.PathLike = "<geometry attribute>") -> CTGeometry:
    """:class:`CTGeometry` from its JSON form; a malformed one is a :class:`DataFormatError`."""
    try:
        fields = json.loads(text)
        fields["image_shape"] = tuple(fields["image_shape"])
        # every length is stated: a missing pixel_size or detector_spacing took the dataclass's
        # 1.0 mm (4.0 dB and a NIfTI of 1 mm voxels for 4.06 mm, exit 0), a missing detector "flat"
        needed = GEOMETRY_KEYS + (FAN_KEYS if fields.get("beam") == "fan" else ())
        missing = [k for k in needed if k not in fields]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} (every length in mm is stated; "
                           f"geometry_to_json writes {', '.join(GEOMETRY_KEYS + FAN_KEYS)})")
        geometry = CTGeometry(**fields)
        span = max(geometry.angles) - min(geometry.angles)
        if span > MAX_ANGLE_SPAN:  # the operator takes any angles; a file holds one scan
            raise ValueError(f"angles span {span:.6g} rad, more than two turns (4 pi): angles "
                             "are in radians (were degrees given?)")
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError) as err:
        # RecursionError: JSON nested thousands deep (json.loads recurses)
        raise DataFormatError(source, "attrs/geometry", f"not a valid CT geometry ({err})") from None
    # an image and its working copies (float32: 8 of them): a 40000 x 40000 image_shape raised
    # torch's "tried to allocate 6400000000 bytes"
    refuse_oversized(source, "attrs/geometry", 32.0 * np.prod(geometry.image_shape, dtype=np.float64),
                     f"image_shape {list(geometry.image_shape)}")
    return geometry


def root_attrs(h5, path: Path) -> dict:
    """The root attributes of an open file; unreadable ones are a :class:`DataFormatError`."""
    try:
        return dict(h5.attrs)
    except (OSError, RuntimeError, ValueError, TypeError) as err:
        raise DataFormatError(path, "attrs", f"unreadable ({err})") from None


def stored_geometry(attrs: dict, path: Path) -> CTGeometry | None:
    """The file's ``geometry`` attribute (a string, or a 1-element array of one), ``None``
    without one."""
    if "geometry" not in attrs:
        return None
    text = attrs["geometry"]
    if isinstance(text, np.ndarray) and text.size == 1:  # a 1-element array (MATLAB's
        text = text.reshape(-1)[0]  # h5writeatt, attrs[k] = [json]): its string, as numbers
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return geometry_from_json(str(text), path)


def public_geometry(path: Path, sinogram_shape: tuple[int, ...],
                    image_shape: tuple[int, ...] | None, image_file: Path | None) -> CTGeometry:
    """LoDoPaB's geometry for an observation file without ``attrs/geometry``: only at the public
    dataset's shape (``image_shape``: that of its ground truth ``image_file``, when there is
    one); any other is refused, since no geometry can be read from the counts alone."""
    public = (NUM_ANGLES, NUM_DETECTORS)
    if tuple(sinogram_shape) == public and image_shape in (None, IMAGE_SHAPE):
        return lodopab_geometry()
    found = (f"(views, detectors) {tuple(sinogram_shape)}" if tuple(sinogram_shape) != public
             else f"images {image_shape[0]} x {image_shape[1]} in {Path(image_file).name}")
    raise DataFormatError(
        path, "attrs/geometry",
        f"missing, and the data are not LoDoPaB's public shape ({NUM_ANGLES} views x "
        f"{NUM_DETECTORS} detectors, {IMAGE_SHAPE[0]} x {IMAGE_SHAPE[1]} images; found {found}): "
        "a file's geometry is read, never guessed from its counts (beam, angular range, "
        "detector pitch and pixel size cannot be told from them); store it, e.g. h5py: "
        "f.attrs['geometry'] = mrirecon.io.lodopab.geometry_to_json(CTGeometry(...)), or write "
        "the data with mrirecon.io.lodopab.write_lodopab")


def number_attr(attrs: dict, key: str, default: float, path: Path, finite: bool = True) -> float:
    """Attribute ``key`` of ``attrs`` (read from ``path``) as a number, ``default`` when absent."""
    value = attrs.get(key, default)
    try:
        number = float(value.item() if isinstance(value, np.ndarray) and value.size == 1
                       else value)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"attrs/{key}", f"expected a number, got {value!r}") from None
    if finite and not math.isfinite(number):
        raise DataFormatError(path, f"attrs/{key}", f"expected a finite number, got {value!r}")
    return number


def mu_water(attrs: dict, path: Path) -> float:
    """Water attenuation (1/mm) of the HU conversion."""
    return number_attr(attrs, "mu_water_per_mm", MU_WATER_PER_M / 1000, path)


def mu_air(attrs: dict, path: Path) -> float:
    return number_attr(attrs, "mu_air_per_mm", MU_AIR_PER_M / 1000, path)


def photons(attrs: dict, path: Path) -> float:
    """Incident photons per bin as recorded (informational: the data are post-log)."""
    return number_attr(attrs, "photons", PHOTONS, path, finite=False)


def data_photons(attrs: dict, path: Path) -> float | None:
    """Photons per bin of the Poisson noise the observations hold: the ``photons`` attribute;
    the public dataset's 4096 for files in the public layout (no ``geometry`` attribute);
    ``None`` for files written here without ``photons``: noise-free, or noise of an unknown dose
    (:func:`unknown_dose`), to which no noise may be added."""
    if "photons" in attrs or "geometry" not in attrs:
        return photons(attrs, path)
    return None


def unknown_dose(attrs: dict) -> str | None:
    """Why a file without a dose (:func:`data_photons` ``None``) still holds noise, as its
    attributes tell (``None`` when they do not): a ``min_photon_count``, which
    :func:`~mrirecon.io.lodopab.write_lodopab` writes only for noisy data (``simulate ct``
    without ``--noise-free``). Such a file was taken as noise-free, and ``undersample.photons``
    added a second dose of noise (an effective 1948 photons for 4096 asked)."""
    if "photons" in attrs or "geometry" not in attrs or "min_photon_count" not in attrs:
        return None
    return ("attrs/min_photon_count is set, which only data holding photon noise carry, and "
            "attrs/photons is missing")


def scale_attr(attrs: dict, path: Path, default: float, water: float) -> float:
    """``mu_max_per_m`` of a file (``default`` without it), refused when it cannot be the
    attenuation of the stored value 1 (not above water's, ``water`` in 1/mm)."""
    value = number_attr(attrs, "mu_max_per_m", default, path)
    if not value > 1000 * water:  # was ignored: 81.35858 /m whatever it said
        raise DataFormatError(path, "attrs/mu_max_per_m",
                              f"{value!r} is no MU_MAX in 1/m (the attenuation of the stored "
                              f"value 1, above water's {1000 * water:g} /m; LoDoPaB "
                              f"{MU_MAX_PER_M:g}): the line integrals and HU would be wrong")
    return value


def check_units(attrs: dict, path: Path) -> None:
    """The attributes that enter the exported HU and the dose, checked at open: a water
    attenuation of -1 / mm (or 20, its value per metre) put every voxel at about -1000 HU with
    exit 0, and 0 made the HU NaN, reported as "method 'fbp' diverged?"."""
    water, air = mu_water(attrs, path), mu_air(attrs, path)
    if not 1e-3 <= water <= 1.0:
        raise DataFormatError(path, "attrs/mu_water_per_mm",
                              f"{water!r} is no attenuation of water in 1/mm (0.015-0.08 at "
                              f"diagnostic energies, LoDoPaB {MU_WATER_PER_M / 1000:g}"
                              f"{'; per metre?' if water > 1 else ''}): the HU would be wrong")
    if not 0 <= air < water / 10:
        raise DataFormatError(path, "attrs/mu_air_per_mm",
                              f"{air!r} is no attenuation of air in 1/mm beside water at "
                              f"{water:g} (LoDoPaB {MU_AIR_PER_M / 1000:g}): the HU would be "
                              "wrong")
    scale_attr(attrs, path, MU_MAX_PER_M, water)
    dose = photons(attrs, path) if "photons" in attrs else PHOTONS
    if not (math.isfinite(dose) and dose > 0):  # NaN, 0, -5 were blamed on
        # undersample.photons ("the data's dose must be a positive number ...")
        raise DataFormatError(path, "attrs/photons",
                              f"{dose!r} is no dose: expected a positive number of "
                              f"incident photons per bin (LoDoPaB {PHOTONS:g})")


def _min_count(attrs: dict, path: Path):
    """``min_photon_count`` for the comparison (its checks stay where it is used)."""
    try:
        return number_attr(attrs, "min_photon_count", MIN_PHOTON_COUNT, path)
    except DataFormatError:
        return repr(attrs.get("min_photon_count"))


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _geometry_difference(a: CTGeometry, b: CTGeometry) -> str | None:
    """The first field in which ``b`` differs from ``a`` (lengths and angles to 1e-9), as
    ``"name: b's value, a's value"``; ``None`` when they agree."""
    for name, x in asdict(a).items():
        y = getattr(b, name)
        if name == "angles":
            same = len(x) == len(y) and np.allclose(y, x, rtol=1e-9, atol=1e-12)
            if not same:
                i = next((i for i, (u, v) in enumerate(zip(x, y)) if not _close(u, v)), None)
                at = (f"{len(y)} angles" if i is None else f"angle {i} {y[i]:.9g} rad")
                was = (f"{len(x)}" if i is None else f"{x[i]:.9g} rad")
                return f"angles: {at}, there {was}"
        elif not _close(x, y):
            return f"{name}: {y!r}, there {x!r}"
    return None


def check_same_attrs(first: Path, first_attrs: dict, first_geometry: CTGeometry,
                     path: Path, attrs: dict) -> None:
    """Refuse an observation file ``path`` whose attributes would read it otherwise than
    ``first``, the first file of its part, with whose attributes and geometry every file of the
    part is read: its geometry, ``mu_max_per_m``, ``mu_water_per_mm``, ``mu_air_per_mm``,
    ``photons`` (and the noise the data hold) and ``min_photon_count``."""
    check_units(attrs, path)
    why = (f"every file of a part is read with the attributes of its first file, "
           f"{first.name}: move the files of another geometry, scale or dose into a folder of "
           "their own (`mrirecon run` reads each file with its own)")
    geometry = stored_geometry(attrs, path)
    if geometry is None and "geometry" in first_attrs:
        raise DataFormatError(path, "attrs/geometry", f"missing, while {first.name} states "
                              f"one; {why}")
    diff = None if geometry is None else _geometry_difference(first_geometry, geometry)
    if diff is not None:  # (both without one: LoDoPaB's geometry, at the same shape)
        raise DataFormatError(path, "attrs/geometry", f"differs from {first.name}'s, {diff}; "
                              f"{why}")
    for key, read in (
        ("mu_max_per_m", lambda a, p: scale_attr(a, p, MU_MAX_PER_M, mu_water(a, p))),
        ("mu_water_per_mm", mu_water), ("mu_air_per_mm", mu_air), ("photons", photons),
        ("photons", data_photons), ("min_photon_count", _min_count),
    ):
        mine, theirs = read(attrs, path), read(first_attrs, first)
        if not _close(mine, theirs):
            noise = " (the dose of the noise the data hold)" if read is data_photons else ""
            raise DataFormatError(path, f"attrs/{key}", f"{mine!r}{noise} differs from "
                                  f"{first.name}'s {theirs!r}; {why}")


def check_min_photon_count(attrs: dict, path: Path) -> float:
    """A file's ``min_photon_count`` attribute (LoDoPaB's 0.1 without it), refused unless positive
    and below the dose the data hold (:func:`data_photons`): 1e6
    beside ``photons`` 4096 was accepted, and the count-floor checks were off for the file."""
    value = number_attr(attrs, "min_photon_count", MIN_PHOTON_COUNT, path)
    if not value > 0:
        raise DataFormatError(path, "attrs/min_photon_count",
                              f"expected a positive photon count, got {value!r}")
    dose = data_photons(attrs, path)
    if dose is not None and not value < dose:
        given = "" if "photons" in attrs else " (LoDoPaB's, the file states none)"
        raise DataFormatError(path, "attrs/min_photon_count",
                              f"{value!r} is not below attrs/photons {dose!r}{given}: the "
                              "count floor (zero detections stored as this many photons) "
                              "lies below the incident photons per bin (at or above them "
                              "every count, air included, is clamped to it, as "
                              "sampling.views.check_photons says); one of the two "
                              "attributes is wrong")
    return value


def check_as_written(root: dict, path: Path, user_attrs: dict) -> None:
    """Refuse, before anything is written, the root attributes ``root`` that the reader would
    refuse in ``path`` (its rules: :func:`geometry_from_json`,
    :func:`check_units`,
    :func:`check_min_photon_count`), as a ``ValueError`` naming
    :func:`~mrirecon.io.lodopab.write_lodopab`'s argument (or ``attrs[key]``) at fault."""
    try:
        stored_geometry(root, path)
        check_units(root, path)
        check_min_photon_count(root, path)
    except DataFormatError as err:
        key = err.field.removeprefix("attrs/")
        if key == "mu_max_per_m" and key not in user_attrs:  # LoDoPaB's, below the water given
            raise ValueError(
                f"write_lodopab: mu_water={root['mu_water_per_mm']!r} (1/mm) is above MU_MAX, "
                f"{MU_MAX_PER_MM:.6g} / mm, the attenuation of the stored value 1 (water's "
                f"attenuation per cm? LoDoPaB's is {MU_WATER_PER_M / 1000:g} / mm); the reader "
                f"would refuse the file ({err.field}: {err.problem})") from None
        arg = {"mu_water_per_mm": "mu_water", "mu_air_per_mm": "mu_air"}.get(key, key)
        arg = (f"attrs[{key!r}]={user_attrs[key]!r}" if key in user_attrs else
               arg if key == "geometry" else f"{arg}={root[key]!r}")
        raise ValueError(f"write_lodopab: {arg}: {err.problem} (the reader would refuse the "
                         f"file: {err.field})") from None


def simulated_parts(folder: str | os.PathLike) -> list[tuple[Path, str, int]]:
    """``(file, part, seed)`` of each part in ``folder`` that ``mrirecon simulate ct`` wrote (its
    first observation file's ``simulation`` and ``seed`` attributes); unreadable files are left
    to the readers."""
    import re

    import h5py

    found = []
    for path in sorted(Path(folder).glob("observation_*_000.hdf5")):
        match = re.fullmatch(r"observation_(\w+)_000\.hdf5", path.name)
        try:
            with h5py.File(path, "r") as h5:
                attrs = dict(h5.attrs)
        except OSError:
            continue
        if match and attrs.get("simulation") == "mrirecon.data.simulate_ct" and "seed" in attrs:
            found.append((path, match.group(1), int(attrs["seed"])))
    return found
