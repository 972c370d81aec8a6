"""Settings that follow the data: ``reconstruct.params_by_acceleration`` (Cartesian MRI) and
``reconstruct.params_by_views`` (CT), for a classical method or a learned model's inference
settings.

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
log line). So an entry's setting that ``params`` also holds never runs: one the user gave (``--set
reconstruct.params_by_acceleration.4.lam=1e-3`` over ``mri_cs``, whose ``params`` hold ``lam``)
is a warning of :func:`mrirecon.pipeline.inert.inert_warnings` naming the fix (``--set
'reconstruct.params={}'`` and the setting in every entry). Data harder than the table's range (a higher acceleration, fewer views) take its
nearest end with a warning in the volume's record; easier data (fully sampled k-space, every
view) take it quietly. Which entry ran is a note of the volume (``provenance.json``, the report).

A learned model's table may set only what its model card lets a run change (``overridable``:
a plug-and-play schedule, an unroll count) and what the built model holds as a plain attribute
of that name, and each entry must pass the model's own checks (:func:`check_model_table`); the
slice's values are set on the model for its reconstruction and the model's own restored after it
(:func:`model_settings`), since the weights are loaded once per run. ``pipelines/mri_pnp.yaml`` runs 40 DPIR iterations at 4x and
20 at 8x, ``pipelines/ct_pnp.yaml`` 40 at 30 views and 20 at 60, each chosen on the validation
split.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
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
    """Log which of the table's settings ``params`` replaces at every entry (a ``--set`` of
    ``params`` does that on purpose). An entry's setting the user gave that ``params`` replaces
    (the user's table under the file's ``params``) changes nothing: that is a warning of
    :func:`mrirecon.pipeline.inert.inert_warnings`, which knows which keys the user set."""
    found = table_of(cfg)
    keys = sorted({k for entry in found[1].values() for k in entry if k in cfg.params}) if found else []
    if keys:
        name = found[0]
        log.info("%s: reconstruct.params sets %s for every %s, in place of reconstruct.%s's values",
                 source or "pipeline", ", ".join(keys), WHAT[name], name)


def table_keys(cfg: ReconstructConfig) -> set[str]:
    """The setting names any entry of ``cfg``'s table sets (empty without a table)."""
    found = table_of(cfg)
    return {k for entry in found[1].values() for k in entry} if found else set()


def _scalar_attribute(model: Any, name: str) -> bool:
    value = getattr(model, name, None)
    return isinstance(value, (bool, int, float, str)) and name not in getattr(model, "_parameters", {})


def check_model_table(model: Any, cfg: ReconstructConfig, source: str = "") -> list[str]:
    """Refuse, as a :class:`~mrirecon.core.config.ConfigError` naming ``source`` (the pipeline
    file) and the entry's key, a table that sets what the built learned ``model`` does not hold
    as a plain scalar attribute (a setting used only when the model is built, e.g. a layer
    count), or a value the model's own checks refuse under ``reconstruct.params`` (DPIR's ``0 <
    sigma_min <= sigma_max``): each entry is checked as the model is built (:func:`_refusal`).
    The values were set on the built model, unchecked: ``sigma_min: 0`` failed every input on
    "math domain error", ``0.5`` (over ``sigma_max`` 0.1) ran a rising schedule, exit 0.
    Returns the training-range warnings of the values each entry runs
    (:func:`entry_range_warnings`), which it logs."""
    found = table_of(cfg)
    if found is None or model is None:
        return []
    from mrirecon.core.config import ConfigError

    name, table = found
    for key, entry in table.items():
        where = f"reconstruct.{name}.{label(float(key))}"
        for k in entry:
            if not _scalar_attribute(model, k):
                raise ConfigError(source, f"{where}.{k}", f"{type(model).__name__} uses {k!r} "
                                  "only when it is built, so it cannot change from slice to "
                                  "slice; set it in reconstruct.params")
        if (refused := _refusal(model, cfg, entry)) is not None:
            setting, why = refused
            raise ConfigError(source, f"{where}.{setting}" if setting else where,
                              f"{why} (this entry over the model's other settings: its card's "
                              "and reconstruct.params); give a value the model takes, as "
                              "reconstruct.params would need")
    return entry_range_warnings(model, cfg)


def _build_problem(built: dict, settings: dict[str, Any]) -> str | None:
    """Why the model ``built`` describes (its ``build_params``) refuses ``settings`` on top of
    its own parameters: the checks of :func:`~mrirecon.models.registry.build_model` and of the
    model's constructor, which ``reconstruct.params`` meets when the model is loaded."""
    import torch

    from mrirecon.models.init import build_lock
    from mrirecon.models.registry import build_model

    try:  # the caller's random stream stays as it was; one build at a time (seeded_init's lock)
        with build_lock(), torch.random.fork_rng(devices=[]):
            build_model(built["name"], **{**(built.get("params") or {}), **settings})
    except (ValueError, TypeError) as err:
        return str(err)
    return None


def _refusal(model: Any, cfg: ReconstructConfig, entry: dict[str, Any]) -> tuple[str, str] | None:
    """``(setting, why)`` when ``model``'s own checks refuse what ``entry`` runs (its settings
    that ``cfg.params`` does not replace), ``setting`` the one to blame (``""``: only the
    entry's settings together); ``None`` when they pass or ``model`` was not built by
    :func:`~mrirecon.models.registry.build_model` (no ``build_params``: nothing to build it
    from)."""
    built = getattr(model, "build_params", None)
    own = {k: v for k, v in entry.items() if k not in cfg.params}
    if not isinstance(built, dict) or "name" not in built or not own \
            or (why := _build_problem(built, own)) is None:
        return None
    if len(own) == 1:
        return next(iter(own)), why
    alone = [k for k in own if _build_problem(built, {k: own[k]}) is not None]
    return (alone[0], why) if alone else ("", why)


def entry_range_warnings(model: Any, cfg: ReconstructConfig) -> list[str]:
    """The training-range warnings of ``model``'s card (:func:`~mrirecon.pipeline.model_range.
    range_warnings`) for the settings each entry of ``cfg``'s table runs (a plug-and-play noise
    schedule), naming the entry, logged: the per-input check reads the model's own values
    (``reconstruct.params``), so an entry's ``sigma_min`` outside the denoiser's noise levels
    was never warned of. Messages the model's own values give too are left to that check."""
    card, found = getattr(model, "model_card", None), table_of(cfg)
    if card is None or found is None:
        return []
    from mrirecon.pipeline.model_range import _noise_schedule, card_label, range_warnings

    name, table = found
    called, see = card_label(model)  # the weights and their card, as run's other range warnings
    own = set(range_warnings(card, noise_schedule=_noise_schedule(model), label=called))
    out: list[str] = []
    for key, entry in table.items():
        where = f"reconstruct.{name}.{label(float(key))}"
        with model_settings(model, replace(cfg, params={**entry, **cfg.params})):
            said = range_warnings(card, noise_schedule=_noise_schedule(model), label=called)
        for msg in said:
            if msg not in own:
                out.append(msg.replace("(reconstruct.params)", f"({where})"))
                log.warning("%s %s; results may be unreliable", out[-1], see)
    return out


def _as_type(current: Any, value: Any) -> Any:
    if isinstance(current, bool):
        return bool(value)
    return type(current)(value) if isinstance(current, (int, float, str)) else value


@contextlib.contextmanager
def model_settings(model: Any, cfg: ReconstructConfig) -> Iterator[None]:
    """Within the block, ``model``'s attributes that ``cfg``'s table sets take their values in
    ``cfg.params`` (a slice's settings, :func:`for_slice`); the model's own come back after it,
    also on an error."""
    keys = sorted(k for k in table_keys(cfg) if k in cfg.params) if model is not None else []
    saved = {k: getattr(model, k) for k in keys}
    try:
        for k in keys:
            setattr(model, k, _as_type(saved[k], cfg.params[k]))
        yield
    finally:
        for k, v in saved.items():
            setattr(model, k, v)
