"""Settings of a classical method that follow the data: ``reconstruct.params_by_acceleration``
(Cartesian MRI) and ``reconstruct.params_by_views`` (CT).

A tuned regularisation weight or iteration count holds for one acceleration or view count: the
held-out protocol's validation split chose TV ``lam`` 3e-4 at 4x and 1e-3 at 8x, L1-wavelet 300
and 1000 FISTA iterations, CG-SENSE 40 and 80, CT TV ``lam`` 7 at 30 views and 14 at 60
(:data:`mrirecon.heldout.protocol.MRI_PARAMS` / ``CT_PARAMS``). A pipeline with one ``params``
ran the 4x winner on 8x data (on the validation split -0.14 dB for TV, -0.74 dB for L1-wavelet,
-0.61 dB for CG-SENSE) and the README's 8x row was not what ``mrirecon run`` gave.

A table maps a nominal acceleration (``columns / sampled columns`` of the slice's mask) or view
count (the projection angles left after ``undersample``) to settings::

    reconstruct:
      method: tv
      params: {iterations: 100, rho: 0.001}      # every slice
      params_by_acceleration:
        4: {lam: 3.0e-4}
        8: {lam: 1.0e-3}

Each slice takes the entry whose key is nearest to its own value on a log scale (4x and 8x meet
at 5.66x; 31 views take the 30-view entry) and ``params`` on top of it: a key set in ``params``
holds for every slice (``--set reconstruct.params.lam=1e-3`` replaces the table's ``lam``, with a
log line). Data harder than the table's range (a higher acceleration, fewer views) take its
nearest end with a warning in the volume's record; easier data (fully sampled k-space, every
view) take it quietly. Which entry ran is a note of the volume (``provenance.json``, the report).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any, NamedTuple

from mrirecon.pipeline.schema import ReconstructConfig

log = logging.getLogger("mrirecon.pipeline")

#: The table a modality reads, and what its keys count.
TABLE = {"mri": "params_by_acceleration", "ct": "params_by_views"}
WHAT = {"params_by_acceleration": "acceleration", "params_by_views": "views"}


def table_of(cfg: ReconstructConfig) -> tuple[str, dict[float, dict[str, Any]]] | None:
    """``(field name, table)`` of the table ``cfg`` sets, or ``None``."""
    for name in WHAT:
        table = getattr(cfg, name)
        if table:
            return name, table
    return None


def table_key(raw: Any) -> float | None:
    """A table key as a number (YAML gives ``8`` / ``8.0``, ``--set ...params_by_acceleration.8.lam``
    the string ``"8"``), or ``None`` when it is none or not positive and finite."""
    try:
        value = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def label(key: float) -> str:
    return f"{key:g}"


def nearest(keys: list[float], value: float) -> float:
    """The key nearest to ``value`` on a log scale; a tie (to rounding) goes to the smaller key."""
    distance = {k: abs(math.log(value / k)) for k in keys}
    best = min(distance.values())
    return min(k for k, d in distance.items() if d <= best + 1e-9)


class SliceSettings(NamedTuple):
    """What one slice runs: ``config`` (the table's entry under ``params``), the entry's ``key``
    (``None``: no table), a ``note`` saying so and a ``warning`` when the slice lies outside the
    table's range (else ``None``)."""

    config: ReconstructConfig
    key: float | None = None
    note: str = ""
    warning: str | None = None


def for_slice(cfg: ReconstructConfig, value: float) -> SliceSettings:
    """The settings of one slice whose acceleration / view count is ``value`` (``cfg`` itself
    when it has no table)."""
    found = table_of(cfg)
    if found is None:
        return SliceSettings(cfg)
    name, table = found
    by_key = {float(k): v for k, v in table.items()}  # CT's keys are integers
    key = nearest(list(by_key), value)
    entry = by_key[key]
    chosen = {k: v for k, v in entry.items() if k not in cfg.params}
    what = WHAT[name]
    shown = ", ".join(f"{k}={v!r}" for k, v in chosen.items()) or "nothing beyond reconstruct.params"
    note = (f"reconstruct.{name}: the settings of {label(key)} ({shown}), the entry nearest "
            f"to the data's {what}")
    warning = None
    lo, hi = min(by_key), max(by_key)
    # harder data than any entry was chosen for (a mask's effective rate is within ~5 % of its
    # nominal one); easier data (fully sampled k-space, every view) take the nearest entry quietly
    if value > hi * 1.05 if what == "acceleration" else value < lo / 1.05:
        warning = (f"{what} {value:.3g} is beyond reconstruct.{name}'s {label(lo)} .. "
                   f"{label(hi)}: the settings of {label(key)} were used, which were not chosen "
                   "for such data")
    return SliceSettings(replace(cfg, params={**entry, **cfg.params}), key, note, warning)


def explain_shadowed(cfg: ReconstructConfig, source: str) -> None:
    """Log which of the table's settings ``params`` replaces at every entry (a ``--set`` does that
    on purpose)."""
    found = table_of(cfg)
    keys = sorted({k for entry in found[1].values() for k in entry if k in cfg.params}) if found else []
    if keys:
        name = found[0]
        log.info("%s: reconstruct.params sets %s for every %s, in place of reconstruct.%s's values",
                 source or "pipeline", ", ".join(keys), WHAT[name], name)
