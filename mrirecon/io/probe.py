"""Tell which layout an HDF5 file has, without reading its arrays."""

from __future__ import annotations

from pathlib import Path

import h5py

from mrirecon.io.errors import DataFormatError, require_regular_file


def hdf5_layout(path: str | Path) -> str:
    """``"fastmri"`` (a ``kspace`` dataset), ``"ismrmrd"`` (a ``dataset`` group with ``data``)
    or ``"ct_hdf5"`` (a ``data`` / ``sinogram`` dataset of CT projections)."""
    p = Path(path)
    require_regular_file(p)
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        if not p.exists():  # deleted since it was listed: h5py's raw errno text said so
            raise FileNotFoundError(f"{p}: no such file") from None
        raise DataFormatError(str(p), "<file>", f"not a readable HDF5 file ({e})") from e
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
        raise DataFormatError(str(p), "<file>", f"not a readable HDF5 file ({e})") from e
    raise DataFormatError(str(p), "<root>", f"unknown HDF5 layout (top-level keys: {sorted(keys)})")
