"""DICOM export: one :class:`~mrirecon.data.Image` volume -> one series of single-frame files.

MR volumes become MR Image Storage (1.2.840.10008.5.1.4.1.1.4), CT volumes CT Image Storage
(1.2.840.10008.5.1.4.1.1.2); one file per slice, explicit VR little endian with a file meta
header, written atomically. Pixels are 16-bit integers chosen from the data range:

* MR: as scanners store them: unsigned 12-bit values, the volume maximum at (almost) 4095, no
  Modality LUT (no RescaleSlope, which the MR IOD does not define), and the window from the
  0.5-99.5 percentiles of the tissue. ``stored * s`` reproduces the data to within ``s / 2``;
  ``s`` is kept in the Real World Value Mapping Sequence, which our reader applies.
* CT: signed, with RescaleSlope/RescaleIntercept so that ``stored * slope + intercept``
  reproduces the data to within ``slope / 2``. Integer-valued data inside the int16 range are stored as is (slope 1,
  intercept 0); otherwise ``intercept = 0`` and ``max |data|`` maps to (almost) 32767.
  ``kind == "hu"`` gives RescaleType ``HU``; ``"attenuation"`` (1/mm) gives ``US``. The window
  is the 0.5-99.5 percentiles of all voxels (a few diverged pixels at -2,900 or +4,000 HU made
  the full range 6,800 HU wide); ImageType value 3 is ``AXIAL`` in every orientation (the CT
  Image Module's defined terms are AXIAL, "any cross-sectional image, ... coronal, sagittal and
  oblique", and LOCALIZER; dciodvfy warns on any other).

De-identification is the default: nothing that identifies the patient (name, ID, birth date,
sex, age), no study dates/times, accession number, study UID or frame-of-reference UID is
copied from ``source_dataset`` unless ``keep_identity=True``; only acquisition technique (field
strength, TR/TE, sequence, kVp, patient position, ...) and the manufacturer are copied. The
frame of reference follows the identity (PS3.15's basic profile replaces it as it does the
study UID: a source UID links the series back to the patient's records), so only a series that
keeps the identity can be overlaid on its source in a viewer; it is kept only when the image
is placed (its positions are then the source's patient coordinates). Without a source, an MR
volume's raw-data ``header`` gives the technique (:mod:`mrirecon.io.dicom_technique`; the site
and protocol name, like the source's InstitutionName and ProtocolName, only with
``keep_identity``). Laterality (type 2C) is
copied when the source has it, left out for a body part known to be unpaired
(:data:`UNPAIRED_BODY_PARTS`) and written empty ("unknown") otherwise: leaving it out without
a body part is an error for dciodvfy. Decimal strings carry no float32 noise (``4.33``, not
``4.32999992370605``: :func:`_ds`). The reader lives in :mod:`mrirecon.io.dicom_read`; string
clean-up in :mod:`mrirecon.io.dicom_strings`; the quantisation in :mod:`mrirecon.io.dicom_quantise`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from mrirecon.containers import Header, Image, ImageGeometry
from mrirecon.io.atomic import atomic_path
from mrirecon.io.dicom_pixels import LOSSY_KEYWORDS
from mrirecon.io.dicom_quantise import (  # noqa: F401 - the quantisation's names re-exported
    CHUNK_VOXELS,
    MAX_CT_STEP_HU,
    MIN_TISSUE_LEVELS,
    MR_MAX_STORED,
    _float64_values,
    choose_mr_scale,
    choose_rescale,
    quantisation_warning,
)
from mrirecon.io.dicom_strings import (  # noqa: F401 - _ds, _clean_text re-exported
    _FLOAT32_REL,
    _SHORT_DIGITS,
    _clean_text,
    _ds,
    _has_non_ascii,
    sanitise_strings,
)
from mrirecon.io.dicom_technique import mr_identity, mr_technique
from mrirecon.io.errors import refuse_nonfinite

__all__ = ["choose_mr_scale", "choose_rescale", "quantisation_warning", "save_part10",
           "write_dicom_series"]

SOP_CLASS = {"MR": MRImageStorage, "CT": CTImageStorage}

#: Patient-module keywords accepted in ``patient=``.
PATIENT_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "PatientAge", "PatientSize", "PatientWeight", "PatientComments",
)
#: Identifying attributes copied from ``source_dataset`` only with ``keep_identity=True``.
IDENTITY_KEYWORDS = PATIENT_KEYWORDS + (
    "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName",
    "StudyDescription", "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime",
    "ContentDate", "ContentTime", "InstitutionName", "StationName",
    "ProtocolName",  # a descriptor a site types: PS3.15's basic profile removes it
    "PatientIdentityRemoved", "DeidentificationMethod",  # a source de-identified already
)
#: Non-identifying technique attributes copied from a source of the same modality.
TECHNIQUE_KEYWORDS = {
    "MR": (
        "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "PatientPosition",
        "Laterality", "ScanningSequence", "SequenceVariant", "ScanOptions", "MRAcquisitionType",
        "SequenceName", "RepetitionTime", "EchoTime", "InversionTime", "EchoTrainLength",
        "FlipAngle", "MagneticFieldStrength", "ImagingFrequency", "ImagedNucleus",
        "NumberOfAverages", "ReceiveCoilName",
    ),
    "CT": (
        "Manufacturer", "ManufacturerModelName", "BodyPartExamined", "PatientPosition",
        "Laterality", "KVP", "ExposureTime", "XRayTubeCurrent", "Exposure",
        "FilterType", "GantryDetectorTilt", "DataCollectionDiameter",
        "ReconstructionDiameter",
    ),  # not ConvolutionKernel: the source's reconstruction kernel is not ours
}
#: BodyPartExamined values of unpaired parts (dciodvfy's, checked one by one): Laterality is then
#: left out, as PS3.3 wants; for other parts and an unknown part it is written empty (unknown).
UNPAIRED_BODY_PARTS = frozenset(
    "HEAD BRAIN SKULL NECK CHEST ABDOMEN PELVIS ABDOMENPELVIS SPINE CSPINE TSPINE LSPINE SSPINE "
    "COCCYX HEART WHOLEBODY JAW CHESTABDOMEN CHESTABDPELVIS HEADNECK NECKCHEST NECKCHESTABDPELV "
    "AORTA LIVER PANCREAS SPLEEN BLADDER PROSTATE UTERUS STOMACH COLON RECTUM ESOPHAGUS TRACHEA "
    "LARYNX PHARYNX FACE NOSE GALLBLADDER CTSPINE TLSPINE LSSPINE CIRCLEOFWILLIS MEDIASTINUM "
    "STERNUM".split())
_SOFTWARE = "mrirecon"


def _real_world_mapping(slope: str, top: int) -> Dataset:
    """One Real World Value Mapping item: ``value = stored * slope`` (arbitrary units)."""
    item = Dataset()
    item.RealWorldValueFirstValueMapped = 0
    item.RealWorldValueLastValueMapped = int(top)
    item.RealWorldValueIntercept = 0.0
    item.RealWorldValueSlope = float(slope)
    item.LUTExplanation = "reconstructed magnitude, arbitrary units"
    item.LUTLabel = "MRIRECON"
    unit = Dataset()
    unit.CodeValue = "1"
    unit.CodingSchemeDesignator = "UCUM"
    unit.CodeMeaning = "no units"
    item.MeasurementUnitsCodeSequence = [unit]
    return item


def _as_numpy(image: Image, folder: str | os.PathLike) -> np.ndarray:
    """``image.data`` as a real numpy array in its own precision (a tensor's memory shared, not
    copied; bfloat16, which numpy lacks, as float32): the quantisation converts it to float64 a
    chunk at a time (:data:`CHUNK_VOXELS`). Two whole-volume float64 copies were made here."""
    data = image.data
    if isinstance(data, torch.Tensor):
        if data.is_complex():
            raise TypeError(
                "write_dicom_series: Image.data is complex; DICOM stores real images, pass "
                "the magnitude (data.abs()) or a real part explicitly"
            )
        data = data.detach().cpu()
        data = (data.float() if data.dtype == torch.bfloat16 else data).numpy()
    arr = np.asarray(data)
    if np.iscomplexobj(arr):
        raise TypeError("write_dicom_series: Image.data is complex; pass a real image")
    if arr.dtype.kind not in "biuf":
        arr = arr.astype(np.float64)
    if arr.dtype.kind == "f":  # integers are finite
        refuse_nonfinite("write_dicom_series", folder, "Image.data", arr)
    if arr.ndim != 3 or min(arr.shape) < 1 or max(arr.shape[1:]) > 65535:
        raise ValueError(
            f"write_dicom_series: Image.data (slices, rows, cols) = {arr.shape}; need at least "
            "one slice and 1..65535 rows and columns"
        )
    return arr


def _load_source(source: Dataset | str | os.PathLike | None) -> Dataset | None:
    if source is None or isinstance(source, Dataset):
        return source
    try:
        return pydicom.dcmread(source, stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"write_dicom_series: cannot read source_dataset {source}: {err}") from err


def _copy(dst: Dataset, src: Dataset, keywords: tuple[str, ...]) -> None:
    for kw in keywords:
        if kw in src and src[kw].value not in (None, ""):
            setattr(dst, kw, src[kw].value)


def _base_dataset(
    image: Image,
    series_description: str,
    series_number: int,
    patient: Mapping[str, str] | None,
    study_uid: str | None,
    frame_of_reference_uid: str | None,
    source: Dataset | None,
    keep_identity: bool,
    header: Header | None = None,
) -> Dataset:
    """Attributes shared by every slice of the series (all but position, number, pixels)."""
    modality = image.modality
    ds, header_identity = Dataset(), False
    # Patient module (Type 2 attributes present, empty unless provided)
    ds.PatientName = ""
    ds.PatientID = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    # General Study
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    if source is not None:
        src_modality = str(source.get("Modality", modality))
        if src_modality != modality:
            raise ValueError(
                f"write_dicom_series: source_dataset Modality is {src_modality!r}, Image.modality "
                f"is {modality!r}"
            )
        _copy(ds, source, TECHNIQUE_KEYWORDS[modality])
        if str(source.get("LossyImageCompression", "") or "").strip() == "01":
            _copy(ds, source, LOSSY_KEYWORDS)  # PS3.3 C.7.6.1.1.5: once 01, never reset
        if keep_identity:
            _copy(ds, source, IDENTITY_KEYWORDS)
            study_uid = study_uid or source.get("StudyInstanceUID")
            if image.geometry.placed:  # positions in the source's patient coordinates
                frame_of_reference_uid = (frame_of_reference_uid
                                          or source.get("FrameOfReferenceUID"))
    elif header is not None and modality == "MR":  # a source, when given, describes it instead
        for kw, value in mr_technique(header, keep_identity).items():
            setattr(ds, kw, value)
        if keep_identity:  # the scanner's patient, study and frame of reference, where held
            ident = mr_identity(header)
            study_uid = study_uid or ident.pop("StudyInstanceUID", None)
            frame = ident.pop("FrameOfReferenceUID", None)
            if image.geometry.placed:
                frame_of_reference_uid = frame_of_reference_uid or frame
            for kw, value in ident.items():
                setattr(ds, kw, value)
            header_identity = bool(ident) or bool(study_uid)
    if patient:
        for kw, value in patient.items():
            if kw not in PATIENT_KEYWORDS:
                raise ValueError(
                    f"write_dicom_series: patient key {kw!r} is not one of {PATIENT_KEYWORDS}"
                )
            setattr(ds, kw, value)
    # keep_identity without a source keeps nothing: the series is de-identified (was: said not)
    identity_given = (keep_identity and (source is not None or "InstitutionName" in ds
                                         or "ProtocolName" in ds or header_identity)) \
        or bool(patient)
    if not identity_given:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "mrirecon: identity not copied from source"
    ds.StudyInstanceUID = str(study_uid) if study_uid else generate_uid()
    # General Series
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = int(series_number)
    if series_description:
        ds.SeriesDescription = series_description
    if "PatientPosition" not in ds:
        ds.PatientPosition = ""
    if "Laterality" not in ds and str(ds.get("BodyPartExamined", "")).upper() not in \
            UNPAIRED_BODY_PARTS:  # type 2C: empty = unknown; absent only for an unpaired part
        ds.Laterality = ""
    # Frame of Reference
    ds.FrameOfReferenceUID = (
        str(frame_of_reference_uid) if frame_of_reference_uid else generate_uid()
    )
    ds.PositionReferenceIndicator = ""
    # General Equipment
    if "Manufacturer" not in ds:
        ds.Manufacturer = ""
    ds.SoftwareVersions = _SOFTWARE
    # General Image (CT: AXIAL is any cross-section, coronal and oblique ones too, PS3.3
    # C.8.2.1.1.1; OTHER or REFORMATTED are unrecognised defined terms for dciodvfy)
    ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL" if modality == "CT" else "OTHER"]
    ds.DerivationDescription = "Reconstructed by mrirecon"
    if not image.geometry.placed:
        ds.ImageComments = ("mrirecon: the source held no patient position or orientation; "
                            "ImagePositionPatient and ImageOrientationPatient are placeholders")
    ds.BurnedInAnnotation = "NO"
    # Image Plane
    g: ImageGeometry = image.geometry
    ds.ImageOrientationPatient = [_ds(v, exact=True) for v in g.orientation]
    ds.PixelSpacing = [_ds(g.spacing[1]), _ds(g.spacing[2])]
    ds.SliceThickness = _ds(g.slice_thickness)
    # CT too: a one-slice series has no positions to give the spacing, and dcm2niix then took
    # SliceThickness (2 mm) where our NIfTI has the spacing (5 mm); dciodvfy accepts it in CT
    ds.SpacingBetweenSlices = _ds(g.spacing[0])
    # Image Pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(image.data.shape[1]), int(image.data.shape[2])
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if modality == "CT" else 0
    if modality == "MR":
        ds.ScanningSequence = ds.get("ScanningSequence", "RM")  # research mode unless known
        ds.SequenceVariant = ds.get("SequenceVariant", "NONE")
        for kw in ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength"):
            if kw not in ds:
                setattr(ds, kw, "" if kw != "MRAcquisitionType" else "2D")
        if "IR" in list(np.atleast_1d(ds.ScanningSequence)) and "InversionTime" not in ds:
            ds.InversionTime = ""
        if "RepetitionTime" not in ds:
            ds.RepetitionTime = ""
    else:
        ds.KVP = ds.get("KVP", "")
        ds.AcquisitionNumber = 1
    # SOP Common
    ds.SOPClassUID = SOP_CLASS[modality]
    sanitise_strings(ds)
    if _has_non_ascii(ds):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def _window(data: np.ndarray, window: tuple[float, float] | None,
            tissue: bool = False) -> tuple[float, float]:
    """``(center, width)``: ``window``, checked, or the 0.5-99.5 percentiles of the data, as
    viewers do: MR (``tissue``, stored integers) of the non-background voxels, with a width of
    at least 1; CT of all voxels (air is part of a CT image; HU of a few diverged pixels do not
    widen it: ct_pnp's -2862 .. 3960 HU had a 6822 HU window, its percentiles span 2135)."""
    if window is None:
        if tissue:  # the stored integers: no float64 copy
            values = data[data > 0] if np.any(data > 0) else data.ravel()
            lo, hi = (float(v) for v in np.percentile(values, (0.5, 99.5)))
        else:  # one float64 copy, partitioned in place: the percentiles of the data as before
            lo, hi = (float(v) for v in np.percentile(_float64_values(data), (0.5, 99.5),
                                                      overwrite_input=True))
        return (lo + hi) / 2, max(hi - lo, 1.0 if tissue else np.finfo(np.float32).tiny)
    center, width = (float(v) for v in window)
    if not width > 0:
        raise ValueError(f"write_dicom_series: window width must be > 0, got {width}")
    return center, width


def write_dicom_series(
    image: Image,
    folder: str | os.PathLike,
    *,
    series_description: str = "",
    series_number: int = 1,
    patient: Mapping[str, str] | None = None,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    source_dataset: Dataset | str | os.PathLike | None = None,
    keep_identity: bool = False,
    window: tuple[float, float] | None = None,
    header: Header | None = None,
) -> list[Path]:
    """Write ``image`` ``(slices, rows, cols)`` as one DICOM series, one file per slice.

    Parameters
    ----------
    image
        Real volume on an :class:`ImageGeometry` (LPS, mm). ``modality`` picks MR or CT
        Image Storage; CT data are expected in HU (``kind="hu"``) or 1/mm
        (``kind="attenuation"``).
    folder
        Output folder (created). Files are named ``slice_0001.dcm``, ... in slice order.
        ``slice_NNNN.dcm`` files of an earlier, longer series there are removed.
    series_description
        SeriesDescription (at most 64 characters).
    series_number
        SeriesNumber (integer >= 0).
    patient
        Patient-module values to write, keywords from :data:`PATIENT_KEYWORDS`
        (e.g. ``{"PatientName": "Doe^J", "PatientID": "123"}``). ``None`` leaves them empty.
    study_uid, frame_of_reference_uid
        UIDs to reuse (e.g. to add a series to an existing study); generated otherwise.
        One study, series and frame-of-reference UID is shared by all files of the call.
    source_dataset
        A DICOM dataset (or file path) of the acquisition, e.g. the header of a series read by
        :func:`~mrirecon.io.dicom_read.read_dicom_series_and_header`. Its technique attributes
        (:data:`TECHNIQUE_KEYWORDS`) are copied, and LossyImageCompression 01 with its ratio
        and method (a series derived from lossy images says so); identifying attributes
        (patient, study dates, study UID, and the frame of reference when
        ``image.geometry.placed``) only with ``keep_identity=True``.
    keep_identity
        Copy identity from ``source_dataset`` instead of de-identifying. Without a
        ``source_dataset`` there is nothing to copy, and the series is de-identified as
        without it (PatientIdentityRemoved ``YES``).
    window
        ``(center, width)`` in output units; default: the 0.5-99.5 percentiles (MR: of the
        voxels above 0).
    header
        The acquisition header of an MR volume read from raw data (ISMRMRD, fastMRI): its
        technique (manufacturer, field strength, TR/TE/TI, flip angle, frequency, patient
        position, ...) is written as the MR attributes (:func:`~mrirecon.io.dicom_technique.
        mr_technique`; InstitutionName and ProtocolName only with ``keep_identity``). With
        ``keep_identity`` also the patient, study and frame of reference it holds
        (:func:`~mrirecon.io.dicom_technique.mr_identity`: PatientName ... StudyInstanceUID,
        FrameOfReferenceUID for a placed image). Not used with a ``source_dataset``, whose
        technique is copied instead, nor for CT.

    Returns
    -------
    list of Path
        The written files, slice 0 first. InstanceNumber is ``slice + 1`` and
        ImagePositionPatient ``image.geometry.slice_position(slice)``.
    """
    if image.modality not in SOP_CLASS:
        raise ValueError(
            f"write_dicom_series: Image.modality must be MR or CT, got {image.modality!r}"
        )
    # no control characters; "\\" (the value delimiter) in this VM-1 element becomes "/"
    series_description = _clean_text(str(series_description), "UC").replace("\\", "/")
    if len(series_description) > 64:
        raise ValueError(
            f"write_dicom_series: series_description has {len(series_description)} characters, "
            "DICOM LO allows 64"
        )
    if not 0 <= int(series_number) < 10**12:
        raise ValueError(f"write_dicom_series: series_number must be >= 0, got {series_number}")
    data = _as_numpy(image, folder)
    if image.modality == "MR" and image.kind not in ("magnitude",):
        raise ValueError(
            f"write_dicom_series: MR Image.kind must be 'magnitude', got {image.kind!r}"
        )
    if image.modality == "CT" and image.kind not in ("hu", "attenuation"):
        raise ValueError(
            f"write_dicom_series: CT Image.kind must be 'hu' or 'attenuation', got {image.kind!r}"
        )
    source = _load_source(source_dataset)
    base = _base_dataset(
        image, series_description, series_number, patient, study_uid, frame_of_reference_uid,
        source, keep_identity, header,
    )
    if image.modality == "CT":
        center, width = _window(data, window)  # first: its float64 copy is gone before `stored`
        stored, slope, intercept = choose_rescale(data, "CT")
        base.RescaleIntercept = intercept
        base.RescaleSlope = slope
        base.RescaleType = "HU" if image.kind == "hu" else "US"
        if window is None:  # 4 digits: -468.9 HU, not -468.91218040466
            center, width = float(f"{center:.4g}"), float(f"{width:.4g}")
    else:  # MR: no Modality LUT (identity); the units go to a Real World Value Mapping
        stored, slope = choose_mr_scale(data, f"write_dicom_series: {folder}: MR")
        base.RealWorldValueMappingSequence = [_real_world_mapping(slope, MR_MAX_STORED)]
        base.BitsStored, base.HighBit = 12, 11
        scale = float(slope)
        if window is not None:  # given in output units; stored values are what viewers window
            window = (float(window[0]) / scale, float(window[1]) / scale)
        center, width = _window(stored, window, tissue=True)
    base.WindowCenter = _ds(center)
    base.WindowWidth = _ds(width)
    if width < 1:  # LINEAR requires width >= 1; LINEAR_EXACT allows any positive width
        base.VOILUTFunction = "LINEAR_EXACT"
    geometry = image.geometry
    normal = geometry.slice_direction
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(data.shape[0]):
        ds = Dataset()
        ds.update(base)
        position = geometry.slice_position(k)
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.SliceLocation = _ds(float(np.dot(position, normal)))
        ds.InstanceNumber = k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.PixelData = stored[k].astype("<u2" if image.modality == "MR" else "<i2").tobytes()
        ds["PixelData"].VR = "OW"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = "MRIRECON"
        ds.file_meta = meta
        path = folder / f"slice_{k + 1:04d}.dcm"
        save_part10(ds, path)
        paths.append(path)
    # an earlier series written here had more slices: its slice_NNNN.dcm past ours would stay
    # beside the new ones (two series in one folder, a viewer or PACS import shows both)
    for stale in folder.glob("slice_[0-9][0-9][0-9][0-9].dcm"):
        if int(stale.stem[6:]) > len(paths):
            stale.unlink()
    return paths


def save_part10(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` (with its ``file_meta``) as a DICOM Part 10 file, atomically.

    Works with pydicom 2.4 (``write_like_original=False``) and 3.x
    (``enforce_file_format=True``); both write the preamble, ``DICM`` and the meta group.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(tmp, enforce_file_format=True)
        else:  # pragma: no cover - pydicom 2.x
            ds.save_as(tmp, write_like_original=False)
    return path
