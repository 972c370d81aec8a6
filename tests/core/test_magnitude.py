"""mrirecon.core.magnitude against torch's abs() ** 2 (values, axes, keepdim, gradients)."""

import pytest
import torch

from mrirecon.core.magnitude import abs2, power_of_two_above, sample_power_of_two, sum_abs2


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64, torch.complex128])
@pytest.mark.parametrize("dim", [-1, (-2, -1), 0, (0, 2), -3])
@pytest.mark.parametrize("keepdim", [False, True])
def test_sum_abs2_equals_abs_squared(dtype, dim, keepdim):
    x = torch.randn(3, 4, 5, dtype=dtype, generator=torch.Generator().manual_seed(0))
    ref = (x.abs() ** 2).sum(dim=dim, keepdim=keepdim)
    got = sum_abs2(x, dim, keepdim=keepdim)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    eps = torch.finfo(ref.dtype).eps
    torch.testing.assert_close(got, ref, rtol=8 * eps, atol=0)  # a few roundings per term


def test_abs2_values_and_gradient():
    x = torch.randn(6, 7, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    x[0, 0] = 0  # |x| = 0: no NaN
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    abs2(a).sum().backward()
    (b.abs() ** 2).sum().backward()
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(abs2(x), x.abs() ** 2, rtol=8 * eps, atol=0)
    torch.testing.assert_close(a.grad, b.grad, rtol=8 * eps, atol=8 * eps)
    assert torch.isfinite(a.grad).all()
    r = torch.tensor([-2.0, 3.0])
    assert torch.equal(abs2(r), torch.tensor([4.0, 9.0]))


def test_sample_power_of_two_is_per_sample():
    """Fails if one peak over the whole batch.

    VarNet, learned-maps MoDL, staged CT and DPIR divide each sample by its own power of two:
    with one batch-wide peak a sample's output would depend on the others in its batch."""
    x = torch.zeros(3, 2, 4, 4, dtype=torch.complex64)
    x[0, 0, 1, 1] = 0.3
    x[1, 1, 2, 3] = 100.0j
    x[2, 0, 0, 0] = -0.7
    got = sample_power_of_two(x)
    assert got.shape == (3, 1, 1, 1)
    want = power_of_two_above(torch.tensor([0.3, 100.0, 0.7]))
    torch.testing.assert_close(got.reshape(-1), want, rtol=0, atol=0)
    torch.testing.assert_close(want, torch.tensor([0.5, 128.0, 1.0]), rtol=0, atol=0)
