"""ISMRMRD XML header <-> :class:`~mrirecon.containers.Header`.

The header is the XML document of the ISMRM raw data standard (namespace
``http://www.ismrm.org/ISMRMRD``), stored in fastMRI files as the ``ismrmrd_header`` dataset
and in ISMRMRD HDF5 files as ``/dataset/xml``. Only the fields :class:`Header` carries are
read; the writer emits a document that validates against the ISMRMRD schema.

Field mapping (first ``<encoding>`` only)::

    encodedSpace/matrixSize/{x,y,z}          -> Header.encoded_matrix
    encodedSpace/fieldOfView_mm/{x,y,z}      -> Header.encoded_fov_mm        (mm)
    reconSpace/matrixSize/{x,y,z}            -> Header.recon_matrix
    reconSpace/fieldOfView_mm/{x,y,z}        -> Header.recon_fov_mm          (mm)
    encodingLimits/kspace_encoding_step_1    -> padding_left = y // 2 - center,
                                                padding_right = padding_left + maximum + 1
    acquisitionSystemInformation/systemFieldStrength_T -> field_strength_t   (T)
    acquisitionSystemInformation/receiverChannels      -> num_coils
    sequenceParameters/{TR,TE,flipAngle_deg} (first)   -> ms, ms, degrees
    subjectInformation/patientID                       -> patient_id
    measurementInformation/protocolName                -> acquisition (fallback)

The acquisition technique is descriptive: a missing, malformed, NaN, zero or negative value is
left out (``None`` / no key), never an error. Besides the typed fields above it goes to
``Header.technique``::

    acquisitionSystemInformation/{systemVendor,systemModel,institutionName}
                                                -> vendor, model, institution
    measurementInformation/protocolName         -> protocol_name
    sequenceParameters/sequence_type            -> sequence_type
    sequenceParameters/TE (several: multi-echo) -> echo_times_ms   (ms, every value)
    sequenceParameters/{TI,echo_spacing} (first)-> inversion_time_ms, echo_spacing_ms (ms)
    experimentalConditions/H1resonanceFrequency_Hz -> imaging_frequency_hz (Hz)
    subjectInformation/patientName, ... studyInformation/studyInstanceUID,
    measurementInformation/frameOfReferenceUID  -> patient_name, ... (:data:`IDENTITY`; written
                                                   to DICOM only with ``keep_identity``)

mrirecon also stores ``acquisition`` and a given :class:`ImageGeometry` (not one the
``Header`` derived from its FOV) as ``userParameterString`` entries named
``mrirecon.acquisition`` / ``mrirecon.geometry`` (JSON) so that ``parse(write(h)) == h``.
Without the geometry parameter the geometry is derived from the recon FOV
and matrix: spacing ``(fov_z / z, fov_x / x, fov_y / y)`` mm for ``(slice, row, col)``, the
default orientation and origin; an axis whose FOV is 0 gets 1 mm voxels, and
``extra["fov_unknown_axes"]`` names it. A stored geometry whose row / column spacing contradicts
the recon FOV / matrix by more than 1 % is kept and noted (:func:`stored_spacing_problem`).
"""

from __future__ import annotations

import json
import math
import os
import warnings
import xml.etree.ElementTree as ET

from mrirecon.containers import NO_FOV_MM, Header, ImageGeometry, geometry_from_fov
from mrirecon.io.errors import DataFormatError
from mrirecon.io.ismrmrd_encoding import same_voxel

NAMESPACE = "http://www.ismrm.org/ISMRMRD"
_NS = f"{{{NAMESPACE}}}"
_GYROMAGNETIC_HZ_PER_T = 42_577_478.518  # 1H gyromagnetic ratio / (2 pi)
_GEOMETRY_KEY = "mrirecon.geometry"
_ACQUISITION_KEY = "mrirecon.acquisition"


def _find(root: ET.Element, path: str) -> ET.Element | None:
    return root.find("/".join(_NS + p for p in path.split("/")))


def _text(root: ET.Element, path: str, source: str, required: bool = False) -> str | None:
    el = _find(root, path)
    if el is None or el.text is None or not el.text.strip():
        if required:
            raise DataFormatError(source, f"ismrmrd_header/{path}", "required element is missing")
        return None
    return el.text.strip()


def _number(root: ET.Element, path: str, source: str, kind: type, required: bool = False):
    text = _text(root, path, source, required)
    if text is None:
        return None
    try:
        value = kind(float(text)) if kind is int else kind(text)
    except (ValueError, OverflowError):
        raise DataFormatError(
            source, f"ismrmrd_header/{path}", f"expected a {kind.__name__}, got {text!r}"
        ) from None
    if kind is float and not math.isfinite(value):
        raise DataFormatError(source, f"ismrmrd_header/{path}", f"not finite: {text!r}")
    if kind is int and float(text) != value:
        raise DataFormatError(source, f"ismrmrd_header/{path}",
                              f"expected an integer, got {text!r}")
    return value


def _loose_numbers(root: ET.Element, path: str) -> list[float | None]:
    """Every value of the repeatable element ``path`` in order, ``None`` for one that is
    malformed, not finite or not positive (technique values are descriptive: never an
    error)."""
    out: list[float | None] = []
    for el in root.findall("/".join(_NS + p for p in path.split("/"))):
        try:
            value = float((el.text or "").strip())
        except (ValueError, OverflowError):
            value = None
        out.append(value if value is not None and math.isfinite(value) and value > 0 else None)
    return out


def _loose_first(root: ET.Element, path: str) -> float | None:
    values = _loose_numbers(root, path)
    return values[0] if values else None


#: ``Header.technique`` key -> ISMRMRD path of the patient's and the study's identity (as the
#: header spells them; :func:`~mrirecon.io.dicom_technique.mr_identity` maps them to DICOM for
#: ``export.keep_identity``, and nothing else writes them anywhere).
IDENTITY = {
    "patient_name": "subjectInformation/patientName",
    "patient_birthdate": "subjectInformation/patientBirthdate",
    "patient_gender": "subjectInformation/patientGender",
    "patient_weight_kg": "subjectInformation/patientWeight_kg",
    "patient_height_m": "subjectInformation/patientHeight_m",
    "study_date": "studyInformation/studyDate",
    "study_time": "studyInformation/studyTime",
    "study_id": "studyInformation/studyID",
    "accession_number": "studyInformation/accessionNumber",
    "referring_physician": "studyInformation/referringPhysicianName",
    "study_description": "studyInformation/studyDescription",
    "study_instance_uid": "studyInformation/studyInstanceUID",
    "frame_of_reference_uid": "measurementInformation/frameOfReferenceUID",
}


def _technique(root: ET.Element, source: str) -> dict:
    """``Header.technique`` (see the module docstring): only usable values."""
    out: dict = {}
    for key, path in (("vendor", "acquisitionSystemInformation/systemVendor"),
                      ("model", "acquisitionSystemInformation/systemModel"),
                      ("institution", "acquisitionSystemInformation/institutionName"),
                      ("protocol_name", "measurementInformation/protocolName"),
                      ("sequence_type", "sequenceParameters/sequence_type")):
        if (text := _text(root, path, source)) is not None:
            out[key] = text
    for key, path in IDENTITY.items():
        if (text := _text(root, path, source)) is not None:
            out[key] = text
    echoes = _loose_numbers(root, "sequenceParameters/TE")
    if len(echoes) > 1:
        out["echo_times_ms"] = tuple(v for v in echoes if v is not None)
    for key, path in (("inversion_time_ms", "sequenceParameters/TI"),
                      ("echo_spacing_ms", "sequenceParameters/echo_spacing"),
                      ("imaging_frequency_hz", "experimentalConditions/H1resonanceFrequency_Hz")):
        if (value := _loose_first(root, path)) is not None:
            out[key] = value
    return out


def _triple(root: ET.Element, path: str, source: str, kind: type) -> tuple:
    return tuple(_number(root, f"{path}/{a}", source, kind, required=True) for a in "xyz")


#: ISMRMRD ``encoding/trajectory`` values whose readouts need their k-space coordinates
#: (``traj``): the ISMRMRD reader refuses them without ``traj``, the fastMRI layout (a Cartesian
#: grid) always (:func:`mrirecon.io.layout_hints.fastmri_trajectory_problem`).
NONCARTESIAN_KINDS = ("radial", "goldenangle", "spiral")

#: ``encoding/trajectoryDescription`` parameters that say an EPI readout samples on its ramps.
RAMP_PARAMETERS = ("rampUpTime", "rampDownTime")


def _ramp_times(enc: ET.Element) -> tuple:
    """``((name, value), ...)`` of the :data:`RAMP_PARAMETERS` in ``trajectoryDescription``
    (``userParameterLong`` or ``userParameterDouble``); NaN for a value that is not a number
    (then it cannot be said to be 0)."""
    out = []
    for kind in ("userParameterLong", "userParameterDouble"):
        for el in enc.findall(f"{_NS}trajectoryDescription/{_NS}{kind}"):
            name, value = el.find(f"{_NS}name"), el.find(f"{_NS}value")
            if name is None or (name.text or "").strip() not in RAMP_PARAMETERS:
                continue
            try:
                number = float((value.text if value is not None else "") or "nan")
            except (ValueError, OverflowError):
                number = math.nan
            out.append(((name.text or "").strip(), number))
    return tuple(out)


def _user_strings(encoding_root: ET.Element) -> dict[str, str]:
    out = {}
    for el in encoding_root.findall(f"{_NS}userParameters/{_NS}userParameterString"):
        name, value = el.find(f"{_NS}name"), el.find(f"{_NS}value")
        if name is not None and value is not None and name.text:
            out[name.text.strip()] = value.text or ""
    return out


def parse_ismrmrd_header(xml: str | bytes, source: str | os.PathLike = "<xml string>") -> Header:
    """Parse an ISMRMRD XML header into a :class:`Header`.

    Parameters
    ----------
    xml
        The XML document (``str`` or UTF-8 ``bytes``).
    source
        Name of the file it came from, used in error messages.

    Returns
    -------
    Header
        ``num_coils`` is ``receiverChannels`` (``None`` when absent); ``extra`` holds the raw
        ``encoding_limits_step_1``/``_2`` ``(minimum, maximum, center)``, the
        ``h1_frequency_hz``, ``patient_position`` and ``calibration_mode`` (parallel imaging:
        ``embedded``, ``interleaved``, ``separate``, ...) when present,
        ``trajectory_ramp_times`` (``(("rampUpTime", us), ...)`` of a ``trajectoryDescription``)
        when present, and
        ``fov_unknown_axes`` (e.g. ``("x",)``) when the geometry came from a recon FOV of 0 on
        those axes (1 mm voxels assumed there).

    Raises
    ------
    DataFormatError
        Malformed XML, a root element outside the ISMRMRD namespace, a missing
        encoding/matrix/FOV element, a non-numeric value, or phase-encoding limits whose
        acquired lines exclude the centre line; the message names ``source`` and the element
        path.
    """
    source = str(source)
    if isinstance(xml, (bytes, bytearray)):
        xml = bytes(xml).rstrip(b"\x00")
    if not xml or not str(xml if isinstance(xml, str) else xml.decode("utf-8", "replace")).strip():
        raise DataFormatError(source, "ismrmrd_header", "the header is empty")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        raise DataFormatError(source, "ismrmrd_header", f"malformed XML ({err})") from None
    if root.tag != f"{_NS}ismrmrdHeader":
        has_ns = root.tag.startswith("{")
        ns, _, local = root.tag[1:].partition("}") if has_ns else ("", "", root.tag)
        raise DataFormatError(
            source, "ismrmrd_header",
            f"root element must be ismrmrdHeader in namespace {NAMESPACE!r}, got {local!r} in "
            f"namespace {ns or None!r}",
        )
    enc = _find(root, "encoding")
    if enc is None:
        raise DataFormatError(source, "ismrmrd_header/encoding", "required element is missing")

    def num(path, kind, required=False):
        return _number(enc, path, source, kind, required)

    encoded_matrix = _triple(enc, "encodedSpace/matrixSize", source, int)
    recon_matrix = _triple(enc, "reconSpace/matrixSize", source, int)
    encoded_fov = _triple(enc, "encodedSpace/fieldOfView_mm", source, float)
    recon_fov = _triple(enc, "reconSpace/fieldOfView_mm", source, float)
    for name, values in (("encodedSpace/matrixSize", encoded_matrix),
                         ("reconSpace/matrixSize", recon_matrix)):
        if min(values) < 1:
            raise DataFormatError(source, f"ismrmrd_header/encoding/{name}",
                                  f"sizes must be positive, got {values}")
    for name, values in (("encodedSpace/fieldOfView_mm", encoded_fov),
                         ("reconSpace/fieldOfView_mm", recon_fov)):
        if min(values) < 0:
            raise DataFormatError(source, f"ismrmrd_header/encoding/{name}",
                                  f"field of view must be >= 0 mm, got {values}")

    extra: dict = {}
    enc_y = encoded_matrix[1]
    lim = "encodingLimits/kspace_encoding_step_1"
    center, maximum = num(f"{lim}/center", int), num(f"{lim}/maximum", int)
    # a non-Cartesian scan's e1 counts its readouts (spokes, interleaves): no columns to pad
    kind = (_text(enc, "trajectory", source) or "").strip().lower()
    if center is None or maximum is None or kind not in ("", "cartesian", "epi"):
        padding_left, padding_right = 0, enc_y
        if center is not None and maximum is not None:
            extra["encoding_limits_step_1"] = (num(f"{lim}/minimum", int), maximum, center)
    else:
        minimum = num(f"{lim}/minimum", int)
        low = 0 if minimum is None else minimum
        if low < 0 or not low <= center <= maximum:
            raise DataFormatError(
                source, f"ismrmrd_header/encoding/{lim}",
                f"minimum={minimum}, maximum={maximum}, center={center}: the acquired lines "
                "minimum..maximum must contain the centre line (and minimum >= 0); the header "
                "does not describe an acquisition, so the columns it marks acquired would be wrong")
        extra["encoding_limits_step_1"] = (minimum, maximum, center)
        padding_left = enc_y // 2 - center
        padding_right = padding_left + maximum + 1
        clamped_left, clamped_right = max(padding_left, 0), min(padding_right, enc_y)
        if clamped_left >= clamped_right:
            raise DataFormatError(
                source, f"ismrmrd_header/encoding/{lim}",
                f"center={center}, maximum={maximum} leave no acquired column of {enc_y}",
            )
        if (clamped_left, clamped_right) != (padding_left, padding_right):
            warnings.warn(
                f"{source}: ismrmrd_header/encoding/{lim}: padding [{padding_left}, "
                f"{padding_right}) exceeds the {enc_y} encoded columns; clamped",
                stacklevel=2,
            )
            extra["padding_unclamped"] = (padding_left, padding_right)
            padding_left, padding_right = clamped_left, clamped_right

    lim2 = "encodingLimits/kspace_encoding_step_2"
    if num(f"{lim2}/center", int) is not None:
        extra["encoding_limits_step_2"] = (
            num(f"{lim2}/minimum", int), num(f"{lim2}/maximum", int), num(f"{lim2}/center", int))

    kind = _text(enc, "trajectory", source)  # cartesian, radial, spiral, ...
    if kind:
        extra["trajectory"] = kind
    if ramps := _ramp_times(enc):  # EPI ramp sampling (ismrmrd_encoding.check_epi)
        extra["trajectory_ramp_times"] = ramps
    mode = _text(enc, "parallelImaging/calibrationMode", source)
    if mode:
        extra["calibration_mode"] = mode.strip()
    for counter in ("slice", "repetition", "contrast", "phase", "set", "average"):
        maximum = num(f"encodingLimits/{counter}/maximum", int)
        if maximum is not None:
            extra[f"encoding_limits_{counter}"] = maximum

    first = {key: _loose_first(root, f"sequenceParameters/{key}")
             for key in ("TR", "TE", "flipAngle_deg")}
    try:  # kept for header_to_xml (0 is its placeholder); malformed: left out
        h1 = float(_text(root, "experimentalConditions/H1resonanceFrequency_Hz", source) or "nan")
    except ValueError:
        h1 = math.nan
    if math.isfinite(h1) and h1 >= 0:
        extra["h1_frequency_hz"] = round(h1)
    channels = _loose_first(root, "acquisitionSystemInformation/receiverChannels")
    position = _text(root, "measurementInformation/patientPosition", source)
    if position is not None:
        extra["patient_position"] = position

    user = _user_strings(root)
    acquisition = user.get(_ACQUISITION_KEY)
    if acquisition is None:
        acquisition = _text(root, "measurementInformation/protocolName", source) or ""

    geometry = None
    if _GEOMETRY_KEY in user:
        try:
            geometry = ImageGeometry(**json.loads(user[_GEOMETRY_KEY]))
        except (ValueError, TypeError) as err:
            raise DataFormatError(
                source, f"ismrmrd_header/userParameters/{_GEOMETRY_KEY}", f"invalid ({err})"
            ) from None
        if problem := stored_spacing_problem(geometry, recon_fov, recon_matrix):
            extra["geometry_spacing_note"] = problem
    if geometry is None:
        try:  # a FOV of 1e300 mm: its voxels are beyond any image (inf in float32)
            geometry = geometry_from_fov(recon_fov, recon_matrix)
        except ValueError as err:
            raise DataFormatError(source, "ismrmrd_header/encoding/reconSpace/fieldOfView_mm",
                                  f"invalid ({err})") from None
        unknown = tuple(axis for axis, fov in zip("xyz", recon_fov) if not fov > 0)
        if unknown:  # 1 mm voxels along them: the pipeline warns when it exports NIfTI / DICOM
            extra["fov_unknown_axes"] = unknown

    try:
        header = Header(
            encoded_matrix=encoded_matrix,
            recon_matrix=recon_matrix,
            encoded_fov_mm=encoded_fov,
            recon_fov_mm=recon_fov,
            padding_left=padding_left,
            padding_right=padding_right,
            acquisition=acquisition,
            field_strength_t=_loose_first(root, "acquisitionSystemInformation/"
                                                "systemFieldStrength_T"),
            repetition_time_ms=first["TR"],
            echo_time_ms=first["TE"],
            flip_angle_deg=first["flipAngle_deg"],
            num_coils=int(channels) if channels is not None and channels == int(channels) else None,
            geometry=geometry,
            patient_id=_text(root, "subjectInformation/patientID", source) or "",
            extra=extra,
            technique=_technique(root, source),
        )
    except ValueError as err:
        raise DataFormatError(source, "ismrmrd_header", str(err)) from None
    if _GEOMETRY_KEY not in user and (problem := readout_voxel_problem(header)):
        # a warning, not a refusal: real headers this rule has not met (an interpolated recon
        # matrix) still give their pixels, and the user learns the label may be wrong
        header = header.with_(extra={**header.extra, "readout_voxel_note": f"{RECON_FOV_X}: {problem}"})
    return header


#: How far a stored ``mrirecon.geometry`` pixel spacing may differ from the recon FOV / matrix
#: (relative) before :func:`stored_spacing_problem` names it.
SPACING_TOLERANCE = 0.01


def stored_spacing_problem(geometry: ImageGeometry, recon_fov: tuple, recon_matrix: tuple
                           ) -> str | None:
    """What is wrong when the in-plane spacing of a stored ``mrirecon.geometry`` user parameter
    contradicts ``reconSpace`` (``fieldOfView_mm / matrixSize`` along ``x`` (rows) or ``y``
    (columns)) by more than :data:`SPACING_TOLERANCE`, else ``None`` (also for a FOV of 0).
    The stored geometry is kept (it is the exact one mrirecon wrote, placed or not); the
    reader notes the contradiction (``header.extra["geometry_spacing_note"]``, a warning of the
    run). A ``Header`` built without ``geometry`` once stored 1 mm voxels placed in scanner
    coordinates whatever its FOV (128 x 96 over 220 x 165 mm exported 1 x 1 mm, no word).
    The slice axis is not compared: slice positions may space slices apart from their
    thickness."""
    if tuple(recon_fov) == NO_FOV_MM:  # older mrirecon wrote a Header built without a FOV so,
        return None  # with its 1 mm placeholder voxels: not a contradiction
    found = []
    for axis, k, fov, n in (("x", 1, recon_fov[0], recon_matrix[0]),
                            ("y", 2, recon_fov[1], recon_matrix[1])):
        if fov > 0 and abs(geometry.spacing[k] / (fov / n) - 1) > SPACING_TOLERANCE:
            found.append(f"{geometry.spacing[k]:.4g} mm a {'row' if axis == 'x' else 'column'} "
                         f"where reconSpace {axis} is {fov:g} mm over {n}, {fov / n:.4g} mm")
    if not found:
        return None
    return (f"ismrmrd_header/userParameters/{_GEOMETRY_KEY}: the stored geometry says "
            + "; ".join(found) + ": the header contradicts itself; the output is labelled with "
            "the stored spacing, which may be wrong (older mrirecon versions stored 1 mm voxels "
            "placed in scanner coordinates for a Header built without geometry=); rewrite the "
            "file with the right geometry, or without the parameter to take the FOV's")


#: The element :func:`readout_voxel_problem` names.
RECON_FOV_X = "ismrmrd_header/encoding/reconSpace/fieldOfView_mm/x"


def readout_voxel_problem(header: Header) -> str | None:
    """What is wrong when a Cartesian header's encoded and recon readout (``x``) voxel sizes
    differ (``None`` when they agree, a FOV is 0, or the trajectory is not Cartesian): a
    warning of the run naming :data:`RECON_FOV_X` (``header.extra["readout_voxel_note"]``, set
    by :func:`parse_ismrmrd_header` when the header's FOV gives the voxel grid).

    The readout is sampled on the encoded grid, ``encoded FOV x / x`` mm a row; readout
    oversampling removal keeps the recon ``x`` rows (``Header.oversampled_readout_rows``) and the output
    is labelled ``recon FOV x / x`` mm a row (:func:`geometry_from_fov`). Both hold only if the
    two voxel sizes agree: fastMRI's 640 over 440 mm and 320 over 220 mm, 0.6875 mm each. A recon
    FOV left at the encoded one with the matrix halved (128 over 512 mm, 64 over 512 mm) gave
    rows labelled 8 mm that are 4 mm, exit 0. ``y`` is not checked here (fastMRI's encoded y
    FOV does not follow its matrix); the ISMRMRD reader checks it against the data
    (:func:`~mrirecon.io.ismrmrd_encoding.phase_voxel_problem`). Allowed: each FOV rounded to the mm (0.5 mm off each) and the
    recon extent off by half a recon voxel; a FOV of 0 (unknown) is warned elsewhere. Not in
    :func:`parse_ismrmrd_header`: a header is read before the data's own checks."""
    kind = str(header.extra.get("trajectory", "cartesian")).strip().lower()
    (ex, rx) = header.encoded_matrix[0], header.recon_matrix[0]
    (fe, fr) = header.encoded_fov_mm[0], header.recon_fov_mm[0]
    if kind != "cartesian" or not (fe > 0 and fr > 0):
        return None
    v_enc, v_rec = fe / ex, fr / rx
    if same_voxel(v_enc, v_rec, fe, fr, rx):
        return None
    return (f"{fr:g} mm over the recon matrix x = {rx} is {v_rec:.4g} mm a readout row, but the "
            f"encoded space samples {fe:g} mm over x = {ex}, {v_enc:.4g} mm a row: the header "
            f"contradicts itself ({rx} rows of {v_enc:.4g} mm are {rx * v_enc:g} mm; {fr:g} mm "
            f"are {round(ex * fr / fe)} rows): the output is labelled {v_rec:.4g} mm a row along "
            "the readout and its oversampling crop keeps the recon matrix's rows, so its voxel "
            "size or extent there is likely wrong (an interpolated recon matrix is not "
            "supported); correct encodedSpace or reconSpace")


def _sub(parent: ET.Element, tag: str, text: object | None = None) -> ET.Element:
    el = ET.SubElement(parent, _NS + tag)
    if text is not None:
        el.text = repr(text) if isinstance(text, float) else str(text)
    return el


def _xyz(parent: ET.Element, tag: str, values: tuple) -> None:
    el = _sub(parent, tag)
    for axis, value in zip("xyz", values):
        _sub(el, axis, value)


def header_to_xml(header: Header, limits: dict[str, tuple[int, int, int]] | None = None) -> str:
    """Serialise a :class:`Header` as an ISMRMRD XML document (schema-valid).

    ``H1resonanceFrequency_Hz`` (required by the schema) is taken from
    ``header.extra["h1_frequency_hz"]``, else ``header.technique["imaging_frequency_hz"]``,
    else from the field strength, else 0. ``header.technique`` is written back.
    ``parse_ismrmrd_header(header_to_xml(h)) == h``. ``limits``: ``encodingLimits`` entries
    ``name -> (minimum, maximum, center)`` in the schema's order (a non-Cartesian writer's
    readout and slice counters); by default the Cartesian columns' ``kspace_encoding_step_1``.
    A geometry given to the header is stored as the ``mrirecon.geometry`` user parameter; one
    derived from the recon FOV and matrix (``Header`` built without ``geometry``) is not: the
    reader derives the same, and marks an
    axis whose FOV is 0 (unknown; a header built without a FOV holds 0) in
    ``extra["fov_unknown_axes"]``, as for a scanner's XML. (Stored, 1 mm placeholder voxels
    read back as known sizes: exported without "1 mm was assumed".)
    """
    ET.register_namespace("", NAMESPACE)
    root = ET.Element(_NS + "ismrmrdHeader")
    if header.patient_id:
        _sub(_sub(root, "subjectInformation"), "patientID", header.patient_id)
    tech = header.technique
    if "patient_position" in header.extra:  # the schema's one required element there
        meas = _sub(root, "measurementInformation")
        _sub(meas, "patientPosition", header.extra["patient_position"])
        if protocol := tech.get("protocol_name", header.acquisition):
            _sub(meas, "protocolName", protocol)
    system = [(tag, value) for tag, value in (
        ("systemVendor", tech.get("vendor")), ("systemModel", tech.get("model")),
        ("systemFieldStrength_T", header.field_strength_t), ("receiverChannels", header.num_coils),
        ("institutionName", tech.get("institution"))) if value is not None]
    if system:
        el = _sub(root, "acquisitionSystemInformation")
        for tag, value in system:
            _sub(el, tag, int(value) if tag == "receiverChannels" else
                 float(value) if tag == "systemFieldStrength_T" else value)
    h1 = header.extra.get("h1_frequency_hz", tech.get("imaging_frequency_hz"))
    if h1 is None:
        h1 = round((header.field_strength_t or 0.0) * _GYROMAGNETIC_HZ_PER_T)
    _sub(_sub(root, "experimentalConditions"), "H1resonanceFrequency_Hz", round(h1))

    enc = _sub(root, "encoding")
    for space, matrix, fov in (("encodedSpace", header.encoded_matrix, header.encoded_fov_mm),
                               ("reconSpace", header.recon_matrix, header.recon_fov_mm)):
        el = _sub(enc, space)
        _xyz(el, "matrixSize", matrix)
        _xyz(el, "fieldOfView_mm", tuple(float(v) for v in fov))
    el = _sub(enc, "encodingLimits")
    if limits is None:
        limits = {"kspace_encoding_step_1": (0, header.padding_right - header.padding_left - 1,
                                             header.encoded_matrix[1] // 2 - header.padding_left)}
    for name, values in limits.items():
        entry = _sub(el, name)
        for tag, value in zip(("minimum", "maximum", "center"), values):
            _sub(entry, tag, int(value))
    _sub(enc, "trajectory", str(header.extra.get("trajectory", "cartesian")))

    echoes = tech.get("echo_times_ms") or (header.echo_time_ms,)
    seq = [(k, v) for k, v in (("TR", header.repetition_time_ms),
                               *(("TE", te) for te in echoes),
                               ("TI", tech.get("inversion_time_ms")),
                               ("flipAngle_deg", header.flip_angle_deg),
                               ("sequence_type", tech.get("sequence_type")),
                               ("echo_spacing", tech.get("echo_spacing_ms"))) if v is not None]
    if seq:  # in the schema's order
        el = _sub(root, "sequenceParameters")
        for key, value in seq:
            _sub(el, key, value if key == "sequence_type" else float(value))

    entries = {}
    if not header._derived_geometry:  # a derived one: the reader derives it again from the FOV
        geometry = {"spacing": list(header.geometry.spacing),  # (and marks a FOV of 0 unknown)
                    "origin": list(header.geometry.origin),
                    "orientation": list(header.geometry.orientation),
                    "slice_thickness": header.geometry.slice_thickness}
        if not header.geometry.placed:  # voxel sizes only: read back as such
            geometry["placed"] = False
        entries[_GEOMETRY_KEY] = json.dumps(geometry)
    if header.acquisition:
        entries[_ACQUISITION_KEY] = header.acquisition
    if entries:
        user = _sub(root, "userParameters")
        for name, value in entries.items():
            el = _sub(user, "userParameterString")
            _sub(el, "name", name)
            _sub(el, "value", value)
    ET.indent(root, space=" ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode")
