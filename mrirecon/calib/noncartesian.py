"""Coil sensitivities from non-Cartesian k-space: ESPIRiT or Walsh on the gridded centre.

The samples within ``calib_width / 2`` grid units of the k-space centre are density
compensated, tapered by a Hann window (no ringing in the low-resolution images) and gridded
with the adjoint NUFFT, per coil. Walsh's method runs on those coil images; ESPIRiT on their
centred Cartesian k-space, whose central ``calib_width`` block is then fully populated. A
``calib_width`` beyond the image grid calibrates on the whole grid (:func:`gridded_calib_width`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mrirecon.calib.espirit import espirit_maps, largest_kernel
from mrirecon.calib.walsh import walsh_maps
from mrirecon.functional import fft2c
from mrirecon.functional.density import pipe_menon_density
from mrirecon.functional.nufft import checked_trajectory, nufft_adjoint


def gridded_calibration_images(kspace: Tensor, trajectory: Tensor, shape: tuple[int, int],
                               calib_width: int = 24, weights: Tensor | None = None) -> Tensor:
    """Low-resolution coil images ``(..., coils, H, W)`` from samples ``(..., coils, *K)``.

    Parameters
    ----------
    kspace
        Non-Cartesian samples, coil axis before the trajectory's ``K`` axes.
    trajectory
        ``(*K, 2)`` normalised coordinates.
    shape
        ``(H, W)`` image grid.
    calib_width
        Diameter of the calibration disc in grid samples (cycles/FOV).
    weights
        Density compensation (default: Pipe-Menon for the trajectory).
    """
    h, w = int(shape[0]), int(shape[1])
    # finite and normalised, as nufft_sense needs: radians or cycles/FOV gave maps of another
    # k-space (correlation 0.81-0.84 with the true maps), no error
    trajectory = checked_trajectory(trajectory, (h, w), "noncartesian_maps")
    if calib_width < 2:
        raise ValueError(f"gridded_calibration_images: calib_width must be >= 2, got {calib_width}")
    if weights is None:
        weights = pipe_menon_density(trajectory, (h, w))
    traj = trajectory.to(torch.float64)
    radius = torch.sqrt((traj[..., 0] * h) ** 2 + (traj[..., 1] * w) ** 2)  # cycles / FOV
    r = calib_width / 2
    taper = torch.where(radius < r, 0.5 + 0.5 * torch.cos(math.pi * radius / r), torch.zeros_like(radius))
    if not bool((taper > 0).any()):
        raise ValueError("gridded_calibration_images: no samples within the calibration disc")
    # the weights on the trajectory's device: Pipe-Menon's are computed on the host (finufft),
    # and a CPU tensor times the CUDA taper failed ("Expected all tensors to be on the same device")
    wt = torch.as_tensor(weights, dtype=torch.float64, device=traj.device) * taper
    wt = wt.to(kspace.real.dtype).to(kspace.device)
    if not bool((wt != 0).any()):  # ESPIRiT would fail on all-zero images (a bare MKL error)
        raise ValueError("gridded_calibration_images: every sample within the calibration disc "
                         "has density weight 0")
    return nufft_adjoint(kspace * wt, trajectory.to(kspace.device), (h, w))


def gridded_calib_width(calib_width: int, shape: tuple[int, int]) -> int:
    """``calib_width`` clamped to the ``(H, W)`` image grid, as :func:`noncartesian_maps` uses
    it (Cartesian calibration is clamped to the data's centre band the same way): the default 24
    on a 16 x 16 radial grid failed, "calibration_region: calibration size (24, 24) does not fit
    k-space (16, 16)"."""
    return min(int(calib_width), *(int(n) for n in shape))


def noncartesian_maps(kspace: Tensor, trajectory: Tensor, shape: tuple[int, int], *,
                      method: str = "espirit", calib_width: int = 24, weights: Tensor | None = None,
                      **options) -> Tensor:
    """Sensitivity maps ``(..., coils, H, W)`` from non-Cartesian samples.

    ``method="espirit"`` (default; ``options`` go to
    :func:`~mrirecon.calib.espirit.espirit_maps`, e.g. ``crop``) or ``"walsh"`` (to
    :func:`~mrirecon.calib.walsh.walsh_maps`, per slice). ``calib_width`` is clamped to the
    grid (:func:`gridded_calib_width`), and ESPIRiT's ``kernel_width`` (default 6) to the
    widest kernel that takes 3 positions across that block
    (:func:`~mrirecon.calib.espirit.largest_kernel`, as the Cartesian calibration clamps it:
    ``calibrate.calib_width=7`` runs 5 x 5 kernels; it was refused with advice in API terms).
    """
    calib_width = gridded_calib_width(calib_width, shape)
    images = gridded_calibration_images(kspace, trajectory, shape, calib_width, weights)
    if method == "espirit":
        fit = largest_kernel(calib_width)
        if fit < 1:
            raise ValueError(f"noncartesian_maps: ESPIRiT needs a calibration block of at least 3 "
                             f"grid units, got calib_width {calib_width} (use method='walsh')")
        kw = options.get("kernel_width", 6)
        kw = (kw, kw) if isinstance(kw, int) else tuple(kw)
        options["kernel_width"] = (min(int(kw[0]), fit), min(int(kw[1]), fit))
        return espirit_maps(fft2c(images), calib_width, **options)
    if method == "walsh":
        flat = images.reshape(-1, *images.shape[-3:])
        maps = torch.stack([walsh_maps(s, **options) for s in flat])
        return maps.reshape(images.shape)
    raise ValueError(f"noncartesian_maps: method must be 'espirit' or 'walsh', got {method!r}")
