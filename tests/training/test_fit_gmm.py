"""``mrirecon train gmm`` (``fit_and_save``): the written prior and card load back as fitted."""

from __future__ import annotations

import numpy as np
import torch
import yaml

from mrirecon.models.gmm import PatchGMM
from mrirecon.training.fit_gmm import fit_and_save, sample_patches, training_images
from mrirecon.training.weights import load_patch_gmm


def test_fitted_mixture_loads_back_and_its_card_describes_it(tmp_path, capsys):
    out = tmp_path / "priors" / "gmm.pt"  # a folder that does not exist yet
    card = fit_and_save(out, components=3, patch_size=4, mri_volumes=1, mri_slices=1, ct_samples=1,
                        size=32, patches_per_image=60, iterations=3, seed=5)
    gmm = load_patch_gmm(out)
    assert gmm.means.shape[0] == 3 and gmm.means.shape[-1] == 16
    assert torch.allclose(gmm.weights.sum(), torch.tensor(1.0, dtype=gmm.weights.dtype),
                          atol=10 * torch.finfo(gmm.weights.dtype).eps)
    assert yaml.safe_load(out.with_suffix(".yaml").read_text()) == card
    assert card["model"]["params"]["components"] == 3 and card["model"]["params"]["patch_size"] == 4
    assert sorted(p.name for p in out.parent.iterdir()) == ["gmm.pt", "gmm.yaml"]  # no temp files
    history = card["training"]["mean_log_likelihood_first_last"]
    assert history[1] >= history[0]  # EM never lowers the likelihood
    # the written mixture is the fitted one, not the untrained initial weights: the same recipe
    # refitted here (EM from a deterministic start, float64) rounds to the stored float32 exactly
    torch.manual_seed(5)
    images = training_images(mri_volumes=1, mri_slices=1, ct_samples=1, size=32, seed=5)
    ref = PatchGMM.fit(sample_patches(images, 4, 60, 5), 3, iterations=3)
    for key in ("means", "covs", "weights"):
        got = getattr(gmm, key)
        torch.testing.assert_close(got, getattr(ref, key).to(got.dtype), rtol=0, atol=0)


def test_sample_patches_keeps_flat_patches_at_the_fraction_asked_and_reaches_every_offset():
    flat = np.zeros((16, 16))
    assert sample_patches([flat], 4, 50, seed=0, flat_fraction=0.0).shape == (0, 16)
    assert sample_patches([flat], 4, 50, seed=0, flat_fraction=1.0).shape == (50, 16)
    # an image exactly one patch in size: every patch is the image itself
    im = np.arange(16.0).reshape(4, 4)
    p = sample_patches([im], 4, 5, seed=0)
    assert torch.equal(p, torch.from_numpy(im.reshape(1, 16)).expand(5, 16))
    # 5 x 5 with 4 x 4 patches: both offsets of each axis are drawn (200 draws: P(miss) 2^-199)
    im = np.arange(25.0).reshape(5, 5)
    firsts = set(sample_patches([im], 4, 200, seed=1)[:, 0].tolist())
    assert firsts == {0.0, 1.0, 5.0, 6.0}
