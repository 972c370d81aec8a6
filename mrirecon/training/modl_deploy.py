"""Train MoDL and E2E-VarNet for the deployment distribution (``modl_fastmri_diverse``,
``varnet_fastmri_diverse``).

The data are :mod:`mrirecon.training.deploy_mri`'s: fastMRI multi-coil geometry (``640 x 320``,
2x readout oversampling), 8 or 12 simulated coils, 28-34 dB noise, fastMRI equispaced-fraction
masks at 4x (centre 0.08) and 8x (0.04), ESPIRiT maps estimated like the pipeline (crop 0), and
diverse images. (``varnet_fastmri_diverse`` estimates its own maps with its sensitivity network:
the ESPIRiT maps in its operator are ignored, and serve only the scale ``s`` below.) Steps run on bands of ``crop_rows`` image rows (an exact smaller SENSE problem,
see :func:`~mrirecon.training.deploy_mri.row_band`), each already divided by the scale
``s = max |A^H y|`` of its whole slice; the model is therefore trained with its internal
normalisation switched off and deployed with it on, which computes the same ``s`` on the whole
slice (VarNet has no such switch: it is scale-equivariant by construction, see
:func:`train_varnet`). Validation runs the deployed model (normalisation on) on whole simulated ``640 x 320``
slices from a separate seed and scores the centre ``320 x 320`` with fastMRI's PSNR / SSIM; the
state with the best mean PSNR is kept.
"""

from __future__ import annotations

import logging
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from mrirecon.threads import use_threads

_log = logging.getLogger("mrirecon.train")

#: Rows left out of the loss at either end of a band (zero padding of the CNN at the cut).
LOSS_MARGIN = 8


def validation_slices(seed: int, count: int = 4) -> list[dict]:
    """Fixed whole slices for validation: alternating 4x / 8x, images of a separate bank seed."""
    from mrirecon.training.deploy_mri import DeploymentImages, simulate_slice

    images = DeploymentImages(seed=seed + 1000, mni_volumes=2)
    rng = np.random.default_rng([seed, 7777])
    return [simulate_slice(rng, images, 4 if i % 2 == 0 else 8, coils=8) for i in range(count)]


def score_slices(model: torch.nn.Module, slices: list[dict]) -> list[dict]:
    """Deployed-model PSNR / SSIM on whole slices (data in their original units, centre crop)."""
    from mrirecon.metrics import psnr, ssim
    from mrirecon.operators import sense
    from mrirecon.training.deploy_mri import recon_crop

    was_training, was_norm = model.training, getattr(model, "normalize", None)
    model.eval()
    if was_norm is not None:  # MoDL trains on pre-scaled bands; VarNet needs no scaling
        model.normalize = True
    out = []
    try:
        with torch.inference_mode():
            for sl in slices:
                y = sl["kspace"] * sl["scale"]  # the scanner's units: normalisation must undo them
                x = model(y[None], sense(sl["maps"][None], sl["mask"]))[0].abs() / sl["scale"]
                pred, ref = recon_crop(x).numpy()[None], recon_crop(sl["target"]).numpy()[None]
                ok = bool(np.isfinite(pred).all())  # a diverged state scores NaN: never the best
                out.append({"acceleration": sl["acceleration"], "kind": sl["kind"],
                            "PSNR": float(psnr(ref, pred)) if ok else float("nan"),
                            "SSIM": float(ssim(ref, pred)) if ok else float("nan"),
                            "mean_ratio": float(pred.mean() / ref.mean())})
    finally:
        model.train(was_training)
        if was_norm is not None:
            model.normalize = was_norm
    return out


def _save(model: torch.nn.Module, path: Path, half: bool = False, card: dict | None = None) -> None:
    """Write the state dict atomically (and ``card`` beside it); ``half``: floating tensors as
    float16 (they load back into float32 parameters), for weights that would pass the 5 MiB
    limit on tracked files."""
    from mrirecon.io.weights import write_weights

    state = model.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    write_weights(path, state, card, width=100)


#: What a card written by ``mrirecon train modl / varnet`` says about the data and range where
#: the card it rebuilds has no hand-written text of its own (:func:`_card`).
def _card_data(widths, kind: str = "modl", crop_rows: int = 96,
               estimate_sensitivities: bool = True) -> str:
    """The recipe line of a ``kind`` card: a VarNet with its own sensitivity network ignores the
    ESPIRiT maps the operator carries (they set only the slice scale ``s``); the loss covers band
    rows ``LOSS_MARGIN..crop_rows - LOSS_MARGIN``."""
    matrices = " / ".join(f"640 x {w}" for w in widths)
    if kind == "varnet" and estimate_sensitivities:
        maps = ("coil maps from the model's own sensitivity network on the auto-calibration lines "
                "(the ESPIRiT maps (crop 0) in the operator are ignored; they set only the slice "
                "scale s = max |A^H y|)")
    else:
        maps = "ESPIRiT maps (crop 0) from the acquired centre band"
    return ("mrirecon/training/deploy_mri.py (DeploymentBands): natural, procedural, deformed MNI152 "
            f"and allowed CT images of 320 x 320 in a {matrices} field of view (2x readout oversampling), "
            "8 or 12 birdcage coils, SNR 28-34 dB, fastMRI equispaced_fraction masks 4x / 0.08 and 8x / "
            f"0.04, {maps}; bands of {crop_rows} rows, loss on the band's rows "
            f"{LOSS_MARGIN}..{crop_rows - LOSS_MARGIN}; validated on whole 640 x 320 slices")


def _card_range(widths) -> dict:
    """The cards' ``training_range`` of the deployment recipe on ``widths`` columns: its centre
    bands (``acs_columns``) those of every equispaced-fraction mask it draws
    (:data:`~mrirecon.training.deploy_mri.CENTRE_FRACTIONS`)."""
    from mrirecon.training.mask_bands import acs_column_range
    from mrirecon.training.deploy_mri import CENTRE_FRACTIONS

    return {"matrix": {"min": [640, min(widths)], "max": [640, max(widths)]}, "coils": [8, 12],
            "accelerations": [4, 8],
            "acs_columns": acs_column_range("equispaced_fraction",
                                            [(cf, acc) for acc, cf in CENTRE_FRACTIONS.items()],
                                            widths)}


_CARD_FAILURES = [
    "Trained by mrirecon train (see training.command) on simulated data only, at the matrices of "
    "training_range with 8-12 "
    "coils: other matrices, coil counts, accelerations or centre bands are outside its "
    "training_range and mrirecon run warns; real coil maps, noise correlation and artefacts were never seen. Not scored on the "
    "held-out protocol (benchmarks/heldout.py eval) unless a section below says so."]

#: The training record of a card written at a validation, before the run has ended.
_UNFINISHED = ("written at a validation during training (steps_at_save); a finished run adds steps, "
               "wall_time_s and validation_history")


def _card(out: Path, kind: str, model_spec: dict, args: dict, rec: dict, steps: int,
          earlier: dict | None = None, final: dict | None = None) -> dict:
    """The card of a ``train modl`` / ``train varnet`` state: ``model`` (what loading needs), a
    ``training`` record (command with the threads it ran on, seed, validation of the saved state;
    ``final``: the whole run's steps, wall time and validation curve, added when it ends) and
    the training range of its widths. ``earlier``
    (:func:`~mrirecon.training.run_card.earlier_card`, read when the run started): a card of the
    same model, range and recipe gives its hand-written descriptive sections, never its run
    record or metrics (:func:`~mrirecon.training.run_card.rebuilt_card`)."""
    from mrirecon.training.run_card import trainer_command
    from mrirecon.training.run_card import option_defaults, trainer_card

    record = {"command": trainer_command(kind, out, args), "seed": args["seed"],
              "steps_at_save": steps, "best_step": rec["step"],
              "validation": {"PSNR": round(rec["PSNR"], 3), "SSIM": round(rec["SSIM"], 4)},
              "torch": str(torch.__version__), "date": time.strftime("%Y-%m-%d")}
    if "threads" in args:
        record["hardware"] = (f"{platform.machine()} CPU, {args['threads']} thread(s) plus "
                              f"{args.get('workers', 0)} data worker(s)")
    record.update(final if final is not None else {"note": _UNFINISHED})
    fn = train if kind == "modl" else train_varnet
    opts = {**option_defaults(fn), **args}  # the trainer's defaults for what args omit
    fresh = {"model": model_spec, "training": record,
             "training_range": {**_card_range(opts["widths"]),  # MoDL: crop-0 ESPIRiT maps
                                **({"maps_crop": [0.0, 0.0]} if kind == "modl" else {})}}
    data = _card_data(opts["widths"], kind, int(opts["crop_rows"]),
                      bool(opts.get("estimate_sensitivities", False)))
    defaults = {"description": f"{kind} trained by mrirecon train {kind} (see training)",
                "data": data, "known_failures": _CARD_FAILURES}
    # "workers" is part of the recipe: each data worker draws its own sample stream
    # (deploy_mri.DeploymentBands), so 2 or more train on other data (run_card.SAME_DATA)
    return trainer_card(fn, fresh, earlier, args,
                        ("max_steps", "max_seconds", "val_every", "val_slices"), defaults)


def train(out: str | Path, *, seed: int = 0, crop_rows: int = 96, bands: int = 3,
          widths: tuple[int, ...] = (320,), iterations: int = 5, layers: int = 5,
          features: int = 32, cg_iterations: int = 8,
          lr: float = 1e-3, l1_weight: float = 5.0, max_steps: int = 100000,
          max_seconds: float = 3000.0, val_every: int = 200, val_slices: int = 4,
          workers: int = 1, threads: int | None = None, log: int = 20) -> dict:
    """Train MoDL on deployment-geometry bands; writes the best-on-validation ``state_dict``
    to ``out`` (``.pt``) as it goes and returns a summary for the card.

    Stops at ``max_steps`` or ``max_seconds`` of training (validation and data included,
    counted from the first batch: the data workers' start-up and the first band are not); the
    learning rate follows a cosine decay over whichever budget ends first
    (:func:`~mrirecon.training.optim.budget_fraction`): over the steps while the clock keeps
    pace with them, so a run that ends by ``max_steps`` gives the same weights whatever the
    machine's speed (with the same thread count, CPU type and torch build). Loss:
    ``(1 - SSIM) + l1_weight * L1 / max_value`` on magnitudes, band rows
    ``LOSS_MARGIN:-LOSS_MARGIN``.
    """
    from mrirecon.models.unrolled.modl import MoDL

    args = {k: v for k, v in locals().items() if k not in ("out", "threads", "log", "MoDL")}
    torch.manual_seed(seed)
    model = MoDL(iterations=iterations, layers=layers, features=features, batchnorm=False,
                 lam=0.05, cg_iterations=cg_iterations, shared=True, normalize=False, init_seed=seed)
    spec = {"name": "modl", "params": {"iterations": iterations, "layers": layers,
                                       "features": features, "batchnorm": False, "lam": 0.05,
                                       "cg_iterations": cg_iterations, "shared": True}}
    summary = _train_bands(model, out, seed=seed, crop_rows=crop_rows, bands=bands, widths=widths,
                           lr=lr, l1_weight=l1_weight, max_steps=max_steps, max_seconds=max_seconds,
                           val_every=val_every, val_slices=val_slices, workers=workers,
                           threads=threads, log=log, card=(spec, args))
    return {**summary, "iterations": iterations, "layers": layers, "features": features,
            "cg_iterations": cg_iterations}


def train_varnet(out: str | Path, *, seed: int = 0, crop_rows: int = 128, bands: int = 3,
                 widths: tuple[int, ...] = (320,), cascades: int = 6, chans: int = 12,
                 pools: int = 3, sens_chans: int = 4,
                 sens_pools: int = 3, estimate_sensitivities: bool = True, lr: float = 1e-3,
                 l1_weight: float = 5.0, max_steps: int = 100000, max_seconds: float = 3000.0,
                 val_every: int = 200, val_slices: int = 4, workers: int = 1,
                 threads: int | None = None, log: int = 20) -> dict:
    """Train E2E-VarNet on the same bands, loss, schedule and validation as :func:`train`:
    with its own sensitivity network (``varnet_fastmri_diverse``), or with
    ``--no-estimate-sensitivities`` on the ESPIRiT maps of the operator, as MoDL
    (the pipeline then needs ``calibrate: espirit``).

    VarNet needs no input scaling: its U-Nets normalise their input by its mean and standard
    deviation and undo it on output, and the data consistency is linear, so the output scales
    with the data. A band is a whole smaller multi-coil problem for it too: the mask acts on
    columns, the sensitivity network sees the band's rows of the auto-calibration lines.
    The best state is written as float16 (the shipped file; 1.65 M parameters at the defaults).
    """
    from mrirecon.models.unrolled.varnet import VarNet

    args = {k: v for k, v in locals().items() if k not in ("out", "threads", "log", "VarNet")}
    torch.manual_seed(seed)
    model = VarNet(iterations=cascades, chans=chans, pools=pools, sens_chans=sens_chans,
                   sens_pools=sens_pools, estimate_sensitivities=estimate_sensitivities,
                   init_seed=seed)
    params = {"iterations": cascades, "chans": chans, "pools": pools, "sens_chans": sens_chans,
              "sens_pools": sens_pools}
    if not estimate_sensitivities:
        params["estimate_sensitivities"] = False
    summary = _train_bands(model, out, seed=seed, crop_rows=crop_rows, bands=bands, widths=widths,
                           lr=lr, l1_weight=l1_weight, max_steps=max_steps, max_seconds=max_seconds,
                           val_every=val_every, val_slices=val_slices, workers=workers,
                           threads=threads, log=log, half=True, kind="varnet",
                           card=({"name": "varnet", "params": params}, args))
    return {**summary, "cascades": cascades, "chans": chans, "pools": pools,
            "sens_chans": sens_chans, "sens_pools": sens_pools,
            "estimate_sensitivities": estimate_sensitivities}


def _train_bands(model: torch.nn.Module, out: str | Path, *, seed: int, crop_rows: int, bands: int,
                 widths: tuple[int, ...], lr: float, l1_weight: float, max_steps: int,
                 max_seconds: float, val_every: int,
                 val_slices: int, workers: int, threads: int | None, log: int,
                 half: bool = False, kind: str = "modl",
                 card: tuple[dict, dict] | None = None) -> dict:
    """The loop of :func:`train` / :func:`train_varnet` for any ``model(y, op)`` whose
    ``op`` is the band's SENSE operator with the pipeline's ESPIRiT maps (a VarNet with its
    own sensitivity network ignores them)."""
    from mrirecon.metrics import SSIMLoss
    from mrirecon.operators import sense
    from mrirecon.training.deploy_mri import DeploymentBands, check_widths
    from mrirecon.training.optim import budget_fraction, cosine_step, require_steps
    from mrirecon.training.run_card import earlier_card

    widths = check_widths(widths)  # before the validation slices are simulated
    from mrirecon.training.deploy_mri import ROWS

    least = 2 * LOSS_MARGIN + 7  # the SSIM loss's 7-row window between the band's margins
    if not least <= int(crop_rows) <= ROWS:  # failed after the simulation, naming no option
        raise ValueError(f"train {kind}: --crop-rows {crop_rows} must be in [{least}, {ROWS}]: "
                         f"the loss leaves {LOSS_MARGIN} rows at each edge of a band and needs "
                         f"7 rows for its SSIM window, and the slices have {ROWS} rows")
    threads = use_threads(threads)
    out = Path(out).with_suffix(".pt")
    earlier = earlier_card(out)  # before this run's first save replaces it
    if card is not None:  # the command records the threads it ran on (after --out)
        card = (card[0], {"threads": threads, **card[1]})
    t0 = time.perf_counter()
    val = validation_slices(seed, val_slices)
    t_val_data = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(DeploymentBands(seed, crop_rows, bands, widths=widths),
                                         batch_size=None, num_workers=workers, prefetch_factor=4 if workers else None)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ssim_loss = SSIMLoss()
    history, losses, best = [], [], {"PSNR": -math.inf}
    m = LOSS_MARGIN
    t1 = time.perf_counter()
    step = 0

    def validate() -> None:
        nonlocal best
        rows = score_slices(model, val)
        rec = {"step": step, "t": round(time.perf_counter() - t1), "PSNR": float(np.mean([r["PSNR"] for r in rows])),
               "SSIM": float(np.mean([r["SSIM"] for r in rows])), "slices": rows}
        dc = getattr(model, "dc", None)
        if dc is not None and hasattr(dc, "lam"):
            rec["lam"] = float(dc.lam.detach()) if torch.is_tensor(dc.lam) else dc.lam
        history.append(rec)
        if rec["PSNR"] > best["PSNR"]:
            best = rec
            _save(model, out, half, None if card is None else _card(out, kind, *card, rec, step, earlier))
        _log.info("val step %d PSNR %.2f SSIM %.4f best %s", step, rec["PSNR"], rec["SSIM"],
                  best.get("step"))

    model.train()
    for b in loader:
        if step == 0:  # the clock starts with the first batch (worker start-up, its simulation)
            t1 = time.perf_counter()
        frac = budget_fraction(step, time.perf_counter() - t1, max_seconds, max_steps)
        if frac >= 1:
            break
        x = model(b.kspace[None], sense(b.maps[None], b.mask)).abs()[:, m:-m]
        t = b.target[None, m:-m]
        mv = torch.tensor([b.max_value], dtype=x.dtype)
        loss = ssim_loss(x[:, None], t[:, None], mv) + l1_weight * (x - t).abs().mean() / mv[0]
        losses.append(cosine_step(opt, loss, lr=lr, frac=frac))
        step += 1
        if step % log == 0:
            _log.info("step %d loss %.4f lr %.2e t %.0fs", step, np.mean(losses[-log:]),
                      opt.param_groups[0]["lr"], time.perf_counter() - t1)
        if step % val_every == 0:
            validate()
    require_steps(kind, step, f"--max-seconds {max_seconds:g} / --max-steps {max_steps}", out)
    if not history or history[-1]["step"] != step:
        validate()
    if not math.isfinite(best["PSNR"]):  # every validation NaN / Inf: nothing was saved
        raise ValueError(f"train {kind}: no validation score of the {step} steps was finite (the "
                         f"training diverged: lower --lr, now {lr:g}); {out} was not written")
    wall = time.perf_counter() - t1
    curve = [{k: v for k, v in h.items() if k != "slices"} for h in history]
    if card is not None:  # the whole run's record: the card beside the best state, nothing else
        from mrirecon.io.weights import write_weights

        final = {"steps": step, "wall_time_s": round(wall, 1), "validation_history": [
            {"step": h["step"], "PSNR": round(h["PSNR"], 2), "SSIM": round(h["SSIM"], 4),
             **({"lam": round(h["lam"], 4)} if "lam" in h else {})} for h in curve]}
        write_weights(out, None, _card(out, kind, *card, best, best["step"], earlier, final), width=100)
    return {"steps": step, "wall_time_s": round(wall, 1), "validation_data_s": round(t_val_data, 1),
            "final_loss": float(np.mean(losses[-100:])) if losses else None, "best": best,
            "history": curve,
            "seed": seed, "crop_rows": crop_rows, "bands": bands, "widths": list(widths), "lr": lr,
            "l1_weight": l1_weight,
            "threads": threads, "workers": workers}
