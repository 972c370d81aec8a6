"""``check_operator_once``: a user's operator is tested once, also when it is wrapped anew on
every call (``F / norm`` at each training step, the same functions in a new FunctionOperator);
new functions, and wrong operators, are still tested every time."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import FunctionOperator, LinearOperator, operator_check
from mrirecon.core.operator_check import check_operator_once
from mrirecon.functional import fft2c, ifft2c
from mrirecon.operators import sense

N = 8


def _mask() -> torch.Tensor:
    m = torch.zeros(N, N)
    m[:, ::2] = 1
    return m


MASK = _mask()


def _functions():
    """A forward, its adjoint and a wrong adjoint, new for each test (the memory is global)."""

    def fwd(x):
        return MASK * fft2c(x)

    def adj(y):
        return ifft2c(MASK * y)

    def bad_adj(y):  # the default ifft normalisation: A^H / sqrt(N N)
        s = torch.fft.ifftshift(MASK * y, dim=(-2, -1))
        return torch.fft.fftshift(torch.fft.ifft2(s), dim=(-2, -1))

    return fwd, adj, bad_adj


class Masked(LinearOperator):
    def __init__(self) -> None:
        super().__init__((N, N), (N, N))

    def _forward(self, x):
        return MASK * fft2c(x)

    def _adjoint(self, y):
        return ifft2c(MASK * y)


@pytest.fixture
def counted(monkeypatch):
    calls = []
    original = operator_check.check_operator

    def counting(op, x=None, **kwargs):
        calls.append(op.name)
        return original(op, x, **kwargs)

    monkeypatch.setattr(operator_check, "check_operator", counting)
    return calls


X = torch.zeros(1, N, N, dtype=torch.complex64)


def test_a_function_operator_scaled_anew_each_step_is_tested_once(counted):
    # Was: F / norm (notebook 05) tested at each of 30 training steps (0.47 s against 0.28 s)
    fwd, adj, _ = _functions()
    f = FunctionOperator(fwd, adj, (N, N), (N, N))
    shipped = sense(torch.ones(1, N, N, dtype=torch.complex64), MASK[0].bool())
    for i in range(10):
        check_operator_once(f / (1.0 + i), X)
        check_operator_once(torch.tensor(2.0 + i) * f, X)
        check_operator_once(f + f, X)
        check_operator_once(shipped.H @ f.H.H, X)
    assert len(counted) == 1


def test_the_same_functions_wrapped_anew_are_tested_once(counted):
    fwd, adj, _ = _functions()
    op = type("Masked2", (Masked,), {})()
    for _ in range(10):
        check_operator_once(FunctionOperator(fwd, adj, (N, N), (N, N)), X)
        # bound methods are new objects on every access: their function and instance count
        check_operator_once(FunctionOperator(op.forward, op.adjoint, (N, N), (N, N)) / 3.0, X)
    assert len(counted) == 2
    # other shapes, another gram, or new functions: a new operator, tested
    check_operator_once(FunctionOperator(fwd, adj, (N, N), None), X)
    check_operator_once(FunctionOperator(fwd, adj, (N, N), (N, N), gram=lambda v: adj(fwd(v))), X)
    for _ in range(3):
        check_operator_once(FunctionOperator(lambda v: fwd(v), lambda k: adj(k)), X)
    assert len(counted) == 2 + 2 + 3


def test_a_wrong_operator_is_refused_every_time_and_never_remembered(counted):
    fwd, _, bad_adj = _functions()
    for _ in range(3):
        with pytest.raises(ValueError, match=r"\(0\.5 \* FunctionOperator\): its adjoint"):
            check_operator_once(FunctionOperator(fwd, bad_adj, (N, N), (N, N)) / 2.0, X)
    assert len(counted) == 3


def test_functions_that_died_are_not_taken_for_new_ones_with_their_id(counted):
    # the memory holds weak references: a new function given a dead one's id is tested
    fwd, adj, bad_adj = _functions()
    for _ in range(50):
        good = FunctionOperator(lambda v: fwd(v), lambda k: adj(k), (N, N), (N, N))
        check_operator_once(good, X)
        del good
        with pytest.raises(ValueError, match="its adjoint is not the conjugate transpose"):
            check_operator_once(FunctionOperator(lambda v: fwd(v), lambda k: bad_adj(k), (N, N),
                                                 (N, N)), X)


def test_a_tested_user_instance_is_not_tested_again_in_new_composites(counted):
    cls = type("Mine", (Masked,), {})  # a class of this test's own: not yet trusted
    op = cls()
    for i in range(5):
        check_operator_once(op * (1.0 + i), X)
    assert counted == ["1.0 * Mine"]
    check_operator_once(cls(), X)  # another instance of a class not yet trusted: tested
    assert len(counted) == 2


def test_the_example_image_is_made_only_when_a_test_runs(counted):
    fwd, adj, _ = _functions()
    made = []

    def probe():
        made.append(1)
        return X

    f = FunctionOperator(fwd, adj, (N, N), (N, N))
    for _ in range(3):
        check_operator_once(f * 2.0, probe)
    shipped = sense(torch.ones(1, N, N, dtype=torch.complex64), MASK[0].bool())
    check_operator_once(shipped, probe)
    assert len(made) == 1 and len(counted) == 1
