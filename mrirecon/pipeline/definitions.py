"""The shipped pipeline definitions (``pipelines/*.yaml``) and loading one by name or path."""

from __future__ import annotations

from pathlib import Path

import yaml

from mrirecon.pipeline.config import apply_overrides, from_dict, read_yaml
from mrirecon.pipeline.schema import PipelineConfig
from mrirecon.pipeline.validate import validate_pipeline

PIPELINES = Path(__file__).resolve().parents[2] / "pipelines"


def pipeline_path(name: str) -> Path:
    """A shipped pipeline definition (``pipelines/NAME.yaml``) or an explicit path."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    q = PIPELINES / f"{name}.yaml"
    if not q.exists():
        known = sorted(f.stem for f in PIPELINES.glob("*.yaml")) if PIPELINES.exists() else []
        raise FileNotFoundError(f"pipeline {name!r} not found (shipped: {', '.join(known)})")
    return q


def load_pipeline(name: str, overrides: list[str] = ()) -> tuple[PipelineConfig, str]:
    """``(config, yaml text)`` of a pipeline after ``key.path=value`` overrides; errors name the
    file and the key."""
    path = pipeline_path(name)
    data = apply_overrides(read_yaml(path), overrides)
    config = validate_pipeline(from_dict(PipelineConfig, data, source=str(path)), str(path))
    return config, yaml.safe_dump(data, sort_keys=False)
