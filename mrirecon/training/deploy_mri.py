"""Training data for MRI models at the deployment geometry (fastMRI multi-coil, readout-oversampled).

Each sample is simulated the way a fastMRI brain/knee acquisition looks, then cut to a band of
image rows for cheap training steps:

1. a ``320 x 320`` magnitude image from :class:`DeploymentImages` (natural photographs, procedural
   images and strongly deformed, contrast-remapped MNI152 slices; see
   :mod:`mrirecon.training.prior_images`), half of the natural / procedural ones on a dark
   background of random shape, given a random smooth phase;
2. placed in the centre rows of a ``640 x 320`` field of view (2x readout oversampling, as
   fastMRI's ``kspace``);
3. 8 or 12 birdcage coils (random ring radius, rotation, axial offset and per-coil complex gain,
   so the sum of squares is not flat), Fourier transformed, complex Gaussian noise at a k-space
   SNR of 28-34 dB;
4. a fastMRI equispaced-fraction mask, 4x with centre fraction 0.08 or 8x with 0.04;
5. coil maps estimated the way the pipeline estimates them
   (:func:`mrirecon.calib.centre.centre_maps`, ESPIRiT on the acquired centre band, ``crop=0``).
   A VarNet with its own sensitivity network ignores them, but they stay for it too: the scale
   ``s`` of step 6 is computed with them (without them ``s`` moves by 4e-5 to 1.3e-4 relative,
   so the shipped models' samples would not be reproduced bit for bit);
6. the scale ``s = max |A^H y|`` of the whole ``640 x 320`` slice -- what
   :class:`~mrirecon.models.template.UnrolledModel`'s normalisation computes at inference -- and
   the target: the root-sum-of-squares of the fully sampled noisy coil images (fastMRI's
   ``reconstruction_rss``), both divided by ``s``;
7. bands of ``crop_rows`` image rows. The mask acts on columns only, so the rows of the hybrid
   space (inverse FFT along the readout) are independent problems: a band of rows with the same
   mask and the same rows of the maps is exactly a smaller SENSE problem
   (``y_band = M F (S x)[rows]``). A fully convolutional model trained on bands therefore sees
   the full geometry at inference with the same operator, masks, noise and scaling.

Nothing here reads the held-out images (:mod:`mrirecon.heldout`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from mrirecon.training.prior_images import (
    PriorImageBank,
    elastic_warp,
    random_phase,
    random_remap,
)

#: fastMRI multi-coil geometry: image rows (2x oversampled readout) and columns.
ROWS, COLS = 640, 320
#: fastMRI centre fractions per acceleration.
CENTRE_FRACTIONS = {4: 0.08, 8: 0.04}
COIL_CHOICES = (8, 8, 12)
SNR_DB = (28.0, 34.0)
SOURCE_WEIGHTS = {"natural": 0.35, "procedural": 0.25, "mni": 0.35, "ct": 0.05}


#: The phase-encoding column counts a training slice may have (the object is ``COLS`` wide).
WIDTH_RANGE = (COLS, 2 * COLS)


def recon_crop(image: Tensor) -> Tensor:
    """The centre square of ``image (..., rows, cols)`` scored like fastMRI's
    ``reconstruction_rss``: ``COLS x COLS`` (``320 x 320``) of a ``640 x 320`` or ``640 x 368``
    slice, the largest centre square of a smaller one (fastMRI's ``center_crop``)."""
    from mrirecon.functional import center_crop

    side = min(*image.shape[-2:], COLS)
    return center_crop(image, (side, side))


def check_widths(widths) -> tuple[int, ...]:
    """``widths`` as a tuple of column counts, refused by value when one is not an integer in
    ``WIDTH_RANGE`` (narrower slices would cut the ``COLS``-wide object)."""
    widths = tuple(widths)
    bad = [w for w in widths if isinstance(w, bool) or not isinstance(w, int)
           or not WIDTH_RANGE[0] <= w <= WIDTH_RANGE[1]]
    if not widths or bad:
        raise ValueError(f"widths: expected one or more integer column counts in "
                         f"[{WIDTH_RANGE[0]}, {WIDTH_RANGE[1]}], got {list(widths)}")
    return widths


def _support(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random smooth object support (ellipse with a wobbly edge), soft edge, values in [0, 1]."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    a, b = rng.uniform(0.3, 0.48, 2)
    t = rng.uniform(0, np.pi)
    u = (xx * np.cos(t) + yy * np.sin(t)) / a
    v = (-xx * np.sin(t) + yy * np.cos(t)) / b
    wobble = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 10, mode="wrap")
    wobble *= rng.uniform(0.0, 0.25) / max(wobble.std(), 1e-12)
    inside = (np.sqrt(u**2 + v**2) + wobble <= 1).astype(float)
    return ndimage.gaussian_filter(inside, rng.uniform(0.5, 2.0))


def _fit(img: np.ndarray, size: int, zoom: float, rng: np.random.Generator) -> np.ndarray:
    """Zoom ``img`` so its larger side spans ``zoom * size``, random flips, centred, zero padded."""
    f = zoom * size / max(img.shape)
    z = np.clip(ndimage.zoom(img, f, order=1), 0, None)
    if rng.uniform() < 0.5:
        z = z[:, ::-1]
    if rng.uniform() < 0.5:
        z = z.T
    z = z[:size, :size]
    out = np.zeros((size, size))
    r0, c0 = (size - z.shape[0]) // 2, (size - z.shape[1]) // 2
    out[r0:r0 + z.shape[0], c0:c0 + z.shape[1]] = z
    return out


class DeploymentImages:
    """Draws ``(size, size)`` magnitude images in [0, 1] (peak 1) from the diverse sources.

    ``natural``, ``procedural`` and ``ct`` come from a :class:`PriorImageBank` of that size (the
    same recipe as the PnP prior's); ``mni`` slices are warped (up to 10 % of the field of view),
    contrast remapped and zoomed to fill 55-100 % of the field of view on a zero background.
    """

    def __init__(self, size: int = COLS, seed: int = 0, mni_volumes: int = 8) -> None:
        self.bank = PriorImageBank(size=size, seed=seed, mni_volumes=mni_volumes, mni_slices=6)
        self.size = size
        self.kinds = list(SOURCE_WEIGHTS)
        self.p = np.array([SOURCE_WEIGHTS[k] for k in self.kinds])

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        self.bank.rng = rng  # one generator drives every choice (reproducible per seed)
        kind = self.kinds[rng.choice(len(self.kinds), p=self.p)]
        if kind == "mni":
            img = self.bank.mni[rng.integers(len(self.bank.mni))]
            img = elastic_warp(rng, img, rng.uniform(0.0, 0.1))
            img = random_remap(rng, img) if rng.uniform() < 0.7 else img
            mag = _fit(img, self.size, rng.uniform(0.55, 1.0), rng)
        else:
            mag = self.bank.magnitude(kind)
            if kind != "ct" and rng.uniform() < 0.5:
                mag = mag * _support(rng, self.size)
        mag = mag / max(float(mag.max()), 1e-12)
        return mag, kind


@dataclass
class DeploymentSample:
    """One band of a simulated slice, scaled by ``1 / s`` (``s = max |A^H y|`` of the slice).

    ``kspace (C, h, W)`` complex64 (masked), ``maps (C, h, W)`` complex64, ``mask (W,)`` float32,
    ``target (h, W)`` float32 (RSS of the fully sampled noisy coil images), ``max_value``: the
    target's maximum over the slice's centre ``320 x 320`` (the fastMRI SSIM data range).
    """

    kspace: Tensor
    maps: Tensor
    mask: Tensor
    target: Tensor
    max_value: float
    acceleration: int
    kind: str


def _coil_maps(rng: np.random.Generator, coils: int, rows: int, cols: int) -> np.ndarray:
    from mrirecon.data.simulate_mri import birdcage_maps

    x = (np.arange(cols) - cols / 2) / (cols / 2)
    y = (np.arange(rows) - rows / 2) / (cols / 2)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    maps = birdcage_maps(coils, xx, yy, z=rng.uniform(-0.5, 0.5), radius=rng.uniform(1.2, 2.0),
                         rotation=rng.uniform(0, 2 * np.pi))
    gain = rng.uniform(0.7, 1.3, coils) * np.exp(1j * rng.uniform(0, 2 * np.pi, coils))
    return maps * gain[:, None, None]


def centre_band(mask: Tensor, width: int = 24) -> Tensor:
    """The calibration columns the pipeline uses: the acquired centre band, at most ``width``."""
    from mrirecon.calib.centre import centre_window
    from mrirecon.sampling.acs import acs_width

    m = mask.reshape(-1).bool()
    return centre_window(m, min(width, acs_width(m)))


def simulate_slice(rng: np.random.Generator, images: DeploymentImages, acceleration: int,
                   coils: int | None = None, rows: int = ROWS, cols: int = COLS) -> dict:
    """One fully simulated slice at the deployment geometry (the steps of the module docstring).

    Returns ``kspace (C, rows, cols)`` masked complex64, ``maps`` (ESPIRiT, crop 0), ``mask
    (cols,)``, ``target (rows, cols)`` and ``max_value``, all scaled by ``1 / s``, and ``kind``.
    """
    from mrirecon.calib.centre import centre_maps
    from mrirecon.functional import fft2c, ifft2c
    from mrirecon.operators import sense
    from mrirecon.sampling import apply_mask, create_mask_for_mask_type

    mag, kind = images.draw(rng)
    h = images.size
    img = np.zeros((rows, cols), dtype=np.complex128)
    r0 = (rows - h) // 2
    c0 = (cols - h) // 2
    ph = random_phase(rng, h) if kind != "ct" else np.ones((h, h))
    img[r0:r0 + h, max(c0, 0):max(c0, 0) + min(h, cols)] = (mag * ph)[:, :cols]
    coils = int(coils or rng.choice(COIL_CHOICES))
    k = fft2c(torch.from_numpy(_coil_maps(rng, coils, rows, cols) * img[None]))
    snr = float(rng.uniform(*SNR_DB))
    sigma = math.sqrt(float(k.abs().pow(2).mean()) / 10 ** (snr / 10) / 2)
    noise = rng.standard_normal((2,) + tuple(k.shape))
    k = (k + torch.from_numpy(sigma * (noise[0] + 1j * noise[1]))).to(torch.complex64)
    fn = create_mask_for_mask_type("equispaced_fraction", (CENTRE_FRACTIONS[acceleration],),
                                   (acceleration,))
    km, mask, _ = apply_mask(k, fn, seed=int(rng.integers(2**31)))
    mask = mask.reshape(-1).to(torch.float32)
    # also for models that estimate their own maps: s below depends on these (see step 5)
    maps = centre_maps(km, centre_band(mask), crop=0.0).to(torch.complex64)
    s = float(sense(maps, mask).H(km).abs().max().clamp_min(1e-12))
    target = ifft2c(k).abs().pow(2).sum(0).sqrt() / s
    centre = recon_crop(target)
    return {"kspace": km / s, "maps": maps, "mask": mask, "target": target.to(torch.float32),
            "max_value": float(centre.max()), "kind": kind, "acceleration": acceleration,
            "scale": s}


def row_band(sl: dict, start: int, height: int) -> DeploymentSample:
    """Rows ``start:start+height`` of a :func:`simulate_slice` slice as an exact smaller problem."""
    from mrirecon.functional import fft2c, ifft2c

    band = ifft2c(sl["kspace"])[:, start:start + height]
    kspace = fft2c(band) * sl["mask"]
    return DeploymentSample(kspace.to(torch.complex64), sl["maps"][:, start:start + height].contiguous(),
                            sl["mask"], sl["target"][start:start + height].contiguous(),
                            sl["max_value"], sl["acceleration"], sl["kind"])


class DeploymentBands(torch.utils.data.IterableDataset):
    """An endless, seeded stream of :class:`DeploymentSample` bands (``bands`` per slice).

    Band starts are drawn over the object's rows (the centre ``320`` rows and 32 rows either
    side) 85 % of the time and anywhere in the ``640`` rows otherwise. Accelerations 4 and 8 are
    drawn with equal probability, and so is each of ``widths``, the slice's phase-encoding
    column count (fastMRI: 320 for most brain files, 368 for knee and some brain files; the
    ``320 x 320`` object stays in the centre, the extra columns are background). With a
    ``DataLoader`` worker, each worker has its own seed.
    """

    def __init__(self, seed: int = 0, crop_rows: int = 96, bands: int = 2, mni_volumes: int = 8,
                 widths: tuple[int, ...] = (COLS,)) -> None:
        super().__init__()
        self.seed, self.crop_rows, self.bands, self.mni_volumes = seed, crop_rows, bands, mni_volumes
        self.widths = check_widths(widths)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = 0 if info is None else info.id
        if info is not None:  # a DataLoader worker: one thread each; never the caller's process
            torch.set_num_threads(1)
        rng = np.random.default_rng([self.seed, wid])
        images = DeploymentImages(seed=self.seed, mni_volumes=self.mni_volumes)
        while True:
            acc = int(rng.choice([4, 8]))
            # the one-width default draws nothing: its stream is the one the shipped models saw
            cols = self.widths[0] if len(self.widths) == 1 else int(rng.choice(self.widths))
            sl = simulate_slice(rng, images, acc, cols=cols)
            for _ in range(self.bands):
                lo, hi = (ROWS - COLS) // 2 - 32, (ROWS + COLS) // 2 + 32 - self.crop_rows
                if rng.uniform() < 0.15:
                    lo, hi = 0, ROWS - self.crop_rows
                yield row_band(sl, int(rng.integers(lo, hi + 1)), self.crop_rows)
