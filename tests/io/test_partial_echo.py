"""One partial-echo rule and one note for every reader of a Cartesian echo (``io/partial_echo.py``):
the ISMRMRD reader, the fastMRI layout's zero rows (``sampling_mri.zero_rows_echo``) and the
run's warning (``sampling_mri.partial_echo_note``) agreed only while three copies did."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrirecon.containers import Header
from tests.io.test_io_ismrmrd import COILS, ENC_X, ENC_Y, acquisition, cplx, make_xml, write


@pytest.mark.parametrize("n", [16, 40, 64, 100, 320])
def test_the_rule_is_max_two_samples_or_five_percent(n):
    from mrirecon.io.partial_echo import is_partial_echo

    threshold = max(2.0, 0.05 * n)
    below, at = math.ceil(threshold) - 1, math.ceil(threshold)
    assert not is_partial_echo(below, n) and is_partial_echo(at, n)
    assert not is_partial_echo(0, n) and is_partial_echo(n // 2, n)


@pytest.mark.parametrize("missing", [1, 2, 4])
def test_the_ismrmrd_reader_and_the_fastmri_layout_agree_on_one_echo(tmp_path, missing):
    """The same echo (``missing`` of ``ENC_X`` readout samples never taken, before the centre)
    read from ISMRMRD and found as zero rows in a fastMRI-layout slice gives the same header
    entries, :func:`partial_echo_extra`'s, or none from both (1 of 16 is below the 2 samples)."""
    from mrirecon.io.ismrmrd_raw import read_ismrmrd
    from mrirecon.io.partial_echo import is_partial_echo, partial_echo_extra
    from mrirecon.pipeline.sampling_mri import zero_rows_echo

    rng = np.random.default_rng(missing)
    lines = [acquisition(cplx(rng, COILS, ENC_X - missing), line, 0, center=ENC_X // 2 - missing)
             for line in range(ENC_Y)]
    write(tmp_path / "pe.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), lines)
    ks = read_ismrmrd(tmp_path / "pe.h5")
    from_reader = {k: ks.header.extra[k] for k in ("readout_range", "partial_echo_note")
                   if k in ks.header.extra}
    base = ks.header.with_(extra={k: v for k, v in ks.header.extra.items() if k not in from_reader})
    from_zeros = zero_rows_echo(base, ks.data[0])
    from_layout = {k: from_zeros.extra[k] for k in ("readout_range", "partial_echo_note")
                   if k in from_zeros.extra}
    expected = partial_echo_extra(missing, ENC_X, ENC_X) if is_partial_echo(missing, ENC_X) else {}
    assert from_reader == from_layout == expected
    assert bool(expected) == (missing >= 2)


def test_the_runs_warning_begins_with_the_headers_note():
    """``partial_echo_note`` rebuilt the reader's words from ``readout_range``: it now says the
    header's ``partial_echo_note`` (built once, by :func:`partial_echo_extra`), or those words
    when a header has the range alone."""
    from mrirecon.io.partial_echo import partial_echo_extra
    from mrirecon.pipeline.sampling_mri import partial_echo_note
    from mrirecon.pipeline.slice_mri import MRISlice

    base = Header(encoded_matrix=(64, 16, 1), recon_matrix=(32, 16, 1),
                  encoded_fov_mm=(200.0, 100.0, 3.0), recon_fov_mm=(100.0, 100.0, 3.0))
    extra = partial_echo_extra(16, 64, 64)
    assert extra == {"readout_range": [16, 64, 64], "partial_echo_note": (
        "partial echo: readout samples 16..63 of 64 hold data (16 never sampled)")}
    mask = torch.ones(16, dtype=torch.bool)
    kspace = torch.zeros(4, 64, 16, dtype=torch.complex64)

    def said(header):
        return partial_echo_note(MRISlice(kspace, mask, header, "pe.h5", 0), "zero_filled_rss",
                                 False, False)

    assert said(base) is None
    assert said(base.with_(extra=extra)).startswith(extra["partial_echo_note"] + ": ")
    stored = {**extra, "partial_echo_note": "partial echo: as the reader said"}
    assert said(base.with_(extra=stored)).startswith("partial echo: as the reader said: ")
    alone = said(base.with_(extra={"readout_range": [16, 64, 64]}))
    assert alone == said(base.with_(extra=extra))
