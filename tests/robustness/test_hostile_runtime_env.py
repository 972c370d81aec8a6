"""A hostile runtime environment: torchrun variables whose peers never come, environment
variables that are no numbers, optional packages that are not installed, an ``output_dir`` that
is a file. Each is refused at once (or warned about) naming the variable, key or package.

The rendezvous tests run ``mrirecon train`` in subprocesses with a hard timeout, so that a
regression (a rank waiting 30 minutes for its peers, deaf to SIGTERM) fails them instead of
hanging the suite."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_exit, tiny_modl_config, tiny_mri_folders

#: hard limit of one ``mrirecon train`` subprocess that must end by itself (start-up ~2 s)
HARD_S = 90
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "MRIRECON_RENDEZVOUS_TIMEOUT")


@pytest.fixture(scope="module")
def train_config(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rt_train")
    folders = tiny_mri_folders(root)
    return tiny_modl_config(root, folders["train"], folders["val"], root / "unused")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**launcher: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    env.update(OMP_NUM_THREADS="1", **launcher)
    return env


def _train(config: Path, out: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mrirecon.cli", "--threads", "1", "train",
                             str(config), "--set", f"output_dir={out}"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"mrirecon train still running after {timeout} s")
    return proc.returncode, err


# ---- finding 1: a rendezvous whose peers never come --------------------------------------------


@pytest.mark.parametrize("launcher, message", [
    ({"RANK": "3", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"},
     "rank 3 of world size 2 (RANK / WORLD_SIZE in the environment?): need 0 <= RANK < WORLD_SIZE"),
    ({"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"},
     "WORLD_SIZE=2 is set in the environment but RANK is not"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "WORLD_SIZE=2 is set in the environment but MASTER_ADDR is not"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     "MASTER_PORT in the environment must be a port number in [1, 65535], got 99999"),
])
def test_a_launch_environment_that_cannot_meet_is_refused_at_once(train_config, tmp_path,
                                                                  launcher, message):
    """`RANK=3 WORLD_SIZE=2` (which `mrirecon run` refuses) and a missing MASTER_ADDR waited in
    torch's rendezvous for 30 minutes, deaf to SIGTERM and Ctrl-C."""
    launcher = {"MASTER_PORT": str(_free_port()), **launcher}
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc, err = _finish(_train(train_config, out, _env(**launcher)), HARD_S)
    assert rc == 2, err
    assert message in err
    assert time.monotonic() - t0 < HARD_S
    assert not out.exists()


def test_a_rank_whose_peer_never_comes_gives_up_after_the_timeout(train_config, tmp_path):
    out = tmp_path / "out"
    port = _free_port()
    proc = _train(train_config, out, _env(RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                          MASTER_PORT=str(port), MRIRECON_RENDEZVOUS_TIMEOUT="2"))
    rc, err = _finish(proc, HARD_S)
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert (f"error: rank 0 of 2: the rendezvous at MASTER_ADDR:MASTER_PORT=127.0.0.1:{port} "
            "failed within 2 s (MRIRECON_RENDEZVOUS_TIMEOUT)") in line
    assert not out.exists()  # met before the output_dir is created and locked


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_sigterm_stops_a_rank_waiting_for_its_peers(train_config, tmp_path):
    """Only SIGKILL stopped it: Python's SIGTERM handler never ran inside torch's C++ wait."""
    out = tmp_path / "out"
    port = _free_port()
    proc = _train(train_config, out, _env(RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                          MASTER_PORT=str(port)))  # the default timeout: minutes
    try:
        deadline = time.monotonic() + HARD_S
        while not _listening(port):  # rank 0 hosts the store: it is in the rendezvous now
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the rendezvous never started"
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail("mrirecon train ignored SIGTERM during the rendezvous")
        assert proc.returncode == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert not out.exists()


def test_two_ranks_that_meet_still_train(train_config, tmp_path):
    out = tmp_path / "out"
    port = str(_free_port())
    procs = [_train(train_config, out, _env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                                            LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                            MASTER_PORT=port)) for r in (0, 1)]
    results = [_finish(p, 300) for p in procs]
    assert [rc for rc, _ in results] == [0, 0], results
    assert (out / "model.pt").is_file()


# ---- finding 6 and C4: thread variables that are no numbers ------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("MRIRECON_THREADS", "OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.mark.parametrize("value", ["abc", "2.0", "-x"])
def test_local_world_size_that_is_no_integer_names_the_variable(clean_env, tmp_path, value):
    """'abc' broke every command with "invalid literal for int() with base 10: 'abc'"."""
    from mrirecon import threads

    clean_env.setenv("LOCAL_WORLD_SIZE", value)
    with pytest.raises(ValueError, match=rf"^LOCAL_WORLD_SIZE in the environment must be an "
                                         rf"integer, got '{value}'$"):
        threads.thread_count(cgroup_root=tmp_path)
    clean_env.setenv("LOCAL_WORLD_SIZE", " ")  # blank: unset, as before
    assert threads.thread_count(cgroup_root=tmp_path) >= 1


def test_local_rank_that_is_no_integer_names_the_variable(monkeypatch, tmp_path):
    """A trainer on cuda read LOCAL_RANK with int(): 'abc' failed with "invalid literal for
    int() with base 10: 'abc'", naming no variable (LOCAL_WORLD_SIZE and RANK were named)."""
    from torch import nn

    from mrirecon.training import trainer
    from mrirecon.training.config import DataConfig, ModelConfig, TrainConfig

    for var in LAUNCHER:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "abc")
    monkeypatch.setattr(trainer, "resolve_device", lambda *a, **k: "cuda")  # no GPU needed
    cfg = TrainConfig(name="r", output_dir=str(tmp_path / "r"), data=DataConfig(train="", val=""),
                      model=ModelConfig("modl", {}), device="cuda", tensorboard=False)
    with pytest.raises(ValueError, match=r"^LOCAL_RANK in the environment must be an integer, "
                                         r"got 'abc'$"):
        trainer.Trainer(cfg, nn.Linear(1, 1), [], loss_fn=None)


@pytest.mark.parametrize("value", ["--3", "²", "1.5"])
def test_mrirecon_threads_that_is_no_integer_names_the_variable(clean_env, tmp_path, value):
    from mrirecon import threads

    clean_env.setenv("MRIRECON_THREADS", value)
    with pytest.raises(ValueError, match=rf"^MRIRECON_THREADS must be an integer >= 1, got '{value}'$"):
        threads.thread_count(cgroup_root=tmp_path)


def test_the_cli_refuses_a_bad_local_world_size_in_one_line(clean_env, capsys):
    clean_env.setenv("LOCAL_WORLD_SIZE", "abc")
    from mrirecon.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--data", "nowhere", "--output", "nowhere"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: LOCAL_WORLD_SIZE in the environment must be an integer, got 'abc'")


@pytest.mark.parametrize("value", ["-2", "garbage", "2,x"])
def test_omp_num_threads_that_is_no_count_is_ignored_with_a_warning(clean_env, tmp_path, caplog,
                                                                     value):
    """-2 and 'garbage' were ignored without a word (libgomp's own line at most), while
    MRIRECON_THREADS=-3 is refused."""
    from mrirecon import threads

    clean_env.setenv("OMP_NUM_THREADS", value)
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        n = threads.thread_count(cgroup_root=tmp_path)
    assert n == threads.available_cpus(tmp_path)  # the cores, as without the variable
    assert f"OMP_NUM_THREADS={value!r} in the environment is not a thread count" in caplog.text


def test_an_openmp_list_takes_its_outermost_count(clean_env, tmp_path, caplog):
    from mrirecon import threads

    clean_env.setenv("OMP_NUM_THREADS", "1,1")
    with caplog.at_level(logging.WARNING, logger="mrirecon.threads"):
        assert threads.thread_count(cgroup_root=tmp_path) == 1
    assert caplog.text == ""


# ---- findings 4 and 5: optional packages that are not installed --------------------------------


@pytest.fixture
def without(monkeypatch):
    """``without("bm3d", ...)``: those packages look uninstalled to find_spec (as for
    ``pip uninstall``); the modules already imported stay."""
    real = importlib.util.find_spec

    def make(*names: str):
        def find_spec(name, package=None):
            if name.split(".")[0] in names:
                return None
            return real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)

    return make


def test_pnp_bm3d_without_bm3d_is_named_not_unknown(without, mri_file, tmp_path, capsys):
    """It was "unknown method 'pnp_bm3d' (did you mean 'pnp_nlm'?)" in run, bench and
    recon.run: the registry left it out."""
    import torch

    from mrirecon import recon

    without("bm3d")
    assert "pnp_bm3d" in recon.available()
    hint = "pnp_bm3d needs the Python package bm3d, which is not installed (pip install bm3d)"
    with pytest.raises(ImportError, match=rf"^{hint}$".replace("(", r"\(").replace(")", r"\)")):
        recon.run("pnp_bm3d", torch.ones(2, 8, 8, dtype=torch.complex64), None)
    out = tmp_path / "out"
    assert cli_exit("run", "mri_cs", "-i", str(mri_file), "-o", str(out), "--no-progress",
                    "--set", "reconstruct.method=pnp_bm3d") == 2
    err = capsys.readouterr().err
    assert f"reconstruct.method: {hint}, or choose another method" in err
    assert not out.exists()
    assert cli_exit("bench", "--data", str(mri_file.parent), "-o", str(out), "--methods",
                    "zero_filled,pnp_bm3d", "--accelerations", "4", "--no-progress") == 2
    assert hint in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


@pytest.mark.parametrize("blocked, sets, key, line", [
    ("pydicom", [], "export.formats",
     "dicom needs the Python package pydicom, which is not installed: pip install pydicom, or "
     "remove dicom from export.formats"),
    ("nibabel", [], "export.formats", "nifti needs the Python package nibabel"),
    ("matplotlib", [], "export.formats", "png needs the Python package matplotlib"),
    ("pywt", [], "reconstruct.method",
     "l1_wavelet needs the Python package PyWavelets, which is not installed (pip install "
     "PyWavelets)"),
    ("skimage", ["reconstruct.method=pnp_nlm", "reconstruct.params={}"], "reconstruct.method",
     "pnp_nlm needs the Python package scikit-image"),
])
def test_a_missing_package_of_an_enabled_stage_is_refused_at_load(without, mri_file, tmp_path,
                                                                  blocked, sets, key, line):
    """Each input was read and reconstructed (~1.4 s each), then failed with
    "ModuleNotFoundError: ... pydicom" and its metrics were discarded."""
    from mrirecon.core.config import ConfigError
    from mrirecon.pipeline.definitions import load_pipeline

    without(blocked)
    with pytest.raises(ConfigError) as exc:
        load_pipeline("mri_cs", sets)
    assert exc.value.key == key
    assert line in str(exc.value)
    # without what needs it, the pipeline loads
    if key == "export.formats":
        load_pipeline("mri_cs", [*sets, "export.formats=[hdf5]"])


def test_a_missing_import_at_the_top_level_is_one_line_naming_the_package(monkeypatch, capsys):
    """A missing yaml was a raw traceback (run, bench, train), a missing tqdm or nilearn
    "internal error: ... (report it)"."""
    import sys

    from mrirecon import cli
    from mrirecon.recon import registry

    def absent(*names):  # as if these packages were not installed
        for name in names:
            monkeypatch.delitem(sys.modules, name, raising=False)
        real = registry.installed
        monkeypatch.setattr(registry, "installed", lambda m: m not in names and real(m))

    def build_parser(command=None):
        raise ModuleNotFoundError("No module named 'yaml'", name="yaml")

    absent("yaml")
    monkeypatch.setattr(cli, "build_parser", build_parser)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "mri_cs", "-i", "x", "-o", "y"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "mrirecon: error: the Python package pyyaml (import yaml), which this command needs, is "
        "not installed: pip install pyyaml")
    monkeypatch.undo()

    def cmd(args):
        raise ModuleNotFoundError("No module named 'nilearn.datasets'", name="nilearn.datasets")

    absent("nilearn")
    monkeypatch.setattr(cli, "cmd_run", cmd)  # the command's own import fails
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "mri_cs", "-i", "x", "-o", "y"])
    assert exc.value.code == 2
    assert "error: the Python package nilearn (import nilearn), which this command needs, is not " \
           "installed: pip install nilearn" in capsys.readouterr().err
    # an import of mrirecon itself that fails is a bug: an internal error, as before
    assert cli.missing_package(ModuleNotFoundError("x", name="mrirecon.nothing")) is None
    monkeypatch.undo()
    # a submodule missing from an installed package is a broken install, not "pip install scipy"
    assert cli.missing_package(ModuleNotFoundError("x", name="scipy.no_such_submodule")) is None


# ---- C3: an output_dir that is a file ----------------------------------------------------------


@pytest.mark.parametrize("below", [False, True])
def test_train_into_a_file_names_output_dir(train_config, tmp_path, below):
    """"OUT/afile.txt: File exists" named neither output_dir nor that it is a file."""
    from mrirecon.core.config import ConfigError
    from mrirecon.training.run import train_from_config

    afile = tmp_path / "afile.txt"
    afile.write_text("a user file")
    out = afile / "sub" if below else afile
    with pytest.raises(ConfigError, match=rf"output_dir: {afile} is a file, not a folder"
                                          + (r" \(it is above .*sub\)" if below else "")) as exc:
        train_from_config(train_config, [f"output_dir={out}"])
    assert exc.value.key == "output_dir"
    assert str(exc.value).startswith("--set over ")
    assert afile.read_text() == "a user file"


def test_a_dependency_missing_inside_an_installed_package_names_that_package(
        tmp_path, monkeypatch, capsys):
    """nilearn 0.10.0 and pydicom 2.4 import pkg_resources, which setuptools 81 dropped; the CLI
    said "pip install pkg_resources", which installs nothing that helps. The package whose own
    code made the import is named, to upgrade."""
    from mrirecon import cli

    site = tmp_path / "site"  # an installed distribution: its files are listed in its RECORD
    (site / "fakescan").mkdir(parents=True)
    (site / "fakescan" / "__init__.py").write_text(
        "def load_sources():\n    import no_such_module_f17  # noqa: F401\n")
    info = site / "fakescan-2.4.4.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakescan\nVersion: 2.4.4\n")
    (info / "RECORD").write_text("fakescan/__init__.py,,\nfakescan-2.4.4.dist-info/METADATA,,\n"
                                 "fakescan-2.4.4.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(__import__("sys").modules, "fakescan", raising=False)

    def cmd(args):
        import fakescan

        fakescan.load_sources()

    monkeypatch.setattr(cli, "cmd_run", cmd)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "mri_cs", "-i", "x", "-o", "y"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().endswith(
        "error: the installed package fakescan 2.4.4 failed to import its dependency "
        "no_such_module_f17, which is missing: upgrade it (pip install --upgrade fakescan)")

    # the same import made by code that no installed package owns (mrirecon's, a script's):
    # the missing module itself is what to install
    def own(args):
        import no_such_module_f17  # noqa: F401

    monkeypatch.setattr(cli, "cmd_run", own)
    with pytest.raises(SystemExit):
        cli.main(["run", "mri_cs", "-i", "x", "-o", "y"])
    assert "the Python package no_such_module_f17 (import no_such_module_f17), which this " \
           "command needs, is not installed" in capsys.readouterr().err
