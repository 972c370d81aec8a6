"""The run files of a pipeline run: ``provenance.json``, ``report.html``, ``metrics.csv``
(``.rank<r>`` when distributed), and when they are written (:class:`RunFiles`).

They never describe outputs that are no longer there: before a run first changes its output
folder they become its own, ``"status": "running"``; a run that stops early writes them for what
finished, ``"interrupted"``; a run that ends writes them ``"complete"``.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import platform
import re
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mrirecon.core.config import to_dict
from mrirecon.io.atomic import atomic_write_text
from mrirecon.io.errors import Terminated, disk_error
from mrirecon.pipeline.report import VolumeResult, display_name, write_report
from mrirecon.pipeline.run_state import remove_stale_file, sha256
from mrirecon.pipeline.schema import PipelineConfig, config_sha256  # noqa: F401

log = logging.getLogger("mrirecon.pipeline")


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """The package's git commit for the provenance (once per process: a subprocess)."""
    try:
        root = Path(__file__).resolve().parents[2]
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], check=False,
                              capture_output=True, text=True, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def _versions_cached() -> tuple[tuple[str, str], ...]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("mrirecon", "torch", "numpy", "h5py", "pydicom", "nibabel", "sigpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return tuple(out.items())


def _versions() -> dict[str, str]:
    """Versions for the provenance; read once per process (the package metadata scan cost
    ~70 ms per run, paid per file by a script that runs one file at a time)."""
    return dict(_versions_cached())


class RunFiles:
    """The run files (``provenance.json``, ``report.html``, ``metrics.csv``; ``.rank<r>`` when
    distributed) of one run and what they are written from: the results so far, the inputs'
    checksums, the input being processed."""

    def __init__(self, config, output: Path, files, t_start: float, rank: int, world: int,
                 config_text: str, dev: str, config_warnings: list[str]) -> None:
        self.config, self.output, self.files, self.t_start = config, output, files, t_start
        self.rank, self.world, self.config_text, self.dev = rank, world, config_text, dev
        self.config_warnings = config_warnings
        self.results: list[VolumeResult] = []
        self.hashes: dict[str, str] = {}
        self.references: dict[str, str] = {}
        self.weights: dict[str, str] = {}
        self.current: Path | None = None  # the input being processed
        self.invalidated = False  # this run's "running" files replaced the earlier run's

    def invalidate(self) -> None:
        """Before this run's first change to the output folder: the run files become this
        run's, ``"status": "running"``, listing what finished so far (inputs skipped by
        ``--resume``), so that a run killed (SIGKILL, a power cut) before it writes its own
        leaves none describing outputs it replaced. Once per run."""
        if self.invalidated:
            return
        self.invalidated = True
        try:
            self.write("running")
        except OSError as e:  # the earlier run's are gone (write): this run goes on
            log.error("could not write the run files of this run (%s)", disk_error(e) or e)

    def stopped(self, err: BaseException) -> None:
        """The run ends early with ``err`` (Ctrl-C, SIGTERM, an error): once it has changed the
        output folder, the run files are written for what finished, ``"status":
        "interrupted"``; before that the earlier run's still describe the folder."""
        if isinstance(err, Terminated):
            how = "SIGTERM"
        elif isinstance(err, KeyboardInterrupt):
            how = "SIGINT (Ctrl-C)"
        else:
            how = disk_error(err) or f"{type(err).__name__}: {' '.join(str(err).split())}"
        if not self.invalidated:
            return
        try:
            self.write("interrupted", how)
            log.warning("the run was interrupted (%s): %s list the %d input(s) it finished",
                        how, ", ".join(n.format(suffix=self.suffix) for n in RUN_FILES),
                        len(self.results))
        except BaseException as e:  # noqa: BLE001 (a second Ctrl-C, a full disk: err is raised)
            log.error("could not write the run files of the interrupted run (%s)",
                      disk_error(e) or e)

    @property
    def suffix(self) -> str:
        return "" if self.world == 1 else f".rank{self.rank}"

    def write(self, status: str = "complete", how: str = "") -> None:
        """Write the run files; ``status`` ``complete``, ``running`` or ``interrupted`` (by
        ``how``). When a write fails (a full disk) once this run changes the folder, the report
        and metric table it did not write are removed (the earlier run's, or this run's
        "running" ones), and so is the earlier run's ``provenance.json`` when the "running"
        one could not be written."""
        written: list[str] = []
        try:
            _write_run_files(self.config, self.output, self.files, self.results, self.t_start,
                             self.rank, self.world, self.config_text, self.dev, self.hashes,
                             references=self.references, weights=self.weights,
                             config_warnings=self.config_warnings, status=status,
                             stop=self._stop_note(status, how), written=written)
        except BaseException:
            if self.invalidated:  # the "running" files go too when they could not be written
                for pattern in RUN_FILES if status == "running" else RUN_FILES[1:]:
                    name = pattern.format(suffix=self.suffix)
                    if name not in written:
                        (self.output / name).unlink(missing_ok=True)
            raise

    def _stop_note(self, status: str, how: str) -> dict:
        """``{"how", "while", "message"}`` of a run that has not finished (empty when it has)."""
        if status == "complete":
            return {}
        n, done = len(self.files[self.rank::self.world]), len(self.results)
        later = ("the outputs of the inputs not listed here may be this run's, an earlier run's "
                 "or missing; run again (with --resume, finished inputs are skipped)")
        if status == "running":
            text = (f"this run had not finished when these files were written (running, or "
                    f"killed): they list the {done} of {n} input(s) finished before it first "
                    f"wrote into this folder; {later}")
        else:
            where = f" while processing {self.current}" if self.current is not None else ""
            text = f"this run was interrupted ({how}){where}, after {done} of {n} input(s); {later}"
        return {"how": how or None, "while": None if self.current is None else str(self.current),
                "message": text}


def _write_run_files(config, output: Path, files, results, t_start, rank, world, config_text, dev,
                     hashes: dict[str, str] | None = None, *, references: dict[str, str] | None = None,
                     weights: dict[str, str] | None = None, config_warnings: list[str] = (),
                     status: str = "complete", stop: dict | None = None,
                     written: list[str] | None = None):
    """Write the run files (the report, the metric table, then ``provenance.json``); ``status``
    (``provenance.json``): ``complete``, or ``running`` / ``interrupted`` with ``stop``
    (:meth:`RunFiles._stop_note`), whose message heads the report; the names written are
    appended to ``written``."""
    suffix = "" if world == 1 else f".rank{rank}"
    hashes = hashes or {}
    written = [] if written is None else written
    unread = "not read: the run stopped before this input"
    provenance = {
        "status": status,  # complete | running | interrupted
        "pipeline": config.name,
        "pipeline_file": config.pipeline_file,  # the file that ran (None: built in code)
        "config": to_dict(config),
        "config_sha256": config_sha256(config),
        "config_warnings": list(config_warnings),  # settings that change nothing (pipeline/inert.py)
        "device": dev,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "seconds": round(time.time() - t_start, 3),
        "versions": _versions(),
        "git_commit": _git_commit(),
        "rank": rank,
        "world_size": world,
        "inputs": {str(p): hashes.get(str(p)) or (_sha256_or_error(p) if status == "complete"
                                                  else unread) for p in files[rank::world]},
        "references": references or {},
        "weights": weights or {},
        "files": [asdict(r) for r in results],
    }
    if stop:
        provenance["interrupted" if status == "interrupted" else "running"] = stop
    ok = [r for r in results if r.metrics and r.status in ("ok", "skipped")]
    summary = {}
    for m in sorted({k for r in ok for k in r.metrics}):
        vals = np.array([r.metrics[m] for r in ok if m in r.metrics])
        summary[m] = (float(vals.mean()), float(vals.std(ddof=1)) if vals.size > 1 else 0.0)
    if config.report.enabled:
        banner = [stop["message"]] if stop else []
        write_report(output / f"report{suffix}.html", title=f"mrirecon — {config.name}"
                     + ("" if status == "complete" else f" ({status}, incomplete)"),
                     config_text=config_text, results=results, summary=summary,
                     config_warnings=banner + list(config_warnings))
        written.append(f"report{suffix}.html")
    else:
        remove_stale_file(output / f"report{suffix}.html")
    if not ok:  # an earlier run's table must not stand for this one
        remove_stale_file(output / f"metrics{suffix}.csv")
    else:
        metric_names = sorted(summary)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", *metric_names])
        for r in ok:
            writer.writerow([csv_safe(display_name(r))] +
                            [f"{r.metrics.get(m, float('nan')):.6g}" for m in metric_names])
        atomic_write_text(output / f"metrics{suffix}.csv", buf.getvalue())
        written.append(f"metrics{suffix}.csv")
    # last: a provenance that says "complete" follows the report and table it goes with
    atomic_write_text(output / f"provenance{suffix}.json", json.dumps(provenance, indent=1))
    written.append(f"provenance{suffix}.json")
    _remove_other_worlds_run_files(output, rank, world)


#: The run files a run writes, ``{suffix}`` ``""`` (plain) or ``.rank<r>`` (distributed).
RUN_FILES = ("provenance{suffix}.json", "report{suffix}.html", "metrics{suffix}.csv")


def _remove_other_worlds_run_files(output: Path, rank: int, world: int) -> None:
    """Delete the run files of runs of another world size, which describe outputs this run has
    replaced (each beside the others, exit 0: a plain run's metrics.csv said cg_sense beside
    rank files saying zero_filled for the same files, and a 3-rank run's ``.rank2`` files
    listed an input a 2-rank resume also listed). A plain run removes every ``.rank<r>`` file;
    rank 0 of a distributed run removes the plain ones and those of ranks >= its world size.
    The output lock keeps runs of another world size out while this one runs."""
    if world > 1 and rank != 0:
        return
    names = []
    for pattern in RUN_FILES:
        stem, ext = pattern.split("{suffix}")
        for p in output.glob(pattern.format(suffix=".rank*")):
            m = re.fullmatch(re.escape(stem) + r"\.rank(\d+)" + re.escape(ext), p.name)
            if m and (world == 1 or int(m.group(1)) >= world):
                names.append(p.name)
        if world > 1:
            names.append(pattern.format(suffix=""))
    for name in names:
        remove_stale_file(output / name)


def _sha256_or_error(path: Path) -> str:
    try:
        return sha256(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"


def csv_safe(text: str) -> str:
    """A cell that spreadsheets show as text: a leading ``= + - @`` or tab/CR (a formula in
    Excel/LibreOffice) gets a ``'`` prefix; control characters become ``?``."""
    text = "".join(c if c >= " " or c == "\t" else "?" for c in str(text))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
