"""Typed operator capabilities: which operators have them, how ``c * A`` and ``A @ B`` pass them
on (checked numerically against the definitions), and the models that need them (FBPConvNet
starts from a real FBP, also after ``op * c``; k-space DC after ``op * c``; clear TypeErrors)."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import (
    CoilExpandReduce,
    FunctionOperator,
    HasFBP,
    HasPseudoInverse,
    HasSamplingMask,
    capability,
    require_capability,
)
from mrirecon.models import CascadeNet, FBPConvNet
from mrirecon.models.unrolled.fbpconvnet import initial_reconstruction
from mrirecon.operators import sense
from mrirecon.operators.ct import ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.fbp import fbp
from mrirecon.operators.generic import Diagonal, Identity
from mrirecon.operators.mri import Fourier, Sampling, single_coil
from test_models_support import coil_maps, mri_problem

EPS64 = torch.finfo(torch.float64).eps
EPS32 = torch.finfo(torch.float32).eps


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _ct(n=16, views=24):
    geometry = CTGeometry.parallel((n, n), num_views=views)
    return ParallelBeam(geometry), geometry


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_which_operators_have_which_capability():
    ct, _ = _ct()
    _, _, mri = mri_problem()
    assert capability(ct, HasFBP) is ct and capability(ct, HasSamplingMask) is None
    assert capability(mri, HasSamplingMask) is mri and capability(mri, CoilExpandReduce) is mri
    assert capability(mri, HasFBP) is None and capability(mri, HasPseudoInverse) is None
    assert capability(Fourier(), HasPseudoInverse) is not None
    assert capability(Identity(), HasPseudoInverse) is not None
    # a function operator has nothing beyond A, A^H, A^H A
    f = FunctionOperator(lambda x: x, lambda y: y)
    assert all(capability(f, c) is None for c in (HasFBP, HasPseudoInverse, HasSamplingMask, CoilExpandReduce))
    with pytest.raises(TypeError, match="not an operator capability"):
        capability(ct, int)


def test_scaled_pseudo_inverse_is_exact():
    # pinv(cA) y = pinv(A) y / c; and pinv(D) equals the dense pseudo-inverse (zeros included)
    w = torch.randn(5, 6, dtype=torch.complex128, generator=_gen(1))
    w[1, 2] = 0
    d = Diagonal(w)
    y = torch.randn(3, 5, 6, dtype=torch.complex128, generator=_gen(2))
    dense = torch.linalg.pinv(torch.diag(w.flatten()))
    ref = (y.reshape(3, -1) @ dense.T).reshape(y.shape)
    assert _rel(d.pseudo_inverse(y), ref) < 10 * EPS64
    for c in (2.5, -0.25, 1.5 - 2j, torch.tensor(3.0, dtype=torch.float64)):
        scaled = capability(d * c, HasPseudoInverse)
        assert scaled is not None
        assert _rel(scaled.pseudo_inverse(y), d.pseudo_inverse(y) / c) < 4 * EPS64
        # and it is the pseudo-inverse of cA: (cA) pinv(cA) (cA) = cA
        x = torch.randn(5, 6, dtype=torch.complex128, generator=_gen(3))
        ca = d * c
        assert _rel(ca(scaled.pseudo_inverse(ca(x))), ca(x)) < 10 * EPS64
    zero = capability(d * 0.0, HasPseudoInverse)
    assert torch.equal(zero.pseudo_inverse(y), torch.zeros_like(y))


def test_scaled_fbp_undoes_the_scale():
    op, geometry = _ct()
    y = torch.rand(2, *geometry.sinogram_shape, dtype=torch.float64, generator=_gen(4))
    norm = 7.0
    scaled = capability(op * (1.0 / norm), HasFBP)
    assert scaled is not None
    # FBP of (A / n) applied to y / n is the FBP of A applied to y (the image in the same units)
    assert _rel(scaled.fbp(y / norm), fbp(y, geometry)) < 10 * EPS64
    assert _rel(scaled.fbp(y, filter="hann"), norm * fbp(y, geometry, filter="hann")) < 10 * EPS64
    # no exact rule for a product: the FBP does not pass through composition
    assert capability(op @ Identity((16, 16)), HasFBP) is None


def test_scaled_and_composed_factorisation_is_exact():
    # c A = M (c E) and (cA)^H = (conj(c) E^H) M, checked against the operator itself
    maps = coil_maps(3, 8, 6, dtype=torch.complex128)
    mask = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.float64)
    a = sense(maps, mask)
    x = torch.randn(2, 8, 6, dtype=torch.complex128, generator=_gen(5))
    y = torch.randn(2, 3, 8, 6, dtype=torch.complex128, generator=_gen(6))
    for c in (0.5, 2 - 1j):
        ca = a * c
        m = capability(ca, HasSamplingMask).mask
        er = capability(ca, CoilExpandReduce)
        assert torch.equal(m, a.mask)
        assert _rel(m * er.expand(x), ca(x)) < 10 * EPS64
        assert _rel(er.reduce(m * y), ca.H(y)) < 10 * EPS64
    # single coil P F: the mask of P, and E = F
    s = single_coil(mask)
    xs = torch.randn(2, 8, 6, dtype=torch.complex128, generator=_gen(7))
    er = capability(s, CoilExpandReduce)
    assert torch.equal(capability(s, HasSamplingMask).mask, Sampling(mask).mask)
    assert _rel(mask * er.expand(xs), s(xs)) < 10 * EPS64
    assert _rel(er.reduce(mask * s(xs)), s.H(s(xs))) < 10 * EPS64
    # composition with an operator that has no mask on the outside passes nothing
    assert capability(Fourier() @ Sampling(mask), HasSamplingMask) is None
    assert capability(Fourier() @ Sampling(mask), CoilExpandReduce) is None


def test_expand_reduce_needs_a_mask():
    # NufftSense-style expand/reduce without a mask is no factorisation A = M E
    class CoilOnly(FunctionOperator):
        def expand(self, x):
            return x

        def reduce(self, k):
            return k

    op = CoilOnly(lambda x: x, lambda y: y)
    assert capability(op, CoilExpandReduce) is None


def test_require_capability_names_model_capability_and_operator():
    f = FunctionOperator(lambda x: x, lambda y: y)
    with pytest.raises(TypeError, match=r"MyModel needs an operator with the HasFBP capability, got "
                                        r"FunctionOperator"):
        require_capability(f, HasFBP, "MyModel")


def test_fbpconvnet_starts_from_the_fbp_also_after_scaling():
    op, geometry = _ct()
    x = torch.rand(1, 16, 16, dtype=torch.float64, generator=_gen(8))
    y = op(x)
    ref = fbp(y, geometry)
    model = FBPConvNet(chans=4, num_pools=2, init_seed=0).double()
    assert _rel(model.start(y, op), ref) < 10 * EPS64
    norm = 5.0
    assert _rel(model.start(y / norm, op * (1.0 / norm)), ref) < 10 * EPS64
    # the starting image is a real FBP, not the unfiltered A^H y
    assert _rel(op.H(y), ref) > 0.5
    # the U-Net sees the FBP: a network with a zero last layer returns x_0 exactly
    for p in model.cnn.parameters():
        torch.nn.init.zeros_(p)
    with torch.no_grad():
        out = model(y / norm, op * (1.0 / norm))
    assert _rel(out, ref) < 10 * EPS64
    # asking explicitly for the FBP on an operator without one is a clear TypeError
    _, ym, mri = mri_problem()
    with pytest.raises(TypeError, match="FBPConvNet\\(initial='fbp'\\) needs .*HasFBP.*SenseOperator"):
        FBPConvNet(chans=4, num_pools=2, initial="fbp")(ym, mri)
    assert torch.equal(initial_reconstruction(ym, mri), mri.H(ym))  # auto: adjoint for SENSE
    with pytest.raises(ValueError, match="initial must be one of"):
        FBPConvNet(initial="filtered")


def test_cascade_kspace_dc_works_after_scaling_and_says_what_is_missing():
    _, y, op = mri_problem()
    torch.manual_seed(0)
    model = CascadeNet(iterations=1, layers=2, features=4).eval()
    with torch.no_grad():
        ref = model(y, op)
        # a scaled operator keeps mask and factorisation, so the network runs; c A x = c y has
        # the solutions of A x = y, and with |c| = 1 (the normalisation by max |A^H y| is then
        # unchanged) the network gives the same image
        c = torch.tensor(1j, dtype=torch.complex64)
        out = model(c * y, op * c)
    assert float((out - ref).abs().max()) < 1e-4 * float(ref.abs().max())
    f = FunctionOperator(op.forward, op.adjoint, op.domain_shape, op.range_shape)
    with pytest.raises(TypeError, match=r"CascadeNet\(dc='kspace'\) needs an operator with the "
                                        r"HasSamplingMask capability, got FunctionOperator"):
        model(y, f)
