"""Helpers shared by the unrolled models: optional gradient checkpointing and data scaling."""

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


def batch_scale(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample ``max |x|`` over all axes but the first, shaped ``(B, 1, ..., 1)``."""
    if x.ndim < 2:
        raise ValueError(f"expected a batch axis first, got shape {tuple(x.shape)}")
    s = x.detach().abs().reshape(x.shape[0], -1).amax(dim=1).clamp_min(eps)
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
