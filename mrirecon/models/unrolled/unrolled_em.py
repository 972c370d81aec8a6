"""Unrolled EM / mean-field network over a patch GMM prior: ``model(y, op) -> x``.

The network unrolls ``T`` half-quadratic-splitting iterations of EPLL (Zoran & Weiss 2011)
with the hard component choice replaced by the EM / mean-field posterior mean, so every step
is differentiable:

* E-step: for the patches ``P x`` (real and imaginary parts of a complex image treated as two
  real patch sets) the posterior responsibilities
  ``gamma_ik = p(k | P_i x) propto pi_k N(P_i x; mu_k, Sigma_k + sigma_t^2 I)``;
* M-step (patch estimate): ``z_i = sum_k gamma_ik W_k(P_i x)`` with the Wiener filters
  ``W_k(v) = mu_k + Sigma_k (Sigma_k + sigma_t^2 I)^{-1} (v - mu_k)`` (DC kept);
* data step: ``x = (A^H A / L + beta_t P^H P)^{-1} (A^H y / L + beta_t P^H z)`` by CG
  (``L = ||A||^2``; ``P^H P`` is the diagonal of patch counts), differentiated implicitly.

Learned: ``sigma_t`` and ``beta_t`` for every iteration and, with ``learn_gmm``, the mixture's
means, covariances and weights. The schedule starts as EPLL's: ``sigma_t`` geometric from
``sigma_start`` to ``sigma_end`` and ``beta_t = noise_std^2 / (sigma_t^2 c)`` (``c`` the mean
patch count per pixel, so the prior-to-data balance does not depend on ``stride``). Data are
scaled so that a damped least-squares image has maximum 1 (the range of the prior) and the
result is scaled back. Works with any ``LinearOperator`` on images ``(B, H, W)``: MRI
(``sense``, complex) and CT projectors (real).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.operator_check import check_operator_once
from mrirecon.models.blocks.cg_dc import operator_tensors_with_grad, solve_proximal
from mrirecon.models.input_checks import check_model_input
from mrirecon.operators.patches import Patches
from mrirecon.models.gmm import (
    PatchGMM,
    merge_complex,
    normalise_problem,
    split_complex,
)
from mrirecon.models.init import seeded_init


class UnrolledEM(nn.Module):
    """Unrolled EM over a patch GMM.

    Parameters
    ----------
    iterations
        Unrolled iterations ``T``.
    gmm
        A :class:`PatchGMM` (e.g. the shipped one,
        ``mrirecon.training.weights.load_patch_gmm("patch_gmm")``), or ``None`` for an
        untrained isotropic mixture of ``components`` components on ``patch_size`` patches
        (the shell a saved state dict is loaded into). The constructor reads no file:
        ``build_model("unrolled_em")`` in training and ``weights: patch_gmm`` in pipelines
        supply the shipped prior.
    components, patch_size
        Used only when ``gmm`` is ``None``.
    stride
        Patch stride (1: all overlapping patches as in EPLL; 4: a quarter of the overlap per
        axis, 16x cheaper).
    learn_gmm
        Learn the mixture (means, covariances, weights; through the PSD-preserving
        corrections of :class:`PatchGMM` with ``trainable=True``) or keep it fixed.
    sigma_start, sigma_end, noise_std
        Initial schedule (see the module docstring), in units of the normalised image.
    cg_iterations
        CG iterations of each data step.
    implicit
        Backward of the data step by a second CG solve (memory independent of iterations;
        the gradient of the converged solve, with its warm start detached). ``False``: autograd
        through the CG iterations, warm start included (the gradient of the computed map).
    init_seed
        Seed of the initial weights (:func:`~mrirecon.models.init.seeded_init`; ``None``: the
        global generator, as ``nn.Module`` does). Only the isotropic mixture made when ``gmm``
        is ``None`` is drawn, and it is deterministic today: the seed keeps that so.
    """

    def __init__(
        self,
        iterations: int = 6,
        gmm: PatchGMM | None = None,
        components: int = 20,
        patch_size: int = 8,
        stride: int = 4,
        learn_gmm: bool = True,
        sigma_start: float = 0.1,
        sigma_end: float = 0.01,
        noise_std: float = 0.02,
        cg_iterations: int = 8,
        implicit: bool = True,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        if iterations < 1:
            raise ValueError(f"UnrolledEM: iterations must be >= 1, got {iterations}")
        if isinstance(gmm, PatchGMM):
            base = gmm.folded()
            prior = PatchGMM(base.means, base.covs, base.weights, eps=base.eps, trainable=learn_gmm)
        elif gmm is None:
            with seeded_init(init_seed):  # deterministic today; seeded like every model
                prior = PatchGMM.isotropic(components, patch_size, trainable=learn_gmm)
        else:
            raise TypeError(
                f"UnrolledEM: gmm must be a PatchGMM or None, got {type(gmm).__name__} {gmm!r}; "
                "models read no files: load it with mrirecon.training.weights.load_patch_gmm("
                f"{gmm!r}) (pipelines: reconstruct.weights: patch_gmm)")
        self.gmm = prior
        sigmas = torch.logspace(math.log10(sigma_start), math.log10(sigma_end), iterations)
        self.log_sigma = nn.Parameter(torch.log(sigmas))
        self.noise_std = float(noise_std)
        # beta_t = noise_std^2 / (sigma_t^2 * mean count): the mean count is folded in at run time
        self.log_beta = nn.Parameter(torch.log(noise_std**2 / sigmas**2))
        self.iterations, self.stride = int(iterations), int(stride)
        self.cg_iterations, self.implicit = int(cg_iterations), bool(implicit)
        self._patches: dict[tuple, Patches] = {}

    def _patch_op(self, shape: tuple[int, int], device: torch.device) -> Patches:
        key = (shape, device)
        if key not in self._patches:  # cached: must not be an inference tensor, or a model
            with torch.inference_mode(False):  # first run under inference could never train
                self._patches[key] = Patches(shape, self.gmm.patch_size, self.stride).to(device)
        return self._patches[key]

    def patch_estimate(self, x: Tensor, patches: Patches, sigma: Tensor) -> Tensor:
        """E- and M-step: the posterior-mean patches ``(B, L, p*p)`` of image ``x``."""
        z = split_complex(patches(x))
        z = self.gmm.denoise(z, sigma.to(z.dtype) ** 2, mode="mean")
        return merge_complex(z, x.is_complex())

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)`` (complex for MRI, real for CT)."""
        check_model_input("UnrolledEM", self, y, op, batch_ndim=2)
        check_operator_once(op, lambda: op.H(y))  # a user's operator, once; ours: a lookup
        x_ls, scale, lip = normalise_problem(y, op, batch_dims=1)
        y_n = y / scale.reshape((-1,) + (1,) * (y.ndim - 1))
        aty = op.H(y_n) / lip
        x = x_ls / scale
        patches = self._patch_op(tuple(x.shape[-2:]), x.device)
        counts = patches.counts.to(x.real.dtype)
        mean_count = counts.mean()

        def gram(v: Tensor) -> Tensor:
            return op.gram(v) / lip

        for t in range(self.iterations):
            z = self.patch_estimate(x, patches, torch.exp(self.log_sigma[t]))
            beta = torch.exp(self.log_beta[t]).to(x.real.dtype) / mean_count
            rhs = aty + beta * patches.H(z)
            x = solve_proximal(
                gram, rhs, beta * counts, iterations=self.cg_iterations, batch_dims=1,
                x0=x.detach() if self.implicit else x, implicit=self.implicit,
                params=operator_tensors_with_grad(op) if self.implicit else (),
            )
        return x * scale
