"""mrirecon: model-based deep-learning reconstruction for MRI and CT.

Measured data ``y`` -> physics operator ``A`` -> classical solver or learned unrolled network
(calling ``A``, ``A.H``, ``A.gram``) -> image -> metrics and DICOM/NIfTI export.
"""

__version__ = "0.1.0"


def clear_caches() -> None:
    """Empty every cache mrirecon keeps across calls (CT projectors and FBP tables per
    geometry, NUFFT plans, ...) and hand the freed memory back to the OS / the GPU driver.

    See :func:`mrirecon.core.caches.clear_caches`. (Imported on call: ``import mrirecon``
    stays free of torch, whose OpenMP the CLI configures first.)
    """
    from mrirecon.core.caches import clear_caches as clear

    clear()
