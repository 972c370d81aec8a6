"""NUFFT SENSE: the operator kit, accuracy against a direct DFT, Toeplitz gram, batching."""

import math

import pytest
import torch

from tests.helpers import check_operator, random_like_shape
from mrirecon.functional import fft2c, rss
from mrirecon.functional.density import radial_density
from mrirecon.functional.nufft import default_eps, ndft, nufft, nufft_adjoint
from mrirecon.operators import nufft_sense, sense
from mrirecon.sampling import radial_trajectory, spiral_trajectory


def _maps(c, h, w, dtype, seed=5):
    m = random_like_shape((c, h, w), dtype, seed)
    return m / rss(m, dim=0)


def _random_traj(m, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(m, 2, dtype=torch.float64, generator=g) - 0.5


def _weights(traj, seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(traj.shape[:-1], dtype=torch.float64, generator=g) + 0.1


# name -> (factory(dtype) -> op, domain shape incl. batch axes)
FACTORIES = {
    "radial": (lambda dt: nufft_sense(_maps(3, 8, 10, dt), radial_trajectory(7, 16, golden=True)),
               (2, 8, 10)),
    "radial-weighted": (lambda dt: nufft_sense(_maps(2, 8, 8, dt), radial_trajectory(6, 16),
                                               torch.linspace(0.1, 1, 16)), (8, 8)),
    "random-points-slices": (
        lambda dt: nufft_sense(_maps(2, 7, 9, dt).expand(3, 2, 7, 9).clone(), _random_traj(40),
                               _weights(_random_traj(40))),
        (3, 7, 9)),
    "spiral-odd": (lambda dt: nufft_sense(_maps(2, 9, 9, dt), spiral_trajectory(9, 0.2, 3)), (9, 9)),
    "no-toeplitz": (lambda dt: nufft_sense(_maps(2, 6, 6, dt), _random_traj(30), toeplitz=False),
                    (6, 6)),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_nufft_operator_kit(name, cdtype):
    factory, shape = FACTORIES[name]
    op = factory(cdtype)
    x = random_like_shape(shape, cdtype)
    check_operator(op, x, norm=cdtype == torch.complex128 and math.prod(shape) <= 100)


@pytest.mark.parametrize("shape", [(16, 16), (15, 12)])
def test_nufft_matches_direct_dft(shape):
    """Forward and adjoint within 1e-4 (relative) of the exact DFT at the default tolerance in
    single precision (the backend is asked for 1e-5; float32 rounding adds ~1e-6)."""
    traj = torch.cat([_random_traj(300), radial_trajectory(8, 2 * shape[0]).reshape(-1, 2)])
    x = random_like_shape((2, *shape), torch.complex64)
    ref = ndft(x.to(torch.complex128), traj)
    got = nufft(x, traj.float())
    assert float((got - ref).norm() / ref.norm()) < 1e-4
    y = random_like_shape((2, traj.shape[0]), torch.complex64)
    # adjoint reference: the conjugate transpose of the DFT matrix, column by column
    h, w = shape
    eye = torch.eye(h * w, dtype=torch.complex128).reshape(h * w, h, w)
    mat = ndft(eye, traj)  # (h w, M): row n is A e_n
    ref_adj = (y.to(torch.complex128) @ mat.conj().T).reshape(2, h, w)
    got_adj = nufft_adjoint(y, traj.float(), shape)
    assert float((got_adj - ref_adj).norm() / ref_adj.norm()) < 1e-4


def test_nufft_on_the_cartesian_grid_is_fft2c():
    h, w = 8, 6
    ky = (torch.arange(h, dtype=torch.float64) - h // 2) / h
    kx = (torch.arange(w, dtype=torch.float64) - w // 2) / w
    grid = torch.stack(torch.meshgrid(ky, kx, indexing="ij"), dim=-1)
    maps = _maps(3, h, w, torch.complex128)
    x = random_like_shape((h, w), torch.complex128)
    full = sense(maps, torch.ones(w))
    torch.testing.assert_close(nufft_sense(maps, grid)(x), full(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(nufft(x, grid), fft2c(x), rtol=0, atol=1e-10)


def test_toeplitz_gram_single_precision_radial():
    """gram == A^H A to 1e-4 in complex64 on a radial problem with density weights."""
    n = 32
    traj = radial_trajectory(40, 2 * n, golden=True)
    maps = _maps(4, n, n, torch.complex64)
    w = torch.rand(traj.shape[:-1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    op = nufft_sense(maps, traj, w)
    x = random_like_shape((2, n, n), torch.complex64)
    ref = op.H(op(x))
    assert float((op.gram(x) - ref).norm() / ref.norm()) < 1e-4


def test_batched_slices_equal_slice_by_slice():
    traj = radial_trajectory(9, 20)
    maps = torch.stack([_maps(3, 10, 10, torch.complex128, seed=s) for s in (1, 2)])
    op = nufft_sense(maps, traj)
    x = random_like_shape((2, 10, 10), torch.complex128)
    y = op(x)
    assert y.shape == (2, 3, 9, 20)
    for s in range(2):
        single = nufft_sense(maps[s], traj)
        torch.testing.assert_close(y[s], single(x[s]), rtol=0, atol=1e-12)
        torch.testing.assert_close(op.H(y)[s], single.H(y[s]), rtol=0, atol=1e-12)
        torch.testing.assert_close(op.gram(x)[s], single.gram(x[s]), rtol=0, atol=1e-12)


def test_with_maps_reuses_trajectory_and_weights():
    traj = radial_trajectory(6, 16)
    w = torch.linspace(0.2, 1.0, 16)
    op = nufft_sense(_maps(2, 8, 8, torch.complex128), traj, w)
    new_maps = _maps(2, 8, 8, torch.complex128, seed=9)
    x = random_like_shape((8, 8), torch.complex128)
    torch.testing.assert_close(op.with_maps(new_maps).gram(x), nufft_sense(new_maps, traj, w).gram(x))


def test_bad_trajectory_units_are_rejected():
    with pytest.raises(ValueError, match=r"normalised to \[-0.5, 0.5\)"):
        nufft_sense(_maps(2, 8, 8, torch.complex64), radial_trajectory(4, 8) * 8)
    with pytest.raises(ValueError, match="trajectory must be real"):
        nufft_sense(_maps(2, 8, 8, torch.complex64), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="weights must be real, finite and >= 0"):
        nufft_sense(_maps(2, 8, 8, torch.complex64), radial_trajectory(4, 8), -torch.ones(8))


def test_built_and_applied_under_inference_mode():
    """The pipeline runs models under torch.inference_mode (plans are cached per tensor)."""
    maps = _maps(2, 8, 8, torch.complex64)
    x = random_like_shape((8, 8), torch.complex64)
    ref = nufft_sense(maps, radial_trajectory(5, 16))(x)
    with torch.inference_mode():
        op = nufft_sense(maps, radial_trajectory(5, 16))
        torch.testing.assert_close(op(x), ref)
        assert op.gram(x).shape == (8, 8)


def test_unweighted_undoes_the_data_weighting_and_zeroes_unweighted_samples():
    traj = radial_trajectory(6, 16)
    maps = _maps(2, 8, 8, torch.complex128)
    w = torch.rand(traj.shape[:-1], dtype=torch.float64, generator=torch.Generator().manual_seed(5)) + 0.5
    w[0, :4] = 0.0
    x = torch.randn(8, 8, dtype=torch.complex128, generator=torch.Generator().manual_seed(6))
    plain = nufft_sense(maps, traj)
    got = nufft_sense(maps, traj, w).unweighted(nufft_sense(maps, traj, w)(x))
    want = torch.where(w > 0, plain(x), torch.zeros_like(plain(x)))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 * float(want.abs().max()))
    y = plain(x)
    assert plain.unweighted(y) is y  # no weights: the data as given


def test_weighted_is_the_data_weighting_and_undone_by_unweighted():
    traj = radial_trajectory(6, 16)
    maps = _maps(2, 8, 8, torch.complex128)
    w = _weights(traj)
    op = nufft_sense(maps, traj, w)
    y = nufft_sense(maps, traj)(torch.randn(8, 8, dtype=torch.complex128,
                                            generator=torch.Generator().manual_seed(7)))
    torch.testing.assert_close(op.weighted(y), y * w.sqrt(), rtol=1e-15, atol=0)
    torch.testing.assert_close(op.unweighted(op.weighted(y)), y, rtol=1e-13, atol=0)
    plain = nufft_sense(maps, traj)
    assert plain.weighted(y) is y  # no weights: the data as given


def test_cg_sense_on_weighted_data_is_sigpy_sense_recon_with_weights():
    """SigPy's SenseRecon(weights=w) weights raw samples itself; here the operator is
    W^(1/2) N S and the data are op.weighted(y). Raw y with a weighted operator solves another
    problem (NRMSE 5.7 against SigPy on this set-up, before the convention was documented)."""
    spmri = pytest.importorskip("sigpy.mri")
    from mrirecon.recon import cg_sense

    n, iters = 32, 30
    traj = radial_trajectory(24, 2 * n).to(torch.float64)
    maps = _maps(4, n, n, torch.complex128)
    w = traj.square().sum(-1).sqrt() + 1.0 / (2 * n)  # ramp density compensation
    x = random_like_shape((n, n), torch.complex128, 11)
    y = nufft_sense(maps, traj)(x)  # raw samples, as SigPy takes them
    want = spmri.app.SenseRecon(y.numpy(), maps.numpy(), lamda=0.0, coord=traj.numpy() * n,
                                weights=w.numpy(), max_iter=iters, show_pbar=False).run()
    op = nufft_sense(maps, traj, w)
    got = cg_sense(op.weighted(y), op, iterations=iters).numpy()
    # Both run CG on the same normal equations; what separates them is SigPy's gridding NUFFT
    # (Kaiser-Bessel, oversampling 1.25, width 4: relative error about 1e-2 per transform
    # against an exact NDFT, where ours is exact to ~1e-12), not complex128's rounding
    # (30 iterations * 1e-16). Its error bounds the agreement.
    err = float(torch.linalg.vector_norm(torch.as_tensor(got - want)) / torch.linalg.vector_norm(torch.as_tensor(want)))
    assert err < 1e-2, err
    raw = cg_sense(y, op, iterations=iters).numpy()  # the un-ported call: another problem
    err_raw = float(torch.linalg.vector_norm(torch.as_tensor(raw - want)) / torch.linalg.vector_norm(torch.as_tensor(want)))
    assert err_raw > 10 * err


def test_a_default_eps_follows_the_operator_to_complex128_and_a_given_one_stays():
    traj = radial_trajectory(12, 32)
    maps = _maps(2, 16, 16, torch.complex64)
    op = nufft_sense(maps, traj)
    assert op.eps == default_eps(torch.complex64)
    op.to(torch.complex128)
    assert op.maps.dtype == torch.complex128
    assert op.eps == default_eps(torch.complex128)  # the class docstring's promise
    given = nufft_sense(maps, traj, eps=1e-4).to(torch.complex128)
    assert given.eps == 1e-4


def test_a_trajectory_in_minus_one_to_one_is_refused():
    """[-1, 1) is another common normalisation; on the periodic NUFFT it aliases the outer half
    of k-space onto the inner without a word. Radians (max pi) are covered already."""
    traj = radial_trajectory(8, 16) * 2  # max |k| = 1
    maps = _maps(2, 16, 16, torch.complex128)
    with pytest.raises(ValueError, match=r"normalised to \[-0.5, 0.5\)"):
        nufft_sense(maps, traj)
    with pytest.raises(ValueError, match=r"normalised to \[-0.5, 0.5\)"):
        radial_density(traj, (16, 16))


@pytest.mark.parametrize("name", ["trajectory", "weights"])
def test_a_replaced_trajectory_or_weights_is_refused(name):
    """Fails if ``op.trajectory = ...`` or ``op.weights = ...`` is taken: the Toeplitz kernel and
    ``sqrt(weights)`` stay those of the old values (the gram 0.50 off ``A^H A``, replaced
    weights ignored), without a word. ``with_maps`` still builds an operator."""
    traj = radial_trajectory(6, 16)
    op = nufft_sense(_maps(2, 8, 8, torch.complex128), traj, torch.linspace(0.2, 1.0, 16))
    with pytest.raises(AttributeError, match=rf"NufftSense.{name} cannot be replaced.*nufft_sense"):
        setattr(op, name, getattr(op, name) * 0.5)
    assert op.with_maps(_maps(2, 8, 8, torch.complex128, seed=9)).kshape == (6, 16)


@pytest.mark.parametrize("name", ["trajectory", "weights"])
def test_a_trajectory_or_weights_edited_in_place_is_refused(name):
    """Fails if the operator is used after its trajectory or weights were edited in place (the
    kernel and square-root weights are the old ones), or if a move by ``.to()`` (new tensors)
    is taken for an edit."""
    x = random_like_shape((8, 8), torch.complex128)
    op = nufft_sense(_maps(2, 8, 8, torch.complex128), radial_trajectory(6, 16),
                     torch.linspace(0.2, 1.0, 16))
    moved = op.to(torch.complex64)
    assert moved(x.to(torch.complex64)).shape == (2, 6, 16)
    y = torch.ones(2, 6, 16, dtype=torch.complex128)
    getattr(op, name).mul_(0.5)
    for use, v in ((op, x), (op.H, y), (op.gram, x)):
        with pytest.raises(ValueError, match=rf"op.{name} was edited in place"):
            use(v)


def test_an_empty_trajectory_is_refused_naming_the_function():
    """Fails if a trajectory without samples reaches torch (``radial_density``: "max():
    Expected reduction dim") or builds an operator that fails later in a solver."""
    from mrirecon.functional.density import radial_density

    with pytest.raises(ValueError, match=r"radial_density: trajectory \(0, 8, 2\) holds no sample"):
        radial_density(torch.zeros(0, 8, 2), (16, 16))
    with pytest.raises(ValueError, match=r"nufft_sense: trajectory \(4, 0, 2\) holds no sample"):
        nufft_sense(_maps(2, 8, 8, torch.complex64), torch.zeros(4, 0, 2))


def test_conjugate_views_and_the_data_terms_gradient_are_exact():
    """A lazy conjugate (``x.conj()``, and autograd's gradient of ``Re<A x, y>``) is resolved
    before the backend reads memory: numpy refused it, and cuFINUFFT would read the unconjugated
    numbers. Values against the same calls on materialised tensors; the gradient against A^H y."""
    traj = radial_trajectory(6, 16)
    x = random_like_shape((2, 8, 8), torch.complex128, 1)
    y = random_like_shape((2, 6, 16), torch.complex128, 2)
    torch.testing.assert_close(nufft(x.conj(), traj), nufft(x.conj().resolve_conj(), traj))
    torch.testing.assert_close(nufft_adjoint(y.conj(), traj, (8, 8)),
                               nufft_adjoint(y.conj().resolve_conj(), traj, (8, 8)))
    for weights in (None, torch.linspace(0.1, 1, 16)):
        op = nufft_sense(_maps(3, 8, 8, torch.complex128), traj, weights)
        v = random_like_shape((8, 8), torch.complex128, 3).requires_grad_()
        data = random_like_shape(tuple(op(v).shape), torch.complex128, 4)
        torch.sum(op(v).conj() * data).real.backward()  # Re<A v, data>: its gradient is A^H data
        torch.testing.assert_close(v.grad, op.H(data))


def test_a_trajectory_that_requires_grad_is_refused_not_silently_detached():
    traj = radial_trajectory(6, 16).requires_grad_()
    x = random_like_shape((8, 8), torch.complex64, 1)
    with pytest.raises(ValueError, match="nufft: the trajectory requires grad.*detach"):
        nufft(x, traj)
    with pytest.raises(ValueError, match="nufft_adjoint: the trajectory requires grad"):
        nufft_adjoint(nufft(x, traj.detach()), traj, (8, 8))
    with torch.no_grad():  # no gradient asked for: nothing is dropped
        torch.testing.assert_close(nufft(x, traj), nufft(x, traj.detach()))
