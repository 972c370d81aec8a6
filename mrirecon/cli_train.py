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
import os
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
    """``mrirecon train [config] CONFIG.yaml [--resume] [--set key=value ...]`` (torchrun-aware):
    prints the path of ``model.pt``, once per job (rank 0: under torchrun every rank printed it);
    the log on stderr as every command's (:func:`mrirecon.cli.log_to_stderr`)."""
    from mrirecon.pipeline.definitions import training_config_path
    from mrirecon.training.run import train_from_config

    from mrirecon.cli import progress_wanted

    path = training_config_path(args.config)
    result = train_from_config(path, overrides=args.set, resume=args.resume,
                               progress=progress_wanted(args))
    if result.rank == 0:
        print(result.output_dir / "model.pt")
    return 0


def cmd_train_function(args: argparse.Namespace) -> int:
    """``mrirecon train denoiser|prior|gmm|perceptual|radial|modl|varnet|staged_ct|primal_dual_ct
    --out PATH [options]``: call the training function with the options its signature defines
    (see :func:`_add_function_options`) and print its summary as one JSON line, the only output
    on stdout (the functions log their progress: on stderr, :func:`mrirecon.cli.log_to_stderr`)."""
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


#: ``--help`` of the training functions' options (:func:`_add_function_options`), by parameter
#: name; :data:`_KIND_HELP` where a name means something else for one subcommand.
_OPTION_HELP = {
    "seed": "seed of the weight initialisation and of the training samples' draws",
    "data_seed": "seed of the simulated training data",
    "lr": "learning rate (Adam)",
    "max_steps": "stop after this many training steps (or at --max-seconds)",
    "max_seconds": "stop after this many seconds of training (or at --max-steps)",
    "lr_drop_step": "the step at which the learning rate drops tenfold (default: at 80 %% of "
                    "--max-steps or --max-seconds, whichever comes first)",
    "budget_s": "wall-time budget of the whole training, in seconds",
    "steps": "training steps",
    "batch": "samples per training step",
    "batch_size": "samples per training step",
    "patch": "side of the square training patches, in pixels",
    "volumes": "simulated MNI152 training volumes",
    "slices": "slices per simulated volume",
    "size": "image size in pixels",
    "features": "feature channels per layer",
    "layers": "convolutional layers of the denoiser in each iteration",
    "iterations": "unrolled iterations",
    "cg_iterations": "conjugate-gradient iterations of each data-consistency step",
    "val_every": "validate (and keep the best state) every this many steps",
    "val_slices": "simulated validation slices",
    "workers": "data-loader worker processes (0: in this process; modl / varnet: each draws "
               "its own sample stream, so the count is part of the data recipe)",
    "crop_rows": "image rows of each training band (an exact smaller SENSE problem)",
    "bands": "training bands drawn from each simulated slice",
    "widths": "phase-encoding column counts of the simulated slices (one drawn per slice)",
    "l1_weight": "weight of the L1 term of the loss (1 - SSIM + l1_weight * L1)",
    "pool": "training samples held in memory, refreshed as training runs",
    "pool_size": "clean training patches drawn into the pool",
    "refresh_every": "replace one pooled sample every this many steps",
    "init": "a state dict of the same architecture to continue from (default: a fresh start)",
    "depth": "convolutional layers of the denoiser",
    "chans": "feature channels of the first U-Net level",
    "num_pools": "U-Net poolings (down / up levels)",
    "pools": "U-Net poolings (down / up levels)",
    "cascades": "unrolled cascades",
    "sens_chans": "feature channels of the sensitivity-map U-Net",
    "sens_pools": "poolings of the sensitivity-map U-Net",
    "estimate_sensitivities": "estimate the coil maps with the network (else the operator's, ESPIRiT's)",
    "n_primal": "primal memory channels",
    "n_dual": "dual memory channels",
    "prefetch": "make the refresh samples on a background thread (one more core)",
    "hardware": "add a patient table / head holder around some training images",
    "components": "Gaussian components of the mixture",
    "patch_size": "side of the square patches, in pixels",
    "mri_volumes": "simulated MRI volumes the patches are drawn from",
    "mri_slices": "slices per simulated MRI volume",
    "ct_samples": "simulated CT images the patches are drawn from",
    "patches_per_image": "patches drawn from each image",
    "held_out": "held-out slices scored for the card",
    "model": "unrolled model to train",
    "maps": "coil maps the model is given",
    "weighting": "data-consistency weighting: density (density-compensated) or none",
    "spokes": "radial spokes of each geometry (pairs with --size)",
}
_KIND_HELP = {
    ("gmm", "iterations"): "EM iterations",
    ("gmm", "seed"): "seed of the simulated images and of the patch draws",
    ("gmm", "size"): "side of the simulated images, in pixels",
    ("perceptual", "slices"): "simulated training slices",
    ("perceptual", "size"): "side of the training slices, in pixels",
    ("radial", "size"): "image sizes, one geometry each (pairs with --spokes)",
    ("radial", "volumes"): "simulated training volumes per geometry",
    ("primal_dual_ct", "iterations"): "unrolled primal-dual iterations",
    ("staged_ct", "iterations"): "stages (U-Net, then data consistency), each trained in turn",
    ("primal_dual_ct", "features"): "feature channels of the primal and dual networks",
    ("denoiser", "size"): "image size in pixels (rows columns)",
    ("staged_ct", "max_steps"): "training steps of each stage (one count: every stage's; or one "
                                "per stage); a stage also ends at its share of --budget-s, and "
                                "its learning rate follows its steps, not the clock, while the "
                                "clock keeps pace (default: the wall-time budget alone)",
    ("primal_dual_ct", "max_steps"): "stop after this many training steps (or at --budget-s); the "
                                     "learning rate follows the steps, not the clock, while the "
                                     "clock keeps pace (default: the wall-time budget alone)",
}


#: The least value of an integer option other than 1 (a count), by parameter name or by
#: ``(kind, name)``: ``--workers 0`` loads the data in the training process, as its help says
#: (it was refused: "must be >= 1"); ``train prior``'s patches must hold the procedural
#: images' blobs (``prior_images.procedural_image``: a scale drawn in ``[2, patch / 8)``):
#: ``--patch 8`` failed with numpy's "high - low < 0", naming no option. A DnCNN has at least
#: its first and last convolutions.
_LEAST = {"workers": 0, ("prior", "patch"): 16, ("denoiser", "depth"): 2}

#: Parameters that are paths (``--init``): ``--init ""`` was read as the folder ``.``
#: ("PosixPath('.') has an empty name").
_PATHS = ("init",)


#: Old spellings of an option, by ``(kind, parameter)``: accepted for one release, hidden from
#: ``--help``, with a FutureWarning naming the new option; both given is an error
#: (``core/names.py``'s rule for keywords). ``staged_ct``'s stage count was ``--stages`` before
#: 2026-12-07 (the weights' cards and ``make weights`` recorded it so).
_OLD_OPTIONS = {("staged_ct", "iterations"): "--stages"}


class _OldOption(argparse.Action):
    """An option's old spelling (:data:`_OLD_OPTIONS`): stores the value as the new option does,
    with a ``FutureWarning``."""

    def __call__(self, parser, namespace, values, option_string=None):
        import warnings

        new = "--" + self.dest.replace("_", "-")
        warnings.warn(f"{parser.prog}: {option_string} is deprecated, use {new} (the old name "
                      "goes away in the next release)", FutureWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def _option_help(kind: str, name: str) -> str:
    return _KIND_HELP.get((kind, name)) or _OPTION_HELP.get(name) or name.replace("_", " ")


def _add_function_options(parser: argparse.ArgumentParser, fn: Callable[..., Any],
                          count: Callable[[str], int], positive_float: Callable[[str], float],
                          choices: dict[str, Sequence[str]] | None = None,
                          kind: str = "") -> list[str]:
    """One option per keyword parameter of ``fn`` with a default (``max_steps`` ->
    ``--max-steps``), typed by the default: counts (integers >= 1, or >= :data:`_LEAST`; seeds
    :func:`mrirecon.cli_types.seed`), positive floats, tuples of counts (any number of them
    where annotated ``tuple[int, ...]``, which add up when the option is repeated), paths
    (:data:`_PATHS`), strings (``choices`` where given); its help from :data:`_OPTION_HELP`
    (subcommand ``kind``), the default shown after it. The function's defaults are the
    command line's: one home for them. An option's old spelling (:data:`_OLD_OPTIONS`) is
    accepted beside it, hidden. Returns the parameter names."""
    from mrirecon.cli_types import Extend, int_at_least, path, seed

    names = []
    for prm in inspect.signature(fn).parameters.values():
        if prm.kind is not prm.KEYWORD_ONLY or prm.name in ("threads", "log"):
            continue
        flag, default = "--" + prm.name.replace("_", "-"), prm.default
        text = _option_help(kind, prm.name)
        old = _OLD_OPTIONS.get((kind, prm.name))
        target = parser.add_mutually_exclusive_group() if old else parser
        added: list[argparse.Action] = []

        def add(*args: Any, **kwargs: Any) -> None:
            added.append(target.add_argument(*args, **kwargs))

        if isinstance(default, bool):
            add(flag, action=argparse.BooleanOptionalAction, default=default,
                help=text)
        elif isinstance(default, int):
            least = _LEAST.get((kind, prm.name), _LEAST.get(prm.name))
            typed = (seed if "seed" in prm.name else count if least is None
                     else int_at_least(least))
            add(flag, type=typed, default=default, help=text)
        elif prm.name in _PATHS:  # not empty ("" read as the folder '.'), ~ expanded
            add(flag, type=path, default=default, help=text)
        elif isinstance(default, float):
            is_lr = prm.name == "lr" or prm.name.endswith("_lr")
            add(flag, type=_learning_rate if is_lr else positive_float,
                default=default, help=text)
        elif default is None and str(prm.annotation).replace(" ", "") == "int|None":
            add(flag, type=count, default=None, help=text)  # unset: the rule
        elif default is None and str(prm.annotation).replace(" ", "") == "tuple[int,...]|None":
            add(flag, type=count, nargs="+", action=Extend, default=None,
                help=text)  # one count or several; unset: the rule
        elif isinstance(default, tuple) and "..." in str(prm.annotation):  # repeats add up
            add(flag, type=count, nargs="+", action=Extend, default=default,
                help=text)
        elif isinstance(default, tuple):  # a fixed-size value (rows columns): the last counts
            add(flag, type=count, nargs=len(default), default=default, help=text)
        else:
            add(flag, default=default, choices=(choices or {}).get(prm.name),
                help=text)
        if old:  # the old spelling, parsed as the new option
            add(old, dest=prm.name, type=added[0].type, nargs=added[0].nargs, action=_OldOption,
                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        names.append(prm.name)
    return names


def out_file(kind: str) -> Callable[[str], str]:
    """The type of ``train KIND --out``: a weights file name ending in ``.pt`` (``radial``: or a
    stem without a suffix, to which it adds ``.pt``) in a folder that can be written, ``~``
    expanded; checked before any training. The card is written beside the weights
    (``with_suffix(".yaml")``): ``--out g.yaml`` wrote the weights and then the card over them
    (exit 0, "wrote g.yaml"); ``--out afile/d.pt`` (a file in the way) or an unwritable folder
    trained the whole budget, then failed with "afile: File exists"."""
    from mrirecon.cli_types import write_problem
    from mrirecon.io.atomic import file_in_the_way

    def parse(text: str) -> str:
        if not text:
            raise argparse.ArgumentTypeError("an empty path (an unset shell variable?); give a "
                                             "file name such as model.pt")
        text = os.path.expanduser(text)
        p = Path(text)
        if p.is_dir():  # the trainers would write NAME.pt beside the folder
            raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name such as "
                                             f"{p / 'model.pt'}")
        allowed = (".pt", "") if kind == "radial" else (".pt",)
        if p.suffix not in allowed:
            what = ("STEM.pt and STEM.yaml: give a stem without a suffix or a name ending in .pt"
                    if kind == "radial" else "the weights and their card, NAME.yaml, beside them: "
                    "give a name ending in .pt")
            raise argparse.ArgumentTypeError(f"{text}: train {kind} writes {what} (e.g. "
                                             f"{p.with_suffix('.pt')})")
        folder = p.parent
        blocked = file_in_the_way(folder)
        if blocked is not None:
            raise argparse.ArgumentTypeError(f"{text}: cannot create the folder ({blocked} is a "
                                             "file, not a folder); give a path in a folder")
        problem = write_problem(folder)
        if problem:
            raise argparse.ArgumentTypeError(f"{text}: {problem}; give a writable location")
        return text

    parse.__name__ = "weights file"
    return parse


def add_train(subparsers: argparse._SubParsersAction,
              int_at_least: Callable[[int], Callable[[str], int]],
              positive_float: Callable[[str], float],
              add_threads: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``mrirecon train`` and its subcommands (argument types come from the CLI)."""
    from mrirecon.cli import HelpFormatter

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
    from mrirecon.cli_types import definition

    cfg.add_argument("config", type=definition,
                     help="training config: a YAML file or a shipped config by name "
                     "(train_modl_brain_sim, train_varnet_brain_sim, train_primal_dual_ct_sim)")
    cfg.add_argument("--resume", action="store_true",
                     help="continue from output_dir/checkpoints/last.pt when it exists")
    cfg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config value, e.g. optim.lr=1e-3 (repeatable)")
    from mrirecon.cli import add_progress

    add_progress(cfg)
    add_threads(cfg)
    cfg.set_defaults(func=cmd_train_config, _parser=cfg)

    def common(p: argparse.ArgumentParser, kind: str, *, out_help: str) -> None:
        p.add_argument("--out", "--output", "-o", required=True, type=out_file(kind), help=out_help)
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
        sub = kinds.add_parser(kind, help=help_, formatter_class=HelpFormatter)
        common(sub, kind, out_help=out_help)
        names = _add_function_options(sub, fn, count, positive_float, choices, kind)
        sub.set_defaults(func=cmd_train_function, _parser=sub, _train=fn, _options=names,
                         _show=show)

