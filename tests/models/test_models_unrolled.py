"""Unrolled networks on MRI (2 coils x 32 x 24) and CT (dense real projector): shapes, dtypes,
gradients to every parameter, a few training steps lowering the loss, gradient checkpointing."""

from __future__ import annotations

import pytest
import torch
from tests.models.problems import ct_problem, mri_problem

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
from mrirecon.models.backbones.unet import Unet
from mrirecon.models.unrolled.ista_net import soft_threshold
from mrirecon.models.unrolled.ldamp import LDAMP
from mrirecon.models.unrolled.vn import RBFActivation, VNStage


def _denoiser():
    return ComplexImageCNN(DnCNN(2, 2, depth=3, features=8, batchnorm=False))


EPS32 = torch.finfo(torch.float32).eps
FACTORIES = {
    "vn": lambda m: VariationalNetwork(iterations=2, num_filters=4, kernel_size=5, num_rbf=7),
    "modl": lambda m: MoDL(iterations=2, layers=3, features=8, cg_iterations=4),
    # one denoiser per iteration: each must be the one its iteration runs
    "modl_unshared": lambda m: MoDL(iterations=2, layers=3, features=8, cg_iterations=4,
                                    shared=False),
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


def test_cascade_noisy_dc_weight_is_learned():
    """Fails if cascade.py: ``HardProjectionDC(nu, learnable=nu is not None)`` ->
    ``learnable=False``. With ``lam`` a float the docstring promises a learned noisy-data
    weight under the state-dict key ``dc.nu``, and a training step must reach it."""
    _, y, op = mri_problem(b=1)
    model = CascadeNet(iterations=2, layers=3, features=4, lam=0.5, init_seed=0)
    params = dict(model.named_parameters())
    assert "cascades.0.dc.nu" in params and "cascades.1.dc.nu" in params
    model(y, op).abs().square().mean().backward()
    assert float(params["cascades.0.dc.nu"].grad.abs().sum()) > 0


def test_vn_filters_are_zero_mean():
    """Fails if vn.py ``kernels``: the zero-mean projection dropped. The paper's constraint:
    every learned filter sums to zero over its taps and both channels, so an image of equal
    constant real and imaginary parts contributes nothing to the regulariser away from the
    border (there ``K x = 0`` and the initial RBF activation is odd, ``phi(0) = 0``)."""
    stage = VNStage(num_filters=4, kernel_size=5, num_rbf=7, eta=0.5)
    with torch.no_grad():
        stage.filters.add_(1.0)  # a trained filter need not be zero mean itself
        k = stage.kernels()
        n = k[0].numel()
        assert float(k.sum(dim=(1, 2, 3)).abs().max()) <= n * EPS32 * float(k.abs().max()) * 4
        g = stage.regulariser_gradient(torch.full((1, 16, 16), 0.3 + 0.3j))
    interior = g[..., 2 * 2:-2 * 2, 2 * 2:-2 * 2]  # two kernel radii from the zero-padded border
    assert float(interior.abs().max()) <= 64 * EPS32


def test_vn_rbf_width_is_the_centre_spacing():
    """Fails if vn.py: ``sigma = 2 vmax / (num_rbf - 1)`` -> ``/ num_rbf``. The documented
    width (and the one trained weights assume) is the spacing of the centres."""
    act = RBFActivation(channels=2, num_rbf=7, vmax=1.0)
    spacing = float(act.mu[1] - act.mu[0])
    assert act.sigma == pytest.approx(spacing, rel=4 * EPS32)


def test_ista_symmetry_loss_is_the_mean_over_phases():
    """Fails if ista_net.py ``forward_with_symmetry``: not divided by the phase count. The
    documented loss: ``mean_k mean |F~_k(F_k(D r)) - D r|^2``, recomputed here phase by phase."""
    _, y, op = mri_problem(b=1)
    model = ISTANetPlus(iterations=3, features=4, init_seed=0)
    with torch.no_grad():
        _, sym = model.forward_with_symmetry(y, op)
        yn, aty, _ = model.prepare(y, op)
        x, terms = aty, []
        for phase in model.phases:
            x, residual = phase(x, yn, op, aty)
            terms.append(torch.mean(residual ** 2))
        want = torch.stack(terms).mean()
    assert float(sym) == pytest.approx(float(want), rel=16 * EPS32)


def test_ista_soft_threshold_is_odd_and_shrinks_magnitudes():
    """Fails if ista_net.py ``soft_threshold``: ``sign(z) relu(|z| - t)`` -> ``relu(z - t)``."""
    z = torch.tensor([-2.0, -0.005, 0.0, 0.005, 2.0], dtype=torch.float64)
    got = soft_threshold(z, torch.tensor([0.01], dtype=torch.float64))
    torch.testing.assert_close(got, torch.tensor([-1.99, 0.0, 0.0, 0.0, 1.99], dtype=torch.float64),
                               rtol=0, atol=1e-15)


def test_fbpconvnet_gives_zero_for_an_all_zero_sample():
    """Fails if fbpconvnet.py: ``zero_blank`` dropped from ``forward``. An all-zero sample
    gives 0 (the limit of ``c model(y)``), not the U-Net's bias image; its neighbour is unchanged."""
    _, y, op = ct_problem(b=2)
    model = FBPConvNet(chans=4, num_pools=2, init_seed=0).eval()
    with torch.no_grad():
        for p in model.parameters():  # nonzero biases everywhere, as after training
            p.add_(0.05)
        y0 = y.clone()
        y0[1] = 0
        out = model(y0, op)
        alone = model(y[:1], op)
    assert torch.count_nonzero(out[1]) == 0
    torch.testing.assert_close(out[0], alone[0])


def _per_slice_mask(kind, b, h, w):
    """``b`` different masks, one per slice: columns ``(b, 1, w)`` or 2-D ``(b, h, w)``, each
    with a fully sampled centre."""
    g = torch.Generator().manual_seed(7)
    m = torch.rand(b, 1 if kind == "columns" else h, w, generator=g) < 0.3
    m[..., w // 2 - 3 : w // 2 + 3] = True
    return m


@pytest.mark.parametrize("kind", ["columns", "2d"])
@pytest.mark.parametrize("coils", ["single", "multi"])
def test_cascade_kspace_dc_keeps_per_slice_masks_to_their_slice(kind, coils):
    """Fails if soft_dc.py ``kspace_mask`` / hard_dc.py ``image``: the coil axis added to the
    mask also for single-coil k-space. ``single_coil`` masks ``(B, 1, W)`` became
    ``(B, 1, 1, W)`` against k-space ``(B, H, W)``: the output was ``(B, B, H, W)`` and slice
    ``i`` was projected with every slice's mask. Each slice must give what it gives alone."""
    from tests.models.problems import H, W, coil_maps, phantom

    from mrirecon.operators import sense, single_coil

    b = 3
    mask, x = _per_slice_mask(kind, b, H, W), phantom(b)

    def make(i=slice(None)):
        return single_coil(mask[i], (H, W)) if coils == "single" else sense(coil_maps(), mask[i])

    op = make()
    y = op(x)
    iterations, layers, features = 2, 3, 8
    model = CascadeNet(iterations=iterations, layers=layers, features=features, init_seed=0).eval()
    with torch.no_grad():
        out = model(y, op)
        alone = [model(y[i:i + 1], make(slice(i, i + 1)))[0] for i in range(b)]
    assert out.shape == (b, H, W)
    # batched and single convolutions may sum their 9 * features products per output in another
    # order: a few float32 roundings per product, per layer and cascade (the DC is a projection)
    tol = iterations * layers * 9 * features * EPS32
    for i in range(b):
        err = float((out[i] - alone[i]).abs().max() / alone[i].abs().max())
        assert err <= tol, f"slice {i}: {err:.3g} > {tol:.3g}"


def test_ldamp_item_does_not_depend_on_its_batch():
    """Fails if ldamp.py: the Monte-Carlo divergence probe drawn as one ``(B, ...)`` tensor
    (item ``i`` got another probe in another batch, so another Onsager term and trajectory:
    0.3-0.6 relative apart). Item ``i`` of a batch equals item ``i`` alone, and one measurement
    twice in a batch gives two equal rows."""
    from mrirecon.operators import gaussian_matrix

    f64 = torch.float64
    op = gaussian_matrix(40, (8, 8), generator=torch.Generator().manual_seed(0), dtype=f64)
    y = op(torch.randn(3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=f64))
    iterations, depth, features = 3, 3, 8
    model = LDAMP(iterations=iterations, depth=depth, features=features, init_seed=0).to(f64).eval()
    with torch.no_grad():
        out = model(y, op)
        alone = [model(y[i:i + 1], op)[0] for i in range(3)]
        twice = model(y[1:2].expand(2, -1), op)
    # convolution rounding (9 * features products per output, per layer and iteration), divided
    # by the finite-difference step max|r| / 1000 of the divergence estimate
    tol = 1000 * iterations * depth * 9 * features * torch.finfo(f64).eps
    pairs = [(out[i], alone[i]) for i in range(3)] + [(twice[0], alone[1]), (twice[1], alone[1])]
    for n, (got, want) in enumerate(pairs):
        err = float((got - want).abs().max() / want.abs().max())
        assert err <= tol, f"pair {n}: {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("size", [(16, 16), (8, 24), (1, 40)])
def test_unet_too_small_image_is_refused_by_name(size):
    """Fails if unet.py ``forward``: no size check. Images smaller than the pooling allows
    raised torch's "Expected more than 1 spatial element when training" (in eval mode too)
    or "Output size is too small"; now a ValueError with the minimum and what to do. One
    step up (16x32 at 4 pools) still runs; FBPConvNet's U-Net says the same."""
    unet = Unet(2, 2, chans=2, num_pool_layers=4).eval()
    with torch.no_grad(), pytest.raises(ValueError, match=rf"Unet: image {size[0]}x{size[1]} is too small "
                                        r"for num_pool_layers=4: both sides must be at least 2\*\*4 = 16 "
                                        r"and one at least 32 .*pad the image"):
        unet(torch.zeros(1, 2, *size))
    with torch.no_grad():
        assert unet(torch.zeros(1, 2, 16, 32)).shape == (1, 2, 16, 32)
    _, y, op = ct_problem(h=16, w=16)
    with torch.no_grad(), pytest.raises(ValueError, match="Unet: image 16x16 .*at most 3 for 16x16"):
        FBPConvNet(chans=2, num_pools=4).eval()(y, op)
