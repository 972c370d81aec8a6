"""Coil-combination and cropping kernels."""

from __future__ import annotations

import torch
from torch import Tensor

from mrirecon.core.magnitude import sum_abs2
from mrirecon.functional.fft import check_not_real_pairs


def rss(x: Tensor, dim: int = -3) -> Tensor:
    """Root-sum-of-squares over the coil axis ``dim`` (complex or real input, real output).

    A real input whose last axis is 2 (fastMRI's real pairs ``(..., H, W, 2)``) is refused
    unless ``dim`` is that axis (:func:`~mrirecon.functional.fft.check_not_real_pairs`)."""
    check_not_real_pairs(x, "rss", dim)
    return sum_abs2(x, dim).sqrt()


def coil_combine(x: Tensor, maps: Tensor) -> Tensor:
    """Sensitivity-weighted combination ``sum_c conj(S_c) x_c`` of coil images ``x`` and maps
    ``(..., C, H, W)`` over the coil axis -3 -> ``(..., H, W)``; differentiable.

    The one coil-combination kernel: the SENSE operators' adjoint
    (:func:`mrirecon.operators.mri.coil_reduce`), the Inati combination and the partial-echo
    phase call it. With maps normalised to unit sum of squares it is the optimal (Roemer)
    combination. Different complex dtypes are promoted to the common one (complex128 data from
    NumPy arithmetic with complex64 maps). A batched product (``einsum``), whose sum over the
    coils rounds differently from ``(conj(S) * x).sum(-3)`` (a few float eps at 32 coils)."""
    if maps.dtype != x.dtype:
        common = torch.promote_types(maps.dtype, x.dtype)
        maps, x = maps.to(common), x.to(common)
    return torch.einsum("...chw,...chw->...hw", maps.conj(), x)


def center_crop(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """Crop the last two axes to ``shape`` around the centre (fastMRI's convention).

    The crop starts at ``(N - n) // 2``, which matches ``fastmri.data.transforms.center_crop``.
    """
    h, w = int(shape[0]), int(shape[1])
    H, W = x.shape[-2], x.shape[-1]
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"center_crop: crop size {(h, w)} does not fit input {(H, W)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def center_pad(x: Tensor, shape: tuple[int, int]) -> Tensor:
    """Zero-pad the last two axes to ``shape``; the adjoint of :func:`center_crop`."""
    h, w = int(shape[0]), int(shape[1])
    H, W = x.shape[-2], x.shape[-1]
    if h < H or w < W:
        raise ValueError(f"center_pad: target size {(h, w)} is smaller than input {(H, W)}")
    top, left = (h - H) // 2, (w - W) // 2
    out = x.new_zeros(x.shape[:-2] + (h, w))
    out[..., top : top + H, left : left + W] = x
    return out


def complex_to_channels(x: Tensor, dim: int = 1) -> Tensor:
    """complex ``(B, C, ...)`` -> real ``(B, 2C, ...)``: the real parts of the ``C`` channels,
    then their imaginary parts (channel ``c``'s real part at ``c``, its imaginary part at
    ``C + c``; fastMRI's layout), not interleaved per channel."""
    return torch.cat([x.real, x.imag], dim=dim)


def channels_to_complex(x: Tensor, dim: int = 1) -> Tensor:
    """Inverse of :func:`complex_to_channels`.

    Half-precision channels (a CNN's output under ``torch.autocast``, bfloat16 with the trainer's
    ``amp: true``) give ``complex64``, not ``complex32``: bfloat16 has no complex type (the
    training step failed in ``torch.complex``) and float16's ``complex32`` lacks most operators.
    The cast is differentiable, so gradients reach the CNN in its own precision.
    """
    re, im = torch.chunk(x, 2, dim=dim)
    if re.dtype in (torch.float16, torch.bfloat16):
        re, im = re.float(), im.float()
    return torch.complex(re.contiguous(), im.contiguous())
