"""The root attributes of a fastMRI file (``acquisition``, ``max``, ``norm``, ``patient_id``,
``acceleration``) as Python values, and the two of them that label the header.

fastMRI's own reader (``fastmri.data.SliceDataset``) passes ``hf.attrs`` through unread into
each sample; only ``max`` is used (by its transforms, as the SSIM data range). ``acquisition``
and ``patient_id`` are labels, not data: one stored as an array of several values is ignored
with a :class:`~mrirecon.io.errors.DataWarning` naming it (the header keeps the XML's values),
as fastMRI ignores it, rather than refusing a volume whose k-space and header are sound.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from mrirecon.io.errors import DataWarning, warn_data

#: The root attributes that label the header when present (:func:`header_labels`).
LABEL_ATTRS = ("acquisition", "patient_id")


def _attr_value(value):
    """An attribute as a Python value: a 1-element array (MATLAB's ``h5writeatt``, HDF5.jl given
    a vector, h5py's ``attrs[k] = [v]``) as its element, numpy scalars unwrapped, bytes decoded.
    Was: ``max`` = ``array([0.00098])``, refused by training ("is not a number") or a raw
    TypeError, and ``patient_id`` "['abc']", another patient than "abc"."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(-1)[0]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def header_labels(attrs: Mapping, path: str | os.PathLike) -> dict[str, str]:
    """``{"acquisition": ..., "patient_id": ...}`` from the attributes ``attrs`` (already
    :func:`_attr_value`'d) of the file ``path``, for the ones present and not empty. One that is
    an array of other than one value is left out with a :class:`DataWarning` naming
    ``attrs/<name>`` (was: ``if attrs.get(...)`` on the array raised "The truth value of an
    array ... is ambiguous", reported as a corrupt ``ismrmrd_header``)."""
    out = {}
    for name in LABEL_ATTRS:
        value = attrs.get(name)
        if isinstance(value, np.ndarray):
            warn_data(DataWarning(path, f"attrs/{name}", (
                f"expected one string, got an array of shape {value.shape}: ignored, the "
                "ismrmrd_header's value is used (the attribute is a label, not data)"),
                kind="attribute"), stacklevel=4)  # header's caller
        elif value:  # as before: an empty or zero label is no label
            out[name] = str(value)
    return out
