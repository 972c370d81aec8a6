"""Helpers shared by the unrolled models: optional gradient checkpointing, data scaling and the
geometric self-ensemble."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mrirecon.core import LinearOperator


def run_stage(fn: Callable[..., Tensor], *args, checkpointing: bool = False):
    """Call ``fn(*args)``; with ``checkpointing`` (and grad enabled) recompute it in backward.

    Uses ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, so non-tensor
    arguments such as operators pass through and dropout RNG state is preserved.
    """
    if checkpointing and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def batch_scale(x: Tensor) -> Tensor:
    """Per-sample ``max |x|`` over all axes but the first, shaped ``(B, 1, ..., 1)``; 1 for an
    all-zero sample. No floor: a fixed epsilon (1e-12 before) made the output stop following the
    data below it (k-space at 1e-20 gave images 1e9 too bright), and the scanner's units are
    arbitrary."""
    if x.ndim < 2:
        raise ValueError(f"expected a batch axis first, got shape {tuple(x.shape)}")
    s = x.detach().abs().reshape(x.shape[0], -1).amax(dim=1)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s.reshape((-1,) + (1,) * (x.ndim - 1))


def normalized_data(y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor, Tensor]:
    """Scale ``y`` so that ``max |A^H y| = 1`` per sample.

    Returns ``(y / s, A^H y / s, s_img)`` where ``s_img`` is the scale shaped like the image
    batch; multiply a reconstruction by it to return to the data's units (``A`` is linear).
    Models whose nonlinearities have a fixed range (RBF activations, thresholds) need this.
    """
    aty = op.H(y)
    s_img = batch_scale(aty)
    s_data = s_img.reshape((-1,) + (1,) * (y.ndim - 1))
    return y / s_data, aty / s_img, s_img


def require_batch(name: str, y: Tensor, min_ndim: int = 2) -> None:
    """Raise a ValueError naming the model unless ``y`` has a leading batch axis."""
    if not isinstance(y, Tensor) or y.ndim < min_ndim:
        raise ValueError(
            f"{name}: data y must have a leading batch axis and at least {min_ndim} dims, "
            f"got {tuple(getattr(y, 'shape', ()))}"
        )


def dihedral(x: Tensor, t: int, inverse: bool = False) -> Tensor:
    """Transform ``t`` (0..7) of the dihedral group of the square on the last two axes: transpose
    when ``t & 4``, then flip the rows when ``t & 1`` and the columns when ``t & 2`` (``t = 5`` is
    ``rot90`` by +90 degrees, ``6`` by -90, ``3`` by 180); ``inverse`` undoes it."""
    dims = [d for d, bit in ((-2, 1), (-1, 2)) if t & bit]
    if inverse:
        x = x.flip(dims) if dims else x
        return x.transpose(-1, -2) if t & 4 else x
    x = x.transpose(-1, -2) if t & 4 else x
    return x.flip(dims) if dims else x


def dihedral_mean(fn: Callable[..., Tensor], x: Tensor, *args) -> Tensor:
    """Geometric self-ensemble: the mean of ``T^-1 fn(T x, *args)`` over the 8 flips and
    transposes ``T`` of the last two axes (the dihedral group of the square).

    The result is exactly equivariant to those 8 transforms whatever ``fn`` is, and equals
    ``fn(x)`` when ``fn`` already is. ``fn`` must map an image to an image of the same layout
    (fully convolutional, so a transposed non-square input is fine); it is called 8 times.
    """
    acc = None
    for t in range(8):
        r = dihedral(fn(dihedral(x, t), *args), t, inverse=True)
        acc = r if acc is None else acc + r
    return acc / 8
