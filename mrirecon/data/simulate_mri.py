"""Simulated multi-coil brain MRI in the fastMRI layout, from the MNI152 template.

Each volume is a slab of ``slices`` parallel slices cut through the (randomly, smoothly
deformed) template at a random position, orientation (axial / coronal / sagittal with a small
in-plane rotation) and contrast (T1 from the template itself; T2-, PD- and FLAIR-like from the
grey / white / CSF maps), times a smooth intensity bias and a smooth random phase. Birdcage
coil sensitivities with a random rotation (unit sum of squares) multiply it, and k-space is
``sense(maps, ones).expand(image)`` (the package's one centred FFT) plus complex Gaussian
noise at the requested SNR. The reference is the root-sum-of-squares of the noisy fully
sampled coil images, centre-cropped to the recon size: exactly what a reader recomputes from
the file.

Conventions
-----------
* k-space ``(slices, coils, H_enc, W)`` with ``H_enc = H * readout_oversampling`` the readout
  (ISMRMRD ``x``) and ``W`` phase encoding (``y``); recon size ``(H, W)``.
* Pixels are square, ``pixel_mm = fov_mm / min(H, W)`` (the shorter recon axis spans
  ``fov_mm``, so the head is never cut off on a non-square matrix); the header's encoded FOV is
  ``(H_enc, W, 1) * (pixel, pixel, slice_spacing)`` and its :class:`ImageGeometry` gives the
  LPS position of every recon pixel (``origin`` is recon pixel ``[0, 0, 0]``).
* SNR (dB) is ``10 log10(mean |k|^2 / E|n|^2)`` over the whole noise-free volume ``k`` and the
  complex noise ``n``.
* Every random choice comes from ``numpy.random.default_rng([seed, volume, stream])``: the
  same seed gives the same files on any machine and any thread count.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from mrirecon.data.anatomy import CONTRASTS, head_shells, load_mni_brain, tissue_image
from mrirecon.containers import Header, ImageGeometry
from mrirecon.functional import center_crop, ifft2c, rss
from mrirecon.operators.mri import sense

ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # (direction of increasing column, direction of increasing row), LPS
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
}
_PREFIX = {"axial": "AX", "coronal": "COR", "sagittal": "SAG"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: ``|snr_db|`` beyond this puts one of signal and noise below float32's rounding of the other.
#: The SNR is a power ratio, so the noise's RMS is ``10^(-snr_db / 20)`` of the signal's; float32
#: spaces its values 2^-23 apart (relative), i.e. 20 log10(2^23) = 138.5 dB: beyond it the written
#: k-space holds the signal without its noise (400 dB: noise 2e-24 on k-space of 3e-4, no sample
#: changed) or noise without signal (-400 dB), while its attributes claim the SNR; far beyond,
#: ``10 ** (snr_db / 10)`` overflows (4000 dB: OverflowError) or is 0 (-4000: ZeroDivisionError).
SNR_DB_LIMIT = 138.0


@dataclass(frozen=True)
class SmoothField:
    """A smooth random scalar field on R^3: ``sum_k a_k sin(w_k . x + p_k)`` (x in mm)."""

    frequencies: np.ndarray  # (K, 3) rad/mm
    phases: np.ndarray  # (K,)
    amplitudes: np.ndarray  # (K,)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        rms: float,
        wavelength_mm: tuple[float, float],
        waves: int = 6,
    ) -> SmoothField:
        """``waves`` plane waves with random directions and wavelengths; RMS value ``rms``."""
        directions = rng.standard_normal((waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        lengths = rng.uniform(*wavelength_mm, size=waves)
        weights = rng.uniform(0.5, 1.0, size=waves)
        amplitudes = rms * math.sqrt(2.0) * weights / np.linalg.norm(weights)
        return cls(
            2 * np.pi * directions / lengths[:, None],
            rng.uniform(0, 2 * np.pi, size=waves),
            amplitudes,
        )

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Values at ``points (..., 3)`` (mm)."""
        return np.sin(points @ self.frequencies.T + self.phases) @ self.amplitudes


def birdcage_maps(
    num_coils: int,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray | float = 0.0,
    radius: float = 1.5,
    rotation: float = 0.0,
) -> np.ndarray:
    """Birdcage coil sensitivities at normalised positions, unit sum of squares.

    The field of coil ``c`` at angle ``theta_c = 2 pi c / C + rotation`` on a ring of
    ``radius`` (in units of the half field of view) is ``exp(i (atan2(x', -y') - theta_c)) / r``
    with ``(x', y', z)`` the offset from the coil; ``rotation = 0`` and ``z = 0`` reproduce
    ``sigpy.mri.birdcage_maps`` on the grid ``x = (col - nx/2)/(nx/2)``,
    ``y = (row - ny/2)/(ny/2)``.

    Parameters
    ----------
    x, y, z
        Broadcastable arrays of normalised positions.

    Returns
    -------
    ndarray
        ``(num_coils, *broadcast_shape)`` complex128 with ``sum_c |S_c|^2 = 1``.
    """
    if num_coils < 1:
        raise ValueError(f"birdcage_maps: num_coils must be >= 1, got {num_coils}")
    x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    theta = 2 * np.pi * np.arange(num_coils) / num_coils + rotation
    shape = (num_coils,) + (1,) * x.ndim
    dx = x[None] - (radius * np.cos(theta)).reshape(shape)
    dy = y[None] - (radius * np.sin(theta)).reshape(shape)
    r_plane = np.sqrt(dx**2 + dy**2)
    r = np.sqrt(r_plane**2 + z[None] ** 2)
    # exp(i atan2(dx, -dy)) = (-dy + i dx) / r_plane, without the transcendental calls
    maps = (-dy + 1j * dx) * (np.exp(-1j * theta).reshape(shape) / (r_plane * r))
    return maps / np.sqrt(np.sum(maps.real**2 + maps.imag**2, axis=0))


@dataclass
class SimulatedVolume:
    """One simulated volume before it is written.

    Attributes
    ----------
    kspace
        ``(slices, coils, H_enc, W)`` complex64, fully sampled, noise included.
    reference
        ``(slices, H, W)`` float32 RSS of ``ifft2c(kspace)`` centre-cropped.
    image
        ``(slices, H_enc, W)`` complex128 noise-free image (the ground truth object).
    maps
        ``(slices, coils, H_enc, W)`` complex128 coil sensitivities (unit sum of squares).
    header
        Acquisition header (geometry of the recon grid).
    parameters
        The random choices, JSON-serialisable (stored in the file's ``simulation`` attribute).
    """

    kspace: torch.Tensor
    reference: torch.Tensor
    image: torch.Tensor
    maps: torch.Tensor
    header: Header
    parameters: dict = field(default_factory=dict)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"simulate_mri: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _choose(rng: np.random.Generator, options, given, index: int, what: str, allowed) -> str:
    if given is None:
        return str(options[int(rng.integers(len(options)))])
    given = [given] if isinstance(given, str) else list(given)
    for g in given:
        if g not in allowed:
            raise ValueError(
                f"simulate_mri: unknown {what} {g!r}; expected one of {sorted(allowed)}"
            )
    rng.integers(len(options))  # keep the random stream independent of the choice
    return given[index % len(given)]


def _draw_choices(rng: np.random.Generator, index: int, coils, orientations,
                  contrasts) -> tuple[int, str, str]:
    """The first draws of a volume's stream: coil count, orientation, contrast."""
    if isinstance(coils, (tuple, list)):
        lo, hi = (_check_positive_int("coils", c) for c in coils)
        if hi < lo:
            raise ValueError(f"simulate_mri: coils range {coils} is empty")
        num_coils = int(rng.integers(lo, hi + 1))
    else:
        num_coils = _check_positive_int("coils", coils)
        rng.integers(1, 2)
    orientation = _choose(rng, list(ORIENTATIONS), orientations, index, "orientation", ORIENTATIONS)
    contrast = _choose(rng, list(CONTRASTS), contrasts, index, "contrast", CONTRASTS)
    return num_coils, orientation, contrast


def volume_acquisition(index: int, seed: int = 0, coils: int | tuple[int, int] = 8,
                       contrasts=None, orientations=None) -> str:
    """The ``acquisition`` (e.g. ``AXT1``) of volume ``index``, without simulating it: what
    names its file (:func:`simulated_file_name`)."""
    index = _check_positive_int("index", index, 0)
    seed = _check_positive_int("seed", seed, 0)
    rng = np.random.default_rng([seed, index, 0])
    _, orientation, contrast = _draw_choices(rng, index, coils, orientations, contrasts)
    return _PREFIX[orientation] + contrast


def simulate_mri_volume(
    index: int,
    *,
    slices: int = 8,
    coils: int | tuple[int, int] = 8,
    size: tuple[int, int] = (320, 320),
    seed: int = 0,
    snr_db: float | None = 30.0,
    readout_oversampling: int = 1,
    contrasts: str | list[str] | None = None,
    orientations: str | list[str] | None = None,
    resolution: int = 1,
    fov_mm: tuple[float, float] = (220.0, 260.0),
    slice_spacing_mm: tuple[float, float] = (2.0, 5.0),
    max_rotation_deg: float = 10.0,
    deformation_mm: float = 3.0,
    bias: float = 0.2,
    phase_rad: float = 1.5,
    scale: float = 1e-3,
    field_strength_t: float = 3.0,
) -> SimulatedVolume:
    """Simulate volume ``index`` of the dataset defined by ``seed`` (see module docstring).

    Parameters
    ----------
    index
        Volume number; volumes of one seed are independent draws.
    slices, coils, size
        Slices per volume, receive coils (an int, or ``(lo, hi)`` for a random count per
        volume), recon size ``(H, W)`` in pixels.
    seed
        The dataset, an integer >= 0: volume ``index`` draws from
        ``numpy.random.default_rng([seed, index, 0])`` and its noise from ``[seed, index, 1]``.
    snr_db
        k-space SNR in dB (within ``+-SNR_DB_LIMIT``, 138), or ``None`` for noise-free data.
    readout_oversampling
        Integer factor on the readout (rows): k-space has ``H * factor`` rows, the reference is
        cropped back to ``H`` (fastMRI brain files use 2).
    contrasts, orientations
        Fixed choice (or a list cycled over volumes) among ``T1 T2 PD FLAIR`` and
        ``axial coronal sagittal``; random when ``None``.
    resolution
        MNI template resolution in mm (1 or 2).
    fov_mm, slice_spacing_mm
        Ranges of the in-plane field of view of the shorter recon axis (the longer one sees
        proportionally more) and of the slice spacing.
    max_rotation_deg, deformation_mm, bias, phase_rad
        In-plane rotation range, RMS elastic displacement, RMS log-intensity bias, RMS phase.
    scale
        Peak magnitude of the image (fastMRI-like k-space magnitudes).
    field_strength_t
        Main field strength in tesla, written into the header only (``Header.field_strength_t``:
        ISMRMRD ``systemFieldStrength_T`` and the H1 frequency derived from it, DICOM
        MagneticFieldStrength). It does not change the simulated contrast, noise or coil maps.
    """
    index = _check_positive_int("index", index, 0)
    seed = _check_positive_int("seed", seed, 0)
    slices = _check_positive_int("slices", slices)
    factor = _check_positive_int("readout_oversampling", readout_oversampling)
    if len(tuple(size)) != 2:
        raise ValueError(f"simulate_mri: size must be (H, W), got {size!r}")
    h, w = (_check_positive_int("size", s, 4) for s in size)
    if snr_db is not None and not (math.isfinite(float(snr_db)) and abs(snr_db) <= SNR_DB_LIMIT):
        raise ValueError(f"simulate_mri: snr_db must be None or within +-{SNR_DB_LIMIT:g} dB "
                         f"(beyond, float32 k-space cannot hold both signal and noise: one is "
                         f"below the other's rounding), got {snr_db!r}")
    rng = np.random.default_rng([seed, index, 0])
    noise_rng = np.random.default_rng([seed, index, 1])

    num_coils, orientation, contrast = _draw_choices(rng, index, coils, orientations, contrasts)
    brain = load_mni_brain(resolution)

    # ---- geometry (LPS, mm) -------------------------------------------------------------
    h_enc = h * factor
    # the field of view of the shorter recon axis covers the head, as a scanner's does: a
    # longer axis (e.g. 640 x 368) sees more air, never a cropped head
    pixel = round(float(rng.uniform(*fov_mm)) / min(h, w), 4)
    spacing = round(float(rng.uniform(*slice_spacing_mm)), 2)
    psi = math.radians(float(rng.uniform(-max_rotation_deg, max_rotation_deg)))
    r0, c0 = (np.array(v) for v in ORIENTATIONS[orientation])
    row_dir = math.cos(psi) * r0 + math.sin(psi) * c0  # increasing column index
    col_dir = -math.sin(psi) * r0 + math.cos(psi) * c0  # increasing row index
    normal = np.cross(row_dir, col_dir)
    lower, upper = brain.brain_extent_mm()
    centre = _LPS_TO_RAS @ ((lower + upper) / 2)  # RAS -> LPS is the same flip
    half_extent = 0.5 * float(np.abs(_LPS_TO_RAS @ normal) @ (upper - lower))
    slab = (slices - 1) * spacing
    room = max(0.75 * half_extent - slab / 2, 0.0)
    offset = float(rng.uniform(-room, room))
    shift = rng.uniform(-5, 5, size=2)
    slab_centre = centre + offset * normal + shift[0] * row_dir + shift[1] * col_dir
    s_idx = np.arange(slices) - (slices - 1) / 2
    r_idx = np.arange(h_enc) - h_enc // 2
    c_idx = np.arange(w) - w // 2
    points = (
        slab_centre
        + s_idx[:, None, None, None] * spacing * normal
        + r_idx[None, :, None, None] * pixel * col_dir
        + c_idx[None, None, :, None] * pixel * row_dir
    )  # (S, H_enc, W, 3) LPS
    top = (h_enc - h) // 2
    origin = points[0, top, 0]
    ras = points @ _LPS_TO_RAS.T

    # ---- anatomy: deformed template, contrast, bias, phase ------------------------------
    warp = [SmoothField.random(rng, deformation_mm / math.sqrt(3), (60.0, 140.0)) for _ in range(3)]
    warped = ras + np.stack([f(ras) for f in warp], axis=-1)

    def sample(volume: np.ndarray, affine: np.ndarray, mode: str) -> np.ndarray:
        ijk = (warped - affine[:3, 3]) @ np.linalg.inv(affine[:3, :3]).T
        coords = np.moveaxis(ijk, -1, 0).reshape(3, -1)
        out = ndimage.map_coordinates(volume, coords, order=1, mode=mode, cval=0.0)
        return out.reshape(warped.shape[:-1])

    t1, gm, wm, csf = (
        sample(getattr(brain, n), brain.affine, "constant") for n in ("t1", "gm", "wm", "csf")
    )
    skull_mm, scalp_mm = (float(v) for v in rng.uniform(4.0, 7.0, size=2))
    distance = sample(brain.distance_mm, brain.distance_affine, "nearest")
    skull, scalp = head_shells(distance, skull_mm, scalp_mm)
    magnitude = tissue_image(contrast, t1, gm, wm, csf, skull, scalp, rng=rng)
    bias_field = np.exp(SmoothField.random(rng, bias, (200.0, 400.0))(ras))
    phase = float(rng.uniform(-np.pi, np.pi)) + SmoothField.random(rng, phase_rad, (150.0, 400.0))(
        ras
    )
    peak = scale * float(rng.uniform(0.8, 1.2))
    magnitude = magnitude * bias_field
    image = peak * magnitude / max(float(magnitude.max()), 1e-12) * np.exp(1j * phase)

    # ---- coils, k-space, noise ----------------------------------------------------------
    rotation = float(rng.uniform(0, 2 * np.pi))
    ring = float(rng.uniform(1.2, 1.7))
    # the coil ring's radius is in half encoded fields of view, so readout oversampling places
    # the coils twice as far out (flatter maps: 2x-oversampled 20-coil brains reconstruct 5-7 dB
    # below the same brains without it through SENSE-type methods). Kept: the shipped models'
    # training data and the held-out protocol's validation split were simulated so
    half_fov = max(h_enc, w) * pixel / 2
    rel = points - centre
    maps = birdcage_maps(
        num_coils,
        (rel @ row_dir) / half_fov,
        (rel @ col_dir) / half_fov,
        (rel @ normal) / half_fov,
        radius=ring,
        rotation=rotation,
    )
    maps = np.moveaxis(maps, 0, 1)  # (S, C, H_enc, W)
    image_t = torch.from_numpy(np.ascontiguousarray(image))
    maps_t = torch.from_numpy(np.ascontiguousarray(maps))
    ones = torch.ones(w, dtype=torch.float64)
    sigma = 0.0
    if snr_db is not None:
        # mean |F S x|^2 over slices, coils and samples: sum_c |S_c x|^2 = |x|^2, F unitary
        signal_power = float(np.mean(np.abs(image) ** 2)) / num_coils
        sigma = math.sqrt(signal_power / 10 ** (float(snr_db) / 10) / 2)
    kspace = torch.empty((slices, num_coils, h_enc, w), dtype=torch.complex64)
    for s in range(slices):
        k = sense(maps_t[s], ones).expand(image_t[s])
        if sigma > 0:
            noise = noise_rng.standard_normal((2, num_coils, h_enc, w))
            k = k + torch.from_numpy(sigma * (noise[0] + 1j * noise[1]))
        kspace[s] = k.to(torch.complex64)
    reference = center_crop(rss(ifft2c(kspace.to(torch.complex128)), dim=-3), (h, w)).to(
        torch.float32
    )

    c = CONTRASTS[contrast]
    acquisition = _PREFIX[orientation] + contrast
    patient = hashlib.sha256(f"mrirecon-simulated-brain-{seed}-{index}".encode()).hexdigest()
    header = Header(
        encoded_matrix=(h_enc, w, 1),
        recon_matrix=(h, w, 1),
        encoded_fov_mm=(h_enc * pixel, w * pixel, spacing),
        recon_fov_mm=(h * pixel, w * pixel, spacing),
        padding_left=0,
        padding_right=w,
        acquisition=acquisition,
        field_strength_t=float(field_strength_t),
        repetition_time_ms=c.repetition_time_ms,
        echo_time_ms=c.echo_time_ms,
        flip_angle_deg=c.flip_angle_deg,
        num_coils=num_coils,
        geometry=ImageGeometry(
            spacing=(spacing, pixel, pixel),
            origin=tuple(origin),
            orientation=(*row_dir, *col_dir),
            slice_thickness=spacing,
        ),
        patient_id=patient,
        extra={"patient_position": "HFS"},
    )
    parameters = {
        "source": f"MNI152 template (nilearn), {resolution} mm",
        "seed": seed,
        "volume": index,
        "contrast": contrast,
        "orientation": orientation,
        "in_plane_rotation_deg": math.degrees(psi),
        "slab_offset_mm": offset,
        "pixel_mm": pixel,
        "slice_spacing_mm": spacing,
        "coils": num_coils,
        "coil_rotation_rad": rotation,
        "coil_ring_radius": ring,
        "snr_db": None if snr_db is None else float(snr_db),
        "noise_sigma": sigma,
        "readout_oversampling": factor,
        "deformation_mm": deformation_mm,
        "bias": bias,
        "skull_mm": skull_mm,
        "scalp_mm": scalp_mm,
    }
    return SimulatedVolume(
        kspace=kspace,
        reference=reference,
        image=image_t,
        maps=maps_t,
        header=header,
        parameters=parameters,
    )


SIMULATED_FILE_PATTERN = r"file_brain_\w+_sim\d+_\d{4}(_radial|_spiral)?\.h5"
"""Names of the files :func:`simulate_mri_dataset` and the non-Cartesian simulation write."""


def simulated_file_name(acquisition: str, seed: int, index: int) -> str:
    """``file_brain_{acquisition}_sim{seed}_{index:04d}.h5`` (fastMRI-like naming)."""
    return f"file_brain_{acquisition}_sim{seed}_{index:04d}.h5"


#: make_trajectory's spiral (:mod:`mrirecon.data.simulate_noncartesian`): field of view in
#: metres and the undersampling at the edge of k-space
_SPIRAL_FOV, _SPIRAL_EDGE = 0.24, 2.0


#: What a simulation holds beside its arrays: the interpreter with numpy, torch and scipy, and
#: the MNI template: 524 MiB measured with the 2 mm template, 787 MiB with the 1 mm one
_FIXED_BYTES = 896 * 2**20


def check_mri_budget(who: str, out_dir: str | os.PathLike, volumes: int, slices: int,
                     coils: int | tuple[int, int], size: tuple[int, int], *,
                     readout_oversampling: int = 1, trajectory: str = "cartesian",
                     readouts: int | None = None) -> None:
    """Refuse (``ValueError`` naming the options) a simulation that needs more than half the RAM
    or more disk than is free: a volume's images and coil maps and, for radial / spiral scans,
    its ``readouts`` x samples per readout of k-space and the trajectory (``--readouts
    100000000`` radial spokes were an "internal error: MemoryError" for a 95 GiB trajectory).
    Malformed sizes pass: :func:`simulate_mri_volume` names them."""
    from mrirecon.data.budget import check_budget

    try:
        n_coils = max(coils) if isinstance(coils, (tuple, list)) else int(coils)
        ro = int(readout_oversampling or 1)
        voxels = float(slices) * n_coils * float(size[0]) * ro * float(size[1])
        n = max(int(size[0]), int(size[1]))
    except (TypeError, ValueError, IndexError):
        return
    what = f"--slices {slices} --coils {coils} --size {size[0]} {size[1]}"
    # a volume's peak, measured (peak RSS of simulate mri, 1 to 16 coils, readout oversampling
    # 1 to 64): 88 bytes per k-space sample (complex128 coil maps and their contiguous copy,
    # k-space, its complex128 copy, FFT and shifts for the reference, the file's image) and
    # 162 per pixel of the oversampled grid (float64 positions, warps, tissue maps); rounded up.
    # The old 48 bytes per sample was half the peak (a 16-coil 256 x 512 request: 1152 MiB
    # said, 2886 MiB used), and a fifth of it at 1 coil and high oversampling.
    memory = 96 * voxels + 192 * voxels / max(n_coils, 1) + _FIXED_BYTES
    if trajectory not in ("radial", "spiral"):
        check_budget(who, memory, 8 * voxels * volumes, out_dir,
                     f"{what} x {volumes} volume(s)")
        return
    if trajectory == "radial":
        shots, per = int(readouts or n), 2 * n  # golden-angle spokes of 2 n samples
    else:
        from mrirecon.sampling.nonuniform import spiral_samples

        shots = int(readouts or max(n // 8, 1))
        per = spiral_samples(n, _SPIRAL_FOV, shots, undersampling_edge=_SPIRAL_EDGE)
    if per > 65535:  # ISMRMRD's number_of_samples (uint16): it failed after the simulation
        raise ValueError(f"{who}: --trajectory {trajectory} --readouts {shots} at --size "
                         f"{size[0]} {size[1]} gives {per} samples per readout; ISMRMRD files "
                         "store at most 65535 (a 16-bit count): give more --readouts or a "
                         "smaller --size")
    points = float(shots) * per  # trajectory points of one slice
    kspace = float(slices) * n_coils * points
    # images and maps as Cartesian; k-space complex64 with its noise (4 copies); the trajectory
    # in float64 with its density weights and the NUFFT's sorted copies (~64 bytes a point)
    memory += 8 * kspace * 4 + 64 * points
    disk = (8 * kspace + 12 * float(slices) * points) * volumes  # data, float32 (kx, ky, w)
    check_budget(who, memory, disk, out_dir,
                 f"{what} --trajectory {trajectory} --readouts {shots} ({per} samples each) x "
                 f"{volumes} volume(s)")


def simulate_mri_dataset(
    out_dir: str | os.PathLike,
    volumes: int = 4,
    slices: int = 8,
    coils: int | tuple[int, int] = 8,
    size: tuple[int, int] = (320, 320),
    seed: int = 0,
    acceleration: float | None = None,
    snr_db: float | None = 30.0,
    *,
    center_fraction: float | None = None,
    mask_type: str = "equispaced_fraction",
    allow_other_files: bool = False,
    **options,
) -> list[Path]:
    """Write ``volumes`` simulated multi-coil brain files in the fastMRI layout.

    Each file holds ``kspace`` ``(slices, coils, H_enc, W)`` complex64,
    ``reconstruction_rss`` ``(slices, H, W)`` float32, ``ismrmrd_header`` and the attributes
    ``acquisition``, ``max``, ``norm``, ``patient_id`` and ``simulation`` (JSON of the random
    choices). With ``acceleration`` the files look like fastMRI test files: k-space columns
    outside a fastMRI mask (``mask_type``, centre fraction ``center_fraction`` or
    ``0.32 / acceleration``, seeded by the file name) are zeroed, and a ``mask`` dataset plus
    ``acceleration`` / ``num_low_frequency`` attributes are added; the fully sampled
    reference is kept.

    Parameters
    ----------
    out_dir
        Output folder (created).
    volumes, slices, coils, size, seed, snr_db
        See :func:`simulate_mri_volume` (``size`` is the recon size ``(H, W)``).
    acceleration
        ``None`` (fully sampled) or an undersampling factor above 1 and at most ``size[1]``
        (the k-space columns) whose mask keeps at least
        :data:`~mrirecon.data.simulate_masks.MIN_SIMULATED_COLUMNS` columns
        in every file; refused before any volume is simulated, naming the largest whole factor
        that does.
    allow_other_files
        By default a ``FileExistsError`` (naming them) refuses a folder that holds simulated
        files this run would not replace (another seed, more volumes, another contrast or
        trajectory): the folder would mix two datasets. ``True`` writes beside them.
    **options
        Further keyword arguments of :func:`simulate_mri_volume`.

    Returns
    -------
    list of Path
        The written files, in volume order.
    """
    from mrirecon.io.fastmri import write_fastmri
    from mrirecon.data.simulate_masks import MIN_SIMULATED_COLUMNS, simulation_mask
    from mrirecon.sampling.cartesian import file_seed

    volumes = _check_positive_int("volumes", volumes)
    from mrirecon.data.budget import refuse_stale_files

    check_mri_budget("simulate_mri", out_dir, volumes, slices, coils, size,
                     readout_oversampling=options.get("readout_oversampling", 1))
    seed = _check_positive_int("seed", seed, 0)
    names = [simulated_file_name(volume_acquisition(i, seed, coils, options.get("contrasts"),
                                                    options.get("orientations")), seed, i)
             for i in range(volumes)]
    mask_fn = simulation_mask(acceleration, center_fraction, mask_type, size, names)
    if not allow_other_files:
        refuse_stale_files("simulate_mri", out_dir, SIMULATED_FILE_PATTERN, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(volumes):
        vol = simulate_mri_volume(
            index, slices=slices, coils=coils, size=size, seed=seed, snr_db=snr_db, **options
        )
        path = out / names[index]  # the names refuse_stale_files was given
        attrs = {"simulation": json.dumps(vol.parameters, sort_keys=True)}
        kspace, mask = vol.kspace, None
        if mask_fn is not None:
            mask, num_low = mask_fn.sample_vector(kspace.shape[-1], seed=file_seed(path))
            if int(mask.sum()) < MIN_SIMULATED_COLUMNS:  # checked above: a malformed size
                raise ValueError(f"simulate_mri: acceleration {acceleration:g} keeps "
                                 f"{int(mask.sum())} of {kspace.shape[-1]} k-space columns; at "
                                 "least 3 (a calibration band) are needed: lower --acceleration "
                                 "or give more columns (--size)")
            kspace = kspace * mask.to(kspace.real.dtype)
            attrs.update(acceleration=float(acceleration), num_low_frequency=int(num_low))
        paths.append(
            write_fastmri(path, kspace, vol.header, reference=vol.reference, mask=mask, attrs=attrs)
        )
    return paths
