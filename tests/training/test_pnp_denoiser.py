"""The shipped plug-and-play denoiser ``pnp_dncnn_brain_sim``: loading, card, denoising, PnP-ADMM."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
import torch
import yaml

from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.pnp.pnp import PnPADMM
from mrirecon.models.registry import build_model
from mrirecon.operators.mri import sense
from mrirecon.training.denoiser import clean_images, noisy_batch
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

NAME = "pnp_dncnn_brain_sim"
HELD_OUT_SEED = 777  # neither the denoiser's data seed (101) nor a bench seed


@pytest.fixture(scope="module")
def model() -> PnPADMM:
    torch.set_num_threads(1)
    return load_pretrained(NAME)


def test_weights_load_safely_and_build_pnp_admm(model):
    state = torch.load(WEIGHTS_DIR / f"{NAME}.pt", weights_only=True)
    assert NAME in available_weights()
    assert isinstance(model, PnPADMM) and not model.training
    assert isinstance(model.denoiser, ComplexImageCNN) and isinstance(model.denoiser.cnn, DnCNN)
    loaded = model.state_dict()
    assert set(state) == set(loaded)
    for k, v in state.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


def test_card_names_reproduce_command_and_held_out_metrics():
    card = model_card(NAME)
    params = card["model"]["params"]
    assert card["model"]["name"] == "pnp_admm"
    assert params["denoiser"] == "dncnn" and params["denoiser_params"]["depth"] == 8
    assert "mrirecon train denoiser --out mrirecon/weights/pnp_dncnn_brain_sim.pt" in (
        card["training"]["command"]
    )
    assert card["training"]["steps"] > 0 and card["training"]["wall_time_s"] <= 8 * 60
    for acc in ("4x", "8x"):
        m = card["metrics_held_out"][acc]
        for method in ("model", "zero_filled", "cg_sense"):
            assert {"NMSE", "PSNR", "SSIM"} <= set(m[method])
        assert m["model"]["PSNR"] > m["zero_filled"]["PSNR"]
    # the card on disk is plain YAML (no python tags)
    yaml.safe_load((WEIGHTS_DIR / f"{NAME}.yaml").read_text())


def test_build_model_rejects_denoiser_params_without_denoiser_name():
    with pytest.raises(TypeError, match="denoiser_params"):
        build_model("pnp_admm", denoiser=torch.nn.Identity(), denoiser_params={"depth": 3})


def _psnr(clean: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image ``(B, H, W)`` with the clean image's peak as maximum."""
    mse = (x - clean).abs().pow(2).mean(dim=(-2, -1))
    return 10 * torch.log10(clean.abs().amax(dim=(-2, -1)) ** 2 / mse)


def test_denoiser_raises_psnr_on_held_out_slices(model):
    images = clean_images(1, 2, (128, 128), seed=HELD_OUT_SEED)
    gen = torch.Generator().manual_seed(5)
    noisy, clean = noisy_batch(images, 4, 128, gen)
    with torch.no_grad():
        den = model.denoiser(noisy)
    gain = _psnr(clean, den) - _psnr(clean, noisy)
    assert den.shape == noisy.shape and den.dtype == torch.complex64
    assert bool((gain > 6.0).all()), gain


def test_pnp_admm_beats_zero_filled(model):
    sim = simulate_mri_volume(0, slices=1, coils=4, size=(128, 128), seed=HELD_OUT_SEED)
    maps = sim.maps.to(torch.complex64)
    w = maps.shape[-1]
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::4] = True
    mask[w // 2 - 5: w // 2 + 5] = True
    op = sense(maps, mask)
    y = sim.kspace.to(torch.complex64) * mask  # the simulated (noisy) k-space, undersampled
    truth = sim.image.abs().to(torch.float32)
    with torch.no_grad():
        x = model(y, op).abs()
    zf = op.H(y).abs()

    def nmse(a: torch.Tensor) -> float:
        return float((a - truth).pow(2).sum() / truth.pow(2).sum())

    assert x.shape == truth.shape
    assert nmse(x) < 0.2 * nmse(zf), (nmse(x), nmse(zf))


def test_noisy_batch_noise_level_and_peak():
    images = torch.ones(3, 64, 64, dtype=torch.complex64)
    noisy, clean = noisy_batch(images, 16, 48, torch.Generator().manual_seed(1))
    peak = clean.abs().amax(dim=(-2, -1))
    assert bool(((peak >= 0.6 - 1e-6) & (peak <= 1.2 + 1e-6)).all())
    ratio_re = (noisy - clean).real.std(dim=(-2, -1)) / peak
    ratio_im = (noisy - clean).imag.std(dim=(-2, -1)) / peak
    for r in (ratio_re, ratio_im):  # sigma per part in [0.01, 0.1] of the peak (48^2 samples)
        assert bool(((r > 0.01 * 0.9) & (r < 0.1 * 1.1)).all()), r


def test_training_script_writes_loadable_state_dict(tmp_path, monkeypatch, capsys):
    from mrirecon.training import denoiser as script

    monkeypatch.setattr(script, "clean_images", lambda *a, **k: torch.ones(2, 32, 32, dtype=torch.complex64))
    out = tmp_path / "den.pt"
    from mrirecon.cli import main

    assert main(["train", "denoiser", "--out", str(out), "--max-steps", "3", "--patch", "16",
                 "--batch", "2", "--threads", "1"]) == 0
    state = torch.load(out, weights_only=True)
    fresh = build_model("pnp_admm", denoiser="dncnn", denoiser_params={"depth": 8, "features": 32,
                                                                      "batchnorm": False})
    assert set(state) == set(fresh.state_dict())
    fresh.load_state_dict(state)
    # a budget that ends before the first step: refused by name, nothing written (was the
    # untrained initialisation saved as the model, exit 0)
    out.unlink()
    with pytest.raises(SystemExit) as exit_:
        main(["train", "denoiser", "--out", str(out), "--max-seconds", "1e-9", "--patch", "16",
              "--batch", "2", "--threads", "1"])
    assert exit_.value.code == 2 and not out.exists()
    assert "no training step fit in --max-seconds 1e-09" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    # was an internal error from torch.randint after the data were simulated
    (["--size", "32", "32"], "--patch 64 is larger than the 32 x 32 training slices"),
    # was an internal error: Adam's update overflowed float32
    (["--lr", "1e300"], r"argument --lr: must be in \(0, 1\]"),
    (["--lr", "0"], r"argument --lr: must be in \(0, 1\]"),
    (["--depth", "1"], r"argument --depth: must be >= 2"),
    (["--features", "0"], r"argument --features: must be >= 1"),
])
def test_bad_options_are_refused_by_name_before_training(argv, message, tmp_path, monkeypatch, capsys):
    from mrirecon.cli import main
    from mrirecon.training import denoiser as script

    monkeypatch.setattr(script, "clean_images", lambda *a, **k: pytest.fail("data made before the check"))
    out = tmp_path / "den.pt"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "denoiser", "--out", str(out), "--threads", "1", *argv])
    assert exit_.value.code == 2 and not out.exists()
    assert re.search(message, capsys.readouterr().err)


def test_a_smaller_denoiser_is_trained_recorded_and_loaded_by_its_card(tmp_path, monkeypatch):
    """``--depth`` / ``--features`` (train denoiser had no size options): the weights have the
    given layers, the card records them and the command, and ``load_model`` builds that net."""
    from mrirecon.cli import main
    from mrirecon.training.weights import load_model
    from mrirecon.training import denoiser as script

    monkeypatch.setattr(script, "clean_images", lambda *a, **k: torch.ones(2, 32, 32, dtype=torch.complex64))
    out = tmp_path / "small.pt"
    assert main(["train", "denoiser", "--out", str(out), "--max-steps", "2", "--patch", "16",
                 "--batch", "2", "--threads", "1", "--depth", "4", "--features", "8"]) == 0
    state = torch.load(out, weights_only=True)
    convs = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 4]
    assert len(convs) == 4 and [w.shape[0] for w in convs] == [8, 8, 8, 2]
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    params = card["model"]["params"]["denoiser_params"]
    assert params["depth"] == 4 and params["features"] == 8
    assert "--depth 4" in card["training"]["command"] and "--features 8" in card["training"]["command"]
    assert "4 conv layers, 8 features" in card["description"]
    model = load_model("pnp_admm", {}, out)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_a_diverged_training_writes_nothing(tmp_path, monkeypatch, capsys):
    # lr 10 (accepted then) trained to NaN and wrote NaN weights with exit 0; the loader refused
    # them only later, at the first reconstruction. Now every trainer's write_weights refuses them.
    from mrirecon.cli import main
    from mrirecon.training import denoiser as script

    monkeypatch.setattr(script, "clean_images", lambda *a, **k: torch.ones(2, 32, 32, dtype=torch.complex64))
    real_build = script.build_denoiser

    def poisoned(**sizes):
        net = real_build(**sizes)
        with torch.no_grad():
            next(net.parameters()).fill_(float("nan"))
        return net

    monkeypatch.setattr(script, "build_denoiser", poisoned)
    out = tmp_path / "den.pt"
    out.write_bytes(b"earlier weights")
    with pytest.raises(SystemExit) as exit_:
        main(["train", "denoiser", "--out", str(out), "--max-steps", "2", "--patch", "16",
              "--batch", "2", "--threads", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert f"{out}: refusing to write weights with NaN or Inf values" in err and "nothing was written" in err
    assert out.read_bytes() == b"earlier weights" and not out.with_suffix(".yaml").exists()


def test_a_time_bound_run_records_the_command_that_repeats_it(tmp_path, monkeypatch):
    """The rate dropped at 80 % of --max-seconds, a step the machine's speed and load decide:
    two runs of one command with one seed and one step count differed in every tensor (3e-3),
    and the card's hand-written command_same_steps ran without the drop. The card now records
    the drop's step and a command_same_steps that repeats the run bit for bit."""
    import shlex

    from mrirecon.cli import main
    from mrirecon.training import denoiser as script

    images = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(0),
                         dtype=torch.complex64)
    monkeypatch.setattr(script, "clean_images", lambda *a, **k: images)
    first = tmp_path / "first.pt"
    assert main(["train", "denoiser", "--out", str(first), "--max-seconds", "1.5", "--patch", "16",
                 "--batch", "2", "--threads", "1"]) == 0
    training = yaml.safe_load(first.with_suffix(".yaml").read_text())["training"]
    steps = training["steps"]
    drop = int(training["optimizer"]["lr_drop"].removeprefix("x0.1 at step "))
    assert 0 < drop < steps  # the budget, not the 20000 steps, ended it and placed the drop
    # the run's own command leaves the unset option out ("--lr-drop-step None" was refused)
    assert "--lr-drop-step" not in training["command"] and "None" not in training["command"]
    words = shlex.split(training["command_same_steps"])
    assert words[:3] == ["mrirecon", "train", "denoiser"]
    assert f"--max-steps {steps}" in training["command_same_steps"]
    assert f"--lr-drop-step {drop}" in training["command_same_steps"]
    again = tmp_path / "again.pt"
    words[words.index("--out") + 1] = str(again)
    assert main(words[1:]) == 0  # the command without its program name
    a, b = torch.load(first, weights_only=True), torch.load(again, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_clean_images_drop_nearly_empty_slices(monkeypatch):
    """Fails if denoiser.py:54 the 5 % peak filter removed: a slice whose peak is below 5 % of
    the largest is dropped (normalised to peak 1 it is mostly amplified nothing)."""
    from mrirecon.training import denoiser

    img = torch.zeros(3, 16, 16, dtype=torch.complex128)
    img[0, 4:12, 4:12] = 1.0
    img[1, 6:10, 6:10] = 0.01  # 1 %: dropped
    img[2, 2:8, 2:8] = 0.5
    monkeypatch.setattr(denoiser, "simulate_mri_volume",
                        lambda *a, **k: types.SimpleNamespace(image=img))
    out = denoiser.clean_images(1, 3, (16, 16), seed=0)
    assert out.shape[0] == 2
    assert torch.allclose(out.abs().amax(dim=(-2, -1)), torch.ones(2))


def test_prior_bank_draws_some_real_valued_images_of_every_source():
    """Fails if only CT draws real valued: the documented 10 % real-valued natural / procedural /
    MNI images gone. The bank is built without its sources (its __init__ simulates MNI volumes,
    ~20 s); 400 procedural draws at p = 0.1 give 40 +- 6 real ones."""
    from mrirecon.training.prior_images import PriorImageBank

    bank = PriorImageBank.__new__(PriorImageBank)
    bank.size, bank.rng = 16, np.random.default_rng(0)
    bank.sources, bank.p = ["procedural", "ct"], np.array([1.0, 0.0])
    bank.magnitude = lambda kind: np.full((16, 16), 2.0)
    draws = [bank.draw() for _ in range(400)]
    real = [r for _, r in draws]
    assert 10 <= sum(real) <= 80  # binomial(400, 0.1): 5 sigma either side
    for img, r in draws:
        assert np.abs(img).max() == pytest.approx(1.0)  # peak 1
        assert (np.isrealobj(img) or not np.abs(img.imag).any()) if r else np.abs(img.imag).any()
    bank.p = np.array([0.0, 1.0])
    assert all(bank.draw()[1] for _ in range(20))  # CT images are always real valued


def test_prior_bank_mni_slices_depend_on_the_bank_seed(monkeypatch):
    """Fails if MNI volumes simulated with seed 1000 whatever the bank seed: the deployment
    validation bank (seed + 1000, modl_deploy.validation_slices) then held the training bank's
    first MNI volumes. The MNI simulator is replaced by one whose image is a function of its
    arguments, the photo / CT sources by one image each (the real ones take ~20 s to load)."""
    import types

    import mrirecon.data.simulate_mri as simulate_mri
    from mrirecon.training import prior_images

    def fake_volume(v, slices, coils, size, seed, **kw):
        img = np.random.default_rng([v, seed]).uniform(0.5, 1.0, (slices, 1, *size))
        return types.SimpleNamespace(image=torch.from_numpy(img))

    monkeypatch.setattr(simulate_mri, "simulate_mri_volume", fake_volume)
    monkeypatch.setattr(prior_images, "natural_sources", lambda: [np.ones((32, 32))])
    monkeypatch.setattr(prior_images, "ct_sources", lambda: [np.ones((32, 32))])
    a = prior_images.PriorImageBank(size=16, seed=0, mni_volumes=2, mni_slices=1)
    b = prior_images.PriorImageBank(size=16, seed=1000, mni_volumes=2, mni_slices=1)
    again = prior_images.PriorImageBank(size=16, seed=0, mni_volumes=2, mni_slices=1)
    assert all(np.array_equal(x, y) for x, y in zip(a.mni, again.mni))  # reproducible per seed
    assert not any(x.shape == y.shape and np.array_equal(x, y) for x in a.mni for y in b.mni)


@pytest.mark.parametrize("is_real", [False, True])
def test_prior_training_noise_is_sigma_per_part_and_real_for_real_images(is_real):
    """Fails if denoiser_prior.py's ``randn(complex64) * 2**0.5`` loses its ``* 2**0.5``, or if
    the line making the noise of real-valued patches real is dropped: the denoiser is conditioned on
    ``sigma``, the standard deviation of each of the real and imaginary parts (what PnP passes at
    inference); training at sigma / sqrt(2) per part mislabels every noise level by 3 dB, and
    complex noise on real (CT) patches teaches the wrong statistics. Tolerance: 4096 patches of
    8 x 8 give 262144 draws per part, so the sample variance is within 4 sqrt(2 / n) ~ 0.011 of 1."""
    from mrirecon.training.denoiser_prior import noisy_batch

    n_img, batch = 8, 4096
    pool = torch.zeros(n_img, 8, 8, dtype=torch.complex64)
    real = torch.full((n_img,), is_real)
    noisy, clean, sigma = noisy_batch(pool, real, batch, torch.Generator().manual_seed(0))
    e = (noisy - clean) / sigma[:, None, None]
    tol = 4 * (2 / e.numel()) ** 0.5
    assert abs(float(e.real.double().var()) - 1.0) < tol
    if is_real:
        assert torch.count_nonzero(e.imag) == 0
    else:
        assert abs(float(e.imag.double().var()) - 1.0) < tol


def test_prior_training_noise_levels_are_relative_to_the_patch_peak():
    """Fails if ``sigma = exp(...) * scale`` -> without ``* scale``: the card says sigma is
    0.003-0.25 x the patch peak; the noise must scale with the random peak in [0.5, 2]."""
    from mrirecon.training.denoiser_prior import SIGMA_RANGE, noisy_batch

    pool = torch.ones(4, 8, 8, dtype=torch.complex64)
    noisy, clean, sigma = noisy_batch(pool, torch.zeros(4, dtype=torch.bool), 512,
                                      torch.Generator().manual_seed(1))
    peak = clean.abs().amax((-2, -1))
    assert float(peak.min()) >= 0.5 * (1 - 1e-5) and float(peak.max()) <= 2 * (1 + 1e-5)
    rel = sigma / peak
    lo, hi = SIGMA_RANGE
    assert float(rel.min()) >= lo * (1 - 1e-5) and float(rel.max()) <= hi * (1 + 1e-5)
