"""The command line's two streams: standard output holds only what a command prints for a
program to read (``train KIND``'s JSON summary, ``train CONFIG``'s ``model.pt`` path, once per
job), standard error only log records, each line starting with its level (one log set-up for
every command, :func:`mrirecon.cli.log_to_stderr`, made before the thread set-up can warn);
``--debug`` lowers the ``mrirecon`` loggers only, not the root (third-party DEBUG floods)."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, tiny_modl_config, tiny_mri_folders

RECORD = re.compile(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "MRIRECON_THREADS")

#: a ``mrirecon run`` whose command is replaced by one that logs a record of each kind: what
#: reaches standard error is the log set-up's doing alone (no input is read)
PROBE = """
import logging, sys
from mrirecon import cli

def probe(args):
    logging.getLogger("matplotlib.font_manager").debug("a third-party debug record")
    logging.getLogger("mrirecon.probe").debug("a mrirecon debug record")
    logging.getLogger("mrirecon.probe").info("a mrirecon info record")
    return 0

cli.cmd_run = probe
sys.exit(cli.main(sys.argv[1:]))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    env.pop("TQDM_DISABLE", None)
    env.update(extra)
    return env


def _mrirecon(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mrirecon", *args], capture_output=True,
                          text=True, cwd=cwd, env=_env(**env), timeout=300)


def _probe(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    return subprocess.run([sys.executable, str(script), *args, "run", "mri_cs", "--input",
                           str(tmp_path / "in.h5"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=tmp_path, env=_env(**env),
                          timeout=120)


def _records(stderr: str) -> list[str]:
    """The lines of ``stderr``, each checked to be a log record starting with its level."""
    lines = stderr.splitlines()
    assert lines and all(RECORD.match(line) for line in lines), stderr[-2000:]
    return lines


# ---- finding 1: train KIND -----------------------------------------------------------------


def test_train_gmm_prints_only_its_json_summary_on_stdout(tmp_path):
    """Was: "EM   0: mean log-likelihood …" (one line per iteration) and "wrote g.pt …" on
    stdout ahead of the JSON, so ``json.loads(stdout)`` failed; stderr empty."""
    out = tmp_path / "g.pt"
    done = _mrirecon(["--threads", "1", "train", "gmm", "--out", str(out), "--components", "2",
                      "--mri-volumes", "1", "--mri-slices", "1", "--ct-samples", "1", "--size",
                      "32", "--patches-per-image", "40", "--iterations", "3"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["iterations"] == 3 and summary["steps"] == 3
    lines = _records(done.stderr)
    em = [line for line in lines if line.startswith("INFO mrirecon.train: EM ")]
    assert len(em) == 3, lines
    assert any(line.startswith("INFO ") and f"wrote {out}" in line for line in lines), lines


def _prints(path: Path) -> list[str]:
    """``print(...)`` calls and ``print`` given as a default value (``log=print``) in ``path``."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "print" and not any(k.arg == "file" for k in node.keywords)):
            found.append(f"{path.name}:{node.lineno}: print(...)")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
            found += [f"{path.name}:{d.lineno}: default print" for d in defaults
                      if isinstance(d, ast.Name) and d.id == "print"]
    return found


def test_no_training_function_prints_on_stdout():
    """The functions behind ``train denoiser|prior|gmm|perceptual|radial|modl|varnet|staged_ct|
    primal_dual_ct`` log their progress (the ``mrirecon.train`` logger), so the command's
    stdout is its JSON summary alone. Was: prints in fit_gmm, denoiser, denoiser_prior,
    perceptual, radial, modl_deploy, and ``log=print`` in ct_staged and ct_primal_dual."""
    folder = ROOT / "mrirecon" / "training"
    assert [p for path in sorted(folder.glob("*.py")) for p in _prints(path)] == []


def test_train_radial_progress_reaches_the_log_not_stdout(tmp_path, capsys, caplog):
    """A second subcommand run for real (in this process): its summary is the only stdout."""
    from mrirecon import cli

    caplog.set_level("INFO", logger="mrirecon")
    argv = ["train", "radial", "--out", str(tmp_path / "r"), "--steps", "2", "--size", "32",
            "--spokes", "16", "--volumes", "1", "--slices", "1", "--threads", "1"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    json.loads(out)  # was: "data: 1 train / … held-out slices …" and "step 0 loss …" before it
    logged = [r.getMessage() for r in caplog.records if r.name == "mrirecon.train"]
    assert any(m.startswith("data: ") for m in logged) and any(m.startswith("step ") for m in logged)


# ---- finding 5: train CONFIG's log lines start with their level ----------------------------


def _tiny_config(tmp_path: Path, out: Path) -> Path:
    folders = tiny_mri_folders(tmp_path)  # 4 training slices; batch_size 50 is warned about
    return tiny_modl_config(tmp_path, folders["train"], folders["val"], out, max_steps=2,
                            val_every=2, checkpoint_every=100,
                            optim={"lr": 1e-3, "max_steps": 2, "batch_size": 50})


def test_train_config_log_lines_start_with_their_level(tmp_path):
    """Was: "2026-… 12:29:57,051 mrirecon.training.run: RuntimeWarning: …": ``grep '^WARNING'``
    found 0 of the log's 2 warnings."""
    cfg = _tiny_config(tmp_path, tmp_path / "out")
    done = _mrirecon(["--threads", "1", "train", str(cfg)], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"{tmp_path / 'out' / 'model.pt'}\n"
    lines = _records(done.stderr)
    warned = [line for line in lines if "optim.batch_size: 50 is more than" in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING mrirecon.training.run: "), lines


# ---- finding 6: the thread set-up's warnings are log records -------------------------------


@pytest.mark.parametrize("case", ["threads", "omp"])
def test_thread_warnings_are_log_records(tmp_path, case):
    """Was: the bare message (``logging.lastResort``): configure_threads warned before any
    command had set up logging."""
    if case == "threads":  # more threads than this machine has cores, wherever it runs
        done = _probe(tmp_path, "--threads", str(4 * (os.cpu_count() or 1)))
        text = "is more than the"
    else:
        done = _probe(tmp_path, OMP_NUM_THREADS="garbage")
        text = "OMP_NUM_THREADS='garbage' in the environment is not a thread count"
    assert done.returncode == 0, done.stderr[-2000:]
    warned = [line for line in done.stderr.splitlines() if text in line]
    assert len(warned) == 1 and warned[0].startswith("WARNING mrirecon.threads: "), done.stderr
    assert "INFO mrirecon.probe: a mrirecon info record" in done.stderr.splitlines()


# ---- finding 9: --debug lowers mrirecon's loggers only --------------------------------------


def test_debug_shows_mrirecon_debug_records_and_no_third_party_flood(tmp_path):
    """Was: the root logger at DEBUG: 257 of 310 lines of a 3-input ``--debug`` run from
    ``matplotlib.font_manager``."""
    done = _probe(tmp_path, "--threads", "1", "--debug")
    assert done.returncode == 0, done.stderr[-2000:]
    lines = _records(done.stderr)
    assert "DEBUG mrirecon.probe: a mrirecon debug record" in lines
    assert "INFO mrirecon.probe: a mrirecon info record" in lines
    assert not any("third-party" in line for line in lines), lines
    quiet = _records(_probe(tmp_path, "--threads", "1").stderr)  # without --debug: INFO and up
    assert quiet == ["INFO mrirecon.probe: a mrirecon info record"]


# ---- finding 7: torchrun: one model.pt line and one batch-size warning per job ---------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_print_the_model_path_and_warn_once(tmp_path):
    """Was: each of the 2 ranks printed ``OUT/model.pt`` on stdout and logged the batch-size
    warning (torchrun merges the ranks' streams: both twice in the job's output)."""
    cfg = _tiny_config(tmp_path, tmp_path / "out")
    port = str(_free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mrirecon", "--threads", "1", "train", str(cfg)], cwd=tmp_path,
        env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                 MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    streams = []
    for p in procs:
        try:
            streams.append(p.communicate(timeout=240))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("a rank still running after 240 s")
    assert [p.returncode for p in procs] == [0, 0], streams
    assert [out for out, _ in streams] == [f"{tmp_path / 'out' / 'model.pt'}\n", ""]
    warned = [sum("optim.batch_size: 50 is more than" in line for line in err.splitlines())
              for _, err in streams]
    assert warned == [1, 0], streams
