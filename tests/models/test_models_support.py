"""The shared model-test problems (tests/models/problems.py) are what they claim."""

from __future__ import annotations

import torch

from mrirecon.functional import rss
from tests.helpers import check_operator, random_like_shape
from tests.models.problems import H, W, column_mask, dense_ct_operator, mri_problem


def test_dense_ct_operator_passes_operator_kit():
    op = dense_ct_operator(dtype=torch.float64)
    check_operator(op, random_like_shape((2, 16, 16), torch.float64), norm=True)


def test_mri_problem_is_consistent():
    x, y, op = mri_problem(dtype=torch.complex128)
    check_operator(op, random_like_shape((2, H, W), torch.complex128))
    assert torch.allclose(rss(op.maps * x.unsqueeze(1), dim=1), x.abs(), atol=1e-10)  # unit-RSS maps
    assert torch.all(y[..., ~column_mask()] == 0)
