"""Cards written by an older ``mrirecon train`` lack training-range fields added since (``maps``,
``photons``) or the whole ``training_range``: the run reads what the card records elsewhere
(its ``training`` section), or says that nothing is checked."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.model_range import range_warnings, warn_outside_range
from mrirecon.pipeline.volume import _warn_outside_range
from tests.pipeline.test_own_weights_range import FAST, _ct_slice, _mri_slice

#: ``training_range`` of a MoDL card of 2788377 (the repro's: matrix, coils, accelerations; the
#: slice here is fully sampled, so its accelerations are left out)
OLD_MRI_RANGE = {"matrix": {"min": [32, 32], "max": [32, 32]}, "coils": [2, 2]}
#: ``training_range`` of a 2788377 ``train primal_dual_ct`` card: no photons
OLD_CT_RANGE = {"matrix": {"min": [32, 32], "max": [32, 32]}, "views": [30, 63],
                "geometry": ["parallel"], "detectors": [47, 47]}


def _config_card(modality: str, rng: dict | None, **data) -> dict:
    """A card of ``mrirecon train CONFIG`` as older versions wrote it: the resolved config under
    ``training.config`` (``data.maps`` always in it: the dataclass default was recorded)."""
    name = "modl" if modality == "mri" else "primal_dual"
    card = {"model": {"name": name, "params": {"iterations": 2}},
            "training": {"command": "mrirecon train old.yaml --threads 1",
                         "config": {"name": "tiny", "data": {"train": "t", "val": "v",
                                                             "modality": modality, **data},
                                    "model": {"name": name}}}}
    return card if rng is None else {**card, "training_range": rng}


def _model(card: dict) -> SimpleNamespace:
    return SimpleNamespace(model_card=card)


def test_an_old_mri_card_without_range_maps_is_checked_on_its_config_maps(tmp_path):
    """2788377: MoDL trained without data.maps (then unit maps, ``learned``), card without
    ``training_range.maps``: ``mri_modl`` (ESPIRiT maps) ran it with no word; the same weights'
    card of this version warned (18.8 vs 20.0 dB)."""
    s = _mri_slice(tmp_path / "m", coils=2)
    espirit = load_pipeline("mri_modl", FAST)[0]
    old = _model(_config_card("mri", OLD_MRI_RANGE, maps="learned"))
    new = _model({"model": {"name": "modl"}, "training_range": {**OLD_MRI_RANGE,
                                                                 "maps": ["learned"]}})
    expected = _warn_outside_range(espirit, new, s)
    assert len(expected) == 1 and expected[0].startswith("coil maps espirit")
    assert _warn_outside_range(espirit, old, s) == expected
    none = load_pipeline("mri_modl", [*FAST, "calibrate.method=none"])[0]
    assert _warn_outside_range(none, old, s) == []  # the maps it was trained with
    walsh = _model(_config_card("mri", OLD_MRI_RANGE, maps="walsh"))
    assert "training range (walsh" in _warn_outside_range(espirit, walsh, s)[0]
    # the card's own field wins over the recorded config
    stated = _model({**old.model_card, "training_range": {**OLD_MRI_RANGE, "maps": ["espirit"]}})
    assert _warn_outside_range(espirit, stated, s) == []


@pytest.mark.parametrize("command", ["primal_dual_ct", "staged_ct"])
def test_an_old_lodopab_trainer_card_without_photons_means_4096(command):
    """A 2788377 ``train primal_dual_ct`` card has no ``training_range.photons``: a 1024-photon
    file ran silently, the same weights continued by this version (``--init``) warned. Both
    trainers simulate at ``ct_staged.CT_PHOTONS`` (4096) and have no dose option."""
    from mrirecon.training.ct_staged import CT_PHOTONS

    assert CT_PHOTONS == 4096.0
    card = {"model": {"name": "primal_dual"}, "training_range": OLD_CT_RANGE,
            "training": {"command": f"mrirecon train {command} --out o/pd.pt --budget-s 30.0"}}
    new = {"model": {"name": "primal_dual"}, "training_range": {**OLD_CT_RANGE,
                                                                 "photons": [4096, 4096]}}
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    (msg,) = _warn_outside_range(plain, _model(card), _ct_slice(1024.0))
    assert msg == _warn_outside_range(plain, _model(new), _ct_slice(1024.0))[0]
    assert "training range 4096 .. 4096" in msg, msg
    assert _warn_outside_range(plain, _model(card), _ct_slice(4096.0)) == []
    other = {**card, "training": {"command": "mrirecon train ct.yaml"}}  # unknown dose
    assert _warn_outside_range(plain, _model(other), _ct_slice(1024.0)) == []


def test_an_old_ct_config_card_is_checked_on_its_config_dose():
    card = _config_card("ct", OLD_CT_RANGE, ct_photons=2000.0, maps="learned")
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    (msg,) = _warn_outside_range(plain, _model(card), _ct_slice(1024.0))
    assert "training range 2000 .. 2000" in msg, msg
    files_own = _config_card("ct", OLD_CT_RANGE, ct_photons=None, maps="learned")
    assert _warn_outside_range(plain, _model(files_own), _ct_slice(1024.0)) == []
    # range_warnings itself reads the record (the function bench and run share)
    assert range_warnings(card, photons=1024.0)


def test_a_card_without_training_range_says_nothing_is_checked(caplog):
    """Cards of 41525a9 and earlier hold only ``model:``: 0 warnings on 96 x 96, 8-coil, 8x
    data, while a card-less ``.pt`` is warned "no training range is checked"."""
    from mrirecon.training.weights import cardless_note

    model = SimpleNamespace(model_card={"model": {"name": "modl", "params": {}}},
                            weights_origin={"path": "/runs/old/model.pt", "sha256": "0"})
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        assert warn_outside_range(model, matrix=(96, 96), coils=8, acceleration=8.0) == []
        warn_outside_range(model, matrix=(96, 96), coils=8, acceleration=8.0)  # once per model
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1, said
    shared = "; no training range is checked; "
    assert shared in said[0]
    assert shared in cardless_note(Path(model.weights_origin["path"]), "modl", {})
    assert said[0].startswith("/runs/old/model.yaml has no training_range"), said[0]
    caplog.clear()
    carded = SimpleNamespace(model_card={"model": {"name": "modl"},
                                         "training_range": {"coils": [8, 8]}})
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        assert warn_outside_range(carded, coils=8) == []
    assert not caplog.records
