"""Hostile own data for `mrirecon train`: rotated or reordered CT ground truths, blank CT ground
truths, a training volume re-saved into the validation folder, training files changed between a
run and its --resume, a file given as the data folder. Each trained (or failed late) with exit 0
or an error naming no file; now refused when the data sets are built, naming the file and field."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from mrirecon.core.config import ConfigError
from mrirecon.training.run import train_from_config
from tests.helpers import tiny_ct_part, tiny_mri_folders, tiny_modl_config

@pytest.fixture(scope="module")
def mri(tmp_path_factory) -> dict[str, Path]:
    return tiny_mri_folders(tmp_path_factory.mktemp("own_mri"))


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """A LoDoPaB-layout training part: one file of 3 phantom images, 32 x 32, 48 views."""
    return tiny_ct_part(tmp_path_factory.mktemp("own_ct"), 3)


def _mri_config(tmp_path: Path, train: Path, val: Path, out: Path, **changes) -> Path:
    return tiny_modl_config(tmp_path, train, val, out, max_steps=2, checkpoint_every=1, **changes)


def _hostile_ct(ct: Path, tmp_path: Path, change) -> Path:
    """A copy of the CT part whose ground truth ``data`` (n, x, y) is ``change(data)``."""
    root = tmp_path / "hostile"
    shutil.copytree(ct, root)
    with h5py.File(root / "ground_truth_train_000.hdf5", "r+") as h5:
        h5["data"][...] = change(h5["data"][()])
    return root


# ---- rotated, transposed, reversed CT ground truths ---------------------------------------------


@pytest.mark.parametrize("name, change", [
    ("rotated 90 degrees", lambda a: a.swapaxes(1, 2)[:, ::-1]),  # (rows, cols) kept as read
    ("transposed", lambda a: a.swapaxes(1, 2)),
])
def test_a_ct_ground_truth_in_another_layout_is_refused_naming_the_file(ct, tmp_path, name,
                                                                        change):
    """LoDoPaB ground truths are stored in ODL's (x, y) layout; one stored as (rows, cols) trained
    with exit 0 and no word (bench and run said "rotated 270 degrees (correlation 0.96) than as
    read (0.68)" on the same files). The data set compares the ground truth with the FBP of its
    sinogram (a few images per file) by the rule of run and bench."""
    from mrirecon.training.data_ct import CTTrainingSet
    from mrirecon.training.reference_checks import DIHEDRAL_NAMES

    assert len(CTTrainingSet(ct, views=12)) == 3  # the honest part passes
    bad = _hostile_ct(ct, tmp_path, change)
    with pytest.raises(ValueError) as err:
        CTTrainingSet(bad, views=12)
    msg = str(err.value)
    assert msg.startswith(f"CTTrainingSet: {bad / 'ground_truth_train_000.hdf5'}: data: image 0: "
                          "the reference matches the FBP of its sinogram in "
                          "observation_train_000.hdf5 far better ")
    # which transform undoes it: a name of the dihedral group, not necessarily the one applied
    assert any(f"far better {n} (correlation" in msg for n in DIHEDRAL_NAMES.values()), msg
    assert "Training would teach the model" in msg


def test_ct_ground_truth_images_in_reverse_order_are_refused(ct, tmp_path):
    """Images stored last to first: each ground truth is another image's, no flip matches; the
    first and last images of the file against their FBPs say so."""
    from mrirecon.training.data_ct import CTTrainingSet

    bad = _hostile_ct(ct, tmp_path, lambda a: a[::-1])
    with pytest.raises(ValueError) as err:
        CTTrainingSet(bad, views=12)
    assert str(err.value).startswith(
        f"CTTrainingSet: {bad / 'ground_truth_train_000.hdf5'}: data: images 0, 2 against the "
        "FBPs of their sinograms in observation_train_000.hdf5: the reference slices match the "
        "output far better in reverse order")


# ---- blank CT ground truths ---------------------------------------------------------------------


def _blank(index: int):
    def change(a):
        a = a.copy()
        a[index] = 0
        return a
    return change


@pytest.mark.parametrize("index", [0, 2])
def test_a_blank_ct_ground_truth_is_refused_when_the_set_is_built(ct, tmp_path, index):
    """An all-zero ground truth (a placeholder) ended training with "internal error:
    FloatingPointError: training loss became nan at step 2" (its maximum is the SSIM data
    range), and validation with "nmse: gt of shape (1, 32, 32) is all zero": no file named."""
    from mrirecon.training.data_ct import CTTrainingSet

    bad = _hostile_ct(ct, tmp_path, _blank(index))
    with pytest.raises(ValueError) as err:
        CTTrainingSet(bad, views=12)  # the first and last image of each file: at build time
    assert str(err.value).startswith(
        f"CTTrainingSet: {bad / 'ground_truth_train_000.hdf5'}: data: image {index} is nowhere "
        "positive (maximum 0): no training target")


def test_a_blank_ct_ground_truth_inside_a_file_is_refused_by_name(ct, tmp_path):
    """An image between the first and last of its file: validation sets check every image when
    built (validation scores them all), training sets when the image is drawn (reading every
    ground truth of LoDoPaB, 35820 images, would delay each start by minutes)."""
    from mrirecon.training.data_ct import CTTrainingSet

    bad = _hostile_ct(ct, tmp_path, _blank(1))
    expected = (f"CTTrainingSet: {bad / 'ground_truth_train_000.hdf5'}: data: image 1 is nowhere "
                "positive")
    with pytest.raises(ValueError, match="^" + expected.replace(".", r"\.")):
        CTTrainingSet(bad, views=12, train=False)
    train = CTTrainingSet(bad, views=12)
    train.get(0, mask_seed=0)
    with pytest.raises(ValueError, match="^" + expected.replace(".", r"\.")):
        train.get(1, mask_seed=0)


# ---- a training volume re-saved into the validation folder --------------------------------------


def _resave(src: Path, dst: Path, **attrs) -> Path:
    """``src``'s datasets and attributes written again, gzip-compressed in chunks: other bytes,
    the same data."""
    with h5py.File(src) as a, h5py.File(dst, "w") as b:
        for key in a:
            value = a[key][()]
            if getattr(value, "ndim", 0) >= 2:
                b.create_dataset(key, data=value, compression="gzip", chunks=True)
            else:
                b.create_dataset(key, data=value)
        b.attrs.update({**dict(a.attrs), **attrs})
    return dst


def test_a_training_volume_resaved_for_validation_is_refused(mri, tmp_path, caplog):
    """A training volume re-saved under another name with gzip chunks (same k-space, reference
    and attributes) passed the overlap check (inode and whole-file bytes only): exit 0."""
    train = sorted(mri["train"].glob("*.h5"))
    val = tmp_path / "val"
    shutil.copytree(mri["val"], val)
    leak = _resave(train[1], val / "renamed_volume.h5")
    assert leak.read_bytes() != train[1].read_bytes()
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        train_from_config(_mri_config(tmp_path, mri["train"], val, out), progress=False)
    assert str(err.value).startswith(
        f"{tmp_path / 't.yaml'}: data.val: 1 of the 2 validation file(s) are also training files "
        f"(data.train): {leak} holds the data of {train[1]} (the same k-space (2, 2, 32, 32) and "
        "middle slice, stored otherwise)")
    assert not out.exists()
    # another patient's volume with a training file's patient_id: reported, not refused
    leak.unlink()
    with h5py.File(train[0]) as h5:
        pid = h5.attrs["patient_id"]
    same = _resave(next(mri["val"].glob("*.h5")), val / "same_patient.h5", patient_id=pid)
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        result = train_from_config(_mri_config(tmp_path, mri["train"], val, out), progress=False)
    assert result.steps == 2
    assert any(r.getMessage().startswith(f"data.val: {same} has the patient_id {pid!r} of the "
                                         f"training file {train[0]}") for r in caplog.records)


def test_different_volumes_with_a_blank_middle_slice_are_not_taken_for_one(mri, tmp_path):
    """The fingerprint is the middle slice's centre k-space row: two different volumes whose
    middle slice is all zero gave equal bytes and the validation one was refused as "holds the
    data of" the training one."""
    from mrirecon.training.run_checks import same_data_files

    a, b = sorted(mri["train"].glob("*.h5"))[:2]
    blanked = []
    for src in (a, b):
        dst = tmp_path / src.name
        shutil.copy(src, dst)
        with h5py.File(dst, "r+") as h5:
            h5["kspace"][h5["kspace"].shape[0] // 2] = 0
        blanked.append(dst)
    assert same_data_files([blanked[0]], [blanked[1]]) == ([], [])
    copy = _resave(a, tmp_path / "copy.h5")  # a true re-save is still found
    assert [v for v, _, _ in same_data_files([a], [copy])[0]] == [copy]


# ---- --resume after the training files changed ---------------------------------------------------


def test_resume_refuses_training_files_added_or_removed(mri, tmp_path, caplog):
    """Train, remove one training file and add two, --resume with more steps: silent, the epoch
    order drawn over another sample count (samples repeated or skipped), the card listing only
    the final files. The checkpoint records the files (name, size, mtime)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    train = tmp_path / "train"
    shutil.copytree(mri["train"], train)
    out = tmp_path / "run"
    path = _mri_config(tmp_path, train, mri["val"], out)
    train_from_config(path, progress=False)
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    names = sorted(p.name for p in train.glob("*.h5"))
    assert [r["name"] for r in ckpt["train_files"]] == names
    removed = train / names[0]
    kept = removed.read_bytes()
    removed.unlink()
    added = simulate_mri_dataset(tmp_path / "more", volumes=2, slices=2, coils=2, size=(32, 32),
                                 seed=7, resolution=2)
    for f in added:
        shutil.copy(f, train / f"new_{Path(f).name}")
    with pytest.raises(ConfigError) as err:
        train_from_config(path, ["optim.max_steps=4"], resume=True, progress=False)
    msg = str(err.value)
    new = sorted(f"new_{Path(f).name}" for f in added)
    assert msg.startswith(f"{path}: data.train: --resume continues the run in {out}, which trained "
                          f"on other files of {train} (added: {', '.join(new)}; removed: "
                          f"{names[0]}; 2 file(s) then, 3 now)")
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["step"] == 2
    # the same files again: the resume goes on; a file only touched (same size) is reported
    for name in new:
        (train / name).unlink()
    removed.write_bytes(kept)  # rewritten: same size, another modification time
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        assert train_from_config(path, ["optim.max_steps=4"], resume=True,
                                 progress=False).steps == 4
    assert any(r.getMessage().startswith("--resume: 1 training file(s) of ")
               and names[0] in r.getMessage() for r in caplog.records)


# ---- a file given as the data folder ------------------------------------------------------------


def test_a_file_given_as_data_train_is_named_a_file(mri, tmp_path):
    """Was: "data.train: folder .../file_brain_AXT2_sim1_0001.h5 does not exist"."""
    f = sorted(mri["train"].glob("*.h5"))[0]
    path = _mri_config(tmp_path, mri["train"], mri["val"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train_from_config(path, [f"data.train={f}"], progress=False)
    assert str(err.value) == (f"{path}: data.train: {f} is a file, not a folder: give the folder "
                              f"that holds it ({mri['train']})")
