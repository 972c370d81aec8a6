"""Training images for the generic image prior (the denoiser of ``pnp_dncnn_diverse``).

The data recipe is deliberately broad so that the prior transfers to anatomy, contrasts and
scanners it never saw. Every image is complex ``(S, S)`` with peak magnitude 1; four sources,
mixed with the probabilities of :data:`SOURCE_WEIGHTS`:

``natural``
    Natural (non-medical) photographs bundled with installed packages: scikit-image's
    ``skimage.data`` (:data:`NATURAL_IMAGES`) and matplotlib's ``grace_hopper.jpg``. Grey
    level, random zoom (0.35-1.2), crop, flip, rotation by 90 degrees and gamma.
``procedural``
    Random smooth shapes (ellipses and blobs with smooth intensity ramps), fractal (1/f^beta)
    noise, thresholded smooth noise ("tissue" patches) and gratings, summed in random layers.
``mni``
    The MNI152 anatomy of :func:`mrirecon.data.simulate_mri.simulate_mri_volume` with a random
    contrast, then a strong random elastic warp (up to ~8 % of the field of view), a random
    piecewise-linear intensity remap (contrast inversion included) and a random zoom.
``ct``
    The five frames of the four allowed CT DICOM files of :mod:`mrirecon.io.ct_sources`
    (attenuation, rotated, zoomed), real valued: three CT images in HU and the two frames of
    ``eCT_Supplemental.dcm``, a perfusion map (units US) drawn as an attenuation texture.

Every non-CT image then gets a random smooth phase (none, a linear ramp, or a smooth random
field of up to ``3 pi`` peak to peak); CT images stay real. No other medical image is read:
scikit-image's ``brain``, ``retina``, ``cell``, ``microaneurysms``, ``ihc`` and ``phantom`` and
matplotlib's ``s1045.ima`` are reserved for held-out evaluation (:mod:`mrirecon.heldout`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: scikit-image's bundled natural (non-medical) images used for training.
NATURAL_IMAGES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon",
    "coins", "text", "page", "horse", "hubble_deep_field", "logo", "clock",
)
SOURCE_WEIGHTS = {"natural": 0.35, "procedural": 0.25, "mni": 0.3, "ct": 0.1}


def _gray(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3].mean(-1) if img.shape[-1] >= 3 else img[..., 0]
    img = img - img.min()
    return img / max(img.max(), 1e-12)


def natural_sources() -> list[np.ndarray]:
    """Grey-level natural images in [0, 1] (scikit-image and matplotlib sample data)."""
    out = []
    import skimage.data as skd

    for name in NATURAL_IMAGES:
        out.append(_gray(getattr(skd, name)()))
    from mrirecon.mpl import import_matplotlib

    import_matplotlib()  # an invalid MPLBACKEND failed `train prior` at this import
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        out.append(_gray(mpimg.imread(f, format="jpg")))
    return out


def ct_sources() -> list[np.ndarray]:
    """The allowed CT images as non-negative attenuation-like images in [0, 1] (the rescaled
    values of every frame, the two perfusion-map frames of ``eCT_Supplemental.dcm`` included)."""
    from mrirecon.io.ct_sources import load_ct_sources

    return [np.clip((s.values + 1024.0) / 3000.0, 0.0, 1.0) for s in load_ct_sources()]


def _smooth_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return f / max(f.std(), 1e-12)


def fractal_noise(rng: np.random.Generator, size: int, beta: float) -> np.ndarray:
    """Real noise with a ``1 / f^beta`` amplitude spectrum, scaled to [0, 1]."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size))) / f**beta
    spec[0, 0] = 0
    img = np.fft.ifft2(spec).real
    img -= img.min()
    return img / max(img.max(), 1e-12)


def procedural_image(rng: np.random.Generator, size: int) -> np.ndarray:
    """Layers of smooth shapes, blobs, fractal noise and gratings, in [0, 1]."""
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    img = np.zeros((size, size))
    for _ in range(rng.integers(2, 6)):
        kind = rng.choice(["ellipses", "blobs", "fractal", "grating"], p=[0.35, 0.3, 0.2, 0.15])
        if kind == "ellipses":
            layer = np.zeros_like(img)
            for _ in range(rng.integers(1, 8)):
                cx, cy = rng.uniform(-0.4, 0.4, 2)
                a, b = rng.uniform(0.03, 0.4, 2)
                t = rng.uniform(0, np.pi)
                u = ((xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)) / a
                v = (-(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)) / b
                ramp = 1 + rng.uniform(-0.5, 0.5) * (xx * rng.normal() + yy * rng.normal())
                layer = np.where(u**2 + v**2 <= 1, rng.uniform(0.1, 1) * ramp, layer)
            if rng.uniform() < 0.5:
                layer = ndimage.gaussian_filter(layer, rng.uniform(0.3, 1.5))
        elif kind == "blobs":
            s = _smooth_noise(rng, size, rng.uniform(2, size / 8))
            layer = (s > rng.uniform(-0.5, 1.0)).astype(float) * rng.uniform(0.2, 1)
            layer = ndimage.gaussian_filter(layer, rng.uniform(0.3, 1.2))
        elif kind == "fractal":
            layer = fractal_noise(rng, size, rng.uniform(1.0, 2.2))
        else:
            f, t = rng.uniform(2, size / 6), rng.uniform(0, np.pi)
            layer = 0.5 + 0.5 * np.sin(2 * np.pi * f * (xx * np.cos(t) + yy * np.sin(t)))
            layer *= (_smooth_noise(rng, size, size / 6) > 0).astype(float)
        img = img + layer * rng.uniform(0.3, 1.0) if rng.uniform() < 0.6 else np.maximum(img, layer)
    img -= img.min()
    return img / max(img.max(), 1e-12)


def random_remap(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Random piecewise-linear intensity map of ``img`` in [0, 1] (may invert contrast)."""
    knots = np.linspace(0, 1, 6)
    values = np.sort(rng.uniform(0, 1, 6)) if rng.uniform() < 0.6 else rng.uniform(0, 1, 6)
    values[0] = 0.0 if rng.uniform() < 0.8 else values[0]  # background mostly stays dark
    out = np.interp(img, knots, values)
    return out / max(out.max(), 1e-12)


def elastic_warp(rng: np.random.Generator, img: np.ndarray, strength: float) -> np.ndarray:
    """Smooth random displacement of up to about ``strength`` x the image size."""
    h, w = img.shape
    smooth = rng.uniform(h / 12, h / 5)
    dr = _smooth_noise(rng, max(h, w), smooth)[:h, :w] * strength * h / 2
    dc = _smooth_noise(rng, max(h, w), smooth)[:h, :w] * strength * w / 2
    rr, cc = np.mgrid[:h, :w].astype(float)
    return ndimage.map_coordinates(img, [rr + dr, cc + dc], order=1, mode="reflect")


def random_phase(rng: np.random.Generator, size: int) -> np.ndarray:
    """``exp(i phi)`` with phi none, linear, or smooth random (up to ~3 pi peak to peak)."""
    u = rng.uniform()
    if u < 0.2:
        return np.full((size, size), np.exp(1j * rng.uniform(0, 2 * np.pi)))
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    phi = rng.uniform(0, 2 * np.pi) + rng.normal(0, 2.0) * xx + rng.normal(0, 2.0) * yy
    if u > 0.45:
        phi = phi + _smooth_noise(rng, size, rng.uniform(size / 10, size / 3)) * rng.uniform(0.3, 3.0)
    return np.exp(1j * phi)


def _crop(rng: np.random.Generator, img: np.ndarray, size: int, zoom: float) -> np.ndarray:
    z = ndimage.zoom(img, zoom, order=1) if abs(zoom - 1) > 1e-3 else img
    if min(z.shape) < size:
        z = np.pad(z, [(0, max(0, size - z.shape[0])), (0, max(0, size - z.shape[1]))], mode="reflect")
    r = rng.integers(0, z.shape[0] - size + 1)
    c = rng.integers(0, z.shape[1] - size + 1)
    out = z[r:r + size, c:c + size]
    out = np.rot90(out, rng.integers(4))
    return out[:, ::-1] if rng.uniform() < 0.5 else out


class PriorImageBank:
    """Draws clean complex training images of size ``(size, size)``, peak magnitude 1.

    Parameters
    ----------
    size
        Side of each image (a crop of a larger source).
    seed
        Seed of the bank: the MNI slices and every draw come from ``numpy`` generators seeded
        from it, so a seed gives the same images on every machine.
    mni_volumes, mni_slices
        MNI152 slices simulated once (128 x 128 ... 192 x 192, random contrast).
    """

    def __init__(self, size: int = 64, seed: int = 0, mni_volumes: int = 16, mni_slices: int = 6) -> None:
        from mrirecon.data.simulate_mri import simulate_mri_volume

        self.size = size
        self.rng = np.random.default_rng(seed)
        self.natural = natural_sources()
        self.ct = ct_sources()
        mni = []
        for v in range(mni_volumes):
            n = int(self.rng.choice([128, 160, 192]))
            sim = simulate_mri_volume(v, slices=mni_slices, coils=1, size=(n, n), seed=1000 + seed,
                                      snr_db=None, deformation_mm=6.0, phase_rad=0.0)
            for im in np.abs(sim.image.numpy()):
                if im.max() > 0:
                    mni.append(im / im.max())
        peaks = np.array([m.mean() for m in mni])
        self.mni = [m for m, p in zip(mni, peaks) if p > 0.05 * peaks.max()]
        self.sources = list(SOURCE_WEIGHTS)
        self.p = np.array([SOURCE_WEIGHTS[k] for k in self.sources])

    def magnitude(self, kind: str) -> np.ndarray:
        rng, s = self.rng, self.size
        if kind == "natural":
            img = self.natural[rng.integers(len(self.natural))]
            out = _crop(rng, img, s, rng.uniform(0.35, 1.2))
            out = out ** rng.uniform(0.6, 1.8)
        elif kind == "procedural":
            out = procedural_image(rng, s)
        elif kind == "mni":
            img = self.mni[rng.integers(len(self.mni))]
            img = elastic_warp(rng, img, rng.uniform(0.0, 0.08))
            img = random_remap(rng, img) if rng.uniform() < 0.7 else img
            out = _crop(rng, img, s, rng.uniform(0.7, 2.0))
        else:
            img = self.ct[rng.integers(len(self.ct))]
            out = _crop(rng, img, s, rng.uniform(0.3, 1.0))
        return np.ascontiguousarray(out)

    def draw(self) -> tuple[np.ndarray, bool]:
        """One image ``(size, size)`` complex128, peak 1, and whether it is real valued."""
        kind = self.sources[self.rng.choice(len(self.sources), p=self.p)]
        mag = self.magnitude(kind)
        mag = mag / max(mag.max(), 1e-12)
        real = kind == "ct" or self.rng.uniform() < 0.1
        if real:
            return mag.astype(np.complex128), True
        return mag * random_phase(self.rng, self.size), False
