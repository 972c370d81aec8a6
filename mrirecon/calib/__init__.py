"""Coil calibration: sensitivity maps (ESPIRiT, Walsh, Inati), coil compression, prewhitening."""

from mrirecon.calib.centre import centre_maps, centre_window, centred_width, espirit_block
from mrirecon.calib.compression import gcc_apply, gcc_compress, gcc_matrices, svd_compress
from mrirecon.calib.espirit import calibration_region, espirit_kernels, espirit_maps
from mrirecon.calib.noncartesian import gridded_calibration_images, noncartesian_maps
from mrirecon.calib.prewhiten import noise_covariance, prewhiten, prewhiten_scan, whitening_matrix
from mrirecon.calib.walsh import inati_combine, walsh_maps

__all__ = [
    "calibration_region",
    "centre_maps",
    "centre_window",
    "centred_width",
    "espirit_kernels",
    "espirit_block",
    "espirit_maps",
    "gcc_apply",
    "gcc_compress",
    "gcc_matrices",
    "gridded_calibration_images",
    "inati_combine",
    "noise_covariance",
    "noncartesian_maps",
    "prewhiten",
    "prewhiten_scan",
    "svd_compress",
    "walsh_maps",
    "whitening_matrix",
]
