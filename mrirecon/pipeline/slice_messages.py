"""One volume's per-slice warnings and notes, said once per kind and wording with the slices
they concern (:class:`SliceMessages`: ``mrirecon run``'s volumes and ``mrirecon bench``; split
from :mod:`mrirecon.pipeline.volume`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field


#: A message kind said for slices with other figures lists at most this many of them (grouped by
#: identical text), then counts the rest.
FIGURES_LISTED = 8
#: Texts of one kind are said on one line (the first slice's, the others' differences listed)
#: when they have the same words and figures in the same places and differ in figures and in at
#: most this many words (the truncation warning's "first" / "last" detector bins); other
#: wordings get lines of their own.
WORDS_MERGED = 2
#: A figure in a message: ``0.947``, ``-3``, ``1e-05``, ``128``, where no letter, digit, ``_``
#: or ``.`` precedes it (not the digits of ``sim2026`` or ``128x128``'s second factor).
_FIGURE = re.compile(r"(?:(?<![\w.])-|(?<![\w.]))\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
#: A message's tokens: figures, words and single punctuation marks.
_TOKEN = re.compile(_FIGURE.pattern + r"|\w+|[^\w\s]")


@dataclass
class SliceMessages:
    """One volume's per-slice warnings and notes (:meth:`~mrirecon.pipeline.stream.Modality.
    data_messages`), kind by kind: ``kind -> {message: slices}``, said once per kind and wording
    naming the slices (``mrirecon run`` and ``mrirecon bench``). Messages of one kind that differ
    only in their figures (an ESPIRiT crop lowered to 0.947 on slice 0, 0.92 on slice 1) and in
    at most :data:`WORDS_MERGED` words are said once with the first slice's text, followed by
    what differs on the other slices (at most :data:`FIGURES_LISTED` texts): no line claims a
    figure for a slice that did not have it."""

    warned: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    told: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def add(self, i: int, warned: dict[str, str], told: dict[str, str]) -> None:
        """Slice ``i``'s ``(warnings, notes)``."""
        for kind, msg in warned.items():
            self.warned.setdefault(kind, {}).setdefault(msg, []).append(i)
        for kind, msg in told.items():
            self.told.setdefault(kind, {}).setdefault(msg, []).append(i)

    def lines(self, name: str, total: int) -> tuple[list[str], list[str]]:
        """``(warnings, notes)`` as lines: ``"F.h5: all 2 slices: ..."``."""
        def say(found: dict[str, dict[str, list[int]]]) -> list[str]:
            return [line for texts in found.values() for line in _kind_lines(name, texts, total)]

        return say(self.warned), say(self.told)


def _kind_lines(name: str, texts: dict[str, list[int]], total: int) -> list[str]:
    """The lines of one kind's ``{message: slices}``: texts that differ only in figures and in
    at most :data:`WORDS_MERGED` words are said once, naming all their slices, with the first
    slice's text and what differs on the others; other wordings get a line each."""
    merged: list[list[tuple[str, list[int]]]] = []  # [(text, slices), ...], first text first
    for text, slices in sorted(texts.items(), key=lambda t: min(t[1])):
        for group in merged:
            if _differences(group[0][0], text) is not None:
                group.append((text, slices))
                break
        else:
            merged.append([(text, slices)])
    out = []
    for (first, first_slices), *others in merged:
        every = sorted(i for _, slices in [(first, first_slices), *others] for i in slices)
        line = f"{name}: {_slice_list(every, total)}: {first}"
        if others:
            diffs = [_differences(first, text) or [] for text, _ in others]
            words = any(not _FIGURE.fullmatch(t) for d in diffs for t in d)
            listed = [f"{_runs(slices)}: {', '.join(d)}"
                      for (_, slices), d in zip(others[:FIGURES_LISTED], diffs)]
            rest = sum(len(slices) for _, slices in others[FIGURES_LISTED:])
            line += (f" ({'as on' if words else 'figures of'} {_runs(first_slices)}; "
                     + "; ".join(listed)
                     + (f"; {rest} more slice(s) with other {'words or ' * words}figures"
                        if rest else "") + ")")
        out.append(line)
    return out


def _differences(first: str, text: str) -> list[str] | None:
    """The tokens of ``text`` that differ from ``first``'s (same count, figures where ``first``
    has figures), or ``None`` when the texts are not one message with other figures / words."""
    a, b = _TOKEN.findall(first), _TOKEN.findall(text)
    if len(a) != len(b):
        return None
    pairs = [(x, y) for x, y in zip(a, b) if x != y]
    words = sum(1 for x, y in pairs if not (_FIGURE.fullmatch(x) and _FIGURE.fullmatch(y)))
    return [y for _, y in pairs] if words <= WORDS_MERGED else None


def _runs(slices: list[int], limit: int = 4) -> str:
    """``slice 3``, ``slices 0-2, 5`` (consecutive runs; at most ``limit`` runs, then ``...``)."""
    runs: list[list[int]] = []
    for i in sorted(slices):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return ("slice " if len(slices) == 1 else "slices ") + shown + (", ..." if len(runs) > limit
                                                                    else "")


def _slice_list(slices: list[int], total: int) -> str:
    """``slice 3 of 8``, ``3 of 8 slices (0, 2, 5)`` or ``all 8 slices`` (at most 8 indices shown)."""
    if len(slices) == 1:
        return f"slice {slices[0]}" + (f" of {total}" if total > 1 else "")
    if len(slices) == total:
        return f"all {total} slices"
    shown = ", ".join(map(str, slices[:8])) + (", ..." if len(slices) > 8 else "")
    return f"{len(slices)} of {total} slices ({shown})"
