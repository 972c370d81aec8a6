"""Train the generic image prior shipped as ``mrirecon/weights/pnp_dncnn_diverse``.

The bias-free, noise-level-conditioned denoiser of :class:`~mrirecon.models.pnp.PnPDPIR` learns
to remove complex (or, for real images, real) white Gaussian noise of standard deviation
``sigma`` (log-uniform in :data:`SIGMA_RANGE`, relative to the image peak) from the diverse
images of :class:`~mrirecon.training.prior_images.PriorImageBank` (natural photographs,
procedural images, strongly deformed and re-contrasted MNI152 slices, the allowed CT images;
random smooth phase). Patches of ``patch x patch``: the denoiser is convolutional, so at
inference it sees whole images of any size (fastMRI 640 x 368, CT 362 x 362) and the physics
stays exact in the data step.

``mrirecon train prior --out mrirecon/weights/pnp_dncnn_diverse.pt``
saves the ``state_dict`` of a :class:`PnPDPIR` with its card beside it (``.yaml``: command,
steps, wall time; the descriptive sections of a card already there for the same architecture,
:func:`~mrirecon.training.run_card.rebuilt_card`) and prints a JSON summary.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from mrirecon.io.weights import write_weights
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")

SIGMA_RANGE = (0.003, 0.25)


def build_pool(count: int, patch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` clean patches ``(count, patch, patch)`` complex64 and a real-valued flag."""
    from mrirecon.training.prior_images import PriorImageBank

    bank = PriorImageBank(size=patch, seed=seed)
    imgs, real = [], []
    for _ in range(count):
        im, r = bank.draw()
        imgs.append(im)
        real.append(r)
    return torch.from_numpy(np.stack(imgs)).to(torch.complex64), torch.tensor(real)


def noisy_batch(pool: torch.Tensor, real: torch.Tensor, batch: int, g: torch.Generator):
    """``(noisy, clean, sigma)``: random patches with a random scale, flip and noise level."""
    idx = torch.randint(pool.shape[0], (batch,), generator=g)
    clean = pool[idx]
    u = torch.rand(batch, 3, generator=g)
    scale = torch.exp(math.log(0.5) + u[:, 0] * math.log(4.0))  # peak in [0.5, 2]
    lo, hi = math.log(SIGMA_RANGE[0]), math.log(SIGMA_RANGE[1])
    sigma = torch.exp(lo + u[:, 1] * (hi - lo)) * scale
    phase = torch.where(real[idx], torch.ones(batch, dtype=torch.complex64),
                        torch.exp(2j * math.pi * u[:, 2]).to(torch.complex64))
    clean = clean * (scale * phase)[:, None, None]
    if torch.rand((), generator=g) < 0.5:
        clean = clean.transpose(-2, -1)
    n = torch.randn(clean.shape, dtype=torch.complex64, generator=g) * 2**0.5  # 1 per part
    n = torch.where(real[idx][:, None, None], n.real.to(torch.complex64), n)
    noisy = clean + n * sigma[:, None, None]
    return noisy, clean, sigma


def train(out: str | Path, *, pool_size: int = 6000, patch: int = 64, seed: int = 0,
          batch: int = 16, lr: float = 1e-3, max_steps: int = 100000, max_seconds: float = 3000.0,
          depth: int = 8, features: int = 32, threads: int | None = None, log: int = 100) -> dict:
    """Train and save; stops at ``max_steps`` or ``max_seconds`` of training (pool not counted).

    The learning rate follows a cosine decay over the time budget (step budget if it ends
    first: :func:`~mrirecon.training.optim.budget_fraction`), so the schedule is complete
    whichever limit applies; a run that ends by ``max_steps`` follows its steps alone and gives
    the same weights whatever the machine's speed (with the same thread count, CPU type and
    torch build).
    """
    args = {k: v for k, v in locals().items() if k not in ("out", "threads", "log")}  # for the card
    from mrirecon.models.pnp.dpir import PnPDPIR
    from mrirecon.training.optim import budget_fraction, cosine_step, require_steps
    from mrirecon.training.run_card import earlier_card

    earlier = earlier_card(out)  # before this run replaces the weights it describes
    threads = use_threads(threads)
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    pool, real = build_pool(pool_size, patch, seed)
    t_data = time.perf_counter() - t0
    model = PnPDPIR(depth=depth, features=features)
    den = model.denoiser
    opt = torch.optim.Adam(den.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    t1 = time.perf_counter()
    step, losses = 0, []
    while step < max_steps:
        frac = budget_fraction(step, time.perf_counter() - t1, max_seconds, max_steps)
        if frac >= 1:
            break
        noisy, clean, sigma = noisy_batch(pool, real, batch, g)
        loss = ((den(noisy, sigma) - clean).abs().sum((-2, -1)) / sigma / patch**2).mean()
        losses.append(cosine_step(opt, loss, lr=lr, frac=frac, clip=None))
        step += 1
        if step % 500 == 0:  # a readable snapshot while training runs
            write_weights(Path(out).with_suffix(".partial.pt"), model.state_dict(), None)
        if step % log == 0:
            _log.info("step %d loss %.4f t %.0fs", step, np.mean(losses[-log:]),
                      time.perf_counter() - t1)
    wall = time.perf_counter() - t1
    require_steps("prior", step, f"--max-seconds {max_seconds:g} / --max-steps {max_steps}", out)
    summary = {"steps": step, "wall_time_s": round(wall, 1), "data_time_s": round(t_data, 1),
               "final_loss_l1_over_sigma": float(np.mean(losses[-200:])), "pool_size": pool_size,
               "patch": patch, "seed": seed, "batch": batch, "lr": lr, "depth": depth,
               "features": features, "threads": threads, "sigma_range": list(SIGMA_RANGE)}
    write_weights(out, model.state_dict(), _card(out, {"threads": threads, **args}, summary, earlier))
    # the snapshot goes once the finished weights and their card exist (it was left beside them,
    # under make weights in the package folder)
    Path(out).with_suffix(".partial.pt").unlink(missing_ok=True)
    return summary


def _card(out, args: dict, summary: dict, earlier: dict | None) -> dict:
    """The card of a ``train prior`` run (:func:`~mrirecon.training.run_card.rebuilt_card`:
    an ``earlier`` card of the same architecture keeps its descriptive sections and PnP
    schedule, never its run record, tuning or metrics)."""
    import platform

    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import trainer_card

    a = args
    training = {
        "command": trainer_command("prior", Path(out), args), "seed": a["seed"],
        "loss": "L1 of the denoising error divided by sigma (every noise level weighs alike)",
        "optimizer": {"name": "adam", "lr": a["lr"], "batch_size": a["batch"],
                      "schedule": "cosine to 0 over the time budget (step budget if it ends first)"},
        "steps": summary["steps"], "wall_time_s": summary["wall_time_s"],
        "data_time_s": summary["data_time_s"],
        "final_loss": round(summary["final_loss_l1_over_sigma"], 4),
        "hardware": f"{platform.machine()} CPU, {a['threads']} thread(s)",
        "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d")}
    fresh = {"model": {"name": "pnp_dpir", "params": {"depth": a["depth"], "features": a["features"]}},
             "training": training}
    lo, hi = SIGMA_RANGE
    defaults = {
        "overridable": ["iterations", "sigma_max", "sigma_min", "lam", "cg_iterations", "init_rho",
                        "init_iterations"],
        "description": (
            "Plug-and-play HQS with an annealed noise schedule (DPIR) around a bias-free, "
            f"noise-level-conditioned DnCNN ({a['depth']} conv layers, {a['features']} features) "
            "trained by mrirecon train prior for Gaussian denoising only (see training), with "
            "exact CG data consistency on the pipeline's operator. The schedule is PnPDPIR's "
            "default (model.params), not tuned for these weights."),
        "data": (
            f"mrirecon/training/prior_images.py (PriorImageBank, seed {a['seed']}): a pool of "
            f"{a['pool_size']} clean {a['patch']} x {a['patch']} complex patches of natural, "
            "procedural, deformed MNI152 and allowed CT images drawn once, then a random scale "
            f"(peak 0.5-2), transpose, phase and white Gaussian noise (sigma {lo}-{hi} x peak, "
            "log-uniform) per step"),
        "known_failures": [
            "Trained by mrirecon train prior (see training) for Gaussian denoising only: coherent "
            "aliasing the data step cannot resolve stays in the image; the PnP schedule was not "
            "tuned for these weights and they are not scored on the held-out protocol."]}
    return trainer_card(train, fresh, earlier, args, ("max_steps", "max_seconds"), defaults)
