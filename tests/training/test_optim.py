"""``cosine_step``: the shared cosine schedule and clipped step of the budgeted trainers."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.training.optim import cosine_step


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
