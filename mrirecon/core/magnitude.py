"""Squared moduli of real or complex tensors without torch's complex ``abs``.

On the CPU, ``x.abs()`` of a complex tensor is an overflow-safe ``hypot`` per element, 2-3x the
time of ``re^2 + im^2`` on the real view (670-720 vs 210-370 us at 320 x 320 complex64), and
``abs() ** 2`` pays it only to square the result again. Everything that needs ``|x|^2`` (norms,
coil sums of squares, soft thresholding) takes it from here. The squares overflow only above
~1e19 and underflow below ~1e-19 in float32, far outside image and k-space values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def abs2(x: Tensor) -> Tensor:
    """``|x|^2`` elementwise, as a real tensor (differentiable)."""
    if not x.is_complex():
        return x * x
    r = torch.view_as_real(x.conj() if x.is_conj() else x)  # |conj x| = |x|: no copy
    return torch.addcmul(r[..., 0].square(), r[..., 1], r[..., 1])


def sum_abs2(x: Tensor, dim: int | Sequence[int], keepdim: bool = False) -> Tensor:
    """``sum |x|^2`` over ``dim`` (axes of ``x``), as a real tensor (differentiable)."""
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not x.is_complex():
        return (x * x).sum(dim=dims, keepdim=keepdim)
    # one more trailing axis: negative axes shift by one; |conj x| = |x| (view_as_real refuses
    # a lazy conjugate)
    r = torch.view_as_real(x.conj() if x.is_conj() else x)
    rdims = tuple(d - 1 if d < 0 else d for d in dims)
    out = (r * r).sum(dim=(*rdims, -1), keepdim=keepdim)
    return out.squeeze(-1) if keepdim else out


def power_of_two_above(peak: Tensor) -> Tensor:
    """The smallest power of two strictly above each ``peak`` (``2`` for a peak of 1, and
    where it is 0), same shape and dtype.

    Dividing by it brings values of any magnitude near 1 exactly (a power of two rescales every
    float without rounding), so squares computed afterwards neither underflow (data at 1e-30)
    nor overflow (1e30) in float32, and results at ordinary scales stay bit for bit."""
    _, exponent = torch.frexp(torch.where(peak > 0, peak, torch.ones_like(peak)))
    return torch.ldexp(torch.ones_like(peak), exponent)


def sample_power_of_two(x: Tensor) -> Tensor:
    """:func:`power_of_two_above` the peak ``|x|`` of each sample (all axes but the first),
    shaped ``(B, 1, ..., 1)`` to divide ``x`` by; computed without gradient (an exact rescale
    the models undo, so it carries none)."""
    peak = x.detach().abs().reshape(x.shape[0], -1).amax(dim=1)
    return power_of_two_above(peak).reshape((-1,) + (1,) * (x.ndim - 1))
