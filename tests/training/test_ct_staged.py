"""The staged CT model's data recipe and validation split (mrirecon.training.ct_staged)."""

from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from mrirecon.data.simulate_ct import MU_WATER_70KEV_PER_MM
from mrirecon.training.ct_staged import CTImageRecipe, SparseViewSimulator, validation_sinograms
from tests.helpers import tiny_ct_part


@pytest.mark.parametrize("hardware", [False, True])
def test_validation_split_is_the_heldout_protocols_validation_split(hardware):
    from mrirecon.heldout.validation import validation_ct_slices
    from mrirecon.io.lodopab import MU_MAX_PER_MM

    sinos, mus = validation_sinograms(hardware=hardware)
    slices = validation_ct_slices(hardware=hardware)
    assert len(slices) == len(sinos) == (6 if hardware else 2)
    if hardware:  # the first two are the plain split; each copy adds hardware in the air only
        names = ["val_0_table", "val_0_holder", "val_1_table", "val_1_holder"]
        assert [s.name for s in slices[2:]] == names
        for j, mu in enumerate(mus[2:]):
            plain = mus[j // 2]
            body = plain > 0.5 * MU_WATER_70KEV_PER_MM
            # the body only goes through HU and back: float64 rounding, nothing more
            np.testing.assert_allclose(mu[body], plain[body], rtol=8 * np.finfo(np.float64).eps,
                                       atol=0)
            assert (mu > plain + 0.1 * MU_WATER_70KEV_PER_MM).sum() > 100  # hardware was added
    for s, sino, mu in zip(slices, sinos, mus):
        # the protocol stores float32 copies of the same float64 simulation
        np.testing.assert_allclose(s.sinogram.numpy(), sino, rtol=2e-7, atol=1e-6)
        np.testing.assert_allclose(s.reference.numpy() * MU_MAX_PER_MM, mu, rtol=1e-6, atol=1e-8)


def test_recipe_draws_reproducible_body_like_attenuation_images():
    a, b = CTImageRecipe(5, size=96, mni_volumes=1), CTImageRecipe(5, size=96, mni_volumes=1)
    mu_max = MU_WATER_70KEV_PER_MM * (1 + 3071 / 1000)
    kinds = set()
    for _ in range(12):
        (x, kind), (y, _) = a.draw(), b.draw()
        np.testing.assert_array_equal(x, y)
        kinds.add(kind)
        assert x.shape == (96, 96) and np.isfinite(x).all()
        assert x.min() >= 0 and x.max() <= mu_max + 1e-12
        assert (x < 1e-3).mean() > 0.02  # air around the object
        assert (x > 0.5 * MU_WATER_70KEV_PER_MM).mean() > 0.1  # and an object
    assert kinds == {"ct", "phantom", "textured"}


def test_a_reseeded_stream_does_not_depend_on_what_was_drawn_before():
    # stage k > 0 of the trainer restarts the draws on (seed, k): the samples a prefetcher made
    # ahead at the end of the previous stage (a timing-dependent number) change nothing
    a, b = CTImageRecipe(5, size=96, mni_volumes=1), CTImageRecipe(5, size=96, mni_volumes=1)
    sa, sb = SparseViewSimulator(5), SparseViewSimulator(5)
    n = 362
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    mu = MU_WATER_70KEV_PER_MM * ((xx**2 + yy**2) < 0.16)
    for _ in range(3):
        b.draw()
        sb.measure(mu)
    draws = []
    for recipe, sim in ((a, sa), (b, sb)):
        recipe.reseed(5, 1)
        sim.reseed(5, 1)
        draws.append(([recipe.draw()[0] for _ in range(4)], [sim.measure(mu) for _ in range(4)]))
    (xa, ma), (xb, mb) = draws
    for x, y in zip(xa, xb):
        np.testing.assert_array_equal(x, y)
    for (ya, _, ga), (yb, _, gb) in zip(ma, mb):
        assert ga.num_views == gb.num_views and np.array_equal(ga.angles, gb.angles)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    # another stream gives other images and other noise
    a.reseed(5, 2)
    sa.reseed(5, 2)
    assert not any(np.array_equal(a.draw()[0], x) for x in xa)
    y2 = sa.measure(mu)[0]
    assert not any(y.shape == y2.shape and torch.equal(y, y2) for y, _, _ in ma)


def test_simulator_measures_sparse_views_of_the_unit_norm_projector():
    sim = SparseViewSimulator(0)
    n = 362
    yy, xx = np.mgrid[:n, :n] / n - 0.5
    mu = MU_WATER_70KEV_PER_MM * ((xx**2 + yy**2) < 0.16)
    for views, offset, kept in ((30, 5, 31), (60, 15, 62)):
        y, op, g = sim.measure(mu, views, offset)
        assert g.num_views == kept and y.shape == (kept, 513)
        assert abs(float(g.angles[0]) - (offset + 0.5) * np.pi / 1000) < 1e-12
        with torch.no_grad():
            clean = op(torch.from_numpy(mu))
        # Poisson noise at 4096 photons through <= 10 cm of water: a few per cent of the signal
        assert 0 < float(torch.linalg.norm(y - clean) / torch.linalg.norm(clean)) < 0.05
        # A / ||A||: the unit-norm projector (a lower bound of the norm that is close to it)
        x = torch.ones(n, n, dtype=torch.float64)
        for _ in range(3):
            x = op.gram(x)
            x = x / torch.linalg.norm(x)
        # (projector_norm stops its power iteration at a relative change of 1e-4)
        assert 0.9 < float(torch.linalg.norm(op.gram(x))) <= 1 + 1e-4


def test_init_loads_a_state_dict_of_the_same_architecture_and_names_the_file_otherwise(tmp_path):
    import pytest

    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.ct_staged import load_init

    src = StagedCTNet(iterations=1, chans=4, num_pools=2, lam=None, init_seed=1)
    # stored as the trainer stores it: float16, loaded back into float32 parameters
    torch.save({k: v.half() for k, v in src.state_dict().items()}, tmp_path / "start.pt")
    dst = StagedCTNet(iterations=1, chans=4, num_pools=2, lam=None, init_seed=2)
    load_init(dst, tmp_path / "start.pt")
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert b.dtype == torch.float32, name
        torch.testing.assert_close(b, a.half().float(), rtol=0, atol=0)

    other = StagedCTNet(iterations=1, chans=8, num_pools=2, lam=None)
    with pytest.raises(ValueError, match=r"start\.pt.*chans"):
        load_init(other, tmp_path / "start.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "start.pt").read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.pt"):
        load_init(dst, tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_init(dst, tmp_path / "missing.pt")


@pytest.mark.parametrize("card_params, message", [
    # a state dict of another stage count failed in load_state_dict ("not a state dict of this
    # architecture (stages / chans / num_pools must match): Missing key(s) ..."), no card named
    ({"iterations": 1}, r"model.params.iterations = 1, this run 2"),
    # another FBP filter: the same shapes, so the weights loaded and trained on another input
    ({"iterations": 2, "filter": "ramp"}, r"model.params.filter = 'ramp', this run 'hann'"),
])
def test_init_whose_card_describes_another_setup_is_refused_naming_the_card(tmp_path, card_params,
                                                                            message):
    import yaml

    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.ct_staged import train_staged_ct

    stages = card_params["iterations"]
    init = tmp_path / "start.pt"
    torch.save(StagedCTNet(iterations=stages, chans=4, num_pools=2, lam=None).state_dict(), init)
    init.with_suffix(".yaml").write_text(yaml.safe_dump({"model": {"name": "staged_ct", "params": {
        "chans": 4, "num_pools": 2, **card_params}}}))
    card = init.with_suffix(".yaml")
    with pytest.raises(ValueError, match=rf"train staged_ct: --init {init}: its card {card} has "
                                         rf"{message}"):
        train_staged_ct(tmp_path / "new.pt", budget_s=121.0 * 2, iterations=2, chans=4, num_pools=2,
                        init=str(init), log=lambda m: None)
    assert not (tmp_path / "new.pt").exists()


def test_a_continued_run_keeps_the_first_runs_record_in_its_card(tmp_path):
    # `make weights` runs `--init X --out X`: the second run's card must still describe both
    # runs (the first run's card is read before it is overwritten), as the shipped card does
    import yaml

    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.ct_staged import save
    from mrirecon.training.init_card import read_init_card

    model = StagedCTNet(iterations=1, chans=4, num_pools=2, lam=[0.3], init_seed=1)
    out = tmp_path / "m.pt"
    base = dict(seed=0, budget_s=10.0, iterations=1, chans=4, num_pools=2, patch=128, batch=4, pool=2,
                refresh_every=2, lr=1e-3, val_every=5, threads=1, prefetch=True)
    curve = [{"stage": 0, "step": 450, "loss": 0.002, "val_psnr": {30: 29.0, 60: 31.0}, "elapsed_s": 300}]
    first = save(model, out, 1, base, [900], curve, 600.0, (0.1, 0.1, 0.1), {30: 30.0, 60: 32.0})
    assert first["description"].endswith(
        "Trained end to end on 128 x 128 patches, on one CPU thread, the training samples made "
        "on one more core (--prefetch).")
    assert "900 steps of batch 4 in 10 minutes" in " ".join(first["known_failures"])
    assert "first_run" not in first["training"]
    record = read_init_card(out)
    args = {**base, "seed": 1, "patch": 160, "lr": 3e-4, "init": str(out)}
    second = save(model, out, 1, args, [300], [], 1200.0, (0.1, 0.1, 0.1), {30: 31.0, 60: 33.0},
                  record)
    t = yaml.safe_load(out.with_suffix(".yaml").read_text())["training"]
    assert t == second["training"] and t["seed"] == 1 and f"--init {out}" in t["command"]
    assert t["first_run"]["seed"] == 0 and t["first_run"]["steps_per_stage"] == [900]
    assert t["first_run"]["validation_psnr_db"] == {30: 30.0, 60: 32.0}
    assert t["first_run"]["history"] == curve and t["history"] == []  # each run keeps its curve
    assert "--patch 128" in t["first_run"]["command"] and "--init" not in t["first_run"]["command"]
    assert "in two runs (128 x 128, then 160 x 160 patches; each continues from the one before)" \
        in second["description"]
    assert "1200 steps of batch 4 in 30 minutes" in " ".join(second["known_failures"])
    # a third run counts all three
    third = save(model, out, 1, {**args, "patch": 192}, [100], [], 600.0, (0.1, 0.1, 0.1),
                 {30: 31.5, 60: 33.5}, read_init_card(out))
    assert third["training"]["first_run"]["first_run"]["seed"] == 0
    assert "in three runs (128 x 128, 160 x 160, then 192 x 192 patches" in third["description"]
    assert "1300 steps of batch 4 in 40 minutes" in " ".join(third["known_failures"])
    assert "Scanner hardware" not in third["data"]["source"]
    assert "none in the training images" in " ".join(third["known_failures"])
    assert "copy of each image" not in third["data"]["validation"]
    hw = save(model, tmp_path / "hw.pt", 1, {**base, "hardware": True}, [10], [], 60.0, (0.1,) * 3,
              {30: 30.0, 60: 32.0})
    assert "Scanner hardware (--hardware)" in hw["data"]["source"]
    assert hw["training"]["command"].endswith("--prefetch --hardware")
    # the card says what a --hardware run saw and was selected on
    assert "none in the training images" not in " ".join(hw["known_failures"])
    assert "simulated ones in the training images, never a real one" in \
        " ".join(hw["known_failures"])
    assert "a table and a head-holder copy of each image (6 images in all) at 30 and 60 views" \
        in hw["data"]["validation"]
    assert read_init_card(tmp_path / "none.pt") is None
    (tmp_path / "bad.yaml").write_text("training: [unclosed")
    with pytest.raises(ValueError, match=r"bad\.yaml"):
        read_init_card(tmp_path / "bad.pt")


def test_self_ensemble_is_chosen_by_the_validation_score(tmp_path):
    from mrirecon.data.simulate_ct import ct_simulation_geometry
    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.ct_staged import score, tune_ensemble
    from tests.models.problems import ct_phantom_mu as _phantom, sparse_ct_data as _data

    full = ct_simulation_geometry("parallel", 32, 48, None, 60.0)
    val = []
    for views, factor in ((30, 3), (60, 2)):  # labels of the two view counts the score reports
        y, op = _data(_phantom(32, 3), full, factor, 1)
        val.append((y[0], op, torch.from_numpy(_phantom(32, 3)).float(), views))
    model = StagedCTNet(iterations=1, chans=4, num_pools=2, lam=[0.1], init_seed=0)
    with torch.no_grad():  # a random, untrained U-Net: the two settings score differently
        for p in model.parameters():
            p.mul_(4.0)
    scores = tune_ensemble(model, val, 1)
    mean = {k: np.mean(list(v.values())) for k, v in scores.items()}
    assert mean["true"] != mean["false"]
    assert model.ensemble == (mean["true"] > mean["false"])
    assert score(model, val, 1) == scores[str(model.ensemble).lower()]
    # the trainer records the choice in the card's history: it must be YAML-writable (a numpy
    # bool made `save` fail after a whole stage of training)
    import yaml

    from mrirecon.training.ct_staged import save

    assert type(model.ensemble) is bool
    args = dict(seed=0, budget_s=10.0, iterations=1, chans=4, num_pools=2, patch=128, batch=4, pool=2,
                refresh_every=2, lr=1e-3, val_every=5, threads=1)
    history = [{"stage": 0, "lam": 0.1, "ensemble_scores": scores, "ensemble": model.ensemble}]
    card = save(model, tmp_path / "m.pt", 1, args, [10], history, 60.0, (0.1,) * 3, scores["true"])
    back = yaml.safe_load((tmp_path / "m.yaml").read_text())
    assert back["model"]["params"]["ensemble"] is model.ensemble
    assert back["training"]["history"] == card["training"]["history"]


def test_shipped_ct_cards_describe_data_as_their_trainers_write_it():
    """The data sections of the shipped CT cards are what the trainers write now (neither was
    trained with --hardware), so a card never names a validation step its trainer lacks."""
    import yaml

    from mrirecon.training.ct_primal_dual import DATA_TEXT
    from mrirecon.training.ct_staged import card_data
    from tests.helpers import ROOT

    weights = ROOT / "mrirecon" / "weights"
    staged = yaml.safe_load((weights / "staged_ct_lodopab.yaml").read_text())["data"]
    assert staged == card_data(False) and "{" not in staged["validation"]
    assert yaml.safe_load((weights / "primal_dual_lodopab.yaml").read_text())["data"] == DATA_TEXT
    assert "lam grid" not in DATA_TEXT["validation"]  # the primal-dual model has no lam


def test_a_patch_larger_than_the_training_images_is_refused_before_setup(tmp_path):
    # was: np.clip with an upper bound below 0 gave negative corners, crops of other sizes
    from mrirecon.training.ct_staged import train_staged_ct

    with pytest.raises(ValueError, match=r"train staged_ct: --patch 400 is larger than the 362 x 362"):
        train_staged_ct(tmp_path / "m.pt", patch=400, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_a_budget_below_the_tuning_reserve_is_refused_before_setup(tmp_path):
    # was: the lam grid and self-ensemble tuning ran anyway and a card of 0 training steps was
    # written (`--budget-s 1e-9`); a budget spent by setup alone is refused inside the run too
    from mrirecon.training.ct_staged import train_staged_ct

    with pytest.raises(ValueError, match=r"train staged_ct: no training step fit in --budget-s 100 "
                                         r"\(each of the 2 stages keeps 60 s .*m\.pt was not written"):
        train_staged_ct(tmp_path / "m.pt", budget_s=100.0, iterations=2, log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_the_selection_psnr_scores_the_image_clipped_at_zero_unlike_metrics_psnr():
    """``psnr_nonnegative`` (the staged / primal-dual trainers' ``lam`` choice, best state and
    the cards' ``validation_psnr_db``) clips the image at ``mu >= 0`` before fastMRI's PSNR;
    ``metrics.psnr`` (``run``, ``bench``, the held-out tables) does not. An image whose error
    is half negative air pixels, half positive: clipping removes the first half of the squared
    error, exactly ``10 log10 2`` dB; a non-negative image scores the same under both."""
    from mrirecon.metrics import psnr
    from mrirecon.training.ct_staged import psnr_nonnegative

    ref = torch.zeros(32, 32, dtype=torch.float64)
    ref[8:24, 8:24] = 0.02
    img = ref.clone()
    img[0, :] = -0.01  # 32 air pixels below 0: the clip makes them exact
    img[1, :] = 0.01  # 32 air pixels above 0: kept
    mse = 64 * 0.01**2 / ref.numel()
    assert float(psnr(ref, img)) == pytest.approx(10 * np.log10(0.02**2 / mse), abs=1e-9)
    assert psnr_nonnegative(ref, img) - float(psnr(ref, img)) == pytest.approx(10 * np.log10(2),
                                                                               abs=1e-9)
    assert psnr_nonnegative(ref, img) == pytest.approx(float(psnr(ref, img.clamp_min(0))), abs=1e-9)
    positive = img.clamp_min(0)
    assert psnr_nonnegative(ref, positive) == pytest.approx(float(psnr(ref, positive)), abs=1e-9)


class _LamStub:
    """A staged model whose data-consistency solve at ``lam`` returns the reference plus an
    error that is smallest at ``lam = 0.03`` (and largest without the solve, ``None``)."""

    def __init__(self, best: float) -> None:
        self.best, self.lam0, self.lam = best, None, [None, None]

    def initial(self, y, op):
        return torch.zeros(1, 8, 8, dtype=torch.float64), 1.0

    def stage(self, j, x, s, y, op):
        return x

    def correct(self, k, x, s):
        return x

    def solve(self, lam, z, y, op, aty):
        err = 0.1 + abs(math.log10(lam) - math.log10(self.best))
        return (op.ref + err * op.pattern)[None]


def test_the_stage_lam_is_the_grid_value_with_the_best_validation_psnr():
    """Fails if ct_staged.py:334 ``max`` -> ``min``: the worst ``lam`` chosen: ``tune_lam``
    sets the grid value whose mean validation PSNR is highest, on a stub whose PSNR peaks at
    a known grid value."""
    from mrirecon.training.ct_staged import LAM_GRID, VIEWS, tune_lam

    g = torch.Generator().manual_seed(0)
    val = []
    for views in VIEWS:
        ref = torch.rand(8, 8, generator=g, dtype=torch.float64) + 0.5
        op = types.SimpleNamespace(ref=ref, pattern=torch.randn(8, 8, generator=g, dtype=torch.float64),
                                   H=lambda y: y)
        val.append((torch.zeros(1, 4), op, ref, views))
    for best in (0.03, 0.3):
        model = _LamStub(best)
        scores = tune_lam(model, val, 1)
        assert model.lam[1] == best
        assert set(scores) == {str(v) for v in LAM_GRID}


def test_fbp_reconstructor_is_on_the_target_scale(tmp_path):
    """Fails if validation.py ``fbp(sample.y * sample.norm, ...)`` -> ``fbp(sample.y, ...)``:
    the CT card's input baseline (``input_baseline``) scored the FBP of the data divided by the
    projector norm ||A||, an image ||A|| times too dark. Property: the least-squares scale that
    maps the Ram-Lak FBP onto the reference is near 1 (FBP inverts the measured line integrals up
    to noise and discretisation), far from 1 / ||A||."""
    from mrirecon.training.data_ct import CTTrainingSet
    from mrirecon.training.validation import fbp_reconstructor

    part = tiny_ct_part(tmp_path, 2)
    ds = CTTrainingSet(part, None, None, train=False)
    s = ds.get(0)
    assert s.norm > 2.0  # the property below separates the mutant only when ||A|| is not ~1
    img = fbp_reconstructor(s).double()
    t = s.target.double()
    scale = float((img * t).sum() / (img * img).sum())
    assert 0.7 < scale < 1.4, scale
