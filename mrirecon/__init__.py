"""mrirecon: model-based deep-learning reconstruction for MRI and CT.

Measured data ``y`` -> physics operator ``A`` -> classical solver or learned unrolled network
(calling ``A``, ``A.H``, ``A.gram``) -> image -> metrics and DICOM/NIfTI export.
"""

__version__ = "0.1.0"
