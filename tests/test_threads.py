"""Thread policy (mrirecon/threads.py): affinity, cgroup quota, torchrun share, overrides."""

from __future__ import annotations

import logging
import os

import pytest
import torch

from mrirecon import threads


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("MRIRECON_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[int, int] | None = None):
    tmp_path.mkdir(parents=True, exist_ok=True)
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return tmp_path


def test_cores_come_from_affinity_capped_by_the_cgroup_quota(clean_env, tmp_path):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5, 6, 7})
    assert threads.available_cpus(tmp_path) == 8  # no cgroup files: affinity only
    assert threads.available_cpus(_cgroup(tmp_path / "a", v2="max 100000")) == 8
    assert threads.available_cpus(_cgroup(tmp_path / "b", v2="250000 100000")) == 2  # --cpus 2.5
    assert threads.available_cpus(_cgroup(tmp_path / "c", v2="50000 100000")) == 1  # never 0
    assert threads.available_cpus(_cgroup(tmp_path / "d", v1=(300000, 100000))) == 3
    assert threads.available_cpus(_cgroup(tmp_path / "e", v1=(-1, 100000))) == 8  # v1 "no limit"
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {3})  # taskset -c 3
    assert threads.available_cpus(_cgroup(tmp_path / "f", v2="400000 100000")) == 1


def test_override_order_and_torchrun_share(clean_env, tmp_path):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert threads.thread_count(cgroup_root=tmp_path) == 8
    assert threads.thread_count(local_world_size=3, cgroup_root=tmp_path) == 2  # 8 // 3
    clean_env.setenv("LOCAL_WORLD_SIZE", "16")
    assert threads.thread_count(cgroup_root=tmp_path) == 1  # at least one thread per rank
    clean_env.setenv("OMP_NUM_THREADS", "3")
    assert threads.thread_count(cgroup_root=tmp_path) == 3  # the user's OpenMP setting
    clean_env.setenv("MRIRECON_THREADS", "5")
    assert threads.thread_count(cgroup_root=tmp_path) == 5
    assert threads.thread_count(6, cgroup_root=tmp_path) == 6  # --threads wins
    with pytest.raises(ValueError, match="--threads"):
        threads.thread_count(0)


@pytest.mark.parametrize("value, message", [("abc", r"MRIRECON_THREADS must be an integer >= 1, got 'abc'"),
                                            ("-3", r"MRIRECON_THREADS must be >= 1, got -3"),
                                            ("0", r"MRIRECON_THREADS must be >= 1, got 0")])
def test_a_bad_thread_variable_is_named_not_ignored(clean_env, tmp_path, value, message):
    """'abc' and '-3' were ignored without a word, and 0 was blamed on --threads."""
    clean_env.setenv("MRIRECON_THREADS", value)
    with pytest.raises(ValueError, match=message):
        threads.thread_count(cgroup_root=tmp_path)


def test_absurd_thread_counts_are_refused(clean_env, tmp_path):
    """--threads 20000 died in 'libgomp: Thread creation failed', 100000 in a segfault."""
    with pytest.raises(ValueError, match=r"--threads 20000 is more than 1024 threads"):
        threads.thread_count(20000, cgroup_root=tmp_path)
    assert threads.thread_count(threads.MAX_THREADS, cgroup_root=tmp_path) == threads.MAX_THREADS


def test_configure_sets_torch_and_child_environment(clean_env):
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_cli_threads_option_before_and_after_the_command():
    from mrirecon.cli import build_parser

    p = build_parser()
    tail = ["-i", "x.h5", "-o", "out"]
    assert p.parse_args(["--threads", "4", "run", "mri_cs", *tail]).threads == 4
    assert p.parse_args(["run", "mri_cs", *tail, "--threads", "3"]).threads == 3
    assert p.parse_args(["run", "mri_cs", *tail]).threads is None
    # given twice, the one after the command counts, as the last value of any option (README)
    args = p.parse_args(["--threads", "2", "run", "mri_cs", *tail, "--threads", "1", "-o", "o2"])
    assert (args.threads, args.output) == (1, "o2")
    with pytest.raises(SystemExit):
        p.parse_args(["--threads", "0", "run", "mri_cs", *tail])
    # every command takes it after the command (simulate refused it: "unrecognized arguments")
    for command in (["simulate", "mri", "--out", "d"], ["simulate", "ct", "--out", "d"],
                    ["bench", "--data", "d", "--output", "o"], ["demo"]):
        assert p.parse_args([*command, "--threads", "2"]).threads == 2, command


@pytest.fixture
def thread_env(monkeypatch, tmp_path):
    """No thread variables, 8 cores by affinity, no cgroup quota (``tmp_path`` as the root)."""
    for var in ("MRIRECON_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE", threads.CHOSEN_VAR,
                "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RANK", "WORLD_SIZE"):
        monkeypatch.setenv(var, "x")  # recorded, so that the test's own writes are undone
        monkeypatch.delenv(var)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    return monkeypatch


def test_an_openmp_list_takes_its_first_level_not_its_last(thread_env, tmp_path):
    """Fails if the last element of ``OMP_NUM_THREADS=4,2``; the
    existing test uses ``1,1``, which cannot tell first from last."""
    thread_env.setenv("OMP_NUM_THREADS", "4,2")
    assert threads.thread_count(cgroup_root=tmp_path) == 4


def test_oversubscription_is_warned_only_above_the_cores(thread_env, tmp_path, caplog):
    """Fails if ``requested <= share`` -> ``<``: as many threads as
    cores is the normal case and says nothing; one more is warned, naming the share."""
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        assert threads.thread_count(8, cgroup_root=tmp_path) == 8
    assert caplog.text == ""
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        assert threads.thread_count(9, cgroup_root=tmp_path) == 9
    assert "--threads 9 is more than the 8 core(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):  # its share under torchrun
        assert threads.thread_count(4, local_world_size=2, cgroup_root=tmp_path) == 4
    assert caplog.text == ""


def test_configure_threads_leaves_a_users_mkl_and_openblas_settings(thread_env, monkeypatch):
    """Fails if ``setdefault`` -> assignment: the module docstring and
    ``configure_threads`` say the variables are set for child processes only *where unset*."""
    import torch as _torch

    monkeypatch.setattr(_torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr(threads, "_configured", None)
    thread_env.setenv("MKL_NUM_THREADS", "3")
    thread_env.setenv("OPENBLAS_NUM_THREADS", "5")
    assert threads.configure_threads(2) == 2
    assert os.environ["MKL_NUM_THREADS"] == "3" and os.environ["OPENBLAS_NUM_THREADS"] == "5"
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_a_rank_equal_to_the_world_size_is_refused(thread_env):
    """Fails if ``rank < world`` -> ``rank <= world``: ranks are 0 .. WORLD_SIZE - 1."""
    thread_env.setenv("WORLD_SIZE", "2")
    thread_env.setenv("RANK", "1")
    assert threads.rank_and_world() == (1, 2)
    thread_env.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"rank 2 of world size 2 .*need 0 <= RANK < WORLD_SIZE"):
        threads.rank_and_world()


def test_importing_mrirecon_before_torch_sets_the_passive_wait_policy_unless_set():
    """Only the command line set it: Python callers on 2 threads of a busy machine ran
    l1_wavelet 3-9x slower than on 1. A user's setting stays; after torch, nothing changes (its
    OpenMP has read the environment)."""
    import subprocess
    import sys

    def policy(code: str, **env) -> str:
        base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get("
                              "'OMP_WAIT_POLICY'))"], env={**base, **env}, capture_output=True,
                             text=True, check=True)
        return out.stdout.strip()

    assert policy("import mrirecon") == "PASSIVE"
    assert policy("import mrirecon", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert policy("import torch, mrirecon") == "None"
