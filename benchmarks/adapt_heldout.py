"""Scan-specific adaptation (ZS-SSL) of the shipped MoDL: PSNR / SSIM without and with ``adapt``.

    python benchmarks/adapt_heldout.py heldout --work DIR [--setting rows=64,steps=40,...]
    python benchmarks/adapt_heldout.py indist  --work DIR [--setting ...]
    python benchmarks/adapt_heldout.py heldout --work DIR --weights modl_fastmri_diverse

``heldout``: the held-out protocol's MRI volumes (:mod:`mrirecon.heldout.data`: reserved images at
fastMRI size, 640 x 320 with 2x readout oversampling, 8 coils; 4x equispaced-fraction masks with
centre fraction 0.08, seeded by file name; ESPIRiT crop-0 maps as ``mri_modl``), scored as the
protocol does (crop to 320 x 320, fastMRI metrics per volume). ``indist``: where the model fits,
its card's held-out test recipe (simulated brains, 128 x 128, 4-8 coils, seed 13; first
``--volumes`` volumes), 4x. Each setting is an :class:`~mrirecon.training.adapt.AdaptConfig`;
results (and each run's validation curve) go to ``DIR/adapt_<part>.json``
(``DIR/adapt_<part>_<weights>.json`` for shipped weights other than ``modl_brain_sim``, the model
of the first runs; ``mri_learned_adapt`` now adapts ``modl_fastmri_diverse``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _prepared(part: str, work: Path, volumes: int | None):
    from mrirecon.heldout.tune import prepared_mri_slices

    if part == "heldout":
        from mrirecon.heldout.data import write_heldout_mri

        data = work / "heldout_mri"
        if not any(data.glob("*.h5")):
            write_heldout_mri(data)
    else:
        from mrirecon.data.simulate_mri import simulate_mri_dataset

        data = work / "indist_mri"
        if not any(data.glob("*.h5")):  # the model card's test recipe (seed 13)
            simulate_mri_dataset(data, volumes=volumes or 2, slices=6, coils=(4, 8), size=(128, 128),
                                 seed=13)
    return prepared_mri_slices(data, 4.0, max_volumes=volumes)


def _score(model, slices) -> dict[str, float]:
    from mrirecon.metrics import evaluate_volumes
    from mrirecon.pipeline.schema import PostprocessConfig, ReconstructConfig
    from mrirecon.pipeline.stages_mri import postprocess, reconstruct

    preds: dict[str, list] = {}
    refs: dict[str, list] = {}
    for _, s0, target, vol in slices:
        out = reconstruct(s0, ReconstructConfig(method="modl"), model)
        preds.setdefault(vol, []).append(postprocess(out, PostprocessConfig()).numpy())
        refs.setdefault(vol, []).append(target)
    rep = evaluate_volumes({k: np.stack(v) for k, v in refs.items()},
                           {k: np.stack(v) for k, v in preds.items()})
    return {v: {"PSNR": float(p), "SSIM": float(s)}
            for v, p, s in zip(rep.names, rep.values["PSNR"], rep.values["SSIM"])}


def _setting(text: str):
    from mrirecon.training.adapt import AdaptConfig

    cfg = AdaptConfig()
    for item in filter(None, text.split(",")):
        k, v = item.split("=")
        cur = getattr(cfg, k)
        cfg = replace(cfg, **{k: None if v == "none" else type(cur if cur is not None else 1)(v)
                              if not isinstance(cur, float) else float(v)})
    return cfg


def run(part: str, work: Path, settings: list[str], volumes: int | None,
        weights: str = "modl_brain_sim") -> dict:
    from mrirecon.operators.mri import sense
    from mrirecon.training.adapt import adapt_model
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained(weights).eval()
    slices = _prepared(part, work, volumes)
    by_volume: dict[str, list] = {}
    for item in slices:
        by_volume.setdefault(item[3], []).append(item)
    out_path = work / (f"adapt_{part}.json" if weights == "modl_brain_sim" else f"adapt_{part}_{weights}.json")
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    t0 = time.perf_counter()
    base = {}
    for vol, items in by_volume.items():
        base.update(_score(model, items))
    results["without"] = base
    print("without adapt", base, f"{time.perf_counter() - t0:.0f} s", flush=True)
    for text in settings:
        cfg = _setting(text)
        rows = {}
        for vol, items in by_volume.items():
            pairs = [(s0.kspace[None], sense(s0.maps[None], s0.mask)) for _, s0, _, _ in items]
            adapted, report = adapt_model(model, pairs, cfg)
            score = _score(adapted, items)[vol]
            rows[vol] = {**score, "gain_dB": score["PSNR"] - base[vol]["PSNR"],
                         "seconds": report.seconds, "slices": len(items), **report.as_dict()}
            print(text, vol, {k: rows[vol][k] for k in ("PSNR", "gain_dB", "SSIM", "seconds",
                                                        "steps", "best_step", "stopped")}, flush=True)
        gains = [r["gain_dB"] for r in rows.values()]
        results[text or "default"] = {"volumes": rows, "mean_gain_dB": float(np.mean(gains)),
                                      "mean_seconds": float(np.mean([r["seconds"] for r in rows.values()]))}
        from mrirecon.io.atomic import atomic_write_text

        atomic_write_text(out_path, json.dumps(results, indent=1, default=float))
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("heldout", "indist"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--setting", action="append", default=[],
                   help="AdaptConfig fields, e.g. rows=64,steps=40,lr=3e-4 (repeatable)")
    p.add_argument("--volumes", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="modl_brain_sim", help="shipped MoDL weights to adapt")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    run(a.part, a.work, a.setting or [""], a.volumes, a.weights)


if __name__ == "__main__":
    main()
