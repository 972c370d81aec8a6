"""Gradients through the models' shared mechanics, against finite differences (float64): a tensor
factor ``c`` of ``c * A`` in the implicit CG data consistency, and batch-norm statistics under
gradient checkpointing."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models.blocks import ProximalDC
from tests.models.problems import ct_problem, mri_problem

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps


LAM, TOL = 0.3, 1e-14


def _problem(c: torch.Tensor):
    # a factor per sample (B, 1, 1) needs domain and range of one rank: the CT projector
    return ct_problem(dtype=torch.float64) if c.ndim else mri_problem(dtype=torch.complex128)


def _dc_loss(c: torch.Tensor, implicit: bool) -> torch.Tensor:
    x_true, y, op = _problem(c)
    dc = ProximalDC(LAM, learnable=False, cg_iterations=200, tolerance=TOL, implicit=implicit)
    x = dc(0.3 * x_true, y, c * op)  # c A: the data were made by A, so c matters
    return (x.abs() ** 2).sum()


@pytest.mark.parametrize("factor", ["real", "complex", "per_sample"])
def test_proximal_dc_differentiates_a_tensor_factor_of_the_operator(factor):
    # Was: ScaledOperator kept c as a plain attribute, so the implicit backward did not see it:
    # dL/dc = +67.5 where the unrolled CG and finite differences give -48.2
    g = torch.Generator().manual_seed(0)
    c0 = {"real": torch.tensor(0.8, dtype=torch.float64),
          "complex": torch.tensor(0.8 - 0.3j, dtype=torch.complex128),
          "per_sample": torch.tensor([0.8, 1.3], dtype=torch.float64).reshape(2, 1, 1)}[factor]
    grads = {}
    for implicit in (True, False):
        c = c0.clone().requires_grad_()
        (grads[implicit],) = torch.autograd.grad(_dc_loss(c, implicit), c)
    d = torch.randn(c0.shape, dtype=c0.dtype, generator=g)
    h = 1e-6
    with torch.no_grad():
        fd = float((_dc_loss(c0 + h * d, True) - _dc_loss(c0 - h * d, True)) / (2 * h))
    ad = {k: float((v.conj() * d).real.sum()) for k, v in grads.items()}
    # central differences: h^2 truncation and eps / h rounding, about sqrt(eps) relative
    assert abs(ad[True] - fd) <= 10 * EPS64**0.5 * abs(fd), (ad, fd)
    # both backward passes are exact for the converged solve; CG stops at relative residual
    # TOL, which the unrolled backward amplifies by kappa^2 (test_models_blocks.py)
    x_true, _, op = _problem(c0)
    norm = float(op.operator_norm(x_true, generator=torch.Generator().manual_seed(0))) ** 2
    kappa = (norm * float(c0.abs().max()) ** 2 + LAM) / LAM
    assert abs(ad[True] - ad[False]) <= 10 * kappa**2 * TOL * abs(fd), ad


# ---- gradients w.r.t. coil maps the user optimises (normalize=True, the default) -------------

MAPS_MODELS = {
    "modl": dict(iterations=2, layers=3, features=4, batchnorm=False, cg_iterations=6,
                 implicit=False),
    "vn": dict(iterations=2, num_filters=4, kernel_size=3, num_rbf=7),
    "primal_dual": dict(iterations=2, n_primal=2, n_dual=2, features=4),
    "gram_varnet": dict(iterations=2, chans=4, pools=1),
}


def _maps_problem(n: int = 16, coils: int = 3):
    """Smooth complex128 maps of unit root-sum-of-squares, a column mask, data and weights."""
    from mrirecon.operators import sense

    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n, dtype=torch.float64),
                            torch.linspace(-1, 1, n, dtype=torch.float64), indexing="ij")
    centres = ((-0.7, 0.0), (0.7, 0.3), (0.0, -0.8))[:coils]
    maps = torch.stack([torch.exp(-((xx - a) ** 2 + (yy - b) ** 2) + 1j * (a * xx + b * yy))
                        for a, b in centres]).to(torch.complex128)
    maps = maps / maps.abs().pow(2).sum(0).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::2] = True
    mask[n // 2 - 2:n // 2 + 2] = True
    img = (torch.exp(-3 * (xx**2 + yy**2)) + 0.3 * (xx > 0)).to(torch.complex128)[None]
    y = sense(maps, mask)(img)
    w = torch.rand(1, n, n, dtype=torch.float64, generator=g)
    d = 0.1 * torch.randn(maps.shape, dtype=maps.dtype, generator=g)
    return maps, mask, y, w, d


@pytest.mark.parametrize("name", sorted(MAPS_MODELS))
def test_gradient_wrt_user_coil_maps_is_that_of_the_computed_map(name):
    # Was: the per-sample scale was computed on maps.detach() whenever the maps required a
    # gradient (the learned-maps stop-gradient applied to every model): 13 % (MoDL), 11 % (VN),
    # 98 % (primal-dual) off finite differences; GramVarNet's 1/L ran under no_grad (0.7-2.3 %)
    from mrirecon.models import build_model
    from mrirecon.operators import sense

    model = build_model(name, init_seed=0, **MAPS_MODELS[name]).double().eval()
    assert model.normalize
    maps0, mask, y, w, d = _maps_problem()

    def loss(m):
        x = model(y, sense(m, mask))
        return (w * x.abs() ** 2).sum()

    maps = maps0.clone().requires_grad_()
    value = loss(maps)
    (grad,) = torch.autograd.grad(value, maps)
    ad = float((grad.conj() * d).real.sum())
    h = 1e-6  # small: the networks' ReLU kinks must not fall between the two points
    with torch.no_grad():
        fd = float((loss(maps0 + h * d) - loss(maps0 - h * d)) / (2 * h))
    # central differences: rounding of the loss, eps |L| / h (float64, times the ~1e2 roundings
    # of the networks), and the h^2 truncation, below 1e-6 of the derivative here
    assert abs(ad - fd) <= 1e2 * EPS64 * float(value.detach()) / h + 1e-6 * abs(fd), (ad, fd)


def test_learned_maps_keep_the_scale_stop_gradient():
    """Inside LearnedMapsModel, with data that do not require a gradient, the inner model's scale
    is computed on the detached network-made maps (how modl_radial_learned_maps_sim was
    trained): its weight gradients equal those of that computation written out by hand."""
    from mrirecon.models import build_model
    from mrirecon.models.common import batch_scale, zero_blank
    from mrirecon.operators import nufft_sense
    from tests.models.problems import radial_problem

    n, coils = 16, 3
    target, maps, traj = radial_problem(n, coils, 8)
    y = nufft_sense(maps, traj)(target)
    op = nufft_sense(torch.full((1, coils, n, n), coils**-0.5, dtype=torch.complex64), traj)
    model = build_model("learned_maps", model="modl",
                        model_params=dict(iterations=2, layers=3, features=4, cg_iterations=4,
                                          batchnorm=False),
                        sens_chans=2, sens_pools=1, calib_width=8, init_seed=0)
    with torch.no_grad():
        model.sensitivity.gate.fill_(0.5)
    inner = model.model
    assert inner.maps_scale_stop_gradient

    def by_hand():
        a = op.with_maps(model.sensitivity(y, op))
        aty = a.H(y)
        s = batch_scale(a.with_maps(a.maps.detach()).H(y))
        yn, atyn = y / s.reshape(-1, 1, 1, 1), aty / s
        state = inner.run_steps(inner.initial_state(yn, a, atyn), yn, a, atyn)
        return inner.output(state) * zero_blank(s, aty)

    grads = []
    for f in (lambda: model(y, op), by_hand):
        model.zero_grad()
        f().abs().sum().backward()
        grads.append([p.grad.clone() for p in model.sensitivity.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    # the plain model on the same maps keeps the scale's path: another gradient
    inner.maps_scale_stop_gradient = False
    model.zero_grad()
    model(y, op).abs().sum().backward()
    assert not all(torch.equal(a, p.grad) for a, p in zip(grads[0], model.sensitivity.parameters()))


# ---- gradient checkpointing and batch-norm running statistics --------------------------------


@pytest.mark.parametrize("shared", [False, True])
def test_checkpointing_updates_batch_norm_statistics_once_per_step(shared):
    # Was: the recomputation in backward ran BatchNorm's forward again, so one training step
    # updated the running statistics twice (num_batches_tracked 4 instead of 2): the eval
    # output after one step was 0.2 % off the same step without checkpointing
    from mrirecon.models import build_model

    _, y, op = mri_problem(b=2, dtype=torch.complex64)
    out = {}
    for ck in (False, True):
        m = build_model("modl", iterations=2, layers=3, features=4, cg_iterations=3,
                        shared=shared, checkpointing=ck, init_seed=0).train()
        assert any(isinstance(b, torch.nn.BatchNorm2d) for b in m.modules())
        m(y, op).abs().sum().backward()
        grads = [p.grad.clone() for p in m.parameters()]
        buffers = {k: v.clone() for k, v in m.named_buffers()}
        with torch.no_grad():
            out[ck] = (buffers, grads, m.eval()(y, op))
    (b0, g0, x0), (b1, g1, x1) = out[False], out[True]
    assert b0.keys() == b1.keys() and all(torch.equal(b0[k], b1[k]) for k in b0)
    assert torch.equal(x0, x1)
    # the recomputation repeats the forward's operations: the same weight gradients
    assert all(torch.allclose(a, b, rtol=1e2 * EPS32, atol=0) for a, b in zip(g0, g1))
