"""PNG pictures keep the object's proportions on non-square pixels (audit s20 "aniso"): a 40 mm
disc on 0.5 mm rows x 1.0 mm columns was drawn one square pixel per sample, 165 x 84 px (aspect
1.96) in the report's panels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrirecon.containers import Image, ImageGeometry
from mrirecon.io.png import physical_pixels, save_panel, save_png

DX, DY = 0.5, 1.0  # mm between rows, between columns


def _disc(rows: int = 128, cols: int = 64, radius_mm: float = 20.0) -> np.ndarray:
    """A disc of ``radius_mm`` in a 64 x 64 mm field of view of DX x DY mm pixels, value 1."""
    r = (np.arange(rows) - rows // 2) * DX
    c = (np.arange(cols) - cols // 2) * DY
    return ((r[:, None] ** 2 + c[None, :] ** 2) <= radius_mm ** 2).astype(np.float64)


def _drawn_aspect(path, panel: int = 0, panels: int = 1) -> float:
    """Height / width (px) of the mid-grey disc in a panel of a PNG: the disc is drawn at 0.5 of
    the grey window (vmax 2), so it stands apart from the black image background and the white
    figure."""
    from matplotlib.image import imread

    png = imread(path)[..., :3]
    w = png.shape[1] // panels
    grey = png[:, panel * w:(panel + 1) * w]
    frame = np.nonzero((grey.max(-1) < 0.05).sum(1) > 20)[0]  # rows of the black image area
    grey = grey[frame.min():frame.max() + 1]  # not the title text above it
    disc = np.abs(grey - 0.5).max(-1) < 0.03
    ys = np.nonzero(disc.sum(1) >= 3)[0]
    xs = np.nonzero(disc.sum(0) >= 3)[0]
    return (ys.max() - ys.min() + 1) / (xs.max() - xs.min() + 1)


def test_a_panel_draws_rectangular_pixels_to_scale(tmp_path):
    img = _disc()
    square = _drawn_aspect(save_panel([img], ["x"], tmp_path / "square.png", vmax=2.0))
    drawn = _drawn_aspect(save_panel([img], ["x"], tmp_path / "scaled.png", vmax=2.0,
                                     aspect=DX / DY))
    # the disc spans ~160 px: a pixel of rounding is 0.6 %
    assert square == pytest.approx(2.0, abs=0.1)  # one square pixel per sample, as before
    assert drawn == pytest.approx(1.0, abs=0.05)
    with pytest.raises(ValueError, match=r"save_panel: .*bad\.png: aspect must be a finite "
                                         r"number > 0 .*nothing written"):
        save_panel([img], ["x"], tmp_path / "bad.png", aspect=float("nan"))
    assert not (tmp_path / "bad.png").exists()


def test_the_report_figures_take_the_aspect_from_the_geometry(tmp_path):
    """pipeline.volume._figures had the image's geometry and drew square pixels."""
    from mrirecon.pipeline.volume import _figures

    data = torch.from_numpy(_disc()[None]).float()
    image = Image(data=data, geometry=ImageGeometry(spacing=(5.0, DX, DY), placed=False))
    (path,) = _figures(image, 2 * data, None, tmp_path, max_slices=1)  # window 0..2
    # panels: reconstruction, reference, |error| (zero: no disc)
    assert _drawn_aspect(path, panel=0, panels=3) == pytest.approx(1.0, abs=0.05)


def test_save_png_repeats_rows_or_columns_to_scale(tmp_path):
    from matplotlib.image import imread

    img = _disc()
    out = imread(save_png(img, tmp_path / "a.png", vmin=0, vmax=2, aspect=DX / DY))[..., 0]
    assert out.shape == (128, 128)  # 64 columns of 1 mm repeated twice: 0.5 mm square pixels
    np.testing.assert_array_equal(out[:, ::2], out[:, 1::2])
    np.testing.assert_allclose(out[:, ::2], img / 2, atol=1 / 255)
    assert imread(save_png(img, tmp_path / "b.png"))[..., 0].shape == (128, 64)  # the default
    tall = physical_pixels(img.T, DY / DX)  # rows 1 mm, columns 0.5 mm: rows repeated
    assert tall.shape == (128, 128) and np.array_equal(tall[::2], img.T.repeat(1, 0))
    third = physical_pixels(np.arange(6.0).reshape(2, 3), 1.5)  # values kept: nearest neighbour
    assert third.shape == (3, 3) and set(third.ravel()) <= set(range(6))
    with pytest.raises(ValueError, match=r"save_png: .*c\.png: aspect must be a finite number > 0"):
        save_png(img, tmp_path / "c.png", aspect=0)


@pytest.mark.parametrize("shape, aspect", [((3, 4), 5 / 3), ((4, 3), 3 / 5), ((7, 5), 1.3),
                                           ((5, 7), 1 / 1.3)])
def test_resampled_pixels_are_sampled_at_their_centres(shape, aspect):
    """Nearest neighbour at each output pixel's centre: resampling commutes with mirroring the
    image (sampling at the left edges shifts the picture by half an output pixel and drops
    rows at the far end), and every input row / column is kept."""
    img = np.arange(np.prod(shape), dtype=float).reshape(shape)
    out = physical_pixels(img, aspect)
    h, w = shape
    assert out.shape == ((round(h * aspect), w) if aspect > 1 else (h, round(w / aspect)))
    np.testing.assert_array_equal(physical_pixels(img[::-1, ::-1], aspect), out[::-1, ::-1])
    kept = np.unique(out[:, 0] if aspect > 1 else out[0])
    np.testing.assert_array_equal(kept, img[:, 0] if aspect > 1 else img[0])
