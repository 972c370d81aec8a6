"""A ``CTGeometry`` built in code with its angles in degrees is warned about, by the readers'
rule (a span of more than two turns): ``CTGeometry`` -> ``ct_operator`` -> ``recon.run`` took
them silently (FBP 13.2 dB against 30.9 dB in radians); the file readers already refuse them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mrirecon.operators.ct_geometry import CTGeometry


def _geometry(angles):
    return CTGeometry(beam="parallel", image_shape=(32, 32), num_detectors=49, angles=angles,
                      pixel_size=1.0, detector_spacing=1.0)


def test_angles_in_degrees_are_warned_naming_the_conversion():
    with pytest.warns(UserWarning, match=r"CTGeometry\.angles span 174 rad, more than two turns "
                                         r"\(4 pi\): angles are in radians \(were degrees given\? "
                                         r"np\.deg2rad"):
        _geometry(np.linspace(0, 180, 30, endpoint=False))


@pytest.mark.parametrize("turns", [0.5, 1.0, 2.0])
def test_angles_in_radians_up_to_two_turns_pass_quietly(turns):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _geometry(np.linspace(0, turns * 2 * np.pi, 30, endpoint=False))
        _geometry(np.linspace(3.0, 3.0 - turns * 2 * np.pi, 30, endpoint=False))  # descending
