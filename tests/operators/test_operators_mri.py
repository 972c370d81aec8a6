"""Operator kit over every MRI and generic operator, plus MRI-specific reference checks."""

import numpy as np
import pytest
import torch

from tests.helpers import check_operator, random_like_shape
from mrirecon.core import LinearOperator
from mrirecon.core.kinds import real_dtype
from mrirecon.functional import fft2c, ifft2c, rss
from mrirecon.operators import (
    Diagonal,
    FiniteDifference,
    Fourier,
    Identity,
    Sampling,
    Sensitivity,
    Wavelet,
    sense,
    single_coil,
)


def _maps(c, h, w, dtype, seed=5):
    m = random_like_shape((c, h, w), dtype, seed)
    return m / rss(m, dim=0)  # sum of squares one


def _mask(w, seed=2):
    g = torch.Generator().manual_seed(seed)
    m = torch.rand(w, generator=g) < 0.4
    m[w // 2 - 1 : w // 2 + 2] = True
    return m


# name -> (factory(dtype) -> op, domain shape incl. a batch axis, complex?)
FACTORIES = {
    "identity": (lambda dt: Identity(), (2, 6, 5), True),
    "diagonal": (lambda dt: Diagonal(random_like_shape((6, 5), dt, 9)), (2, 6, 5), True),
    "sampling": (lambda dt: Sampling(_mask(5)), (2, 6, 5), True),
    "fourier": (lambda dt: Fourier(), (2, 6, 5), True),
    "sensitivity": (lambda dt: Sensitivity(_maps(3, 6, 5, dt)), (2, 6, 5), True),
    "sense": (lambda dt: sense(_maps(3, 6, 5, dt), _mask(5)), (2, 6, 5), True),
    "sense-odd": (lambda dt: sense(_maps(2, 7, 9, dt), _mask(9)), (7, 9), True),
    "sense-2dmask": (
        lambda dt: sense(_maps(2, 6, 8, dt), torch.rand(6, 8, generator=torch.Generator().manual_seed(1)) < 0.5),
        (6, 8),
        True,
    ),
    "single-coil": (lambda dt: single_coil(_mask(5)), (2, 6, 5), True),
    "finite-difference": (lambda dt: FiniteDifference(2), (2, 6, 5), True),
    "wavelet-db4": (lambda dt: Wavelet((16, 16), "db4", levels=1), (16, 16), True),
    "wavelet-haar-pad": (lambda dt: Wavelet((10, 12), "haar", levels=2), (2, 10, 12), True),
    "composition": (lambda dt: FiniteDifference(2) @ Sensitivity(_maps(2, 4, 4, dt)).H, (2, 4, 4), True),
    "sum-scaled": (lambda dt: 2.0 * Fourier() - (0.5 + 1j) * Identity(), (4, 4), True),
}

REAL_OK = {"identity", "finite-difference", "wavelet-db4", "wavelet-haar-pad"}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_operator_kit_complex(name, cdtype):
    factory, shape, _ = FACTORIES[name]
    op = factory(cdtype)
    x = random_like_shape(shape, cdtype)
    check_operator(op, x, norm=cdtype == torch.complex128 and np.prod(shape) <= 200)


@pytest.mark.parametrize("name", sorted(REAL_OK))
def test_operator_kit_real(name, rdtype):
    factory, shape, _ = FACTORIES[name]
    op = factory(rdtype)
    check_operator(op, random_like_shape(shape, rdtype))


# even sizes take the checkerboard modulation (H/2 + W/2 even and odd), odd ones the shifts
@pytest.mark.parametrize("shape", [(3, 8, 7), (2, 8, 6), (2, 6, 10), (7, 8), (2, 5, 9), (1, 640, 368)])
def test_fft2c_matches_numpy_reference(shape):
    x = random_like_shape(shape, torch.complex128)
    axes = (-2, -1)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=axes), norm="ortho"), axes=axes)
    iref = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=axes), norm="ortho"), axes=axes)
    # orthonormal FFTs: rounding of a length-N transform ~ eps log2(N) |x|max sqrt(N)
    n = shape[-2] * shape[-1]
    tol = 16 * torch.finfo(torch.float64).eps * np.log2(n) * float(x.abs().max()) * n**0.5
    np.testing.assert_allclose(fft2c(x).numpy(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(ifft2c(x).numpy(), iref, rtol=0, atol=tol)
    np.testing.assert_allclose(ifft2c(fft2c(x)).numpy(), x.numpy(), atol=2 * tol)
    # a real input and inference mode take the same path
    with torch.inference_mode():
        np.testing.assert_allclose(fft2c(x.real).numpy(), np.fft.fftshift(np.fft.fft2(
            np.fft.ifftshift(x.real.numpy(), axes=axes), norm="ortho"), axes=axes), rtol=0, atol=tol)
    # differentiable: the adjoint of fft2c is ifft2c
    xg = x.clone().requires_grad_(True)
    y = random_like_shape(shape, torch.complex128, seed=9)
    (grad,) = torch.autograd.grad(torch.vdot(y.flatten(), fft2c(xg).flatten()).real, xg)
    np.testing.assert_allclose(grad.numpy(), ifft2c(y).numpy(), rtol=0, atol=2 * tol)


def test_fft2c_dc_index():
    # DC of a constant image sits at index N // 2
    k = fft2c(torch.ones(8, 7, dtype=torch.complex128))
    assert torch.argmax(k.abs()).item() == 4 * 7 + 3


def test_fft2c_matches_fastmri():
    fastmri = pytest.importorskip("fastmri")
    x = random_like_shape((2, 16, 12), torch.complex64)
    ours = torch.view_as_real(fft2c(x))
    ref = fastmri.fft2c(torch.view_as_real(x))
    assert torch.allclose(ours, ref, atol=1e-5)


def test_sense_gram_closed_form_equals_composition(cdtype):
    maps, mask = _maps(4, 10, 12, cdtype), _mask(12)
    op = sense(maps, mask)
    composed = Sampling(mask) @ Fourier() @ Sensitivity(maps)
    x = random_like_shape((3, 10, 12), cdtype)
    tol = 1e-12 if cdtype == torch.complex128 else 1e-5
    assert torch.allclose(op.gram(x), composed.H(composed(x)), atol=tol)
    assert torch.allclose(op(x), composed(x), atol=tol)


def test_sense_gram_nograd_path_equals_autograd_path_and_follows_maps():
    """The column-mask gram outside autograd (cached conj(maps), 1/W folded into the mask,
    in-place coil product) is the same map as the differentiable one, and its caches follow
    in-place changes of the maps and dtype moves."""
    maps, mask = _maps(5, 12, 16, torch.complex64), _mask(16)
    op = sense(maps, mask)
    x = random_like_shape((2, 12, 16), torch.complex64)
    fast = op.gram(x)
    slow = op.gram(x.clone().requires_grad_(True)).detach()
    # two length-16 FFTs and a 5-coil sum in float32, |maps| <= 1: a few eps * |x|max * log2(16)
    tol = 8 * torch.finfo(torch.float32).eps * 4 * float(x.abs().max())
    torch.testing.assert_close(fast, slow, atol=tol, rtol=0)
    with torch.no_grad():
        op.maps.mul_(2j)  # in place: the gram scales by |2j|^2 = 4
    torch.testing.assert_close(op.gram(x), 4 * slow, atol=4 * tol, rtol=0)
    op64 = op.to(torch.complex128)
    exact = op64.gram(x.to(torch.complex128).requires_grad_(True)).detach()
    torch.testing.assert_close(op64.gram(x.to(torch.complex128)), exact, atol=1e-12, rtol=0)
    with torch.inference_mode():  # inference tensors have no version counter to key the cache
        op_inf = sense(maps.clone(), mask)  # maps is op.maps, scaled by 2j above
        torch.testing.assert_close(op_inf.gram(x), 4 * slow, atol=4 * tol, rtol=0)


def test_sense_matches_sigpy():
    pytest.importorskip("sigpy")
    import sigpy.mri

    maps, mask = _maps(3, 8, 10, torch.complex128), _mask(10)
    x = random_like_shape((8, 10), torch.complex128)
    weights = np.broadcast_to(mask.numpy()[None, :].astype(float), (8, 10))
    S = sigpy.mri.linop.Sense(maps.numpy(), weights=weights)
    ours = sense(maps, mask)(x).numpy()
    np.testing.assert_allclose(ours, S * x.numpy(), atol=1e-12)


def test_fully_sampled_sense_with_unit_maps_is_unitary():
    maps = _maps(4, 8, 8, torch.complex128)
    op = sense(maps, torch.ones(8, dtype=torch.bool))
    x = random_like_shape((8, 8), torch.complex128)
    assert torch.allclose(op.gram(x), x, atol=1e-12)  # S^H S = I when sum |S|^2 = 1
    assert abs(float(op.operator_norm(x, generator=torch.Generator().manual_seed(0))) - 1) < 1e-6


def test_batched_maps_per_sample():
    maps = torch.stack([_maps(2, 6, 6, torch.complex128, s) for s in (1, 2)])
    op = sense(maps, _mask(6))
    x = random_like_shape((2, 6, 6), torch.complex128)
    y = op(x)
    assert y.shape == (2, 2, 6, 6)
    for b in range(2):
        assert torch.allclose(y[b], sense(maps[b], _mask(6))(x[b]))


def test_shape_errors_name_operator_and_shapes():
    op = sense(_maps(3, 6, 5, torch.complex64), _mask(5))
    with pytest.raises(ValueError, match=r"SenseOperator: input must have shape \(\.\.\., 6, 5\), got \(6, 4\)"):
        op(torch.zeros(6, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"SenseOperator.H: input must have shape \(\.\.\., 3, 6, 5\)"):
        op.H(torch.zeros(2, 6, 5, dtype=torch.complex64))
    with pytest.raises(ValueError, match="does not match maps"):
        sense(_maps(3, 6, 5, torch.complex64), _mask(7))
    with pytest.raises(ValueError, match="only 0 and 1"):
        Sampling(torch.tensor([0.0, 0.5, 1.0]))
    with pytest.raises(ValueError, match="cannot compose"):
        Fourier((4, 4)) @ Identity((5, 5))
    learned = _mask(5).float().requires_grad_()  # a straight-through mask: .bool() dropped its grad
    with pytest.raises(ValueError, match="SenseOperator: the mask requires grad.*mask.detach"):
        sense(_maps(3, 6, 5, torch.complex64), learned)
    with torch.no_grad():
        assert torch.equal(sense(_maps(3, 6, 5, torch.complex64), learned).mask,
                           sense(_maps(3, 6, 5, torch.complex64), learned.detach()).mask)


def test_algebra_adjoint_of_adjoint_and_scalars():
    op = Fourier()
    assert op.H.H is op
    x = random_like_shape((4, 4), torch.complex128)
    c = 0.3 + 2j
    assert torch.allclose((c * op).H(x), np.conj(c) * op.H(x))
    assert torch.allclose((op @ op.H)(x), x)
    assert torch.allclose((op @ x), op(x))
    assert isinstance(op / 2.0, LinearOperator)
    assert torch.allclose((op / 2.0)(x), op(x) / 2)


@pytest.mark.parametrize("shape, levels, message", [
    # was: padded to a multiple of 2**levels without a word (32 x 32 at 10 levels ran on
    # 1024 x 1024; l1_wavelet(levels=99) failed with "Overflow when unpacking long long")
    ((32, 32), 6, r"6 levels need at least 2\*\*6 = 64 pixels per side, the image is 32 x 32; give at most 5"),
    ((640, 368), 9, r"the image is 640 x 368; give at most 8"),
    ((32, 32), 0, r"levels must be an integer >= 1, got 0"),
    ((32, 32), True, r"levels must be an integer >= 1, got True"),
])
def test_wavelet_levels_beyond_the_image_are_refused(shape, levels, message):
    with pytest.raises(ValueError, match=message):
        Wavelet(shape, "db4", levels=levels)
    top = Wavelet(shape, "haar", levels=np.int64(min(shape)).item().bit_length() - 1)  # the largest allowed
    assert max(p / s for p, s in zip(top.padded, shape)) < 2  # pads by less than one doubling


@pytest.mark.parametrize("shape, name", [((8, 8), "db4"), ((2, 2), "haar"), ((4, 6), "db8"),
                                         ((16, 16), "sym8")])
def test_wavelet_takes_images_shorter_than_twice_its_filter(shape, name):
    """Wavelet((8, 8), "db4") was refused as "too small for 'db4'" although the periodised
    transform it runs is orthogonal there and equals pywt's (filters wrap around)."""
    pywt = pytest.importorskip("pywt")
    W = Wavelet(shape, name)
    assert W.levels == 1 and W.padded == shape
    x = random_like_shape(shape, torch.float64)
    c = W(x)
    torch.testing.assert_close(W.H(c), x, atol=1e-11, rtol=0)  # sym8's taps: orthonormal to 1e-13
    (lo, (da, ad, dd)) = pywt.wavedec2(x.numpy(), name, mode="periodization", level=1)
    h, w = lo.shape
    for block, ref in ((c[:h, :w], lo), (c[h:, :w], da), (c[:h, w:], ad), (c[h:, w:], dd)):
        np.testing.assert_allclose(block.numpy(), ref, atol=1e-12)


def test_wavelet_is_orthogonal_and_matches_pywt():
    pywt = pytest.importorskip("pywt")
    W = Wavelet((32, 32), "db2", levels=2)
    x = random_like_shape((32, 32), torch.float64)
    c = W(x)
    assert torch.allclose(W.H(c), x, atol=1e-12)
    ref = pywt.wavedec2(x.numpy(), "db2", mode="periodization", level=2)
    # identical coefficients to PyWavelets' periodised DWT (approximation and finest details)
    np.testing.assert_allclose(c[:8, :8].numpy(), ref[0], atol=1e-12)
    finest = {np.round(np.sort(b.ravel()), 10).tobytes() for b in ref[2]}
    ours = [c[:16, 16:], c[16:, :16], c[16:, 16:]]
    assert {np.round(np.sort(b.numpy().ravel()), 10).tobytes() for b in ours} == finest


@pytest.mark.parametrize("name,shape,levels,dtype", [
    ("db4", (2, 64, 48), 2, torch.complex128),
    ("haar", (32, 96), 5, torch.float64),
    ("sym8", (64, 64), 2, torch.complex128),
    ("db4", (16, 16), 3, torch.float64),  # coarse levels shorter than the filter wrap around
])
def test_wavelet_torch_and_pywt_paths_agree(name, shape, levels, dtype):
    """The autograd (polyphase) path and the no-grad (banded GEMM) path are one transform; the
    full coefficient image equals pywt.wavedec2 level by level, and the VJP is the adjoint."""
    pywt = pytest.importorskip("pywt")
    from mrirecon.functional.wavelet import dwt2, idwt2, wavelet_filters

    x = random_like_shape(shape, dtype)
    fast = dwt2(x, name, levels)  # no grad -> banded-GEMM path
    xg = x.clone().requires_grad_(True)
    slow = dwt2(xg, name, levels)  # torch path
    tol = 1e-12  # float64: sums of at most 16 taps over 5 levels round to ~1e-15; margin 1000x
    torch.testing.assert_close(slow.detach(), fast, atol=tol, rtol=0)
    ref = pywt.wavedec2(x.numpy(), name, mode="periodization", level=levels, axes=(-2, -1))
    h, w = ref[0].shape[-2:]
    np.testing.assert_allclose(fast[..., :h, :w].numpy(), ref[0], atol=tol)
    for da, ad, dd in ref[1:]:
        h, w = da.shape[-2:]
        np.testing.assert_allclose(fast[..., h : 2 * h, :w].numpy(), da, atol=tol)
        np.testing.assert_allclose(fast[..., :h, w : 2 * w].numpy(), ad, atol=tol)
        np.testing.assert_allclose(fast[..., h : 2 * h, w : 2 * w].numpy(), dd, atol=tol)
    # perfect reconstruction holds up to the filters' own orthonormality defect (sym8's
    # tabulated taps are orthonormal to ~1e-13 only), amplified by taps and levels
    lo, hi = (np.asarray(f) for f in wavelet_filters(name))
    L = lo.size
    defect = max(abs(np.dot(f[2 * k :], g[: L - 2 * k]) - (k == 0 and f is g))
                 for f in (lo, hi) for g in (lo, hi) for k in range(L // 2))
    inv_tol = tol + 4 * levels * L * defect * float(x.abs().max())
    torch.testing.assert_close(idwt2(fast, name, levels), x, atol=inv_tol, rtol=0)
    c = random_like_shape(shape, dtype)
    (grad,) = torch.autograd.grad(slow, xg, grad_outputs=c)
    torch.testing.assert_close(grad, idwt2(c, name, levels), atol=tol, rtol=0)
    cg = c.clone().requires_grad_(True)
    torch.testing.assert_close(idwt2(cg, name, levels).detach(), idwt2(c, name, levels),
                               atol=tol, rtol=0)


@pytest.mark.parametrize("name,shape,levels", [
    ("db4", (640, 368), 4),  # the L1-wavelet size: 4-row blocks, the coarsest W level one dense block
    ("db4", (140, 92), 2),  # block sizes 2, 5 and dense (half-lengths 70, 46, 35, 23)
    ("sym4", (134, 64), 1),  # half-length 67 (prime): one output pair per block
    ("db2", (3, 40, 24), 3),  # a batch of planes
])
def test_wavelet_gemm_path_single_precision(name, shape, levels):
    """complex64 through the no-grad GEMM path agrees with PyWavelets' ``wavedec2`` (computed
    in float64) and with the autograd path to float32 rounding, is inverted by ``idwt2``, and
    passes the adjoint dot test."""
    pywt = pytest.importorskip("pywt")
    from mrirecon.functional.wavelet import dwt2, idwt2, wavelet_filters

    x = random_like_shape(shape, torch.complex64, seed=3)
    c = dwt2(x, name, levels)
    assert c.dtype == torch.complex64 and c.shape == x.shape
    # each coefficient is a sum of L taps per axis and level of terms bounded by |x|max (the
    # transform is orthogonal): float32 rounding <= eps * 2 * L * levels * |x|max
    L = len(wavelet_filters(name)[0])
    tol = torch.finfo(torch.float32).eps * 2 * L * levels * float(x.abs().max())
    ref = pywt.wavedec2(x.numpy().astype(np.complex128), name, mode="periodization",
                        level=levels, axes=(-2, -1))
    h, w = ref[0].shape[-2:]
    np.testing.assert_allclose(c[..., :h, :w].numpy(), ref[0], atol=tol, rtol=0)
    for da, ad, dd in ref[1:]:
        h, w = da.shape[-2:]
        np.testing.assert_allclose(c[..., h : 2 * h, :w].numpy(), da, atol=tol, rtol=0)
        np.testing.assert_allclose(c[..., :h, w : 2 * w].numpy(), ad, atol=tol, rtol=0)
        np.testing.assert_allclose(c[..., h : 2 * h, w : 2 * w].numpy(), dd, atol=tol, rtol=0)
    xg = x.clone().requires_grad_(True)
    torch.testing.assert_close(dwt2(xg, name, levels).detach(), c, atol=tol, rtol=0)
    y = random_like_shape(shape, torch.complex64, seed=4)
    torch.testing.assert_close(idwt2(y, name, levels), idwt2(y.clone().requires_grad_(True), name, levels).detach(),
                               atol=tol, rtol=0)
    torch.testing.assert_close(idwt2(c, name, levels), x, atol=2 * tol, rtol=0)
    # cached plans (scratch, views) and band matrices work inside and outside inference mode,
    # in either order
    from mrirecon.functional import wavelet

    wavelet._SCRATCH.__dict__.clear()
    wavelet._band.cache_clear()  # first built inside inference mode below
    with torch.inference_mode():
        torch.testing.assert_close(dwt2(x, name, levels), c, atol=0, rtol=0)
        back = idwt2(c, name, levels)
    torch.testing.assert_close(dwt2(x, name, levels), c, atol=0, rtol=0)
    torch.testing.assert_close(idwt2(c, name, levels), back, atol=0, rtol=0)
    # adjoint: <W x, y> = <x, W^H y>, both sides summed over n entries in float32
    lhs, rhs = torch.vdot(c.flatten(), y.flatten()), torch.vdot(x.flatten(), idwt2(y, name, levels).flatten())
    n = x.numel()
    bound = 2 * tol * float(y.abs().sum()) + torch.finfo(torch.float32).eps * n * float(x.abs().max() * y.abs().max())
    assert abs(complex(lhs) - complex(rhs)) <= bound


def test_wavelet_small_transforms_run_serial_and_restore_the_thread_count(monkeypatch):
    """Below ``SERIAL_MAX`` elements the GEMM path runs on one thread and gives back the
    caller's count (also when it raises); above it the count is left alone. Same result."""
    from mrirecon.core import parallel
    from mrirecon.functional import wavelet

    x = random_like_shape((64, 64), torch.complex64, seed=5)
    seen = []
    fast = wavelet._apply_fast
    monkeypatch.setattr(wavelet, "_apply_fast", lambda *a, **k: (seen.append(torch.get_num_threads()), fast(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        c = wavelet.dwt2(x, "db4", 3)
        assert torch.get_num_threads() == 2 and seen[-1] == 1
        torch.testing.assert_close(wavelet.idwt2(c, "db4", 3), x, atol=1e-5, rtol=0)
        monkeypatch.setattr(parallel, "SERIAL_MAX", 64 * 64 - 1)
        torch.testing.assert_close(wavelet.dwt2(x, "db4", 3), c, atol=0, rtol=0)
        assert seen[-1] == 2
        monkeypatch.setattr(parallel, "SERIAL_MAX", 1 << 18)

        def fails(*args, **kwargs):
            raise RuntimeError("inside the transform")

        monkeypatch.setattr(wavelet, "_apply_fast", fails)
        with pytest.raises(RuntimeError, match="inside the transform"):
            wavelet.dwt2(x, "db4", 3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_operator_follows_device_and_dtype_moves():
    op = sense(_maps(2, 4, 4, torch.complex64), _mask(4))
    op = op.to(torch.complex128)
    assert op.maps.dtype == torch.complex128 and op.mask.dtype == torch.bool


def test_nograd_column_gram_follows_an_in_place_change_of_the_mask():
    """The no-grad gram caches the shifted and scaled mask; editing ``op.mask`` in place must
    not leave it stale (the result equals A^H A x of a freshly built operator with the new
    mask)."""
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(1, 4, 16, 12, dtype=torch.complex64, generator=g)
    x = torch.randn(1, 16, 12, dtype=torch.complex64, generator=g)
    mask = torch.zeros(12)
    mask[..., ::2] = 1
    op = sense(maps, mask)
    with torch.no_grad():
        op.gram(x)  # fills the cache
        op.mask[..., 1] = ~op.mask[..., 1]
        got, want = op.gram(x), sense(maps, op.mask.clone()).gram(x)
    tol = 32 * torch.finfo(torch.float32).eps * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("kind", ["columns", "2d"])
@pytest.mark.parametrize("how", ["replaced", "in place"])
def test_gram_follows_the_public_mask(kind, how, grad):
    """Fails if the gram keeps the mask the operator was built with after ``op.mask`` is
    replaced or edited in place while ``A`` and ``A.H`` use the new one: a copy made at
    construction left CG-SENSE solving another problem (relative error 2.67, no word). The
    gram is compared with ``A.H(A(x))``, column and 2-D masks, with and without autograd."""
    g = torch.Generator().manual_seed(7)
    maps = torch.randn(3, 16, 12, dtype=torch.complex128, generator=g)
    x = torch.randn(16, 12, dtype=torch.complex128, generator=g, requires_grad=grad)
    shape = (12,) if kind == "columns" else (16, 12)
    mask = torch.rand(shape, generator=g) < 0.5
    mask[..., 6] = True
    op = sense(maps, mask.clone())
    op.gram(x)  # fills any cache
    if how == "replaced":
        op.mask = ~mask | (torch.arange(12) == 6)  # another pattern, (W,) as the constructor takes
    else:
        op.mask[..., 2:5] = ~op.mask[..., 2:5]
    assert not torch.equal(op.mask.expand(16, 12), mask.expand(16, 12))
    want = op.H(op(x))
    assert torch.allclose(op.gram(x), want, rtol=0, atol=64 * torch.finfo(torch.float64).eps)


def test_a_replaced_mask_is_checked_as_the_constructor_checks_it():
    """Fails if ``op.mask = ...`` takes a mask the constructor refuses (values other than 0 /
    1, another width) or keeps a ``(W,)`` vector unconverted (the gram broadcasts it as rows)."""
    op = sense(torch.ones(2, 8, 6, dtype=torch.complex64), torch.ones(6))
    with pytest.raises(ValueError, match="only 0 and 1"):
        op.mask = torch.full((6,), 0.5)
    with pytest.raises(ValueError, match="along W"):
        op.mask = torch.ones(7)
    op.mask = torch.tensor([1, 0, 1, 1, 0, 1])
    assert op.mask.shape == (1, 6) and op.mask.dtype == torch.bool


@pytest.mark.parametrize("batched_maps", [False, True])
def test_nograd_column_gram_in_blocks_of_rows_is_bit_identical(monkeypatch, batched_maps):
    """On one thread the no-grad gram runs on blocks of rows (cache-sized); rows are independent,
    so any block size (here 3 rows of 13, the last block short) gives exactly the one-block
    result, with maps shared by the batch or one set per sample."""
    import mrirecon.operators.mri as mri

    c, h, w = 4, 13, 16
    maps = _maps(c, h, w, torch.complex64)
    maps = torch.stack([maps, maps.flip(-1)]) if batched_maps else maps
    x = random_like_shape((2, h, w), torch.complex64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)  # blocks on one thread only
        with torch.no_grad():
            whole = sense(maps, _mask(w)).gram(x)
            monkeypatch.setattr(mri, "_GRAM_BLOCK_BYTES", 3 * 2 * c * w * 8)  # 3 rows of 2 x c coil images
            blocks = sense(maps, _mask(w)).gram(x)
            torch.set_num_threads(2)
            two_threads = sense(maps, _mask(w)).gram(x)  # one block
    finally:
        torch.set_num_threads(threads)
    assert blocks.shape == whole.shape == (2, h, w)
    assert torch.equal(blocks, whole)
    torch.testing.assert_close(two_threads, whole)
    slow = sense(maps, _mask(w)).gram(x.clone().requires_grad_(True)).detach()
    tol = 8 * torch.finfo(torch.float32).eps * 4 * float(x.abs().max())  # as the no-grad test above
    torch.testing.assert_close(blocks, slow, atol=tol, rtol=0)


def _gram_error(op, x):
    """``||A.gram(x) - A.H(A(x))|| / ||A.H(A(x))||`` through the no-grad column-mask gram."""
    with torch.no_grad():
        got, want = op.gram(x), op.H(op(x))
    return float((got - want).norm() / want.norm())


def _gram_tolerance(op):
    """Rounding of the two evaluations: FFTs of log2(H W) stages and a C-coil sum, in the maps'
    precision, with a factor 10 of room (a stale conj(maps) gives errors of order 1)."""
    c, h, w = op.maps.shape[-3:]
    return 10 * torch.finfo(real_dtype(op.maps.dtype)).eps * (np.log2(h * w) + c)


def test_nograd_column_gram_follows_maps_replaced_on_a_reused_operator():
    """One operator reused across slices with ``op.maps = maps_k`` (the old maps freed), the
    gram on every other slice: new maps allocated at the address of freed ones hit the cached
    conj(maps) of another slice (11 of 100 grams 1.18 off A^H A at 8 x 64 x 64, cg_sense 2.65e6
    off without an error at 4 x 32 x 32)."""
    c, h, w = 4, 32, 32
    mask = _mask(w)
    x = random_like_shape((h, w), torch.complex64, 99)
    op = sense(_maps(c, h, w, torch.complex64, seed=0), mask)
    tol = _gram_tolerance(op)
    for k in range(200):
        op.maps = _maps(c, h, w, torch.complex64, seed=k)
        if k % 2:  # a slice with only A / A^H: its maps are freed before the next gram
            continue
        assert _gram_error(op, x) < tol, k


def test_nograd_column_gram_follows_maps_moved_and_reloaded():
    """``op.to(complex128)``, the next slice's maps copied in place, ``op.to(complex64)``: the
    complex64 maps are a new tensor, often at the address of the first, with version 0 (the
    gram 1.2 off A^H A on one of 20 rounds here, before the fix)."""
    c, h, w = 4, 32, 32
    m1, m2 = _maps(c, h, w, torch.complex64, seed=1), _maps(c, h, w, torch.complex64, seed=2)
    op = sense(m1.clone(), _mask(w))
    x = random_like_shape((h, w), torch.complex64, 99)
    tol = _gram_tolerance(op)
    for k in range(20):
        assert _gram_error(op, x) < tol, k
        op.to(torch.complex128)
        with torch.no_grad():
            op.maps.copy_(m2)
        op.to(torch.complex64)
        m1, m2 = m2, m1
    assert _gram_error(op, x) < tol
    op.to(torch.complex128)
    assert _gram_error(op, x.to(torch.complex128)) < _gram_tolerance(op)
    assert torch.equal(op.maps, m1.to(torch.complex128))


@pytest.mark.parametrize("columns", [False, True])
def test_a_mask_with_a_coil_axis_of_one_is_one_mask_per_sample(columns):
    """Fails if a ``(B, 1, H, W)`` (or ``(B, 1, 1, W)``) mask beside maps ``(B, C, H, W)`` - the
    shape ``(y != 0).any(1, keepdim=True)`` gives - is read as a ``(B, 1)`` batch of masks:
    ``A.H(y)`` came out ``(B, B, H, W)``. The operator must equal one built from the masks
    without that axis."""
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(2, 3, 8, 6, dtype=torch.complex128, generator=g)
    mask = torch.rand(2, 1, 1 if columns else 8, 6, generator=g) < 0.5
    mask[..., 3] = True
    y = torch.randn(2, 3, 8, 6, dtype=torch.complex128, generator=g)
    x = torch.randn(2, 8, 6, dtype=torch.complex128, generator=g)
    op, plain = sense(maps, mask), sense(maps, mask[:, 0])
    assert op.H(y).shape == (2, 8, 6)
    assert torch.equal(op.H(y), plain.H(y)) and torch.equal(op(x), plain(x))
    assert torch.allclose(op.gram(x), plain.gram(x), rtol=0, atol=1e-12)


def test_sense_caches_serve_calls_under_inference_mode_and_autograd_after():
    """Under torch.inference_mode (reconstruct_slices, the README's MoDL example) every gram
    rebuilt conj(maps) and the shifted masks (+50-65 % a gram). Built once now, as normal
    tensors: a later autograd call outside inference mode can use them."""
    from mrirecon.operators.mri import SenseOperator

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(4, 16, 12, dtype=torch.complex64, generator=g)
    op = sense(maps, (torch.rand(12, generator=g) < 0.5).float())
    x = torch.randn(2, 16, 12, dtype=torch.complex64, generator=g)
    made = []
    original = SenseOperator._derived

    def counting(self, slot, source, make, *extra):
        return original(self, slot, source, lambda: made.append(slot) or make(), *extra)

    SenseOperator._derived = counting
    try:
        with torch.no_grad():
            want = op.gram(x)
        made.clear()
        op2 = sense(maps, op.mask)
        with torch.inference_mode():
            got = [op2.gram(x) for _ in range(3)]
        assert sorted(made) == sorted(set(made)), made  # each value built once
        for y in got:
            assert torch.equal(y, want)
        leaf = x.clone().requires_grad_(True)
        op2.gram(leaf).abs().square().sum().backward()
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    finally:
        SenseOperator._derived = original
