"""Plug-and-play and RED: with a linear shrinkage "denoiser" the fixed points are known in closed
form (Tikhonov solutions), which the iterations must reach, on MRI and CT operators."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models import RED, ComplexImageCNN, DnCNN, PnPADMM, PnPHQS, available_models, build_model
from mrirecon.models.registry import MODEL_DEFAULTS
from mrirecon.solvers import cg
from test_models_support import ct_problem, mri_problem

# the closed-form checks test the algorithms, so CT uses the small dense projector here (the
# parallel-beam projector runs the same models in test_models_unrolled.py)
PROBLEMS = {"mri": lambda: mri_problem(dtype=torch.complex128), "ct": lambda: ct_problem(dtype=torch.float64, dense=True)}


def _tikhonov(op, y, a):
    return cg(lambda v: op.gram(v) + a * v, op.H(y), iterations=500, tolerance=1e-14, batch_dims=1)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_pnp_admm_with_shrinkage_denoiser_reaches_tikhonov(modality):
    x, y, op = PROBLEMS[modality]()
    rho, a = 1.0, 0.5
    # prox of (a/2)||x||^2 with penalty rho: v -> rho / (rho + a) v
    model = PnPADMM(lambda v: v * (rho / (rho + a)), iterations=80, rho=rho, cg_iterations=60, normalize=False)
    assert _rel(model(y, op), _tikhonov(op, y, a)) < 1e-6


@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_pnp_hqs_with_zero_denoiser_is_one_tikhonov_solve(modality):
    x, y, op = PROBLEMS[modality]()
    model = PnPHQS(lambda v: torch.zeros_like(v), iterations=1, rho=0.3, cg_iterations=200)
    assert _rel(model(y, op), _tikhonov(op, y, 0.3)) < 1e-8


@pytest.mark.parametrize("method", ["fixed_point", "gradient"])
@pytest.mark.parametrize("modality", ["mri", "ct"])
def test_red_with_linear_denoiser_reaches_its_fixed_point(modality, method):
    x, y, op = PROBLEMS[modality]()
    norm2 = float(op.operator_norm(x, generator=torch.Generator().manual_seed(0))) ** 2
    lam, c = 0.8 * norm2, 0.5  # RED prior lam/2 <x, x - c x> = lam (1 - c) / 2 ||x||^2
    model = RED(lambda v: c * v, iterations=300 if method == "gradient" else 60, lam=lam, method=method,
                step=1.0 / (norm2 + lam), cg_iterations=60, normalize=False)
    assert _rel(model(y, op), _tikhonov(op, y, lam * (1 - c))) < 1e-5


def test_pnp_denoiser_gets_gradients_and_data_scale_is_undone():
    x, y, op = mri_problem()
    torch.manual_seed(0)
    model = PnPADMM(ComplexImageCNN(DnCNN(2, 2, depth=3, features=4)), iterations=2, cg_iterations=3)
    out = model(y, op)
    out.abs().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model(50 * y, op), 50 * out, rtol=1e-3, atol=1e-3 * float(50 * out.abs().max()))


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match="PnPADMM: rho must be positive"):
        PnPADMM(lambda v: v, rho=0.0)
    with pytest.raises(ValueError, match="RED: method must be"):
        RED(lambda v: v, method="admm")


def test_registry_builds_published_defaults_and_overrides():
    assert {"varnet", "vn", "modl", "admm_csnet", "ista_net_plus", "cascade", "primal_dual", "fbpconvnet",
            "pnp_admm", "pnp_hqs", "red"} <= set(available_models())
    varnet = build_model("varnet")
    assert len(varnet.cascades) == 12
    assert varnet.cascades[0].denoiser.unet.chans == 18 and varnet.sensitivity.norm_unet.unet.chans == 8
    vn = build_model("vn")
    assert len(vn.stages) == 10 and tuple(vn.stages[0].filters.shape) == (24, 2, 11, 11)
    assert vn.stages[0].activation.weight.shape == (24, 31)
    modl = build_model("modl", iterations=3)
    assert modl.iterations == 3 and len(modl.denoisers) == 1 and float(modl.dc.lam.detach()) == pytest.approx(0.05)
    assert len(build_model("primal_dual").iterations) == 10 and build_model("Primal-Dual").n_dual == 5
    assert len(build_model("ista-net-plus").phases) == 9 and len(build_model("cascade").cascades) == 5
    pnp = build_model("pnp_admm", denoiser="dncnn")
    assert isinstance(pnp.denoiser, ComplexImageCNN)
    assert MODEL_DEFAULTS["modl"]["lam"] == 0.05
    with pytest.raises(KeyError, match="unknown model 'nope'; available: admm_csnet"):
        build_model("nope")
    with pytest.raises(TypeError, match=r"build_model\('modl'\).*unexpected keyword"):
        build_model("modl", cascades=3)
