"""``train_from_config``: YAML -> datasets, model, loss, trainer; what ``mrirecon train`` runs.

Outputs in ``output_dir``: ``config.yaml`` (the resolved configuration, overrides applied),
``checkpoints/last.pt`` (resumable, weights-only), ``train_log.csv``, ``tensorboard/`` (when
installed) and, at the end, ``model.pt`` (the model's ``state_dict`` only) with ``model.yaml``
(its card: name and parameters, data, command and config, and the ``training_range`` measured
on the training data, :mod:`mrirecon.training.run_card`), loadable by
:func:`mrirecon.training.weights.load_pretrained`. A fresh run into a folder holding another
run's checkpoint or model is refused, training and validation files that coincide too
(:mod:`mrirecon.training.run_checks`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from torch import nn

from mrirecon.core.config import ConfigError, load_config, overrides_list, to_dict
from mrirecon.io.atomic import atomic_write_text, file_in_the_way
from mrirecon.io.weights import write_weights
from mrirecon.training.config import TrainConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.losses import ReconstructionLoss
from mrirecon.training.run_checks import (RESUMABLE_CHANGES, check_fresh_output,  # noqa: F401
                                          check_resume_config, check_resume_files,
                                          resume_global_batch,
                                          check_validation_overlap, lock_output_dir,
                                          replace_outputs)
from mrirecon.training.distributed import distributed_context, leave_group
from mrirecon.training.trainer import Trainer, check_outputs, trainer_outputs
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
    rank
        This process's rank under torchrun (0 without one): rank 0 wrote ``model.pt`` and says
        so (``mrirecon train``).
    """

    config: TrainConfig
    model: nn.Module
    history: list[dict]
    output_dir: Path
    steps: int
    seconds: float
    rank: int = 0


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
    except (TypeError, ValueError) as e:  # a parameter the model refuses (VN / ADMM-CSNet's even
        # kernel_size): named as the config's key, not as the model's words alone
        raise ConfigError("", "model.params", str(e)) from e


def build_datasets(cfg: TrainConfig):
    """Training set (fresh masks / views / noise) and validation set (fixed ones) of the config:
    :class:`MRITrainingSet` s for ``modality: mri``, :class:`CTTrainingSet` s for ``ct``."""
    d = cfg.data
    for key, folder in (("data.train", d.train), ("data.val", d.val)):
        if Path(folder).is_file():
            raise ConfigError("", key, f"{folder} is a file, not a folder: give the folder that "
                              f"holds it ({Path(folder).parent})")
        if not Path(folder).is_dir():
            raise ConfigError("", key, f"folder {folder} does not exist")
    ssdu = getattr(cfg.loss, "ssdu", None) is not None  # self-supervised: references optional
    if d.modality == "ct":
        from mrirecon.training.data_ct import CTTrainingSet

        try:
            train = CTTrainingSet(d.train, d.ct_views, d.ct_photons, train=True,
                                  require_reference=not ssdu, sample_rate=d.sample_rate,
                                  seed=cfg.seed)
            val = CTTrainingSet(
                d.val, d.ct_views, d.ct_photons, train=False, max_slices=cfg.val_max_slices,
                require_reference=not ssdu,
            )
        except ValueError as e:
            raise ConfigError("", "data", str(e)) from e
        return train, val
    from mrirecon.training.maps_cache import MapsCache, budget_from_mb

    cache = MapsCache(budget_from_mb(d.maps_cache_mb))  # one budget for both sets, per process
    if ssdu:  # k-space as acquired (test / challenge / undersampled ISMRMRD files)
        from mrirecon.training.data_acquired import AcquiredMRISet

        try:
            train = AcquiredMRISet(d.train, d.mask, d.maps, train=True,
                                   sample_rate=d.sample_rate, seed=cfg.seed, maps_cache=cache)
            val = AcquiredMRISet(d.val, d.mask, d.maps, train=False,
                                 max_slices=cfg.val_max_slices, maps_cache=cache)
        except ValueError as e:
            raise ConfigError("", "data", str(e)) from e
        return train, val
    train = MRITrainingSet(d.train, d.mask, d.maps, train=True, sample_rate=d.sample_rate,
                           seed=cfg.seed, maps_cache=cache)
    val = MRITrainingSet(d.val, d.mask, d.maps, train=False, max_slices=cfg.val_max_slices,
                         maps_cache=cache)
    return train, val


def _check_resume_config(previous: Path | dict | str, now: dict, source: str,
                         where: Path | None = None) -> None:
    """Refuse ``--resume`` when the config differs from the run being resumed in anything but
    :data:`RESUMABLE_CHANGES` (a changed learning rate was written to ``config.yaml`` while the
    checkpoint's optimiser state kept the old one; changed data trained on other files; another
    architecture failed with an internal size mismatch). ``previous``: the config the checkpoint
    records (dict or YAML text), or a ``config.yaml`` path
    (:func:`~mrirecon.training.run_checks.check_resume_config`)."""
    check_resume_config(previous, now, source, where)


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

    overrides = overrides_list(overrides, "train_from_config")  # a string: a TypeError
    cfg = validate_training(load_config(TrainConfig, path, overrides, command="train"),
                              str(path))
    out = Path(cfg.output_dir)
    try:
        _check_output_dir(out, str(path))
        _check_output_files(out, cfg, str(path))
    except ConfigError as err:  # --set output_dir=...: named as the override's
        raise err.blamed_on(overrides) from None
    now = to_dict(cfg)
    # under torchrun: meet the other processes before the data are read and the output_dir is
    # created and locked (a rank whose peers never came left both behind when it was stopped)
    rank, _, owned = distributed_context()
    try:
        result = _built_and_trained(cfg, path, overrides, resume, progress, out, now, rank)
        if owned and dist.is_initialized():  # every rank done before any tears the group down:
            dist.barrier()  # rank 0 hosts the store; a rank still using it aborted (SIGABRT)
            leave_group()  # and rank 0 the last to leave it
        return result
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def _check_output_dir(out: Path, source: str) -> None:
    """``output_dir`` is a folder or can become one: a file there (or above it) is refused
    naming the key, before any work ("OUT: File exists" named neither)."""
    p = file_in_the_way(out)
    if p is not None:
        raise ConfigError(source, "output_dir", f"{p} is a file, not a folder"
                          + ("" if p == out else f" (it is above {out})") + "; give a folder path")


def _check_output_files(out: Path, cfg: TrainConfig, source: str) -> None:
    """What the run writes into ``out`` (``config.yaml``, the trainer's checkpoint, log and
    TensorBoard folder, ``model.pt`` and its card ``model.yaml``) is absent or of its kind, or
    a :class:`ConfigError` naming the path before any data are read: a FIFO at
    ``train_log.csv`` blocked the run for ever after its first step holding the folder's lock,
    a folder at ``model.pt`` failed it after the whole training."""
    try:
        check_outputs([(out / "config.yaml", "resolved config", False),
                       *trainer_outputs(out, bool(cfg.tensorboard)),
                       (out / "model.pt", "model weights", False),
                       (out / "model.yaml", "model card", False)])
    except ValueError as err:
        raise ConfigError(source, "output_dir", str(err)) from None


def _built_and_trained(cfg: TrainConfig, path, overrides: list[str], resume: bool,
                       progress: bool, out: Path, now: dict, rank: int) -> TrainResult:
    """:func:`train_from_config` once the config is checked and the process group joined (this
    process of rank ``rank``). The config's warnings are said once per job, by rank 0 (as the
    trainer's ``amp`` warning): every rank repeated them, naming no rank."""
    try:
        train_set, val_set = build_datasets(cfg)
        if cfg.optim.batch_size > len(train_set) and rank == 0:  # steps repeat slices
            import warnings

            warnings.warn(f"{path}: optim.batch_size: {cfg.optim.batch_size} is more than the "
                          f"{len(train_set)} training slices: every step repeats slices (one step "
                          f"is {cfg.optim.batch_size / len(train_set):.1f} epochs); lower it to "
                          f"{len(train_set)} or less", RuntimeWarning, stacklevel=2)
        if cfg.val_every > 0:  # validation runs: it must not score training data
            check_validation_overlap(train_set, val_set, "")
            _warn_validation_mismatch(train_set, val_set, path, rank)
        torch.manual_seed(cfg.seed)  # model initialisation
        model = build_model_from_config(cfg)
    except ConfigError as e:
        raise ConfigError(str(path), e.key, str(e).split(": ", 1)[-1]) from e
    with lock_output_dir(out):  # a second run into output_dir is refused while this one runs
        return _train(cfg, path, overrides, resume, progress, now, train_set, val_set, model)


def _warn_validation_mismatch(train_set, val_set, path, rank: int) -> None:
    """A warning (rank 0) when the validation data lie outside the training data's range
    (:func:`~mrirecon.training.validation.validation_mismatch`)."""
    from mrirecon.training.validation import validation_mismatch

    if rank != 0 or not hasattr(train_set, "training_range"):
        return
    if found := validation_mismatch(train_set.training_range(), val_set.training_range()):
        import warnings

        warnings.warn(f"{path}: data.val: the validation data lie outside the training data's "
                      f"range: {'; '.join(found)}; their scores go into the card (first / best "
                      "/ last; model.pt is the last state) and the check against zero-filled, "
                      "but score data the model is not trained for: validate "
                      "on held-back files of the training data's kind", RuntimeWarning,
                      stacklevel=3)


def _train(cfg: TrainConfig, path, overrides: list[str], resume: bool, progress: bool, now: dict,
           train_set, val_set, model: nn.Module) -> TrainResult:
    """:func:`train_from_config` once the datasets and model are built, holding the lock of
    ``output_dir`` (rank 0)."""
    out = Path(cfg.output_dir)
    stale = []  # a fresh run into another run's outputs: refused before anything is written
    if not (resume and (out / "checkpoints" / "last.pt").is_file()):
        stale = check_fresh_output(out, now, str(path))
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
    try:
        # a checkpoint that does not fit is refused before config.yaml is replaced (the next
        # --resume compared its config with the refused one's); the config compared is the one
        # the checkpoint records (a fresh run into the folder had replaced config.yaml), else
        # config.yaml (checkpoints of older versions)
        if resume:
            def check(ckpt: dict) -> None:
                same = now
                if ckpt.get("config"):  # a per-process batch that keeps the global batch
                    same = resume_global_batch(ckpt["config"], ckpt.get("world_size"), now,
                                               trainer.world, str(path))
                _check_resume_config(ckpt.get("config") or out / "config.yaml", same, str(path),
                                     out)
                check_resume_files(ckpt.get("train_files"), trainer.train_files, str(path), out,
                                   str(cfg.data.train))

            trainer.resume(check=check)
        if trainer.rank == 0:
            replace_outputs(out, stale)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "config.yaml", yaml.safe_dump(now, sort_keys=False))
        history = trainer.fit()
        if trainer.rank == 0:
            from mrirecon.training.run_card import training_card

            card = training_card(cfg, train_set, val_set, source=str(path), overrides=overrides,
                                 resume=resume, steps=trainer.step, seconds=trainer.elapsed,
                                 resumed_at=trainer.resumed_at, device=str(trainer.device),
                                 history=history, world=trainer.world)
            from mrirecon.training.run_card import validation_problem

            problem = validation_problem(card["training"].get("validation"), cfg.optim.lr)
            # written all the same (the card says so): the weights of max_steps; saved before the
            # warning, which -W error raises (a finished run had left no model.pt)
            save_model(trainer.model, out / "model.pt", cfg.model.name, dict(cfg.model.params),
                       card)
            if problem:
                import warnings

                warnings.warn(f"{path}: {problem}", RuntimeWarning, stacklevel=2)
    finally:
        trainer.close()
    return TrainResult(cfg, trainer.model, history, out, trainer.step, trainer.elapsed,
                       trainer.rank)


def save_model(
    model: nn.Module, path: str | os.PathLike, name: str | None = None, params: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``state_dict`` to ``path`` (``.pt``) and the card ``<stem>.yaml`` beside it.

    The card holds ``model: {name, params}`` plus ``extra`` (data, steps, metrics, ...).
    ``name`` / ``params`` ``None`` (default): those :func:`~mrirecon.models.build_model`
    recorded when it made the model (``model.build_params``; ``load_pretrained`` makes its
    models with it too). Either way they are checked first
    (:func:`~mrirecon.models.registry.card_params`): a name that is no model of
    :func:`~mrirecon.models.available_models`, params that disagree with those the model was
    built with (a parameter left out means its default), or params with which
    ``build_model(name, **params)`` makes another class, other weights or other settings
    (``iterations``, CG steps, ...) raise ``ValueError`` naming the parameter, and nothing is
    written. Before, such a card loaded another model without a word (MoDL saved with only
    ``{features, layers}`` came back with 10 iterations instead of 2: 6.7 % off).

    A model loaded with :func:`~mrirecon.training.weights.load_pretrained` (fine-tuned in a
    notebook, adapted by the pipeline) carries its card: the new card keeps that card's
    ``training_range``, ``overridable`` and ``known_failures``
    (:data:`~mrirecon.training.weights.INHERITED_CARD_KEYS`, the sections the ``adapt:`` stage
    keeps) and records ``fine_tuned_from``: the shipped ``name`` or the ``path`` of the weights
    it was loaded from, their ``sha256``, and their own ``fine_tuned_from`` if any. Without
    them the fine-tuned weights ran outside the training range without a warning. ``extra``
    wins over what is inherited (a run's measured ``training_range``).
    """
    from mrirecon.models.registry import card_params
    from mrirecon.training.weights import inherited_card, resolve_priors

    name, params = card_params(model, name, params, resolve=resolve_priors)
    card = {"model": {"name": name, "params": params}, **inherited_card(model), **(extra or {})}
    return write_weights(path, model.state_dict(), card)
