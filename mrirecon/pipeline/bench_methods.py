"""What ``mrirecon bench`` can run: method names, defaults, masks and learned-model loading.

Classical methods are the MRI entries of the :mod:`mrirecon.recon` registry; learned methods are
the ``model(y, op)`` models of :mod:`mrirecon.models` (weights from a file) and the shipped
weights of :mod:`mrirecon.training.weights` (used by name).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

CHALLENGES = ("multicoil", "singlecoil")
#: Classical methods that reconstruct through ``sense(maps, mask)`` and need coil maps.
SENSE_METHODS = ("zero_filled", "cg_sense", "l1_wavelet", "tv")
#: Classical methods that work on the coil k-space directly.
KSPACE_METHODS = ("zero_filled_rss", "grappa")
#: CT entries of the reconstruction registry (not for k-space).
_CT_METHODS = ("fbp", "sirt", "tv_ct")
#: Models of the registry that are not ``model(y, op)`` reconstructions.
_BACKBONES = ("unet", "dncnn", "resnet")
#: Defaults of the classical methods (``lam`` relative to the image peak, see
#: :mod:`mrirecon.pipeline.bench`).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "cg_sense": {"max_iterations": 10, "tolerance": 1e-6},
    "l1_wavelet": {"lam": 1e-3, "max_iterations": 50},
    "tv": {"lam": 1e-3, "max_iterations": 100},
    "tgv": {"lam": 1e-3, "max_iterations": 100},
}
#: fastMRI centre fractions by acceleration; others use ``0.32 / acceleration``.
CENTER_FRACTIONS = {4.0: 0.08, 8.0: 0.04}


def default_mask_type(challenge: str) -> str:
    """``equispaced_fraction`` for multi-coil, ``random`` for single-coil (fastMRI paper)."""
    return "random" if challenge == "singlecoil" else "equispaced_fraction"


def center_fraction_for(
    acceleration: float, overrides: Mapping[float, float] | None = None
) -> float:
    """Centre fraction used at ``acceleration``: ``overrides``, fastMRI's, or ``0.32 / acc``."""
    acc = float(acceleration)
    table = {**CENTER_FRACTIONS, **{float(k): float(v) for k, v in (overrides or {}).items()}}
    return table.get(acc, 0.32 / acc)


def classical_methods() -> list[str]:
    """MRI entries of the :mod:`mrirecon.recon` registry (CT reconstructions left out)."""
    from mrirecon import recon

    return [m for m in recon.available() if m not in _CT_METHODS]


def learned_methods() -> list[str]:
    from mrirecon.models.registry import available_models
    from mrirecon.training.weights import available_weights

    return sorted(m for m in available_models() if m not in _BACKBONES) + available_weights()


def available_methods() -> dict[str, list[str]]:
    """``{"classical": [...], "learned": [...]}``: every name :func:`run_bench` accepts."""
    return {"classical": classical_methods(), "learned": learned_methods()}


def parse_methods(methods: str | Sequence[str]) -> list[str]:
    if isinstance(methods, str):
        methods = methods.split(",")
    names = [m.strip() for m in methods if m and m.strip()]
    if not names:
        raise ValueError("run_bench: no methods given")
    if len(set(names)) != len(names):
        raise ValueError(f"run_bench: methods listed twice in {names}")
    valid = available_methods()
    unknown = [m for m in names if m not in valid["classical"] and m not in valid["learned"]]
    if unknown:
        raise ValueError(
            f"run_bench: unknown method(s) {', '.join(map(repr, unknown))}; valid classical "
            f"methods: {', '.join(valid['classical'])}; "
            f"learned models: {', '.join(valid['learned'])}"
        )
    return names


# ---- learned models -------------------------------------------------------------------------


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"run_bench: {path} holds no state dict (tensors by parameter name)")
    return obj


def load_model(
    method: str, params: Mapping[str, Any], weights: str | os.PathLike | None
) -> nn.Module:
    """The learned model of ``method`` in eval mode.

    ``weights`` is a shipped weights name or a ``.pt`` file. With a model card (``.yaml``
    beside it) the model comes from :func:`mrirecon.training.weights.load_pretrained`; a bare
    state dict (or training checkpoint, or a ``fastmri.models.VarNet`` checkpoint) is loaded
    into ``build_model(method, **params)``. A method that is itself a shipped weights name
    needs no ``weights``.
    """
    from mrirecon.models import build_model, fastmri_varnet_state_dict
    from mrirecon.training.checkpoint import load_checkpoint
    from mrirecon.training.weights import available_weights, load_pretrained, model_card

    if weights is None:
        if method in available_weights():
            return load_pretrained(method).eval()
        shipped = ", ".join(available_weights()) or "none"
        raise ValueError(
            f"run_bench: learned method {method!r} needs weights: pass "
            f"weights={{{method!r}: PATH}} (--weights {method}=PATH) or use a shipped weights "
            f"name ({shipped})"
        )
    path = Path(weights)
    card = None
    if not path.is_file() or path.with_suffix(".yaml").is_file():
        card = model_card(weights)  # shipped name or file with a card (raises if neither)
    if card is not None:
        if params:
            raise ValueError(
                f"run_bench: {method}: parameters {sorted(params)} given, but the model "
                f"of {weights} is defined by its model card"
            )
        card_name = str(card["model"]["name"]).lower().replace("-", "_")
        if (
            method in learned_methods()
            and method not in available_weights()
            and card_name != method
        ):
            raise ValueError(
                f"run_bench: weights {weights} are for model {card_name!r}, not {method!r}"
            )
        return load_pretrained(weights).eval()
    model = build_model(method, **dict(params))
    state = _state_dict(load_checkpoint(path), path)
    if method == "varnet" and not set(state) & set(model.state_dict()):
        try:
            state = fastmri_varnet_state_dict(state)  # a fastmri.models.VarNet checkpoint
        except KeyError as err:
            raise ValueError(
                f"run_bench: weights {path} are neither mrirecon nor fastMRI VarNet "
                f"weights ({err.args[0]})"
            ) from None
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        problem = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
        raise ValueError(
            f"run_bench: weights {path} do not match {method} with parameters "
            f"{dict(params)}: {problem}"
        ) from None
    if missing or unexpected:
        raise ValueError(
            f"run_bench: weights {path} do not match {method} with parameters "
            f"{dict(params)}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    return model.eval()


def needs_maps(method: str, model: nn.Module | None) -> bool:
    if model is None:  # every classical method that takes an operator reconstructs via sense()
        from mrirecon.recon.registry import needs_operator

        return method in SENSE_METHODS or needs_operator(method)
    return getattr(model, "sensitivity", None) is None  # E2E-VarNet estimates its own maps
