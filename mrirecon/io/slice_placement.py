"""Tolerances for placing slices in the patient, shared by the ISMRMRD reader
(:mod:`mrirecon.io.ismrmrd_placement`) and the DICOM reader (:mod:`mrirecon.io.dicom_read`):
when two directions are the same, when two positions coincide, and how far a slice centre may
leave the slice normal through the first slice before the stack is refused.
"""

from __future__ import annotations

import numpy as np

#: How far a direction cosine of one slice may differ from the first slice's (the files of a
#: DICOM series, the imaging acquisitions of an ISMRMRD file): float32 rounding is 6e-8, a
#: turned or tilted slice differs by sin(angle), 1.7e-2 for 1 degree.
ORIENTATION_TOL = 1e-4
#: Direction cosines written to 3 decimals (as DICOM's often are; ISMRMRD directions count as
#: set within 1e-3 of unit length) are each off by up to 5e-4, the slice normal by up to
#: 3 * sqrt(3) * 5e-4 = 2.6e-3 rad (0.15 deg): a slice position may leave the normal through
#: the first slice by that angle times its distance (0.5 mm at 190 mm) without any gantry tilt.
NORMAL_ANGLE_TOL = 3 * np.sqrt(3) * 5e-4
#: Positions closer than this along the slice normal coincide, and the least any in-plane
#: tolerance is (also DICOM's PixelSpacing differences between files).
POSITION_TOL_MM = 1e-3


#: The DICOM element an ``ImageGeometry`` refusal's value came from, by a word of its message
#: (the slice gap, ``spacing[0]``, comes from the positions; the rest is the image's position).
DICOM_GEOMETRY_FIELDS = (("orientation", "ImageOrientationPatient"),
                         ("between slices", "ImagePositionPatient"), ("spacing", "PixelSpacing"),
                         ("thickness", "SliceThickness"))


def position_tolerance(spacing: float, quantum: float) -> float:
    """How far (mm) a slice centre may leave the line through the first slice along the normal,
    for slices ``spacing`` mm apart whose positions are rounded to a step ``quantum`` (mm).

    Each rounded coordinate is off by up to ``quantum / 2``, so a position is up to
    ``sqrt(3) quantum`` off the line and a step between two slices up to ``2 sqrt(3) quantum``
    off the mean: ``2 sqrt(3) quantum``, at least :data:`POSITION_TOL_MM` or 1e-3 of the
    spacing and at most a quarter of it (one missing slice among N >= 3 makes a step at least
    half a spacing from the mean). The angle term (:data:`NORMAL_ANGLE_TOL` times the distance
    from the first slice) is added by the caller where the cosines may be rounded."""
    return min(max(POSITION_TOL_MM, 1e-3 * spacing, 2 * np.sqrt(3) * quantum), spacing / 4)
