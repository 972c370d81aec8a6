from mrirecon.io.dicom import write_dicom_series
from mrirecon.io.dicom_read import read_dicom_series
from mrirecon.io.nifti import read_nifti, write_nifti
