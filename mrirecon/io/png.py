"""PNG figures (matplotlib), written atomically.

The writers draw without pyplot: a :class:`matplotlib.figure.Figure` of their own, saved as PNG
(the Agg canvas is picked for that one call), and :func:`matplotlib.image.imsave`. They leave
the process's backend and pyplot's figures as they were: switching to Agg
(``matplotlib.use``) stopped a notebook's ``%matplotlib inline`` figures after the first
``run_pipeline`` with PNG export, with no word.

The backend does not matter to them, so an invalid ``MPLBACKEND`` in the environment does not
either (:func:`mrirecon.mpl.import_matplotlib`, the package's one way to import matplotlib):
matplotlib refuses one when it is imported ("Key backend: 'garbage' is not a valid value for
backend"), and every input of a run with PNG export failed
after its reconstruction, naming no variable.

The image writers take real 2-D arrays only and refuse, as the NIfTI, DICOM and HDF5 writers do,
what a picture cannot show faithfully: complex images (pass the magnitude, ``np.abs(x)``, or a
real part explicitly; the real part was written silently, with only numpy's ComplexWarning),
NaN / Inf values (one NaN pixel made the whole PNG transparent, one Inf pixel made it black)
and images that are not 2-D. The errors name the function, the file and the argument.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mrirecon.io.atomic import atomic_path
from mrirecon.io.errors import refuse_nonfinite
from mrirecon.mpl import import_matplotlib


def _figure(width: float, height: float):
    """A matplotlib figure of ``width`` x ``height`` inches that pyplot does not know of."""
    import_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def _save_figure(fig, path: str | Path) -> Path:
    """``fig`` as a 100 dpi PNG at ``path``, written atomically."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return Path(path)


def _checked_image(image, who: str, path, what: str) -> np.ndarray:
    """``image`` (array or tensor) as a float64 ``(H, W)`` array, or a clear error naming
    ``who``, ``path`` and the argument ``what``."""
    if hasattr(image, "detach"):  # a torch tensor (io does not import torch for this)
        image = image.detach().cpu().numpy()
    a = np.asarray(image)
    if np.iscomplexobj(a):
        raise TypeError(f"{who}: {path}: {what} is complex ({a.dtype}); a PNG shows real values: "
                        "pass the magnitude (np.abs) or the real part explicitly; nothing written")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{who}: {path}: {what} must hold numbers, got dtype {a.dtype}; "
                        "nothing written")
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{who}: {path}: {what} must be a 2-D image (H, W), got shape "
                         f"{a.shape}; nothing written")
    a = a.astype(np.float64)
    refuse_nonfinite(who, path, what, a)
    return a


def _checked_limit(value, who: str, path, name: str) -> float | None:
    if value is None:
        return None
    if not math.isfinite(float(value)):
        raise ValueError(f"{who}: {path}: {name} must be a finite number, got {value!r}")
    return float(value)


def display_range(image: np.ndarray, vmin: float | None, vmax: float | None) -> tuple[float, float]:
    """The grey window ``(lo, hi)``, ``lo < hi``, of a finite image: ``vmin`` / ``vmax`` where
    given, else the image's minimum / maximum. An all-constant image ``c`` (no contrast) gets the
    window from 0 to ``c`` (``c > 0``: white; ``c <= 0``: black), never the zero-width window
    that matplotlib draws black whatever the value; a given bound that leaves the whole image
    on one side saturates it (black below ``vmin``, white above ``vmax``)."""
    lo = float(image.min()) if vmin is None else vmin
    hi = float(image.max()) if vmax is None else vmax
    if lo < hi:
        return lo, hi
    if vmin is None and vmax is None:  # constant image
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        return (lo, hi) if lo < hi else (0.0, 1.0)
    if vmin is not None and vmax is None:  # the whole image lies below vmin: black
        return vmin, vmin + (abs(vmin) or 1.0)
    if vmax is not None and vmin is None:  # the whole image lies above vmax: white
        return vmax - (abs(vmax) or 1.0), vmax
    raise AssertionError("unreachable: both bounds given are checked by the caller")


def _checked_aspect(aspect, who: str, path) -> float:
    """``aspect`` (row spacing / column spacing) as a float, or a clear error."""
    try:
        value = float(aspect)
    except (TypeError, ValueError):
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{who}: {path}: aspect must be a finite number > 0 (row spacing / "
                         f"column spacing), got {aspect!r}; nothing written")
    return value


def physical_pixels(image: np.ndarray, aspect: float) -> np.ndarray:
    """``image`` resampled (nearest neighbour: every value is one of the image's) so that one
    output pixel is square when a row is ``aspect`` times as tall as a column is wide: the rows
    repeated ``aspect`` times (``aspect > 1``) or the columns ``1 / aspect`` times."""
    h, w = image.shape
    if abs(aspect - 1) < 1e-6:
        return image
    if aspect > 1:
        rows = np.minimum(((np.arange(round(h * aspect)) + 0.5) / aspect).astype(int), h - 1)
        return image[rows]
    cols = np.minimum(((np.arange(round(w / aspect)) + 0.5) * aspect).astype(int), w - 1)
    return image[:, cols]


def save_png(image: np.ndarray, path: str | Path, *, vmin: float | None = None,
             vmax: float | None = None, cmap: str = "gray", aspect: float = 1.0) -> Path:
    """Save a real 2-D array as a grey-scale PNG, window :func:`display_range`.

    ``aspect`` is the row spacing over the column spacing (``geometry.spacing[1] /
    geometry.spacing[2]``): 1 (default) writes one pixel per sample; otherwise the rows or
    the columns are repeated (nearest neighbour, :func:`physical_pixels`) so that the picture
    has the object's proportions (0.5 x 1 mm pixels drawn one per sample showed a disc twice as
    tall as wide).

    Raises
    ------
    TypeError
        ``image`` is complex (pass ``np.abs(image)``) or not numeric.
    ValueError
        ``image`` is not 2-D or holds NaN / Inf; ``vmin`` / ``vmax`` not finite, or
        ``vmin >= vmax``; ``aspect`` not a finite number > 0. Nothing is written.
    """
    image = _checked_image(image, "save_png", path, "image")
    image = physical_pixels(image, _checked_aspect(aspect, "save_png", path))
    vmin = _checked_limit(vmin, "save_png", path, "vmin")
    vmax = _checked_limit(vmax, "save_png", path, "vmax")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"save_png: {path}: vmin ({vmin:g}) must be less than vmax ({vmax:g})")
    lo, hi = display_range(image, vmin, vmax)
    import_matplotlib()
    from matplotlib.image import imsave

    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, image.astype(np.float32), cmap=cmap, vmin=lo, vmax=hi, format="png")
    return Path(path)


def save_panel(images: Sequence[np.ndarray | str], titles: Sequence[str], path: str | Path, *,
               vmax: float | None = None, error_index: int | None = None,
               suptitle: str = "", aspect: float = 1.0) -> Path:
    """Save images side by side with titles.

    ``aspect`` is the row spacing over the column spacing of the images (``spacing[1] /
    spacing[2]`` of their :class:`~mrirecon.containers.ImageGeometry`): each pixel is drawn
    ``aspect`` times as tall as wide, so the panels keep the object's proportions (with square
    pixels drawn, 0.5 x 1.0 mm pixels showed a 40 mm disc twice as tall as wide).

    Grey panels show values from 0 to ``vmax`` (below 0 black, above ``vmax`` white); without
    ``vmax``, each image's own maximum (an image nowhere positive is black). ``error_index``
    marks an error map, drawn on its own scale with a colour bar. A ``str`` in place of an image
    draws an empty panel with that text (e.g. ``"not available: ..."`` for an error map that has
    no usable reference).

    Raises
    ------
    TypeError
        An image is complex (pass ``np.abs(image)``) or not numeric.
    ValueError
        No images, a title count that differs from the image count, an image that is not 2-D
        or holds NaN / Inf, ``vmax`` not a finite number > 0 (a ``vmax`` of 0 drew every grey
        panel black), ``error_index`` out of range, ``aspect`` not a finite number > 0.
        Nothing is written.
    """
    aspect = _checked_aspect(aspect, "save_panel", path)
    n = len(images)
    if n == 0:
        raise ValueError(f"save_panel: {path}: no images given")
    if len(titles) != n:
        raise ValueError(f"save_panel: {path}: {n} images but {len(titles)} titles")
    if vmax is not None and not (math.isfinite(float(vmax)) and float(vmax) > 0):
        raise ValueError(f"save_panel: {path}: vmax must be a finite number > 0 (the grey panels "
                         f"show 0..vmax), got {vmax!r}")
    if error_index is not None and not 0 <= error_index < n:
        raise ValueError(f"save_panel: {path}: error_index {error_index} is outside the {n} images")
    checked = [img if isinstance(img, str) else
               _checked_image(img, "save_panel", path, f"images[{i}] ({titles[i]!r})")
               for i, img in enumerate(images)]
    fig = _figure(3.2 * n, 3.4)
    axes = fig.subplots(1, n, squeeze=False)
    for i, (img, title) in enumerate(zip(checked, titles)):
        ax = axes[0, i]
        if isinstance(img, str):
            ax.text(0.5, 0.5, img, ha="center", va="center", transform=ax.transAxes,
                    fontsize=9, color="0.35", wrap=True)
        elif error_index is not None and i == error_index:
            lo, hi = display_range(img, None, None)
            im = ax.imshow(img.astype(np.float32), cmap="magma", vmin=lo, vmax=hi, aspect=aspect)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        else:
            top = vmax if vmax is not None else float(img.max())
            ax.imshow(img.astype(np.float32), cmap="gray", vmin=0, vmax=top if top > 0 else 1.0,
                      aspect=aspect)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save_figure(fig, path)


def save_line_plot(x: Sequence[float], ys: dict[str, Sequence[float]], path: str | Path, *,
                   xlabel: str = "", ylabel: str = "", title: str = "") -> Path:
    """A small line plot (e.g. SSIM against acceleration per method)."""
    fig = _figure(5, 3.5)
    ax = fig.subplots()
    for name, y in ys.items():
        ax.plot(list(x), list(y), marker="o", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save_figure(fig, path)
