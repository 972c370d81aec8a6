"""The group norm of the TV proxes (``group_soft_threshold``, ``project_group_l2_ball``):
``sqrt(sum |x|^2)`` outside autograd, the same numbers as ``vector_norm`` to float32 rounding,
and ``vector_norm`` (zero gradient at a zero group) while autograd records."""

import pytest
import torch

import mrirecon.solvers.prox as prox
from mrirecon.solvers import group_soft_threshold, project_group_l2_ball
from mrirecon.solvers.prox import group_norm


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64])
@pytest.mark.parametrize("dim", [-3, 0, (0, -1)])
def test_group_norm_matches_float64_norm(dtype, dim):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 17, 19, generator=g, dtype=dtype)
    x[..., :3, :] = 0  # zero groups
    ref = torch.linalg.vector_norm(x.to(torch.complex128 if x.is_complex() else torch.float64),
                                   dim=dim, keepdim=True)
    out = group_norm(x, dim)
    assert out.dtype == x.real.dtype and out.shape == ref.shape
    # a sum of n squares (n real numbers a group) and a square root, in float32: the sum's
    # relative error is at most n u (u = eps / 2, whatever order the CPU's vector units add
    # in), halved by the root, plus the root's own u; typically ~1 eps (measured)
    eps = torch.finfo(torch.float32).eps
    dims = (dim,) if isinstance(dim, int) else dim
    n = (2 if x.is_complex() else 1) * int(torch.tensor([x.shape[d] for d in dims]).prod())
    torch.testing.assert_close(out.double(), ref, rtol=(n / 4 + 1) * eps, atol=0)


def test_tv_proxes_skip_the_slow_vector_norm(monkeypatch):
    """torch's vector_norm over TV's short gradient axis took ~100x the time of the sum of
    squares (11 ms against 0.1 ms at 2 x 362 x 362, one thread: a quarter of tv_ct's time): the
    proxes no longer call it outside autograd, and give the values they gave with it."""
    g = torch.Generator().manual_seed(2)
    v = torch.randn(2, 2, 40, 30, generator=g)
    expected = (group_soft_threshold(v, 0.7, dim=-3), project_group_l2_ball(v, 0.5, dim=-3))

    def refuse(*args, **kwargs):
        raise AssertionError("vector_norm called outside autograd")

    monkeypatch.setattr(prox.torch.linalg, "vector_norm", refuse)
    got = (group_soft_threshold(v, 0.7, dim=-3), project_group_l2_ball(v, 0.5, dim=-3))
    eps = torch.finfo(torch.float32).eps
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=4 * eps * float(v.abs().max()))


def test_group_soft_threshold_gradient_at_a_zero_group_is_finite():
    """Under autograd the norm is vector_norm's: sqrt's derivative at a zero group is inf (NaN
    gradient); the prox's gradient there is 0."""
    x = torch.zeros(2, 3, 4, dtype=torch.float64)
    x[:, 0] = torch.tensor([3.0, 4.0]).view(2, 1)
    x.requires_grad_(True)
    out = group_soft_threshold(x, 1.0, dim=0)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[:, 1:] == 0)
    torch.testing.assert_close(out.detach()[:, 0], torch.tensor([2.4, 3.2], dtype=torch.float64)
                               .view(2, 1).expand(2, 4))
