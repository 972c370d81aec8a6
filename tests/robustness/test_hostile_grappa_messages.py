"""GRAPPA's calibration settings that do not fit the data, named as the user gives them:
``calib`` (a band width wider than the fully sampled centre run, or than the k-space) and
``kernel_size`` (larger than the calibration block), through a pipeline and ``recon.run``.
They said "acs width 10 includes unacquired columns ...; give a smaller width or the calib
block" (no setting is called "acs width"; a YAML file cannot give a block), "acs width must be
in [1, 16], got 24" (24 was ``recon.run``'s default, never given) and "calib (32, 3) is smaller
than the kernel (40, 40)" (blaming the band the run picked itself, not ``kernel_size``)."""

from __future__ import annotations

import logging
import re

import pytest
import torch

from mrirecon import recon
from mrirecon.cli import main
from mrirecon.recon.grappa import CalibrationWidthError, grappa
from tests.robustness.test_hostile_prior_settings import GRAPPA

OLD_WORDS = ("acs width", "the calib block", "calib (32")


def _run(mri_file, out, caplog, *sets: str) -> tuple[int, str]:
    """Exit code and the logged errors of ``mrirecon run mri_retrospective`` with GRAPPA and
    ``sets`` (a centre band of 5 of the 24 columns)."""
    args = ["run", "mri_retrospective", "-i", str(mri_file), "-o", str(out), "--no-progress"]
    for item in [*GRAPPA, "undersample.center_fractions=[0.2]", *sets]:
        args += ["--set", item]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="mrirecon"):
        code = main(args)
    return code, "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def test_a_calib_wider_than_the_band_names_calib_and_the_width_that_fits(mri_file, tmp_path,
                                                                       caplog):
    code, text = _run(mri_file, tmp_path / "wide", caplog, "reconstruct.params.calib=10")
    assert code == 1, text
    assert "grappa: calib 10, the width of the calibration band in columns, includes " \
           "unacquired columns" in text, text
    assert "(mrirecon run: reconstruct.params.calib, or leave it unset and the whole band is " \
           "used), or from Python the ACS k-space" in text, text
    assert not any(old in text for old in OLD_WORDS), text
    found = re.search(r"(\d+) wide; give calib (\d+) or less", text)
    assert found is not None and found[1] == found[2], text
    # the width it gives runs, as does leaving calib unset
    code, text = _run(mri_file, tmp_path / "fits", caplog, f"reconstruct.params.calib={found[1]}")
    assert code == 0, text
    code, text = _run(mri_file, tmp_path / "unset", caplog)
    assert code == 0, text


def test_a_calib_wider_than_the_k_space_says_so_naming_calib(mri_file, tmp_path, caplog):
    code, text = _run(mri_file, tmp_path / "o", caplog, "reconstruct.params.calib=400")
    assert code == 1, text
    assert "grappa: calib 400, the width of the calibration band in columns, exceeds the 24 " \
           "columns of kspace" in text, text
    assert "reconstruct.params.calib, or leave it unset" in text and "acs width" not in text, text


def test_a_kernel_larger_than_the_band_names_kernel_size_not_calib(mri_file, tmp_path, caplog):
    code, text = _run(mri_file, tmp_path / "o", caplog, "reconstruct.params.kernel_size=[40,40]")
    assert code == 1, text
    found = re.search(r"grappa: kernel_size \(40, 40\) does not fit: the calibration block "
                      r"\((\d+) rows x (\d+) columns.*\) is smaller than the kernel; give "
                      r"kernel_size at most \((\d+), (\d+)\) \(mrirecon run: "
                      r"reconstruct\.params\.kernel_size\)", text)
    assert found is not None, text
    assert found[1] == found[3] == "32" and found[2] == found[4], text
    assert not any(old in text for old in OLD_WORDS), text


def _band_kspace() -> tuple[torch.Tensor, int]:
    """4 coils of 16 x 16 k-space, every other column and a fully sampled run [6, 11) through
    the centre column 8: the band is 5 wide."""
    g = torch.Generator().manual_seed(0)
    cols = torch.zeros(16, dtype=torch.bool)
    cols[::2] = True
    cols[6:10] = True
    return torch.randn(4, 16, 16, dtype=torch.complex128, generator=g) * cols, 5


def test_recon_run_says_calib_24_is_its_default_and_what_fits():
    y, band = _band_kspace()
    with pytest.raises(ValueError) as err:
        recon.run("grappa", y)
    text = str(err.value)
    assert text.startswith("grappa: calib 24 (recon.run('grappa')'s default without calib), "
                           "the width of the calibration band in columns, exceeds the 16 "
                           "columns of kspace"), text
    assert f"columns [6, 11), {band} wide; give calib {band} or less" in text, text
    assert "acs width" not in text
    assert recon.run("grappa", y, calib=band, kernel_size=(3, 3)).shape == (16, 16)


def test_a_calib_the_caller_gave_is_not_called_the_default():
    y, band = _band_kspace()
    for call in (lambda: recon.run("grappa", y, calib=8), lambda: grappa(y, 8)):
        with pytest.raises(CalibrationWidthError) as err:  # a ValueError, as before
            call()
        text = str(err.value)
        assert text.startswith("grappa: calib 8, the width of the calibration band in columns, "
                               "includes unacquired columns"), text
        assert "default" not in text and f"give calib {band} or less" in text, text
    assert issubclass(CalibrationWidthError, ValueError)


def test_a_kernel_larger_than_a_given_block_names_kernel_size():
    y, _ = _band_kspace()
    with pytest.raises(ValueError) as err:
        grappa(y, y[:, :3, :3])
    assert str(err.value).startswith("grappa: kernel_size (5, 5) does not fit: the calibration "
                                     "block (3 rows x 3 columns, the calib block given) is "
                                     "smaller than the kernel; give kernel_size at most (3, 3)")
