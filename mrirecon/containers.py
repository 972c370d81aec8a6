"""Typed containers with shape strings: what readers return and writers take.

Conventions
-----------
* k-space follows fastMRI: ``(slices, coils, H, W)`` complex64 for multi-coil, ``H`` the
  readout (frequency-encoding) axis, ``W`` the phase-encoding axis that masks act on.
* Images are ``(slices, H, W)`` (rows, columns) on an :class:`ImageGeometry` in patient
  coordinates (DICOM LPS, mm). NIfTI writers convert to RAS.
* Sinograms are ``(slices, views, detectors)`` on a :class:`~mrirecon.operators.ct_geometry.CTGeometry`.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, replace
from typing import ClassVar

import numpy as np
import torch

# MAX_LENGTH_MM: the 100 m bound of ImageGeometry's lengths, defined beside CTGeometry's use of it
from mrirecon.operators.ct_geometry import MAX_LENGTH_MM, CTGeometry

ArrayLike = np.ndarray | torch.Tensor


def _check_rank(owner: str, name: str, value: ArrayLike, dims: tuple[str, ...]) -> None:
    if value.ndim != len(dims):
        raise ValueError(
            f"{owner}.{name} must have shape ({', '.join(dims)}), got {tuple(value.shape)}"
        )


def describe(value: object) -> str:
    """A short text of a container field for a repr: a tensor or array as its shape and dtype
    (and its device when not the CPU), a :class:`Header` or :class:`ImageGeometry` by its grid,
    a long tuple by its ends and length, a float to 6 digits; anything else as ``repr``."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        # a torch device only (numpy 2's arrays have .device too: the string 'cpu')
        device = value.device if isinstance(value, torch.Tensor) else None
        where = "" if device is None or device.type == "cpu" else f" {device}"
        return f"{tuple(value.shape)} {str(value.dtype).removeprefix('torch.')}{where}"
    if isinstance(value, Header):
        acquisition = f", acquisition={value.acquisition!r}" if value.acquisition else ""
        return (f"Header(encoded_matrix={value.encoded_matrix}, recon_matrix={value.recon_matrix}"
                f", num_coils={value.num_coils}{acquisition})")
    if isinstance(value, ImageGeometry):
        mm = ", ".join(f"{v:g}" for v in value.spacing)
        origin = ("placeholder" if not value.placed else
                  "(" + ", ".join(f"{v:g}" for v in value.origin) + ") mm")
        return f"ImageGeometry(spacing=({mm}) mm, origin={origin})"
    if isinstance(value, tuple) and len(value) > 6:
        return f"({value[0]!r}, {value[1]!r}, ..., {value[-1]!r}: {len(value)} values)"
    return f"{value:.6g}" if isinstance(value, float) else repr(value)


class ShortRepr:
    """Mixin of the dataclasses that hold tensors (the containers, the training samples): a repr
    of one short line, each tensor as its shape and dtype (:func:`describe`), fields left out
    where they hold their default (``None``, ``""``). The dataclass's fields and equality are its
    own. The repr is put in the subclass's namespace when it is created, before ``@dataclass``
    runs, which keeps a ``__repr__`` the class defines (the default repr printed every value:
    13,997 characters for a ``KSpace`` of 3 x 4 x 64 x 48, and never its shape)."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = ShortRepr.__repr__

    def __repr__(self) -> str:
        def left_out(f, value) -> bool:  # an empty default: None, "" or the factory's value
            if isinstance(value, (torch.Tensor, np.ndarray)):
                return False
            if f.default_factory is not MISSING:
                return value == f.default_factory()
            return f.default in (None, "") and value == f.default

        shown = [f"{f.name}={describe(getattr(self, f.name))}" for f in fields(self)
                 if f.repr and not left_out(f, getattr(self, f.name))]
        return f"{type(self).__name__}({', '.join(shown)})"


@dataclass(frozen=True)
class ImageGeometry:
    """Voxel grid of a volume ``(slices, rows, cols)`` in patient coordinates (LPS, mm).

    Attributes
    ----------
    spacing
        ``(slice, row, column)`` spacing in mm: distance between slice centres, between rows
        (DICOM PixelSpacing[0]) and between columns (PixelSpacing[1]). Spacing, origin and
        thickness must be finite and within :data:`MAX_LENGTH_MM` (100 m) of 0.
    origin
        LPS position (mm) of the centre of voxel ``[0, 0, 0]`` (DICOM ImagePositionPatient of
        the first slice).
    orientation
        DICOM ImageOrientationPatient: direction cosines of increasing column index (along a
        row) followed by those of increasing row index.
    slice_thickness
        Nominal slice thickness in mm (defaults to the slice spacing).
    placed
        Whether ``origin`` and ``orientation`` are the patient's. ``False`` when the source
        held only voxel sizes (fastMRI files, whose ISMRMRD header has no position or
        orientation; LoDoPaB slices): they are then placeholders (axial at the origin), and the
        writers say so (NIfTI xform codes 0, a DICOM ``ImageComments``).
    """

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    orientation: tuple[float, float, float, float, float, float] = (1, 0, 0, 0, 1, 0)
    slice_thickness: float | None = None
    placed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(s) for s in self.origin))
        object.__setattr__(self, "orientation", tuple(float(s) for s in self.orientation))
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"ImageGeometry.spacing must be 3 positive values, got {self.spacing}")
        if len(self.origin) != 3:
            raise ValueError(f"ImageGeometry.origin must have 3 values, got {self.origin}")
        if len(self.orientation) != 6:
            raise ValueError("ImageGeometry.orientation must have 6 direction cosines")
        r, c = np.array(self.orientation[:3]), np.array(self.orientation[3:])
        if abs(np.linalg.norm(r) - 1) > 1e-4 or abs(np.linalg.norm(c) - 1) > 1e-4 or abs(r @ c) > 1e-4:
            raise ValueError(f"ImageGeometry.orientation is not orthonormal: {self.orientation}")
        # NaN compares false with every bound above: a NaN origin or cosine reached the NIfTI
        # affine (exit 0) and the DICOM writer ("value nan is not finite", no field named)
        for name in ("spacing", "origin", "orientation"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"ImageGeometry.{name} must be finite, got {getattr(self, name)}")
        # finite in float64 is not enough: 1e300 mm passed and the NIfTI writer's float32 cast
        # made the voxel sizes and the affine inf (exit 0)
        for name in ("spacing", "origin"):
            if max(abs(v) for v in getattr(self, name)) > MAX_LENGTH_MM:
                # the readers name the field from the axis: the slice gap comes from positions
                axis = (" (spacing[0], between slices)" if name == "spacing"
                        and abs(self.spacing[0]) > MAX_LENGTH_MM else "")
                raise ValueError(f"ImageGeometry.{name}{axis} must be at most {MAX_LENGTH_MM:g} mm "
                                 f"(100 m) in magnitude, got {getattr(self, name)}: no "
                                 "scanner's voxel or position is that large (a corrupt header?)")
        if self.slice_thickness is None:
            object.__setattr__(self, "slice_thickness", self.spacing[0])
        elif not (np.isfinite(self.slice_thickness)
                  and 0 < self.slice_thickness <= MAX_LENGTH_MM):
            raise ValueError(f"ImageGeometry.slice_thickness must be finite, > 0 and at most "
                             f"{MAX_LENGTH_MM:g} mm (100 m), got {self.slice_thickness}")

    @property
    def row_direction(self) -> np.ndarray:
        """Unit LPS vector of increasing column index."""
        return np.array(self.orientation[:3])

    @property
    def column_direction(self) -> np.ndarray:
        """Unit LPS vector of increasing row index."""
        return np.array(self.orientation[3:])

    @property
    def slice_direction(self) -> np.ndarray:
        """Unit LPS normal (row x column), the direction of increasing slice index."""
        n = np.cross(self.row_direction, self.column_direction)
        return n / np.linalg.norm(n)

    def affine_lps(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices ``(col, row, slice, 1)`` to LPS mm."""
        a = np.eye(4)
        a[:3, 0] = self.row_direction * self.spacing[2]
        a[:3, 1] = self.column_direction * self.spacing[1]
        a[:3, 2] = self.slice_direction * self.spacing[0]
        a[:3, 3] = self.origin
        return a

    def affine_ras(self) -> np.ndarray:
        """4x4 matrix mapping voxel indices ``(col, row, slice, 1)`` to RAS mm (NIfTI)."""
        return np.diag([-1.0, -1.0, 1.0, 1.0]) @ self.affine_lps()

    def shifted(self, rows: int, cols: int) -> ImageGeometry:
        """The geometry of the grid whose voxel ``[0, 0, 0]`` is this grid's voxel
        ``[0, rows, cols]`` (a crop; negative for a larger grid), same spacing and orientation."""
        p = (np.array(self.origin) + rows * self.spacing[1] * self.column_direction
             + cols * self.spacing[2] * self.row_direction)
        return replace(self, origin=tuple(float(v) for v in p))

    def slice_position(self, index: int) -> tuple[float, float, float]:
        """ImagePositionPatient of slice ``index``."""
        p = np.array(self.origin) + index * self.spacing[0] * self.slice_direction
        return tuple(float(v) for v in p)


def geometry_from_fov(
    fov_mm: tuple[float, float, float], matrix: tuple[int, int, int]
) -> ImageGeometry:
    """Voxel grid of a recon space: spacing ``(fov_z/z, fov_x/x, fov_y/y)`` mm, not placed in
    the patient (``placed=False``: the header has no position or orientation).

    Rows of a fastMRI image run along ISMRMRD ``x`` (readout), columns along ``y``. A zero
    FOV (unknown) gives 1 mm spacing on that axis. The one rule of :class:`Header` (a header
    built without ``geometry``) and of the ISMRMRD header reader (a header without the
    ``mrirecon.geometry`` user parameter, e.g. fastMRI's). A spacing beyond
    :data:`MAX_LENGTH_MM` is a ``ValueError`` that names the recon FOV and matrix.
    """
    def step(fov: float, n: int) -> float:
        return fov / n if fov > 0 else 1.0

    try:
        return ImageGeometry(spacing=(step(fov_mm[2], matrix[2]), step(fov_mm[0], matrix[0]),
                                      step(fov_mm[1], matrix[1])), placed=False)
    except ValueError as err:
        raise ValueError(f"the recon FOV {tuple(fov_mm)} mm over the recon matrix "
                         f"{tuple(matrix)} gives no usable voxel size: {err}") from None


#: The FOV of a :class:`Header` built without one (the default argument): the header holds
#: it as ``(0, 0, 0)``, unknown as an ISMRMRD FOV of 0 says, and its derived voxels are 1 mm
#: placeholders (a 1 mm FOV read as such gave 1/320 mm voxels to a 320 x 320 matrix).
NO_FOV_MM = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class Header:
    """Acquisition header of an MRI volume (the fields of the ISMRMRD XML we use).

    Matrix sizes are ISMRMRD ``(x, y, z)``: ``x`` is the readout (k-space ``H`` axis in
    fastMRI's layout), ``y`` phase encoding (``W``). ``padding_left/right`` bound the
    acquired phase-encoding columns ``[padding_left, padding_right)``.

    ``field_strength_t``, ``repetition_time_ms``, ``echo_time_ms`` (the first ``TE``) and
    ``flip_angle_deg`` are ``None`` when absent, malformed, NaN or not positive. ``technique``
    holds the rest of the acquisition technique in the header's units, each key only when the
    header gives a usable value (:func:`~mrirecon.io.ismrmrd_header.parse_ismrmrd_header`):
    ``vendor``, ``model``, ``institution``, ``protocol_name``, ``sequence_type`` (``str``),
    ``echo_times_ms`` (``tuple`` of every ``TE`` when there are several: multi-echo),
    ``inversion_time_ms``, ``echo_spacing_ms``, ``imaging_frequency_hz`` (``float``). DICOM
    export writes it as the MR technique attributes (:mod:`mrirecon.io.dicom_technique`).

    ``geometry`` left out (``None``) is derived from the recon FOV and matrix,
    :func:`geometry_from_fov`: spacing ``(fov_z / z, fov_x / x, fov_y / y)`` mm (1 mm placeholders
    on an axis whose FOV is 0, unknown), ``placed=False``
    (voxel sizes only, as a fastMRI header reads; the exporters mark it a placeholder). A FOV
    left out (or given as :data:`NO_FOV_MM`) is held as ``(0.0, 0.0, 0.0)``: unknown, which
    :func:`~mrirecon.io.ismrmrd_header.header_to_xml` writes and the reader marks
    (``extra["fov_unknown_axes"]``) as it does a scanner's FOV of 0.
    :meth:`with_` derives it again when it changes the recon FOV or matrix of such a header. (A
    default of 1 mm voxels placed in scanner coordinates was written as the file's geometry and
    exported so: 128 x 96 over 220 x 165 x 5 mm came out 1 x 1 x 1 mm, NIfTI ``sform_code`` 1.)
    """

    encoded_matrix: tuple[int, int, int]
    recon_matrix: tuple[int, int, int]
    encoded_fov_mm: tuple[float, float, float] = NO_FOV_MM
    recon_fov_mm: tuple[float, float, float] = NO_FOV_MM
    padding_left: int = 0
    padding_right: int | None = None
    acquisition: str = ""
    field_strength_t: float | None = None
    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    flip_angle_deg: float | None = None
    num_coils: int | None = None
    geometry: ImageGeometry | None = None
    patient_id: str = ""
    extra: dict = field(default_factory=dict, compare=False)
    technique: dict = field(default_factory=dict, compare=False)
    #: whether ``geometry`` was derived from the recon FOV and matrix (not given)
    _derived_geometry: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("encoded_matrix", "recon_matrix"):
            v = tuple(int(s) for s in getattr(self, name))
            if len(v) != 3 or min(v) < 1:
                raise ValueError(f"Header.{name} must be 3 positive ints, got {v}")
            object.__setattr__(self, name, v)
        for name in ("encoded_fov_mm", "recon_fov_mm"):  # no FOV given (the default): unknown, 0
            v = tuple(float(s) for s in getattr(self, name))
            object.__setattr__(self, name, (0.0, 0.0, 0.0) if v == NO_FOV_MM else v)
        if self.geometry is None:  # 1 mm placeholders where the FOV is 0
            object.__setattr__(self, "geometry", geometry_from_fov(self.recon_fov_mm,
                                                                   self.recon_matrix))
            object.__setattr__(self, "_derived_geometry", True)
        if self.padding_right is None:
            object.__setattr__(self, "padding_right", self.encoded_matrix[1])
        if not 0 <= self.padding_left < self.padding_right <= self.encoded_matrix[1]:
            raise ValueError(
                f"Header: padding [{self.padding_left}, {self.padding_right}) is outside the "
                f"{self.encoded_matrix[1]} encoded phase-encoding lines"
            )

    @property
    def recon_size(self) -> tuple[int, int]:
        """``(rows, cols)`` of the reconstruction (fastMRI crop size)."""
        return (self.recon_matrix[0], self.recon_matrix[1])

    @property
    def fov_centre(self) -> tuple[int, int]:
        """``(row, col)`` of the recon-grid voxel at the centre of the field of view (where an
        ISMRMRD acquisition's ``position`` lies): the encoded grid's voxel ``N // 2`` (the
        centred FFT's centre) on the recon grid, which is the encoded grid centre-cropped as
        fastMRI crops it (first row ``(N - R) // 2``, :func:`~mrirecon.functional.center_crop`):
        ``N // 2 - (N - R) // 2``. That is ``R // 2`` unless ``N`` is even and ``R`` odd (254
        readout samples, 127 recon rows: voxel 64, not 63)."""
        e, r = self.encoded_matrix[:2], self.recon_matrix[:2]
        return (e[0] // 2 - (e[0] - r[0]) // 2, e[1] // 2 - (e[1] - r[1]) // 2)

    def oversampled_readout_rows(self, rows: int) -> int | None:
        """The recon readout rows of k-space with ``rows`` readout rows when the header says
        that readout is oversampled (encoded rows ``rows`` above the recon rows), else ``None``:
        the one rule for the preprocess stage's crop and the training cards' record of it."""
        encoded, recon = self.encoded_matrix[0], self.recon_matrix[0]
        return recon if recon < encoded == rows else None

    def acquired_columns(self, width: int | None = None) -> torch.Tensor:
        """``(width,)`` bool: the phase-encoding columns the scanner acquires (inside
        ``[padding_left, padding_right)``), whether or not they were sampled; ``width``
        defaults to the encoded matrix's ``y``."""
        width = self.encoded_matrix[1] if width is None else int(width)
        cols = torch.zeros(width, dtype=torch.bool)
        cols[self.padding_left : min(self.padding_right, width)] = True
        return cols

    def with_(self, **changes) -> Header:
        """A copy with ``changes``; a geometry derived from the recon FOV / matrix (not given)
        is derived again from the new ones."""
        if self._derived_geometry and "geometry" not in changes:
            changes["geometry"] = None  # derived again (the same unless the recon grid changes)
        return replace(self, **changes)


@dataclass
class KSpace(ShortRepr):
    """Multi-coil k-space of one slice or a stack of slices.

    Attributes
    ----------
    data
        ``(slices, coils, H, W)`` complex (a single slice keeps ``slices = 1``).
    header
        Acquisition header.
    mask
        ``(W,)`` boolean mask of acquired columns when the data are undersampled, else ``None``.
        Always ``None`` for non-Cartesian data.
    noise
        ``(coils, samples)`` noise-scan samples for prewhitening, or ``None``.
    reference
        ``(slices, rows, cols)`` reference magnitude image (e.g. ``reconstruction_rss``).
    slice_indices
        Index of each slice in its volume.
    source
        File the data came from ("" when simulated in memory).
    trajectory
        Non-Cartesian data only: ``(readouts, samples, 2)`` normalised k-space coordinates
        (``[-0.5, 0.5)``, ``[..., 0]`` along the readout axis ``x`` = image rows), and then
        ``data`` is ``(slices, coils, readouts, samples)`` and the image grid is
        ``header.encoded_matrix[:2]``.
    density
        Non-Cartesian data only: ``(readouts, samples)`` density compensation weights
        (scale of :mod:`mrirecon.functional.density`), or ``None``.
    calibration
        Cartesian data only: ``(slices, coils, H, W)`` complex, the parallel-imaging reference
        lines of a separate reference scan (ISMRMRD ``calibrationMode`` separate, or
        calibration-only lines of another contrast or gain), on the same grid as ``data`` (same
        readout placement, slice order and readout crop) and zero elsewhere; ``None`` when the
        calibration lines, if any, are part of ``data``. They serve calibration only (coil
        maps, GRAPPA kernel) and are never part of the image data or ``mask``.
    """

    dims: ClassVar[tuple[str, ...]] = ("slices", "coils", "H", "W")
    data: torch.Tensor
    header: Header
    mask: torch.Tensor | None = None
    noise: torch.Tensor | None = None
    reference: torch.Tensor | None = None
    slice_indices: tuple[int, ...] | None = None
    source: str = ""
    trajectory: torch.Tensor | None = None
    density: torch.Tensor | None = None
    calibration: torch.Tensor | None = None

    def __post_init__(self) -> None:
        _check_rank("KSpace", "data", self.data, self.dims)
        if not torch.is_complex(self.data):
            raise TypeError(f"KSpace.data must be complex, got {self.data.dtype}")
        if self.trajectory is not None:
            kshape = tuple(self.data.shape[-2:])
            if tuple(self.trajectory.shape) != (*kshape, 2):
                raise ValueError(f"KSpace.trajectory {tuple(self.trajectory.shape)} does not match "
                                 f"the data's (readouts, samples) = {kshape}")
            if self.mask is not None:
                raise ValueError("KSpace.mask must be None for non-Cartesian data")
            if self.density is not None and tuple(self.density.shape) != kshape:
                raise ValueError(f"KSpace.density {tuple(self.density.shape)} does not match {kshape}")
        elif self.density is not None:
            raise ValueError("KSpace.density needs a trajectory")
        if self.calibration is not None:
            if self.trajectory is not None:
                raise ValueError("KSpace.calibration is for Cartesian data only")
            if tuple(self.calibration.shape) != tuple(self.data.shape):
                raise ValueError(f"KSpace.calibration {tuple(self.calibration.shape)} does not "
                                 f"match the data {tuple(self.data.shape)}")
            if not torch.is_complex(self.calibration):
                raise TypeError(f"KSpace.calibration must be complex, got {self.calibration.dtype}")
        if self.mask is not None and self.mask.shape[-1] != self.data.shape[-1]:
            raise ValueError(
                f"KSpace.mask has {self.mask.shape[-1]} columns, data has {self.data.shape[-1]}"
            )
        if self.slice_indices is None:
            self.slice_indices = tuple(range(self.data.shape[0]))

    @property
    def num_coils(self) -> int:
        return self.data.shape[1]

    @property
    def is_cartesian(self) -> bool:
        return self.trajectory is None


@dataclass
class Sinogram(ShortRepr):
    """CT projection data: post-log line integrals ``(slices, views, detectors)``, dimensionless
    (attenuation in 1/mm times path length in mm: a 0.02 / mm disc of radius 10 mm gives 0.40 at
    its centre ray, whatever the pixel size).

    No image geometry of its own: the image grid is ``geometry``'s (``image_shape``,
    ``pixel_size``), and the CT pipeline keeps the output's in ``run.info["image_geometry"]``.
    """

    dims: ClassVar[tuple[str, ...]] = ("slices", "views", "detectors")
    data: torch.Tensor
    geometry: CTGeometry
    photons: float | None = None
    reference: torch.Tensor | None = None
    source: str = ""

    def __post_init__(self) -> None:
        _check_rank("Sinogram", "data", self.data, self.dims)
        if tuple(self.data.shape[1:]) != self.geometry.sinogram_shape:
            raise ValueError(
                f"Sinogram.data has (views, detectors) = {tuple(self.data.shape[1:])}, geometry "
                f"expects {self.geometry.sinogram_shape}"
            )


@dataclass
class Image(ShortRepr):
    """A reconstructed or reference volume ``(slices, rows, cols)``.

    ``kind`` says what the numbers mean: ``"magnitude"`` (arbitrary MR units), ``"hu"``
    (Hounsfield units) or ``"attenuation"`` (1/mm); exporters pick rescaling from it.
    """

    dims: ClassVar[tuple[str, ...]] = ("slices", "rows", "cols")
    data: torch.Tensor
    geometry: ImageGeometry = field(default_factory=ImageGeometry)
    kind: str = "magnitude"
    modality: str = "MR"
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        _check_rank("Image", "data", self.data, self.dims)
        if self.kind not in ("magnitude", "hu", "attenuation", "complex"):
            raise ValueError(f"Image.kind must be magnitude|hu|attenuation|complex, got {self.kind!r}")
        if self.modality not in ("MR", "CT"):
            raise ValueError(f"Image.modality must be 'MR' or 'CT', got {self.modality!r}")
