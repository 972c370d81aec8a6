"""Where the targets of issue 14 stand, judged from the held-out results (the README's table).

:func:`target_table` renders the README's "Where the targets of issue 14 stand" table from the
results of :func:`~mrirecon.heldout.protocol.run_mri` / :func:`~mrirecon.heldout.protocol.run_ct`
(``benchmarks/heldout_results/heldout_{mri,mri368,ct}.json``), so a test can keep the two equal.
Margins are differences of the unrounded scores. The intensity target ("mean and p99 within 5 %
of the reference's") is judged per volume: a mean over volumes lets a volume 8 % low and one 2 %
high pass together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Classical MRI / CT methods a learned row is compared with ("best tuned classical"); the
#: references zero_filled (MRI) are not tuned and not compared
MRI_CLASSICAL = {"cg_sense": "CG-SENSE", "l1_wavelet": "L1-wavelet", "tv": "TV", "grappa": "GRAPPA",
                 # BART 0.8's ecalib + pics, tuned on the same validation split
                 # (benchmarks/heldout_bart.py; heldout_results/heldout_bart.json)
                 "bart_l1": "BART `pics` L1-wavelet", "bart_tv": "BART `pics` TV"}
CT_CLASSICAL = {"fbp": "`ct_fbp`", "sirt": "SIRT", "tv_ct": "`ct_tv`"}
#: the intensity target: each volume's mean and p99 ratio within this of 1
INTENSITY_TOLERANCE = 0.05


def _pipeline(method: str) -> str:
    """The first shipped pipeline that runs ``method`` (its name in backticks), else the method."""
    from mrirecon.heldout.protocol import PIPELINE_ROWS

    return next((f"`{n}`" for n, (_, row) in PIPELINE_ROWS.items() if row == method), f"`{method}`")


def _learned(results: Mapping[str, Mapping[str, Any]], classical: Mapping[str, str]) -> dict:
    return {m: r for m, r in results.items() if m not in classical and m != "zero_filled"}


def _best(rows: Mapping[str, Mapping[str, Any]], key: str) -> str:
    return max(rows, key=lambda m: rows[m][key])


def _by_setting(results: Mapping) -> dict[float, Mapping]:
    return {float(k): v for k, v in results.items()}


def _ratios(row: Mapping[str, Any]) -> list[tuple[str, str, float]]:
    """``(volume, "mean" / "p99", ratio)`` of every per-volume ratio of ``row``."""
    return [(vol, key.split("_")[0], v[key]) for vol, v in row["per_volume"].items()
            for key in ("mean_ratio", "p99_ratio")]


def ratio_misses(row: Mapping[str, Any], tolerance: float = INTENSITY_TOLERANCE) -> list[tuple[str, str, float]]:
    """``(volume, "mean" / "p99", ratio)`` of each per-volume ratio of ``row`` outside 1 +/- tolerance."""
    return [r for r in _ratios(row) if abs(r[2] - 1) > tolerance]


def _short(volume: str) -> str:
    """``heldout_MR_SIEMENS_DICOM_WithOverlays_0_w368.h5`` -> ``MR_SIEMENS_DICOM_WithOverlays``."""
    name = volume.removesuffix(".h5").removesuffix("_w368").removeprefix("heldout_")
    return name.rsplit("_", 1)[0] if name.rsplit("_", 1)[-1].isdigit() else name


def _mri_row(label: str, res: Mapping[str, Mapping[str, Any]]) -> str:
    learned, classical = _learned(res, MRI_CLASSICAL), {m: res[m] for m in MRI_CLASSICAL if m in res}
    best, cp, cs = _best(learned, "PSNR"), _best(classical, "PSNR"), _best(classical, "SSIM")
    dp, ds = res[best]["PSNR"] - res[cp]["PSNR"], res[best]["SSIM"] - res[cs]["SSIM"]
    return (f"| {label} | {_pipeline(best)} {res[best]['PSNR']:.2f} dB, SSIM {res[best]['SSIM']:.3f} | "
            f"{MRI_CLASSICAL[cp]} {res[cp]['PSNR']:.2f} dB; SSIM {res[cs]['SSIM']:.3f} ({MRI_CLASSICAL[cs]}) | "
            f"{dp:+.2f} dB, {ds:+.3f} | {'yes' if dp >= 1 and ds >= 0.02 else '**no**'} |")


def _ct_row(label: str, res: Mapping[str, Mapping[str, Any]], target: float | None) -> str:
    learned, classical = _learned(res, CT_CLASSICAL), {m: res[m] for m in CT_CLASSICAL if m in res}
    best, cp = _best(learned, "PSNR"), _best(classical, "PSNR")
    dp = res[best]["PSNR"] - res[cp]["PSNR"]
    met = "" if target is None else ("yes" if dp >= target else "**no**")
    return (f"| {label} | {_pipeline(best)} {res[best]['PSNR']:.2f} dB | {CT_CLASSICAL[cp]} "
            f"{res[cp]['PSNR']:.2f} dB | {dp:+.2f} dB | {met} |")


def _intensity_row(label: str, rows: list[tuple[str, str, Mapping[str, Any]]], method: str) -> str:
    """``rows``: ``(setting label, part label, row)`` of ``method``, judged per volume (one
    pass over the per-volume ratios gives the ranges and the misses)."""
    values, verdicts = {"mean": [], "p99": []}, {}
    for setting, part, r in rows:
        misses = verdicts.setdefault(setting, [])
        for vol, kind, v in _ratios(r):
            values[kind].append(v)
            if abs(v - 1) > INTENSITY_TOLERANCE:
                misses.append(f"{kind} {v:.3f} ({_short(vol)}{', ' + part if part else ''})")
    met = "; ".join(f"{s}: **no**, {', '.join(m)}" if m else f"{s}: yes" for s, m in verdicts.items())
    mean, p99 = values["mean"], values["p99"]
    return (f"| {label} | {_pipeline(method)} per volume: mean {min(mean):.3f}-{max(mean):.3f}, "
            f"p99 {min(p99):.3f}-{max(p99):.3f} | | | {met} |")


def target_table(mri: Mapping, mri368: Mapping, ct: Mapping, peers: Mapping | None = None) -> str:
    """The README's target table from the three held-out result files (``{setting: {method: row}}``)
    and the peers' rows (``heldout_bart.json``: ``{"heldout_mri" / "heldout_mri368": {setting:
    {method: row}}}``), which join the classical methods a learned row is compared with."""
    mri, mri368, ct = _by_setting(mri), _by_setting(mri368), _by_setting(ct)
    for part, table in (("heldout_mri", mri), ("heldout_mri368", mri368)):
        for acc, rows in _by_setting((peers or {}).get(part, {})).items():
            table[acc] = {**table[acc], **rows}
    lines = ["| target | best learned pipeline | best tuned classical | margin | met |",
             "|---|---|---|---|---|",
             _mri_row("MRI 4×: +1 dB PSNR and +0.02 SSIM", mri[4.0]),
             _mri_row("MRI 8×: the same", mri[8.0]),
             _mri_row("MRI at 640 × 368, 4×: the same", mri368[4.0]),
             _mri_row("MRI at 640 × 368, 8×: the same", mri368[8.0]),
             _ct_row("CT 30 views: +3 dB PSNR over TV / SIRT", ct[30.0], 3.0),
             _ct_row("(CT 60 views, no target)", ct[60.0], None)]
    learned = _learned(mri[4.0], MRI_CLASSICAL)
    best_mri = _best(learned, "PSNR")
    lines.append(_intensity_row(
        "MRI: mean and p99 of every volume within 5 % of the reference's",
        [(f"{acc:g}×", part, tables[acc][best_mri]) for acc in (4.0, 8.0)
         for part, tables in (("640 × 320", mri), ("640 × 368", mri368))], best_mri))
    best_ct = _best(_learned(ct[30.0], CT_CLASSICAL), "PSNR")
    lines.append(_intensity_row("CT: the same", [(f"{v:g} views", "", ct[v][best_ct]) for v in (30.0, 60.0)],
                                best_ct))
    best4, best8 = _best(learned, "SSIM"), _best(_learned(mri[8.0], MRI_CLASSICAL), "SSIM")
    s4, s8 = mri[4.0][best4]["SSIM"], mri[8.0][best8]["SSIM"]
    slack = min((s4 - 0.90, "4×"), (s8 - 0.85, "8×"))
    met = (f"yes ({slack[1]} by {slack[0]:.3f})" if slack[0] >= 0 else "**no**")
    who = _pipeline(best4) if best4 == best8 else f"{_pipeline(best4)} / {_pipeline(best8)}"
    lines.append(f"| moonshot: SSIM ≥ 0.90 at 4×, ≥ 0.85 at 8× | {who} {s4:.3f} / {s8:.3f} | | | {met} |")
    return "\n".join(lines) + "\n"


def rows_meeting_intensity(results: Mapping, classical: Mapping[str, str]) -> dict[str, list[str]]:
    """Per setting, the learned methods whose every per-volume mean and p99 ratio is within 5 %."""
    return {f"{float(k):g}": [m for m, r in _learned(res, classical).items() if not ratio_misses(r)]
            for k, res in results.items()}
