"""Simulated low-dose CT in the LoDoPaB-CT layout, from the allowed DICOM images and phantoms.

For each sample a ground truth in Hounsfield units is made either from one of the allowed CT
DICOM frames (:mod:`mrirecon.io.ct_sources`: random rotation, flip, shift and a zoom that
makes the object (pixels above -500 HU) span 60-100 % of the field of view, so physical sizes
are *not* kept) or from a random ellipse phantom
(:func:`~mrirecon.data.anatomy.random_ellipses_hu`). Two of the five DICOM frames
(``eCT_Supplemental.dcm``) are a perfusion map in unspecified units (US), not HU anatomy: their
rescaled values are used as if they were HU (a skull-less head texture with air-filled sulci),
and :attr:`SimulatedCT.origins` / ``units`` say so for each sample drawn from them (so does the
ground-truth file's ``origins`` attribute). The image is converted to linear
attenuation ``mu = mu_water (1 + HU / 1000)`` (clipped at 0; ``mu_water = 0.0192 /mm`` at about
70 keV), projected with :func:`mrirecon.operators.ct.ct_operator` to line integrals ``p``, and
measured with Poisson noise: ``counts ~ Poisson(I0 exp(-p))``, ``counts >= min_count``,
``p_noisy = -log(counts / I0)``. Files follow :mod:`mrirecon.io.lodopab`. The sinograms are the
package's own projector applied to the stored image on the stored grid (LoDoPaB projected a
finer image with another projector): reconstructions score higher on these data than on measured
ones, a model-mismatch-free "inverse crime" to keep in mind when comparing with published figures.

The ``part`` only names the files: the same seed gives the same images in every part (what a
dose study wants), so :func:`simulate_ct_dataset` warns of a part whose folder holds another
part of the same seed (what a train / test split must not have).

Every random choice comes from ``numpy.random.default_rng([seed, sample, stream])``; stream 1
is the photon noise only, so ``photons=None`` gives the noise-free twin of a noisy dataset.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrirecon.data.anatomy import random_ellipses_hu
from mrirecon.operators.ct_geometry import CTGeometry

MU_WATER_70KEV_PER_MM = 0.0192
HU_AIR, HU_MAX = -1024.0, 3071.0
SOURCES = ("mixed", "dicom", "phantom")
# clinical fan-beam distances (mm), e.g. a Siemens SOMATOM Definition
SOURCE_ISOCENTER_MM, SOURCE_DETECTOR_MM = 595.0, 1085.6
#: The largest field of view (mm) a simulation takes: 10 m is no scanner's, and far above it the
#: pixel size and the projector's coordinates leave float32's range (1e40 and 1e300 wrote files
#: whose geometry had 6e38 / 6e298 mm pixels; a fan beam at 1e300 made NaN sinograms; inf failed
#: with "cannot convert float NaN to integer").
FOV_MM_LIMIT = 1e4


@dataclass
class SimulatedCT:
    """Simulated samples before writing.

    Attributes
    ----------
    hu
        ``(N, H, W)`` float64 Hounsfield units, clipped to ``[-1024, 3071]``; a sample whose
        ``units`` is ``"US"`` holds a perfusion map's rescaled values instead.
    attenuation
        ``(N, H, W)`` float64 linear attenuation (1/mm).
    clean
        ``(N, views, detectors)`` float64 noise-free line integrals ``A mu``.
    sinogram
        ``(N, views, detectors)`` float64 noisy post-log line integrals (``clean`` when
        ``photons`` is ``None``).
    geometry
        The acquisition geometry.
    origins
        Source of each sample: ``"<file>#<frame>"`` or ``"phantom"``; a frame that is not CT
        anatomy in HU adds what it is: ``"eCT_Supplemental.dcm#0 (perfusion map, US: not HU
        anatomy)"``.
    units
        Units of each sample's source: ``"HU"`` (CT anatomy, phantoms) or the frame's
        RescaleType (``"US"`` for the perfusion map).
    """

    hu: np.ndarray
    attenuation: np.ndarray
    clean: np.ndarray
    sinogram: np.ndarray
    geometry: CTGeometry
    origins: list[str]
    units: list[str] = field(default_factory=list)


def ct_simulation_geometry(
    geometry: str = "parallel",
    size: int = 128,
    views: int = 180,
    detectors: int | None = None,
    fov_mm: float = 260.0,
    detector: str = "flat",
) -> CTGeometry:
    """Geometry of a simulation: ``size x size`` pixels over ``fov_mm``.

    Parallel beam follows LoDoPaB (angles ``(i + 1/2) pi / views``, detector covering the
    image diagonal, by default ``ceil(size sqrt 2)`` bins rounded up to odd: 513 for 362).
    Fan beam uses clinical distances (source-isocentre 595 mm, source-detector 1085.6 mm) over
    a full turn, detector pitch = pixel size x magnification.
    """
    from mrirecon.io.lodopab import lodopab_geometry

    if isinstance(size, bool) or int(size) != size or size < 8:
        raise ValueError(f"simulate_ct: size must be an integer >= 8, got {size!r}")
    if isinstance(views, bool) or int(views) != views or views < 1:
        raise ValueError(f"simulate_ct: views must be an integer >= 1, got {views!r}")
    if not 0 < fov_mm <= FOV_MM_LIMIT:  # NaN and inf too
        raise ValueError(f"simulate_ct: fov_mm must be in (0, {FOV_MM_LIMIT:g}] mm (10 m), "
                         f"got {fov_mm!r}")
    size, views = int(size), int(views)
    if geometry == "parallel":
        n_det = detectors if detectors is not None else int(math.ceil(size * math.sqrt(2))) | 1
        return lodopab_geometry((size, size), views, int(n_det), fov_mm / 2)
    if geometry == "fan":
        pixel = fov_mm / size
        sid = max(SOURCE_ISOCENTER_MM, 2.0 * fov_mm)
        sdd = sid * SOURCE_DETECTOR_MM / SOURCE_ISOCENTER_MM
        return CTGeometry.fan(
            (size, size),
            views,
            detectors,
            source_isocenter=sid,
            source_detector=sdd,
            detector=detector,
            pixel_size=pixel,
        )
    raise ValueError(f"simulate_ct: geometry must be 'parallel' or 'fan', got {geometry!r}")


def _resample_source(
    hu: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """Random rotation / flip / shift / zoom of a source image onto the simulation grid."""
    h, w = shape
    body = np.argwhere(hu > -500.0)  # the object's bounding box, not the source's frame
    if len(body):
        (r0, c0), (r1, c1) = body.min(0), body.max(0) + 1
    else:
        (r0, c0), (r1, c1) = (0, 0), hu.shape
    centre_r, centre_c = (r0 + r1 - 1) / 2, (c0 + c1 - 1) / 2
    fill = float(rng.uniform(0.6, 1.0))
    scale = max(r1 - r0, c1 - c0) / (fill * max(h, w))  # source pixels per output pixel
    angle = float(rng.uniform(-np.pi, np.pi))
    flip = -1.0 if rng.uniform() < 0.5 else 1.0
    shift = rng.uniform(-0.05, 0.05, size=2) * np.array([h, w])
    rr, cc = np.mgrid[:h, :w].astype(np.float64)
    rr = rr - (h - 1) / 2 - shift[0]
    cc = (cc - (w - 1) / 2 - shift[1]) * flip
    ca, sa = math.cos(angle), math.sin(angle)
    src_r = (ca * rr - sa * cc) * scale + centre_r
    src_c = (sa * rr + ca * cc) * scale + centre_c
    # source pixels outside the reconstruction circle are already air after clipping
    return ndimage.map_coordinates(
        hu.astype(np.float64), [src_r, src_c], order=1, mode="constant", cval=-1000.0
    )


def poisson_postlog(
    clean: np.ndarray, photons: float, rng: np.random.Generator, min_count: float = 1.0
) -> np.ndarray:
    """Post-log noisy line integrals ``-log(max(Poisson(I0 exp(-p)), min_count) / I0)``."""
    from mrirecon.sampling.views import check_photons

    check_photons(photons, min_count, "simulate_ct (--photons, --min-count)")
    counts = rng.poisson(photons * np.exp(-clean)).astype(np.float64)
    return -np.log(np.maximum(counts, min_count) / photons)


def simulate_ct_samples(
    samples: int = 8,
    geometry: str | CTGeometry = "parallel",
    views: int = 180,
    photons: float | None = 4096.0,
    size: int = 128,
    seed: int = 0,
    *,
    sources: str = "mixed",
    detectors: int | None = None,
    fov_mm: float = 260.0,
    mu_water: float = MU_WATER_70KEV_PER_MM,
    min_count: float = 1.0,
    dicom_fraction: float = 0.7,
) -> SimulatedCT:
    """Simulate ``samples`` ground truths and their (noisy) sinograms; see the module docstring.

    Parameters
    ----------
    samples
        Number of images (and sinograms) to simulate, an integer >= 1.
    geometry
        ``"parallel"``, ``"fan"`` or a ready :class:`CTGeometry` (``views``, ``size``,
        ``detectors``, ``fov_mm`` then come from it: the arguments are ignored).
    views
        Projection angles: over half a turn for parallel beam (LoDoPaB's
        ``(i + 1/2) pi / views``), over a full turn for fan beam.
    photons
        Incident photons per detector bin ``I0``, or ``None`` for noise-free data.
    size
        Images of ``size x size`` pixels, an integer >= 8.
    seed
        Seed of every random choice, an integer >= 0: sample ``i`` draws its image from
        ``numpy.random.default_rng([seed, i, 0])`` and its photon noise from ``[seed, i, 1]``
        (the same seed gives the same images at any ``photons``).
    sources
        ``"dicom"``, ``"phantom"`` or ``"mixed"`` (DICOM with probability ``dicom_fraction``).
    detectors
        Detector bins; ``None``: enough to cover the image diagonal (parallel beam:
        ``ceil(size sqrt 2)`` rounded up to odd, as :func:`ct_simulation_geometry` says).
    fov_mm
        Field of view of the image in mm, in ``(0, FOV_MM_LIMIT]``; pixels of ``fov_mm / size``.
    mu_water
        Water attenuation in 1/mm for ``mu = mu_water (1 + HU/1000)``.
    min_count
        Floor of the photon counts before the log (LoDoPaB used 0.1).
    dicom_fraction
        Probability that a sample comes from a DICOM frame with ``sources="mixed"`` (unused
        with ``"dicom"`` or ``"phantom"``).
    """
    from mrirecon.io.ct_sources import load_ct_sources
    from mrirecon.operators.ct import ct_operator

    if isinstance(samples, bool) or int(samples) != samples or samples < 1:
        raise ValueError(f"simulate_ct: samples must be an integer >= 1, got {samples!r}")
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"simulate_ct: seed must be an integer >= 0, got {seed!r}")
    if sources not in SOURCES:
        raise ValueError(f"simulate_ct: sources must be one of {SOURCES}, got {sources!r}")
    if photons is not None and not float(photons) > 0:
        raise ValueError(f"simulate_ct: photons must be > 0 or None, got {photons!r}")
    geom = (
        geometry
        if isinstance(geometry, CTGeometry)
        else ct_simulation_geometry(geometry, size, views, detectors, fov_mm)
    )
    shape = geom.image_shape
    slices = load_ct_sources() if sources != "phantom" else []
    hu = np.empty((int(samples),) + shape)
    origins, units = [], []
    for i in range(int(samples)):
        rng = np.random.default_rng([int(seed), i, 0])
        use_dicom = sources == "dicom" or (sources == "mixed" and rng.uniform() < dicom_fraction)
        if use_dicom:
            src = slices[int(rng.integers(len(slices)))]
            # display orientation (row = posterior) -> physical (row = -y), as LoDoPaB stores it
            img = _resample_source(src.values[::-1], shape, rng)
            label = "" if src.is_hu_anatomy else f" ({src.kind} map, {src.units}: not HU anatomy)"
            origins.append(f"{src.name}#{src.frame}{label}")
            units.append(src.units)
        else:
            img = random_ellipses_hu(shape, rng)
            origins.append("phantom")
            units.append("HU")
        hu[i] = np.clip(img, HU_AIR, HU_MAX)
    mu = np.maximum(mu_water * (1.0 + hu / 1000.0), 0.0)
    op = ct_operator(geom)
    with torch.no_grad():
        clean = op(torch.from_numpy(mu)).double().numpy()
    noisy = clean.copy()
    if photons is not None:
        for i in range(int(samples)):
            noisy[i] = poisson_postlog(
                clean[i], float(photons), np.random.default_rng([int(seed), i, 1]), min_count
            )
    return SimulatedCT(
        hu=hu, attenuation=mu, clean=clean, sinogram=noisy, geometry=geom, origins=origins,
        units=units,
    )


HARDWARE_BLUR = (0.5, 1.0)  # Gaussian sigma (pixels) of simulated scanner hardware


def with_scanner_hardware(
    attenuation: np.ndarray,
    geometry: CTGeometry,
    photons: float,
    seed: int,
    *,
    mu_water: float = MU_WATER_70KEV_PER_MM,
    min_count: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Two copies of each image with scanner hardware: ``(sinograms, attenuation)`` of shapes
    ``(2 N, views, detectors)`` / ``(2 N, H, W)``, image ``i`` giving rows ``2 i`` (a patient
    table) and ``2 i + 1`` (a head holder).

    ``attenuation`` ``(N, H, W)`` in 1/mm; the hardware is that of
    :func:`~mrirecon.data.anatomy.add_scanner_hardware_hu` band-limited by :data:`HARDWARE_BLUR`,
    drawn (with the Poisson noise at ``photons``) from the stream ``(seed, i, copy, 2)``.
    """
    from mrirecon.data.anatomy import add_scanner_hardware_hu
    from mrirecon.operators.ct import ct_operator

    attenuation = np.asarray(attenuation, dtype=np.float64)
    if attenuation.ndim != 3 or attenuation.shape[1:] != tuple(geometry.image_shape):
        raise ValueError(f"with_scanner_hardware: attenuation must be (N, {geometry.image_shape}), "
                         f"got {attenuation.shape}")
    op = ct_operator(geometry)
    sinos, mus = [], []
    for i, mu in enumerate(attenuation):
        for copy in (0, 1):
            rng = np.random.default_rng([int(seed), i, copy, 2])  # not simulate_ct_samples' streams
            hu = add_scanner_hardware_hu(mu / mu_water * 1000.0 - 1000.0, rng, p_table=1.0 - copy,
                                         p_holder=float(copy), blur=HARDWARE_BLUR)
            m = np.maximum(mu_water * (1.0 + np.clip(hu, HU_AIR, HU_MAX) / 1000.0), 0.0)
            with torch.no_grad():
                clean = op(torch.from_numpy(m)).double().numpy()
            sinos.append(poisson_postlog(clean, float(photons), rng, min_count))
            mus.append(m)
    return np.stack(sinos), np.stack(mus)


def simulate_ct_dataset(
    out_dir: str | os.PathLike,
    geometry: str | CTGeometry = "parallel",
    views: int = 180,
    photons: float | None = 4096.0,
    size: int = 128,
    seed: int = 0,
    *,
    samples: int = 8,
    part: str = "train",
    samples_per_file: int = 128,
    mu_water: float = MU_WATER_70KEV_PER_MM,
    min_count: float = 1.0,
    allow_other_files: bool = False,
    **options,
) -> list[Path]:
    """Simulate and write a LoDoPaB-layout dataset part; returns the written files.

    ``out_dir/observation_{part}_{i:03d}.hdf5`` hold the noisy post-log sinograms divided by
    ``MU_MAX`` and ``out_dir/ground_truth_{part}_{i:03d}.hdf5`` the attenuation divided by
    ``MU_MAX`` (in ``[0, 1]``) plus the HU images; geometry, photons, ``mu_water`` and
    ``min_count`` are recorded as attributes. Other keywords go to :func:`simulate_ct_samples`.
    Files of the same part that this run would not replace (an earlier run with more samples)
    make it raise ``FileExistsError`` naming them, unless ``allow_other_files``.
    """
    import re

    from mrirecon.io.lodopab import lodopab_file_name, lodopab_file_splits, write_lodopab

    if not re.fullmatch(r"\w+", str(part)):
        raise ValueError(f"simulate_ct: part must be a word (e.g. 'train'), got {part!r}")
    from mrirecon.data.budget import check_budget, refuse_stale_files

    try:
        n = float(size)
        bins = float(options.get("detectors") or 1.5 * n)
        per_sample = float(views) * bins + 2 * n * n
        memory = 8 * per_sample * float(samples) + 8 * 4 * n * n * float(views)
        if (geometry if isinstance(geometry, str) else getattr(geometry, "beam", "")) == "fan":
            # the fan-beam projector's ray tables and their construction (float64, ~100 bytes
            # per ray measured) and one view's sampling grid and samples (n points per ray):
            # --detectors 1000000 needed 20x what was counted
            memory += 128 * float(views) * bins + 48 * n * bins
        check_budget("simulate_ct", memory,
                     4 * per_sample * float(samples), out_dir,
                     f"--samples {samples} --size {size} --views {views} --detectors "
                     + (str(options["detectors"]) if options.get("detectors") else
                        f"{int(math.ceil(n * math.sqrt(2))) | 1} (the default)"))
    except TypeError:
        pass  # non-numeric sizes: simulate_ct_samples names them
    if Path(out_dir).is_dir():
        from mrirecon.io.lodopab_attrs import simulated_parts

        for path, other, other_seed in simulated_parts(out_dir):
            if other != part and other_seed == int(seed):  # the part only names the files
                import warnings

                warnings.warn(
                    f"simulate_ct: {path} is part {other!r} simulated with seed {other_seed}: "
                    f"part {part!r} of the same seed holds the same images (only a dose or "
                    f"geometry of its own makes it differ); for a split (a test set apart from "
                    f"the training set) give each part its own seed (--seed)", UserWarning,
                    stacklevel=2)
    if (not allow_other_files and isinstance(samples, (int, np.integer)) and samples >= 1
            and isinstance(samples_per_file, int) and samples_per_file >= 1):
        files = range(len(lodopab_file_splits(int(samples), samples_per_file)))
        refuse_stale_files("simulate_ct", out_dir,
                           rf"(observation|ground_truth)_{part}_\d{{3,}}\.hdf5",
                           [lodopab_file_name(kind, part, i) for i in files
                            for kind in ("observation", "ground_truth")])
    sim = simulate_ct_samples(
        samples,
        geometry,
        views,
        photons,
        size,
        seed,
        mu_water=mu_water,
        min_count=min_count,
        **options,
    )
    attrs = {
        "seed": int(seed),
        "origins": "\n".join(sim.origins),
        "simulation": "mrirecon.data.simulate_ct",
    }
    return write_lodopab(
        out_dir,
        part,
        sim.sinogram,
        sim.attenuation,
        geometry=sim.geometry,
        hu=sim.hu,
        photons=photons,
        min_photon_count=min_count if photons else None,
        mu_water=mu_water,
        mu_air=0.0,
        samples_per_file=samples_per_file,
        attrs=attrs,
    )
