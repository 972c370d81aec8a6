"""core.checks.finite_and_nonzero: the one-pass finite / nonzero test of the pipelines' input
checks agrees with isfinite().all() and (x != 0).any() on every kind of bad value."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core.checks import finite_and_nonzero

F64_EPS = torch.finfo(torch.float64).eps


def _exact(x: torch.Tensor) -> tuple[bool, bool]:
    r = torch.view_as_real(x) if x.is_complex() else x
    return bool(torch.isfinite(r).all()), bool((r != 0).any())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.complex128])
@pytest.mark.parametrize("bad", [None, "nan", "inf", "-inf", "nan_imag", "zeros", "one_tiny"])
def test_finite_and_nonzero_matches_the_elementwise_checks(dtype, bad):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 7, 9, generator=g, dtype=dtype)
    if bad == "zeros":
        x = torch.zeros_like(x)
    elif bad == "one_tiny":  # a single subnormal value is still nonzero
        x = torch.zeros_like(x)
        x[1, 2, 3] = torch.finfo(x.real.dtype).smallest_normal / 4
    elif bad is not None:
        value = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "nan_imag": float("nan")}[bad]
        if bad == "nan_imag" and x.is_complex():
            x[2, 5, 1] = complex(1.0, value)
        else:
            x[2, 5, 1] = value
    assert finite_and_nonzero(x) == _exact(x)


def test_finite_and_nonzero_of_an_empty_tensor():
    assert finite_and_nonzero(torch.zeros(0, dtype=torch.complex64)) == (True, False)


def test_a_learned_lam_keeps_its_gradient_through_cg_sense():
    """Fails if ``checked_weight`` turning a
    ``requires_grad`` tensor into a float, cutting the graph.

    The documented contract ("a tensor that requires grad is returned as it is"): ``d out / d lam``
    of cg_sense, by autograd, matches central differences of the same computation (float64,
    fixed iterations)."""
    from mrirecon.core.checks import checked_weight
    from mrirecon.operators import sense
    from mrirecon.recon import cg_sense

    lam_t = torch.tensor(0.05, dtype=torch.float64, requires_grad=True)
    kept = checked_weight("t", "lam", lam_t)
    assert kept.requires_grad and kept.shape == ()

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 8, 8, dtype=torch.complex128, generator=g)
    mask = torch.zeros(8, dtype=torch.float64)
    mask[::2] = 1
    mask[3:5] = 1
    op = sense(maps, mask)
    y = op(torch.randn(8, 8, dtype=torch.complex128, generator=g))

    def loss(lam):
        return cg_sense(y, op, lam=lam, iterations=6, tolerance=1e-30).abs().square().sum()

    (grad,) = torch.autograd.grad(loss(lam_t), lam_t)
    h = 1e-6
    fd = float((loss(0.05 + h) - loss(0.05 - h)) / (2 * h))
    assert abs(float(grad) - fd) <= 10 * F64_EPS ** 0.5 * abs(fd)


def test_a_learned_lam_is_checked_without_a_warning(monkeypatch):
    """``checked_weight`` reads a learned ``lam`` (a tensor that requires grad) detached: torch's
    "Converting a tensor with requires_grad=True to a scalar" warned before (once per process,
    so the conversion itself is watched here), and failed the call under ``-W error``."""
    from mrirecon.core.checks import checked_weight

    real = torch.Tensor.__float__

    def watched(self):
        assert not self.requires_grad, "float() of a tensor that requires grad"
        return real(self)

    monkeypatch.setattr(torch.Tensor, "__float__", watched)
    lam = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    out = checked_weight("cg_sense", "lam", lam)
    assert out.requires_grad and float(out.detach()) == 0.1
    with pytest.raises(ValueError, match="lam must be >= 0 and finite"):
        checked_weight("cg_sense", "lam", torch.tensor(-1.0, requires_grad=True))
