"""``report.html``: per-volume metrics and figures a person would rather look at than logs."""

from __future__ import annotations

import html
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from mrirecon.io.atomic import atomic_write_text
from mrirecon.metrics.metrics import mean_spread

_log = logging.getLogger("mrirecon.pipeline")


@dataclass
class VolumeResult:
    """What the runner learned about one input file."""

    input: str
    status: str = "pending"  # ok | failed | skipped
    metrics: dict[str, float] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    slices: int = 0
    error: str = ""
    name: str = ""  # output name (input path relative to the inputs' common folder)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the stages did to the data (CT: dose)
    adapt: dict = field(default_factory=dict)  # the adapt stage's report (and weights sha256)
    # what made the outputs (an input --resume skipped: the earlier run's): CPU threads of the
    # process (results differ with it at rounding level) and the resolved device
    threads: int | None = None
    device: str | None = None
    # calibration as applied: {"espirit_crop": [crop of slice 0, ...]}; CT data stating no dose:
    # {"photons_estimated": the dose their noise fits, or None where it could not be told}
    # (the crop ESPIRiT's energy safeguard chose; None for a slice not calibrated)
    calibration: dict = field(default_factory=dict)

    def warn(self, msg: str) -> None:
        """Log ``msg`` as a warning and keep it for ``provenance.json`` and the report."""
        _log.warning("%s", msg)
        self.warnings.append(msg)

    def note(self, msg: str) -> None:
        """Log ``msg`` at info level and keep it as a note (what the stages did to the data)."""
        _log.info("%s", msg)
        self.notes.append(msg)


def display_name(r: VolumeResult) -> str:
    """The input's file name, with its folder relative to the inputs' common folder when the
    run's inputs came from several folders (``a/same.h5``)."""
    parent = Path(r.name).parent if r.name else Path(".")
    return Path(r.input).name if str(parent) == "." else f"{parent.as_posix()}/{Path(r.input).name}"


def _esc(text: str) -> str:
    """``html.escape`` of ``text`` with its control characters written ``\\xNN``
    (:func:`~mrirecon.io.atomic.control_escaped`): an input name's ESC sequences reached the
    page raw, in the table and in every warning that names the input."""
    from mrirecon.io.atomic import control_escaped

    return html.escape(control_escaped(str(text)))


_CSS = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right;white-space:nowrap}th{background:#f3f3f3}td.l,th.l{text-align:left}
td.l{overflow-wrap:anywhere;white-space:normal}td.name{min-width:18ch}
.failed{color:#b00}h2{overflow-wrap:anywhere}
.ok{color:#070}.warn{color:#a60}img{max-width:100%;border:1px solid #ddd;margin:6px 0}h2{margin-top:32px}
code{background:#f6f6f6;padding:1px 4px;overflow-wrap:anywhere}
"""


def _fmt(v: float) -> str:
    if abs(v) >= 100 or v == 0:
        return f"{v:.2f}"
    if abs(v) < 1e-2:
        return f"{v:.3e}"
    return f"{v:.4f}"


def write_report(path: str | Path, *, title: str, config_text: str,
                 results: list[VolumeResult], summary: dict[str, tuple],
                 config_warnings: list[str] = (), metrics_note: str = "") -> Path:
    """Write the HTML report (figure paths are made relative to the report's folder);
    ``config_warnings`` (settings that change nothing, :mod:`mrirecon.pipeline.inert`; warnings about
    the model itself, ``runner._load_model``) head it;
    ``summary``: ``{metric: (mean, std, n volumes)}``; ``metrics_note``: what the metrics
    measure, at which scale (under the table)."""
    path = Path(path)
    base = path.parent
    metric_names = sorted({k for r in results for k in r.metrics})
    rows = []
    for r in results:
        cls = {"ok": "ok", "skipped": "ok"}.get(r.status, "failed")  # skipped = finished before
        cells = "".join(f"<td>{_fmt(r.metrics[m])}</td>" if m in r.metrics else "<td>–</td>"
                        for m in metric_names)
        err = f"<br><small>{_esc(r.error)}</small>" if r.error else ""
        err += "".join(f"<br><small class='warn'>warning: {_esc(w)}</small>"
                       for w in r.warnings)
        err += "".join(f"<br><small>{_esc(n)}</small>" for n in r.notes)
        rows.append(
            f"<tr><td class='l name'>{_esc(display_name(r))}</td>"
            f"<td class='l {cls}'>{r.status}{err}</td><td>{r.slices}</td>"
            f"<td>{r.seconds:.1f}</td>{cells}</tr>"
        )
    head = "".join(f"<th>{m.upper()}</th>" for m in metric_names)
    summ = ""
    if summary:
        counts = {v[2] if len(v) > 2 else None for v in summary.values()}
        n = counts.pop() if len(counts) == 1 else None
        over = f"{n} volume{'s' if n != 1 else ''}" if n is not None else "volumes"
        summ = (f"<h2>Summary (mean ± 2 std over {over})</h2><table><tr>" + "".join(
            f"<th>{m.upper()}</th>" for m in summary) + "</tr><tr>" + "".join(
            f"<td>{mean_spread(v[0], v[1], v[2] if len(v) > 2 else None, _fmt)}</td>"
            for v in summary.values()) + "</tr></table>")
    if failed := sum(r.status == "failed" for r in results):  # the mean is of the others
        summ += (f"<p class='failed'>{failed} of {len(results)} input(s) failed (in red below); "
                 "they are not in the metrics or the summary.</p>")
    if metrics_note and metric_names:
        summ += f"<p><small>{_esc(metrics_note)}</small></p>"
    figs = []  # linked, not embedded: the page shows them beside its figures/ folder
    if any(r.figures for r in results):
        figs.append("<p><small>The figures are PNG files in <code>figures/</code> beside this "
                    "page, linked, not embedded: share or move the whole output folder, not "
                    "report.html alone.</small></p>")
    for r in results:
        if not r.figures and not r.outputs:
            continue
        figs.append(f"<h2>{_esc(display_name(r))}</h2>")
        for f in r.figures:
            # '#', '?', '%' in file names; the bytes of a name that is not UTF-8, as on disk
            rel = quote(os.fsencode(Path(os.path.relpath(f, base)).as_posix()))
            figs.append(f"<img src='{html.escape(rel)}' alt='{_esc(Path(f).stem)}'>")
        outs = ", ".join(f"{k}: <code>{_esc(os.path.relpath(v, base))}</code>"
                         for k, v in r.outputs.items())
        if outs:
            figs.append(f"<p>Outputs — {outs}</p>")
    doc = f"""<!doctype html><html><head><meta charset='utf-8'><title>{_esc(title)}</title>
<style>{_CSS}</style></head><body><h1>{_esc(title)}</h1>
{''.join(f"<p class='warn'>warning: {_esc(w)}</p>" for w in config_warnings)}
<table><tr><th class='l'>input</th><th class='l'>status</th><th>slices</th><th>seconds</th>{head}</tr>
{''.join(rows)}</table>{summ}{''.join(figs)}
<h2>Configuration</h2><pre>{_esc(config_text)}</pre></body></html>"""
    atomic_write_text(path, doc)  # file-name bytes escaped there (io.atomic.printable)
    return path
