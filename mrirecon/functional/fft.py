"""Centred, orthonormal 2-D Fourier transforms over the last two axes (the only copy).

``fft2c(x) = fftshift(fft2(ifftshift(x)))`` with ``norm="ortho"``, so ``ifft2c`` is its exact
inverse and adjoint. The k-space centre (DC) sits at index ``N // 2`` along each axis, as in
fastMRI files.

For even ``H`` and ``W`` the shifts are not copied: a shift by ``N / 2`` on one side of a DFT
is the modulation ``(-1)^n`` on the other, so ``fft2c(x) = c' * fft2(c * x)`` with the
checkerboard ``c[h, w] = (-1)^(h + w)`` and ``c' = (-1)^((H + W) / 2) c`` (the same for the
inverse). Two exact sign multiplications replace four copies (torch rolls a 2-D shift as two
1-D ones): 8 x 320 x 320 complex64 ``ifft2c`` 12 instead of 17.5 ms on one thread, 6-9
instead of 10-12 ms on two. Odd sizes take the shifts.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from mrirecon.core.caches import register as register_cache

_DIMS = (-2, -1)


@functools.lru_cache(maxsize=32)
def _checkerboard(h: int, w: int, dtype: torch.dtype, device: torch.device, sign: int) -> Tensor:
    """``sign * (-1)^(row + column)`` as an ``(h, w)`` tensor of ``dtype`` (cached)."""
    with torch.inference_mode(False):  # a normal tensor: usable inside and outside
        parity = (torch.arange(h, device=device)[:, None] + torch.arange(w, device=device)) % 2
        return ((1 - 2 * parity) * sign).to(dtype)


register_cache(_checkerboard.cache_clear)


#: How to turn fastMRI's real layout ``(..., 2)`` into the complex tensors taken here; the one
#: wording of every refusal of that layout (:func:`check_not_real_pairs`, ``recon.checks``)
REAL_PAIRS_HINT = "torch.view_as_complex for real pairs (..., 2)"


def check_not_real_pairs(x: Tensor, who: str, dim: int | None = None) -> None:
    """Refuse fastMRI's real layout of complex data, ``(..., H, W, 2)`` (real and imaginary
    parts on a trailing axis of 2, ``fastmri.data.transforms.to_tensor``), where a complex
    tensor is expected: a real tensor of at least 3 axes whose last one is 2. Taken as data,
    ``ifft2c`` transformed the axes ``(W, 2)`` and ``rss`` kept the trailing 2, without error.

    Real images stay legitimate inputs: a 2-D image of any width, and a stack whose last axis
    is not 2 (an image of width 2 in a stack is the one real input this refuses; none is made
    here). ``dim``: the axis a reduction runs over; the pair axis itself is allowed (``rss``
    over it is ``|z|``).
    """
    if (isinstance(x, Tensor) and not x.is_complex() and x.ndim >= 3 and x.shape[-1] == 2
            and (dim is None or dim % x.ndim != x.ndim - 1)):
        raise TypeError(f"{who}: got a real {x.dtype} tensor {tuple(x.shape)} whose last axis is 2, "
                        "fastMRI's layout of complex data as real pairs; here data are complex "
                        f"tensors (..., H, W): pass the complex tensor ({REAL_PAIRS_HINT})")


def _centred(x: Tensor, transform) -> Tensor:
    check_not_real_pairs(x, "fft2c" if transform is torch.fft.fft2 else "ifft2c")
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = torch.fft.ifftshift(x, dim=_DIMS)
        return torch.fft.fftshift(transform(x, dim=_DIMS, norm="ortho"), dim=_DIMS)
    y = transform(x * _checkerboard(h, w, x.dtype, x.device, 1), dim=_DIMS, norm="ortho")
    return y.mul_(_checkerboard(h, w, y.dtype, y.device, -1 if (h // 2 + w // 2) % 2 else 1))


def fft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D FFT of a complex tensor ``(..., H, W)``."""
    return _centred(x, torch.fft.fft2)


def ifft2c(x: Tensor) -> Tensor:
    """Centred orthonormal 2-D inverse FFT of a complex tensor ``(..., H, W)``."""
    return _centred(x, torch.fft.ifft2)


def uncentred_fft2(x: Tensor) -> Tensor:
    """Orthonormal FFT without shifts (used where the shifts cancel, e.g. in a gram)."""
    return torch.fft.fft2(x, dim=_DIMS, norm="ortho")


def uncentred_ifft2(x: Tensor) -> Tensor:
    """Orthonormal inverse FFT without shifts."""
    return torch.fft.ifft2(x, dim=_DIMS, norm="ortho")


def fftc(x: Tensor, dim: int) -> Tensor:
    """Centred orthonormal 1-D FFT along ``dim``."""
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.fft(x, dim=dim, norm="ortho"), dim=dim)


def ifftc(x: Tensor, dim: int) -> Tensor:
    """Centred orthonormal 1-D inverse FFT along ``dim``."""
    x = torch.fft.ifftshift(x, dim=dim)
    return torch.fft.fftshift(torch.fft.ifft(x, dim=dim, norm="ortho"), dim=dim)


def crop_readout(kspace: Tensor, rows: int) -> Tensor:
    """Remove readout oversampling: k-space ``(..., H, W)`` -> ``(..., rows, W)``.

    Inverse FFT along the readout (``H``), keep the central ``rows`` positions of that hybrid
    space, FFT back. With the orthonormal transforms ``ifft2c(crop_readout(k, rows))`` equals
    ``center_crop(ifft2c(k), (rows, W))`` (same values, same scale); the phase-encoding
    samples (and any mask over ``W``) are untouched.
    """
    h = kspace.shape[-2]
    if not 0 < rows <= h:
        raise ValueError(f"crop_readout: rows must be in [1, {h}], got {rows}")
    if rows == h:
        return kspace
    if h % 2 == 0 and rows % 2 == 0:
        # Even lengths: the four centring shifts cancel. The central ``rows`` positions of the
        # centred hybrid space are, in the uncentred inverse FFT of the k-space as stored, the
        # first and last ``rows / 2`` positions; gathered with the origin first, their uncentred
        # FFT is the centred cropped k-space. Two FFTs and one half-size gather instead of
        # four shift copies (exact: tests/pipeline/test_oversampling.py). The FFT along H hands
        # back an H-major layout; made row-major again, every later pass over the k-space runs
        # on contiguous memory (the copy costs less than it saves: 18 ms on 8 x 320 x 320).
        z = torch.fft.ifft(kspace, dim=-2, norm="ortho")
        q = rows // 2
        out = torch.fft.fft(torch.cat([z[..., :q, :], z[..., h - q :, :]], dim=-2), dim=-2, norm="ortho")
        return out.contiguous()
    start = (h - rows) // 2  # as center_crop (fastMRI's convention)
    hybrid = ifftc(kspace, dim=-2)[..., start : start + rows, :]
    return fftc(hybrid, dim=-2)
