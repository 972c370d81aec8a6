"""The shipped pipeline definitions and loading one by name or path.

The YAML files ship inside the package (``mrirecon/pipelines/*.yaml``, package data found with
:mod:`importlib.resources`), so ``mrirecon run mri_cs`` works from a wheel install as from a
checkout; the checkout's top-level ``pipelines/`` is a link to that folder.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

import yaml

from mrirecon.core.config import ConfigError, apply_overrides, from_dict, read_yaml
from mrirecon.pipeline.schema import PipelineConfig, drop_removed_keys
from mrirecon.pipeline.validate import canonical_method_params, validate_pipeline

# installed packages are plain folders (pip unpacks wheels), so the resource is a real path
PIPELINES = Path(str(files("mrirecon").joinpath("pipelines")))
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
    raise FileNotFoundError(f"training config {name!r} not found: give a YAML file or a shipped "
                            f"config ({known})")


def pipeline_path(name: str) -> Path:
    """A pipeline definition: an existing YAML path, or a shipped one by name (``mri_cs``,
    ``mri_cs.yaml`` and ``pipelines/mri_cs.yaml`` all name the shipped file)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    stem = p.stem if p.suffix in (".yaml", ".yml") else p.name
    q = PIPELINES / f"{stem}.yaml"
    if stem in shipped_pipelines() and (p.parent == Path(".") or p.parent.name == "pipelines"):
        return q
    if stem.startswith("train_") and q.is_file():
        raise FileNotFoundError(f"{name!r} is a training config: run it with `mrirecon train {q}`")
    known = ", ".join(shipped_pipelines())
    raise FileNotFoundError(f"pipeline {name!r} not found: give a YAML file or a shipped pipeline "
                            f"({known})")


def _canonical_names(raw: dict, overrides: list[str], source: str) -> tuple[dict, list[str]]:
    """Deprecated parameter names renamed separately in the file and in ``--set`` overrides
    (each warning names its source), so that an old-name override replaces a new-name value of
    the file instead of colliding with it."""
    merged = apply_overrides(raw, overrides)
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
        renamed.append(item)
    return raw, renamed


def _tables_of_the_method(raw: dict, data: dict, overrides: list[str], source: str) -> dict:
    """``data`` (the file ``raw`` after ``overrides``) without the file's per-acceleration /
    per-view tables when the overrides change ``reconstruct.method`` and set no table: the
    file's tables were tuned for its own method (``mri_cs``'s L1-wavelet iterations are no
    CG-SENSE setting). Logged; ``params`` stay, as they always did."""
    from mrirecon.pipeline.param_tables import WHAT

    own, merged = (d.get("reconstruct") if isinstance(d, dict) else None for d in (raw, data))
    if not isinstance(own, dict) or not isinstance(merged, dict) \
            or not any(own.get(t) for t in WHAT) or merged.get("method") == own.get("method") \
            or any(item.strip().startswith(tuple(f"reconstruct.{t}" for t in WHAT)) for item in overrides):
        return data
    dropped = [t for t in WHAT if own.get(t)]
    log.warning("%s: reconstruct.%s: tuned for %s, not used with reconstruct.method=%s", source,
                " / ".join(dropped), own.get("method"), merged.get("method"))
    return {**data, "reconstruct": {k: v for k, v in merged.items() if k not in dropped}}


def _weights_beside(data: dict, overrides: list[str], path: Path) -> dict:
    """``data`` with a relative ``reconstruct.weights`` written in the pipeline file ``path``
    made absolute: looked for beside that file first, then in the working directory (a path in
    a config file is relative to the file, as in most tools; it was taken from the working
    directory alone, where a file of that name silently won). Shipped pipelines, shipped names,
    absolute paths and ``--set reconstruct.weights=...`` (the working directory) are left as
    they are; a missing file is refused naming both places looked in."""
    from mrirecon import recon
    from mrirecon.io.weights import WEIGHTS_DIR, resolve_weights

    rc = data.get("reconstruct") if isinstance(data, dict) else None
    value = rc.get("weights") if isinstance(rc, dict) else None
    keys = [o.split("=", 1)[0].strip() for o in overrides]
    if (not isinstance(value, str) or not value or Path(value).is_absolute()
            or rc.get("method") in recon.available()  # refused by the validation, by name
            or path.resolve().parent == PIPELINES.resolve()
            or any(k in ("reconstruct", "reconstruct.weights") for k in keys)):
        return data
    try:
        found = resolve_weights(value, "reconstruct.weights", base=path.resolve().parent)
    except (FileNotFoundError, ValueError) as err:
        message = str(err).removeprefix("reconstruct.weights: ")
        raise ConfigError(str(path), "reconstruct.weights", message) from None
    if found.parent == WEIGHTS_DIR and found.stem == value:
        return data  # a shipped name stays a name (provenance, --resume)
    return {**data, "reconstruct": {**rc, "weights": str(found)}}


def load_pipeline(name: str, overrides: list[str] = ()) -> tuple[PipelineConfig, str]:
    """``(config, yaml text)`` of a pipeline after ``key.path=value`` overrides; errors name the
    file and the key; settings that change nothing are logged (:func:`load_pipeline_warned`)."""
    config, text, _ = load_pipeline_warned(name, overrides)
    return config, text


def load_pipeline_warned(name: str, overrides: list[str] = ()
                         ) -> tuple[PipelineConfig, str, list[str]]:
    """:func:`load_pipeline` and its config-level warnings, each also logged: the settings the
    user chose that change nothing under the rest of the config
    (:func:`mrirecon.pipeline.inert.inert_warnings`), for ``provenance.json``."""
    from mrirecon.pipeline.inert import inert_warnings

    path = pipeline_path(name)
    raw = read_yaml(path)
    raw, overrides = _canonical_names(raw, list(overrides), str(path))
    data = _tables_of_the_method(raw, apply_overrides(raw, overrides), overrides, str(path))
    data = drop_removed_keys(data, str(path))
    data = _weights_beside(data, overrides, path)
    try:
        config = validate_pipeline(from_dict(PipelineConfig, data, source=str(path)), str(path))
    except ConfigError as err:
        raise err.blamed_on(overrides) from None
    shipped = path.resolve().parent == PIPELINES.resolve()
    warned = inert_warnings(config, overrides, str(path), shipped)
    for msg in warned:
        log.warning("%s", msg)
    return config, yaml.safe_dump(data, sort_keys=False), warned
