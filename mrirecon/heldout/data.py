"""Held-out data at deployment size, from the reserved images only (fixed seeds).

MRI (fastMRI multi-coil brain/knee-like geometry): each reserved magnitude image is zoomed to
fill a ``320 x 320`` field of view, placed in a ``640 x 320`` image (2x readout oversampling,
as fastMRI's ``kspace``; the knee-width part: ``640 x 368``, the object in the centre columns), given a smooth random phase and 8 birdcage coil sensitivities (unit sum
of squares, random rotation and ring radius), Fourier transformed and measured with complex
Gaussian noise at 28-34 dB k-space SNR. The reference is fastMRI's ``reconstruction_rss``: the
root-sum-of-squares of the fully sampled noisy coil images, cropped to ``320 x 320``. Each image
gives :data:`MRI_VARIANTS` volumes (each variant: its own zoom, flip, phase, coils, noise).

CT (LoDoPaB-CT geometry): each reserved CT image (HU) is rotated / zoomed onto ``362 x 362`` over
a 26 cm field of view, converted to attenuation ``mu = 0.0192 (1 + HU / 1000)`` /mm, projected
in parallel beam over 1000 angles with 513 detector bins and measured with Poisson noise at
``I0 = 4096`` photons per bin (LoDoPaB's dose; counts floored at 0.1). Sparse-view data keep 30
or 60 of the angles (every 33rd / 16th: 31 / 63 angles, as the pipelines' ``undersample.views``).
Each image gives :data:`CT_VARIANTS` slices (rotation, zoom, flip, noise). References are
``mu / MU_MAX`` as in LoDoPaB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrirecon.io.heldout_sources import HELDOUT_CT, HELDOUT_MR, read_heldout_ct, read_heldout_mr

MRI_VARIANTS = 1
CT_VARIANTS = 1
MRI_SEED = 2024
CT_SEED = 4048
MRI_RECON = (320, 320)
MRI_COILS = 8
CT_SIZE, CT_FULL_VIEWS, CT_DETECTORS, CT_PHOTONS = 362, 1000, 513, 4096.0


def _fit(img: np.ndarray, shape: tuple[int, int], zoom: float, rng: np.random.Generator) -> np.ndarray:
    """Zoom ``img`` so its larger side spans ``zoom`` x the target, random flip, centre it."""
    h, w = shape
    f = zoom * min(h / img.shape[0], w / img.shape[1])
    z = np.clip(ndimage.zoom(img, f, order=3), 0, None)
    if rng.uniform() < 0.5:
        z = z[:, ::-1]
    out = np.zeros(shape)
    r0, c0 = (h - z.shape[0]) // 2, (w - z.shape[1]) // 2
    rs, cs = max(r0, 0), max(c0, 0)
    zr, zc = max(-r0, 0), max(-c0, 0)
    hh, ww = min(h - rs, z.shape[0] - zr), min(w - cs, z.shape[1] - zc)
    out[rs:rs + hh, cs:cs + ww] = z[zr:zr + hh, zc:zc + ww]
    return out


def _smooth_phase(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]] / np.array(shape).max() - 0.5
    field = ndimage.gaussian_filter(rng.standard_normal(shape), max(shape) / 8, mode="wrap")
    field /= max(field.std(), 1e-12)
    return rng.uniform(0, 2 * np.pi) + rng.normal(0, 1.5) * xx + rng.normal(0, 1.5) * yy + field


@dataclass
class HeldoutMRIVolume:
    """One held-out volume: ``kspace (1, coils, 640, W)`` complex64 (``W`` 320, or 368 for the
    knee-width part), ``reference (1, 320, 320)``."""

    name: str
    kspace: torch.Tensor
    reference: np.ndarray
    snr_db: float


#: The phase-encoding widths of the held-out MRI parts: fastMRI's brain (320) and knee (368).
MRI_WIDTHS = (320, 368)


def heldout_mri_name(source: str, variant: int, width: int = MRI_RECON[1]) -> str:
    """The name of variant ``variant`` of the reserved MR image ``source`` (its file is NAME.h5);
    the knee-width part's names end in ``_w368``."""
    stem = f"heldout_{Path(source).name.split('.')[0].replace('-', '_')}_{variant}"
    return stem if width == MRI_RECON[1] else f"{stem}_w{width}"


def heldout_mri_volumes(variants: int = MRI_VARIANTS, seed: int = MRI_SEED,
                        width: int = MRI_RECON[1]) -> list[HeldoutMRIVolume]:
    """The held-out MRI volumes (``len(HELDOUT_MR) * variants``), in a fixed order, at
    ``640 x width`` (the ``320 x 320`` object in the centre columns: the 368-wide part holds the
    same images and phases; its noise level is set from the mean over all ``640 x width``
    samples, so its per-sample variance is 320 / 368 of the 320-wide part's (~0.6 dB less noise),
    and the noise draws, of another shape, differ)."""
    from mrirecon.data.simulate_mri import birdcage_maps
    from mrirecon.functional import fft2c, ifft2c

    if width not in MRI_WIDTHS:
        raise ValueError(f"held-out MRI width {width}: expected one of {MRI_WIDTHS}")
    h, w = MRI_RECON
    H, c0 = 2 * h, (width - w) // 2
    out = []
    for si, name in enumerate(HELDOUT_MR):
        src = read_heldout_mr(name)
        for v in range(variants):
            rng = np.random.default_rng([seed, si, v])
            mag = _fit(src, (h, w), rng.uniform(0.85, 1.0), rng)
            img = np.zeros((H, width), dtype=np.complex128)
            img[h // 2:h // 2 + h, c0:c0 + w] = mag * np.exp(1j * _smooth_phase(rng, (h, w)))
            x = (np.arange(width) - width / 2) / (w / 2)
            y = (np.arange(H) - H / 2) / (h / 2)
            yy, xx = np.meshgrid(y, x, indexing="ij")
            maps = birdcage_maps(MRI_COILS, xx, yy, radius=rng.uniform(1.3, 1.8),
                                 rotation=rng.uniform(0, 2 * np.pi))
            k = fft2c(torch.from_numpy(maps * img[None]))
            snr = float(rng.uniform(28.0, 34.0))
            sigma = math.sqrt(float(k.abs().pow(2).mean()) / 10 ** (snr / 10) / 2)
            noise = rng.standard_normal((2,) + tuple(k.shape))
            k = k + torch.from_numpy(sigma * (noise[0] + 1j * noise[1]))
            coil_images = ifft2c(k)
            rss = coil_images.abs().pow(2).sum(0).sqrt()[h // 2:h // 2 + h, c0:c0 + w]
            out.append(HeldoutMRIVolume(heldout_mri_name(name, v, width), k[None].to(torch.complex64),
                                        rss[None].numpy().astype(np.float32), snr))
    return out


def write_heldout_mri(out_dir: str | Path, variants: int = MRI_VARIANTS, seed: int = MRI_SEED,
                      width: int = MRI_RECON[1]) -> list[Path]:
    """Write the held-out MRI volumes as fully sampled fastMRI files (for ``run_bench``)."""
    from mrirecon.containers import Header
    from mrirecon.io.fastmri import write_fastmri

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    h, w = MRI_RECON
    for vol in heldout_mri_volumes(variants, seed, width):
        header = Header(encoded_matrix=(2 * h, width, 1), recon_matrix=(h, w, 1),
                        encoded_fov_mm=(2 * h * 0.5, width * 0.5, 3.0), recon_fov_mm=(h * 0.5, w * 0.5, 3.0),
                        acquisition="HELDOUT", num_coils=MRI_COILS)
        paths.append(write_fastmri(out / f"{vol.name}.h5", vol.kspace, header,
                                   reference=vol.reference, attrs={"snr_db": vol.snr_db}))
    return paths


@dataclass
class HeldoutCTSlice:
    """One held-out CT slice: full-view noisy sinogram and reference ``mu / MU_MAX``."""

    name: str
    sinogram: torch.Tensor
    reference: torch.Tensor
    geometry: object


def heldout_ct_name(source: str, variant: int) -> str:
    """The name of ``variant`` of the reserved CT image ``source`` (its "volume" in the results)."""
    return f"heldout_{Path(source).stem.replace('-', '_')}_{variant}"


def heldout_ct_slices(variants: int = CT_VARIANTS, seed: int = CT_SEED) -> list[HeldoutCTSlice]:
    """The held-out CT slices (``len(HELDOUT_CT) * variants``) on the LoDoPaB geometry."""
    from mrirecon.data.simulate_ct import MU_WATER_70KEV_PER_MM, ct_simulation_geometry, poisson_postlog
    from mrirecon.io.lodopab import MU_MAX_PER_MM
    from mrirecon.operators.ct import ct_operator

    geom = ct_simulation_geometry("parallel", CT_SIZE, CT_FULL_VIEWS, CT_DETECTORS, 260.0)
    op = ct_operator(geom)
    out = []
    for si, name in enumerate(HELDOUT_CT):
        hu_src = read_heldout_ct(name)
        for v in range(variants):
            rng = np.random.default_rng([seed, si, v])
            body = np.argwhere(hu_src > -500.0)
            (r0, c0), (r1, c1) = body.min(0), body.max(0) + 1
            crop = hu_src[r0:r1, c0:c1] + 1024.0  # air = 0 for zero padding
            hu = _fit(crop, (CT_SIZE, CT_SIZE), rng.uniform(0.8, 0.95), rng)
            hu = ndimage.rotate(hu, rng.uniform(-180, 180), reshape=False, order=1) - 1024.0
            mu = np.maximum(MU_WATER_70KEV_PER_MM * (1.0 + np.clip(hu, -1024, 3071) / 1000.0), 0.0)
            with torch.no_grad():
                clean = op(torch.from_numpy(mu)).double().numpy()
            sino = poisson_postlog(clean, CT_PHOTONS, rng, min_count=0.1)
            out.append(HeldoutCTSlice(heldout_ct_name(name, v), torch.from_numpy(sino).float(),
                                      torch.from_numpy(mu / MU_MAX_PER_MM).float(), geom))
    return out
