"""Load shipped (or user-trained) weights: ``<name>.pt`` (a ``state_dict``) + ``<name>.yaml`` card.

The card is YAML with at least ``model: {name, params}``; shipped cards also record the data,
steps, wall time, held-out metrics and the training config that reproduces the weights. Weights
are read with ``torch.load(weights_only=True)``: no pickled code is executed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def available_weights() -> list[str]:
    """Names of the reconstruction models shipped in ``mrirecon/weights`` (a ``.pt`` and a card).

    Cards with a ``kind`` other than ``reconstruction`` (e.g. the perceptual loss's
    ``feature_network``) are not models and are left out.
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.stem
        for p in WEIGHTS_DIR.glob("*.pt")
        if p.with_suffix(".yaml").is_file()
        and _card_kind(p.with_suffix(".yaml")) == "reconstruction"
    )


def _card_kind(card_path: Path) -> str:
    card = yaml.safe_load(card_path.read_text())
    return str(card.get("kind", "reconstruction")) if isinstance(card, dict) else "reconstruction"


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".pt" or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"load_pretrained: weights file {p} does not exist")
        return p
    shipped = WEIGHTS_DIR / f"{p.name}.pt"
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"load_pretrained: no weights named {str(name_or_path)!r}; shipped: "
        f"{', '.join(available_weights()) or 'none'} (or give a path to a .pt file)"
    )


def model_card(name_or_path: str | os.PathLike) -> dict:
    """The card (``<stem>.yaml`` beside the ``.pt``) as a dict."""
    pt = _resolve(name_or_path)
    card_path = pt.with_suffix(".yaml")
    if not card_path.is_file():
        raise FileNotFoundError(
            f"load_pretrained: model card {card_path} is missing beside {pt.name}"
        )
    card = yaml.safe_load(card_path.read_text())
    model = card.get("model") if isinstance(card, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument type)
            f"load_pretrained: {card_path}: 'model.name' is required in the model card"
        )
    if not isinstance(model.get("params", {}), dict):
        msg = f"load_pretrained: {card_path}: 'model.params' must be a mapping"
        raise ValueError(msg)  # noqa: TRY004
    return card


def load_pretrained(
    name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Build the model described by the card and load its weights (eval mode).

    Parameters
    ----------
    name_or_path
        A shipped name (see :func:`available_weights`, e.g. ``"varnet_brain_sim"``) or a path
        to a ``.pt`` file with its ``.yaml`` card beside it.
    map_location
        Device for the loaded tensors.

    Raises
    ------
    FileNotFoundError
        Unknown name, missing file or card.
    ValueError
        Malformed card, unreadable weights, or weights that do not match the model (the message
        names the file and the missing / unexpected keys).
    """
    from mrirecon.models.registry import build_model

    pt = _resolve(name_or_path)
    card = model_card(pt)
    model = build_model(card["model"]["name"], **dict(card["model"].get("params") or {}))
    try:
        state = torch.load(pt, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"load_pretrained: {pt} cannot be read safely: {e}") from e
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training checkpoint (checkpoints/last.pt)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"load_pretrained: {pt} does not match {card['model']['name']}: "
            f"missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    return model.to(map_location).eval()
