"""Read the CT DICOM images that simulations may use, each with what it is.

Only these four files are allowed as CT sources (everything else shipped with a package is
reserved for evaluation):

* ``CT_small.dcm`` and ``J2K_pixelrep_mismatch.dcm`` (inside pydicom),
* ``eCT_Supplemental.dcm`` (enhanced multi-frame CT, two frames) and ``bad_sequence.dcm``
  (JPEG lossless) from the ``pydicom-data`` package.

Three of the five frames are CT anatomy in Hounsfield units. The two frames of
``eCT_Supplemental.dcm`` are not: they are a derived rCBF perfusion map (ImageType DERIVED /
PRIMARY / PERFUSION / RCBF, RescaleType ``US``), skull-stripped, with CSF and vessels at -1024.
The training recipes and simulations draw them as attenuation *textures* (their rescaled values
read as if they were HU); :attr:`CTSlice.units` and :attr:`CTSlice.kind` say which is which,
and :attr:`CTSlice.hu` refuses a frame that is not in Hounsfield units.

The JPEG 2000 / JPEG files need the ``pylibjpeg`` decoders (``pylibjpeg``,
``pylibjpeg-openjpeg``, ``pylibjpeg-libjpeg``). Nothing is downloaded: a file that is not
installed raises :class:`FileNotFoundError` naming the package to install. No patient
attribute is read or returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CT_SOURCES: tuple[str, ...] = (
    "CT_small.dcm",
    "eCT_Supplemental.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "bad_sequence.dcm",
)
_PACKAGE = {
    "CT_small.dcm": "pydicom",
    "J2K_pixelrep_mismatch.dcm": "pydicom",
    "eCT_Supplemental.dcm": "pydicom-data",
    "bad_sequence.dcm": "pydicom-data",
}
HU_MIN, HU_MAX = -1024.0, 3071.0


@dataclass(frozen=True)
class CTSlice:
    """One CT image and what it is.

    Attributes
    ----------
    values
        ``(rows, cols)`` float32 pixel values after the DICOM rescale (slope, intercept),
        clipped to ``[-1024, 3071]`` (values outside the reconstruction circle become air):
        Hounsfield units when ``units == "HU"``. The training recipes use these numbers as
        attenuation textures for every frame, perfusion maps included.
    pixel_spacing
        ``(row, col)`` spacing in mm (DICOM PixelSpacing).
    name
        Source file name; ``frame`` is the frame index within it.
    units
        The rescale's output units, DICOM RescaleType: ``"HU"`` (also when absent, as the CT
        Image module defines it) or what the file says (``"US"``: unspecified).
    image_type
        The frame's DICOM ImageType (FrameType of an enhanced multi-frame image), e.g.
        ``("DERIVED", "PRIMARY", "PERFUSION", "RCBF")``.
    """

    values: np.ndarray
    pixel_spacing: tuple[float, float]
    name: str
    frame: int = 0
    units: str = "HU"
    image_type: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``"perfusion"`` (ImageType names PERFUSION: a parameter map, not anatomy),
        ``"derived"`` (another DERIVED image) or ``"anatomy"``."""
        if "PERFUSION" in self.image_type:
            return "perfusion"
        return "derived" if self.image_type[:1] == ("DERIVED",) else "anatomy"

    @property
    def is_hu_anatomy(self) -> bool:
        """Whether the image is CT anatomy in Hounsfield units."""
        return self.units == "HU" and self.kind == "anatomy"

    @property
    def hu(self) -> np.ndarray:
        """:attr:`values` of an image in Hounsfield units; any other is refused (a perfusion
        map's values are no HU: read :attr:`values` to use them as a texture)."""
        if self.units != "HU":
            raise ValueError(
                f"CTSlice: {self.name} frame {self.frame} is a {self.kind} image in "
                f"{self.units} (RescaleType), not Hounsfield units; its values are "
                f"CTSlice.values (the training recipes use them as an attenuation texture)"
            )
        return self.values


def ct_source_path(name: str) -> str:
    """Local path of an allowed CT file (no download)."""
    if name not in CT_SOURCES:
        raise ValueError(
            f"ct_source_path: {name!r} is not an allowed CT source; allowed: {CT_SOURCES}"
        )
    path = packaged_dicom_file(name)
    if path is None:
        raise FileNotFoundError(
            f"ct_source_path: {name} is not installed; pip install {_PACKAGE[name]} (and the "
            f"pylibjpeg, pylibjpeg-openjpeg, pylibjpeg-libjpeg decoders)"
        )
    return path


def packaged_dicom_file(name: str) -> str | None:
    """Path of the DICOM file ``name`` that pydicom (``pydicom/data/test_files``) or
    pydicom-data installed, in that order (``get_testdata_file(name, download=False)``'s);
    ``None`` when neither did. Nothing is downloaded.

    Looked up here, not through ``get_testdata_file``: pydicom 2.4 finds pydicom-data through
    ``pkg_resources`` entry points, a module setuptools 81 no longer ships (and a Python 3.12
    venv has no setuptools), so it failed with ``ModuleNotFoundError: pkg_resources``."""
    import importlib.metadata as md
    from pathlib import Path

    from pydicom.data.data_manager import DATA_ROOT

    for match in sorted((Path(DATA_ROOT) / "test_files").rglob(name)):
        return str(match)
    try:
        files = md.distribution("pydicom-data").files or ()
    except md.PackageNotFoundError:
        return None
    for file in files:  # data_store/data/<name>
        if file.name == name and file.parts[0] == "data_store":
            return str(Path(file.locate()).resolve())
    return None


def _first(seq, name: str):
    return seq[0] if seq is not None and len(seq) else None


def _frame_value(ds, frame: int, group: str, attribute: str):
    """Look ``attribute`` up in the per-frame, then shared functional group ``group``."""
    for key, index in (
        ("PerFrameFunctionalGroupsSequence", frame),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        groups = ds.get(key)
        if groups is None or len(groups) <= index:
            continue
        item = _first(groups[index].get(group), group)
        if item is not None and attribute in item:
            return item.get(attribute)
    return None


def read_ct_slices(name: str) -> list[CTSlice]:
    """All frames of one allowed CT file as :class:`CTSlice` (rescaled values, spacing, units
    and image type).

    Raises
    ------
    FileNotFoundError
        The file (or its package) is not installed.
    RuntimeError
        The pixel data cannot be decoded (missing pylibjpeg plugins), naming the file.
    ValueError
        The file lacks PixelSpacing or a rescale, naming the field.
    """
    import pydicom

    path = ct_source_path(name)
    ds = pydicom.dcmread(path)
    try:
        pixels = ds.pixel_array
    except Exception as err:  # decoder plugins missing or broken
        raise RuntimeError(
            f"read_ct_slices: cannot decode the pixel data of {name} "
            f"(transfer syntax {ds.file_meta.TransferSyntaxUID}); install pylibjpeg, "
            f"pylibjpeg-openjpeg and pylibjpeg-libjpeg: {err}"
        ) from err
    frames = pixels[None] if pixels.ndim == 2 else pixels
    out = []
    for i, frame in enumerate(frames):
        slope = ds.get(
            "RescaleSlope", _frame_value(ds, i, "PixelValueTransformationSequence", "RescaleSlope")
        )
        intercept = ds.get(
            "RescaleIntercept",
            _frame_value(ds, i, "PixelValueTransformationSequence", "RescaleIntercept"),
        )
        spacing = ds.get(
            "PixelSpacing", _frame_value(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        )
        if spacing is None:
            raise ValueError(f"read_ct_slices: {name} frame {i} has no PixelSpacing")
        if slope is None or intercept is None:
            raise ValueError(
                f"read_ct_slices: {name} frame {i} has no RescaleSlope/RescaleIntercept"
            )
        units = ds.get(
            "RescaleType", _frame_value(ds, i, "PixelValueTransformationSequence", "RescaleType")
        )
        image_type = _frame_value(ds, i, "CTImageFrameTypeSequence", "FrameType")
        image_type = ds.get("ImageType") if image_type is None else image_type
        values = frame.astype(np.float64) * float(slope) + float(intercept)
        values = np.clip(values, HU_MIN, HU_MAX).astype(np.float32)
        out.append(
            CTSlice(values=values, pixel_spacing=(float(spacing[0]), float(spacing[1])),
                    name=name, frame=i, units=str(units or "HU").strip().upper(),
                    image_type=tuple(str(v).upper() for v in (image_type or ())))
        )
    return out


def load_ct_sources(names: tuple[str, ...] | None = None) -> list[CTSlice]:
    """Every frame of the allowed CT files (default: all four), in a fixed order, each with
    its units and kind (the two ``eCT_Supplemental.dcm`` frames: ``"US"``, ``"perfusion"``)."""
    names = CT_SOURCES if names is None else tuple(names)
    slices: list[CTSlice] = []
    for name in names:
        slices.extend(read_ct_slices(name))
    return slices
