"""Where an ISMRMRD acquisition lies: its ``position`` and ``read_dir`` / ``phase_dir`` /
``slice_dir`` (float32 fields of the binary acquisition header), which give the output's
origin and orientation (:func:`mrirecon.io.ismrmrd_raw._geometry`).

All zero means "not set" (the geometry then stays a placeholder). A NaN or Inf compares false
with every tolerance, so it passed the "set?" tests and reached the exported geometry: a NIfTI
affine of NaN with exit 0, a DICOM export that failed with "value nan is not finite", naming
neither file nor field.
"""

from __future__ import annotations

import numpy as np

#: The acquisition-header fields that place the image in the patient.
PLACEMENT_FIELDS = ("position", "read_dir", "phase_dir", "slice_dir")


def check_placement(heads: np.ndarray, imaging: np.ndarray, fail) -> None:
    """Refuse NaN or Inf in the placement fields of the imaging acquisitions ``imaging`` of the
    acquisition headers ``heads``; ``fail(field, problem)`` makes the error naming the file."""
    for name in PLACEMENT_FIELDS:
        values = np.asarray(heads[name][imaging], dtype=np.float64)
        bad = ~np.isfinite(values).all(axis=-1)
        if bad.any():
            first = int(np.argmax(bad))
            raise fail(f"data[{int(imaging[first])}].head.{name}",
                       f"{values[first].tolist()} is not finite ({int(bad.sum())} of "
                       f"{imaging.size} imaging acquisitions): the image's position and "
                       "orientation in the patient would be NaN in the NIfTI and DICOM outputs")
