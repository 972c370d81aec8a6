"""Windows and macOS, checked on Linux by emulation: Unix-only ``os`` functions removed
(``os.pathconf``, ``os.getloadavg``), ``fcntl`` unimportable and ``msvcrt.locking`` modelled on
Linux byte-range locks, Windows' refusal to delete an open file, ``os.kill(pid, 0)`` as Windows
does it, files read under a non-UTF-8 locale, case-insensitive output disks and text-mode
``os.open``. Each case failed a whole command, wrote into a locked folder or mixed outputs."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mrirecon.pipeline.runner import run_pipeline
from tests.robustness.test_hostile_outputs import mri_config

ROOT = Path(__file__).resolve().parents[2]


# ---- 1: os.pathconf is Unix-only ---------------------------------------------------------------


def test_a_run_without_os_pathconf_completes_and_still_bounds_name_lengths(mri_file, tmp_path,
                                                                          monkeypatch):
    """Every `mrirecon run` died on Windows with "AttributeError: module 'os' has no attribute
    'pathconf'", exit 1, nothing written. Without it the limit is NAME_MAX (255 bytes)."""
    from mrirecon.io.atomic import NAME_MAX
    from mrirecon.pipeline.inputs import check_name_lengths

    monkeypatch.delattr(os, "pathconf")
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    assert json.loads((out / "provenance.json").read_text(encoding="utf-8"))["status"] == "complete"
    config = mri_config()
    assert "nifti" in config.export.formats  # the longest suffix: ".nii.gz"
    fits = "a" * (NAME_MAX - len(".nii.gz"))
    check_name_lengths(config, [tmp_path / "in.h5"], [fits], out)
    with pytest.raises(ValueError, match=rf"longer than the {NAME_MAX} bytes a file name may have"):
        check_name_lengths(config, [tmp_path / "in.h5"], [fits + "a"], out)


# ---- 2: text files read in the locale's encoding -----------------------------------------------

_UTF8_TEXT = "Zero-filled Kopf µ-Test ρ"
_SERIES = "T1 Kopf ü µ"


def _ascii_locale_python(code: str, *args: str) -> dict:
    """``code`` run by a Python whose locale encoding is ASCII (``LC_ALL=C``, UTF-8 mode off, as
    a cp1252 Windows is for these characters); its stdout parsed as JSON."""
    env = {**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": "1"}
    env.pop("LANG", None)
    done = subprocess.run([sys.executable, "-X", "utf8=0", "-c", code, *args], env=env,
                          capture_output=True, text=True, encoding="utf-8", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_pipeline_training_and_card_yaml_are_read_as_utf8_whatever_the_locale(tmp_path):
    """Under cp1252 a UTF-8 pipeline's "ü" became "Ã¼" in the DICOM SeriesDescription (exit 0),
    a file holding "ρ" (byte 0x81) was "not a UTF-8 text file", and an ASCII file saved "UTF-8
    with BOM" (Notepad, PowerShell 5) failed with "ï»¿name: unknown key". Here the locale is
    ASCII: every non-ASCII byte failed before."""
    body = (f"# Kopf-Protokoll, Müller — ρ = 1e-3\nname: zf-kopf\nmodality: mri\n"
            f"description: {_UTF8_TEXT}\nload: {{format: auto}}\ncalibrate: {{method: none}}\n"
            f"reconstruct:\n  method: zero_filled_rss\n"
            f'export: {{formats: [dicom], series_description: "{_SERIES}"}}\n'
            "report: {enabled: false}\n")
    (tmp_path / "bom_crlf.yaml").write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode())
    (tmp_path / "plain.yaml").write_bytes(body.encode())
    (tmp_path / "bom_ascii.yaml").write_bytes(b"\xef\xbb\xbfname: ascii\nmodality: mri\n"
                                              b"reconstruct: {method: zero_filled_rss}\n")
    (tmp_path / "train.yaml").write_bytes(
        b"\xef\xbb\xbf" + "name: kopf-µ\nmodel: {name: unet}\ndata: {train: t, val: v}\n".encode())
    (tmp_path / "m.pt").write_bytes(b"")
    (tmp_path / "m.yaml").write_bytes(
        b"\xef\xbb\xbf" + f"description: {_UTF8_TEXT}\nmodel: {{name: unet}}\n".encode())
    code = """if True:
        import json, locale, sys
        from pathlib import Path
        from mrirecon.core.config import read_yaml
        from mrirecon.pipeline.definitions import load_pipeline
        from mrirecon.training.weights import model_card
        d = Path(sys.argv[1])
        got = {"encoding": locale.getpreferredencoding(False)}
        for name in ("bom_crlf", "plain", "bom_ascii"):
            c = load_pipeline(d / f"{name}.yaml")[0]
            got[name] = [c.name, c.description, c.export.series_description]
        got["train"] = read_yaml(d / "train.yaml")["name"]
        got["card"] = model_card(d / "m.pt")["description"]
        print(json.dumps(got))"""
    got = _ascii_locale_python(code, str(tmp_path))
    assert got.pop("encoding") in ("ANSI_X3.4-1968", "ascii", "US-ASCII")
    assert got == {"bom_crlf": ["zf-kopf", _UTF8_TEXT, _SERIES],
                   "plain": ["zf-kopf", _UTF8_TEXT, _SERIES],
                   "bom_ascii": ["ascii", "", ""],
                   "train": "kopf-µ", "card": _UTF8_TEXT}


# ---- 3: os.getloadavg is Unix-only ----------------------------------------------------------------


def test_load_average_is_none_where_the_platform_has_none(monkeypatch):
    from mrirecon.threads import load_average

    # a fixed reading: the system's own may change between two calls (and some sandboxes
    # have none at all)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 1.25, 2.0), raising=False)
    assert load_average() == (0.5, 1.25, 2.0)

    def unavailable():
        raise OSError("load average unobtainable")

    monkeypatch.setattr(os, "getloadavg", unavailable)
    assert load_average() is None
    monkeypatch.delattr(os, "getloadavg")
    assert load_average() is None


def test_primal_dual_training_runs_without_os_getloadavg(tmp_path, monkeypatch):
    """`mrirecon train primal_dual_ct` died at its first line on Windows ("module 'os' has no
    attribute 'getloadavg'", exit 1); the card and log leave the load out."""
    import yaml

    from mrirecon.training.ct_primal_dual import train_primal_dual_ct
    from tests.training.test_ct_primal_dual import TINY

    monkeypatch.delattr(os, "getloadavg")
    lines: list[str] = []
    out = tmp_path / "pd.pt"
    card = train_primal_dual_ct(out, budget_s=2.0, log=lines.append, **TINY)
    t = yaml.safe_load(out.with_suffix(".yaml").read_text(encoding="utf-8"))["training"]
    assert t == card["training"] and t["history"]
    assert "load_average_start" not in t and "load_average_end" not in t
    assert all("load" not in h for h in t["history"])
    assert not any(", load " in line for line in lines)


@pytest.mark.slow
def test_staged_training_runs_without_os_getloadavg(tmp_path, monkeypatch):
    """The same for `mrirecon train staged_ct` (one stage, a few steps). The steps are capped,
    not the time: a 72 s budget, the smallest it accepts, left no step after a 25 s setup on a
    loaded machine (three test suites on two cores)."""
    import yaml

    from mrirecon.training.ct_staged import train_staged_ct

    monkeypatch.delattr(os, "getloadavg")
    lines: list[str] = []
    out = tmp_path / "st.pt"
    train_staged_ct(out, budget_s=3600.0, max_steps=(4,), iterations=1, chans=4, num_pools=2, patch=64,
                    batch=2, pool=2, refresh_every=2, val_every=2, threads=1, log=lines.append)
    t = yaml.safe_load(out.with_suffix(".yaml").read_text(encoding="utf-8"))["training"]
    assert t["steps_per_stage"][0] >= 1
    assert "load_average_start" not in t and "load_average_end" not in t
    assert not any(", load " in line for line in lines)


# ---- 4: the output lock on Windows (no fcntl): msvcrt.locking -------------------------------------


class _Msvcrt:
    """``msvcrt`` of CPython on Windows, its ``locking`` modelled on Linux open-file-description
    byte-range locks (``F_OFD_SETLK``), which behave as Windows' ``LockFile``: a lock covers
    ``nbytes`` from the handle's current position (possibly past the end of the file), belongs
    to the handle (another handle of the same process conflicts), and is released when the
    handle closes or ``LK_UNLCK`` unlocks it. ``LK_NBLCK`` / ``LK_NBRLCK`` (msvcrt has no
    shared locks: both are exclusive) raise ``OSError`` (EACCES) at once when a byte is held
    elsewhere; ``LK_LCK`` / ``LK_RLCK`` wait. ``calls``: ``(mode, start, nbytes)`` of each."""

    LK_UNLCK, LK_LCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4

    def __init__(self, fcntl) -> None:
        self._fcntl, self.calls = fcntl, []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        import errno

        f = self._fcntl
        start = os.lseek(fd, 0, os.SEEK_CUR)
        if nbytes <= 0 or start + nbytes > 2**31 - 1:  # the C runtime's 32-bit positions
            raise OSError(errno.EINVAL, "Invalid argument")
        self.calls.append((mode, start, nbytes))
        kind = f.F_UNLCK if mode == self.LK_UNLCK else f.F_WRLCK
        wait = mode in (self.LK_LCK, self.LK_RLCK)
        try:
            f.fcntl(fd, f.F_OFD_SETLKW if wait else f.F_OFD_SETLK,
                    struct.pack("hhqqi4x", kind, os.SEEK_SET, start, nbytes, 0))
        except OSError:
            raise OSError(errno.EACCES, "Permission denied") from None


@pytest.fixture
def windows_locks(monkeypatch):
    """``import fcntl`` fails (as on Windows) and ``import msvcrt`` gives :class:`_Msvcrt`."""
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_OFD_SETLK"):
        pytest.skip("open-file-description locks are Linux-only")
    fake = _Msvcrt(fcntl)
    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", fake)
    return fake


def _refused(match: str = r"another mrirecon run \(.*\) is writing into this folder"):
    return pytest.raises(ValueError, match=match)


def test_a_second_run_into_a_folder_is_refused_on_windows(tmp_path, windows_locks):
    """Without fcntl the lock was skipped ("unlocked, as before"): a second run, bench or
    train into one folder was accepted and both wrote into it. msvcrt.locking takes it."""
    from mrirecon.io.output_lock import lock_output

    out = tmp_path / "out"
    out.mkdir()
    first = lock_output(out, 0, who="mrirecon bench")
    with _refused(rf"another mrirecon run \(pid {os.getpid()} on .*, mrirecon bench\) is writing"):
        lock_output(out, 0)
    assert any(mode == windows_locks.LK_NBLCK for mode, _, _ in windows_locks.calls)
    assert (out / ".lock").stat().st_size < 1000  # the locked bytes lie past the holder's line
    first.close()  # released when closed (or when the process dies)
    lock_output(out, 0).close()


def test_distributed_ranks_share_a_folder_and_refuse_plain_runs_on_windows(tmp_path,
                                                                          windows_locks):
    """msvcrt has no shared locks: each rank holds its own byte of `.lock`, a plain run all of
    them, so the ranks of one job run together and a plain run and a job refuse each other."""
    from mrirecon.io.output_lock import lock_output

    out = tmp_path / "out"
    out.mkdir()
    ranks = [lock_output(out, r, 2, job="A") for r in (0, 1)]
    with _refused(r"another mrirecon run \(a distributed run: rank 0 pid"):
        lock_output(out, 0)
    with _refused(r"rank 0 of another distributed job \(world size 2, config A; this one: "
                  r"world size 3, config B\)"):
        lock_output(out, 2, 3, job="B")
    with _refused():  # the same rank twice
        lock_output(out, 1, 2, job="A")
    for held in ranks:
        held.close()
    plain = lock_output(out, 0)
    with _refused():
        lock_output(out, 1, 2, job="A")
    plain.close()
    lock_output(out, 1, 2, job="A").close()


def test_a_platform_without_file_locks_warns_that_the_folder_is_not_locked(tmp_path, monkeypatch,
                                                                          caplog):
    from mrirecon.io.output_lock import lock_output

    monkeypatch.setitem(sys.modules, "fcntl", None)
    monkeypatch.setitem(sys.modules, "msvcrt", None)
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        lock_output(out, 0).close()
    assert f"{out} is not locked" in caplog.text


# ---- 5: a refused run's cleanup under Windows' file rules ---------------------------------------


def _open_here(path: str) -> str | None:
    """A file this process holds open at ``path`` or under it (Windows refuses to delete it)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == path or target.startswith(path + os.sep):
            return target
    return None


@pytest.fixture
def windows_deletes(monkeypatch):
    """``os.unlink`` / ``os.remove`` / ``os.rmdir`` refuse, as Windows does (WinError 32), a
    file open in this process (Python's ``open`` shares no delete access there)."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd")

    def guarded(fn):
        def call(path, *args, **kwargs):
            held = None if isinstance(path, int) else _open_here(os.path.realpath(path))
            if held:
                raise PermissionError(13, "[WinError 32] The process cannot access the file "
                                      "because it is being used by another process",
                                      os.fspath(path))
            return fn(path, *args, **kwargs)
        return call

    for name in ("unlink", "remove", "rmdir"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))


def test_a_refused_run_names_its_inputs_and_leaves_no_folder_under_windows_rules(
        mri_file, tmp_path, windows_deletes):
    """x.h5 and x.hdf5 into a new --output: the lock files were deleted while still open, so
    the error became "OUT/.lock: [WinError 32] ... used by another process" and OUT/ stayed."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("x.h5", "x.hdf5"):
        shutil.copy(mri_file, folder / name)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"inputs .*x\.h5 and .*x\.hdf5 would both write"):
        run_pipeline(mri_config(), [str(folder / "x.h5"), str(folder / "x.hdf5")], out,
                     progress=False)
    assert not out.exists()


# ---- 6: `.NAME.old-PID` folders on Windows ------------------------------------------------------


class _Kernel32:
    """``OpenProcess`` / ``GetExitCodeProcess`` / ``CloseHandle`` of Windows for the processes
    in ``states``: "running" (exit code STILL_ACTIVE, 259), "exited" (its handle still opens,
    exit code 0), "denied" (another user's: ERROR_ACCESS_DENIED, 5); any other pid is no
    process (ERROR_INVALID_PARAMETER, 87). ``last_error`` is what ``ctypes.get_last_error``
    gives."""

    def __init__(self, states: dict[int, str]) -> None:
        self.states, self.last_error, self.open = states, 0, set()

    def OpenProcess(self, access, inherit, pid):  # noqa: N802 (the Win32 name)
        state = self.states.get(pid)
        if state in (None, "denied"):
            self.last_error = 87 if state is None else 5
            return None
        self.open.add(pid)
        return pid

    def GetExitCodeProcess(self, handle, code):  # noqa: N802
        code._obj.value = 259 if self.states[handle] == "running" else 0
        return 1

    def CloseHandle(self, handle):  # noqa: N802
        self.open.discard(handle)
        return 1


def test_old_folders_of_dead_processes_are_removed_under_windows_process_rules(tmp_path,
                                                                              monkeypatch):
    """On Windows `os.kill(pid, 0)` sends CTRL_C_EVENT and never raises ProcessLookupError, so
    every `.NAME.old-PID` folder counted as a live run's and stayed (a recursive PACS import of
    dicom/ took the stale series too). Liveness comes from OpenProcess / GetExitCodeProcess."""
    from mrirecon.core import processes
    from mrirecon.pipeline import run_state

    states = {900001: "exited", 900002: "running", 900004: "denied"}
    kernel32 = _Kernel32(states)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(processes, "_kernel32", lambda: kernel32, raising=False)
    monkeypatch.setattr(ctypes, "get_last_error", lambda: kernel32.last_error, raising=False)
    real_kill = os.kill
    monkeypatch.setattr(os, "kill", lambda pid, sig: None if sig == 0 else real_kill(pid, sig))
    out = tmp_path / "out"
    for pid in (900001, 900002, 900003, 900004):
        (out / "dicom" / f".series{pid}.old-{pid}").mkdir(parents=True)
        (out / "dicom" / f".series{pid}.old-{pid}" / "slice_0001.dcm").write_bytes(b"x")
    assert run_state.remove_orphans(out, before=0.0) == 2
    left = sorted(p.name for p in (out / "dicom").iterdir())
    assert left == [".series900002.old-900002", ".series900004.old-900004"]
    assert not kernel32.open  # every handle closed


def test_an_old_series_that_cannot_be_deleted_is_warned_about(mri_file, tmp_path, monkeypatch,
                                                               caplog):
    """A rerun moves the earlier DICOM series aside and deletes it; where a viewer or a virus
    scanner holds one of its files (common on Windows) the delete failed without a word and the
    stale series stayed beside the new one."""
    real = shutil.rmtree

    def busy(path, ignore_errors=False, *args, **kwargs):
        if ".old-" in os.fspath(path):  # a file in it is open elsewhere
            if ignore_errors:
                return None
            raise PermissionError(13, "[WinError 32] used by another process", os.fspath(path))
        return real(path, ignore_errors, *args, **kwargs)

    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    monkeypatch.setattr(shutil, "rmtree", busy)
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        assert run_pipeline(mri_config(), [str(mri_file)], out, progress=False) == 0
    (old,) = (out / "dicom").glob(".*.old-*")
    assert f"{old}: the earlier output moved aside could not be deleted" in caplog.text


# ---- 7: output names on case-insensitive disks ---------------------------------------------------


def test_inputs_whose_names_differ_only_in_case_are_refused_before_any_work(mri_file, tmp_path):
    """T1.h5 and t1.h5 (from a case-sensitive share) wrote the same reconstructions/T1.h5,
    nifti/... and .status/... on the default disks of macOS and Windows: the second overwrote
    the first while metrics.csv and the report listed two inputs."""
    from mrirecon.pipeline.inputs import output_names

    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("T1.h5", "t1.h5"):
        shutil.copy(mri_file, folder / name)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"inputs .*T1\.h5 and .*t1\.h5 would both write outputs "
                                         r"named 'T1' and 't1' \(one name on a case-insensitive"):
        run_pipeline(mri_config(), [str(folder / "T1.h5"), str(folder / "t1.h5")], out,
                     progress=False)
    assert not out.exists()
    assert output_names([Path("a/T1.h5"), Path("b/t1.h5")]) == ["a/T1", "b/t1"]
    with pytest.raises(ValueError, match=r"named 'A/x' and 'a/x'"):  # folders too
        output_names([Path("A/x.h5"), Path("a/x.h5")])
    with pytest.raises(ValueError, match=r"'Straße' and 'STRASSE'"):  # full case folding
        output_names([Path("Straße.h5"), Path("STRASSE.h5")])


# ---- 8: append_text opens in binary mode -----------------------------------------------------------


def test_append_text_opens_its_file_in_binary_mode(tmp_path, monkeypatch):
    """On Windows `os.open` without O_BINARY is text mode: os.write turned every "\\n" into
    "\\r\\n", train_log.csv rows ("\\r\\n" from csv) into "\\r\\r\\n" (a blank row between rows in
    Excel) and bench results.jsonl into CRLF unlike what atomic_write_text writes."""
    from mrirecon.io.atomic import append_text

    binary = 0x8000  # Windows' O_BINARY
    monkeypatch.setattr(os, "O_BINARY", binary, raising=False)
    flags_seen = []
    real_open = os.open

    def windows_open(path, flags, *args, **kwargs):  # records the flags; Linux has no O_BINARY
        flags_seen.append(flags)
        return real_open(path, flags & ~binary, *args, **kwargs)

    monkeypatch.setattr(os, "open", windows_open)
    path = tmp_path / "log.csv"
    path.write_bytes(b"step,loss\r\n")
    append_text(path, "1,0.5\r\n")
    assert flags_seen and all(f & binary for f in flags_seen)
    assert path.read_bytes() == b"step,loss\r\n1,0.5\r\n"
