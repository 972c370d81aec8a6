"""Models and operators a user writes or saves from a notebook (docs/robustness.md): weights saved
with parameters that rebuild another model or under a name no loader knows, custom models that
break the output contract of ``reconstruct_slices`` or write into their data, and operators
whose adjoint or closed-form gram does not match their forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrirecon.core import FunctionOperator, LinearOperator, check_operator
from mrirecon.core import operator_check
from mrirecon.core.checks import NonFiniteError
from mrirecon.models import GradientDC, ProximalDC, UnrolledModel, build_model, reconstruct_slices
from mrirecon.models.unrolled.modl import MoDL
from mrirecon.operators import nufft_sense, sense
from mrirecon.operators.ct import FanBeam, ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.sampling.nonuniform import radial_trajectory
from mrirecon.solvers import cg
from mrirecon.training.run import save_model
from mrirecon.training.weights import load_pretrained, model_card

TINY = {"iterations": 2, "layers": 3, "features": 4, "cg_iterations": 3}
N = 16


def _mri(slices: int = 1, n: int = N, coils: int = 2, dtype=torch.complex64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    maps = torch.randn(slices, coils, n, n, dtype=dtype, generator=g)
    maps = maps / maps.abs().pow(2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[::2] = True
    mask[n // 2 - 2: n // 2 + 2] = True
    ops = [sense(maps[i:i + 1], mask) for i in range(slices)]
    x = torch.randn(slices, n, n, dtype=dtype, generator=g)
    ys = torch.cat([ops[i](x[i:i + 1]) for i in range(slices)])
    return ys, ops, x


# -- F1: save_model writes a card that rebuilds the model it saves ----------------------------

def test_save_model_refuses_params_that_rebuild_another_model(tmp_path):
    """MoDL built with 2 iterations and 3 CG steps, saved with {features, layers}: the card
    loaded with the defaults 10 / 10 and gave outputs 6.7 % off, without a word."""
    m = build_model("modl", **TINY)
    pt = tmp_path / "m.pt"
    with pytest.raises(ValueError, match=r"save_model: params\['cg_iterations'\] is 10 \(left out, "
                                         r"so the default\), but the model was built with "
                                         r"cg_iterations=3.*nothing was written"):
        save_model(m, pt, "modl", {"features": 4, "layers": 3})
    with pytest.raises(ValueError, match=r"params\['iterations'\] is 5 \(given\)"):
        save_model(m, pt, "modl", {**TINY, "iterations": 5})
    assert not pt.exists() and not pt.with_suffix(".yaml").exists()


def test_save_model_writes_what_build_model_recorded_and_it_loads_the_same_model(tmp_path):
    m = build_model("modl", **TINY, init_seed=3, checkpointing=True)
    recorded = {**TINY, "init_seed": 3, "checkpointing": True}
    assert m.build_params == {"name": "modl", "params": recorded}
    state = torch.random.get_rng_state()
    pt = save_model(m, tmp_path / "m.pt")  # name and params from the model
    assert torch.equal(torch.random.get_rng_state(), state)  # the rebuild check draws nothing
    assert model_card(pt)["model"] == {"name": "modl", "params": TINY}  # training-only left out
    ys, ops, _ = _mri()
    back = load_pretrained(pt)
    m.eval()
    with torch.no_grad():
        assert torch.equal(back(ys, ops[0]), m(ys, ops[0]))
    # the same params given explicitly (defaults spelled out too) are accepted
    save_model(m, tmp_path / "m2.pt", "modl", {**TINY, "lam": 0.05, "shared": True})


def test_save_model_refuses_names_no_loader_knows_and_models_of_another_class(tmp_path):
    class Net(UnrolledModel):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

    with pytest.raises(ValueError, match=r"save_model: model name 'my_net' is no model of this "
                                         r"mrirecon .*the card would never load"):
        save_model(Net(), tmp_path / "net.pt", "my_net", {})
    with pytest.raises(TypeError, match=r"name and params are needed: the Net was not made by "
                                        r"build_model"):
        save_model(Net(), tmp_path / "net.pt")
    with pytest.raises(ValueError, match=r"the model is a .*Net, but build_model\('modl'.* makes a "
                                         r"MoDL"):
        save_model(Net(), tmp_path / "net.pt", "modl", {})
    with pytest.raises(ValueError, match=r"does not fit|model was built as 'modl', not 'varnet'"):
        save_model(build_model("modl", **TINY), tmp_path / "net.pt", "varnet", {})
    assert list(tmp_path.iterdir()) == []


def test_save_model_checks_models_built_without_the_registry_and_changed_settings(tmp_path):
    direct = MoDL(**TINY)  # records nothing: the rebuild is compared
    with pytest.raises(ValueError, match=r"model has iterations=2, but build_model\('modl'.*gives "
                                         r"iterations=10"):
        save_model(direct, tmp_path / "d.pt", "modl", {"layers": 3, "features": 4})
    with pytest.raises(ValueError, match=r"weights do not fit .*of other shapes"):
        save_model(direct, tmp_path / "d.pt", "modl", {"features": 8, "layers": 3})
    save_model(direct, tmp_path / "d.pt", "modl", dict(TINY))
    changed = build_model("modl", **TINY)
    changed.dc.cg_iterations = 7  # set after building: the card's params cannot say it
    with pytest.raises(ValueError, match=r"model has dc\.cg_iterations=7, but .* gives "
                                         r"dc\.cg_iterations=3"):
        save_model(changed, tmp_path / "c.pt")
    class MyDC(ProximalDC):  # same weights, other code: the card would load ProximalDC
        pass

    swapped = build_model("modl", **TINY)
    swapped.dc = MyDC(lam=0.05, cg_iterations=3, support=True)
    with pytest.raises(ValueError, match=r"dc is a .*MyDC, but .* has a ProximalDC there"):
        save_model(swapped, tmp_path / "s.pt", "modl", dict(TINY))


def test_save_model_of_shipped_weights_keeps_their_cards(tmp_path):
    for name in ("modl_brain_sim", "staged_ct_lodopab"):
        card = model_card(name)["model"]
        m = load_pretrained(name)
        assert model_card(save_model(m, tmp_path / f"{name}.pt"))["model"] == card
        assert model_card(save_model(m, tmp_path / f"{name}2.pt", card["name"],
                                     dict(card["params"])))["model"] == card


# -- F2: reconstruct_slices holds any model to the output contract ---------------------------

class _Base(UnrolledModel):
    def __init__(self):
        super().__init__()
        self.dc = GradientDC(1.0)

    def num_steps(self):
        return 2

    def step(self, i, s, y, op, aty):
        return self.dc(s, y, op, aty)


class ExtraAxis(_Base):
    def output(self, s):
        return s.unsqueeze(1)


class NoBatch(nn.Module):
    def forward(self, y, op):
        return op.H(y)[0]


class Magnitude(_Base):
    def output(self, s):
        return s.abs()


class NaNOut(_Base):
    def output(self, s):
        return s * float("nan")


class Double(_Base):
    def output(self, s):
        return s.to(torch.complex128)


class InPlace(nn.Module):
    def forward(self, y, op):
        y.mul_(0.0)
        return op.H(y)


@pytest.mark.parametrize("cls, match", [
    (ExtraAxis, r"ExtraAxis returned shape \(1, 1, 16, 16\) for slice 0 .*image \(1, 16, 16\)"),
    (NoBatch, r"NoBatch returned shape \(16, 16\) for slice 0"),
    (Magnitude, r"Magnitude returned torch.float32 for torch.complex64 data \(slice 0\): a "
                r"magnitude or real part\?"),
    (NaNOut, r"NaNOut returned NaN or Inf for slice 0 from finite data"),
    (Double, r"Double returned torch.complex128 for torch.complex64 data"),
    (InPlace, r"InPlace wrote into its input y in place \(slice 0\).*caller's data were not "
              r"changed"),
])
def test_reconstruct_slices_refuses_outputs_that_break_the_contract(cls, match):
    """Each was stacked and returned: (B,1,H,W) as (3,1,H,W), (H,W) as its first rows (3, 32),
    magnitudes, NaN, complex128; the in-place model zeroed the caller's k-space."""
    ys, ops, _ = _mri(3)
    before = ys.clone()
    with pytest.raises(ValueError, match=r"reconstruct_slices: " + match):
        reconstruct_slices(cls(), ys, ops)
    assert torch.equal(ys, before)


def test_reconstruct_slices_names_nan_data_and_accepts_ct_and_inference_tensors():
    ys, ops, _ = _mri(2)
    ys[1, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"_Base: the data of slice 1 hold 1 NaN or Inf"):
        reconstruct_slices(_Base(), ys, ops)
    with torch.inference_mode():  # data made in inference mode (no version counter)
        clean, ops, _ = _mri(2)
    out = reconstruct_slices(_Base(), clean, ops)
    assert out.shape == (2, N, N) and out.dtype == torch.complex64
    ct = ParallelBeam(CTGeometry.parallel((N, N), 12))
    sino = ct(torch.rand(2, N, N, generator=torch.Generator().manual_seed(1)))
    model = build_model("fbpconvnet", chans=4, num_pools=1)
    out = reconstruct_slices(model, sino, ct)
    assert out.shape == (2, N, N) and out.dtype == torch.float32


# -- F3: operators whose adjoint or gram does not match their forward ------------------------

def _weights(n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.polar(0.5 + torch.rand(n, n, generator=g), 3 * torch.rand(n, n, generator=g))
    keep = (torch.rand(n, n, generator=g) < 0.6).to(torch.complex64)
    return w.to(torch.complex64), keep


class UserOp(LinearOperator):
    """Weighted, masked 2-D FFT; ``variant`` breaks its adjoint or gram the usual ways."""

    calls = 0

    def __init__(self, variant="good"):
        super().__init__((N, N), (N, N))
        self.w, self.keep = _weights()
        self.variant = variant

    def _forward(self, x):
        type(self).calls += 1
        return torch.fft.fft2(self.w * x, norm="ortho") * self.keep

    def _adjoint(self, y):
        k = torch.fft.fftshift(self.keep) if self.variant == "shift" else self.keep
        w = self.w if self.variant == "noconj" else self.w.conj()
        return w * torch.fft.ifft2(y * k, norm="ortho")

    def _gram(self, x):
        if self.variant == "gram":  # "F^H F = I": the mask forgotten
            return self.w.abs() ** 2 * x
        return self._adjoint(self._forward(x))


def test_check_operator_passes_mrirecon_operators():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.complex64, torch.complex128):
        maps = torch.randn(1, 3, N, N, dtype=dtype, generator=g)
        op = sense(maps, torch.rand(N, generator=g) < 0.5)
        for o in (op, 0.5 * op, nufft_sense(maps, radial_trajectory(8, 2 * N))):
            found = check_operator(o)
            assert found["adjoint"] < 1e-3 * found["tolerance"]
            assert found["gram"] < 0.1 * found["tolerance"]
    for geo in (CTGeometry.parallel((N, N), 10), CTGeometry.fan((N, N), 12)):
        ct = (ParallelBeam if geo.beam == "parallel" else FanBeam)(geo)
        assert check_operator(ct)["adjoint"] < 1e-4
    assert check_operator(UserOp())["adjoint"] < 1e-6


def test_check_operator_takes_the_real_inner_product_between_a_real_and_a_complex_space():
    """PhaseConstrained (real image in, complex k-space out, real A^H y), and sense composed with
    it, were refused with dot tests of 5e-2 / 4e-2 and "fix _adjoint": the complex inner product
    does not hold for a real-linear operator, Re <A u, v> = <u, A^H v> does. A real sample into
    a complex-linear operator still checks the imaginary part of A^H v."""
    from mrirecon.operators import PhaseConstrained

    g = torch.Generator().manual_seed(1)
    phase = torch.exp(1j * torch.rand(N, N, generator=g, dtype=torch.float64))
    real = torch.zeros(N, N, dtype=torch.float64)
    pc = PhaseConstrained(phase)
    maps = torch.randn(2, N, N, dtype=torch.complex128, generator=g)
    for op in (pc, sense(maps, torch.rand(N, generator=g) < 0.5) @ pc):
        found = check_operator(op, real)
        assert found["adjoint"] < 1e-12 and found["gram"] < 1e-12
    off = FunctionOperator(pc, lambda v: 1.01 * pc.H(v), (N, N), (N, N))  # 1 % wrong adjoint
    with pytest.raises(ValueError, match="its adjoint is not the conjugate transpose"):
        check_operator(off, real)
    f = FunctionOperator(lambda x: torch.fft.fft2(x, norm="ortho"),  # complex-linear, A^H y's
                         lambda y: torch.fft.ifft2(y, norm="ortho").conj(), (N, N), (N, N))
    with pytest.raises(ValueError, match="its adjoint is not the conjugate transpose"):
        check_operator(f, real)  # the imaginary part of A^H v negated


@pytest.mark.parametrize("variant, match", [
    ("shift", r"UserOp: its adjoint is not the conjugate transpose of its forward"),
    ("noconj", r"UserOp: its adjoint is not the conjugate transpose"),
    ("gram", r"UserOp: its gram differs from H\(forward\(u\)\)"),
])
def test_data_consistency_refuses_a_user_operator_with_a_wrong_adjoint_or_gram(variant, match):
    """ProximalDC returned a relative error of 88 (no conj), GradientDC 1.5e17; a _gram without
    the mask passed relative_adjoint_error and every CG solve used it."""
    cls = type("UserOp", (UserOp,), {})  # a class of this test's own: none of it trusted yet
    op = cls(variant)
    x = torch.randn(1, N, N, dtype=torch.complex64)
    y = cls()(x)
    with pytest.raises(ValueError, match=r"check_operator: " + match + r".*Relative errors: dot "
                                         r"test .*, gram .*\(tolerance 3\.5e-04 at "
                                         r"torch\.complex64\)"):
        check_operator(op, x)
    for block in (ProximalDC(lam=1e-4, learnable=False), GradientDC(0.9, learnable=False)):
        with pytest.raises(ValueError, match=match):
            block(torch.zeros_like(x), y, op)
    # good instances of the class pass; after TRUSTED_AFTER of them the class is trusted (the
    # price: a wrong instance after that goes untested)
    for _ in range(operator_check.TRUSTED_AFTER):
        ProximalDC(lam=1e-4, learnable=False)(torch.zeros_like(x), y, cls())
    GradientDC(0.9, learnable=False)(torch.zeros_like(x), y, cls(variant))


def test_the_check_runs_once_per_operator_and_never_for_mrirecon_operators(monkeypatch):
    ys, ops, _ = _mri(1)
    model = build_model("modl", **TINY).eval()

    def refuse(*args, **kwargs):
        raise AssertionError("check_operator ran on a mrirecon operator")

    monkeypatch.setattr(operator_check, "check_operator", refuse)
    with torch.no_grad():
        model(ys, ops[0])
        model(ys, 2.0 * ops[0])
    monkeypatch.undo()
    cls = type("Counted", (UserOp,), {"calls": 0})
    op = cls()
    x = torch.zeros(1, N, N, dtype=torch.complex64)
    block = GradientDC(0.5, learnable=False)
    block(x, op(x), op)
    cls.calls = 0
    for _ in range(5):
        block(x, op(x), op)
    assert cls.calls == 5 * 2  # op(x) and the gram: no further test of a known operator
    # a FunctionOperator wraps the caller's functions: each instance is tested
    w, keep = _weights()
    bad = FunctionOperator(lambda v: torch.fft.fft2(w * v, norm="ortho") * keep,
                           lambda r: w * torch.fft.ifft2(r * keep, norm="ortho"), (N, N), (N, N))
    with pytest.raises(ValueError, match=r"check_operator: FunctionOperator: its adjoint"):
        block(x, bad(x), bad)


def test_a_class_may_declare_an_approximate_adjoint():
    class Approximate(UserOp):
        adjoint_tolerance = 0.5

    assert check_operator(Approximate("shift"))["tolerance"] == 0.5


def test_cg_not_positive_definite_names_check_operator():
    d = -torch.ones(4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"not positive definite.*an operator whose adjoint or "
                                         r"closed-form gram does not match its forward\? "
                                         r"mrirecon\.core\.check_operator\(op\) tests both"):
        cg(lambda v: d * v, torch.ones(4, dtype=torch.float64), iterations=3)


def test_check_operator_probes_in_complex_when_any_tensor_is_complex():
    """Without an example x, check_operator draws its probe in the operator's precision, complex
    when any of its tensors is complex, even when a real buffer (a float32 mask) comes first:
    the tolerance is then that of complex128, and a real-valued probe would not exercise the
    conjugates of a complex operator."""
    from mrirecon.core import LinearOperator, check_operator
    from mrirecon.core.operator_check import operator_tolerance

    class MaskedMaps(LinearOperator):
        def __init__(self, mask, maps):
            super().__init__(tuple(maps.shape), tuple(maps.shape))
            self.register_buffer("mask", mask)  # real, registered first
            self.register_buffer("maps", maps)

        def _forward(self, x):
            return self.mask * self.maps * x

        def _adjoint(self, y):
            return self.mask * self.maps.conj() * y

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(5, 4, dtype=torch.complex128, generator=g)
    mask = (torch.rand(5, 4, generator=g) > 0.3).to(torch.float32)
    found = check_operator(MaskedMaps(mask, maps))
    assert found["tolerance"] == operator_tolerance(torch.complex128)
