"""Where the thread count under ``bench_table.md`` came from, and what ``--threads`` says its
default is (audit a21, finding 4: the help said "the cores available to this process" while
``MRIRECON_THREADS`` and an inherited ``OMP_NUM_THREADS`` won, and the table credited any count
to `--threads`: "Measured with 1 CPU thread(s) (`--threads`)" on 2 cores with
``OMP_NUM_THREADS=1`` and no option)."""

from __future__ import annotations

import re

import pytest
import torch

from mrirecon import threads
from mrirecon.cli import main
from tests.helpers import simulated_ct_dir


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory):
    return simulated_ct_dir(tmp_path_factory.mktemp("threads_note"), views=20, size=16, seed=2)


@pytest.fixture
def env(monkeypatch):
    """No thread variables but those a test sets (the command sets the OpenMP / BLAS ones for
    its children where unset: restored after the test)."""
    for var in ("MRIRECON_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "LOCAL_WORLD_SIZE", threads.CHOSEN_VAR):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def _note(out) -> str:
    return (out / "bench_table.md").read_text().strip().splitlines()[-1]


@pytest.mark.parametrize("setting, says", [
    ({"argv": ["--threads", "1"]}, "(`--threads`)"),
    ({"MRIRECON_THREADS": "1"}, "(the environment variable MRIRECON_THREADS)"),
    ({"OMP_NUM_THREADS": "1"}, "(the environment variable OMP_NUM_THREADS)"),
    ({}, "(the cores available to this process)"),
])
def test_the_table_names_where_its_thread_count_came_from(setting, says, ct_dir, tmp_path, env,
                                                          capsys):
    for var, value in setting.items():
        if var != "argv":
            env.setenv(var, value)
    env.setattr(threads, "available_cpus", lambda *a, **k: 1)  # "cores": 1 on any machine
    out = tmp_path / "b"
    assert main([*setting.get("argv", []), "bench", "--challenge", "ct", "--data", str(ct_dir),
                 "--output", str(out), "--accelerations", "2", "--methods", "fbp",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert _note(out) == f"Measured with 1 CPU thread(s) {says}."


def test_a_library_call_and_mixed_records_say_so(ct_dir, tmp_path):
    """Without the command line the count is the calling program's torch setting; records
    measured apart (a resumed run) each keep their count and source."""
    from mrirecon.bench import run_ct_bench
    from mrirecon.bench.table import build_table

    threads.forget_configured()  # as in a program that never ran the command line
    table = run_ct_bench(ct_dir, (2,), ["fbp"], output_dir=tmp_path, progress=False)
    n = torch.get_num_threads()
    assert _note(tmp_path) == f"Measured with {n} CPU thread(s) (torch's setting in the " \
                              "calling program)."
    rec = dict(table.records[0])
    old = {k: v for k, v in rec.items() if k != "threads_source"}  # written before the source
    mixed = build_table([{**rec, "threads": 2, "threads_source": "OMP_NUM_THREADS"},
                         {**rec, "threads": 1, "threads_source": "--threads",
                          "volume": "x.hdf5"}, {**old, "threads": 3, "volume": "y.hdf5"}],
                        ["fbp"], [2.0], "ct")
    assert mixed.to_markdown().strip().splitlines()[-1] == (
        "Measured with 1 (`--threads`) / 2 (the environment variable OMP_NUM_THREADS) / 3 "
        "(source not recorded) CPU thread(s).")
    # what ± means, in the file pasted into papers (README and report.html said it; it did not)
    assert "mean ± 2 std over volumes (sample std, ddof = 1" in mixed.to_markdown()


def test_threads_help_states_the_order():
    """Each command's ``--threads`` help names the variables that win over the cores."""
    import contextlib
    import io

    for argv in (["--help"], ["bench", "--help"], ["run", "--help"]):
        text = io.StringIO()
        with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
            main(argv)
        flat = " ".join(text.getvalue().split())
        found = re.search(r"--threads N (.*?)\)", flat)
        assert found, flat
        assert re.search(r"MRIRECON_THREADS.*OMP_NUM_THREADS.*cores available", found.group(1)), \
            (argv, found.group(1))


def test_the_count_configure_threads_exported_keeps_its_source(env):
    """configure_threads exports OMP_NUM_THREADS for child processes; a second choice in the same
    process (or a child's) said "OMP_NUM_THREADS" for a count the cores had given (reread a21)."""
    before = torch.get_num_threads()
    try:
        n = threads.configure_threads(None)
        assert threads.thread_choice(None) == (n, "cores")
        env.setenv("OMP_NUM_THREADS", str(n + 1))  # the user's own value now: the user's source
        assert threads.thread_choice(None)[1] == "OMP_NUM_THREADS"
    finally:
        torch.set_num_threads(before)


def test_torchruns_default_of_one_thread_is_named_as_such(env):
    """torchrun sets OMP_NUM_THREADS=1 for each of several local processes where it is unset."""
    env.setenv("OMP_NUM_THREADS", "1")
    env.setenv("LOCAL_WORLD_SIZE", "2")
    assert threads.thread_choice(None) == (1, "OMP_NUM_THREADS (torchrun)")
    assert "torchrun sets" in threads.SOURCES["OMP_NUM_THREADS (torchrun)"]
    env.setenv("OMP_NUM_THREADS", "")  # set empty: torchrun leaves it, the share of the cores
    assert threads.thread_choice(None)[1] == "cores"
