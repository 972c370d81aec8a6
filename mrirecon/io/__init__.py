"""File formats: the only package that imports h5py, pydicom, nibabel and ismrmrd.

The readers and writers load on first use (PEP 562): pydicom and nibabel alone took about
0.6 s of every ``mrirecon run`` process, also when it reads and writes only HDF5.
"""

import importlib

_EXPORTS = {
    "DataFormatError": "errors",
    "FastMRIFile": "fastmri",
    "header_to_xml": "ismrmrd_header",
    "parse_ismrmrd_header": "ismrmrd_header",
    "read_dicom_series": "dicom_read",
    "read_fastmri": "fastmri",
    "read_ismrmrd": "ismrmrd_raw",
    "read_nifti": "nifti",
    "write_dicom_series": "dicom",
    "write_fastmri": "fastmri",
    "write_ismrmrd_noncartesian": "ismrmrd_noncartesian",
    "write_nifti": "nifti",
    "write_reconstruction": "fastmri",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
