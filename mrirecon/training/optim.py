"""The optimiser step the wall-time-budgeted trainers share (``modl_deploy``, ``ct_staged``,
``ct_primal_dual``, ``denoiser_prior``): a cosine learning rate over the budget, then one step."""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: The largest learning rate accepted (every trainer uses Adam, whose step moves each weight by
#: up to about ``lr``: above 1 that is more than the weights' own size, O(0.01-1), so training
#: diverges to NaN / Inf; far above, Adam's update overflows float32 with a bare RuntimeError).
MAX_LR = 1.0


def lr_problem(lr: float) -> str | None:
    """Why ``lr`` is not a usable learning rate (``None`` if it is): finite, > 0, <= ``MAX_LR``."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and 0 < lr <= MAX_LR):
        return (f"must be in (0, {MAX_LR:g}] (Adam moves each weight by up to about lr per step; "
                f"the weights are O(0.01-1)), got {lr!r}")
    return None


def cosine_step(opt: torch.optim.Optimizer, loss: Tensor, *, lr: float, frac: float,
                clip: float | None = 1.0) -> float:
    """Set every group's learning rate to ``lr (1 + cos(pi frac)) / 2`` (``frac`` clipped to
    ``[0, 1]``: the fraction of the budget spent), back-propagate ``loss``, clip the gradient
    norm of the optimiser's parameters to ``clip`` (``None``: no clipping) and step; returns
    the loss as a float."""
    for group in opt.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(max(frac, 0.0), 1.0)))
    opt.zero_grad()
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], clip)
    opt.step()
    return float(loss.detach())


def require_steps(kind: str, steps: int, budget: str, out, kept: str | None = None) -> None:
    """Refuse to write a model that never trained: ``steps`` 0 means the budget (``budget``, as
    the user gave it, e.g. ``"--budget-s 1e-09 (setup took 41 s)"``) ended before the first
    step, and weights at their initialisation must not be shipped under ``out`` as a model.
    ``kept``: what ``out`` holds instead, when an earlier part of the run already wrote it."""
    if steps < 1:
        raise ValueError(f"train {kind}: no training step fit in {budget}; "
                         f"{kept or f'{out} was not written'} (give a larger budget)")
