"""Notebook calls of the public API with a plausible mistake, second sweep: a wrong result must not
come back without an error, and the error must name the argument (not a torch or MKL internal)."""

from __future__ import annotations

import pytest
import torch

from mrirecon.functional import fft2c
from tests.models.problems import coil_maps, phantom


def _full_kspace(n: int = 32, coils: int = 4) -> torch.Tensor:
    return fft2c(coil_maps(coils, n, n) * phantom(1, n, n)[0])


@pytest.mark.parametrize("case, message", [
    ("nan", r"the \(12, 12\) calibration block of kspace holds 1 NaN or Inf samples"),
    ("zero", r"the \(12, 12\) calibration block of kspace is all zero: k-space must be centred"),
    ("thresh", r"thresh must be a number in \[0, 1\) .*got 1.0"),
    ("thresh_nan", r"thresh must be a number in \[0, 1\) .*got nan"),
])
def test_espirit_names_a_calibration_it_cannot_use(case, message):
    """NaN or no data in the calibration block, or a thresh that keeps no kernel, failed inside
    an FFT of no kernels: "MKL FFT error: Inconsistent configuration parameters"."""
    from mrirecon.calib import espirit_maps

    k = _full_kspace()
    thresh = {"thresh": 1.0, "thresh_nan": float("nan")}.get(case, 0.02)
    if case == "nan":
        k[1, 16, 15] = float("nan")
    elif case == "zero":
        k = k * 0
    with pytest.raises(ValueError, match="espirit_maps: " + message):
        espirit_maps(k, calib_width=12, kernel_width=4, thresh=thresh)


@pytest.mark.parametrize("crop", [1.0, 1.5, float("nan")])
def test_espirit_refuses_a_crop_that_zeroes_every_map(crop):
    """The eigenvalue is about 1 where the coils see signal: crop 1.5 (or NaN) returned all-zero
    maps without a word, and cg_sense on them an all-zero image."""
    from mrirecon.calib import espirit_maps

    with pytest.raises(ValueError, match=r"espirit_maps: crop must be a number below 1 .* zero every"):
        espirit_maps(_full_kspace(), calib_width=12, kernel_width=4, crop=crop)
    assert espirit_maps(_full_kspace(), calib_width=12, kernel_width=4, crop=0.95).abs().amax() > 0.9


@pytest.mark.parametrize("acceleration", [float("inf"), 1e6, 2049.0])
def test_variable_density_refuses_an_acceleration_that_leaves_no_sample(acceleration):
    """The docstring promises round(H W / acceleration) samples: inf or 1e6 gave an all-zero mask,
    which sense() took and cg_sense reconstructed as an all-zero image."""
    from mrirecon.sampling import variable_density

    with pytest.raises(ValueError, match=r"variable_density: acceleration .* leaves no sample of "
                                         r"the 32 x 32 grid \(at most 1024\)"):
        variable_density((32, 32), acceleration, seed=0)
    assert int(variable_density((32, 32), 1024.0, seed=0).sum()) == 1
