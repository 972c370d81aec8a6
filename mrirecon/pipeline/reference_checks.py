"""Does the reference describe the output? Orientation, slice order and scale checks before
metrics.

A reference (fastMRI ``reconstruction_rss``, LoDoPaB ``ground_truth_*``) stored in another
layout, slice order or units is scored as read: the metrics drop to a few dB with exit 0, which
reads as a bad reconstruction. These checks say so instead (warnings, the metrics are still
computed: an output that is itself off scale is also worth knowing about).
"""

from __future__ import annotations

from torch import Tensor

from mrirecon.data.dataset import off_scale
# the orientation and slice-order rules live a layer down, where training applies them too
from mrirecon.training.reference_checks import (  # noqa: F401
    CT_DATA_CAUSES, DETAIL_WINDOW, DIHEDRAL_NAMES, INVERTED_CORRELATION, ORIENTATION_MARGIN,
    ORIENTATION_MATCH, SLICE_ORDER_MARGIN, THUMBNAIL, orientation_note, slice_correlations,
    slice_order_note)


def scale_note(reference: Tensor, output: Tensor) -> str | None:
    """A message when the L2 norms of ``reference`` and ``output`` differ by more than
    :data:`~mrirecon.data.dataset.REFERENCE_SCALE_FACTOR` (defined beside the training data,
    whose check refuses a reference off by it), else ``None`` (also when either is all zero)."""
    if (ratio := off_scale(reference, output)) is None:
        return None
    return (f"the reference's scale is {ratio:.3g}x the reconstruction's (L2 norms over the "
            "volume): a reference stored in other units (integers, a rescaled DICOM magnitude, "
            "HU) or a reconstruction off scale? NMSE and PSNR compare absolute values, so the "
            "metrics say little")
