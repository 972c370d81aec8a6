"""The benchmark's results file (resumable JSON lines) and its summary table.

One *record* is the result of one method at one acceleration on one volume::

    {"method": "cg_sense", "acceleration": 4, "volume": "file1000000.h5", "config": "3f2a...",
     "slices": 35, "MSE": ..., "NMSE": ..., "PSNR": ..., "SSIM": ...,
     "seconds_per_slice": 0.41, "recon_seconds": 12.0, "calib_seconds": 2.3,
     "num_params": 0, "mask_type": "equispaced_fraction", "center_fraction": 0.08,
     "num_low_frequencies": 29, "mask_width": 368, "acquirable_columns": 368,
     "mask": "<hex of the packed column mask>"}

Records also hold ``reference_notes``, ``data_warnings`` and ``data_notes`` (lists of lines:
the reference checks, and the per-slice data warnings / notes ``mrirecon run`` gives,
:mod:`mrirecon.bench.messages`); ``bench_volumes.csv`` joins each with `` | ``.

Each record is appended to ``results.jsonl`` as one line (one ``O_APPEND`` write, flushed to
disk: :func:`~mrirecon.io.atomic.append_text`; a write that fails is cut back), so a record
costs its own bytes however many precede it: rewriting the whole file per record cost 104 ms
and 11 MiB at 8000 records, O(n^2) over a benchmark. A line torn by a kill during its write is
dropped with a warning naming the file and the line when the file is read, and cut off before
the next record is appended; that entry is scored again. The records are indexed by
(method, acceleration, volume, config), so :meth:`ResultsFile.find` is a lookup. ``config``
is a fingerprint of everything that determines the result (method parameters, weights, mask
settings, challenge); a restart skips a (method, acceleration, volume) only when a record with
the same fingerprint exists (the latest such record counts).

The table has one row per (method, acceleration): NMSE, PSNR (dB) and SSIM as mean and
``2 std`` over volumes (sample standard deviation, ``ddof = 1``, as fastMRI's evaluation; the
Markdown says ``(n = 1)`` instead for a row of one volume, the CSV's ``2std`` is 0 there),
the mean reconstruction time per slice (s) and the number of parameters (0 for classical
methods). The row's label is the *nominal* factor of the mask function (fastMRI's convention);
beside it the *achieved* acceleration, the mean over volumes of acquirable / sampled columns
(MRI records' ``acquirable_columns``: the header's padding left out) or views / kept views (CT):
the centre band and the rounding move the rate off ``R``: fastMRI's ``equispaced`` "8x" keeps
more columns (about 6.2x on 320 columns, 5.8x on 64), an equispaced-fraction mask more or fewer
(3.95x / 4.05x for 4x on 320 columns, 9.14x for 8x on 64). Records written before ``acquirable_columns`` existed give
``n/a`` (rerun with ``--no-resume`` to fill it).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirecon.pipeline.run_files import csv_safe
from mrirecon.io.atomic import append_text, atomic_write_text
from mrirecon.io.errors import require_output_path
from mrirecon.metrics import MetricsReport
from mrirecon.metrics.metrics import mean_spread

METRICS = ("NMSE", "PSNR", "SSIM")
_DIGITS = {"NMSE": ".5f", "PSNR": ".2f", "SSIM": ".4f"}
RESULTS_FILE = "results.jsonl"
TABLE_CSV = "bench_table.csv"
TABLE_MD = "bench_table.md"
VOLUMES_CSV = "bench_volumes.csv"
#: What ``mrirecon bench`` writes into its output folder (besides its lock): each is absent or
#: a regular file before any volume is read (:func:`check_outputs`).
BENCH_OUTPUTS = ((RESULTS_FILE, "results file"), (TABLE_CSV, "table"), (TABLE_MD, "table"),
                 (VOLUMES_CSV, "per-volume table"))
VOLUME_COLUMNS = (
    "method",
    "acceleration",
    "achieved_acceleration",  # acquirable / sampled columns (CT: views / kept views)
    "volume",
    "slices",
    "MSE",
    "NMSE",
    "PSNR",
    "SSIM",
    "seconds_per_slice",
    "recon_seconds",
    "calib_seconds",
    "num_params",
    "threads",  # CPU threads of the process that measured the row
    "threads_source",  # where that count came from (mrirecon.threads.SOURCES; empty: the program's)
    "mask_type",
    "center_fraction",
    "num_low_frequencies",
    "sampled_columns",
    "reference_notes",
    "data_warnings",  # the per-slice data warnings / notes of `mrirecon run` (bench.messages)
    "data_notes",
)


# ---- masks in records -----------------------------------------------------------------------


def encode_mask(mask: torch.Tensor) -> str:
    """``(W,)`` bool column mask -> hex string of its packed bits (big-endian bit order)."""
    bits = np.asarray(mask.detach().cpu().reshape(-1).numpy(), dtype=bool)
    return np.packbits(bits).tobytes().hex()


def decode_mask(hex_mask: str, width: int) -> torch.Tensor:
    """Inverse of :func:`encode_mask`: ``(width,)`` bool tensor."""
    bits = np.unpackbits(np.frombuffer(bytes.fromhex(hex_mask), dtype=np.uint8))[:width]
    if bits.size != width:
        raise ValueError(f"decode_mask: {len(hex_mask)} hex digits hold fewer than {width} columns")
    return torch.from_numpy(bits.astype(bool))


def config_fingerprint(settings: dict[str, Any]) -> str:
    """A short stable hash of JSON-serialisable ``settings`` (keys sorted)."""
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- the results file -----------------------------------------------------------------------


def _key(record: dict[str, Any]) -> tuple[str, float, str]:
    return (str(record["method"]), float(record["acceleration"]), str(record["volume"]))


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True) + "\n"


class ResultsFile:
    """Append-only JSON-lines store of benchmark records, one line appended per record.

    Parameters
    ----------
    path
        The ``results.jsonl`` file (created on the first :meth:`append`).
    fresh
        Ignore (and on the first append, replace) any existing content.

    ``records`` lists the records in file order (duplicates included);
    :meth:`find` looks one up by its key and fingerprint.
    """

    def __init__(self, path: str | os.PathLike, fresh: bool = False) -> None:
        self.path = Path(path)
        if str(path) != os.devnull:  # a FIFO there blocked the read below for ever
            require_output_path(self.path, "the benchmark's results file")
        self.records: list[dict[str, Any]] = []
        self._index: dict[tuple[str, float, str, str], dict[str, Any]] = {}
        self._replace = fresh  # the first append writes the file anew
        self._cut: int | None = None  # where a torn last line starts: cut before appending
        self._end_line = False  # the last record lacks its line break: add it before appending
        for rec in [] if fresh else self._read():
            self.add(rec)

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        torn = lines.pop()  # the bytes after the last line break (b"" in a whole file)
        records = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(self._parsed(line))
            except (ValueError, KeyError, TypeError) as err:
                warnings.warn(
                    f"{self.path}:{number}: unreadable benchmark record skipped ({err})",
                    stacklevel=3,
                )
        if torn.strip():
            try:
                records.append(self._parsed(torn))  # whole, only its line break missing
                self._end_line = True
            except (ValueError, KeyError, TypeError) as err:
                self._cut = len(data) - len(torn)
                warnings.warn(
                    f"{self.path}:{len(lines) + 1}: torn last line dropped ({len(torn)} bytes "
                    f"without a line break: the run writing it was killed; {err}); that entry "
                    "is scored again",
                    stacklevel=3,
                )
        elif torn:
            self._end_line = True
        return records

    @staticmethod
    def _parsed(line: bytes) -> dict[str, Any]:
        rec = json.loads(line.decode("utf-8"))
        _key(rec)
        return rec

    def add(self, record: dict[str, Any]) -> None:
        """Keep ``record`` in memory only (a benchmark without an output folder)."""
        self.records.append(record)
        config = record.get("config")
        if isinstance(config, str):  # find asks for a fingerprint string
            self._index[(*_key(record), config)] = record

    def find(self, method: str, acceleration: float, volume: str, config: str) -> dict | None:
        """The latest record of ``(method, acceleration, volume)`` with fingerprint ``config``."""
        return self._index.get((str(method), float(acceleration), str(volume), config))

    def append(self, record: dict[str, Any]) -> None:
        """Add ``record`` and append it to the file as one line (the first append of a
        ``fresh`` store, or one to a missing file, writes the file anew, atomically)."""
        record = json.loads(json.dumps(record, sort_keys=True))
        if self._replace or not self.path.exists():
            atomic_write_text(self.path, "".join(map(_line, [*self.records, record])))
        else:
            if self._cut is not None:
                os.truncate(self.path, self._cut)
            append_text(self.path, ("\n" if self._end_line else "") + _line(record))
        self._replace = self._end_line = False
        self._cut = None
        self.add(record)


# ---- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchRow:
    """One (method, acceleration) row: metric ``mean`` and ``std`` (ddof = 1) over volumes."""

    method: str
    acceleration: float
    volumes: int
    mean: dict[str, float]
    std: dict[str, float]
    seconds_per_slice: float
    num_params: int
    #: mean achieved acceleration over the volumes (:func:`achieved_acceleration`); ``None``
    #: when a record does not say its acquirable columns
    achieved: float | None = None


def achieved_acceleration(record: dict[str, Any], challenge: str = "multicoil") -> float | None:
    """The acceleration ``record``'s mask achieved: acquirable / sampled columns (MRI; the
    header's padding is not undersampling), views / kept views (CT: every view can be kept);
    ``None`` for an MRI record without ``acquirable_columns``."""
    acquirable = record.get("acquirable_columns")
    if acquirable is None and challenge == "ct":
        acquirable = record["mask_width"]
    if acquirable is None:
        return None
    sampled = int(decode_mask(record["mask"], record["mask_width"]).sum())
    return float(acquirable) / max(sampled, 1)


def _achieved_heading(challenge: str) -> str:
    what = "views / kept views" if challenge == "ct" else "acquirable / sampled columns"
    return f"achieved ({what}, mean)"


@dataclass
class BenchTable:
    """The benchmark summary: rows in (method, acceleration) order plus the per-volume records.

    ``str(table)`` and :meth:`to_markdown` give the Markdown table, :meth:`to_csv` the CSV.
    """

    rows: list[BenchRow]
    records: list[dict[str, Any]] = field(default_factory=list)
    challenge: str = "multicoil"
    #: the volumes the run could not score, one line each (``"b.h5 at 4x (zero_filled): why"``)
    skipped: list[str] = field(default_factory=list)

    def row(self, method: str, acceleration: float) -> BenchRow:
        """The row of ``method`` at ``acceleration`` (``KeyError`` if absent)."""
        for r in self.rows:
            if r.method == method and float(r.acceleration) == float(acceleration):
                return r
        raise KeyError(f"BenchTable: no row for method {method!r} at acceleration {acceleration}")

    def to_markdown(self) -> str:
        """Markdown: ``method | acceleration (nominal) | achieved | volumes | NMSE | PSNR | SSIM
        | s/slice | params``."""
        head = ["method", "acceleration (nominal)", _achieved_heading(self.challenge), "volumes",
                *METRICS, "time/slice (s)", "parameters"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.method, f"{_fmt_acc(r.acceleration)}x",
                     "n/a" if r.achieved is None else f"{r.achieved:.2f}x", str(r.volumes)]
            for m in METRICS:
                f = _DIGITS[m]
                mean, std = r.mean[m], r.std[m]
                cells.append(mean_spread(mean, std, r.volumes, f))
            cells += [f"{r.seconds_per_slice:.3f}", f"{r.num_params:,}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "NMSE / PSNR / SSIM: mean ± 2 std over volumes (sample std, ddof = 1, as "
                  "fastMRI's evaluate.py); a single volume is marked n = 1, with no spread."]
        if note := _threads_note(self.records):  # the times above are of these counts
            lines += ["", note]
        notes = dict.fromkeys(n for rec in self.records for n in rec.get("reference_notes", []))
        if notes:  # the scores of these volumes compare against a doubtful reference
            lines += ["", "Reference notes (the metrics above compare against these references "
                      "as read):", *[f"- {n}" for n in notes]]
        if self.skipped:  # the rows above average over the other volumes only
            lines += ["", "Skipped volumes (not scored, not in the rows above):",
                      *[f"- {n}" for n in self.skipped]]
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        """CSV with one column per statistic (``NMSE_mean``, ``NMSE_2std``, ...), full precision;
        ``acceleration`` is the nominal factor, ``achieved_acceleration_mean`` the mean achieved
        one (empty when unknown)."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "method",
                "acceleration",
                "achieved_acceleration_mean",
                "volumes",
                *[f"{m}_{s}" for m in METRICS for s in ("mean", "2std")],
                "seconds_per_slice",
                "num_params",
            ]
        )
        for r in self.rows:
            w.writerow(
                [
                    r.method,
                    _fmt_acc(r.acceleration),
                    "" if r.achieved is None else repr(r.achieved),
                    r.volumes,
                    *[repr(v) for m in METRICS for v in (r.mean[m], 2 * r.std[m])],
                    repr(r.seconds_per_slice),
                    r.num_params,
                ]
            )
        return buf.getvalue()

    def volumes_csv(self) -> str:
        """CSV with one line per (method, acceleration, volume) record."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(VOLUME_COLUMNS)
        for rec in self.records:
            cols = decode_mask(rec["mask"], rec["mask_width"]).nonzero().flatten().tolist()
            achieved = achieved_acceleration(rec, self.challenge)
            row = {
                **rec,
                **{k: " | ".join(rec.get(k, [])) for k in ("reference_notes", "data_warnings",
                                                           "data_notes")},
                "sampled_columns": " ".join(map(str, cols)),
                "acceleration": _fmt_acc(rec["acceleration"]),
                "achieved_acceleration": "" if achieved is None else repr(achieved),
            }
            for key in ("volume", "reference_notes", "data_warnings", "data_notes"):
                row[key] = csv_safe(row.get(key, ""))  # file names: no formulas, one per file
            w.writerow([row.get(c, "") for c in VOLUME_COLUMNS])
        return buf.getvalue()

    def __str__(self) -> str:
        return self.to_markdown()

    def to_dict(self) -> dict[str, Any]:
        return {"challenge": self.challenge, "rows": [asdict(r) for r in self.rows],
                "skipped": list(self.skipped)}


def _fmt_acc(acc: float) -> str:
    acc = float(acc)
    return str(int(acc)) if acc.is_integer() else f"{acc:g}"


def _threads_note(records: Sequence[dict[str, Any]]) -> str:
    """"Measured with N CPU thread(s) (where N came from)." of ``records``: each count with its
    source (:data:`mrirecon.threads.SOURCES`; ``None``: the calling program's torch setting; a
    record written before sources were recorded: "source not recorded"), empty without counts.
    The times depend on the count, the scores at rounding level; it said `--threads` for any
    count, also one an inherited ``OMP_NUM_THREADS=1`` had set on a machine of more cores."""
    from mrirecon.threads import SOURCES

    def said(rec: dict[str, Any]) -> str:
        if "threads_source" not in rec:
            return "source not recorded"
        return SOURCES.get(rec["threads_source"], "torch's setting in the calling program")

    pairs = sorted({(int(rec["threads"]), said(rec)) for rec in records if "threads" in rec})
    if not pairs:
        return ""
    if len(pairs) == 1:
        return f"Measured with {pairs[0][0]} CPU thread(s) ({pairs[0][1]})."
    return f"Measured with {' / '.join(f'{n} ({s})' for n, s in pairs)} CPU thread(s)."


def build_table(
    records: Sequence[dict[str, Any]],
    methods: Iterable[str],
    accelerations: Iterable[float],
    challenge: str = "multicoil",
) -> BenchTable:
    """Aggregate per-volume ``records`` into a :class:`BenchTable` (rows in the given order).

    Means and standard deviations come from :class:`~mrirecon.metrics.MetricsReport`; the time
    per slice is the total reconstruction time over the total number of slices.
    """
    rows = []
    kept: list[dict[str, Any]] = []
    for method in methods:
        for acc in accelerations:
            recs = [
                r
                for r in records
                if r["method"] == method and float(r["acceleration"]) == float(acc)
            ]
            if not recs:
                continue
            kept.extend(recs)
            report = MetricsReport(
                [r["volume"] for r in recs],
                {m: np.asarray([r[m] for r in recs], dtype=np.float64) for m in METRICS},
            )
            achieved = [achieved_acceleration(r, challenge) for r in recs]
            slices = sum(int(r["slices"]) for r in recs)
            seconds = sum(float(r["seconds_per_slice"]) * int(r["slices"]) for r in recs)
            rows.append(
                BenchRow(
                    method,
                    float(acc),
                    report.num_volumes,
                    report.mean(),
                    report.std(),
                    seconds / max(slices, 1),
                    int(recs[0]["num_params"]),
                    None if None in achieved else float(np.mean(achieved)),
                )
            )
    return BenchTable(rows, kept, challenge)


def check_outputs(output_dir: str | os.PathLike) -> None:
    """Refuse, before any work, a :data:`BENCH_OUTPUTS` path of ``output_dir`` that is not a
    regular file (:func:`~mrirecon.io.errors.require_output_path`): a FIFO at ``results.jsonl``
    blocked the benchmark for ever holding the folder's lock, one at a table was replaced, a
    folder there failed the run after every volume was scored."""
    for name, what in BENCH_OUTPUTS:
        require_output_path(Path(output_dir) / name, f"mrirecon bench's {what}")


def write_table(table: BenchTable, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``bench_table.csv``, ``bench_table.md`` and ``bench_volumes.csv`` atomically.

    Returns the paths by kind (``csv``, ``markdown``, ``volumes``).
    """
    out = Path(output_dir)
    paths = {"csv": out / TABLE_CSV, "markdown": out / TABLE_MD, "volumes": out / VOLUMES_CSV}
    texts = {"csv": table.to_csv(), "markdown": table.to_markdown(), "volumes": table.volumes_csv()}
    for kind, path in paths.items():
        atomic_write_text(path, texts[kind])
    return paths
