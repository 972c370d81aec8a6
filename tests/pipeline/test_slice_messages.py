"""A volume's per-slice messages are said once per kind, naming the slices; a line must be true
for every slice it names. It kept the first slice's text, so 'all 4 slices: crop lowered to
0.947' was said while slices 1-3 had 0.92 and 0.89."""

from __future__ import annotations

import re

from mrirecon.pipeline.slice_messages import FIGURES_LISTED, SliceMessages

CROP = "calibrate.crop=0.95: crop lowered to {} on a 24-column band (ESPIRiT)"


def _said(messages: dict[int, str], total: int, kind: str = "crop") -> list[str]:
    found = SliceMessages()
    for i, msg in messages.items():
        found.add(i, {kind: msg}, {})
    warned, told = found.lines("F.h5", total)
    assert told == []
    return warned


def _slices(named: str) -> list[int]:
    """``slice 3`` / ``slices 0-2, 5`` -> the indices."""
    out = []
    for run in named.split(" ", 1)[1].split(", "):
        a, _, b = run.partition("-")
        out += range(int(a), int(b or a) + 1)
    return out


def test_identical_texts_are_said_once_naming_the_slices():
    assert _said({0: "a", 1: "a"}, 2) == ["F.h5: all 2 slices: a"]
    assert _said({1: "a", 3: "a"}, 4) == ["F.h5: 2 of 4 slices (1, 3): a"]
    assert _said({2: "a"}, 4) == ["F.h5: slice 2 of 4: a"]


def test_texts_that_differ_in_their_figures_give_every_slice_its_own():
    crops = {0: "0.947", 1: "0.92", 2: "0.89", 3: "0.89", 4: "0.947"}
    (line,) = _said({i: CROP.format(c) for i, c in crops.items()}, 5)
    assert line == ("F.h5: all 5 slices: " + CROP.format("0.947")
                    + " (figures of slices 0, 4; slice 1: 0.92; slices 2-3: 0.89)")
    # the property: read back, the line gives each slice its own figure
    text, listed = line.split(" (figures of ")
    first, *others = listed.rstrip(")").split("; ")
    claimed = dict.fromkeys(_slices(first), re.search(r"lowered to (\S+)", text)[1])
    for entry in others:
        where, figure = entry.split(": ")
        claimed.update(dict.fromkeys(_slices(where), figure))
    assert claimed == crops
    # figures that all slices share (0.95, 24) are not listed again
    assert line.count("0.95") == 1 and line.count("24") == 1


def test_several_figures_and_words_with_digits():
    """Only the figures that differ are listed, in the text's order; digits inside words (a file
    name's sim2026, 128x128's second factor) are words, not figures."""
    text = "sim2026: {} of {} columns at 128x128"
    (line,) = _said({0: text.format(8, 64), 1: text.format(6, 64), 2: text.format(6, 48)}, 3)
    assert line == ("F.h5: all 3 slices: " + text.format(8, 64)
                    + " (figures of slice 0; slice 1: 6; slice 2: 6, 48)")


def test_a_few_other_words_are_listed_with_the_figures():
    """The truncation warning says which detector edge, and its levels, per slice."""
    text = "the {} {} detector bins read {}, {}% of the 99th percentile"
    (line,) = _said({0: text.format(2, "last", 0.776, 14), 1: text.format(2, "first", 0.776, 20)},
                    2)
    assert line == ("F.h5: all 2 slices: " + text.format(2, "last", 0.776, 14)
                    + " (as on slice 0; slice 1: first, 20)")


def test_other_wordings_of_one_kind_are_separate_lines():
    (a, b) = _said({0: "coil 3 is dead", 1: "coil 3 is dead", 2: "no coil is live"}, 3)
    assert a == "F.h5: 2 of 3 slices (0, 1): coil 3 is dead"
    assert b == "F.h5: slice 2 of 3: no coil is live"


def test_many_slices_with_other_figures_are_bounded_and_counted():
    n = 200
    (line,) = _said({i: CROP.format(f"{0.5 + i / 1000:.3f}") for i in range(n)}, n)
    listed = re.findall(r"; slice (\d+): (0\.\d+)", line)
    assert len(listed) == FIGURES_LISTED
    assert all(f == f"{0.5 + int(i) / 1000:.3f}" for i, f in listed)
    assert line.endswith(f"; {n - 1 - FIGURES_LISTED} more slice(s) with other figures)")
    assert len(line) < len(CROP) + 400


def test_warnings_and_notes_are_kept_apart():
    found = SliceMessages()
    found.add(0, {"w": "warn 1"}, {"n": "note 1"})
    found.add(1, {"w": "warn 2"}, {"n": "note 1"})
    warned, told = found.lines("F.h5", 2)
    assert warned == ["F.h5: all 2 slices: warn 1 (figures of slice 0; slice 1: 2)"]
    assert told == ["F.h5: all 2 slices: note 1"]


def test_convergence_record_reports_each_solvers_worst_solve():
    from mrirecon.solvers.convergence import ConvergenceRecord, Unconverged

    rec = ConvergenceRecord()
    for achieved in (2e-3, 0.5, 4e-2):
        rec.add(Unconverged("cg", 5, achieved, 1e-6, "relative residual"))
    rec.add(Unconverged("fista", 9, 3e-4, 1e-4, "relative change"))
    lines = rec.lines()
    assert len(lines) == 2
    cg_line = next(line for line in lines if line.startswith("cg "))
    assert "relative residual of 0.5," in cg_line and cg_line.endswith("(worst of 3 solves)")
    assert "worst of" not in next(line for line in lines if line.startswith("fista "))
