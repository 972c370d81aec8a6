"""Helpers for notebooks and reports: image grids, point-spread functions, and the folder a
notebook writes its results to (:func:`results_folder`).

matplotlib is imported lazily inside the plotting functions, so importing this module costs
nothing; :func:`point_spread_function` needs torch only.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mrirecon.functional import ifft2c
from mrirecon.mpl import import_matplotlib

__all__ = ["image_grid", "point_spread_function", "results_folder"]


def _as_image(x) -> np.ndarray:
    """Tensor or array ``(H, W)`` (complex allowed) -> real numpy magnitude (or real values)."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        x = x.abs() if x.is_complex() else x
        x = x.numpy()
    x = np.asarray(x)
    if np.iscomplexobj(x):
        x = np.abs(x)
    x = np.squeeze(x)
    if x.ndim != 2:
        raise ValueError(f"image_grid: every image must be 2-D (H, W) after squeezing, got shape {x.shape}")
    return x.astype(np.float64)


def image_grid(
    images: Sequence,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    cmap: str = "gray",
    vmin: float | None = None,
    vmax: float | Sequence[float | None] | None = None,
    size: float = 2.6,
    suptitle: str | None = None,
    colorbar: bool = False,
):
    """Show images side by side in a grid of axes without ticks.

    Parameters
    ----------
    images
        Sequence of 2-D images ``(H, W)`` (torch tensors or numpy arrays, singleton axes are
        squeezed); complex images are shown as magnitudes.
    titles
        One title per image (same length as ``images``).
    ncols
        Columns of the grid (default: all images in one row, at most 6 per row).
    cmap, vmin, vmax
        Colour map and display range; ``vmax`` may be one value per image. ``None`` lets each
        image use its own range.
    size
        Side of one panel in inches.
    suptitle
        Figure title.
    colorbar
        Add a colour bar to every panel.

    Returns
    -------
    (Figure, ndarray of Axes)
        The figure and the flat array of its axes (unused axes are hidden).
    """
    import_matplotlib()  # an invalid MPLBACKEND: pyplot on matplotlib's default backend
    import matplotlib.pyplot as plt

    pictures = [_as_image(im) for im in images]
    n = len(pictures)
    if n == 0:
        raise ValueError("image_grid: no images given")
    if titles is not None and len(titles) != n:
        raise ValueError(f"image_grid: got {n} images but {len(titles)} titles")
    vmaxes = list(vmax) if isinstance(vmax, (list, tuple)) else [vmax] * n
    if len(vmaxes) != n:
        raise ValueError(f"image_grid: got {n} images but {len(vmaxes)} vmax values")
    ncols = min(n, 6) if ncols is None else max(1, int(ncols))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False)
    axes = axes.ravel()
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_visible(False)
            continue
        shown = ax.imshow(pictures[i], cmap=cmap, vmin=vmin, vmax=vmaxes[i])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        if colorbar:
            fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig, axes


def point_spread_function(mask: Tensor | np.ndarray, shape: tuple[int, int] | None = None) -> Tensor:
    """Point-spread function ``|F^H m|`` of a k-space sampling mask, peak normalised to 1.

    The PSF is the image of a centred point source reconstructed by zero filling: its centre
    is at ``(H // 2, W // 2)`` and its side lobes are the aliasing the mask causes (coherent
    ghosts for equispaced masks, noise-like spread for random and Poisson-disc masks).

    Parameters
    ----------
    mask
        Sampling mask, a column mask ``(W,)`` / ``(1, W)`` or a 2-D mask ``(H, W)`` (0/1 or
        bool).
    shape
        ``(H, W)`` to broadcast a column mask to; required for a column mask.

    Returns
    -------
    Tensor
        ``(H, W)`` float64 magnitude with maximum 1.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask).to(torch.float64)
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2:
        raise ValueError(f"point_spread_function: mask must be (W,), (1, W) or (H, W), got {tuple(m.shape)}")
    if m.shape[0] == 1:
        if shape is None:
            raise ValueError("point_spread_function: a column mask needs shape=(H, W)")
        if int(shape[1]) != m.shape[1]:
            raise ValueError(f"point_spread_function: mask has {m.shape[1]} columns but shape is {tuple(shape)}")
        m = m.expand(int(shape[0]), m.shape[1])
    elif shape is not None and tuple(shape) != tuple(m.shape):
        raise ValueError(f"point_spread_function: mask shape {tuple(m.shape)} differs from shape {tuple(shape)}")
    if not torch.any(m != 0):
        raise ValueError("point_spread_function: the mask samples nothing")
    psf = ifft2c(m.to(torch.complex128)).abs()
    return psf / psf.max()


def results_folder(value: str | os.PathLike | None, variable: str = "MRIRECON_NB_OUT") -> Path | None:
    """The folder a notebook writes its results JSON to, checked at the notebook's start.

    ``value`` is the environment variable's value (``os.environ.get(variable)``): unset or
    empty gives ``None`` (no results file); otherwise the folder is created (with its parents)
    when missing and checked to be writable, so that a bad path fails in the first cell, not
    in the last one after minutes of work (a missing folder raised a bare ``FileNotFoundError``
    there, notebook 04 after 402 s of benchmark).

    Raises
    ------
    NotADirectoryError
        The path, or one of its parents, is a file.
    PermissionError
        The folder cannot be created or written to.
    """
    if value is None or not str(value).strip():
        return None
    folder = Path(value).expanduser()
    what = f"{variable}={str(value)!r}"
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{what}: {folder} is a file, not a folder for the notebook's "
                                 "results; point it to a folder (it is created when missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # writable? (removed on closing)
            pass
    except (FileExistsError, NotADirectoryError) as err:  # a parent is a file
        raise NotADirectoryError(f"{what}: cannot create the results folder {folder}: "
                                 f"{err.strerror or err} (a parent is a file?)") from err
    except OSError as err:
        raise PermissionError(f"{what}: cannot create or write to the results folder {folder}: "
                              f"{err.strerror or err}; point it to a writable folder") from err
    return folder
