"""CT benchmark table: methods x sparse-view factors on LoDoPaB-layout data (``--challenge ct``).

Every sample of every ``observation_*.hdf5`` file with a matching ground truth is
reconstructed from every ``factor``-th view (the acceleration), optionally at a lower dose, with
each method; metrics follow the fastMRI definitions per file ("volume") on attenuation
normalised like LoDoPaB's ground truth (``mu / MU_MAX``, non-negative). Learned methods are
shipped weight names or checkpoint paths; they see the unit-norm projector they were trained with.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mrirecon.io.atomic import atomic_write_text
from mrirecon.pipeline.schema import ReconstructConfig, UndersampleConfig


# Defaults for the CT benchmark, tuned once on simulated training data (allowed sources only);
# iterative methods run on data scaled to an image peak near 1 (see stages_ct.reconstruct).
CT_DEFAULTS: dict[str, dict[str, Any]] = {
    "sirt": {"iterations": 50},
    "tv_ct": {"lam": 5.0, "iterations": 100},
    "tgv": {"lam": 5.0, "iterations": 100},
    "pnp_nlm": {"rho": 0.1, "sigma_scale": 1.0},
}


def run_ct_bench(data_dir: str | os.PathLike, accelerations: Iterable[float] = (6,),
                 methods: str | Sequence[str] = ("fbp", "sirt", "tv_ct"),
                 weights: Mapping[str, str] | None = None,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 output_dir: str | os.PathLike | None = None, *, photons: float | None = None,
                 max_volumes: int | None = None, progress: bool = True) -> str:
    """Run the CT benchmark; returns (and writes, with a CSV) the Markdown table."""
    from tqdm.auto import tqdm

    from mrirecon import recon
    from mrirecon.io.lodopab import MU_MAX_PER_MM, LoDoPaBFiles
    from mrirecon.metrics import evaluate_volumes
    from mrirecon.pipeline.stages_ct import CTSlice, reconstruct, undersample

    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m]
    weights = dict(weights or {})
    given = {m: dict((params or {}).get(m, {})) for m in methods}
    given = {m: recon.canonical_parameters(m, p) if m in recon.available() else p  # old names
             for m, p in given.items()}
    params = {m: {**CT_DEFAULTS.get(m, {}), **given[m]} for m in methods}
    root = Path(data_dir)
    parts = sorted({p.name.split("_")[1] for p in root.glob("observation_*_[0-9][0-9][0-9].hdf5")})
    if not parts:
        raise FileNotFoundError(f"run_ct_bench: no observation_<part>_NNN.hdf5 files in {root}")
    files = [LoDoPaBFiles(root, part) for part in parts]
    files = [f for f in files if f.ground_truth_files is not None]
    if not files:
        raise FileNotFoundError(f"run_ct_bench: no ground_truth files next to the observations in {root}")
    volumes = [(f, i) for f in files for i in range(len(f.observation_files))][:max_volumes]
    from mrirecon.models.registry import available_models
    from mrirecon.training.weights import available_weights, load_model

    models = {}
    for m in methods:
        if m in recon.available():
            continue
        if m not in available_weights() and not (m in available_models() and m in weights):
            raise ValueError(f"run_ct_bench: unknown method {m!r}; classical: "
                             f"{', '.join(recon.available())}; learned: shipped weight names or --weights")
        models[m] = load_model(m, {}, weights.get(m))
    rows, csv = [], ["method,acceleration,volume,nmse,psnr,ssim,seconds_per_slice"]
    for acc in accelerations:
        for m in methods:
            refs, preds, seconds, n_slices = {}, {}, 0.0, 0
            for f, i in tqdm(volumes, desc=f"{m} x{acc:g}", disable=not progress, leave=False):
                start = int(sum(f.counts[:i]))
                rec, ref = [], []
                for k in range(f.counts[i]):
                    s = CTSlice(f.sinogram(start + k).data[0], f.geometry,
                                f.attenuation(start + k).data[0])
                    views = max(1, f.geometry.num_views // int(acc))
                    s = undersample(s, UndersampleConfig(enabled=True, views=views, photons=photons),
                                    seed=start + k)
                    t0 = time.perf_counter()
                    s = reconstruct(s, ReconstructConfig(method=m, params=params.get(m, {})),
                                    models.get(m), "cpu")
                    seconds += time.perf_counter() - t0
                    n_slices += 1
                    rec.append(s.image / MU_MAX_PER_MM)
                    ref.append(s.reference / MU_MAX_PER_MM)
                name = f.observation_files[i].name
                refs[name], preds[name] = torch.stack(ref).numpy(), torch.stack(rec).numpy()
            report = evaluate_volumes(refs, preds, crop=False, metrics=("NMSE", "PSNR", "SSIM"))
            mean, std = report.mean(), report.std()
            n_params = sum(p.numel() for p in models[m].parameters()) if m in models else 0
            rows.append((m, acc, mean, std, seconds / max(n_slices, 1), n_params))
            for j, name in enumerate(report.names):
                csv.append(f"{m},{acc:g},{name}," + ",".join(f"{report.values[k][j]:.6g}"
                                                            for k in ("NMSE", "PSNR", "SSIM"))
                           + f",{seconds / max(n_slices, 1):.4g}")
    lines = ["| method | views kept | NMSE | PSNR | SSIM | s/slice | parameters |",
             "|---|---|---|---|---|---|---|"]
    for m, acc, mean, std, sps, n in rows:
        lines.append(f"| {m} | 1/{acc:g} | {mean['NMSE']:.4f} ± {2 * std['NMSE']:.4f} | "
                     f"{mean['PSNR']:.2f} ± {2 * std['PSNR']:.2f} | {mean['SSIM']:.4f} ± "
                     f"{2 * std['SSIM']:.4f} | {sps:.3f} | {n} |")
    table = "\n".join(lines) + "\n"
    if output_dir is not None:
        out = Path(output_dir)
        atomic_write_text(out / "bench_ct_table.md", table)
        atomic_write_text(out / "bench_ct_volumes.csv", "\n".join(csv) + "\n")
    return table


def ct_accelerations(values: Iterable[float]) -> list[float]:
    """Sparse-view factors must be integers >= 1."""
    out = []
    for v in values:
        if v < 1 or v != int(v):
            raise ValueError(f"--challenge ct: accelerations are sparse-view factors (integers >= 1), got {v}")
        out.append(float(v))
    return out


__all__ = ["ct_accelerations", "run_ct_bench"]
