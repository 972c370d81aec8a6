"""What ``mrirecon bench`` can run: method names, defaults, masks and learned-model loading.

Classical methods are the MRI entries of the :mod:`mrirecon.recon` registry; learned methods are
the ``model(y, op)`` models of :mod:`mrirecon.models` (weights from a file) and the shipped
weights of :mod:`mrirecon.training.weights` (used by name).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mrirecon.training.weights import load_model  # noqa: F401  (re-exported for run_bench)

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
    "cg_sense": {"iterations": 10, "tolerance": 1e-6},
    "l1_wavelet": {"lam": 1e-3, "iterations": 50},
    "tv": {"lam": 1e-3, "iterations": 100},
    "tgv": {"lam": 1e-3, "iterations": 100},
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


def needs_maps(method: str, model: nn.Module | None) -> bool:
    if model is None:  # every classical method that takes an operator reconstructs via sense()
        from mrirecon.recon.registry import needs_operator

        return method in SENSE_METHODS or needs_operator(method)
    return getattr(model, "sensitivity", None) is None  # E2E-VarNet estimates its own maps
