"""Library calls a notebook user makes with a plausible mistake: a wrong result must not come back
without an error, and the error must name the argument (not a torch internal)."""

from __future__ import annotations

import pytest
import torch

from mrirecon import recon
from mrirecon.functional import fft2c
from mrirecon.operators import sense
from tests.helpers import shepp_sense_problem
from tests.models.problems import coil_maps, column_mask


def test_cg_refuses_nan_instead_of_returning_its_start():
    """NaN compares False with the stopping threshold: CG took it for converged and returned 0."""
    from mrirecon.solvers import cg

    b = torch.ones(5)
    b[2] = float("nan")
    with pytest.raises(ValueError, match="right-hand side holds NaN"):
        cg(lambda v: v, b, iterations=5)
    with pytest.raises(ValueError, match=r"gram\(p\) holds NaN or Inf values at iteration 0"):
        cg(lambda v: v * float("nan"), torch.ones(5), iterations=5)


def test_coil_maps_with_nan_are_refused_where_the_operator_is_built():
    """Maps divided by a zero sum of squares outside the ESPIRiT crop: cg_sense, TV and MoDL
    returned an all-zero image (6.2 dB) with no error."""
    maps = coil_maps(4, 16, 16)
    maps[:, :3] = float("nan")
    with pytest.raises(ValueError, match=r"coil maps hold NaN or Inf values at 48 pixel\(s\)"):
        sense(maps, column_mask(16))


def test_a_mask_with_a_coil_axis_is_one_pattern_or_refused():
    """``mask = y != 0`` is (C, H, W): it broadcast as C batch masks (8 images instead of one)."""
    gt, op, y = shepp_sense_problem(n=32)
    per_coil = (y != 0)  # every coil has the same pattern
    op_c = sense(op.maps, per_coil)
    x = torch.tensor(gt, dtype=torch.complex128)
    assert op_c(x).shape == y.shape and torch.equal(op_c(x), op(x))
    assert recon.run("cg_sense", y, op_c, iterations=5).shape == gt.shape
    differ = per_coil.clone()
    differ[1, :, 0] = ~differ[1, :, 0]
    with pytest.raises(ValueError, match=r"mask \(4, 32, 32\) has an axis of the coil count \(4\) and "
                                         r"the coils' sampling patterns differ.*maps\[None\]"):
        sense(op.maps, differ)
    batched = sense(op.maps[None], per_coil[0].expand(3, -1, -1))  # (B, H, W): masks of a batch
    assert batched(x.expand(3, -1, -1)).shape == (3,) + tuple(y.shape)


def test_fastmri_real_pair_mask_layout_is_refused_on_a_square_image():
    """fastMRI's (1, 1, W, 1) mask (for k-space as real pairs) on a square image was a row mask:
    cg_sense 17.4 instead of 21.9 dB, no error."""
    _, op, _ = shepp_sense_problem(n=32)
    mask = op.mask.reshape(1, 1, 32, 1)
    with pytest.raises(ValueError, match=r"mask \(1, 1, 32, 1\) is fastMRI's layout .* mask.reshape\(1, -1\)"):
        sense(op.maps, mask)


def test_mixed_precision_data_and_real_maps_give_the_adjoint_of_the_forward():
    """complex128 data with complex64 maps (and real maps) failed inside einsum, naming neither."""
    gt, op, y = shepp_sense_problem(n=32)
    maps64 = op.maps.to(torch.complex64)
    ref = sense(op.maps, op.mask).H(y)
    got = sense(maps64, op.mask).H(y)  # complex128 data, complex64 maps
    assert got.dtype == torch.complex128
    tol = 10 * torch.finfo(torch.float32).eps * float(ref.abs().max())
    assert float((got - ref).abs().max()) <= tol
    assert recon.run("cg_sense", y.to(torch.complex64), sense(op.maps, op.mask), iterations=3).dtype \
        == torch.complex128
    real = op.maps.abs()  # magnitude maps
    a = sense(real, op.mask)
    x = torch.tensor(gt, dtype=torch.complex128)
    lhs = torch.vdot(a(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), a.H(y).flatten())
    assert abs(complex(lhs - rhs)) <= 1e-10 * float(a(x).norm() * y.norm())  # still adjoint


def test_metrics_refuse_complex_images_after_the_crop():
    """crop_to_target kept only the real part: PSNR 8.7 instead of 20.3 dB."""
    from mrirecon.metrics import evaluate_volumes

    ref = torch.rand(1, 16, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="prediction is complex .* pass .abs"):
        evaluate_volumes({"v": ref.numpy()}, {"v": (ref * 1j).numpy()})


@pytest.mark.parametrize("call", ["sirt", "pnp_nlm", "dlmri", "max_eigenvalue"])
def test_iteration_counts_below_one_are_refused_by_direct_calls(call):
    """recon.run refused them; the functions called directly returned zeros or their start."""
    from mrirecon.core import max_eigenvalue
    from mrirecon.recon.ct import sirt
    from mrirecon.recon.dictionary import dlmri
    from mrirecon.recon.nonlocal_pnp import pnp_nlm

    gt, op, y = shepp_sense_problem(n=16)
    with pytest.raises(ValueError, match="iterations must be an integer >= 1, got 0"):
        if call == "sirt":
            from mrirecon.operators.ct import ct_operator
            from mrirecon.operators.ct_geometry import CTGeometry

            a = ct_operator(CTGeometry.parallel(image_shape=(16, 16), num_views=8, num_detectors=23))
            sirt(a(torch.ones(16, 16)), a, iterations=0)
        elif call == "pnp_nlm":
            pnp_nlm(y, op, iterations=0)
        elif call == "dlmri":
            dlmri(y, op, iterations=0)
        else:
            max_eigenvalue(op.gram, op.H(y), iterations=0)


def test_fista_tolerance_waits_for_the_slowest_slice():
    """A bright slice stopped the batch while a dim one had not converged (5.9 % off)."""
    from mrirecon.solvers.fista import fista

    scale = torch.tensor([1.0, 1e-3, 1.0]).reshape(3, 1)
    target = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * scale
    steps, slow = torch.tensor([0.5, 0.01, 0.5]).reshape(3, 1), []  # slice 1 converges slowly

    def grad(x):
        return x - target

    out = fista(grad, None, torch.zeros_like(target), steps, iterations=2000, tolerance=1e-6,
                callback=lambda it, x, rel: slow.append(it))
    alone = fista(grad, None, torch.zeros(1, 50), steps[1:2], iterations=2000, tolerance=1e-6)
    assert len(slow) > 50  # the fast slices alone stop within a few iterations
    rel = float((out[1] - target[1]).norm() / target[1].norm())
    rel_alone = float((alone[0] - target[1]).norm() / target[1].norm())
    assert rel <= rel_alone * (1 + 1e-6)


@pytest.mark.parametrize("method", ["sirt", "tv_pdhg", "tv_admm", "tv_ct"])
def test_tolerance_of_sirt_and_tv_waits_for_the_slowest_slice(method):
    """A dim, detailed slice beside a 100x brighter smooth one stopped with the bright one
    (SIRT after 15 of its 93 iterations, PDHG 30 of 131, ADMM 12 of 48): batched, it must
    stop exactly where it stops alone. ``tv_ct``'s relative ADMM penalty is estimated on one
    image, so the batch runs the penalty each slice gets alone."""
    import numpy as np

    from mrirecon.operators import sense
    from mrirecon.operators.ct import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.recon.ct import sirt, tv_ct, tv_pdhg
    from mrirecon.recon.mri import tv

    n = 32
    yy, xx = np.mgrid[:n, :n]
    smooth = torch.from_numpy(np.exp(-((xx - 16) ** 2 + (yy - 16) ** 2) / 150.0))
    detail = torch.from_numpy(((xx % 6 < 3) ^ (yy % 6 < 3)) * (((xx - 16) ** 2 + (yy - 16) ** 2) < 150.0))
    if method == "tv_admm":
        maps = torch.ones(4, n, n, dtype=torch.complex128) / 2
        mask = torch.zeros(n)
        mask[::2], mask[12:20] = 1, 1
        a = sense(maps, mask)
        bright, dim = a(smooth.to(torch.complex128)) * 100, a(detail.to(torch.complex128))
        lam = 1e-3 * float(dim.abs().max())
        run = lambda y, op, cb: tv(y, op, lam, iterations=400, tolerance=2e-3, callback=cb)  # noqa: E731
        batched_op = sense(torch.stack([maps, maps]), mask)
    else:
        a = ct_operator(CTGeometry.parallel(image_shape=(n, n), num_views=40))
        bright, dim = a(smooth) * 100, a(detail.double())
        lam = 1e-3 * float(dim.abs().max())
        tv_solver = tv_pdhg if method == "tv_pdhg" else tv_ct  # tv_ct: ADMM, rho relative to ||A||^2
        solve = sirt if method == "sirt" else lambda y, op, **kw: tv_solver(y, op, lam, **kw)
        run = lambda y, op, cb: solve(y, op, iterations=600, tolerance=2e-3, callback=cb)  # noqa: E731
        batched_op = a
    alone_its, batch_its = [], []
    alone = run(dim, a, lambda it, x, r: alone_its.append(it))
    batch = run(torch.stack([bright, dim]), batched_op, lambda it, x, r: batch_its.append(it))
    assert 10 < len(alone_its) < (400 if method == "tv_admm" else 600)  # the tolerance stopped it
    assert len(batch_its) == len(alone_its)
    tol = 1e3 * torch.finfo(torch.float64).eps * float(alone.abs().max())
    torch.testing.assert_close(batch[1], alone, rtol=0, atol=tol)


def test_dwt2_names_sizes_it_cannot_halve():
    """63 x 97 failed inside a reshape ("shape '[1, 62, 97]' is invalid ...")."""
    from mrirecon.functional.wavelet import dwt2, idwt2

    for fn in (dwt2, idwt2):
        for x in (torch.randn(63, 97), torch.randn(63, 97, requires_grad=True)):
            with pytest.raises(ValueError, match="divisible by 2, got 63 x 97"):
                fn(x, "db4", 1)
        with pytest.raises(ValueError, match="divisible by 8, got 64 x 36"):
            fn(torch.randn(2, 64, 36), "db4", 3)
    assert dwt2(torch.randn(64, 40), "db4", 3).shape == (64, 40)


def test_model_without_batch_axis_is_named():
    from mrirecon.models.unrolled.modl import MoDL

    _, op, y = shepp_sense_problem(n=16)
    model = MoDL(iterations=1, layers=2, features=4, batchnorm=False, cg_iterations=2).double()
    with pytest.raises(ValueError, match=r"MoDL: data y must have a leading batch axis and at least "
                                         r"4 dims, got \(4, 16, 16\)"):
        model(y, op)


def test_shipped_weights_refuse_the_other_modality():
    """CT weights on an MRI operator returned a -7.4 dB image with no word."""
    from mrirecon.training.weights import available_weights, load_pretrained

    if "primal_dual_ct_sim" not in available_weights():
        pytest.skip("shipped weights not available")
    model = load_pretrained("primal_dual_ct_sim")
    _, op, y = shepp_sense_problem(n=16)
    with pytest.raises(TypeError, match=r"primal_dual_ct_sim.pt: these CT weights got complex "
                                        r"\(MRI k-space\?\) data"):
        model(y[None].to(torch.complex64), sense(op.maps.to(torch.complex64), op.mask))


def test_shipped_mri_weights_given_real_k_space_say_it_lost_its_phase():
    """``modl(y.real, sense(...))`` was told "these MRI weights got real (a CT sinogram?) data
    ...; use weights trained for that modality": the wrong cause and the wrong advice."""
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained("modl_brain_sim")
    _, op, y = shepp_sense_problem(n=16)
    op = sense(op.maps.to(torch.complex64), op.mask)
    with pytest.raises(TypeError, match=r"are real \(torch.float32\), but the MRI operator "
                                        r"SenseOperator takes complex k-space: a real y has lost "
                                        r"its phase") as err:
        model(y[None].to(torch.complex64).real, op)
    assert "CT sinogram" not in str(err.value)


def test_shipped_weights_name_the_conversion_for_data_in_another_precision():
    """numpy's complex128 k-space failed inside the first convolution ("Input type (double) and
    bias type (float) should be the same"); the refusal names both conversions, and each works."""
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained("modl_brain_sim")
    _, op, y = shepp_sense_problem(n=16)  # complex128
    y = y[None]
    with pytest.raises(TypeError, match=r"modl_brain_sim.pt: the data are torch.complex128 but the "
                                        r"weights are torch.float32; convert the data "
                                        r"\(y.to\(torch.complex64\)\) or the model \(model.to\(torch.float64\)\)"):
        model(y, op)
    op32 = sense(op.maps.to(torch.complex64), op.mask)
    with torch.no_grad():
        single = model(y.to(torch.complex64), op32)
        double = model.to(torch.float64)(y, op)
    assert single.dtype == torch.complex64 and double.dtype == torch.complex128
    # the same network in two precisions: agree to float32's rounding through 5 unrolls
    err = float((single.to(torch.complex128) - double).abs().max() / double.abs().max())
    assert err < 1e3 * torch.finfo(torch.float32).eps, err


def test_varnet_names_a_mask_without_its_centre():
    """A mask that skips the DC column gave zero coil images, maps 0 / 0, and the operator's
    "the coil maps hold NaN" (blaming a crop) instead of the mask."""
    from mrirecon.models.unrolled.varnet import VarNet

    model = VarNet(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1, init_seed=0)
    maps, x = coil_maps(4, 16, 16), torch.randn(16, 16, dtype=torch.complex64)
    mask = torch.ones(16)
    mask[::2] = 0  # every odd column: DC (column 8) unsampled
    op = sense(maps[None], mask)
    with pytest.raises(ValueError, match=r"VarNet: sample 0's k-space centre \(columns 8-8 of 16\) holds "
                                         r"no data; .* must sample column 8 \(DC\)"):
        model(op(x[None]), op)
    mask[6:11] = 1  # with a centre band it runs
    op = sense(maps[None], mask)
    assert bool(torch.isfinite(model(op(x[None]), op)).all())


def test_mask_offset_outside_its_period_is_refused():
    """offset 200 of a 4x mask on 128 columns sampled 10 columns (12.8x) without a word."""
    from mrirecon.sampling import EquispacedFractionMask, EquispacedMask

    with pytest.raises(ValueError, match=r"offset must be an integer in \[0, 5\)"):
        EquispacedFractionMask([0.08], [4])(128, seed=0, offset=200)
    with pytest.raises(ValueError, match=r"offset must be an integer in \[0, 4\)"):
        EquispacedMask([0.08], [4])(128, seed=0, offset=-1)
    for offset in range(5):  # every valid offset keeps about a quarter of the columns
        assert abs(int(EquispacedFractionMask([0.08], [4])(128, seed=0, offset=offset).sum()) - 32) <= 1


def test_k_space_helpers_still_broadcast_a_plain_column_mask():
    maps = coil_maps(3, 16, 12).to(torch.complex128)
    mask = column_mask(12)
    x = torch.randn(16, 12, dtype=torch.complex128)
    assert torch.allclose(sense(maps, mask)(x), fft2c(maps * x) * mask)


def test_weights_cards_are_checked_where_results_are_labelled_and_reused(tmp_path):
    """A shipped name run with another network's weights gave a row labelled modl_brain_sim
    that was VarNet; a card naming an unknown model raised a bare KeyError; an edited card kept
    the old bench scores; an adapted model's card dropped its training range; bench found an
    output that is a file only after scoring a volume."""
    import shutil

    import yaml

    from mrirecon.bench.core import bench_output
    from mrirecon.bench.methods import weights_id
    from mrirecon.pipeline.adapt_stage import model_architecture
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.io.weights import resolve_weights
    from mrirecon.training.weights import load_model, load_pretrained, model_card

    varnet = resolve_weights("varnet_brain_sim", "test")
    with pytest.raises(ValueError, match="modl_brain_sim is a 'modl' model, but the weights"):
        load_model("modl_brain_sim", {}, varnet)

    pt = tmp_path / "m.pt"
    shutil.copy(resolve_weights("modl_brain_sim", "test"), pt)
    card = model_card("modl_brain_sim")
    pt.with_suffix(".yaml").write_text(yaml.safe_dump({**card, "model": {**card["model"], "name": "modl_v2"}}))
    with pytest.raises(ValueError, match=r"m\.yaml: model\.name 'modl_v2' is no model"):
        load_pretrained(pt)

    pt.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    before = weights_id(pt)
    edited = {**card, "model": {**card["model"], "params": {**card["model"]["params"], "iterations": 1}}}
    pt.with_suffix(".yaml").write_text(yaml.safe_dump(edited) + "\n")
    assert weights_id(pt) != before

    config = load_pipeline("mri_modl_brain_sim", ["adapt.enabled=true"])[0]
    _, _, inherited = model_architecture(config)
    assert inherited["training_range"] == card["training_range"]

    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"), \
            bench_output(tmp_path / "file"):
        pass


def test_a_pickled_model_and_a_method_given_twice_are_named(tmp_path):
    """A whole pickled model was refused with torch's long message (escape codes, and advice to
    load it unsafely); `--weights m=a.pt --weights m=b.pt` silently used b.pt."""
    from mrirecon.bench.cli import parse_weights
    from mrirecon.io.weights import read_state_dict
    from mrirecon.models import build_model

    torch.save(build_model("dncnn", depth=3, features=8), tmp_path / "whole.pt")
    with pytest.raises(ValueError, match=r"whole\.pt cannot be read safely: it holds pickled Python objects") as err:
        read_state_dict(tmp_path / "whole.pt")
    assert "\x1b" not in str(err.value) and "weights_only=False" not in str(err.value)
    with pytest.raises(ValueError, match="modl given twice"):
        parse_weights(["modl=a.pt", "modl=b.pt"])
    assert parse_weights(["modl=a.pt,varnet=b.pt", "modl=a.pt"]) == {"modl": "a.pt", "varnet": "b.pt"}


@pytest.mark.parametrize("method, params", [("cg_sense", {}), ("zero_filled", {}),
                                            ("l1_wavelet", {"lam": 1e-3}), ("zero_filled_rss", {})])
def test_real_k_space_is_refused_by_mri_reconstructions(method, params):
    """``y.real`` (or ``abs()``, or numpy's cast to float32) lost the phase: cg_sense returned an
    image 60 % off (relative L2) where the complex data give 0.1 %, without a word."""
    gt, op, y = shepp_sense_problem(n=32)
    with pytest.raises(TypeError, match=rf"{method}: y is real \(torch.float64, shape \(4, 32, 32\)\).*MRI k-space is complex"):
        recon.run(method, y.real, op, **params)
    # an MRI/CT method meets the rule through the MRI operator; CT sinograms stay real
    with pytest.raises(TypeError, match=r"tv: y is real"):
        recon.run("tv", y.abs(), op, lam=1e-3)
    image = recon.run(method, y, op, **params)
    assert image.is_complex() or method == "zero_filled_rss"


def test_a_card_with_a_parameter_the_model_does_not_take_is_named(tmp_path, capsys, mri_file):
    """`featurs: 8` in a card's model.params: `mrirecon run` reported an "internal error:
    TypeError: build_model('modl'): MoDL.__init__() got an unexpected keyword argument" (exit 1,
    asking for a bug report) naming no card."""
    import re
    import shutil

    import yaml

    from mrirecon.cli import main
    from mrirecon.io.weights import resolve_weights
    from mrirecon.training.weights import load_pretrained, model_card

    pt = tmp_path / "m.pt"
    shutil.copy(resolve_weights("modl_brain_sim", "test"), pt)
    card = model_card("modl_brain_sim")
    card["model"]["params"] = {**card["model"]["params"], "featurs": 8}
    pt.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    message = r"unexpected keyword argument 'featurs' \(model parameters of .*m\.yaml\)"
    with pytest.raises(ValueError, match=message):
        load_pretrained(pt)
    with pytest.raises(SystemExit) as exit_:
        main(["run", "mri_modl_brain_sim", "--input", str(mri_file), "--output",
              str(tmp_path / "out"), "--set", f"reconstruct.weights={pt}"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "internal error" not in err
    assert re.search(message, err.strip().splitlines()[-1])
