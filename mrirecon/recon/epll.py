"""EPLL: expected patch log-likelihood reconstruction by half-quadratic splitting
(Zoran & Weiss, ICCV 2011) with a patch GMM prior, for any linear operator (MRI and CT).

Problem (after scaling ``y`` so that a least-squares image has maximum 1, the range the prior
was fitted on, and with ``L = ||A||^2`` so that one parameter set serves MRI and CT)::

    min_x  1/(2L) ||A x - y||^2 - mu sum_i log p(P_i x)

split with auxiliary patches ``z_i`` and a coupling weight ``beta`` that grows over stages::

    E_beta(x, z) = 1/(2L) ||A x - y||^2 + beta/2 ||P x - z||^2 - mu sum_i log p(z_i)

* z-step: for each patch the MAP estimate under its most likely mixture component (the Wiener
  filter with noise variance ``sigma^2 = mu / beta``; :meth:`PatchGMM.denoise`). It is kept
  only where it lowers the patch's term of ``E_beta`` below the previous ``z_i`` (a safeguard
  that makes the alternation monotone; EPLL's approximate MAP almost always passes it).
* x-step: ``(A^H A / L + beta P^H P) x = A^H y / L + beta P^H z`` by CG warm-started at the
  current ``x`` (every CG iterate lowers this quadratic, so the x-step never increases ``E``).

``P`` takes overlapping ``p x p`` patches (:class:`~mrirecon.operators.Patches`), ``P^H P``
is the diagonal of patch counts. Complex images (MRI) are handled as two real images: the
prior is applied to the real and to the imaginary patches separately (``-log p(Re z) -
log p(Im z)``), which suits images with slowly varying phase; CT images are real.

The schedule is given by the patch noise levels ``sigma_t`` (normalised image units,
decreasing); ``beta_t = mu / sigma_t^2`` with ``mu = noise_std^2 / c`` (``c`` = mean patch
count per pixel), so that the prior-to-data weight per pixel is ``(noise_std / sigma_t)^2``
whatever the stride, as in Zoran & Weiss' denoising schedule.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.core.checks import check_iterations, count_problem, positive_problem
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.gmm import (
    PatchGMM,
    merge_complex,
    normalise_problem,
    patch_gmm_from_state_dict,
    split_complex,
)
from mrirecon.operators import Patches
from mrirecon.recon.checks import check_data
from mrirecon.recon.variational import batch_dims_of
from mrirecon.solvers import cg


class EPLLProblem:
    """The normalised EPLL problem for one data set: cost and the two half-steps.

    Parameters
    ----------
    y, op
        Measurements and forward operator (images ``(..., H, W)``).
    gmm
        Patch prior.
    noise_std
        Sets the prior weight ``mu = noise_std^2 / c`` (normalised image units).
    stride
        Patch stride (1 = all overlapping patches).
    batch_dims
        Leading axes of ``y`` that are independent problems (each gets its own scale and
        ``||A||^2``).
    """

    def __init__(self, y: Tensor, op: LinearOperator, gmm: PatchGMM, *, noise_std: float = 0.02,
                 stride: int = 1, batch_dims: int = 0) -> None:
        if noise_std <= 0:
            raise ValueError(f"epll: noise_std must be > 0, got {noise_std}")
        x_ls, scale, lip = normalise_problem(y, op, batch_dims=batch_dims)
        self.op, self.gmm, self.lip, self.scale = op, gmm, lip, scale
        self.y = y / scale.reshape(scale.shape[:batch_dims] + (1,) * (y.ndim - batch_dims))
        self.aty = op.H(self.y) / lip
        self.x_init = x_ls / scale
        self.patches = Patches(tuple(x_ls.shape[-2:]), gmm.patch_size, stride).to(y.device)
        self.counts = self.patches.counts.to(x_ls.real.dtype)
        self.mu = float(noise_std) ** 2 / float(self.counts.mean())
        self.batch_dims = batch_dims

    def beta(self, sigma: float) -> float:
        """Coupling weight of the stage whose Wiener noise level is ``sigma``."""
        return self.mu / float(sigma) ** 2

    def _patch_terms(self, zhat: Tensor, z: Tensor, beta: float) -> Tensor:
        """Per real patch ``beta/2 ||zhat - z||^2 - mu log p(z)``."""
        return 0.5 * beta * (zhat - z).square().sum(-1) - self.mu * self.gmm.log_likelihood(z)

    def cost(self, x: Tensor, z: Tensor, beta: float) -> float:
        """``E_beta(x, z)`` (summed over a batch); ``z`` is the real patch tensor from
        :meth:`z_step`."""
        r = self.op(x) - self.y
        if self.batch_dims == 0:
            data = 0.5 * float(torch.linalg.vector_norm(r) ** 2) / float(self.lip)
        else:  # each item over its own ||A||^2
            bd = self.batch_dims
            rr = torch.linalg.vector_norm(r, dim=tuple(range(bd, r.ndim))) ** 2
            data = 0.5 * float((rr / self.lip.reshape(self.lip.shape[:bd])).sum())
        return data + float(self._patch_terms(split_complex(self.patches(x)), z, beta).sum())

    @torch.no_grad()
    def z_step(self, x: Tensor, beta: float, z_old: Tensor | None = None) -> Tensor:
        """Approximate MAP patches (real; ``(2, ..., L, d)`` for a complex ``x``)."""
        zhat = split_complex(self.patches(x))
        z = self.gmm.denoise(zhat, self.mu / beta, mode="map")
        if z_old is not None:
            worse = self._patch_terms(zhat, z, beta) > self._patch_terms(zhat, z_old, beta)
            z = torch.where(worse[..., None], z_old, z)
        return z

    @torch.no_grad()
    def x_step(self, x: Tensor, z: Tensor, beta: float, iterations: int = 10) -> Tensor:
        """CG on ``(A^H A / L + beta P^H P) x = A^H y / L + beta P^H z`` from ``x``."""
        rhs = self.aty + beta * self.patches.H(merge_complex(z, x.is_complex()))
        counts = beta * self.counts
        return cg(lambda v: self.op.gram(v) / self.lip + counts * v, rhs, x,
                  iterations=iterations, batch_dims=self.batch_dims)


def _positive(value: object) -> bool:  # a finite number > 0 (numpy scalars included)
    return isinstance(value, numbers.Real) and positive_problem(value) is None


def epll_settings_problem(params: dict) -> tuple[str, str] | None:
    """``(setting, what is wrong)`` for an :func:`epll` setting it refuses, or ``None``.

    The registry's ``settings_problem`` of ``epll``, so a pipeline refuses these at load, and the
    check :func:`epll` runs first: ``sigmas=[]``, ``noise_std=0`` and ``stride=0`` loaded and
    failed every input, ``sigmas=0.05`` with "TypeError: 'float' object is not iterable"."""
    if "noise_std" in params and not _positive(params["noise_std"]):
        return "noise_std", (f"must be > 0 (the prior weight mu = noise_std^2 / patches per "
                             f"pixel), got {params['noise_std']!r}")
    sigmas = params.get("sigmas")
    if sigmas is not None:
        scalar = isinstance(sigmas, (int, float, str)) or getattr(sigmas, "ndim", 1) == 0
        values = [] if scalar else list(sigmas)
        if scalar or not values or not all(_positive(v.item() if hasattr(v, "item") else v)
                                           for v in values):
            return "sigmas", ("must be a non-empty list of finite patch noise levels > 0, one "
                              f"per stage (e.g. [0.1, 0.05, 0.02]), or null, got {sigmas!r}")
    stride = params.get("stride")
    if stride is not None and (problem := count_problem(stride, 1)) is not None:
        return "stride", f"{problem} (the patch step in pixels)"
    bd = params.get("batch_dims")
    if bd is not None and (problem := count_problem(bd, 0)) is not None:
        return "batch_dims", f"{problem} or None"
    gmm = params.get("gmm")
    if isinstance(gmm, (str, os.PathLike)):  # a missing file failed every input, naming no key
        from mrirecon.io.weights import resolve_weights

        try:
            resolve_weights(gmm, "epll")
        except (FileNotFoundError, ValueError) as err:
            return "gmm", str(err).removeprefix("epll: ")
    return None


@accepts_deprecated_names
def default_sigmas(iterations: int = 6, sigma_start: float = 0.1,
                   sigma_end: float = 0.01) -> list[float]:
    """Geometric schedule of ``iterations`` patch noise levels (normalised image units)."""
    return [float(s) for s in np.geomspace(sigma_start, sigma_end, iterations)]


@accepts_deprecated_names
def epll(
    y: Tensor,
    op: LinearOperator,
    gmm: PatchGMM | str = "patch_gmm",
    *,
    noise_std: float = 0.02,
    sigmas: Sequence[float] | None = None,
    iterations: int = 6,
    stage_iterations: int = 1,
    cg_iterations: int = 10,
    stride: int = 1,
    batch_dims: int | None = None,
    callback: Callable[[int, Tensor, float], None] | None = None,
) -> Tensor:
    """EPLL reconstruction with a patch GMM prior (see the module docstring).

    Parameters
    ----------
    y
        k-space ``(..., coils, H, W)`` (with ``sense``) or sinogram ``(..., views, detectors)``.
    op
        Forward operator on images ``(..., H, W)``.
    gmm
        Patch prior or the name/path of saved weights (default: the shipped ``patch_gmm``,
        8 x 8 patches, 20 components).
    noise_std
        Prior weight via ``mu = noise_std^2 / c``; roughly the noise level of a least-squares
        image relative to its maximum (larger: smoother).
    sigmas
        Decreasing patch noise levels, one per stage (default :func:`default_sigmas` with
        ``iterations`` stages from 0.1 to 0.01; when given, ``iterations`` is ignored, and a
        pipeline that sets both says so at load: :mod:`mrirecon.pipeline.inert`).
    iterations
        Outer iterations: the stages of the default ``sigmas`` schedule (was ``stages``,
        still accepted with a ``FutureWarning``).
    stage_iterations
        z/x alternations per stage (was ``iterations`` before the vocabulary of
        :mod:`mrirecon.core.names`).
    cg_iterations
        CG iterations per x-step.
    stride
        Patch stride (1: every overlapping patch, as published; 2-4 is 4-16x faster).
    batch_dims
        Leading independent axes, each slice with its own scale and ``||A||^2``; default: the
        axes of ``y`` beyond ``op``'s (a stack of slices), as ``tv`` and ``dlmri`` take them, so
        a batched call gives each slice its reconstruction alone. ``0`` treats the whole tensor
        as one problem (one scale: was the default, and a slice 10x dimmer than its neighbour
        scored 19.2 dB in the batch, 38.7 dB alone).
    callback
        ``callback(iteration, x, relative_change)`` after every x-step, as every
        :func:`mrirecon.recon.run` method calls it: ``iteration`` counts the x-steps of all
        stages from 0 (``stage * stage_iterations + alternation``), ``x`` is the image in the
        units of the result (``(..., H, W)``, as :func:`epll` would return it then) and
        ``relative_change`` a float, ``||x_new - x_old|| / ||x_new||`` of this x-step (over the
        whole tensor). Before 2026-12-07 it was ``callback(stage, iteration, x)`` with ``x``
        normalised (the least-squares image's maximum at 1).

    Returns
    -------
    Tensor
        Image ``(..., H, W)``: complex for MRI, real for CT.
    """
    check_data("epll", y, op)  # as run: NaN, all zero, real k-space, a flipped sinogram
    if (bad := epll_settings_problem(dict(noise_std=noise_std, sigmas=sigmas, stride=stride,
                                          batch_dims=batch_dims))) is not None:
        raise ValueError(f"epll: {bad[0]} {bad[1]}")
    check_iterations("epll", iterations=iterations, stage_iterations=stage_iterations,
                     cg_iterations=cg_iterations)  # iterations=0: no stage, the start image
    if isinstance(gmm, PatchGMM):
        prior = gmm
    else:  # a shipped name or path, read by the one weights reader
        from mrirecon.io.weights import read_state_dict

        prior = patch_gmm_from_state_dict(read_state_dict(gmm, who="epll"), where=str(gmm))
    prior = prior.to(y.device)
    image_ndim = (aty := op.H(y)).ndim
    if batch_dims is None:
        batch_dims = batch_dims_of(op, aty)
    elif batch_dims > image_ndim - 2:  # 3 on one slice: "IndexError: too many indices"
        raise ValueError(f"epll: batch_dims {batch_dims} leaves no (H, W) image: the images of "
                         f"y have {image_ndim} axes, so at most {image_ndim - 2}")
    problem = EPLLProblem(y, op, prior, noise_std=noise_std, stride=stride, batch_dims=batch_dims)
    schedule = [float(s) for s in sigmas] if sigmas is not None else default_sigmas(iterations)
    x, z = problem.x_init, None
    for stage, sigma in enumerate(schedule):
        beta = problem.beta(sigma)
        for it in range(stage_iterations):
            z = problem.z_step(x, beta, z)
            x_old, x = x, problem.x_step(x, z, beta, cg_iterations)
            if callback is not None:
                change = float(torch.linalg.vector_norm(x - x_old)
                               / torch.linalg.vector_norm(x).clamp_min(torch.finfo(x.real.dtype).tiny))
                callback(stage * stage_iterations + it, x * problem.scale, change)
    return x * problem.scale
