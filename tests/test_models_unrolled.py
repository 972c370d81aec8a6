"""Unrolled networks on MRI (2 coils x 32 x 24) and CT (dense real projector): shapes, dtypes,
gradients to every parameter, a few training steps lowering the loss, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from test_models_support import ct_problem, mri_problem

from mrirecon.core import FunctionOperator
from mrirecon.models import (
    RED,
    ADMMCSNet,
    CascadeNet,
    ComplexImageCNN,
    DnCNN,
    FBPConvNet,
    ISTANetPlus,
    LearnedPrimalDual,
    MoDL,
    PnPADMM,
    PnPHQS,
    VariationalNetwork,
)


def _denoiser():
    return ComplexImageCNN(DnCNN(2, 2, depth=3, features=8, batchnorm=False))


FACTORIES = {
    "vn": lambda m: VariationalNetwork(iterations=2, num_filters=4, kernel_size=5, num_rbf=7),
    "modl": lambda m: MoDL(iterations=2, layers=3, features=8, cg_iterations=4),
    "admm_csnet": lambda m: ADMMCSNet(iterations=2, num_filters=4, num_points=11),
    "ista_net_plus": lambda m: ISTANetPlus(iterations=2, features=8),
    "cascade": lambda m: CascadeNet(iterations=2, layers=3, features=8, dc="kspace" if m == "mri" else "gradient"),
    "primal_dual": lambda m: LearnedPrimalDual(iterations=2, features=8),
    "fbpconvnet": lambda m: FBPConvNet(chans=4, num_pools=2),
    "pnp_admm": lambda m: PnPADMM(_denoiser(), iterations=2, cg_iterations=4),
    "pnp_hqs": lambda m: PnPHQS(_denoiser(), iterations=2, cg_iterations=4),
    "red": lambda m: RED(_denoiser(), iterations=2, cg_iterations=4),
}
PROBLEMS = {"mri": mri_problem, "ct": ct_problem}
CASES = [(name, m) for name in FACTORIES for m in PROBLEMS]


def _build(name, modality, seed=0):
    torch.manual_seed(seed)
    return FACTORIES[name](modality)


@pytest.mark.parametrize("name,modality", CASES)
def test_shapes_dtypes_and_gradients_reach_every_parameter(name, modality):
    x, y, op = PROBLEMS[modality]()
    model = _build(name, modality)
    out = model(y, op)
    assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()
    loss = (out - x).abs().square().mean()
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}/{modality}: {pname} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}/{modality}: {pname} gradient not finite"
        assert p.grad.abs().sum() > 0, f"{name}/{modality}: {pname} gradient is all zero"


@pytest.mark.parametrize("name,modality", CASES)
def test_few_training_steps_lower_the_loss(name, modality):
    x, y, op = PROBLEMS[modality]()
    model = _build(name, modality, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_fn():
        return (model(y, op) - x).abs().square().mean()

    start = float(loss_fn().detach())
    for _ in range(5):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    end = float(loss_fn().detach())
    assert end < start, f"{name}/{modality}: loss {start:.4g} -> {end:.4g}"


@pytest.mark.parametrize("name", ["vn", "modl", "admm_csnet", "ista_net_plus", "cascade", "primal_dual"])
def test_checkpointing_gives_identical_gradients(name):
    x, y, op = mri_problem()
    grads = []
    for ckpt in (False, True):
        model = _build(name, "mri")
        model.checkpointing = ckpt
        (model(y, op) - x).abs().square().mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-8), f"{name}: {n}"


@pytest.mark.parametrize("name", ["vn", "modl", "primal_dual", "pnp_admm"])
def test_normalised_models_are_scale_equivariant(name):
    x, y, op = ct_problem()
    model = _build(name, "ct").eval()
    with torch.no_grad():
        a, b = model(y, op), model(1000.0 * y, op)
    assert torch.allclose(b, 1000.0 * a, rtol=1e-3, atol=1e-4 * float(b.abs().max()))


def test_ista_net_symmetry_loss_is_differentiable():
    x, y, op = mri_problem()
    model = _build("ista_net_plus", "mri")
    out, sym = model.forward_with_symmetry(y, op)
    assert torch.equal(out, model(y, op))
    assert sym.ndim == 0 and float(sym.detach()) > 0
    sym.backward()
    assert model.phases[0].backward_1.weight.grad.abs().sum() > 0


def test_cascade_kspace_dc_needs_cartesian_operator_and_is_exact_on_single_coil():
    x, y, op = ct_problem()
    with pytest.raises(TypeError, match="use dc='gradient'"):
        CascadeNet(iterations=1, layers=3, features=4)(y, op)
    from mrirecon.operators import sense

    _, _, mop = mri_problem()
    single = sense(mop.maps[:1] / mop.maps[:1].abs(), mop.mask)
    xs = torch.randn(2, 32, 24, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    ys = single(xs)
    out = CascadeNet(iterations=2, layers=3, features=4)(ys, single)
    assert torch.allclose(single(out), ys, atol=1e-5)  # hard projection: sampled data exact


def test_fbpconvnet_uses_pseudo_inverse_when_offered():
    x, y, op = ct_problem(dense=True)
    calls = []

    class WithPinv(FunctionOperator):
        def pseudo_inverse(self, data):
            calls.append(data.shape)
            return torch.zeros(data.shape[:-2] + (16, 16))

    pinv_op = WithPinv(op._f, op._a, op.domain_shape, op.range_shape)
    model = FBPConvNet(chans=4, num_pools=2)
    out = model(y, pinv_op)
    assert calls == [y.shape] and out.shape == x.shape


def test_models_require_a_batch_axis():
    x, y, op = ct_problem()
    with pytest.raises(ValueError, match="MoDL: data y must have a leading batch axis"):
        MoDL(iterations=1, layers=3, features=4)(y[0, 0], op)
