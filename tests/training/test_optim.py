"""``cosine_step``: the shared cosine schedule and clipped step of the budgeted trainers."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.training.optim import cosine_step, lr_problem


@pytest.mark.parametrize("frac,factor", [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0), (-1.0, 1.0), (2.0, 0.0)])
def test_learning_rate_follows_the_cosine_of_the_spent_budget(frac, factor):
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)
    cosine_step(opt, (w**2).sum(), lr=0.2, frac=frac)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * factor, abs=1e-15)
    # plain SGD: w <- w - lr * clip(grad), grad = 2 w = 2 per entry, norm 2 sqrt(3) > 1 -> unit norm
    torch.testing.assert_close(w.detach(), torch.full((3,), 1 - 0.2 * factor / math.sqrt(3)))


def test_no_clipping_and_the_returned_loss():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.0)
    assert cosine_step(opt, (w**2).sum(), lr=0.1, frac=0.0, clip=None) == 3.0
    torch.testing.assert_close(w.detach(), torch.full((3,), 1 - 0.1 * 2.0))


def test_the_step_fraction_sets_the_schedule_while_the_clock_keeps_pace():
    from mrirecon.training.optim import budget_fraction

    # step 0 runs at the full rate whatever the clock read (the first batch, a slow start)
    assert budget_fraction(0, 2000.0, 3000.0, 6) == 0.0
    assert budget_fraction(0, 2000.0, 3000.0, None) == 0.0
    # bounded by its steps (the clock behind their share of the time): the step fraction alone
    assert budget_fraction(3, 100.0, 3000.0, 6) == 0.5
    assert budget_fraction(3, 1499.0, 3000.0, 6) == 0.5
    # the clock ahead of the steps (the time budget would end the run first): the time fraction
    assert budget_fraction(3, 2400.0, 3000.0, 6) == 0.8
    assert budget_fraction(3, 600.0, 3000.0, None) == 0.2
    # either budget spent ends the run, before its first step too
    assert budget_fraction(0, 3000.0, 3000.0, 6) >= 1.0
    assert budget_fraction(6, 1.0, 3000.0, 6) >= 1.0


@pytest.mark.parametrize("lr", [0.0, -0.0, -1e-4])
def test_a_learning_rate_of_zero_or_below_is_refused(lr):
    """Fails if optim.py:21 ``0 < lr`` -> ``0 <= lr``: lr 0 trains nothing, a run with it
    would spend its whole budget and ship the initial weights."""
    assert lr_problem(lr) is not None
    assert lr_problem(1e-4) is None and lr_problem(1.0) is None
