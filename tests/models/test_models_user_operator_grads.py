"""Gradients w.r.t. learnable tensors inside an operator a user writes, through the implicit CG
data consistency (``ProximalDC``, PnP, unrolled EM): a tensor captured by a FunctionOperator's
functions, held as a plain attribute, registered as an ``nn.Parameter``, or computed from a leaf
(not a leaf itself). The implicit backward must agree with autograd through the CG iterations
(``implicit=False``) and with central differences (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mrirecon.core import FunctionOperator, LinearOperator
from mrirecon.functional import fft2c, ifft2c
from mrirecon.models import build_model
from mrirecon.models.blocks import ProximalDC
from mrirecon.models.blocks.cg_dc import operator_tensors_with_grad

N = 16
LAM, TOL, ITERS = 0.05, 1e-13, 300
EPS64 = torch.finfo(torch.float64).eps


def _mask() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(N, generator=g) < 0.4).to(torch.float64)
    m[N // 2 - 2: N // 2 + 2] = 1
    return m.expand(N, N).clone()


MASK = _mask()


class Weighted(LinearOperator):
    """``y = M F (w x)``: a per-pixel weight (a learned intensity correction, say)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__((N, N), (N, N))
        self.weight = weight  # a plain attribute: no buffer, no parameter

    def _forward(self, x):
        return MASK * fft2c(self.weight * x)

    def _adjoint(self, y):
        return self.weight * ifft2c(MASK * y)


class WeightedParameter(Weighted):
    def __init__(self, weight: torch.Tensor) -> None:
        LinearOperator.__init__(self, (N, N), (N, N))
        self.weight = nn.Parameter(weight)


def _closure(w):
    return FunctionOperator(lambda v: MASK * fft2c(w * v), lambda k: w * ifft2c(MASK * k),
                            (N, N), (N, N))


def _weight0() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (1 + 0.3 * torch.rand(N, N, generator=g)).to(torch.float64)


def _data():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, N, N, dtype=torch.complex128, generator=g)
    z = x + 0.1 * torch.randn(1, N, N, dtype=torch.complex128, generator=g)
    return x, z


def _operator(kind: str, leaf: torch.Tensor) -> tuple[LinearOperator, torch.Tensor]:
    """The operator of ``kind`` whose weight depends on ``leaf`` (the tensor differentiated)."""
    if kind == "closure":
        return _closure(leaf), leaf
    if kind == "attribute":
        return Weighted(leaf), leaf
    if kind == "parameter":
        op = WeightedParameter(leaf.detach().clone())
        return op, op.weight
    if kind == "non_leaf":  # w = exp(log w): a tensor made from a leaf, also used by A^H y
        return _closure(torch.exp(leaf)), leaf
    raise AssertionError(kind)


def _start(kind: str) -> torch.Tensor:
    w0 = _weight0()
    return (torch.log(w0) if kind == "non_leaf" else w0).requires_grad_()


def _dc_grad(kind: str, implicit: bool) -> torch.Tensor:
    x, z = _data()
    leaf = _start(kind)
    op, wrt = _operator(kind, leaf)
    y = Weighted(_weight0())(x)  # data of the unperturbed operator
    out = ProximalDC(LAM, learnable=False, cg_iterations=ITERS, tolerance=TOL, implicit=implicit)(z, y, op)
    (g,) = torch.autograd.grad((out.abs() ** 2).sum(), wrt)
    return g


KINDS = ["closure", "attribute", "parameter", "non_leaf"]


@pytest.mark.parametrize("kind", KINDS)
def test_implicit_backward_differentiates_tensors_hidden_in_a_user_operator(kind):
    # Was: only registered buffers / parameters reached the implicit backward; a closure or a
    # plain attribute got dL/dw 4.45 (relative) off the unrolled gradient, cosine -0.35
    g_imp, g_unr = _dc_grad(kind, True), _dc_grad(kind, False)
    # both are exact for the converged solve; CG stops at relative residual TOL, which the
    # gradients amplify by at most kappa^2, kappa = (||A||^2 + lam) / lam with ||A|| <= max w
    kappa = (float(_weight0().max()) ** 2 + LAM) / LAM
    err = float((g_imp - g_unr).norm() / g_unr.norm())
    assert err <= 10 * kappa**2 * TOL, err
    # and both are the derivative: central differences along a random direction
    d = torch.randn(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h = 1e-6

    def loss_at(t):
        x, z = _data()
        op = _closure(torch.exp(t) if kind == "non_leaf" else t)
        y = Weighted(_weight0())(x)
        with torch.no_grad():
            out = ProximalDC(LAM, learnable=False, cg_iterations=ITERS, tolerance=TOL)(z, y, op)
        return float((out.abs() ** 2).sum())

    w0 = _start(kind).detach()
    fd = (loss_at(w0 + h * d) - loss_at(w0 - h * d)) / (2 * h)
    ad = float((g_imp * d).sum())
    assert abs(ad - fd) <= 10 * EPS64**0.5 * abs(fd), (ad, fd)


def test_user_operators_are_found_through_autograd_and_mrirecon_ones_by_their_tensors():
    from mrirecon.operators import sense

    maps = torch.ones(1, N, N, dtype=torch.complex64).requires_grad_()
    shipped = sense(maps, MASK[0].bool())
    assert [t is maps for t in operator_tensors_with_grad(shipped)] == [True]
    assert operator_tensors_with_grad(2.0 * shipped) is not None
    w = _weight0().requires_grad_()
    for op in (_closure(w), Weighted(w), 2.0 * Weighted(w), shipped @ _closure(w)):
        assert operator_tensors_with_grad(op) is None  # found from op.gram's autograd graph


@pytest.mark.parametrize("kind", ["closure", "attribute"])
def test_plug_and_play_and_unrolled_em_differentiate_a_user_operators_weight(kind):
    # PnP-HQS (always implicit) against central differences; unrolled EM implicit against its
    # implicit=False. Was: the gradient of w missed its path through every CG solve
    x, _ = _data()
    y = Weighted(_weight0())(x)
    hqs = dict(iterations=2, rho=0.5, cg_iterations=ITERS, normalize=False)

    def hqs_loss(t):
        model = build_model("pnp_hqs", denoiser=lambda v: 0.5 * v, **hqs)
        op = _closure(t) if kind == "closure" else Weighted(t)
        return (model(y, op).abs() ** 2).sum()

    w = _weight0().requires_grad_()
    (g,) = torch.autograd.grad(hqs_loss(w), w)
    d = torch.randn(N, N, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    h = 1e-6
    with torch.no_grad():
        fd = float(hqs_loss(_weight0() + h * d) - hqs_loss(_weight0() - h * d)) / (2 * h)
    assert abs(float((g * d).sum()) - fd) <= 10 * EPS64**0.5 * abs(fd), (float((g * d).sum()), fd)

    grads = {}
    for implicit in (True, False):
        torch.manual_seed(0)
        model = build_model("unrolled_em", iterations=2, cg_iterations=ITERS, implicit=implicit,
                            init_seed=0).to(torch.float64)
        w = _weight0().requires_grad_()
        op = _closure(w) if kind == "closure" else Weighted(w)
        (grads[implicit],) = torch.autograd.grad((model(y, op).abs() ** 2).sum(), w)
    err = float((grads[True] - grads[False]).norm() / grads[False].norm())
    assert err <= 1e-6, err


def test_a_user_operator_costs_one_more_gram_a_call_while_autograd_records():
    """The documented cost of finding a user's tensors (``solve_proximal``'s ``params=None``):
    one more ``gram`` per call while autograd records, also when nothing in the operator requires
    a gradient, none under ``no_grad``; and why it is not skipped after a call that found
    nothing: a weight unfrozen later (``requires_grad_()`` on the same operator's tensor) gets
    the gradient a fresh operator gets. Was: the docstring said nothing more was applied when
    nothing required a gradient (one gram a call more than that, 3 -> 4 of a 2-step solve)."""
    calls = [0]
    w = _weight0()

    def forward(v):
        calls[0] += 1
        return MASK * fft2c(w * v)

    op = FunctionOperator(forward, lambda k: w * ifft2c(MASK * k), (N, N), (N, N))
    x, z = _data()
    y = Weighted(_weight0())(x)
    dc = ProximalDC(LAM, learnable=False, cg_iterations=ITERS, tolerance=TOL)
    with torch.no_grad():
        dc(z, y, op)  # the first meeting's operator check
    counts = {}
    for grad in (False, True):
        calls[0] = 0
        with torch.set_grad_enabled(grad):
            out = dc(z, y, op)
        counts[grad] = calls[0]
        assert not out.requires_grad
    assert counts[True] == counts[False] + 1, counts
    w.requires_grad_()
    (g,) = torch.autograd.grad((dc(z, y, op).abs() ** 2).sum(), w)
    assert torch.equal(g, _dc_grad("closure", True))
