"""The optimiser step the budgeted trainers share (``modl_deploy``, ``ct_staged``,
``ct_primal_dual``, ``denoiser_prior``): a cosine learning rate over the budget
(:func:`budget_fraction`: the steps', unless the time budget would end the run first), then
one step."""

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


def budget_fraction(step: int, elapsed: float, max_seconds: float,
                    max_steps: int | None = None) -> float:
    """The fraction of the training budget spent before step ``step`` (0-based): the cosine
    schedule's ``frac`` (:func:`cosine_step`); at 1 or more the run ends.

    Of the two budgets, the one that would end the run first sets it: the step fraction
    ``step / max_steps`` while the clock keeps pace with it (``elapsed / max_seconds`` not
    larger), the time fraction once the clock is ahead of it (the time budget would end the
    run first; always without ``max_steps``). So a run in which every step ``s`` starts within
    ``s / max_steps`` of the time budget follows its steps alone, whatever the machine's speed or
    load: the same command gives the same weights (with the same thread count, CPU type and
    torch build). Step 0 runs at the full rate (fraction 0) unless the time budget is already
    spent: the time before it (setup, the first batch) never sets a learning rate. The
    trainers start ``elapsed`` once their data are ready (``modl_deploy``: at the first batch),
    so the first batch's time does not count against a step-bounded schedule either.
    """
    by_steps = 0.0 if max_steps is None else step / max_steps
    by_time = elapsed / max_seconds
    if step == 0 and by_time < 1.0:
        return by_steps
    return max(by_time, by_steps)


def stage_step_limits(kind: str, max_steps, stages: int) -> list:
    """Each stage's step limit from ``--max-steps`` (one count for every stage, or one per
    stage; ``None`` each without it: the stage's share of the time budget alone)."""
    if max_steps is None:
        return [None] * stages
    counts = (max_steps,) if isinstance(max_steps, int) else tuple(max_steps)
    if len(counts) not in (1, stages) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in counts):
        raise ValueError(f"train {kind}: --max-steps {' '.join(map(str, counts))}: give one step "
                         f"count (>= 1) for every stage or one per stage ({stages} stage(s))")
    return list(counts) * stages if len(counts) == 1 else list(counts)


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
