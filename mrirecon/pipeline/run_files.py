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
import math
import os
import platform
import re
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from mrirecon.core.config import to_dict
from mrirecon.io.atomic import atomic_write_text
from mrirecon.io.errors import Terminated, disk_error
from mrirecon.pipeline.code_identity import code_sha256
from mrirecon.pipeline.report import VolumeResult, display_name, write_report
from mrirecon.pipeline.run_state import remove_stale_file, sha256
from mrirecon.pipeline.schema import PipelineConfig, config_sha256  # noqa: F401 (runner)

log = logging.getLogger("mrirecon.pipeline")


def finite_json(value):
    """``value`` with each non-finite float written as the string ``"inf"``, ``"-inf"`` or
    ``"nan"``: JSON has no such numbers, and Python's ``Infinity`` (a perfect volume's PSNR)
    made ``provenance.json`` invalid JSON (``JSON.parse`` threw; ``jq`` read 1.8e308)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


@functools.lru_cache(maxsize=1)
def _git_commit() -> str:
    """The commit of the mrirecon code that runs, for the provenance (once per process)."""
    return _source_commit(Path(__file__).resolve().parents[2])


def _source_commit(root: Path) -> str:
    """The commit of the mrirecon code whose package folder lies in ``root``.

    Asked of git only when ``root`` is an mrirecon checkout (a ``.git`` beside a
    ``pyproject.toml`` naming the project): ``HEAD``'s commit, ``<commit>-dirty`` when a tracked
    file differs from it (what ``git describe --always --dirty`` prints, read with
    ``rev-parse`` and ``status``, which with ``GIT_OPTIONAL_LOCKS=0`` write nothing into the
    checkout: ``describe`` rewrites its index). An installed package lies in site-packages,
    where git would report whatever repository encloses it (a user's analysis project); it
    reports the commit pip recorded for a VCS install (``direct_url.json``'s
    ``vcs_info.commit_id``), else ``"unknown"``."""
    if (root / ".git").exists() and _names_mrirecon(root / "pyproject.toml"):
        commit, changes = (_git(root, "rev-parse", "--verify", "HEAD"),
                           _git(root, "status", "--porcelain", "--untracked-files=no"))
        if commit and changes is not None:
            return commit + ("-dirty" if changes else "")
    return _recorded_vcs_commit() or "unknown"


def _git(root: Path, *args: str) -> str | None:
    """``git -C root args``' output, stripped; ``None`` when git fails or is missing."""
    try:
        out = subprocess.run(["git", "-C", str(root), *args], check=False, capture_output=True,
                             text=True, timeout=5, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _names_mrirecon(pyproject: Path) -> bool:
    try:
        text = pyproject.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(r'^name\s*=\s*"mrirecon"\s*$', text, re.MULTILINE) is not None


def _recorded_vcs_commit() -> str | None:
    """``vcs_info.commit_id`` of the installed mrirecon's ``direct_url.json`` (PEP 610: written
    by pip for ``pip install git+https://...``), ``None`` for an index or local install."""
    import importlib.metadata as md

    try:
        text = md.distribution("mrirecon").read_text("direct_url.json")
        commit = json.loads(text)["vcs_info"]["commit_id"] if text else None
    except (md.PackageNotFoundError, ValueError, KeyError, TypeError, OSError):
        return None
    return commit if isinstance(commit, str) and commit else None


@functools.lru_cache(maxsize=1)
def _versions_cached() -> tuple[tuple[str, str], ...]:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform(),
           # what bit-for-bit repeats depend on besides threads and versions: torch's kernels
           # (AVX-512 or not) sum in another order, which iterative methods can amplify
           "torch_cpu_capability": _cpu_capability()}
    for name in ("mrirecon", "torch", "numpy", "h5py", "pydicom", "nibabel", "sigpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return tuple(out.items())


def _cpu_capability() -> str:
    """torch's CPU kernel set (``AVX512``, ``AVX2``, ``DEFAULT``; ``ATEN_CPU_CAPABILITY`` lowers
    it), ``"unknown"`` where torch cannot say."""
    import torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


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
        self.headers: dict[str, str] = {}  # BART inputs' NAME.hdr
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
            how = str(err) or "SIGTERM"  # the signal's name: SIGTERM, SIGHUP
        elif isinstance(err, KeyboardInterrupt):
            how = "SIGINT (Ctrl-C)"
        else:
            how = disk_error(err) or f"{type(err).__name__}: {' '.join(str(err).split())}"
        if not self.invalidated:
            return
        try:
            written = self.write("interrupted", how)
            names = [n.format(suffix=self.suffix) for n in RUN_FILES]  # only those written
            names = [n for n in names if n in written]
            log.warning("the run was interrupted (%s): %s list%s the %d input(s) it finished",
                        how, ", ".join(names), "s" if len(names) == 1 else "",
                        len(self.results))
        except BaseException as e:  # noqa: BLE001 (a second Ctrl-C, a full disk: err is raised)
            log.error("could not write the run files of the interrupted run (%s)",
                      disk_error(e) or e)

    @property
    def suffix(self) -> str:
        return "" if self.world == 1 else f".rank{self.rank}"

    def write(self, status: str = "complete", how: str = "") -> list[str]:
        """Write the run files; ``status`` ``complete``, ``running`` or ``interrupted`` (by
        ``how``); returns the names written (no ``report.html`` when the report is off, no
        ``metrics.csv`` when no input was scored). When a write fails (a full disk) once this
        run changes the folder, the report and metric table it did not write are removed (the
        earlier run's, or this run's "running" ones), and so is the earlier run's
        ``provenance.json`` when the "running" one could not be written."""
        written: list[str] = []
        try:
            _write_run_files(self.config, self.output, self.files, self.results, self.t_start,
                             self.rank, self.world, self.config_text, self.dev, self.hashes,
                             references=self.references, headers=self.headers,
                             weights=self.weights,
                             config_warnings=self.config_warnings, status=status,
                             stop=self._stop_note(status, how), written=written)
        except BaseException:
            if self.invalidated:  # the "running" files go too when they could not be written
                for pattern in RUN_FILES if status == "running" else RUN_FILES[1:]:
                    name = pattern.format(suffix=self.suffix)
                    if name not in written:
                        (self.output / name).unlink(missing_ok=True)
            raise
        return written

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
                     headers: dict[str, str] | None = None, weights: dict[str, str] | None = None, config_warnings: list[str] = (),
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
    absolute = _absolute_inputs(files, results)
    provenance = {
        "status": status,  # complete | running | interrupted
        "pipeline": config.name,
        "pipeline_file": config.pipeline_file,  # the file that ran (None: built in code)
        # outputs and figures relative to the output folder (this file's), as in the status
        # records and the report: they stay valid when the folder is moved or copied
        "paths": PROVENANCE_PATHS,
        "output_folder": os.path.abspath(output),
        "working_directory": os.getcwd(),
        "config": _recorded_config(config),
        "config_sha256": config_sha256(config),
        "config_warnings": list(config_warnings),  # inert settings (pipeline/inert.py), the model's
        "device": dev,
        # the CPU threads of this process: results differ with it at rounding level (summation
        # order), more after many iterations; rerun with --threads N to reproduce them exactly
        "threads": torch.get_num_threads(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t_start)),
        "seconds": round(time.time() - t_start, 3),
        "versions": _versions(),
        "git_commit": _git_commit(),
        # the source checksum each input's status record holds: --resume skips an input only
        # when its outputs were made by this code (pipeline.code_identity)
        "code_sha256": code_sha256(),
        "rank": rank,
        "world_size": world,
        "inputs": {os.path.abspath(p): hashes.get(str(p)) or (
            _sha256_or_error(p) if status == "complete" else unread) for p in files[rank::world]},
        "references": {os.path.abspath(k): v for k, v in (references or {}).items()},
        "weights": weights or {},
        "files": [_provenance_entry(r, output, absolute) for r in results],
        # how many inputs ended how ("complete" is the run's state, not that every input
        # succeeded: 3 of 7 failed inputs were counted only in the log)
        "file_counts": {s: sum(r.status == s for r in results)
                        for s in ("ok", "skipped", "failed")},
    }
    if headers:  # BART inputs: the sha256 of each NAME.hdr, read with NAME.cfl
        provenance["bart_headers"] = {os.path.abspath(k): v for k, v in headers.items()}
    if stop:
        provenance["interrupted" if status == "interrupted" else "running"] = stop
    ok = [r for r in results if r.metrics and r.status in ("ok", "skipped")]
    summary = {}
    for m in sorted({k for r in ok for k in r.metrics}):
        vals = np.array([r.metrics[m] for r in ok if m in r.metrics])
        with np.errstate(invalid="ignore"):  # a perfect volume's PSNR is inf: no spread (NaN)
            spread = float(vals.std(ddof=1)) if vals.size > 1 else 0.0
        summary[m] = (float(vals.mean()), spread, int(vals.size))
    if config.report.enabled:
        banner = [stop["message"]] if stop else []
        write_report(output / f"report{suffix}.html", title=f"mrirecon — {config.name}"
                     + ("" if status == "complete" else f" ({status}, incomplete)"),
                     config_text=config_text, results=results, summary=summary,
                     config_warnings=banner + list(config_warnings),
                     metrics_note=metrics_note(config) if config.evaluate.enabled else "")
        written.append(f"report{suffix}.html")
    else:
        remove_stale_file(output / f"report{suffix}.html")
    if not ok:  # an earlier run's table must not stand for this one
        remove_stale_file(output / f"metrics{suffix}.csv", _NO_TABLE[
            status if config.evaluate.enabled else "off"])
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
    atomic_write_text(output / f"provenance{suffix}.json",
                      json.dumps(finite_json(provenance), indent=1, allow_nan=False))
    written.append(f"provenance{suffix}.json")
    _remove_other_worlds_run_files(output, rank, world)


#: The run files a run writes, ``{suffix}`` ``""`` (plain) or ``.rank<r>`` (distributed).
RUN_FILES = ("provenance{suffix}.json", "report{suffix}.html", "metrics{suffix}.csv")

#: Why an earlier run's ``metrics.csv`` is removed, by this run's status when it writes none
#: (a run that has not ended may still write its own: "this run writes none" was logged by
#: every rerun, which then wrote one at its end).
_NO_TABLE = {
    "complete": "and this run writes none (none of its inputs was scored)",
    "running": "whose outputs this run replaces; this run writes its own when it ends (if it "
               "scores an input)",
    "interrupted": "and this run, interrupted, had scored none of its inputs",
    "off": "and this run writes none (evaluate.enabled is false)",
}

#: ``provenance.json`` ``paths``: how its paths are to be read.
PROVENANCE_PATHS = ("inputs, references and files[].input are absolute; files[].outputs and "
                    "files[].figures are relative to the output folder (the folder of this file); "
                    "config_sha256 is the checksum of the whole effective config, where config "
                    "leaves out the other modality's settings at their defaults")


def _absolute_inputs(files, results) -> dict[str, str]:
    """``{output name: absolute input path}`` of this run's inputs (an input skipped by
    ``--resume`` holds its path as the earlier run was given it, perhaps from another
    working directory)."""
    from mrirecon.pipeline.inputs import output_names

    names = {r.name for r in results}
    try:
        return {n: os.path.abspath(f) for f, n in zip(files, output_names(list(files)))
                if n in names}
    except (ValueError, OSError):  # refused before any input ran; not reached
        return {}


def _provenance_entry(r: VolumeResult, output: Path, absolute: dict[str, str]) -> dict:
    """One input's entry of ``provenance.json``: its input path absolute, its outputs and
    figures relative to ``output`` (they were relative to the working directory, unrecorded:
    a moved folder, or a run from elsewhere, left none of them pointing at a file)."""
    entry = asdict(r)
    entry["input"] = absolute.get(r.name) or os.path.abspath(r.input)
    entry["outputs"] = {k: _relative(v, output) for k, v in r.outputs.items()}
    entry["figures"] = [_relative(f, output) for f in r.figures]
    return entry


def _relative(path: str, output: Path) -> str:
    return Path(os.path.relpath(path, output)).as_posix()


def _recorded_config(config) -> dict:
    """The config for ``provenance.json`` without the other modality's settings at their
    defaults (a CT run listed MRI's ``accelerations``, ``center_fractions``, ``mask``,
    ``preprocess``, ... that it never reads; validation refuses them changed, so nothing is
    lost: leaving them out and loading the record gives the same config)."""
    from mrirecon.pipeline.validate import CT_ONLY, MRI_ONLY, changed_from_defaults

    recorded = to_dict(config)
    other = MRI_ONLY + ("reconstruct.params_by_acceleration",) if config.modality == "ct" else \
        CT_ONLY + ("reconstruct.params_by_views",)
    for dotted in other:
        if not changed_from_defaults(config, dotted):  # validation's rule of "changed"
            section, _, key = dotted.partition(".")
            if key:
                recorded.get(section, {}).pop(key, None)
            else:
                recorded.pop(section, None)
    return recorded


def metrics_note(config) -> str:
    """The sentence of ``report.html`` that says what the metrics measure, at which scale."""
    if config.modality == "ct":
        from mrirecon.io.lodopab import MU_MAX_PER_MM

        return ("Metrics: NMSE, PSNR (in dB) and SSIM of each volume against its ground truth, "
                f"computed on the attenuation divided by MU_MAX = {MU_MAX_PER_MM:.6g} / mm "
                "(LoDoPaB's normalised scale: 0 is vacuum, 1 is 3071 HU), with the ground truth "
                "volume's maximum as the data range; the images (reconstructions/*.h5, NIfTI, "
                "DICOM, figures) are in HU. Scores in HU would differ.")
    return ("Metrics: fastMRI's NMSE, PSNR (in dB) and SSIM of each volume against its "
            "reference (reconstruction_rss / reconstruction_esc), on magnitude images "
            "centre-cropped to the reference's width (w x w), with the reference volume's maximum "
            "as the data range; the images are at the data's own (arbitrary) scale.")


def _remove_other_worlds_run_files(output: Path, rank: int, world: int) -> None:
    """Delete the run files of runs of another world size, which describe outputs this run has
    replaced (each beside the others, exit 0: a plain run's metrics.csv said cg_sense beside
    rank files saying zero_filled for the same files, and a 3-rank run's ``.rank2`` files
    listed an input a 2-rank resume also listed). A plain run removes every ``.rank<r>`` file;
    rank 0 of a distributed run removes the plain ones and those of ranks >= its world size.
    The output lock keeps runs of another world size out while this one runs."""
    if world > 1 and rank != 0:
        return
    stale = []  # (name, what this run writes in its place), as logged
    for pattern in RUN_FILES:
        stem, ext = pattern.split("{suffix}")
        plain = pattern.format(suffix="")
        for p in output.glob(pattern.format(suffix=".rank*")):
            m = re.fullmatch(re.escape(stem) + r"\.rank(\d+)" + re.escape(ext), p.name)
            if m and world == 1:
                stale.append((p.name, f"and this run writes {plain} in its place"))
            elif m and int(m.group(1)) >= world:
                stale.append((p.name, f"and this run has {world} ranks (0 to {world - 1})"))
        if world > 1:
            stale.append((plain, f"and this run of {world} ranks writes "
                                 f"{pattern.format(suffix='.rank<r>')} in its place"))
    for name, why in stale:
        remove_stale_file(output / name, why)


def _sha256_or_error(path: Path) -> str:
    try:
        return sha256(path)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"


def csv_safe(text: str) -> str:
    """A ``metrics.csv`` name that spreadsheets show as text, one per input and reversible
    (:func:`csv_name`): a backslash is written ``\\\\``, a control character (tab, CR, newline,
    DEL) and a byte of a name that is not UTF-8 ``\\xNN``; then a leading ``= + - @`` (a
    formula in Excel / LibreOffice) or ``'`` gets a ``'`` prefix. (``-minus.h5`` and
    ``'-minus.h5`` were both ``'-minus.h5``, ``new\\nline.h5`` and ``new?line.h5`` both
    ``new?line.h5``.)"""
    out = []
    for c in str(text):
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # a file-name byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{o - 0xDC00:02x}")
        elif 0xD800 <= o <= 0xDFFF:  # a lone surrogate no file name decodes to
            out.append(f"\\u{o:04x}")
        else:
            out.append(c)
    text = "".join(out)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "'") else text


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2}|u[0-9a-f]{4})")


def csv_name(cell: str) -> str:
    """The name :func:`csv_safe` wrote as ``cell`` (the input's file name, with its folder
    relative to the inputs' common folder when the run's inputs came from several folders;
    non-UTF-8 bytes as Python's surrogate escapes, as :func:`os.fsdecode` gives them)."""
    cell = cell[1:] if cell.startswith("'") else cell

    def one(m: re.Match) -> str:
        code = m.group(1)
        if code == "\\":
            return "\\"
        value = int(code[1:], 16)
        return chr(0xDC00 + value) if code[0] == "x" and value >= 0x80 else chr(value)

    return _ESCAPE.sub(one, cell)
