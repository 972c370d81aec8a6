"""A disk that fills up or a file-size limit (``ulimit -f``) while mrirecon writes: the HDF5
writers, the output folder's lock, the simulators' memory and disk checks. A full disk is
played by ``RLIMIT_FSIZE`` in a child process (``SIGXFSZ`` ignored, so a write past the limit
fails with EFBIG as a write onto a full disk fails with ENOSPC): no root, no tmpfs."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from mrirecon.io import atomic, output_lock
from mrirecon.io.atomic import atomic_path
from mrirecon.io.output_lock import locked_output

ROOT = Path(__file__).resolve().parents[2]


def _child(code: str, cwd: Path, limit: int | None = None, timeout: float = 300):
    """Run ``code`` in a fresh interpreter (under a file-size limit of ``limit`` bytes)."""
    head = "import resource, signal\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
    if limit is not None:
        head += f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", head + textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_lodopab_pair_under_a_file_size_limit_is_a_named_error_and_writes_neither(tmp_path):
    # the observation (~49 KB) fits under 60 KiB, its ground truth with hu (~72 KB) does not
    r = _child("""
        import numpy as np
        from mrirecon.data.simulate_ct import ct_simulation_geometry
        from mrirecon.io.lodopab import write_lodopab
        g = ct_simulation_geometry("parallel", 60, 64)
        sino = np.ones((2,) + g.sinogram_shape); mu = np.full((2,) + g.image_shape, 0.01)
        try:
            write_lodopab("out", "test", sino, mu, geometry=g, hu=np.zeros_like(mu))
        except OSError as e:
            print("ERRNO", e.errno, e)
        import gc; gc.collect()
        print("ALIVE")
        """, tmp_path, limit=60 * 1024)
    assert r.returncode == 0, r.stderr[-2000:]  # was a segmentation fault (-11)
    assert "ALIVE" in r.stdout and "Exception ignored" not in r.stderr, r.stderr[-2000:]
    assert f"ERRNO {errno.EFBIG} " in r.stdout and "ground_truth_test_000.hdf5: File too large" \
        in r.stdout, r.stdout
    # the pair is a unit: no observation without its ground truth, no temporary file
    assert list((tmp_path / "out").iterdir()) == []


def test_fastmri_writers_under_a_file_size_limit_raise_a_named_oserror(tmp_path):
    r = _child("""
        import numpy as np
        from mrirecon.io.fastmri import write_reconstruction
        for name, shape in (("small.h5", (2, 60, 101)), ("large.h5", (4, 320, 320))):
            try:
                write_reconstruction(name, np.ones(shape, np.float32))
            except OSError as e:
                print("ERRNO", e.errno, e)
        import gc; gc.collect()
        print("ALIVE")
        """, tmp_path, limit=20 * 1024)
    assert r.returncode == 0 and "Exception ignored" not in r.stderr, r.stderr[-2000:]
    for name in ("small.h5", "large.h5"):
        assert f"ERRNO {errno.EFBIG} [Errno 27] {name}: File too large" in r.stdout, r.stdout
    assert sorted(os.listdir(tmp_path)) == []


def test_simulate_under_a_file_size_limit_is_a_user_error(tmp_path):
    r = _child("""
        import sys
        from mrirecon.cli import main
        sys.exit(main(["simulate", "ct", "--out", "ct", "--views", "60", "--size", "64",
                       "--samples", "2", "--part", "test", "--sources", "phantom"]))
        """, tmp_path, limit=20 * 1024)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])  # was 139 / "internal error"
    line = r.stderr.strip().splitlines()[-1]
    assert "observation_test_000.hdf5: File too large" in line and "ulimit -f" in line, line
    assert "internal error" not in r.stderr


def test_disk_error_knows_efbig_and_hdf5s_errno_text(tmp_path):
    from mrirecon.io.atomic import atomic_path
    from mrirecon.io.errors import disk_error

    assert "ulimit -f" in disk_error(OSError(errno.EFBIG, "OUT/x.h5: File too large"))
    target = tmp_path / "r.h5"
    with pytest.raises(OSError) as info, atomic_path(target):
        raise RuntimeError("Can't decrement id ref count (unable to extend file properly, "
                           "errno = 27, error message = 'File too large')")
    assert info.value.errno == errno.EFBIG and str(target) in str(info.value)
    assert disk_error(info.value) is not None
    with pytest.raises(RuntimeError), atomic_path(target):  # another errno: left as it is
        raise RuntimeError("something (errno = 2, error message = 'No such file')")
    assert list(tmp_path.iterdir()) == []


def test_lock_on_a_full_disk_names_the_lock_file_and_leaves_no_folder(tmp_path):
    r = _child("""
        from pathlib import Path
        from mrirecon.io.output_lock import locked_output
        try:
            with locked_output(Path("out"), option="--output", who="test"):
                print("LOCKED")
        except OSError as e:
            print("ERR", e)
        """, tmp_path, limit=0)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERR [Errno 27] out/.lock: File too large" in r.stdout, r.stdout  # was: no file named
    assert not (tmp_path / "out").exists()  # was: an empty folder with a 0-byte .lock


def test_run_whose_lock_fails_leaves_no_folder(mri_file, tmp_path, monkeypatch):
    """``mrirecon run`` took its lock before the clean-up that removes a folder it created, so
    a lock failing on a full disk left an empty output folder behind."""
    from mrirecon.io import output_lock
    from mrirecon.pipeline import runner
    from mrirecon.pipeline.definitions import load_pipeline

    def full(output, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(output / ".lock"))

    monkeypatch.setattr(output_lock, "lock_output", full)  # what the runner's locked_output takes
    config = load_pipeline("mri_retrospective", ["report.enabled=false"])[0]
    with pytest.raises(OSError, match="No space left"):
        runner.run_pipeline(config, [str(mri_file)], tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_small_sizes_are_said_in_a_unit_that_shows_them(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from mrirecon.data import budget

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 3000))
    with pytest.raises(ValueError) as info:
        budget.check_budget("simulate_ct", 1e6, 120_000, tmp_path, "--samples 2")
    assert "writes about 117 KiB, but only 3 KiB are free" in str(info.value)  # was 0.0 GiB
    assert budget.size_text(5 * 2**30) == "5.0 GiB" and budget.size_text(3 * 2**20) == "3.0 MiB"


def test_out_on_a_read_only_file_system_says_so(tmp_path, monkeypatch):
    from mrirecon import cli_simulate

    class Stat:
        f_flag = os.ST_RDONLY

    monkeypatch.setattr(os, "access", lambda *a, **k: False)
    monkeypatch.setattr(os, "statvfs", lambda p: Stat())
    with pytest.raises(ValueError, match=r"\(the file system is read-only\)"):
        cli_simulate._check_out(str(tmp_path / "sim"))
    Stat.f_flag = 0
    with pytest.raises(ValueError, match=r"\(permission denied\)"):
        cli_simulate._check_out(str(tmp_path / "sim"))


# the peak of this process's own memory: /proc's VmHWM, which starts afresh at exec (getrusage's
# ru_maxrss keeps the forking parent's peak across exec: 1.6 GB inside a full pytest run)
_PEAK = """
    import json
    import mrirecon.data.budget as budget
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    seen = []
    real = budget.check_budget
    def spy(who, memory, disk, out, what):
        seen.append(memory); return real(who, memory, disk, out, what)
    budget.check_budget = spy
    before = hwm()
    {call}
    peak = hwm()
    print(json.dumps({{"estimate": seen[0], "before": before, "peak": peak}}))
"""


def _peak(tmp_path: Path, call: str) -> dict:
    r = _child(_PEAK.format(call=call), tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_mri_memory_estimate_bounds_the_peak(tmp_path):
    # 8 coils, 4x readout oversampling: 4.2 M k-space samples; the check said 48 bytes each
    # (201 MB) while the process peaked near 1 GB
    got = _peak(tmp_path, """
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    simulate_mri_dataset("mri", volumes=1, slices=8, coils=8, size=(128, 128),
                         readout_oversampling=4, resolution=2)""")
    # what the job adds to the process, as for CT below: the interpreter and torch's import
    # before it are no part of the estimate (0.71 GB under a CUDA build of torch on Python 3.13,
    # where the estimate had been held to the whole process's peak and missed it by 1.4 %)
    assert got["estimate"] >= got["peak"] - got["before"], got


def test_fan_beam_memory_estimate_counts_the_ray_tables(tmp_path):
    # 10 views x 300000 detectors: the projector's float64 ray tables dominate; the check
    # counted 8 bytes per sinogram bin (24 MB) of what took hundreds
    got = _peak(tmp_path, """
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    simulate_ct_dataset("ct", geometry="fan", views=10, size=32, samples=1, part="test",
                        sources="phantom", detectors=300000)""")
    assert got["estimate"] >= got["peak"] - got["before"], got
    assert np.isfinite(got["estimate"])


def test_a_writer_error_without_errno_on_a_full_disk_is_enospc_naming_the_target(tmp_path, monkeypatch):
    """h5py / torch report a full disk as a RuntimeError with no errno: where the target's file
    system has < 1 MiB left it becomes ENOSPC naming the target; with space left the error is
    raised as it is. The temporary file is gone either way."""
    for free, expect in ((4096, OSError), (1 << 30, RuntimeError)):
        monkeypatch.setattr(atomic.os, "statvfs",
                            lambda p, free=free: SimpleNamespace(f_bavail=free, f_frsize=1))
        target = tmp_path / "out.h5"
        with pytest.raises(expect) as err:
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"x")
                raise RuntimeError("Can't write data (file write failed)")
        if expect is OSError:
            assert err.value.errno == errno.ENOSPC and str(target) in str(err.value)
        assert not target.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("where", ["prepare", "lock"])
def test_a_failure_before_the_lock_is_held_leaves_no_folder_it_created(tmp_path, monkeypatch, where):
    """--output a/b/out: a check that fails after creating the folder, or a full disk when the
    lock file is made, leaves neither out nor the parents a/b made for it; an existing parent
    stays."""
    out = tmp_path / "a" / "b" / "out"

    def prepare(folder):
        folder.mkdir(parents=True)
        if where == "prepare":
            raise ValueError(f"--output {folder} is not writable")

    if where == "lock":
        def full(*a, **k):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(output_lock, "lock_output", full)
    with pytest.raises((ValueError, OSError)):
        with locked_output(out, prepare=prepare):
            pytest.fail("the body ran")
    assert not (tmp_path / "a").exists() and tmp_path.is_dir()


def test_a_disk_error_names_the_file():
    """Fails if errors.py:37 the ``{err.filename}: `` prefix dropped. A full disk's error
    names the file it failed on, then why and what to do."""
    import errno
    import os

    from mrirecon.io.errors import disk_error

    err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "OUT/metrics.csv")
    text = disk_error(err)
    assert text.startswith(f"OUT/metrics.csv: {os.strerror(errno.ENOSPC)} (the disk is full")
    assert disk_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))).startswith(
        os.strerror(errno.ENOSPC))
