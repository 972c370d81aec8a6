"""StagedCTNet: scale equivariance, view-count transfer, patch-to-image transfer, capability check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrirecon.core import HasFBP
from mrirecon.operators.generic import Identity
from mrirecon.data.simulate_ct import ct_simulation_geometry
from mrirecon.models import build_model
from mrirecon.models.unrolled.staged_ct import PlainUNet, StagedCTNet, robust_scale
from tests.models.problems import ct_phantom_mu as _phantom, sparse_ct_data as _data


def _small_model(**kw) -> StagedCTNet:
    return StagedCTNet(iterations=2, chans=4, num_pools=2, lam=[0.1, 0.05], lam0=0.01, cg_iterations=5,
                       init_seed=0, **kw).double()


def test_output_scales_with_the_data_exactly():
    full = ct_simulation_geometry("parallel", 32, 48, None, 60.0)
    y, op = _data(_phantom(32, 0), full, 2, 1, torch.float64)
    model = _small_model()
    with torch.no_grad():
        x = model(y, op)
        for c in (1e3, 1e-3):
            xc = model(c * y, op)
            # every step is positively homogeneous (the network sees x / s, s ~ data): only
            # float64 rounding, amplified by 5 CG iterations per solve, separates the two
            assert torch.linalg.norm(xc - c * x) <= 1e-9 * torch.linalg.norm(c * x)
    assert x.shape == (1, 32, 32) and x.dtype == torch.float64


def test_robust_scale_is_a_positive_per_sample_quantile():
    x = torch.zeros(2, 10, 10)
    x[0, :5] = 2.0
    x[1, 0, 0] = -3.0  # quantile 0 -> falls back to max |x|
    s = robust_scale(x)
    assert s.shape == (2, 1, 1)
    assert float(s[0]) == 2.0 and float(s[1]) == 3.0
    # the default, which the shipped staged and primal-dual CT weights were trained with: the
    # 99th percentile of each sample
    r = torch.arange(1, 1001, dtype=torch.float32).reshape(2, 10, 50)
    np.testing.assert_allclose(robust_scale(r).flatten().numpy(),
                               torch.quantile(r.flatten(1), 0.99, dim=1).numpy(), rtol=1e-6)


def test_unet_is_translation_equivariant_so_patch_training_transfers():
    net = PlainUNet(chans=2, num_pools=2).double()
    torch.manual_seed(0)
    x = torch.rand(1, 1, 128, 128, dtype=torch.float64)
    with torch.no_grad():
        whole = net(x)
        patch = net(x[..., 16:112, 16:112])  # offset a multiple of 2**num_pools
    # no normalisation layer: away from the patch border (the receptive field, ~25 px here)
    # the patch's output is the whole image's
    torch.testing.assert_close(patch[..., 32:64, 32:64], whole[..., 48:80, 48:80], rtol=1e-10, atol=1e-12)
    # and the border region does differ (the check above is not vacuous)
    assert not torch.allclose(patch[..., :4, :4], whole[..., 16:20, 16:20])


def _dihedral(x: torch.Tensor, t: int) -> torch.Tensor:
    """The 8 flips / transposes of the last two axes, written out independently of the helper."""
    x = x.transpose(-1, -2) if t & 4 else x
    return torch.rot90(x, t & 3, dims=(-2, -1))


def test_self_ensemble_is_exactly_dihedral_equivariant_and_keeps_equivariant_maps():
    from mrirecon.models.common import dihedral_mean

    net = PlainUNet(chans=2, num_pools=2).double()  # not equivariant: learned, asymmetric kernels
    torch.manual_seed(0)
    for shape in ((1, 1, 32, 32), (2, 1, 24, 40)):  # square and non-square (transposes change it)
        x = torch.rand(*shape, dtype=torch.float64)
        with torch.no_grad():
            g = dihedral_mean(net, x)
            assert g.shape == x.shape
            # the plain net is not equivariant (so the next checks are not vacuous) ...
            assert not torch.allclose(net(_dihedral(x, 1)), _dihedral(net(x), 1), atol=1e-6)
            # ... the ensemble is, for all 8 transforms, up to float64 rounding of 8 sums
            for t in range(8):
                torch.testing.assert_close(dihedral_mean(net, _dihedral(x, t)), _dihedral(g, t),
                                           rtol=1e-12, atol=1e-13)
    # a map that already commutes with the group is left as it is, extra arguments passed on
    x = torch.randn(1, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(dihedral_mean(lambda v, c: c * v ** 3, x, 2.0), 2.0 * x ** 3)


@pytest.mark.parametrize("ensemble", [False, True])
def test_self_ensembled_model_still_scales_with_the_data_and_differs_from_the_plain_one(ensemble):
    full = ct_simulation_geometry("parallel", 32, 48, None, 60.0)
    y, op = _data(_phantom(32, 0), full, 2, 1, torch.float64)
    model = _small_model(ensemble=ensemble)
    with torch.no_grad():
        x = model(y, op)
        # exact in exact arithmetic; float64 rounding (eps 2.2e-16) of the FBP, U-Net and CG is
        # bounded relative to the image, not per pixel (a near-zero pixel carries the image's
        # absolute error: rtol alone failed on one pixel, 1.9e-9, on an Intel Xeon), and 1e-9
        # of the image's norm is orders above it; an unscaled network misses by O(1). The
        # norm-wise form of test_output_scales_with_the_data_exactly.
        xc = model(1e3 * y, op)
        assert torch.linalg.norm(xc - 1e3 * x) <= 1e-9 * torch.linalg.norm(1e3 * x)
        model.ensemble = not ensemble
        assert not torch.allclose(model(y, op), x, rtol=1e-4)


def test_each_stage_solves_its_data_consistency_system():
    """Stage ``k`` returns the solution of ``(A^H A + lam_k I) x = A^H y + lam_k z`` with ``z =
    x_{k-1} + s U_k(x_{k-1} / s)`` the network's corrected image (``x_{-1}`` the FBP pulled to
    the data by ``lam0``, which solves its own system with ``z`` = the FBP); a stage whose lam
    is ``None`` returns ``z`` itself. CG on a unit-norm projector: condition number at most
    ``kappa = (||A||^2 + lam) / lam``, residual ``<= 2 sqrt(kappa) q^k ||r_0||`` with ``q =
    (sqrt(kappa) - 1) / (sqrt(kappa) + 1)`` after ``k`` iterations, down to float64 rounding
    (``eps * kappa`` times sqrt(n), n = 32^2 unknowns)."""
    full = ct_simulation_geometry("parallel", 32, 48, None, 60.0)
    y, op = _data(_phantom(32, 0), full, 2, 1, torch.float64)
    eps, n, iters = torch.finfo(torch.float64).eps, 32 * 32, 30
    norm2 = float(op.operator_norm(torch.zeros(1, 32, 32, dtype=torch.float64), iterations=200,
                                   tolerance=1e-12)) ** 2

    def assert_solves(x, z, lam):
        kappa = (1.01 * norm2 + lam) / lam  # 1 % above the power-iteration estimate of ||A||^2
        q = (kappa**0.5 - 1) / (kappa**0.5 + 1)
        b = aty + lam * z
        r0 = op.gram(z) + lam * z - b  # CG is warm started at z
        bound = 2 * kappa**0.5 * q**iters * float(r0.norm()) + 10 * n**0.5 * eps * kappa * float(b.norm())
        assert float((op.gram(x) + lam * x - b).norm()) <= bound
        # and z itself is far from solving it (the check is not vacuous)
        assert float(r0.norm()) > 1e3 * bound

    model = StagedCTNet(iterations=2, chans=4, num_pools=2, lam=[1.0, 0.5], lam0=0.5, cg_iterations=iters,
                        init_seed=0).double()
    with torch.no_grad():
        aty = op.H(y)
        fbp = op.capability(HasFBP).fbp(y, filter="hann")
        x0, s = model.initial(y, op, aty)
        assert_solves(x0, fbp, model.lam0)
        torch.testing.assert_close(model(y, op, iterations=0), x0, rtol=0, atol=0)
        for k in range(2):
            prev = model(y, op, iterations=k)
            z = prev + s * model.nets[k]((prev / s).unsqueeze(1)).squeeze(1)
            assert_solves(model(y, op, iterations=k + 1), z, model.lam[k])
        model.lam = [1.0, None]  # no data consistency in the second stage: its output is z
        prev = model(y, op, iterations=1)
        z = prev + s * model.nets[1]((prev / s).unsqueeze(1)).squeeze(1)
        torch.testing.assert_close(model(y, op), z, rtol=0, atol=0)


def test_needs_an_operator_with_fbp_and_real_data():
    model = _small_model()
    with pytest.raises(TypeError, match="StagedCTNet"):
        model(torch.ones(1, 8, 8, dtype=torch.float64), Identity((8, 8)))
    with pytest.raises(ValueError, match="lam"):
        StagedCTNet(iterations=2, lam=[0.1])
    with pytest.raises(ValueError, match="lam"):
        StagedCTNet(iterations=1, lam=-1.0)


def test_registry_builds_it_with_per_stage_lam():
    m = build_model("staged_ct", iterations=2, chans=4, num_pools=1, lam=[0.1, None], init_seed=0)
    assert isinstance(m, StagedCTNet) and m.lam == [0.1, None] and len(m.nets) == 2


def _shipped(name: str = "staged_ct_lodopab"):
    from mrirecon.training.weights import available_weights, load_pretrained

    if name not in available_weights():
        pytest.skip(f"{name} weights are not shipped")
    return load_pretrained(name)


#: the CT models trained at the LoDoPaB geometry, both scaled by their FBP's 99th percentile
LODOPAB_MODELS = ("staged_ct_lodopab", "primal_dual_lodopab")


@pytest.mark.parametrize("name", LODOPAB_MODELS)
def test_shipped_model_gives_the_same_image_at_30_and_60_views_and_any_data_scale(name):
    from mrirecon.io.lodopab import IMAGE_SHAPE, NUM_ANGLES, NUM_DETECTORS

    model = _shipped(name)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    n = IMAGE_SHAPE[0]
    full = ct_simulation_geometry("parallel", n, NUM_ANGLES, NUM_DETECTORS, 260.0)
    mu = _phantom(n, 7)  # a phantom the model's training draws never used (seed 7, not [0, ...])
    ref = torch.from_numpy(mu).float()
    with torch.inference_mode():
        y30, op30 = _data(mu, full, 33, 1)
        y60, op60 = _data(mu, full, 16, 1)
        x30, x60 = model(y30, op30)[0], model(y60, op60)[0]
        x30k = model(1e3 * y30, op30)[0]
        fbp30 = op30.capability(HasFBP).fbp(y30, filter="hann")[0]
    # scale: float32 throughout, so agreement to a few float32 eps times the CG / network depth
    assert torch.linalg.norm(x30k / 1e3 - x30) <= 1e-4 * torch.linalg.norm(x30)
    # no mean intensity bias at either view count (the 5 % bound; p99: the test below)
    for x in (x30, x60):
        assert abs(float(x.clamp_min(0).mean() / ref.mean()) - 1) < 0.05
    # 2x the views: the same image within the 30-view image's own error, and no worse
    err30, err60 = torch.linalg.norm(x30 - ref), torch.linalg.norm(x60 - ref)
    assert err60 <= err30 * 1.05
    assert torch.linalg.norm(x60 - x30) <= 1.5 * err30
    # and the learned model beats the FBP it starts from by a wide margin
    assert err30 < 0.5 * torch.linalg.norm(fbp30 - ref)


#: models whose 99th percentile misses the 5 % bound on this phantom (primal_dual_lodopab: 1.053 at
#: 60 views; its card's known_failures)
KNOWN_P99_MISSES = {"primal_dual_lodopab"}


@pytest.mark.parametrize("name", LODOPAB_MODELS)
def test_shipped_model_keeps_the_99th_percentile_within_5_percent(request, name):
    from mrirecon.io.lodopab import IMAGE_SHAPE, NUM_ANGLES, NUM_DETECTORS

    if name in KNOWN_P99_MISSES:
        request.applymarker(pytest.mark.xfail(strict=True, reason="known p99 miss, see the card"))
    model = _shipped(name)
    n = IMAGE_SHAPE[0]
    full = ct_simulation_geometry("parallel", n, NUM_ANGLES, NUM_DETECTORS, 260.0)
    mu = _phantom(n, 7)
    ref = torch.from_numpy(mu).float()
    for factor in (33, 16):
        y, op = _data(mu, full, factor, 1)
        with torch.inference_mode():
            x = model(y, op)[0].clamp_min(0)
        assert abs(float(torch.quantile(x.flatten(), 0.99) / torch.quantile(ref.flatten(), 0.99)) - 1) < 0.05


def test_shipped_card_states_range_failures_and_recipe():
    from mrirecon.pipeline.model_range import range_warnings

    card = _shipped().model_card
    assert card["model"]["name"] == "staged_ct" and card["known_failures"]
    t = card["training"]
    # two runs: from scratch (seed 0), then continued from it (--init) on other data (seed 1)
    first = t["first_run"]
    assert first["seed"] == 0 and "mrirecon train staged_ct" in first["command"]
    assert t["seed"] == 1 and "--init mrirecon/weights/staged_ct_lodopab.pt" in t["command"]
    assert all(s > 0 for s in t["steps_per_stage"] + first["steps_per_stage"])
    # `make weights` rebuilds both runs with samples prefetched on a second core within the
    # issue's 2 h on 2 CPU cores
    from tests.helpers import ROOT

    makefile = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    runs = [line for line in makefile.splitlines() if "train staged_ct" in line]
    assert len(runs) == 2 and all("--prefetch" in r for r in runs) and "--init" in runs[1]
    assert sum(float(r.split("--budget-s")[1].split()[0]) for r in runs) <= 2 * 3600
    # the self-ensemble is on, chosen on validation by the trainer's rule, and a pipeline can
    # turn it off (`--set reconstruct.params.ensemble=false`)
    from mrirecon.bench.methods import load_model

    assert card["model"]["params"]["ensemble"] is True
    scores = t["history"][-1]["ensemble_scores"]
    assert np.mean(list(scores["true"].values())) > np.mean(list(scores["false"].values()))
    assert load_model("staged_ct", {}, "staged_ct_lodopab").ensemble is True
    assert load_model("staged_ct", {"ensemble": False}, "staged_ct_lodopab").ensemble is False
    assert range_warnings(card, matrix=(362, 362), views=31) == []
    assert range_warnings(card, matrix=(362, 362), views=63) == []
    msgs = range_warnings(card, matrix=(128, 128), views=180)
    assert len(msgs) == 2 and "matrix 128 x 128" in msgs[0] and "views 180" in msgs[1]


@pytest.mark.parametrize("shape", [(18, 28), (28, 18)])
def test_plain_unet_pads_each_axis_to_its_own_multiple(shape):
    """Fails if staged_ct.py ``PlainUNet.forward``: the row padding computed from the width.
    Non-square images (a CT geometry of H != W, or patches) must keep their shape, and a zero
    X"""
    net = PlainUNet(chans=4, num_pools=2).eval()
    x = torch.randn(1, 1, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
