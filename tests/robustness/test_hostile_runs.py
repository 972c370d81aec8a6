"""Runs that used to end with exit 0 and outputs that were wrong, stale or misdescribed: two runs
into one folder, --resume after weights, references or the input folder changed, leftovers of an
earlier run, and inputs whose names or folders were read wrongly."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import expand_inputs, run_pipeline
from tests.robustness.test_hostile_outputs import ct_config, mri_config


def _prov(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def _statuses(out: Path) -> list[str]:
    return [f["status"] for f in _prov(out)["files"]]


def test_a_second_run_into_a_locked_output_folder_is_refused(mri_file, tmp_path):
    """Two runs into one folder mixed their outputs: a report of one run's metrics beside the
    other's images."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        with pytest.raises(ValueError, match=r"another mrirecon run \(pid 4242 on elsewhere\) is "
                                             r"writing into this folder"):
            run_pipeline(mri_config(), [str(mri_file)], out, progress=False)
    assert not (out / "provenance.json").exists()
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0  # released


def test_a_plain_run_and_a_rank_of_a_distributed_run_refuse_each_other(mri_file, tmp_path):
    """Rank 1 of a job took only ``.lock.rank1``, so it and a plain run (``.lock``) wrote into one
    folder together with exit 0: one run's images under the other's provenance and metrics."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "a+") as held:  # a plain run
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 on elsewhere\n")
        held.flush()
        with pytest.raises(ValueError, match=r"another mrirecon run \(pid 4242 on elsewhere\)"):
            run_pipeline(mri_config(), [str(mri_file)], out, progress=False, rank=1, world=2)
    (out / ".lock").write_text("")  # the plain run has ended
    with open(out / ".lock", "a+") as held:  # a rank of a distributed job (shared)
        fcntl.flock(held.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        with pytest.raises(ValueError, match=r"another mrirecon run \(a distributed run\)"):
            run_pipeline(mri_config(), [str(mri_file)], out, progress=False)
        # another rank of the same job runs beside it
        assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False, rank=1, world=2) == 0
    assert (out / "provenance.rank1.json").is_file()


def test_run_files_of_another_world_size_are_removed(mri_file, tmp_path, caplog):
    """A plain run after a 2-rank run (or a 2-rank run after a 3-rank one) left the earlier run's
    metrics / provenance / report beside its own, describing outputs it had replaced. The log
    said "removed report.rank0.html: ..., and this run writes none" of a run writing report.html."""
    caplog.set_level("INFO", logger="mrirecon")
    out = tmp_path / "out"
    names = [f"{stem}{suffix}{ext}" for suffix in (".rank0", ".rank1", ".rank2")
             for stem, ext in (("provenance", ".json"), ("metrics", ".csv"), ("report", ".html"))]
    out.mkdir()
    for name in names + ["metrics.rankX.csv"]:  # not a run file: kept
        (out / name).write_text("an earlier run\n")
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    assert sorted(p.name for p in out.glob("*.rank*")) == ["metrics.rankX.csv"]
    assert (out / "provenance.json").is_file()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")]
    assert ("removed report.rank0.html: it described an earlier run, and this run writes "
            "report.html in its place") in said and not any("writes none" in m for m in said)
    caplog.clear()
    (out / "provenance.rank2.json").write_text("a 3-rank run\n")
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False, rank=0, world=2) == 0
    assert not (out / "provenance.json").exists() and not (out / "provenance.rank2.json").exists()
    assert (out / "provenance.rank0.json").is_file()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("removed ")]
    assert ("removed provenance.rank2.json: it described an earlier run, and this run has 2 "
            "ranks (0 to 1)") in said
    assert ("removed provenance.json: it described an earlier run, and this run of 2 ranks "
            "writes provenance.rank<r>.json in its place") in said


def test_resume_redoes_an_input_whose_weights_were_replaced(mri_file, tmp_path):
    """A replaced .pt at the same path was skipped by --resume (old images, old metrics)."""
    from mrirecon.models.unrolled.modl import MoDL

    weights = tmp_path / "w.pt"
    params = {"iterations": 1, "layers": 2, "features": 4, "batchnorm": False, "cg_iterations": 2}
    torch.save(MoDL(**params, init_seed=0).state_dict(), weights)
    config = load_pipeline("mri_modl", [f"reconstruct.weights={weights}", "reconstruct.params="
                                        + json.dumps(params), "export.formats=[hdf5]",
                                        "report.enabled=false"])[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
    assert run_pipeline(config, [str(mri_file)], out, progress=False, resume=True) == 0
    assert _statuses(out) == ["skipped"]
    assert _prov(out)["weights"] == {str(weights): _prov(out)["weights"][str(weights)]}
    torch.save(MoDL(**params, init_seed=1).state_dict(), weights)
    assert run_pipeline(config, [str(mri_file)], out, progress=False, resume=True) == 0
    assert _statuses(out) == ["ok"]


def test_resume_redoes_a_ct_input_whose_reference_was_replaced(ct_dir, tmp_path):
    """The ground truth scored against was not part of the input's checksum: replaced, the old
    metrics stayed (24.9 dB where the new reference gives 14.4)."""
    src = tmp_path / "ct"
    shutil.copytree(ct_dir, src)
    obs, ref = src / "observation_test_000.hdf5", src / "ground_truth_test_000.hdf5"
    out = tmp_path / "out"
    assert run_pipeline(ct_config(), [str(obs)], out, progress=False) == 0
    assert _prov(out)["references"] == {str(ref): _prov(out)["references"][str(ref)]}
    assert run_pipeline(ct_config(), [str(obs)], out, progress=False, resume=True) == 0
    assert _statuses(out) == ["skipped"]
    import h5py

    with h5py.File(ref, "r+") as h5:
        h5["data"][...] = h5["data"][()][:, ::-1]
    assert run_pipeline(ct_config(), [str(obs)], out, progress=False, resume=True) == 0
    assert _statuses(out) == ["ok"]


def test_outputs_and_run_files_of_an_earlier_run_do_not_survive_as_this_runs(mri_file, tmp_path):
    """Formats no longer exported stayed under their usual names, and metrics.csv / report.html
    of an earlier run stood for a run that wrote none."""
    out = tmp_path / "out"
    full = mri_config("export.formats=[hdf5,nifti,png]", "report.enabled=true")
    assert run_pipeline(full, [str(mri_file)], out, progress=False) == 0
    nifti = out / _prov(out)["files"][0]["outputs"]["nifti"]  # relative to the output folder
    figures = [out / f for f in _prov(out)["files"][0]["figures"]]
    assert nifti.is_file() and figures and (out / "metrics.csv").is_file()
    lean = mri_config("export.formats=[hdf5]", "evaluate.enabled=false", "report.enabled=false")
    assert run_pipeline(lean, [str(mri_file)], out, progress=False) == 0
    assert not nifti.exists() and not any(f.exists() for f in figures)
    assert not (out / "metrics.csv").exists() and not (out / "report.html").exists()
    assert (out / _prov(out)["files"][0]["outputs"]["hdf5"]).is_file()


def test_a_copied_output_folder_resumes_on_its_own_files(mri_file, tmp_path):
    """Status records held paths relative to the working directory: a copy skipped its inputs and
    its report linked the original folder's figures."""
    config = mri_config("export.formats=[hdf5,png]", "report.enabled=true")
    first = tmp_path / "first"
    assert run_pipeline(config, [str(mri_file)], first, progress=False) == 0
    copy = tmp_path / "copy"
    shutil.copytree(first, copy)
    shutil.rmtree(first)
    assert run_pipeline(config, [str(mri_file)], copy, progress=False, resume=True) == 0
    assert _statuses(copy) == ["skipped"]
    figures = _prov(copy)["files"][0]["figures"]
    assert figures and all((copy / f).is_file() and not Path(f).is_absolute() for f in figures)
    report = (copy / "report.html").read_text()
    assert "first" not in report and "src='figures/" in report


def test_resume_with_another_file_of_the_same_name_processes_it(mri_file, tmp_path, caplog):
    a, b = tmp_path / "site_a", tmp_path / "site_b"
    a.mkdir()
    b.mkdir()
    shutil.copy(mri_file, a / "scan.h5")
    shutil.copy(mri_file, b / "scan.h5")  # same content, another file
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(a)], out, progress=False) == 0
    assert run_pipeline(mri_config(), [str(b)], out, progress=False, resume=True) == 0
    assert _statuses(out) == ["ok"]
    assert "came from" in caplog.text and str(a / "scan.h5") in caplog.text


def test_input_names_folders_and_links_are_taken_as_they_are(mri_file, tmp_path, caplog):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "scan[1].h5")
    shutil.copy(mri_file, folder / "scan1.h5")
    # a file whose name holds glob characters is that file, not the pattern's other match
    assert expand_inputs([str(folder / "scan[1].h5")]) == [folder / "scan[1].h5"]
    (folder / "gone.h5").symlink_to(tmp_path / "missing.h5")
    (folder / "followup").mkdir()
    shutil.copy(mri_file, folder / "followup" / "later.h5")
    files = expand_inputs([str(folder)])
    assert folder / "gone.h5" in files  # was dropped without a word; now it fails by name
    assert "1 subfolder(s) not searched (followup)" in caplog.text
    only_subfolders = tmp_path / "nested"
    (only_subfolders / "a").mkdir(parents=True)
    shutil.copy(mri_file, only_subfolders / "a" / "x.h5")
    with pytest.raises(FileNotFoundError, match=r"only subfolders \(a\), which are not searched"):
        expand_inputs([str(only_subfolders)])
    # a study folder: a README and a DICOMDIR beside its series folders is no DICOM series (was
    # taken as one and failed with "no DICOM image files among its 2 files", subfolders unnamed)
    study = tmp_path / "study"
    (study / "series1").mkdir(parents=True)
    (study / "README.txt").write_text("scanner export")
    (study / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    with pytest.raises(FileNotFoundError, match=r"only 2 other file\(s\) \(DICOMDIR, README.txt\) "
                                                r"and subfolders \(series1\), which are not searched"):
        expand_inputs([str(study)])
    # a series folder keeps its subfolder (e.g. a viewer's thumbnails) and its non-.dcm files
    series = tmp_path / "series"
    (series / "thumbs").mkdir(parents=True)
    (series / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert expand_inputs([str(series)]) == [series]


def test_a_dicom_series_loose_beside_hdf5_files_is_named(ct_dir, dicom_series, tmp_path, caplog):
    """A folder holding LoDoPaB files and a CT series' slices ran the HDF5 files alone: the series
    was dropped without a word (exit 0, one input fewer)."""
    folder = tmp_path / "mixed"
    shutil.copytree(ct_dir, folder)
    slices = dicom_series(tmp_path / "series")
    for f in slices:
        shutil.copy(f, folder / f.name)
    (folder / "IM0004").write_bytes((tmp_path / "series" / slices[0].name).read_bytes())  # no .dcm
    (folder / "README.txt").write_text("scanner export")
    files = expand_inputs([str(folder)])
    assert files and all(f.suffix == ".hdf5" for f in files)
    warning = [r.getMessage() for r in caplog.records if "DICOM file(s)" in r.getMessage()]
    assert warning == [f"input folder {folder}: 4 DICOM file(s) beside its HDF5 files are not read "
                       f"(IM0004, slice_0001.dcm, slice_0002.dcm, ...): a DICOM series is read from a "
                       "folder of its own; move them into a subfolder and pass that as an input too"]
    caplog.clear()
    (folder / "IM0004").unlink()
    for f in slices:
        (folder / f.name).unlink()
    expand_inputs([str(folder)])  # a README beside HDF5 files is no series
    assert "DICOM file(s)" not in caplog.text


@pytest.mark.parametrize("rank, world", [(3, 2), (0, 0)])
def test_a_rank_outside_the_world_size_is_refused(mri_file, tmp_path, monkeypatch, rank, world):
    """RANK=3 WORLD_SIZE=2 left in the environment processed no file with exit 0."""
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", str(world))
    with pytest.raises(ValueError, match=r"need 0 <= RANK < WORLD_SIZE"):
        run_pipeline(mri_config(), [str(mri_file)], tmp_path / "out", progress=False)


@pytest.mark.parametrize("env, message", [
    # was "invalid literal for int() with base 10: 'x'", naming no variable
    ({"WORLD_SIZE": "x", "RANK": "0"}, r"^WORLD_SIZE in the environment must be an integer, got 'x'$"),
    ({"WORLD_SIZE": "2", "RANK": "one"}, r"^RANK in the environment must be an integer, got 'one'$"),
    # WORLD_SIZE=2 without RANK ran as rank 0 of 2: half of the inputs processed, exit 0
    ({"WORLD_SIZE": "2"}, r"^WORLD_SIZE=2 is set in the environment but RANK is not \(torchrun sets "
                          r"both\): this process would take only its share of the work; unset "
                          r"WORLD_SIZE, or set RANK$"),
])
def test_distributed_variables_that_do_not_describe_a_rank_are_refused(mri_file, tmp_path,
                                                                        monkeypatch, env, message):
    monkeypatch.delenv("RANK", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=message):
        run_pipeline(mri_config(), [str(mri_file)], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_world_given_in_code_is_not_overridden_by_the_environment(mri_file, tmp_path,
                                                                    monkeypatch):
    """``run_pipeline(world=1)`` with ``WORLD_SIZE=2`` (no RANK) left in the environment: the
    caller's world stands, as before the environment's rule was shared with ``train``."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = run_pipeline(mri_config(), [str(mri_file)], tmp_path / "out", progress=False, world=1)
    assert code == 0 and (tmp_path / "out" / "provenance.json").exists()
    monkeypatch.setenv("RANK", "3")  # the error names the world the caller gave, not the environment's
    with pytest.raises(ValueError, match=r"rank 3 of world size 3 .*need 0 <= RANK"):
        run_pipeline(mri_config(), [str(mri_file)], tmp_path / "o2", progress=False, world=3)


def test_ct_views_that_every_kth_view_cannot_keep_are_refused(ct_dir, tmp_path):
    """views=40 of 60 kept all 60 (k = 60 // 40 = 1) and provenance said 40."""
    from mrirecon.sampling import view_factor

    assert view_factor(1000, 30) == 33 and view_factor(1000, 60) == 16  # LoDoPaB: 31 / 63 kept
    assert view_factor(1000, 63) == 16  # k = 15 would keep 67
    with pytest.raises(ValueError, match=r"40 of 60 views cannot be kept .* \(k = 1 keeps 60\); "
                                         r"choose one of 30"):
        view_factor(60, 40)
    out = tmp_path / "out"
    config = ct_config("undersample.enabled=true", "undersample.views=16")  # 24 views: k = 1
    assert run_pipeline(config, [str(ct_dir / "observation_test_000.hdf5")], out, progress=False) == 1
    assert "16 of 24 views cannot be kept" in _prov(out)["files"][0]["error"]


def test_retrospective_undersampling_of_undersampled_data_is_refused(tmp_path):
    """A second mask on top of a fastMRI test-set file counted empty columns as measured zeros:
    12.3x labelled 4x, 20.9 instead of 26.6 dB."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "in", volumes=1, slices=1, coils=2, size=(32, 32),
                                   seed=5, resolution=2, acceleration=4)
    config = load_pipeline("mri_retrospective", ["export.formats=[hdf5]", "report.enabled=false",
                                                 "evaluate.enabled=false"])[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(path)], out, progress=False) == 1
    assert "already undersampled" in _prov(out)["files"][0]["error"]


def test_report_links_figures_whose_names_need_url_escaping(mri_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "scan#1.h5")
    out = tmp_path / "out"
    config = mri_config("export.formats=[png]", "report.enabled=true")
    assert run_pipeline(config, [str(folder / "scan#1.h5")], out, progress=False) == 0
    html = (out / "report.html").read_text()
    assert "src='figures/scan%231/slice_000.png'" in html
    assert os.path.isfile(out / "figures" / "scan#1" / "slice_000.png")


def test_a_ct_part_missing_one_reference_still_scores_the_others(ct_dir, tmp_path):
    """One missing ground_truth_* took the metrics of every file of the part, without a word; a
    file copied out of its part (observation_test_005.hdf5) was refused as "not numbered"."""
    part = tmp_path / "part"
    part.mkdir()
    for i in (0, 1):
        for kind in ("observation", "ground_truth"):
            shutil.copy(ct_dir / f"{kind}_test_000.hdf5", part / f"{kind}_test_00{i}.hdf5")
    (part / "ground_truth_test_001.hdf5").unlink()
    out = tmp_path / "out"
    assert run_pipeline(ct_config(), [str(part)], out, progress=False) == 0
    files = {Path(f["input"]).name: f for f in _prov(out)["files"]}
    assert set(files["observation_test_000.hdf5"]["metrics"]) == {"nmse", "psnr", "ssim"}
    assert files["observation_test_001.hdf5"]["metrics"] == {}
    assert any("ground_truth_test_001.hdf5 is missing" in w for w in files["observation_test_001.hdf5"]["warnings"])
    alone = tmp_path / "alone"
    alone.mkdir()
    for kind in ("observation", "ground_truth"):
        shutil.copy(ct_dir / f"{kind}_test_000.hdf5", alone / f"{kind}_test_005.hdf5")
    assert run_pipeline(ct_config(), [str(alone)], tmp_path / "out2", progress=False) == 0
    assert set(_prov(tmp_path / "out2")["files"][0]["metrics"]) == {"nmse", "psnr", "ssim"}


def test_pipeline_metrics_are_fastmri_evaluates_on_a_non_square_volume(tmp_path):
    """metrics.csv scored the whole 192 x 160 image (26.66 dB) where fastMRI's evaluate, which
    first crops target and reconstruction to (w, w), says 25.90."""
    import h5py
    import numpy as np
    from fastmri import evaluate as fe
    from fastmri.data import transforms as T

    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (src,) = simulate_mri_dataset(tmp_path / "in", volumes=1, slices=1, coils=2, size=(48, 32), seed=3,
                                  resolution=2)
    config = load_pipeline("mri_retrospective", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    metrics = _prov(out)["files"][0]["metrics"]
    with h5py.File(src) as f:
        t = f["reconstruction_rss"][()]
    with h5py.File(out / _prov(out)["files"][0]["outputs"]["hdf5"]) as f:
        r = f["reconstruction"][()]
    assert t.shape == r.shape == (1, 48, 32)
    # the same float32 values, given to fastMRI as float64: scikit-image's SSIM (and NumPy's
    # norms) compute in the input's precision, and in float32 they are ~1e-7 off the float64
    # value mrirecon reports (1.5e-7 without AVX-512); in float64 both agree to summation
    # order, as tests/metrics holds the implementations (1e-9)
    tc, rc = (T.center_crop(a.astype(np.float64), (32, 32)) for a in (t, r))
    want = {"nmse": fe.nmse(tc, rc), "psnr": fe.psnr(tc, rc), "ssim": fe.ssim(tc, rc)}
    for k, v in want.items():
        assert metrics[k] == pytest.approx(float(np.squeeze(v)), rel=1e-9), k
    uncropped = float(np.squeeze(fe.psnr(t, r)))
    assert abs(uncropped - metrics["psnr"]) > 1e-3  # the crop matters on this volume


def test_a_fixed_crop_larger_than_the_image_is_refused(mri_file, tmp_path):
    """crop_size 320 x 320 on a 32 x 24 image gave a 32 x 24 output while provenance said 320."""
    out = tmp_path / "out"
    config = mri_config("postprocess.crop=fixed", "postprocess.crop_size=[320,320]")
    assert run_pipeline(config, [str(mri_file)], out, progress=False) == 1
    assert "postprocess.crop_size (320, 320) is larger than the image" in _prov(out)["files"][0]["error"]


def test_coil_and_slice_axes_that_contradict_the_header_are_reported(mri_file, tmp_path):
    """One slice stored as (coils, H, W) was read as a single-coil volume of 8 slices (exit 0)."""
    import h5py

    from tests.helpers import clone_h5

    with h5py.File(mri_file) as f:
        ks = f["kspace"][()]  # (2 slices, 2 coils, H, W); the header names 2 receiver channels
    one = clone_h5(mri_file, tmp_path / "in" / "one.h5", kspace=ks[0], reconstruction_rss=None)
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(one)], out, progress=False) == 0
    (warning,) = _prov(out)["files"][0]["warnings"]
    assert "the header names 2 receiver channels, but the k-space has 1 coil(s) and 2 slices" in warning
    assert run_pipeline(mri_config(), [str(mri_file)], tmp_path / "ok", progress=False) == 0
    assert not any("receiver channels" in w for w in _prov(tmp_path / "ok")["files"][0]["warnings"])



def test_an_emulated_single_coil_file_is_not_asked_for_its_slice_axis(mri_file, tmp_path):
    """Audit a21 F4: fastMRI's single-coil knee files keep the multi-coil header (15 receiver
    channels); one of 15 slices got "is the slice axis missing?" on every slice. Their own sign,
    ``reconstruction_esc`` (emulated single coil), says the 3-D k-space is single-coil slices."""
    import h5py

    from tests.helpers import clone_h5

    with h5py.File(mri_file) as f:
        ks, rss = f["kspace"][()], f["reconstruction_rss"][()]  # (2, 2, H, W); 2 channels
    esc = clone_h5(mri_file, tmp_path / "in" / "esc.h5", kspace=ks[:, 0],
                   reconstruction_rss=None, reconstruction_esc=rss)
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(esc)], out, progress=False) == 0
    entry = _prov(out)["files"][0]
    assert not any("receiver channels" in w for w in entry["warnings"]), entry["warnings"]
    assert entry["metrics"]["psnr"] > 0  # scored against reconstruction_esc


def test_a_refused_run_leaves_no_folder_and_a_pattern_never_reads_the_output(mri_file, tmp_path):
    out = tmp_path / "new_out"
    with pytest.raises(FileNotFoundError):
        run_pipeline(mri_config(), [str(tmp_path / "missing.h5")], out, progress=False)
    assert not out.exists()  # an empty folder was left behind
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    inside = folder / "out"  # the output folder matches the input pattern 'in/*'
    assert run_pipeline(mri_config(), [str(folder / "*")], inside, progress=False) == 0
    assert [Path(f["input"]).name for f in _prov(inside)["files"]] == ["a.h5"]


def test_one_value_for_a_list_setting_and_an_emptied_section(tmp_path):
    from mrirecon.core.config import ConfigError

    config, _ = load_pipeline("mri_retrospective", ["undersample.accelerations=8",
                                                    "undersample.center_fractions=0.04"])
    assert config.undersample.accelerations == (8,) and config.undersample.center_fractions == (0.04,)
    with pytest.raises(ConfigError, match=r"reconstruct: an empty value would replace the whole "
                                          r"section by its defaults"):
        load_pipeline("mri_cs", ["reconstruct="])  # it ran cg_sense instead of l1_wavelet


def test_ct_training_sets_use_the_same_view_rule(ct_dir):
    """CTTrainingSet kept every (24 // 16 = 1)-th view, i.e. all 24, when asked for 16."""
    from mrirecon.training.data_ct import CTTrainingSet

    with pytest.raises(ValueError, match=r"CTTrainingSet: views: 16 of 24 views cannot be kept"):
        CTTrainingSet(ct_dir, views=16)
    assert CTTrainingSet(ct_dir, views=12).factor == 2


def test_coil_compression_above_the_coil_count_is_noted(mri_file, tmp_path):
    """preprocess.coil_compression=8 on 2-coil data compressed nothing (it compresses to at most
    that many coils), and provenance recorded 8 with no word: notes and warnings were empty."""
    out = tmp_path / "out"
    assert run_pipeline(mri_config("preprocess.coil_compression=8"), [str(mri_file)], out,
                        progress=False) == 0
    entry = _prov(out)["files"][0]
    assert entry["notes"] == [f"{mri_file.name}: all 2 slices: preprocess.coil_compression=8: the "
                              "data hold 2 coil(s), fewer than 8, so all 2 were kept uncompressed"]
    assert not any("coil_compression" in w for w in entry["warnings"])
    for cc in (2, 1):  # as many coils as the data hold, or compressed: nothing to note
        assert run_pipeline(mri_config(f"preprocess.coil_compression={cc}"), [str(mri_file)],
                            tmp_path / f"o{cc}", progress=False) == 0
        assert _prov(tmp_path / f"o{cc}")["files"][0]["notes"] == []


def test_a_plain_run_into_a_folder_of_other_inputs_is_refused_naming_them(mri_file, tmp_path,
                                                                         capsys):
    """`run` of c into a folder an earlier run wrote for a and b exited 0 and kept a's and b's
    reconstructions and NIfTI files while metrics.csv, report.html and provenance.json listed
    only c: the folder's files and its table disagreed without a word. Now refused before any
    input is read, naming a and b; a rerun of the same inputs (or of more) still overwrites."""
    import csv

    from mrirecon.cli import main
    from tests.robustness.test_hostile_outputs import FAST_MRI

    folder = tmp_path / "in"
    folder.mkdir()
    for stem in "abc":
        shutil.copy(mri_file, folder / f"{stem}.h5")
    a, b, c = (str(folder / f"{s}.h5") for s in "abc")
    out = tmp_path / "out"
    sets = [x for kv in [*FAST_MRI[:3], "export.formats=[hdf5,nifti]", FAST_MRI[4]]
            for x in ("--set", kv)]

    def run(*inputs: str) -> int:
        try:
            return main(["run", "mri_cs", "-i", *inputs, "--output", str(out), "--no-progress",
                         *sets])
        except SystemExit as e:
            return e.code

    def listed() -> list[str]:
        return [r[0] for r in list(csv.reader((out / "metrics.csv").open()))[1:]]

    def files() -> list[str]:
        return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())

    assert run(a, b) == 0
    before = files()
    capsys.readouterr()
    assert run(c) == 2
    assert (f"--output {out} holds the outputs of 2 inputs of an earlier run that are not among "
            f"this run's inputs: {a} (a), {b} (b); this run would leave them there while "
            "metrics.csv, report.html and provenance.json list only its own inputs: write to "
            "another (or an empty) --output, pass them again with the new inputs (with "
            "--resume, finished inputs are skipped), or pass --prune to delete them (nothing was "
            "run)") in capsys.readouterr().err
    assert files() == before and listed() == ["a.h5", "b.h5"]
    assert not (out / "nifti" / "c.nii.gz").exists()
    assert run(a, b) == 0 and listed() == ["a.h5", "b.h5"]  # the same inputs: overwritten
    assert run(a, b, c) == 0 and listed() == ["a.h5", "b.h5", "c.h5"]  # more: added
    capsys.readouterr()
    assert run(b) == 2
    assert f"outputs of 2 inputs of an earlier run that are not among this run's inputs: {a} (a), " \
           f"{c} (c);" in capsys.readouterr().err
    assert listed() == ["a.h5", "b.h5", "c.h5"]
    # --prune (a file removed from an input folder since the last run): the others' outputs go
    assert run(a, c, "--prune") == 0 and listed() == ["a.h5", "c.h5"]
    assert not (out / "nifti" / "b.nii.gz").exists() and not (out / "reconstructions" / "b.h5").exists()
    assert (out / "nifti" / "a.nii.gz").exists()
    # the demo owns its folders: a --quick rerun after a full one replaces the other outputs
    config = mri_config("export.formats=[hdf5,nifti]")
    assert run_pipeline(config, [c], out, progress=False, replace_others=True) == 0
    assert listed() == ["c.h5"]
    assert [f for f in files() if not f.startswith(".")] == [
        "metrics.csv", "nifti/c.nii.gz", "provenance.json", "reconstructions/c.h5"]
    assert sorted(p.name for p in (out / ".status").iterdir()) == ["c.json"]


def test_an_unreadable_record_of_another_input_is_named_without_promising_a_rerun(tmp_path, caplog):
    """A damaged status record of an input not in this run: the refusal names it by its output
    name, and the log said "the input is processed again", which no run would do."""
    import logging

    from mrirecon.pipeline.run_state import check_other_inputs

    (tmp_path / ".status").mkdir()
    (tmp_path / ".status" / "gone.json").write_text("{not json")
    with caplog.at_level(logging.WARNING), pytest.raises(ValueError, match=r"1 input of an earlier "
                                                         r"run that is not among this run's inputs: gone;"):
        check_other_inputs(tmp_path, ["mine"], resume=False)
    assert "gone.json is unreadable" in caplog.text and "processed again" not in caplog.text
    assert "not in this run) is named by its output name" in caplog.text
