"""One home for finite differences: ``|D|`` (the element-wise absolute value of a difference
matrix, used by the Pock-Chambolle preconditioners of TV and TGV) is the same kernel everywhere,
and it really is ``|D|``: the dense matrix of the ``absolute=True`` operator equals the absolute
value of the dense matrix of the signed one."""

from __future__ import annotations

import pytest
import torch

from mrirecon.operators import FiniteDifference
from mrirecon.operators.tgv import SymmetrizedGradient, TGVBlock
from tests.helpers import check_operator, dense_matrix, random_like_shape

CASES = {
    "finite-difference": (lambda a: FiniteDifference(2, absolute=a), (5, 4)),
    "finite-difference-3d": (lambda a: FiniteDifference(3, absolute=a), (3, 4, 2)),
    "symmetrized-gradient": (lambda a: SymmetrizedGradient(absolute=a), (2, 4, 5)),
    "tgv-grad": (lambda a: TGVBlock("grad", absolute=a), (3, 4, 5)),
    "tgv-sym": (lambda a: TGVBlock("sym", absolute=a), (3, 4, 5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_absolute_operator_is_the_absolute_matrix(name):
    make, shape = CASES[name]
    x = torch.zeros(shape, dtype=torch.float64)
    signed, absolute = dense_matrix(make(False), x), dense_matrix(make(True), x)
    assert signed.abs().max() > 0
    torch.testing.assert_close(absolute, signed.abs(), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_absolute_operator_adjoint(name, rdtype):
    make, shape = CASES[name]
    check_operator(make(True), random_like_shape((2, *shape), rdtype))
