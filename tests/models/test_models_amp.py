"""Mixed precision (``amp: true``): the trainer runs ``model(y, op)`` under
``torch.autocast("cuda", dtype=torch.bfloat16)``. CPU autocast casts the same convolutions and
matrix products, so the MRI models' training step is checked here under
``torch.autocast("cpu", dtype=torch.bfloat16)``: vn, admm_csnet and ista_net_plus failed in
``channels_to_complex`` ("torch.complex: Expected both inputs to be Half, Float or Double")."""

from __future__ import annotations

import copy

import pytest
import torch

from mrirecon.functional import channels_to_complex, complex_to_channels
from mrirecon.models.registry import MODEL_MODALITY
from tests.models.tiny import TINY, run_model, tiny_model, tiny_problem

BF16 = torch.finfo(torch.bfloat16).eps  # 2^-7
MRI = sorted(n for n, (_, kind) in TINY.items() if kind in ("mri", "radial", "radial_own_maps"))
CT = sorted(n for n, (_, kind) in TINY.items() if kind == "ct")


def test_the_sweep_has_every_mri_model():
    assert {n for n, m in MODEL_MODALITY.items() if m == "mri"} <= set(MRI)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_channels_give_complex64_and_pass_gradients(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 5, 4, generator=g).to(dtype).requires_grad_(True)
    z = channels_to_complex(x)
    assert z.dtype == torch.complex64 and z.shape == (2, 3, 5, 4)
    exact = torch.complex(x.detach()[:, :3].float(), x.detach()[:, 3:].float())
    assert torch.equal(z.detach(), exact)  # the halves are widened exactly
    assert torch.equal(complex_to_channels(z).to(dtype), x.detach())  # round trip
    z.abs().sum().backward()
    # d|z| / d(re, im) = (re, im) / |z|, in the input's own precision
    want = torch.cat([exact.real, exact.imag], dim=1) / exact.abs().repeat(1, 2, 1, 1)
    assert x.grad.dtype == dtype
    assert float((x.grad.float() - want).abs().max()) <= torch.finfo(dtype).eps


def test_full_precision_channels_keep_their_complex_type():
    for real, cplx in ((torch.float32, torch.complex64), (torch.float64, torch.complex128)):
        assert channels_to_complex(torch.zeros(1, 2, 3, dtype=real)).dtype == cplx


@pytest.mark.parametrize("name", MRI)
def test_mri_training_step_under_bfloat16_autocast(name):
    x, y, op = tiny_problem(TINY[name][1])
    with torch.random.fork_rng():
        torch.manual_seed(0)
        base = tiny_model(name).train()
    runs = {}
    for amp in (False, True):
        model = copy.deepcopy(base)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = run_model(model, y, op)
        loss = (out - x).abs().square().mean()
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), name
        runs[amp] = out.detach(), torch.cat([g.flatten() for g in grads])
    (out32, g32), (out16, g16) = runs[False], runs[True]
    assert out16.dtype == out32.dtype == torch.complex64
    # bfloat16 roundings of the CNNs' inputs and weights, the rest float32: VarNet, with three
    # NormUnets (about 30 convolutions), is the farthest, 1.7 to 6.4 eps over 8 initialisations
    assert float((out16 - out32).norm() / out32.norm()) <= 8 * BF16
    # the step goes where float32's goes (VarNet's gradient is the noisiest: cosine >= 0.94 over
    # the same 8 initialisations, the other models >= 0.95)
    assert float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)) > 0.9


@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_ct_projectors_run_in_the_data_dtype_under_autocast(beam):
    """The parallel-beam kernel's matrix product came out bfloat16 under autocast and its
    scatter into float32 failed ("scatter(): Expected self.dtype to be equal to src.dtype"):
    every CT model, SIRT and ``amp: true`` CT training. The physics is now exact there."""
    _, y, op = tiny_problem("ct")
    from mrirecon.operators import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    n = op.geometry.image_shape[0]
    op = ct_operator(CTGeometry.parallel((n, n), num_views=12) if beam == "parallel" else
                     CTGeometry.fan((n, n), num_views=12))
    x = torch.rand(2, n, n, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fwd = op(x)
        back = op.H(fwd.detach())
    fwd.square().sum().backward()
    assert fwd.dtype == back.dtype == torch.float32
    assert torch.equal(fwd, op(x.detach())) and torch.equal(back, op.H(op(x.detach())))
    torch.testing.assert_close(x.grad, 2 * op.H(op(x.detach())), rtol=0, atol=0)


@pytest.mark.parametrize("name", CT)
def test_ct_training_step_under_bfloat16_autocast(name):
    x, y, op = tiny_problem("ct")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = tiny_model(name).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_model(model, y, op)
    loss = (out.float() - x).square().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), name
