"""Coil maps estimated jointly by a network on radial data (learned_maps around MoDL / gram_varnet)."""

import pytest
import torch

from mrirecon.models.registry import build_model
from mrirecon.models.unrolled.learned_maps import LearnedMapsModel, NonCartesianSensitivityModel
from mrirecon.operators import nufft_sense
from tests.helpers import check_adjoint
from tests.models.problems import radial_problem

N, COILS = 32, 4
EPS32 = torch.finfo(torch.float32).eps
INNER = {
    "modl": dict(iterations=2, layers=3, features=8, cg_iterations=4, batchnorm=False),
    "gram_varnet": dict(iterations=2, chans=4, pools=2),
}


def _problem(batch=2):
    target, true_maps, traj = radial_problem(N, COILS, 24, batch)
    y = nufft_sense(true_maps, traj)(target)
    # the operator a model with its own maps gets (the pipeline's): uniform maps, same trajectory
    op = nufft_sense(torch.full((batch, COILS, N, N), COILS**-0.5, dtype=torch.complex64), traj)
    return y, op, target


def _model(inner="modl", seed=0, gate=0.5):
    """Small model; ``gate`` opens the residual NormUnet (0 at initialisation) so that the tests
    exercise the network, not only the low-resolution start."""
    model = build_model("learned_maps", model=inner, model_params=INNER[inner], sens_chans=4,
                        sens_pools=2, calib_width=12, init_seed=seed)
    with torch.no_grad():
        model.sensitivity.gate.fill_(gate)
    return model


def _sensitivity():
    net = NonCartesianSensitivityModel(chans=4, pools=2, calib_width=12)
    with torch.no_grad():
        net.gate.fill_(0.5)
    return net


def test_maps_have_unit_root_sum_of_squares():
    y, op, _ = _problem()
    maps = _sensitivity()(y, op)
    assert maps.shape == (2, COILS, N, N) and maps.dtype == torch.complex64
    ssq = (maps.detach().abs() ** 2).sum(dim=1)
    # each |S_c|^2 is rounded once, then C of them are summed
    assert float((ssq - 1).abs().max()) <= 4 * COILS * EPS32


def test_maps_are_invariant_to_the_data_scale():
    y, op, _ = _problem()
    net = _sensitivity()
    with torch.no_grad():
        a, b = net(y, op), net(0.37 * y, op)
    # NormUnet normalises away the scale; what remains is float32 rounding through the network
    assert float((a - b).abs().max()) <= 1e3 * EPS32


def test_operator_with_learned_maps_passes_the_dot_test():
    y, op, _ = _problem()
    with torch.no_grad():
        maps = _model().maps(y, op)
    a = op.with_maps(maps)
    x = torch.randn(2, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    check_adjoint(a, x, tol=1e-5)  # the single-precision bar for nufft_sense


@pytest.mark.parametrize("inner", sorted(INNER))
def test_gradients_reach_the_sensitivity_network(inner):
    y, op, target = _problem()
    model = _model(inner)  # gate 0.5: at 0 (the start) only the gate gets a gradient
    loss = (model(y, op).abs() - target.abs()).abs().mean()
    loss.backward()
    sens = model.sensitivity
    grads = [p.grad for p in sens.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(sens.gate.grad.abs()) > 0
    assert sum(float(p.grad.abs().sum()) for p in sens.norm_unet.parameters()) > 0


@pytest.mark.parametrize("inner", sorted(INNER))
def test_model_is_scale_equivariant(inner):
    """model(c y, op) = c model(y, op): the maps are scale invariant and the inner model
    normalises by max |A^H y|. c = 4 is a power of two, so every scaled intermediate is the
    exact float32 multiple and only rounding of the normalisation remains."""
    y, op, _ = _problem()
    model = _model(inner).eval()
    with torch.no_grad():
        a, b = model(y, op), model(4.0 * y, op)
    assert float((b - 4.0 * a).abs().max()) <= 1e2 * EPS32 * 4.0 * float(a.abs().max())


def test_a_short_training_run_lowers_the_loss():
    """Ten Adam steps on one batch lower the loss (here about 5%: with exact maps 10 CG-SENSE
    iterations still leave ~0.47 of streaks in the large zero background, so the floor is high)
    and move the sensitivity network."""
    torch.manual_seed(0)
    y, op, target = _problem()
    model = _model("modl")
    before = [p.detach().clone() for p in model.sensitivity.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = (model(y, op).abs() - target.abs()).abs().mean() / target.abs().mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.97 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.sensitivity.parameters()))


def test_needs_a_nufft_operator_and_skips_the_pipeline_calibration():
    from mrirecon.operators import sense
    from mrirecon.pipeline.stages_mri import needs_maps

    model = _model()
    assert isinstance(model, LearnedMapsModel) and not needs_maps("learned_maps", model)
    maps = torch.ones(1, COILS, N, N, dtype=torch.complex64) / 2
    with pytest.raises(TypeError, match="nufft_sense"):
        model(torch.zeros(1, COILS, N, N, dtype=torch.complex64), sense(maps, torch.ones(N, dtype=torch.bool)))
    with pytest.raises(ValueError, match="not a plain model"):
        build_model("learned_maps", model="varnet")
