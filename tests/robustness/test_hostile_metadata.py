"""Metadata that contradicts the data: header encoding limits, CT unit attributes and references
stored in another scale or orientation. Each case was exit 0 with a wrong image, wrong HU or
meaningless metrics before; now it is an error naming the file and field, or a warning."""

from __future__ import annotations

import re

import h5py
import pytest

from tests.helpers import clone_h5
from tests.robustness.test_hostile_inputs import mri_config, run_one


def _limits(xml: bytes, minimum: int, maximum: int) -> bytes:
    """``xml`` with ``encodingLimits/kspace_encoding_step_1`` minimum / maximum replaced."""
    text = xml.decode()
    block = re.search(r"<kspace_encoding_step_1>.*?</kspace_encoding_step_1>", text, re.S)
    assert block is not None
    new = re.sub(r"<minimum>\d+</minimum>", f"<minimum>{minimum}</minimum>", block.group(0))
    new = re.sub(r"<maximum>\d+</maximum>", f"<maximum>{maximum}</maximum>", new)
    return (text[:block.start()] + new + text[block.end():]).encode()


@pytest.mark.parametrize("case", ["minimum_above_maximum", "centre_not_acquired"])
def test_encoding_limits_that_exclude_the_centre_line_are_refused(mri_file, tmp_path, case):
    """Limits 40..20 around 32 (or 0..8 around 12) marked columns acquired that hold no data and
    dropped the centre: with Walsh maps 6.2 dB and exit 0 (ESPIRiT blamed its own band)."""
    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()]
        w = h5["kspace"].shape[-1]
    minimum, maximum = (w - 4, 4) if case == "minimum_above_maximum" else (0, w // 2 - 4)
    bad = clone_h5(mri_file, tmp_path / f"{case}.h5", ismrmrd_header=_limits(xml, minimum, maximum))
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "failed", entry
    assert f"{case}.h5" in entry["error"]
    assert "encodingLimits/kspace_encoding_step_1" in entry["error"]
    assert f"minimum={minimum}, maximum={maximum}" in entry["error"]
