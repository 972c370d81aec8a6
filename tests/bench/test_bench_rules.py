"""The bench's rules that decide its rows (:mod:`mrirecon.bench.core`): seconds per slice, the
accelerations and centre fractions it accepts, methods listed twice, what its log lines name."""

from __future__ import annotations

import logging

import pytest


def test_seconds_per_slice_adds_the_calibration_only_for_methods_that_used_it():
    """Fails if calibration time left out of ``seconds_per_slice``
    or if the calibration is charged to methods that used no maps: the bench's time column."""
    from mrirecon.bench.core import method_record
    from mrirecon.pipeline.schema import ReconstructConfig
    from mrirecon.pipeline.stream import Method, VolumeRun

    run = VolumeRun(slices=4, outputs={}, seconds={"cg_sense": 2.0, "zero_filled": 0.4},
                    calib_seconds=1.0)
    with_maps = method_record(run, Method("cg_sense", ReconstructConfig("cg_sense")), True)
    without = method_record(run, Method("zero_filled", ReconstructConfig("zero_filled")), False)
    assert with_maps["seconds_per_slice"] == pytest.approx((2.0 + 1.0) / 4, rel=1e-12)
    assert with_maps["calib_seconds"] == 1.0 and with_maps["recon_seconds"] == 2.0
    assert without["seconds_per_slice"] == pytest.approx(0.4 / 4, rel=1e-12)
    assert without["calib_seconds"] == 0.0


def test_bench_accelerations_admit_one_and_refuse_below():
    """Fails if ``>= 1`` -> ``> 1``: 1x (the fully sampled row) is
    a valid acceleration, as the message itself says ("numbers >= 1")."""
    from mrirecon.bench.core import check_accelerations

    assert check_accelerations([1, 4], "run_bench") == [1.0, 4.0]
    with pytest.raises(ValueError, match="accelerations must be numbers >= 1"):
        check_accelerations([0.5], "run_bench")


def test_center_fraction_outside_the_table_is_0_32_over_r():
    """Fails if the ``0.32 / acc`` fallback replaced: fastMRI's
    fractions at 4x / 8x, ``0.32 / R`` elsewhere (documented in the help of --center-fractions),
    overrides win."""
    from mrirecon.bench.methods import center_fraction_for

    assert center_fraction_for(4) == 0.08 and center_fraction_for(8) == 0.04
    assert center_fraction_for(6) == pytest.approx(0.32 / 6, rel=1e-12)
    assert center_fraction_for(16) == pytest.approx(0.02, rel=1e-12)
    assert center_fraction_for(6, {6: 0.1}) == 0.1


def test_bench_methods_listed_twice_are_refused():
    """Fails if the duplicate check of ``parse_methods``
    removed; the docstring promises 'each once'."""
    from mrirecon.bench.methods import parse_methods

    assert parse_methods("zero_filled, cg_sense") == ["zero_filled", "cg_sense"]
    with pytest.raises(ValueError, match="methods listed twice"):
        parse_methods("cg_sense,zero_filled,cg_sense")


def test_bench_log_lines_name_the_methods_only_when_not_all_have_the_line(caplog):
    """Fails if the method names never added: a warning
    of one method of several names it; one every method has names none."""
    from mrirecon.bench.messages import log_lines

    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        log_lines("bench multicoil 4x", {"cg_sense": (["w-both", "w-one"], ["n-one"]),
                                         "zero_filled": (["w-both"], [])})
    lines = [r.getMessage() for r in caplog.records]
    assert "bench multicoil 4x: w-both" in lines
    assert "bench multicoil 4x: w-one (cg_sense)" in lines
    assert "bench multicoil 4x: n-one (cg_sense)" in lines
    assert [r.levelno for r in caplog.records] == [logging.WARNING] * 2 + [logging.INFO]
