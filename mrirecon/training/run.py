"""``train_from_config``: YAML -> datasets, model, loss, trainer; what ``mrirecon train`` runs.

Outputs in ``output_dir``: ``config.yaml`` (the resolved configuration, overrides applied),
``checkpoints/last.pt`` (resumable, weights-only), ``train_log.csv``, ``tensorboard/`` (when
installed) and, at the end, ``model.pt`` (the model's ``state_dict`` only) with ``model.yaml``
(name and parameters), loadable by :func:`mrirecon.training.weights.load_pretrained`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from mrirecon.core.config import ConfigError, load_config, to_dict
from mrirecon.io.atomic import atomic_write_text
from mrirecon.io.weights import write_weights
from mrirecon.training.config import TrainConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.losses import ReconstructionLoss
from mrirecon.training.trainer import Trainer
from mrirecon.training.validation import make_validate_fn

log = logging.getLogger("mrirecon.train")


@dataclass
class TrainResult:
    """What a finished run leaves behind.

    Attributes
    ----------
    config
        The resolved configuration.
    model
        The trained model (on the training device, train mode).
    history
        Logged rows (``step``, ``loss``, ``lr``, ``seconds`` and ``val_*`` metrics), rank 0.
    output_dir
        Where checkpoints, logs and ``model.pt`` are.
    steps, seconds
        Steps reached and training wall time over all runs (resumes included).
    """

    config: TrainConfig
    model: nn.Module
    history: list[dict]
    output_dir: Path
    steps: int
    seconds: float


def build_model_from_config(cfg: TrainConfig) -> nn.Module:
    """``build_model(name, **params)``; ``checkpointing: true`` is passed on when set."""
    from mrirecon.models.registry import build_model
    from mrirecon.training.weights import resolve_priors

    params = resolve_priors(cfg.model.name, cfg.model.params)  # e.g. gmm: patch_gmm
    if cfg.checkpointing:
        params.setdefault("checkpointing", True)
    try:
        return build_model(cfg.model.name, **params)
    except KeyError as e:
        raise ConfigError("", "model.name", str(e).strip("'\"")) from e
    except TypeError as e:
        raise ConfigError("", "model.params", str(e)) from e


def build_datasets(cfg: TrainConfig):
    """Training set (fresh masks / views / noise) and validation set (fixed ones) of the config:
    :class:`MRITrainingSet` s for ``modality: mri``, :class:`CTTrainingSet` s for ``ct``."""
    d = cfg.data
    for key, folder in (("data.train", d.train), ("data.val", d.val)):
        if not Path(folder).is_dir():
            raise ConfigError("", key, f"folder {folder} does not exist")
    ssdu = getattr(cfg.loss, "ssdu", None) is not None  # self-supervised: references optional
    if d.modality == "ct":
        from mrirecon.training.data_ct import CTTrainingSet

        try:
            train = CTTrainingSet(d.train, d.ct_views, d.ct_photons, train=True,
                                  require_reference=not ssdu)
            val = CTTrainingSet(
                d.val, d.ct_views, d.ct_photons, train=False, max_slices=cfg.val_max_slices,
                require_reference=not ssdu,
            )
        except ValueError as e:
            raise ConfigError("", "data", str(e)) from e
        return train, val
    if ssdu:  # k-space as acquired (test / challenge / undersampled ISMRMRD files)
        from mrirecon.training.data_acquired import AcquiredMRISet

        try:
            train = AcquiredMRISet(d.train, d.mask, d.maps, train=True,
                                   sample_rate=d.sample_rate, seed=cfg.seed)
            val = AcquiredMRISet(d.val, d.mask, d.maps, train=False,
                                 max_slices=cfg.val_max_slices)
        except ValueError as e:
            raise ConfigError("", "data", str(e)) from e
        return train, val
    train = MRITrainingSet(
        d.train, d.mask, d.maps, train=True, sample_rate=d.sample_rate, seed=cfg.seed
    )
    val = MRITrainingSet(d.val, d.mask, d.maps, train=False, max_slices=cfg.val_max_slices)
    return train, val


#: What a resumed run may change: how long it trains and how it logs, not what it learns from.
RESUMABLE_CHANGES = frozenset({"optim.max_steps", "log_every", "val_every", "checkpoint_every",
                               "val_max_slices", "tensorboard", "device", "output_dir", "name"})


def _check_resume_config(previous: Path, now: dict, source: str) -> None:
    """Refuse ``--resume`` when the config differs from the run being resumed in anything but
    :data:`RESUMABLE_CHANGES` (a changed learning rate was written to ``config.yaml`` while the
    checkpoint's optimiser state kept the old one; changed data trained on other files; another
    architecture failed with an internal size mismatch)."""
    if not previous.is_file():
        return
    try:
        before = yaml.safe_load(previous.read_text())
    except (OSError, yaml.YAMLError):
        return  # unreadable: the checkpoint itself decides
    if not isinstance(before, dict):
        return

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
        return out

    old, new = flat(before), flat(yaml.safe_load(yaml.safe_dump(now, sort_keys=False)))
    changed = sorted(k for k in old.keys() | new.keys()
                     if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ConfigError(source, changed[0],
                          f"--resume continues the run in {previous.parent} whose config differs "
                          f"({shown}); only {', '.join(sorted(RESUMABLE_CHANGES - {'name', 'output_dir'}))} "
                          "may change: resume with the same config or start a new output_dir")


def train_from_config(
    path: str | os.PathLike,
    overrides: Iterable[str] = (),
    resume: bool = False,
    *,
    progress: bool = True,
) -> TrainResult:
    """Run the training described by the YAML file ``path``.

    Parameters
    ----------
    path
        A :class:`~mrirecon.training.config.TrainConfig` YAML file.
    overrides
        ``key.path=value`` strings (``--set``), applied before validation.
    resume
        Continue from ``output_dir/checkpoints/last.pt`` when it exists (bit for bit on CPU).
    progress
        Show a progress bar (rank 0).

    Raises
    ------
    ConfigError
        Unknown keys, wrong types, missing data folders, unknown model or parameters; the
        message names the file and the key.
    """
    from mrirecon.training.validate import validate_training

    cfg = validate_training(load_config(TrainConfig, path, overrides), str(path))
    try:
        train_set, val_set = build_datasets(cfg)
        torch.manual_seed(cfg.seed)  # model initialisation
        model = build_model_from_config(cfg)
    except ConfigError as e:
        raise ConfigError(str(path), e.key, str(e).split(": ", 1)[-1]) from e
    if cfg.loss.ssdu is not None:  # self-supervised: k-space / sinogram loss, no reference
        from mrirecon.training.ssdu import SelfSupervisedLoss, make_ssdu_validate_fn

        losses = {"loss_fn": None, "sample_loss": SelfSupervisedLoss(cfg.loss.ssdu)}
        validate = make_ssdu_validate_fn(val_set, cfg.loss.ssdu)
    else:
        losses = {"loss_fn": ReconstructionLoss(cfg.loss)}
        validate = make_validate_fn(val_set)
    trainer = Trainer(
        cfg,
        model,
        train_set,
        validate_fn=validate if cfg.val_every > 0 else None,
        progress=progress,
        **losses,
    )
    out = Path(cfg.output_dir)
    if resume:
        _check_resume_config(out / "config.yaml", to_dict(cfg), str(path))
    try:
        # a checkpoint that does not fit is refused before config.yaml is replaced (the next
        # --resume compared its config with the refused one's)
        if resume:
            trainer.resume()
        if trainer.rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        history = trainer.fit()
        if trainer.rank == 0:
            save_model(trainer.model, out / "model.pt", cfg.model.name, dict(cfg.model.params))
    finally:
        trainer.close()
    return TrainResult(cfg, trainer.model, history, out, trainer.step, trainer.elapsed)


def save_model(
    model: nn.Module, path: str | os.PathLike, name: str, params: dict, extra: dict | None = None
) -> Path:
    """Write ``state_dict`` to ``path`` (``.pt``) and the card ``<stem>.yaml`` beside it.

    The card holds ``model: {name, params}`` plus ``extra`` (data, steps, metrics, ...).
    """
    card = {"model": {"name": name, "params": params}, **(extra or {})}
    return write_weights(path, model.state_dict(), card)
