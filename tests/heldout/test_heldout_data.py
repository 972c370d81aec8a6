"""The held-out and validation data builders (:mod:`mrirecon.heldout.data`,
:mod:`mrirecon.heldout.validation`): the noise the files record, the left-right flip, the MRI
validation split at the held-out geometry."""

from __future__ import annotations

import numpy as np
import torch


def test_heldout_mri_noise_matches_the_recorded_snr():
    """Fails if heldout/data.py ``sigma = sqrt(P / 10**(snr/10) / 2)`` -> without ``/ 2``: the
    files' ``snr_db`` attribute (28-34 dB k-space SNR, the module docstring) must be the SNR of
    the data: the noise was 3 dB above the recorded level. Reference-based: rows outside the
    object band of the 2x readout-oversampled image (rows 160-480 of 640 hold the object) are
    pure noise, whose power (unitary FFT) is the k-space noise power E|n|^2 = 2 sigma^2. With
    8 x 300 x 320 noise samples the estimate is within ~0.02 dB; 0.25 dB leaves margin."""
    import math

    from mrirecon.functional import ifft2c
    from mrirecon.heldout.data import heldout_mri_volumes

    for v in heldout_mri_volumes():
        k = v.kspace[0].to(torch.complex128)
        im = ifft2c(k)
        noise = float(torch.cat([im[:, :150], im[:, -150:]], 1).abs().pow(2).mean())
        signal = float(k.abs().pow(2).mean()) - noise
        assert abs(10 * math.log10(signal / noise) - v.snr_db) < 0.25, v.name


def test_validation_mri_split_is_at_the_heldout_geometry(monkeypatch, tmp_path):
    """Fails if heldout/validation.py ``readout_oversampling=2`` -> ``1``: the tuning split
    must be at the held-out (deployment) geometry, 640 x 320 k-space (2x readout oversampling),
    8 coils, 30 dB, one slice per file; tests/heldout/test_heldout_cli.py replaces
    ``write_validation_mri`` wholesale, so nothing pinned it. The real call takes ~9 s per volume;
    this checks the arguments it passes (the geometry is simulate_mri_dataset's own contract)."""
    import mrirecon.data.simulate_mri as sim
    from mrirecon.heldout.data import MRI_COILS, MRI_RECON
    from mrirecon.heldout.validation import VAL_SEED, write_validation_mri

    calls = []
    monkeypatch.setattr(sim, "simulate_mri_dataset", lambda out, **kw: calls.append(kw) or [])
    write_validation_mri(tmp_path, volumes=3)
    assert calls == [dict(volumes=3, slices=1, coils=MRI_COILS, size=MRI_RECON, seed=VAL_SEED,
                          snr_db=30.0, readout_oversampling=2)]


def test_heldout_fit_flips_left_right_only():
    """Fails if heldout/data.py ``z[:, ::-1]`` -> ``z[::-1, :]``: the held-out variants mirror
    an image left-right (a plausible patient), never upside down (a brain or body the models
    never see, which would change every shipped held-out score). At zoom 1 ``_fit`` returns the
    image or its left-right mirror, and both occur over seeds."""
    from mrirecon.heldout.data import _fit

    img = np.random.default_rng(0).random((12, 10)) + 0.1
    seen = set()
    for seed in range(16):
        out = _fit(img, img.shape, 1.0, np.random.default_rng(seed))
        if np.allclose(out, img, atol=1e-12):
            seen.add("same")
        else:
            np.testing.assert_allclose(out, img[:, ::-1], atol=1e-12)
            seen.add("mirror")
    assert seen == {"same", "mirror"}
