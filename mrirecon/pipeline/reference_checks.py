"""Does the reference describe the output? Orientation and scale checks before metrics.

A reference (fastMRI ``reconstruction_rss``, LoDoPaB ``ground_truth_*``) stored in another
layout or in other units is scored as read: the metrics drop to a few dB with exit 0, which
reads as a bad reconstruction. These checks say so instead (warnings, the metrics are still
computed: an output that is itself off scale is also worth knowing about).
"""

from __future__ import annotations

from torch import Tensor

#: A reference whose best-matching flip / rotation correlates with the compared image this much
#: better than the reference as read is reported (correct ones: the identity wins by far).
ORIENTATION_MARGIN = 0.2
#: The 7 transforms ``t`` of :func:`mrirecon.models.common.dihedral` other than the identity
DIHEDRAL_NAMES = {1: "flipped up-down", 2: "flipped left-right", 3: "rotated 180 degrees",
                  4: "transposed", 5: "rotated 90 degrees", 6: "rotated 270 degrees",
                  7: "transposed and rotated 180 degrees"}
#: A reference whose L2 norm differs from the output's by more than this factor (either way) is
#: reported: undersampled zero-filled MRI is within 1.2x of its reference, FBP within 1.1x.
SCALE_FACTOR = 10.0


def _correlation(a: Tensor, b: Tensor) -> float:
    a = a.double().flatten()
    b = b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    den = float(a.norm() * b.norm())
    return float(a @ b) / den if den > 0 else 0.0


def orientation_note(reference: Tensor, image: Tensor, against: str, hint: str = "") -> str | None:
    """A message when a flip / rotation of ``reference`` matches ``image`` (same shape, the
    last two axes are rows and columns; leading axes are slices) far better than the reference
    as read, else ``None``. Non-square images try the flips only (a transpose changes the
    shape). ``against`` names ``image`` in the message; ``hint`` is appended to the question."""
    if reference.shape != image.shape or reference.ndim < 2:
        return None
    from mrirecon.models.common import dihedral

    square = reference.shape[-1] == reference.shape[-2]
    scores = {t: _correlation(dihedral(reference, t), image)
              for t in DIHEDRAL_NAMES if square or t < 4}
    best = max(scores, key=scores.__getitem__)
    as_read = _correlation(reference, image)
    if scores[best] > as_read + ORIENTATION_MARGIN:
        return (f"the reference matches {against} far better {DIHEDRAL_NAMES[best]} (correlation "
                f"{scores[best]:.2f}) than as read ({as_read:.2f}): is it stored in another "
                f"layout{hint}? The metrics compare against it as read")
    return None


def scale_note(reference: Tensor, output: Tensor) -> str | None:
    """A message when the L2 norms of ``reference`` and ``output`` differ by more than
    :data:`SCALE_FACTOR`, else ``None`` (also when either is all zero)."""
    ref, out = float(reference.double().norm()), float(output.double().norm())
    if not (ref > 0 and out > 0):
        return None
    ratio = ref / out
    if 1 / SCALE_FACTOR <= ratio <= SCALE_FACTOR:
        return None
    return (f"the reference's scale is {ratio:.3g}x the reconstruction's (L2 norms over the "
            "volume): a reference stored in other units (integers, a rescaled DICOM magnitude, "
            "HU) or a reconstruction off scale? NMSE and PSNR compare absolute values, so the "
            "metrics say little")
