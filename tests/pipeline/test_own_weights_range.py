"""A user's own weights, trained with ``mrirecon train`` and then run: what the card records
(dose, coil maps, readout oversampling) and what ``mrirecon run``'s range check says when the
data or the pipeline's settings differ from training (audit a17)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.model_range import range_warnings
from mrirecon.pipeline.volume import _warn_outside_range
from tests.helpers import TINY_MODL_MASK, clone_h5, tiny_ct_part

FAST = ["evaluate.enabled=false", "report.enabled=false", "export.formats=[hdf5]"]


def _card(name: str, **rng) -> SimpleNamespace:
    """A model (for the range check) whose card holds ``rng`` as its training range."""
    return SimpleNamespace(model_card={"model": {"name": name}, "training_range": rng})


# ---- F1: the CT dose -------------------------------------------------------------------------


def _ct_slice(photons: float | None):
    from mrirecon.containers import CTGeometry
    from mrirecon.pipeline.stages_ct import CTSlice

    g = CTGeometry.parallel((32, 32), 30, 47, pixel_size=1.0)
    return CTSlice(torch.zeros(30, 47), g, file_name="o.hdf5", data_photons=photons)


def test_ct_training_range_states_the_dose(tmp_path):
    """The card had matrix, views, beam and detectors but no dose: weights trained at 4096
    photons ran at 1000 without a word (18.2 dB, below FBP's 21.2)."""
    from mrirecon.training.data_ct import CTTrainingSet

    folder = tiny_ct_part(tmp_path, 2)  # 4096 photons per bin in the files
    assert CTTrainingSet(folder, views=24).training_range()["photons"] == [4096.0, 4096.0]
    assert CTTrainingSet(folder, views=24, photons=1000).training_range()["photons"] == [1000.0] * 2


def test_ct_dose_outside_the_training_range_names_the_settings():
    card = _card("primal_dual", photons=[4096, 4096])
    low = load_pipeline("ct_primal_dual", [*FAST, "undersample.enabled=true",
                                           "undersample.photons=1000"])[0]
    (msg,) = _warn_outside_range(low, card, _ct_slice(4096.0))
    assert msg.startswith("dose 1000 photons per bin (undersample.photons) is outside the "
                          "primal_dual training range 4096 .. 4096"), msg
    assert "data.ct_photons=1000" in msg and "ct_fbp" in msg
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    assert _warn_outside_range(plain, card, _ct_slice(4096.0)) == []  # the training dose
    assert _warn_outside_range(plain, card, _ct_slice(None)) == []  # noise-free: less noise
    (msg,) = _warn_outside_range(plain, _card("primal_dual", photons=[1000, 1000]),
                                 _ct_slice(4096.0))  # the files' own dose, named as such
    assert msg.startswith("dose 4096 photons per bin (the data's own) is outside"), msg
    noise_free = _card("primal_dual", photons=[math.inf, math.inf])
    (msg,) = _warn_outside_range(plain, noise_free, _ct_slice(4096.0))
    assert "training range noise-free" in msg, msg


@pytest.mark.parametrize("name", ["primal_dual_lodopab", "staged_ct_lodopab"])
def test_the_shipped_lodopab_cards_state_their_dose(name):
    from mrirecon.training.weights import check_training_range, model_card

    card = model_card(name)
    assert card["training_range"]["photons"] == [4096, 4096]
    check_training_range(card["training_range"], name)


def test_ct_weights_trained_at_full_dose_warn_when_run_at_a_lower_one(tmp_path, caplog):
    """The audit's repro at test size: train (2 steps) on the files' dose, run at 1000."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.pipeline.runner import run_pipeline
    from mrirecon.training.run import train_from_config

    train = tiny_ct_part(tmp_path, 2)
    common = {"geometry": "parallel", "views": 48, "size": 32, "sources": "phantom",
              "samples": 1, "photons": 4096.0}
    simulate_ct_dataset(tmp_path / "val", seed=4, part="validation", **common)
    simulate_ct_dataset(tmp_path / "test", seed=5, part="test", **common)
    path = tmp_path / "ct.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ct", "output_dir": str(tmp_path / "run"), "device": "cpu",
        "data": {"train": str(train), "val": str(tmp_path / "val"), "modality": "ct",
                 "ct_views": 24},
        "model": {"name": "primal_dual", "params": {"iterations": 1, "n_primal": 2, "n_dual": 1,
                                                     "features": 4}},
        "optim": {"max_steps": 2}, "val_every": 0, "tensorboard": False}))
    train_from_config(path, progress=False)
    card = yaml.safe_load((tmp_path / "run" / "model.yaml").read_text())
    assert card["training_range"]["photons"] == [4096.0, 4096.0]
    weights = f"reconstruct.weights={tmp_path / 'run' / 'model.pt'}"
    for photons, warned in ((1000, True), (None, False)):
        dose = ["undersample.enabled=true", "undersample.views=24"] + (
            [f"undersample.photons={photons}"] if photons else [])
        config, text = load_pipeline("ct_primal_dual", [*FAST, weights, *dose])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
            assert run_pipeline(config, [str(tmp_path / "test")], tmp_path / f"o{photons}",
                                progress=False, config_text=text) == 0
        said = [r.getMessage() for r in caplog.records if "dose" in r.getMessage()]
        assert bool(said) == warned, said
        if warned:
            assert "undersample.photons" in said[0] and "data.ct_photons" in said[0], said


# ---- F2: the coil maps a model was trained with ----------------------------------------------


@pytest.mark.parametrize("model, params, maps, expected", [
    ("modl", {}, None, "espirit"), ("vn", {}, None, "espirit"), ("varnet", {}, None, "learned"),
    ("varnet", {"estimate_sensitivities": False}, None, "espirit"),
    ("modl", {}, "learned", "learned"), ("modl", {}, "walsh", "walsh")])
def test_data_maps_defaults_to_the_maps_the_pipelines_give_the_model(tmp_path, model, params,
                                                                      maps, expected):
    """Without data.maps a MoDL trained on unit maps 1/sqrt(C) (18.8 dB, below zero-filled
    19.1) and `mri_modl` then ran it with ESPIRiT maps, with no word naming data.maps."""
    from mrirecon.core.config import load_config
    from mrirecon.training.config import TrainConfig
    from mrirecon.training.validate import validate_training

    data = {"train": "a", "val": "b", **({"maps": maps} if maps else {})}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "o"), "data": data,
                                    "model": {"name": model, "params": params}}))
    cfg = validate_training(load_config(TrainConfig, path), str(path))
    assert cfg.data.maps == expected
    ct = {"name": "t", "output_dir": "o", "data": {"train": "a", "val": "b", "modality": "ct"},
          "model": {"name": "primal_dual"}}
    path.write_text(yaml.safe_dump(ct))
    assert load_config(TrainConfig, path).data.maps == "learned"  # CT: as its cards recorded


def test_the_card_records_the_maps_and_run_warns_when_calibrate_differs(tmp_path):
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.weights import check_training_range
    from tests.helpers import tiny_mri_folders

    folders = tiny_mri_folders(tmp_path)
    mask = MaskConfig(**TINY_MODL_MASK)
    assert MRITrainingSet(folders["train"], mask, "espirit").training_range()["maps"] == ["espirit"]
    assert MRITrainingSet(folders["train"], mask).training_range()["maps"] == ["learned"]
    with pytest.raises(ValueError, match=r"training_range\.maps: expected a list of coil map kinds"):
        check_training_range({"maps": ["sense"]}, "card")
    s = _mri_slice(tmp_path / "m", coils=2)
    unit = _card("modl", maps=["learned"])
    espirit = load_pipeline("mri_modl", FAST)[0]
    (msg,) = _warn_outside_range(espirit, unit, s)
    assert msg.startswith("coil maps espirit (calibrate.method) are outside the modl training "
                          "range (learned"), msg
    assert "data.maps" in msg and "calibrate.method=none" in msg
    none = load_pipeline("mri_modl", [*FAST, "calibrate.method=none"])[0]
    assert _warn_outside_range(none, unit, s) == []
    (msg,) = _warn_outside_range(none, _card("modl", maps=["espirit"]), s)
    assert "calibrate.method=espirit" in msg
    assert _warn_outside_range(espirit, _card("modl", maps=["espirit"]), s) == []
    own = {"model": {"name": "varnet"}, "training_range": {"maps": ["learned"]}}
    assert _warn_outside_range(espirit, SimpleNamespace(model_card=own), s) == []  # its own maps


# ---- F3: coil compression ---------------------------------------------------------------------


def _mri_slice(folder: Path, *, coils: int, size=(32, 32), oversampling: int = 1):
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io import FastMRIFile
    from mrirecon.pipeline.slice_mri import make_slice

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=1, coils=coils, size=size, seed=1,
                                   readout_oversampling=oversampling)
    with FastMRIFile(path) as f:
        return make_slice(f.read_slice(0, with_reference=False), 0, Path(path).name, None)


def test_the_coil_warning_names_coil_compression_and_the_acquired_count(tmp_path):
    """15-coil weights on a 15-coil file warned "coils 12 is outside ... 15 .. 15": the 12 were
    the pipeline's own preprocess.coil_compression, which training never applies."""
    from mrirecon.pipeline.stages_mri import preprocess

    config = load_pipeline("mri_modl", [*FAST, "preprocess.coil_compression=3"])[0]
    s = preprocess(_mri_slice(tmp_path, coils=5), config.preprocess)
    assert s.kspace.shape[0] == 3
    model = _card("modl", coils=[5, 5])
    (msg,) = _warn_outside_range(config, model, s)
    assert msg.startswith("coils 3 (preprocess.coil_compression=3 of the 5 acquired) is outside "
                          "the modl training range 5 .. 5"), msg
    assert "set preprocess.coil_compression=null (or at least 5)" in msg
    assert _warn_outside_range(config, _card("modl", coils=[2, 4]), s) == []
    (msg,) = _warn_outside_range(config, _card("modl", coils=[8, 8]), s)  # no setting helps
    assert msg == ("coils 3 (preprocess.coil_compression=3 of the 5 acquired) is outside the "
                   "modl training range 8 .. 8")
    (msg,) = _warn_outside_range(config, _card("modl", coils=[1, 2]), s)  # compress further
    assert msg.endswith(": set preprocess.coil_compression to 1 .. 2"), msg
    plain = preprocess(_mri_slice(tmp_path / "b", coils=5), load_pipeline("mri_modl", FAST)[0].preprocess)
    (msg,) = _warn_outside_range(config, _card("modl", coils=[8, 8]), plain)
    assert msg == "coils 5 is outside the modl training range 8 .. 8"


# ---- F4: readout oversampling -----------------------------------------------------------------


def test_the_card_records_readout_oversampling(tmp_path):
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet

    mask = MaskConfig(**TINY_MODL_MASK)
    for r in (1, 2):
        simulate_mri_dataset(tmp_path / str(r), volumes=1, slices=1, coils=2, size=(32, 32),
                             seed=1, readout_oversampling=r)
        rng = MRITrainingSet(tmp_path / str(r), mask).training_range()
        assert rng["readout_oversampling"] == [float(r)] * 2
        assert rng["matrix"]["min"] == [32 * r, 32]


def test_self_supervised_cards_record_readout_oversampling_too(tmp_path):
    """SSDU's training set (``AcquiredMRISet``: the data as acquired, fastMRI layout or ISMRMRD)
    states the files' readout oversampling as the supervised set does, so its card accepts the
    recon grid of its training matrix. Was: no ``readout_oversampling`` on self-supervised
    cards, so the as-acquired rule: weights trained on 2x-oversampled 64 x 32 files warned
    "matrix 32 x 32 is outside ... 64 x 32 .. 64 x 32" on the same scan without oversampling."""
    pytest.importorskip("ismrmrd")
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.stages_mri import preprocess
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data_acquired import AcquiredMRISet
    from tests.helpers import fastmri_to_ismrmrd

    mask = MaskConfig(**TINY_MODL_MASK)
    for r in (1, 2):
        (src,) = simulate_mri_dataset(tmp_path / str(r), volumes=1, slices=1, coils=2,
                                      size=(32, 32), seed=1, readout_oversampling=r)
        fastmri_to_ismrmrd(Path(src), tmp_path / f"scan{r}.h5")
        for path in (Path(src), tmp_path / f"scan{r}.h5"):
            rng = AcquiredMRISet(path, mask).training_range()
            assert rng["readout_oversampling"] == [float(r)] * 2, path
            assert rng["matrix"]["min"] == [32 * r, 32]
    config = load_pipeline("mri_modl", [*FAST, "preprocess.remove_oversampling=false"])[0]
    s = preprocess(_mri_slice(tmp_path / "run", coils=2, oversampling=1), config.preprocess)
    card = _card("modl", matrix=rng["matrix"], readout_oversampling=rng["readout_oversampling"])
    assert _warn_outside_range(config, card, s) == []
    (msg,) = _warn_outside_range(config, _card("modl", matrix=rng["matrix"]), s)
    assert msg == "matrix 32 x 32 is outside the modl training range 64 x 32 .. 64 x 32"


@pytest.mark.parametrize("trained, acquired, remove, warned", [
    (1, 2, True, None),   # trained 32 x 32, the crop gives it 32 x 32: no warning (was one)
    (1, 2, False, "set preprocess.remove_oversampling=true"),
    (2, 1, False, None),  # trained 64 x 32 (2x), run on 32 x 32: its recon grid
    (2, 2, True, None), (2, 2, False, None), (1, 1, False, None)])
def test_the_matrix_check_compares_what_the_model_sees(tmp_path, trained, acquired, remove,
                                                       warned):
    from mrirecon.pipeline.stages_mri import preprocess

    config = load_pipeline("mri_modl", [*FAST, f"preprocess.remove_oversampling={remove}"])[0]
    s = preprocess(_mri_slice(tmp_path, coils=2, oversampling=acquired), config.preprocess)
    card = _card("modl", matrix={"min": [32 * trained, 32], "max": [32 * trained, 32]},
                 readout_oversampling=[float(trained)] * 2)
    msgs = _warn_outside_range(config, card, s)
    if warned is None:
        assert msgs == []
    else:
        (msg,) = msgs
        assert msg.startswith("matrix 64 x 32 is outside the modl training range 32 x 32") and \
            warned in msg, msg
    # trained on 64 x 32 without oversampling, run cropped to 32 x 32: names the crop
    if acquired == 2 and remove:
        card = _card("modl", matrix={"min": [64, 32], "max": [64, 32]}, readout_oversampling=[1, 1])
        (msg,) = _warn_outside_range(config, card, s)
        assert msg.startswith("matrix 32 x 32 (the 64 x 32 acquired, its readout oversampling "
                              "removed: preprocess.remove_oversampling) is outside"), msg
        assert "set preprocess.remove_oversampling=false" in msg


def test_cards_without_readout_oversampling_keep_the_as_acquired_rule():
    """Shipped cards (640 x 320 .. 640 x 368, 2x oversampled) state no oversampling."""
    card = {"model": {"name": "m"},
            "training_range": {"matrix": {"min": [640, 320], "max": [640, 368]}}}
    assert range_warnings(card, matrix=(320, 368), acquired_rows=640) == []
    assert range_warnings(card, matrix=(640, 368)) == []


# ---- F5: weights of another model -------------------------------------------------------------


def test_weights_of_another_model_are_refused_naming_the_pipeline_that_runs_them():
    from mrirecon.training.weights import load_model

    with pytest.raises(ValueError, match=r"are for model 'varnet', not 'modl'.*pipeline "
                                         r"mri_varnet.*--set reconstruct\.method=varnet "
                                         r"--set calibrate\.method=none"):
        load_model("modl", {}, "varnet_brain_sim")


def test_the_other_models_advice_pastes_as_command_line_options():
    """"... or --set reconstruct.method=varnet calibrate.method=none": the second setting had no
    --set of its own, and pasted as shown the run stopped with "unrecognized arguments:
    calibrate.method=none". Each setting now parses as its own --set, and the settings load."""
    import shlex

    from mrirecon.cli import build_parser
    from mrirecon.training.weights import load_model

    with pytest.raises(ValueError) as err:
        load_model("modl", {}, "varnet_brain_sim")
    tail = str(err.value).split(", or ")[-1]
    assert tail.startswith("--set ")
    args = build_parser("run").parse_args(["run", "mri_modl", "--input", "x.h5", "-o", "out",
                                           "--set", "reconstruct.weights=varnet_brain_sim",
                                           *shlex.split(tail)])
    assert args.set[-2:] == ["reconstruct.method=varnet", "calibrate.method=none"]
    config = load_pipeline("mri_modl", args.set)[0]
    assert (config.reconstruct.method, config.calibrate.method) == ("varnet", "none")


def test_self_supervised_cards_record_the_centre_band(tmp_path):
    """``AcquiredMRISet.training_range`` states ``acs_columns`` as ``MRITrainingSet`` does
    (contiguous sampled acquirable columns through DC, ``mrirecon run``'s count): a file's own
    mask gives its band, a fully sampled file the bands of every mask ``data.mask`` draws on it.
    Was: no ``acs_columns`` on self-supervised cards, so no centre-band check for their models."""
    import h5py
    import numpy as np

    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.mask_bands import acs_column_range
    from mrirecon.training.data_acquired import AcquiredMRISet

    (src,) = simulate_mri_dataset(tmp_path / "full", volumes=1, slices=1, coils=2, size=(32, 32),
                                  seed=1)
    own = np.zeros(32, bool)
    own[2::4] = True
    own[12:20] = True  # 8 contiguous columns through DC (16); 11 and 20, 21 unsampled
    with h5py.File(src) as f:
        k = f["kspace"][()] * own
    under = clone_h5(Path(src), tmp_path / "under" / "u.h5", kspace=k, mask=own)
    mask = MaskConfig(**TINY_MODL_MASK)
    drawn = acs_column_range(mask.type, zip(mask.center_fractions, mask.accelerations), [32])
    assert drawn == [5, 6]  # 0.16 of 32 columns, every offset: another band than the file's
    assert AcquiredMRISet(under, mask).training_range()["acs_columns"] == [8, 8]
    assert AcquiredMRISet(Path(src), mask).training_range()["acs_columns"] == drawn
    both = tmp_path / "both"
    both.mkdir()
    for p in (Path(src), under):
        (both / p.name).write_bytes(p.read_bytes())
    assert AcquiredMRISet(both, mask).training_range()["acs_columns"] == [5, 8]
