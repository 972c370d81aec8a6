"""Runs over many inputs into one output folder: the checks and clean-ups a run makes once per
input (or once per earlier record) must cost time linear in the number of inputs. Counted in
system calls, not timed: the audit (a19) measured 1.9 / 6.1 / 32.7 / 122 s to refuse a run of
250 / 500 / 1000 / 2000 inputs into the folder of 250 / ... / 2000 others (every earlier record
compared with every input), and 0.9 / 9.4 / 150 s to clear 250 / 1000 / 4000 set-aside inputs
(one walk of all of ``superseded/`` per input)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mrirecon.pipeline import output_files, run_state
from mrirecon.pipeline.inputs import output_names
from mrirecon.pipeline.output_files import drop_superseded
from mrirecon.pipeline.run_state import check_other_inputs, remove_other_inputs

N = 120  # O(N) calls stay below 20 N; the quadratic ones were 2 N^2 = 240 N


def _records(out: Path, inputs: list[Path]) -> None:
    (out / ".status").mkdir(parents=True, exist_ok=True)
    for f in inputs:
        (out / ".status" / f"{f.stem}.json").write_text(json.dumps(
            {"name": f.stem, "status": "ok", "input": str(f), "input_abspath": str(f.resolve())}))


def _count(monkeypatch, module, name: str) -> list:
    calls = []
    real = getattr(module, name)

    def counted(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_refusing_a_batch_into_the_folder_of_another_costs_linear_stats(tmp_path, monkeypatch):
    """Batch B into the --output of batch A (other files): each earlier record was compared with
    every input by ``same_file`` (realpath twice, then ``os.path.samefile``: two ``os.stat``), so
    2 N^2 stats before the refusal. Now one lookup by resolved path and one by (device, inode)."""
    a, b, out = tmp_path / "A", tmp_path / "B", tmp_path / "out"
    a.mkdir(), b.mkdir()
    for i in range(N):
        (a / f"scanA_{i:04d}.h5").touch()
        (b / f"scanB_{i:04d}.h5").touch()
    _records(out, sorted(a.iterdir()))
    files = sorted(b.iterdir())
    stats = _count(monkeypatch, os, "stat")
    same = _count(monkeypatch, run_state, "same_file")
    with pytest.raises(ValueError, match=rf"holds the outputs of {N} inputs of an earlier run"):
        check_other_inputs(out, output_names(files), resume=False, files=files)
    assert not same
    assert len(stats) < 20 * N, len(stats)


def test_a_hard_link_and_a_symlinked_folder_are_still_the_same_input(tmp_path):
    """The (device, inode) lookup keeps ``same_file``'s rule: an input passed now through a hard
    link (or a bind mount) under another name is the input the record names, as is one reached
    through a symbolic link to its folder; another file with the same name is not."""
    d1 = tmp_path / "d1"
    d1.mkdir()
    x = d1 / "x.h5"
    x.write_bytes(b"x")
    out = tmp_path / "out"
    _records(out, [x])
    linked = tmp_path / "d2" / "y.h5"  # the same file, another name: its output name changes
    linked.parent.mkdir()
    os.link(x, linked)
    z = tmp_path / "d3" / "z.h5"
    z.parent.mkdir()
    z.write_bytes(b"z")
    files = [linked, z]
    with pytest.raises(ValueError) as err:
        check_other_inputs(out, output_names(files), resume=False, files=files)
    assert f"holds the outputs of {linked}, written as x by an earlier run" in str(err.value)
    through = tmp_path / "via"  # a symlinked folder: found by resolved path, renamed too
    through.symlink_to(d1, target_is_directory=True)
    files = [through / "x.h5", z]
    with pytest.raises(ValueError) as err:
        check_other_inputs(out, output_names(files), resume=False, files=files)
    assert f"holds the outputs of {through / 'x.h5'}, written as x by an earlier run" in str(
        err.value)
    other = tmp_path / "d4" / "x.h5"  # same name, another file: not among this run's inputs
    other.parent.mkdir()
    other.write_bytes(b"x")
    files = [other, z]
    with pytest.raises(ValueError) as err:
        check_other_inputs(out, output_names(files), resume=False, files=files)
    assert "written as" not in str(err.value)
    assert f"not among this run's inputs: {x} (x)" in str(err.value)
    x.unlink()  # the recorded file is gone: no stat of it, not among this run's inputs
    with pytest.raises(ValueError, match=r"not among this run's inputs"):
        check_other_inputs(out, output_names([z]), resume=False, files=[z])


def _set_aside(out: Path, n: int) -> list[str]:
    """The layout ``set_aside`` writes for ``n`` failed inputs (mri_retrospective: the HDF5, the
    NIfTI and a figure in a folder of its own); their names."""
    dest = out / "superseded"
    names = [f"sub{i % 3}/vol{i:04d}" for i in range(n)]  # names with folders, as d1/x
    for name in names:
        moved = [f"reconstructions/{name}.h5", f"nifti/{name}.nii.gz",
                 f"figures/{name}/slice_000.png"]
        for rel in moved:
            p = dest / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x")
        (dest / ".status" / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / ".status" / f"{name}.json").write_text(json.dumps({"name": name, "moved": moved}))
    return names


def test_clearing_many_set_aside_inputs_walks_no_folder(tmp_path, monkeypatch):
    """A rerun after a run in which every input failed: each input written again drops what was
    set aside for it. Each call walked all of superseded/ to remove empty folders (N walks of a
    tree of N inputs); now only the emptied parents of the paths it deleted are removed."""
    out = tmp_path / "out"
    names = _set_aside(out, N)
    walks = _count(monkeypatch, output_files.os, "walk")
    rmdirs = _count(monkeypatch, output_files.os, "rmdir")
    for name in names[:-1]:
        assert len(drop_superseded(out, name, "this run wrote it again")) == 3
    assert not walks
    assert len(rmdirs) < 15 * N, len(rmdirs)
    dest = out / "superseded"  # the last input's files and folders stay, no empty folder else
    last = names[-1]
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == sorted([
        ".status", ".status/sub2", f".status/{last}.json", "figures", "figures/sub2",
        f"figures/{last}", f"figures/{last}/slice_000.png", "nifti", "nifti/sub2",
        f"nifti/{last}.nii.gz", "reconstructions", "reconstructions/sub2",
        f"reconstructions/{last}.h5"])
    drop_superseded(out, last, "this run wrote it again")
    assert not dest.exists()  # as before: the folder goes with its last set-aside input


def test_prune_of_many_set_aside_inputs_walks_no_folder(tmp_path, monkeypatch):
    """``run --prune`` (``remove_other_inputs``) drops each set-aside input the same way."""
    out = tmp_path / "out"
    names = _set_aside(out, N)
    keep = out / "superseded" / "unrelated" / "user.txt"  # not the run's: stays, with its folder
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    walks = _count(monkeypatch, output_files.os, "walk")
    assert remove_other_inputs(out, ["other"]) == []
    assert not walks
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "superseded", "superseded/unrelated", "superseded/unrelated/user.txt"]
    assert names


def test_folders_emptied_at_several_depths_all_go(tmp_path):
    """A set-aside file beside a folder that another set-aside file leaves empty: the deeper
    folder is removed first, then its parent (which held only it)."""
    dest = tmp_path / "superseded"
    moved = ["a/x.h5", "a/b/c/y.h5", "dicom/v"]
    for rel in moved[:2]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(b"x")
    (dest / "dicom" / "v").mkdir(parents=True)
    (dest / "dicom" / "v" / "0001.dcm").write_bytes(b"x")
    (dest / ".status").mkdir()
    (dest / ".status" / "v.json").write_text(json.dumps({"name": "v", "moved": moved}))
    assert drop_superseded(tmp_path, "v", "test") == moved
    assert not dest.exists()
