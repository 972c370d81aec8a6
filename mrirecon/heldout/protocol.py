"""Run the held-out protocol: every MRI and CT pipeline method on :mod:`mrirecon.heldout.data`.

MRI goes through :func:`mrirecon.bench.mri.run_bench` (the pipeline's stages: prewhitening
off, the readout cropped to the recon rows where the method's pipeline crops it
(:func:`readout_cropped`), ESPIRiT with the pipeline defaults, fastMRI equispaced-fraction masks
seeded by file name, centre fractions 0.08 at 4x and 0.04 at 8x, crop to 320 x 320, fastMRI
metrics per volume).
CT goes through :func:`mrirecon.pipeline.stages_ct.reconstruct` (learned models see the
unit-norm projector, iterative methods data scaled by the FBP peak) on 30 / 60 of 1000 views.
Each table row is mean +/- 2 std over volumes; the intensity columns are the ratios of the
reconstruction's mean and 99th percentile to the reference's (1.00 = no bias).

Parameters come from :data:`MRI_PARAMS` / :data:`CT_PARAMS`, chosen on the validation split
(:mod:`mrirecon.heldout.validation`, ``benchmarks/heldout.py --tune``), never on these data.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: MRI methods: every Cartesian MRI pipeline's reconstruction (mri_cs: l1_wavelet, mri_tv: tv,
#: mri_retrospective: cg_sense, mri_varnet: varnet_fastmri_diverse, mri_varnet_brain_sim:
#: varnet_brain_sim, mri_learned / mri_modl:
#: modl_fastmri_diverse, mri_modl_brain_sim: modl_brain_sim, mri_pnp: pnp_dncnn_diverse,
#: mri_pnp_brain_sim: pnp_dncnn_brain_sim, mri_unrolled_em: patch_gmm, the unrolled EM its card
#: defines) plus references (zero_filled, grappa). The radial pipelines have their own
#: held-out numbers in their cards; :data:`PIPELINE_ROWS` is the map a test checks.
MRI_METHODS = ("zero_filled", "cg_sense", "l1_wavelet", "tv", "grappa", "varnet_brain_sim",
               "varnet_fastmri_diverse", "modl_brain_sim", "modl_fastmri_diverse", "pnp_dncnn_brain_sim",
               "pnp_dncnn_diverse", "patch_gmm")
CT_METHODS = ("fbp", "sirt", "tv_ct", "primal_dual_ct_sim", "primal_dual_lodopab", "pnp_dncnn_diverse",
              "staged_ct_lodopab")
#: Held-out row of every pipeline in ``pipelines/`` (training configs and the radial pipelines,
#: whose geometry the Cartesian protocol does not cover, excepted); the adaptation pipelines
#: have their own held-out runs (``benchmarks/adapt_heldout.py``).
PIPELINE_ROWS: dict[str, tuple[str, str]] = {
    "mri_cs": ("mri", "l1_wavelet"), "mri_tv": ("mri", "tv"), "mri_retrospective": ("mri", "cg_sense"),
    "mri_learned": ("mri", "modl_fastmri_diverse"), "mri_modl": ("mri", "modl_fastmri_diverse"),
    "mri_modl_brain_sim": ("mri", "modl_brain_sim"), "mri_varnet": ("mri", "varnet_fastmri_diverse"),
    "mri_varnet_brain_sim": ("mri", "varnet_brain_sim"),
    "mri_pnp": ("mri", "pnp_dncnn_diverse"), "mri_pnp_brain_sim": ("mri", "pnp_dncnn_brain_sim"),
    "mri_unrolled_em": ("mri", "patch_gmm"), "ct_fbp": ("ct", "fbp"), "ct_tv": ("ct", "tv_ct"),
    "ct_learned": ("ct", "staged_ct_lodopab"), "ct_pnp": ("ct", "pnp_dncnn_diverse"),
    "ct_primal_dual": ("ct", "primal_dual_lodopab"), "ct_primal_dual_sim": ("ct", "primal_dual_ct_sim"),
}
#: Tuned on the validation split (``benchmarks/heldout.py tune``, grids in
#: :mod:`mrirecon.heldout.tune`), per acceleration. Re-tuned on 2026-12-04 with the readout crop
#: the classical pipelines apply and grids that let the iterative solvers converge (iterations
#: for L1-wavelet, ADMM's rho for TV): the first grids had stopped L1-wavelet at 100 FISTA
#: iterations and TV at 30 ADMM iterations with rho 1, 2.4-8.3 dB short of their optimum on the
#: validation split. On 2026-12-05 the grids of the two winners then on an edge were widened: TV's
#: rho (0.01 -> 0.001 gained 0.19 / 0.33 dB, 0.0003 lost) and L1-wavelet's iterations at 8x (3000
#: lost 0.03 dB to 1000). Still on an edge (``at_edge`` in ``tuned.json``): GRAPPA's 9 kernel rows
#: at 4x (5 -> 9 rows gained <= 0.1 dB). TV's winners (rho 0.001, 100 iterations) are early-stopped
#: ADMM iterates, not converged minimisers: at the same lam, 1000 iterations raise the 8x validation
#: SSIM 0.743 -> 0.812 (docs/heldout_log.md, "BART as a tuned classical row"); not re-tuned.
MRI_PARAMS: dict[float, dict[str, dict[str, Any]]] = {
    4.0: {"cg_sense": {"iterations": 40}, "l1_wavelet": {"lam": 1e-4, "iterations": 300},
          "tv": {"lam": 3e-4, "iterations": 100, "rho": 0.001},
          "grappa": {"kernel_size": (9, 3), "lam": 1e-2}},
    8.0: {"cg_sense": {"iterations": 80}, "l1_wavelet": {"lam": 1e-4, "iterations": 1000},
          "tv": {"lam": 1e-3, "iterations": 100, "rho": 0.001},
          "grappa": {"kernel_size": (5, 5), "lam": 1e-3}},
}
CT_PARAMS: dict[int, dict[str, dict[str, Any]]] = {  # tuned per view count
    # tv_ct re-tuned on 2026-12-05 with ADMM, its new solver, which converges in ~300 iterations:
    # 31.49 / 32.94 dB on the validation split at 30 / 60 views, against 31.38 / 32.56 for the
    # winner of 2026-12-04 (lam 10, 3000 PDHG iterations, not converged); PDHG's 100, the first
    # grid's only value, had been 2.1 / 3.2 dB short. rho 0.02 at 60 views is on its grid's edge
    # but ties 0.01 to 0.003 dB: solver convergence, not a missing optimum)
    30: {"fbp": {"filter": "hann"}, "sirt": {"iterations": 100},
         "tv_ct": {"lam": 7.0, "iterations": 300, "rho": 0.01}},
    60: {"fbp": {"filter": "hann"}, "sirt": {"iterations": 100},
         "tv_ct": {"lam": 14.0, "iterations": 300, "rho": 0.02}},
}
#: Inference settings of learned models on MRI (their cards' defaults) and CT (``ct_pnp.yaml``).
MRI_MODEL_PARAMS: dict[str, dict[str, Any]] = {}
#: Per-acceleration inference settings of learned models (= their pipelines'
#: ``reconstruct.params_by_acceleration``): ``mri_pnp``'s DPIR schedule, chosen on 2026-12-05 on
#: the validation split and 16 diverse allowed-source slices (``tuned.json`` ``pnp_mri``: 4x
#: gained there, 8x kept the card's schedule, as longer schedules lost on natural and procedural
#: images)
MRI_MODEL_TABLES: dict[str, dict[float, dict[str, Any]]] = {
    "pnp_dncnn_diverse": {4.0: {"iterations": 40, "sigma_min": 0.005, "lam": 1e-6},
                          8.0: {"iterations": 20, "sigma_min": 0.005, "lam": 3e-6}},
}
#: ``ct_pnp``'s DPIR schedule (= ``ct_pnp.yaml``: ``params`` and ``params_by_views``), re-chosen
#: on 2026-12-05 on both validation slices per view count (the earlier lam 1e-5 / 20 iterations had
#: been chosen on the first slice alone at 30 views: 30.39 dB there, 21.07 on the second); sigma
#: 0.1 -> 0.005 as the card
CT_MODEL_PARAMS: dict[str, dict[str, Any]] = {"pnp_dncnn_diverse": {"lam": 1e-4}}
CT_MODEL_TABLES: dict[str, dict[int, dict[str, Any]]] = {
    "pnp_dncnn_diverse": {30: {"iterations": 40}, 60: {"iterations": 20}}}


def learned_settings(method: str, value: float, params: Mapping[str, Mapping[str, Any]],
                     tables: Mapping[str, Mapping[float, Mapping[str, Any]]], table: str):
    """The inference settings a learned ``method``'s row runs at acceleration / view count
    ``value``: its ``params`` over its table's nearest entry, chosen as its pipeline chooses them
    per slice (:func:`~mrirecon.pipeline.param_tables.for_slice`); ``table`` names the field
    (``params_by_acceleration`` / ``params_by_views``). Empty for a method without either."""
    from mrirecon.pipeline.param_tables import for_slice
    from mrirecon.pipeline.schema import ReconstructConfig

    cfg = ReconstructConfig(method, params=dict(params.get(method, {})),
                            **{table: {k: dict(v) for k, v in tables.get(method, {}).items()}})
    return for_slice(cfg, value).config


def intensity_ratios(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """``(mean ratio, 99th-percentile ratio)`` of ``prediction`` to ``reference``.

    Real images are taken with their sign (CT's ``mu``: an undershoot below 0 in the air lowers
    the mean, as it lowers the image's total attenuation), complex ones as magnitudes. Until
    2026-12-06 real images were taken as magnitudes too, which counted FBP's negative streaks as
    extra intensity (mean ratio 1.336 at 30 views for a signed mean of 1.001)."""
    def values(a) -> np.ndarray:
        a = np.asarray(a)
        return np.abs(a).astype(float) if np.iscomplexobj(a) else a.astype(float)

    ref, pred = values(reference), values(prediction)
    return float(pred.mean() / ref.mean()), float(np.percentile(pred, 99) / np.percentile(ref, 99))


def _summary(rows: list[dict]) -> dict[str, Any]:
    """Mean and 2 sample standard deviations (``ddof = 1``, as fastMRI's ``runstats`` and
    :meth:`MetricsReport.std`; 0 for one volume) over the volumes of ``rows``."""
    out: dict[str, Any] = {}
    for key in ("NMSE", "PSNR", "SSIM", "mean_ratio", "p99_ratio", "seconds"):
        v = np.array([r[key] for r in rows], float)
        out[key], out[key + "_2std"] = float(v.mean()), float(2 * v.std(ddof=1)) if v.size > 1 else 0.0
    out["volumes"] = len(rows)
    if all("volume" in r for r in rows):  # per-volume scores, to see what a mean hides
        out["per_volume"] = {r["volume"]: {"PSNR": round(r["PSNR"], 3), "SSIM": round(r["SSIM"], 4),
                                           "mean_ratio": round(r["mean_ratio"], 4),
                                           "p99_ratio": round(r["p99_ratio"], 4)} for r in rows}
    return out


def readout_cropped(method: str) -> bool:
    """Whether the held-out row of MRI ``method`` runs on k-space cropped to the header's recon
    rows (an exact readout crop): as the pipeline that runs it does (its
    ``preprocess.remove_oversampling``; unset, classical methods crop and learned models do not),
    and the references without a pipeline (``zero_filled``, ``grappa``) as a classical
    pipeline would."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.recon import available

    for name, (part, row) in PIPELINE_ROWS.items():
        if part == "mri" and row == method:
            flag = load_pipeline(name)[0].preprocess.remove_oversampling
            if flag is not None:
                return flag
    return method in set(available())


def run_mri(data_dir: str | Path, accelerations: Sequence[float] = (4, 8),
            methods: Sequence[str] = MRI_METHODS,
            params: Mapping[float, Mapping[str, Mapping[str, Any]]] | None = None,
            output_dir: str | Path | None = None, progress: bool = False) -> dict:
    """``{acc: {method: summary}}`` on the fastMRI files of ``data_dir``; each summary records
    the ``params`` its method ran with (``params`` / :data:`MRI_PARAMS` at that acceleration, a
    learned model's table entry) and whether the readout was cropped."""
    from mrirecon.bench.mri import run_bench
    from mrirecon.io import FastMRIFile

    params = MRI_PARAMS if params is None else params
    cropped = {m: readout_cropped(m) for m in methods}
    refs = {}
    for p in sorted(Path(data_dir).glob("*.h5")):
        f = FastMRIFile(p)
        try:
            refs[p.name] = f.reference(key="reconstruction_rss").numpy()
        finally:
            f.close()
    results: dict[float, dict[str, dict]] = {}
    for acc in accelerations:
        rows: dict[str, list[dict]] = {m: [] for m in methods}

        def record(rec, pred, rows=rows):
            mr, pr = intensity_ratios(refs[rec["volume"]], pred)
            rows[rec["method"]].append({"volume": rec["volume"], "NMSE": rec["NMSE"],
                                        "PSNR": rec["PSNR"], "SSIM": rec["SSIM"],
                                        "mean_ratio": mr, "p99_ratio": pr,
                                        "seconds": rec["seconds_per_slice"]})

        p = {m: {**dict(params.get(float(acc), {}).get(m, {})),  # a run_bench per acceleration:
                 **learned_settings(m, acc, MRI_MODEL_PARAMS, MRI_MODEL_TABLES,  # its settings load
                                    "params_by_acceleration").params}  # with the model
             for m in methods}
        p = {m: v for m, v in p.items() if v}
        for crop in (True, False):  # one run per preprocessing; rows keep the methods' order
            group = [m for m in methods if cropped[m] == crop]
            if group:
                run_bench(data_dir, "multicoil", (acc,), group,
                          params={m: v for m, v in p.items() if m in group}, output_dir=None,
                          resume=False, progress=progress, verbose=False, on_record=record,
                          remove_oversampling=crop)
        results[float(acc)] = {m: {**_summary(r), "readout_cropped": cropped[m], "params": p.get(m, {})}
                               for m, r in rows.items() if r}
    if output_dir is not None:
        _write(results, Path(output_dir) / "heldout_mri.md", "acceleration")
    return results


def _ct_models(methods: Sequence[str]) -> dict[str, torch.nn.Module]:
    from mrirecon.bench.methods import load_model
    from mrirecon.models.inference import ready_for_inference
    from mrirecon.recon import available

    classical = set(available())
    return {m: ready_for_inference(load_model(m, CT_MODEL_PARAMS.get(m, {}), None), "cpu")
            for m in methods if m not in classical}


def reconstruct_ct(s, views: int, method: str, params: Mapping[str, Any], model) -> tuple[torch.Tensor, float]:
    """Reconstruct slice ``s`` from ``views`` of its views: ``(mu / MU_MAX, seconds)``. The image
    is scored as the pipeline writes it (not clipped at 0, as ``mrirecon run`` and ``mrirecon
    bench`` score it: a method that wants ``mu >= 0`` enforces it itself, as SIRT and TV do)."""
    from mrirecon.io.lodopab import MU_MAX_PER_MM
    from mrirecon.pipeline.schema import ReconstructConfig, UndersampleConfig
    from mrirecon.pipeline.stages_ct import CTSlice, reconstruct, undersample

    cs = undersample(CTSlice(s.sinogram, s.geometry, s.reference), UndersampleConfig(enabled=True, views=views))
    t0 = time.perf_counter()
    out = reconstruct(cs, ReconstructConfig(method=method, params=dict(params)), model)
    return out.image / MU_MAX_PER_MM, time.perf_counter() - t0


def score_ct(s, image: torch.Tensor) -> dict[str, float]:
    """The protocol's scores of one CT reconstruction (``mu / MU_MAX``) of slice ``s``: fastMRI's
    NMSE / PSNR / SSIM on the uncropped image and the intensity ratios."""
    from mrirecon.metrics import evaluate_volumes

    ref = s.reference.numpy()[None]
    rep = evaluate_volumes({s.name: ref}, {s.name: image.numpy()[None]}, crop=False)
    mr, pr = intensity_ratios(ref, image.numpy())
    return {**{k: float(v[0]) for k, v in rep.values.items()}, "mean_ratio": mr, "p99_ratio": pr}


def run_ct(slices: Sequence, views: Sequence[int] = (30, 60), methods: Sequence[str] = CT_METHODS,
           params: Mapping[int, Mapping[str, Mapping[str, Any]]] | None = None,
           output_dir: str | Path | None = None) -> dict:
    """``{views: {method: summary}}`` on ``slices`` (:func:`~mrirecon.heldout.data.heldout_ct_slices`);
    ``params`` (default :data:`CT_PARAMS`) per view count and method; each summary records the
    ``params`` that ran (a learned model's: its :data:`CT_MODEL_PARAMS` and table entry)."""
    from mrirecon.pipeline.param_tables import model_settings

    params = CT_PARAMS if params is None else params
    models = _ct_models(methods)
    results: dict[int, dict[str, dict]] = {}
    for nv in views:
        res = {}
        for m in methods:
            rows = []
            # the models are loaded once: a learned one's entry for this view count is set on it
            # as the pipeline sets it per slice
            own = learned_settings(m, nv, CT_MODEL_PARAMS, CT_MODEL_TABLES, "params_by_views")
            given = dict(params.get(nv, {}).get(m, {}))
            with model_settings(models.get(m), own):
                for s in slices:
                    img, sec = reconstruct_ct(s, nv, m, given, models.get(m))
                    rows.append({**score_ct(s, img), "seconds": sec, "volume": s.name})
            # the settings that ran: a classical method's parameters, a learned one's inference
            # settings beyond its card (CT_MODEL_PARAMS with this view count's table entry)
            res[m] = {**_summary(rows), "params": {**given, **dict(own.params)}}
        results[int(nv)] = res
    if output_dir is not None:
        _write(results, Path(output_dir) / "heldout_ct.md", "views")
    return results


def table(results: Mapping, setting: str) -> str:
    """Markdown table of :func:`run_mri` / :func:`run_ct` results."""
    lines = [f"| method | {setting} | volumes | NMSE | PSNR (dB) | SSIM | mean ratio | p99 ratio | s/slice |",
             "|---|---|---|---|---|---|---|---|---|"]
    for key, res in results.items():
        for m, r in res.items():
            lines.append(
                f"| {m} | {key:g} | {r['volumes']} | {r['NMSE']:.4f} ± {r['NMSE_2std']:.4f} | "
                f"{r['PSNR']:.2f} ± {r['PSNR_2std']:.2f} | {r['SSIM']:.4f} ± {r['SSIM_2std']:.4f} | "
                f"{r['mean_ratio']:.3f} | {r['p99_ratio']:.3f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _write(results: Mapping, path: Path, setting: str) -> None:
    from mrirecon.io.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table(results, setting))
