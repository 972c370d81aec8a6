"""Simulated non-Cartesian (radial, spiral) multi-coil brain scans written as ISMRMRD files.

The object, coil maps and noise level come from :func:`~mrirecon.data.simulate_mri.simulate_mri_volume`
(same seed, same volume); the k-space is sampled on the trajectory with the NUFFT operator
(:func:`~mrirecon.operators.nufft_sense`), complex Gaussian noise of the volume's ``noise_sigma``
is added, and the file carries ``traj`` (``kx, ky`` and the density weight) per readout, as
scanners export it.

``snr_db`` is therefore the SNR of the same object's fully sampled *Cartesian* k-space: every
sample gets the receiver noise a Cartesian scan of that object would have, whatever the
trajectory. Measured over the samples written, a radial or spiral file has a higher SNR,
since its readouts sample the k-space centre densely (64 x 64, 4 coils, 30 dB asked: 44.4 dB
radial, 43.5 dB spiral). Kept so: the shipped radial models were trained, and their cards'
figures measured, on files of this noise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from mrirecon.data.budget import refuse_stale_files
from mrirecon.data.simulate_mri import (SIMULATED_FILE_PATTERN, check_mri_budget,
                                       simulate_mri_volume, simulated_file_name,
                                       volume_acquisition)
from mrirecon.functional.density import pipe_menon_density, radial_density
from mrirecon.operators.nufft import nufft_sense
from mrirecon.sampling.nonuniform import golden_angle_radial, spiral_trajectory

TRAJECTORIES = ("radial", "spiral")


def make_trajectory(kind: str, size: tuple[int, int], readouts: int | None = None,
                    fov_mm: float = 240.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Trajectory ``(readouts, samples, 2)`` and density weights for a ``size`` grid.

    ``radial``: golden-angle full spokes with 2x readout oversampling (``2 max(size)``
    samples), ``readouts`` spokes (default ``max(size)``, about 1.6x undersampled against
    Nyquist's ``pi/2 N``), ramp weights. ``spiral``: variable-density spiral (FOV falling to a
    half at the edge, 40 mT/m, 150 T/m/s, 4 us dwell) with ``readouts`` interleaves (default
    ``max(size) // 8``), Pipe-Menon weights.
    """
    n = max(int(size[0]), int(size[1]))
    if kind == "radial":
        traj = golden_angle_radial(readouts or n, 2 * n)
        return traj, radial_density(traj, size)
    if kind == "spiral":
        traj = spiral_trajectory(n, fov_mm / 1000, readouts or max(n // 8, 1), undersampling_edge=2.0)
        return traj, pipe_menon_density(traj, size)
    raise ValueError(f"make_trajectory: trajectory must be one of {TRAJECTORIES}, got {kind!r}")


def _file_name(acquisition: str, seed: int, index: int, trajectory: str) -> str:
    return simulated_file_name(acquisition, seed, index).replace(".h5", f"_{trajectory}.h5")


def simulate_noncartesian_dataset(
    out_dir: str | os.PathLike,
    trajectory: str = "radial",
    volumes: int = 2,
    slices: int = 4,
    coils: int | tuple[int, int] = 8,
    size: tuple[int, int] = (128, 128),
    seed: int = 0,
    snr_db: float | None = 30.0,
    *,
    readouts: int | None = None,
    **options,
) -> list[Path]:
    """Write ``volumes`` ISMRMRD files of ``trajectory`` scans; returns their paths.

    ``readouts``: spokes or interleaves (see :func:`make_trajectory`); ``snr_db``: that of the
    object's Cartesian k-space (the module's docstring); other parameters as
    :func:`~mrirecon.data.simulate_mri.simulate_mri_dataset`. The file name ends in
    ``_radial.h5`` / ``_spiral.h5``.
    """
    from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian

    if options.get("readout_oversampling", 1) != 1:
        raise ValueError("simulate (non-Cartesian): readout oversampling is set by the trajectory")
    # before the trajectory is made: 1e8 spokes were a MemoryError (the command line checked it)
    check_mri_budget("simulate_noncartesian_dataset", out_dir, volumes, slices, coils, size,
                     trajectory=trajectory, readouts=readouts)
    traj, density = make_trajectory(trajectory, size, readouts)
    names = [_file_name(volume_acquisition(i, seed, coils, options.get("contrasts"),
                                           options.get("orientations")), seed, i, trajectory)
             for i in range(int(volumes))]
    refuse_stale_files("simulate (non-Cartesian)", out_dir, SIMULATED_FILE_PATTERN, names)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(int(volumes)):
        vol = simulate_mri_volume(index, slices=slices, coils=coils, size=size, seed=seed,
                                  snr_db=snr_db, **options)
        op = nufft_sense(vol.maps.to(torch.complex64), traj, toeplitz=False)
        k = op(vol.image.to(torch.complex64))
        sigma = vol.parameters.get("noise_sigma") or 0.0
        if snr_db is not None and sigma > 0:
            g = torch.Generator().manual_seed(seed * 100003 + index)
            noise = torch.complex(torch.randn(k.shape, generator=g), torch.randn(k.shape, generator=g))
            k = k + sigma * noise  # sigma per real / imaginary part, as the Cartesian files
        header = vol.header.with_(extra={**vol.header.extra, "trajectory": trajectory})
        # the object's magnitude (coil maps of unit sum of squares: the coil images' RSS, noise
        # free) beside the k-space: what mrirecon run scores against (was: no reference, so the
        # radial pipelines wrote no metrics on the simulator's own files)
        paths.append(write_ismrmrd_noncartesian(out / names[index], k, traj, header, density,
                                                reference=vol.image.abs().float()))
    return paths
