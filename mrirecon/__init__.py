"""mrirecon: model-based deep-learning reconstruction for MRI and CT.

Measured data ``y`` -> physics operator ``A`` -> classical solver or learned unrolled network
(calling ``A``, ``A.H``, ``A.gram``) -> image -> metrics and DICOM/NIfTI export.
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# OpenMP's threads sleep between parallel regions instead of spinning (unless the user set
# OMP_WAIT_POLICY): read when torch loads OpenMP, so only before torch is imported. Set by the
# command line alone, Python callers on 2 threads of a busy machine ran l1_wavelet 3-9x slower
# than on 1 (mrirecon.threads.set_wait_policy, the same rule).
if "torch" not in _sys.modules:
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def clear_caches() -> None:
    """Empty every cache mrirecon keeps across calls (CT projectors and FBP tables per
    geometry, NUFFT plans, ...) and hand the freed memory back to the OS / the GPU driver.

    See :func:`mrirecon.core.caches.clear_caches`. (Imported on call: ``import mrirecon``
    stays free of torch, whose OpenMP the CLI configures first.)
    """
    from mrirecon.core.caches import clear_caches as clear

    clear()
