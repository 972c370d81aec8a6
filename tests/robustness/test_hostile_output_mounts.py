"""An output subfolder on another file system (a container's bind mount, ``docker -v
/pacs:/out/dicom``; a symlink to another disk): no rename crosses into it (EXDEV), so a commit
or a set-aside copies across and renames on that file system, and an earlier series moved aside
is put back whenever its replacement cannot be renamed into place."""

from __future__ import annotations

import errno
import json
import os
import uuid
from pathlib import Path

import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.output_files import commit_outputs
from mrirecon.pipeline.report import VolumeResult
from mrirecon.pipeline.runner import run_pipeline

FAST_MRI = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[hdf5,dicom]", "report.enabled=false"]


def mri_config(*extra):
    return load_pipeline("mri_cs", FAST_MRI + list(extra))[0]


def _inside(path, root: str) -> bool:
    p = os.path.abspath(path)
    return p == root or p.startswith(root + os.sep)


def mount(monkeypatch, folder: Path) -> list[tuple[str, str]]:
    """Make ``folder`` behave as a mount point of its own: a rename into or out of it fails
    with EXDEV, as the kernel's rename(2) does across mounts (a bind mount of the same disk
    too). Returns the renames refused."""
    real, root, refused = os.replace, os.path.abspath(folder), []

    def replace(src, dst, *args, **kwargs):
        if _inside(src, root) != _inside(dst, root):
            refused.append((os.fspath(src), os.fspath(dst)))
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), os.fspath(src), None,
                          os.fspath(dst))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return refused


def _series(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _hidden(folder: Path) -> list[str]:
    """Names a commit or a set-aside leaves when it stops half-way (``.NAME.old-PID``,
    ``.NAME.new-PID``, temporary files)."""
    return sorted(p.name for p in folder.rglob(".*"))


def _status(out: Path) -> list[dict]:
    return json.loads((out / "provenance.json").read_text())["files"]


def test_a_first_run_into_a_dicom_folder_on_another_mount_writes_the_series(mri_file, tmp_path,
                                                                           monkeypatch):
    """Was: every input failed with "OSError: [Errno 18] Invalid cross-device link:
    'OUT/.staging/…' -> 'OUT/dicom/…'" after its reconstruction."""
    out = tmp_path / "out"
    (out / "dicom").mkdir(parents=True)
    refused = mount(monkeypatch, out / "dicom")
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    assert refused  # the staging folder is on the other side: the copy was needed
    (entry,) = _status(out)
    assert entry["status"] == "ok"
    series = out / "dicom" / mri_file.stem
    assert len(list(series.glob("*.dcm"))) == 2  # both slices
    assert _hidden(out / "dicom") == [] and not (out / ".staging").exists()


def test_a_rerun_into_a_dicom_folder_on_another_mount_replaces_the_series(mri_file, tmp_path,
                                                                          monkeypatch):
    """Was: the earlier series was moved aside (``dicom/.NAME.old-PID``), the rename of the new
    one failed with EXDEV and nothing moved the earlier one back: hidden, not in superseded/,
    and deleted for good by the next run's ``remove_orphans``."""
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    series = out / "dicom" / mri_file.stem
    before = _series(series)
    mount(monkeypatch, out / "dicom")
    assert run_pipeline(mri_config("export.series_description=second"), [str(mri_file)], out,
                        progress=False) == 0
    (entry,) = _status(out)
    assert entry["status"] == "ok"
    after = _series(series)
    assert sorted(after) == sorted(before) and after != before  # this run's series, whole
    assert _hidden(out / "dicom") == [] and not (out / "superseded").exists()
    record = json.loads((out / ".status" / f"{mri_file.stem}.json").read_text())
    assert {Path(k).name for k in record["output_files"] if k.startswith("dicom/")} == set(after)


def test_a_failed_input_sets_aside_its_series_from_another_mount(mri_file, tmp_path, monkeypatch):
    """The input fails this time: its earlier series moves from the mounted ``dicom/`` to
    ``superseded/dicom/`` (another file system) by a copy, intact."""
    import mrirecon.pipeline.runner as runner

    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    before = _series(out / "dicom" / mri_file.stem)
    mount(monkeypatch, out / "dicom")

    def fail(*args, **kwargs):
        raise RuntimeError("the reconstruction failed")

    monkeypatch.setattr("mrirecon.pipeline.volume.process_volume", fail)
    assert runner.run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 1
    assert _series(out / "superseded" / "dicom" / mri_file.stem) == before
    assert not (out / "dicom" / mri_file.stem).exists() and _hidden(out / "dicom") == []


def _staged(tmp_path: Path, content: bytes) -> tuple[Path, Path, VolumeResult]:
    """A staged series ``stage/dicom/x`` (2 files) and an earlier one under ``out/dicom/x``."""
    stage, out = tmp_path / "out" / ".staging" / "0-1" / "v", tmp_path / "out"
    for folder, data in ((stage / "dicom" / "x", content), (out / "dicom" / "x", b"earlier")):
        folder.mkdir(parents=True)
        for i in range(2):
            (folder / f"{i:04d}.dcm").write_bytes(data + bytes([i]))
    result = VolumeResult(input="x.h5", name="x", outputs={"dicom": str(stage / "dicom" / "x")})
    return stage, out, result


@pytest.mark.parametrize("error", [errno.EACCES, errno.EXDEV])
def test_the_earlier_series_is_put_back_when_the_new_one_cannot_be_renamed_in(tmp_path,
                                                                            monkeypatch, error):
    """Any failure of the rename that puts the new series in place (EACCES; EXDEV, and then the
    copy across fails too: a full disk) leaves the earlier series where it was, and the staged
    one where it was. Was: the earlier series stayed hidden as ``dicom/.x.old-PID``."""
    import shutil

    stage, out, result = _staged(tmp_path, b"new")
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if ".staging" in os.fspath(src) and os.path.basename(dst) == "x":
            raise OSError(error, os.strerror(error), os.fspath(src), None, os.fspath(dst))
        return real(src, dst, *args, **kwargs)

    def full(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "copy2", full)
    with pytest.raises(OSError) as info:
        commit_outputs(stage, out, result)
    assert info.value.errno == (errno.ENOSPC if error == errno.EXDEV else error)
    if error == errno.EXDEV:  # named by the output's path, not by a hidden temporary one
        assert info.value.filename == str(out / "dicom" / "x")
    assert _series(out / "dicom" / "x") == {"0000.dcm": b"earlier\0", "0001.dcm": b"earlier\1"}
    assert _hidden(out / "dicom") == []
    assert len(_series(stage / "dicom" / "x")) == 2  # still staged: nothing counts as placed


def test_an_interrupt_during_the_copy_across_leaves_the_earlier_series(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) while the series is copied to another file system: the earlier
    series stays in place (it is moved aside only once the copy is whole) and no half copy is
    left beside it."""
    import shutil

    stage, out, result = _staged(tmp_path, b"new")
    mount(monkeypatch, out / "dicom")
    real, calls = shutil.copy2, []

    def copy2(src, dst, *args, **kwargs):
        calls.append(dst)
        if len(calls) == 2:
            assert _series(out / "dicom" / "x")["0000.dcm"] == b"earlier\0"  # still in place
            raise KeyboardInterrupt
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copy2", copy2)
    with pytest.raises(KeyboardInterrupt):
        commit_outputs(stage, out, result)
    assert _series(out / "dicom" / "x") == {"0000.dcm": b"earlier\0", "0001.dcm": b"earlier\1"}
    assert _hidden(out / "dicom") == []


def test_a_file_output_on_another_mount_is_copied_and_renamed_in(tmp_path, monkeypatch):
    """A file output (the HDF5) whose folder is another mount: copied to a temporary file
    beside it, renamed over the earlier file; the staged copy is removed."""
    stage, out = tmp_path / "out" / ".staging" / "0-1" / "v", tmp_path / "out"
    (stage / "reconstructions").mkdir(parents=True)
    (out / "reconstructions").mkdir(parents=True)
    (stage / "reconstructions" / "x.h5").write_bytes(b"new")
    (out / "reconstructions" / "x.h5").write_bytes(b"earlier")
    os.chmod(stage / "reconstructions" / "x.h5", 0o640)
    result = VolumeResult(input="x.h5", name="x",
                          outputs={"hdf5": str(stage / "reconstructions" / "x.h5")})
    refused = mount(monkeypatch, out / "reconstructions")
    commit_outputs(stage, out, result)
    placed = out / "reconstructions" / "x.h5"
    assert refused and placed.read_bytes() == b"new" and result.outputs["hdf5"] == str(placed)
    assert placed.stat().st_mode & 0o777 == 0o640  # the mode it was staged with
    assert not (stage / "reconstructions" / "x.h5").exists()
    assert _hidden(out / "reconstructions") == []


def test_a_killed_copy_across_is_removed_by_the_next_run(tmp_path):
    """A copy cut short by SIGKILL (``dicom/.NAME.new-PID`` of a dead process) is deleted by
    the next run, as a ``.NAME.old-PID`` folder is."""
    import subprocess
    import sys

    from mrirecon.pipeline.run_state import remove_orphans

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    left = tmp_path / "dicom" / f".x.new-{proc.pid}"
    left.mkdir(parents=True)
    (left / "0000.dcm").write_bytes(b"half")
    (tmp_path / "dicom" / "x").mkdir()
    assert remove_orphans(tmp_path, before=0.0) == 1
    assert sorted(p.name for p in (tmp_path / "dicom").iterdir()) == ["x"]


def _other_file_system(tmp_path: Path) -> Path | None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or not os.access(shm, os.W_OK) or \
            os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        return None
    return shm


def test_a_dicom_folder_symlinked_to_another_disk_keeps_every_series(mri_file, tmp_path):
    """``OUT/dicom`` a symlink to a folder on another file system (``/dev/shm``): a first run
    and a rerun write the series there; a failed rerun's earlier series moves to superseded/."""
    shm = _other_file_system(tmp_path)
    if shm is None:
        pytest.skip("no writable /dev/shm on another file system")
    import shutil

    target = shm / f"mrirecon-test-{uuid.uuid4().hex}"
    target.mkdir()
    try:
        out = tmp_path / "out"
        out.mkdir()
        (out / "dicom").symlink_to(target, target_is_directory=True)
        assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
        first = _series(target / mri_file.stem)
        assert len(first) == 2
        assert run_pipeline(mri_config("export.series_description=second"), [str(mri_file)], out,
                            progress=False) == 0
        second = _series(target / mri_file.stem)
        assert sorted(second) == sorted(first) and second != first
        assert [e["status"] for e in _status(out)] == ["ok"] and _hidden(target) == []
    finally:
        shutil.rmtree(target, ignore_errors=True)
