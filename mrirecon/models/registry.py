"""Build a model by name with its published defaults, overridden by keyword arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from torch import nn

from mrirecon.core.checks import param_problem
from mrirecon.core.config import signature_params
from mrirecon.core.names import UnknownNameError, canonical_params, closest_name, did_you_mean
from mrirecon.models.init import seeded_init
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.backbones.resnet import ResNet
from mrirecon.models.backbones.unet import Unet
from mrirecon.models.pnp.dpir import PnPDPIR
from mrirecon.models.pnp.pnp import RED, PnPADMM, PnPHQS
from mrirecon.models.unrolled.admm_csnet import ADMMCSNet
from mrirecon.models.unrolled.cascade import CascadeNet
from mrirecon.models.unrolled.fbpconvnet import FBPConvNet
from mrirecon.models.unrolled.gram_varnet import GramVarNet
from mrirecon.models.unrolled.ista_net import ISTANetPlus
from mrirecon.models.unrolled.ldamp import LDAMP
from mrirecon.models.unrolled.density_weighted import DensityWeightedModel
from mrirecon.models.unrolled.learned_maps import LearnedMapsModel
from mrirecon.models.unrolled.modl import MoDL
from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual
from mrirecon.models.unrolled.staged_ct import StagedCTNet
from mrirecon.models.unrolled.unrolled_em import UnrolledEM
from mrirecon.models.unrolled.varnet import VarNet
from mrirecon.models.unrolled.vn import VariationalNetwork

# name -> (constructor, published defaults). Defaults are passed explicitly so that they are
# visible here and recorded by whoever builds a model (e.g. a training config).
_MODELS: dict[str, tuple[Callable[..., nn.Module], dict[str, Any]]] = {
    # Sriram et al. 2020 / fastMRI VarNet defaults
    "varnet": (VarNet, dict(iterations=12, sens_chans=8, sens_pools=4, chans=18, pools=4)),
    # E2E-VarNet-style cascade with image-domain DC through the gram (non-Cartesian)
    "gram_varnet": (GramVarNet, dict(iterations=8, chans=18, pools=4)),
    # any model above on nufft_sense with coil maps estimated jointly by a network (E2E-VarNet's
    # sensitivity model on the gridded centre of a trajectory)
    "learned_maps": (LearnedMapsModel, dict(model="modl", model_params=None, sens_chans=8,
                                            sens_pools=2, calib_width=24)),
    # any model above on radial / spiral data with density-weighted data consistency
    # (W^(1/2) y and W^(1/2) N S, W the Pipe-Menon weights of the operator's trajectory)
    "density_weighted": (DensityWeightedModel, dict(model="modl", model_params=None)),
    # Hammernik et al. 2018
    "vn": (VariationalNetwork, dict(iterations=10, num_filters=24, kernel_size=11, num_rbf=31)),
    # Aggarwal et al. 2019
    "modl": (MoDL, dict(iterations=10, layers=5, features=64, lam=0.05, cg_iterations=10, shared=True)),
    # Yang et al. 2020 (generic variant)
    "admm_csnet": (ADMMCSNet, dict(iterations=10, num_filters=8, kernel_size=3, num_points=101)),
    # Zhang & Ghanem 2018
    "ista_net_plus": (ISTANetPlus, dict(iterations=9, features=32, rho=0.5, theta=0.01)),
    # Schlemper et al. 2018
    "cascade": (CascadeNet, dict(iterations=5, layers=5, features=64)),
    # Adler & Oktem 2018
    "primal_dual": (LearnedPrimalDual, dict(iterations=10, n_primal=5, n_dual=5, features=32)),
    # Jin et al. 2017
    "fbpconvnet": (FBPConvNet, dict(chans=64, num_pools=4)),
    # FBP + U-Net corrections alternating with exact CG data consistency (CT; stage-wise training)
    "staged_ct": (StagedCTNet, dict(iterations=2, chans=16, num_pools=4, lam=0.1, cg_iterations=15)),
    # unrolled statistical inference: Metzler et al. 2017 (i.i.d. Gaussian operators only)
    "ldamp": (LDAMP, dict(iterations=10, depth=20, features=64)),
    # unrolled EM / mean-field EPLL over the shipped patch GMM (Zoran & Weiss 2011 prior)
    # gmm=None: an untrained isotropic prior; the shipped one comes from the weights loader
    # (weights patch_gmm, or gmm: patch_gmm in a training config: training.weights.resolve_priors)
    "unrolled_em": (UnrolledEM, dict(iterations=6, gmm=None, stride=4, learn_gmm=True,
                                     sigma_start=0.1, sigma_end=0.01, noise_std=0.02,
                                     cg_iterations=8)),
    # plug-and-play (need denoiser=...)
    "pnp_admm": (PnPADMM, dict(iterations=20, rho=1.0, cg_iterations=10)),
    "pnp_hqs": (PnPHQS, dict(iterations=20, rho=1.0, cg_iterations=10)),
    "red": (RED, dict(iterations=20, lam=0.1, method="fixed_point")),
    # DPIR-style HQS with its own noise-level-conditioned bias-free denoiser (Zhang 2022)
    "pnp_dpir": (PnPDPIR, dict(iterations=12, sigma_max=0.1, sigma_min=0.01, lam=1e-4)),
    # backbones / denoisers (real channel CNNs; use ComplexImageCNN for images)
    "unet": (Unet, dict(in_chans=2, out_chans=2, chans=32, num_pool_layers=4)),
    "dncnn": (DnCNN, dict(in_chans=2, out_chans=2, depth=17, features=64)),
    "resnet": (ResNet, dict(in_chans=2, out_chans=2, features=32, blocks=4)),
}

MODEL_DEFAULTS = MappingProxyType({name: MappingProxyType(dict(d)) for name, (_, d) in _MODELS.items()})


#: The operator a learned model is built around, where it is one modality's: an MRI model's
#: data consistency needs a SENSE operator and k-space, a CT model's a projector and a
#: sinogram. The rest (plug-and-play, backbones, generic unrolls) take any ``A``.
MODEL_MODALITY = MappingProxyType({
    **dict.fromkeys(("modl", "varnet", "vn", "cascade", "gram_varnet", "learned_maps",
                     "density_weighted", "unrolled_em"), "mri"),
    **dict.fromkeys(("primal_dual", "staged_ct", "fbpconvnet"), "ct"),
})


def model_modality(model: nn.Module) -> str | None:
    """``"mri"`` / ``"ct"`` for a model of one modality's :data:`MODEL_MODALITY`, else ``None``."""
    for name, (cls, _) in _MODELS.items():
        if type(model) is cls:
            return MODEL_MODALITY.get(name)
    return None


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return sorted(_MODELS)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate model ``name`` with its published defaults updated by ``kwargs``.

    ``denoiser`` for the plug-and-play models may be a module or a backbone name
    (``"dncnn"``, ``"unet"``, ``"resnet"``), which is built with its defaults updated by
    ``denoiser_params`` (a dict, optional) and wrapped in
    :class:`~mrirecon.models.backbones.ComplexImageCNN`.

    Raises
    ------
    UnknownNameError
        Unknown name (a ``ValueError`` and a ``KeyError``; the message suggests the closest
        name and lists the known ones).
    TypeError
        ``name`` is no string; a keyword the model does not take (names the model and the
        keyword, suggests the closest parameter and lists the valid ones).

    ``init_seed`` (see :mod:`mrirecon.models.init`) is accepted for every name: models take it
    themselves; backbones and plug-and-play models with a denoiser built by name are built
    inside :func:`~mrirecon.models.init.seeded_init`.

    The model records how it was built: ``model.build_params == {"name": name, "params":
    kwargs}`` (the keywords as given, old spellings renamed, defaults not filled in), which
    :func:`~mrirecon.training.run.save_model` writes into the card (:func:`card_params`).
    """
    if not isinstance(name, str):  # None.lower() was an AttributeError
        raise TypeError(f"build_model: name must be a model name (a str, one of "
                        f"available_models()), got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in _MODELS:
        raise UnknownNameError(f"unknown model {name!r}{did_you_mean(key, _MODELS)}; available: "
                               f"{', '.join(available_models())}")
    cls, defaults = _MODELS[key]
    # old spellings (num_cascades, nu, ...) are renamed before they meet the defaults
    kwargs = canonical_params(kwargs, inspect.signature(cls).parameters, f"build_model({name!r})")
    params = {**defaults, **kwargs}
    signature = inspect.signature(cls).parameters
    _check_keywords(name, key, kwargs)
    for k, v in kwargs.items():  # the checks the pipeline's config validation makes, for API callers
        default = signature[k].default if k in signature else defaults.get(k, inspect.Parameter.empty)
        problem = param_problem(k, v, default)
        if problem:
            raise ValueError(f"build_model({name!r}): {k} {problem}")
    seed = None if "init_seed" in signature else params.pop("init_seed", None)
    denoiser_params = params.pop("denoiser_params", None)
    if denoiser_params is not None and not isinstance(params.get("denoiser"), str):
        raise TypeError(f"build_model({name!r}): denoiser_params needs denoiser given by name")
    with seeded_init(seed):
        if isinstance(params.get("denoiser"), str):
            params["denoiser"] = ComplexImageCNN(build_model(params["denoiser"], **(denoiser_params or {})))
        try:
            model = cls(**params)
        except TypeError as err:
            raise TypeError(f"build_model({name!r}): {err}") from err
    # what save_model writes into the card and checks a card against (see card_params)
    model.build_params = {"name": key, "params": dict(kwargs)}
    return model


def model_defaults(key: str) -> dict[str, Any]:
    """``{parameter: default}`` of model ``key``'s constructor and its registry defaults (the
    values the config validators check ``model.params`` / ``reconstruct.params`` against)."""
    cls, defaults = _MODELS[key]
    named = signature_params(cls, 0)[0]
    return {**named, **{k: v for k, v in defaults.items() if k not in named}}


def model_keywords(key: str) -> set[str] | None:
    """The keywords ``build_model(key)`` takes (``key`` one of :func:`available_models`): the
    constructor's named parameters, the registry defaults, ``init_seed`` and, for a model with a
    ``denoiser``, ``denoiser_params``; ``None`` where the constructor takes ``**kwargs`` (it
    names its own). The pipeline's and the training config's validation refuse at load what
    this refuses."""
    cls, defaults = _MODELS[key]
    named, takes_any = signature_params(cls, 0)
    if takes_any:
        return None
    valid = set(named) | set(defaults) | {"init_seed"}
    if "denoiser" in valid:
        valid.add("denoiser_params")
    return valid


def _check_keywords(name: str, key: str, kwargs: Mapping[str, Any]) -> None:
    """Refuse a keyword model ``key`` does not take, suggesting the closest one and listing the
    valid ones (``MoDL.__init__() got an unexpected keyword argument 'featurs'`` listed none).
    The words end on the keyword, as ``TypeError`` s of Python, for callers that add a source."""
    valid = model_keywords(key)
    if valid is None:
        return  # the model takes any keyword: it names its own
    for k in kwargs:
        if k not in valid:
            close = closest_name(k, valid)
            hint = f"did you mean {close!r}? " if close is not None else ""
            raise TypeError(f"build_model({name!r}): {hint}{key} takes {', '.join(sorted(valid))}; "
                            f"got the unexpected keyword argument {k!r}")


#: build parameters that change how a model trains, not what it computes: neither compared nor
#: written into a card by :func:`card_params`
TRAINING_ONLY_PARAMS = frozenset({"init_seed", "checkpointing"})

_PLAIN = (bool, int, float, str, type(None))


def _plain(v: Any) -> bool:
    """A value a YAML card holds and equality compares: scalars, lists and dicts of them."""
    if isinstance(v, (list, tuple)):
        return all(_plain(e) for e in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(e) for k, e in v.items())
    return isinstance(v, _PLAIN)


def _same(a: Any, b: Any) -> bool:
    """Equal plain values: lists and tuples alike, NaN equal to NaN."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return bool(a == b)


def _default(key: str, k: str) -> Any:
    """The value ``build_model(key)`` uses for parameter ``k`` when it is not given."""
    cls, defaults = _MODELS[key]
    if k in defaults:
        return defaults[k]
    p = inspect.signature(cls).parameters.get(k)
    return None if p is None or p.default is inspect.Parameter.empty else p.default


def card_params(model: nn.Module, name: str | None = None, params: Mapping[str, Any] | None = None,
                *, resolve: Callable[[str, dict], dict] | None = None,
                who: str = "save_model") -> tuple[str, dict]:
    """The ``model: {name, params}`` of a card for ``model``, checked to rebuild it.

    A card is read back with ``build_model(name, **params)`` (then the weights are loaded), so
    parameters it leaves out take their defaults: MoDL saved with ``{features, layers}`` only
    came back with 10 iterations and 10 CG steps instead of 2 and 3 (6.7 % off, no warning).

    Parameters
    ----------
    model
        The model. One made by :func:`build_model` (also by ``load_pretrained``) records its
        name and parameters (``model.build_params``).
    name, params
        What the caller wants written; ``None``: the recorded ones, less
        :data:`TRAINING_ONLY_PARAMS` (objects such as a loaded ``gmm`` are written as the
        model's own card names them).
    resolve
        ``resolve(name, params)`` turns names of priors into objects before the rebuild
        (``mrirecon.training.weights.resolve_priors``).
    who
        The caller's name, which every error message starts with (e.g. ``"save_model"``).

    Returns
    -------
    (name, params)
        ``name`` as given (else the recorded one) and the parameters to write.

    Raises
    ------
    ValueError
        ``name`` is no model of :func:`available_models` (the card could never load); ``params``
        disagree with those the model was built with (the message names the parameter); or
        ``build_model(name, **params)`` is not this model: another class, other state-dict keys
        or shapes, or another value of a scalar setting (``iterations``, ``dc.cg_iterations``, ...).
    TypeError
        ``name`` / ``params`` are ``None`` for a model that records none (not made by
        :func:`build_model`).
    """
    recorded = getattr(model, "build_params", None)
    rec_name, rec_params = None, None
    if isinstance(recorded, Mapping) and isinstance(recorded.get("name"), str):
        rec_name, rec_params = recorded["name"], dict(recorded.get("params") or {})
    if name is None:
        if rec_name is None:
            raise TypeError(f"{who}: name and params are needed: the {type(model).__name__} was "
                            "not made by build_model, so what rebuilds it is not recorded")
        name = rec_name
    key = str(name).lower().replace("-", "_")
    if key not in _MODELS:
        raise ValueError(f"{who}: model name {name!r} is no model of this mrirecon (one of "
                         f"{', '.join(available_models())}): the card would never load; nothing "
                         "was written")
    if rec_name is not None and rec_name != key:
        raise ValueError(f"{who}: the model was built as {rec_name!r}, not {name!r}")
    if params is None:
        if rec_params is None:
            raise TypeError(f"{who}: params are needed: the {type(model).__name__} was not made by "
                            "build_model, so its parameters are not recorded")
        params = _recorded_card_params(model, rec_params, who)
    else:
        cls = _MODELS[key][0]
        params = canonical_params(dict(params), inspect.signature(cls).parameters,
                                  f"{who}({name!r})")
        objects = sorted(k for k, v in params.items() if not _plain(v))
        if objects:
            raise ValueError(f"{who}: params {objects} are objects a card cannot hold; give them "
                             "by name (e.g. denoiser='dncnn', gmm='patch_gmm')")
        if rec_params is not None:
            _check_agree(key, params, rec_params, who)
    _check_rebuilds(model, key, name, params, resolve, who)
    return name, params


def _recorded_card_params(model: nn.Module, rec: dict, who: str) -> dict:
    """The recorded parameters, less training-only ones; objects by the loaded card's names."""
    card = getattr(model, "model_card", None)
    card = (card.get("model") or {}).get("params") or {} if isinstance(card, Mapping) else {}
    out = {}
    for k, v in rec.items():
        if k in TRAINING_ONLY_PARAMS:
            continue
        if not _plain(v):
            if not _plain(card.get(k, v)):
                raise ValueError(f"{who}: parameter {k!r} of the model is a {type(v).__name__} "
                                 "object, which a card cannot hold; pass params with it given by "
                                 "name (e.g. gmm='patch_gmm', or denoiser='dncnn' and "
                                 "denoiser_params)")
            v = card[k]
        out[k] = v
    return out


def _check_agree(key: str, params: dict, rec: dict, who: str) -> None:
    for k in sorted((set(params) | set(rec)) - TRAINING_ONLY_PARAMS):
        mine = params[k] if k in params else _default(key, k)
        built = rec[k] if k in rec else _default(key, k)
        if _plain(built) and not _same(mine, built):
            said = "given" if k in params else "left out, so the default"
            raise ValueError(f"{who}: params[{k!r}] is {mine!r} ({said}), but the model was built "
                             f"with {k}={built!r}: the card would rebuild another model; pass the "
                             f"parameters it was built with (params=None writes them); nothing "
                             "was written")


def _check_rebuilds(model: nn.Module, key: str, name: str, params: dict,
                    resolve: Callable[[str, dict], dict] | None, who: str) -> None:
    """Refuse unless ``build_model(name, **params)`` is ``model``'s class with its state-dict
    keys and shapes and its scalar settings (built on the CPU; the random state is kept)."""
    import torch

    call = f"build_model({name!r}, **{params!r})"
    try:
        with torch.random.fork_rng(devices=[]):
            rebuilt = build_model(key, **(resolve(key, params) if resolve else params))
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{who}: the card could not be loaded: {call} fails: {err}") from err
    if type(rebuilt) is not type(model):
        raise ValueError(f"{who}: the model is a {type(model).__qualname__}, but {call} makes a "
                         f"{type(rebuilt).__qualname__}: the card would load another network")
    mine, theirs = model.state_dict(), rebuilt.state_dict()
    missing, extra = sorted(set(theirs) - set(mine)), sorted(set(mine) - set(theirs))
    shapes = sorted(k for k in set(mine) & set(theirs)
                    if tuple(mine[k].shape) != tuple(theirs[k].shape))
    if missing or extra or shapes:
        parts = [f"{what} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for what, keys in
                 (("missing", missing), ("unexpected", extra), ("of other shapes", shapes)) if keys]
        raise ValueError(f"{who}: the model's weights do not fit {call} (state-dict keys "
                         f"{'; '.join(parts)}): the card would not load; pass the parameters the "
                         "model was built with")
    built = dict(rebuilt.named_modules())
    takes = inspect.signature(type(model)).parameters
    for path, m in model.named_modules():
        other = built.get(path)
        if type(other) is not type(m):
            got = "nothing" if other is None else f"a {type(other).__qualname__}"
            raise ValueError(f"{who}: {path or 'the model'} is a {type(m).__qualname__}, but "
                             f"{call} has {got} there: the card would load another network")
        for attr, v in vars(m).items():
            if attr.startswith("_") or attr == "training" or attr in TRAINING_ONLY_PARAMS:
                continue
            w = getattr(other, attr, v)  # a class-level default too (VarNet.acs_given)
            if _plain(v) and not isinstance(v, dict) and not _same(v, w):
                where = f"{path}.{attr}" if path else attr
                hint = (f"pass {attr}={v!r} in params" if not path and attr in takes else
                        "pass the parameters that build it so (params=None: those build_model "
                        "recorded); a setting changed after building cannot be recorded in a card")
                raise ValueError(f"{who}: the model has {where}={v!r}, but {call} gives "
                                 f"{where}={w!r}: the card would rebuild another model; {hint}; "
                                 "nothing was written")
