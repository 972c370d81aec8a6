"""ESPIRiT kernels must take at least three positions along each side of the calibration block.

A kernel as wide as a 4-column centre band (one position) gave all-zero maps without a word, and
the refusal of a wider one said "pass a smaller kernel_width (at most the band)", which led there.
The library now applies the rule the pipeline's calibration clamp already applied (band - 2).
"""

import re
import warnings

import pytest
import torch

from mrirecon.calib import centre_maps, espirit_block, espirit_maps
import mrirecon.calib.espirit as esp
from mrirecon.functional import fft2c

N = 48


def _object_and_kspace(band: int = 4):
    """4-coil k-space of a disc, the ``band`` centre columns and every third column sampled."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, N), torch.linspace(-1, 1, N), indexing="ij")
    img = ((xx**2 + yy**2) < 0.6).to(torch.complex64) * (1 + 0.3 * xx)
    maps = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2)) * torch.exp(1j * cx * xx)
                        for cx, cy in [(-1, -1), (1, -1), (-1, 1), (1, 1)]]).to(torch.complex64)
    mask = torch.zeros(N, dtype=torch.bool)
    mask[N // 2 - band // 2: N // 2 - band // 2 + band] = True
    mask[::3] = True
    inside = (xx**2 + yy**2) < 0.5
    return fft2c(maps * img) * mask, inside


def _followed(message: str) -> tuple[int, int]:
    return tuple(int(v) for v in re.search(r"pass kernel_width=\((\d+), (\d+)\)", message).groups())


@pytest.mark.parametrize("kernel", [4, 3, (6, 4)])
def test_a_kernel_with_fewer_than_three_positions_across_the_band_is_refused(kernel):
    k, inside = _object_and_kspace()
    with pytest.raises(ValueError, match=r"\(24, 4\) block .* fewer than 3 positions .* at most 2 "
                                         r"across its 4 columns") as err:
        espirit_maps(k, calib_width=(24, 4), kernel_width=kernel)
    assert "at most the band" not in str(err.value)
    # the advice, followed: maps of unit norm over the whole object (they were all zero)
    maps = espirit_maps(k, calib_width=(24, 4), kernel_width=_followed(str(err.value)))
    rss = maps.abs().square().sum(0).sqrt()
    tol = 64 * torch.finfo(torch.float32).eps
    assert float((rss[inside] - 1).abs().max()) < tol


def test_the_rule_holds_along_the_rows_too():
    k, inside = _object_and_kspace()
    kt = k.transpose(-2, -1).contiguous()
    with pytest.raises(ValueError, match=r"at most 2 across its 4 rows") as err:
        espirit_maps(kt, calib_width=(4, 24), kernel_width=4)
    assert _followed(str(err.value)) == (2, 4)
    maps = espirit_maps(kt, calib_width=(4, 24), kernel_width=(2, 4))
    assert float(maps.abs().square().sum(0).sqrt()[inside.T].min()) > 0.99


def test_the_wider_default_block_names_the_acquired_band():
    """calib_width 24 shrinks to the acquired (24, 4) block (warned), then the kernel is judged."""
    k, _ = _object_and_kspace()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"\(24, 4\) block only .* kernel_width \(6, 6\) .* "
                                             r"pass kernel_width=\(6, 2\) or smaller"):
            espirit_maps(k)


def test_a_band_no_kernel_fits_advises_walsh_only():
    k, _ = _object_and_kspace()
    with pytest.raises(ValueError, match=r"at most 0 across its 2 columns") as err:
        espirit_maps(k, calib_width=(24, 2), kernel_width=1)
    assert "pass kernel_width" not in str(err.value) and "Walsh" in str(err.value)


@pytest.mark.parametrize("side", range(1, 12))
def test_one_rule_for_the_library_and_the_pipeline_clamp(side):
    """espirit_block (the pipeline's and the training data's clamp) gives kernels espirit_maps
    accepts, along the band and along a short readout alike."""
    assert esp.largest_kernel(side) == side - esp.MIN_KERNEL_POSITIONS + 1 == side - 2
    if side < 3:
        with pytest.raises(ValueError, match="at least 3"):
            espirit_block(side, 64)
        return
    for band, rows in [(side, 64), (12, side)]:
        block, kernel = espirit_block(band, rows)
        assert all(kernel[a] == min(6, esp.largest_kernel(block[a])) for a in (0, 1))


@pytest.mark.parametrize("rows, calib_rows", [(7, 24), (32, 6)])
def test_centre_maps_clamps_the_kernel_along_a_short_block(rows, calib_rows):
    """A block of 6 or 7 rows: the clamp kept 6-row kernels (1-2 positions), which espirit_maps
    now refuses; the pipeline's calibration clamps them to rows - 2 and its maps follow the
    coils (with the crop the calibration lowers)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, N), indexing="ij")
    coil = torch.stack([torch.exp(-((xx - c) ** 2 + (yy - c / 2) ** 2)) * torch.exp(0.5j * c * yy)
                        for c in (-1.0, -0.3, 0.3, 1.0)]).to(torch.complex64)
    obj = (xx.abs() < 0.8).to(torch.complex64)
    centre = torch.zeros(N, dtype=torch.bool)
    centre[N // 2 - 6: N // 2 + 6] = True
    maps = centre_maps(fft2c(coil * obj), centre, calib_rows=calib_rows)
    inside = xx.abs() < 0.7
    corr = (maps.conj() * coil).sum(0).abs() / coil.abs().square().sum(0).sqrt()  # 0: cropped
    assert float(corr[inside].mean()) > 0.9


@pytest.mark.parametrize("shape", [(16, 16), (20, 12)])
def test_a_matrix_smaller_than_calib_width_calibrates_on_all_of_it(shape):
    """The default calib_width 24 on a 16 x 16 phantom failed ("calibration_region: calibration
    size (24, 24) does not fit k-space (16, 16)"); BART's ecalib -r 24 runs. The maps are those
    of calib_width equal to the matrix, and span the object's coil images."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    img = (1 + 0.3 * xx + 0.2j * yy).to(torch.complex64)  # no zero sample: the block is full
    coils = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 2) * torch.exp(1j * cx * yy)
                         for cx, cy in [(-1, -1), (1, -1), (-1, 1), (1, 1)]]).to(torch.complex64)
    k = fft2c(coils * img)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no block-shrink warning either: the matrix is full
        maps = espirit_maps(k, kernel_width=4)
        same = espirit_maps(k, calib_width=shape, kernel_width=4)
    assert torch.equal(maps, same)
    # the coil images lie in the maps' span: |<m, c>| / |c| ~ 1 where |m| ~ 1
    c = coils * img
    proj = (maps.conj() * c).sum(0).abs() / c.abs().pow(2).sum(0).sqrt()
    assert float(proj.median()) > 0.99
