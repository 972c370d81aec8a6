"""MR acquisition technique of an ISMRMRD / fastMRI header as DICOM attributes.

:func:`mr_technique` maps a :class:`~mrirecon.containers.Header` (ISMRMRD units: ms, T,
degrees, Hz) to the MR Image attributes a scanner writes, so that a series exported from raw
data tells a viewer, a PACS and ``dcm2niix`` (its BIDS sidecar) what was acquired::

    systemVendor / systemModel        -> Manufacturer / ManufacturerModelName
    institutionName                   -> InstitutionName        (keep_identity only)
    protocolName                      -> ProtocolName           (keep_identity only)
    systemFieldStrength_T             -> MagneticFieldStrength  (T)
    TR / TE / flipAngle_deg           -> RepetitionTime / EchoTime (ms) / FlipAngle (deg)
    TI                                -> InversionTime (ms)     (inversion recovery only)
    H1resonanceFrequency_Hz           -> ImagingFrequency       (MHz)
    patientPosition                   -> PatientPosition        (a DICOM defined term)
    subjectInformation, studyInformation, frameOfReferenceUID
                                      -> PatientName, ..., StudyInstanceUID,
                                         FrameOfReferenceUID (:func:`mr_identity`;
                                         keep_identity only)
    sequence_type (+ inversion)       -> ScanningSequence, SequenceVariant (known types only)
    encodedSpace/matrixSize/z > 1     -> MRAcquisitionType 3D
    trajectory cartesian (or absent)  -> InPlanePhaseEncodingDirection ROW

Choices:

* InstitutionName and ProtocolName follow the de-identification profile of
  :mod:`mrirecon.io.dicom` (PS3.15's basic profile removes both: a site, a descriptor a site
  types): written only with ``keep_identity``.
* Several ``TE`` values (multi-echo): EchoTime is the first only when the header says the data
  hold one contrast (``encodingLimits/contrast/maximum`` 0); otherwise it is left empty: which
  echo a series shows is not in the header. A file read with one contrast chosen
  (``--set load.counters.contrast=c``; the reader's ``header.extra["selected_contrast"]``)
  writes that contrast's TE (the ``c``-th of the header's list; empty when the list is shorter)
  and EchoNumbers ``c + 1``, so the series of two echoes are told apart.
* ``TI`` is no proof of an inversion (Siemens' converter writes its default, 100 ms, for every
  sequence: fastMRI's T1 and PD spin echoes carry it), and dciodvfy refuses InversionTime
  unless ScanningSequence has ``IR``. An inversion is taken from the protocol name or sequence
  type only where the name says so (FLAIR, STIR, TIRM, MPRAGE, MP2RAGE, dark-fluid, an ``IR``
  word); then ScanningSequence gets ``IR`` and InversionTime the TI. Otherwise TI is left out.
* ScanningSequence only for sequence types whose family is known (spin echo, gradient echo,
  echo planar); others keep the research-mode ``RM``. SequenceName (a vendor's internal name,
  e.g. Siemens ``*tse2d1_9``) is not in the ISMRMRD header and is not written.
* InPlanePhaseEncodingDirection is mrirecon's k-space convention, not a header field: an image
  made from Cartesian k-space ``(coils, H, W)`` has the readout ``H`` down its columns and the
  phase encoding ``W`` along its rows (``ROW``; ``dcm2niix`` writes ``PhaseEncodingAxis`` ``i``).
  Radial and spiral data have no phase-encoding direction: nothing is written for them.
* Values are decimal strings of the header's digits (:func:`~mrirecon.io.dicom_strings._ds`).
"""

from __future__ import annotations

import re

from mrirecon.containers import Header
from mrirecon.io.dicom_strings import _ds

__all__ = ["mr_identity", "mr_technique"]

#: ISMRMRD ``sequence_type`` (lower case, letters and digits only) -> (ScanningSequence,
#: SequenceVariant). Siemens' converter writes Flash, SSFP, EPI, TurboSpinEcho.
SEQUENCE_FAMILIES = {
    **dict.fromkeys(("turbospinecho", "tse", "fse", "haste"), ("SE", "SK")),
    **dict.fromkeys(("spinecho", "se"), ("SE", "NONE")),
    **dict.fromkeys(("flash", "spgr", "fspgr"), ("GR", "SP")),
    **dict.fromkeys(("ssfp", "truefisp", "bssfp", "fiesta", "balancedffe"), ("GR", "SS")),
    **dict.fromkeys(("gre", "gradientecho"), ("GR", "NONE")),
    **dict.fromkeys(("epi",), ("EP", "SK")),
}
#: Words of a protocol name or sequence type (upper case, letters and digits only) that mean
#: an inversion-recovery preparation.
INVERSION_WORDS = ("FLAIR", "STIR", "TIRM", "MPRAGE", "MP2RAGE", "DARKFLUID",
                   "INVERSIONRECOVERY")
#: PatientPosition defined terms (PS3.3 C.7.3.1.1.2).
PATIENT_POSITIONS = frozenset(
    "HFP HFS HFDR HFDL FFDR FFDL FFP FFS LFP LFS RFP RFS AFDR AFDL PFDR PFDL".split())


def _inversion(*names: str) -> bool:
    for name in names:
        if any(w in re.sub(r"[^A-Z0-9]", "", name.upper()) for w in INVERSION_WORDS):
            return True
        if "IR" in re.split(r"[^A-Z0-9]+", name.upper()):
            return True
    return False


def _echo_time(header: Header) -> float | None:
    echoes = tuple(header.technique.get("echo_times_ms", ()))
    chosen = header.extra.get("selected_contrast")
    if chosen is not None:  # the reader kept one contrast: its TE, where the header lists it
        if 0 <= chosen < len(echoes):
            return echoes[chosen]
        return header.echo_time_ms if chosen == 0 else None
    if len(set(echoes)) > 1 and header.extra.get("encoding_limits_contrast") != 0:
        return None  # multi-echo: which echo this series shows is not in the header
    return header.echo_time_ms


def mr_technique(header: Header, keep_identity: bool = False) -> dict[str, object]:
    """DICOM keyword -> value of the technique ``header`` gives (nothing for what it lacks);
    see the module docstring for the mapping and its choices."""
    tech = header.technique
    out: dict[str, object] = {}
    for keyword, value in (("Manufacturer", tech.get("vendor")),
                           ("ManufacturerModelName", tech.get("model"))):
        if value:
            out[keyword] = str(value)
    if keep_identity:
        for keyword, value in (("InstitutionName", tech.get("institution")),
                               ("ProtocolName", tech.get("protocol_name"))):
            if value:
                out[keyword] = str(value)
    frequency = tech.get("imaging_frequency_hz")
    for keyword, value in (("MagneticFieldStrength", header.field_strength_t),
                           ("RepetitionTime", header.repetition_time_ms),
                           ("EchoTime", _echo_time(header)),
                           ("FlipAngle", header.flip_angle_deg),
                           ("ImagingFrequency", None if frequency is None else frequency / 1e6)):
        if value is not None and value > 0:  # the parser leaves out the rest; a Header made
            out[keyword] = _ds(value)         # in code may hold anything
    kind = re.sub(r"[^a-z0-9]", "", str(tech.get("sequence_type", "")).lower())
    scanning, variant = SEQUENCE_FAMILIES.get(kind, ("RM", "NONE"))
    if _inversion(str(tech.get("protocol_name", "")), str(tech.get("sequence_type", "")),
                  header.acquisition):
        scanning = "IR" if scanning == "RM" else [scanning, "IR"]
        variant = "MP" if variant == "NONE" else [variant, "MP"]
        ti = tech.get("inversion_time_ms")
        out["InversionTime"] = _ds(ti) if ti is not None and ti > 0 else ""  # type 2C
    out["ScanningSequence"], out["SequenceVariant"] = scanning, variant
    position = str(header.extra.get("patient_position", "")).strip().upper()
    if position in PATIENT_POSITIONS:
        out["PatientPosition"] = position
    if header.encoded_matrix[2] > 1:
        out["MRAcquisitionType"] = "3D"
    if header.extra.get("selected_contrast") is not None:  # one echo of several: which one
        out["EchoNumbers"] = str(int(header.extra["selected_contrast"]) + 1)
    if str(header.extra.get("trajectory", "cartesian")).strip().lower() == "cartesian":
        out["InPlanePhaseEncodingDirection"] = "ROW"  # W, the columns' axis, is phase encoded
    return out


#: ``Header.technique`` identity key -> (DICOM keyword, value representation's rule): ``text``
#: (stripped, cut to the VR's length), ``date`` (ISMRMRD ``xs:date`` ``YYYY-MM-DD`` ->
#: ``YYYYMMDD``), ``time`` (``HH:MM:SS[.f]`` -> ``HHMMSS[.f]``), ``sex`` (M / F / O), ``number``
#: (a DS), ``uid`` (digits and dots, at most 64). A value that does not fit is left out.
IDENTITY_KEYWORDS = {
    "patient_name": ("PatientName", "text", 64),
    "patient_birthdate": ("PatientBirthDate", "date", 8),
    "patient_gender": ("PatientSex", "sex", 1),
    "patient_weight_kg": ("PatientWeight", "number", 16),
    "patient_height_m": ("PatientSize", "number", 16),
    "study_date": ("StudyDate", "date", 8),
    "study_time": ("StudyTime", "time", 16),
    "study_id": ("StudyID", "text", 16),
    "accession_number": ("AccessionNumber", "text", 16),
    "referring_physician": ("ReferringPhysicianName", "text", 64),
    "study_description": ("StudyDescription", "text", 64),
    "study_instance_uid": ("StudyInstanceUID", "uid", 64),
    "frame_of_reference_uid": ("FrameOfReferenceUID", "uid", 64),
}


def mr_identity(header: Header) -> dict[str, str]:
    """DICOM keyword -> value of the patient's and study's identity that ``header`` holds
    (ISMRMRD ``subjectInformation``, ``studyInformation``, ``frameOfReferenceUID``), for
    ``export.keep_identity``: the series then joins the scanner's study and frame of reference.
    Values that do not fit their DICOM value representation are left out."""
    out: dict[str, str] = {}
    for key, (keyword, rule, length) in IDENTITY_KEYWORDS.items():
        text = str(header.technique.get(key, "")).strip()
        if rule == "date":
            text = text.replace("-", "") if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else ""
        elif rule == "time":
            text = (text.replace(":", "") if re.fullmatch(r"\d{2}:\d{2}:\d{2}(\.\d{1,6})?", text)
                    else "")
        elif rule == "sex":
            text = text.upper() if text.upper() in ("M", "F", "O") else ""
        elif rule == "number":
            try:
                text = _ds(float(text)) if float(text) > 0 else ""
            except ValueError:
                text = ""
        elif rule == "uid":
            text = text if re.fullmatch(r"[0-9]+(\.[0-9]+)*", text) else ""
        if text and (rule == "text" or len(text) <= length):
            out[keyword] = text[:length]
    return out
