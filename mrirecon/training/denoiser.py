"""Train the plug-and-play image denoiser shipped as ``mrirecon/weights/pnp_dncnn_brain_sim``.

A small residual DnCNN (real, 2 channels ``[real, imag]``, wrapped in
:class:`~mrirecon.models.backbones.ComplexImageCNN`) learns to remove complex white Gaussian
noise from simulated brain images: noise-free complex images of
:func:`~mrirecon.data.simulate_mri.simulate_mri_volume` (MNI152 template of
:mod:`mrirecon.data.anatomy`; random contrast, orientation, deformation, bias field and smooth
phase), rescaled so that their peak magnitude is ``U(0.6, 1.2)`` (PnP models scale data to
``max |A^H y| = 1``), plus noise of standard deviation ``sigma = U(0.01, 0.1)`` times the peak,
per real and imaginary part. Loss: mean squared error on random ``patch x patch`` crops.

Run ``mrirecon train denoiser --out mrirecon/weights/pnp_dncnn_brain_sim.pt``; it saves the ``state_dict`` of a :class:`~mrirecon.models.pnp.PnPADMM` (its only
parameters are the denoiser's) with its card beside it (``.yaml``: command, steps, wall time; the
descriptive sections and ADMM settings of a card already there for the same denoiser,
:func:`~mrirecon.training.run_card.rebuilt_card`; held-out metrics are added after an
evaluation) and prints a JSON summary (steps, wall time, final loss).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.io.weights import write_weights
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")

#: DnCNN of the shipped denoiser (bias-only: no batch norm, so ``D`` does not depend on the batch).
DENOISER_PARAMS = {"in_chans": 2, "out_chans": 2, "depth": 8, "features": 32, "batchnorm": False,
                   "residual": True}
SIGMA_RANGE = (0.01, 0.1)
PEAK_RANGE = (0.6, 1.2)


def clean_images(volumes: int, slices: int, size: tuple[int, int], seed: int) -> Tensor:
    """Noise-free complex brain images ``(volumes * slices, H, W)`` complex64, peak 1 each.

    Slices whose peak magnitude is below 5 % of the largest one (nearly empty) are dropped.
    """
    images = []
    for v in range(volumes):
        sim = simulate_mri_volume(v, slices=slices, coils=1, size=tuple(size), seed=seed, snr_db=None)
        images.append(sim.image)
    x = torch.cat(images).to(torch.complex64)
    peak = x.abs().amax(dim=(-2, -1))
    x = x[peak > 0.05 * peak.max()]
    return x / x.abs().amax(dim=(-2, -1), keepdim=True)


def noisy_batch(
    images: Tensor, batch: int, patch: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random crops ``(batch, patch, patch)``: ``(noisy, clean)``, complex64.

    Each crop gets a random peak in :data:`PEAK_RANGE`, a random global phase and complex
    Gaussian noise with ``sigma`` (per real / imaginary part) in :data:`SIGMA_RANGE` x peak.
    """
    n, h, w = images.shape
    idx = torch.randint(n, (batch,), generator=generator)
    r0 = torch.randint(h - patch + 1, (batch,), generator=generator)
    c0 = torch.randint(w - patch + 1, (batch,), generator=generator)
    clean = torch.stack([images[i, r:r + patch, c:c + patch] for i, r, c in zip(idx, r0, c0)])
    if torch.rand((), generator=generator) < 0.5:
        clean = clean.flip(-1)
    u = torch.rand(batch, 3, generator=generator)
    peak = PEAK_RANGE[0] + (PEAK_RANGE[1] - PEAK_RANGE[0]) * u[:, 0]
    sigma = (SIGMA_RANGE[0] + (SIGMA_RANGE[1] - SIGMA_RANGE[0]) * u[:, 1]) * peak
    phase = torch.exp(2j * torch.pi * u[:, 2]).to(torch.complex64)
    clean = clean * (peak * phase)[:, None, None]
    noise = torch.randn(clean.shape, dtype=torch.complex64, generator=generator)
    # torch's complex randn has variance 1 in total (1/2 per part): scale to sigma per part
    noisy = clean + noise * (sigma * 2**0.5)[:, None, None]
    return noisy, clean


def build_denoiser(**sizes) -> nn.Module:
    """The shipped PnP model's denoiser: ``ComplexImageCNN(DnCNN(**DENOISER_PARAMS))``, with
    ``depth`` / ``features`` of ``sizes`` in place of the shipped ones where given."""
    from mrirecon.models.backbones.complex import ComplexImageCNN
    from mrirecon.models.backbones.dncnn import DnCNN

    return ComplexImageCNN(DnCNN(**{**DENOISER_PARAMS, **sizes}))


def train_denoiser(
    out: str | Path,
    *,
    volumes: int = 24,
    slices: int = 8,
    size: tuple[int, int] = (128, 128),
    data_seed: int = 101,
    seed: int = 0,
    batch: int = 8,
    patch: int = 64,
    lr: float = 1e-3,
    max_steps: int = 20000,
    max_seconds: float = 420.0,
    lr_drop_step: int | None = None,
    depth: int = DENOISER_PARAMS["depth"],
    features: int = DENOISER_PARAMS["features"],
    threads: int | None = None,
) -> dict:
    """Train the denoiser and save a :class:`PnPADMM` ``state_dict`` to ``out``.

    Training stops after ``max_steps`` steps or ``max_seconds`` of training wall time
    (data simulation not counted), whichever comes first; the learning rate drops tenfold at
    step ``lr_drop_step``, by default at 80 % of whichever limit comes first (of the time
    budget: a step that depends on the machine and its load). The card records the step of the
    drop and ``command_same_steps``, the command that repeats the run's steps and drop, and so
    its weights bit for bit with the same thread count, CPU type and torch build (elsewhere to
    float32 rounding). ``depth`` / ``features``: the DnCNN's convolutional layers and feature
    channels (the shipped 8 / 32; the card records them, so the weights load as they were
    trained). Returns a summary dict (steps, wall times, loss, data, ``lr_drop_step``).
    """
    args = {k: v for k, v in locals().items() if k not in ("out", "threads")}  # for the card
    from mrirecon.models.pnp.pnp import PnPADMM
    from mrirecon.training.optim import require_steps
    from mrirecon.training.run_card import earlier_card

    earlier = earlier_card(out)  # before this run replaces the weights it describes
    if depth < 2 or features < 1:  # DnCNN's first and last layers; 0 features is no network
        raise ValueError(f"train denoiser: --depth {depth} / --features {features}: give a "
                         "depth of at least 2 (the first and last convolutions) and at least "
                         "1 feature")
    if patch > min(size):  # refused before the simulation, not by torch.randint mid-training
        raise ValueError(f"train denoiser: --patch {patch} is larger than the {size[0]} x {size[1]} "
                         f"training slices (--size); give at most {min(size)}")
    threads = use_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    images = clean_images(volumes, slices, size, data_seed)
    t_data = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(seed)
    denoiser = build_denoiser(depth=depth, features=features)
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    t1 = time.perf_counter()
    step, losses, dropped = 0, [], None  # dropped: the step the rate dropped at
    drop_at = lr_drop_step if lr_drop_step is not None else math.ceil(0.8 * max_steps)
    while step < max_steps and time.perf_counter() - t1 < max_seconds:
        if dropped is None and (step >= drop_at or (lr_drop_step is None and
                                                    time.perf_counter() - t1 > 0.8 * max_seconds)):
            for g in opt.param_groups:
                g["lr"] = lr / 10
            dropped = step
        noisy, clean = noisy_batch(images, batch, patch, gen)
        loss = (denoiser(noisy) - clean).abs().pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 200 == 0:
            _log.info("step %d loss %.3e t %.0fs", step, np.mean(losses[-200:]),
                      time.perf_counter() - t1)
    wall = time.perf_counter() - t1
    require_steps("denoiser", step, f"--max-seconds {max_seconds:g} / --max-steps {max_steps}", out)
    model = PnPADMM(denoiser.eval())
    summary = {
        "steps": step,
        "wall_time_s": round(wall, 1),
        "data_time_s": round(t_data, 1),
        "final_loss": float(np.mean(losses[-200:])),
        "train_slices": int(images.shape[0]),
        "volumes": volumes, "slices": slices, "size": list(size), "data_seed": data_seed,
        "seed": seed, "batch": batch, "patch": patch, "lr": lr, "threads": threads,
        "depth": depth, "features": features,
        "lr_drop_step": dropped,
    }
    write_weights(out, model.state_dict(), _card(out, {"threads": threads, **args}, summary, earlier))
    return summary


def _card(out, args: dict, summary: dict, earlier: dict | None) -> dict:
    """The card of a ``train denoiser`` run (:func:`~mrirecon.training.run_card.rebuilt_card`:
    an ``earlier`` card of the same denoiser keeps its descriptive sections and ADMM settings,
    never its run record, tuning or metrics)."""
    import inspect
    import platform

    from mrirecon.models.backbones.dncnn import DnCNN
    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import trainer_card

    a = args
    defaults = {k: p.default for k, p in inspect.signature(DnCNN).parameters.items()}
    # as the shipped card writes them: the settings that differ from DnCNN's defaults
    params = {**DENOISER_PARAMS, "depth": a["depth"], "features": a["features"]}
    dncnn = {k: v for k, v in params.items() if defaults.get(k) != v}
    training = {
        "command": trainer_command("denoiser", Path(out), args), "seed": a["seed"],
        "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
        "data_time_s": summary["data_time_s"], "final_loss_mse": float(f"{summary['final_loss']:.4g}"),
        "optimizer": {"name": "adam", "lr": a["lr"], "batch_size": a["batch"],
                      "lr_drop": (f"x0.1 at step {summary['lr_drop_step']}"
                                  if summary["lr_drop_step"] is not None else "none")},
        # the same steps and drop whatever the machine's speed (a time budget ends the run and
        # places the drop where the machine's speed and load put them; no drop: past the last
        # step); bit for bit with the same thread count, CPU type and torch build
        "command_same_steps": trainer_command("denoiser", Path(out), {
            **args, "max_steps": summary["steps"], "max_seconds": 1e9,
            "lr_drop_step": (summary["lr_drop_step"] if summary["lr_drop_step"] is not None
                             else summary["steps"] + 1)}),
        "hardware": f"{platform.machine()} CPU, {a['threads']} thread(s)",
        "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d")}
    fresh = {"model": {"name": "pnp_admm", "params": {"denoiser": "dncnn", "denoiser_params": dncnn}},
             "training": training}
    size = list(a["size"])
    text = {
        "overridable": ["iterations", "rho"],
        "description": (
            f"PnP-ADMM with a residual DnCNN denoiser ({params['depth']} conv layers, "
            f"{params['features']} features, 2 channels [Re, Im]) trained by mrirecon train denoiser "
            "for Gaussian denoising only (see training); the ADMM settings are PnPADMM's defaults "
            "(model.params), not tuned for these weights."),
        "data": (
            f"noise-free complex images of mrirecon.data.simulate_mri.simulate_mri_volume "
            f"({a['volumes']} volumes x {a['slices']} slices, {size[0]} x {size[1]}, seed "
            f"{a['data_seed']}; {summary['train_slices']} slices kept), peak {PEAK_RANGE[0]}-"
            f"{PEAK_RANGE[1]}, complex white noise of sigma {SIGMA_RANGE[0]}-{SIGMA_RANGE[1]} x peak; "
            f"{a['patch']} x {a['patch']} crops"),
        "training_range": {"matrix": {"min": size, "max": size}},
        "known_failures": [
            "Trained by mrirecon train denoiser (see training) on simulated brain slices only, for "
            "Gaussian denoising: other anatomy and matrices are outside its training and mrirecon run "
            "warns; its ADMM settings were not tuned for these weights and they are not scored on "
            "the held-out protocol."]}
    return trainer_card(train_denoiser, fresh, earlier, args, ("max_steps", "max_seconds", "lr_drop_step"), text)
