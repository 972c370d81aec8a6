"""``mrirecon train gmm`` (``fit_and_save``): the written prior and card load back as fitted."""

from __future__ import annotations

import torch
import yaml

from mrirecon.training.fit_gmm import fit_and_save
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
