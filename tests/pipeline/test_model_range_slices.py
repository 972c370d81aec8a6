"""``mrirecon run``'s training-range check slice by slice, of the dose of CT data that state
none, naming the weights (``pipeline.model_range_slice``; audit b75 findings 1-4)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest
import torch
import yaml

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.model_range import range_warnings
from mrirecon.pipeline.volume import _warn_outside_range

FAST = ["evaluate.enabled=false", "report.enabled=false", "export.formats=[hdf5]"]
#: What ct_primal_dual_sim's card says of the CT data (4096 photons, 30 parallel views).
CT_RANGE = {"photons": [4096, 4096], "views": [30, 30]}
#: The dose estimator's tolerance (``ct_dose_check.DOSE_RATIO``): correct files read 0.81-1.28x.
RATIO = 2.0


def _model(name: str = "primal_dual", **rng) -> SimpleNamespace:
    """A model (for the range check) whose card holds ``rng`` as its training range."""
    return SimpleNamespace(model_card={"model": {"name": name}, "training_range": rng})


def _air_slice(photons: float | None, views: int = 30, detectors: int = 183, *, seed: int = 0,
               data_noise: str | None = None):
    """A CT slice stating no dose whose sinogram is air (line integral 0) holding the Poisson
    noise of ``photons`` per bin (``None``: noise-free), on a matching parallel geometry."""
    from mrirecon.containers import CTGeometry
    from mrirecon.pipeline.stages_ct import CTSlice

    g = CTGeometry.parallel((32, 32), views, detectors, pixel_size=1.0)
    sino = torch.zeros(views, detectors, dtype=torch.float64)
    if photons is not None:
        gen = torch.Generator().manual_seed(seed)
        counts = torch.poisson(torch.full_like(sino, photons), generator=gen).clamp_min(1.0)
        sino = -torch.log(counts / photons)
    return CTSlice(sino.float(), g, file_name="o.hdf5", data_photons=None, data_noise=data_noise)


# ---- 1: the dose of a noisy sinogram without attrs/photons -----------------------------------


def test_the_dose_the_noise_fits_is_checked_where_the_file_states_none():
    """A noisy sinogram without ``attrs/photons`` got no dose warning, no note (its 1024
    photons on a 4096-photon card were warned only with the attribute). Now the dose its noise
    fits is checked, said "about" and how it was estimated; within the estimator's factor 2 of
    the range (correct files read 0.81-1.28x) nothing is said, nor of noise-free data."""
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    model = _model(**CT_RANGE)
    (msg,) = _warn_outside_range(plain, model, _air_slice(1024.0))
    assert msg.startswith("dose about 1000 photons per bin (no attrs/photons: estimated from "
                          "the sinogram's noise along the detector in the air around the "
                          "object, "), msg
    assert "to within 2x) is outside the primal_dual training range 4096 .. 4096" in msg, msg
    assert _warn_outside_range(plain, model, _air_slice(4096.0)) == []
    assert _warn_outside_range(plain, model, _air_slice(4096.0 / 1.5)) == []  # inside 2x
    assert _warn_outside_range(plain, model, _air_slice(None)) == []  # noise-free: less noise
    assert _warn_outside_range(plain, _model(**{"views": [30, 30]}), _air_slice(1024.0)) == []
    (msg,) = _warn_outside_range(plain, _model(photons=[math.inf, math.inf]), _air_slice(1e5))
    assert "is outside the primal_dual training range noise-free" in msg, msg


def test_noisy_data_whose_dose_cannot_be_told_are_warned_that_it_is_not_checked():
    """8 views of 16 bins hold too few detector triples (fewer than 400) to measure the noise:
    noisy data (negative line integrals, or ``attrs/min_photon_count``) are warned once that
    their dose is unknown and not checked; noise-free ones are not (less noise than trained)."""
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    model = _model(photons=[4096, 4096])
    (msg,) = _warn_outside_range(plain, model, _air_slice(1024.0, 8, 16))
    assert msg.startswith("dose unknown: the file states no dose (attrs/photons) and the data "
                          "hold noise (negative line integrals, which only noise gives), too "
                          "little of it to measure along the detector: it was not checked "
                          "against the primal_dual training range 4096 .. 4096 photons per "
                          "bin; state the file's dose (attrs/photons"), msg
    why = "attrs/min_photon_count is set, which only data holding photon noise carry"
    (msg,) = _warn_outside_range(plain, model, _air_slice(None, 8, 16, data_noise=why))
    assert f"the data hold noise ({why})" in msg, msg
    assert _warn_outside_range(plain, model, _air_slice(None, 8, 16)) == []


# ---- 2 and 4: every slice whose quantities differ; the weights named ---------------------------


def test_slices_are_checked_where_their_quantities_differ_and_named(monkeypatch):
    """The range was checked on slice 0 only: a dropped projection on slice 1 (29 views for a
    30 .. 30 card) went unsaid, and slice 0's warning read as the whole input's. Slices of the
    same quantities share one check (the costly measurements are not repeated); each message
    is said once, naming its slices."""
    from mrirecon.pipeline import model_range_slice
    from mrirecon.pipeline.slice_messages import SliceMessages

    calls = []
    measure = model_range_slice.slice_properties
    monkeypatch.setattr(model_range_slice, "slice_properties",
                        lambda *a, **k: calls.append(1) or measure(*a, **k))
    plain = load_pipeline("ct_primal_dual", FAST)[0]
    ranges = model_range_slice.VolumeRanges(plain, _model(**CT_RANGE))
    messages = SliceMessages()
    views = [30, 29, 30, 30, 31]
    for i, n in enumerate(views):
        messages.add(i, ranges.add(_air_slice(4096.0, n, seed=i)), {})
    assert len(calls) == 3  # 30, 29 and 31 views: one check each
    warned, _ = messages.lines("o.hdf5", len(views))
    assert warned == ["o.hdf5: 2 of 5 slices (1, 4): views 29 is outside the primal_dual "
                      "training range 30 .. 30 (see the model card's 'known failures') "
                      "(figures of slice 1; slice 4: 31)"], warned
    assert 4096 / RATIO <= ranges.record["photons_estimated"] <= 4096 * RATIO, ranges.record


def test_messages_name_the_weights_and_their_card():
    """"the modl training range" named the model type, which modl_brain_sim (128 x 128) and
    modl_fastmri_diverse (640 x 320-368) share; models without an origin keep it."""
    from mrirecon.pipeline.model_range_slice import card_label

    shipped = SimpleNamespace(weights_origin={"name": "modl_fastmri_diverse", "sha256": "0"})
    assert card_label(shipped) == ("modl_fastmri_diverse", "(see its card mrirecon/weights/"
                                   "modl_fastmri_diverse.yaml, 'known failures')")
    from mrirecon.io.weights import WEIGHTS_DIR

    resolved = SimpleNamespace(weights_origin={"path": str(WEIGHTS_DIR / "modl_brain_sim.pt")})
    assert card_label(resolved)[0] == "modl_brain_sim"  # as the pipeline loads shipped weights
    own = SimpleNamespace(weights_origin={"path": "/data/w/model.pt"})
    assert card_label(own) == ("model.pt", "(see its card /data/w/model.yaml, 'known failures')")
    assert card_label(SimpleNamespace()) == (None, "(see the model card's 'known failures')")
    card = {"model": {"name": "modl"}, "training_range": {"coils": [8, 12]}}
    assert range_warnings(card, coils=4, label="modl_fastmri_diverse") == [
        "coils 4 is outside the modl_fastmri_diverse training range 8 .. 12"]
    assert range_warnings(card, coils=4) == ["coils 4 is outside the modl training range 8 .. 12"]


@pytest.fixture(scope="module")
def two_slices(tmp_path_factory):
    """A 2-slice, 180-view, 1024-photon simulated file without attrs/photons whose slice 1 has
    its view 36 dropped (zeros)."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    root = tmp_path_factory.mktemp("ct_two")
    simulate_ct_dataset(root, views=180, photons=1024.0, size=128, seed=5, samples=2,
                        part="test", sources="phantom")
    path = root / "observation_test_000.hdf5"
    with h5py.File(path, "r+") as f:
        del f.attrs["photons"]
        data = f["data"][...]
        data[1, 36, :] = 0.0
        f["data"][...] = data
    return path


def test_a_run_names_the_slices_the_weights_and_the_estimated_dose(two_slices, tmp_path):
    """End to end through ct_primal_dual_sim (card: 30 .. 30 views, 4096 photons): slice 1's 29
    views are warned naming slice 1, the dose its noise fits is warned for both slices, the
    weights and their card are named, and provenance records the estimate."""
    from mrirecon.pipeline.runner import run_pipeline

    torch.set_num_threads(1)
    config, text = load_pipeline("ct_primal_dual_sim", FAST)
    out = tmp_path / "o"
    assert run_pipeline(config, [str(two_slices)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    said = [w for w in f["warnings"] if "training range" in w]
    see = "(see its card mrirecon/weights/primal_dual_ct_sim.yaml, 'known failures')"
    assert "observation_test_000.hdf5: slice 1 of 2: views 29 is outside the primal_dual_ct_sim " \
           f"training range 30 .. 30 {see}" in said, said
    (dose,) = [w for w in said if "dose about" in w]
    assert dose.startswith("observation_test_000.hdf5: all 2 slices: dose about ") and \
        "(no attrs/photons: estimated from the sinogram's noise" in dose and \
        "is outside the primal_dual_ct_sim training range 4096 .. 4096" in dose, dose
    assert len(said) == 2, said  # one line per problem, not per slice
    assert 1024 / RATIO <= f["calibration"]["photons_estimated"] <= 1024 * RATIO, f["calibration"]


# ---- 3: a card stating readout_oversampling [1, 1] (the brain_sim cards) -----------------------


def test_the_brain_sim_card_with_readout_oversampling_1_accepts_the_crop():
    """modl_brain_sim was trained on 128 x 128 without oversampling; its card states no
    ``readout_oversampling``, so 2x-oversampled data cropped to 128 x 128 were warned "matrix
    256 x 128 is outside ... 128 x 128" and the uncropped run got no hint. With the key
    ``readout_oversampling: [1, 1]`` (the shipped card's own dict, the key added here) the crop
    passes and the uncropped run is told to crop."""
    from mrirecon.training.weights import WEIGHTS_DIR, check_training_range

    card = yaml.safe_load((Path(WEIGHTS_DIR) / "modl_brain_sim.yaml").read_text())
    card["training_range"] = {**card["training_range"], "readout_oversampling": [1, 1]}
    check_training_range(card["training_range"], "modl_brain_sim.yaml")  # a valid card
    assert range_warnings(card, matrix=(128, 128), acquired_rows=256) == []  # cropped
    (msg,) = range_warnings(card, matrix=(256, 128), recon_rows=128)  # not cropped
    assert msg == ("matrix 256 x 128 is outside the modl training range 128 x 128 .. 128 x 128: "
                   "the readout is oversampled (256 rows for a recon grid of 128); set "
                   "preprocess.remove_oversampling=true")
