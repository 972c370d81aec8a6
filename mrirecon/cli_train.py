"""``mrirecon train``: the training command group of the command line (see :mod:`mrirecon.cli`).

``mrirecon train CONFIG.yaml`` trains a reconstruction network from a YAML config (short for
``mrirecon train config CONFIG.yaml``). The other subcommands rebuild the shipped priors and
helper networks that are not trained from a config; each writes a ``.pt`` and its card:

==============================  ===========================================================
``mrirecon train denoiser``     ``pnp_dncnn_brain_sim``: residual DnCNN on noisy MNI152 slices
``mrirecon train prior``        ``pnp_dncnn_diverse``: bias-free DnCNN on diverse images (DPIR)
``mrirecon train gmm``          ``patch_gmm``: the EPLL patch mixture, fitted by EM
``mrirecon train perceptual``   ``perceptual_features``: the perceptual loss's feature network
``mrirecon train radial``       ``modl_radial_sim``: an unrolled model on radial NUFFT data
==============================  ===========================================================

Only the command line parses ``argv``; the training modules expose plain functions.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

KINDS = ("config", "denoiser", "prior", "gmm", "perceptual", "radial")


def normalise_argv(argv: list[str]) -> list[str]:
    """``train X.yaml ...`` -> ``train config X.yaml ...`` (the short form stays valid)."""
    if (len(argv) >= 2 and argv[0] == "train" and argv[1] not in KINDS
            and argv[1] not in ("-h", "--help")):
        return ["train", "config", *argv[1:]]
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


def cmd_train_denoiser(args: argparse.Namespace) -> int:
    from mrirecon.training.denoiser import train_denoiser

    summary = train_denoiser(
        args.out, volumes=args.volumes, slices=args.slices, size=tuple(args.size),
        data_seed=args.data_seed, seed=args.seed, batch=args.batch, patch=args.patch, lr=args.lr,
        max_steps=args.max_steps, max_seconds=args.max_seconds)
    print(json.dumps(summary))
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    from mrirecon.training.denoiser_prior import train

    summary = train(args.out, pool_size=args.pool_size, patch=args.patch, seed=args.seed,
                    batch=args.batch, lr=args.lr, max_steps=args.max_steps,
                    max_seconds=args.max_seconds, depth=args.depth, features=args.features,
)
    print(json.dumps(summary))
    return 0


def cmd_train_gmm(args: argparse.Namespace) -> int:
    from mrirecon.training.fit_gmm import DEFAULTS, fit_and_save

    card = fit_and_save(args.out, **{k: getattr(args, k) for k in DEFAULTS})
    print(json.dumps(card["training"]))
    return 0


def cmd_train_perceptual(args: argparse.Namespace) -> int:
    from mrirecon.training.perceptual import train_and_save

    card = train_and_save(args.out, steps=args.steps, batch_size=args.batch_size, size=args.size,
                          slices=args.slices, held_out=args.held_out, lr=args.lr, seed=args.seed)
    print(json.dumps(card["training"]))
    return 0


def cmd_train_radial(args: argparse.Namespace) -> int:
    from mrirecon.training.radial import train_radial

    card = train_radial(args.out, model=args.model, steps=args.steps, size=args.size,
                        spokes=args.spokes, volumes=args.volumes, slices=args.slices, lr=args.lr)
    print(json.dumps(card["metrics_held_out"]))
    return 0


def add_train(subparsers: argparse._SubParsersAction,
              int_at_least: Callable[[int], Callable[[str], int]],
              positive_float: Callable[[str], float],
              add_threads: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register ``mrirecon train`` and its subcommands (argument types come from the CLI)."""
    count = int_at_least(1)
    train = subparsers.add_parser(
        "train",
        help="train a network: from a YAML config, or one of the shipped priors",
        description="Train a model. `mrirecon train CONFIG.yaml` (short for `mrirecon train config "
        "CONFIG.yaml`) trains a reconstruction network described by a TrainConfig YAML file (see "
        "pipelines/train_*.yaml); the other subcommands rebuild shipped priors and helper "
        "networks (commands recorded in each weight card).",
        epilog="examples:\n"
               "  mrirecon train pipelines/train_varnet_brain_sim.yaml --set optim.max_steps=100\n"
               "  mrirecon train prior --out mrirecon/weights/pnp_dncnn_diverse.pt --threads 1",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = train.add_subparsers(dest="kind", metavar="{config,denoiser,prior,gmm,perceptual,radial}",
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

    def common(p: argparse.ArgumentParser, *, out_help: str) -> None:
        p.add_argument("--out", required=True, help=out_help)
        add_threads(p)

    den = kinds.add_parser("denoiser", help="the PnP denoiser pnp_dncnn_brain_sim")
    common(den, out_help="output .pt (state_dict of a PnPADMM)")
    den.add_argument("--volumes", type=count, default=24)
    den.add_argument("--slices", type=count, default=8)
    den.add_argument("--size", type=count, nargs=2, default=(128, 128))
    den.add_argument("--data-seed", type=int, default=101)
    den.add_argument("--seed", type=int, default=0)
    den.add_argument("--batch", type=count, default=8)
    den.add_argument("--patch", type=count, default=64)
    den.add_argument("--lr", type=positive_float, default=1e-3)
    den.add_argument("--max-steps", type=count, default=20000)
    den.add_argument("--max-seconds", type=positive_float, default=420.0)
    den.set_defaults(func=cmd_train_denoiser, _parser=den)

    pri = kinds.add_parser("prior", help="the generic DPIR prior pnp_dncnn_diverse")
    common(pri, out_help="output .pt (state_dict of a PnPDPIR)")
    pri.add_argument("--pool-size", type=count, default=6000)
    pri.add_argument("--patch", type=count, default=64)
    pri.add_argument("--seed", type=int, default=0)
    pri.add_argument("--batch", type=count, default=16)
    pri.add_argument("--lr", type=positive_float, default=1e-3)
    pri.add_argument("--max-steps", type=count, default=100000)
    pri.add_argument("--max-seconds", type=positive_float, default=3000.0)
    pri.add_argument("--depth", type=count, default=8)
    pri.add_argument("--features", type=count, default=32)
    pri.set_defaults(func=cmd_train_prior, _parser=pri)

    from mrirecon.training.fit_gmm import DEFAULTS as GMM_DEFAULTS

    gmm = kinds.add_parser("gmm", help="the EPLL patch mixture patch_gmm (EM)")
    common(gmm, out_help="output .pt (the card is written as .yaml beside it)")
    for key, value in GMM_DEFAULTS.items():
        gmm.add_argument(f"--{key.replace('_', '-')}",
                         type=int if key == "seed" else count, default=value)
    gmm.set_defaults(func=cmd_train_gmm, _parser=gmm)

    per = kinds.add_parser("perceptual", help="the perceptual loss's feature network")
    common(per, out_help="output .pt (the card goes beside it)")
    per.add_argument("--steps", type=count, default=1000)
    per.add_argument("--batch-size", type=count, default=16)
    per.add_argument("--size", type=count, default=64)
    per.add_argument("--slices", type=count, default=600)
    per.add_argument("--held-out", type=count, default=64)
    per.add_argument("--lr", type=positive_float, default=1e-3)
    per.add_argument("--seed", type=int, default=0)
    per.set_defaults(func=cmd_train_perceptual, _parser=per)

    from mrirecon.training.radial import MODELS as RADIAL_MODELS

    rad = kinds.add_parser("radial", help="an unrolled model on simulated radial data")
    common(rad, out_help="output stem (writes STEM.pt and STEM.yaml)")
    rad.add_argument("--model", choices=sorted(RADIAL_MODELS), default="modl")
    rad.add_argument("--steps", type=count, default=400)
    rad.add_argument("--size", type=count, default=64)
    rad.add_argument("--spokes", type=count, default=40)
    rad.add_argument("--volumes", type=count, default=10)
    rad.add_argument("--slices", type=count, default=4)
    rad.add_argument("--lr", type=positive_float, default=1e-3)
    rad.set_defaults(func=cmd_train_radial, _parser=rad)
