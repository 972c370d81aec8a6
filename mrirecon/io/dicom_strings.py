"""DICOM strings: values copied from a source file or given by the user made valid.

:func:`sanitise_strings` strips control characters and cuts values to their VR's length (the
value delimiter ``\\`` of an element of VM 1 becomes ``/``); :func:`_has_non_ascii` tells whether
a data set needs SpecificCharacterSet ``ISO_IR 192``; :func:`_ds` formats decimal strings. Used
by :mod:`mrirecon.io.dicom`.
"""

from __future__ import annotations

import math

from pydicom.datadict import dictionary_VM
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName, format_number_as_ds

__all__ = ["sanitise_strings"]


#: A value within this relative distance of a decimal of at most :data:`_SHORT_DIGITS`
#: significant digits is that decimal seen through float32 (ISMRMRD headers and positions are
#: float32: 4.33 arrives as 4.32999992370605): float32 keeps 24 bits.
_FLOAT32_REL = 2.0**-24
_SHORT_DIGITS = 6


def _ds(value: float, *, exact: bool = False) -> str:
    """Format ``value`` as a DICOM decimal string (at most 16 characters).

    A value that is a decimal of at most 6 significant digits up to float32 rounding is
    written as that decimal (``4.33``, not ``4.32999992370605``): its other digits are noise of
    a float32 source. ``exact`` writes every digit (direction cosines, which readers check for
    orthonormality)."""
    if not math.isfinite(value):
        raise ValueError(f"DICOM decimal string: value {value} is not finite")
    value = float(value)
    if not exact and value != 0:
        for digits in range(1, _SHORT_DIGITS + 1):
            short = float(f"{value:.{digits}g}")
            if abs(short - value) <= _FLOAT32_REL * abs(value):
                return format_number_as_ds(short)
    return format_number_as_ds(value)


def _has_non_ascii(ds: Dataset) -> bool:
    """Whether any string value of ``ds``, of a multi-valued element or inside a sequence,
    needs a character set beyond ASCII (the default repertoire)."""
    for elem in ds:
        if elem.VR == "SQ":
            if any(_has_non_ascii(item) for item in elem.value or []):
                return True
            continue
        values = elem.value if isinstance(elem.value, (list, tuple, MultiValue)) else [elem.value]
        if any(isinstance(v, (str, PersonName)) and not str(v).isascii() for v in values):
            return True
    return False


# Maximum value lengths of the string VRs (PS3.5 table 6.2-1; PN: per component group)
_VR_MAX = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
           "LT": 10240, "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64}
_TEXT_VRS = ("LT", "ST", "UT", "UC")  # free text: CR, LF, FF and TAB are allowed


def _single_valued(elem) -> bool:
    """An element of VM 1 whose VR splits values at ``\\`` (not LT/ST/UT, where a backslash
    is text); private and unknown tags are left alone."""
    if elem.VR in _TEXT_VRS:
        return False
    try:
        return dictionary_VM(elem.tag) == "1"
    except KeyError:
        return False


def _clean_text(value: str, vr: str) -> str:
    allowed = "\r\n\f\t" if vr in _TEXT_VRS else ""
    text = "".join(c for c in value if (c >= " " and c != "\x7f") or c in allowed)
    if vr == "PN":
        return "=".join(g[: _VR_MAX["PN"]] for g in text.split("=")[:3])
    limit = _VR_MAX.get(vr)
    return text[:limit].rstrip() if limit else text


def sanitise_strings(ds: Dataset) -> Dataset:
    """Strip NUL and control characters from every string element of ``ds`` (values copied
    from a source file or given by the user) and cut values to their VR's maximum length, so
    the written file is valid and no viewer sees hidden characters. In an element of VM 1 the
    value delimiter ``\\`` becomes ``/`` (``T1\\T2`` was written as two values of
    SeriesDescription). Works in place."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                sanitise_strings(item)
            continue
        if elem.VR not in _VR_MAX and elem.VR not in _TEXT_VRS:
            continue
        value = elem.value
        if value is None:
            continue
        single = _single_valued(elem)
        if isinstance(value, (list, tuple, MultiValue)):
            if single and len(value) > 1:
                elem.value = _clean_text("/".join(str(v) for v in value), elem.VR)
                continue
            cleaned = [_clean_text(str(v), elem.VR) for v in value]
            if cleaned != [str(v) for v in value]:
                elem.value = cleaned
        elif isinstance(value, (str, PersonName)):
            cleaned = _clean_text(str(value), elem.VR)
            if single:
                cleaned = cleaned.replace("\\", "/")
            if cleaned != str(value):
                elem.value = cleaned
    return ds
