"""The data checks every model's entry point shares (``mrirecon.models.input_checks``): models
made by ``build_model`` (a notebook's trained model, weights without a card) refuse what
``load_pretrained``'s guard and ``recon.run`` refuse, with their words: k-space undersampled with
another mask than the operator's, real or wider-precision k-space, NaN values, NumPy arrays,
data narrower than the operator. StagedCTNet keeps extra leading axes as the other models do."""

from __future__ import annotations

import re

import pytest
import torch

from mrirecon import recon
from mrirecon.models import CascadeNet, build_model
from mrirecon.models.input_checks import ModalityGuard
from mrirecon.operators import sense
from tests.models.problems import coil_maps, column_mask, ct_problem, mri_problem, phantom

H, W = 32, 32
TINY = {
    "modl": {"iterations": 1, "layers": 2, "features": 4, "cg_iterations": 2},
    "cascade": {"iterations": 1, "layers": 2, "features": 4},
    "vn": {"iterations": 1, "num_filters": 4, "kernel_size": 3},
    "admm_csnet": {"iterations": 1},
    "ista_net_plus": {"iterations": 1, "features": 4},
    "primal_dual": {"iterations": 1, "features": 4},
    "varnet": {"iterations": 1, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 2},
}


def _mri(mask: torch.Tensor, b: int = 2):
    op = sense(coil_maps(4, H, W), mask)
    return op, op(phantom(b, H, W))


def _model(name: str):
    return build_model(name, **TINY[name], init_seed=0).eval()


@pytest.mark.parametrize("name", ["modl", "varnet", "ista_net_plus"])
def test_built_models_refuse_k_space_of_another_mask_in_recon_runs_words(name):
    """An operator built from the fftshifted mask, or another seed's, ran without a word
    (modl_brain_sim 6.8 / 18 dB instead of 25); now the model refuses it as recon.run does, and
    still runs y undersampled by its own mask, by a subset of it (SSDU / ZS-SSL splits: y and op
    of the subset), and fully sampled y undersampled by the operator."""
    mask = column_mask(W, acs=6, seed=2)
    op, y = _mri(mask)
    model = _model(name)
    bad_ops = {"fftshifted": sense(coil_maps(4, H, W), torch.fft.fftshift(mask)),
               "another seed": sense(coil_maps(4, H, W), column_mask(W, acs=6, seed=7))}
    for why, bad in bad_ops.items():
        with pytest.raises(ValueError) as refused:
            recon.run("zero_filled", y[0], bad)
        ours = str(refused.value).split(": ", 1)[1]
        with torch.no_grad(), pytest.raises(ValueError) as err:
            model(y, bad)
        label = type(model).__name__
        assert ours.startswith("y does not fit the operator's mask"), ours
        # recon.run's message for one slice, with the model's name and the sample refused
        assert re.sub(r" \(sample \d+ of \d+\)", "", str(err.value)) == f"{label}: {ours}", why
    subset = mask.clone()
    subset[::3] = False
    subset[W // 2 - 3: W // 2 + 3] = True  # keep the centre (VarNet's maps need it)
    assert subset.sum() < mask.sum()
    sub_op = sense(coil_maps(4, H, W), subset)
    full_op = sense(coil_maps(4, H, W), torch.ones(W, dtype=torch.bool))
    with torch.no_grad():
        for data, operator in ((y, op), (y * subset, sub_op), (full_op(phantom(2, H, W)), op)):
            out = model(data, operator)
            assert out.shape == (2, H, W) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_built_models_refuse_what_the_guard_of_loaded_weights_refuses(name):
    """Real k-space gave a plausible complex image (MoDL 17 dB); complex128 data, NaN in one
    sample, NumPy arrays and narrower data failed deep inside (raw dtype and size errors, an
    "index -9223372036854775808 is out of bounds", VarNet blaming the coil maps) or returned NaN
    without a word. Each is now refused naming the model and what to change."""
    mask = column_mask(W, acs=6, seed=2)
    op, y = _mri(mask)
    model = _model(name)
    label = type(model).__name__
    nan = y.clone()
    nan[1, 0, 3, W // 2] = float("nan")
    cases = [
        (y.real.contiguous(), TypeError, rf"{label}: the data y \(2, 4, 32, 32\) are real "
                                         r"\(torch.float32\), but the MRI operator"),
        (y.to(torch.complex128), TypeError, rf"{label}: the data are torch.complex128 but the "
                                            r"weights are torch.float32; convert the data "
                                            r"\(y.to\(torch.complex64\)\)"),
        (nan, ValueError, rf"{label}: the data y \(2, 4, 32, 32\) hold 1 NaN or Inf values"),
        (y.numpy(), TypeError, rf"{label}: the data y must be a torch.Tensor, got numpy.ndarray "
                               r"\(2, 4, 32, 32\); convert it with torch.from_numpy\(y\)"),
        (y[..., :30].contiguous(), ValueError, rf"{label}: the data y for SenseOperator must have "
                                               r"shape \(\.\.\., 4, 32, 32\), got \(2, 4, 32, 30\)"),
    ]
    with torch.no_grad():
        for data, kind, message in cases:
            with pytest.raises(kind, match=message):
                model(data, op)
        with pytest.raises(TypeError, match=rf"{label}: the operator SenseOperator holds maps as "
                                            r"torch.complex128 but the weights are torch.float32"):
            model(y, sense(coil_maps(4, H, W, dtype=torch.complex128), mask))
        assert model(y, op).dtype == torch.complex64


def test_loaded_and_built_models_say_the_same():
    """The guard of load_pretrained and the built model's entry point share one function: the
    messages differ only in the label (the weights file or the model's class)."""
    from mrirecon.training.weights import load_pretrained, model_card

    card = model_card("modl_brain_sim")["model"]
    loaded = load_pretrained("modl_brain_sim")
    built = build_model(card["name"], **card["params"]).eval()
    mask = column_mask(W, acs=6, seed=2)
    op, y = _mri(mask, b=1)
    nan = y.clone()
    nan[0, 1, 2, 3] = float("inf")
    shifted = sense(coil_maps(4, H, W), torch.fft.fftshift(mask))
    for data, operator in ((nan, op), (y.to(torch.complex128), op), (y, sense(coil_maps(4, H, W, dtype=torch.complex128), mask)),
                           (y, shifted)):
        messages = []
        for model in (loaded, built):
            with torch.no_grad(), pytest.raises((TypeError, ValueError)) as err:
                model(data, operator)
            messages.append(str(err.value))
        assert messages[0].replace("modl_brain_sim.pt: ", "MoDL: ", 1) == messages[1]


def test_staged_ct_net_keeps_extra_leading_axes():
    """y of shape (1, 1, views, detectors) failed in the U-Net's conv2d ("Expected 3D
    (unbatched) or 4D (batched) input ... [1, 1, 1, 16, 16]"); the primal-dual and MRI models
    keep such axes. Each slice's image is the one of that slice alone, bit for bit."""
    from mrirecon.models.unrolled.staged_ct import StagedCTNet

    _, y, op = ct_problem(b=2)
    model = StagedCTNet(iterations=1, chans=4, num_pools=2, lam=0.1, cg_iterations=3, init_seed=0).eval()
    with torch.no_grad():
        flat = model(y, op)
        assert flat.shape == (2, 16, 16)
        assert torch.equal(model(y[None], op), flat[None])
        assert torch.equal(model(y.reshape(2, 1, *y.shape[-2:]), op), flat[:, None])
        with pytest.raises(TypeError, match=r"StagedCTNet: the data y \(2, 12, \d+\) are complex"):
            model(y.to(torch.complex64), op)


@pytest.mark.parametrize("fbp_start", [False, True])
def test_primal_dual_scales_each_slice_of_a_stack_alone(fbp_start):
    """Fails if a learned primal-dual net scales a stack ``(1, 2, views, detectors)`` with one
    scale over both slices (a faint slice beside a bright one went 20.6 -> 12.6 dB, a blank one
    came out non-zero) instead of each slice as alone, as StagedCTNet does; or if, FBP-started,
    it takes an unbatched ``(views, detectors)`` sinogram's rows for samples (a raw broadcast
    error)."""
    from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual

    _, y, op = ct_problem(b=2)
    y = torch.stack([y[0], 0.05 * y[1]])
    model = LearnedPrimalDual(iterations=2, n_primal=2, n_dual=1, features=4,
                              fbp_start=fbp_start, init_seed=0).eval()
    with torch.no_grad():
        alone = torch.cat([model(y[k:k + 1], op) for k in range(2)])
        stacked = model(y[None], op)[0]
        assert torch.allclose(stacked, alone, rtol=1e-5, atol=0)
        assert torch.equal(model(torch.stack([y[0], 0 * y[1]])[None], op)[0, 1],
                           torch.zeros_like(alone[1]))
        with pytest.raises(ValueError, match=r"LearnedPrimalDual: data y must have a leading "
                                             r"batch axis and at least 3 dims"):
            model(y[0], op)


def test_guard_without_modality_still_checks_reconstruction_calls():
    """Fails if input_checks.py ModalityGuard: ``reconstruction = modality is not None or
    isinstance(op, LinearOperator)`` -> ``modality is not None``. Weights of no modality (a
    prior) called as ``model(y, op)`` are still judged under the weights file's name."""
    _, y, op = mri_problem(b=1)
    model = CascadeNet(iterations=1, layers=3, features=4, init_seed=0)
    guard = ModalityGuard("prior.pt", None)
    bad = y.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^prior\.pt: the data y .* NaN or Inf"):
        guard(model, (bad, op))
