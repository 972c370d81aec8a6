"""The model card ``mrirecon train CONFIG.yaml`` writes beside ``model.pt``.

In the schema of the shipped cards (``mrirecon/weights/*.yaml``): ``model`` (what loading needs),
``description``, ``data`` (the folders and how much of them was used), ``training`` (the command,
the config file and the resolved config, steps, wall time, versions), ``training_range`` measured
from the training data actually used (:meth:`training_range` of the training set: k-space
matrices, coils and accelerations for MRI; image grid, views, beam and detectors for CT), which
``mrirecon run`` compares every input with (:mod:`mrirecon.pipeline.model_range`), and
``known_failures``. A card with ``model`` only made ``run`` check nothing: a model trained at
32 x 32 with 2 coils at 4x ran on 48 x 40 at 8x without a word.
"""

from __future__ import annotations

import platform
import shlex
import time
from collections.abc import Iterable
from pathlib import Path

import torch

from mrirecon.core.config import to_dict


def card_command(path: str, overrides: Iterable[str], resume: bool) -> str:
    """The ``mrirecon train`` command line of a run of ``path`` with ``--set`` ``overrides``."""
    words = ["mrirecon", "train", str(path)]
    for o in overrides:
        words += ["--set", str(o)]
    if resume:
        words.append("--resume")
    return " ".join(shlex.quote(w) for w in words)


def _data_entry(folder: str, dataset, modality: str) -> dict:
    files = dataset.source_files()
    entry = {"folder": str(Path(folder).resolve())}
    if modality == "ct":
        entry.update({"files": len([f for f in files if f.name.startswith("observation_")]),
                      "images": len(dataset)})
    else:
        entry.update({"volumes": len(files), "slices": len(dataset)})
    return entry


def training_card(cfg, train_set, val_set, *, source: str, overrides: Iterable[str] = (),
                  resume: bool = False, steps: int = 0, seconds: float = 0.0,
                  resumed_at: int | None = None, device: str = "cpu") -> dict:
    """The card's sections besides ``model`` (passed to :func:`~mrirecon.training.run.save_model`
    as ``extra``) for a run of ``cfg`` that trained on ``train_set`` (and validated on
    ``val_set`` when ``val_every > 0``)."""
    d = cfg.data
    data = {"train": _data_entry(d.train, train_set, d.modality)}
    if cfg.val_every > 0:
        data["val"] = _data_entry(d.val, val_set, d.modality)
    if d.modality == "ct":
        full = train_set.files.geometry.num_views
        data["views"] = (f"about {d.ct_views} of {full} views kept (every "
                         f"{train_set.factor}th)" if d.ct_views else f"all {full} views") + (
            f", dose lowered to {d.ct_photons:g} photons per bin" if d.ct_photons else "")
    else:
        m = d.mask
        data["masks"] = (f"{m.type}, accelerations {', '.join(map(str, m.accelerations))} (centre "
                         f"fractions {', '.join(map(str, m.center_fractions))}); "
                         f"{d.maps} coil maps")
    self_supervised = getattr(cfg.loss, "ssdu", None) is not None
    training = {
        "command": card_command(source, overrides, resume),
        "config_file": str(source),
        "config": to_dict(cfg),
        "steps": int(steps),
        "wall_time_s": round(float(seconds), 1),
        "hardware": f"{platform.machine()}, device {device}",
        "torch": str(torch.__version__),
        "date": time.strftime("%Y-%m-%d"),
        "loss": "self-supervised (loss.ssdu)" if self_supervised else "supervised",
    }
    if resumed_at is not None:
        training["resumed_at_step"] = int(resumed_at)
    return {
        "description": f"{cfg.model.name} trained by mrirecon train {source} (see training)",
        "data": data,
        "training": training,
        "training_range": train_set.training_range(),
        "known_failures": [
            "Trained by mrirecon train on the files of data.train only (see data and "
            "training_range): other matrices, coil counts, accelerations (CT: views, beam, "
            "detectors) are outside its training range and mrirecon run warns; not scored on "
            "held-out data unless a section below says so."],
    }
