"""Validation split for tuning: the *training* sources at the held-out (deployment) geometry.

Baseline parameters (``lam``, iterations) and plug-and-play schedules are chosen on these data,
never on :mod:`mrirecon.heldout.data`. MRI: MNI152 brains of
:func:`~mrirecon.data.simulate_mri.simulate_mri_dataset` at ``320 x 320`` with 2x readout
oversampling, 8 coils, 30 dB. CT: allowed CT images and ellipse phantoms of
:func:`~mrirecon.data.simulate_ct.simulate_ct_samples` on the LoDoPaB geometry, 4096 photons.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from mrirecon.heldout.data import CT_DETECTORS, CT_FULL_VIEWS, CT_PHOTONS, CT_SIZE, HeldoutCTSlice

VAL_SEED = 77


def write_validation_mri(out_dir: str | Path, volumes: int = 2, seed: int = VAL_SEED) -> list[Path]:
    """Fully sampled fastMRI files (one slice each) of the validation split."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    return simulate_mri_dataset(out_dir, volumes=volumes, slices=1, coils=8, size=(320, 320),
                                seed=seed, snr_db=30.0, readout_oversampling=2)


def validation_ct_slices(samples: int = 2, seed: int = VAL_SEED,
                         hardware: bool = False) -> list[HeldoutCTSlice]:
    """Validation CT slices on the LoDoPaB geometry (allowed sources only). ``hardware``: followed
    by a copy of each with a patient table (``val_<i>_table``) and one with a head holder
    (``val_<i>_holder``), :func:`~mrirecon.data.simulate_ct.with_scanner_hardware`."""
    from mrirecon.data.simulate_ct import (ct_simulation_geometry, simulate_ct_samples,
                                           with_scanner_hardware)
    from mrirecon.io.lodopab import MU_MAX_PER_MM

    geom = ct_simulation_geometry("parallel", CT_SIZE, CT_FULL_VIEWS, CT_DETECTORS, 260.0)
    sim = simulate_ct_samples(samples, geom, photons=CT_PHOTONS, seed=seed, min_count=0.1)
    sinos, mus, names = sim.sinogram, sim.attenuation, [f"val_{i}" for i in range(samples)]
    if hardware:
        hw_sinos, hw_mus = with_scanner_hardware(mus, geom, CT_PHOTONS, seed, min_count=0.1)
        sinos, mus = np.concatenate([sinos, hw_sinos]), np.concatenate([mus, hw_mus])
        names += [f"val_{i}_{kind}" for i in range(samples) for kind in ("table", "holder")]
    return [HeldoutCTSlice(name, torch.from_numpy(sino).float(),
                           torch.from_numpy(mu / MU_MAX_PER_MM).float(), geom)
            for name, sino, mu in zip(names, sinos, mus)]
