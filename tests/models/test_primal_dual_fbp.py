"""LearnedPrimalDual with ``fbp_start``: an untrained model returns the FBP, the output scales
exactly with the data whatever the view count, the old zero-start path is unchanged."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import HasFBP
from mrirecon.data.simulate_ct import ct_simulation_geometry
from mrirecon.models import build_model
from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual
from mrirecon.models.unrolled.staged_ct import robust_scale
from mrirecon.operators.generic import Identity
from tests.models.problems import ct_phantom_mu as _phantom, sparse_ct_data as _data

N = 32


def _problem(factor: int = 2):
    full = ct_simulation_geometry("parallel", N, 48, None, 60.0)
    return _data(_phantom(N, 0), full, factor, 1, torch.float64)


def _perturbed(**kw) -> LearnedPrimalDual:
    """A small fbp_start model whose primal CNNs are no longer the zero update."""
    model = LearnedPrimalDual(iterations=3, features=6, fbp_start=True, init_seed=0, **kw).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for it in model.iterations:
            it.primal[-1].weight.copy_(0.05 * torch.randn(it.primal[-1].weight.shape, generator=g))
    return model


def test_untrained_fbp_start_model_returns_the_hann_fbp():
    y, op = _problem()
    model = LearnedPrimalDual(iterations=2, features=4, fbp_start=True, init_seed=0).double()
    with torch.no_grad():
        x = model(y, op)
    fbp = op.capability(HasFBP).fbp(y, filter="hann")
    # x = s * FBP(y / s): the FBP is linear, so only float64 rounding separates them
    eps = torch.finfo(torch.float64).eps
    assert torch.linalg.norm(x - fbp) <= 100 * eps * torch.linalg.norm(fbp)


@pytest.mark.parametrize("factor", [1, 2])  # 48 and 24 views: the scale follows the image
def test_output_scales_exactly_with_the_data(factor):
    y, op = _problem(factor)
    model = _perturbed().eval()
    with torch.no_grad():
        x = model(y, op)
        assert not torch.allclose(x, op.capability(HasFBP).fbp(y, filter="hann"))  # not vacuous
        for c in (1e3, 1e-3):
            # the network sees y / s with s the FBP's 99th percentile, proportional to the data
            assert torch.linalg.norm(model(c * y, op) - c * x) <= 1e-10 * torch.linalg.norm(c * x)


def test_scale_is_the_fbp_percentile_not_max_aty():
    y, op = _problem()
    model = _perturbed()
    _, aty, s = model.prepare(y, op)
    fbp = op.capability(HasFBP).fbp(y, filter="hann")
    torch.testing.assert_close(s, robust_scale(fbp), rtol=0, atol=0)
    torch.testing.assert_close(aty, op.H(y) / s)


def test_zero_start_path_is_unchanged_and_fbp_start_needs_an_fbp():
    y, op = _problem()
    old = LearnedPrimalDual(iterations=2, features=4, init_seed=0).double()
    new = LearnedPrimalDual(iterations=2, features=4, init_seed=0, fbp_start=True).double()
    assert list(old.state_dict()) == list(new.state_dict())  # same keys: shipped weights load
    f, h = old.initial_state(y, op, op.H(y))
    assert not f.any() and not h.any()
    assert old.iterations[0].primal[-1].weight.abs().sum() > 0  # default init kept
    assert isinstance(build_model("primal_dual", iterations=2, features=4, fbp_start=True),
                      LearnedPrimalDual)
    with pytest.raises(TypeError, match="fbp_start"):
        new(torch.ones(1, 8, 8, dtype=torch.float64), Identity((8, 8)))
    with pytest.raises(ValueError, match="LearnedPrimalDual.*batch"):  # checked before the FBP
        new(y[0, 0], op)


def test_shipped_lodopab_card_states_range_failures_and_recipe():
    from mrirecon.pipeline.model_range import range_warnings
    from mrirecon.training.weights import available_weights, load_pretrained

    if "primal_dual_lodopab" not in available_weights():
        pytest.skip("primal_dual_lodopab weights are not shipped")
    model = load_pretrained("primal_dual_lodopab")
    card = model.model_card
    assert card["model"]["name"] == "primal_dual" and card["model"]["params"]["fbp_start"] is True
    assert model.fbp_start and card["known_failures"]
    t = card["training"]
    # a continued run (--init) counts the runs it continued
    assert t.get("total_wall_time_s", t["wall_time_s"]) <= 2 * 3600
    assert t.get("first_run", t)["seed"] == 0 and "mrirecon train primal_dual_ct" in t["command"]
    assert t["steps"] >= t["best_step"] > 0
    # the validation split's best state is the shipped one, and it beats the FBP it starts from
    assert all(t["validation_psnr_db"][v] > t["validation_psnr_db_hann_fbp"][v] + 3 for v in (30, 60))
    assert range_warnings(card, matrix=(362, 362), views=31) == []
    msgs = range_warnings(card, matrix=(128, 128), views=180)
    assert len(msgs) == 2 and "matrix 128 x 128" in msgs[0] and "views 180" in msgs[1]


def test_forward_computes_the_fbp_once_and_matches_the_recomputed_start(monkeypatch):
    y, op = _problem()
    model = _perturbed().eval()
    fbp_cls = type(op.capability(HasFBP))
    calls, orig = [], fbp_cls.fbp

    def counting(self, *a, **kw):
        calls.append(1)
        return orig(self, *a, **kw)

    monkeypatch.setattr(fbp_cls, "fbp", counting)
    with torch.no_grad():
        x = model(y, op)
        assert len(calls) == 1  # the scale and the primal start share one FBP
        # the older path: scale from FBP(y), start from FBP(y / s); the FBP is linear
        ys, aty, s = model.prepare(y, op)
        state = model.run_steps(model.initial_state(ys, op, aty), ys, op, aty)
        slow = model.unscale(model.output(state), s)
    eps = torch.finfo(torch.float64).eps
    assert torch.linalg.norm(x - slow) <= 1e3 * eps * torch.linalg.norm(slow)


def test_each_iteration_feeds_a_f1_and_a_h_h0_to_its_networks():
    """Adler & Oektem's wiring: the dual network sees ``[h, A f[1], y]``, the primal one
    ``[f, A^H h[0]]``; recorded through the helper that applies them (returning zero updates)."""
    from unittest import mock

    from mrirecon.models.unrolled.primal_dual import PrimalDualIteration
    from tests.models.problems import ct_problem

    _, y, op = ct_problem(dtype=torch.float64)
    it = PrimalDualIteration(n_primal=3, n_dual=2, features=4).double()
    g = torch.Generator().manual_seed(0)
    f = torch.randn((y.shape[0], 3) + tuple(op.H(y).shape[1:]), generator=g, dtype=torch.float64)
    h = torch.randn((y.shape[0], 2) + tuple(y.shape[1:]), generator=g, dtype=torch.float64)
    seen = {}

    def record(net, inp):
        name = "dual" if net is it.dual else "primal"
        seen[name] = inp
        return torch.zeros_like(inp[:, : (2 if name == "dual" else 3)])

    with mock.patch("mrirecon.models.unrolled.primal_dual.apply_over_last_two", record):
        f2, h2 = it(f, h, y, op)
    assert torch.equal(seen["dual"][:, :2], h) and torch.equal(seen["dual"][:, 3], y)
    assert torch.equal(seen["dual"][:, 2], op(f[:, 1]))
    assert torch.equal(seen["primal"][:, :3], f) and torch.equal(seen["primal"][:, 3], op.H(h[:, 0]))
    assert torch.equal(f2, f) and torch.equal(h2, h)
