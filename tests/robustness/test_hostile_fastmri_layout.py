"""fastMRI layouts an audit found mishandled: brain files whose k-space is narrower than the recon
matrix ("FLAIR 203"), written and scored as fastMRI 0.3.0 crops them (W x W); volumes with one
all-zero k-space slice, written as zeros instead of failing the volume; and why CG-SENSE equals
the zero-filled image with ESPIRiT maps from a 3-column centre band."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import clone_h5

fastmri = pytest.importorskip("fastmri")
from fastmri import evaluate as fm_eval  # noqa: E402
from fastmri.data import transforms as fm_t  # noqa: E402

W = 21  # k-space columns of the narrow file; its recon matrix is 32 x 32
OUT = ["export.formats=[hdf5]", "report.enabled=false"]
ZF = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}",
      "reconstruct.params_by_acceleration={}", "calibrate.method=none"]


def _entry(out: Path) -> dict:
    entry = json.loads((out / "provenance.json").read_text())["files"][0]
    return {**entry, "out": out}


def _recon(entry: dict) -> np.ndarray:
    with h5py.File(entry["out"] / entry["outputs"]["hdf5"]) as f:
        return f["reconstruction"][()]


@pytest.fixture(scope="module")
def sim_file(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("fastmri_layout")
    (path,) = simulate_mri_dataset(out / "src", volumes=1, slices=3, coils=4, size=(36, 32),
                                   seed=3, resolution=2, readout_oversampling=2)
    return Path(path)


def _narrow(src: Path, folder: Path, reference: str) -> tuple[Path, np.ndarray]:
    """A FLAIR-203-like copy of ``src``: k-space 64 x W (readout oversampled 2x), recon matrix
    32 x 32, ``reconstruction_rss`` of the full k-space cropped to (W, W) (``"square"``, the
    fastMRI transforms' crop) or to (32, W) (``"tall"``). Returns the file and the k-space."""
    with h5py.File(src) as f:
        k = f["kspace"][()]
        xml = f["ismrmrd_header"][()].decode()
    start = k.shape[-1] // 2 - W // 2
    k = np.ascontiguousarray(k[..., start:start + W])
    xml = re.sub(r"<userParameters>.*</userParameters>", "", xml, flags=re.S)
    xml = re.sub(r"(<encodedSpace>\s*<matrixSize>\s*<x>)\d+(</x>\s*<y>)\d+",
                 rf"\g<1>{k.shape[-2]}\g<2>{W}", xml)
    xml = re.sub(r"(<reconSpace>\s*<matrixSize>\s*<x>)\d+(</x>\s*<y>)\d+", r"\g<1>32\g<2>32", xml)
    xml = re.sub(r"<maximum>\d+</maximum>", f"<maximum>{W - 1}</maximum>", xml)
    xml = re.sub(r"<center>\d+</center>", f"<center>{W // 2}</center>", xml)
    full = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(fm_t.to_tensor(k))), dim=1)
    ref = fm_t.center_crop(full, (W, W) if reference == "square" else (32, W)).numpy()
    path = clone_h5(src, folder / "file_brain_AXFLAIR_201_6002900.h5", kspace=k,
                    reconstruction_rss=ref.astype(np.float32), ismrmrd_header=xml)
    with h5py.File(path, "a") as f:
        f.attrs["max"] = float(ref.max())
    return path, k


def _fastmri_scores(target: np.ndarray, recon: np.ndarray) -> dict[str, float]:
    """``fastmri.evaluate``'s crop and metrics of one volume."""
    target = fm_t.center_crop(target, (target.shape[-1], target.shape[-1]))
    recon = fm_t.center_crop(recon, (target.shape[-1], target.shape[-1]))
    return {"nmse": float(fm_eval.nmse(target, recon)), "psnr": float(fm_eval.psnr(target, recon)),
            "ssim": float(np.asarray(fm_eval.ssim(target, recon)).reshape(-1)[0])}


# ---- F1: k-space narrower than the recon matrix (fastMRI brain "FLAIR 203") -------------------

@pytest.mark.parametrize("reference", ["square", "tall"])
def test_a_narrow_fastmri_file_is_written_and_scored_as_fastmri_crops_it(sim_file, tmp_path,
                                                                         reference):
    """A 64 x 21 k-space with a 32 x 32 recon matrix was written (32, 21) where fastMRI's
    VarNetModule.test_step / UnetDataTransform crop to (W, W), and a (W, W) reference was
    refused ("the reference image of slice 0 is (21, 21), the postprocessed output is (32, 21)").
    Now the output is fastMRI's crop of the image, and the metrics are fastmri.evaluate's, for a
    (W, W) reference and for a (32, W) one (scored before, scored the same now)."""
    path, k = _narrow(sim_file, tmp_path / "in", reference)
    config = load_pipeline("mri_retrospective", [*OUT, *ZF, "undersample.enabled=false",
                                                 "preprocess.remove_oversampling=false"])[0]
    assert run_pipeline(config, [str(path)], tmp_path / "o", progress=False) == 0
    entry = _entry(tmp_path / "o")
    out = _recon(entry)
    image = fastmri.rss(fastmri.complex_abs(fastmri.ifft2c(fm_t.to_tensor(k))), dim=1)
    crop = (W, W) if image.shape[-1] < 32 else (32, 32)  # VarNetModule.test_step's rule
    expected = fm_t.center_crop(image, crop).numpy()
    assert out.shape == (3, W, W)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * float(expected.max()))
    with h5py.File(path) as f:
        target = f["reconstruction_rss"][()]
    want = _fastmri_scores(target, out)
    assert not [w for w in entry["warnings"] if "no metrics" in w]
    for name, value in want.items():
        assert entry["metrics"][name] == pytest.approx(value, rel=1e-6, abs=1e-9)


def test_the_bench_scores_a_narrow_fastmri_file(sim_file, tmp_path):
    """`mrirecon bench` skipped the narrow volume ("the target must be the image on the output's
    grid"); it is scored now: (W, W) predictions, fastmri.evaluate's numbers."""
    from mrirecon.bench import run_bench

    path, _ = _narrow(sim_file, tmp_path / "in", "square")
    kept: list[np.ndarray] = []
    table = run_bench(path.parent, accelerations=(4,), methods="zero_filled_rss", progress=False,
                      verbose=False, on_record=lambda rec, pred: kept.append(pred))
    assert table.skipped == [] and len(table.records) == 1 and kept[0].shape == (3, W, W)
    with h5py.File(path) as f:
        target = f["reconstruction_rss"][()]
    want = _fastmri_scores(target, kept[0])
    rec = table.records[0]
    for name, value in want.items():
        assert rec[name.upper()] == pytest.approx(value, rel=1e-6)


def test_recon_size_crops_only_narrow_fastmri_files():
    """The (W, W) rule is fastMRI's, for fastMRI files (the reader's ``file_slices`` mark);
    ISMRMRD data of a lower phase resolution keep every readout row, and files at least as wide
    as the recon matrix keep the recon size. The output's voxel [0, 0] stays on the recon grid."""
    from mrirecon.containers import Header
    from mrirecon.pipeline.schema import PostprocessConfig
    from mrirecon.pipeline.stages_mri import output_offset, recon_size

    cfg = PostprocessConfig(crop="recon_size")
    ismrmrd = Header(encoded_matrix=(64, W, 1), recon_matrix=(32, 32, 1))
    fastmri_header = ismrmrd.with_(extra={"file_slices": 3})
    assert recon_size(fastmri_header, cfg, (64, W)) == (W, W)
    assert recon_size(ismrmrd, cfg, (64, W)) == (32, W)
    wide = Header(encoded_matrix=(64, 40, 1), recon_matrix=(32, 32, 1), extra={"file_slices": 3})
    assert recon_size(wide, cfg, (64, 40)) == (32, 32)
    # rows: the crop starts at (64 - 21) // 2 = 21, recon row 0 at 64 // 2 - 16 = 16
    assert output_offset(fastmri_header, cfg, (64, W)) == (5, 16 - W // 2)
    assert output_offset(ismrmrd, cfg, (64, W)) == (0, 16 - W // 2)


# ---- F2: one all-zero k-space slice -----------------------------------------------------------

def _blank_copy(src: Path, folder: Path, slices=(1,), blank_reference: bool = False) -> Path:
    with h5py.File(src) as f:
        k, ref = f["kspace"][()], f["reconstruction_rss"][()]
    for i in slices:
        k[i] = 0
        if blank_reference:
            ref[i] = 0
    return clone_h5(src, folder / src.name, kspace=k, reconstruction_rss=ref)


BLANK = "slice 1 of 3: k-space is all zero; written as zeros"


@pytest.mark.parametrize("pipeline, sets", [
    ("mri_cs", ["reconstruct.method=cg_sense", "reconstruct.params={iterations: 10}",
                "reconstruct.params_by_acceleration={}"]),
    ("mri_cs", ["reconstruct.method=grappa", "reconstruct.params={}",
                "reconstruct.params_by_acceleration={}", "calibrate.method=none"]),
    ("mri_modl_brain_sim", []),
    ("mri_varnet_brain_sim", []),
])
def test_one_blank_slice_is_written_as_zeros(sim_file, tmp_path, monkeypatch, pipeline, sets):
    """One all-zero slice failed the whole volume ("slice 1: k-space is all zero (undersample);
    the file holds no signal"), exit 1, no output. Now it is written as zeros with a warning
    naming it; ESPIRiT, the classical methods and the networks never see it, and the other
    slices are those of the intact file bit for bit."""
    from mrirecon import calib, recon
    from mrirecon.pipeline import stages_mri

    seen: list[bool] = []
    maps, run, operator = calib.centre_maps, recon.run, stages_mri.operator

    def spy_maps(kspace, *a, **kw):
        seen.append(bool((kspace != 0).any()))
        return maps(kspace, *a, **kw)

    def spy_run(method, y, *a, **kw):
        seen.append(bool((y != 0).any()))
        return run(method, y, *a, **kw)

    def spy_operator(s, *a, **kw):  # the learned models' and the SENSE methods' operator
        seen.append(bool((s.kspace != 0).any()))
        return operator(s, *a, **kw)

    monkeypatch.setattr(calib, "centre_maps", spy_maps)
    monkeypatch.setattr(stages_mri, "operator", spy_operator)
    monkeypatch.setattr(recon, "run", spy_run)
    bad = _blank_copy(sim_file, tmp_path / "bad")
    config = load_pipeline(pipeline, [*OUT, "undersample.enabled=true", *sets])[0]
    assert run_pipeline(config, [str(sim_file)], tmp_path / "good", progress=False) == 0
    assert run_pipeline(config, [str(bad)], tmp_path / "o", progress=False) == 0
    assert seen and all(seen)  # every calibration / reconstruction call had data
    entry = _entry(tmp_path / "o")
    good, out = _recon(_entry(tmp_path / "good")), _recon(entry)
    assert not out[1].any() and np.array_equal(out[[0, 2]], good[[0, 2]])
    warned = [w for w in entry["warnings"] if "all zero" in w]
    assert warned == [f"{bad.name}: {BLANK} (no calibration or reconstruction ran on it; the other "
                      "slices are reconstructed as usual); its reference image is not blank: the "
                      "metrics score the zeros against it"]
    assert not [w for w in entry["warnings"] if "coil" in w and "hold no signal" in w]


def test_a_blank_slice_with_a_blank_reference_is_scored_as_fastmri_scores_it(sim_file, tmp_path):
    """The blank slice meets a blank reference slice (its RSS): both zero, the slice is kept in
    the metrics (as a blank reference slice matching its reconstruction always was), which are
    fastmri.evaluate's of the written volume."""
    bad = _blank_copy(sim_file, tmp_path / "bad", blank_reference=True)
    config = load_pipeline("mri_retrospective", [*OUT, *ZF, "undersample.enabled=true"])[0]
    assert run_pipeline(config, [str(bad)], tmp_path / "o", progress=False) == 0
    entry = _entry(tmp_path / "o")
    with h5py.File(bad) as f:
        target = f["reconstruction_rss"][()]
    for name, value in _fastmri_scores(target, _recon(entry)).items():
        assert entry["metrics"][name] == pytest.approx(value, rel=1e-6)
    assert [w for w in entry["warnings"] if "all zero" in w] == [
        f"{bad.name}: {BLANK} (no calibration or reconstruction ran on it; the other slices are "
        "reconstructed as usual)"]


def test_a_volume_blank_in_every_slice_is_refused(sim_file, tmp_path):
    """Only a volume without any signal fails, with the words of before (now true)."""
    bad = _blank_copy(sim_file, tmp_path / "bad", slices=(0, 1, 2))
    config = load_pipeline("mri_retrospective", [*OUT, *ZF, "undersample.enabled=true"])[0]
    assert run_pipeline(config, [str(bad)], tmp_path / "o", progress=False) == 1
    entry = _entry(tmp_path / "o")
    assert entry["status"] == "failed" and "hdf5" not in entry["outputs"]
    assert (f"{bad.name}: all 3 slices: k-space is all zero (undersample); the file holds no "
            "signal") in entry["error"]


def test_scan_specific_adaptation_leaves_a_blank_slice_out(sim_file, tmp_path):
    """`mri_learned_adapt` fed the blank slice to its adaptation, which refused the volume
    ("adapt needs calibrated coil maps"); it adapts on the other slices and writes zeros."""
    bad = _blank_copy(sim_file, tmp_path / "bad")
    config = load_pipeline("mri_learned_adapt", [
        *OUT, "undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4",
        "adapt.steps=1", "adapt.val_every=1", "adapt.rows=null", "adapt.time_budget_s=null"])[0]
    assert run_pipeline(config, [str(bad)], tmp_path / "o", progress=False) == 0
    entry = _entry(tmp_path / "o")
    assert entry["adapt"]["steps"] == 1
    out = _recon(entry)
    assert not out[1].any() and out[[0, 2]].any()


def test_the_bench_scores_a_volume_with_a_blank_slice(sim_file, tmp_path):
    """`mrirecon bench` skipped such a volume; it is scored now, the warning in its records."""
    from mrirecon.bench import run_bench

    bad = _blank_copy(sim_file, tmp_path / "bad")
    table = run_bench(bad.parent, accelerations=(4,), methods="zero_filled,cg_sense",
                      progress=False, verbose=False)
    assert table.skipped == [] and len(table.records) == 2
    for rec in table.records:
        assert any(BLANK in w for w in rec["data_warnings"])
        assert np.isfinite(rec["PSNR"])


# ---- F3 (investigated): CG-SENSE with maps from a 3-column band -------------------------------

def test_one_column_espirit_kernels_give_maps_constant_across_phase_encoding(sim_file):
    """Why `bench --accelerations 8` on 64 x 64 data gave CG-SENSE the zero-filled numbers to 8
    digits: fastMRI's 8x mask keeps a 3-column centre band, ESPIRiT's kernels are clamped to
    1 column across phase encoding (the warning the bench records), and such maps do not vary
    across phase encoding at all. SENSE then has no coil information to unfold the aliasing
    along phase encoding: A^H y is a fixed point of A^H A, CG stops after one step (tolerance
    1e-6), and the image is the zero-filled one. Legitimate; a 6-column band differs."""
    from mrirecon import calib, recon
    from mrirecon.operators import sense
    from mrirecon.sampling import center_mask

    with h5py.File(sim_file) as f:
        k = torch.from_numpy(f["kspace"][1])
    w = k.shape[-1]
    for band, same in ((3, True), (6, False)):
        centre = torch.from_numpy(center_mask(w, band)).bool()
        mask = centre.clone()
        mask[::8] = True
        y = k * mask
        maps = calib.centre_maps(y, centre)
        across = float((maps - maps[..., :1]).abs().max())  # variation along phase encoding
        assert (across < 1e-5) == same
        op = sense(maps, mask)
        cg = recon.run("cg_sense", y, op, iterations=40, tolerance=1e-6)
        zf = recon.run("zero_filled", y, op)
        rel = float((cg.abs() - zf.abs()).norm() / zf.abs().norm())
        assert (rel < 1e-5) == same
