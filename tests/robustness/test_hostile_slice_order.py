"""A reference whose slices are stored in another order than the data's (last to first, or
shuffled): each output slice was scored against another slice's anatomy, the metrics dropped and
the run ended with exit 0 and no word. Now a warning names the file, the field and the order that
matches; the metrics are still computed against the reference as stored."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from tests.helpers import clone_h5
from mrirecon.pipeline import reference_checks
from mrirecon.pipeline.definitions import load_pipeline
from tests.robustness.test_hostile_inputs import mri_config, run_one

REVERSED = "the reference slices match the output far better in reverse order"
SHUFFLED = "the reference slices match the output far better in another order"


def _order_warnings(entry: dict) -> list[str]:
    return [w for w in entry["warnings"] if "reference slices match" in w]


@pytest.fixture(scope="module")
def slab(tmp_path_factory) -> Path:
    """6 slices of a 4x undersampled simulated brain, 32 x 32, 2 coils (the reference kept)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("slab"), volumes=1, slices=6, coils=2,
                                   size=(32, 32), seed=5, resolution=2, acceleration=4)
    return Path(path)


def _with_reference(src: Path, dst: Path, order) -> Path:
    with h5py.File(src) as h5:
        ref = h5["reconstruction_rss"][()]
    return clone_h5(src, dst, reconstruction_rss=ref[order].copy())


def test_a_reversed_mri_reference_is_reported_and_still_scored_as_stored(slab, tmp_path,
                                                                       monkeypatch):
    good = run_one(mri_config(), slab, tmp_path / "good")
    assert good["status"] == "ok" and not _order_warnings(good), good["warnings"]

    bad = _with_reference(slab, tmp_path / "reversed.h5", slice(None, None, -1))
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "ok", entry.get("error")
    (msg,) = _order_warnings(entry)
    assert msg.startswith(f"reversed.h5: reconstruction_rss: {REVERSED} (mean correlation ")
    found = re.search(r"\(mean correlation (-?[\d.]+)\) than as stored \((-?[\d.]+)\)", msg)
    assert found, msg
    assert float(found[1]) > float(found[2]) + reference_checks.SLICE_ORDER_MARGIN
    # the metrics: against the reference as stored, exactly as without the check (and worse than
    # the correct reference's, which is why the warning matters)
    monkeypatch.setattr(reference_checks, "slice_order_note", lambda reference, output: None)
    unchecked = run_one(mri_config(), bad, tmp_path / "unchecked")
    assert not _order_warnings(unchecked)
    assert entry["metrics"] == unchecked["metrics"]
    assert entry["metrics"]["psnr"] < good["metrics"]["psnr"]


def test_a_shuffled_mri_reference_is_reported_with_the_order_that_matches(slab, tmp_path):
    order = [2, 0, 5, 1, 4, 3]  # stored slice k is the data's slice order[k]
    bad = _with_reference(slab, tmp_path / "shuffled.h5", order)
    entry = run_one(mri_config(), bad, tmp_path / "out")
    (msg,) = _order_warnings(entry)
    assert msg.startswith(f"shuffled.h5: reconstruction_rss: {SHUFFLED} (mean correlation ")
    # output slice i is reference slice order.index(i); every moved slice is named
    expected = ", ".join(f"{i} -> {order.index(i)}" for i in range(6) if order.index(i) != i)
    assert f"output slice -> reference slice of 6: {expected}: " in msg


def test_a_single_slice_volume_is_not_checked(slab, tmp_path, monkeypatch):
    """One slice has no order: the correlations are not even computed (2 slices are)."""
    shapes = []

    def spy(reference, output):
        shapes.append(tuple(reference.shape))
        return torch.zeros(reference.shape[0], reference.shape[0], dtype=torch.float64)

    # the rule lives a layer down (training applies it too): its own module is the one it calls
    from mrirecon.training import reference_checks as rules

    monkeypatch.setattr(rules, "slice_correlations", spy)
    for n in (1, 2):
        with h5py.File(slab) as h5:
            first = {key: h5[key][()][:n] for key in ("kspace", "reconstruction_rss")}
        entry = run_one(mri_config(), clone_h5(slab, tmp_path / f"{n}.h5", **first),
                        tmp_path / f"out{n}")
        assert entry["status"] == "ok" and entry["metrics"], entry.get("error")
        assert not _order_warnings(entry)
    assert shapes == [(2, 32, 32)]


def test_a_reversed_ct_ground_truth_is_reported(ct_dir, tmp_path):
    root = tmp_path / "part"
    shutil.copytree(ct_dir, root)
    with h5py.File(root / "ground_truth_test_000.hdf5", "r+") as h5:
        assert h5["data"].shape[0] == 2
        h5["data"][...] = h5["data"][()][::-1]
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, root / "observation_test_000.hdf5", tmp_path / "out")
    assert entry["status"] == "ok" and entry["metrics"]
    (msg,) = _order_warnings(entry)
    assert msg.startswith(f"observation_test_000.hdf5: ground_truth_test: {REVERSED}")
    good = run_one(config, ct_dir / "observation_test_000.hdf5", tmp_path / "out_good")
    assert not _order_warnings(good)


@pytest.mark.parametrize("slices, spacing", [(24, 2.0), (8, 5.0), (2, 2.0)])
def test_correct_volumes_with_similar_neighbouring_slices_are_not_reported(slices, spacing):
    """Thin contiguous slices look alike, so slice i also matches slice n-1-i near the middle:
    a correct volume (a zero-filled 8x output, the worst of the shipped methods' images) must not
    be reported, its reversed reference must (except 2 slices 2 mm apart, which barely differ:
    the metrics barely change either)."""
    from mrirecon.data.simulate_mri import simulate_mri_volume
    from mrirecon.functional.coils import rss
    from mrirecon.functional.fft import ifft2c
    from mrirecon.sampling.cartesian import create_mask_for_mask_type

    v = simulate_mri_volume(1, slices=slices, coils=4, size=(64, 64), seed=3, snr_db=20,
                            slice_spacing_mm=(spacing, spacing), resolution=2)
    mask, _ = create_mask_for_mask_type("equispaced_fraction", [0.04], [8.0]).sample_vector(64,
                                                                                          seed=0)
    output = rss(ifft2c(v.kspace * mask.to(torch.float32)), dim=1)
    assert reference_checks.slice_order_note(v.reference, output) is None
    c = reference_checks.slice_correlations(v.reference, output)
    assert bool((c.diagonal() >= c.max(1).values).all())  # each slice's own is its best match
    flipped = reference_checks.slice_order_note(v.reference.flip(0), output)
    if slices > 2:
        assert flipped is not None and flipped.startswith(REVERSED)
