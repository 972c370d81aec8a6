"""Validation with the fastMRI metrics: reconstruct slices, stack them per file, score volumes.

Also the two classical baselines reported on model cards: zero-filled (RSS of ``F^H y``) and
CG-SENSE (``(A^H A + lam I)^{-1} A^H y`` with ESPIRiT maps from the centre columns every mask
acquires).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor, nn

from mrirecon.functional import center_crop, ifft2c, rss
from mrirecon.metrics import MetricsReport, evaluate_volumes
from mrirecon.operators.mri import sense
from mrirecon.solvers.cg import cg
from mrirecon.solvers.convergence import quiet
from mrirecon.training.data import MRITrainingSet, TrainingSample, calibrate_maps

Reconstructor = Callable[[TrainingSample], Tensor]


def _magnitude(x: Tensor, target: Tensor) -> Tensor:
    """``|x|`` cropped to the target, in storage of its own: ``center_crop`` is a view, which
    kept the whole (e.g. readout-oversampled, 2x) image alive."""
    mag = x.abs() if x.is_complex() else x
    return center_crop(mag.float(), tuple(target.shape[-2:])).clone()


def model_reconstructor(model: nn.Module, device: torch.device | str = "cpu") -> Reconstructor:
    """``sample -> (1, h, w)`` magnitude of ``model(y, op)`` (eval mode, no gradients): each
    call puts ``model`` in eval mode and back (a model left in train mode, as the trainer
    leaves it, was scored with batch statistics, 16.2 against 21.1 dB, and its running
    statistics moved)."""

    def run(sample: TrainingSample) -> Tensor:
        s = sample.to(device)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return _magnitude(model(s.y, s.operator()), s.target).cpu()
        finally:
            model.train(was_training)

    return run


def fbp_reconstructor(sample) -> Tensor:
    """Filtered back-projection (Ram-Lak) of a CT sample, ``(1, H, W)``."""
    from mrirecon.operators.fbp import fbp

    return _magnitude(fbp(sample.y * sample.norm, sample.geometry), sample.target)


def zero_filled(sample: TrainingSample) -> Tensor:
    """RSS of the zero-filled coil images, cropped to the target: ``(1, h, w)``."""
    return _magnitude(rss(ifft2c(sample.y), dim=-3), sample.target)


def input_baseline(dataset, modality: str) -> dict:
    """The validation set's mean score without a model, the bar a trained model must clear:
    ``{"method", "PSNR", "SSIM"}`` of the zero-filled RSS (MRI) or the Ram-Lak FBP (CT) on the
    same slices and masks as the trainer's validation (:func:`make_validate_fn`)."""
    method, fn = ("fbp", fbp_reconstructor) if modality == "ct" else ("zero_filled", zero_filled)
    mean = evaluate_reconstructor(fn, dataset).mean()
    return {"method": method, "PSNR": float(mean["PSNR"]), "SSIM": float(mean["SSIM"])}


def cg_sense_reconstructor(
    dataset: MRITrainingSet, lam: float = 0.01, iterations: int = 20
) -> Reconstructor:
    """CG-SENSE with ESPIRiT maps from the always-acquired centre of each slice.

    ``lam`` is relative to ``max |A^H y|``'s scale-free gram (maps have unit norm, so ``A^H A``
    has eigenvalues in ``[0, 1]``).
    """

    def run(sample: TrainingSample) -> Tensor:
        y = sample.y[0]
        centre = dataset.common_center(y.shape[-1])
        maps = calibrate_maps(y, "espirit", centre)
        op = sense(maps, sample.mask)
        rhs = op.H(y)
        with quiet():  # a fixed-budget baseline (early exit at 1e-6), reported by its scores
            x = cg(lambda v: op.gram(v) + lam * v, rhs, iterations=iterations, tolerance=1e-6)
        return _magnitude(x.unsqueeze(0), sample.target)

    return run


def volume_groups(dataset) -> list[list[int]] | None:
    """``dataset``'s indices grouped by volume, volumes in the order of their first slice, from
    its ``volume_keys()`` (one key per index, the ``fname`` its sample carries, read without
    loading a slice: :class:`MRITrainingSet`, ``AcquiredMRISet``, ``CTTrainingSet``); ``None``
    for a dataset without it (scored by runs of equal ``fname``)."""
    keys = getattr(dataset, "volume_keys", None)
    if keys is None:
        return None
    groups: dict = {}
    for i, key in enumerate(keys()):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def _scored(name: str, samples: list[tuple[int, Tensor, Tensor]]) -> dict[str, float]:
    """NMSE / PSNR / SSIM of one volume from its ``(slice_index, target, prediction)`` slices,
    stacked in slice order (:func:`evaluate_volumes` of that volume alone)."""
    samples.sort(key=lambda t: t[0])
    gt = torch.stack([t for _, t, _ in samples])
    pred = torch.stack([p for _, _, p in samples])
    samples.clear()  # the slices go; the stacks go when this returns
    report = evaluate_volumes({name: gt}, {name: pred}, metrics=("NMSE", "PSNR", "SSIM"),
                              nonfinite="nan")  # a diverged state scores NaN
    return {k: float(v[0]) for k, v in report.values.items()}


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    import torch.distributed as dist

    if distributed and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


@torch.no_grad()
def evaluate_reconstructor(reconstruct: Reconstructor, dataset: MRITrainingSet, *,
                           distributed: bool = False) -> MetricsReport:
    """Per-volume NMSE / PSNR / SSIM of ``reconstruct`` over ``dataset`` (validation masks).

    Slices are stacked per file in slice order; PSNR and SSIM use each volume's maximum, as
    ``fastmri.evaluate`` does. A volume with a sample without a target (a test-layout file in
    a self-supervised validation folder) is left out. One volume is held at a time: it is scored when its last slice
    is reconstructed, then dropped and the heap trimmed
    (:func:`~mrirecon.core.memory.release_memory`). Volumes come from the dataset's
    ``volume_keys()`` (:func:`volume_groups`); a dataset without it is scored by its runs of
    equal ``fname``, and a file whose slices come back after another file's is refused. (Every
    slice's target and prediction were kept to the end: ~1.4 MiB a 384 x 192 slice, some 10 GB
    for the fastMRI knee validation set.)

    ``distributed``: in an initialised process group of ``W > 1`` ranks, rank ``r`` scores
    volumes ``r, r + W, ...`` and the per-volume scores are gathered, so every rank returns the
    whole report (the same as one process, volume for volume); a collective, so every rank must
    call it. A dataset without ``volume_keys()`` is scored whole on every rank.
    """
    from mrirecon.core.memory import release_memory

    def read(i: int):
        return dataset.get(i, mask_seed=None) if not dataset.train else dataset.get(i, mask_seed=i)

    groups = volume_groups(dataset)
    rank, world = _rank_and_world(distributed) if groups is not None else (0, 1)
    scored: list[tuple[int, str, dict[str, float]]] = []  # (volume number, name, metrics)
    current: list[tuple[int, Tensor, Tensor]] = []  # (slice index, target, prediction)
    if groups is not None:
        for v in range(rank, len(groups), world):
            name = None
            for i in groups[v]:
                s = read(i)
                if name is not None and s.fname != name:
                    raise ValueError(f"evaluate_reconstructor: volume_keys() puts index {i} "
                                     f"({s.fname!r}) in the volume of {name!r}")
                name = s.fname
                if s.target is None:  # no reference (an SSDU test-layout file): not scored
                    current.clear()
                    break
                current.append((s.slice_index, s.target[0], reconstruct(s)[0]))
            else:
                scored.append((v, name, _scored(name, current)))
            release_memory()
    else:  # runs of equal fname
        name, seen, unscored = None, set(), set()
        for i in range(len(dataset)):
            s = read(i)
            if s.fname != name:
                if name is not None and name not in unscored:
                    scored.append((len(scored), name, _scored(name, current)))
                    release_memory()
                if s.fname in seen:
                    raise ValueError(
                        f"evaluate_reconstructor: the slices of volume {s.fname!r} are not "
                        f"consecutive in the dataset (index {i} comes after other volumes' "
                        "slices): give the dataset a volume_keys() method naming each index's "
                        "volume")
                name = s.fname
                seen.add(name)
            if s.target is None or name in unscored:  # no reference: the volume is not scored
                unscored.add(name)
                current.clear()
                continue
            current.append((s.slice_index, s.target[0], reconstruct(s)[0]))
        if name is not None and name not in unscored:
            scored.append((len(scored), name, _scored(name, current)))
            release_memory()
    if world > 1:
        import torch.distributed as dist

        parts: list = [None] * world
        dist.all_gather_object(parts, scored)
        scored = sorted((v for part in parts for v in part), key=lambda v: v[0])
    if not scored:
        raise ValueError("evaluate_reconstructor: the dataset has no slices with a reference")
    metrics = list(scored[0][2])
    return MetricsReport([n for _, n, _ in scored],
                         {m: np.asarray([v[m] for _, _, v in scored], dtype=np.float64)
                          for m in metrics})


def validate_model(
    model: nn.Module, dataset: MRITrainingSet, device: torch.device | str = "cpu", *,
    distributed: bool = False,
) -> MetricsReport:
    """:func:`evaluate_reconstructor` for ``model`` (put in eval mode, restored afterwards);
    ``distributed``: the ranks of the process group share the volumes (a collective)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_reconstructor(model_reconstructor(model, device), dataset,
                                      distributed=distributed)
    finally:
        model.train(was_training)


def make_validate_fn(
    dataset: MRITrainingSet,
) -> Callable[[nn.Module, torch.device], dict[str, float]]:
    """The trainer's ``validate_fn``: mean metrics over the volumes of ``dataset``. Marked
    ``collective``, so the trainer calls it on every rank: under ``torchrun`` the ranks share the
    volumes and gather their scores (:func:`evaluate_reconstructor` with ``distributed=True``),
    so each returns the same means, as one process would (rank 0 validated alone while the
    others waited in a barrier, past NCCL's collective timeout on a full validation set)."""

    def validate(model: nn.Module, device: torch.device) -> dict[str, float]:
        return validate_model(model, dataset, device, distributed=True).mean()

    validate.collective = True  # every rank calls it (Trainer)
    return validate


def validation_mismatch(train_range: dict, val_range: dict) -> list[str]:
    """The ``training_range`` fields (a card's schema) whose validation values lie outside the
    training set's: ``[min, max]`` numbers and ``{"min": shape, "max": shape}`` grids within,
    names (beam, maps) among. A CT validation folder at another image size, beam, dose or view
    count trained with exit 0, its PSNR picking the best state and written into the card."""
    out = []
    for key in sorted(set(train_range) & set(val_range)):
        t, v = train_range[key], val_range[key]
        if isinstance(t, dict) and {"min", "max"} <= set(t) and isinstance(v, dict):
            inside = all(lo <= a and b <= hi for lo, hi, a, b in
                         zip(t["min"], t["max"], v.get("min", ()), v.get("max", ())))
        elif isinstance(t, list) and len(t) == 2 and all(isinstance(x, (int, float))
                                                         for x in t + list(v)):
            # accelerations: mrirecon run's 5 % slack (a nominal 8x beside an achieved 7.95x
            # was "outside"; model_range.range_warnings judges a file's acceleration so)
            slack = 0.05 if key == "accelerations" else 0.0
            inside = (t[0] - slack * min(v) <= min(v)) and (max(v) <= t[1] + slack * max(v))
        elif isinstance(t, list) and all(isinstance(x, str) for x in t + list(v)):
            inside = set(v) <= set(t)
        else:
            continue
        if not inside:
            out.append(f"{key} {v} (training: {t})")
    return out
