"""Turn a finished training run into shipped weights: ``<name>.pt`` + ``<name>.yaml`` model card.

The card records the model (name, parameters), the training data, steps, wall time, the full
training configuration, and held-out metrics (volumes never seen in training, validation masks
seeded by file name) per acceleration for the model, zero-filled and CG-SENSE. A card already
there keeps only its descriptive sections, when it describes the same model
(:func:`~mrirecon.training.run_card.rebuilt_card`).
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch
import yaml

from mrirecon.metrics import MetricsReport
from mrirecon.training.checkpoint import load_checkpoint
from mrirecon.training.config import MaskConfig, TrainConfig
from mrirecon.training.data import MRITrainingSet
from mrirecon.training.run import build_model_from_config, save_model
from mrirecon.training.validation import (
    cg_sense_reconstructor,
    evaluate_reconstructor,
    fbp_reconstructor,
    validate_model,
    zero_filled,
)
from mrirecon.training.weights import WEIGHTS_DIR, load_pretrained


def _summary(report: MetricsReport) -> dict[str, float]:
    mean, std = report.mean(), report.std()
    out = {}
    for k in ("NMSE", "PSNR", "SSIM"):
        out[k] = round(mean[k], 5)
        out[f"{k}_2std"] = round(2 * std[k], 5)
    return out


def held_out_metrics(
    model: torch.nn.Module, config: TrainConfig, folder: str | os.PathLike, baselines: bool = True
) -> dict:
    """Metrics per acceleration of ``config.data.mask`` on the volumes in ``folder``.

    Returns ``{"4x": {"model": {...}, "zero_filled": {...}, "cg_sense": {...}, "volumes": n}}``
    with mean and 2 std over volumes of NMSE, PSNR (dB) and SSIM. CT (``data.modality: ct``):
    ``{"<views> views": {"model": ..., "fbp": ..., "volumes": n}}`` (each image is a volume).
    """
    if config.data.modality == "ct":
        from mrirecon.training.data_ct import CTTrainingSet

        d = config.data
        ds = CTTrainingSet(folder, d.ct_views, d.ct_photons, train=False)
        rep = validate_model(model, ds)
        entry = {"volumes": rep.num_volumes, "photons": d.ct_photons, "model": _summary(rep)}
        if baselines:
            entry["fbp"] = _summary(evaluate_reconstructor(fbp_reconstructor, ds))
        views = ds.files.geometry.num_views // ds.factor
        return {f"{views} views": entry}
    m = config.data.mask
    out = {}
    for cf, acc in zip(m.center_fractions, m.accelerations):
        mask = MaskConfig(type=m.type, center_fractions=(cf,), accelerations=(acc,))
        ds = MRITrainingSet(folder, mask, config.data.maps, train=False)
        rep = validate_model(model, ds)
        entry = {"volumes": rep.num_volumes, "slices": len(ds), "model": _summary(rep)}
        if baselines:
            entry["zero_filled"] = _summary(evaluate_reconstructor(zero_filled, ds))
            entry["cg_sense"] = _summary(evaluate_reconstructor(cg_sense_reconstructor(ds), ds))
        out[f"{acc:g}x"] = entry
    return out


def export_weights(
    run_dir: str | os.PathLike,
    name: str,
    test_folder: str | os.PathLike,
    *,
    data: dict,
    out_dir: str | os.PathLike = WEIGHTS_DIR,
    config_file: str = "",
    notes: str = "",
) -> Path:
    """Write ``out_dir/<name>.pt`` and its card from the run in ``run_dir``.

    Parameters
    ----------
    run_dir
        A ``train_from_config`` output folder (``config.yaml``, ``checkpoints/last.pt``).
    name
        Shipped name (file stem).
    test_folder
        Held-out volumes for the card's metrics.
    data
        Description of the training / validation / test data (how to regenerate it).
    config_file
        Repository path of the training config that reproduces the weights.
    """
    from mrirecon.core.config import from_dict
    from mrirecon.training.run_card import earlier_card, rebuilt_card

    run = Path(run_dir)
    out = Path(out_dir) / f"{name}.pt"
    earlier = earlier_card(out)  # before the new weights replace the ones it describes
    cfg_dict = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8-sig"))
    cfg = from_dict(TrainConfig, cfg_dict, source=str(run / "config.yaml"))
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    torch.manual_seed(cfg.seed)
    model = build_model_from_config(cfg)
    model.load_state_dict(ckpt["model"])
    metrics = held_out_metrics(model, cfg, test_folder)
    fresh = {
        "model": {"name": cfg.model.name, "params": dict(cfg.model.params)},
        **({"description": notes} if notes else {}),
        "data": data,
        "training": {
            "steps": int(ckpt["step"]),
            "wall_time_s": round(float(ckpt.get("elapsed_seconds", 0.0)), 1),
            "hardware": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s), shared",
            "torch": str(torch.__version__),
            "date": datetime.date.today().isoformat(),
            "config_file": config_file,
            "config": cfg_dict,
        },
        "metrics_held_out": metrics,
    }
    card = rebuilt_card(fresh, earlier, who=f"mrirecon.training.export_weights of {run}",
                        defaults={"description": notes})
    path = save_model(model, out, cfg.model.name, card["model"]["params"],
                      {k: v for k, v in card.items() if k != "model"})
    load_pretrained(path)  # the shipped pair must load
    return path
