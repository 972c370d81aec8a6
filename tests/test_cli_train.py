"""``mrirecon train``: the config trainer and the prior/helper-network subcommands.

The command line is the only argv parser of the package; the training modules expose plain
functions. The commands recorded in the weight cards must be valid command lines.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
import yaml

from mrirecon import cli
from mrirecon.cli_train import KINDS, normalise_argv
from tests.helpers import fresh_python, imported_modules

PACKAGE = Path(cli.__file__).resolve().parent


def test_only_the_command_line_parses_argv():
    parsers = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
               if "argparse" in imported_modules(path)]
    assert sorted(parsers) == ["cli.py", "cli_simulate.py", "cli_train.py", "cli_types.py"]


def test_short_form_is_the_config_subcommand():
    assert normalise_argv(["train", "x.yaml", "--resume"]) == ["train", "config", "x.yaml", "--resume"]
    assert normalise_argv(["train", "prior", "--out", "p.pt"]) == ["train", "prior", "--out", "p.pt"]
    # after the global options too (was "invalid choice: 'x.yaml'")
    assert normalise_argv(["--threads", "1", "--debug", "train", "x.yaml"]) == \
        ["--threads", "1", "--debug", "train", "config", "x.yaml"]
    assert normalise_argv(["--threads=2", "train", "modl", "--out", "m.pt"]) == \
        ["--threads=2", "train", "modl", "--out", "m.pt"]
    assert normalise_argv(["train", "--help"]) == ["train", "--help"]
    args = cli.build_parser().parse_args(normalise_argv(["train", "cfg.yaml", "--set", "a.b=1"]))
    assert (args.kind, args.config, args.set, args.resume) == ("config", "cfg.yaml", ["a.b=1"], False)


def _card_commands() -> list[tuple[str, str]]:
    out = []
    for card in sorted((PACKAGE / "weights").glob("*.yaml")):
        data = yaml.safe_load(card.read_text())
        for section in ("training", "data"):
            for key in ("command", "command_same_steps", "reproduce"):
                text = (data.get(section) or {}).get(key)
                if isinstance(text, str) and "mrirecon train" in text:
                    out.append((card.name, text))
    return out


@pytest.mark.parametrize("card,command", _card_commands())
def test_card_commands_parse(card, command):
    words = shlex.split(command)
    words = words[words.index("mrirecon") + 1:]
    args = cli.build_parser().parse_args(normalise_argv(words))
    assert args.command == "train" and args.kind in set(KINDS) - {"config"}


def test_every_subcommand_has_a_card_command():
    kinds = {shlex.split(c)[shlex.split(c).index("train") + 1] for _, c in _card_commands()}
    assert kinds == set(KINDS) - {"config"}


@pytest.mark.parametrize("words,module,function,expected", [
    (["denoiser", "--out", "d.pt", "--max-steps", "3", "--size", "32", "48"],
     "mrirecon.training.denoiser", "train_denoiser", {"max_steps": 3, "size": (32, 48)}),
    (["prior", "--out", "p.pt", "--depth", "4", "--max-seconds", "60"],
     "mrirecon.training.denoiser_prior", "train", {"depth": 4, "max_seconds": 60.0}),
    (["perceptual", "--out", "f.pt", "--steps", "7"],
     "mrirecon.training.perceptual", "train_and_save", {"steps": 7}),
    (["radial", "--out", "r", "--spokes", "21", "--model", "modl"],
     "mrirecon.training.radial", "train_radial", {"spokes": (21,), "model": "modl"}),
    (["radial", "--out", "r", "--size", "64", "128", "--spokes", "40", "96"],  # two geometries
     "mrirecon.training.radial", "train_radial", {"size": (64, 128), "spokes": (40, 96)}),
    (["modl", "--out", "m.pt", "--crop-rows", "48", "--max-seconds", "60"],
     "mrirecon.training.modl_deploy", "train", {"crop_rows": 48, "max_seconds": 60.0}),
    (["varnet", "--out", "v.pt", "--cascades", "3", "--sens-chans", "2"],
     "mrirecon.training.modl_deploy", "train_varnet", {"cascades": 3, "sens_chans": 2}),
    (["primal_dual_ct", "--out", "pd.pt", "--budget-s", "60", "--iterations", "2"],
     "mrirecon.training.ct_primal_dual", "train_primal_dual_ct", {"budget_s": 60.0, "iterations": 2}),
    (["staged_ct", "--out", "s.pt", "--budget-s", "60", "--iterations", "1", "--seed", "3"],
     "mrirecon.training.ct_staged", "train_staged_ct",
     {"budget_s": 60.0, "iterations": 1, "seed": 3, "init": None}),
    (["staged_ct", "--out", "s.pt", "--init", "w/start.pt"],
     "mrirecon.training.ct_staged", "train_staged_ct", {"init": "w/start.pt"}),
])
def test_subcommands_forward_their_options(monkeypatch, capsys, words, module, function, expected):
    import functools
    import importlib

    seen = {}
    real = getattr(importlib.import_module(module), function)

    @functools.wraps(real)  # the options come from the real function's signature
    def fake(out, **kwargs):
        seen.update(out=out, **kwargs)
        return {"training": {}, "metrics_held_out": {}}

    monkeypatch.setattr(importlib.import_module(module), function, fake)
    assert cli.main(["train", *words, "--threads", "1"]) == 0
    assert seen["out"] == words[2]
    assert {k: seen[k] for k in expected} == expected
    # every keyword parameter reached the function, defaults included (one home for defaults)
    import inspect

    keywords = {n for n, p in inspect.signature(real).parameters.items()
                if p.kind is p.KEYWORD_ONLY and n not in ("threads", "log")}
    assert set(seen) - {"out"} == keywords


def test_bad_option_exits_2_naming_it(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["train", "prior", "--out", "p.pt", "--batch", "0"])
    assert err.value.code == 2 and "--batch" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["primal_dual_ct", "staged_ct", "gmm"])
def test_out_that_is_a_folder_exits_2_before_training(tmp_path, capsys, kind):
    # primal_dual_ct would otherwise write FOLDER.pt and FOLDER.yaml beside the folder
    with pytest.raises(SystemExit) as err:
        cli.main(["train", kind, "--out", str(tmp_path)])
    assert err.value.code == 2 and f"{tmp_path} is a folder" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [] and not tmp_path.with_suffix(".pt").exists()


def test_gmm_subcommand_writes_weights_and_card(tmp_path):
    out = tmp_path / "g.pt"
    argv = ["train", "gmm", "--out", str(out), "--components", "2", "--mri-volumes", "1",
            "--mri-slices", "1", "--ct-samples", "1", "--size", "32", "--patches-per-image", "40",
            "--iterations", "2", "--threads", "1"]
    assert cli.main(argv) == 0
    state = torch.load(out, weights_only=True)
    assert state["gmm.means"].shape[0] == 2 and state["gmm.covs"].shape[1:] == (64, 64)
    card = yaml.safe_load(out.with_suffix(".yaml").read_text())
    assert card["data"]["components"] == 2 and card["training"]["iterations"] == 2


def test_training_configs_resolve_by_name_from_the_package(tmp_path):
    from mrirecon.pipeline.definitions import PIPELINES, training_config_path

    shipped = PIPELINES / "train_modl_brain_sim.yaml"
    for name in ("train_modl_brain_sim", "train_modl_brain_sim.yaml",
                 "pipelines/train_modl_brain_sim.yaml"):
        assert training_config_path(name).resolve() == shipped.resolve()
    own = tmp_path / "train_modl_brain_sim.yaml"  # a user's file of the same name wins
    own.write_text("name: x\n")
    assert training_config_path(str(own)) == own
    with pytest.raises(FileNotFoundError, match="train_typo.*train_modl_brain_sim"):
        training_config_path("train_typo")


@pytest.mark.parametrize("argv,command", [
    (["run", "mri_cs", "-i", "x"], "run"),
    (["--threads", "2", "run", "mri_cs"], "run"),
    (["--threads=2", "--debug", "bench"], "bench"),
    (["train", "config", "x.yaml"], "train"),
    (["--help"], None), (["--version"], None), ([], None),
])
def test_command_of(argv, command):
    assert cli.command_of(argv) == command


def test_run_builds_no_training_or_simulation_parser():
    """``mrirecon run`` lists train and simulate by name but does not import their modules, nor
    the training stack (mrirecon.training loads its parts on first use): a few tenths of a
    second of every cold start. The top-level help and the commands themselves are whole."""
    code = (
        "import sys\n"
        "from mrirecon import cli\n"
        "p = cli.build_parser('run')\n"
        "text = p.format_help()\n"
        "assert 'train' in text and 'simulate' in text, text\n"
        "p.parse_args(['run', 'mri_cs', '-i', 'a.h5', '-o', 'out'])\n"
        "heavy = ('mrirecon.training.run', 'mrirecon.training.trainer', 'mrirecon.training.data',\n"
        "         'mrirecon.training.losses', 'mrirecon.data', 'scipy.ndimage')\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(heavy))\n"
        "print(heavy)\n"
    )
    assert fresh_python(code) == "[]"
    full = cli.build_parser()
    for words in (["train", "modl", "--out", "m.pt"], ["simulate", "mri", "--out", "d"]):
        assert full.parse_args(words).func is not None
        assert cli.build_parser(words[0]).parse_args(words).func is not None


def test_kinds_is_the_list_of_registered_train_subcommands():
    """``normalise_argv`` reads KINDS; a subcommand missing from it would be taken for a config."""
    import argparse

    parser = cli.build_parser("train")
    train = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    kinds = next(a for a in train._actions if isinstance(a, argparse._SubParsersAction))
    assert list(kinds.choices) == list(KINDS)


def test_card_commands_parse_back_to_the_arguments_of_the_run(monkeypatch):
    """The command a CT card records (staged_ct with a flag, primal_dual_ct) is a valid command
    line that reaches the training function with the run's arguments."""
    import importlib
    from pathlib import Path

    from mrirecon.training.run_card import trainer_command

    for kind, module, function, args in (
            ("staged_ct", "mrirecon.training.ct_staged", "train_staged_ct",
             {"seed": 1, "budget_s": 60.0, "patch": 160, "lr": 0.0003, "init": "w/a.pt",
              "prefetch": True, "threads": 1}),
            ("primal_dual_ct", "mrirecon.training.ct_primal_dual", "train_primal_dual_ct",
             {"budget_s": 60.0, "seed": 0, "iterations": 8, "features": 16, "threads": 1})):
        seen = {}
        real = getattr(importlib.import_module(module), function)

        def fake(out, seen=seen, **kwargs):
            seen.update(out=out, **kwargs)
            return {"training": {}}

        fake.__wrapped__ = real  # the options come from the real function's signature
        monkeypatch.setattr(importlib.import_module(module), function, fake)
        words = trainer_command(kind, Path("m.pt"), args).split()
        assert words[:2] == ["mrirecon", "train"]
        assert cli.main(words[1:]) == 0
        assert seen["out"] == "m.pt"
        assert {k: seen[k] for k in args if k != "threads"} == {k: v for k, v in args.items()
                                                                  if k != "threads"}


def test_python_dash_m_runs_the_command_line():
    """`torchrun --nproc_per_node N -m mrirecon run ...` (what the README shows) needs a module
    entry point; `torchrun ... mrirecon run` failed with "can't open file .../mrirecon"."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mrirecon", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("mrirecon ")


@pytest.mark.parametrize("words", [
    ["simulate", "mri"], ["simulate", "ct"], ["train", "modl"], ["train", "staged_ct"]])
def test_output_is_spelt_as_in_run_bench_and_demo(words, tmp_path):
    """simulate and train took --out only, where run, bench and demo take --output / -o (and
    --output's prefix --out): --output and -o were refused as unrecognised."""
    target = str(tmp_path / "o.pt" if words[0] == "train" else tmp_path / "o")
    spelt = {opt: cli.build_parser().parse_args(normalise_argv([*words, opt, target]))
             for opt in ("--out", "--output", "-o")}
    assert spelt["--out"].out == spelt["--output"].out == spelt["-o"].out
    assert str(spelt["--output"].out) == target
    run = cli.build_parser().parse_args(["run", "mri_cs", "--input", "x", "--out", str(tmp_path)])
    assert str(run.output) == str(tmp_path)  # argparse's prefix of --output


@pytest.mark.parametrize("kind, rows", [("modl", "22"), ("modl", "1000"), ("varnet", "16")])
def test_crop_rows_outside_what_the_loss_and_slices_allow_is_refused_before_any_data(
        kind, rows, tmp_path, monkeypatch, capsys):
    """--crop-rows 16 / 22 failed after ~10 s of simulation with "ssim_map: win_size 7 exceeds
    image size (0, 320)", 1000 with numpy's "low >= high", naming no option."""
    from mrirecon.training import modl_deploy

    monkeypatch.setattr(modl_deploy, "validation_slices",
                        lambda *a, **k: pytest.fail("data made before the check"))
    out = tmp_path / "m.pt"
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", kind, "--out", str(out), "--crop-rows", rows, "--threads", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert f"train {kind}: --crop-rows {rows} must be in [23, 640]" in err and not out.exists()
