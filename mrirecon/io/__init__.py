"""File formats (fastMRI / ISMRMRD / LoDoPaB HDF5, DICOM, NIfTI, BART .cfl): the only package that
imports h5py, pydicom, nibabel and ismrmrd.

The readers and writers load on first use (PEP 562): pydicom and nibabel alone took about
0.6 s of every ``mrirecon run`` process, also when it reads and writes only HDF5.
"""

from mrirecon.lazy import lazy_exports

_EXPORTS = {
    "BartKSpaceFile": "bart_cfl",
    "DataFormatError": "errors",
    "FastMRIFile": "fastmri",
    "header_to_xml": "ismrmrd_header",
    "parse_ismrmrd_header": "ismrmrd_header",
    "read_cfl": "bart_cfl",
    "read_dicom_series": "dicom_read",
    "read_fastmri": "fastmri",
    "read_ismrmrd": "ismrmrd_raw",
    "read_nifti": "nifti",
    "write_cfl": "bart_cfl",
    "write_dicom_series": "dicom",
    "write_fastmri": "fastmri",
    "write_ismrmrd_noncartesian": "ismrmrd_noncartesian",
    "write_nifti": "nifti",
    "write_reconstruction": "fastmri",
}

__all__ = [
    "BartKSpaceFile",
    "DataFormatError",
    "FastMRIFile",
    "header_to_xml",
    "parse_ismrmrd_header",
    "read_cfl",
    "read_dicom_series",
    "read_fastmri",
    "read_ismrmrd",
    "read_nifti",
    "write_cfl",
    "write_dicom_series",
    "write_fastmri",
    "write_ismrmrd_noncartesian",
    "write_nifti",
    "write_reconstruction",
]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
