"""One coil-combination kernel: ``functional.coil_combine`` (``sum_c conj(S_c) x_c``), which the
SENSE operators' ``coil_reduce``, the Inati combination and the partial-echo phase call."""

from __future__ import annotations

import pytest
import torch

from mrirecon.functional import coil_combine
from mrirecon.functional.coils import center_crop, center_pad
from mrirecon.operators.mri import coil_reduce


def _old_coil_reduce(maps, x):
    """``operators.mri.coil_reduce`` as it was written before it called :func:`coil_combine`."""
    if maps.dtype != x.dtype:
        common = torch.promote_types(maps.dtype, x.dtype)
        maps, x = maps.to(common), x.to(common)
    return torch.einsum("...chw,...chw->...hw", maps.conj(), x)


SHAPES = [(1, 8, 8), (4, 17, 13), (15, 64, 40), (32, 33, 17), (2, 8, 16, 16), (3, 2, 5, 9, 7)]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("shape", SHAPES)
def test_coil_combine_is_the_operators_coil_reduction_bit_for_bit(shape, dtype):
    g = torch.Generator().manual_seed(sum(shape))
    maps = torch.randn(shape, dtype=dtype, generator=g)
    x = torch.randn(shape, dtype=dtype, generator=g)
    want = _old_coil_reduce(maps, x)
    assert torch.equal(coil_combine(x, maps), want)
    assert torch.equal(coil_reduce(maps, x), want)


def test_mixed_precision_is_promoted_as_before():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(4, 9, 9, dtype=torch.complex64, generator=g)
    x = torch.randn(4, 9, 9, dtype=torch.complex128, generator=g)
    out = coil_combine(x, maps)
    assert out.dtype == torch.complex128 and torch.equal(out, _old_coil_reduce(maps, x))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("coils", [1, 2, 8, 15, 32])
def test_the_replaced_inline_sums_agree_to_rounding(coils, dtype):
    """``calib/walsh.py`` and ``pipeline/echo_noncartesian.py`` summed ``conj(S) * x`` over the
    coil axis themselves; the kernel's batched product sums in another order: the two agree to
    the rounding of a ``coils``-term sum, ``coils * eps * sum_c |S_c x_c|``."""
    g = torch.Generator().manual_seed(coils)
    maps = torch.randn(coils, 33, 17, dtype=dtype, generator=g)
    x = torch.randn(coils, 33, 17, dtype=dtype, generator=g)
    inline = torch.sum(maps.conj() * x, dim=0)
    bound = coils * torch.finfo(x.real.dtype).eps * (maps.abs() * x.abs()).sum(dim=0)
    assert bool(((coil_combine(x, maps) - inline).abs() <= bound).all())


def test_complex_to_channels_puts_every_real_part_before_every_imaginary_part():
    """fastMRI's layout, as its docstring says: channel c's real part at c, imaginary at C + c."""
    from mrirecon.functional.coils import channels_to_complex, complex_to_channels

    x = torch.tensor([[1 + 10j, 2 + 20j, 3 + 30j]], dtype=torch.complex64)[..., None]
    ch = complex_to_channels(x)
    assert ch[0, :, 0].tolist() == [1, 2, 3, 10, 20, 30]
    assert torch.equal(channels_to_complex(ch), x)


@pytest.mark.parametrize("big,small", [((7, 9), (4, 4)), ((6, 9), (3, 6)), ((5, 5), (5, 2))])
def test_center_pad_is_the_adjoint_of_center_crop(big, small):
    """Fails if coils.py:56 ``(h - H) // 2`` -> ``(h - H + 1) // 2``: for odd size
    differences the pad must put the block where the crop takes it from."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, *big, dtype=torch.float64, generator=g)
    y = torch.randn(2, *small, dtype=torch.float64, generator=g)
    lhs = (center_crop(x, small) * y).sum()
    rhs = (x * center_pad(y, big)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)
    assert torch.equal(center_crop(center_pad(y, big), small), y)
