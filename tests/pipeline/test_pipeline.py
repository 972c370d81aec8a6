"""End-to-end pipeline runs on tiny simulated data: every shipped pipeline, resume, bad input,
config errors, and the exported files (fastMRI submission HDF5, NIfTI, DICOM)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from tests.helpers import fastmri_to_ismrmrd, simulated_ct_dir
from mrirecon.cli import main
from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline
from mrirecon.pipeline.runner import expand_inputs, run_pipeline


@pytest.fixture(scope="module")
def mri_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri")
    simulate_mri_dataset(out, volumes=2, slices=2, coils=4, size=(64, 48), seed=3, resolution=2)
    return out


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory) -> Path:
    return simulated_ct_dir(tmp_path_factory.mktemp("ct"), views=60, size=48, seed=3)


def _fast(name: str) -> list[str]:
    """Overrides that keep each shipped pipeline tiny (same stages, fewer iterations)."""
    return {
        "mri_cs": ["reconstruct.params.iterations=5", "calibrate.calib_width=12",
                   "calibrate.kernel_width=4"],
        "mri_retrospective": ["reconstruct.params.iterations=5", "calibrate.calib_width=12",
                              "calibrate.kernel_width=4"],
        "mri_tv": ["reconstruct.params.iterations=5", "calibrate.calib_width=12",
                   "calibrate.kernel_width=4"],
        "mri_learned": ["undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4"],
        "mri_varnet": ["undersample.enabled=true"],
        "mri_modl": ["undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4"],
        "ct_fbp": [],
        "ct_tv": ["reconstruct.params.iterations=20"],
        "ct_learned": [],
        "ct_primal_dual": [],
        "mri_pnp": ["undersample.enabled=true", "calibrate.calib_width=12", "calibrate.kernel_width=4",
                    "reconstruct.params.iterations=4"],
        "ct_pnp": ["reconstruct.params.iterations=6"],
    }[name]


def test_every_shipped_pipeline_validates():
    names = sorted(p.stem for p in PIPELINES.glob("*.yaml") if not p.stem.startswith("train_"))
    assert {"mri_learned", "mri_varnet", "mri_modl", "mri_cs", "mri_retrospective", "ct_fbp", "ct_learned"} <= set(names)
    for name in names:
        config, _ = load_pipeline(name)
        assert config.name and config.modality in ("mri", "ct")


@pytest.mark.parametrize("name", ["mri_cs", "mri_tv", "mri_retrospective", "mri_learned", "mri_varnet",
                                  "mri_modl", "mri_pnp"])
def test_mri_pipelines_end_to_end(name, mri_dir, tmp_path):
    from mrirecon.training.weights import available_weights

    config, text = load_pipeline(name, _fast(name))
    if config.reconstruct.weights and config.reconstruct.weights not in available_weights():
        pytest.skip(f"weights {config.reconstruct.weights} are not shipped")
    out = tmp_path / "out"
    code = run_pipeline(config, [str(mri_dir / "*.h5")], out, progress=False, config_text=text)
    assert code == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["ok", "ok"]
    assert set(prov["inputs"]) == {str(p) for p in sorted(mri_dir.glob("*.h5"))}
    assert prov["versions"]["torch"] and prov["git_commit"]
    assert prov["versions"]["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert prov["threads"] == torch.get_num_threads()  # results move with it at rounding level
    for f in prov["files"]:
        stem = Path(f["input"]).stem
        with h5py.File(out / "reconstructions" / f"{stem}.h5", "r") as h5, \
                h5py.File(f["input"], "r") as src:
            rec = h5["reconstruction"][()]
            ref = src["reconstruction_rss"][()]
        assert rec.shape == ref.shape and rec.dtype == np.float32  # fastMRI submission layout
        # same scale as reconstruction_rss: the recon explains the reference well
        assert 0.5 < rec.max() / ref.max() < 2.0
        if config.undersample.enabled or name in ("mri_cs", "mri_tv"):
            assert f["metrics"]["ssim"] > 0.3 and f["metrics"]["nmse"] < 0.5
        if "nifti" in f["outputs"]:
            vol = nib.load(out / f["outputs"]["nifti"])  # relative to the output folder
            np.testing.assert_allclose(np.asarray(vol.dataobj).transpose(2, 1, 0), rec, rtol=1e-6)
        for fig in f["figures"]:
            assert (out / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "<table>" in html and ".png" in html and "SSIM" in html


@pytest.mark.parametrize("name", ["ct_fbp", "ct_tv", "ct_learned", "ct_primal_dual", "ct_pnp"])
def test_ct_pipelines_end_to_end(name, ct_dir, tmp_path, caplog):
    from mrirecon.training.weights import available_weights

    config, text = load_pipeline(name, _fast(name))
    if config.reconstruct.weights and config.reconstruct.weights not in available_weights():
        pytest.skip(f"weights {config.reconstruct.weights} are not shipped")
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="mrirecon.pipeline"):
        code = run_pipeline(config, [str(ct_dir / "observation_test_000.hdf5")], out, progress=False,
                            config_text=text)
    assert code == 0
    if name == "ct_pnp":  # 48 x 48 images lie below the card's training range (64 .. 768)
        assert any("matrix 48 x 48 is outside the pnp_dncnn_diverse training range" in r.message
                   for r in caplog.records)
    if name == "ct_learned":  # trained at the LoDoPaB geometry only (362 x 362)
        assert any("matrix 48 x 48 is outside the staged_ct_lodopab training range" in r.message
                   for r in caplog.records)
    prov = json.loads((out / "provenance.json").read_text())
    (f,) = prov["files"]
    assert f["status"] == "ok" and f["slices"] == 2
    assert f["metrics"]["psnr"] > 20 and f["metrics"]["ssim"] > 0.5
    if name in ("ct_pnp", "ct_learned"):  # the range warning is in the record, not only the log
        assert any("observation_test_000.hdf5: all 2 slices: matrix 48 x 48 is outside the" in w
                   for w in f["warnings"])
        assert "is outside the" in (out / "report.html").read_text()
    from mrirecon.io import read_dicom_series

    series = read_dicom_series(out / f["outputs"]["dicom"])
    assert series.modality == "CT" and series.kind == "hu" and series.data.shape == (2, 48, 48)
    assert float(series.data.min()) < -500  # air in HU


def test_bad_file_is_skipped_and_reported(mri_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good = sorted(mri_dir.glob("*.h5"))[0]
    shutil.copy(good, inputs / good.name)
    (inputs / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # truncated HDF5
    config, _ = load_pipeline("mri_retrospective", _fast("mri_retrospective") +
                              ["export.formats=[hdf5]"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(inputs)], out, progress=False) == 1
    prov = json.loads((out / "provenance.json").read_text())
    status = {Path(f["input"]).name: f for f in prov["files"]}
    assert status[good.name]["status"] == "ok"
    assert status["broken.h5"]["status"] == "failed"
    assert "broken.h5" in status["broken.h5"]["error"]
    assert not (out / "reconstructions" / "broken.h5").exists()
    assert not list(out.rglob("*.tmp"))
    # how many failed, where a reader of the files looks (was: the log alone; "complete" and a
    # summary "over 1 volume" said nothing of the failed input)
    assert prov["status"] == "complete"
    assert prov["file_counts"] == {"ok": 1, "skipped": 0, "failed": 1}
    assert "1 of 2 input(s) failed" in (out / "report.html").read_text()


def test_a_run_whose_every_input_failed_says_no_metrics_were_written(tmp_path, caplog):
    """Was: "1 of 1 file(s) failed", exit 1, and no word of the metrics.csv a script reads."""
    (tmp_path / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    config, _ = load_pipeline("mri_retrospective", _fast("mri_retrospective"))
    caplog.set_level("ERROR", "mrirecon")
    assert run_pipeline(config, [str(tmp_path / "broken.h5")], tmp_path / "o", progress=False) == 1
    assert "1 of 1 file(s) failed: none finished, so no metrics.csv was written" in caplog.text
    assert not (tmp_path / "o" / "metrics.csv").exists()


def test_resume_after_killed_run(mri_dir, tmp_path, monkeypatch):
    import mrirecon.pipeline.volume as volume

    config, _ = load_pipeline("mri_retrospective", _fast("mri_retrospective") +
                              ["export.formats=[hdf5]"])
    out = tmp_path / "out"
    calls = []
    real = volume.process_volume

    def dies_on_second(cfg, path, *args, **kwargs):
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is killed while on the second file
        return real(cfg, path, *args, **kwargs)

    monkeypatch.setattr(volume, "process_volume", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config, [str(mri_dir)], out, progress=False)
    first = sorted(mri_dir.glob("*.h5"))[0].stem
    done = out / "reconstructions" / f"{first}.h5"
    assert done.exists() and len(list((out / "reconstructions").glob("*.h5"))) == 1
    before = done.stat().st_mtime_ns
    calls.clear()
    monkeypatch.setattr(volume, "process_volume", real)
    seen = []
    monkeypatch.setattr(volume, "process_volume",
                        lambda cfg, path, *a, **k: (seen.append(path.name), real(cfg, path, *a, **k)))
    assert run_pipeline(config, [str(mri_dir)], out, progress=False, resume=True) == 0
    assert seen == [sorted(mri_dir.glob("*.h5"))[1].name]  # only the unfinished file ran
    assert done.stat().st_mtime_ns == before
    prov = json.loads((out / "provenance.json").read_text())
    assert sorted(f["status"] for f in prov["files"]) == ["ok", "skipped"]


def test_config_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodality: mri\nreconstruct:\n  metod: cg_sense\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: reconstruct.metod: unknown key \(did you mean 'method'\?\)"):
        load_pipeline(str(bad))
    bad.write_text("name: x\nmodality: pet\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: modality: must be one of 'mri', 'ct'"):
        load_pipeline(str(bad))
    with pytest.raises(ConfigError, match=r"mri_retrospective.yaml: undersample.accelerations\[0\]: expected an integer, got 'four'"):
        load_pipeline("mri_retrospective", ["undersample.accelerations=[four]"])
    with pytest.raises(SystemExit) as e:
        main(["run", str(bad), "--input", str(tmp_path), "--output", str(tmp_path / "o")])
    assert e.value.code == 2


def test_unknown_method_lists_the_valid_ones(mri_dir, tmp_path):
    with pytest.raises(ConfigError, match="reconstruct.method: unknown method 'l2_magic'.*cg_sense.*varnet"):
        load_pipeline("mri_cs", ["reconstruct.method=l2_magic"])
    config, _ = load_pipeline("mri_cs")
    from dataclasses import replace

    config = replace(config, reconstruct=replace(config.reconstruct, method="l2_magic"))
    with pytest.raises(ValueError, match="unknown method 'l2_magic'.*cg_sense.*varnet"):
        run_pipeline(config, [str(mri_dir)], tmp_path, progress=False)


def test_inputs_accept_files_folders_and_globs(mri_dir):
    files = sorted(mri_dir.glob("*.h5"))
    assert expand_inputs([str(mri_dir)]) == files
    assert expand_inputs([str(mri_dir / "*.h5")]) == files
    assert expand_inputs([str(files[0]), str(files[0])]) == [files[0]]
    with pytest.raises(FileNotFoundError, match="matches no file"):
        expand_inputs([str(mri_dir / "*.nothing")])


def test_cli_run_writes_outputs_and_dicom_validates(mri_dir, tmp_path):
    out = tmp_path / "cli"
    code = main(["run", "mri_retrospective", "--input", str(sorted(mri_dir.glob("*.h5"))[0]),
                 "--output", str(out), "--no-progress", "--set", "reconstruct.params.iterations=3",
                 "--set", "calibrate.calib_width=12", "--set", "calibrate.kernel_width=4",
                 "--set", "export.formats=[dicom,nifti]"])
    assert code == 0
    dcm = sorted((out / "dicom").rglob("*.dcm"))
    assert len(dcm) == 2
    if shutil.which("dciodvfy"):
        res = subprocess.run(["dciodvfy", str(dcm[0])], capture_output=True, text=True)
        errors = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors


def test_inputs_are_sharded_across_ranks(mri_dir, tmp_path, monkeypatch):
    """Under torchrun (RANK / WORLD_SIZE) each process takes every WORLD_SIZE-th input."""
    config, _ = load_pipeline("mri_retrospective", _fast("mri_retrospective") +
                              ["export.formats=[hdf5]", "report.enabled=false"])
    files = sorted(mri_dir.glob("*.h5"))
    out = tmp_path / "out"
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert run_pipeline(config, [str(mri_dir)], out, progress=False) == 0
        prov = json.loads((out / f"provenance.rank{rank}.json").read_text())
        assert [Path(f["input"]).name for f in prov["files"]] == [files[rank].name]
    assert sorted(p.name for p in (out / "reconstructions").glob("*.h5")) == [f.name for f in files]


def test_ct_folder_with_lodopab_references_runs_clean(ct_dir, tmp_path):
    """``simulate ct`` (and LoDoPaB) put ground_truth_* beside observation_*: references, not
    inputs, so a run on the folder succeeds and scores every observation."""
    files = expand_inputs([str(ct_dir)])
    assert [p.name for p in files] == ["observation_test_000.hdf5"]
    config, text = load_pipeline("ct_fbp")
    out = tmp_path / "out"
    assert run_pipeline(config, [str(ct_dir)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["status"] == "ok" and f["metrics"]["psnr"] > 20
    # a folder of references alone still offers them (and they fail loudly, not silently)
    refs = tmp_path / "refs"
    refs.mkdir()
    shutil.copy(ct_dir / "ground_truth_test_000.hdf5", refs)
    assert [p.name for p in expand_inputs([str(refs)])] == ["ground_truth_test_000.hdf5"]


@pytest.mark.parametrize("given", ["mri_cs", "mri_cs.yaml", "pipelines/mri_cs.yaml"])
def test_shipped_pipeline_found_by_name_from_any_folder(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the checkout: pipelines/ is not here
    config, _ = load_pipeline(given)
    assert config.reconstruct.method == "l1_wavelet"


def test_unknown_pipeline_lists_pipelines_not_training_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        load_pipeline("mri_csx")
    listed = str(err.value).split("(")[-1]
    assert "mri_modl" in listed and "mri_cs" in listed and "train_" not in listed
    with pytest.raises(FileNotFoundError, match="training config.*mrirecon train"):
        load_pipeline("train_modl_brain_sim")
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    from mrirecon.pipeline.definitions import shipped_pipelines

    assert all(name in helptext for name in shipped_pipelines())
    assert "train_modl_brain_sim" not in helptext


def test_fully_sampled_evaluation_warns(mri_dir, tmp_path):
    """Scoring a reconstruction of fully sampled data against its own reference says so."""
    config, text = load_pipeline("mri_varnet", ["export.formats=[hdf5]"])
    if config.reconstruct.weights:
        from mrirecon.training.weights import available_weights

        if config.reconstruct.weights not in available_weights():
            pytest.skip("VarNet weights are not shipped")
    first = sorted(mri_dir.glob("*.h5"))[0]
    out = tmp_path / "full"
    assert run_pipeline(config, [str(first)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["metrics"] and any("fully sampled" in w for w in f["warnings"])
    assert "fully sampled" in (out / "report.html").read_text()
    # undersampled data: no such warning
    config, text = load_pipeline("mri_varnet", ["export.formats=[hdf5]",
                                                 "undersample.enabled=true"])
    out = tmp_path / "under"
    assert run_pipeline(config, [str(first)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["metrics"] and not any("fully sampled" in w for w in f["warnings"])
    assert all("training range" in w for w in f["warnings"])  # 64 x 48 is not 640 x 320


def test_ismrmrd_input_gives_the_same_image_as_fastmri(mri_dir, tmp_path):
    """The README's "fastMRI HDF5 / ISMRMRD in": the same k-space in either format gives the
    same reconstruction through the same pipeline."""
    pytest.importorskip("ismrmrd")
    src = sorted(mri_dir.glob("*.h5"))[0]
    raw = tmp_path / "raw" / "scan.h5"
    raw.parent.mkdir()
    fastmri_to_ismrmrd(src, raw)
    config, text = load_pipeline("mri_cs", _fast("mri_cs") + [
        "export.formats=[hdf5]", "undersample.enabled=true", "undersample.seed=fixed"])
    images = []
    for inp, name in ((src, src.stem), (raw, "scan")):
        out = tmp_path / name
        assert run_pipeline(config, [str(inp)], out, progress=False, config_text=text) == 0
        with h5py.File(out / "reconstructions" / f"{name}.h5", "r") as h5:
            images.append(h5["reconstruction"][()])
    assert images[0].shape == images[1].shape
    # same float32 data through the same float32 pipeline: agreement to a few float32 ulps of
    # the image's peak times the iteration count (5 FISTA steps, ESPIRiT, FFTs)
    tol = 1e3 * np.finfo(np.float32).eps * float(images[0].max())
    np.testing.assert_allclose(images[1], images[0], rtol=0, atol=tol)


def test_a_reference_of_another_shape_is_reported_not_silently_dropped(mri_dir, tmp_path):
    """A ``reconstruction_rss`` that does not match the output gives no metrics and says why."""
    import shutil

    import h5py

    src = sorted(mri_dir.glob("*.h5"))[0]
    bad = tmp_path / "in" / src.name
    bad.parent.mkdir()
    shutil.copy(src, bad)
    with h5py.File(bad, "r+") as f:
        ref = f["reconstruction_rss"][...]
        del f["reconstruction_rss"]
        f["reconstruction_rss"] = ref[:, :5]
    config, text = load_pipeline("mri_cs", ["export.formats=[hdf5]", "undersample.enabled=true",
                                            "reconstruct.params.iterations=2"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(bad)], out, progress=False, config_text=text) == 0
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    assert f["metrics"] == {}
    (w,) = f["warnings"]
    assert "reconstruction_rss: no metrics" in w and f"{tuple(ref.shape[1:])}" in w
    assert f"{(5, ref.shape[2])}" in w and src.name in w
    assert "reconstruction_rss: no metrics" in (out / "report.html").read_text()


def test_a_file_without_patient_geometry_is_exported_as_unplaced(mri_dir, tmp_path):
    """fastMRI headers hold voxel sizes but no position or orientation: the NIfTI gets xform
    codes 0 and the DICOM an ImageComments, and the run says so (a sagittal scan was written
    as an axial series at the scanner origin, labelled scanner coordinates, no warning)."""
    import re

    import pydicom

    src = sorted(mri_dir.glob("*.h5"))[0]
    bare = tmp_path / "bare" / src.name
    bare.parent.mkdir()
    shutil.copy(src, bare)
    with h5py.File(bare, "r+") as f:
        xml = f["ismrmrd_header"][()].decode()
        stripped = re.sub(r"<userParameterString>\s*<name>mrirecon\.geometry</name>.*?"
                          r"</userParameterString>", "", xml, flags=re.S)
        assert stripped != xml
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = stripped.encode()
    over = _fast("mri_cs") + ["export.formats=[nifti, dicom]", "report.enabled=false"]
    config = load_pipeline("mri_cs", over)[0]
    for path, placed in ((src, True), (bare, False)):
        out = tmp_path / f"out_{placed}"
        assert run_pipeline(config, [str(path)], out, progress=False) == 0
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        warned = [w for w in entry["warnings"] if "no patient position" in w]
        nii = nib.load(out / "nifti" / f"{src.stem}.nii.gz").header
        dcm = pydicom.dcmread(sorted((out / "dicom" / src.stem).glob("*.dcm"))[0])
        assert int(nii["sform_code"]) == int(nii["qform_code"]) == (1 if placed else 0)
        assert bool(warned) != placed
        assert ("placeholders" in dcm.get("ImageComments", "")) != placed


def test_each_file_says_which_of_several_masks_it_drew(mri_dir, tmp_path):
    """fastMRI's validation mask ``accelerations: [4, 8]`` draws one pair per file (seeded by
    its name); nothing in the outputs said which, so results could not be split by factor as
    fastMRI's tables are. Each file now has a note naming the drawn pair, checked here against
    fastMRI's own draw for the same name."""
    fastmri_subsample = pytest.importorskip("fastmri.data.subsample")
    sets = ["undersample.enabled=true", "undersample.center_fractions=[0.16,0.08]",
            "undersample.accelerations=[4,8]", "calibrate.method=walsh",
            "reconstruct.method=zero_filled_rss", "reconstruct.params_by_acceleration={}",
            "export.formats=[hdf5]", "report.enabled=false"]
    config = load_pipeline("mri_retrospective", sets)[0]
    assert run_pipeline(config, [str(mri_dir)], tmp_path, progress=False) == 0
    mask_fn = fastmri_subsample.create_mask_for_mask_type("equispaced_fraction", [0.16, 0.08],
                                                          [4, 8])
    for entry in json.loads((tmp_path / "provenance.json").read_text())["files"]:
        name = Path(entry["input"]).name
        _, num_low = mask_fn((1, 64, 48, 2), seed=tuple(map(ord, name)))
        acc, cf = (4, 0.16) if int(num_low) == round(48 * 0.16) else (8, 0.08)
        (note,) = [n for n in entry["notes"] if "the mask drew" in n]
        assert f"the mask drew {acc}x with centre fraction {cf:g} ({int(num_low)} centre" in note
    single = load_pipeline("mri_retrospective", [*sets[:1], *sets[3:]])[0]  # one pair: its rate
    assert run_pipeline(single, [str(mri_dir)], tmp_path / "one", progress=False) == 0
    files = json.loads((tmp_path / "one" / "provenance.json").read_text())["files"]
    assert not [n for f in files for n in f.get("notes", []) if "the mask drew" in n]
    for f in files:
        (note,) = [n for n in f["notes"] if "undersample: the 4x mask (nominal)" in n]
        assert "acquirable columns" in note and note.endswith("x achieved")
