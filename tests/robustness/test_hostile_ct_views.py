"""CT views stored out of angle order, and CT data outside a learned model's beam and detector.

The learned primal-dual's dual CNN convolves over (views, detectors), so it saw sinogram rows in
angle order: the same views with the same, correct angles stored shuffled, interleaved or in
golden-angle acquisition order gave 29.35 / 28.71 dB instead of 32.55 / 32.02 (LoDoPaB, 30
views) with exit 0 and no word. Fan-beam data and other detector counts reached the learned CT
models without a range warning (fan beam: 29.72 dB against 32.55, TV unchanged)."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.pipeline import stages_ct
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.model_range import range_warnings
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.stages_ct import VIEWS_SORTED_NOTE, angle_order

FAST = ["export.formats=[hdf5]", "report.enabled=false"]
PHI = (math.sqrt(5) - 1) / 2  # the golden ratio's fractional part


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> Path:
    """One 128 x 128 phantom at 180 parallel-beam views, 4096 photons (the geometry of the
    primal_dual_ct_sim model, whose pipeline keeps every 6th view)."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    out = tmp_path_factory.mktemp("ct180")
    simulate_ct_dataset(out, geometry="parallel", views=180, photons=4096.0, size=128, seed=5,
                        samples=1, part="test", sources="phantom")
    return out


def _views(src: Path, dst: Path, rows) -> Path:
    """A copy of ``src``'s observation holding its views ``rows`` (stored in that order, each
    with its own angle), ground truth beside it."""
    dst.mkdir(parents=True)
    shutil.copy(src / "ground_truth_test_000.hdf5", dst)
    rows = np.asarray(rows)
    with h5py.File(src / "observation_test_000.hdf5", "r") as f, \
            h5py.File(dst / "observation_test_000.hdf5", "w") as g:
        g["data"] = f["data"][()][:, rows]
        for key, value in f.attrs.items():
            g.attrs[key] = value
        geometry = json.loads(f.attrs["geometry"])
        geometry["angles"] = [geometry["angles"][i] for i in rows]
        g.attrs["geometry"] = json.dumps(geometry)
    return dst / "observation_test_000.hdf5"


def _run(obs: Path, out: Path, pipeline: str = "ct_primal_dual_sim", *settings: str):
    """``(image, provenance entry)`` of one run of ``pipeline`` on ``obs``."""
    config = load_pipeline(pipeline, [*FAST, *settings])[0]
    assert run_pipeline(config, [str(obs)], out, progress=False) == 0
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    with h5py.File(out / "reconstructions" / "observation_test_000.h5", "r") as h5:
        return h5["reconstruction"][()], entry


def _noted(entry) -> bool:
    return any(VIEWS_SORTED_NOTE in n for n in entry["notes"])


SPARSE = np.arange(0, 180, 6)  # the 30 views the sim model was trained on
GOLDEN = np.round(np.mod(np.arange(30) * PHI, 1.0) * 180).astype(int) % 180  # acquisition order
#: data acquired sparse: every view stored is reconstructed
SPARSE_DATA = ("ct_primal_dual_sim", "undersample.enabled=false")


@pytest.mark.parametrize("order", ["shuffled", "interleaved", "golden"])
def test_views_in_any_stored_order_give_the_sorted_files_image(full, tmp_path, order):
    """The same views with their own angles, stored shuffled / odd-then-even / in golden-angle
    acquisition order, give the image of the file that stores them by angle, and a note."""
    rows = {"shuffled": np.random.default_rng(0).permutation(SPARSE),
            "interleaved": np.r_[SPARSE[1::2], SPARSE[::2]], "golden": GOLDEN}[order]
    assert len(set(rows.tolist())) == 30 and not np.all(np.diff(rows) > 0)
    image, entry = _run(_views(full, tmp_path / order, rows), tmp_path / "o1", *SPARSE_DATA)
    ref, ref_entry = _run(_views(full, tmp_path / "sorted", np.sort(rows)), tmp_path / "o2",
                          *SPARSE_DATA)
    np.testing.assert_allclose(image, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    assert _noted(entry), entry["notes"]
    assert not _noted(ref_entry), ref_entry["notes"]


def test_without_sorting_the_primal_dual_image_depends_on_the_stored_order(full, tmp_path,
                                                                          monkeypatch):
    """What the sort guards against: the dual CNN's image of shuffled rows is another image."""
    ref, _ = _run(_views(full, tmp_path / "sorted", SPARSE), tmp_path / "o1", *SPARSE_DATA)
    monkeypatch.setattr(stages_ct, "sort_views", lambda s: s)
    rows = np.random.default_rng(0).permutation(SPARSE)
    image, entry = _run(_views(full, tmp_path / "shuffled", rows), tmp_path / "o2", *SPARSE_DATA)
    assert not _noted(entry)
    assert float(np.abs(image - ref).max()) > 0.05 * float(np.abs(ref).max())


def test_a_sorted_file_is_reconstructed_bit_for_bit_as_before(full, tmp_path, monkeypatch):
    """Views already in angle order: no note, and the image of the run without the sort."""
    obs = _views(full, tmp_path / "sorted", SPARSE)
    image, entry = _run(obs, tmp_path / "o1", *SPARSE_DATA)
    assert not _noted(entry), entry["notes"]
    monkeypatch.setattr(stages_ct, "sort_views", lambda s: s)  # the code before the fix
    before, _ = _run(obs, tmp_path / "o2", *SPARSE_DATA)
    assert np.array_equal(image, before)


def test_undersampling_keeps_every_kth_view_by_angle(full, tmp_path):
    """A shuffled 180-view file under the pipeline's default ``undersample.views: 30`` keeps the
    same 30 views as the sorted file (every 6th by angle, not every 6th as stored)."""
    rows = np.random.default_rng(1).permutation(180)
    image, entry = _run(_views(full, tmp_path / "shuffled", rows), tmp_path / "o1")
    ref, _ = _run(full / "observation_test_000.hdf5", tmp_path / "o2")
    np.testing.assert_allclose(image, ref, rtol=0, atol=1e-5 * float(np.abs(ref).max()))
    assert _noted(entry)


def test_library_calls_of_the_reconstruct_stage_sort_too(full):
    """``stages_ct.reconstruct`` (the held-out protocol's entry) sorts a slice the pipeline's
    preprocess did not see, and returns it as given."""
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.pipeline.stages_ct import CTSlice, reconstruct
    from mrirecon.training.weights import load_pretrained

    files = LoDoPaBFiles(full, "test")
    sino, g = files.sinogram(0).data[0][SPARSE], files.geometry
    g = replace(g, angles=tuple(g.angles[i] for i in SPARSE))
    rows = np.random.default_rng(0).permutation(30)
    shuffled = CTSlice(sino[rows], replace(g, angles=tuple(g.angles[i] for i in rows)))
    model = load_pretrained("primal_dual_ct_sim")
    cfg = load_pipeline("ct_primal_dual_sim", FAST)[0].reconstruct
    out = reconstruct(shuffled, cfg, model)
    ref = reconstruct(CTSlice(sino, g), cfg, model)
    assert out.sinogram is shuffled.sinogram and out.geometry is shuffled.geometry
    atol = 1e-5 * float(ref.image.abs().max())
    np.testing.assert_allclose(out.image, ref.image, rtol=0, atol=atol)


def _parallel(angles, n=31):
    return CTGeometry("parallel", (16, 16), tuple(angles), n)


def test_angle_order_is_stable_and_does_not_fold_half_turns():
    """Already ascending (repeats included): nothing to do. Repeated angles keep their stored
    order; a parallel-beam set over a full turn is sorted over the full turn (the views at
    a >= pi stay there, not folded onto a - pi with the detector reversed); fan beam alike."""
    assert angle_order(_parallel([0.0, 0.1, 0.1, 0.2])) is None
    assert angle_order(_parallel([0.3])) is None
    assert angle_order(_parallel([0.2, 0.1, 0.2, 0.1])).tolist() == [1, 3, 0, 2]
    full_turn = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    rows = angle_order(_parallel(full_turn[[4, 0, 5, 1, 6, 2, 7, 3]]))
    assert np.array_equal(full_turn[[4, 0, 5, 1, 6, 2, 7, 3]][rows], full_turn)
    fan = CTGeometry.fan((16, 16), 8, 31, source_isocenter=100.0, source_detector=200.0)
    assert angle_order(fan) is None  # a full turn, ascending
    assert angle_order(replace(fan, angles=fan.angles[::-1])).tolist() == list(range(7, -1, -1))


# ---- the model card's beam type and detector count ---------------------------------------------

CARD = {"model": {"name": "primal_dual"},
        "training_range": {"matrix": {"min": [362, 362], "max": [362, 362]}, "views": [30, 63],
                           "geometry": ["parallel"], "detectors": [513, 513]}}


def test_beam_and_detector_count_outside_the_card_warn():
    inside = dict(matrix=(362, 362), views=30, beam="parallel", detectors=513)
    assert range_warnings(CARD, **inside) == []
    assert range_warnings(CARD, **{**inside, "beam": "fan"}) == [
        "fan-beam geometry is outside the primal_dual training range (parallel)"]
    assert range_warnings(CARD, **{**inside, "beam": "Parallel"}) == []
    assert range_warnings(CARD, **{**inside, "detectors": 1025}) == [
        "detector count 1025 is outside the primal_dual training range 513 .. 513"]
    both = range_warnings(CARD, **{**inside, "beam": "fan", "detectors": 257})
    assert len(both) == 2
    # a card without the keys (an MRI model, an older CT card) says nothing about them
    assert range_warnings({"training_range": {"views": [30, 63]}}, views=30, beam="fan",
                          detectors=1025) == []


def test_mri_range_keys_are_unchanged():
    card = {"model": {"name": "m"},
            "training_range": {"matrix": {"min": [640, 320], "max": [640, 368]}, "coils": [8, 12],
                               "accelerations": [4, 8], "trajectory": ["radial"],
                               "spokes": [40, 40], "maps_crop": [0.0, 0.0]}}
    assert range_warnings(card, matrix=(640, 320), coils=8, acceleration=4.0, spokes=40,
                          trajectory="radial", maps_crop=0.0) == []
    assert range_warnings(card, matrix=(640, 400), coils=4, acceleration=12.0, spokes=36,
                          trajectory="spiral", maps_crop=0.95) == [
        "matrix 640 x 400 is outside the m training range 640 x 320 .. 640 x 368",
        "trajectory spiral is outside the m training range (radial)",
        "coils 4 is outside the m training range 8 .. 12",
        "acceleration 12 is outside the m training range 4 .. 8",
        "readouts (spokes / interleaves) 36 is outside the m training range 40 .. 40",
        "the coil maps' ESPIRiT crop (calibrate.crop) 0.95 is outside the m training range 0 .. 0"]


@pytest.mark.parametrize("beam, detectors, warned", [
    ("parallel", 513, []), ("fan", 513, ["fan-beam"]), ("parallel", 1025, ["detector count 1025"]),
    ("fan", 1025, ["fan-beam", "detector count 1025"])])
def test_the_pipeline_passes_the_beam_and_detector_count(beam, detectors, warned):
    """``mrirecon run``'s range check (pipeline/volume.py) gives the card the slice's beam and
    detector count."""
    from mrirecon.pipeline.volume import _warn_outside_range

    if beam == "parallel":
        g = CTGeometry.parallel((362, 362), 30, detectors, pixel_size=260 / 362)
    else:
        g = CTGeometry.fan((362, 362), 30, detectors, source_isocenter=595.0,
                           source_detector=1085.6, pixel_size=260 / 362)
    config = load_pipeline("ct_primal_dual", FAST)[0]
    model, s = SimpleNamespace(model_card=CARD), SimpleNamespace(geometry=g)
    msgs = _warn_outside_range(config, model, s)
    assert [m.split(" is outside")[0].replace("-beam geometry", "-beam") for m in msgs] == warned


#: Each learned CT pipeline, and a slice inside its model card's training range.
LEARNED_CT = {"ct_learned": (362, 30, 513), "ct_learned_adapt": (362, 30, 513),
              "ct_primal_dual": (362, 30, 513), "ct_primal_dual_sim": (128, 30, 183)}


@pytest.mark.parametrize("pipeline", sorted(LEARNED_CT))
def test_every_learned_ct_model_card_states_its_beam_and_detector_count(pipeline):
    """Fan-beam data and 1025 detectors warn for each learned CT pipeline's shipped weights;
    data at the card's geometry do not."""
    from mrirecon.pipeline.volume import _warn_outside_range
    from mrirecon.training.weights import model_card

    config = load_pipeline(pipeline, FAST)[0]
    model = SimpleNamespace(model_card=model_card(config.reconstruct.weights))
    size, views, detectors = LEARNED_CT[pipeline]
    pixel = 260 / size

    def warned(g):  # a fresh model each time: a message is logged once per model
        fresh = SimpleNamespace(**vars(model))
        return _warn_outside_range(config, fresh, SimpleNamespace(geometry=g))

    assert warned(CTGeometry.parallel((size, size), views, detectors, pixel_size=pixel)) == []
    (fan,) = warned(CTGeometry.fan((size, size), views, detectors, source_isocenter=595.0,
                                   source_detector=1085.6, pixel_size=pixel))
    assert fan.startswith("fan-beam geometry is outside the") and fan.endswith("(parallel)")
    (wide,) = warned(CTGeometry.parallel((size, size), views, 1025, pixel_size=pixel))
    assert wide.startswith("detector count 1025 is outside the")


def test_fan_beam_data_warn_in_the_run_record(tmp_path):
    """End to end: a simulated fan-beam file through ct_primal_dual_sim is reconstructed with a
    warning naming the file and the card's beam type."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    simulate_ct_dataset(tmp_path / "fan", geometry="fan", views=180, photons=4096.0, size=128,
                        seed=5, samples=1, part="test", sources="phantom")
    _, entry = _run(tmp_path / "fan" / "observation_test_000.hdf5", tmp_path / "out")
    assert any(w.startswith("observation_test_000.hdf5: slice 0: fan-beam geometry is outside "
                            "the primal_dual_ct_sim training range (parallel)")
               for w in entry["warnings"]), \
        entry["warnings"]


def test_a_dropped_projection_of_views_stored_out_of_order_is_the_one_left_out():
    """preprocess marks dropped projections (zero views) by their file index, then sorts the
    views by angle; the marks must follow the rows, so that the view dropped after undersample
    is the zero one and every kept row still has its own angle."""
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.pipeline.ct_consistency import drop_dead_views, mark_dead_views
    from mrirecon.pipeline.stages_ct import CTSlice, sort_views

    views, det = 12, 16
    order = [5, 0, 9, 3, 11, 1, 7, 2, 10, 4, 8, 6]  # stored shuffled, each row with its own angle
    angles = tuple(math.pi * i / views for i in order)
    g = torch.Generator().manual_seed(0)
    sino = 1.0 + torch.rand(views, det, generator=g)
    # row r holds the projection of angle index order[r]: tag it so it can be checked after
    sino[:, 0] = torch.tensor(order, dtype=sino.dtype)
    dead_row = 0  # tag 5: at row 5 once sorted (a row whose tag is its index hides the bug)
    sino[dead_row] = 0.0  # a dropped projection, stored as zeros
    geometry = CTGeometry("parallel", (det, det), angles, det)
    s = drop_dead_views(sort_views(mark_dead_views(CTSlice(sino, geometry, file_name="x.h5"))))
    assert s.dropped == (dead_row,)
    assert s.sinogram.shape[0] == views - 1
    assert bool((s.sinogram.abs().sum(-1) > 0).all()), "a zero view was kept"
    # each kept row still carries the angle it was measured at, in ascending order
    tags = s.sinogram[:, 0].round().long().tolist()
    assert [math.pi * t / views for t in tags] == pytest.approx(list(s.geometry.angles), abs=1e-12)
    assert list(s.geometry.angles) == sorted(s.geometry.angles)
