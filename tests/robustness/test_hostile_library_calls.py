"""Library calls (``recon.run`` and the methods called directly) with inputs that the ``mrirecon
run`` pipeline refuses or notes: each came back as an image without a word, and must now raise
an error naming the method and the argument, or warn where the input is legal but suspect."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from mrirecon import recon
from mrirecon.operators import ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.operators.mri import SenseOperator
from mrirecon.sampling.agreement import held_span, judge_mask
from tests.helpers import shepp_sense_problem

MRI_METHODS = {"zero_filled": {}, "cg_sense": {"iterations": 2},
               "l1_wavelet": {"lam": 1e-3, "iterations": 2}, "tv": {"lam": 1e-3, "iterations": 2}}
EMPTY_COLUMNS = r"column\(s\) the operator's mask keeps hold no data in any coil of y"


@pytest.fixture(scope="module")
def mri():
    """``(op, y)``: 4 coils, 32 x 32, y undersampled 4x by op's own column mask."""
    _, op, y = shepp_sense_problem(n=32)
    return op, y


@pytest.fixture(scope="module")
def ct():
    """``(op, y, x)``: a 24 x 24 parallel-beam problem with a positive image, float64."""
    op = ParallelBeam(CTGeometry.parallel((24, 24), num_views=20))
    x = torch.rand((24, 24), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return op, op(x), x


def _no_warning(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


# -- 1. a sampling mask that does not describe the k-space -----------------------------------

@pytest.mark.parametrize("method", sorted(MRI_METHODS))
def test_a_mask_keeping_columns_without_data_warns_through_run_and_directly(mri, method):
    """y undersampled 4x, op built with an all-ones mask: the empty columns were taken as measured
    zeros (cg_sense gave the zero-filled image, 'converged'), no word; the pipeline notes them
    ("... hold no data in any coil: treated as unsampled") and drops them from its mask."""
    op, y = mri
    dense = sense(op.maps, torch.ones(32, dtype=torch.float64))
    held = (y != 0).any(-2).any(0)
    first, last = int(held.nonzero()[0]), int(held.nonzero()[-1])
    n_empty = int((~held[first:last + 1]).sum())  # zero padding at the edges is no "empty" column
    for call in (lambda: recon.run(method, y, dense, **MRI_METHODS[method]),
                 lambda: getattr(recon, method)(y, dense, **MRI_METHODS[method])):
        pattern = rf"{method}: {n_empty} of the 32 {EMPTY_COLUMNS}"
        with pytest.warns(UserWarning, match=pattern) as rec:
            call()
        assert sum("hold no data" in str(w.message) for w in rec) == 1  # run: not twice
        assert rec[0].filename == __file__  # attributed to the caller's line


def test_y_masked_by_the_operators_mask_or_fully_sampled_runs_without_a_word(mri):
    """The ordinary cases: y masked by op's own mask, and fully sampled y that op undersamples
    (retrospective; the pipeline's "discarded" note is about a file's own mask)."""
    op, y = mri
    full = op.expand(op.H(y))  # fully sampled k-space
    for data in (y, full):
        for method, params in MRI_METHODS.items():
            assert _no_warning(lambda: recon.run(method, data, op, **params)).shape == (32, 32)
            assert _no_warning(lambda: getattr(recon, method)(data, op, **params)).shape == (32, 32)


def test_a_2d_mask_keeping_samples_without_data_warns():
    """The same for a 2-D (variable-density) mask: y on one mask, op on a denser superset."""
    from mrirecon.sampling import variable_density

    _, op, _ = shepp_sense_problem(n=32)
    m = variable_density((32, 32), 4.0, seed=0).to(torch.float64)
    denser = ((m + variable_density((32, 32), 4.0, seed=1).to(torch.float64)) > 0).to(torch.float64)
    y = op.expand(torch.ones(32, 32, dtype=torch.complex128)) * m
    with pytest.warns(UserWarning, match=r"cg_sense: \d+ of the \d+ sample\(s\) the operator's 2-D "
                                         r"mask keeps hold no data in any coil of y"):
        recon.cg_sense(y, sense(op.maps, denser), iterations=2)
    assert _no_warning(lambda: recon.cg_sense(y, sense(op.maps, m), iterations=2)).shape == (32, 32)


@pytest.mark.parametrize("method", sorted(MRI_METHODS))
def test_direct_calls_refuse_k_space_of_another_mask_as_run_does(mri, method):
    """A flipped mask (columns marked sampled hold no data, columns with data marked
    unsampled): run refused it, the pipeline refuses it ("the mask does not describe this
    k-space"); cg_sense(y, op) and the other methods called directly ran without a word."""
    op, y = mri
    flipped = sense(op.maps, op.mask.flatten().flip(-1))
    with pytest.raises(ValueError, match=rf"{method}: y does not fit the operator's mask: \d+ "
                                         r"column\(s\) of y hold data that the mask drops"):
        getattr(recon, method)(y, flipped, **MRI_METHODS[method])


# -- 2. a sign-flipped sinogram ----------------------------------------------------------------

@pytest.mark.parametrize("method, params", [
    ("sirt", {"iterations": 3}), ("tv_ct", {"lam": 0.01, "iterations": 3}),
    ("tv_pdhg", {"lam": 0.01, "iterations": 3}), ("tgv", {"lam": 0.01, "iterations": 3}),
    ("pnp_nlm", {"iterations": 1}), ("epll", {"iterations": 1}), ("dlmri", {"iterations": 1}),
])
def test_ct_methods_refuse_a_sign_flipped_sinogram(ct, method, params):
    """-y (log(I / I0) stored instead of -log): SIRT, tv_ct, tv_pdhg and tgv returned an
    all-zero image (their x >= 0 projection), pnp_nlm / epll / dlmri a negative one, through run
    and directly, without a word; the pipeline refuses such a slice."""
    op, y, _ = ct
    pattern = (rf"{method}: y: the sinogram's mean line integral is negative .* is the sign "
               r"flipped \(log\(I / I0\) stored\)\? .*negate it \(-y\)")
    with pytest.raises(ValueError, match=pattern):
        getattr(recon, method)(-y, op, **params)
    if method != "tv_pdhg":  # not a registered name
        with pytest.raises(ValueError, match=pattern):
            recon.run(method, -y, op, **params)


def test_the_sign_rule_is_the_pipelines(ct):
    """One rule and one text: the library's message holds the pipeline's after its
    'FILE: slice k:' prefix, and both pass the same slices."""
    from pathlib import Path

    from mrirecon.pipeline.stages_ct import CTSlice, check_slice
    from mrirecon.recon.checks import flipped_sign_message

    op, y, _ = ct
    with pytest.raises(ValueError) as pipeline:
        check_slice(CTSlice(-y, op.geometry), Path("f.h5"), 0, reference=False)
    assert str(pipeline.value) == f"f.h5: slice 0: {flipped_sign_message(-y)}"
    with pytest.raises(ValueError, match=re.escape(f"sirt: y: {flipped_sign_message(-y)}")):
        recon.sirt(-y, op, 3)
    centred = y - y.mean()  # mean / rms of -0.04 passes, -0.06 is refused (threshold -0.05)
    assert flipped_sign_message(centred - 0.04 * centred.std()) is None
    assert flipped_sign_message(centred - 0.06 * centred.std()) is not None


def test_a_linear_reconstruction_of_a_flipped_sinogram_warns_and_keeps_its_result(ct):
    """FBP (and SIRT without x >= 0) return the negated image, exactly: a warning, the result
    unchanged; the operator-level fbp (used on residuals) stays silent."""
    from mrirecon.operators.fbp import fbp as fbp_operator

    op, y, _ = ct
    with pytest.warns(UserWarning, match=r"fbp: sinogram: the sinogram's mean line integral is "
                                         r"negative .* The image comes out negated"):
        image = recon.fbp(-y, op)
    torch.testing.assert_close(image, -recon.fbp(y, op))
    with pytest.warns(UserWarning, match=r"fbp: sinogram: the sinogram's mean"):
        recon.run("fbp", -y, op)
    with pytest.warns(UserWarning, match=r"sirt: y: the sinogram's mean"):
        flipped = recon.sirt(-y, op, 3, nonneg=False)
    torch.testing.assert_close(flipped, -recon.sirt(y, op, 3, nonneg=False))
    _no_warning(lambda: fbp_operator(-y, op))


def test_a_stack_names_the_flipped_slice(ct):
    op, y, _ = ct
    with pytest.raises(ValueError, match=r"sirt: y \(slice 1 of 2\): the sinogram's mean"):
        recon.sirt(torch.stack([y, -y]), op, 3)


# -- 3. the rest of the surface ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("method", sorted(MRI_METHODS))
@pytest.mark.parametrize("case, error, message", [
    ("nan", ValueError, r"y holds 1 NaN or Inf values"),
    ("zero", ValueError, r"y is empty or all zero"),
    ("real", TypeError, r"y is real \(torch.float64, shape \(4, 32, 32\)\), but MRI k-space is "
                        r"complex"),
    ("half", TypeError, r"y is torch.complex32 \(half precision\)"),
])
def test_mri_methods_called_directly_refuse_what_run_refuses(mri, method, case, error, message):
    """Called directly, l1_wavelet and zero_filled returned all-NaN images for one NaN sample,
    every method an all-zero image for all-zero y and a wrong one for real y (phase lost), and
    complex32 failed inside MKL ("MKL FFT doesn't support tensors of type: Half")."""
    op, y = mri
    bad = {"zero": lambda: y * 0, "real": lambda: y.real,
           "half": lambda: y.to(torch.complex32)}.get(case, y.clone)()
    if case == "nan":
        bad[0, 3, 3] = float("nan")
    with pytest.raises(error, match=rf"{method}: {message}"):
        getattr(recon, method)(bad, op, **MRI_METHODS[method])


def test_zero_filled_rss_names_nan_or_real_k_space(mri):
    _, y = mri
    bad = y.clone()
    bad[1, 2, 3] = float("inf")
    with pytest.raises(ValueError, match=r"zero_filled_rss: kspace holds 1 NaN or Inf values"):
        recon.zero_filled_rss(bad)
    with pytest.raises(TypeError, match=r"zero_filled_rss: kspace is real .* a real kspace has "
                                        r"lost its phase"):
        recon.zero_filled_rss(y.abs())  # was the RSS of a wrong image


def test_grappa_called_directly_names_nan_or_all_zero_k_space():
    """One NaN sample outside the calibration block came back as ~1500 NaN estimates; all-zero
    k-space failed on "acs width 6 includes unacquired columns"."""
    _, _, y = shepp_sense_problem(n=64, acceleration=2)
    assert not bool(torch.isnan(recon.grappa(y, 6)).any())
    bad = y.clone()
    bad[0, 5, 30] = float("nan")
    with pytest.raises(ValueError, match=r"grappa: kspace holds 1 NaN or Inf values"):
        recon.grappa(bad, 6)
    with pytest.raises(ValueError, match=r"grappa: kspace is empty or all zero"):
        recon.grappa(y * 0, 6)


@pytest.mark.parametrize("method, params", [
    ("sirt", {"iterations": 3}), ("tv_pdhg", {"lam": 0.01, "iterations": 3}), ("fbp", {}),
])
@pytest.mark.parametrize("case", ["nan", "inf", "zero"])
def test_ct_methods_called_directly_refuse_nan_or_an_all_zero_sinogram(ct, method, params, case):
    """sirt, tv_pdhg and fbp returned all-NaN images for one NaN / Inf value, and all-zero
    images for an all-zero sinogram."""
    op, y, _ = ct
    bad = y * 0 if case == "zero" else y.clone()
    if case != "zero":
        bad[2, 3] = float(case)
    arg = "sinogram" if method == "fbp" else "y"
    message = "is empty or all zero" if case == "zero" else "holds 1 NaN or Inf values"
    with pytest.raises(ValueError, match=f"{method}: {arg} {message}"):
        getattr(recon, method)(bad, op, **params)


@pytest.mark.parametrize("tolerance", [-1.0, float("nan")])
def test_sirt_refuses_a_tolerance_that_is_no_tolerance(ct, tolerance):
    """Ran all iterations without a word (cg, fista, admm and pdhg refused it)."""
    op, y, _ = ct
    with pytest.raises(ValueError, match=r"sirt: tolerance must be finite and >= 0"):
        recon.sirt(y, op, 3, tolerance=tolerance)


@pytest.mark.parametrize("step", [float("inf"), torch.tensor([0.5, float("nan")]),
                                  torch.tensor(-1.0), True])
def test_fista_refuses_a_step_that_is_no_step(step):
    """inf or a NaN tensor made every iterate NaN, a negative tensor step ascended (numbers
    were checked, tensors not), all without a word."""
    from mrirecon.solvers import fista

    b = torch.ones(2, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"fista: step must be (a )?finite"):
        fista(lambda v: v - b, None, torch.zeros_like(b), step, iterations=2)
    assert float(fista(lambda v: v - b, None, torch.zeros_like(b), torch.full((2, 1), 0.5),
                       iterations=30).sub(b).abs().max()) < 1e-6


@pytest.mark.parametrize("solver", ["fista", "admm", "pdhg"])
def test_solvers_refuse_a_start_with_nan(solver):
    """fista and admm returned all-NaN iterates, pdhg zeros, without a word (cg refused such a
    start by its residual). A numpy start failed in fista on "'numpy.ndarray' object has no
    attribute 'clone'"."""
    from mrirecon.operators import Identity
    from mrirecon.solvers import admm, fista, pdhg

    b = torch.linspace(-1, 1, 4, dtype=torch.float64)
    calls = {"fista": lambda x0: fista(lambda v: v - b, None, x0, 0.5, iterations=50),
             "admm": lambda x0: admm(lambda v, rho, x: (b + rho * v) / (1 + rho),
                                     lambda v, t: v, Identity(), x0, iterations=50),
             "pdhg": lambda x0: pdhg(Identity(), lambda v, s: (v - s * b) / (1 + s), None, x0,
                                     iterations=50)}
    x0 = torch.zeros(4, dtype=torch.float64)
    assert float((calls[solver](x0) - b).abs().max()) < 1e-3  # min 1/2||x - b||^2: x = b
    with pytest.raises(TypeError, match=rf"{solver}: x0 must be a torch.Tensor, got ndarray"):
        calls[solver](x0.numpy())
    x0[1] = float("nan")
    with pytest.raises(ValueError, match=rf"{solver}: x0 holds 1 NaN or Inf values"):
        calls[solver](x0)


@pytest.mark.parametrize("threshold", [-0.5, float("nan")])
def test_soft_thresholds_refuse_a_negative_or_nan_threshold(threshold):
    """A negative threshold grew every magnitude (|x| + 0.5), NaN made every value NaN."""
    from mrirecon.solvers import group_soft_threshold, soft_threshold

    x = torch.tensor([1.0, -2.0, 0.25], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"soft_threshold: threshold must be >= 0"):
        soft_threshold(x, threshold)
    with pytest.raises(ValueError, match=r"group_soft_threshold: threshold must be >= 0"):
        group_soft_threshold(x[None], threshold, dim=0)
    torch.testing.assert_close(soft_threshold(x, 0.5), torch.tensor([0.5, -1.5, 0.0],
                                                                     dtype=torch.float64))
    assert float(soft_threshold(x, float("inf")).abs().max()) == 0  # the prox of inf * L1


def test_held_span_of_a_2d_mask_is_between_held_samples_along_rows_and_columns():
    """Fails if agreement.py:53 the column span dropped for dims=2: with dims=2 a sample is
    in the span only if it lies between held samples in its row AND in its column; the top
    middle of a 'U' is between held samples of its row only."""
    held = torch.tensor([[1, 0, 0, 0, 1],
                         [1, 0, 0, 0, 1],
                         [1, 1, 1, 1, 1]], dtype=torch.bool)
    rows_only = held_span(held[None], dims=1)[0]
    both = held_span(held[None], dims=2)[0]
    assert bool(rows_only[0, 2]) and not bool(both[0, 2])
    assert torch.equal(both, held)


def test_judge_mask_counts_a_sample_held_by_any_coil():
    """Fails if agreement.py:129 ``any`` -> ``all`` over coils: a dead coil (all zero)
    does not make the samples the other coils hold 'empty'."""
    h, w, c = 8, 8, 3
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(c, h, w, dtype=torch.complex64, generator=g)
    mask = torch.zeros(h, w)
    mask[::2, ::3] = 1
    op = SenseOperator(maps, mask)
    y = op(torch.randn(h, w, dtype=torch.complex64, generator=g))
    y[1] = 0  # coil 1 dead
    fit = judge_mask(y, op)
    assert fit is not None and int(fit.n_empty.sum()) == 0 and int(fit.n_dropped.sum()) == 0
    assert torch.equal(fit.held[0], mask.bool())
