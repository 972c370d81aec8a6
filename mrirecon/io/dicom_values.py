"""What the stored values of a DICOM slice mean (:mod:`mrirecon.io.dicom_read`).

The series reader returns grey values of magnitude (MR) or Hounsfield / attenuation (CT)
images. Slices whose values mean something else are refused, naming the element:

* **PhotometricInterpretation** other than ``MONOCHROME1`` / ``MONOCHROME2``: palette indices
  (``PALETTE COLOR``) or colour samples (``RGB``, ``YBR_*``) are no grey values (palette
  indices were read as intensities).
* **ImageType** value 3 (or 4, as in ``DERIVED\\PRIMARY\\OTHER\\P\\SE``) of an MR image naming
  phase, real or imaginary data (``P``, ``PHASE``, ``R``, ``REAL``, ``I``, ``IMAGINARY``;
  ``PHASE MAP``; Philips' ``P_FFE``-style terms), or a
  ComplexImageComponent other than ``MAGNITUDE``, or GE's private image type (0043,102F)
  1 / 2 / 3 (GE writes ImageType ``OTHER`` for every kind): a phase map was read as
  ``kind="magnitude"``. ``Image.kind`` has no label for a real-valued phase or real part
  (``"complex"`` is complex data), so it is refused.
* a **Real World Value Mapping** (for MR images without a Modality LUT) given as a lookup
  table (RealWorldValueLUTData) instead of a slope: the stored values were returned as if
  there were none.

:func:`same_position_reason` says why two images of a series share a position when their
headers tell (two echoes, time points or acquisitions of one series in one folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from mrirecon.io.dicom_files import upper_values
from mrirecon.io.errors import DataFormatError

#: PhotometricInterpretation values whose single sample is a grey value.
GREY = ("MONOCHROME1", "MONOCHROME2")
#: ImageType value 3 (or 4) terms of MR images that are not magnitude: phase, real, imaginary.
NOT_MAGNITUDE = frozenset(("P", "PHASE", "PHASE MAP", "R", "REAL", "I", "IMAGINARY"))
_MAGNITUDE_ONLY = ("; mrirecon reads MR DICOM images as magnitude images (Image.kind "
                   "'magnitude'): pass the magnitude series (ImageType value 3 M) instead")


def check_photometric(ds: Dataset, path: Path) -> None:
    """Refuse a slice whose PhotometricInterpretation is not :data:`GREY` (absent or empty is
    taken as grey, as before)."""
    value = " ".join(upper_values(ds, "PhotometricInterpretation"))
    if value and value not in GREY:
        raise DataFormatError(path, "PhotometricInterpretation", (
            f"is {value!r}: its pixels are "
            + ("indices into a colour palette" if value == "PALETTE COLOR" else "colour samples")
            + ", not grey values; only MONOCHROME1 / MONOCHROME2 images (CT, MR) are read: pass "
              "the scanner's greyscale series, not a colour rendering of it"))


def check_magnitude(ds: Dataset, path: Path) -> None:
    """Refuse an MR slice of phase, real or imaginary values (ImageType value 3 or 4 in
    :data:`NOT_MAGNITUDE` or a Philips ``P_xx`` / ``R_xx`` / ``I_xx`` term, or
    ComplexImageComponent)."""
    types = upper_values(ds, "ImageType")
    for index, term in enumerate(types[2:4], 3):  # value 4 too: OTHER\P\SE (M\SE: magnitude)
        if term in NOT_MAGNITUDE or term[:2] in ("P_", "R_", "I_"):
            written = "\\".join(types)
            raise DataFormatError(path, "ImageType", (
                f"value {index} is {term!r} ({written}): a phase, real or imaginary image, not "
                f"a magnitude image{_MAGNITUDE_ONLY}"))
    component = " ".join(upper_values(ds, "ComplexImageComponent"))
    if component and component != "MAGNITUDE":
        raise DataFormatError(path, "ComplexImageComponent",
                              f"is {component!r}, not MAGNITUDE{_MAGNITUDE_ONLY}")
    if (kind := _ge_image_type(ds)) in _GE_KINDS:  # GE writes OTHER for every kind
        written = "\\".join(types) or "nothing"
        raise DataFormatError(path, "(0043,102F) (GE image type)", (
            f"is {kind} ({_GE_KINDS[kind]}): a {_GE_KINDS[kind]} image, not a magnitude image, "
            f"though ImageType reads {written}{_MAGNITUDE_ONLY}"))


#: GE's private image type (0043,102F), creator GEMS_PARM_01: 0 magnitude, else these.
_GE_KINDS = {1: "phase", 2: "real", 3: "imaginary"}


def _ge_image_type(ds: Dataset) -> int | None:
    """GE's private image type (0043,102F) when its creator (0043,0010) is GE's, else ``None``
    (a signed short; read as raw little-endian bytes where the VR is unknown)."""
    try:
        if not str(ds.get((0x0043, 0x0010)).value).upper().startswith("GEMS"):
            return None
        value = ds[(0x0043, 0x102F)].value
        if isinstance(value, (bytes, bytearray)):
            return int.from_bytes(bytes(value[:2]), "little", signed=True) if len(value) >= 2 \
                else None
        return int(value[0] if isinstance(value, (list, tuple)) else value)
    except Exception:  # noqa: BLE001 - absent, or not GE's: no word from it
        return None


def real_world_scale(ds: Dataset, path: Path) -> tuple[float, float] | None:
    """``(slope, intercept)`` of the first item of RealWorldValueMappingSequence that has a slope
    (for images without a Modality LUT); ``None`` without a sequence. A sequence whose items give
    no slope (lookup tables in RealWorldValueLUTData, or nothing) is refused: its values were
    returned unmapped."""
    if not ds.get("RealWorldValueMappingSequence"):
        return None
    items = list(ds.RealWorldValueMappingSequence)
    item = next((i for i in items if "RealWorldValueSlope" in i), None)
    if item is None:
        what = ("maps the stored values through a lookup table (RealWorldValueLUTData), which "
                "is not read" if any("RealWorldValueLUTData" in i for i in items) else
                "holds neither RealWorldValueSlope nor RealWorldValueLUTData")
        raise DataFormatError(path, "RealWorldValueMappingSequence", (
            f"no item gives a slope: it {what}: the values would be the stored ones, not the "
            "real world values; export the series with a linear mapping (RealWorldValueSlope / "
            "Intercept) or a RescaleSlope / RescaleIntercept"))
    try:
        slope = float(item.RealWorldValueSlope)
        intercept = float(item.get("RealWorldValueIntercept", 0) or 0)
    except (TypeError, ValueError) as err:
        raise DataFormatError(path, "RealWorldValueSlope/Intercept",
                              f"not a number ({err})") from None
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise DataFormatError(path, "RealWorldValueSlope/Intercept",
                              f"non-finite ({slope}, {intercept})")
    if slope == 0:
        raise DataFormatError(path, "RealWorldValueSlope",
                              "is 0: every pixel would map to the intercept")
    return slope, intercept


#: Header elements that tell images of one position apart: (keyword, what, split by).
_SPLITS = (("EchoNumbers", "echoes", "echo"), ("EchoTime", "echo times", "echo"),
           ("TemporalPositionIdentifier", "time points", "time point"),
           ("AcquisitionNumber", "acquisitions", "acquisition"))


def _number(ds: Dataset, keyword: str) -> float | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else float(value)
    except Exception:  # noqa: BLE001 - several values, not a number, a malformed element
        return None


def same_position_reason(a: Dataset, b: Dataset, series: list[Dataset]) -> str | None:
    """Why images ``a`` and ``b`` of ``series`` share a position when :data:`_SPLITS` tells:
    ``"two echoes (EchoNumbers 1, 2): split the series by echo into separate folders, ..."``;
    ``None`` when none of those elements differs between them."""
    for keyword, what, by in _SPLITS:
        va, vb = _number(a, keyword), _number(b, keyword)
        if va is None or vb is None or va == vb:
            continue
        found = sorted({v for v in (_number(ds, keyword) for ds in series) if v is not None})
        shown = ", ".join(f"{v:g}" for v in found[:6]) + (", ..." if len(found) > 6 else "")
        more = f"; the series holds {len(found)}: {shown}" if len(found) > 2 else ""
        return (f"two {what} ({keyword} {min(va, vb):g}, {max(va, vb):g}{more}): split the "
                f"series by {by} into separate folders, one {by} each, and pass each as an input")
    return None
