"""The card beside an ``--init`` state dict against the run that continues it.

A state dict holds the weights, not what they were trained to do: a learned primal-dual trained
from ``A^T y`` (``fbp_start`` false, the ``primal_dual_ct_sim`` card) loads into one that starts
from the FBP, and a staged CT net trained on a Hann FBP loads into one fed another filter; the
shapes match, the run trains from weights that do not fit its input, and nothing says so. A
continued run must therefore agree with its card on the model and on every parameter that
changes the function without changing a shape. A continued run's card also keeps the record of
the run it started from (:func:`read_init_card`, :func:`earlier_runs`).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def load_init_card(init: str | os.PathLike | None, kind: str) -> dict | None:
    """The card (``<init>.yaml``) beside an ``--init`` state dict as a mapping, ``None`` when
    there is none (a bare state dict, e.g. a run's checkpoint); an unreadable card is refused
    naming ``mrirecon train KIND`` and the file."""
    import yaml

    from mrirecon.core.yaml_loader import load_card_yaml

    card = None if init is None else Path(init).with_suffix(".yaml")
    if card is None or not card.is_file():
        return None
    try:
        text = load_card_yaml(card.read_text(encoding="utf-8-sig")) or {}
    except (yaml.YAMLError, OSError) as exc:
        raise ValueError(f"train {kind}: {card} (the card of --init) is unreadable: {exc}") from exc
    if not isinstance(text, dict):
        raise ValueError(f"train {kind}: {card} (the card of --init) is unreadable: expected a "
                         f"mapping, got {type(text).__name__}")
    return text


def check_init_card(init: str | os.PathLike | None, kind: str, model_name: str,
                    params: Mapping[str, Any], model_cls: type | None = None) -> None:
    """Refuse ``--init`` weights whose card (``<init>.yaml``) names another model or another
    value of a parameter in ``params`` (the continued run's). A parameter the card omits takes
    ``model_cls``'s default (older cards list only what differed from it); a card's deprecated
    spelling (``stages``: ``iterations``) is read as the new one, with a ``FutureWarning``. No
    card: nothing to compare (a bare state dict, e.g. a run's checkpoint). Errors name
    ``mrirecon train KIND``, the card, the field and both values."""
    text = load_init_card(init, kind)
    if text is None:
        return
    card = Path(init).with_suffix(".yaml")
    model = text.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"train {kind}: {card}: model: expected a mapping, got {model!r}")
    name = model.get("name")
    if name != model_name:
        raise ValueError(f"train {kind}: --init {init}: its card {card} has model.name {name!r}, "
                         f"this run trains {model_name!r}")
    saved = model.get("params") or {}
    if model_cls is not None and isinstance(saved, Mapping):  # old spellings (stages): renamed
        from mrirecon.core.names import canonical_params

        saved = canonical_params(saved, inspect.signature(model_cls).parameters,
                                 f"{card}: model.params")
    defaults = {} if model_cls is None else {
        k: p.default for k, p in inspect.signature(model_cls).parameters.items()
        if p.default is not inspect.Parameter.empty}
    for key, value in params.items():
        theirs = saved.get(key, defaults.get(key))
        if theirs != value:
            where = "" if key in saved else f" (absent: {model_cls.__name__}'s default)"
            raise ValueError(
                f"train {kind}: --init {init}: its card {card} has model.params.{key} = "
                f"{theirs!r}{where}, this run {value!r}; the weights were trained for the other "
                "setting (same shapes, another function): start from scratch or from weights "
                "trained with it")


#: What a continued run's card keeps of the run it started from (``training.first_run``).
# the history too: a continued card keeps its first run's validation curve (loss spikes, drops)
# (steps_per_stage: staged_ct; steps, best_step: primal_dual_ct)
RUN_KEYS = ("command", "command_same_steps", "seed", "steps_per_stage", "steps", "best_step",
            "wall_time_s", "hardware", "load_average_start", "load_average_end",
            "validation_psnr_db", "history", "date", "first_run")


def read_init_card(init: str | os.PathLike | None, kind: str = "staged_ct") -> dict | None:
    """The ``training`` record of the card beside an ``--init`` state dict (read before the
    run overwrites it when ``--out`` is the same file), or ``None`` when there is none."""
    training = (load_init_card(init, kind) or {}).get("training")
    return {k: training[k] for k in RUN_KEYS if k in training} if isinstance(training, dict) else None


def earlier_runs(first: dict | None) -> list[dict]:
    """The training records of the runs a continued run started from (``read_init_card`` and
    their ``first_run`` chain), oldest first."""
    runs = []
    while isinstance(first, dict):
        runs.insert(0, first)
        first = first.get("first_run")
    return runs
