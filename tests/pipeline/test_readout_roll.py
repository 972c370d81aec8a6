"""Readout-oversampled k-space made as fftshift(fft2(image)) without the ifftshift (k-space times
(-1)^row or (-1)^(row + column)): the image rolled by half the field of view puts the object at
the readout's ends and the crop to the recon rows keeps the oversampled air. Was: exit 0, no word
(a reference cannot tell behind the crop); now warned from the k-space alone
(:mod:`mrirecon.training.readout_roll`), while legitimate tissue in the oversampled region, an
object off-centre inside the crop and noise stay silent."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.functional import fft2c, ifft2c
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.training.readout_roll import (ROLL_OUTSIDE_SHARE, readout_roll_warning, roll_shares,
                                            row_energy)
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import clone_h5, read_kspace


def _volume(folder: Path, *, size=(96, 80), oversampling=2, orientation="sagittal", seed=0,
            coils=8, **options) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=2, coils=coils, size=size, seed=seed,
                                   readout_oversampling=oversampling, orientations=orientation,
                                   contrasts="PD", **options)
    return Path(path)


def _header(path: Path):
    import h5py

    from mrirecon.io.ismrmrd_header import parse_ismrmrd_header

    with h5py.File(path) as f:
        return parse_ismrmrd_header(f["ismrmrd_header"][()], str(path))


def _sign(k: np.ndarray, both: bool) -> np.ndarray:
    """k-space times (-1)^row, or (-1)^(row + column): fftshift(fft2(image)) without ifftshift."""
    rows, cols = np.ogrid[:k.shape[-2], :k.shape[-1]]
    return (k * (-1.0) ** (rows + cols * both)).astype(k.dtype)


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> Path:
    """The lead's repro: a simulated sagittal PD brain, 2x readout oversampling, 192 x 80
    k-space, recon 96 x 80, 2 slices, 4 coils (seed 0)."""
    return _volume(tmp_path_factory.mktemp("roll"), coils=4)


def test_the_row_energy_is_the_zero_filled_image_s(volume):
    """One 1-D FFT (Parseval across the columns, the shifts dropped by the magnitude) gives the
    zero-filled coil images' energy per row, to float64 round-off, for even and odd readouts."""
    k = torch.from_numpy(read_kspace(volume)[0]).to(torch.complex128)
    k[..., ::3] = 0  # unsampled columns are left out, and change nothing
    for x in (k, k[:, 1:]):
        expected = ifft2c(x).abs().square().sum((0, 2))
        err = float((row_energy(x) - expected).abs().max() / expected.max())
        assert err < 1e3 * torch.finfo(torch.float64).eps


@pytest.mark.parametrize("both", [False, True])
def test_rolled_kspace_is_warned_and_correct_kspace_is_not(volume, both):
    """Rows only or both axes (the row energies are the same): most of the energy outside the crop, warned
    with the crop window and the likely cause; the file as simulated: 16 %, silent."""
    k, header = read_kspace(volume)[0], _header(volume)
    assert readout_roll_warning(torch.from_numpy(k), header) == {}
    outside, rolled, start = roll_shares(row_energy(torch.from_numpy(k)), 96)
    assert start == 48 and outside == pytest.approx(rolled)  # 2x: one figure
    assert outside < ROLL_OUTSIDE_SHARE
    (msg,) = readout_roll_warning(torch.from_numpy(_sign(k, both)), header).values()
    # the roll swaps the energy inside and outside the window: 1 - the correct file's share
    share = f"{100 * (1 - outside):.0f} %"
    assert msg.startswith(f"{share} of the image energy lies outside the readout crop (rows "
                          "48..143 of 192"), msg
    assert f"rolling the image by half the readout (96 rows) brings {share} inside" in msg
    assert "fftshift(fft2(image)) instead of fftshift(fft2(ifftshift(image)))" in msg
    assert "cuts the object away" in msg


def test_no_oversampling_no_check(tmp_path):
    """Without readout oversampling nothing is cropped, and a roll cannot be told from
    off-centre anatomy: the rule does not run (rolled k-space: {})."""
    path = _volume(tmp_path, size=(64, 48), oversampling=1)
    k = read_kspace(path)[0]
    assert readout_roll_warning(torch.from_numpy(_sign(k, True)), _header(path)) == {}


def test_blank_and_non_finite_kspace_are_left_to_the_other_checks(volume):
    """All-zero k-space (a blank slice) and NaN samples (refused by ``check_slice``) give no
    figure here, not a "nan %" warning."""
    k, header = torch.from_numpy(read_kspace(volume)[0]), _header(volume)
    assert readout_roll_warning(torch.zeros_like(k), header) == {}
    k[0, 5, 5] = float("nan")
    assert readout_roll_warning(k, header) == {}


def _legitimate(k: np.ndarray, rows: int, case: str) -> np.ndarray:
    """Hand-made correct k-space from ``k`` ``(coils, H, W)``: tissue over the whole oversampled
    readout (the recon rows' image tiled along it: a limb filling the readout), the object off
    centre by an eighth of the recon rows, or noise alone."""
    image = ifft2c(torch.from_numpy(k)).numpy()
    h = k.shape[-2]
    if case == "noise":
        rng = np.random.default_rng(0)
        return (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape)).astype(k.dtype)
    if case == "filled":
        start = (h - rows) // 2
        centre = image[:, start:start + rows]
        image = np.concatenate([centre[:, rows // 2:], centre, centre[:, :rows // 2]], 1)[:, :h]
    else:  # off centre along the readout
        image = np.roll(image, rows // 8 * (1 if case == "down" else -1), axis=1)
    return fft2c(torch.from_numpy(np.ascontiguousarray(image))).numpy()


@pytest.mark.parametrize("case", ["filled", "down", "up", "noise"])
@pytest.mark.parametrize("orientation", ["axial", "coronal", "sagittal"])
def test_legitimate_tissue_outside_the_crop_is_silent(tmp_path, case, orientation):
    """Tissue filling the whole oversampled readout reads 0.50 (what readout oversampling is
    for), an object off centre inside the crop at most 0.48 of the energy outside, noise 0.50:
    all below :data:`ROLL_OUTSIDE_SHARE` 0.7; undersampled 4x (centre 0.08), so the zero-filled
    profile is what the rule reads."""
    path = _volume(tmp_path, orientation=orientation, seed=3, acceleration=4,
                   center_fraction=0.08)
    header = _header(path)
    for k in read_kspace(path):
        legit = _legitimate(k, 96, case)
        outside, _, _ = roll_shares(row_energy(torch.from_numpy(legit)), 96)
        assert outside < ROLL_OUTSIDE_SHARE - 0.15, outside
        assert readout_roll_warning(torch.from_numpy(legit), header) == {}


@pytest.mark.parametrize("size, orientation, snr, acceleration", [
    ((64, 48), "axial", 5.0, None), ((128, 128), "coronal", 10.0, 8),
    ((160, 160), "sagittal", None, 4)])
def test_simulated_brains_are_silent_and_their_rolls_warned(tmp_path, size, orientation, snr,
                                                            acceleration):
    """Correct simulated brains (2x oversampling) at low SNR, noise-free and undersampled stay
    below the threshold by a margin (calibration: at most 0.44 on 120 slices); rolled, the same
    slices are warned."""
    options = {} if acceleration is None else {
        "acceleration": acceleration, "center_fraction": {4: 0.08, 8: 0.04}[acceleration]}
    path = _volume(tmp_path, size=size, orientation=orientation, seed=7, snr_db=snr, **options)
    header = _header(path)
    for k in read_kspace(path):
        outside, _, _ = roll_shares(row_energy(torch.from_numpy(k)), size[0])
        assert outside < ROLL_OUTSIDE_SHARE - 0.2, outside
        assert readout_roll_warning(torch.from_numpy(k), header) == {}
        assert "readout_roll" in readout_roll_warning(torch.from_numpy(_sign(k, True)), header)


def _warnings(path: Path, out: Path) -> list[str]:
    config = load_pipeline("mri_cs", ["reconstruct.method=zero_filled_rss", "reconstruct.params={}",
                                      "calibrate.method=none", "export.formats=[hdf5]",
                                      "report.enabled=false"])[0]
    assert run_pipeline(config, [str(path)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return entry["warnings"]


@pytest.mark.parametrize("both", [False, True])
def test_mrirecon_run_names_the_rolled_file(volume, tmp_path, both):
    """``mrirecon run`` on the repro's rolled copies: one line for the file's 2 slices naming
    the file, the crop and the cause; the correct file: no such line."""
    rolled = clone_h5(volume, tmp_path / "x.h5", kspace=_sign(read_kspace(volume), both))
    (line,) = [w for w in _warnings(rolled, tmp_path / "out") if "readout crop" in w]
    assert re.match(r"x\.h5: (all 2 slices|slices? [0-9, ]+): [0-9]+ % of the image energy lies "
                    r"outside the readout crop \(rows 48\.\.143 of 192", line), line
    assert "fftshift(fft2(image)) instead of" in line
    assert not [w for w in _warnings(volume, tmp_path / "ok") if "readout crop" in w]


def test_tissue_outside_the_crop_that_a_roll_does_not_bring_in_is_silent_at_3x_oversampling():
    """Fails if readout_roll.py:80 ``min(outside, rolled)`` -> ``outside``: at 3x readout
    oversampling (96 rows, recon 32: window 32..63), an object in rows 16..31 lies wholly outside
    the crop, and rolling by half the readout (48) moves it to rows 64..79, still outside: this is
    no half-FOV roll and must not be warned of (at 2x the two shares coincide, so only a ratio
    above 2 tells the rule from the mutant)."""
    import types

    from mrirecon.functional import fft2c
    from mrirecon.training.readout_roll import readout_roll_warning, roll_shares, row_energy

    image = torch.zeros(1, 96, 8, dtype=torch.complex64)
    image[:, 16:32, 2:6] = 1.0
    kspace = fft2c(image)
    header = types.SimpleNamespace(oversampled_readout_rows=lambda rows: 32)
    outside, rolled, start = roll_shares(row_energy(kspace), 32)
    assert start == 32 and outside > 0.99 and rolled < 0.01
    assert readout_roll_warning(kspace, header) == {}
    image2 = torch.zeros_like(image)
    image2[:, 40:56, 2:6] = 1.0
    # a true half-FOV roll of an object inside the window is still warned of
    assert "readout_roll" in readout_roll_warning(fft2c(torch.roll(image2, 48, dims=-2)), header)
