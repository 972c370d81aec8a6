"""PNG figures (matplotlib, Agg backend), written atomically."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrirecon.io.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_png(image: np.ndarray, path: str | Path, *, vmin: float | None = None,
             vmax: float | None = None, cmap: str = "gray") -> Path:
    """Save a 2-D array as a grey-scale PNG (one pixel per sample)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"save_png: {path}: image must be 2-D, got shape {image.shape}")
    plt = _plt()
    with atomic_path(path, suffix=".png") as tmp:
        plt.imsave(tmp, image, cmap=cmap, vmin=vmin, vmax=vmax, format="png")
    return Path(path)


def save_panel(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, *,
               vmax: float | None = None, error_index: int | None = None,
               suptitle: str = "") -> Path:
    """Save images side by side with titles; ``error_index`` marks an error map (own scale)."""
    plt = _plt()
    n = len(images)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for i, (img, title) in enumerate(zip(images, titles)):
        ax = axes[0, i]
        img = np.asarray(img, dtype=np.float32)
        if error_index is not None and i == error_index:
            im = ax.imshow(img, cmap="magma")
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(img, cmap="gray", vmin=0, vmax=vmax if vmax is not None else float(img.max()))
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(path)


def save_line_plot(x: Sequence[float], ys: dict[str, Sequence[float]], path: str | Path, *,
                   xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """A small line plot (e.g. SSIM against acceleration per method)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, y in ys.items():
        ax.plot(list(x), list(y), marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(path)
