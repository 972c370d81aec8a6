"""Load shipped (or user-trained) weights: ``<name>.pt`` (a ``state_dict``) + ``<name>.yaml`` card.

The card is YAML with at least ``model: {name, params}``; shipped cards also record the data,
steps, wall time, held-out metrics and the training config that reproduces the weights. Weights
are read with ``torch.load(weights_only=True)``: no pickled code is executed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from mrirecon.io.weights import (WEIGHTS_DIR, _card_kind, _read_card, available_weights,  # noqa: F401
                                 is_shipped_weights, read_state_dict, resolve_weights)
# also the name of the guard of loaded models pickled before it moved to models/
from mrirecon.models.input_checks import ModalityGuard

log = logging.getLogger("mrirecon.weights")


def _resolve(name_or_path: str | os.PathLike) -> Path:
    return resolve_weights(name_or_path, "load_pretrained")


def load_patch_gmm(name_or_path: str | os.PathLike = "patch_gmm", *, trainable: bool = False):
    """The patch GMM prior saved under a shipped name (``"patch_gmm"``: 8x8 patches, 20
    components, see its card) or in a ``.pt`` file, as a
    :class:`~mrirecon.models.gmm.PatchGMM` (``trainable``: with fresh learnable corrections)."""
    from mrirecon.models.gmm import patch_gmm_from_state_dict

    state = read_state_dict(name_or_path, who="load_patch_gmm")
    return patch_gmm_from_state_dict(state, trainable=trainable, where=str(name_or_path))


def resolve_priors(name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Model parameters with named priors loaded: ``unrolled_em``'s ``gmm: patch_gmm`` (a
    shipped name or path) becomes the :class:`~mrirecon.models.gmm.PatchGMM`, so that models
    get tensors and never read files themselves."""
    out = dict(params)
    if name.lower().replace("-", "_") == "unrolled_em" and isinstance(out.get("gmm"), (str, Path)):
        out["gmm"] = load_patch_gmm(out["gmm"])
    return out


def build_to_load(name: str, params: Mapping[str, Any]) -> nn.Module:
    """``build_model(name, **params)`` (priors resolved) for weights that are loaded into it
    next: its random initialisation, overwritten by the weights, is drawn in a fork of the CPU
    generator, so loading leaves the caller's random stream as it was (``torch.manual_seed(0);
    load_pretrained(...); torch.randn(3)`` drew other numbers than without the load).

    Holds :func:`~mrirecon.models.init.build_lock` (as seeded builds do), so loads and seeded
    builds in several threads do not restore each other's generator state; another thread
    drawing from torch's global generator meanwhile still has its stream rewound by the restore:
    load models before starting such threads, or give them their own ``torch.Generator``."""
    from mrirecon.models.init import build_lock
    from mrirecon.models.registry import build_model

    with build_lock(), torch.random.fork_rng(devices=[]):  # built on the CPU
        return build_model(name, **resolve_priors(name, params))


def card_path(pt: Path) -> Path:
    """The card of the weights ``pt``: ``<stem>.yaml`` beside it, else beside the file a link
    points to (a link to shipped weights was taken for weights without a card); the first
    when neither exists."""
    beside = pt.with_suffix(".yaml")
    if beside.is_file() or not pt.is_symlink():
        return beside
    target = pt.resolve().with_suffix(".yaml")
    return target if target.is_file() else beside


def model_card(name_or_path: str | os.PathLike) -> dict:
    """The card (``<stem>.yaml`` beside the ``.pt``, or beside the file it links to) as a dict."""
    pt = _resolve(name_or_path)
    card_file = card_path(pt)
    if not card_file.is_file():
        raise FileNotFoundError(
            f"load_pretrained: model card {card_file} is missing beside {pt.name}"
        )
    card = _read_card(card_file)
    model = card.get("model") if isinstance(card, dict) else None
    if not isinstance(model, dict) or not isinstance(model.get("name"), str):
        raise ValueError(  # noqa: TRY004 (a malformed file, not a wrong argument type)
            f"load_pretrained: {card_file}: 'model.name' is required in the model card"
        )
    if not isinstance(model.get("params", {}), dict):
        msg = f"load_pretrained: {card_file}: 'model.params' must be a mapping"
        raise ValueError(msg)  # noqa: TRY004
    check_overridable(card.get("overridable"), model["name"], f"load_pretrained: {card_file}")
    return card


def check_overridable(value: Any, name: str, where: str) -> None:
    """Refuse a malformed ``overridable`` when its card is read, naming the card: a string
    (``overridable: iterations``) was split into letters, and an entry that names no build
    parameter of the model let a run "change" nothing, or failed when the model was built."""
    if value is None:
        return
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{where}: overridable: expected a list of the model's parameter names "
                         f"(e.g. [iterations]), got {value!r}")
    from mrirecon.models.registry import _MODELS, MODEL_DEFAULTS

    key = str(name).lower().replace("-", "_")
    if key not in _MODELS:  # an unknown model is refused by name when it is built
        return
    import inspect

    signature = inspect.signature(_MODELS[key][0]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return
    known = set(signature) | set(MODEL_DEFAULTS[key])
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(f"{where}: overridable: {unknown[0]!r} is no parameter of {key} (one of "
                         f"{', '.join(sorted(known))})")


#: The ``[min, max]`` entries of a card's ``training_range`` (besides ``matrix``); ``maps_crop``:
#: the ESPIRiT ``calibrate.crop`` of the coil maps it was trained with; ``detectors``: CT
#: detector elements per view; ``noise_levels``: a noise-conditioned denoiser's sigmas;
#: ``photons``: the CT dose trained on, incident photons per bin (``.inf``: noise-free data);
#: ``readout_oversampling``: Cartesian MRI encoded / recon readout rows of the training files
#: (1: none), which tells the matrix the model saw from its recon grid; ``acs_columns``:
#: Cartesian MRI, the contiguous sampled columns through the k-space centre (DC) of the training
#: masks (the band the coil maps are calibrated from); ``snr_db``: Cartesian MRI k-space SNR in
#: dB (mean signal power over noise power per sample, ``mrirecon simulate mri --snr-db``) the
#: model was trained or its schedule tuned at.
RANGE_INTERVALS = ("coils", "accelerations", "spokes", "views", "maps_crop", "detectors",
                   "nyquist_fraction", "noise_levels", "photons", "readout_oversampling",
                   "acs_columns", "snr_db")
#: The lists of names in a card's ``training_range``: the ISMRMRD trajectory kinds seen, the CT
#: beam types (``geometry``, one of :data:`BEAM_TYPES` each), the coil maps a model that uses
#: the sample's maps was trained with (``maps``, one of :data:`MAP_KINDS` each: ``data.maps``).
RANGE_KINDS = ("trajectory", "geometry", "maps")
BEAM_TYPES = ("parallel", "fan")
#: ``data.maps`` of ``mrirecon train``: ESPIRiT, Walsh, or unit maps 1/sqrt(C) (``learned``: the
#: model combines the coils itself; for a model that uses the sample's maps, a coil sum).
MAP_KINDS = ("espirit", "walsh", "learned")


def check_training_range(rng: Any, where: str) -> None:
    """Refuse a malformed ``training_range`` (what :mod:`mrirecon.pipeline.model_range` warns
    against) when its card is read, naming the card and field: a misspelled key or a scalar
    would otherwise switch the warning off, a string fail mid-run."""
    if rng is None:
        return

    def bad(field: str, want: str, got: Any) -> ValueError:
        return ValueError(f"{where}: training_range{field}: expected {want}, got {got!r}")

    def pair(field: str, value: Any) -> None:
        ok = (isinstance(value, (list, tuple)) and len(value) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v == v for v in value))
        if not ok or value[0] > value[1]:
            raise bad(field, "[min, max] numbers with min <= max", value)

    if not isinstance(rng, Mapping):
        raise bad("", "a mapping of matrix / " + " / ".join(RANGE_INTERVALS), rng)
    unknown = sorted(set(rng) - {"matrix", *RANGE_INTERVALS, *RANGE_KINDS})
    if unknown:
        raise bad(f".{unknown[0]}", "one of matrix, " + ", ".join(RANGE_INTERVALS + RANGE_KINDS),
                  "an unknown key")
    for key in RANGE_KINDS:
        value = rng.get(key)
        if key in rng and not (isinstance(value, (list, tuple)) and value
                               and all(isinstance(v, str) and v for v in value)):
            raise bad(f".{key}", "a list of names (e.g. [radial])", value)
    beams = rng.get("geometry") or ()
    if any(str(b).lower() not in BEAM_TYPES for b in beams):
        raise bad(".geometry", "a list of CT beam types (" + ", ".join(BEAM_TYPES) + ")", beams)
    maps = rng.get("maps") or ()
    if any(str(m).lower() not in MAP_KINDS for m in maps):
        raise bad(".maps", "a list of coil map kinds (" + ", ".join(MAP_KINDS) + ")", maps)
    for key in RANGE_INTERVALS:
        if key in rng:
            pair(f".{key}", rng[key])
    if "matrix" in rng:
        m = rng["matrix"]
        if not isinstance(m, Mapping) or set(m) != {"min", "max"}:
            raise bad(".matrix", "{min: [H, W], max: [H, W]}", m)
        for i in range(2):
            pair(f".matrix (dimension {i})", [m["min"][i], m["max"][i]] if all(
                isinstance(m[k], (list, tuple)) and len(m[k]) == 2 for k in ("min", "max")) else None)


#: The sections of a model card that weights fine-tuned from it keep: the data checks and the
#: settings a user may change. Shared by :func:`mrirecon.training.run.save_model` (a model loaded
#: with :func:`load_pretrained` and fine-tuned in a notebook) and the pipeline's ``adapt:``
#: stage; without them the new weights ran outside their range without a word, and
#: ``reconstruct.params.iterations`` was refused.
INHERITED_CARD_KEYS = ("training_range", "overridable", "known_failures")


def weights_origin(name_or_path: str | os.PathLike, pt: Path, card: Mapping) -> dict:
    """Where loaded weights came from, for the ``fine_tuned_from`` entry of the card of weights
    fine-tuned from them: the shipped name or the file's path, the sha256 of the ``.pt``, and
    that card's own ``fine_tuned_from`` (a chain of fine-tunings stays traceable)."""
    from mrirecon.io.atomic import file_sha256

    text = os.fspath(name_or_path)
    shipped = is_shipped_weights(pt, text)
    origin = {"name": text} if shipped else {"path": str(pt)}
    origin["sha256"] = file_sha256(pt)
    if isinstance(card.get("fine_tuned_from"), Mapping):
        origin["fine_tuned_from"] = dict(card["fine_tuned_from"])
    return origin


def inherited_card(model: nn.Module) -> dict:
    """The card sections that weights saved from ``model`` keep of the card it was loaded with
    (:data:`INHERITED_CARD_KEYS`, and ``fine_tuned_from``: name / path and sha256 of the loaded
    weights); empty for a model that carries no card (built, not loaded)."""
    card = getattr(model, "model_card", None)
    if not isinstance(card, Mapping):
        return {}
    out = {k: card[k] for k in INHERITED_CARD_KEYS if k in card}
    origin = getattr(model, "weights_origin", None)
    if isinstance(origin, Mapping):
        out["fine_tuned_from"] = dict(origin)
    return out


def load_pretrained(
    name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu",
    overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model described by the card and load its weights (eval mode).

    ``overrides`` replace model parameters the card lists under ``overridable`` (inference
    settings such as a plug-and-play schedule, not shapes of weights); others raise. The
    caller's random state is left as it was (:func:`build_to_load`).

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
    pt = _resolve(name_or_path)
    card = model_card(pt)
    card_file = card_path(pt)
    check_training_range(card.get("training_range"), str(card_file))
    params = dict(card["model"].get("params") or {})
    if overrides:
        allowed = set(card.get("overridable") or ())
        bad = sorted(set(overrides) - allowed)
        if bad:
            raise ValueError(
                f"load_model: parameters {bad} given, but the model of {pt} is defined by its "
                f"model card (overridable: {sorted(allowed) or 'none'})"
            )
        params.update(overrides)
    from mrirecon.models.registry import available_models

    if str(card["model"]["name"]) not in available_models():
        raise ValueError(f"load_pretrained: {card_file}: model.name "
                         f"{card['model']['name']!r} is no model of this mrirecon (one of "
                         f"{', '.join(sorted(available_models()))})")
    state = read_state_dict(pt, map_location)  # also unwraps a training checkpoint's "model"
    try:  # float32, the models' precision, whatever torch's default dtype (a notebook's
        # set_default_dtype(torch.float64) built float64 parameters: complex64 data refused)
        model = _as_float32(build_to_load(card["model"]["name"], params))
    except (ValueError, TypeError) as err:  # a bad override or card value (TypeError: a key the
        # model does not take, which was an "internal error" of the run): say where it came from
        given = f" and the overrides {dict(overrides)}" if overrides else ""
        raise ValueError(f"load_pretrained: {err} (model parameters of {card_file}"
                         f"{given})") from err
    load_state_into(model, state, f"load_pretrained: {pt} does not match {card['model']['name']} "
                                  f"with the parameters of its card {card_file}",
                    where=f"load_pretrained: {pt}")
    model.model_card = card  # the pipeline checks data against card["training_range"]
    model.weights_origin = weights_origin(name_or_path, pt, card)  # save_model's fine_tuned_from
    _guard_modality(model, card["model"]["name"], pt)
    return model.to(map_location).eval()


def _as_float32(model: nn.Module) -> nn.Module:
    """``model`` with the tensors made in torch's default dtype (and its complex counterpart)
    cast to float32 (complex64), the weights' precision. Built under the caller's default, not
    under a ``set_default_dtype(float32)`` block: the default is one per process, so other
    threads made float32 tensors while a load ran, and two loads at once left a float64
    default at float32 for good."""
    default = torch.get_default_dtype()
    if default == torch.float32:
        return model
    complex_default = {torch.float64: torch.complex128, torch.float16: torch.complex32}.get(default)

    def cast(t: torch.Tensor) -> torch.Tensor:
        if t.dtype == default:
            return t.to(torch.float32)
        return t.to(torch.complex64) if complex_default is not None and t.dtype == complex_default \
            else t

    return model._apply(cast)  # what Module.to / .float use: parameters and buffers alike


def _guard_modality(model: nn.Module, name: str, pt: Path) -> None:
    """Register the :class:`ModalityGuard` of weights ``pt`` (model ``name``) on ``model``."""
    from mrirecon.models.registry import MODEL_MODALITY

    model.register_forward_pre_hook(ModalityGuard(pt.name, MODEL_MODALITY.get(name)))


def load_model(
    method: str, params: Mapping[str, Any], weights: str | os.PathLike | None, *,
    warned: list[str] | None = None,
) -> nn.Module:
    """The learned model of ``method`` in eval mode.

    ``weights`` is a shipped weights name or a ``.pt`` file. With a model card (``.yaml``
    beside it) the model comes from :func:`mrirecon.training.weights.load_pretrained`; a bare
    state dict (or training checkpoint, or a ``fastmri.models.VarNet`` checkpoint) is loaded
    into ``build_model(method, **params)``, with a warning (:func:`cardless_note`), logged and
    appended to ``warned`` (``mrirecon run`` records it in ``provenance.json`` and the report).
    A method that is itself a shipped weights name needs no ``weights``. The caller's random
    state is left as it was (:func:`build_to_load`).
    """
    from mrirecon.models import fastmri_varnet_state_dict
    from mrirecon.models.registry import available_models

    if weights is None:
        if method in available_weights():
            return load_pretrained(method, overrides=params).eval()
        shipped = ", ".join(available_weights()) or "none"
        raise ValueError(
            f"load_model: learned method {method!r} needs weights: pass "
            f"weights={{{method!r}: PATH}} (--weights {method}=PATH) or use a shipped weights "
            f"name ({shipped})"
        )
    path = resolve_weights(weights, "load_model")  # a shipped name, a file (or refused)
    card = model_card(path) if card_path(path).is_file() else None
    if card is not None:
        allowed = set(card.get("overridable") or ())
        if params and not set(params) <= allowed:
            raise ValueError(
                f"load_model: {method}: parameters {sorted(set(params) - allowed)} given, but "
                f"the model of {weights} is defined by its model card (overridable: "
                f"{sorted(allowed) or 'none'})"
            )
        card_name = str(card["model"]["name"]).lower().replace("-", "_")
        if (
            method in available_models()
            and method not in available_weights()
            and card_name != method
        ):
            raise ValueError(
                f"load_model: weights {weights} are for model {card_name!r}, not {method!r}: "
                f"{_runs_model(card_name, card['model'].get('params') or {})}"
            )
        if method in available_weights() and path.resolve() != resolve_weights(method).resolve():
            shipped = str(model_card(method)["model"]["name"]).lower().replace("-", "_")
            if card_name != shipped:  # a shipped name, other weights
                raise ValueError(
                    f"load_model: {method} is a {shipped!r} model, but the weights {weights} are "
                    f"for model {card_name!r} (a result labelled {method} would come from "
                    f"another network)")
        return load_pretrained(path, overrides=params).eval()
    method, params = shipped_architecture(method, params, path)
    model = _as_float32(build_to_load(method, params))  # as load_pretrained: float32 weights
    state = read_state_dict(path, who="load_model")  # a training checkpoint's "model" too
    if method == "varnet" and not set(state) & set(model.state_dict()):
        try:
            state = fastmri_varnet_state_dict(state)  # a fastmri.models.VarNet checkpoint
            # trained as fastMRI's data transform feeds it: the mask function's centre width
            # (odd at 368 columns, 4x), not the symmetric band the mask shows
            model.acs_given = True
        except KeyError as err:
            raise ValueError(
                f"load_model: weights {path} are neither mrirecon nor fastMRI VarNet "
                f"weights ({err.args[0]})"
            ) from None
    try:
        load_state_into(model, state, f"load_model: weights {path} do not match {method} with "
                                      f"parameters {dict(params)}", where=f"load_model: {path}")
    except ValueError as err:
        fit = fitting_parameter(method, params, state) if "mismatch" in str(err) else None
        if fit is None:
            raise
        k, v = fit
        raise ValueError(f"{str(err).rstrip('.')}; they fit {method} with {k}={v} (set reconstruct.params.{k}={v}, "
                         "or write a model card beside them)") from None
    note = cardless_note(path, method, params)
    log.warning("%s", note)
    if warned is not None:
        warned.append(note)
    return model.eval()


def _runs_model(name: str, params: Mapping[str, Any]) -> str:
    """What runs weights of model ``name``: the shipped pipelines whose ``reconstruct.method``
    it is, or ``--set reconstruct.method`` (with ``calibrate.method=none`` for a model that
    estimates its own coil maps, as ``mri_varnet`` does)."""
    from mrirecon.training.ssdu import estimates_own_maps

    runs = []  # the shipped pipeline files (pipeline.definitions.PIPELINES, read, not imported:
    # training sits below pipeline), the training configs train_*.yaml left out
    for path in sorted((Path(__file__).resolve().parent.parent / "pipelines").glob("*.yaml")):
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except (OSError, yaml.YAMLError):
            continue
        method = (raw.get("reconstruct") or {}).get("method") if isinstance(raw, dict) else None
        if not path.stem.startswith("train_") and str(method) == name:
            runs.append(path.stem)
    own = " --set calibrate.method=none" if estimates_own_maps(name, params) else ""  # a --set each
    given = f"run them with pipeline {' or '.join(runs[:2])} (reconstruct.weights=...), or " \
        if runs else "run them with "
    return f"{given}--set reconstruct.method={name}{own}"


def shipped_architecture(method: str, params: Mapping[str, Any],
                         path: Path) -> tuple[str, dict[str, Any]]:
    """``(model name, parameters)`` to build for weights without a card: ``method`` and
    ``params`` themselves, or, for a shipped weights name (``"modl_brain_sim"``: a state dict
    fine-tuned from those weights and saved with ``torch.save(model.state_dict())``), the model
    and parameters of that name's card, with ``params`` on top where the card lets them be
    changed (it was a raw "KeyError: unknown model 'modl_brain_sim'")."""
    from mrirecon.models.registry import available_models

    if method in available_models() or method not in available_weights():
        return method, dict(params)
    card = model_card(method)
    allowed = set(card.get("overridable") or ())
    if not set(params) <= allowed:
        raise ValueError(
            f"load_model: {method}: parameters {sorted(set(params) - allowed)} given, but the "
            f"weights {path} (no model card) are built as the shipped {method} card describes "
            f"(overridable: {sorted(allowed) or 'none'}); name the model instead "
            f"(load_model({card['model']['name']!r}, params, PATH))")
    name = str(card["model"]["name"]).lower().replace("-", "_")
    log.info("load_model: %s has no model card: built as %s with the parameters of the shipped "
             "%s card", path, name, method)
    return name, {**dict(card["model"].get("params") or {}), **dict(params)}


def fitting_parameter(method: str, params: Mapping[str, Any], state: Mapping[str, torch.Tensor],
                      budget_s: float = 3.0) -> tuple[str, int] | None:
    """The one integer build parameter of ``method`` (not in ``params``) and its value with which
    the model's tensors have the names and shapes of ``state``, when weights without a card do
    not fit the defaults (MoDL's ``features``); ``None`` when none is found within ``budget_s``."""
    import re
    import time

    from mrirecon.models.registry import MODEL_DEFAULTS

    want = {k: tuple(v.shape) for k, v in state.items()}
    sizes = {d for shape in want.values() for d in shape} | {
        int(i) + 1 for k in want for i in re.findall(r"\.(\d+)\.", k)}
    deadline = time.monotonic() + budget_s
    for name, default in MODEL_DEFAULTS.get(method, {}).items():
        if name in params or not isinstance(default, int) or isinstance(default, bool):
            continue
        for value in sorted(v for v in sizes if v != default and 1 <= v <= 1024):
            if time.monotonic() > deadline:
                return None
            try:
                got = build_to_load(method, {**params, name: value}).state_dict()
            except (TypeError, ValueError):
                continue
            if {k: tuple(v.shape) for k, v in got.items()} == want:
                return name, value
    return None


def cardless_note(pt: Path, method: str, params: Mapping[str, Any]) -> str:
    """The warning for weights without a model card: what they were built as (settings such as
    MoDL's unroll and CG counts that do not show in the tensors' shapes took the defaults: 20.84
    dB where the settings it was trained with gave 21.65) and that no training range is
    checked."""
    from mrirecon.models.registry import MODEL_DEFAULTS

    used = {**MODEL_DEFAULTS.get(method, {}), **dict(params)}
    shown = ", ".join(f"{k}={v!r}" + ("" if k in params else " (default)") for k, v in used.items())
    return unchecked_range_note(f"{pt} has no model card ({card_path(pt).name}): built as "
                                f"{method} with {shown or 'its defaults'}",
                                "write a card (model: {name, params}, training_range) beside it "
                                "or pass reconstruct.params")


def unchecked_range_note(what: str, fix: str) -> str:
    """The one wording for weights whose data nothing is compared with: ``what`` they lack (a
    card: :func:`cardless_note`; a card's ``training_range``: cards of ``mrirecon train`` before
    2788377, :func:`mrirecon.pipeline.model_range.warn_outside_range`) and ``fix``."""
    return f"{what}; no training range is checked; {fix}"


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], mismatch: str,
                    where: str | os.PathLike | None = None) -> None:
    """``model.load_state_dict(state)``; a key or shape mismatch raises ``ValueError(mismatch:
    what differs)``, so the message names the weights file (and card) instead of the model class.
    The one state-dict fit check of the package (shipped weights, ``--init`` files, the
    perceptual loss's feature network). Tensors that the model's floating-point parameters
    cannot hold are refused naming the tensor and ``where`` (the file; else ``mismatch``)."""
    check_castable(model, state, str(where) if where is not None else mismatch)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # shape mismatches
        problem = str(err).split("\n\t")[1] if "\n\t" in str(err) else str(err)
        raise ValueError(f"{mismatch}: {problem}") from None
    if missing or unexpected:
        raise ValueError(f"{mismatch}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}")


def check_castable(model: nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    """Refuse a tensor of ``state`` that ``load_state_dict`` would silently change when it casts
    it to the dtype of the model's real floating-point tensor of that name: float64 values
    beyond the target's range (1e39 became Inf in float32, and every input then failed as "the
    reconstruction holds NaN or Inf values"), complex values (the imaginary part dropped) or
    integers / booleans (no trained weights are)."""
    targets = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for key, value in state.items():
        target = targets.get(key)
        if not isinstance(value, torch.Tensor) or target is None or not target.is_floating_point():
            continue
        if value.is_complex() or not value.is_floating_point():
            raise ValueError(f"{where}: tensor {key} is {value.dtype} where the model's is "
                             f"real {target.dtype}: loading would "
                             f"{'drop its imaginary part' if value.is_complex() else 'take integers for trained weights'}; "
                             "these are not weights of this model (save them as real floats)")
        if torch.finfo(value.dtype).max > torch.finfo(target.dtype).max and value.numel():
            peak = float(value.detach().abs().max())
            if peak > torch.finfo(target.dtype).max:
                raise ValueError(f"{where}: tensor {key} reaches {peak:.3g}, beyond the "
                                 f"{torch.finfo(target.dtype).max:.3g} of the model's "
                                 f"{target.dtype}: it would load as Inf; these weights diverged "
                                 "or were scaled wrongly (retrain or rescale them)")
