"""Deployment-geometry MoDL data (``mrirecon.training.deploy_mri``): bands are exact smaller
SENSE problems, the slice scale is the model's normalisation, masks follow fastMRI's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mrirecon.operators import sense
from mrirecon.training.deploy_mri import CENTRE_FRACTIONS, centre_band, row_band, simulate_slice
from tests.helpers import DISC_COLS as COLS, DISC_ROWS as ROWS, DiscSource as _Disc, endless_bands

@pytest.fixture(scope="module", params=[4, 8])
def slice_(request):
    torch.set_num_threads(1)
    return simulate_slice(np.random.default_rng(request.param), _Disc(), request.param, coils=8,
                          rows=ROWS, cols=COLS)


def test_slice_is_scaled_like_the_models_normalisation(slice_):
    aty = sense(slice_["maps"], slice_["mask"]).H(slice_["kspace"])
    # max |A^H y| of the scaled data is 1 up to float32 rounding of the FFTs (eps * log2 N)
    assert abs(float(aty.abs().max()) - 1) < 50 * torch.finfo(torch.float32).eps * np.log2(ROWS * COLS)
    assert slice_["kspace"].shape == (8, ROWS, COLS) and slice_["maps"].shape == (8, ROWS, COLS)
    # target: RSS of the fully sampled coil images, zero-free only where the object is
    t = slice_["target"]
    assert t.shape == (ROWS, COLS) and slice_["max_value"] == pytest.approx(float(t[32:96].max()))


def test_mask_has_fastmri_acceleration_and_centre_band(slice_):
    acc = slice_["acceleration"]
    mask = slice_["mask"].bool()
    band = centre_band(mask)
    assert int(band.sum()) == round(COLS * CENTRE_FRACTIONS[acc])
    assert abs(int(mask.sum()) - COLS / acc) <= 2
    # k-space is zero on the columns not acquired
    assert float(slice_["kspace"][..., ~mask].abs().max()) == 0.0


def test_row_band_is_an_exact_smaller_sense_problem(slice_):
    start, height = 40, 24
    band = row_band(slice_, start, height)
    full = sense(slice_["maps"], slice_["mask"]).H(slice_["kspace"])[start:start + height]
    part = sense(band.maps, band.mask).H(band.kspace)
    # the mask acts on columns only: the rows of hybrid space are independent problems, so the
    # band's adjoint equals the rows of the whole slice's up to float32 FFT rounding
    tol = 50 * torch.finfo(torch.float32).eps * np.log2(ROWS * COLS) * float(full.abs().max())
    assert float((full - part).abs().max()) < tol
    assert torch.equal(band.target, slice_["target"][start:start + height])
    assert float(band.kspace[..., ~slice_["mask"].bool()].abs().max()) < tol


def test_half_save_loads_back_into_float32_parameters(tmp_path):
    """``train_varnet`` writes its best state as float16 (the shipped file's storage)."""
    from mrirecon.models.unrolled.varnet import VarNet
    from mrirecon.training.modl_deploy import _save

    model = VarNet(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1, init_seed=0)
    _save(model, tmp_path / "v.pt", half=True)
    state = torch.load(tmp_path / "v.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    back = VarNet(iterations=1, chans=2, pools=1, sens_chans=2, sens_pools=1, init_seed=1)
    back.load_state_dict(state)
    for (name, p), q in zip(model.state_dict().items(), back.state_dict().values()):
        assert q.dtype == p.dtype and torch.equal(q, p.half().to(p.dtype)), name


def test_trained_state_gets_a_card_that_loads_and_keeps_hand_written_sections(tmp_path):
    """`mrirecon train modl --features 8` wrote a bare .pt: loading it for a pipeline failed
    with a size mismatch against the default architecture. The trainer now writes the card
    (model, command, validation) with each saved state; a card already there for the same model
    keeps its hand-written descriptive sections, never its metrics or run record
    (tests/training/test_card_records.py)."""
    import yaml

    from mrirecon.models.unrolled.modl import MoDL
    from mrirecon.training.modl_deploy import _card, _save
    from mrirecon.training.run_card import earlier_card
    from mrirecon.training.weights import load_pretrained

    out = tmp_path / "m.pt"
    model = MoDL(iterations=2, layers=3, features=8, batchnorm=False, lam=0.05, cg_iterations=4,
                 shared=True, normalize=False, init_seed=0)
    spec = {"name": "modl", "params": {"iterations": 2, "layers": 3, "features": 8,
                                       "batchnorm": False, "lam": 0.05, "cg_iterations": 4,
                                       "shared": True}}
    args = {"seed": 3, "features": 8, "max_steps": 5}
    _save(model, out, card=_card(out, "modl", spec, args, {"step": 5, "PSNR": 20.0, "SSIM": 0.5}, 5))
    loaded = load_pretrained(out)
    for (name, p), q in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(p, q), name
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert card["training"]["command"] == f"mrirecon train modl --out {out} --seed 3 --features 8 --max-steps 5"
    assert card["training"]["validation"] == {"PSNR": 20.0, "SSIM": 0.5}

    card["metrics_held_out"] = {"PSNR": 30.0}  # added by hand after an evaluation
    card["training"]["loss"] = "by hand"
    card["known_failures"] = ["fails on knees (by hand)"]
    out.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    again = _card(out, "modl", spec, args, {"step": 9, "PSNR": 21.0, "SSIM": 0.6}, 9, earlier_card(out))
    assert "metrics_held_out" not in again and "loss" not in again["training"]
    assert again["known_failures"][1:] == ["fails on knees (by hand)"]
    assert again["training"]["best_step"] == 9
    other = dict(spec, params=dict(spec["params"], features=16))
    fresh = _card(out, "modl", other, args, {"step": 1, "PSNR": 1.0, "SSIM": 0.1}, 1, earlier_card(out))
    assert "metrics_held_out" not in fresh and "rebuilt" not in fresh
    assert not any("by hand" in f for f in fresh["known_failures"])


def test_a_training_whose_every_validation_is_nan_writes_nothing(slice_, tmp_path, monkeypatch):
    """All-NaN validation scores (a diverged run) ended in a bare ``KeyError: 'step'``; now the
    run is refused by name and no file is written."""
    import mrirecon.training.deploy_mri as deploy
    import mrirecon.training.modl_deploy as md

    band = row_band(slice_, 0, 32)

    monkeypatch.setattr(deploy, "DeploymentBands", endless_bands(band))
    monkeypatch.setattr(md, "validation_slices", lambda seed, count: [])
    monkeypatch.setattr(md, "score_slices", lambda model, val: [{"PSNR": float("nan"), "SSIM": float("nan")}])
    out = tmp_path / "m.pt"
    with pytest.raises(ValueError, match=r"train modl: no validation score of the 2 steps was finite "
                                         r"\(the training diverged: lower --lr, now 0\.001\); .*m\.pt was not written"):
        md.train(out, iterations=1, layers=2, features=4, cg_iterations=2, max_steps=2, val_every=1,
                 workers=0, threads=1)
    assert list(tmp_path.iterdir()) == []


def test_widths_train_on_each_fastmri_column_count(monkeypatch, tmp_path):
    """``mrirecon train modl --widths 320 368`` draws both fastMRI phase-encoding widths (brain
    640 x 320, knee 640 x 368); each band keeps a fastMRI mask of its own width, and the card's
    training range and command say which widths were seen (the pipeline warns outside them)."""
    import mrirecon.training.deploy_mri as deploy
    from mrirecon.training.modl_deploy import _card

    monkeypatch.setattr(deploy, "DeploymentImages", lambda seed, mni_volumes: _Disc())
    torch.set_num_threads(1)
    bands = deploy.DeploymentBands(seed=0, crop_rows=32, bands=1, widths=(320, 368))
    seen = {}
    for band, _ in zip(bands, range(6)):
        cols = band.kspace.shape[-1]
        seen[cols] = band
        assert band.mask.shape == (cols,) and band.maps.shape[-1] == cols
        acquired = int(band.mask.sum())
        assert cols / band.acceleration * 0.9 < acquired < cols / band.acceleration * 1.25
    assert set(seen) == {320, 368}

    spec = {"name": "modl", "params": {"iterations": 2}}
    card = _card(tmp_path / "m.pt", "modl", spec, {"seed": 0, "widths": [320, 368]},
                 {"step": 1, "PSNR": 20.0, "SSIM": 0.5}, 1)
    assert card["training_range"]["matrix"] == {"min": [640, 320], "max": [640, 368]}
    assert "--widths 320 368" in card["training"]["command"] and "640 x 368" in card["data"]


@pytest.mark.parametrize("widths", [(100,), (320, 700), (320.5,), (True,), ()])
def test_widths_outside_the_object_are_refused(widths):
    from mrirecon.training.deploy_mri import check_widths

    with pytest.raises(ValueError, match=r"widths: expected one or more integer column counts in \[320, 640\]"):
        check_widths(widths)


def test_recon_window_is_fastmris_centre_crop():
    """Scores and the SSIM data range use the centre 320 x 320, as fastMRI's reconstruction_rss."""
    from mrirecon.training.deploy_mri import recon_crop

    def window(rows, cols):
        x = torch.arange(rows * cols).reshape(rows, cols)
        return recon_crop(x), x

    crop, x = window(640, 368)
    assert torch.equal(crop, x[160:480, 24:344])
    crop, x = window(640, 320)
    assert torch.equal(crop, x[160:480, 0:320])
    crop, x = window(ROWS, COLS)
    assert torch.equal(crop, x[(ROWS - COLS) // 2:(ROWS + COLS) // 2, 0:COLS])


class _FixedSource:
    """A deterministic, real-valued ("ct": no random phase) image source of ``size x size``:
    a smooth Gaussian blob (``smooth=True``: its k-space is ~0 away from the centre) or a disc."""

    size = COLS

    def __init__(self, smooth: bool = False) -> None:
        yy, xx = (np.mgrid[:self.size, :self.size] - (self.size - 1) / 2) / self.size
        if smooth:
            self.mag = np.exp(-(xx**2 + yy**2) / (2 * 0.12**2))
        else:
            self.mag = ((xx**2 + yy**2) < 0.16) * (0.5 + xx)
        self.mag = np.clip(self.mag, 0, None) / self.mag.max()

    def draw(self, rng):
        return self.mag.copy(), "ct"


def _uniform_maps(rng, coils, rows, cols):
    return np.full((coils, rows, cols), coils ** -0.5, dtype=np.complex128)


def test_simulated_target_is_the_rss_of_the_fully_sampled_centred_object(monkeypatch):
    """Fails if the target comes from the *masked* k-space (an aliased zero-filled target) or the
    object is not centred in the 2x oversampled readout. With unit-modulus uniform coil maps and
    negligible noise, the target times the slice scale is the placed magnitude image."""
    from mrirecon.training import deploy_mri

    torch.set_num_threads(1)
    monkeypatch.setattr(deploy_mri, "_coil_maps", _uniform_maps)
    monkeypatch.setattr(deploy_mri, "SNR_DB", (200.0, 200.0))  # noise ~1e-10 of the signal
    src = _FixedSource()
    sl = deploy_mri.simulate_slice(np.random.default_rng(0), src, 4, coils=8,
                                   rows=ROWS, cols=COLS)
    expected = np.zeros((ROWS, COLS))
    r0 = (ROWS - src.size) // 2
    expected[r0:r0 + src.size] = src.mag
    got = (sl["target"].double() * sl["scale"]).numpy()
    # complex64 FFTs: error ~ eps * log2(N) of the peak; 1e-4 leaves two decades of margin
    tol = 100 * np.finfo(np.float32).eps * math.log2(ROWS * COLS)
    assert np.abs(got - expected).max() <= tol * expected.max()


def test_simulated_noise_has_the_documented_kspace_snr(monkeypatch):
    """Fails if noise std per real/imag part sqrt(P / snr) instead of sqrt(P / snr / 2): the
    k-space SNR 3 dB below the documented 28-34 dB. Complex noise power 2 sigma^2 is measured on
    high-frequency acquired k-space of a smooth object (clean signal ~exp(-30) there); the signal
    power from the target (orthonormal FFT: sum |k|^2 = sum RSS^2)."""
    from mrirecon.training import deploy_mri

    torch.set_num_threads(1)
    monkeypatch.setattr(deploy_mri, "_coil_maps", _uniform_maps)
    monkeypatch.setattr(deploy_mri, "SNR_DB", (30.0, 30.0))
    sl = deploy_mri.simulate_slice(np.random.default_rng(1), _FixedSource(smooth=True), 4, coils=8,
                                   rows=ROWS, cols=COLS)
    s = sl["scale"]
    k = sl["kspace"].to(torch.complex128) * s
    mask = sl["mask"].bool()
    rows = (torch.arange(ROWS) - ROWS // 2).abs() > ROWS // 5
    cols = mask & ((torch.arange(COLS) - COLS // 2).abs() > COLS // 6)
    assert int(cols.sum()) >= 4
    noise = k[:, rows][:, :, cols]
    noise_power = float(noise.abs().pow(2).mean())  # 2 sigma^2
    total = float((sl["target"].double() * s).pow(2).sum()) / (8 * ROWS * COLS)
    snr_db = 10 * math.log10((total - noise_power) / noise_power)
    # the variance estimate of ~5000 complex samples has a relative std of ~1.5 % (0.06 dB)
    assert snr_db == pytest.approx(30.0, abs=0.5)


def test_check_widths_accepts_both_ends_of_the_width_range():
    """Fails if ``w < WIDTH_RANGE[1]``: 640 columns, the documented upper end, refused."""
    from mrirecon.training.deploy_mri import WIDTH_RANGE, check_widths

    assert check_widths(WIDTH_RANGE) == WIDTH_RANGE
    for bad in (WIDTH_RANGE[0] - 1, WIDTH_RANGE[1] + 1):
        with pytest.raises(ValueError, match="widths"):
            check_widths((bad,))


def test_recon_crop_is_the_largest_centre_square_of_a_small_image():
    """Fails if ``side`` from the columns only: a slice with fewer rows than columns raised."""
    from mrirecon.training.deploy_mri import recon_crop

    assert tuple(recon_crop(torch.zeros(640, 368)).shape) == (320, 320)
    x = torch.arange(200 * 300, dtype=torch.float32).reshape(200, 300)
    out = recon_crop(x)
    assert tuple(out.shape) == (200, 200)
    assert torch.equal(out, x[:, 50:250])


def test_score_slices_scores_in_the_scanner_units_with_normalisation(monkeypatch):
    """Fails if score_slices leaving MoDL's ``normalize`` off: a band-trained model fed data in
    the scanner's units. With normalisation the deployed model is scale equivariant, so the
    score of a slice cannot depend on its units; the model's own setting is restored."""
    from mrirecon.models.unrolled.modl import MoDL
    from mrirecon.training.deploy_mri import simulate_slice
    from mrirecon.training.modl_deploy import score_slices

    torch.set_num_threads(1)
    sl = simulate_slice(np.random.default_rng(4), _Disc(), 4, coils=8,
                        rows=ROWS, cols=COLS)
    model = MoDL(iterations=1, layers=2, features=4, batchnorm=False, lam=0.05, cg_iterations=2,
                 shared=True, normalize=False, init_seed=0)
    a = score_slices(model, [sl])[0]
    b = score_slices(model, [{**sl, "scale": sl["scale"] * 1e4}])[0]
    assert model.normalize is False and model.training
    assert math.isfinite(a["PSNR"])
    # float32 rounding only: a relative change ~1e-6 moves PSNR by ~1e-5 dB
    assert b["PSNR"] == pytest.approx(a["PSNR"], abs=1e-3)


def test_validation_slices_alternate_both_deployment_accelerations(monkeypatch):
    """Fails if every validation slice 4x: the best state chosen without ever scoring 8x.
    The simulator is replaced by a recorder; the recipe's choice of accelerations is what is
    tested (the docstring: "alternating 4x / 8x")."""
    from mrirecon.training import deploy_mri
    from mrirecon.training.modl_deploy import validation_slices

    calls = []
    monkeypatch.setattr(deploy_mri, "DeploymentImages", lambda seed, mni_volumes: _Disc())
    monkeypatch.setattr(deploy_mri, "simulate_slice",
                        lambda rng, images, acc, coils=None: calls.append((acc, coils)) or {})
    validation_slices(0, 4)
    assert calls == [(4, 8), (8, 8), (4, 8), (8, 8)]
    assert set(deploy_mri.CENTRE_FRACTIONS) == {a for a, _ in calls}
