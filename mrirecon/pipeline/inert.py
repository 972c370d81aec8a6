"""Settings that change nothing under the rest of the final config, said once per run.

A valid value can still be inert: ``undersample.views=30`` with ``undersample.enabled: false``
reconstructed all 180 views, ``calibrate.kernel_width`` with Walsh maps or ``adapt.steps`` with
adaptation off gave byte-identical outputs, with exit 0, no word, and ``provenance.json``
recording the value as if applied. This module holds the one table of such cases,
:data:`RULES` (``(keys, condition on the config under which they are inert, reason, fix)``) and
:data:`PARAM_RULES` for method parameters that another parameter cancels, and a table entry's
setting that ``reconstruct.params`` replaces at every entry (:func:`_shadowed_warning`);
:func:`inert_warnings` evaluates them once per run after the config is loaded and validated
(:func:`mrirecon.pipeline.definitions.load_pipeline_warned`), one warning per inert key the
user set, naming the key, its value, where it came from and why it has no effect::

    --set over .../ct_fbp.yaml: undersample.views=30 has no effect: undersample.enabled is false
    (set undersample.enabled=true to keep 30 views)

Only keys the user set are judged (:func:`user_keys`): the ``--set`` overrides of a shipped
pipeline, and for a pipeline file of one's own also every key whose value differs from the
schema's default. Cases that need the data (``max_cropped_energy`` on radial data, a
``calib_width`` wider than the centre band, ``fbp`` ``short_scan`` on parallel-beam data) are
not judged here: the config alone cannot tell. The stages note them per input
(:func:`mrirecon.pipeline.inert_data.calibration_notes`, ``CTStages.data_messages``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import yaml

from mrirecon.core.config import load_yaml, to_dict
from mrirecon.pipeline.param_tables import WHAT, label, table_key, table_of
from mrirecon.pipeline.schema import AdaptConfig, CalibrateConfig, PipelineConfig


@dataclass(frozen=True)
class Rule:
    """``keys`` change nothing while ``inert(config)`` holds; ``why`` and ``fix`` are format
    strings over ``c`` (the config), ``key``, ``value`` (the setting as written) and
    ``formats`` (``export.formats``), or ``why`` is a function of the config."""

    keys: tuple[str, ...]
    inert: Callable[[PipelineConfig], bool]
    why: str | Callable[[PipelineConfig], str]
    fix: str = ""


@dataclass(frozen=True)
class ParamRule:
    """``reconstruct.params.<name>`` of ``methods`` changes nothing while ``inert(params)`` holds
    for the parameters a slice runs with (the method's defaults, the table entry, ``params``)."""

    methods: tuple[str, ...]
    name: str
    inert: Callable[[dict], bool]
    why: str
    fix: str = ""


def own_maps_model(config: PipelineConfig) -> str | None:
    """The learned model (its weights' card's architecture) that estimates its own coil
    sensitivities and so ignores the ``calibrate`` maps (E2E-VarNet unless
    ``estimate_sensitivities: false``, ``learned_maps``), or ``None``."""
    from mrirecon import recon
    from mrirecon.pipeline.adapt_stage import model_architecture
    from mrirecon.training.ssdu import estimates_own_maps

    if config.modality != "mri" or config.reconstruct.method in recon.available():
        return None
    name, params, _ = model_architecture(config)
    return name if estimates_own_maps(name, params) else None  # training's loss.ssdu rule too


def maps_unused(config: PipelineConfig) -> str | None:
    """Why the reconstruction uses no coil maps of ``calibrate`` (``None``: it uses them)."""
    from mrirecon import recon
    from mrirecon.pipeline.stages_mri import needs_maps

    method = config.reconstruct.method
    if config.modality != "mri":
        return None
    if method in recon.available():
        return None if needs_maps(method, None) else \
            f"reconstruct.method {method} uses no coil maps"
    if (own := own_maps_model(config)) is None:
        return None
    named = method if own == method else f"{method} (a {own} model)"
    return f"{named} estimates its own coil sensitivities"


def _all_but(section: type, *kept: str, prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{f.name}" for f in fields(section) if f.name not in kept)


def _undersampling_off(c: PipelineConfig) -> bool:
    return not c.undersample.enabled


def _adapt_off(c: PipelineConfig) -> str:
    from mrirecon import recon

    if c.reconstruct.method in recon.available():
        return (f"adapt.enabled is false, and reconstruct.method {c.reconstruct.method} is a "
                "classical method, which adaptation cannot fine-tune")
    return "adapt.enabled is false (set adapt.enabled=true to fine-tune the model on each scan)"


_MRI_ADAPT = ("adapt.ratio", "adapt.selection", "adapt.acs_block", "adapt.rows",
              "adapt.val_stripes")
_ESPIRIT = ("calibrate.kernel_width", "calibrate.threshold", "calibrate.crop",
            "calibrate.max_cropped_energy")

#: The table: per key, the first rule whose condition holds gives the warning.
RULES: tuple[Rule, ...] = (
    Rule(("undersample.views",), _undersampling_off, "undersample.enabled is false",
         "set undersample.enabled=true to keep {value} views"),
    Rule(("undersample.photons",), _undersampling_off, "undersample.enabled is false",
         "set undersample.enabled=true to simulate {value} photons per detector bin"),
    Rule(("undersample.mask", "undersample.center_fractions", "undersample.accelerations",
          "undersample.seed", "undersample.fixed_seed"), _undersampling_off,
         "undersample.enabled is false, so the data are reconstructed as stored",
         "set undersample.enabled=true to undersample them"),
    Rule(("undersample.seed", "undersample.fixed_seed"),
         lambda c: c.modality == "ct" and c.undersample.photons is None,
         "no dose is simulated (undersample.photons is not set), and the views kept do not "
         "depend on a seed", "set undersample.photons to add low-dose noise"),
    Rule(("undersample.fixed_seed",), lambda c: c.undersample.seed != "fixed",
         "undersample.seed is {c.undersample.seed!r}: each file's name seeds it",
         "set undersample.seed=fixed to use {value}"),
    Rule(("preprocess.compression_method",), lambda c: c.preprocess.coil_compression is None,
         "preprocess.coil_compression is not set, so no coils are compressed",
         "set preprocess.coil_compression=N to compress to N virtual coils"),
    Rule(_all_but(CalibrateConfig, "method", prefix="calibrate"),
         lambda c: maps_unused(c) is not None, maps_unused),
    Rule(("calibrate.method",),  # none is what such a method wants: not said
         lambda c: c.calibrate.method != "none" and maps_unused(c) is not None, maps_unused,
         "set calibrate.method=none to skip the calibration"),
    Rule(_all_but(CalibrateConfig, "method", prefix="calibrate"),
         lambda c: c.calibrate.method == "none", "calibrate.method is none: no coil maps are "
         "estimated"),
    Rule(_ESPIRIT, lambda c: c.calibrate.method == "walsh",
         "calibrate.method is walsh and {key} is an ESPIRiT setting (Walsh maps use only "
         "calibrate.calib_width)", "set calibrate.method=espirit to use it"),
    Rule(("calibrate.max_cropped_energy",), lambda c: c.calibrate.crop <= 0,
         "calibrate.crop is {c.calibrate.crop:g}: ESPIRiT crops nothing, so there is no crop "
         "to lower"),
    Rule(_all_but(AdaptConfig, "enabled", prefix="adapt"), lambda c: not c.adapt.enabled,
         _adapt_off),
    Rule(_MRI_ADAPT, lambda c: c.modality == "ct",
         "CT adaptation holds back every k-th view (adapt.validation_fraction) and trains on "
         "halves of the rest; adapt.ratio, selection, acs_block, rows and val_stripes split MRI "
         "k-space"),
    Rule(("adapt.val_stripes",), lambda c: c.adapt.rows is None,
         "adapt.rows is null: the whole slice is validated, there are no readout stripes to "
         "choose", "set adapt.rows to train and validate on readout stripes"),
    Rule(("postprocess.crop_size",), lambda c: c.postprocess.crop != "fixed",
         "postprocess.crop is {c.postprocess.crop}",
         "set postprocess.crop=fixed to crop to {value}"),
    Rule(("export.series_description", "export.keep_identity", "export.series_number"),
         lambda c: "dicom" not in c.export.formats,
         "export.formats ({formats}) has no dicom, so no DICOM series is written",
         "add dicom to export.formats"),
    Rule(("report.max_slices_in_figures",), lambda c: "png" not in c.export.formats,
         "export.formats ({formats}) has no png, so no figures are drawn",
         "add png to export.formats"),
)

#: Method parameters that another parameter cancels.
PARAM_RULES: tuple[ParamRule, ...] = (
    ParamRule(("l1_wavelet",), "seed", lambda p: not p.get("random_shift", True),
              "random_shift is false, and the seed draws only the cycle-spinning shifts",
              "drop it, or set random_shift=true"),
    ParamRule(("l1_wavelet",), "power_iterations", lambda p: p.get("step") is not None,
              "a fixed step is given (step={step}), so no power iteration estimates one"),
    ParamRule(("pnp_nlm", "pnp_bm3d"), "sigma_scale", lambda p: p.get("sigma") is not None,
              "sigma is given (sigma={sigma}); sigma_scale scales only the noise level estimated "
              "from the data"),
    ParamRule(("epll",), "iterations", lambda p: p.get("sigmas") is not None,
              "sigmas is given (sigmas={sigmas}), one stage per value; iterations sets only the "
              "length of the default schedule", "drop it, or drop sigmas"),
)


def _shown(value: Any) -> str:
    """``value`` as written in YAML / ``--set``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_shown(v)}" for k, v in value.items()) + "}"
    return str(value)


def _part(key: Any) -> str:
    number = isinstance(key, (int, float)) and not isinstance(key, bool)
    return label(float(key)) if number else str(key)


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """``{dotted key: value}`` of the non-mapping values under ``prefix`` (table keys as
    :func:`~mrirecon.pipeline.param_tables.label` writes them)."""
    if not isinstance(value, dict) or not value:
        return {prefix: value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_leaves(v, f"{prefix}.{_part(k)}" if prefix else _part(k)))
    return out


def _override_keys(item: str) -> list[str]:
    """The dotted keys one ``key.path=value`` override sets (a mapping value: each key in it)."""
    path, _, raw = item.partition("=")
    parts = [p.strip() for p in path.split(".")]
    if len(parts) > 2 and parts[0] == "reconstruct" and parts[1] in WHAT \
            and (key := table_key(parts[2])) is not None:
        parts[2] = label(key)  # "8", "8.0" and the YAML's 8 name one entry
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:  # refused at load already; nothing to say here
        value = None
    return list(_leaves(value, ".".join(parts)))


def user_keys(config: PipelineConfig, overrides: list[str], source: str,
              shipped: bool, base: PipelineConfig | None = None) -> dict[str, str]:
    """``{dotted key: where it came from}`` of the settings the user chose: the ``--set``
    overrides (``--set over <source>``), the keys whose values differ from ``base`` (the
    pipeline as loaded, for a config changed in code: ``source``) and, when ``source`` is not a
    shipped pipeline, every key of the file whose value differs from the schema's default
    (``source``)."""
    said = {k: f"--set over {source}" for item in overrides for k in _override_keys(item)}
    if base is not None:
        theirs = _leaves(to_dict(base), "")
        said.update({k: source for k, v in _leaves(to_dict(config), "").items()
                     if k not in said and theirs.get(k, object()) != v})
    if shipped:
        return said
    default = _leaves(to_dict(PipelineConfig(name=config.name, modality=config.modality)), "")
    mine = {k: source for k, v in _leaves(to_dict(config), "").items()
            if k not in said and default.get(k, object()) != v}
    return {**mine, **said}


def _why(text, config: PipelineConfig, key: str, value: Any) -> str:
    if callable(text):
        return text(config)
    return text.format(c=config, key=key, value=_shown(value),
                       formats=", ".join(config.export.formats))


def _param_cases(config: PipelineConfig, key: str) -> list[dict]:
    """The parameters a slice runs with, for the user's ``key``: ``reconstruct.params.<name>``
    holds for every table entry; ``reconstruct.<table>.<k>.<name>`` for its entry alone."""
    from mrirecon.core.config import signature_params
    from mrirecon.recon.registry import _lookup

    rc = config.reconstruct
    defaults = signature_params(_lookup(rc.method).fn, 2)[0]
    found = table_of(rc)
    entries = list(found[1].items()) if found else [(None, {})]
    parts = key.split(".")
    if parts[1] in WHAT:
        entries = [(k, e) for k, e in entries if k is not None and label(float(k)) == parts[2]]
    return [{**defaults, **entry, **rc.params} for _, entry in entries]


def _param_warning(config: PipelineConfig, key: str, value: Any, origin: str) -> str | None:
    from mrirecon import recon

    rc, parts = config.reconstruct, key.split(".")
    if rc.method not in recon.available() or parts[0] != "reconstruct" or not (
            (len(parts) == 3 and parts[1] == "params") or (len(parts) == 4 and parts[1] in WHAT)):
        return None
    for rule in PARAM_RULES:
        if rc.method in rule.methods and parts[-1] == rule.name:
            cases = _param_cases(config, key)
            if cases and all(rule.inert(p) for p in cases):
                shown = {k: _shown(v) for k, v in cases[0].items()}
                return _said(origin, key, value, f"{rc.method}: " + rule.why.format(**shown),
                             rule.fix)
    return None


def _set_arg(item: str) -> str:
    """``--set item``, quoted for a shell where it holds a space, brackets or braces."""
    return f"--set '{item}'" if any(c in item for c in " []{}#'\"") else f"--set {item}"


def _entry_set(name: str, key: float, setting: str, value: Any) -> str:
    """The ``--set`` that gives ``setting`` in table ``name``'s entry ``key`` (a fractional key
    as a mapping: ``--set`` splits keys at dots)."""
    if key == int(key):
        return _set_arg(f"reconstruct.{name}.{label(key)}.{setting}={_shown(value)}")
    return _set_arg(f"reconstruct.{name}={{{label(key)}: {{{setting}: {_shown(value)}}}}}")


def _shadowed_warning(config: PipelineConfig, key: str, value: Any,
                      chosen: dict[str, str]) -> str | None:
    """The user's ``reconstruct.<table>.<k>.<name>`` that ``reconstruct.params.<name>`` replaces
    at every entry (:func:`~mrirecon.pipeline.param_tables.for_slice`: ``params`` on top):
    ``--set reconstruct.params_by_acceleration.4.lam=1e-3`` over ``mri_cs`` (whose ``params``
    hold ``lam``) gave the shipped image byte for byte. The fix names what makes the entry's
    value run: clearing ``params`` and giving the entries the user did not set the value they
    ran with, or, when the user set ``params``'s value too, removing one of the two."""
    rc, parts = config.reconstruct, key.split(".")
    if len(parts) != 4 or parts[0] != "reconstruct" or parts[1] not in WHAT \
            or parts[3] not in rc.params:
        return None
    found = table_of(rc)
    if found is None or found[0] != parts[1]:
        return None
    name, setting, table = parts[1], parts[3], found[1]
    what = {"views": "view count"}.get(WHAT[name], WHAT[name])
    shadow, pkey = rc.params[setting], f"reconstruct.params.{setting}"
    if pkey in chosen:  # both the user's: one of the two is a mistake
        why = (f"{pkey}={_shown(shadow)} ({chosen[pkey]}) holds for every {what}, in place of "
               f"each entry's {setting} (reconstruct.params win over reconstruct.{name})")
        fix = f"remove {pkey} to run the entries' {setting}, or this entry's {setting}"
        return _said(chosen[key], key, value, why, fix)
    why = (f"the pipeline's {pkey}={_shown(shadow)} holds for every {what}, in place of each "
           f"entry's {setting} (reconstruct.params win over reconstruct.{name})")
    mine = {label(float(k)) for k in table if f"reconstruct.{name}.{label(float(k))}.{setting}" in chosen}
    theirs = [f"reconstruct.params.{k}" for k in rc.params if f"reconstruct.params.{k}" in chosen]
    keep = [_set_arg(f"reconstruct.params.{k}={_shown(v)}") for k, v in rc.params.items()
            if k != setting and f"reconstruct.params.{k}" not in chosen]
    rest = [_entry_set(name, float(k), setting, shadow) for k in sorted(map(float, table))
            if label(k) not in mine]
    fix = ("to use it, add --set 'reconstruct.params={}'"
           + (f" (before your {', '.join(theirs)})" if theirs else "")
           + (f", then {' '.join(keep)} to keep reconstruct.params' other settings" if keep else "")
           + (f", and {' '.join(rest)} to keep {setting}={_shown(shadow)} where you set no "
              f"{setting}" if rest else ""))
    return _said(chosen[key], key, value, why, fix)


def _said(origin: str, key: str, value: Any, why: str, fix: str) -> str:
    return f"{origin}: {key}={_shown(value)} has no effect: {why}" + (f" ({fix})" if fix else "")


def inert_rule(config: PipelineConfig, key: str) -> Rule | None:
    """The first rule of :data:`RULES` under which ``key`` changes nothing in ``config``."""
    return next((r for r in RULES if key in r.keys and r.inert(config)), None)


def inert_warnings(config: PipelineConfig, overrides: list[str], source: str,
                   shipped: bool, base: PipelineConfig | None = None) -> list[str]:
    """One warning per setting the user chose (:func:`user_keys`) that changes nothing under
    the rest of ``config`` (:data:`RULES`, a table entry's setting that ``reconstruct.params``
    replaces, :data:`PARAM_RULES`), in the config's order."""
    chosen = user_keys(config, overrides, source, shipped, base)
    out = []
    for key, value in _leaves(to_dict(config), "").items() if chosen else ():
        if key not in chosen:
            continue
        if (rule := inert_rule(config, key)) is not None:
            out.append(_said(chosen[key], key, value, _why(rule.why, config, key, value),
                             _why(rule.fix, config, key, value)))
        elif (msg := _shadowed_warning(config, key, value, chosen)) is not None:
            out.append(msg)
        elif (msg := _param_warning(config, key, value, chosen[key])) is not None:
            out.append(msg)
    return out
