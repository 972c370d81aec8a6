"""Shipped weights: size, model cards, safe loading, and that they beat zero-filled on new data."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.validation import evaluate_reconstructor, model_reconstructor, zero_filled
from mrirecon.training.weights import WEIGHTS_DIR, available_weights, load_pretrained, model_card

from tests.helpers import ROOT

MRI = ("varnet_brain_sim", "modl_brain_sim")
CT = ("primal_dual_ct_sim",)
SHIPPED = MRI + CT
REPO = ROOT


def test_shipped_weights_present():
    assert set(SHIPPED) <= set(available_weights())


@pytest.mark.parametrize("name", SHIPPED)
def test_card_and_size(name):
    pt = WEIGHTS_DIR / f"{name}.pt"
    assert pt.stat().st_size < 5 * 2**20
    card = model_card(name)
    assert {"model", "data", "training", "metrics_held_out"} <= set(card)
    t = card["training"]
    assert t["steps"] > 0 and t["wall_time_s"] > 0
    # the config in the repository reproduces the card's run (same data, model, optimiser)
    config = yaml.safe_load((REPO / t["config_file"]).read_text())
    assert config["model"] == card["model"] == t["config"]["model"]
    assert config["optim"]["max_steps"] == t["steps"]
    for key in ("lr", "batch_size", "lr_step", "lr_gamma"):
        assert config["optim"][key] == t["config"]["optim"][key]
    for key, value in config["data"].items():
        assert t["config"]["data"][key] == value, key
    metrics = card["metrics_held_out"]
    assert list(metrics) == (["4x", "8x"] if name in MRI else ["30 views"])
    for entry in metrics.values():
        baselines = ("zero_filled", "cg_sense") if name in MRI else ("fbp",)
        for b in baselines:
            assert entry["model"]["SSIM"] > entry[b]["SSIM"]
            assert entry["model"]["NMSE"] < entry[b]["NMSE"]
    state = torch.load(pt, weights_only=True)  # a plain state_dict, no pickled code
    assert all(isinstance(v, torch.Tensor) for v in state.values())


CARDS = sorted(p.stem for p in WEIGHTS_DIR.glob("*.yaml"))
#: what `mrirecon run` checks against a card (mrirecon/pipeline/model_range.py)
RANGE_KEYS = {"matrix", "coils", "accelerations", "spokes", "views", "trajectory", "maps_crop",
              "geometry", "detectors", "nyquist_fraction", "noise_levels", "photons",
              "readout_oversampling", "maps", "acs_columns", "snr_db"}  # what model_range checks


@pytest.mark.parametrize("name", CARDS)
def test_every_card_says_where_the_model_fails_and_what_it_saw(name):
    """Every card has a non-empty "known_failures" list; every reconstruction model's card has a
    training_range made of keys the pipeline checks (a misspelt key would be ignored silently),
    with ordered intervals; radial models state their spokes and image grid."""
    card = model_card(name)
    failures = card.get("known_failures")
    assert isinstance(failures, list) and all(isinstance(f, str) and f.strip() for f in failures)
    assert any(len(f) > 60 for f in failures), name  # at least one real sentence
    if card.get("kind", "reconstruction") != "reconstruction":
        return
    rng = card["training_range"]
    assert rng and set(rng) <= RANGE_KEYS, (name, set(rng) - RANGE_KEYS)
    for key, iv in rng.items():
        if key in ("trajectory", "geometry", "maps"):
            assert iv and all(isinstance(k, str) for k in iv), (name, iv)
            continue
        lo, hi = (iv["min"], iv["max"]) if key == "matrix" else ([iv[0]], [iv[1]])
        if key == "maps_crop":  # an ESPIRiT crop: 0 (no crop) is a valid bound
            assert all(0 <= a <= b < 1 for a, b in zip(lo, hi)), (name, key, iv)
            continue
        assert all(0 < a <= b for a, b in zip(lo, hi)), (name, key, iv)
    if "radial" in name:
        assert {"matrix", "coils", "spokes", "trajectory"} <= set(rng) and "accelerations" not in rng


def test_radial_training_card_states_range_and_failures():
    """`mrirecon train radial` writes the training_range the pipeline checks and known
    failures that compare the model with the classical radial pipeline (TV) on its held-out slices."""
    from mrirecon.training.radial import COILS, _known_failures, _Options

    args = _Options(out="x", model="modl", steps=5, size=32, spokes=24, volumes=2, slices=1, lr=1e-3)
    worse = _known_failures(args, {"model": {"PSNR": 22.0}, "tv_mri_radial_cs": {"PSNR": 25.0}})
    better = _known_failures(args, {"model": {"PSNR": 27.0}, "tv_mri_radial_cs": {"PSNR": 25.0}})
    assert "32 x 32 image, 24 golden-angle spokes x 64 samples" in worse[0]
    assert f"{COILS[0]}-{COILS[1]}" in worse[0]
    assert "mri_radial_cs runs it scores 25.00 dB PSNR against 22.00 dB" in worse[-1]
    assert len(better) == len(worse) - 1 and not any("mri_radial_cs" in f for f in better)


def test_radial_training_on_two_geometries(tmp_path):
    """`train radial --size 32 48 --spokes 16 24`: the sizes and spoke counts pair up into two
    geometries, each with its own training volumes and held-out scores; the training range
    spans both and the reproduce command gives both back."""
    from mrirecon.training.radial import geometries, train_radial

    assert geometries(64, 40) == [(64, 40)]
    assert geometries((32, 48), (16, 24)) == [(32, 16), (48, 24)]
    with pytest.raises(ValueError, match="must pair up"):
        geometries((32, 48), (16,))
    card = train_radial(tmp_path / "m", steps=2, size=(32, 48), spokes=(16, 24), volumes=1, slices=1)
    by = card["metrics_held_out_by_geometry"]
    assert set(by) == {"32x16", "48x24"} and card["metrics_held_out"] == by["32x16"]
    assert by["32x16"]["gridding"] != by["48x24"]["gridding"]  # each scored on its own data
    assert card["training_range"]["matrix"] == {"min": [32, 32], "max": [48, 48]}
    assert card["training_range"]["spokes"] == [16, 24]
    assert "--size 32 48 --spokes 16 24" in card["data"]["reproduce"]
    assert card["data"]["train"] == {"volumes": 2, "slices": 2, "seed": 21}
    assert "2 geometries only (32 x 32 image, 16 golden-angle spokes" in card["known_failures"][0]


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("held_out")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=5, size=(128, 128), seed=977)
    return out


@pytest.mark.parametrize("name", MRI)
def test_shipped_model_beats_zero_filled_on_new_volume(name, held_out):
    model = load_pretrained(name)
    assert not model.training
    card = model_card(name)
    mask = card["training"]["config"]["data"]["mask"]
    ds = MRITrainingSet(
        held_out,
        MaskConfig(
            type=mask["type"],
            center_fractions=(mask["center_fractions"][0],),
            accelerations=(mask["accelerations"][0],),
        ),
        maps=card["training"]["config"]["data"]["maps"],
        train=False,
    )
    with torch.no_grad():
        learned = evaluate_reconstructor(model_reconstructor(model), ds).mean()
    baseline = evaluate_reconstructor(zero_filled, ds).mean()
    assert learned["SSIM"] > baseline["SSIM"] and learned["NMSE"] < baseline["NMSE"]


@pytest.fixture(scope="module")
def held_out_ct(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    out = tmp_path_factory.mktemp("held_out_ct")
    simulate_ct_dataset(
        out,
        geometry="parallel",
        views=180,
        photons=4096.0,
        size=128,
        seed=977,
        samples=2,
        part="test",
    )
    return out


@pytest.mark.parametrize("name", CT)
def test_shipped_ct_model_beats_fbp_on_new_images(name, held_out_ct):
    from mrirecon.training.data_ct import CTTrainingSet
    from mrirecon.training.validation import fbp_reconstructor

    model = load_pretrained(name)
    data = model_card(name)["training"]["config"]["data"]
    ds = CTTrainingSet(held_out_ct, data["ct_views"], data["ct_photons"], train=False)
    with torch.no_grad():
        learned = evaluate_reconstructor(model_reconstructor(model), ds).mean()
    baseline = evaluate_reconstructor(fbp_reconstructor, ds).mean()
    assert learned["SSIM"] > baseline["SSIM"] and learned["NMSE"] < baseline["NMSE"]


def test_load_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no weights named 'nonexistent'.*shipped"):
        load_pretrained("nonexistent")
    pt = tmp_path / "m.pt"
    torch.save({"weight": torch.zeros(2)}, pt)
    with pytest.raises(FileNotFoundError, match=r"model card .*m\.yaml is missing"):
        load_pretrained(pt)
    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": {"params": {}}}))
    with pytest.raises(ValueError, match=r"m\.yaml: 'model\.name' is required"):
        load_pretrained(pt)
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump({"model": {"name": "dncnn", "params": {"depth": 3}}})
    )
    with pytest.raises(ValueError, match=r"m\.pt does not match dncnn with the parameters of its "
                                         r"card .*m\.yaml: missing keys"):
        load_pretrained(pt)
    # weights of the card's model but another width: named by file and card, not a RuntimeError
    from mrirecon.models import build_model

    torch.save(build_model("dncnn", depth=3, features=8).state_dict(), pt)
    (tmp_path / "m.yaml").write_text(
        yaml.safe_dump({"model": {"name": "dncnn", "params": {"depth": 3, "features": 16}}}))
    with pytest.raises(ValueError, match=r"m\.pt does not match dncnn .*m\.yaml: size mismatch"):
        load_pretrained(pt)
    # weights a diverged training left: refused where they are read, naming the tensors
    state = build_model("dncnn", depth=3, features=16).state_dict()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][0] = float("nan")
    torch.save(state, pt)
    with pytest.raises(ValueError, match=rf"m\.pt holds NaN or Inf values in 1 of its {len(state)} "
                                         rf"tensors \({re.escape(first)}\)"):
        load_pretrained(pt)
    torch.save({"x": torch.nn.Linear(2, 2)}, pt)  # a pickled module: refused
    with pytest.raises(ValueError, match="cannot be read safely"):
        load_pretrained(pt)


def test_bad_parameter_values_from_a_card_or_an_override_are_refused_by_name(tmp_path):
    # values the pipeline's config check refuses must not slip in through the Python API or a
    # hand-edited card: zero / fractional / boolean / string unroll counts, a string for a flag
    from mrirecon.models import build_model

    pt = tmp_path / "m.pt"
    torch.save(build_model("modl", iterations=2, layers=3, features=4).state_dict(), pt)
    card = {"model": {"name": "modl", "params": {"iterations": 2, "layers": 3, "features": 4}},
            "overridable": ["iterations"]}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(card))
    assert load_pretrained(pt, overrides={"iterations": 7}).iterations == 7
    for bad in (0, -1, 2.5, "12", True):
        with pytest.raises(ValueError, match=r"iterations must be an integer >= 1.*m\.yaml and the overrides"):
            load_pretrained(pt, overrides={"iterations": bad})
    card["model"]["params"]["layers"] = 0
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ValueError, match=r"layers must be an integer >= 1.*m\.yaml\)"):
        load_pretrained(pt)
    with pytest.raises(ValueError, match=r"build_model\('staged_ct'\): ensemble must be true or false, got 'false'"):
        build_model("staged_ct", ensemble="false")
    # a per-stage list may skip a stage; any other non-number is refused
    assert build_model("staged_ct", iterations=2, lam=[0.1, None]).lam == [0.1, None]
    with pytest.raises(ValueError, match="lam must be a number"):
        build_model("staged_ct", iterations=2, lam=[0.1, "x"])


def test_pnp_brain_schedule_is_the_winner_of_its_deployment_grid():
    """pnp_dncnn_brain_sim runs the schedule its card's deployment-geometry grid chose (best PSNR
    summed over 4x and 8x, the rule of the other PnP schedules)."""
    if "pnp_dncnn_brain_sim" not in available_weights():
        pytest.skip("pnp_dncnn_brain_sim weights not shipped")
    card = model_card("pnp_dncnn_brain_sim")
    grid = card["deployment_tuning"]["grid"]
    best = max(grid, key=lambda g: g["PSNR_4x"] + g["PSNR_8x"])
    assert len(grid) >= 4 and {g["iterations"] for g in grid} >= {30, 40, 60}
    params = card["model"]["params"]
    assert (params["iterations"], params["rho"]) == (best["iterations"], best["rho"])
    model = load_pretrained("pnp_dncnn_brain_sim")
    assert (model.iterations, model.rho) == (best["iterations"], best["rho"])


@pytest.mark.parametrize("rng, field", [
    ({"views": ["a", "b"]}, r"training_range\.views: expected \[min, max\] numbers"),
    ({"views": 30}, r"training_range\.views: expected"),  # a scalar switched the warning off
    ({"views": [63, 30]}, r"training_range\.views: .*min <= max"),
    ({"view": [30, 63]}, r"training_range\.view: expected one of matrix"),  # misspelled
    ({"matrix": {"min": 362}}, r"training_range\.matrix: expected \{min: \[H, W\]"),
    ({"matrix": {"min": [362], "max": [362, 362]}}, r"training_range\.matrix \(dimension 0\)"),
    ([30, 63], r"training_range: expected a mapping"),
    ({"trajectory": "radial"}, r"training_range\.trajectory: expected a list of names"),
    ({"trajectory": []}, r"training_range\.trajectory: expected a list of names"),
    ({"geometry": "parallel"}, r"training_range\.geometry: expected a list of names"),
    ({"geometry": ["cone"]}, r"training_range\.geometry: expected a list of CT beam types"),
    ({"detectors": 513}, r"training_range\.detectors: expected \[min, max\] numbers"),
    ({"detectors": [1025, 513]}, r"training_range\.detectors: .*min <= max"),
])
def test_malformed_training_range_names_the_card_and_field(tmp_path, rng, field):
    from mrirecon.models import build_model

    pt = tmp_path / "m.pt"
    torch.save(build_model("dncnn", depth=3, features=8).state_dict(), pt)
    card = {"model": {"name": "dncnn", "params": {"depth": 3, "features": 8}}, "training_range": rng}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ValueError, match=r"m\.yaml: " + field):
        load_pretrained(pt)
    card["training_range"] = {"views": [30, 63], "matrix": {"min": [8, 8], "max": [512, 512]}}
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(card))
    assert load_pretrained(pt).model_card["training_range"]["views"] == [30, 63]


@pytest.mark.parametrize("maps", ["espirit", "learned"])
def test_radial_training_writes_weights_its_pipeline_loads(tmp_path, maps):
    """`mrirecon train radial` end to end (2 steps at 32 x 32): the card names the
    density-weighted architecture, the weights load through the pipeline's loader into the same
    model, and the card compares it with TV as mri_radial_cs runs it."""
    from mrirecon.data.simulate_noncartesian import make_trajectory
    from mrirecon.operators import nufft_sense
    from mrirecon.training.radial import TV, train_radial
    from mrirecon.training.weights import load_model

    card = train_radial(tmp_path / "r", maps=maps, steps=2, size=32, spokes=16, volumes=1, slices=1)
    assert card["model"]["name"] == "density_weighted"
    assert card["model"]["params"]["model"] == ("modl" if maps == "espirit" else "learned_maps")
    assert {"model", "gridding", "cg_sense_10it", "tv_mri_radial_cs"} <= set(card["metrics_held_out"])
    assert card["training"]["optimizer"].startswith("Adam lr 0.001, cosine")
    assert "--weighting density" in card["data"]["reproduce"]
    pipeline = yaml.safe_load((ROOT / "pipelines" / "mri_radial_cs.yaml").read_text())
    assert pipeline["reconstruct"]["params"] == TV  # the card's classical row is the pipeline's
    model = load_model("density_weighted", {}, tmp_path / "r.pt")
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    traj, _ = make_trajectory("radial", (32, 32), 16)
    maps_ = torch.full((1, 4, 32, 32), 0.5, dtype=torch.complex64)
    y = torch.randn(1, 4, *traj.shape[:-1], dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = model(y, nufft_sense(maps_, traj))
    assert x.shape == (1, 32, 32) and torch.isfinite(x).all()


@pytest.mark.parametrize("dim", [0, 1])
def test_training_range_matrix_min_above_max_is_refused_in_each_dimension(dim):
    """Fails if only dimension 0 of training_range.matrix checked for min <= max."""
    from mrirecon.training.weights import check_training_range

    lo, hi = [64, 64], [128, 128]
    lo[dim], hi[dim] = 256, 32
    with pytest.raises(ValueError, match=rf"training_range\.matrix \(dimension {dim}\)"):
        check_training_range({"matrix": {"min": lo, "max": hi}}, "card.yaml")
    check_training_range({"matrix": {"min": [64, 64], "max": [128, 128]}}, "card.yaml")


def test_card_path_follows_a_link_to_weights_with_a_card(tmp_path):
    """Fails if the card always looked for beside the link: a link to shipped weights was taken
    for weights without a card."""
    import os

    from mrirecon.training.weights import card_path

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "w.pt").write_bytes(b"x")
    (tmp_path / "a" / "w.yaml").write_text("model: {name: modl}\n")
    link = tmp_path / "b" / "link.pt"
    os.symlink(tmp_path / "a" / "w.pt", link)
    assert card_path(link) == (tmp_path / "a" / "w.yaml").resolve()
    own = tmp_path / "b" / "link.yaml"
    own.write_text("model: {name: modl}\n")
    assert card_path(link) == own  # a card beside the link wins
    assert card_path(tmp_path / "a" / "w.pt") == tmp_path / "a" / "w.yaml"


def test_radial_uniform_maps_have_unit_sum_of_squares():
    """Fails if radial.py ``c ** -0.5`` -> ``1 / c``: the operator of ``--maps learned`` radial
    training carries uniform maps with sum_c |S_c|^2 = 1, as the pipeline's when calibration is
    skipped; 1 / C scaled the adjoint and gram by 1 / C against the pipeline (a model trained on
    one scale, run on another)."""
    from mrirecon.training.radial import uniform_maps

    for coils in (1, 4, 7):
        y = torch.zeros(2, coils, 5, 9, dtype=torch.complex64)
        m = uniform_maps(y, 6)
        assert m.shape == (2, coils, 6, 6) and m.dtype == y.dtype
        eps = torch.finfo(torch.float32).eps
        assert torch.allclose(m.abs().pow(2).sum(1), torch.ones(2, 6, 6), atol=4 * coils * eps)


def test_radial_training_range_spans_geometries_given_largest_first(tmp_path):
    """Fails if radial.py training_range ``matrix.min: [min(args.size)] * 2`` ->
    ``[args.size[0]] * 2``: ``--size 48 32 --spokes 24 16`` (the larger geometry first) must
    record the same training range as ``--size 32 48``: min 32, max 48; the mutant recorded
    min 48 and ``mrirecon run`` warned on the 32 x 32 data the model was trained on."""
    from mrirecon.training.radial import train_radial

    card = train_radial(tmp_path / "m", steps=1, size=(48, 32), spokes=(24, 16), volumes=1, slices=1)
    r = card["training_range"]
    assert r["matrix"] == {"min": [32, 32], "max": [48, 48]} and r["spokes"] == [16, 24]
