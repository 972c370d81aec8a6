"""``check_operator`` on operators a user writes: the expand / reduce identities of
``CoilExpandReduce``, linearity, the precision and the shapes of the outputs (b88 audit)."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import HasSamplingMask, LinearOperator, check_operator
from mrirecon.functional import fft2c, ifft2c
from mrirecon.operators import DenseMatrix, Diagonal, sense, single_coil

N = 8


class FieldMap(LinearOperator, HasSamplingMask):
    """Single-coil Cartesian MRI with an off-resonance phase: ``A x = M F (P x)``."""

    def __init__(self, phase, mask):
        super().__init__((N, N), (N, N))
        self.register_buffer("phase", phase)
        self.register_buffer("mask", mask)

    def _forward(self, x):
        return self.mask * fft2c(self.phase * x)

    def _adjoint(self, y):
        return self.phase.conj() * ifft2c(self.mask * y)

    def expand(self, x):
        return fft2c(self.phase * x)

    def reduce(self, k):
        return self.phase.conj() * ifft2c(k)


def _parts(dtype=torch.complex64):
    g = torch.Generator().manual_seed(0)
    phase = torch.exp(1j * torch.randn(N, N, generator=g, dtype=torch.float64)).to(dtype)
    mask = (torch.rand(1, N, generator=g) < 0.5).float().expand(N, N).clone()
    mask[:, N // 2 - 1:N // 2 + 1] = 1
    return phase, mask


def _user(name, **methods):
    """A FieldMap subclass of this test's own (nothing of it trusted by check_operator_once)."""
    return type(name, (FieldMap,), methods)(*_parts())


# -- 1: CoilExpandReduce --------------------------------------------------------------------

def test_a_correct_expand_reduce_and_mrirecons_own_pass_with_their_errors_reported():
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, N, N, dtype=torch.complex128, generator=g)
    mask = torch.rand(N, generator=g) < 0.5
    d = Diagonal(torch.randn(N, N, dtype=torch.complex128, generator=g))
    ops = [FieldMap(*_parts()), sense(maps, mask), 0.5j * sense(maps, mask),
           sense(maps, mask) @ d, single_coil(mask, (N, N))]
    for op in ops:
        found = check_operator(op)
        assert {"expand", "reduce", "expand_reduce"} <= set(found), op.name
        tol = found["tolerance"]
        assert max(found["expand"], found["reduce"], found["expand_reduce"]) < 1e-2 * tol, op.name


@pytest.mark.parametrize("name, broken, message", [
    # reduce forgot the conj of the phase: the dot test of A passed (1.4e-8) and k-space data
    # consistency left a data residual of 0.72 without a word
    ("BadReduce", {"reduce": lambda self, k: ifft2c(k)},
     r"check_operator: BadReduce: reduce\(M \* v\) differs from A\^H v .*A\^H y = "
     r"reduce\(M \* y\)\); reduce is not the adjoint of expand"),
    ("BadExpand", {"expand": lambda self, x: fft2c(x)},
     r"check_operator: BadExpand: M \* expand\(u\) differs from A u \(CoilExpandReduce needs "
     r"A x = M \* expand\(x\)"),
], ids=["reduce-without-conj", "expand-without-phase"])
def test_a_wrong_expand_or_reduce_is_refused_naming_the_identity(name, broken, message):
    with pytest.raises(ValueError, match=message):
        check_operator(_user(name, **broken))


def test_kspace_data_consistency_models_refuse_a_wrong_reduce():
    """CascadeNet(dc='kspace') returned images 0.77 off the data with a reduce that lost its
    conj; its one-time operator check now tests expand / reduce."""
    from mrirecon.models.unrolled.cascade import CascadeNet

    bad = _user("BadReduceModel", reduce=lambda self, k: ifft2c(k))
    y = bad(torch.randn(1, N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(2)))
    model = CascadeNet(iterations=1, layers=2, features=4, dc="kspace")
    with torch.no_grad(), pytest.raises(ValueError, match=r"BadReduceModel: reduce\(M \* v\) "
                                                          r"differs from A\^H v"):
        model(y, bad)


# -- 2: linearity ---------------------------------------------------------------------------

def test_an_affine_operator_is_refused_as_not_linear():
    """An offset of 0.01 * mask in k-space (values about 1) passed: dot test 3.42e-4 against a
    tolerance of 3.45e-4."""
    bad = _user("Affine", _forward=lambda self, x: FieldMap._forward(self, x) + 0.01 * self.mask)
    with pytest.raises(ValueError, match=r"check_operator: Affine: it is not linear \(affine\? "
                                         r"non-linear\?\): A\(0\) is not 0 .* and A\(a u \+ b z\) "
                                         r"differs from a A u \+ b A z"):
        check_operator(bad)


def test_a_nonlinear_operator_is_refused_as_not_linear():
    bad = _user("Clipped", _forward=lambda self, x: FieldMap._forward(self, x.real.clamp(min=0)
                                                                       .to(x.dtype)))
    with pytest.raises(ValueError, match=r"Clipped: it is not linear \(affine\? non-linear\?\): "
                                         r"A\(a u \+ b z\) differs"):
        check_operator(bad)


def test_a_real_linear_operator_is_tested_with_real_scalars():
    """PhaseConstrained maps a real image to complex k-space: only real-linear, as its dot test
    (real inner product) treats it; complex scalars would refuse it."""
    from mrirecon.operators import PhaseConstrained

    phase = torch.exp(1j * torch.rand(N, N, dtype=torch.float64,
                                      generator=torch.Generator().manual_seed(3)))
    found = check_operator(PhaseConstrained(phase), torch.zeros(N, N, dtype=torch.float64))
    assert found["zero"] == 0 and found["superposition"] < 1e-2 * found["tolerance"]


# -- 3: precision ---------------------------------------------------------------------------

@pytest.mark.parametrize("method, where", [("_forward", r"Wide forward \(_forward\)"),
                                           ("_adjoint", r"Wide\.H \(_adjoint\)")])
def test_an_output_in_another_precision_is_refused_naming_the_method(method, where):
    wide = {method: lambda self, t, m=method: getattr(FieldMap, m)(self, t).to(torch.complex128)}
    with pytest.raises(ValueError, match=r"check_operator: " + where + r" returned "
                                         r"torch\.complex128 for torch\.complex64 input"):
        check_operator(_user("Wide", **wide))


def test_a_real_operator_returning_float64_for_float32_is_refused_but_promotion_is_not():
    """A float32 operator returning float64 is refused; a float64 DenseMatrix on a float32 input
    returns float64 by design (torch's promotion with its own tensor) and passes."""
    g = torch.Generator().manual_seed(4)
    m32 = torch.randn(6, 4, generator=g)

    class Widening(DenseMatrix):
        def _forward(self, x):
            return super()._forward(x).double()

    with pytest.raises(ValueError, match=r"Widening forward \(_forward\) returned torch\.float64 "
                                         r"for torch\.float32 input"):
        check_operator(Widening(m32))
    assert check_operator(DenseMatrix(m32.double()), torch.zeros(4))["adjoint"] < 1e-6


# -- 4: shapes ------------------------------------------------------------------------------

def test_an_adjoint_of_the_wrong_shape_is_named_not_a_torch_broadcast_error():
    """Was: RuntimeError "The size of tensor a (16) must match the size of tensor b (15)" from
    inside the dot test."""
    bad = _user("WrongShape", _adjoint=lambda self, y: FieldMap._adjoint(self, y)[..., :, :-1])
    with pytest.raises(ValueError, match=r"check_operator: WrongShape\.H \(_adjoint\) returned "
                                         rf"shape \({N}, {N - 1}\) for an input of shape \({N}, "
                                         rf"{N}\); its domain is \(\.\.\., {N}, {N}\)"):
        check_operator(bad)
    bad = _user("WrongRange", _forward=lambda self, x: FieldMap._forward(self, x)[..., 1:, :])
    with pytest.raises(ValueError, match=r"WrongRange forward \(_forward\) returned shape "
                                         rf"\({N - 1}, {N}\) .*its range is"):
        check_operator(bad)


def test_outputs_that_do_not_fit_without_declared_shapes_give_a_value_error():
    class Free(LinearOperator):
        def _forward(self, x):
            return 2 * x

        def _adjoint(self, y):
            return 2 * y[..., :-1]

    with pytest.raises(ValueError, match=r"check_operator: Free: for u of shape \(5,\), A u "
                                         r"\(5,\), A\^H v \(4,\) .* do not fit together"):
        check_operator(Free(), torch.zeros(5))
