"""Hostile own MRI training data for `mrirecon train` (`training.data.MRITrainingSet`): a slice
of all-zero k-space, a file too narrow for the masks or the coil maps, a reference larger than
the k-space grid, rotated or reversed references, a bad sample found only when drawn, and the
model card's acceleration range. Each passed the data set's build and then stopped training
steps in with an error naming no file, or trained with exit 0 on a wrong target; now found when
the set is built (at most two slices read per file), or named with file, slice and key."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

from mrirecon.training.config import MaskConfig
from mrirecon.training.data import MRITrainingSet

MASK = MaskConfig("equispaced_fraction", (0.16,), (4,))


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """train/: 2 volumes of 5 slices, 32 x 32, 3 coils; val/: 1 volume of 2 slices."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("own_mri2")
    kw = {"coils": 3, "size": (32, 32), "resolution": 2}
    simulate_mri_dataset(root / "train", volumes=2, seed=4, slices=5, **kw)
    simulate_mri_dataset(root / "val", volumes=1, seed=5, slices=2, **kw)
    return root


@pytest.fixture(scope="module")
def sim(root) -> Path:
    return root / "train"


def _copy(sim: Path, tmp_path: Path, edit=None) -> tuple[Path, Path]:
    """A copy of ``sim`` whose last file is changed by ``edit(h5)``: (folder, that file)."""
    folder = tmp_path / "train"
    shutil.copytree(sim, folder)
    path = sorted(folder.glob("*.h5"))[-1]
    if edit is not None:
        with h5py.File(path, "r+") as h5:
            edit(h5)
    return folder, path


def _replace(h5, key: str, value: np.ndarray) -> None:
    del h5[key]
    h5[key] = value


def _reference_edit(change):
    """An ``edit(h5)`` for :func:`_copy` writing ``change(reconstruction_rss)`` in place."""
    def edit(h5):
        h5["reconstruction_rss"][...] = np.ascontiguousarray(change(h5["reconstruction_rss"][()]))
    return edit


# ---- all-zero k-space slices ---------------------------------------------------------------


@pytest.mark.parametrize("maps", ["espirit", "walsh"])
def test_a_blank_slice_is_left_out_with_a_warning_naming_it(sim, tmp_path, caplog, maps):
    """Was: the set kept it; when drawn, ESPIRiT failed with "the (24, 5) calibration block of
    kspace is all zero", Walsh maps with "SenseOperator: the coil maps (1, 3, 32, 32) are all
    zero", naming no file or slice (exit 2 after 10 steps). `mrirecon run` writes such a slice
    as zeros with a warning; training has nothing to learn from it."""
    def edit(h5):
        h5["kspace"][2] = 0
        h5["reconstruction_rss"][2] = 0

    folder, path = _copy(sim, tmp_path, edit)
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        data = MRITrainingSet(folder, MASK, maps=maps, train=True)
    assert len(data) == 2 * 5 - 1
    assert any(f"{path}: slice(s) 2 of 5: k-space is all zero" in r.getMessage()
               for r in caplog.records)
    drawn = set()
    for i in range(len(data)):
        sample = data.get(i, mask_seed=i)
        sample.operator()  # the maps are not all zero (sense() refused those)
        drawn.add((sample.fname, sample.slice_index))
    assert (path.name, 2) not in drawn and (path.name, 3) in drawn


def test_blank_slices_of_compressed_kspace_are_screened_by_the_reference(sim, tmp_path, caplog):
    """The centre sample of every slice and coil, read from gzip-chunked k-space, decompressed
    all of it (2.9 s per 12-slice file of 15 coils at 640 x 368: hours before the first step
    on a fastMRI folder stored so); such files are screened by their (small) reference."""
    from mrirecon.io import FastMRIFile

    def edit(h5):
        k = h5["kspace"][()]
        k[2] = 0
        del h5["kspace"]
        h5.create_dataset("kspace", data=k, chunks=(1, *k.shape[1:]), compression="gzip")
        h5["reconstruction_rss"][2] = 0

    folder, path = _copy(sim, tmp_path, edit)
    with FastMRIFile(path) as f:
        assert f.centre_samples() is None
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        data = MRITrainingSet(folder, MASK, train=True)
    assert len(data) == 2 * 5 - 1
    assert any(f"{path}: slice(s) 2 of 5: k-space is all zero" in r.getMessage()
               for r in caplog.records)


def test_a_file_blank_in_every_slice_is_refused(sim, tmp_path):
    folder, path = _copy(sim, tmp_path, lambda h5: h5["kspace"].__setitem__(slice(None), 0))
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MASK)
    assert str(err.value) == (f"MRITrainingSet: {path}: kspace: all 5 slices are all zero: the "
                              "file holds no signal: remove it")


# ---- per-file properties: width, reference grid --------------------------------------------


def _with_narrow(sim: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``sim`` plus a simulated 32 x 8 volume of 2 slices: (folder, that file)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder, _ = _copy(sim, tmp_path)
    (path,) = simulate_mri_dataset(tmp_path / "narrow", volumes=1, seed=6, slices=2, coils=3,
                                   size=(32, 8), resolution=2)
    shutil.move(path, folder / "z_narrow.h5")
    return folder, folder / "z_narrow.h5"


def test_a_file_too_narrow_for_espirit_maps_is_refused_when_the_set_is_built(sim, tmp_path):
    """Was: accepted; when drawn (5 steps in) "ESPIRiT needs a fully sampled centre band of at
    least 3 columns, got 1 (use calibrate.method=walsh, ...)": no file, and a pipeline key."""
    folder, path = _with_narrow(sim, tmp_path)
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MASK, maps="espirit")
    msg = str(err.value)
    assert msg.startswith(f"MRITrainingSet: {path}: kspace is 32 x 8: data.maps: espirit")
    assert "here 1 (round(8 x 0.16), data.mask.center_fractions)" in msg
    assert "calibrate.method" not in msg
    # the suggested fraction gives ESPIRiT its band on 8 columns
    fraction = float(msg.split("center_fractions to at least ")[1].split(",")[0])
    assert len(MRITrainingSet(folder, MaskConfig("equispaced_fraction", (fraction,), (2,)),
                              maps="espirit")) == 12
    assert len(MRITrainingSet(folder, MASK, maps="walsh")) == 12  # Walsh calibrates from 1


def test_a_file_too_narrow_for_the_mask_is_refused_naming_data_mask(sim, tmp_path):
    folder, path = _with_narrow(sim, tmp_path)
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MaskConfig("equispaced_fraction", (0.04,), (9,)), maps="learned")
    assert str(err.value).startswith(
        f"MRITrainingSet: {path}: kspace is 32 x 8: data.mask (equispaced_fraction, center "
        "fraction 0.04, acceleration 9) draws no mask on its 8 columns: ")


def test_a_reference_larger_than_the_kspace_grid_is_refused_when_the_set_is_built(sim, tmp_path):
    """Was: accepted; "center_crop: crop size (48, 48) does not fit input (32, 32)" at the first
    step that drew it."""
    def edit(h5):
        ref = h5["reconstruction_rss"][()]
        _replace(h5, "reconstruction_rss", np.pad(ref, ((0, 0), (8, 8), (8, 8))))

    folder, path = _copy(sim, tmp_path, edit)
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MASK, maps="learned")
    assert str(err.value).startswith(
        f"MRITrainingSet: {path}: reconstruction_rss: its images are 48 x 48, larger than the "
        "32 x 32 image grid of its k-space")


# ---- references in another layout or slice order ------------------------------------------


@pytest.mark.parametrize("change, said", [
    (lambda ref: np.rot90(ref, 1, axes=(-2, -1)), "far better rotated 270 degrees"),
    (lambda ref: np.swapaxes(ref, -2, -1), "far better transposed"),
    (lambda ref: ref[..., ::-1, :], "far better flipped up-down"),
])
def test_a_reference_in_another_layout_is_refused_naming_the_file(sim, tmp_path, change, said):
    """Was: trained with exit 0 and no word (validation PSNR 20.2 dB, unremarkable), while
    `bench` on the same file said "the reference matches zero_filled's output far better
    rotated 270 degrees (correlation 0.88) than as read (0.35)"."""
    folder, path = _copy(sim, tmp_path, _reference_edit(change))
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MASK, maps="learned")
    msg = str(err.value)
    assert msg.startswith(f"MRITrainingSet: {path}: reconstruction_rss: slice 1: the reference "
                          "matches the RSS image of its k-space " + said)
    assert "Training would teach the model" in msg


def test_a_rotated_reference_in_a_self_supervised_validation_set_is_refused(sim, tmp_path):
    """AcquiredMRISet (loss.ssdu) validated against a rotated reference without a word: it
    checked the scale only. It now runs the training set's layout check, judged by the image of
    the k-space as acquired."""
    from mrirecon.training.data_acquired import AcquiredMRISet

    folder, path = _copy(sim, tmp_path,
                         _reference_edit(lambda ref: np.rot90(ref, 1, axes=(-2, -1))))
    AcquiredMRISet(folder, MASK, train=True)  # training never reads the references
    with pytest.raises(ValueError) as err:
        AcquiredMRISet(folder, MASK, train=False)
    assert str(err.value).startswith(f"AcquiredMRISet: {path}: reconstruction_rss: slice 1: the "
                                     "reference matches the RSS image of its k-space far better "
                                     "rotated 270 degrees")
    assert "Validation would score the model against the reference as read" in str(err.value)


def test_reference_slices_in_reverse_order_are_refused(sim, tmp_path):
    """Was: trained with exit 0; `bench` said "... match the output far better in reverse order
    (0.54) than as stored (0.22)"."""
    folder, path = _copy(sim, tmp_path, _reference_edit(lambda ref: ref[::-1]))
    with pytest.raises(ValueError) as err:
        MRITrainingSet(folder, MASK, maps="learned")
    assert str(err.value).startswith(
        f"MRITrainingSet: {path}: reconstruction_rss: slices 1 and 3 against the RSS images of "
        "their k-space: the reference slices match the output far better in reverse order")


def test_honest_files_pass_every_check(sim):
    for maps in ("learned", "espirit", "walsh"):
        assert len(MRITrainingSet(sim, MASK, maps=maps)) == 10


# ---- a bad sample found only when drawn ----------------------------------------------------


def test_a_nan_sample_drawn_is_named_with_its_file_and_slice(sim, tmp_path):
    """Slice 2 of 5 is not read when the set is built (slices 1 and 3 are): found when drawn,
    now named with the set, the file and the slice."""
    def edit(h5):
        k = h5["kspace"][2]
        k[0, 3, 3] = np.nan
        h5["kspace"][2] = k

    folder, path = _copy(sim, tmp_path, edit)
    data = MRITrainingSet(folder, MASK, maps="learned", train=True)
    with pytest.raises(ValueError) as err:
        data.get(5 + 2, mask_seed=0)
    assert str(err.value).startswith(f"MRITrainingSet: {path}: slice 2: kspace[2]: 1 NaN or Inf "
                                     f"samples (remove the file from {folder} or repair it)")


def test_a_calibration_failure_when_drawn_names_the_file_slice_and_key(sim, tmp_path):
    """A slice whose centre columns hold no data (the rest does): ESPIRiT's "calibration block
    of kspace is all zero" stopped training naming neither file nor training key."""
    def edit(h5):
        k = h5["kspace"][2]
        k[..., 12:21] = 0
        h5["kspace"][2] = k

    folder, path = _copy(sim, tmp_path, edit)
    data = MRITrainingSet(folder, MASK, maps="espirit", train=True)
    with pytest.raises(ValueError) as err:
        data.get(5 + 2, mask_seed=0)
    msg = str(err.value)
    assert msg.startswith(f"MRITrainingSet: {path}: slice 2: espirit_maps: ")
    assert "(calibrating its coil maps (data.maps: espirit, from the 5 centre columns" in msg


# ---- the model card's acceleration range ---------------------------------------------------


@pytest.mark.parametrize("mask_type", ["equispaced_fraction", "equispaced", "magic_fraction"])
def test_the_card_range_holds_every_mask_training_draws(sim, mask_type):
    """Was: [4.0, 4.5714] for 4x / 0.16 on 32 columns (seeds 0-3 all drew one offset), while
    training drew 3.556x masks 142 of 450 times and `run` / `bench` then warned "acceleration
    3.55556 is outside the modl training range" on data the model was trained on."""
    from mrirecon.training.trainer import sample_seed

    data = MRITrainingSet(sim, MaskConfig(mask_type, (0.16,), (4,)), maps="learned")
    lo, hi = data.training_range()["accelerations"]
    drawn = {data.get(pos % len(data), mask_seed=sample_seed(0, epoch, pos)).acceleration
             for epoch in range(10) for pos in range(len(data))}
    slack = 0.5e-4  # the card rounds to 4 decimals
    assert all(lo - slack <= a <= hi + slack for a in drawn), (lo, hi, sorted(drawn))
    assert min(drawn) <= lo + slack  # and the range is what was drawn (plus the nominal 4)


def test_training_with_a_blank_slice_completes(sim, root, tmp_path):
    """`mrirecon train` on a folder with one all-zero slice: exit 2 after 10 steps before."""
    from mrirecon.training.run import train_from_config

    folder, _ = _copy(sim, tmp_path, lambda h5: h5["kspace"].__setitem__(4, 0))
    cfg = {"name": "t", "output_dir": str(tmp_path / "out"), "seed": 0, "device": "cpu",
           "data": {"train": str(folder), "val": str(root / "val"), "maps": "walsh",
                    "mask": {"type": "equispaced_fraction", "center_fractions": [0.16],
                             "accelerations": [4]}},
           "model": {"name": "modl", "params": {"iterations": 1, "layers": 2, "features": 4,
                                                "cg_iterations": 2}},
           "optim": {"lr": 1e-3, "max_steps": 10, "batch_size": 1}, "loss": {"ssim": 1.0},
           "log_every": 5, "val_every": 10, "checkpoint_every": 10, "tensorboard": False}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    train_from_config(path, progress=False)
    assert (tmp_path / "out" / "model.pt").is_file()
