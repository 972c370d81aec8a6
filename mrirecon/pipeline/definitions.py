"""The shipped pipeline definitions and loading one by name or path.

The YAML files ship inside the package (``mrirecon/pipelines/*.yaml``, package data found with
:mod:`importlib.resources`), so ``mrirecon run mri_cs`` works from a wheel install as from a
checkout; the checkout's top-level ``pipelines/`` is a link to that folder.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

import yaml

from mrirecon.core.config import (ConfigError, apply_overrides, from_dict, load_yaml,
                                  override_targets, overrides_list, read_yaml,
                                  refuse_other_kind)
from mrirecon.pipeline.schema import PipelineConfig, config_sha256, drop_removed_keys
from mrirecon.pipeline.validate import (accepted_params, canonical_method_params,
                                        validate_pipeline)

# installed packages are plain folders (pip unpacks wheels), so the resource is a real path
PIPELINES = Path(str(files("mrirecon").joinpath("pipelines")))


def is_shipped_pipeline(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the pipelines shipped in :data:`PIPELINES`."""
    return Path(path).resolve().parent == PIPELINES.resolve()
log = logging.getLogger("mrirecon.pipeline")


def shipped_pipelines() -> list[str]:
    """Names of the shipped pipeline definitions (``pipelines/*.yaml`` without the
    ``train_*`` training configs, which ``mrirecon train`` takes)."""
    if not PIPELINES.is_dir():
        return []
    return sorted(f.stem for f in PIPELINES.glob("*.yaml") if not f.stem.startswith("train_"))


def training_config_path(name: str) -> Path:
    """A training config: an existing YAML path, or a shipped one by name
    (``train_modl_brain_sim``, with or without ``.yaml`` / ``pipelines/``)."""
    p = Path(name)
    if p.is_file():
        return p
    stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    q = PIPELINES / f"{stem}.yaml"
    if stem.startswith("train_") and q.is_file() and (p.parent == Path(".")
                                                     or p.parent.name == "pipelines"):
        return q
    known = ", ".join(sorted(f.stem for f in PIPELINES.glob("train_*.yaml")))
    if p.is_dir():  # was "training config 'adir' not found"
        raise ValueError(f"training config {name!r} is a folder, not a YAML file: give the "
                         f"config's .yaml file or a shipped config ({known})")
    raise FileNotFoundError(f"training config {name!r} not found: give a YAML file or a shipped "
                            f"config ({known})")


def pipeline_path(name: str | os.PathLike) -> Path:
    """A pipeline definition: a YAML file, or a shipped one by name (``mri_cs``, ``mri_cs.yaml``
    and ``pipelines/mri_cs.yaml`` all name the shipped file). Such a name is refused as
    ambiguous when a YAML file of that name is in the working directory too (``mri_cs`` ran the
    shipped file, ``mri_cs.yaml`` the local one, and no record said which): ``./mri_cs.yaml``,
    or any path with another folder, is the file."""
    text = os.path.expanduser(os.fspath(name))
    p = Path(text)
    suffixed = p.suffix in (".yaml", ".yml")
    stem = p.stem if suffixed else p.name
    by_name = (not p.is_absolute() and not text.startswith(("./", "../"))
               and p.parent in (Path("."), Path("pipelines")))
    shipped = PIPELINES / f"{stem}.yaml" if by_name and stem in shipped_pipelines() else None
    if suffixed:
        local = [p] if p.is_file() else []
    else:  # a bare name is a shipped name; a YAML file of that name is in its way
        local = [q for q in (p.with_name(f"{p.name}.yaml"), p.with_name(f"{p.name}.yml"))
                 if shipped is not None and q.is_file()]
    local = [q for q in local if shipped is None or not os.path.samefile(q, shipped)]
    if shipped is not None and local:
        raise ValueError(f"pipeline {text!r} names both the shipped pipeline {shipped} and the file "
                         f"{os.path.abspath(local[0])} (in the working directory); write "
                         f"./{local[0].as_posix()} (or its absolute path) for the file, or rename "
                         "it (or move it away) for the shipped pipeline")
    if local or shipped is not None:
        return local[0] if local else shipped
    if p.is_file():  # was "pipeline 'pl/mine.txt' not found"
        raise ValueError(f"pipeline file {text!r} is not a .yaml / .yml file; rename it "
                         f"({p.with_suffix('.yaml')}) or give a shipped pipeline by name")
    q = PIPELINES / f"{stem}.yaml"
    if stem.startswith("train_") and q.is_file():
        raise FileNotFoundError(f"{name!r} is a training config: run it with `mrirecon train {q}`")
    known = ", ".join(shipped_pipelines())
    if p.is_dir():  # was "pipeline 'adir.yaml' not found"
        raise ValueError(f"pipeline {text!r} is a folder, not a YAML file: give the pipeline's "
                         f".yaml file or a shipped pipeline ({known})")
    raise FileNotFoundError(f"pipeline {text!r} not found: give a YAML file or a shipped pipeline "
                            f"({known})")


def _canonical_names(raw: dict, overrides: list[str], source: str) -> tuple[dict, list[str]]:
    """Deprecated parameter names renamed separately in the file and in ``--set`` overrides
    (each warning names its source), so that an old-name override replaces a new-name value of
    the file instead of colliding with it."""
    merged = apply_overrides(raw, overrides, quiet=True)
    rc = merged.get("reconstruct") if isinstance(merged, dict) else None
    method = rc.get("method") if isinstance(rc, dict) else None
    if not isinstance(method, str):
        return raw, overrides
    own = raw.get("reconstruct") if isinstance(raw, dict) else None
    if isinstance(own, dict) and isinstance(own.get("params"), dict):
        params = canonical_method_params(method, own["params"], source)
        raw = {**raw, "reconstruct": {**own, "params": params}}
    renamed = []
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if sep and len(parts) == 3 and parts[:2] == ["reconstruct", "params"]:
            new = next(iter(canonical_method_params(method, {parts[2]: None}, "--set")))
            item = f"reconstruct.params.{new}={value}"
        elif sep and parts == ["reconstruct", "params"] and isinstance(load_yaml(value), dict):
            given = load_yaml(value)  # merged into the file's params: renamed likewise
            params = canonical_method_params(method, given, "--set")
            if list(params) != list(given):
                item = "reconstruct.params=" + yaml.safe_dump(
                    params, default_flow_style=True, width=10**6).strip()
        renamed.append(item)
    return raw, renamed


def _tables_of_the_method(raw: dict, data: dict, overrides: list[str], source: str
                          ) -> tuple[dict, list[str]]:
    """``data`` (the file ``raw`` after ``overrides``) without the file's per-acceleration /
    per-view tables when the overrides change ``reconstruct.method`` and set no table: the
    file's tables were tuned for its own method (``mri_cs``'s L1-wavelet iterations are no
    CG-SENSE setting). ``params`` stay, as they always did, with a note naming those the
    overrides did not set (``mri_cs``'s tuned L1-wavelet ``lam`` became TV's ``lam`` without a
    word). Returns ``(data, notes)``. (A table the overrides set as a mapping replaces the
    file's: :func:`mrirecon.core.config.apply_overrides`.)"""
    from mrirecon.pipeline.param_tables import WHAT

    own, merged = (d.get("reconstruct") if isinstance(d, dict) else None for d in (raw, data))
    if not isinstance(own, dict) or not isinstance(merged, dict) \
            or merged.get("method") == own.get("method"):
        return data, []
    targets = [k.split(".") for item in overrides for k in override_targets(item)]
    notes = []
    kept = own.get("params") if isinstance(own.get("params"), dict) else {}
    if kept and ["reconstruct", "params"] not in targets:
        carried = [k for k in kept if ["reconstruct", "params", str(k)] not in targets]
        if carried:
            named = ", ".join(f"reconstruct.params.{k}={kept[k]!r}" for k in carried)
            notes.append(f"{source}: {named} {'was' if len(carried) == 1 else 'were'} written "
                         f"for {own.get('method')} (the file's reconstruct.method) and "
                         f"{'is' if len(carried) == 1 else 'are'} kept for reconstruct.method="
                         f"{merged.get('method')}; set {'it' if len(carried) == 1 else 'them'} "
                         "(--set reconstruct.params.NAME=VALUE) or run a pipeline written for "
                         f"{merged.get('method')}")
    if not any(own.get(t) for t in WHAT) or any(t[:2] in (["reconstruct", w] for w in WHAT)
                                                 for t in targets):
        return data, notes
    dropped = [t for t in WHAT if own.get(t)]
    notes.insert(0, f"{source}: reconstruct.{' / '.join(dropped)}: tuned for {own.get('method')}, "
                    f"not used with reconstruct.method={merged.get('method')}")
    return {**data, "reconstruct": {k: v for k, v in merged.items() if k not in dropped}}, notes


def _weights_beside(data: dict, overrides: list[str], path: Path) -> dict:
    """``data`` with a relative ``reconstruct.weights`` written in the pipeline file ``path``
    made absolute: looked for beside that file first, then in the working directory (a path in
    a config file is relative to the file, as in most tools; it was taken from the working
    directory alone, where a file of that name silently won). Shipped pipelines, shipped names,
    absolute paths and ``--set reconstruct.weights=...`` (the working directory) are left as
    they are; a missing file is refused naming both places looked in."""
    from mrirecon import recon
    from mrirecon.io.weights import is_shipped_weights, resolve_weights

    rc = data.get("reconstruct") if isinstance(data, dict) else None
    value = rc.get("weights") if isinstance(rc, dict) else None
    keys = [k for o in overrides for k in override_targets(o)]
    if isinstance(value, str) and value.startswith("~"):  # weights: ~/x.pt (was not expanded)
        value = os.path.expanduser(value)
        data = {**data, "reconstruct": {**rc, "weights": value}}
        rc = data["reconstruct"]
    if (not isinstance(value, str) or not value or Path(value).is_absolute()
            or rc.get("method") in recon.available()  # refused by the validation, by name
            or is_shipped_pipeline(path)
            or any(k in ("reconstruct", "reconstruct.weights") for k in keys)):
        return data
    try:
        found = resolve_weights(value, "reconstruct.weights", base=path.resolve().parent)
    except (FileNotFoundError, ValueError) as err:
        message = str(err).removeprefix("reconstruct.weights: ")
        raise ConfigError(str(path), "reconstruct.weights", message) from None
    if is_shipped_weights(found, value):
        return data  # a shipped name stays a name (provenance, --resume)
    return {**data, "reconstruct": {**rc, "weights": str(found)}}


def load_pipeline(name: str | os.PathLike, overrides: list[str] = ()) -> tuple[PipelineConfig, str]:
    """``(config, yaml text)`` of a pipeline after ``key.path=value`` overrides; errors name the
    file and the key; settings that change nothing are logged (:func:`load_pipeline_warned`)."""
    config, text, _ = load_pipeline_warned(name, overrides_list(overrides, "load_pipeline"))
    return config, text


def _unknown_key_hint(err: ConfigError, data: dict) -> ConfigError:
    """``err`` with a hint when its unknown key ``reconstruct.NAME`` is a parameter of the
    method (``reconstruct: {lam: 0.01}``): it belongs under ``reconstruct.params``."""
    m = re.fullmatch(r"reconstruct\.([^.]+)", err.key or "")
    rc = data.get("reconstruct") if isinstance(data, dict) else None
    method = rc.get("method", "cg_sense") if isinstance(rc, dict) else None
    if m is None or not err.message.startswith("unknown key") or not isinstance(method, str) \
            or m.group(1) not in (accepted_params(method) or ()):
        return err
    return ConfigError(err.source, err.key, f"{err.message}; {m.group(1)} is a parameter of "
                       f"{method}: give it under reconstruct.params (reconstruct.params."
                       f"{m.group(1)})")


def load_pipeline_warned(name: str | os.PathLike, overrides: list[str] = ()
                         ) -> tuple[PipelineConfig, str, list[str]]:
    """:func:`load_pipeline` and its config-level warnings, each also logged: the settings the
    user chose that change nothing under the rest of the config
    (:func:`mrirecon.pipeline.inert.inert_warnings`), for ``provenance.json``. The config
    records the file it was read from (``pipeline_file``)."""
    from mrirecon.pipeline.inert import inert_warnings

    overrides = overrides_list(overrides, "load_pipeline")
    path = pipeline_path(name)
    raw = read_yaml(path)
    refuse_other_kind(raw, path, "run")
    raw, overrides = _canonical_names(raw, overrides, str(path))
    data = apply_overrides(raw, overrides, schema=PipelineConfig)
    data, method_notes = _tables_of_the_method(raw, data, overrides, str(path))
    data = drop_removed_keys(data, str(path))
    data = _weights_beside(data, overrides, path)
    try:
        config = validate_pipeline(from_dict(PipelineConfig, data, source=str(path)), str(path))
    except ConfigError as err:
        raise _unknown_key_hint(err, data).blamed_on(overrides) from None
    config = replace(config, pipeline_file=str(path.resolve()))
    shipped = is_shipped_pipeline(path)
    warned = method_notes + inert_warnings(config, overrides, str(path), shipped)
    for msg in warned:
        log.warning("%s", msg)
    config = replace(config, load_warnings=(config_sha256(config), tuple(warned)))
    return config, yaml.safe_dump(data, sort_keys=False), warned
