"""Settings of the prior reconstructions (``pnp_nlm``, ``pnp_bm3d``, ``epll``, ``dlmri``,
``tgv``), and of ``l1_wavelet`` and ``grappa``, that they cannot run: refused at load naming ``reconstruct.params.<key>`` (they loaded
and failed every input, some with raw Python errors), at run time where only the data tell
(a patch larger than the image, a sparsity of the real patch dimension), and never run as a
prior that does nothing or biases the image without a word."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from mrirecon import recon
from mrirecon.core.config import ConfigError
from mrirecon.operators import ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline, load_pipeline_warned
from mrirecon.recon.dictionary import omp, overcomplete_dct
from mrirecon.recon.epll import epll
from mrirecon.recon.nonlocal_pnp import nlm_denoiser
from mrirecon.recon.registry import settable_parameters
from tests.helpers import shepp_sense_problem

N = 32

# (method, key, refused value, start of the message, a value that runs): each refused value
# loaded and failed every input before
REFUSED = [
    ("pnp_nlm", "patch_size", "0", "must be an integer >= 2", "2"),
    ("pnp_nlm", "patch_size", "1", "must be an integer >= 2", "3"),  # 0 ran as 1
    ("pnp_nlm", "patch_distance", "0", "must be an integer >= 1", "1"),
    ("pnp_nlm", "sigma", "0", "must be > 0", "0.01"),  # the prior did nothing
    ("pnp_nlm", "sigma_scale", "0", "must be > 0", "0.5"),
    ("pnp_nlm", "rho", "0", "must be > 0", "0.1"),
    ("pnp_nlm", "gamma", "0.5", "must be >= 1", "1"),
    ("pnp_nlm", "method", "foo", "must be one of admm, hqs, got 'foo'", "hqs"),
    ("epll", "sigmas", "[]", "must be a non-empty list", "[0.1, 0.05]"),
    ("epll", "sigmas", "0.05", "must be a non-empty list", "[0.05]"),  # was a TypeError
    ("epll", "sigmas", "[0.1, 0]", "must be a non-empty list", "null"),
    ("epll", "noise_std", "0", "must be > 0", "0.01"),
    ("epll", "stride", "0", "must be an integer >= 1", "2"),
    ("epll", "batch_dims", "3", "epll has no parameter 'batch_dims'", None),  # IndexError
    ("dlmri", "lam", "0", "must be > 0", "0.1"),
    ("dlmri", "patch_size", "1", "must be an integer >= 2", "2"),  # NaN dictionary
    ("dlmri", "sparsity", "72", "must be below 72, the dimension of a 6 x 6", "71"),
    ("dlmri", "stride", "0", "must be an integer >= 1", "3"),
    ("tgv", "ratio", "0", "must be > 0", "1.5"),
    ("tgv", "rho", "0", "must be > 0", "0.1"),
]
# the classical methods' settings that only their libraries refused (PyWavelets, torch, the
# weights reader), after every input was read and calibrated
REFUSED += [
    ("l1_wavelet", "wavelet", "db99", "Unknown wavelet name 'db99'", "db2"),
    ("l1_wavelet", "wavelet", "bior2.2", "wavelet 'bior2.2' is not orthogonal", "sym4"),
    ("l1_wavelet", "wavelet", "mexh", "The `Wavelet` class is for discrete wavelets, mexh is a "
     "continuous wavelet", "haar"),
    ("grappa", "kernel_size", "[5, 0]", "must be one integer >= 1 or a pair (kx, ky)", "5"),
    ("grappa", "kernel_size", "abc", "must be one integer >= 1 or a pair (kx, ky)", "[5, 3]"),
    ("grappa", "calib", "0", "must be an integer >= 1", "12"),
    ("epll", "gmm", "nothere.pt", "weights file nothere.pt does not exist", "patch_gmm"),
]
#: GRAPPA in mri_cs: no coil maps, and no table of l1_wavelet's settings
GRAPPA = ["reconstruct.method=grappa", "calibrate.method=none", "reconstruct.params={}",
          "reconstruct.params_by_acceleration={}"]
if "pnp_bm3d" in recon.available():
    REFUSED += [("pnp_bm3d", "sigma", "0", "must be > 0", "0.01"),
                ("pnp_bm3d", "gamma", "0.5", "must be >= 1", "1.1")]


def _overrides(method: str, setting: str) -> list[str]:
    lam = ["reconstruct.params.lam=0.001"] if method == "tgv" else []  # tgv needs one
    base = {"grappa": GRAPPA, "l1_wavelet": []}.get(  # l1_wavelet: mri_cs's own method, tables
        method, [f"reconstruct.method={method}", "reconstruct.params={}", *lam])
    return [*base, f"reconstruct.params.{setting}"]


@pytest.mark.parametrize("method, key, value, said, fine", REFUSED,
                         ids=[f"{m}:{k}={v}" for m, k, v, *_ in REFUSED])
def test_a_setting_the_prior_refuses_fails_the_config_naming_the_key(method, key, value, said,
                                                                     fine):
    with pytest.raises(ConfigError) as err:
        load_pipeline("mri_cs", _overrides(method, f"{key}={value}"))
    assert f"reconstruct.params.{key}: {said}" in str(err.value)
    if fine is not None:  # the key itself is fine
        load_pipeline("mri_cs", _overrides(method, f"{key}={fine}"))


@pytest.mark.parametrize("setting", ["reconstruct.params.patch_size=0",
                                     "reconstruct.params.sigmas=0.05"])
def test_the_cli_exits_2_before_reading_any_input(mri_file, tmp_path, capsys, setting):
    from mrirecon.cli import main

    method = "pnp_nlm" if "patch_size" in setting else "epll"
    args = ["run", "mri_cs", "-i", str(mri_file), "-o", str(tmp_path / "o")]
    for item in _overrides(method, setting.split("params.", 1)[1]):
        args += ["--set", item]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2 and setting.split("=")[0] in capsys.readouterr().err
    assert not (tmp_path / "o" / "reconstructions").exists()


def test_epll_batch_dims_is_the_stage_s_not_a_setting_but_stays_in_the_library():
    assert "batch_dims" not in settable_parameters("epll")  # what mrirecon bench checks against
    assert "batch_dims" in recon.parameters("epll")  # recon.run("epll", ..., batch_dims=0)


# -- run time: what only the data tell, and the functions called directly ------------------

@pytest.fixture(scope="module")
def mri():
    _gt, op, y = shepp_sense_problem(N, noise=0.002)
    return op, y


def _ct(n: int = N):
    gt = torch.zeros(n, n, dtype=torch.float64)
    gt[n // 4:3 * n // 4, n // 4:3 * n // 4] = 1.0
    op = ParallelBeam(CTGeometry.parallel((n, n), num_views=12))
    return op, op(gt)


@pytest.mark.parametrize("params, said", [
    ({"patch_size": 2 * N}, f"pnp_nlm: patch_size {2 * N} exceeds the image size {N} x {N}"),
    ({"patch_size": 1}, "pnp_nlm: patch_size must be an integer >= 2"),
    ({"patch_distance": 0}, "pnp_nlm: patch_distance must be an integer >= 1"),
    ({"sigma": 0.0}, "pnp_nlm: sigma must be > 0"),
    ({"sigma_scale": 0.0}, "pnp_nlm: sigma_scale must be > 0"),
])
def test_pnp_nlm_refuses_a_patch_or_noise_level_it_cannot_use(mri, params, said):
    """Each ran to the end before: a patch of twice the image, 1-pixel patches (14.6 dB against
    24.7 dB with the default on a 4x brain slice, zero-filled 19.0) or a zero noise level (the
    plain least-squares image)."""
    op, y = mri
    with pytest.raises(ValueError, match=said):
        recon.run("pnp_nlm", y, op, iterations=1, **params)


def test_the_nlm_denoiser_alone_refuses_a_patch_larger_than_its_image():
    denoise = nlm_denoiser(patch_size=9)
    img = np.random.default_rng(0).standard_normal((8, 12))
    with pytest.raises(ValueError, match="patch_size 9 exceeds the image size 8 x 12"):
        denoise(img, 0.1)
    assert np.isfinite(nlm_denoiser(patch_size=7)(img, 0.1)).all()
    with pytest.raises(ValueError, match="nlm_denoiser: patch_size must be an integer >= 2"):
        nlm_denoiser(patch_size=0)


def test_epll_names_the_setting_where_python_raised_before():
    op, y = _ct(16)
    with pytest.raises(ValueError, match=r"epll: sigmas must be a non-empty list .*got 0\.05"):
        epll(y, op, sigmas=0.05)  # TypeError: 'float' object is not iterable
    with pytest.raises(ValueError, match="epll: batch_dims 3 leaves no"):
        epll(y, op, batch_dims=3)  # IndexError: too many indices for tensor of dimension 2
    with pytest.raises(ValueError, match="epll: stride must be an integer >= 1"):
        epll(y, op, stride=0)  # "Patches: stride must be >= 1"
    with pytest.raises(ValueError, match="epll: iterations must be an integer >= 1"):
        epll(y, op, sigmas=None, iterations=0)


def test_epll_iterations_is_inert_with_sigmas_and_the_pipeline_says_so():
    op, y = _ct(16)
    kw = {"sigmas": [0.1, 0.05], "stride": 4}
    assert torch.equal(epll(y, op, iterations=2, **kw), epll(y, op, iterations=20, **kw))
    overrides = ["reconstruct.method=epll", "reconstruct.params={}",
                 "reconstruct.params.sigmas=[0.1, 0.05]", "reconstruct.params.iterations=20"]
    warned = load_pipeline_warned("mri_cs", overrides)[2]
    said = [w for w in warned if "reconstruct.params.iterations" in w]
    assert said == [f"--set over {PIPELINES / 'mri_cs'}.yaml: reconstruct.params.iterations=20 "
                    "has no effect: epll: sigmas is given (sigmas=[0.1, 0.05]), one stage per "
                    "value; iterations sets only the length of the default schedule (drop it, "
                    "or drop sigmas)"]
    assert not [w for w in load_pipeline_warned("mri_cs", overrides[:2] + overrides[3:])[2]
                if "reconstruct.params.iterations" in w]  # without sigmas it counts


def test_dlmri_patch_size_1_is_refused_not_a_nan_blamed_on_the_data(mri):
    op, y = mri
    with pytest.raises(ValueError, match="dlmri: patch_size must be an integer >= 2"):
        recon.run("dlmri", y, op, iterations=1, patch_size=1)
    with pytest.raises(ValueError, match="overcomplete_dct: patch_size must be an integer >= 2"):
        overcomplete_dct(1, 8)
    assert torch.isfinite(overcomplete_dct(2, 2)).all()  # the smallest it takes


@pytest.mark.parametrize("modality, d", [("mri", 8), ("ct", 4)])
def test_dlmri_sparsity_is_judged_against_the_image_s_own_patch_dimension(mri, modality, d):
    """2 x 2 patches: 8 real dimensions for complex (MRI) images, 4 for real (CT) ones. A
    sparsity of ``d`` fits every patch exactly (no prior); of 72 and more on 6 x 6 complex
    patches it failed with "torch.linalg.solve: ... the input matrix is singular"."""
    op, y = mri if modality == "mri" else _ct(16)
    kind = "complex (MRI)" if modality == "mri" else "real (CT)"
    with pytest.raises(ValueError, match=re.escape(f"dlmri: sparsity must be below {d}, the "
                                                   f"dimension of a 2 x 2 {kind} patch")):
        recon.run("dlmri", y, op, iterations=1, patch_size=2, sparsity=d)
    x = recon.run("dlmri", y, op, iterations=1, patch_size=2, sparsity=d - 1)
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_omp_with_as_many_atoms_as_dimensions_fits_exactly_without_a_singular_solve(dtype):
    """Rows finished at rounding level (zero and exactly 3-sparse signals) went on picking
    atoms; in float32 (MRI's complex64 data) the 1e-12 ridge on their Gram matrix is lost, and
    the solve of 71 or more atoms on 72-dimensional complex 6 x 6 patches failed as singular
    (float64 ran; it stays a check that the fit is exact there too)."""
    gen = torch.Generator().manual_seed(0)
    dct = overcomplete_dct(6, 8, dtype)
    D = torch.block_diag(dct, dct)  # as dlmri builds it for complex images: d = 72, K = 128
    X = torch.randn(400, 72, generator=gen, dtype=dtype)
    X[:50] = 0
    X[50:100] = (D[:, :3] @ torch.randn(3, 50, generator=gen, dtype=dtype)).T
    # 72 independent atoms fit any signal exactly, up to omp's ridge (1e-12 of the Gram
    # diagonal) and rounding (eps); a factor 100 for the conditioning of the atoms' Gram matrix
    exact = 100 * max(1e-12, torch.finfo(dtype).eps)
    for sparsity in (71, 72, 100):
        codes = omp(X, D, sparsity)
        assert int((codes != 0).sum(1).max()) <= min(sparsity, 72)
        assert bool((codes[:50] == 0).all())  # zero signals: no atoms
        rel = torch.linalg.vector_norm(X[50:] - codes[50:] @ D.T, dim=1) \
            / torch.linalg.vector_norm(X[50:], dim=1)
        if sparsity >= 72:
            assert float(rel.max()) <= exact
        else:  # one atom short: the random rows keep a residual, the 3-sparse ones none
            assert float(rel[:50].max()) <= exact < float(rel[50:].median())


def test_numpy_integers_and_floats_from_parameter_grids_are_accepted():
    """The settings checks used isinstance(value, int): a sweep over np.arange(2, 8) stopped
    with "dlmri: patch_size must be an integer >= 2, got np.int64(4)"; the solvers' own
    check_iterations has always taken numpy integers."""
    import numpy as np

    from mrirecon.recon.dictionary import dlmri_settings_problem, overcomplete_dct
    from mrirecon.recon.epll import epll_settings_problem
    from mrirecon.recon.nonlocal_pnp import pnp_settings_problem
    from mrirecon.recon.tgv import tgv_settings_problem

    assert dlmri_settings_problem({"patch_size": np.int64(4), "stride": np.int32(2),
                                   "sparsity": np.int64(5), "lam": np.float32(0.1)}) is None
    assert epll_settings_problem({"stride": np.int64(2), "batch_dims": np.int64(0),
                                  "noise_std": np.float64(0.02)}) is None
    assert pnp_settings_problem({"patch_size": np.int64(5), "patch_distance": np.int16(3),
                                 "rho": np.float32(0.1)}) is None
    assert tgv_settings_problem({"ratio": np.float64(1.5)}) is None
    assert overcomplete_dct(np.int64(4), 6).shape == (16, 36)
    # and the refusals still hold for numpy values and non-finite ones
    assert dlmri_settings_problem({"patch_size": np.int64(1)})[0] == "patch_size"
    assert tgv_settings_problem({"ratio": float("nan")})[0] == "ratio"
    assert pnp_settings_problem({"rho": float("inf")})[0] == "rho"
