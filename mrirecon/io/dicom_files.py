"""Which files of a DICOM series folder are slices (:mod:`mrirecon.io.dicom_read`).

A file is parsed unless it is clearly something else: hidden files, a ``DICOMDIR`` index, text
(a README, notes, JSON), and files of known other formats (by their first bytes, or by a
suffix such as ``.png`` or ``.h5``). Everything else must be read: a Part 10 file (``DICM`` at
byte 128), or else a bare data set without the 128-byte preamble and file meta (older scanners
and PACS exports), read with pydicom's ``force=True`` and kept when it holds a SOPClassUID.
A file that is neither (empty, a few bytes, a data set cut short) makes the series an error:
its slice would be missing from the volume. (Files that were not Part 10 and had no ``.dcm``
suffix were skipped: an empty last slice or a bare data set was silently left out.) So does a
compressed DICOM file (``IM0003.dcm.gz``, ``.dcm.bz2``, ``.dcm.xz``, or gzip data whose first
inflated kilobyte is DICOM, under any name): a compressed slice was skipped as an archive, and a
slice at either end of the stack was lost without a word. It is not decompressed (a small file
may inflate without bound): decompress it. Other compressed files are ignored.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pydicom
from pydicom import config
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from mrirecon.containers import MAX_LENGTH_MM
from mrirecon.io.errors import DataFormatError, DataWarning, quiet_warnings, warn_data

#: First bytes of formats that are not DICOM (images, archives, HDF5, PDF, TIFF).
_OTHER_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"%PDF", b"PK\x03\x04", b"\x1f\x8b",
                b"BZh", b"\xfd7zXZ", b"7z\xbc\xaf", b"\x89HDF", b"II*\x00", b"MM\x00*",
                b"\x93NUMPY", b"<?xml")
#: Suffixes of files that are not slices (text, images, archives, other data formats).
_OTHER_SUFFIXES = frozenset((
    ".txt", ".md", ".rst", ".json", ".xml", ".html", ".htm", ".csv", ".tsv", ".log", ".yaml",
    ".yml", ".ini", ".cfg", ".py", ".sh", ".bat", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".bmp",
    ".tif", ".tiff", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".tar", ".h5", ".hdf5", ".mrd",
    ".nii", ".nrrd", ".mha", ".mhd", ".npy", ".npz", ".pt", ".mat"))
_HEAD = 1024  # bytes read to recognise a file


def is_candidate(path: Path) -> bool:
    """A file the series reader looks at: no hidden file, no ``DICOMDIR`` index."""
    return path.is_file() and not path.name.startswith(".") and path.name.upper() != "DICOMDIR"


def head(path: Path, n: int = _HEAD) -> bytes | None:
    """The first ``n`` bytes of ``path``; ``None`` when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return None


def _is_text(data: bytes) -> bool:
    if not data or b"\x00" in data:
        return False
    for cut in range(4):  # the head may end inside a multi-byte character
        try:
            data[:len(data) - cut].decode("utf-8")
            return True
        except UnicodeDecodeError:
            continue
    return False


def bare_data_set_start(data: bytes) -> bool:
    """Whether ``data`` starts like a DICOM data set without preamble: the tag of a file meta
    (group 0002) or identifying (group 0008) element, little or big endian."""
    if len(data) < 8:
        return False
    return data[:2] in (b"\x02\x00", b"\x08\x00") or data[:2] == b"\x00\x08"


def clearly_not_dicom(path: Path, data: bytes) -> bool:
    """Text, or a file of another known format (first bytes, suffix, a NIfTI header); never a
    Part 10 file or a ``.dcm`` name."""
    if data[128:132] == b"DICM" or path.suffix.lower() == ".dcm":
        return False
    if path.suffix.lower() in _OTHER_SUFFIXES or data.startswith(_OTHER_MAGIC):
        return True
    nifti = len(data) >= 348 and (data[:4] in (b"\x5c\x01\x00\x00", b"\x00\x00\x01\x5c")
                                  or data[344:348] in (b"n+1\x00", b"ni1\x00"))
    return nifti or _is_text(data)


def looks_like_dicom(path: Path) -> bool:
    """Whether :func:`~mrirecon.io.dicom_read.read_dicom_series` would take ``path`` as a slice:
    a ``.dcm`` name, a DICOM Part 10 file (``DICM`` at byte 128) or a bare data set (a group
    0002 / 0008 tag at byte 0), other than a ``DICOMDIR`` index. Reads 1 KiB."""
    if not is_candidate(path):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    data = head(path)
    if data is None:
        return False
    return data[128:132] == b"DICM" or (bare_data_set_start(data)
                                        and not clearly_not_dicom(path, data))


def _with_transfer_syntax(ds: Dataset) -> Dataset:
    """A bare data set has no file meta: its transfer syntax is the encoding pydicom found
    (implicit / explicit VR, byte order), which the pixel decoder needs."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return ds
    implicit, little = getattr(ds, "original_encoding", (True, True))
    if implicit is None:
        return ds
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
                              if little else ExplicitVRBigEndian)
    return ds


#: Compressed-file suffixes; a slice named ``*.dcm.<suffix>`` fails the series by name.
_COMPRESSED = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}


def _compressed_slice(path: Path, data: bytes) -> str | None:
    """Why a compressed file fails the series (see the module), or ``None``: a ``*.dcm.gz`` /
    ``.bz2`` / ``.xz`` name, or gzip data whose first decompressed bytes are DICOM (a Part 10
    preamble or a bare data set; at most 1 KiB is inflated, from the bytes already read, so
    nothing can inflate without bound). Other compressed files (``orig.mgz``, a raw
    ``meas.dat.gz``, notes) are no slices: ignored, as their uncompressed kin are."""
    suffix, inner = path.suffix.lower(), Path(path.stem).suffix.lower()  # .gz, .dcm
    kind = _COMPRESSED.get(suffix)
    if kind is None and not data.startswith(b"\x1f\x8b"):
        return None
    if not (kind is not None and inner in (".dcm", ".dicom", ".ima")):
        if not data.startswith(b"\x1f\x8b"):
            return None
        try:  # the first bytes of the stream, bounded (a truncated head is fine)
            start = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 1024)
        except zlib.error:
            return None
        if start[128:132] != b"DICM" and not bare_data_set_start(start):
            return None
        kind = "gzip"
    tool = "gunzip" if kind == "gzip" else f"{kind} -d"
    return f"a {kind}-compressed DICOM file: decompress it ({tool}; compressed files are not read)"


def read_candidate(path: Path) -> tuple[Dataset | None, str | None]:
    """``(data set, None)`` for a slice; ``(None, None)`` for a file that is not DICOM (it is
    ignored); ``(None, why)`` for a damaged or gzip-compressed one (the series is then an
    error). Data sets without a SOPClassUID are damaged when the file is DICOM by name or
    bytes."""
    try:
        size = path.stat().st_size
    except OSError as err:
        return None, f"cannot be read ({err.strerror or err})"
    if size == 0:
        return None, "empty (0 bytes): a slice cut off when the series was copied or exported?"
    data = head(path)
    if data is None:
        return None, "cannot be read"
    dcm, part10 = path.suffix.lower() == ".dcm", data[128:132] == b"DICM"
    if not part10 and (why := _compressed_slice(path, data)):
        return None, why
    if not part10 and clearly_not_dicom(path, data):
        return None, None  # e.g. a README
    bare = bare_data_set_start(data)
    if part10 and (why := _deflate_bomb(path, data, size)):
        return None, why
    try:
        if part10:
            ds = pydicom.dcmread(path)
        else:  # no preamble: a bare data set, or something else that pydicom may parse
            with quiet_warnings():  # guesses of the encoding of unknown bytes (one lock)
                ds = _with_transfer_syntax(pydicom.dcmread(path, force=True))
    except Exception as err:  # noqa: BLE001 - truncated/corrupt files fail in many ways
        if part10 or dcm or bare or size < 132:
            return None, (f"{type(err).__name__}: {err}" if part10 else
                          f"not a DICOM file ({type(err).__name__}: {err})")
        return None, None  # an unknown binary file, no DICOM data set
    if "SOPClassUID" in ds:
        return ds, None
    # pydicom stops quietly at a truncation: a DICOM file whose data set ends before its
    # SOPClassUID is a damaged file of the series, not something to skip
    if part10 or dcm or bare or "MediaStorageSOPClassUID" in getattr(ds, "file_meta", {}):
        return None, "no SOPClassUID (truncated?)"
    if size < 132:
        return None, f"only {size} bytes, no DICOM data set: a slice cut off (truncated?)"
    return None, None


def upper_values(ds: Dataset, keyword: str) -> list[str]:
    """The values of element ``keyword`` (a multi-valued one split at ``\\``), stripped and
    upper case; ``[]`` when absent or malformed."""
    try:
        value = ds.get(keyword)
    except Exception:  # noqa: BLE001 - a malformed element fails on access
        return []
    if value is None:
        return []
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else str(value).split("\\")
    return [str(v).strip().upper() for v in values]


def localizer(ds: Dataset) -> bool:
    """A CT localizer (scout, topogram): ImageType value 3 ``LOCALIZER``, a projection
    radiograph rather than a cross-section (the CT Image Module's defined terms)."""
    types = upper_values(ds, "ImageType")
    return str(ds.get("Modality", "")) == "CT" and len(types) >= 3 and types[2] == "LOCALIZER"


def localizer_problem(ds: Dataset) -> str:
    types = "\\".join(upper_values(ds, "ImageType"))
    return (f"{types}: a projection radiograph (localizer, scout or topogram), not a "
            "cross-section of the patient; it cannot be read as a CT slice")


#: Private elements of DICOM-CT-PD, TCIA's format of CT projection data (LDCT-and-Projection-data:
#: one CT file per projection, line integrals in PixelData, the geometry in groups 7029-7033).
CT_PD_ELEMENTS = {0x70291010: "(7029,1010) NumberofDetectorRows",
                  0x70311001: "(7031,1001) DetectorFocalCenterAngularPosition"}


def refuse_projection_data(ds: Dataset, path: Path) -> None:
    """Refuse a DICOM-CT-PD projection file (:data:`CT_PD_ELEMENTS`) before its geometry is
    looked for: as published it lacks the image plane module ("ImageOrientationPatient:
    missing" asked for one), and with one added its projections were read as axial HU slices,
    re-projected and reconstructed, exit 0."""
    for tag, name in CT_PD_ELEMENTS.items():
        if tag in ds:
            raise DataFormatError(path, name, (
                "DICOM-CT-PD projection data (one file per projection of a helical scan: "
                "detector line integrals, the geometry in private tags), not images: mrirecon "
                "reconstructs CT from 2-D sinograms (parallel or fan beam; helical and cone-beam "
                "geometries are not modelled): rebin the projections to one sinogram per slice "
                "and write them with mrirecon.io.lodopab.write_lodopab (README: CT from your own "
                "sinogram), or read the scanner's reconstructed image series"))


def not_a_series_folder(path: Path) -> Exception:
    """The error for a ``path`` given where a DICOM series folder is expected: a DICOM slice file
    (``.dcm``, Part 10 or a bare data set, with or without a suffix) is named as one slice of the
    series in its folder when :func:`read_candidate` reads it, else as no readable DICOM file
    (a ``.dcm`` name on other bytes: it was "one DICOM slice", and its folder then failed with
    "no SOPClassUID"); another file as no folder; a missing path is a ``FileNotFoundError``.
    (A slice was "FileNotFoundError: ... is not a folder", or, without ``.dcm``, "not a readable
    HDF5 file (file signature not found)".)"""
    path = Path(path)
    if not os.path.lexists(path):
        return FileNotFoundError(f"read_dicom_series: {path} does not exist")
    if looks_like_dicom(path):  # by its name or first bytes: read it as the series reader would
        ds, why = read_candidate(path)
        if ds is not None or why is None:
            return DataFormatError(path, "file", "is one DICOM slice; pass the folder of its "
                                                 f"series ({path.parent})")
        data = head(path) or b""
        if data[128:132] != b"DICM" and not bare_data_set_start(data):
            return DataFormatError(path, "file", "is not a readable DICOM file: it is named .dcm "
                                   "but holds no DICOM (no DICM marker at byte 128, no data set "
                                   "at its start); pass the folder of a DICOM series, or an "
                                   "input of another format")
        return DataFormatError(path, "file", f"is a DICOM file that cannot be read ({why}); "
                               "replace it with an intact copy (a failed export or copy?) and "
                               f"pass the folder of its series ({path.parent})")
    return DataFormatError(path, "file", "is a file, not a DICOM series folder; pass the folder "
                                         "that holds the series' slice files")


def uid_as_written(ds: Dataset, keyword: str) -> str:
    """The UI element ``keyword`` of ``ds`` as one string ("" when absent; several values
    joined by the delimiter), decoded from the file's bytes as pydicom decodes them but without
    its validation, whose "Invalid value for VR UI" warning needed a process-wide filter (not
    thread-safe) to silence; the element is stored back converted, unvalidated, so later
    reads of it say nothing either."""
    tag = Tag(keyword)
    elem = ds.get_item(tag) if tag in ds else None
    if not isinstance(elem, RawDataElement):
        value = None if elem is None else elem.value
        if isinstance(value, (list, tuple, MultiValue)):
            return "\\".join(str(v) for v in value)
        return "" if value is None else str(value)
    text = (elem.value or b"").decode(default_encoding).rstrip("\x00 ")
    ds[tag] = DataElement(tag, "UI", text or None, validation_mode=config.IGNORE)
    return text


def _series_uid(path: Path) -> str | None:
    """SeriesInstanceUID of a DICOM file (its header only); ``None`` when it cannot be read."""
    try:
        with quiet_warnings():  # one lock: see mrirecon.io.errors.quiet_warnings
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True,
                                 specific_tags=["SeriesInstanceUID"])
            return str(ds.SeriesInstanceUID).strip(" \x00") if "SeriesInstanceUID" in ds else None
    except Exception:  # noqa: BLE001 - damaged files of another series are not this reader's
        return None


def check_subfolders(folder: Path, uid: str, count: int) -> None:
    """Look in the subfolders of a series folder (all depths, hidden ones and links to folders
    left out) for DICOM files of series ``uid``, of which ``folder`` holds ``count`` slices: any
    is refused naming them (a series continued in a subfolder was read with half its slices,
    without a word); subfolders holding DICOM files of other series only are named in a
    :class:`DataWarning` ("N subfolder(s) not read"), as ``mrirecon run`` says for the subfolders
    of an HDF5 folder. Subfolders without DICOM files (PNG exports, JPEG thumbnails, a report)
    are not named: the warning said they held "other series or files"."""
    mine: list[Path] = []
    others: list[str] = []
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith(".") or sub.is_symlink() or not sub.is_dir():
            continue
        found, files = [], 0
        for root, dirs, names in os.walk(sub):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(names):
                f = Path(root) / name
                if not looks_like_dicom(f):  # PNG exports, thumbnails, a report: no series
                    continue
                files += 1
                if _series_uid(f) == uid:
                    found.append(f)
        mine += found
        if files and not found:
            others.append(sub.name)
    if mine:
        where = sorted({str(f.parent.relative_to(folder)) for f in mine})
        raise DataFormatError(
            folder, "SeriesInstanceUID",
            f"{len(mine)} more slice file(s) of this series ({uid}) lie in subfolder(s) "
            f"{', '.join(where[:5])}{', ...' if len(where) > 5 else ''} (first: "
            f"{mine[0].relative_to(folder)}) beside its {count} here: a series is read from one "
            "folder and subfolders are not read; move its slice files into one folder")
    if others:
        warn_data(DataWarning(folder, "<subfolders>", (
            f"{len(others)} subfolder(s) not read ({', '.join(others[:5])}"
            f"{', ...' if len(others) > 5 else ''}): they hold DICOM files of other series, "
            "no slice of this one; pass them as inputs of their own to read them"),
            kind="subfolders"), stacklevel=4)


#: The Deflated Explicit VR Little Endian transfer syntax: the data set after the file meta is
#: one raw deflate stream, which pydicom inflates whole before parsing.
_DEFLATED = b"1.2.840.10008.1.2.1.99"


def _deflate_bomb(path: Path, head: bytes, size: int) -> str | None:
    """Why a deflated Part 10 file is refused before pydicom inflates it, or ``None``: its
    data set inflates past a quarter of the memory (a 1.75-MB file of 30000 x 30000 zero pixels
    took 9.7 GB, then a raw MemoryError). The stream is inflated in 1-MiB pieces and counted,
    never kept. The file meta's group length (0002,0000) says where the stream starts;
    ``size``: the file's bytes, as the caller read them."""
    import struct
    import zlib

    from mrirecon.io.errors import memory_bytes

    if _DEFLATED not in head[:1024] or head[132:136] != b"\x02\x00\x00\x00":
        return None
    start = 132 + 12 + struct.unpack("<I", head[140:144])[0]
    limit, total = memory_bytes() / 4, 0
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        with path.open("rb") as f:
            f.seek(start)
            while chunk := f.read(1 << 20):
                while chunk:
                    total += len(inflater.decompress(chunk, 1 << 24))
                    chunk = inflater.unconsumed_tail
                    if total > limit:
                        return (f"TransferSyntaxUID: the deflated data set inflates past "
                                f"{limit / 2**30:.1f} GiB (a quarter of the memory here) from "
                                f"{size / 2**20:.1f} MiB: corrupt, or a "
                                "decompression bomb; not read")
    except (OSError, zlib.error):
        return None  # pydicom's own reading names what is wrong
    return None



#: Acquisition settings that one series holds once: slices that disagree were read as one
#: series without a word (two series of one SeriesInstanceUID, a merged export)
SERIES_CONSTANTS = ("SliceThickness", "KVP")


def acquisition_mismatch(items: list[tuple[Path, Dataset]], folder: Path) -> None:
    """A :class:`DataWarning` for each :data:`SERIES_CONSTANTS` setting whose value differs
    between the slices of a series (the outputs take the first slice's)."""
    for keyword in SERIES_CONSTANTS:
        values = {}
        for path, ds in items:
            try:
                value = round(float(ds.get(keyword)), 3) if ds.get(keyword) not in (None, "") \
                    else None
            except (TypeError, ValueError):
                value = None
            if value is not None:
                values.setdefault(value, path)
        if len(values) > 1:
            (first, head), *rest = sorted(values.items(), key=lambda kv: kv[1].name)
            others = ", ".join(f"{v:g} ({p.name})" for v, p in rest[:3])
            warn_data(DataWarning(folder, keyword, (
                f"differs between the slices of the series: {first:g} ({head.name}) beside "
                f"{others}: two acquisitions in one series? The outputs carry the value of "
                "the first slice by position"), kind="mixed_acquisition"), stacklevel=3)


def single_slice_spacing(ds: Dataset, path: Path, positive) -> float:
    """The slice spacing of a one-slice series: SpacingBetweenSlices, else SliceThickness, else
    1 mm with a :class:`~mrirecon.io.errors.DataNote` (was assumed without a word)."""
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        spacing = positive(ds, name)
        if spacing and spacing > MAX_LENGTH_MM:  # named here: the geometry's refusal cannot tell
            raise DataFormatError(path, name, f"{spacing:g} mm is beyond {MAX_LENGTH_MM:g} mm "
                                  "(100 m): no slice is that thick (a corrupt header?)")
        if spacing:
            return spacing
    from mrirecon.io.errors import DataNote

    warn_data(DataNote(path, "SliceThickness", "absent, as SpacingBetweenSlices: the one slice "
                       "is taken as 1 mm thick in the NIfTI and DICOM outputs", kind="thickness"),
              stacklevel=3)
    return 1.0
