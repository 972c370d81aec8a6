"""core.checks.finite_and_nonzero: the one-pass finite / nonzero test of the pipelines' input
checks agrees with isfinite().all() and (x != 0).any() on every kind of bad value."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core.checks import finite_and_nonzero


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
