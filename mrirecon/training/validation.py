"""Validation with the fastMRI metrics: reconstruct slices, stack them per file, score volumes.

Also the two classical baselines reported on model cards: zero-filled (RSS of ``F^H y``) and
CG-SENSE (``(A^H A + lam I)^{-1} A^H y`` with ESPIRiT maps from the centre columns every mask
acquires).
"""

from __future__ import annotations

from collections.abc import Callable

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
    mag = x.abs() if x.is_complex() else x
    return center_crop(mag.float(), tuple(target.shape[-2:]))


def model_reconstructor(model: nn.Module, device: torch.device | str = "cpu") -> Reconstructor:
    """``sample -> (1, h, w)`` magnitude of ``model(y, op)`` (eval mode, no gradients)."""

    def run(sample: TrainingSample) -> Tensor:
        s = sample.to(device)
        return _magnitude(model(s.y, s.operator()), s.target).cpu()

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


@torch.no_grad()
def evaluate_reconstructor(reconstruct: Reconstructor, dataset: MRITrainingSet) -> MetricsReport:
    """Per-volume NMSE / PSNR / SSIM of ``reconstruct`` over ``dataset`` (validation masks).

    Slices are stacked per file in slice order; PSNR and SSIM use each volume's maximum, as
    ``fastmri.evaluate`` does.
    """
    targets: dict[str, dict[int, Tensor]] = {}
    preds: dict[str, dict[int, Tensor]] = {}
    for i in range(len(dataset)):
        s = dataset.get(i, mask_seed=None) if not dataset.train else dataset.get(i, mask_seed=i)
        targets.setdefault(s.fname, {})[s.slice_index] = s.target[0]
        preds.setdefault(s.fname, {})[s.slice_index] = reconstruct(s)[0]
    stack = {f: torch.stack([v[k] for k in sorted(v)]) for f, v in targets.items()}
    pstack = {f: torch.stack([v[k] for k in sorted(v)]) for f, v in preds.items()}
    return evaluate_volumes(stack, pstack, metrics=("NMSE", "PSNR", "SSIM"), nonfinite="nan")  # a diverged state scores NaN


def validate_model(
    model: nn.Module, dataset: MRITrainingSet, device: torch.device | str = "cpu"
) -> MetricsReport:
    """:func:`evaluate_reconstructor` for ``model`` (put in eval mode, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_reconstructor(model_reconstructor(model, device), dataset)
    finally:
        model.train(was_training)


def make_validate_fn(
    dataset: MRITrainingSet,
) -> Callable[[nn.Module, torch.device], dict[str, float]]:
    """The trainer's ``validate_fn``: mean metrics over the volumes of ``dataset``."""

    def validate(model: nn.Module, device: torch.device) -> dict[str, float]:
        return validate_model(model, dataset, device).mean()

    return validate
