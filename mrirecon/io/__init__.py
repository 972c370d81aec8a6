"""File formats: the only package that imports h5py, pydicom, nibabel and ismrmrd."""

from mrirecon.io.dicom import write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.nifti import read_nifti, write_nifti
from mrirecon.io.errors import DataFormatError
from mrirecon.io.fastmri import FastMRIFile, read_fastmri, write_fastmri, write_reconstruction
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
from mrirecon.io.ismrmrd_raw import read_ismrmrd

__all__ = [
    "DataFormatError",
    "FastMRIFile",
    "header_to_xml",
    "parse_ismrmrd_header",
    "read_dicom_series",
    "read_fastmri",
    "read_ismrmrd",
    "read_nifti",
    "write_dicom_series",
    "write_fastmri",
    "write_ismrmrd_noncartesian",
    "write_nifti",
    "write_reconstruction",
]
