"""The cards the trainers write describe the weights they wrote (audit of the training recipes).

A rebuild over an earlier card (``make weights`` over the shipped files) kept that card's run
record and held-out scores beside new weights; ``train prior`` / ``train denoiser`` wrote no
card at all; the configs recorded in two shipped cards trained another number of steps; an
accepted ``data.num_workers`` changed nothing without a word. The rule now: a rebuild keeps only
the descriptive sections of the old card (``run_card.rebuilt_card``)."""

from __future__ import annotations

import hashlib
import math
import re
import shlex
import shutil

import numpy as np
import pytest
import torch
import yaml

from mrirecon.training.weights import WEIGHTS_DIR
from tests.helpers import DISC_COLS as COLS, DISC_ROWS as ROWS, DiscSource, endless_bands

#: What a rebuild keeps of an earlier card (mrirecon.training.run_card.DESCRIPTIVE).
DESCRIPTIVE = ("kind", "description", "full_geometry", "normalisation", "data", "overridable",
               "training_range", "known_failures")
DESCRIPTIVE_METRIC_KEYS = re.compile(r"PSNR|SSIM|NMSE|grid|tuning|metric", re.I)


def _tiny_modl(monkeypatch, scores):
    """``modl_deploy`` with one disc band for data and ``scores`` (one per validation) for
    the validation: the loop and the card, not the model's quality."""
    import mrirecon.training.deploy_mri as deploy
    import mrirecon.training.modl_deploy as md

    torch.set_num_threads(1)
    band = deploy.row_band(deploy.simulate_slice(np.random.default_rng(0), DiscSource(), 4, coils=4,
                                                 rows=ROWS, cols=COLS), 0, 32)

    scores = iter(scores)
    monkeypatch.setattr(deploy, "DeploymentBands", endless_bands(band))
    monkeypatch.setattr(md, "validation_slices", lambda seed, count: [])

    def score(model, val):
        s = next(scores)
        if isinstance(s, BaseException):
            raise s
        return [{"PSNR": s, "SSIM": s / 100}]

    monkeypatch.setattr(md, "score_slices", score)
    return md


def test_a_rebuild_drops_the_earlier_cards_run_record_and_metrics(monkeypatch, tmp_path):
    """F1: `train modl` over a card of the same model kept its steps, wall time, validation curve,
    notes and held-out scores beside the new weights (`make weights` over the shipped cards);
    a fresh card recorded no total steps, wall time or threads."""
    out = tmp_path / "m.pt"
    kw = dict(iterations=1, layers=2, features=4, cg_iterations=2, val_every=2, workers=0, threads=1)
    md = _tiny_modl(monkeypatch, [10.0, 12.0])
    md.train(out, max_steps=4, **kw)
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    t = card["training"]
    assert t["steps"] == 4 and t["wall_time_s"] >= 0 and " --threads 1 " in t["command"]
    assert [h["step"] for h in t["validation_history"]] == [2, 4] and t["best_step"] == 4
    # added by hand after an evaluation of these weights, as the shipped cards are
    card["metrics_held_out"] = {"4x": {"PSNR": 34.22}}
    card["inference"] = {"grid": {10: {"PSNR": 30.4}}}
    card["training"].update(note="by hand", previous_weights="older ones", steps=2482)
    card["known_failures"].append("blurs small bright structures at 8x (by hand)")
    card["full_geometry"] = "bands of 32 rows (by hand)"
    out.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    sha = hashlib.sha256(out.read_bytes()).hexdigest()

    # rebuilt with another budget; interrupted after its first save
    md = _tiny_modl(monkeypatch, [11.0, KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        md.train(out, max_steps=6, **kw)
    half = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert half["training"]["steps_at_save"] == 2 and "steps" not in half["training"]
    assert "written at a validation during training" in half["training"]["note"]
    assert "metrics_held_out" not in half and "inference" not in half
    assert {"training", "metrics_held_out", "inference"} <= set(half["rebuilt"]["dropped"])

    md = _tiny_modl(monkeypatch, [11.0, 9.0, 13.0])
    md.train(out, max_steps=6, **kw)
    new = yaml.safe_load(out.with_suffix(".yaml").read_text())
    t = new["training"]
    assert t["steps"] == 6 and t["best_step"] == 6 and "--max-steps 6" in t["command"]
    assert [h["step"] for h in t["validation_history"]] == [2, 4, 6]
    assert "note" not in t and "previous_weights" not in t
    assert "metrics_held_out" not in new and "inference" not in new
    # the hand-written descriptive text stays, flagged as written for the earlier weights
    assert new["full_geometry"] == "bands of 32 rows (by hand)"
    assert new["known_failures"][-1] == "blurs small bright structures at 8x (by hand)"
    assert new["known_failures"][0].startswith("Rebuilt by mrirecon train modl on ")
    # over the interrupted run's card: the kept text is still that of the hand-scored weights
    assert new["rebuilt"]["kept_text_written_for_sha256"] == sha
    assert sum(f.startswith("Rebuilt by ") for f in new["known_failures"]) == 1


@pytest.mark.parametrize("name", ["modl_fastmri_diverse", "varnet_fastmri_diverse"])
def test_make_weights_over_the_shipped_card_keeps_only_its_descriptive_sections(
        monkeypatch, tmp_path, name):
    """F1 on the shipped cards: the Makefile's recipe with the audit's budget (`--max-steps 2
    --val-every 1 --val-slices 1`) over a copy of the shipped pair."""
    out = tmp_path / f"{name}.pt"
    for suffix in (".pt", ".yaml"):
        shutil.copy(WEIGHTS_DIR / f"{name}{suffix}", out.with_suffix(suffix))
    shipped = yaml.safe_load(out.with_suffix(".yaml").read_text())
    md = _tiny_modl(monkeypatch, [14.612, 14.5])
    budget = dict(seed=0, max_steps=2, val_every=1, val_slices=1, workers=0, threads=1)
    if name.startswith("modl"):
        md.train(out, iterations=10, widths=(320, 368), **budget)
    else:
        md.train_varnet(out, **budget)
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    t = card["training"]
    assert t["validation"]["PSNR"] == 14.612 and t["steps"] == 2 and t["best_step"] == 1
    assert isinstance(t["wall_time_s"], float) and [h["step"] for h in t["validation_history"]] == [1, 2]
    for key in ("previous_weights", "make_target", "note", "optimizer"):
        assert key not in t, key
    assert set(card) - {"model", "training", "rebuilt"} <= set(DESCRIPTIVE)
    assert "metrics_held_out" in shipped and "metrics_held_out" not in card
    assert card["full_geometry"] == shipped["full_geometry"] and card["data"] == shipped["data"]
    assert card["known_failures"][1:] == shipped["known_failures"]
    assert card["model"] == shipped["model"] and card["training_range"] == shipped["training_range"]


def test_a_rebuild_of_another_recipe_keeps_nothing_of_the_earlier_card(monkeypatch, tmp_path):
    """The earlier card's text describes its recipe (seed, data): a run of another seed gets a
    card of its own."""
    out = tmp_path / "modl_fastmri_diverse.pt"
    for suffix in (".pt", ".yaml"):
        shutil.copy(WEIGHTS_DIR / f"modl_fastmri_diverse{suffix}", out.with_suffix(suffix))
    md = _tiny_modl(monkeypatch, [1.0])
    md.train(out, seed=1, iterations=10, widths=(320, 368), max_steps=1, val_every=1, val_slices=1,
             workers=0, threads=1)
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert "full_geometry" not in card and "metrics_held_out" not in card and "rebuilt" not in card
    assert card["training"]["steps"] == 1 and "--seed 1 " in card["training"]["command"]


def test_two_or_more_data_workers_are_another_recipe(monkeypatch, tmp_path):
    """Each data worker of ``train modl`` draws its own sample stream, so 2 workers train on
    other data than 0 or 1 (the first targets' sums 11465 / 16633 against 11465 / 171): a rebuild
    at 2 kept the shipped card's text as a budget change."""
    out = tmp_path / "modl_fastmri_diverse.pt"
    budget = dict(iterations=10, widths=(320, 368), max_steps=1, val_every=1, val_slices=1,
                  threads=1)
    for workers, kept in ((0, True), (2, False)):
        for suffix in (".pt", ".yaml"):  # the shipped command: the default, 1 worker
            shutil.copy(WEIGHTS_DIR / f"modl_fastmri_diverse{suffix}", out.with_suffix(suffix))
        md = _tiny_modl(monkeypatch, [1.0])
        md.train(out, workers=workers, **budget)
        card = yaml.safe_load(out.with_suffix(".yaml").read_text())
        assert ("full_geometry" in card and "rebuilt" in card) == kept, workers


def _fast_prior(monkeypatch):
    import mrirecon.training.denoiser_prior as prior

    g = torch.Generator().manual_seed(0)
    monkeypatch.setattr(prior, "build_pool", lambda count, patch, seed: (
        torch.randn(count, patch, patch, dtype=torch.complex64, generator=g),
        torch.zeros(count, dtype=torch.bool)))
    return prior


def test_train_prior_writes_a_card_and_removes_its_snapshot(monkeypatch, tmp_path):
    """F2 / F5: `train prior` wrote the .pt only (the shipped card stayed beside new weights)
    and left OUT.partial.pt beside the finished output."""
    from mrirecon.training.weights import load_pretrained

    prior = _fast_prior(monkeypatch)
    out = tmp_path / "p.pt"
    kw = dict(pool_size=4, patch=16, depth=2, features=4, batch=1, threads=1, log=10000)
    prior.train(out, max_steps=501, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.pt", "p.yaml"]
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    t = card["training"]
    assert t["steps"] == 501 and t["wall_time_s"] >= 0 and "--threads 1 " in t["command"]
    assert card["model"] == {"name": "pnp_dpir", "params": {"depth": 2, "features": 4}}
    assert load_pretrained(out).denoiser is not None

    # a tuned schedule and held-out scores added by hand; rebuilt with another budget
    card["model"]["params"].update(iterations=40, lam=1e-6)
    card.update(metrics_held_out={"4x": 33.0}, tuning={"grid": []})
    out.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    prior.train(out, max_steps=3, **kw)
    new = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert new["training"]["steps"] == 3 and "metrics_held_out" not in new and "tuning" not in new
    assert new["model"]["params"] == {"iterations": 40, "lam": 1e-6, "depth": 2, "features": 4}
    # over the shipped card with a recipe it does not describe (its pool, batch): a fresh card
    shutil.copy(WEIGHTS_DIR / "pnp_dncnn_diverse.yaml", out.with_suffix(".yaml"))
    prior.train(out, max_steps=3, **{**kw, "depth": 8, "features": 32})
    new = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert new["training"]["steps"] == 3 and "metrics_held_out" not in new and "rebuilt" not in new
    assert "1075" not in yaml.safe_dump(new)


def test_train_denoiser_over_the_shipped_card_writes_its_own_record(monkeypatch, tmp_path):
    """F2: `train denoiser` left the shipped card (3072 steps, held-out scores) beside new
    weights; now the card is this run's, keeping the shipped ADMM settings and descriptive text."""
    from mrirecon.training import denoiser as script
    from mrirecon.training.weights import load_pretrained

    monkeypatch.setattr(script, "clean_images", lambda *a, **k: torch.ones(2, 64, 64, dtype=torch.complex64))
    out = tmp_path / "pnp_dncnn_brain_sim.pt"
    shutil.copy(WEIGHTS_DIR / "pnp_dncnn_brain_sim.yaml", out.with_suffix(".yaml"))
    shipped = yaml.safe_load(out.with_suffix(".yaml").read_text())
    script.train_denoiser(out, max_steps=2, threads=1)
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert card["training"]["steps"] == 2 and "--threads 1 " in card["training"]["command"]
    assert "metrics_held_out" not in card and "deployment_tuning" not in card
    assert card["model"] == shipped["model"] and card["description"] == shipped["description"]
    model = load_pretrained(out)
    assert (model.iterations, model.rho) == (shipped["model"]["params"]["iterations"],
                                             shipped["model"]["params"]["rho"])


def test_shipped_card_configs_train_their_recorded_steps():
    """F3: modl_brain_sim / primal_dual_ct_sim recorded 350 / 450 steps, but their config block
    said max_steps 600 (replaying it crossed lr_step 480); it must be their config_file's."""
    from mrirecon.core.config import load_config, to_dict
    from mrirecon.training.config import TrainConfig
    from mrirecon.training.validate import validate_training

    root = WEIGHTS_DIR.parent.parent
    checked = 0
    for path in sorted(WEIGHTS_DIR.glob("*.yaml")):
        t = yaml.safe_load(path.read_text()).get("training") or {}
        if "config" not in t:
            continue
        assert t["config"]["optim"]["max_steps"] == t["steps"], path.name
        recorded = to_dict(validate_training(load_config_from_dict(t["config"])))
        replay = to_dict(validate_training(load_config(TrainConfig, root / t["config_file"])))
        assert recorded == replay, path.name
        checked += 1
    assert checked >= 3


def load_config_from_dict(data):
    from mrirecon.core.config import from_dict
    from mrirecon.training.config import TrainConfig

    return from_dict(TrainConfig, data, source="card")


def test_num_workers_that_change_nothing_are_said(tmp_path):
    """F4: `--set data.num_workers=64` trained bit-identical weights without a word."""
    import warnings

    from mrirecon.training.validate import validate_training

    data = {"name": "t", "output_dir": str(tmp_path), "data": {"train": "a", "val": "b", "num_workers": 64},
            "model": {"name": "modl", "params": {"iterations": 1}}}
    with pytest.warns(FutureWarning, match=r"card: data\.num_workers: 64 has no effect.*--prefetch"):
        validate_training(load_config_from_dict(data), "card")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate_training(load_config_from_dict({**data, "data": {"train": "a", "val": "b"}}), "card")


def test_card_commands_parse_as_written():
    """Minor: commands in card notes lacked the required --out; a `False` flag of a trainer was
    recorded as `--estimate-sensitivities False`, which the command line refuses."""
    from mrirecon import cli
    from mrirecon.cli_train import normalise_argv
    from mrirecon.training.run_card import trainer_command

    def parses(command):
        return cli.build_parser().parse_args(normalise_argv(shlex.split(command)[1:]))

    def strings(x):
        if isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, list):
            for v in x:
                yield from strings(v)
        elif isinstance(x, str):
            yield x

    found = 0
    for path in sorted(WEIGHTS_DIR.glob("*.yaml")):
        for text in strings(yaml.safe_load(path.read_text())):
            for m in re.finditer(r"mrirecon train [a-z_]+ --[^`;\n]*?(?=; |`|$|\)|, then| plus)", text):
                parses(m.group(0))  # SystemExit names what is wrong
                found += 1
    assert found >= 10
    varnet = parses(trainer_command("varnet", "v.pt", {"threads": 1, "estimate_sensitivities": False}))
    assert varnet.estimate_sensitivities is False and varnet.out == "v.pt"


def test_descriptive_sections_of_the_shipped_cards_hold_no_scores():
    """What a rebuild keeps (run_card.DESCRIPTIVE) must not hold the shipped weights' scores:
    pnp_dncnn_brain_sim kept its first tuning grid under data."""
    from mrirecon.training import run_card

    assert run_card.DESCRIPTIVE == DESCRIPTIVE  # this test reads the sections it names

    def keys(x, path):
        if isinstance(x, dict):
            for k, v in x.items():
                yield f"{path}.{k}"
                yield from keys(v, f"{path}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                yield from keys(v, f"{path}[{i}]")

    for path in sorted(WEIGHTS_DIR.glob("*.yaml")):
        card = yaml.safe_load(path.read_text())
        bad = [k for s in DESCRIPTIVE if s in card for k in keys(card[s], s)
               if DESCRIPTIVE_METRIC_KEYS.search(k.rsplit(".", 1)[-1])]
        assert not bad, (path.name, bad[:3])


# ---- train gmm / perceptual / radial (the trainers that wrote their cards from scratch) --------


def _parsed(command):
    """``command`` (a card's ``training.command``) as the command line parses it."""
    from mrirecon import cli
    from mrirecon.cli_train import normalise_argv

    return cli.build_parser().parse_args(normalise_argv(shlex.split(command)[1:]))


def _shipped_pair(name, out):
    for suffix in (".pt", ".yaml"):
        shutil.copy(WEIGHTS_DIR / f"{name}{suffix}", out.with_suffix(suffix))
    return yaml.safe_load(out.with_suffix(".yaml").read_text())


def test_train_gmm_over_the_shipped_card_records_its_own_run(monkeypatch, tmp_path):
    """`train gmm` wrote `data.command: mrirecon train gmm --out mrirecon/weights/patch_gmm.pt`
    whatever its --out and options, no --threads, and, over the shipped card, dropped its
    hand-written training_range and known_failures (`mrirecon run` then checked no range)."""
    import mrirecon.training.fit_gmm as fit

    rng = np.random.default_rng(0)
    monkeypatch.setattr(fit, "training_images",  # the recipe's options, 2 images of noise
                        lambda **k: [rng.random((k["size"], k["size"])) for _ in range(2)])
    out = tmp_path / "patch_gmm.pt"
    shipped = _shipped_pair("patch_gmm", out)
    card = fit.fit_and_save(out, iterations=1, threads=1)
    assert yaml.safe_load(out.with_suffix(".yaml").read_text()) == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["patch_gmm.pt", "patch_gmm.yaml"]
    t = card["training"]
    run = _parsed(t["command"])
    assert (run.out, run.threads, run.iterations, run.components, run.seed) == (str(out), 1, 1, 20, 2011)
    assert t["steps"] == 1 and t["seed"] == 2011 and t["wall_time_s"] >= 0 and "1 thread(s)" in t["hardware"]
    assert "command" not in card["data"] and card["data"]["images"] == 2
    # the same recipe (iterations are the budget): the descriptive text stays, flagged
    assert card["training_range"] == shipped["training_range"]
    assert card["known_failures"][1:] == shipped["known_failures"]
    assert card["known_failures"][0].startswith("Rebuilt by mrirecon train gmm on ")
    assert card["rebuilt"]["dropped"] == ["training"]
    # another seed over it: a card of its own, nothing of the shipped weights' scores
    card = fit.fit_and_save(out, iterations=1, seed=5, threads=1)
    assert "rebuilt" not in card and "training_range" not in card and "30.58" not in yaml.safe_dump(card)
    assert card["training"]["seed"] == 5 and " --seed 5" in card["training"]["command"]


def test_train_perceptual_over_the_shipped_card_records_its_own_run(monkeypatch, tmp_path):
    """`train perceptual` recorded `mrirecon train perceptual --out OUT` whatever its options
    (`--steps 2 --seed 3 --size 32` read as the 1000-step recipe) and no --threads; over the
    shipped card it dropped the hand-written known_failures."""
    import mrirecon.training.perceptual as perceptual

    monkeypatch.setattr(perceptual, "brain_slices", lambda count, size, seed: torch.rand(
        count, size, size, generator=torch.Generator().manual_seed(seed)))
    out = tmp_path / "perceptual_features.pt"
    shipped = _shipped_pair("perceptual_features", out)
    card = perceptual.train_and_save(str(out), steps=2, threads=1)
    t = card["training"]
    run = _parsed(t["command"])
    assert (run.steps, run.threads, run.size, run.seed, run.batch_size) == (2, 1, 64, 0, 16)
    assert t["steps"] == 2 and t["wall_time_s"] >= 0 and "1 thread(s)" in t["hardware"]
    assert card["known_failures"][1:] == shipped["known_failures"]
    assert card["known_failures"][0].startswith("Rebuilt by mrirecon train perceptual on ")
    assert card["rebuilt"]["dropped"] == ["training"]
    assert perceptual.load_feature_network(out).channels == tuple(shipped["model"]["params"]["channels"])
    card = perceptual.train_and_save(str(out), steps=2, size=32, seed=3, threads=1)
    assert "rebuilt" not in card and "1000 steps" not in yaml.safe_dump(card)
    assert "--size 32 " in card["training"]["command"] and "--seed 3" in card["training"]["command"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, out.with_suffix(".yaml").name]


def test_train_radial_records_its_command_and_keeps_no_earlier_scores(tmp_path):
    """`train radial` recorded no command (`data.reproduce` said `OMP_NUM_THREADS=1` whatever
    the threads), no seed, and `1 thread(s), shared` for any machine; a rebuild of the same
    recipe goes through the shared rule (its run record and pipeline scores dropped)."""
    from mrirecon.training.radial import train_radial

    out = tmp_path / "modl_radial_sim"
    _shipped_pair("modl_radial_sim", out.with_suffix(".pt"))
    kw = dict(size=32, spokes=16, volumes=1, slices=1, threads=1)
    card = train_radial(out, steps=2, **kw)
    t = card["training"]
    run = _parsed(t["command"])
    assert (run.steps, run.threads, run.size, run.spokes, run.seed) == (2, 1, [32], [16], 0)
    assert t["seed"] == 0 and t["hardware"].endswith(" 1 thread(s)") and t["wall_time_s"] >= 0
    assert card["data"]["reproduce"] == t["command"] and "rebuilt" not in card
    for key in ("metrics_pipeline", "tried_not_shipped", "metrics_held_out_by_geometry"):
        assert key not in card
    # scores and a note added by hand, a descriptive section too; rebuilt with another budget
    card.update(metrics_pipeline={"x": {"PSNR": 47.4}}, normalisation="by hand")
    card["training"]["note"] = "by hand"
    out.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    new = train_radial(out, steps=1, **kw)
    assert new["training"]["steps"] == 1 and "note" not in new["training"]
    assert "metrics_pipeline" not in new and new["normalisation"] == "by hand"
    assert set(new["rebuilt"]["dropped"]) == {"training", "metrics_held_out", "metrics_pipeline"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["modl_radial_sim.pt", "modl_radial_sim.yaml"]


def test_a_nan_validation_score_is_never_the_best_even_when_it_comes_first():
    """Fails if run_card.py:145 the best point's key without the NaN guard: ``max`` keeps a
    leading NaN (every comparison with it is False), so the card's best PSNR would be NaN."""
    from mrirecon.training.run_card import validation_summary

    rows = [{"step": 2, "val_PSNR": float("nan")}, {"step": 4, "val_PSNR": 21.0},
            {"step": 6, "val_PSNR": 23.5}, {"step": 8, "val_PSNR": 22.0}]
    s = validation_summary(rows)["psnr"]
    assert s["best"] == {"step": 6, "value": 23.5}
    assert s["last"] == {"step": 8, "value": 22.0} and math.isnan(s["first"]["value"])


def test_a_model_that_only_ties_its_baseline_is_reported():
    """Fails if run_card.py:164 ``<=`` -> ``<``: a final PSNR equal to the model-free
    baseline's is no better than the input, as documented ("no higher than")."""
    from mrirecon.training.run_card import validation_problem

    summary = {"psnr": {"first": {"step": 2, "value": 18.0}, "last": {"step": 8, "value": 20.0}},
               "baseline": {"PSNR": 20.0, "method": "zero-filled"}}
    assert "no better than its input" in (validation_problem(summary, 1e-3) or "")
    summary["baseline"]["PSNR"] = 19.99
    assert validation_problem(summary, 1e-3) is None


def test_train_prior_loss_is_the_l1_error_over_sigma(monkeypatch, tmp_path):
    """Fails if denoiser_prior.py: ``/ sigma`` dropped from the loss: the card says the loss is
    the L1 denoising error divided by sigma, so every noise level weighs alike. Reference: a
    denoiser that returns its input (all weights zero, learning rate 0) has error n * sigma with
    complex noise of std 1 per part, so the loss is E|n| = sqrt(pi / 2) (Rayleigh mean); 64
    patches of 16 x 16 per step x 4 steps leave a sampling error far below the 5 % tolerance.
    Without ``/ sigma`` it is sigma-sized (<= 0.5 x sqrt(pi / 2))."""
    import math

    import mrirecon.models.pnp.dpir as dpir
    import mrirecon.training.denoiser_prior as prior

    monkeypatch.setattr(prior, "build_pool", lambda count, patch, seed: (
        torch.zeros(count, patch, patch, dtype=torch.complex64), torch.zeros(count, dtype=torch.bool)))

    class Identity(dpir.PnPDPIR):
        def __init__(self, **kw):
            super().__init__(**kw)
            with torch.no_grad():
                for p in self.denoiser.parameters():
                    p.zero_()

    monkeypatch.setattr(dpir, "PnPDPIR", Identity)
    s = prior.train(tmp_path / "p.pt", pool_size=4, patch=16, depth=2, features=4, batch=64,
                    threads=1, lr=0.0, max_steps=4, log=10000)
    assert abs(s["final_loss_l1_over_sigma"] / math.sqrt(math.pi / 2) - 1) < 0.05


def test_a_last_validation_a_few_hundredths_below_the_first_is_not_called_diverged():
    """Fails if a final PSNR 0.03 dB below the first (validation noise) is reported as
    divergence ("20.8 dB < 20.8 dB ...; lower optim.lr"), or if a drop past the margin is not,
    or is printed with too few digits to show it."""
    from mrirecon.training.run_card import WORSE_MARGIN_DB, validation_problem

    summary = {"psnr": {"first": {"step": 3, "value": 20.8107},
                        "last": {"step": 6, "value": 20.7835}}}
    assert validation_problem(summary, 1e-3) is None
    summary["psnr"]["last"]["value"] = 20.8107 - 1.5 * WORSE_MARGIN_DB
    assert "20.66 dB < 20.81 dB at step 3" in (validation_problem(summary, 1e-3) or "")
