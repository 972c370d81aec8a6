"""A start image ``x0`` is taken alike by every method that takes one (``core.checks.check_start``):
in the image's dtype, refused naming ``x0`` when it holds NaN / Inf or is complex for a real image;
and ``cg_sense``'s callback gets a float, as the other methods' do."""

from __future__ import annotations

import pytest
import torch

from mrirecon import recon
from tests.models.problems import ct_problem, mri_problem

SETTINGS = {"tv": {"lam": 1e-3}, "tgv": {"lam": 1e-3}, "tv_ct": {"lam": 1e-3},
            "l1_wavelet": {"lam": 1e-3},
            "pnp_nlm": {"sigma": 0.05}}  # a magnitude start holds no noise to estimate


MRI_METHODS = ["cg_sense", "l1_wavelet", "tv", "tgv", "pnp_nlm", "dlmri"]
CT_METHODS = ["sirt", "tv_ct", "tgv", "pnp_nlm"]


def _run(name, y, op, x0):
    return recon.run(name, y, op, x0=x0, iterations=1, **SETTINGS.get(name, {}))


@pytest.mark.parametrize("name", MRI_METHODS)
def test_an_mri_start_is_taken_in_the_images_dtype(name):
    """dlmri failed on a real start ("shape '[-1, 72]' is invalid for input of size …") and a
    complex128 one ("expected m1 and m2 to have the same dtype"); cg_sense, l1_wavelet, tv and
    pnp_nlm returned the start's precision instead of the data's."""
    x, y, op = mri_problem(b=1)
    for x0 in (x.abs(), x.to(torch.complex128)):
        out = _run(name, y, op, x0)
        assert out.dtype == torch.complex64 and torch.isfinite(out).all(), (name, x0.dtype)


@pytest.mark.parametrize(("name", "modality"), [(m, "mri") for m in MRI_METHODS]
                         + [(m, "ct") for m in CT_METHODS])
def test_a_start_holding_nan_is_refused_naming_x0(name, modality):
    """sirt returned an all-NaN image; pnp_nlm blamed "an x0 of zeros" or the coil maps."""
    x, y, op = mri_problem(b=1) if modality == "mri" else ct_problem(b=1)
    x0 = x.clone()
    x0.view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match=r": x0 holds 1 NaN or Inf values"):
        _run(name, y, op, x0)


def test_a_complex_start_for_a_real_image_is_refused():
    x, y, op = ct_problem(b=1)
    with pytest.raises(TypeError, match=r"sirt: x0 is complex .* the image of y is real"):
        _run("sirt", y, op, x.to(torch.complex64))


def test_cg_sense_calls_back_with_the_relative_residual_as_a_float():
    """It passed torch.sqrt(rr): a (3, 1, 1) tensor for 3 slices (float(r) raised), absolute
    where the other methods pass relative values."""
    x, y, op = mri_problem(b=3)
    seen = []
    recon.run("cg_sense", y, op, iterations=4, callback=lambda it, img, r: seen.append((img, r)))
    assert len(seen) == 4 and all(type(r) is float for _, r in seen)
    assert all(img.shape == x.shape for img, _ in seen)
    assert 0 < seen[-1][1] < seen[0][1] < 1  # relative to ||A^H y||, and falling
