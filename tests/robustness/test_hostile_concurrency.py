"""Processes that share a folder or a machine: two distributed jobs into one --output, a glob
over the output folder itself, two benchmarks or trainings into one folder, --resume through a
symbolic link, the memory of the metrics, and more threads than cores. Each case ended with exit 0
and outputs that were lost, mixed or misdescribed, or ran without a word."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mrirecon.io.output_lock import _open_lock_file, job_identity, lock_output
from mrirecon.pipeline.definitions import PIPELINES
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.schema import config_sha256
from tests.helpers import cli_exit, simulated_ct_dir
from tests.robustness.test_hostile_outputs import mri_config

fcntl = pytest.importorskip("fcntl")
LAUNCHER = ("TORCHELASTIC_RUN_ID", "SLURM_JOB_ID", "MASTER_ADDR", "MASTER_PORT")


def _prov(out: Path, suffix: str = "") -> dict:
    return json.loads((out / f"provenance{suffix}.json").read_text())


def _main(argv: list[str]) -> int:
    return cli_exit(*argv)


@pytest.fixture
def no_launcher(monkeypatch):
    for var in (*LAUNCHER, "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


# ---- F1: two distributed jobs into one --output ----------------------------------------------


def test_a_rank_of_another_job_is_refused_naming_it(mri_file, tmp_path, no_launcher):
    """Job A (2 ranks) writing; rank 2 of job B (3 ranks) took `.lock.rank2` and `.lock` shared
    and ran beside it with exit 0: each job's metrics described the other's images, and B's
    rank 0 would have deleted A's rank files."""
    out = tmp_path / "out"
    out.mkdir()
    config = mri_config()
    held = lock_output(out, 0, 2, job=config_sha256(config))  # job A's rank 0, still running
    try:
        assert "world size 2" in (out / ".lock.rank0").read_text()
        with pytest.raises(ValueError, match=r"--output .*out: another mrirecon run \(pid "
                                             rf"{os.getpid()} on .*: rank 0 of another "
                                             r"distributed job \(world size 2, config \w+; this "
                                             r"one: world size 3, config \w+\)\) is writing"):
            run_pipeline(config, [str(mri_file)], out, progress=False, rank=2, world=3)
        assert not (out / "provenance.rank2.json").exists()
        # a rank of job A itself joins
        assert run_pipeline(config, [str(mri_file)], out, progress=False, rank=1, world=2) == 0
        # the command line: exit 2 and the refusal, nothing run
        no_launcher.setenv("RANK", "2")
        no_launcher.setenv("WORLD_SIZE", "3")
        assert _main(["run", "mri_cs", "--input", str(mri_file), "--output", str(out),
                      "--set", "reconstruct.method=zero_filled_rss",
                      "--set", "reconstruct.params={}", "--no-progress"]) == 2
    finally:
        held.close()
    assert not (out / "provenance.rank2.json").exists()


def test_a_new_job_beside_a_straggler_rank_is_told_apart_by_the_launcher(mri_file, tmp_path,
                                                                         no_launcher):
    """Same world size, a new job while a rank of the old one still runs: told apart by
    torchrun's run id (or Slurm's job id, the master's address and port) or another config;
    without any of them a job of the same world size and config is taken for the same job."""
    out = tmp_path / "out"
    out.mkdir()
    config = mri_config()
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "job-a")
    held = lock_output(out, 1, 2, job=config_sha256(config))  # job A's straggler rank 1
    try:
        no_launcher.setenv("TORCHELASTIC_RUN_ID", "job-b")
        with pytest.raises(ValueError, match=r"rank 1 of another distributed job \(world size 2, "
                                             r"TORCHELASTIC_RUN_ID=job-a, config \w+; this one: "
                                             r"world size 2, TORCHELASTIC_RUN_ID=job-b"):
            run_pipeline(config, [str(mri_file)], out, progress=False, rank=0, world=2)
    finally:
        held.close()
    no_launcher.delenv("TORCHELASTIC_RUN_ID")
    held = lock_output(out, 1, 2, job=config_sha256(config))  # no launcher's identity
    try:
        other = mri_config("export.formats=[hdf5]")  # another config: another job
        with pytest.raises(ValueError, match=r"rank 1 of another distributed job \(world size 2, "
                                             r"config \w+; this one: world size 2, config \w+\)"):
            run_pipeline(other, [str(mri_file)], out, progress=False, rank=0, world=2)
        # the same world size and config without a launcher's identity: taken for one job
        assert job_identity(2, "abc") == "world size 2, config abc"
        assert run_pipeline(config, [str(mri_file)], out, progress=False, rank=0, world=2) == 0
    finally:
        held.close()


def test_ranks_of_one_job_still_run_together_and_lock_files_of_ended_runs_are_ignored(
        mri_file, tmp_path, no_launcher):
    out = tmp_path / "out"
    out.mkdir()
    (out / ".lock.rank5").write_text("pid 1 on gone\nworld size 9\n")  # a finished job's file
    config = mri_config()
    held = lock_output(out, 1, 2, job=config_sha256(config))
    try:
        assert run_pipeline(config, [str(mri_file)], out, progress=False, rank=0, world=2) == 0
    finally:
        held.close()
    assert _prov(out, ".rank0")["status"] == "complete"
    plain = lock_output(out, 0, 1)  # a plain run holds the folder: ranks are refused
    try:
        with pytest.raises(ValueError, match=r"another mrirecon run \(pid \d+ on [^:]*\) is "):
            run_pipeline(config, [str(mri_file)], out, progress=False, rank=1, world=2)
    finally:
        plain.close()


# ---- F2: a glob over the folder the run writes into ------------------------------------------


def test_a_glob_over_the_output_folder_keeps_the_users_files_as_inputs(mri_file, tmp_path):
    """`--input 'IN/*.h5' --output IN` dropped every match under IN: "0 input(s)", exit 0,
    status complete; with --prune it deleted every earlier output."""
    folder = tmp_path / "IN"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    config = mri_config()
    assert run_pipeline(config, [str(folder / "*.h5")], folder, progress=False) == 0
    assert [f["name"] for f in _prov(folder)["files"]] == ["a"]
    assert (folder / "reconstructions" / "a.h5").is_file()
    # the same glob with --prune: the earlier outputs are this run's, nothing is deleted
    assert run_pipeline(config, [str(folder / "*.h5")], folder, progress=False,
                        replace_others=True) == 0
    assert (folder / "reconstructions" / "a.h5").is_file()
    assert [f["status"] for f in _prov(folder)["files"]] == ["ok"]
    # a pattern that reaches into the run's own folders takes the user's files only
    (folder / "sub").mkdir()
    shutil.copy(mri_file, folder / "sub" / "b.h5")
    assert run_pipeline(config, [str(folder / "*" / "*.h5")], folder, progress=False,
                        replace_others=True) == 0
    assert [f["name"] for f in _prov(folder)["files"]] == ["b"]  # not reconstructions/a.h5


def test_a_pattern_matching_only_the_runs_own_outputs_is_refused(mri_file, tmp_path, capsys):
    folder = tmp_path / "IN"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    assert run_pipeline(mri_config(), [str(folder)], folder, progress=False) == 0
    with pytest.raises(ValueError, match=r"input '.*reconstructions/\*\.h5' matches only what "
                                         r"this run writes into --output .*IN \(1 match\(es\): "
                                         r".*a\.h5\): a run's outputs are never its inputs"):
        run_pipeline(mri_config(), [str(folder / "reconstructions" / "*.h5")], folder,
                     progress=False)
    assert _main(["run", "mri_cs", "--input", str(folder / "reconstructions" / "*.h5"),
                  "--output", str(folder), "--no-progress"]) == 2
    assert "matches only what this run writes" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"no inputs \(inputs=\[\]\)"):
        run_pipeline(mri_config(), [], tmp_path / "empty", progress=False)
    assert not (tmp_path / "empty").exists()


# ---- F3 / F4: two benchmarks or two trainings into one folder ---------------------------------


def test_a_second_bench_into_one_output_is_refused(tmp_path, capsys):
    """Two `mrirecon bench` into one --output each rewrote results.jsonl from what it had read:
    one process's records were lost, exit 0 for both."""
    data = simulated_ct_dir(tmp_path / "ct", views=60, size=32, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["bench", "--no-progress", "--challenge", "ct", "--data", str(data), "--output",
            str(out), "--accelerations", "2", "--methods", "fbp"]
    held = lock_output(out, 0, 1, who="mrirecon bench")  # the first bench, still running
    try:
        assert _main(argv) == 2
        err = capsys.readouterr().err
        assert (f"--output {out}: another mrirecon run (pid {os.getpid()} on "
                in err) and ", mrirecon bench) is writing into this folder" in err
        assert not (out / "results.jsonl").exists()
    finally:
        held.close()
    assert _main(argv) == 0  # released
    assert (out / "results.jsonl").is_file()
    fresh = tmp_path / "fresh"  # refused before anything was written: no folder left
    assert _main(["bench", "--no-progress", "--challenge", "ct", "--data", str(data), "--output",
                  str(fresh), "--accelerations", "2", "--methods", "nonsense"]) == 2
    assert not fresh.exists()


def test_a_library_bench_into_a_held_output_is_refused(tmp_path):
    """The lock was taken by the command line only: run_ct_bench called from a notebook wrote
    results.jsonl beside a running `mrirecon bench` into the same folder."""
    from mrirecon.bench.ct import run_ct_bench

    data = simulated_ct_dir(tmp_path / "ct", views=60, size=32, seed=3)
    out = tmp_path / "out"
    out.mkdir()
    held = lock_output(out, 0, 1, who="mrirecon bench")
    try:
        with pytest.raises(ValueError, match="is writing into this folder"):
            run_ct_bench(data, [2], "fbp", output_dir=out, progress=False)
        assert not (out / "results.jsonl").exists()
    finally:
        held.close()
    table = run_ct_bench(data, [2], "fbp", output_dir=out, progress=False)
    assert table.rows and (out / "results.jsonl").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".lock")) == [".lock"]


def test_a_second_training_into_one_output_dir_is_refused(tmp_path):
    """Two `mrirecon train` into one output_dir interleaved train_log.csv and left one run's
    config.yaml beside the other's weights and card."""
    from mrirecon.training.run import train_from_config

    data = simulated_ct_dir(tmp_path / "ct", views=60, size=32, seed=4)
    out = tmp_path / "run"
    cfg = yaml.safe_load((PIPELINES / "train_primal_dual_ct_sim.yaml").read_text())
    cfg.update({"output_dir": str(out), "device": "cpu", "tensorboard": False, "val_every": 0,
                "log_every": 1, "checkpoint_every": 2})
    cfg["data"].update({"train": str(data), "val": str(data)})
    cfg["model"]["params"].update({"iterations": 2, "features": 4})
    cfg["optim"]["max_steps"] = 2
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out.mkdir()
    held = lock_output(out, 0, 1, who="mrirecon train")
    try:
        with pytest.raises(ValueError, match=rf"output_dir {out}: another mrirecon run \(pid "
                                             rf"{os.getpid()} on .*, mrirecon train\) is writing "
                                             r"into this folder; wait for it to finish or pass "
                                             r"another output_dir"):
            train_from_config(path, progress=False)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing written
    finally:
        held.close()
    assert train_from_config(path, progress=False).steps == 2  # released
    assert (out / "model.pt").is_file()


# ---- F5: --resume through a symbolic link ------------------------------------------------------


def test_resume_through_a_symlinked_input_folder_skips_finished_inputs(mri_file, tmp_path, caplog):
    """The same folder reached through a link: every input was reprocessed ("the outputs named
    x came from IN/x.h5; processing LINK/x.h5 replaces them")."""
    folder = tmp_path / "data"
    folder.mkdir()
    shutil.copy(mri_file, folder / "a.h5")
    link = tmp_path / "link"
    link.symlink_to(folder, target_is_directory=True)
    out = tmp_path / "out"
    assert run_pipeline(mri_config(), [str(folder)], out, progress=False) == 0
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(mri_config(), [str(link)], out, progress=False, resume=True) == 0
    assert [f["status"] for f in _prov(out)["files"]] == ["skipped"]
    assert "replaces them" not in caplog.text


# ---- F6: the metrics of a volume without whole-volume float64 copies --------------------------


def test_volume_metrics_make_no_whole_volume_float64_copy(monkeypatch):
    """`evaluate` scored `reference.double()` against `recon.double()` and the metrics built
    whole-volume float64 temporaries: 7x a float32 volume at the peak (452 MiB for 128 slices
    of 362 x 362). Now the sums run over chunks of slices, with fastMRI's numbers."""
    from torch.overrides import TorchFunctionMode

    from mrirecon.metrics import metrics
    from mrirecon.pipeline.volume import evaluate

    monkeypatch.setattr(metrics, "CHUNK_ELEMENTS", 2 * 60 * 50)  # chunks of 2 slices
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(24, 60, 50, generator=g)
    rec = ref + 0.05 * torch.rand(24, 60, 50, generator=g)
    big = []

    class Allocations(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if (isinstance(t, torch.Tensor) and t.dtype == torch.float64 and not t._is_view()
                        and t.numel() >= ref.numel() // 4):
                    big.append((getattr(func, "__name__", str(func)), tuple(t.shape)))
            return out

    with Allocations():
        scores = evaluate(ref, rec)
    assert big == []
    g64, p64 = ref.double().numpy(), rec.double().numpy()
    nmse = np.sum((g64 - p64) ** 2) / np.sum(g64**2)
    psnr = 10 * np.log10(g64.max() ** 2 / np.mean((g64 - p64) ** 2))
    assert abs(scores["nmse"] - nmse) <= 1e-14 * nmse
    assert abs(scores["psnr"] - psnr) <= 1e-13 * psnr
    fe = pytest.importorskip("fastmri.evaluate")
    assert abs(scores["ssim"] - float(np.asarray(fe.ssim(g64, p64)).reshape(-1)[0])) <= 1e-12


# ---- F7: more threads than cores -------------------------------------------------------------


def test_more_threads_than_cores_is_said(monkeypatch, tmp_path, caplog):
    """`--threads 64` on 2 cores ran 2-3x slower than 2 threads, without a word."""
    from mrirecon import threads

    for var in ("MRIRECON_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        assert threads.thread_count(2, cgroup_root=tmp_path) == 2
        assert caplog.text == ""
        assert threads.thread_count(64, cgroup_root=tmp_path) == 64  # still what was asked
    assert ("--threads 64 is more than the 2 core(s) this process may use; its threads take "
            "turns on them, which is slower than 2 thread(s): pass --threads 2 or fewer"
            in caplog.text)
    caplog.clear()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: 2 processes share the 2 cores
    monkeypatch.setenv("MRIRECON_THREADS", "2")
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        assert threads.thread_count(cgroup_root=tmp_path) == 2
    assert ("MRIRECON_THREADS 2 is more than the 1 core(s) this process may use (its share of 2 "
            "among LOCAL_WORLD_SIZE=2 processes on this node)" in caplog.text)


@pytest.mark.parametrize("env_a, env_b", [
    ({"TORCHELASTIC_RUN_ID": "a"}, {"TORCHELASTIC_RUN_ID": "b"}),
    ({"SLURM_JOB_ID": "101"}, {"SLURM_JOB_ID": "102"}),
    ({"MASTER_ADDR": "n1", "MASTER_PORT": "29500"}, {"MASTER_ADDR": "n1", "MASTER_PORT": "29501"}),
])
def test_each_launcher_identity_tells_two_jobs_apart(monkeypatch, env_a, env_b):
    """Two jobs of one world size and config differ by any one launcher identity the docstring
    lists (torchrun's run id, Slurm's job id, master address:port); the same environment gives
    the same identity (the ranks of one job join)."""
    def ident(env):
        for var in LAUNCHER:
            monkeypatch.delenv(var, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        return job_identity(2, "abcdef")

    assert ident(env_a) != ident(env_b)
    assert ident(env_a) == ident(env_a)
    assert ident({}) == "world size 2, config abcdef"


# ---- links planted in an output folder -------------------------------------------------------


@pytest.mark.parametrize("planted", [".lock", ".lock.rank0"])
def test_a_link_planted_at_a_lock_file_is_refused_not_written_through(planted, mri_file,
                                                                       tmp_path, no_launcher,
                                                                       capsys):
    """The lock was opened with open(path, "a+") and truncated for the holder's line: a link at
    OUT/.lock, planted by anyone who can write into the folder, made the run wipe the file it
    pointed to and write "pid N on host" into it, exit 0."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / planted).symlink_to(victim)
    if planted.endswith("rank0"):
        no_launcher.setenv("RANK", "0")
        no_launcher.setenv("WORLD_SIZE", "2")
    assert _main(["run", "mri_cs", "--input", str(mri_file), "--output", str(out),
                  "--set", "reconstruct.method=zero_filled_rss",
                      "--set", "reconstruct.params={}", "--no-progress"]) == 2
    assert f"{out / planted}: the output folder's lock file is a symbolic link" in (
        capsys.readouterr().err)
    assert victim.read_text() == "keep me\n"
    assert not (out / "provenance.json").exists()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match=r"lock file is not a regular file"):
        _open_lock_file(fifo)


def test_a_log_appended_to_refuses_a_link_planted_at_its_name(tmp_path):
    """train_log.csv and the bench table are appended to (O_APPEND): through a link planted at
    their name, as the atomic writer never writes."""
    from mrirecon.io.atomic import append_text

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    log_file = tmp_path / "train_log.csv"
    log_file.symlink_to(victim)
    with pytest.raises(OSError, match=rf"{log_file}: is a symbolic link"):
        append_text(log_file, "step,loss\n")
    assert victim.read_text() == "keep me\n"
