"""The operator layer with inputs that worked in kind but came back wrong without a word: complex
wavelet coefficients in column-major memory, integer images, a bright slice beside a dim one
under a tolerance, PnP-ADMM's first iteration, a complex matrix on a real vector, a tensor
"scalar" over image axes, sums of operators with different shapes, mixed precision, and batch
axes that do not fit the maps. Each must now give the right numbers or an error naming the
operator and the shapes."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch

from mrirecon import recon
from mrirecon.core import relative_adjoint_error
from mrirecon.functional import idwt2
from mrirecon.operators import (DenseMatrix, Diagonal, FiniteDifference, Identity, ParallelBeam,
                                Wavelet, nufft_sense, sense)
from mrirecon.operators.ct_geometry import CTGeometry

H, W, C = 16, 12, 3


def _eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _maps(dtype=torch.complex128, lead=(), seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*lead, C, H, W, dtype=dtype, generator=g)


def _iterations(fn, v):
    """``(iterations run, result)`` of ``fn(v, callback)``."""
    n = [0]

    def cb(it, x, r):
        n[0] = it + 1

    x = fn(v, cb)
    return n[0], x


# -- F1: the wavelet adjoint of column-major complex coefficients ---------------------------

@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_wavelet_adjoint_of_column_major_complex_coefficients(dtype):
    """``W.H(coef)`` of the same values in column-major memory (a transposed copy, a
    Fortran-ordered NumPy array) was 1.4 away from ``x``: the last synthesis step wrote into a
    temporary."""
    g = torch.Generator().manual_seed(0)
    wv = Wavelet((16, 16), "db4", levels=1)
    x = torch.randn(16, 16, dtype=dtype, generator=g)
    coef = wv(x)
    column_major = coef.t().contiguous().t()
    assert torch.equal(column_major, coef) and not column_major.is_contiguous()
    assert _rel(wv.H(column_major), x) < 100 * _eps(dtype)
    # a batch stored last, and a Fortran-ordered NumPy array: the same as row-major input
    batch = torch.randn(3, 16, 16, dtype=dtype, generator=g)
    batch_last = batch.permute(1, 2, 0).contiguous().permute(2, 0, 1)
    assert _rel(idwt2(batch_last, "db2", 2), idwt2(batch, "db2", 2)) < 100 * _eps(dtype)
    c = batch[0].numpy()
    fortran = torch.from_numpy(np.asfortranarray(c))
    assert _rel(idwt2(fortran, "db2", 2), idwt2(torch.from_numpy(c), "db2", 2)) < 100 * _eps(dtype)


# -- F8: integer images ----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int64, torch.int16, torch.uint8])
def test_wavelet_and_finite_difference_refuse_integer_images(dtype):
    """int64 / int16 truncated the wavelet coefficients (``||W x||`` 1711.97 for 1720.76),
    uint8 wrapped around (and finite differences by 256), without a word."""
    x = (torch.arange(16 * 16).reshape(16, 16) % 7 * 30).to(dtype)
    with pytest.raises(TypeError, match=rf"Wavelet\): input must be float32/float64 or complex, "
                                        rf"got {dtype}"):
        Wavelet((16, 16), "haar", levels=2)(x)
    with pytest.raises(TypeError, match=rf"Wavelet\).*got {dtype}"):
        Wavelet((16, 16), "haar", levels=2).H(x)
    with pytest.raises(TypeError, match=rf"FiniteDifference\): input must be float32/float64 or "
                                        rf"complex, got {dtype}"):
        FiniteDifference(2)(x)
    with pytest.raises(TypeError, match=rf"FiniteDifference\).*got {dtype}"):
        FiniteDifference(2).H(torch.stack([x, x]))
    # the float image of the same values: an isometry, as before
    xf = x.double()
    ratio = float(Wavelet((16, 16), "haar", levels=2)(xf).norm() / xf.norm())
    assert abs(ratio - 1) < 100 * _eps(xf.dtype)


# -- F2: TGV by PDHG with a tolerance, per slice ---------------------------------------------

def test_tgv_pdhg_tolerance_holds_per_slice():
    """A bright slice stopped a dim one of its batch early (recon/mri.py: "no slice stops
    earlier than it would alone"). CT, Pock-Chambolle steps: the same steps alone and batched."""
    op = ParallelBeam(CTGeometry.parallel((24, 24), num_views=20))
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 24, dtype=torch.float64),
                            torch.linspace(-1, 1, 24, dtype=torch.float64), indexing="ij")
    bright = ((xx**2 + yy**2) < 0.5).double() + 0.5 * (xx > 0.2).double()
    dim = ((xx.abs() < .5) & (yy.abs() < .4)).double() + 0.3 * (yy > 0).double()
    y = torch.stack([op(bright), 0.01 * op(dim)])

    def fn(v, cb):
        return recon.tgv(v, op, 2e-3, iterations=400, tolerance=1e-3, method="pdhg", callback=cb)

    n_batch, _ = _iterations(fn, y)
    n_alone = [_iterations(fn, y[i])[0] for i in range(2)]
    assert n_batch < 400 and n_batch >= max(n_alone), (n_batch, n_alone)


# -- F3: PnP-ADMM's tolerance ----------------------------------------------------------------

def _pnp_problem():
    g = torch.Generator().manual_seed(7)
    n = 32
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, n), torch.linspace(-1, 1, n), indexing="ij")
    img0 = ((xx**2 + yy**2) < 0.6).double() + 0.5 * ((xx - .2)**2 + (yy + .1)**2 < 0.05).double()
    img1 = ((xx.abs() < .5) & (yy.abs() < .4)).double() + 0.3 * (xx > 0).double()
    maps = torch.randn(4, n, n, dtype=torch.complex128, generator=g) * 0.1 + 1
    maps = maps / (maps.abs()**2).sum(0).sqrt()
    mask = torch.zeros(n)
    mask[::2] = 1
    mask[12:20] = 1
    op = sense(maps, mask)
    y = torch.stack([op(img0.to(torch.complex128)), op(img1.to(torch.complex128))])
    y = y + 1e-4 * torch.randn(y.shape, dtype=torch.complex128, generator=g)
    return op, y, img0


def test_pnp_admm_tolerance_does_not_return_the_start_image():
    """ADMM starts at z = x0, u = 0, so its first x-update reproduces x0 (relative change 2e-5):
    any tolerance above that returned the least-squares start after one iteration."""
    op, y, _ = _pnp_problem()
    start = recon.cg_sense(y[0], op, iterations=10)
    n, x = _iterations(lambda v, cb: recon.pnp_nlm(v, op, iterations=30, tolerance=1e-3,
                                                   callback=cb), y[0])
    assert n > 1
    assert _rel(x, start) > 1e-3  # moved away from the start by more than the tolerance


@pytest.mark.parametrize("method", ["hqs", "admm"])
def test_pnp_tolerance_holds_per_slice(method):
    """A bright slice stopped a dim one early: HQS ran 8 iterations for a batch whose dim slice
    needs 40 alone."""
    op, y, _ = _pnp_problem()
    y = torch.stack([0.01 * y[0], 100 * y[1]])

    def fn(v, cb):
        return recon.pnp_nlm(v, op, iterations=40, tolerance=1e-3, sigma_scale=30.0,
                             method=method, callback=cb)

    n_batch, _ = _iterations(fn, y)
    n_alone = [_iterations(fn, y[i])[0] for i in range(2)]
    assert max(n_alone) > 1 and n_batch >= max(n_alone), (n_batch, n_alone)


# -- F4: a complex matrix on a real vector ---------------------------------------------------

def test_dense_complex_matrix_keeps_its_imaginary_part_on_real_input():
    """The matrix was cast to the input's dtype: a real input dropped its imaginary part
    (error 0.84, only torch's once-per-process warning); a float64 matrix was rounded to a
    float32 input's precision."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(5, 4, dtype=torch.complex64, generator=g)
    d = DenseMatrix(m)
    x, y = torch.randn(4, generator=g), torch.randn(5, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Casting complex values to real discards ..."
        fx, hy, gx = d(x), d.H(y), d.gram(x)
    tol = 100 * _eps(torch.float32)
    assert fx.dtype == torch.complex64 and _rel(fx, m @ x.to(m.dtype)) < tol
    assert _rel(hy, m.mH @ y.to(m.dtype)) < tol
    assert _rel(gx, m.mH @ (m @ x.to(m.dtype))) < tol
    m64 = torch.randn(5, 4, dtype=torch.float64, generator=g)
    x32 = torch.randn(4, generator=g)
    out = DenseMatrix(m64)(x32)
    assert out.dtype == torch.float64 and _rel(out, m64 @ x32.double()) < 100 * _eps(torch.float64)


# -- F5: a tensor factor over image axes ------------------------------------------------------

def test_tensor_factor_over_operator_axes_is_refused():
    """``w * A`` with an (H, W) or per-coil weight built an operator whose adjoint was not one
    (dot test 0.40; projector with (V, D) weights 0.16; per-coil: ``.H`` of shape (C, H, W))."""
    op = sense(_maps(), torch.ones(W))
    per_pixel = torch.rand(H, W, dtype=torch.float64) + 0.5
    per_coil = torch.tensor([1.0, 2.0, 3.0]).reshape(C, 1, 1)
    for w in (per_pixel, per_coil):
        shape = re.escape(str(tuple(w.shape)))
        with pytest.raises(ValueError, match=rf"c \* SenseOperator: the factor c of shape {shape}"
                                             r".*Diagonal\(w\) @ A"):
            w * op
        with pytest.raises(ValueError, match="the factor c of shape"):
            op / w
    proj = ParallelBeam(CTGeometry.parallel((16, 16), num_views=16))
    with pytest.raises(ValueError, match=r"c \* ParallelBeam: the factor c of shape \(16, 16\)"):
        torch.rand(16, 16) * proj
    # a scalar tensor, and one value per slice where domain and range have as many axes
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, H, W, dtype=torch.complex128, generator=g)
    y = torch.randn(2, C, H, W, dtype=torch.complex128, generator=g)
    assert relative_adjoint_error(torch.tensor(2.0 - 1.0j) * op, x, y) < 100 * _eps(torch.float64)
    dg = Diagonal(torch.rand(H, W, dtype=torch.float64, generator=g) + 0.5)
    per_slice = torch.tensor([2.0, 3.0], dtype=torch.float64).reshape(2, 1, 1) * dg
    assert relative_adjoint_error(per_slice, x, x.flip(0)) < 100 * _eps(torch.float64)
    # the suggested rewrite passes the dot test
    wim = torch.rand(H, W, dtype=torch.float64, generator=g) + 0.5
    assert relative_adjoint_error(op @ Diagonal(wim), x, y) < 100 * _eps(torch.float64)


# -- F6: sums of operators of different shapes ------------------------------------------------

def test_sum_of_operators_with_different_shapes_is_refused():
    """``sense(maps, mask) + Identity()`` built, and ``.H`` returned (C, H, W) for an (H, W)
    domain."""
    op = sense(_maps(), torch.ones(W))
    x = torch.randn(H, W, dtype=torch.complex128)
    y = torch.randn(C, H, W, dtype=torch.complex128)
    with pytest.raises(ValueError, match=r"cannot add SenseOperator \(\(\.\.\., 16, 12\) -> "
                                         r"\(\.\.\., 3, 16, 12\)\) and Identity"):
        op + Identity((H, W))
    s = op + Identity()  # open shapes: refused when applied
    with pytest.raises(ValueError, match=r"SenseOperator gives \(3, 16, 12\) and Identity gives "
                                         r"\(16, 12\)"):
        s(x)
    with pytest.raises(ValueError, match=r"SenseOperator\.H gives \(16, 12\) and Identity\.H "
                                         r"gives \(3, 16, 12\)"):
        s.H(y)
    # sums of matching parts keep working, a batch of maps broadcasting over one image too
    batched = sense(_maps(lead=(2,)), torch.ones(W))
    normal = batched.H @ batched + 0.5 * Identity()
    ref = batched.gram(x) + 0.5 * x
    assert normal(x).shape == (2, H, W) and _rel(normal(x), ref) < 100 * _eps(torch.float64)
    assert _rel((op - op)(x) + op(x), op(x)) < 100 * _eps(torch.float64)


# -- F7: mixed precision -----------------------------------------------------------------------

def test_complex128_data_through_complex64_maps_keep_double_precision():
    """The no-grad column-mask gram rounded its 1/W to the maps' float32: 1.5e-8 from the
    complex128 operator's gram (and in cg_sense's result)."""
    maps64 = _maps(torch.complex64, seed=9)
    mask = torch.zeros(W)
    mask[::3] = 1
    a64, a128 = sense(maps64, mask), sense(maps64.to(torch.complex128), mask)
    x = torch.randn(H, W, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))
    tol = 100 * _eps(torch.float64)
    assert _rel(a64.gram(x), a128.gram(x)) < tol
    y = a128(x)
    xa = recon.cg_sense(y, a64, 1e-3, iterations=20)
    xb = recon.cg_sense(y, a128, 1e-3, iterations=20)
    assert xa.dtype == torch.complex128 and _rel(xa, xb) < 1000 * _eps(torch.float64)


def test_nufft_sense_warns_once_of_double_data_through_single_maps():
    """complex128 data through a complex64 NUFFT-SENSE came out complex128 but accurate to
    7e-6 (eps and trajectory of the maps' precision), without a word."""
    pytest.importorskip("finufft")
    ang = torch.arange(8, dtype=torch.float64) * np.pi * (3 - np.sqrt(5))
    r = torch.linspace(-0.5, 0.5, 25, dtype=torch.float64)[:-1]
    k = torch.stack([r[None] * torch.cos(ang)[:, None], r[None] * torch.sin(ang)[:, None]], -1)
    op = nufft_sense(_maps(torch.complex64, seed=3), k)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op(torch.randn(H, W, dtype=torch.complex64))  # same precision: no word
    x = torch.randn(H, W, dtype=torch.complex128)
    with pytest.warns(UserWarning, match=r"NufftSense: torch\.complex128 input through an operator "
                                         r"built from torch\.complex64 maps.*maps\.to"):
        op(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        op.H(op(x))  # once per operator


# -- minor: batch axes that do not fit the maps; a NumPy array ---------------------------------

def test_batch_axes_that_do_not_fit_the_maps_are_named():
    """Maps for 2 slices applied to 3 failed with torch's "einsum(): dimension 0 covered by
    ellipsis ..." (or a bare broadcast error), naming neither operator nor shape."""
    op = sense(_maps(torch.complex64, lead=(2,)), torch.ones(W))
    x = torch.randn(3, H, W, dtype=torch.complex64)
    y = torch.randn(3, C, H, W, dtype=torch.complex64)
    shapes = r"has batch axes \(3,\), which do not match the maps \(2, 3, 16, 12\)"
    with pytest.raises(ValueError, match=rf"SenseOperator: input \(3, 16, 12\) {shapes}"):
        op(x)
    with pytest.raises(ValueError, match=rf"SenseOperator\.H: input \(3, 3, 16, 12\) {shapes}"):
        op.H(y)
    with pytest.raises(ValueError, match=rf"SenseOperator\.gram: input \(3, 16, 12\) {shapes}"):
        op.gram(x)
    assert op(x[0]).shape == (2, C, H, W)  # one image for both sets of maps: as before
    with pytest.raises(TypeError, match=r"SenseOperator @ x: x must be a torch\.Tensor, got "
                                        r"numpy\.ndarray of shape \(16, 12\)"):
        op @ np.ones((H, W))


@pytest.mark.parametrize("c", [3.0, -0.5, 2 - 1j, 2])
def test_scaled_operator_gram_is_its_normal_operator(c):
    """(c A)^H (c A) = |c|^2 A^H A for a number c (guards against |c| in place of |c|^2; no
    test scaled an operator by a number other than +-1 and compared its gram)."""
    g = torch.Generator().manual_seed(2)
    a = DenseMatrix(torch.randn(7, 5, dtype=torch.complex128, generator=g))
    op = c * a
    x = torch.randn(5, dtype=torch.complex128, generator=g)
    torch.testing.assert_close(op.gram(x), op.H(op(x)), rtol=100 * torch.finfo(torch.float64).eps, atol=100 * torch.finfo(torch.float64).eps)
    from mrirecon.core import check_operator

    check_operator(op, x)
