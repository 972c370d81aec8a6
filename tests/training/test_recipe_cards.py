"""The shipped cards say what their recipes draw (audit a17 of the training recipes).

The weights cannot be retrained here, so the recipes stay as they are and the text follows them:
the reflect padding of ``prior_images._crop`` at 320 / 362 pixels (mirror-tiled natural, MNI
and CT images), the VarNet card's coil maps and loss rows, the weights README's TV rows, and the
MNI contrasts the deployment recipe draws (no FLAIR)."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import yaml

from mrirecon.training.weights import WEIGHTS_DIR

#: Zoom ranges of ``PriorImageBank.magnitude`` (mrirecon/training/prior_images.py).
ZOOM = {"natural": (0.35, 1.2), "mni": (0.7, 2.0), "ct": (0.3, 1.0)}


def _card(name: str) -> dict:
    return yaml.safe_load((WEIGHTS_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _padded_fraction(shapes, size: int, zoom: tuple[float, float]) -> float:
    """Fraction of ``_crop`` draws (source uniform among ``shapes``, zoom uniform in ``zoom``)
    whose zoomed source is smaller than ``size`` on a side, so ``_crop`` reflect-pads it: the
    zoomed side is ``round(side * z)`` (``scipy.ndimage.zoom``), below ``size`` for
    ``z < (size - 0.5) / side``."""
    lo, hi = zoom
    return float(np.mean([np.clip(((size - 0.5) / min(s) - lo) / (hi - lo), 0.0, 1.0)
                          for s in shapes]))


def test_the_padding_rule_is_scipys_zoom_shape():
    """``_padded_fraction``'s threshold against ``ndimage.zoom``'s real output shapes."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for side in (128, 172, 303, 512):
        for z in rng.uniform(0.3, 2.0, 20):
            zoomed = min(ndimage.zoom(np.zeros((side, side + 7)), z, order=0).shape)
            assert (zoomed < 320) == (z < (320 - 0.5) / side)


@pytest.fixture(scope="module")
def source_shapes():
    from mrirecon.training.prior_images import ct_sources, natural_sources

    return {"natural": [a.shape for a in natural_sources()], "ct": [a.shape for a in ct_sources()]}


def _percent(text: str, pattern: str) -> int:
    m = re.search(pattern, " ".join(text.split()))
    assert m, (pattern, text)
    return int(m.group(1))


@pytest.mark.parametrize("name", ["modl_fastmri_diverse", "varnet_fastmri_diverse"])
def test_mri_cards_state_the_mirror_tiled_fraction_at_320(name, source_shapes):
    sources = _card(name)["data"]["sources"]
    for kind in ("natural", "ct"):
        stated = _percent(sources[kind], r"mirror-tiled\) in (\d+) % of")
        assert abs(stated - 100 * _padded_fraction(source_shapes[kind], 320, ZOOM[kind])) <= 0.5
    weights = {"natural": 0.35, "ct": 0.05}  # deploy_mri.SOURCE_WEIGHTS; mni uses _fit (zero pad)
    overall = sum(w * _padded_fraction(source_shapes[k], 320, ZOOM[k]) for k, w in weights.items())
    stated = _percent(sources["natural"], r"(\d+) % of all training images")
    assert abs(stated - 100 * overall) <= 0.5


@pytest.mark.parametrize("name", ["staged_ct_lodopab", "primal_dual_lodopab"])
def test_ct_cards_state_the_mirror_tiled_fraction_at_362(name, source_shapes):
    """The texture draws of ``ct_staged.CTImageRecipe`` at 362 x 362; the MNI slices are
    128-192 pixels (91 % of draws padded at 192, all at 128 and 160)."""
    from mrirecon.training.ct_primal_dual import DATA_TEXT
    from mrirecon.training.ct_staged import card_data

    text = _card(name)["data"]["source"]
    written = card_data(False) if name == "staged_ct_lodopab" else DATA_TEXT  # what a rebuild writes
    assert text == written["source"]
    for kind, label in (("natural", "natural"), ("ct", "CT")):
        stated = _percent(text, rf"{label} (\d+) %")
        assert abs(stated - 100 * _padded_fraction(source_shapes[kind], 362, ZOOM[kind])) <= 0.5
    lo, hi = (round(100 * _padded_fraction([(n, n)], 362, ZOOM["mni"])) for n in (192, 128))
    assert f"MNI {lo}-{hi} %" in " ".join(text.split())


# ---- finding 1: the perfusion frames are named as textures wherever CT sources are listed ----


@pytest.mark.parametrize("name", ["modl_fastmri_diverse", "varnet_fastmri_diverse",
                                  "pnp_dncnn_diverse", "staged_ct_lodopab", "primal_dual_lodopab"])
def test_cards_say_two_ct_frames_are_a_perfusion_map_used_as_texture(name):
    data = _card(name)["data"]
    text = " ".join(str(data.get("sources", {}).get("ct", data.get("source"))).split())
    assert "eCT_Supplemental.dcm" in text and "perfusion map" in text and "texture" in text


# ---- finding 3: the VarNet card's maps and loss rows ----------------------------------------


@pytest.mark.parametrize("estimate", [True, False])
@pytest.mark.parametrize("crop_rows", [96, 128])
def test_the_varnet_card_text_follows_crop_rows_and_estimate_sensitivities(crop_rows, estimate):
    from mrirecon.training.modl_deploy import LOSS_MARGIN, _card_data

    text = _card_data((320,), "varnet", crop_rows=crop_rows, estimate_sensitivities=estimate)
    assert f"rows {LOSS_MARGIN}..{crop_rows - LOSS_MARGIN}" in text
    assert ("own sensitivity network" in text) == estimate
    assert ("ignored" in text) == estimate
    modl = _card_data((320,), "modl", crop_rows=crop_rows)
    assert "ESPIRiT maps (crop 0) from the acquired centre band" in modl
    assert "sensitivity network" not in modl and f"rows 8..{crop_rows - 8}" in modl


def test_card_writer_takes_crop_rows_and_maps_from_the_run(tmp_path):
    from mrirecon.training.modl_deploy import _card

    spec = {"name": "varnet", "params": {"iterations": 2}}
    rec = {"step": 1, "PSNR": 20.0, "SSIM": 0.5}
    card = _card(tmp_path / "v.pt", "varnet", spec, {"seed": 0}, rec, 1)  # train_varnet's defaults
    assert "rows 8..120" in card["data"] and "own sensitivity network" in card["data"]
    card = _card(tmp_path / "w.pt", "varnet", spec, {"seed": 0, "crop_rows": 64,
                                                      "estimate_sensitivities": False}, rec, 1)
    assert "rows 8..56" in card["data"] and "sensitivity network" not in card["data"]


def test_the_shipped_varnet_card_says_what_the_model_uses():
    import shlex

    from mrirecon.training.modl_deploy import LOSS_MARGIN, train_varnet
    import inspect

    card = _card("varnet_fastmri_diverse")
    argv = shlex.split(card["training"]["command"])
    rows = (int(argv[argv.index("--crop-rows") + 1]) if "--crop-rows" in argv
            else inspect.signature(train_varnet).parameters["crop_rows"].default)
    own = "--no-estimate-sensitivities" not in argv
    data = card["data"]
    assert f"{rows} rows" in data["recipe"]
    assert f"rows {LOSS_MARGIN}..{rows - LOSS_MARGIN}" in " ".join(data["target"].split())
    maps = " ".join(data["maps"].split())
    assert own and "own sensitivity network" in maps and "ignored" in maps


# ---- finding 4: the weights README quotes the card's TV rows ---------------------------------


def test_weights_readme_quotes_the_modl_cards_held_out_rows_and_margins():
    card = _card("modl_fastmri_diverse")["metrics_held_out"]
    text = " ".join((WEIGHTS_DIR / "README.md").read_text(encoding="utf-8").split())
    for grid in ("640x320", "640x368"):
        rows = {a: card[grid][a] for a in ("4x", "8x")}
        modl = [rows[a]["modl_fastmri_diverse"]["PSNR"] for a in ("4x", "8x")]
        tv = [rows[a]["tv"]["PSNR"] for a in ("4x", "8x")]
        margin = " / ".join(f"{m - t:+.2f}" for m, t in zip(modl, tv))
        figures = (f"{modl[0]:.2f} / {modl[1]:.2f} against {tv[0]:.2f} / {tv[1]:.2f}")
        assert f"{margin} dB: {figures}" in text, (grid, margin, figures)


# ---- finding 5: the MNI contrasts the deployment recipe draws --------------------------------


@pytest.mark.parametrize("name", ["modl_fastmri_diverse", "varnet_fastmri_diverse"])
def test_mri_cards_name_the_contrasts_of_the_mni_volumes_drawn(name):
    """``DeploymentImages(seed=0, mni_volumes=8)`` simulates volumes 0-7 of seed 1000."""
    from mrirecon.data.simulate_mri import volume_acquisition

    drawn = Counter(re.sub(r"^(AX|SAG|COR)", "", volume_acquisition(v, seed=1000, coils=1))
                    for v in range(8))
    mni = " ".join(_card(name)["data"]["sources"]["mni"].split())
    assert "PD/FLAIR" not in mni and "random T1" not in mni  # the old claim
    said = ", ".join(f"{c} x{n}" for c, n in sorted(drawn.items(), key=lambda cn: (-cn[1], cn[0])))
    assert said in mni, (said, mni)
