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
    sequence_type (+ inversion)       -> ScanningSequence, SequenceVariant (known types only)
    encodedSpace/matrixSize/z > 1     -> MRAcquisitionType 3D

Choices:

* InstitutionName and ProtocolName follow the de-identification profile of
  :mod:`mrirecon.io.dicom` (PS3.15's basic profile removes both: a site, a descriptor a site
  types): written only with ``keep_identity``.
* Several ``TE`` values (multi-echo): EchoTime is the first only when the header says the data
  hold one contrast (``encodingLimits/contrast/maximum`` 0); otherwise it is left empty: which
  echo a series shows is not in the header.
* ``TI`` is no proof of an inversion (Siemens' converter writes its default, 100 ms, for every
  sequence: fastMRI's T1 and PD spin echoes carry it), and dciodvfy refuses InversionTime
  unless ScanningSequence has ``IR``. An inversion is taken from the protocol name or sequence
  type only where the name says so (FLAIR, STIR, TIRM, MPRAGE, MP2RAGE, dark-fluid, an ``IR``
  word); then ScanningSequence gets ``IR`` and InversionTime the TI. Otherwise TI is left out.
* ScanningSequence only for sequence types whose family is known (spin echo, gradient echo,
  echo planar); others keep the research-mode ``RM``. SequenceName (a vendor's internal name,
  e.g. Siemens ``*tse2d1_9``) is not in the ISMRMRD header and is not written.
* Values are decimal strings of the header's digits (:func:`~mrirecon.io.dicom_strings._ds`).
"""

from __future__ import annotations

import re

from mrirecon.containers import Header
from mrirecon.io.dicom_strings import _ds

__all__ = ["mr_technique"]

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
    echoes = set(header.technique.get("echo_times_ms", ()))
    if len(echoes) > 1 and header.extra.get("encoding_limits_contrast") != 0:
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
    return out
