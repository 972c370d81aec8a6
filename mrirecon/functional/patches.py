"""Overlapping square patches of 2-D images: the one patch-extraction kernel (EPLL, the patch
GMM, unrolled EM and DLMRI all use it through :class:`mrirecon.operators.Patches`).

Patch ``l`` is the row-major ``p x p`` block at ``(rows[l // n_W], cols[l % n_W])``, flattened
row-major, with the top-left corners from :func:`patch_starts`. The border rule says what
happens when the stride does not reach the last row or column exactly:

* ``"cover"``: one more row/column of patches is shifted to touch the border, so every pixel is
  in at least one patch (EPLL, Zoran & Weiss);
* ``"drop"``: the grid stops at the last full stride (``n = (N - p) // s + 1`` per axis, the
  layout of ``torch.nn.functional.unfold``); up to ``s - 1`` rows/columns at the bottom/right
  can be in no patch (DLMRI).

With ``stride = 1`` both rules give all ``(H - p + 1)(W - p + 1)`` patches.
"""

from __future__ import annotations

import torch
from torch import Tensor

BORDERS = ("cover", "drop")


def patch_starts(size: int, patch: int, stride: int, border: str = "cover") -> list[int]:
    """Top-left indices ``0, stride, 2 stride, ...`` along one axis (see the module docstring).

    ``border="cover"`` appends ``size - patch`` when the strides miss it.
    """
    if border not in BORDERS:
        raise ValueError(f"Patches: border must be one of {BORDERS}, got {border!r}")
    if not 1 <= patch <= size:
        raise ValueError(f"Patches: patch size {patch} exceeds the image size {size}"
                         if patch > size else f"Patches: patch size must be >= 1, got {patch}")
    if stride < 1:
        raise ValueError(f"Patches: stride must be >= 1, got {stride}")
    starts = list(range(0, size - patch + 1, stride))
    if border == "cover" and starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def patch_index(image_shape: tuple[int, int], patch_size: int, stride: int = 1,
                border: str = "cover") -> Tensor:
    """Flat pixel indices ``(L, p*p)`` (int64) of every patch of an ``(H, W)`` image."""
    h, w = (int(s) for s in image_shape)
    rows = patch_starts(h, patch_size, stride, border)
    cols = patch_starts(w, patch_size, stride, border)
    off = torch.arange(patch_size)
    r = torch.tensor(rows)[:, None, None, None] + off[None, None, :, None]
    c = torch.tensor(cols)[None, :, None, None] + off[None, None, None, :]
    return (r * w + c).reshape(len(rows) * len(cols), patch_size * patch_size)


def extract_patches(x: Tensor, index: Tensor) -> Tensor:
    """Patches ``(..., L, p*p)`` of images ``x`` ``(..., H, W)`` (``index`` from
    :func:`patch_index`). Real or complex."""
    return x.reshape(*x.shape[:-2], -1)[..., index]


def fold_patches(patches: Tensor, index: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Adjoint of :func:`extract_patches`: add every patch back at its place (overlap-add),
    ``(..., L, p*p) -> (..., H, W)``."""
    lead = patches.shape[:-2]
    h, w = image_shape
    out = torch.zeros(*lead, h * w, dtype=patches.dtype, device=patches.device)
    out = out.index_add(-1, index.reshape(-1), patches.reshape(*lead, -1))
    return out.reshape(*lead, h, w)


def patch_counts(index: Tensor, image_shape: tuple[int, int]) -> Tensor:
    """Number of patches covering each pixel, ``(H, W)`` float64 (the diagonal of ``P^H P``)."""
    h, w = image_shape
    counts = torch.zeros(h * w, dtype=torch.float64, device=index.device)
    counts.index_add_(0, index.reshape(-1), torch.ones(index.numel(), dtype=torch.float64,
                                                       device=index.device))
    return counts.reshape(h, w)
