"""Every registry model at a tiny size, with a problem it reconstructs: for sweeps that run each
model once (device escapes, mixed precision). A model added to the registry without an entry here
fails `test_every_registry_model_is_swept`
(tests/robustness/test_hostile_device_escapes.py)."""

from __future__ import annotations

import torch

from mrirecon.models import ComplexImageCNN, DnCNN
from mrirecon.models.registry import build_model
from mrirecon.operators import gaussian_matrix, nufft_sense
from tests.models.problems import ct_problem, mri_problem, radial_problem

MODL = dict(iterations=2, layers=3, features=8, cg_iterations=4, batchnorm=False)


def _denoiser():
    return ComplexImageCNN(DnCNN(2, 2, depth=3, features=8, batchnorm=False))


#: name -> (build_model keywords (a callable for fresh modules), problem kind)
TINY = {
    "varnet": (dict(iterations=2, sens_chans=4, sens_pools=2, chans=4, pools=2), "mri"),
    "gram_varnet": (dict(iterations=2, chans=4, pools=2), "mri"),
    "vn": (dict(iterations=2, num_filters=4, kernel_size=5, num_rbf=7), "mri"),
    "modl": (MODL, "mri"),
    "admm_csnet": (dict(iterations=2, num_filters=4, num_points=11), "mri"),
    "ista_net_plus": (dict(iterations=2, features=8), "mri"),
    "cascade": (dict(iterations=2, layers=3, features=8), "mri"),
    "unrolled_em": (dict(iterations=2, stride=4, cg_iterations=4), "mri"),
    "pnp_admm": (lambda: dict(denoiser=_denoiser(), iterations=2, cg_iterations=4), "mri"),
    "pnp_hqs": (lambda: dict(denoiser=_denoiser(), iterations=2, cg_iterations=4), "mri"),
    "red": (lambda: dict(denoiser=_denoiser(), iterations=2, cg_iterations=4), "mri"),
    "pnp_dpir": (dict(iterations=2, cg_iterations=4, depth=3, features=4), "mri"),
    "learned_maps": (dict(model="modl", model_params=MODL, sens_chans=4, sens_pools=2,
                          calib_width=8), "radial_own_maps"),
    "density_weighted": (dict(model="modl", model_params=MODL), "radial"),
    "ldamp": (dict(iterations=2, depth=3, features=8), "dense"),
    "primal_dual": (dict(iterations=2, features=8), "ct"),
    "fbpconvnet": (dict(chans=4, num_pools=2), "ct"),
    "staged_ct": (dict(iterations=2, chans=4, num_pools=2, lam=[0.1, 0.05], cg_iterations=5), "ct"),
    "unet": (dict(chans=4, num_pool_layers=2), "image"),
    "dncnn": (dict(depth=3, features=8), "image"),
    "resnet": (dict(features=4, blocks=2), "image"),
}


def tiny_model(name: str) -> torch.nn.Module:
    kw, _ = TINY[name]
    return build_model(name, **(kw() if callable(kw) else kw))


def tiny_problem(kind: str) -> tuple[torch.Tensor, torch.Tensor, object]:
    """``(x_true, y, op)`` of a problem kind of :data:`TINY` (``op`` None for an image-to-image
    backbone, whose ``y`` is a real ``(1, 2, 16, 16)`` image)."""
    if kind == "mri":
        return mri_problem()
    if kind == "ct":
        return ct_problem()
    if kind in ("radial", "radial_own_maps"):
        n, coils = 16, 2
        target, maps, traj = radial_problem(n, coils, 12, 2, normalise=True)
        y = nufft_sense(maps, traj)(target)
        if kind == "radial_own_maps":  # the pipeline's operator for a model with its own maps
            maps = torch.full((2, coils, n, n), coils**-0.5, dtype=torch.complex64)
        return target, y, nufft_sense(maps, traj)
    if kind == "dense":
        a = gaussian_matrix(40, (8, 8), generator=torch.Generator().manual_seed(0))
        x = torch.randn(2, 8, 8, generator=torch.Generator().manual_seed(1))
        return x, a(x), a
    if kind == "image":
        x = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(2))
        return x, x, None
    raise ValueError(kind)


def run_model(model: torch.nn.Module, y: torch.Tensor, op) -> torch.Tensor:
    return model(y) if op is None else model(y, op)
