"""LDAMP: dense-matrix operator kit, Monte-Carlo divergence against the exact Jacobian trace
(autograd), AMP recovery and state evolution with a soft threshold, DnCNN LDAMP shapes and
gradients, and the error on operators the Onsager term is not valid for."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.models import build_model
from mrirecon.models.unrolled.ldamp import (
    LDAMP,
    DnCNNDenoiser,
    SoftThreshold,
    check_valid,
    mc_divergence,
    valid_for,
)
from mrirecon.operators import DenseMatrix, gaussian_matrix
from mrirecon.operators import ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry
from tests.helpers import check_operator, random_like_shape


def test_dense_matrix_operator_kit(rdtype, cdtype):
    g = torch.Generator().manual_seed(0)
    op = gaussian_matrix(7, (3, 4), generator=g, dtype=torch.float64)
    check_operator(op, random_like_shape((2, 3, 4), rdtype), norm=True)
    cop = DenseMatrix(random_like_shape((5, 6), cdtype, 3), (6,))
    check_operator(cop, random_like_shape((2, 6), cdtype), norm=True)
    col = op.matrix.norm(dim=0)
    assert float(col.mean()) == pytest.approx(1.0, abs=0.3)  # N(0, 1/m) entries
    with pytest.raises(ValueError, match="domain_shape"):
        DenseMatrix(torch.zeros(3, 5), (2, 2))


def _tiny_denoiser():
    torch.manual_seed(0)
    return DnCNNDenoiser(depth=3, features=6).double().eval()


def test_mc_divergence_matches_exact_jacobian_trace():
    den = _tiny_denoiser()
    r = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    sigma = torch.ones(1, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: den(v[None], sigma)[0], r[0]).reshape(25, 25)
    trace = float(torch.trace(jac))
    # each probe: the finite difference equals b^T J b up to O(eps) (checked with a JVP)
    b = torch.randn(1, 5, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    eps = 1e-6
    with torch.no_grad():
        fd = float(((den(r + eps * b, sigma) - den(r, sigma)) * b).sum() / eps)
    exact = float(b.reshape(-1) @ jac @ b.reshape(-1))
    assert fd == pytest.approx(exact, rel=1e-4, abs=1e-6)
    # many probes (one per batch copy): the average approaches the trace within its std error
    probes = 4000
    rr = r.expand(probes, 5, 5).contiguous()
    est = mc_divergence(den, rr, sigma.expand(probes), generator=torch.Generator().manual_seed(3))
    sym = 0.5 * (jac + jac.T)
    std_err = math.sqrt(2 / probes) * float(torch.linalg.matrix_norm(sym))
    assert abs(float(est.detach().mean()) - trace) < 4 * std_err + 1e-3
    # soft threshold: the divergence is the number of surviving entries
    st = SoftThreshold(1.0)
    v = torch.randn(1, 400, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    s = torch.ones(1, dtype=torch.float64)
    d = mc_divergence(st, v.expand(200, 400), s.expand(200), generator=torch.Generator().manual_seed(5))
    assert float(d.mean()) == pytest.approx(float((v.abs() > 1).sum()), rel=0.05)


def _sparse_problem(n=400, m=200, k=20, batch=2):
    g = torch.Generator().manual_seed(0)
    op = gaussian_matrix(m, (n,), generator=g, dtype=torch.float64)
    x = torch.zeros(batch, n, dtype=torch.float64)
    for b in range(batch):
        x[b, torch.randperm(n, generator=g)[:k]] = torch.randn(k, generator=g, dtype=torch.float64)
    return op, x, op(x)


def test_amp_soft_threshold_recovers_sparse_signal_and_follows_state_evolution():
    op, x, y = _sparse_problem()
    model = LDAMP(iterations=25, denoiser=SoftThreshold(1.5))
    xh, history = model(y, op, return_history=True)
    nmse = (torch.linalg.vector_norm(xh - x, dim=1) / torch.linalg.vector_norm(x, dim=1)) ** 2
    assert float(nmse.max()) < 1e-4
    # the Onsager term keeps r_t - x white with std sigma_t (state evolution): the effective
    # noise of the denoiser inputs matches the estimate sigma_t = ||z_t|| / sqrt(m)
    for t, (r, sigma, _) in enumerate(history[:5]):
        ratio = torch.linalg.vector_norm(r - x, dim=-1) / math.sqrt(x.shape[-1]) / sigma
        assert torch.all((ratio > 0.8) & (ratio < 1.25)), f"iteration {t}: ratio {ratio.tolist()}"


def test_ldamp_dncnn_shapes_gradients_and_registry():
    g = torch.Generator().manual_seed(0)
    op = gaussian_matrix(40, (8, 8), generator=g)
    x = torch.rand(2, 8, 8, generator=g)
    model = build_model("ldamp", iterations=3, depth=3, features=8)
    assert isinstance(model, LDAMP) and len(model.denoisers) == 3
    out = model(op(x), op)
    assert out.shape == (2, 8, 8) and out.dtype == torch.float32
    loss = (out - x).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert any(float(p.grad.abs().max()) > 0 for p in model.denoisers[0].parameters())
    # deterministic (probe generator re-seeded on every call)
    torch.testing.assert_close(model(op(x), op), model(op(x), op))


def test_ldamp_raises_on_unsupported_operators():
    model = LDAMP(iterations=1, denoiser=SoftThreshold())
    n = 8
    mri = sense(torch.ones(1, 1, n, n, dtype=torch.complex64), torch.ones(n))
    ct = ParallelBeam(CTGeometry.parallel((n, n), num_views=4))
    plain = DenseMatrix(torch.randn(4, 6))
    for op, what in ((mri, "SenseOperator"), (ct, "ParallelBeam"), (plain, "not marked iid")):
        assert not valid_for(op)[0]
        with pytest.raises(TypeError, match=what):
            model(torch.zeros(1, 4), op)
    with pytest.raises(TypeError, match="complex DenseMatrix"):
        check_valid(DenseMatrix(torch.randn(4, 6, dtype=torch.complex64), iid=True))
    assert valid_for(gaussian_matrix(4, (6,), generator=torch.Generator().manual_seed(0)))[0]
