"""What a solver says when it stops at its iteration limit short of the tolerance asked for.

``cg``, ``fista``, ``admm``, ``pdhg`` (and ``sirt``, ``pnp_nlm`` in :mod:`mrirecon.recon`) stop
at ``iterations`` or when their relative residual / change meets ``tolerance``. With
``tolerance > 0`` the caller asked for a converged result, so stopping at the limit before it
is reported (:func:`report_unconverged`); with ``tolerance = 0`` (a fixed number of iterations,
the shipped pipelines' setting) nothing is. Was: ``cg_sense(iterations=3, tolerance=1e-6)``
returned a relative residual of 7.4e-3 (22.6 dB where the converged image has 69.9) without a
word.

Where a report goes:

* no record active (a direct call): one ``logging`` warning on ``mrirecon.solvers``;
* inside :func:`convergence_record`: appended to that :class:`ConvergenceRecord` and not logged,
  so the caller says it once, where it fits: :func:`mrirecon.recon.run` logs one line per
  solver for the whole reconstruction (:func:`reported`), the pipeline
  (:mod:`mrirecon.pipeline.volume`) labels the entries with the slice they came from and adds
  them to the input's per-slice warnings, said once per input (log and ``provenance.json``);
* inner solves that are inexact by design (ADMM's CG x-update, the backward solve of
  :func:`~mrirecon.solvers.cg_solve`) run inside a record that is dropped (:func:`quiet`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("mrirecon.solvers")


@dataclass(frozen=True)
class Unconverged:
    """One solve that stopped at its iteration limit above its tolerance."""

    solver: str
    iterations: int
    achieved: float
    tolerance: float
    measure: str  # "relative residual", "relative change", ...
    #: why it stopped short of the limit (CG's stall), instead of the iteration limit's advice
    note: str = ""

    def message(self) -> str:
        if self.note:
            its = f"{self.iterations} iteration{'' if self.iterations == 1 else 's'}"
            return (f"{self.solver} stopped after {its} with a "
                    f"{self.measure} of {self.achieved:.2g}, above its tolerance "
                    f"{self.tolerance:g}: {self.note}")
        return (f"{self.solver} stopped at its iteration limit ({self.iterations} iterations) with "
                f"a {self.measure} of {self.achieved:.2g}, above its tolerance {self.tolerance:g}: "
                "the result is not converged as asked (raise iterations, or set tolerance 0 "
                "for a fixed number of iterations)")


class ConvergenceRecord:
    """The :class:`Unconverged` solves met while the record was active, each with the
    :attr:`label` the record had then (the pipeline sets the slice index)."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, Unconverged]] = []
        self.label: Any = None

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, entry: Unconverged) -> None:
        self.entries.append((self.label, entry))

    def lines(self, label: Any = ...) -> list[str]:
        """One line per solver, of the entries with ``label`` (all by default): its report
        farthest from its tolerance, with ``(worst of N solves)`` when it stopped short more
        than once (the pipeline's partial Fourier phase estimate and its reconstruction)."""
        worst: dict[str, Unconverged] = {}
        count: dict[str, int] = {}
        for lab, e in self.entries:
            if label is not ... and lab != label:
                continue
            old = worst.get(e.solver)
            if old is None or e.achieved / e.tolerance > old.achieved / old.tolerance:
                worst[e.solver] = e
            count[e.solver] = count.get(e.solver, 0) + 1
        return [e.message() + (f" (worst of {count[s]} solves)" if count[s] > 1 else "")
                for s, e in worst.items()]

    def labels(self) -> list[Any]:
        """The labels that have entries, in order of their first entry."""
        return list(dict.fromkeys(lab for lab, _ in self.entries))


_ACTIVE: ContextVar[ConvergenceRecord | None] = ContextVar("mrirecon_convergence", default=None)


@contextmanager
def convergence_record(record: ConvergenceRecord | None = None) -> Iterator[ConvergenceRecord]:
    """Collect the solvers' reports into ``record`` (a new one by default) instead of logging
    them, while the block runs."""
    record = ConvergenceRecord() if record is None else record
    token = _ACTIVE.set(record)
    try:
        yield record
    finally:
        _ACTIVE.reset(token)


@contextmanager
def quiet() -> Iterator[None]:
    """Drop the reports of the solves in the block (inner solves that are inexact by design)."""
    with convergence_record():
        yield


@contextmanager
def reported(who: str) -> Iterator[ConvergenceRecord]:
    """One reconstruction (``who``): its solves' reports go to the record of an enclosing
    :func:`convergence_record` (the pipeline's), else are logged once per solver at the end."""
    outer = _ACTIVE.get()
    with convergence_record() as record:
        yield record
    if outer is not None:
        for _, entry in record.entries:
            outer.add(entry)
    else:
        for line in record.lines():  # "cg_sense: cg stopped ...", "sirt stopped ..."
            log.warning("%s", line if line.startswith(f"{who} ") else f"{who}: {line}")


def report_unconverged(solver: str, iterations: int, achieved: float, tolerance: float,
                       measure: str, note: str = "") -> None:
    """A solver stopped at ``iterations`` with ``achieved`` above ``tolerance`` (> 0); ``note``:
    why it stopped before its limit (replaces the limit's advice)."""
    entry = Unconverged(solver, int(iterations), float(achieved), float(tolerance), measure, note)
    record = _ACTIVE.get()
    if record is not None:
        record.add(entry)
    else:
        log.warning("%s", entry.message())


__all__ = ["ConvergenceRecord", "convergence_record", "quiet", "report_unconverged", "reported"]
