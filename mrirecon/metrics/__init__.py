"""Image-quality metrics with the fastMRI definitions: NMSE, PSNR, SSIM, and the SSIM loss."""

from mrirecon.metrics.metrics import (
    METRIC_FUNCS,
    MetricsReport,
    crop_to_target,
    evaluate_volumes,
    fastmri_crop,
    metrics_table,
    mse,
    nmse,
    psnr,
    ssim,
)
from mrirecon.metrics.ssim_loss import SSIMLoss, ssim_map

__all__ = [
    "METRIC_FUNCS",
    "MetricsReport",
    "SSIMLoss",
    "crop_to_target",
    "evaluate_volumes",
    "fastmri_crop",
    "metrics_table",
    "mse",
    "nmse",
    "psnr",
    "ssim",
    "ssim_map",
]
