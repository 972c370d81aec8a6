"""Stored pixel words of one DICOM slice (:mod:`mrirecon.io.dicom_read`): padding and the bits
above HighBit, seen before pydicom clears them.

pydicom clears the bits above BitsStored of uncompressed, RLE and JPEG data (not of JPEG 2000
or JPEG-LS, whose codestream has its own precision). :func:`decode` asks for the words as
stored, looks at them, and clears those bits itself, the same way (left then right shift in
the array's type), so the values are the ones pydicom gives, from one decode:

* **PixelPaddingValue** (0028,0120), with **PixelPaddingRangeLimit** (0028,0121): pixels
  outside the scanned field of view, not tissue. A CT scanner's padding word may lie outside
  BitsStored (0xF830 with 12 bits stored), so the words are compared before and after the
  clearing. :func:`padding_as_air` reads them as air, with a note (they were read as tissue:
  +62512 HU, or +1072 HU after pydicom's clearing); a warning when the padding value is within
  BitsStored and reads as tissue (a wrong PixelPaddingValue would turn tissue into air).
* **bits above HighBit** that are neither the sign extension of a signed value, nor padding,
  nor an overlay plane declared in them (60xx,0102 without 60xx,3000): a bit depth labelled
  too small (words of 16 bits labelled BitsStored 12: 5000 HU of metal read as 904) or overlay
  bits. Counted for a warning; the values stay the cleared ones, as the standard reads them.
* **lossy compression**: LossyImageCompression 01, or a transfer syntax that is (or may be)
  lossy, for a note and for the exported series (PS3.3 C.7.6.1.1.5: once 01, never reset).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes

from mrirecon.io.errors import DataFormatError, DataNote, DataWarning, warn_data

#: Transfer syntaxes whose words pydicom does not clear above BitsStored.
_NOT_CLEARED = frozenset(JPEG2000TransferSyntaxes) | frozenset(JPEGLSTransferSyntaxes)
#: Lossy transfer syntaxes -> LossyImageCompressionMethod.
LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.50": "ISO_10918_1",  # JPEG baseline
                  "1.2.840.10008.1.2.4.51": "ISO_10918_1"}  # JPEG extended
#: Transfer syntaxes that may be lossy or not (the LossyImageCompression attribute says).
MAYBE_LOSSY_SYNTAXES = {"1.2.840.10008.1.2.4.81": "ISO_14495_1",  # JPEG-LS near-lossless
                        "1.2.840.10008.1.2.4.91": "ISO_15444_1",  # JPEG 2000
                        "1.2.840.10008.1.2.4.93": "ISO_15444_2",  # JPEG 2000 part 2
                        "1.2.840.10008.1.2.4.203": "ISO_15444_15",  # HTJ2K
                        "1.2.840.10008.1.2.4.112": "ISO_18181_1"}  # JPEG XL
LOSSY_KEYWORDS = ("LossyImageCompression", "LossyImageCompressionRatio",
                  "LossyImageCompressionMethod")


@dataclass
class PixelFacts:
    """What :func:`decode` found in one slice's stored words."""

    padding: np.ndarray | None = None  # padding pixels (bool, the image's shape)
    padding_value: str = ""  # "the padding value 63536" (or the range)
    padding_beyond_bits: bool = False  # the padding words lie outside BitsStored (0xF830 in 12)
    signed: bool = False
    high_bits: int = 0  # pixels with bits above HighBit (not padding, not declared overlays)
    max_word: int = 0  # the largest such word as stored
    read_as: int = 0  # the value it is read as (bits cleared)
    bits_stored: int = 0
    scale: tuple[float, float] = (1.0, 0.0)  # (slope, intercept) to the image's values


def _word(value, ds: Dataset, path: Path, keyword: str, bits: int, signed: bool) -> int:
    """A padding value as a word of the pixel data's type (``US or SS``: -2000 given for
    unsigned words is the word 0xF830, 63536 given for signed ones is -2000)."""
    if isinstance(value, (bytes, bytearray)) and len(value) in (1, 2, 4):
        little = bool(getattr(ds, "original_encoding", (None, True))[1] is not False)
        value = int.from_bytes(value, "little" if little else "big", signed=signed)
    try:
        word = int(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, keyword, f"expected one integer, got {value!r}") from None
    if not signed and word < 0:
        word += 1 << bits
    elif signed and word >= 1 << (bits - 1):
        word -= 1 << bits
    return word


def _padding_range(ds: Dataset, path: Path, bits: int, signed: bool
                   ) -> tuple[int, int, str] | None:
    if "PixelPaddingValue" not in ds:
        return None
    try:
        value = ds["PixelPaddingValue"].value
        limit = ds["PixelPaddingRangeLimit"].value if "PixelPaddingRangeLimit" in ds else None
    except Exception as err:  # noqa: BLE001 - a malformed element fails on access
        raise DataFormatError(path, "PixelPaddingValue", f"unreadable element ({err})") from None
    if value is None or value == b"" or value == "":
        return None  # present without a value: no padding
    lo = _word(value, ds, path, "PixelPaddingValue", bits, signed)
    text = f"the padding value {lo}"
    hi = lo
    if limit is not None and limit != b"" and limit != "":
        hi = _word(limit, ds, path, "PixelPaddingRangeLimit", bits, signed)
        text = f"padding values {lo} to {hi} (PixelPaddingRangeLimit)"
        lo, hi = min(lo, hi), max(lo, hi)
    return lo, hi, text


def _in_range(arr: np.ndarray, lo: int, hi: int) -> np.ndarray:
    info = np.iinfo(arr.dtype)
    if hi < info.min or lo > info.max:
        return np.zeros(arr.shape, bool)
    lo, hi = max(lo, int(info.min)), min(hi, int(info.max))
    if lo == hi:
        return arr == arr.dtype.type(lo)
    return (arr >= arr.dtype.type(lo)) & (arr <= arr.dtype.type(hi))


def _overlay_bits(ds: Dataset) -> int:
    """Bits of the pixel words that hold declared overlay planes (retired: 60xx,0102 Overlay
    Bit Position without 60xx,3000 Overlay Data)."""
    bits = 0
    for group in range(0x6000, 0x6020, 2):
        if (group, 0x0102) not in ds or (group, 0x3000) in ds:
            continue
        try:
            position = int(ds[group, 0x0102].value)
        except (TypeError, ValueError):
            continue
        if 0 <= position < 64:
            bits |= 1 << position
    return bits


def decode(ds: Dataset, path: Path, ct: bool) -> tuple[np.ndarray, PixelFacts]:
    """The slice's stored values as pydicom gives them (bits above BitsStored cleared, where
    pydicom clears them) and what the words held before (:class:`PixelFacts`; padding for
    CT only). With pydicom 2 (no decoding options) the words are taken as it gives them,
    unchecked for bits above HighBit."""
    options = getattr(ds, "pixel_array_options", None)  # pydicom >= 3
    try:
        if options is not None:
            options(correct_unused_bits=False)  # cleared below, after a look
        arr = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - decoder errors vary with the transfer syntax
        syntax = ds.file_meta.get("TransferSyntaxUID", "?") if "file_meta" in dir(ds) else "?"
        raise DataFormatError(path, "PixelData",
                              f"cannot be decoded (TransferSyntaxUID {syntax}): {err}") from None
    facts = PixelFacts()
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        return arr, facts
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if "file_meta" in dir(ds) else ""
    allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    facts.bits_stored = stored
    facts.signed = signed = arr.dtype.kind == "i"
    padding = _padding_range(ds, path, 8 * arr.dtype.itemsize, signed) if ct else None
    pad = None if padding is None else _in_range(arr, padding[0], padding[1])
    if options is not None and syntax not in _NOT_CLEARED and allocated > stored:
        if not arr.flags.writeable:
            arr = arr.copy()
        nbits = 8 * arr.dtype.itemsize
        if stored < nbits:
            words = arr.view(arr.dtype.str.replace("i", "u"))  # the same bytes, unsigned
            above = words >> words.dtype.type(stored)
            keep = ((1 << (nbits - stored)) - 1) & ~(_overlay_bits(ds) >> stored)
            if signed:  # the bits above a signed value repeat its sign bit
                sign = (words >> words.dtype.type(stored - 1)) & words.dtype.type(1)
                above = above ^ (sign * words.dtype.type((1 << (nbits - stored)) - 1))
            bad = (above & words.dtype.type(keep)) != 0
            if pad is not None:
                bad &= ~pad
            count = int(np.count_nonzero(bad))
            if count:
                flagged = np.flatnonzero(bad)
                values = arr.ravel()[flagged].astype(np.int64)
                j = int(np.argmax(np.abs(values)))
                facts.high_bits, facts.max_word = count, int(values[j])
        shift = allocated - stored  # what pydicom's correct_unused_bits does
        np.left_shift(arr, shift, out=arr)
        np.right_shift(arr, shift, out=arr)
        if facts.high_bits:
            facts.read_as = int(arr.ravel()[flagged[j]])
        if pad is not None:  # a padding word within BitsStored, with bits set above it
            pad |= _in_range(arr, padding[0], padding[1])
    if pad is not None and pad.any():
        facts.padding, facts.padding_value = pad, padding[2]
        low, high = ((-(1 << (stored - 1)), (1 << (stored - 1)) - 1) if signed
                     else (0, (1 << stored) - 1))
        facts.padding_beyond_bits = padding[1] < low or padding[0] > high
    return arr, facts


def lossy(ds: Dataset) -> str:
    """``"01"`` for an image that was lossy compressed (LossyImageCompression 01, or a lossy
    transfer syntax), ``"maybe"`` for one in a transfer syntax that may be lossy and no
    LossyImageCompression, ``""`` otherwise."""
    value = str(ds.get("LossyImageCompression", "") or "").strip()
    if value == "01":
        return "01"
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if "file_meta" in dir(ds) else ""
    if syntax in LOSSY_SYNTAXES:
        return "01"
    return "maybe" if syntax in MAYBE_LOSSY_SYNTAXES and value != "00" else ""


def lossy_method(ds: Dataset) -> str:
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if "file_meta" in dir(ds) else ""
    return LOSSY_SYNTAXES.get(syntax) or MAYBE_LOSSY_SYNTAXES.get(syntax, "")


def _joined(value) -> str:
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(str(v) for v in value)
    return "" if value is None else str(value)


#: What padding pixels are read as in a CT series in HU: the air of a scanner's HU scale
#: (stored 0 with RescaleIntercept -1024); below -1000 HU, so a CT pipeline's attenuation of
#: it is 0, as it is of the padding values that were read (e.g. -3024 HU).
PADDING_AIR_HU = -1024.0
_TISSUE_HU = (-900.0, 3071.0)  # a padding value reads as tissue (not air, nor beyond the scale)


def padding_as_air(data: np.ndarray, facts: list[PixelFacts], paths: list[Path], kind: str,
                   folder: Path) -> None:
    """Set the padding pixels of a CT series (:func:`mrirecon.io.dicom_pixels.decode`) to air
    in place: :data:`PADDING_AIR_HU`, or outside HU the smallest value of the other pixels; a
    :class:`DataNote` says how many changed and from what (they were read as tissue: a ring of
    +62512 HU, or of +1072 HU where pydicom cleared a padding word's high bits)."""
    padded = [k for k, f in enumerate(facts) if f.padding is not None]
    if not padded:
        return
    mask = np.zeros(data.shape, bool)
    for k in padded:
        mask[k] = facts[k].padding
    if kind == "hu":
        air, unit = PADDING_AIR_HU, " HU"
    else:
        rest = data[~mask]
        air, unit = (float(rest.min()) if rest.size else 0.0), ""
    before = data[mask]
    data[mask] = air
    if not (before != air).any():
        return  # padding stored as air already (PixelPaddingValue 0 with intercept -1024)
    low, high = float(before.min()), float(before.max())
    was = f"{low:g}{unit}" if low == high else f"{low:g} to {high:g}{unit}"
    text = (f"{int(mask.sum()):,} pixels in {len(padded)} of {len(paths)} files (first: "
            f"{paths[padded[0]].name}) hold {facts[padded[0]].padding_value} (stored): padding "
            f"outside the scanned field of view, not tissue; read as air ({air:g}{unit}), not as "
            f"the {was} their stored values give")
    # a padding value within BitsStored that reads as tissue: right by the standard, but a
    # wrong PixelPaddingValue would turn tissue into air, so it is said as a warning
    tissue = (kind == "hu" and bool(((before > _TISSUE_HU[0]) & (before <= _TISSUE_HU[1])).any())
              and not all(facts[k].padding_beyond_bits for k in padded))
    category = DataWarning if tissue else DataNote
    warn_data(category(folder, "PixelPaddingValue", text + (
        " (a tissue value: if those pixels are not padding, the files' PixelPaddingValue is "
        "wrong)" if tissue else ""), kind="padding"), stacklevel=3)


def warn_high_bits(facts: list[PixelFacts], paths: list[Path], modality: str) -> None:
    """A :class:`DataWarning` for stored words with bits set above HighBit (cleared, as the
    standard reads them): a bit depth labelled too small, or overlay bits."""
    hit = [k for k, f in enumerate(facts) if f.high_bits]
    if not hit:
        return
    k = max(hit, key=lambda i: abs(facts[i].max_word))
    f = facts[k]
    slope, intercept = f.scale
    unit = " HU" if modality == "CT" else ""
    bits = abs(f.max_word).bit_length() + (f.max_word < 0)
    warn_data(DataWarning(paths[k], "BitsStored", (
        f"{sum(facts[i].high_bits for i in hit):,} pixels in {len(hit)} of {len(paths)} files "
        f"have bits set above HighBit (largest stored word {f.max_word}, BitsStored "
        f"{f.bits_stored}): a mislabelled bit depth or overlay bits in the pixel data"
        + (", or signed values not sign-extended" if f.signed else "") + "; read "
        "with those bits cleared, as the standard reads them, so that word gives "
        f"{f.read_as * slope + intercept:g}{unit}, not {f.max_word * slope + intercept:g}{unit}; "
        f"if the words are {bits}-bit values, correct BitsStored and HighBit in the files"),
        kind="high_bits"), stacklevel=3)


def lossy_compression(items: list[tuple[Path, Dataset]], header: Dataset, folder: Path) -> None:
    """A :class:`DataNote` for a series that was (or may have been) lossy compressed; the
    header (the export's source) then says LossyImageCompression 01 with the ratio and
    method of the first such file, whichever slice came first (PS3.3 C.7.6.1.1.5: once 01,
    never reset)."""
    states = [(path, ds, lossy(ds)) for path, ds in items]
    sure = [(path, ds) for path, ds, state in states if state == "01"]
    maybe = [(path, ds) for path, ds, state in states if state == "maybe"]
    if not sure and not maybe:
        return
    path, ds = (sure or maybe)[0]
    count = f"{len(sure or maybe)} of {len(items)} files, first: {path.name}"
    syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if "file_meta" in dir(ds) else ""
    if not sure:
        warn_data(DataNote(folder, "TransferSyntaxUID", (
            f"{syntax} ({getattr(ds.file_meta.TransferSyntaxUID, 'name', '')}; {count}) may be "
            "lossy and the files hold no LossyImageCompression: the images may carry "
            "compression artefacts, which a score against them as the reference counts too"),
            kind="lossy"), stacklevel=3)
        return
    if str(header.get("LossyImageCompression", "") or "").strip() != "01":
        for keyword in LOSSY_KEYWORDS:
            if keyword in header:
                del header[keyword]
            if keyword in ds and ds[keyword].value not in (None, ""):
                header[keyword] = ds[keyword]
        header.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" not in header and lossy_method(ds):
        header.LossyImageCompressionMethod = lossy_method(ds)
    try:
        ratio = header.get("LossyImageCompressionRatio")
        ratio = float(ratio[0] if isinstance(ratio, MultiValue) else ratio)
        ratio_text = f", ratio {ratio:.4g}:1"
    except (TypeError, ValueError, IndexError):
        ratio_text = ""
    method = _joined(header.get("LossyImageCompressionMethod", ""))
    warn_data(DataNote(folder, "LossyImageCompression", (
        f"01 ({count}{ratio_text}{', ' + method if method else ''}): the images were lossy "
        "compressed and carry its artefacts, which a score against them as the reference counts "
        "too; a series exported from them says LossyImageCompression 01"), kind="lossy"),
        stacklevel=3)
