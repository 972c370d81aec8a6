"""``train_log.csv``, the training log of ``mrirecon train``: one row per logged step, appended
as one line; cut back to a resumed checkpoint's step, whose rows become the run's history again.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from pathlib import Path

from mrirecon.io.errors import require_output_path

log = logging.getLogger("mrirecon.train")


def truncate_csv(path: Path, step: int) -> list[dict]:
    """Keep the rows of ``path`` up to ``step`` (the resumed checkpoint's): an interrupted run
    had logged the steps after its last checkpoint, which the resumed run trains and logs again.
    A last row without its line break, torn by a kill while it was appended, is dropped with a
    warning naming the file and the line (its first cells read as a row: "13" of step 131 was
    kept as step 13). Returns the kept rows as the trainer's history holds them (``step`` an
    int, the other cells floats, empty cells left out): the card of a resumed run took its
    validation record from the steps after the resume only (first, best and last all the
    resumed step; none at all when a finished run was resumed)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        os.truncate(path, cut)
        log.warning("%s:%d: torn last row dropped (%d bytes without a line break: the run "
                    "writing it was killed)", path, data.count(b"\n") + 1, len(data) - cut)
        data = data[:cut]
    reader = csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
    keys, rows = reader.fieldnames or [], list(reader)
    kept = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= step]
    if len(kept) != len(rows):
        write_csv(path, keys, kept)
        log.info("%s: %d row(s) after step %d dropped (logged by the interrupted run; trained "
                 "again now)", path, len(rows) - len(kept), step)
    return [_history_row(r) for r in kept]


def _history_row(cells: dict) -> dict:
    """A logged row as :meth:`Trainer.fit` made it: ``step`` an int, numbers as floats."""
    row: dict = {"step": int(cells["step"])}
    for k, v in cells.items():
        if k != "step" and k is not None and v not in (None, ""):
            try:
                row[k] = float(v)
            except ValueError:
                row[k] = v
    return row


def csv_header(path: Path) -> list[str] | None:
    """The columns of the log ``path`` from its first line, or ``None`` when there is no whole
    log to append to (no file, no header, a last line without its line break). A FIFO or
    folder there is refused (:func:`~mrirecon.io.errors.require_output_path`): a FIFO blocked
    the open below for ever."""
    require_output_path(path, "mrirecon train's training log")
    try:
        with path.open("rb") as f:
            head = f.readline()
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return None
            f.seek(-1, os.SEEK_END)
            ended = f.read(1) == b"\n"
    except FileNotFoundError:
        return None
    if not ended or not head.endswith(b"\n"):
        return None
    return next(csv.reader([head.decode("utf-8").rstrip("\r\n")]), None) or None


def append_csv(path: Path, row: dict) -> None:
    """Append one row as one line (:func:`~mrirecon.io.atomic.append_text`). The header is the
    union of the keys seen so far, in order of appearance: a row with a key the header lacks
    (the first validation's ``val_*``) rewrites the log once under the grown header, atomically.
    Reading and rewriting the whole log for every row cost O(n^2) over a training: 49 ms per
    row at 20 000 rows, 565 s in all."""
    from mrirecon.io.atomic import append_text

    cells = {k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()}
    keys = csv_header(path)
    if keys is not None and set(cells) <= set(keys):
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=keys).writerow(cells)
        append_text(path, buf.getvalue())
        return
    rows = []
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as f:  # as append_text writes it
            rows = list(csv.DictReader(f))
    rows.append(cells)
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    write_csv(path, keys, rows)


def write_csv(path: Path, keys: list[str], rows: list[dict]) -> None:
    from io import StringIO

    from mrirecon.io.atomic import atomic_write_text

    buf = StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())

