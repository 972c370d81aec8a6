"""CT acquisition geometry: the one description shared by projectors, simulation and I/O."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

#: The largest voxel spacing, slice thickness or origin coordinate (mm) an
#: :class:`~mrirecon.containers.ImageGeometry` holds: 100 m. No MRI or CT field of view, bore or
#: table travel comes within orders of magnitude of it (nor a patient position from the
#: isocentre), so a larger value is a corrupt header, not a measurement. Below it every value is finite in float32
#: (NIfTI's pixdim and affine; 1e300 mm became inf there) and exact to its float32 step at
#: 100 m, 2^-7 mm.
MAX_LENGTH_MM = 1e5
#: The largest field of view (mm) a :class:`CTGeometry` may state: the same bound (its image's
#: voxels and position are an ImageGeometry's).
MAX_FOV_MM = MAX_LENGTH_MM


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(name: str, value: object) -> int:
    """``value`` as an int when it is a whole number (``193.0`` from a computed count is one);
    a fraction, a string or a bool is refused naming the field (``int()`` had cut 96.7 to 96,
    and a float ``num_detectors`` reached torch as a shape)."""
    if _is_number(value) and math.isfinite(value) and float(value) == int(value):
        return int(value)
    raise ValueError(f"CTGeometry.{name} must be a whole number (a count), got {value!r}")


@dataclass(frozen=True)
class CTGeometry:
    """2-D parallel- or fan-beam geometry (all lengths in mm, angles in radians).

    The image is a ``(H, W)`` grid of square pixels of side ``pixel_size`` centred on the
    isocentre; row index grows along -y (top to bottom), column index along +x. A projection
    angle ``theta`` rotates the source/detector pair counter-clockwise; at ``theta = 0`` the
    rays of a parallel beam travel along +y and detector coordinate ``u`` runs along +x.

    Detector centre: the rotation axis (the isocentre; for fan beam, the central ray from the
    source through it) meets the detector ``detector_offset`` mm from the detector's middle,
    i.e. at element index ``(num_detectors - 1) / 2 + detector_offset / detector_spacing``
    (between two elements for an even count). ``detector_offset`` is positive along ``+u``
    (towards higher element indices). A sinogram from ``skimage.transform.radon`` has its axis
    at index ``n // 2`` of its ``n`` bins: ``detector_offset = +0.5 * detector_spacing`` when
    ``n`` is even (an even-size image with ``circle=True``; 282 bins for a 199-pixel image with
    ``circle=False``), none when odd; a scanner's centre-of-rotation error of ``k`` bins
    towards higher indices is ``+k * detector_spacing``.

    Attributes
    ----------
    beam
        ``"parallel"`` or ``"fan"``.
    image_shape
        ``(H, W)`` pixels.
    angles
        Projection angles ``(views,)`` in radians (any set: sparse view, limited angle).
    num_detectors
        Detector elements per view.
    pixel_size
        Pixel side in mm.
    detector_spacing
        Element pitch in mm: along the line for parallel beam and flat fan beam, along the
        arc of radius ``source_detector`` for the equi-angular (curved) fan beam.
    source_isocenter, source_detector
        Source-to-isocentre and source-to-detector distances (fan beam only).
    detector
        ``"flat"`` or ``"curved"`` (equi-angular) for fan beam; ignored for parallel beam.
        Clinical third-generation scanners have curved detectors (their pitch quoted as an
        angle per channel: ``detector_spacing`` is that angle in radians times
        ``source_detector``); flat ones are flat-panel (C-arm, micro-CT) geometries.
    detector_offset
        Where the rotation axis projects on the detector, in mm along ``u`` from the
        detector's middle (measured at the detector, along its arc for a curved one); default
        0 (a centred detector). Parallel and fan beam; over a full turn an offset detector
        (half-fan, extended field of view) measures the object beyond its short side with its
        long side, and the FBP weights the rays measured twice (:func:`~mrirecon.operators.fbp.
        offset_weights`).
    """

    beam: str
    image_shape: tuple[int, int]
    angles: tuple[float, ...]
    num_detectors: int
    pixel_size: float = 1.0
    detector_spacing: float = 1.0
    source_isocenter: float | None = None
    source_detector: float | None = None
    detector: str = "flat"
    detector_offset: float = 0.0

    def __post_init__(self) -> None:
        try:
            shape = tuple(self.image_shape)
        except TypeError:
            raise ValueError(f"CTGeometry.image_shape must be (H, W), got {self.image_shape!r}") from None
        object.__setattr__(self, "image_shape", tuple(_whole("image_shape", s) for s in shape))
        object.__setattr__(self, "num_detectors", _whole("num_detectors", self.num_detectors))
        object.__setattr__(self, "angles", tuple(float(a) for a in np.asarray(self.angles).ravel()))
        if self.beam not in ("parallel", "fan"):
            raise ValueError(f"CTGeometry.beam must be 'parallel' or 'fan', got {self.beam!r}")
        if len(self.image_shape) != 2 or min(self.image_shape) < 1:
            raise ValueError(f"CTGeometry.image_shape must be (H, W), got {self.image_shape}")
        if len(self.angles) < 1:
            raise ValueError("CTGeometry.angles must hold at least one angle")
        if not all(math.isfinite(a) for a in self.angles):
            bad = next(i for i, a in enumerate(self.angles) if not math.isfinite(a))
            raise ValueError(f"CTGeometry.angles must be finite, angle {bad} is {self.angles[bad]}")
        span = max(self.angles) - min(self.angles)
        if span > 4 * math.pi:  # the readers' rule (io.lodopab_attrs.MAX_ANGLE_SPAN), said here
            # for geometries built in code: degrees gave 13 dB FBP images without a word
            import warnings

            warnings.warn(f"CTGeometry.angles span {span:.6g} rad, more than two turns (4 pi): "
                          "angles are in radians (were degrees given? np.deg2rad converts "
                          "them)", UserWarning, stacklevel=3)
        for name in ("pixel_size", "detector_spacing", "source_isocenter", "source_detector"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and math.isfinite(value) and value > 0):
                raise ValueError(f"CTGeometry.{name} must be finite and > 0, got {value!r}")
        fov = self.pixel_size * max(self.image_shape)
        if fov > MAX_FOV_MM:  # the image's voxels and position would be refused later, unnamed
            raise ValueError(f"CTGeometry: the field of view, image_shape {tuple(self.image_shape)} "
                             f"x pixel_size {self.pixel_size:g} mm = {fov:g} mm, is beyond "
                             f"{MAX_FOV_MM:g} mm (100 m): no scanner's is that large")
        try:
            offset = float(self.detector_offset)
        except (TypeError, ValueError):
            raise ValueError("CTGeometry.detector_offset must be a number (mm), got "
                             f"{self.detector_offset!r}") from None
        if not math.isfinite(offset):
            raise ValueError(f"CTGeometry.detector_offset must be finite, got {offset}")
        object.__setattr__(self, "detector_offset", offset)
        if self.num_detectors < 1:
            raise ValueError(f"CTGeometry.num_detectors must be >= 1, got {self.num_detectors}")
        if self.beam == "fan":
            if self.source_isocenter is None or self.source_detector is None:
                raise ValueError("CTGeometry: fan beam needs source_isocenter and source_detector")
            if not 0 < self.source_isocenter < self.source_detector:
                raise ValueError(
                    "CTGeometry: need 0 < source_isocenter < source_detector, got "
                    f"{self.source_isocenter!r} and {self.source_detector!r}: source_detector is "
                    "the source-to-detector distance (ASTRA's source_origin + origin_det, not "
                    "origin_det alone)")
            if self.detector not in ("flat", "curved"):
                raise ValueError(f"CTGeometry.detector must be 'flat' or 'curved', got {self.detector!r}")
            fov = self.field_of_view_radius
            if fov >= self.source_isocenter:
                raise ValueError(
                    f"CTGeometry: the source lies inside the field of view: source_isocenter "
                    f"{self.source_isocenter:g} mm is not beyond its radius {fov:g} mm (half of "
                    f"image_shape's smaller side, {min(self.image_shape)} pixels, x pixel_size "
                    f"{self.pixel_size:g} mm); give a source_isocenter (and source_detector) "
                    f"above {fov:g} mm, or a smaller pixel_size or image_shape")

    @property
    def num_views(self) -> int:
        return len(self.angles)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(views, detectors)``."""
        return (self.num_views, self.num_detectors)

    @property
    def field_of_view_radius(self) -> float:
        """Radius (mm) of the circle inscribed in the image."""
        return 0.5 * min(self.image_shape) * self.pixel_size

    @property
    def detector_positions(self) -> np.ndarray:
        """Centres of the detector elements along the detector, ``(detectors,)`` in mm, measured
        from where the rotation axis projects (``u = 0``): ``(i - (n - 1) / 2) *
        detector_spacing - detector_offset``."""
        n = self.num_detectors
        return (np.arange(n) - (n - 1) / 2) * self.detector_spacing - self.detector_offset

    @property
    def fan_angles(self) -> np.ndarray:
        """Fan beam: each detector element's angle from the central ray, ``(detectors,)`` in
        radians (``u / source_detector`` on a curved detector, ``arctan`` of it on a flat one)."""
        u = self.detector_positions / self.source_detector
        return u if self.detector == "curved" else np.arctan(u)

    @property
    def image_radius(self) -> float:
        """Radius (mm) of the image's circumscribed circle about the rotation axis."""
        return 0.5 * self.pixel_size * math.hypot(*self.image_shape)

    @property
    def image_half_fan(self) -> float:
        """Fan beam: the largest fan angle (radians) of a ray that meets the image's
        circumscribed circle, ``asin(image_radius / source_isocenter)`` (pi / 2 with the source
        inside it)."""
        return math.asin(min(1.0, self.image_radius / self.source_isocenter))

    def __repr__(self) -> str:
        """A summary: the views as their count and angle range (the dataclass repr printed
        every angle, 19,709 characters at 1000 views); equality still compares every field."""
        beam = f"{self.detector} fan" if self.beam == "fan" else self.beam
        parts = [beam, f"image={self.image_shape}",
                 f"views={self.num_views} in [{min(self.angles):.4g}, {max(self.angles):.4g}] rad",
                 f"detectors={self.num_detectors}", f"pixel_size={self.pixel_size:g} mm",
                 f"detector_spacing={self.detector_spacing:g} mm"]
        if self.beam == "fan":
            parts += [f"source_isocenter={self.source_isocenter:g} mm",
                      f"source_detector={self.source_detector:g} mm"]
        if self.detector_offset:
            parts.append(f"detector_offset={self.detector_offset:g} mm")
        return f"CTGeometry({', '.join(parts)})"

    @classmethod
    def parallel(
        cls,
        image_shape: tuple[int, int],
        num_views: int = 180,
        num_detectors: int | None = None,
        *,
        angle_range: float = math.pi,
        pixel_size: float = 1.0,
        detector_spacing: float | None = None,
        detector_offset: float = 0.0,
    ) -> CTGeometry:
        """Parallel beam with ``num_views`` equispaced angles over ``[0, angle_range)``."""
        h, w = image_shape
        if num_detectors is None:
            num_detectors = int(math.ceil(math.hypot(h, w))) | 1
        angles = np.arange(num_views) * angle_range / num_views
        return cls("parallel", (h, w), tuple(angles), int(num_detectors), pixel_size,
                   detector_spacing or pixel_size, detector_offset=detector_offset)

    @classmethod
    def fan(
        cls,
        image_shape: tuple[int, int],
        num_views: int = 360,
        num_detectors: int | None = None,
        *,
        source_isocenter: float | None = None,
        source_detector: float | None = None,
        detector: str = "flat",
        angle_range: float = 2 * math.pi,
        pixel_size: float = 1.0,
        detector_spacing: float | None = None,
        detector_offset: float = 0.0,
    ) -> CTGeometry:
        """Fan beam; defaults: the source one image diagonal from the isocentre (twice the
        circumscribed radius), magnification 2, full scan, and a detector wide enough to cover
        the circumscribed circle."""
        h, w = image_shape
        diag = math.hypot(h, w) * pixel_size
        sid = source_isocenter or diag
        sdd = source_detector or 2 * sid
        mag = sdd / sid
        spacing = detector_spacing or pixel_size * mag
        if num_detectors is None:
            r = 0.5 * diag
            half_angle = math.asin(min(r / sid, 0.999))
            half = sdd * half_angle if detector == "curved" else sdd * math.tan(half_angle)
            num_detectors = int(math.ceil(2 * half / spacing)) + 2
        angles = np.arange(num_views) * angle_range / num_views
        return cls("fan", (h, w), tuple(angles), int(num_detectors), pixel_size, spacing,
                   float(sid), float(sdd), detector, detector_offset)
