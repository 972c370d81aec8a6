"""Outputs that are not what their run wrote: damaged outputs under ``--resume``, the outputs of an
input that fails on a rerun, an input whose output name changed when inputs were added."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import h5py
import pytest

from mrirecon.pipeline.runner import run_pipeline
from tests.robustness.test_hostile_outputs import mri_config


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _pixels(path: Path) -> str:
    import pydicom

    return "pixels " + hashlib.md5(pydicom.dcmread(path).PixelData).hexdigest()


def _tree(out: Path, exact: bool = False) -> dict[str, str]:
    """``{relative path: md5}`` of the files a user sees (dot-files and run files left out); of
    a DICOM file that of its pixel data unless ``exact`` (each write gives new UIDs)."""
    return {p.relative_to(out).as_posix(): _md5(p) if exact or p.suffix != ".dcm"
            else _pixels(p) for p in sorted(out.rglob("*"))
            if p.is_file() and not any(s.startswith(".") for s in p.relative_to(out).parts)
            and p.parent != out}


@pytest.fixture
def counted(monkeypatch):
    """The names of the inputs ``process_volume`` is called for."""
    import mrirecon.pipeline.volume as volume

    seen: list[str] = []
    real = volume.process_volume
    monkeypatch.setattr(volume, "process_volume",
                        lambda cfg, path, *a, **k: (seen.append(path.name),
                                                    real(cfg, path, *a, **k))[1])
    return seen


def _vol(mri_file: Path, tmp_path: Path, name: str = "vol.h5") -> Path:
    src = tmp_path / "in" / name
    src.parent.mkdir(exist_ok=True)
    shutil.copy(mri_file, src)
    return src


# -- 1. --resume checks that a finished input's outputs are as they were written ----------------

def _empty_dicom(out):
    for f in (out / "dicom" / "vol").glob("*.dcm"):
        f.unlink()
    return "dicom/vol: all 2 of its files missing (slice_0001.dcm, slice_0002.dcm)"


def _one_slice_gone(out):
    (out / "dicom" / "vol" / "slice_0002.dcm").unlink()
    return "dicom/vol: 1 of its 2 files missing (slice_0002.dcm)"


def _extra_slice(out):
    shutil.copy(out / "dicom" / "vol" / "slice_0001.dcm", out / "dicom" / "vol" / "slice_0003.dcm")
    return "dicom/vol: 1 file(s) the earlier run did not write (slice_0003.dcm)"


def _cut_hdf5(out):
    size = (out / "reconstructions" / "vol.h5").stat().st_size
    with (out / "reconstructions" / "vol.h5").open("r+b") as fh:
        fh.truncate(100)
    return f"reconstructions/vol.h5: 100 bytes, was {size} when written"


def _empty_nifti(out):
    size = (out / "nifti" / "vol.nii.gz").stat().st_size
    (out / "nifti" / "vol.nii.gz").write_bytes(b"")
    return f"nifti/vol.nii.gz: 0 bytes, was {size} when written"


def _same_size_other_content(out):
    f = out / "dicom" / "vol" / "slice_0001.dcm"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF  # one pixel byte: same size, other image
    f.write_bytes(bytes(data))
    return (f"dicom/vol/slice_0001.dcm: its content changed since it was written ({len(data)} "
            "bytes, another SHA-256)")


def _nifti_deleted(out):
    (out / "nifti" / "vol.nii.gz").unlink()
    return "nifti/vol.nii.gz: missing"


@pytest.mark.parametrize("damage", [_empty_dicom, _one_slice_gone, _extra_slice, _cut_hdf5,
                                    _empty_nifti, _same_size_other_content, _nifti_deleted])
def test_resume_reprocesses_an_input_whose_outputs_were_damaged(mri_file, tmp_path, counted,
                                                                caplog, damage):
    """Outputs deleted, emptied, cut short or rewritten since their run: --resume skipped the
    input by the outputs' existence ("finished in an earlier run", exit 0), leaving an empty
    DICOM folder, a 0-byte NIfTI and a 100-byte HDF5 that the report listed as done."""
    src = _vol(mri_file, tmp_path)
    out = tmp_path / "out"
    config = mri_config()
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    written, exact = _tree(out), _tree(out, exact=True)
    what = damage(out)
    assert _tree(out, exact=True) != exact
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5", "vol.h5"]  # processed again
    assert f"{out / what}" in caplog.text and f"reprocessing {src}" in caplog.text
    assert _tree(out) == written  # the same outputs as the first run (a deterministic method)
    with h5py.File(out / "reconstructions" / "vol.h5") as h5:  # and a complete file
        assert h5["reconstruction"].shape[0] == 2
    assert json.loads((out / "provenance.json").read_text())["files"][0]["status"] == "ok"


def test_resume_still_skips_intact_outputs_and_hidden_files_beside_them(mri_file, tmp_path,
                                                                        counted):
    """An unchanged output folder is skipped (a modification time alone, as a copy without -t
    changes it, or a Finder .DS_Store in the series folder, is no damage)."""
    import os

    src = _vol(mri_file, tmp_path)
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5,nifti,dicom,png]")
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    (out / "dicom" / "vol" / ".DS_Store").write_bytes(b"finder")
    os.utime(out / "reconstructions" / "vol.h5", (1, 1))
    record = json.loads((out / ".status" / "vol.json").read_text())
    assert set(record["output_files"]) == {
        "reconstructions/vol.h5", "nifti/vol.nii.gz", "dicom/vol/slice_0001.dcm",
        "dicom/vol/slice_0002.dcm", *(f"figures/vol/{Path(f).name}" for f in record["figures"])}
    assert all(v["bytes"] == (out / k).stat().st_size for k, v in record["output_files"].items())
    assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5"]  # skipped


def test_resume_of_a_record_without_output_files_checks_existence_as_before(mri_file, tmp_path,
                                                                            counted, caplog):
    """A status record without output_files (as earlier versions wrote them; theirs are
    processed again for lacking a code identity, which this one keeps) resumes by its outputs'
    existence, and the rewritten record holds them."""
    src = _vol(mri_file, tmp_path)
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5,nifti,dicom,png]")
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    status = out / ".status" / "vol.json"
    record = json.loads(status.read_text())
    del record["output_files"]
    status.write_text(json.dumps(record))
    assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5"]  # skipped: nothing was missing
    assert "output_files" not in json.loads(status.read_text())  # left as it was
    (figure, *_) = record["figures"]
    (out / figure).unlink()  # the deleted-PNG case of docs/robustness.md
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5", "vol.h5"] and (out / figure).is_file()
    assert f"{out / figure}: missing: reprocessing {src}" in caplog.text
    assert "output_files" in json.loads(status.read_text())


# -- 2. an input that fails on a rerun keeps nothing under its usual names ----------------------

def test_an_input_that_fails_on_a_rerun_keeps_no_outputs_of_its_earlier_content(mri_file,
                                                                              tmp_path, caplog):
    """x.h5 zeroed after a run: the rerun failed on it ('k-space is all zero', exit 1) while
    reconstructions/x.h5 (same md5 as before), nifti/x.nii.gz, dicom/x and .status/x.json stayed,
    listed by metrics.csv, report and provenance only as failed: a glob of reconstructions/*.h5
    found an image of data that no longer exists. Now they move to superseded/ (not deleted),
    y's outputs are untouched, and a later success of x removes the superseded copy."""
    x, y = _vol(mri_file, tmp_path, "x.h5"), _vol(mri_file, tmp_path, "y.h5")
    with h5py.File(y, "r+") as h5:
        h5["kspace"][...] = h5["kspace"][()] * 2
    out = tmp_path / "out"
    config = mri_config()
    assert run_pipeline(config, [str(x.parent)], out, progress=False) == 0
    before, exact = _tree(out), _tree(out, exact=True)
    xs = {k: v for k, v in exact.items() if "/x" in k}
    ys = {k: v for k, v in before.items() if "/y" in k}
    assert len(xs) == 4 and len(ys) == 4  # h5, nii.gz, 2 DICOM slices each
    saved = x.read_bytes()
    with h5py.File(x, "r+") as h5:
        h5["kspace"][...] = 0
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert run_pipeline(config, [str(x.parent)], out, progress=False) == 1
    after = _tree(out, exact=True)
    assert {k: v for k, v in _tree(out).items() if not k.startswith("superseded/")} == ys
    assert {k.removeprefix("superseded/"): v for k, v in after.items()
            if k.startswith("superseded/")} == xs  # moved, byte for byte
    assert not (out / ".status" / "x.json").exists()
    assert not list((out / "reconstructions").glob("x*")) and not (out / "dicom" / "x").exists()
    aside = json.loads((out / "superseded" / ".status" / "x.json").read_text())
    assert "k-space is all zero" in aside["reason"] and aside["earlier_record"]["status"] == "ok"
    entry = {Path(f["input"]).name: f for f in json.loads((out / "provenance.json").read_text())
             ["files"]}["x.h5"]
    assert entry["status"] == "failed" and entry["outputs"] == {}
    (warning,) = entry["warnings"]
    assert warning.startswith(f"x.h5 failed, so the outputs under its name (written before this "
                              f"failure) were moved out of the way, to {out / 'superseded'}")
    assert "reconstructions/x.h5, nifti/x.nii.gz, dicom/x" in warning and warning in caplog.text
    # --resume: x fails again (nothing more to move), y is skipped as finished and keeps its outputs
    assert run_pipeline(config, [str(x.parent)], out, progress=False, resume=True) == 1
    assert _tree(out, exact=True) == after
    # x restored: written again, and the superseded copy goes (as a rerun replaces outputs)
    x.write_bytes(saved)
    assert run_pipeline(config, [str(x.parent)], out, progress=False, resume=True) == 0
    assert not (out / "superseded").exists() and _tree(out) == before
    assert {k: v for k, v in _tree(out, exact=True).items() if "/y" in k} == {
        k: v for k, v in after.items() if "/y" in k}  # y skipped: the very same files


def test_a_failure_moves_nothing_when_the_input_had_no_outputs_and_keeps_other_inputs(
        mri_file, tmp_path, monkeypatch):
    """A first-time failure creates no superseded/ folder; an input that cannot be read (its
    outputs from a run before) has them moved aside too, and no other input's outputs move."""
    import mrirecon.pipeline.runner as runner

    a, b = _vol(mri_file, tmp_path, "a.h5"), _vol(mri_file, tmp_path, "b.h5")
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5]")
    assert run_pipeline(config, [str(a)], out, progress=False) == 0
    with h5py.File(b, "r+") as h5:
        h5["kspace"][...] = 0
    assert run_pipeline(config, [str(a), str(b)], out, progress=False) == 1
    assert not (out / "superseded").exists() and (out / "reconstructions" / "a.h5").is_file()
    real = runner.sha256

    def denied(path):
        if Path(path).name == "a.h5":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(runner, "sha256", denied)
    assert run_pipeline(config, [str(a), str(b)], out, progress=False) == 1
    assert sorted(_tree(out)) == ["superseded/reconstructions/a.h5"]


def test_a_file_where_the_superseded_folder_goes_is_refused_before_any_input(mri_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "superseded").write_text("mine")
    with pytest.raises(ValueError, match=r"a file named superseded is in the way of the run's "
                                         r"folder of the outputs of failed inputs"):
        run_pipeline(mri_config(), [str(mri_file)], out, progress=False)
    assert (out / "superseded").read_text() == "mine"


# -- 3. an input whose output name changes when inputs from another folder are added -----------

def test_an_input_renamed_by_added_inputs_is_refused_saying_so(mri_file, tmp_path, counted):
    """`run --input d1/x.h5`, then `--input d1/x.h5 d2/y.h5`: refused with "holds the outputs of
    1 input ... that is not among this run's inputs: d1/x.h5 (x) ... pass it again", although
    d1/x.h5 was passed (its output name changed from x to d1/x)."""
    x = tmp_path / "d1" / "x.h5"
    y = tmp_path / "d2" / "y.h5"
    for p in (x, y):
        p.parent.mkdir()
        shutil.copy(mri_file, p)
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5]")
    assert run_pipeline(config, [str(x)], out, progress=False) == 0
    for resume, where in ((False, f"--output {out} holds"),
                          (True, f"--resume into {out}: it holds")):
        with pytest.raises(ValueError) as err:
            run_pipeline(config, [str(x), str(y)], out, progress=False, resume=resume)
        assert str(err.value) == (
            f"{where} the outputs of {x}, written as x by an earlier run; this run would write it "
            "as d1/x, because output names are paths relative to the inputs' common folder, "
            f"which was {tmp_path / 'd1'} and is now {tmp_path}, as the inputs span d1 and d2; "
            "the outputs under the earlier name would stay beside the new ones, listed nowhere"
            + ("; --resume cannot reuse them under another name" if resume else "")
            + ": pass --prune to delete the earlier outputs (this run then writes it again as "
            "d1/x), write to another --output, or run the inputs of each folder into an --output "
            "of its own (nothing was run)")
        assert "not among this run's inputs" not in str(err.value)
    assert counted == ["x.h5"]
    # the remedy it names works: --prune writes x again as d1/x, nothing stays under x
    assert run_pipeline(config, [str(x), str(y)], out, progress=False, replace_others=True) == 0
    assert sorted(_tree(out)) == ["reconstructions/d1/x.h5", "reconstructions/d2/y.h5"]
    # an input truly not among this run's inputs is still named as such, beside the renamed one
    z = tmp_path / "d3" / "z.h5"
    z.parent.mkdir()
    shutil.copy(mri_file, z)
    with pytest.raises(ValueError) as err:
        run_pipeline(config, [str(x), str(z)], out, progress=False)
    assert "written as" not in str(err.value)  # d1/x keeps its name here: not renamed
    assert f"not among this run's inputs: {y} (d2/y);" in str(err.value)


def test_renamed_and_absent_inputs_are_told_apart_in_one_refusal(mri_file, tmp_path):
    d1 = tmp_path / "d1"
    d1.mkdir()
    for stem in ("x", "w"):
        shutil.copy(mri_file, d1 / f"{stem}.h5")
    y = tmp_path / "d2" / "y.h5"
    y.parent.mkdir()
    shutil.copy(mri_file, y)
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5]")
    assert run_pipeline(config, [str(d1)], out, progress=False) == 0  # names w, x
    with pytest.raises(ValueError) as err:
        run_pipeline(config, [str(d1 / "x.h5"), str(y)], out, progress=False)
    text = str(err.value)
    assert f"holds the outputs of {d1 / 'x.h5'}, written as x by an earlier run; this run would " \
           "write it as d1/x" in text
    assert f"; it also holds the outputs of 1 input(s) not among this run's inputs: " \
           f"{d1 / 'w.h5'} (w): pass --prune" in text
    assert sorted(_tree(out)) == ["reconstructions/w.h5", "reconstructions/x.h5"]  # nothing run


# -- 4. a status record of valid JSON whose fields have other types -----------------------------

_RECORD = {"input": "/d/vol.h5", "status": "ok", "metrics": {"PSNR": 31.5, "SSIM": 0.9},
           "figures": ["figures/vol/slice_000.png"], "outputs": {"hdf5": "reconstructions/vol.h5"},
           "seconds": 1.5, "slices": 2, "error": "", "name": "vol", "warnings": [], "notes": [],
           "adapt": {}, "input_sha256": "ab", "config_sha256": "cd", "input_abspath": "/d/vol.h5",
           "output_files": {"reconstructions/vol.h5": {"bytes": 10, "sha256": "ef"}}}

#: the fuzzing audit's mutants (s18): (field changed, value) -> the field the warning names
_BAD_FIELDS = [("outputs", 5, "outputs"), ("outputs", {"hdf5": 5}, 'outputs["hdf5"]'),
               ("figures", "figures/vol/slice_000.png", "figures"), ("figures", [1, 2], "figures"),
               ("name", 7, "name"), ("name", "../../../x", "name"),
               ("metrics", "bad", "metrics"), ("metrics", {"PSNR": "NaN"}, 'metrics["PSNR"]'),
               ("metrics", {"PSNR": float("nan")}, 'metrics["PSNR"]'),
               ("metrics", {"PSNR": True}, 'metrics["PSNR"]'),
               ("output_files", [1], "output_files"),
               ("output_files", {"reconstructions/vol.h5": "x"},
                'output_files["reconstructions/vol.h5"]'),
               ("input_sha256", 5, "input_sha256"), ("config_sha256", None, "config_sha256"),
               ("status", 1, "status"), ("seconds", "x", "seconds"), ("seconds", -1.0, "seconds"),
               ("seconds", float("inf"), "seconds"), ("slices", -1, "slices"),
               ("slices", 2.5, "slices"), ("warnings", "abc", "warnings"),
               ("notes", {"a": 1}, "notes"), ("adapt", [1], "adapt"), ("input", 3, "input")]


@pytest.mark.parametrize("key, value, field", _BAD_FIELDS)
def test_a_status_record_with_a_wrong_typed_field_is_unreadable_naming_it(tmp_path, caplog,
                                                                          key, value, field):
    from mrirecon.pipeline.run_state import read_status, status_path

    out = tmp_path / "out"
    record = status_path(out, "vol")
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({**_RECORD, key: value}))
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert read_status(record, out) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"{record} is unreadable (field {field} is ")
    assert line.endswith("; the input is processed again")


@pytest.mark.parametrize("change", [{}, {"zzz": 1}, {"output_files": None}, {"adapt": None},
                                    {"metrics": {"PSNR": float("inf")}}, {"slices": 0}])
def test_status_records_as_runs_write_them_are_read(tmp_path, caplog, change):
    """Extra keys, the fields an earlier version did not write, an exact reconstruction's
    infinite PSNR: read, the paths resolved against the output folder, no warning."""
    from mrirecon.pipeline.run_state import read_status, status_path

    out = tmp_path / "out"
    record = status_path(out, "vol")
    record.parent.mkdir(parents=True)
    written = {k: v for k, v in {**_RECORD, **change}.items() if v is not None}
    record.write_text(json.dumps(written))
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        prev = read_status(record, out)
    assert not caplog.records
    assert prev == {**written, "outputs": {"hdf5": str(out / "reconstructions" / "vol.h5")},
                    "figures": [str(out / "figures" / "vol" / "slice_000.png")]}


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("key, value", [("outputs", 5), ("metrics", {"PSNR": "NaN"}),
                                        ("name", 7), ("seconds", "x")])
def test_a_run_over_a_wrong_typed_status_record_reprocesses_the_input(
        mri_file, tmp_path, counted, caplog, resume, key, value):
    """``"outputs": 5`` stopped the batch (plain or --resume) with "internal error:
    AttributeError: 'int' object has no attribute 'values'", provenance listing 0 inputs;
    under --resume ``"metrics": {"PSNR": "NaN"}`` and ``"name": 7`` ended in an internal
    TypeError, ``"seconds": "x"`` in "error: Unknown format code 'f'", naming no file."""
    from mrirecon.pipeline.run_state import read_status

    src = _vol(mri_file, tmp_path)
    out = tmp_path / "out"
    config = mri_config("export.formats=[hdf5,png]")
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    status = out / ".status" / "vol.json"
    written = _tree(out)
    status.write_text(json.dumps({**json.loads(status.read_text()), key: value}))
    caplog.clear()
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=resume) == 0
    assert counted == ["vol.h5", "vol.h5"]  # processed again
    (line,) = [r.getMessage() for r in caplog.records if str(status) in r.getMessage()]
    assert line.startswith(f"{status} is unreadable (field {key}")
    assert not [r for r in caplog.records if r.levelno > logging.WARNING]
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["ok"] and prov["status"] == "complete"
    assert read_status(status, out)["name"] == "vol"  # a valid record written again
    assert _tree(out) == written


# -- 5. outputs made by other mrirecon code ------------------------------------------------------

@pytest.mark.parametrize("code", ["other", "none", "upgrade"])
def test_resume_reprocesses_outputs_made_by_other_mrirecon_code(mri_file, tmp_path, counted,
                                                                caplog, monkeypatch, code):
    """The compatibility audit's F1: the status record held no code identity, so ``--resume``
    after an upgrade that fixed an image without changing the config schema skipped the input
    ("finished in an earlier run") and kept the old code's image (e18c59a's DC-offset fix:
    -9.26 dB kept, 20.26 dB run again), while ``provenance.json`` named the new commit.
    ``other``: a record of other code; ``none``: of a version that recorded no identity;
    ``upgrade``: the first run made by (patched) other code, resumed by this one."""
    from mrirecon.pipeline import code_identity
    from mrirecon.pipeline.code_identity import code_sha256

    this = code_sha256()
    src = _vol(mri_file, tmp_path)
    out = tmp_path / "out"
    config = mri_config()
    with monkeypatch.context() as m:
        if code == "upgrade":
            m.setattr(code_identity, "code_sha256", lambda: "a" * 64)
        assert run_pipeline(config, [str(src)], out, progress=False) == 0
    status = out / ".status" / "vol.json"
    record = json.loads(status.read_text())
    if code == "other":  # the same run, but its outputs made by other source files
        record.update(code_sha256="0" * 64, git_commit="1fd5383" + "0" * 33)
    elif code == "none":
        record.pop("code_sha256", None)
        record.pop("git_commit", None)
    status.write_text(json.dumps(record))
    with caplog.at_level(logging.INFO, "mrirecon.pipeline"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5", "vol.h5"]  # processed again, not skipped
    (line,) = [r.getMessage() for r in caplog.records if "mrirecon code" in r.getMessage()
               or "mrirecon version" in r.getMessage()]
    made_by = {"other": "other mrirecon code (commit 1fd5383" + "0" * 33
                        + ", source sha256 000000000000)",
               "none": "an earlier mrirecon version, which recorded no code identity",
               "upgrade": "other mrirecon code (commit "}[code]
    assert line.startswith(f"the outputs of vol were made by {made_by}")
    assert line.endswith(f", source sha256 {this[:12]}; processing {src} again")
    again = json.loads(status.read_text())
    assert again["code_sha256"] == this and isinstance(again["git_commit"], str)
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["ok"]
    assert prov["code_sha256"] == this and prov["git_commit"] == again["git_commit"]
    # the unchanged tree now skips it, and provenance's code is the record's
    assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    assert counted == ["vol.h5", "vol.h5"]
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["skipped"] and prov["code_sha256"] == this


def test_metrics_csv_and_its_mean_keep_the_inputs_a_resume_skipped(tmp_path):
    """An input ``--resume`` skipped keeps its row in metrics.csv and its place in the mean: the
    table of a resumed run is that of the whole run, not of the inputs made again."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.report import VolumeResult
    from mrirecon.pipeline.run_files import _write_run_files

    config = load_pipeline("mri_tv", ["report.enabled=false"])[0]
    files = [tmp_path / "a.h5", tmp_path / "b.h5"]
    for f in files:
        f.write_bytes(b"x")
    kept = VolumeResult(input=str(files[0]), name="a", status="skipped",
                        metrics={"nmse": 0.01, "psnr": 30.0, "ssim": 0.9})
    made = VolumeResult(input=str(files[1]), name="b", status="ok",
                        metrics={"nmse": 0.03, "psnr": 20.0, "ssim": 0.7})
    out = tmp_path / "out"
    out.mkdir()
    _write_run_files(config, out, files, [kept, made], time.time(), 0, 1, "", "cpu",
                     {str(f): "0" * 64 for f in files})
    with open(out / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["file"] for r in rows] == ["a.h5", "b.h5"]
    assert float(rows[0]["psnr"]) == pytest.approx(30.0, rel=1e-5)  # %.6g in the table
