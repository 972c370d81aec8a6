"""Tell which layout an HDF5 file has, without reading its arrays."""

from __future__ import annotations

from pathlib import Path

import h5py

from mrirecon.io.errors import DataFormatError, open_hdf5
from mrirecon.io.layout_hints import READ_HDF5_LAYOUTS


def hdf5_layout(path: str | Path) -> str:
    """``"fastmri"`` (a ``kspace`` dataset), ``"ismrmrd"`` (a ``dataset`` group with ``data``)
    or ``"ct_hdf5"`` (a ``data`` / ``sinogram`` dataset of CT projections).

    Opened as every reader opens it (:func:`~mrirecon.io.errors.open_hdf5`): a FIFO, a missing
    file, one another process holds open for writing, or one keeping data outside itself is
    refused in the reader's words."""
    p = Path(path)
    f = open_hdf5(p, "HDF5")
    try:
        with f:
            keys = set(f.keys())
            if "kspace" in keys:
                return "fastmri"
            if "dataset" in keys and isinstance(f["dataset"], h5py.Group):
                return "ismrmrd"
            if keys & {"data", "sinogram", "observation"}:
                return "ct_hdf5"
    except OSError as e:
        raise DataFormatError(str(p), "file", f"not a readable HDF5 file ({e})") from e
    raise DataFormatError(str(p), "<root>", f"unknown HDF5 layout (top-level keys: "
                                            f"{sorted(keys)}); {READ_HDF5_LAYOUTS}")
