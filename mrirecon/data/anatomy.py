"""The real anatomy and analytic phantoms the simulators may use (and nothing else).

Sources
-------
MRI
    The MNI152 (2009) template shipped inside nilearn: the T1-weighted average and its grey-
    and white-matter probability maps (``load_mni152_template`` / ``_gm_`` / ``_wm_``,
    resolution 1 or 2 mm; no download). The template is skull-stripped: CSF and a skull and
    scalp shell are derived from it here. Analytic phantoms: the Shepp-Logan phantom of sigpy.
CT
    The four DICOM files read by :mod:`mrirecon.io.ct_sources` (pydicom's ``CT_small.dcm``
    and ``J2K_pixelrep_mismatch.dcm``, pydicom-data's ``eCT_Supplemental.dcm`` and
    ``bad_sequence.dcm``) and random-ellipse phantoms in Hounsfield units.

Every other image shipped in an installed package is reserved for held-out evaluation.

Volumes from the template are ``(x, y, z)`` arrays in RAS+ voxel order with a 4x4 ``affine``
mapping voxel indices to MNI RAS millimetres.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from mrirecon.core.caches import register as register_cache

MNI_RESOLUTIONS = (1, 2)


@dataclass(frozen=True)
class BrainTemplate:
    """Tissue maps of the MNI152 template on one voxel grid.

    The nilearn template is skull-stripped; a skull and a scalp shell are added by the
    simulators from :attr:`distance_mm` (see :func:`head_shells`).

    Attributes
    ----------
    t1
        T1-weighted template ``(x, y, z)`` scaled to ``[0, 1]``.
    gm, wm, csf
        Grey matter, white matter and cerebrospinal-fluid fractions ``(x, y, z)`` in ``[0, 1]``
        with ``gm + wm + csf <= 1``.
    distance_mm
        Distance in mm from the (hole-filled) brain, 0 inside, on a grid coarsened to 2 mm
        (``distance_affine``); accurate to about 1 mm, which is all the shells need.
    affine, distance_affine
        ``(4, 4)`` voxel index -> RAS mm of the tissue maps and of the distance map.
    """

    t1: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    distance_mm: np.ndarray
    affine: np.ndarray
    distance_affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.t1.shape)

    @functools.cached_property
    def _extent(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.argwhere(self.gm + self.wm + self.csf > 0.5)
        corners = np.stack([idx.min(0), idx.max(0)]).astype(float)
        ras = (self.affine[:3, :3] @ corners.T).T + self.affine[:3, 3]
        return ras.min(0), ras.max(0)

    def brain_extent_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """RAS bounding box ``(lower, upper)`` in mm of the voxels with brain tissue."""
        lower, upper = self._extent
        return lower.copy(), upper.copy()


@functools.lru_cache(maxsize=2)
def load_mni_brain(resolution: int = 1) -> BrainTemplate:
    """The MNI152 template and tissue maps at ``resolution`` mm (1 or 2), cached.

    The brain is where the (skull-stripped) T1 template is non-zero, holes filled; CSF is the
    part of it that is neither grey nor white matter.
    """
    if resolution not in MNI_RESOLUTIONS:
        raise ValueError(
            f"load_mni_brain: resolution must be one of {MNI_RESOLUTIONS} mm, got {resolution}"
        )
    from nilearn.datasets import (
        load_mni152_gm_template,
        load_mni152_template,
        load_mni152_wm_template,
    )

    t1_img = load_mni152_template(resolution=resolution)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    t1 = np.asarray(t1_img.get_fdata(), dtype=np.float32)
    gm = np.asarray(load_mni152_gm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    wm = np.asarray(load_mni152_wm_template(resolution=resolution).get_fdata(), dtype=np.float32)
    t1 = np.clip(t1 / max(float(t1.max()), 1e-12), 0, 1)
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    total = np.maximum(gm + wm, 1.0)
    gm, wm = gm / total, wm / total

    brain = ndimage.binary_fill_holes(t1 > 0.02)
    soft_brain = np.clip(ndimage.gaussian_filter(brain.astype(np.float32), 0.7 / resolution), 0, 1)
    csf = np.clip(soft_brain - gm - wm, 0, 1).astype(np.float32)

    step = 2 // resolution
    vox = np.linalg.norm(affine[:3, :3], axis=0)
    coarse = ~brain[::step, ::step, ::step]
    dist = ndimage.distance_transform_edt(coarse, sampling=vox * step).astype(np.float32)
    return BrainTemplate(
        t1=t1,
        gm=gm.astype(np.float32),
        wm=wm.astype(np.float32),
        csf=csf,
        distance_mm=dist,
        affine=affine,
        distance_affine=affine @ np.diag([step, step, step, 1.0]),
    )


register_cache(load_mni_brain.cache_clear)


def head_shells(
    distance_mm: np.ndarray, skull_mm: float = 6.0, scalp_mm: float = 6.0
) -> tuple[np.ndarray, np.ndarray]:
    """Skull and scalp fractions (soft-edged shells) from a distance-to-brain map (mm).

    Skull occupies ``(0, skull_mm]``, scalp ``(skull_mm, skull_mm + scalp_mm]``; edges are
    linear over 1 mm.
    """
    d = np.asarray(distance_mm, dtype=np.float64)

    def box(lo: float, hi: float) -> np.ndarray:
        return np.clip(d - lo + 0.5, 0, 1) * np.clip(hi - d + 0.5, 0, 1)

    return box(0.5, skull_mm), box(skull_mm + 1.0, skull_mm + scalp_mm)


@dataclass(frozen=True)
class TissueContrast:
    """Relative signal of each tissue class for one MR contrast (arbitrary units, CSF scale).

    ``use_t1_template`` takes the T1 template itself as the brain image (the real T1
    contrast); otherwise the brain is ``gm * v_gm + wm * v_wm + csf * v_csf``. Skull and scalp
    shells add ``skull * v_skull + scalp * v_scalp`` in every contrast.
    """

    name: str
    gm: float
    wm: float
    csf: float
    skull: float
    scalp: float
    repetition_time_ms: float
    echo_time_ms: float
    flip_angle_deg: float
    use_t1_template: bool = False


CONTRASTS: dict[str, TissueContrast] = {
    "T1": TissueContrast(
        "T1", 0.55, 0.80, 0.12, 0.04, 0.95, 250.0, 2.6, 70.0, use_t1_template=True
    ),
    "T2": TissueContrast("T2", 0.55, 0.38, 1.00, 0.03, 0.55, 6000.0, 100.0, 150.0),
    "PD": TissueContrast("PD", 0.86, 0.72, 1.00, 0.06, 0.85, 3000.0, 12.0, 90.0),
    "FLAIR": TissueContrast("FLAIR", 0.62, 0.45, 0.06, 0.03, 0.70, 9000.0, 120.0, 150.0),
}


def tissue_image(
    contrast: str,
    t1: np.ndarray,
    gm: np.ndarray,
    wm: np.ndarray,
    csf: np.ndarray,
    skull: np.ndarray,
    scalp: np.ndarray,
    rng: np.random.Generator | None = None,
    jitter: float = 0.05,
) -> np.ndarray:
    """Magnitude image of ``contrast`` from sampled tissue maps (any common shape).

    ``rng`` (optional) perturbs each tissue value by a factor ``1 + U(-jitter, jitter)`` so
    that volumes of one contrast differ. Returns float64 in about ``[0, 1]``.
    """
    try:
        c = CONTRASTS[contrast]
    except KeyError:
        raise ValueError(
            f"tissue_image: unknown contrast {contrast!r}; expected one of {sorted(CONTRASTS)}"
        ) from None
    f = np.ones(5) if rng is None else 1.0 + rng.uniform(-jitter, jitter, size=5)
    if c.use_t1_template:
        brain = np.asarray(t1, dtype=np.float64) * f[0]
    else:
        brain = gm * c.gm * f[0] + wm * c.wm * f[1] + csf * c.csf * f[2]
    return (brain + skull * c.skull * f[3] + scalp * c.scalp * f[4]).astype(np.float64)


def shepp_logan(shape: tuple[int, int]) -> np.ndarray:
    """The (modified) Shepp-Logan phantom ``(H, W)`` float64 from sigpy, values in ``[0, 1]``."""
    import sigpy

    h, w = (int(s) for s in shape)
    return np.real(sigpy.shepp_logan((h, w), dtype=np.complex128)).astype(np.float64)


def random_ellipses_hu(
    shape: tuple[int, int], rng: np.random.Generator, num_inserts: int | None = None
) -> np.ndarray:
    """A random body-like phantom ``(H, W)`` in Hounsfield units.

    An elliptical body of soft tissue (20-60 HU) inside a fat rim (-100 HU) in air
    (-1000 HU), optionally with two lung-like regions (-850 HU), bony ellipses
    (300-1500 HU) and small lesions (-50..150 HU relative to tissue). Axes are relative to the
    image, so the phantom scales with the grid.
    """
    h, w = (int(s) for s in shape)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    yy = (yy - (h - 1) / 2) / (h / 2)
    xx = (xx - (w - 1) / 2) / (w / 2)
    img = np.full((h, w), -1000.0)

    def ellipse(cx, cy, a, b, angle):
        ca, sa = np.cos(angle), np.sin(angle)
        u = (xx - cx) * ca + (yy - cy) * sa
        v = -(xx - cx) * sa + (yy - cy) * ca
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0

    tilt = rng.uniform(-0.3, 0.3)
    a, b = rng.uniform(0.65, 0.85), rng.uniform(0.45, 0.7)
    img[ellipse(0, 0, a, b, tilt)] = -100.0
    img[ellipse(0, 0, a - 0.05, b - 0.05, tilt)] = rng.uniform(20, 60)
    tissue = float(img[h // 2, w // 2])
    if rng.uniform() < 0.5:
        for side in (-1, 1):
            img[ellipse(side * a * 0.45, 0, a * 0.3, b * 0.6, tilt)] = -850.0 + rng.uniform(-50, 50)
    n = int(rng.integers(3, 8)) if num_inserts is None else int(num_inserts)
    for _ in range(n):
        r = rng.uniform(0, 0.6)
        phi = rng.uniform(0, 2 * np.pi)
        cx, cy = r * a * np.cos(phi), r * b * np.sin(phi)
        size_a, size_b = rng.uniform(0.03, 0.15, size=2)
        if rng.uniform() < 0.4:
            value = rng.uniform(300, 1500)
        else:
            value = tissue + rng.uniform(-50, 150)
        img[ellipse(cx, cy, size_a, size_b, rng.uniform(0, np.pi))] = value
    return img


def add_scanner_hardware_hu(hu: np.ndarray, rng: np.random.Generator, p_table: float = 0.5,
                            p_holder: float = 0.3,
                            blur: tuple[float, float] | None = None) -> np.ndarray:
    """``hu`` ``(H, W)`` with a patient table and / or a head holder added in the air around it.

    Real CT slices hold objects outside the body that body phantoms lack: the patient table
    (a flat or slightly curved slab, often a thin dense shell around a foam core) under the body
    and, for heads, a U-shaped plastic holder around it, each a few millimetres from the skin.
    With probability ``p_table`` a table of random width, curvature, thickness (8-30 pixels), shell
    (1-4 pixels, 100-1200 HU) and core (foam -950..-700 HU or solid -300..300 HU) is placed below
    the body in a random direction; with ``p_holder`` a holder shell (2-8 pixels, -200..400 HU,
    spanning 150-270 degrees) follows the body's outline at a gap of 2-20 pixels. Only air pixels
    (below -900 HU) are overwritten. Sizes are in pixels of the LoDoPaB-like grid (~0.7 mm).

    ``blur = (lo, hi)``: band-limit the hardware as a clinical reconstruction kernel and the
    resampling of a real slice do: the hardware layer (its excess over the air it replaced) is
    smoothed with a Gaussian of standard deviation ``U(lo, hi)`` pixels before it is written,
    still into air pixels only. Without it the shells keep the pixel-sharp edges of their masks,
    which no reconstructed slice has. The draws before the blur are the same either way.
    """
    out = np.array(hu, dtype=np.float64, copy=True)
    h, w = out.shape
    body = out > -500.0
    if not body.any():
        return out
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    cy, cx = np.argwhere(body).mean(0)
    air = out < -900.0
    if rng.uniform() < p_table:
        t = rng.uniform(0, 2 * np.pi)  # "down" direction of the table
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)  # across the table
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)  # towards the table
        top = v[body].max() + rng.uniform(0, 15)
        curve = rng.uniform(0, 1.5e-3) if rng.uniform() < 0.6 else 0.0
        d = v - (top + curve * u ** 2)  # depth below the table's upper surface
        thick, shell = rng.uniform(8, 30), rng.uniform(1, 4)
        half = rng.uniform(0.3, 0.6) * max(h, w)
        slab = (d >= 0) & (d <= thick) & (np.abs(u) <= half)
        inner = (d >= shell) & (d <= thick - shell) & (np.abs(u) <= half - shell)
        core = rng.uniform(-950, -700) if rng.uniform() < 0.7 else rng.uniform(-300, 300)
        out[slab & air] = rng.uniform(100, 1200)
        out[inner & air] = core
    if rng.uniform() < p_holder:
        gap, thick = int(rng.integers(2, 21)), int(rng.integers(2, 9))
        near = ndimage.binary_dilation(body, iterations=gap)
        ring = ndimage.binary_dilation(near, iterations=thick) & ~near
        angle = np.arctan2(yy - cy, xx - cx)
        opening = rng.uniform(0, 2 * np.pi)
        span = np.deg2rad(rng.uniform(150, 270))
        keep = np.mod(angle - opening, 2 * np.pi) <= span
        out[ring & keep & (out < -900.0)] = rng.uniform(-200, 400)  # air, table excluded
    if blur is not None and (changed := out != hu).any():
        excess = np.where(changed, out - hu, 0.0)  # the hardware alone, over the air it replaced
        smooth = ndimage.gaussian_filter(excess, rng.uniform(*blur), mode="constant")
        out = np.where(air, hu + smooth, hu)
    return out
