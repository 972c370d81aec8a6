"""Build a model by name with its published defaults, overridden by keyword arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from torch import nn

from mrirecon.core.checks import param_problem
from mrirecon.core.names import canonical_params
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
    "staged_ct": (StagedCTNet, dict(stages=2, chans=16, num_pools=4, lam=0.1, cg_iterations=15)),
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
    KeyError
        Unknown name (the message lists the known ones).
    TypeError
        A keyword the model does not take (names the model and the keyword).

    ``init_seed`` (see :mod:`mrirecon.models.init`) is accepted for every name: models take it
    themselves; backbones and plug-and-play models with a denoiser built by name are built
    inside :func:`~mrirecon.models.init.seeded_init`.
    """
    key = name.lower().replace("-", "_")
    if key not in _MODELS:
        raise KeyError(f"unknown model {name!r}; available: {', '.join(available_models())}")
    cls, defaults = _MODELS[key]
    # old spellings (num_cascades, nu, ...) are renamed before they meet the defaults
    kwargs = canonical_params(kwargs, inspect.signature(cls).parameters, f"build_model({name!r})")
    params = {**defaults, **kwargs}
    signature = inspect.signature(cls).parameters
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
            return cls(**params)
        except TypeError as err:
            raise TypeError(f"build_model({name!r}): {err}") from err
