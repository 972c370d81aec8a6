"""Scan-specific adaptation of shipped models: PSNR / SSIM without and with ``adapt``.

    python benchmarks/adapt_heldout.py heldout --work DIR [--setting rows=64,steps=40,...]
    python benchmarks/adapt_heldout.py indist  --work DIR [--setting ...]
    python benchmarks/adapt_heldout.py heldout --work DIR --weights modl_fastmri_diverse
    python benchmarks/adapt_heldout.py ct      --work DIR [--weights staged_ct_lodopab] [--setting ...]

``ct``: the ``ct_learned_adapt`` pipeline as shipped (its weights and ``adapt:`` settings, read
from ``pipelines/ct_learned_adapt.yaml``; ``--weights`` swaps in another shipped CT model, one
``--setting`` changes some of its ``adapt:`` fields, recorded as ``setting``) on the
held-out protocol's CT slices at 30 and 60 views, scored as the protocol scores CT (PSNR / SSIM
of ``mu / MU_MAX`` as the model writes it, not clipped; intensity ratios); writes ``DIR/adapt_heldout_ct_<weights>.json``.

``heldout``: the held-out protocol's MRI volumes (:mod:`mrirecon.heldout.data`: reserved images at
fastMRI size, 640 x 320 with 2x readout oversampling, 8 coils; 4x equispaced-fraction masks with
centre fraction 0.08, seeded by file name; ESPIRiT crop-0 maps as ``mri_modl``), scored as the
protocol does (crop to 320 x 320, fastMRI metrics per volume). ``indist``: where the model fits,
its card's held-out test recipe (simulated brains, 128 x 128, 4-8 coils, seed 13; first
``--volumes`` volumes), 4x. Each setting is an :class:`~mrirecon.training.adapt.AdaptConfig`
(``key=value`` pairs, comma-separated, values read as the pipelines' ``--set`` reads them:
``acs_block=[8,8]``, ``rows=none``; an unknown field or a value of the wrong type is refused
naming it);
results (and each run's validation curve) go to ``DIR/adapt_<part>.json``
(``DIR/adapt_<part>_<weights>.json`` for shipped weights other than ``modl_brain_sim``, the model
of the first runs; ``mri_learned_adapt`` now adapts ``modl_fastmri_diverse``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _prepared(part: str, work: Path, volumes: int | None, weights: str = "modl_brain_sim"):
    from mrirecon.heldout import protocol
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
    # the data as the protocol's row of these weights gives them (modl_fastmri_diverse's
    # pipelines crop the readout oversampling, modl_brain_sim's row does not): the unadapted rows
    # are then the protocol's rows of the weights (asking mri_learned_adapt, which adapts
    # modl_fastmri_diverse, cropped modl_brain_sim's data too: 31.45 dB, not its 31.37)
    crop = part == "heldout" and protocol.readout_cropped(weights)
    return prepared_mri_slices(data, 4.0, max_volumes=volumes, remove_oversampling=crop)


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


def _setting(text: str, base=None):
    """``base`` (default ``AdaptConfig()``) with the fields of ``text`` (``k=v,k=v``; a comma
    inside brackets belongs to the value) set, typed and checked as the pipelines' ``--set``
    (:func:`~mrirecon.core.config.apply_overrides`, :func:`~mrirecon.core.config.from_dict`):
    raises :class:`~mrirecon.core.config.ConfigError` naming an unknown field or a bad value."""
    from mrirecon.core.config import apply_overrides, from_dict, to_dict
    from mrirecon.training.adapt import AdaptConfig

    base = AdaptConfig() if base is None else base
    items = [re.sub(r"=\s*none\s*$", "=null", item) for item in re.split(r",(?![^\[]*\])", text)
             if item.strip()]
    data = apply_overrides(to_dict(base), items, source="--setting", schema=type(base))
    return from_dict(type(base), data, source="--setting")


def run(part: str, work: Path, settings: list[str], volumes: int | None,
        weights: str = "modl_brain_sim") -> dict:
    from mrirecon.operators.mri import sense
    from mrirecon.training.adapt import adapt_model
    from mrirecon.training.weights import load_pretrained

    model = load_pretrained(weights).eval()
    slices = _prepared(part, work, volumes, weights)
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


def run_ct(work: Path, weights: str | None = None, views: tuple[int, ...] = (30, 60),
           setting: str = "") -> dict:
    """``ct_learned_adapt`` on the held-out CT slices: each slice without and with adaptation;
    ``setting``: fields of the pipeline's ``adapt:`` changed (:func:`_setting`)."""
    from mrirecon.heldout.data import heldout_ct_slices
    from mrirecon.heldout.protocol import reconstruct_ct, score_ct
    from mrirecon.io.atomic import atomic_write_text
    from mrirecon.models.inference import ready_for_inference
    from mrirecon.pipeline.adapt_stage import ct_pair
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.schema import UndersampleConfig
    from mrirecon.pipeline.stages_ct import CTSlice, undersample
    from mrirecon.training.adapt import adapt_model
    from mrirecon.training.weights import load_pretrained

    cfg, _ = load_pipeline("ct_learned_adapt")
    adapt = _setting(setting, cfg.adapt)  # checked before any slice is made
    weights = weights or cfg.reconstruct.weights
    model = ready_for_inference(load_pretrained(weights), "cpu")

    settings = {k: getattr(adapt, k) for k in ("steps", "time_budget_s", "validation_fraction", "lr")}
    results: dict = {"weights": weights, "adapt": settings, "threads": torch.get_num_threads()}
    if setting:
        results["setting"] = setting
    for nv in views:
        rows = {}
        for s in heldout_ct_slices():
            img, _ = reconstruct_ct(s, nv, weights, {}, model)  # a model: the name is a label
            cs = undersample(CTSlice(s.sinogram, s.geometry, s.reference), UndersampleConfig(enabled=True, views=nv))
            adapted, report = adapt_model(model, [ct_pair(cs, "cpu")], adapt)
            img_a, _ = reconstruct_ct(s, nv, weights, {}, adapted)
            rows[s.name] = {"without": score_ct(s, img), "with": score_ct(s, img_a), **report.as_dict()}
            r = rows[s.name]
            print(nv, s.name, f"{r['without']['PSNR']:.2f} -> {r['with']['PSNR']:.2f} dB",
                  f"best step {report.best_step} of {report.steps} ({report.stopped})", flush=True)
        results[str(nv)] = {"slices": rows, "mean_gain_dB": float(np.mean(
            [r["with"]["PSNR"] - r["without"]["PSNR"] for r in rows.values()]))}
    atomic_write_text(work / f"adapt_heldout_ct_{weights}.json", json.dumps(results, indent=1, default=float))
    return results


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("heldout", "indist", "ct"))
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--setting", action="append", default=[],
                   help="AdaptConfig fields, e.g. rows=64,steps=40,lr=3e-4 (repeatable; ct: once, "
                        "over the pipeline's adapt: settings)")
    p.add_argument("--volumes", type=int_at_least(1), default=None)
    p.add_argument("--threads", type=int_at_least(1), default=2)
    p.add_argument("--weights", default=None,
                   help="shipped weights to adapt (MRI: a MoDL, default modl_brain_sim; ct: default "
                        "the ct_learned_adapt pipeline's)")
    a = p.parse_args(argv)
    if a.part == "ct" and len(a.setting) > 1:
        p.error("ct: one --setting (it changes the ct_learned_adapt pipeline's adapt: fields)")
    from mrirecon.core.config import ConfigError

    try:  # checked before any folder or data is written
        for text in a.setting:
            _setting(text)
    except ConfigError as e:
        p.error(str(e))
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.part == "ct":
        run_ct(a.work, a.weights, setting=a.setting[0] if a.setting else "")
    else:
        run(a.part, a.work, a.setting or [""], a.volumes, a.weights or "modl_brain_sim")


if __name__ == "__main__":
    main()
