"""No data loss: colliding names, failed inputs, interrupted runs, --resume, metrics.csv."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import expand_inputs, output_names, run_pipeline

FAST_MRI = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[hdf5,nifti,dicom]", "report.enabled=false"]


def mri_config(*extra):
    return load_pipeline("mri_cs", FAST_MRI + list(extra))[0]


def ct_config(*extra):
    return load_pipeline("ct_fbp", ["export.formats=[hdf5,dicom]", "report.enabled=false",
                                    *extra])[0]


def _prov(out: Path) -> dict:
    return json.loads((out / "provenance.json").read_text())


def test_same_file_name_in_two_folders_gives_two_outputs(mri_file, tmp_path):
    a, b = tmp_path / "in" / "a" / "same.h5", tmp_path / "in" / "b" / "same.h5"
    for p in (a, b):
        p.parent.mkdir(parents=True)
        shutil.copy(mri_file, p)
    with h5py.File(b, "r+") as h5:  # make b's content differ so the outputs must differ
        h5["kspace"][...] = h5["kspace"][()] * 2
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(a), str(b)], out, progress=False) == 0
    ra, rb = out / "reconstructions" / "a" / "same.h5", out / "reconstructions" / "b" / "same.h5"
    with h5py.File(ra) as fa, h5py.File(rb) as fb:
        np.testing.assert_allclose(fb["reconstruction"][()], 2 * fa["reconstruction"][()], rtol=1e-5)
    assert (out / "nifti" / "a" / "same.nii.gz").is_file() and (out / "nifti" / "b" / "same.nii.gz").is_file()
    assert len(list((out / "dicom" / "a" / "same").glob("*.dcm"))) == 2
    assert len(list((out / "dicom" / "b" / "same").glob("*.dcm"))) == 2
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert [r[0] for r in rows[1:]] == ["a/same.h5", "b/same.h5"]


def test_dicom_folders_with_the_same_name_stay_apart(dicom_series, tmp_path):
    dicom_series(tmp_path / "p1" / "series1", "CT", seed=1)
    dicom_series(tmp_path / "p2" / "series1", "CT", seed=2)
    out = tmp_path / "out"
    inputs = [str(tmp_path / "p1" / "series1"), str(tmp_path / "p2" / "series1")]
    assert run_pipeline(ct_config("undersample.views=24"), inputs, out, progress=False) == 0
    for p in ("p1", "p2"):
        assert len(list((out / "dicom" / p / "series1").glob("*.dcm"))) == 3
    assert not (out / "dicom" / "series1").exists()


def test_names_that_would_still_collide_are_refused_up_front(mri_file, tmp_path):
    shutil.copy(mri_file, tmp_path / "x.h5")
    shutil.copy(mri_file, tmp_path / "x.hdf5")
    files = expand_inputs([str(tmp_path / "x.h5"), str(tmp_path / "x.hdf5")])
    with pytest.raises(ValueError, match="would both write outputs named 'x'"):
        output_names(files)
    with pytest.raises(ValueError, match="would both write"):
        run_pipeline(mri_config(), [str(p) for p in files], tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "reconstructions").exists()


def test_failed_export_leaves_no_output_and_no_metrics_row(mri_file, tmp_path, monkeypatch):
    import mrirecon.io as io

    good = tmp_path / "in" / "good.h5"
    bad = tmp_path / "in" / "zbad.h5"
    good.parent.mkdir()
    shutil.copy(mri_file, good)
    shutil.copy(mri_file, bad)
    real = io.write_dicom_series

    def fails_for_bad(image, folder, **kw):
        if "zbad" in str(folder):
            real(image, folder, **kw)  # some slices written, then the export fails
            raise OSError(28, "No space left on device")
        return real(image, folder, **kw)

    monkeypatch.setattr(io, "write_dicom_series", fails_for_bad)
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(tmp_path / "in")], out, progress=False) == 1
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["good.h5"]
    assert sorted(p.name for p in (out / "nifti").iterdir()) == ["good.nii.gz"]
    assert sorted(p.name for p in (out / "dicom").iterdir()) == ["good"]
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert [r[0] for r in rows[1:]] == ["good.h5"]
    files = {Path(f["input"]).name: f for f in _prov(out)["files"]}
    assert files["zbad.h5"]["status"] == "failed" and "No space left" in files["zbad.h5"]["error"]
    assert files["zbad.h5"]["outputs"] == {} and files["zbad.h5"]["metrics"] == {}
    assert not (out / ".staging").exists() or not any((out / ".staging").iterdir())
    assert not (out / ".status" / "zbad.json").exists()


def test_resume_removes_orphaned_temp_files(mri_file, tmp_path):
    out = tmp_path / "out"
    orphan = out / "reconstructions" / ".vol.h5.abc12345.h5.tmp"  # mkstemp: 8 characters
    staged = out / ".staging" / "0-99999" / "v" / "reconstructions" / "vol.h5"
    for p in (orphan, staged):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    old = time.time() - 60
    for p in (orphan, staged, staged.parent, staged.parent.parent, out / ".staging" / "0-99999"):
        os.utime(p, (old, old))
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False, resume=True) == 0
    assert not orphan.exists() and not (out / ".staging" / "0-99999").exists()
    assert not list(out.rglob("*.tmp"))


def test_resume_reuses_only_same_input_and_same_config(mri_file, tmp_path, monkeypatch):
    import mrirecon.pipeline.volume as volume

    src = tmp_path / "in" / "vol.h5"
    src.parent.mkdir()
    shutil.copy(mri_file, src)
    out = tmp_path / "out"
    seen = []
    real = volume.process_volume
    monkeypatch.setattr(volume, "process_volume",
                        lambda cfg, path, *a, **k: (seen.append(path.name), real(cfg, path, *a, **k)))
    assert run_pipeline(mri_config(), [str(src)], out, progress=False) == 0
    assert run_pipeline(mri_config(), [str(src)], out, progress=False, resume=True) == 0
    assert seen == ["vol.h5"]  # same input, same config: skipped
    changed = mri_config("postprocess.crop=none")
    assert run_pipeline(changed, [str(src)], out, progress=False, resume=True) == 0
    assert seen == ["vol.h5"] * 2  # the config changed: processed again
    prov = _prov(out)
    assert prov["config"]["postprocess"]["crop"] == "none" and prov["files"][0]["status"] == "ok"
    with h5py.File(src, "r+") as h5:  # the input is replaced by other content
        h5["kspace"][...] = h5["kspace"][()] * 3
    assert run_pipeline(changed, [str(src)], out, progress=False, resume=True) == 0
    assert seen == ["vol.h5"] * 3
    status = json.loads((out / ".status" / "vol.json").read_text())
    assert status["input_sha256"] == _prov(out)["inputs"][str(src)] != prov["inputs"][str(src)]
    # a truncated status file (killed while the disk was full) means: do it again
    (out / ".status" / "vol.json").write_text(json.dumps(status)[:40])
    assert run_pipeline(changed, [str(src)], out, progress=False, resume=True) == 0
    assert seen == ["vol.h5"] * 4


def test_resume_into_a_folder_of_other_inputs_is_refused_naming_them(mri_file, tmp_path):
    """`run --resume` with inputs b, c into a folder an earlier run wrote for a and b kept a's
    reconstruction, NIfTI and DICOM while metrics.csv, report.html and provenance.json listed
    only b and c: outputs listed nowhere. Now refused before any input is read, naming a."""
    from mrirecon.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    for stem, scale in (("a", 1), ("b", 2), ("c", 3)):
        shutil.copy(mri_file, folder / f"{stem}.h5")
        with h5py.File(folder / f"{stem}.h5", "r+") as h5:
            h5["kspace"][...] = h5["kspace"][()] * scale
    a, b, c = (folder / f"{s}.h5" for s in "abc")
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5]")
    assert run_pipeline(config, [str(a), str(b)], out, progress=False) == 0
    before = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    with pytest.raises(ValueError) as err:
        run_pipeline(config, [str(b), str(c)], out, progress=False, resume=True)
    assert str(err.value) == (
        f"--resume into {out}: it holds the outputs of 1 input that is not among this run's "
        f"inputs: {a} (a); --resume continues a run on the same inputs, and metrics.csv, "
        "report.html and provenance.json list only this run's: pass it again with the new "
        "inputs, write to another --output, or pass --prune to delete it (nothing was run)")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == before
    sets = [x for kv in [*FAST_MRI[:3], "export.formats=[hdf5]", FAST_MRI[4]] for x in ("--set", kv)]
    with pytest.raises(SystemExit) as exit_:
        main(["run", "mri_cs", str(b), str(c), "--output", str(out), "--resume", *sets])
    assert exit_.value.code == 2
    # the earlier inputs with new ones: resumed (a and b skipped), every output listed
    assert run_pipeline(config, [str(a), str(b), str(c)], out, progress=False, resume=True) == 0
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert [r[0] for r in rows[1:]] == ["a.h5", "b.h5", "c.h5"]
    # a plain run of c alone is refused too (test_hostile_runs.py), one of all three runs
    assert run_pipeline(config, [str(a), str(b), str(c)], out, progress=False) == 0


def test_resume_remakes_an_input_whose_figure_was_deleted(mri_file, tmp_path):
    # was: skipped, and report.html linked to the missing PNG
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5,png]")
    assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
    figure = out / _prov(out)["files"][0]["figures"][0]  # relative to the output folder
    figure.unlink()
    assert run_pipeline(config, [str(mri_file)], out, progress=False, resume=True) == 0
    assert Path(figure).is_file()


def test_metrics_csv_is_quoted_and_formula_safe(mri_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "=HYPERLINK(1),x.h5")
    out = tmp_path / "out"
    assert run_pipeline(mri_config("export.formats=[hdf5]"), [str(folder)], out, progress=False) == 0
    rows = list(csv.reader((out / "metrics.csv").open()))
    assert rows[0] == ["file", "nmse", "psnr", "ssim"]
    assert rows[1][0] == "'=HYPERLINK(1),x.h5" and len(rows[1]) == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_input_fails_alone_and_provenance_is_written(mri_file, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    locked = folder / "b.h5"
    shutil.copy(mri_file, locked)
    locked.chmod(0)
    out = tmp_path / "out"
    try:
        assert run_pipeline(mri_config("export.formats=[hdf5]"), [str(folder)], out,
                            progress=False) == 1
    finally:
        locked.chmod(0o644)
    prov = _prov(out)
    assert [f["status"] for f in prov["files"]] == ["ok", "failed"]
    assert "cannot read" in prov["files"][1]["error"]
    assert prov["inputs"][str(locked)].startswith("unreadable")


def test_input_that_cannot_be_read_fails_alone(mri_file, tmp_path, monkeypatch):
    """The same as above where file modes do not stop the reader (root): the read fails."""
    import mrirecon.pipeline.runner as runner

    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    shutil.copy(mri_file, folder / "b.h5")
    real = runner.sha256

    def denied(path):
        if Path(path).name == "b.h5":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(runner, "sha256", denied)
    out = tmp_path / "out"
    assert run_pipeline(mri_config("export.formats=[hdf5]"), [str(folder)], out, progress=False) == 1
    prov = _prov(out)
    assert [f["status"] for f in prov["files"]] == ["ok", "failed"]
    assert "cannot read the input (Permission denied)" in prov["files"][1]["error"]
    assert prov["inputs"][str(folder / "b.h5")] == "unreadable: Permission denied"


def test_a_file_name_that_is_not_utf8_gets_its_report_and_metrics(mri_file, tmp_path):
    """``Müller.h5`` named in Latin-1 (byte 0xfc: a Windows share, an old scanner export) was
    reconstructed and exported, then the run died writing report.html ("'utf-8' codec can't
    encode character '\\udcfc' … surrogates not allowed", exit 2, naming no file): no report,
    no metrics.csv, and the same on every --resume (the input was finished)."""
    from urllib.parse import unquote_to_bytes

    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"M\xfcller.h5")
    shutil.copy(mri_file, folder / name)
    out = tmp_path / "out"
    config = load_pipeline("mri_cs", FAST_MRI[:3] + ["export.formats=[hdf5,png]"])[0]
    for resume in (False, True):
        assert run_pipeline(config, [str(folder)], out, progress=False, resume=resume) == 0
        rows = list(csv.reader((out / "metrics.csv").open(encoding="utf-8")))
        assert [r[0] for r in rows[1:]] == ["M\\xfcller.h5"] and float(rows[1][2]) > 20
        report = (out / "report.html").read_bytes().decode("utf-8")  # valid UTF-8
        assert "M\\xfcller.h5</td>" in report
        srcs = [s.split("'")[0] for s in report.split("<img src='")[1:]]
        assert len(srcs) == 2  # the links reach the figures on disk (bytes percent-encoded)
        assert all(os.path.isfile(os.path.join(os.fsencode(out), unquote_to_bytes(s))) for s in srcs)
    assert (out / "reconstructions" / os.fsdecode(b"M\xfcller.h5")).is_file()


def test_long_input_names_run_or_are_refused_before_any_work(mri_file, tmp_path, monkeypatch):
    """A 240-byte name (79 CJK characters and ``.h5``) failed after its reconstruction with "File
    name too long": its outputs fit the file system's 255 bytes, the temporary files beside them
    (``.NAME.xxxxxxxx.h5.tmp``, 17 bytes more) did not; a rerun moves the old DICOM folder aside
    as ``.NAME.old-PID``, which must fit too. A name whose outputs cannot fit (``NAME.nii.gz``
    over 255 bytes) failed the same way, after the work."""
    import mrirecon.pipeline.volume as volume

    folder = tmp_path / "in"
    folder.mkdir()
    for fits in ("脳" * 79 + ".h5", "a" * 248 + ".h5"):  # NAME.nii.gz: 244 and 255 bytes
        shutil.copy(mri_file, folder / fits)
        out = tmp_path / f"out{len(fits)}"
        for _ in range(2):  # the second run replaces the first one's outputs
            assert run_pipeline(mri_config(), [str(folder / fits)], out, progress=False) == 0
        stem = fits[:-3]
        assert (out / "reconstructions" / fits).is_file()
        assert (out / "nifti" / f"{stem}.nii.gz").is_file()
        assert len(list((out / "dicom" / stem).glob("*.dcm"))) == 2
        assert not [p for p in out.rglob("*") if p.name.startswith(".") and "old-" in p.name]
    too_long = "a" * 250 + ".h5"  # NAME.nii.gz would be 257 bytes: refused up front
    shutil.copy(mri_file, folder / too_long)
    monkeypatch.setattr(volume, "process_volume", lambda *a, **k: pytest.fail("reconstructed"))
    with pytest.raises(ValueError, match=r"its outputs would be named a{24}\.\.\.a{17}\.nii\.gz "
                                         r"\(257 bytes\), longer than the 255 bytes"):
        run_pipeline(mri_config(), [str(folder / too_long)], tmp_path / "out2", progress=False)
    # without NIfTI the longest output is its status record NAME.json (255 bytes): it runs
    monkeypatch.undo()
    assert run_pipeline(mri_config("export.formats=[hdf5]"), [str(folder / too_long)],
                        tmp_path / "out3", progress=False) == 0


def test_a_series_written_over_a_longer_one_leaves_only_its_own_slices(tmp_path):
    """write_dicom_series twice into one folder (a notebook rerun on a shorter volume): slices 3-5
    of the first series stayed beside the new 2, two SeriesInstanceUIDs in one folder that a
    viewer or a PACS import takes as 5 images."""
    import torch

    from mrirecon import io
    from tests.robustness.conftest import _image

    folder = tmp_path / "series"
    first = _image("MR", seed=1)
    first = type(first)(torch.cat([first.data, first.data[:2]]), first.geometry, kind="magnitude",
                        modality="MR")
    assert len(io.write_dicom_series(first, folder)) == 5
    (folder / "README.txt").write_text("notes")  # not ours: kept
    second = _image("MR", seed=2)
    second = type(second)(second.data[:2], second.geometry, kind="magnitude", modality="MR")
    paths = io.write_dicom_series(second, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.txt", "slice_0001.dcm", "slice_0002.dcm"]
    back = io.read_dicom_series(folder)
    assert back.data.shape == (2, 16, 16) and [p.name for p in paths] == ["slice_0001.dcm", "slice_0002.dcm"]
    step = float(second.data.max()) / 4094.5  # 12-bit MR storage: error at most half a step
    assert float((back.data - second.data).abs().max()) <= step / 2 * (1 + 1e-6)


def test_nifti_of_float64_data_beyond_float32_is_refused_not_written_as_inf(tmp_path):
    """write_nifti cast float64 data to float32 after its NaN / Inf check: values of 1e39 were
    written as Inf with no error (the file read back as Inf)."""
    import torch

    from mrirecon import io
    from tests.robustness.conftest import _image

    image = _image("MR")
    big = type(image)(image.data.double() * 1e39, image.geometry, kind="magnitude", modality="MR")
    with pytest.raises(ValueError, match=r"write_nifti: .*big\.nii\.gz: Image.data reaches [0-9.]+e\+3[89], beyond the 3.4e\+38"):
        io.write_nifti(big, tmp_path / "big.nii.gz")
    assert not (tmp_path / "big.nii.gz").exists()
    fits = type(image)(image.data.double() * 1e38, image.geometry, kind="magnitude", modality="MR")
    back = io.read_nifti(io.write_nifti(fits, tmp_path / "fits.nii.gz"))
    assert bool(torch.isfinite(back.data).all())


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_nifti_of_float64_data_below_float32_normals_is_refused_not_written_as_zeros(dtype, tmp_path):
    """write_nifti cast float64 data to float32 silently: an image peaking at 1e-50 was written
    as all zeros (1e-40: float32 subnormals, a few bits), with no error."""
    import torch

    from mrirecon import io
    from tests.robustness.conftest import _image

    image = _image("MR")
    for scale in (1e-40, 1e-50):
        tiny = type(image)(image.data.double() * scale, image.geometry, kind="magnitude",
                           modality="MR")
        with pytest.raises(ValueError, match=r"write_nifti: .*tiny\.nii\.gz: Image.data peaks at "
                                             r"[0-9.]+e-[45]\d, below the 1.18e-38 smallest normal"):
            io.write_nifti(tiny, tmp_path / "tiny.nii.gz", dtype=dtype)
    assert list(tmp_path.iterdir()) == []
    zeros = type(image)(torch.zeros_like(image.data, dtype=torch.float64), image.geometry,
                        kind="magnitude", modality="MR")  # all zeros: written as such
    back = io.read_nifti(io.write_nifti(zeros, tmp_path / "zeros.nii.gz", dtype=dtype))
    assert float(back.data.abs().max()) == 0.0
    small = type(image)(image.data.double() * 1e-30, image.geometry, kind="magnitude", modality="MR")
    back = io.read_nifti(io.write_nifti(small, tmp_path / "small.nii.gz", dtype=dtype))
    assert torch.allclose(back.data.double(), small.data, rtol=1e-4, atol=1e-34)


def test_write_reconstruction_refuses_nan_inf_and_float32_overflow(tmp_path):
    """write_reconstruction (the fastMRI submission writer) had no NaN / Inf check: a library
    caller wrote NaN and Inf into the file, and float64 1e39 was cast to Inf on the way."""
    from mrirecon import io

    volume = np.ones((2, 4, 4))
    volume[0, 1, 2], volume[1, 0, 0] = np.nan, np.inf
    target = tmp_path / "rec.h5"
    with pytest.raises(ValueError, match=r"write_reconstruction: .*rec\.h5: volume has 2 NaN or Inf "
                                         r"values; nothing written"):
        io.write_reconstruction(target, volume)
    big = np.full((1, 2, 2), 1e39)  # finite float64, beyond float32's largest value
    with pytest.raises(ValueError, match=r"rec\.h5: volume \(as float32\) has 4 NaN or Inf"):
        io.write_reconstruction(target, big)
    assert list(tmp_path.iterdir()) == []
    io.write_reconstruction(target, np.ones((1, 2, 2)))
    with pytest.raises(ValueError, match="NaN or Inf"):  # an existing file is left as it was
        io.write_reconstruction(target, volume)
    with h5py.File(target) as h5:
        assert np.array_equal(h5["reconstruction"][()], np.ones((1, 2, 2), np.float32))


@pytest.mark.parametrize("writer", ["nifti", "dicom"])
def test_nifti_and_dicom_nan_messages_name_the_output_path(writer, tmp_path):
    """write_nifti / write_dicom_series refused NaN with "Image.data has 1 NaN/inf values",
    which did not say which of several outputs was at fault; both now go through
    io.errors.refuse_nonfinite, worded like the other writers ("NaN or Inf")."""
    from mrirecon import io
    from tests.robustness.conftest import _image

    image = _image("MR")
    data = image.data.clone()
    data[1, 2, 3] = float("nan")
    bad = type(image)(data, image.geometry, kind="magnitude", modality="MR")
    target = tmp_path / ("vol.nii.gz" if writer == "nifti" else "series")
    write = io.write_nifti if writer == "nifti" else io.write_dicom_series
    with pytest.raises(ValueError, match=rf"write_\w+: {re.escape(str(target))}: Image.data has 1 "
                                         r"NaN or Inf values; nothing written"):
        write(bad, target)
    assert list(tmp_path.iterdir()) == []


def test_negative_mr_dicom_data_are_refused_naming_the_folder(tmp_path):
    # before: "MR DICOM export: magnitude data must be >= 0, got minimum -1", from
    # write_dicom_series and, in a pipeline, from quantisation_warning before it: no folder named
    from mrirecon import io
    from mrirecon.io.dicom import quantisation_warning
    from tests.robustness.conftest import _image

    image = _image("MR")
    data = image.data.clone()
    data[1, 2, 3] = -1.0
    bad = type(image)(data, image.geometry, kind="magnitude", modality="MR")
    target = tmp_path / "dicom" / "series"
    with pytest.raises(ValueError) as info:
        io.write_dicom_series(bad, target)
    assert str(info.value) == (f"write_dicom_series: {target}: MR magnitude data must be >= 0, "
                               "got minimum -1")
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert quantisation_warning(data.numpy(), "MR") is None  # the writer names the problem


@pytest.mark.parametrize("blocker", ["folder", "parent_file"])
def test_an_output_path_held_by_something_else_fails_the_input_before_any_move(mri_file, tmp_path,
                                                                              blocker):
    """A folder where the NIfTI file goes (or a file named nifti where its folder goes) failed
    the input with a bare "IsADirectoryError: [Errno 21] …" / "FileExistsError: [Errno 17] …"
    after the HDF5 had already been moved into place: a failed input with an output."""
    out = tmp_path / "out"
    stem = mri_file.stem
    in_the_way = out / "nifti" / f"{stem}.nii.gz" if blocker == "folder" else out / "nifti"
    if blocker == "folder":
        in_the_way.mkdir(parents=True)
        (in_the_way / "keep.txt").write_text("mine")
    else:
        out.mkdir()
        in_the_way.write_text("mine")
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 1
    (entry,) = _prov(out)["files"]
    kind = "a folder" if blocker == "folder" else "a file"
    assert entry["status"] == "failed"
    assert entry["error"] == (f"FileExistsError: {in_the_way}: {kind} is in the way of this "
                              f"input's output nifti/{stem}.nii.gz; move it away (none of this "
                              "input's outputs were written)")
    assert not (out / "reconstructions").exists() and not (out / "dicom").exists()
    assert (in_the_way / "keep.txt" if blocker == "folder" else in_the_way).read_text() == "mine"


def test_a_file_where_the_dicom_folder_goes_fails_the_input_and_is_kept_visible(mri_file, tmp_path):
    """A plain file at OUT/dicom/NAME (where the input's DICOM series folder goes) was renamed to
    the hidden OUT/dicom/.NAME.old-PID and kept there (rmtree of a file fails, quietly): the
    user's file became invisible and the input counted as done. Now the input fails before any
    move, naming the file, which is left as it was."""
    out = tmp_path / "out"
    stem = mri_file.stem
    in_the_way = out / "dicom" / stem
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_text("mine")
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 1
    (entry,) = _prov(out)["files"]
    assert entry["status"] == "failed"
    assert entry["error"] == (f"FileExistsError: {in_the_way}: a file is in the way of this "
                              f"input's output dicom/{stem}; move it away (none of this input's "
                              "outputs were written)")
    assert sorted(p.name for p in in_the_way.parent.iterdir()) == [stem]
    assert in_the_way.read_text() == "mine"
    assert not (out / "reconstructions").exists() and not (out / "nifti").exists()


@pytest.mark.parametrize("name", ["report.html", "metrics.csv", "provenance.json"])
def test_a_folder_where_a_run_file_goes_is_refused_before_any_input(mri_file, tmp_path, name):
    """A folder at OUT/report.html: every input was reconstructed and committed, then the run
    died writing the report with "[Errno 21] Is a directory: 'OUT/.report.html.*.tmp' ->
    'OUT/report.html'" (exit 2), and metrics.csv was never written. Now it is refused up front,
    naming the folder, and nothing is written."""
    from mrirecon.cli import main

    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    config = mri_config("report.enabled=true")
    with pytest.raises(ValueError) as err:
        run_pipeline(config, [str(mri_file)], out, progress=False)
    label = {"report.html": "report", "metrics.csv": "metric table",
             "provenance.json": "provenance record"}[name]
    assert str(err.value) == (f"--output {out}: a folder named {name} is in the way of the run's "
                              f"{label}; move it away (nothing was run)")
    assert sorted(p.name for p in out.iterdir()) == [name]  # no input was processed
    assert (out / name).is_dir()  # left as it was
    with pytest.raises(SystemExit) as exc:  # the CLI: one line, exit 2
        main(["run", "mri_cs", "-i", str(mri_file), "-o", str(out)])
    assert exc.value.code == 2


def test_a_file_named_status_is_refused_before_any_input(mri_file, tmp_path):
    """A file at OUT/.status: the input was reconstructed and committed, then its status record
    failed (mkdir: File exists) and ended the run with no provenance.json."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".status").write_text("x")
    with pytest.raises(ValueError, match=r"a file named \.status is in the way of the run's "
                                         r"status records' folder"):
        run_pipeline(mri_config(), [str(mri_file)], out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [".status"]


def _exit(argv, capsys):
    from mrirecon.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def test_simulate_into_a_folder_of_a_larger_earlier_simulation_is_refused(tmp_path, capsys):
    from mrirecon.cli import main

    # before: --volumes 2 then --volumes 1 --size 12 8 exited 0 and left file 0001 of the first
    # run (16 x 12) beside the new 0000 (12 x 8): one folder, two datasets, not a word
    out = tmp_path / "sim"
    small = ["--slices", "1", "--coils", "1", "--template-resolution", "2", "--contrast", "T1",
             "--orientation", "axial"]
    assert main(["simulate", "mri", "--out", str(out), "--volumes", "2", "--size", "16", "12",
                 *small]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(before) == [f"file_brain_AXT1_sim0_{i:04d}.h5" for i in range(2)]
    code, captured = _exit(["simulate", "mri", "--out", str(out), "--volumes", "1", "--size",
                            "12", "8", *small], capsys)
    assert code == 2
    assert (f"simulate_mri: {out} already holds 1 file(s) of another simulation that this run "
            "would not replace (file_brain_AXT1_sim0_0001.h5); the folder would mix two datasets: "
            "write to a new folder (or remove those files)") in captured.err
    # another contrast renames the files (AXT2): those of the first run would stay, refused
    code, captured = _exit(["simulate", "mri", "--out", str(out), "--volumes", "2", "--size",
                            "16", "12", *small[:-4], "--contrast", "T2", "--orientation", "axial"],
                           capsys)
    assert code == 2 and "already holds 2 file(s)" in captured.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written or lost
    # the same dataset again (all names replaced) and a fresh folder still work
    assert main(["simulate", "mri", "--out", str(out), "--volumes", "2", "--size", "16", "12",
                 *small]) == 0
    assert main(["simulate", "mri", "--out", str(tmp_path / "new"), "--volumes", "1", "--size",
                 "12", "8", *small]) == 0


def test_simulate_ct_files_of_a_larger_earlier_simulation_are_refused(tmp_path):
    # before: 3 samples then 1 (one sample per file) left files 001 and 002 of the first run
    pytest.importorskip("mrirecon.operators.ct", reason="CT projector not available")
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    kw = dict(geometry="parallel", views=4, photons=None, size=8, sources="phantom",
              samples_per_file=1)
    simulate_ct_dataset(tmp_path, samples=3, part="train", **kw)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(FileExistsError, match=re.escape(
            f"simulate_ct: {tmp_path} already holds 4 file(s) of another simulation that this run "
            "would not replace (ground_truth_train_001.hdf5, ground_truth_train_002.hdf5, "
            "observation_train_001.hdf5 and 1 more)")):
        simulate_ct_dataset(tmp_path, samples=1, part="train", **{**kw, "size": 12})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    # another part beside it is the LoDoPaB layout (train / validation / test in one folder)
    assert len(simulate_ct_dataset(tmp_path, samples=1, part="validation", **kw)) == 2
