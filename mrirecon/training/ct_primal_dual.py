"""Train a learned primal-dual (:class:`~mrirecon.models.unrolled.primal_dual.LearnedPrimalDual`)
at the LoDoPaB geometry (``primal_dual_lodopab``).

    mrirecon train primal_dual_ct --out mrirecon/weights/primal_dual_lodopab.pt --budget-s 4800 --seed 0 --threads 1

The data are those of :mod:`mrirecon.training.ct_staged` (the same recipe of allowed CT images,
phantoms and textured body outlines, the same simulator: parallel beam, 362 x 362 over 26 cm,
513 detectors, 30 or 60 of 1000 views with a random offset, 4096 photons per bin) and the same
validation split. Unlike the staged model, the primal-dual iterations apply the projector and
its adjoint inside the network, so every step sees whole ``362 x 362`` images with the exact
sparse-view operator: the full deployment geometry in training as at inference.

The model runs with ``fbp_start``: the data are divided by the 99th percentile ``s`` of the Hann
FBP and the primal memory starts from the FBP, so the network's input and output scale follow
the image and not ``max |A^T y|`` (which grows with the matrix and the view count: the intensity
compression of the older ``primal_dual_ct_sim``). Loss: the mean squared error in units of
``s``; Adam with a cosine learning rate over the wall-time budget (over ``--max-steps`` when
they end the run first; see :func:`train_primal_dual_ct`); every ``val_every`` steps the
model is scored on the validation split at 30 and 60 views (PSNR of the image clipped at 0,
:func:`~mrirecon.training.ct_staged.psnr_nonnegative`, as for the staged model; the card's
``validation_psnr_db``) and the best state is written with
its card (so a stopped run leaves a usable model).
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch

from mrirecon.training.ct_staged import (
    CARD_RANGE,
    CARD_TEXT,
    CTImageRecipe,
    SparseViewSimulator,
    load_init,
    score,
    validation_set,
)
from mrirecon.training.optim import budget_fraction, cosine_step
from mrirecon.training.run_card import trainer_command
from mrirecon.threads import load_average, load_fields, load_text, use_threads
from mrirecon.training.init_card import earlier_runs, read_init_card

_log = logging.getLogger("mrirecon.train")

# the staged model's data, validated on the same split; no lam grid or self-ensemble here
DATA_TEXT = {
    "source": CARD_TEXT["data"]["source"].replace(
        "mrirecon.training.ct_staged", "mrirecon.training.ct_staged, as staged_ct_lodopab"),
    "geometry": CARD_TEXT["data"]["geometry"],
    "validation": "the CT validation split of mrirecon.heldout.validation (2 allowed-source "
                  "images, seed 77) at 30 and 60 views, offset 0: the best state, scored every "
                  "--val-every steps; its PSNR (validation_psnr_db, val_psnr, "
                  "validation_psnr_db_hann_fbp) is of the image clipped at 0 "
                  "(ct_staged.psnr_nonnegative), which reads higher than mrirecon run's PSNR "
                  "(metrics.psnr) where the image has negative pixels",
}
KNOWN_FAILURES = [
    ("Trained only at 362 x 362 pixels over 26 cm, parallel beam, 513 detectors, 30-63 views, "
     "4096 photons: `mrirecon run` warns outside matrix 362 x 362, 30-63 views, parallel beam "
     "or 513 detectors. Limited angle or much higher / lower dose are untested."),
    ("A short CPU training on one shared thread (see `training`): fine textures of anatomy unlike "
     "the training images come out smoothed and small low-contrast details can be lost; the "
     "3 x 3 CNNs of each iteration see a small neighbourhood, so long streaks at 30 views are "
     "removed less completely than by the staged U-Net model (`staged_ct_lodopab`)."),
    "No metal, beam hardening or photon starvation beyond the 0.1-count floor in training.",
    ("Needs mrirecon's CT projector (it has a filtered back-projection): the bare "
     "ct_operator(geometry), scaled to unit norm with its data by the model itself, or the "
     "unit-norm A / ||A|| with data y / ||A|| that the pipeline and the training pass. A projector "
     "scaled otherwise (c A) is used as given: the CNNs, trained at unit norm, then see data-space "
     "values c ||A|| times off their training scale and the image is wrong. The FBP's 99th "
     "percentile sets the image scale, so an image that is nearly all air (p99 at 0) falls back "
     "to max |FBP|."),
    ("No non-negativity constraint: air may hold small negative values (the held-out protocol "
     "clips at 0, as for every method)."),
]


def train_primal_dual_ct(out: str | Path, *, budget_s: float = 4800.0, seed: int = 0,
                         iterations: int = 8, features: int = 16, n_primal: int = 5,
                         n_dual: int = 5, pool: int = 16, refresh_every: int = 4,
                         lr: float = 1e-3, val_every: int = 150, init: str | None = None,
                         max_steps: int | None = None, threads: int | None = None,
                         log=_log.info) -> dict:
    """Train within ``budget_s`` seconds of wall time (see the module docstring), or for
    ``max_steps`` steps when they end first; writes ``out``
    (a ``.pt`` state dict, the best state on the validation split) and its card (``.yaml``
    beside it) at every improvement and returns the card. ``init``: a state dict of the same
    architecture (e.g. the shipped ``primal_dual_lodopab.pt``) to continue from; its validation
    score is the one to beat (it is written first), so a continuation never ends below its
    start, and the card keeps the record of the run it continued (``training.first_run``).

    The learning rate is a cosine over the wall-time budget, or over ``max_steps`` while the
    clock keeps pace with them (:func:`~mrirecon.training.optim.budget_fraction`): a
    time-bounded run's weights depend on the machine's speed and load, a step-bounded one's do
    not. The final card's ``training.command_same_steps`` runs the same number of steps with the
    rate over the steps and a budget that never ends it (``--budget-s 1e9``): it gives the same
    weights bit for bit every time (with the same thread count, CPU type and torch build), while
    ``command`` without ``--max-steps`` trains a model of the same recipe."""
    from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual, _fbp
    from mrirecon.training.init_card import check_init_card

    threads = use_threads(threads)
    out = Path(out).with_suffix(".pt")
    t_start, load_start = time.time(), load_average()
    torch.manual_seed(seed)
    model = LearnedPrimalDual(iterations=iterations, n_primal=n_primal, n_dual=n_dual,
                              features=features, fbp_start=True, init_seed=seed)
    first = read_init_card(init, "primal_dual_ct")  # before this run writes its card over it
    check_init_card(init, "primal_dual_ct", "primal_dual", {
        "iterations": iterations, "n_primal": n_primal, "n_dual": n_dual, "features": features,
        "fbp_start": True}, LearnedPrimalDual)
    if init is not None:
        load_init(model, Path(init), "primal_dual_ct", "iterations / features / n_primal / n_dual")
    recipe, sim = CTImageRecipe(seed), SparseViewSimulator(seed)
    rng = np.random.default_rng([seed, 5])
    val = validation_set(sim)
    args = {"budget_s": budget_s, **({} if max_steps is None else {"max_steps": max_steps}),
            "seed": seed, "iterations": iterations, "features": features,
            "n_primal": n_primal, "n_dual": n_dual, "pool": pool, "refresh_every": refresh_every,
            "lr": lr, "val_every": val_every, **({} if init is None else {"init": init}),
            "threads": threads}

    def sample():
        mu, _ = recipe.draw()
        y, op, _ = sim.measure(mu)
        with torch.no_grad():
            s = model.prepare(y[None], op)[2]  # the model's own scale: the loss is in its units
        return y[None], op, torch.from_numpy(mu).float()[None], s

    fbp_val = score(lambda y, op: _fbp(op, y), val)
    log(f"setup {time.time() - t_start:.0f} s; Hann FBP validation PSNR {fbp_val}")
    items = [sample() for _ in range(pool)]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, losses, best, step = [], [], {"mean": -math.inf}, 0
    if init is not None:  # the starting point is the score to beat, and on disk until beaten
        model.eval()
        v = score(model, val)
        model.train()
        best = {"mean": float(np.mean(list(v.values()))), "step": 0, "val_psnr": v}
        log(f"initial weights score {v}")
        save(model, out, args, 0, history, best, fbp_val, time.time() - t_start, load_start, first)
    t0 = time.time()
    budget = max(budget_s - (t0 - t_start) - 30.0, 1.0)  # keep 30 s: last validation, card
    model.train()
    while True:
        frac = budget_fraction(step, time.time() - t0, budget, max_steps)
        if frac >= 1:
            break
        y, op, mu, s = items[int(rng.integers(len(items)))]
        losses.append(cosine_step(opt, torch.mean(((model(y, op) - mu) / s) ** 2), lr=lr, frac=frac))
        step += 1
        if step % refresh_every == 0:
            items[int(rng.integers(len(items)))] = sample()
        last = budget_fraction(step, time.time() - t0, budget, max_steps) >= 1
        if step % val_every == 0 or last:
            model.eval()
            v = score(model, val)
            model.train()
            m = float(np.mean(list(v.values())))
            rec = {"step": step, "loss": float(np.mean(losses[-val_every:])), "val_psnr": v,
                   "elapsed_s": round(time.time() - t_start)}
            load = load_average()  # None on Windows: the record and the line leave it out
            rec.update({} if load is None else {"load": round(load[0], 1)})
            history.append(rec)
            log(f"step {step} loss {rec['loss']:.3e} val {v} ({rec['elapsed_s']} s{load_text(load)})")
            if m > best["mean"]:
                best = {"mean": m, "step": step, "val_psnr": v}
                save(model, out, args, step, history, best, fbp_val, time.time() - t_start, load_start,
                     first)
    if not math.isfinite(best["mean"]):  # every validation NaN / Inf: nothing worth writing
        raise ValueError(f"train primal_dual_ct: no validation score of the {step} steps was finite "
                         f"(the training diverged: lower --lr, now {lr}); nothing written to {out}")
    card = save(None, out, args, step, history, best, fbp_val, time.time() - t_start, load_start, first)
    log(f"done: {step} steps, best {best}; wrote {out}")
    return card


def save(model, out: Path, args: dict, steps: int, history: list, best: dict, fbp_val: dict,
         wall_s: float, load_start, first: dict | None = None) -> dict:
    """Write the state dict (unless ``model`` is None: card only) and the card beside it.
    ``first``: the training record of the run this one continued (``read_init_card``)."""
    from mrirecon.io.weights import write_weights

    command = trainer_command("primal_dual_ct", out, args)
    # the final card (model None): the run's steps, the rate over them, no budget that ends it
    same_steps = ({} if model is not None else {"command_same_steps": trainer_command(
        "primal_dual_ct", out, {"budget_s": 1e9, "max_steps": steps,
                                **{k: v for k, v in args.items() if k not in ("budget_s", "max_steps")}})})
    earlier = earlier_runs(first)
    runs, total_s = len(earlier) + 1, wall_s + sum(float(r.get("wall_time_s", 0.0)) for r in earlier)
    minutes = total_s / 60
    how = ("on one shared CPU thread" if args["threads"] == 1 else f"on {args['threads']} shared CPU threads")
    if runs > 1:
        how += f", in {runs} runs (each continuing the one before; {minutes:.0f} min in all)"
    card = {
        "description": (
            f"Learned primal-dual ({args['iterations']} iterations, {args['n_primal']} primal / "
            f"{args['n_dual']} dual memories, {args['features']}-feature CNNs) for sparse-view "
            "low-dose CT at the LoDoPaB-CT geometry, trained on whole 362 x 362 images with the "
            "exact projector; starts from the Hann FBP and sees the data divided by the FBP's "
            "99th percentile, so its output scales with the data whatever the view count or "
            "matrix. Its CNNs work on the unit-norm projector A / ||A|| and data y / ||A||, as in "
            "training: the pipeline passes them, and the model scales a bare CT projector "
            "(ct_operator(geometry)) and its data so itself; any other operator is used as given. "
            f"Trained {how}."),
        "model": {"name": "primal_dual", "params": {
            "iterations": args["iterations"], "n_primal": args["n_primal"],
            "n_dual": args["n_dual"], "features": args["features"], "fbp_start": True}},
        "training": {
            "command": command, **same_steps, "seed": args["seed"], "steps": steps,
            "best_step": best.get("step"),
            "wall_time_s": round(wall_s, 1),
            "hardware": f"{platform.machine()} CPU, {args['threads']} thread(s), shared",
            **load_fields(load_start),
            "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d"),
            "validation_psnr_db": best.get("val_psnr"), "validation_psnr_db_hann_fbp": fbp_val,
            "history": history,
            **({} if first is None else {"first_run": first,
                                         "total_wall_time_s": round(total_s, 1)}),
        },
        "data": DATA_TEXT,
        "training_range": CARD_RANGE,
        "known_failures": KNOWN_FAILURES,
    }
    write_weights(out, None if model is None else model.state_dict(), card, width=100)
    return card
