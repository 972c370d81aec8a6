"""The shipped pipeline definitions (``pipelines/*.yaml``) and loading one by name or path."""

from __future__ import annotations

from pathlib import Path

import yaml

from mrirecon.pipeline.config import apply_overrides, from_dict, read_yaml
from mrirecon.pipeline.schema import PipelineConfig, drop_removed_keys
from mrirecon.pipeline.validate import validate_pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def shipped_pipelines() -> list[str]:
    """Names of the shipped pipeline definitions (``pipelines/*.yaml`` without the
    ``train_*`` training configs, which ``mrirecon train`` takes)."""
    if not PIPELINES.is_dir():
        return []
    return sorted(f.stem for f in PIPELINES.glob("*.yaml") if not f.stem.startswith("train_"))


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


def load_pipeline(name: str, overrides: list[str] = ()) -> tuple[PipelineConfig, str]:
    """``(config, yaml text)`` of a pipeline after ``key.path=value`` overrides; errors name the
    file and the key."""
    path = pipeline_path(name)
    data = drop_removed_keys(apply_overrides(read_yaml(path), overrides), str(path))
    config = validate_pipeline(from_dict(PipelineConfig, data, source=str(path)), str(path))
    return config, yaml.safe_dump(data, sort_keys=False)
