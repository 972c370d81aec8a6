"""The benchmark loop shared by MRI and CT: accelerations x volumes x pending methods.

Each volume runs through the pipeline's streaming runner
(:func:`~mrirecon.pipeline.stream.stream_volume`) with every method that has no record yet;
a modality-specific ``score`` turns the :class:`~mrirecon.pipeline.stream.VolumeRun` into one
record per method. Records go to ``results.jsonl`` (:class:`~mrirecon.bench.table.ResultsFile`)
as they are made, so an interrupted run resumes where it stopped; at the end the records of this
run's settings make the table (:func:`~mrirecon.bench.table.build_table`).

A volume that cannot be scored (a ``ValueError`` of its reading, reconstruction or scoring: no
target, a target on another grid, ESPIRiT's centre band too narrow at that acceleration, a
diverged method) is skipped with a warning and listed under the table
(:class:`SkippedVolume`); the others are still scored and tabled. Only a (method,
acceleration) that no volume could be scored for fails the run, after the table of the others
is written: one bad file among many aborted the benchmark and wrote no table. A file that cannot
be read at all (a truncated copy, a partial download) is found when the plan counts its slices
(:attr:`BenchPlan.unreadable`) and skipped the same way at every acceleration, with the reader's
message: it stopped the plan before anything was scored (exit 2, no table).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirecon.solvers.convergence import ConvergenceRecord, convergence_record, quiet
from mrirecon.bench.table import (RESULTS_FILE, BenchTable, ResultsFile, build_table,
                                  config_fingerprint, write_table)
from mrirecon.pipeline.stream import Method, VolumeRun, score_volume
from mrirecon.threads import thread_source

log = logging.getLogger("mrirecon.bench")

RecordCallback = Callable[[dict[str, Any], np.ndarray], None]
#: ``score(path, acceleration, methods, bar) -> {method: record}``; each record holds the
#: metrics, times and mask fields, and the scored ``prediction`` ``(slices, h, w)``.
VolumeScorer = Callable[[Path, float, list[Method], Any], dict[str, dict[str, Any]]]


@dataclass
class BenchPlan:
    """What one benchmark run covers: ``methods`` (in table order) x ``accelerations`` x ``files``,
    the settings fingerprint of each ``(method, acceleration)``, the slices per file and the files
    that could not be read (``unreadable``: the reader's error; each is skipped and listed under
    the table, its slice count 0)."""

    challenge: str
    methods: dict[str, Method]
    accelerations: list[float]
    files: list[Path]
    fingerprints: dict[tuple[str, float], str]
    slice_counts: dict[Path, int]
    unreadable: dict[Path, ValueError] = field(default_factory=dict)

    def config(self, method: str, acceleration: float, path: Path) -> str:
        """The record key of ``(method, acceleration)`` on ``path``: its settings fingerprint,
        the file's size and modification time, so a resumed run never reuses the scores of
        other data under the same file name (rescored data once printed the old table), and the
        mrirecon code (:func:`~mrirecon.pipeline.code_identity.code_sha256`, as ``run
        --resume``), so scores of an earlier version are not printed as this one's."""
        from mrirecon.pipeline.code_identity import code_sha256

        st = path.stat()
        return config_fingerprint({"settings": self.fingerprints[method, acceleration],
                                   "input": [st.st_size, st.st_mtime_ns], "code": code_sha256()})


def open_store(output_dir: str | os.PathLike | None, resume: bool) -> ResultsFile:
    """The results file under ``output_dir`` (``None``: in memory only, no resume); the folder
    is created, checked and locked by :func:`bench_output` first."""
    path = Path(output_dir) / RESULTS_FILE if output_dir is not None else os.devnull
    if not resume and output_dir is not None and path.is_file():
        earlier = len(ResultsFile(path).records)
        if earlier:  # one --no-resume of one method had cut 12 records to 3 without a word
            log.warning("--no-resume: %s holds %d earlier record(s) (of every method and "
                        "acceleration run into it); the file is started afresh with this "
                        "run's records when the first is written (resume, the default, keeps "
                        "them and recomputes what changed)", path, earlier)
    return ResultsFile(path, fresh=not resume or output_dir is None)


def bench_output(output_dir: str | os.PathLike | None):
    """A context manager: ``output_dir`` checked as ``mrirecon run`` checks ``--output`` (an
    output that is a file failed after the first volume, with a bare errno), created, its output
    files checked (:func:`~mrirecon.bench.table.check_outputs`: a FIFO at ``results.jsonl``
    blocked for ever), and locked for this benchmark
    (:func:`~mrirecon.io.output_lock.locked_output`, the lock of ``mrirecon run``). Two benchmarks into one folder each rewrote ``results.jsonl`` from what
    they had read, losing the other's records; a second process is refused naming the first,
    whether it came from the command line or from a library call. ``None``: nothing to lock."""
    if output_dir is None:
        from contextlib import nullcontext

        return nullcontext()
    from mrirecon.bench.table import check_outputs
    from mrirecon.pipeline.run_state import locked_output
    from mrirecon.pipeline.runner import check_output

    def prepare(output: Path) -> None:  # before the lock: a refusal leaves nothing behind
        check_output(output)
        check_outputs(output)

    return locked_output(Path(output_dir), option="--output", who="mrirecon bench",
                         prepare=prepare)


def method_record(run: VolumeRun, method: Method, used_calibration: bool) -> dict[str, Any]:
    """The time and size fields of ``method``'s record for one volume."""
    calib = run.calib_seconds if used_calibration else 0.0
    model = method.model
    return {
        "slices": run.slices,
        "seconds_per_slice": (run.seconds[method.name] + calib) / run.slices,
        "recon_seconds": run.seconds[method.name],
        "calib_seconds": calib,
        "num_params": 0 if model is None else sum(p.numel() for p in model.parameters()),
        # times (and scores, at rounding level) depend on it: recorded beside them, with where
        # it came from (--threads, MRIRECON_THREADS, OMP_NUM_THREADS, the cores; None: the
        # calling program's torch setting)
        "threads": torch.get_num_threads(),
        "threads_source": thread_source(torch.get_num_threads()),
    }


def scored(who: str, path: Path, method: str, reference, pred, *, crop: bool) -> dict[str, float]:
    """:func:`~mrirecon.pipeline.stream.score_volume` of one method's output, whose refusal (a
    NaN / Inf prediction) names ``who``, the file and the method: a diverged method was scored
    NaN and its table row printed "n/a"."""
    try:
        return score_volume(reference, pred, crop=crop)
    except ValueError as exc:
        raise ValueError(f"{who}: {path}: method {method!r}: {exc}") from exc


def reference_warnings(path: Path, field: str, reference, outputs: dict[str, Any]) -> list[str]:
    """What ``mrirecon run``'s reference checks (:mod:`mrirecon.pipeline.reference_checks`) say
    of ``reference`` against the methods' outputs ``(slices, h, w)``, logged as warnings naming
    the file and the dataset: a reference on another scale than every method's output, or one
    that a flip / transpose, or another slice order, matches far better than as read against any
    method's output (a poor image cannot resemble a flipped reference better than the true one,
    but it can miss the margin: zero-filled 4x of a transposed 48 x 48 target 0.19, CG-SENSE
    0.34). The benchmark scored such references without a word: 10.9 dB for a transposed
    ``reconstruction_rss``. The records keep the notes (``reference_notes``), and the tables list
    them. ``reference`` may be a mapping ``{method: reference}`` (the slices each method is
    scored on, :func:`~mrirecon.pipeline.volume.without_blank_reference_slices`)."""
    import torch

    from mrirecon.pipeline.reference_checks import orientation_note, scale_note, slice_order_note

    def tensor(a):
        return torch.as_tensor(np.asarray(a))

    refs = ({m: tensor(reference[m]) for m in outputs} if isinstance(reference, Mapping)
            else dict.fromkeys(outputs, tensor(reference)))
    found = []
    scale = {m: scale_note(refs[m], tensor(o)) for m, o in outputs.items()}
    if scale and all(scale.values()):
        found.append(f"{next(iter(scale.values()))} (every method's output)")
    turned = {m: orientation_note(refs[m], tensor(o), f"{m}'s output") for m, o in outputs.items()}
    found += [note for note in turned.values() if note][:1]
    ordered = {m: slice_order_note(refs[m], tensor(o)) for m, o in outputs.items()}
    found += [note for note in ordered.values() if note][:1]
    for msg in found:
        log.warning("bench: %s: %s: %s", path.name, field, msg)
    return [f"{path.name}: {field}: {msg}" for msg in found]


class MethodSolves:
    """Per method whose settings the user gave (``reported``: ``--set``, ``params``), the
    solves that stopped at their iteration limit short of their tolerance
    (:mod:`mrirecon.solvers.convergence`), by slice, for the method's ``data_warnings`` and the
    log, as ``mrirecon run`` records them per input. The other methods run with the bench's own
    fixed settings (:data:`~mrirecon.bench.methods.DEFAULT_PARAMS`: cg_sense's 40 iterations,
    early exit at 1e-6), no user's request for a converged result: their reports are dropped.
    Every report was dropped: ``--set cg_sense.iterations=2 --set cg_sense.tolerance=1e-12``
    was scored and tabled without a word."""

    def __init__(self, reported) -> None:
        self.records = {m: ConvergenceRecord() for m in reported}

    def watch(self, stages):
        """``stages`` (the volume's, made for it) with its ``reconstruct`` collecting each
        method's reports under the slice's index (the key of the stages' output messages)."""
        inner = stages.reconstruct

        def reconstruct(s, method):
            record = self.records.get(method.name)
            if record is None:
                with quiet():
                    return inner(s, method)
            record.label = s.index
            with convergence_record(record):
                return inner(s, method)

        stages.reconstruct = reconstruct
        return stages

    def messages(self, method: str) -> dict[int, dict[str, str]]:
        """``{slice: {"unconverged": line}}`` of ``method`` (one line per solver), for a
        :class:`~mrirecon.pipeline.slice_messages.SliceMessages`."""
        record = self.records.get(method)
        if record is None:
            return {}
        return {i: {"unconverged": "; ".join(record.lines(i))} for i in record.labels()}


@dataclass(frozen=True)
class SkippedVolume:
    """A volume the benchmark could not score at one acceleration: ``error`` says why (it names
    the file, and the acceleration and methods where its own words did not)."""

    volume: str
    acceleration: float
    methods: tuple[str, ...]
    error: ValueError
    reason: str  # the words of the error that stopped it (without the file / factor prefix)

    def line(self) -> str:
        """``"b.h5 at 4x (zero_filled): <why>"`` (the table's note)."""
        return f"{self.volume} at {self.acceleration:g}x ({', '.join(self.methods)}): {self.reason}"


def run_plan(plan: BenchPlan, score: VolumeScorer, store: ResultsFile, *, persist: bool,
             progress: bool, on_record: RecordCallback | None = None) -> list[SkippedVolume]:
    """Score every pending (method, acceleration, volume) of ``plan`` and store the records;
    returns the volumes skipped because they could not be read or scored (each logged as a
    warning)."""
    names = list(plan.methods)
    skipped: list[SkippedVolume] = []
    for acc in plan.accelerations:
        todo = {p: [m for m in names if p in plan.unreadable
                    or store.find(m, acc, p.name, plan.config(m, acc, p)) is None]
                for p in plan.files}
        total = sum(len(todo[p]) * plan.slice_counts[p] for p in plan.files)
        done = sum(len(names) - len(todo[p]) for p in plan.files)
        if done:
            log.info("bench %s %gx: %d finished (method, volume) entries reused from %s", plan.challenge,
                     acc, done, store.path)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=f"bench {plan.challenge} {acc:g}x ({', '.join(names)})",
                       unit="slice", leave=True)
        try:
            for path in plan.files:
                if not todo[path]:
                    continue
                start = bar.n if bar is not None else 0
                try:
                    if path in plan.unreadable:  # the reader's error, found by the plan
                        raise plan.unreadable[path]
                    with quiet():  # the bench's own fixed settings (cg_sense: 40 iterations,
                        # early exit at 1e-6) are no user's request for a converged result; a
                        # method the user set reports its solves per volume (MethodSolves)
                        results = score(path, acc, [plan.methods[m] for m in todo[path]], bar)
                except Exception as exc:  # "ESPIRiT needs ... got 1" named no file nor factor;
                    # any other error (a LinAlgError, a GPU out of memory on one large volume)
                    # ended the whole bench without a table, and a resume died on it again
                    if bar is not None:  # its slices count as passed: the bar ends at its total
                        bar.update(start + len(todo[path]) * plan.slice_counts[path] - bar.n)
                    err = exc
                    said = str(exc) if isinstance(exc, ValueError) else \
                        f"{type(exc).__name__.lstrip('_')}: {exc}"  # torch's _LinAlgError
                    if path.name not in str(exc) or not isinstance(exc, ValueError):
                        err = ValueError(f"bench {plan.challenge}: {path.name} at {acc:g}x "
                                         f"({', '.join(todo[path])}): {said}")
                        err.__cause__ = exc
                    skipped.append(SkippedVolume(path.name, acc, tuple(todo[path]), err, said))
                    log.warning("%s; skipped: the table scores the other volumes", err)
                    continue
                for m in todo[path]:
                    rec = results[m]
                    pred = rec.pop("prediction")
                    rec.update(method=m, acceleration=acc, volume=path.name,
                               config=plan.config(m, acc, path))
                    if persist:
                        store.append(rec)
                    else:
                        store.add(rec)
                    if on_record is not None:
                        on_record(dict(rec), pred)
        finally:
            if bar is not None:
                bar.close()
    return skipped


def finish_table(plan: BenchPlan, store: ResultsFile, output_dir: str | os.PathLike | None,
                 verbose: bool, skipped: Sequence[SkippedVolume] = ()) -> BenchTable:
    """The table of this plan's records, listing the ``skipped`` volumes; written under
    ``output_dir`` and printed if asked (neither when it has no row)."""
    names = list(plan.methods)
    selected = [r for p in plan.files if p not in plan.unreadable for a in plan.accelerations
                for m in names if (r := store.find(m, a, p.name, plan.config(m, a, p))) is not None]
    table = build_table(selected, names, plan.accelerations, plan.challenge)
    table.skipped = [s.line() for s in skipped]
    if table.rows and output_dir is not None:
        write_table(table, output_dir)
    if table.rows and verbose:
        print(table.to_markdown(), flush=True)
    return table


def check_complete(plan: BenchPlan, table: BenchTable, skipped: Sequence[SkippedVolume],
                   output_dir: str | os.PathLike | None) -> None:
    """Fail when a (method, acceleration) of ``plan`` has no row because every volume was
    skipped: with the one volume's own error, else naming the rows and the first error."""
    empty = [(m, a) for a in plan.accelerations for m in plan.methods
             if not any(r.method == m and r.acceleration == a for r in table.rows)]
    if not empty or not skipped:
        return
    failed = [s for s in skipped if any(s.acceleration == a and m in s.methods for m, a in empty)]
    if len(skipped) == 1:
        raise failed[0].error
    where = ", ".join(f"{m} at {a:g}x" for m, a in empty)
    written = (f"; the table of the other rows is in {Path(output_dir) / 'bench_table.md'}"
               if table.rows and output_dir is not None else "")
    raise ValueError(f"bench {plan.challenge}: no volume could be scored for {where} "
                     f"({len(failed)} skipped); the first: {failed[0].error}{written}"
                     ) from failed[0].error


def run_benchmark(plan: BenchPlan, score: VolumeScorer, *, output_dir, resume: bool,
                  progress: bool, verbose: bool, on_record: RecordCallback | None) -> BenchTable:
    """:func:`run_plan` then :func:`finish_table` (the volumes that could not be scored
    skipped and listed), with the results file of ``output_dir`` (locked: :func:`bench_output`);
    then :func:`check_complete`."""
    with bench_output(output_dir):
        store = open_store(output_dir, resume)
        skipped = run_plan(plan, score, store, persist=output_dir is not None, progress=progress,
                           on_record=on_record)
        table = finish_table(plan, store, output_dir, verbose, skipped)
        check_complete(plan, table, skipped, output_dir)
    return table


def unreadable_error(path: Path, exc: Exception) -> ValueError:
    """``exc``, raised by a reader opening ``path`` while a plan is made, as the error that skips
    the file: a ``ValueError`` (:class:`~mrirecon.io.errors.DataFormatError`) as it is, an
    ``OSError`` (a file deleted since its folder was listed, no permission) as a ``ValueError``
    naming the file."""
    if isinstance(exc, ValueError):
        return exc
    err = ValueError(str(exc) if str(path) in str(exc) else f"{path}: {exc}")
    err.__cause__ = exc
    return err


def check_accelerations(accelerations: Sequence[float], where: str) -> list[float]:
    accs = [float(a) for a in accelerations]
    if not accs or any(not a >= 1 for a in accs):
        raise ValueError(f"{where}: accelerations must be numbers >= 1, got {list(accelerations)}")
    twice = sorted({a for a in accs if accs.count(a) > 1})
    if twice:  # 4 4 scored each volume twice per row and printed the row twice, exit 0
        raise ValueError(f"{where}: accelerations listed twice: {', '.join(f'{a:g}' for a in twice)} "
                         f"in {[f'{a:g}' for a in accs]}")
    return accs
