"""The training loop: one CPU, one GPU or many processes (``torchrun``, DDP), resumable bit for bit.

Data order and masks are functions of ``(seed, epoch, position)`` only, so a run gives the same
updates whatever the number of processes (for the same global batch) and a resumed run continues
exactly where it stopped. Samples are processed one at a time and their losses averaged, so slices
of different sizes can share a batch.

A dataset item must provide ``to(device)``, ``operator()`` (the physics operator of that sample),
``y`` (measured data), ``target`` (real image the model output is compared with, already cropped)
and ``max_value`` (the volume maximum, SSIM's data range), plus ``fname`` and ``slice_index``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from mrirecon.core.caches import register as register_cache
from mrirecon.core.device import resolve_device
from mrirecon.functional import center_crop
from mrirecon.io.errors import require_output_path
from mrirecon.models.backbones.unet import PoolingTooDeep
from mrirecon.models.template import take_auxiliary_loss
from mrirecon.threads import env_int
from mrirecon.training.checkpoint import (check_model_state, load_checkpoint, rng_state,
                                           save_checkpoint, set_rng_state)
from mrirecon.training.config import TrainConfig
from mrirecon.training.train_log import append_csv, truncate_csv
from mrirecon.training.distributed import distributed_context

log = logging.getLogger("mrirecon.train")


@functools.lru_cache(maxsize=2)  # the current epoch, and the next one a batch may reach into
def epoch_order(num_items: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The global sample order of an epoch (same on every rank and every machine); a pure
    function of its arguments, computed once per epoch (it was drawn again for every sample
    to read one element: 1.3 ms a sample at 35 820 slices, 16 ms at 300 000)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(num_items, generator=g).tolist())


register_cache(epoch_order.cache_clear)  # two orders, 11 MiB each at 300 000 slices


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """Seed for the fresh training mask of one sample."""
    return (seed * 2_654_435_761 + epoch * 97_531 + position * 7_919) % (2**31 - 1)


def magnitude_for_target(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Model output (complex or real image) -> magnitude cropped to the target's shape."""
    mag = x.abs() if x.is_complex() else x
    return center_crop(mag, tuple(target.shape[-2:]))



def _due(step: int, every: int) -> bool:
    """Whether a periodic action (``log_every``, ``val_every``, ``checkpoint_every``) falls on
    ``step``; ``every`` 0 means only at the last step (which the callers add). 0 passed the
    config check and then stopped the run after its first step with "ZeroDivisionError: integer
    modulo by zero", naming no key."""
    return every > 0 and step % every == 0

class Trainer:
    """Train ``model`` on ``train_set`` following ``config``; validate with ``validate_fn``.

    Parameters
    ----------
    config
        The :class:`~mrirecon.training.config.TrainConfig`: ``device``, ``seed`` (global torch
        seed, data order and training masks), ``optim`` (Adam, StepLR, batch size per process,
        ``max_steps``, ``grad_clip``), ``loss.adversarial``, ``amp``, ``log_every``,
        ``val_every``, ``checkpoint_every``, ``tensorboard`` and ``output_dir`` (where
        ``checkpoints/last.pt`` and ``train_log.csv`` go).
    model
        The network, moved to the training device; called as ``model(y, operator)`` (with
        ``loss_fn``) and wrapped in DistributedDataParallel when there are several processes.
        Only its parameters with ``requires_grad`` are optimised.
    train_set
        The training samples: ``len(train_set)`` and ``train_set.get(index, mask_seed=...)``
        returning an item as the module docstring describes; ``source_files()``, if it has
        one, names the files recorded in each checkpoint.
    loss_fn
        ``loss_fn(prediction, target, max_value) -> scalar`` on cropped magnitudes; a model's
        own term (:func:`~mrirecon.models.template.take_auxiliary_loss`: ISTA-Net+'s symmetry) is added.
    validate_fn
        Optional ``validate_fn(model, device) -> dict[str, float]``; rank 0's result is
        logged. Called on rank 0 alone while the other ranks wait in a barrier, unless it is
        marked ``validate_fn.collective = True``: then it is called on every rank at the same
        steps and may use collectives (``validation.make_validate_fn`` and
        ``ssdu.make_ssdu_validate_fn`` share the volumes among the ranks and gather the
        scores).
    progress
        Show a tqdm progress bar of the steps (on rank 0 only).
    sample_loss
        Optional ``sample_loss(model, sample, seed) -> scalar`` replacing the image loss
        (self-supervised training, :class:`~mrirecon.training.ssdu.SelfSupervisedLoss`);
        ``seed`` is :func:`~mrirecon.training.ssdu.split_seed` of ``(seed, epoch, index)``.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        train_set,
        *,
        loss_fn: Callable | None,
        validate_fn: Callable | None = None,
        progress: bool = True,
        sample_loss: Callable | None = None,
    ) -> None:
        self.cfg = config
        self.rank, self.world, self._owns_pg = distributed_context()
        dev = resolve_device(config.device)
        if dev == "cuda":
            local = env_int("LOCAL_RANK", 0)  # "x": int()'s message named no variable
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")
        torch.manual_seed(config.seed)
        self.model = model.to(self.device)
        self.ddp = None
        if self.world > 1:
            from mrirecon.training.distributed import no_forward_buffer_sync

            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                **no_forward_buffer_sync(),  # once per step instead (_train_step)
            )
        from mrirecon.training.batchnorm_order import RunningStatsInOrder

        #: batch-norm running statistics as a 1-process run with the global batch updates them
        #: (``None``: one process, or no batch-norm layer)
        self.bn_order = RunningStatsInOrder(self.model, self.world)
        self.bn_order = self.bn_order if self.bn_order.applies() else None
        self.train_set = train_set
        from mrirecon.training.run_checks import file_records

        #: the files trained on, recorded in each checkpoint (``--resume`` compares them)
        self.train_files = file_records(train_set)
        if (loss_fn is None) == (sample_loss is None):
            raise ValueError("Trainer: give exactly one of loss_fn and sample_loss")
        self.loss_fn, self.sample_loss = loss_fn, sample_loss
        self.validate_fn = validate_fn
        self.progress = progress and self.rank == 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(
            params, lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        # lr_step = 0: constant rate (gamma 1), independent of max_steps so that resuming with a
        # larger max_steps continues the same schedule
        step, gamma = (
            (config.optim.lr_step, config.optim.lr_gamma) if config.optim.lr_step else (1, 1.0)
        )
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step, gamma)
        self.critic = self._critic()
        self.disc_loss = float("nan")  # the discriminator's loss at the last step
        self.step = 0
        self.elapsed = 0.0  # training seconds over all runs (resumes included)
        self.resumed = False  # a checkpoint was loaded (resume)
        self._saved_step = -1  # the step of the checkpoint on disk, written or resumed
        self._resume_said = False  # an interrupt's --resume line was logged
        self._boundary = None  # (step, RNG states, buffers) before the step under way
        self.resumed_at: int | None = None  # the step it was loaded at
        self.out = Path(config.output_dir)
        self.history: list[dict] = []

    def _critic(self):
        """A patch discriminator with its optimiser when ``loss.adversarial > 0``, else None.

        Initialised from its own seed, ``seed + 1`` (:func:`~mrirecon.models.init.seeded_init`:
        the global random stream is left untouched, no accelerator's generator is seeded).
        """
        loss = self.cfg.loss
        if not getattr(loss, "adversarial", 0.0):
            return None
        from mrirecon.models.init import seeded_init
        from mrirecon.training.losses_gan import AdversarialCritic

        with seeded_init(int(self.cfg.seed) + 1):  # the CPU generator only, restored after
            critic = AdversarialCritic(mode=loss.adversarial_mode, lr=loss.discriminator_lr)
        return critic.to(self.device)

    # -- checkpoints ------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / "last.pt"

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "world_size": self.world,  # --resume compares the global batch (run_checks)
            "elapsed_seconds": self.elapsed,
            "rng": rng_state(),
            "model_name": self.cfg.model.name,
            "config": self._config_text(),  # what --resume compares with (not config.yaml)
            "train_files": self.train_files,  # ... and these: {name, size, mtime_ns}
            **({"critic": self.critic.checkpoint_state()} if self.critic is not None else {}),
        }

    def _config_text(self) -> str:
        """The run's config as YAML (recorded in each checkpoint); empty if not a dataclass."""
        import dataclasses

        import yaml

        from mrirecon.core.config import to_dict

        if not dataclasses.is_dataclass(self.cfg):
            return ""
        return yaml.safe_dump(to_dict(self.cfg), sort_keys=False)

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.checkpoint_path, self.state())
        self._saved_step = self.step
        if self.world > 1:
            dist.barrier()

    def _save_interrupted(self) -> None:
        """Ctrl-C, SIGTERM or a notebook's interrupt during a step: checkpoint the state before
        that step, when no update has begun (the forward and backward passes, nearly all of a
        step), so that ``--resume`` loses nothing and still gives the uninterrupted run's weights
        bit for bit. The batch-norm running statistics that the step's forward passes moved and
        the RNG states it drew from are put back first. One process without an adversarial
        critic only (the ranks of a distributed run stop at different points; a critic's own
        statistics are not put back): there the last periodic checkpoint stays."""
        boundary, self._boundary = self._boundary, None
        if boundary is None or self.world > 1 or self.critic is not None \
                or boundary[0] <= self._saved_step:
            self._said_resumable()  # the periodic checkpoint holds it (checkpoint_every: 1)
            return
        step, rng, buffers = boundary
        with torch.no_grad():
            for name, b in self.model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
        set_rng_state(rng)
        save_checkpoint(self.checkpoint_path, self.state())
        self._saved_step = step
        self._resume_said = True
        log.warning("interrupted during step %d: the state after step %d was saved to %s; "
                    "--resume continues from there", step + 1, step, self.checkpoint_path)

    def _said_resumable(self) -> None:
        """On an interrupt that saves nothing new (the last checkpoint already holds the state,
        or it came during validation or a checkpoint's write): the ``--resume`` line all the
        same, naming the step the checkpoint holds (it was said only when a state was saved)."""
        if self.rank != 0 or self._resume_said or self._saved_step < 0:
            return
        self._resume_said = True
        log.warning("interrupted after step %d: the checkpoint %s holds the state after step %d; "
                    "--resume continues from there", self.step, self.checkpoint_path,
                    self._saved_step)

    def resume(self, check: Callable[[dict], None] | None = None) -> bool:
        """Load ``last.pt`` when it exists; returns whether a checkpoint was found.

        ``check(checkpoint)`` may refuse it (the config it records) after its weights were found
        to fit the model and before anything is loaded. A checkpoint past ``optim.max_steps`` is
        refused: the loop would not run and ``model.pt`` would be the longer run's weights.
        Temporary files that a killed run's atomic writes left (``checkpoints/.last.pt.*.tmp``,
        ``.train_log.csv.*.tmp``) are deleted first: they stayed after every resume."""
        if self.rank == 0:
            from mrirecon.io.atomic import remove_temp_files

            now = time.time()
            gone = [p for d in (self.out, self.checkpoint_path.parent)
                    for p in remove_temp_files(d, before=now)]
            if gone:
                log.info("removed %d temporary file(s) an interrupted run left: %s", len(gone),
                         ", ".join(str(p) for p in gone[:3]) + (" ..." if len(gone) > 3 else ""))
        if not self.checkpoint_path.is_file():  # was silent: a mistyped output_dir trained afresh
            if self.rank == 0:
                log.warning("--resume: no checkpoint %s; training starts at step 0",
                            self.checkpoint_path)
            return False
        ckpt = load_checkpoint(self.checkpoint_path, map_location=self.device)
        check_model_state(self.checkpoint_path, ckpt, self.model, self.cfg.model.name)
        if check is not None:
            check(ckpt)
        steps, limit = int(ckpt["step"]), self.cfg.optim.max_steps
        if steps > limit:  # was: the loop skipped, model.pt the longer run's weights, no word
            raise ValueError(
                f"checkpoint {self.checkpoint_path}: step: {steps} is past optim.max_steps "
                f"{limit}: the run being resumed trained {steps} steps already, so nothing would "
                f"be trained and model.pt would be its {steps}-step weights: resume with "
                f"optim.max_steps >= {steps}, or train {limit} steps into a new output_dir")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.critic is not None and "critic" in ckpt:
            self.critic.load_checkpoint_state(ckpt["critic"])
        self.step = self.resumed_at = self._saved_step = int(ckpt["step"])
        self.elapsed = float(ckpt.get("elapsed_seconds", 0.0))
        self.resumed = True
        set_rng_state(ckpt["rng"])
        if self.rank == 0:
            log.info("resumed from %s at step %d", self.checkpoint_path, self.step)
        return True

    # -- loop -------------------------------------------------------------------------------
    def _positions(self, step: int) -> list[tuple[int, int, int]]:
        """(dataset index, epoch, position) of this rank's samples for global step ``step``."""
        n = len(self.train_set)
        global_batch = self.cfg.optim.batch_size * self.world
        out = []
        for j in range(self.cfg.optim.batch_size):
            g = step * global_batch + j * self.world + self.rank
            epoch, pos = divmod(g, n)
            out.append((epoch_order(n, self.cfg.seed, epoch)[pos], epoch, pos))
        return out

    def _train_step(self) -> float:
        model = self.ddp or self.model
        model.train()
        if self.ddp is not None:
            from mrirecon.training.distributed import broadcast_buffers

            broadcast_buffers(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        items = self._positions(self.step)
        total = 0.0
        fakes = []  # (prediction, target, max_value) for the discriminator's step
        order = self.bn_order
        if order is not None:
            order.start()
        for i, (index, epoch, pos) in enumerate(items):
            if order is not None:
                order.next_sample()
            sample = self.train_set.get(index, mask_seed=sample_seed(self.cfg.seed, epoch, pos))
            sample = sample.to(self.device)
            sync = self.ddp is None or i == len(items) - 1
            ctx = model.no_sync() if (self.ddp is not None and not sync) else _null()
            with ctx:
                amp = self.cfg.amp and self.device.type == "cuda"
                if self.cfg.amp and not amp and not getattr(self, "_amp_said", False):
                    self._amp_said = True  # once per run; it was ignored without a word
                    if self.rank == 0:
                        log.warning("amp: true has no effect on %s (bfloat16 autocast is CUDA's); "
                                    "training in float32", self.device.type)
                if self.sample_loss is not None:  # self-supervised: no target
                    from mrirecon.training.ssdu import split_seed

                    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                        loss = (self.sample_loss(model, sample, split_seed(self.cfg.seed, epoch, index))
                                + take_auxiliary_loss(model))
                    loss = loss / len(items)
                    loss.backward()
                    total += float(loss.detach())
                    continue
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    x = model(sample.y, sample.operator())
                pred = magnitude_for_target(x.float() if not x.is_complex() else x, sample.target)
                loss = self.loss_fn(pred, sample.target, sample.max_value) + take_auxiliary_loss(model)
                if self.critic is not None:
                    adv = self.critic.generator_loss(pred, sample.max_value)
                    loss = loss + self.cfg.loss.adversarial * adv
                    fakes.append((pred.detach(), sample.target, sample.max_value))
                loss = loss / len(items)
                loss.backward()
            total += float(loss.detach())
        if order is not None:
            order.finish()
        self._boundary = None  # the update begins: the model leaves the state before the step
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        if self.critic is not None:  # one discriminator update per generator step
            self.disc_loss = self.critic.discriminator_step(fakes)
        self.step += 1
        if self.world > 1:
            t = torch.tensor([total], dtype=torch.float64)
            dist.all_reduce(t)
            total = float(t) / self.world
        return total

    def fit(self, *, resume: bool = False) -> list[dict]:
        """Train until ``optim.max_steps``; returns the logged history (rank 0). ``resume``:
        :meth:`resume` first (unless it was called already). The outputs
        (:func:`trainer_outputs`) are checked first: a FIFO at ``train_log.csv`` blocked the
        run for ever after its first step."""
        if self.rank == 0:
            check_outputs(trainer_outputs(self.out, bool(self.cfg.tensorboard)))
        if resume and not self.resumed:
            self.resume()
        self.out.mkdir(parents=True, exist_ok=True)
        csv_path = self.out / "train_log.csv"
        if not self.resumed and self.rank == 0 and csv_path.is_file():
            csv_path.unlink()  # a fresh run starts a fresh log
        elif self.rank == 0 and csv_path.is_file():  # the steps after the checkpoint run again:
            # their rows were logged twice (51-77 of 300); the rows kept are the history again
            self.history = truncate_csv(csv_path, self.step)
        writer = self._tensorboard()
        bar = _progress(self.cfg.optim.max_steps, self.step, self.progress, self.cfg.name)
        try:
            t0, start_elapsed = time.perf_counter(), self.elapsed
            while self.step < self.cfg.optim.max_steps:
                self._boundary = (self.step, rng_state(), {
                    n: b.detach().clone() for n, b in self.model.named_buffers()})
                try:
                    loss = self._train_step()
                except ValueError as err:  # the U-Net's size check, or torch's words (a
                    # backbone without it), naming no setting of the config
                    if not (isinstance(err, PoolingTooDeep)
                            or "Expected more than 1 spatial element" in str(err)):
                        raise
                    raise ValueError(_too_deep(self.cfg.model.params, err)) from None
                except KeyboardInterrupt:  # Ctrl-C, SIGTERM (io.errors.Terminated)
                    self._save_interrupted()
                    raise
                self.elapsed = start_elapsed + time.perf_counter() - t0
                if not math.isfinite(loss):
                    o = self.cfg.optim  # the user's settings, not a bug: a ValueError (exit 2)
                    raise ValueError(
                        f"training loss became {loss} at step {self.step}: the training diverged; "
                        f"lower optim.lr (now {o.lr:g}) or {'lower' if o.grad_clip else 'set'} "
                        f"optim.grad_clip (now {o.grad_clip}); "
                        "model.pt was not written")
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                row = {
                    "step": self.step,
                    "loss": loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "seconds": self.elapsed,
                }
                if self.critic is not None:
                    row["disc_loss"] = self.disc_loss
                if self.validate_fn is not None and (
                    _due(self.step, self.cfg.val_every) or self.step == self.cfg.optim.max_steps
                ):
                    # a collective one on every rank: make_validate_fn's ranks share the
                    # volumes (rank 0 validated alone while the others waited here, past NCCL's
                    # collective timeout); a user's own on rank 0 alone, as documented
                    if self.rank == 0 or getattr(self.validate_fn, "collective", False) is True:
                        scores = self.validate_fn(self.model, self.device)
                        if self.rank == 0:
                            row.update({f"val_{k}": v for k, v in scores.items()})
                    if self.world > 1:
                        dist.barrier()
                if self.rank == 0 and (
                    _due(self.step, self.cfg.log_every)
                    or any(k.startswith("val_") for k in row)
                    or self.step == self.cfg.optim.max_steps
                ):
                    self.history.append(row)
                    append_csv(csv_path, row)
                    if writer is not None:
                        for k, v in row.items():
                            if k != "step":
                                writer.add_scalar(k, v, self.step)
                if _due(self.step, self.cfg.checkpoint_every) or self.step == self.cfg.optim.max_steps:
                    self.save()
        except KeyboardInterrupt:  # during validation, logging or a checkpoint's write too
            self._said_resumable()
            raise
        finally:  # an interrupted (Ctrl-C, notebook) or diverged run too: the writer's thread
            bar.close()  # stayed alive, one per run
            if writer is not None:
                writer.close()
        return self.history

    def _tensorboard(self):
        if not (self.cfg.tensorboard and self.rank == 0):
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: CSV logging still runs
            log.warning("tensorboard is not installed; logging to CSV only")
            return None
        # resumed: events after the checkpoint's step are dropped, as the CSV's rows
        return SummaryWriter(log_dir=str(self.out / "tensorboard"),
                             purge_step=self.step + 1 if self.resumed else None)

    def close(self) -> None:
        if self._owns_pg and dist.is_initialized():
            dist.destroy_process_group()


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _progress(total: int, initial: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, unit="step")


def trainer_outputs(out: Path, tensorboard: bool) -> list[tuple[Path, str, bool]]:
    """``(path, what, is_folder)`` of what :class:`Trainer` writes into ``out``: the checkpoint
    folder and ``last.pt``, ``train_log.csv`` and, with ``tensorboard``, its event folder."""
    return [(out / "checkpoints", "checkpoint folder", True),
            (out / "checkpoints" / "last.pt", "checkpoint", False),
            (out / "train_log.csv", "training log", False),
            *([(out / "tensorboard", "TensorBoard event folder", True)] if tensorboard else [])]


def check_outputs(outputs: list[tuple[Path, str, bool]]) -> None:
    """Each of ``outputs`` (:func:`trainer_outputs`) absent or of its kind, else a ``ValueError``
    naming it before any work (:func:`~mrirecon.io.errors.require_output_path`)."""
    for path, what, folder in outputs:
        require_output_path(path, f"mrirecon train's {what}", folder=folder)


def _too_deep(params, err: ValueError) -> str:
    """The message for an instance norm that saw one pixel: a U-Net pooled past the image."""
    depth = {k: v for k, v in dict(params or {}).items()
             if k in ("pools", "sens_pools", "num_pools", "num_pool_layers")}
    said = ", ".join(f"{k} {v}" for k, v in depth.items()) or "the model's defaults"
    return (f"model.params: a U-Net pools the training images down to one pixel ({err}); each "
            f"pooling halves the image ({said}): lower the pooling depth until the smallest "
            "training image keeps at least 2 x 2 pixels after it (e.g. 4 poolings need 32 x 32)")
