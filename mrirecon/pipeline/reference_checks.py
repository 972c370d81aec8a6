"""Does the reference describe the output? Orientation, slice order and scale checks before
metrics.

A reference (fastMRI ``reconstruction_rss``, LoDoPaB ``ground_truth_*``) stored in another
layout, slice order or units is scored as read: the metrics drop to a few dB with exit 0, which
reads as a bad reconstruction. These checks say so instead (warnings, the metrics are still
computed: an output that is itself off scale is also worth knowing about).
"""

from __future__ import annotations

from torch import Tensor

from mrirecon.data.dataset import REFERENCE_SCALE_FACTOR, off_scale
# the orientation and slice-order rules live a layer down, where training applies them too
from mrirecon.training.reference_checks import (  # noqa: F401
    DETAIL_WINDOW, DIHEDRAL_NAMES, INVERTED_CORRELATION, ORIENTATION_MARGIN, ORIENTATION_MATCH,
    SLICE_ORDER_MARGIN, THUMBNAIL, orientation_note, slice_correlations, slice_order_note)

#: A reference whose L2 norm differs from the output's by more than this factor (either way) is
#: reported: undersampled zero-filled MRI is within 1.2x of its reference, FBP within 1.1x
#: (defined beside the training data, whose check refuses a reference off by it).
SCALE_FACTOR = REFERENCE_SCALE_FACTOR


def scale_note(reference: Tensor, output: Tensor) -> str | None:
    """A message when the L2 norms of ``reference`` and ``output`` differ by more than
    :data:`SCALE_FACTOR`, else ``None`` (also when either is all zero)."""
    if (ratio := off_scale(reference, output)) is None:
        return None
    return (f"the reference's scale is {ratio:.3g}x the reconstruction's (L2 norms over the "
            "volume): a reference stored in other units (integers, a rescaled DICOM magnitude, "
            "HU) or a reconstruction off scale? NMSE and PSNR compare absolute values, so the "
            "metrics say little")


#: What a CT sinogram stored otherwise does to its image, for a reference that matches the
#: data's FBP transformed (:func:`ct_orientation_note`): parallel-beam views over a half turn
#: with the detector reversed are those of the object rotated 180 degrees; views in reverse
#: angle order (a -> -a) those of its mirror image.
CT_DATA_CAUSES = {
    "rotated 180 degrees": "; or is the sinogram's detector axis reversed (the output is then "
                           "rotated 180 degrees)",
    **dict.fromkeys(("flipped up-down", "flipped left-right", "transposed",
                     "transposed and rotated 180 degrees"),
                    "; or are the views in reverse angle order (the output is then mirrored)"),
}


def ct_orientation_note(reference: Tensor, fbp: Tensor, hint: str = "") -> str | None:
    """:func:`orientation_note` of a CT reference against the data's FBP, naming the data as
    a cause too: a matching 180-degree rotation may be a reversed detector axis, a matching
    mirror views in reverse angle order (a reversed detector gave a rotated image, and the
    only warning blamed the ground truth's layout)."""
    msg = orientation_note(reference, fbp, "the data's FBP", hint)
    if msg is None:
        return None
    for name, cause in CT_DATA_CAUSES.items():
        if f"far better {name} (" in msg:
            return msg.replace(f"another layout{hint}?", f"another layout{hint}{cause}?", 1)
    return msg
