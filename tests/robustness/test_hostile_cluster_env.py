"""The process environment of a cluster or a container: a file system without ``flock``
(Lustre mounted without ``-o flock``, NFS without its lock daemon), threads that write while the
umask is 077, a SIGHUP (the ssh session or terminal closed), a read-only root file system where
only the output folder is writable (matplotlib then finds no folder for its cache)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mrirecon.io.atomic import NAME_MAX, TEMP_NAME, atomic_path, atomic_write_bytes, remove_temp_files
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import default_signals

ROOT = Path(__file__).resolve().parents[2]
FAST = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none"]
DEAD_PID = 4_999_999  # above Linux's largest pid_max (2**22): never a live process


def _config(*extra):
    return load_pipeline("mri_cs", FAST + ["export.formats=[hdf5]", "report.enabled=false",
                                           *extra])[0]


def _sh(cmd: list[str], cwd: Path, **env) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **env)
    return subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True,
                          preexec_fn=default_signals,
                          timeout=180)


def _run_args(inp: Path, out: Path, formats: str = "hdf5") -> list[str]:
    args = ["run", "mri_cs", "--input", str(inp), "--output", str(out), "--no-progress"]
    for s in [*FAST, f"export.formats=[{formats}]"]:
        args += ["--set", s]
    return args


# ---- 2: a file system without flock ---------------------------------------------------------


@pytest.fixture
def flock_fails(monkeypatch):
    """``fcntl.flock`` fails with the errno given to the returned function, as on a file system
    that does not support it (Lustre without ``-o flock``: ENOSYS; NFS without lockd: ENOLCK)."""
    fcntl = pytest.importorskip("fcntl")

    def fail_with(code: int) -> None:
        def flock(fd, op):
            raise OSError(code, os.strerror(code))

        monkeypatch.setattr(fcntl, "flock", flock)

    return fail_with


def _not_locked(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "is not locked" in r.getMessage()]


def test_a_run_on_a_file_system_without_flock_succeeds_with_one_warning(mri_file, tmp_path,
                                                                       flock_fails, caplog):
    """Every run, train and bench was refused: "another mrirecon run (a distributed run) is
    writing into this folder" (over an earlier output: naming that run's dead pid), and the
    refused fresh folder kept `.lock`. Only a held lock refuses now."""
    flock_fails(errno.ENOSYS)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text(f"pid {DEAD_PID} on gone\n")  # an earlier run's, on a normal fs
    with caplog.at_level(logging.WARNING, logger="mrirecon"):
        assert run_pipeline(_config(), [str(mri_file)], out, progress=False) == 0
    (line,) = _not_locked(caplog)
    assert line.startswith(f"{out} is not locked: its file system does not support flock "
                           "(ENOSYS: Function not implemented)"), line
    assert (out / "reconstructions" / f"{mri_file.stem}.h5").is_file()
    assert json.loads((out / "provenance.json").read_text())["status"] == "complete"


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL])
@pytest.mark.parametrize("world", [1, 2])
def test_flock_errors_that_mean_no_support_leave_the_folder_unlocked(tmp_path, flock_fails, caplog,
                                                                    code, world):
    from mrirecon.io.output_lock import locked_output

    flock_fails(code)
    out = tmp_path / "a" / "out"
    with caplog.at_level(logging.WARNING, logger="mrirecon"), \
            locked_output(out, who="mrirecon train", world=world, rank=world - 1) as held:
        name = errno.errorcode[code]
        (line,) = _not_locked(caplog)
        assert f"does not support flock ({name}: {os.strerror(code)})" in line
        assert "another run into the same folder is not refused" in line
        mine = ".lock" if world == 1 else f".lock.rank{world - 1}"
        assert f"pid {os.getpid()} on " in (out / mine).read_text()  # who writes there
        assert held.handles and not (out / ".lock.join").exists()  # the locked try's: removed


@pytest.mark.parametrize("code", [errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES])
def test_a_flock_error_that_means_held_still_refuses(tmp_path, flock_fails, code):
    from mrirecon.io.output_lock import lock_output

    flock_fails(code)
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock").write_text(f"pid {DEAD_PID} on elsewhere\n")
    with pytest.raises(ValueError, match=rf"another mrirecon run \(pid {DEAD_PID} on elsewhere\)"):
        lock_output(out, 0)


# ---- 4: the umask of files written from threads ----------------------------------------------


@pytest.fixture
def umask_077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_atomic_writes_never_change_the_process_umask(tmp_path, umask_077, monkeypatch):
    """`atomic_path` read the umask by setting it to 0 and back, process-wide: a file another
    thread created in that window was 0666 (5 of 8000 files under umask 077 from 8 threads)."""
    from mrirecon.io.atomic import atomic_write_bytes, atomic_write_text

    def no_umask(mask):
        raise AssertionError(f"os.umask({mask:o}) called: the umask is process-wide")

    monkeypatch.setattr(os, "umask", no_umask)
    atomic_write_bytes(tmp_path / "a" / "x.bin", b"x")
    atomic_write_text(tmp_path / "a" / "y.txt", "y")
    for name in ("x.bin", "y.txt"):
        assert stat.S_IMODE((tmp_path / "a" / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["x.bin", "y.txt"]


@pytest.mark.parametrize("mask", [0o002, 0o022, 0o077])
def test_atomic_writes_get_the_mode_the_umask_gives(tmp_path, mask):
    from mrirecon.io.atomic import atomic_write_bytes

    old = os.umask(mask)
    try:
        atomic_write_bytes(tmp_path / "x.bin", b"x")
        with open(tmp_path / "plain.bin", "wb"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.bin").stat().st_mode) == 0o666 & ~mask
    assert (stat.S_IMODE((tmp_path / "x.bin").stat().st_mode)
            == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode))


def test_threads_writing_under_umask_077_give_no_file_other_users_can_read(tmp_path, umask_077):
    from mrirecon.io.atomic import TEMP_NAME, atomic_path, atomic_write_bytes

    names = []

    def write(i: int) -> None:
        atomic_write_bytes(tmp_path / f"f{i:04d}.bin", b"x")
        with open(tmp_path / f"g{i:04d}.txt", "w") as fh:  # a file the thread makes meanwhile
            fh.write("y")
        if i % 100 == 0:
            with atomic_path(tmp_path / f"h{i:04d}.h5") as tmp:
                names.append(tmp.name)
                tmp.write_bytes(b"z")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(1500)))
    modes = {}
    for p in tmp_path.iterdir():
        modes.setdefault(stat.S_IMODE(p.stat().st_mode), []).append(p.name)
    assert set(modes) == {0o600}, {oct(m): v[:3] for m, v in modes.items()}
    assert len(modes[0o600]) == 3000 + 15 and len(set(names)) == 15
    assert all(TEMP_NAME.fullmatch(n) for n in names), names  # run_state still finds leftovers


def test_a_temporary_name_taken_already_is_skipped(tmp_path, monkeypatch):
    """The temporary file is made with O_EXCL under a random name: a name that exists (another
    writer's, or a symlink planted there) is never opened, the next name is tried."""
    from mrirecon.io import atomic

    taken = tmp_path / ".x.bin.aaaaaaaa.bin.tmp"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    taken.symlink_to(victim)
    names = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(atomic, "_random_name", lambda: next(names))
    atomic.atomic_write_bytes(tmp_path / "x.bin", b"new")
    assert (tmp_path / "x.bin").read_bytes() == b"new" and victim.read_bytes() == b"keep"
    assert taken.is_symlink()


# ---- 5: SIGHUP (the ssh session or terminal closed) ------------------------------------------


def _cli_hung_up_at_commit(args: list[str], commit: int, cwd: Path, disposition: str):
    """``mrirecon ARGS`` in a new process whose SIGHUP is ``disposition`` (``SIG_DFL``, or
    ``SIG_IGN`` as under nohup) and that sends itself SIGHUP right after the ``commit``-th
    input's outputs were moved into place."""
    script = f"""
import os, signal, sys
signal.signal(signal.SIGHUP, signal.{disposition})
from mrirecon.pipeline import runner
real, calls = runner.commit_outputs, []
def commit(*a, **k):
    real(*a, **k)
    calls.append(1)
    if len(calls) == {commit}:
        os.kill(os.getpid(), signal.SIGHUP)
runner.commit_outputs = commit
from mrirecon.cli import main
sys.exit(main(sys.argv[1:]))
"""
    return _sh([sys.executable, "-c", script, *args], cwd)


def _inputs(mri_file: Path, folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        shutil.copy(mri_file, folder / f"f{i}.h5")
    return folder


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP (Windows)")
def test_a_hangup_ends_a_run_as_sigterm_does(mri_file, tmp_path):
    """SIGHUP killed `mrirecon run` like SIGKILL: provenance said "running", no metrics.csv for
    the finished inputs, `.staging` left behind. Now it is handled as SIGTERM is."""
    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    p = _cli_hung_up_at_commit(_run_args(inp, out), 3, tmp_path, "SIG_DFL")
    assert p.returncode == 128 + signal.SIGHUP, p.stderr
    assert p.stderr.rstrip().endswith("mrirecon run: terminated (SIGHUP)"), p.stderr
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == "interrupted" and prov["interrupted"]["how"] == "SIGHUP"
    assert prov["interrupted"]["while"] == str(inp / "f2.h5")
    assert [f["status"] for f in prov["files"]] == ["ok", "ok"]
    assert (out / "metrics.csv").read_text().count("\n") == 3  # header and the 2 finished
    assert not (out / ".staging").exists() and not list(out.rglob("*.tmp"))


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP (Windows)")
def test_a_hangup_of_the_terminal_itself_still_exits_129(mri_file, tmp_path):
    """A real hangup: stdout and stderr on a pty whose master is closed (the ssh session gone:
    every write fails with EIO), then SIGHUP. Was: exit 1, "OSError: [Errno 5] Input/output
    error" raised by printing "terminated (SIGHUP)" inside the handler."""
    pty = pytest.importorskip("pty")
    try:
        master, slave = pty.openpty()
    except OSError as err:
        pytest.skip(f"no pty here ({err})")
    inp, out, ready = _inputs(mri_file, tmp_path / "in"), tmp_path / "out", tmp_path / "ready"
    script = f"""
import sys, time
from mrirecon.pipeline import runner
real = runner.commit_outputs
def commit(*a, **k):
    real(*a, **k)
    open({str(ready)!r}, 'w').close()
    time.sleep(60)  # the parent closes the terminal and sends SIGHUP meanwhile
runner.commit_outputs = commit
from mrirecon.cli import main
sys.exit(main(sys.argv[1:]))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", script, *_run_args(inp, out)], cwd=tmp_path,
                         stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                         preexec_fn=default_signals)
    os.close(slave)
    import select

    seen, deadline = b"", time.monotonic() + 120
    try:
        while not ready.exists() and p.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.05)[0]:  # keep the pty from filling up
                with contextlib.suppress(OSError):
                    seen += os.read(master, 65536)
        assert ready.exists(), seen.decode(errors="replace")
    finally:
        os.close(master)  # the terminal is gone: its writes now fail with EIO
        p.send_signal(signal.SIGHUP)
        code = p.wait(60)
    assert code == 128 + signal.SIGHUP, seen.decode(errors="replace")
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["status"] == "interrupted" and prov["interrupted"]["how"] == "SIGHUP"
    assert not (out / ".staging").exists()


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP (Windows)")
def test_a_run_under_nohup_still_ignores_sighup(mri_file, tmp_path):
    inp = _inputs(mri_file, tmp_path / "in")
    out = tmp_path / "out"
    p = _cli_hung_up_at_commit(_run_args(inp, out), 1, tmp_path, "SIG_IGN")
    assert p.returncode == 0, p.stderr
    assert json.loads((out / "provenance.json").read_text())["status"] == "complete"


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP (Windows)")
def test_the_stop_handlers_are_installed_only_over_default_dispositions():
    """A caller's own handler and nohup's SIG_IGN stay; the handlers are restored after."""
    from mrirecon.cli import _on_sigterm_raise
    from mrirecon.io.errors import Terminated

    def own(signum, frame):
        pass

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are set in the main thread only")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        restore = _on_sigterm_raise(Terminated)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
        restore()
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        restore = _on_sigterm_raise(Terminated)
        assert signal.getsignal(signal.SIGTERM) is own
        with pytest.raises(Terminated, match="SIGHUP"):
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(100):  # the handler runs between bytecodes of the main thread
                time.sleep(0.01)
        restore()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


# ---- 6: a read-only root file system: only the output folder is writable ---------------------


_RO_SCRIPT = """
import sys, tempfile
# HOME, XDG_* and MPLCONFIGDIR point below a file; no temporary folder can be made (TMPDIR, /tmp,
# /var/tmp and the working directory read-only): matplotlib's own fallback fails
tempfile.tempdir = sys.argv[1]
from mrirecon.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("writable_config", [False, True])
def test_a_read_only_root_keeps_png_export_working(mri_file, tmp_path, writable_config):
    """Every input failed after its whole reconstruction: "OSError: Matplotlib requires access
    to a writable cache directory ...", exit 1, no HDF5 either. matplotlib now keeps its
    configuration in a private folder under the output folder, removed at exit. Only the cache
    folder unwritable (``writable_config``) is found at the import too, not at the first
    figure."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file: nothing can be made below it")
    nowhere = str(blocker / "x")
    inp = _inputs(mri_file, tmp_path / "in", 1)
    out = tmp_path / "out"
    env = {"HOME": nowhere, "XDG_CACHE_HOME": nowhere, "TMPDIR": nowhere,
           "XDG_CONFIG_HOME": str(tmp_path / "config") if writable_config else nowhere}
    args = _run_args(inp, out, "hdf5,png")
    p = subprocess.run([sys.executable, "-c", _RO_SCRIPT, nowhere, *args], cwd=tmp_path,
                       env={**{k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"},
                            "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), **env},
                       capture_output=True, text=True, timeout=180, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert list((out / "figures").rglob("*.png")) and (out / "reconstructions" / "f0.h5").is_file()
    lines = [line for line in p.stderr.splitlines() if "MPLCONFIGDIR" in line]
    assert len(lines) == 1 and lines[0].startswith("WARNING mrirecon: matplotlib found no "
                                                   "writable folder"), p.stderr[-3000:]
    assert f"{out}{os.sep}.matplotlib-" in lines[0]
    assert not list(out.glob(".matplotlib-*"))  # removed at exit


def test_a_killed_run_s_private_matplotlib_folder_is_removed_by_the_next_run(tmp_path):
    """A run killed (SIGKILL) before its exit handler left ``OUT/.matplotlib-PID-XXXXXXXX`` (its
    font cache) for good: the next run into the folder removes it when PID is no longer alive;
    a living process's folder and a user's own ``.matplotlib-notes`` stay."""
    from mrirecon.pipeline.run_state import remove_orphans

    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead = int(child.stdout)
    out = tmp_path / "out"
    killed = out / f".matplotlib-{dead}-abcd1234"
    living = out / f".matplotlib-{os.getpid()}-efgh5678"
    users = out / ".matplotlib-notes"
    for d in (killed, living, users):
        (d / "fontlist").mkdir(parents=True)
    remove_orphans(out, before=0.0)
    assert not killed.exists() and living.is_dir() and users.is_dir()


@pytest.mark.parametrize("name, suffix", [("a" * (NAME_MAX - 3) + ".h5", None),
                                          ("脳" * 83 + ".h5", None),  # 252 bytes
                                          ("b" * NAME_MAX, ".png"), ("c" * 200 + ".nii.gz", "")])
def test_a_target_name_that_fits_gets_a_temporary_name_that_fits(tmp_path, name, suffix):
    """The temporary name (``.NAME.`` + 8 random characters + suffix + ``.tmp``) is cut so that
    it is at most NAME_MAX bytes whenever the target's name is: a 255-byte target is writable."""
    target = tmp_path / name
    assert len(os.fsencode(name)) <= NAME_MAX
    with atomic_path(target, suffix=suffix) as tmp:
        assert len(os.fsencode(tmp.name)) <= NAME_MAX and TEMP_NAME.fullmatch(tmp.name)
        tmp.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    atomic_write_bytes(target, b"y")
    assert target.read_bytes() == b"y" and os.listdir(tmp_path) == [name]


def test_remove_temp_files_keeps_a_symlink_named_like_a_temporary_file(tmp_path):
    """A link named like an atomic write's leftover is no leftover (those are made with O_EXCL
    and O_NOFOLLOW): it and its target stay; a real leftover beside it goes."""
    target = tmp_path / "target.h5"
    target.write_bytes(b"data")
    link, left = tmp_path / ".x.h5.abcdefgh.h5.tmp", tmp_path / ".y.h5.abcdefgh.h5.tmp"
    assert TEMP_NAME.fullmatch(link.name) and TEMP_NAME.fullmatch(left.name)
    link.symlink_to(target)
    left.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(left, (old, old))
    os.utime(link, (old, old), follow_symlinks=False)
    assert remove_temp_files(tmp_path, time.time()) == [left]
    assert link.is_symlink() and target.read_bytes() == b"data"
