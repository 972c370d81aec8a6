"""Atomic, pickle-free checkpoints and exact RNG-state capture for bit-for-bit resume."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mrirecon.io.atomic import atomic_path
from mrirecon.io.weights import damage_note


def rng_state() -> dict[str, Any]:
    """All RNG states that influence training on CPU, as tensors/plain types."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": repr(random.getstate()),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, state["numpy_pos"], 0, 0.0))
    import ast

    py = ast.literal_eval(state["python"])
    random.setstate((py[0], tuple(py[1]), py[2]))


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Save ``payload`` (tensors, numbers, strings, lists, dicts only) atomically."""
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: no pickled code is ever executed.
    ``mmap``: memory-mapped, so tensors are read only when touched (a look at its config)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # corrupt/truncated files, foreign pickles
        note = damage_note(p, e)
        if note:
            raise ValueError(f"checkpoint {p} {note}; put a complete copy there, or start a "
                             "new output_dir") from e
        raise ValueError(f"checkpoint {p} cannot be read safely: {str(e) or type(e).__name__}") from e


def check_model_state(path: str | Path, ckpt: dict[str, Any], model: torch.nn.Module,
                      name: str) -> None:
    """Refuse a checkpoint whose ``model`` weights are not ``model``'s (``name``: the config's
    ``model.name``) with a message naming the file and the field. Another architecture failed
    inside ``load_state_dict`` as an internal error listing hundreds of keys."""
    saved = ckpt.get("model_name")
    if saved is not None and saved != name:
        raise ValueError(f"checkpoint {path}: model_name: it holds a {saved!r} model, but the config "
                         f"trains {name!r} (model.name): resume with the config of that run, or "
                         "start a new output_dir")
    state, own = ckpt.get("model"), model.state_dict()
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path}: model: missing (no weights to resume from)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    other = [k for k in own if k in state
             and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if missing or unexpected or other:
        first = (f"{other[0]}: {tuple(getattr(state[other[0]], 'shape', ()))} in the checkpoint, "
                 f"{tuple(own[other[0]].shape)} here" if other else (missing or unexpected)[0])
        raise ValueError(f"checkpoint {path}: model: its weights do not fit {name} with this "
                         f"config's model.params ({len(missing)} missing, {len(unexpected)} "
                         f"unexpected, {len(other)} of another shape; first: {first}): resume with "
                         "the config it was trained with, or start a new output_dir")
