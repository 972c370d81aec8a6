"""``mrirecon train``: the training command group of the command line (see :mod:`mrirecon.cli`).

``mrirecon train CONFIG.yaml`` trains a reconstruction network from a YAML config (short for
``mrirecon train config CONFIG.yaml``). The other subcommands rebuild the shipped priors and
helper networks that are not trained from a config; each writes a ``.pt`` and its card beside it
(``.yaml``: the command, seed, steps, wall time and threads of the run; rebuilt over an earlier
card, only that card's descriptive sections are kept, :func:`mrirecon.training.run_card.rebuilt_card`):

==============================  ===========================================================
``mrirecon train denoiser``     ``pnp_dncnn_brain_sim``: residual DnCNN on noisy MNI152 slices
``mrirecon train prior``        ``pnp_dncnn_diverse``: bias-free DnCNN on diverse images (DPIR)
``mrirecon train gmm``          ``patch_gmm``: the EPLL patch mixture, fitted by EM
``mrirecon train perceptual``   ``perceptual_features``: the perceptual loss's feature network
``mrirecon train radial``       ``modl_radial_sim``: an unrolled model on radial NUFFT data
``mrirecon train modl``         ``modl_fastmri_diverse``: MoDL at the fastMRI deployment geometry
``mrirecon train staged_ct``    ``staged_ct_lodopab``: FBP + U-Net / CG stages, LoDoPaB sparse view
==============================  ===========================================================

Only the command line parses ``argv``; the training modules expose plain functions.
"""

from __future__ import annotations

import argparse
import inspect
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("config", "denoiser", "prior", "gmm", "perceptual", "radial", "modl", "varnet", "staged_ct",
         "primal_dual_ct")


TRAIN_HELP = "train a network: from a YAML config, or one of the shipped priors"


def normalise_argv(argv: list[str]) -> list[str]:
    """``train X.yaml ...`` -> ``train config X.yaml ...`` (the short form stays valid), also
    after the global options (``mrirecon --threads 1 train X.yaml`` was "invalid choice")."""
    i = 0
    while i < len(argv) and argv[i] in ("--debug", "--threads") or (
            i < len(argv) and argv[i].startswith("--threads=")):
        i += 2 if argv[i] == "--threads" else 1
    if (len(argv) >= i + 2 and argv[i] == "train" and argv[i + 1] not in KINDS
            and argv[i + 1] not in ("-h", "--help")):
        return [*argv[:i], "train", "config", *argv[i + 1:]]
    return argv


def cmd_train_config(args: argparse.Namespace) -> int:
    """``mrirecon train [config] CONFIG.yaml [--resume] [--set key=value ...]`` (torchrun-aware)."""
    import logging

    from mrirecon.pipeline.definitions import training_config_path
    from mrirecon.training.run import train_from_config

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    path = training_config_path(args.config)
    result = train_from_config(path, overrides=args.set, resume=args.resume)
    print(result.output_dir / "model.pt")
    return 0


def cmd_train_function(args: argparse.Namespace) -> int:
    """``mrirecon train denoiser|prior|perceptual|radial --out PATH [options]``: call the training
    function with the options its signature defines (see :func:`_add_function_options`)."""
    options = {name: getattr(args, name) for name in args._options}
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    summary = args._train(args.out, **options)
    print(json.dumps(summary.get(args._show, summary) if args._show else summary, default=str))
    return 0


def _learning_rate(text: str) -> float:
    """An ``--lr`` value (:func:`~mrirecon.training.optim.lr_problem`)."""
    from mrirecon.training.optim import lr_problem

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    problem = lr_problem(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _add_function_options(parser: argparse.ArgumentParser, fn: Callable[..., Any],
                          count: Callable[[str], int], positive_float: Callable[[str], float],
                          choices: dict[str, Sequence[str]] | None = None) -> list[str]:
    """One option per keyword parameter of ``fn`` with a default (``max_steps`` ->
    ``--max-steps``), typed by the default: counts (integers >= 1; seeds any integer), positive
    floats, tuples of counts (any number of them where annotated ``tuple[int, ...]``), strings
    (``choices`` where given). The function's defaults are the
    command line's: one home for them. Returns the parameter names."""
    names = []
    for prm in inspect.signature(fn).parameters.values():
        if prm.kind is not prm.KEYWORD_ONLY or prm.name in ("threads", "log"):
            continue
        flag, default = "--" + prm.name.replace("_", "-"), prm.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif isinstance(default, int):
            parser.add_argument(flag, type=int if "seed" in prm.name else count, default=default)
        elif isinstance(default, float):
            is_lr = prm.name == "lr" or prm.name.endswith("_lr")
            parser.add_argument(flag, type=_learning_rate if is_lr else positive_float, default=default)
        elif isinstance(default, tuple):
            nargs = "+" if "..." in str(prm.annotation) else len(default)
            parser.add_argument(flag, type=count, nargs=nargs, default=default)
        else:
            parser.add_argument(flag, default=default, choices=(choices or {}).get(prm.name))
        names.append(prm.name)
    return names


def add_train(subparsers: argparse._SubParsersAction,
              int_at_least: Callable[[int], Callable[[str], int]],
              positive_float: Callable[[str], float],
              add_threads: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``mrirecon train`` and its subcommands (argument types come from the CLI)."""
    count = int_at_least(1)
    train = subparsers.add_parser(
        "train",
        help=TRAIN_HELP,
        description="Train a model. `mrirecon train CONFIG.yaml` (short for `mrirecon train config "
        "CONFIG.yaml`) trains a reconstruction network described by a TrainConfig YAML file (see "
        "pipelines/train_*.yaml); the other subcommands rebuild shipped priors and helper "
        "networks (commands recorded in each weight card).",
        epilog="examples (the first config reads data/sim_brain/train and .../val, made by the two "
               "simulate commands):\n"
               "  mrirecon simulate mri --out data/sim_brain/train --volumes 24 --slices 6 --coils 4 "
               "--max-coils 8 --size 128 128 --seed 11\n"
               "  mrirecon simulate mri --out data/sim_brain/val --volumes 3 --slices 6 --coils 4 "
               "--max-coils 8 --size 128 128 --seed 12\n"
               "  mrirecon train pipelines/train_varnet_brain_sim.yaml --set optim.max_steps=100\n"
               "  mrirecon train prior --out my_prior.pt --threads 1   (data made on the fly; about "
               "1 h; writes my_prior.pt)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = train.add_subparsers(
        dest="kind", metavar="{" + ",".join(KINDS) + "}",
        required=True)

    cfg = kinds.add_parser(
        "config", help="train a reconstruction network from a YAML config (torchrun-aware)",
        description="Writes checkpoints, train_log.csv, TensorBoard logs and model.pt + model.yaml "
        "to output_dir. Run under torchrun for several processes (DDP).")
    cfg.add_argument("config", help="training config: a YAML file or a shipped config by name "
                     "(train_modl_brain_sim, train_varnet_brain_sim, train_primal_dual_ct_sim)")
    cfg.add_argument("--resume", action="store_true",
                     help="continue from output_dir/checkpoints/last.pt when it exists")
    cfg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. optim.lr=1e-3 (repeatable)")
    add_threads(cfg)
    cfg.set_defaults(func=cmd_train_config, _parser=cfg)

    def out_file(text: str) -> str:
        if Path(text).is_dir():  # the trainers would write NAME.pt beside the folder
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as "
                                             f"{Path(text) / 'model.pt'}")
        return text

    def common(p: argparse.ArgumentParser, *, out_help: str) -> None:
        p.add_argument("--out", required=True, type=out_file, help=out_help)
        add_threads(p)

    from mrirecon.training.ct_primal_dual import train_primal_dual_ct
    from mrirecon.training.ct_staged import train_staged_ct
    from mrirecon.training.denoiser import train_denoiser
    from mrirecon.training.denoiser_prior import train as train_prior
    from mrirecon.training.fit_gmm import fit_and_save
    from mrirecon.training.modl_deploy import train as train_modl
    from mrirecon.training.modl_deploy import train_varnet
    from mrirecon.training.perceptual import train_and_save
    from mrirecon.training.radial import MAPS as RADIAL_MAPS
    from mrirecon.training.radial import MODELS as RADIAL_MODELS
    from mrirecon.training.radial import train_radial

    for kind, fn, help_, out_help, show, choices in (
            ("denoiser", train_denoiser, "the PnP denoiser pnp_dncnn_brain_sim",
             "output .pt (state_dict of a PnPADMM; the card is written as .yaml beside it)", None, None),
            ("prior", train_prior, "the generic DPIR prior pnp_dncnn_diverse",
             "output .pt (state_dict of a PnPDPIR; the card is written as .yaml beside it)", None, None),
            ("gmm", fit_and_save, "the EPLL patch mixture patch_gmm (EM)",
             "output .pt (the card is written as .yaml beside it)", "training", None),
            ("perceptual", train_and_save, "the perceptual loss's feature network",
             "output .pt (the card goes beside it)", "training", None),
            ("radial", train_radial, "an unrolled model on simulated radial data",
             "output stem (writes STEM.pt and STEM.yaml)", "metrics_held_out",
             {"model": sorted(RADIAL_MODELS), "maps": RADIAL_MAPS}),
            ("modl", train_modl, "MoDL at the fastMRI deployment geometry (modl_fastmri_diverse)",
             "output .pt (the best-on-validation state_dict, written as training runs, and its card)", None,
             None),
            ("varnet", train_varnet,
             "E2E-VarNet at the fastMRI deployment geometry (varnet_fastmri_diverse)",
             "output .pt (the best-on-validation state_dict in float16, written as training runs, and its card)", None,
             None),
            ("staged_ct", train_staged_ct, "the sparse-view CT model staged_ct_lodopab",
             "output .pt (the card is written as .yaml beside it)", "training", None),
            ("primal_dual_ct", train_primal_dual_ct,
             "the learned primal-dual primal_dual_lodopab at the LoDoPaB geometry",
             "output .pt (the card is written as .yaml beside it)", "training", None)):
        sub = kinds.add_parser(kind, help=help_)
        common(sub, out_help=out_help)
        names = _add_function_options(sub, fn, count, positive_float, choices)
        sub.set_defaults(func=cmd_train_function, _parser=sub, _train=fn, _options=names,
                         _show=show)

