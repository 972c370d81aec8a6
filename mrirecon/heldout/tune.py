"""Choose baseline parameters on the validation split (never on the held-out data).

``tune_mri`` / ``tune_ct`` score a grid of parameter sets per method on
:mod:`mrirecon.heldout.validation` data at the deployment geometry and return, per method, the
set with the best mean PSNR (ties: SSIM) together with every grid point, for the model cards
and the README.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: Default grids (classical MRI methods run on data scaled to an image peak near 1). A fair
#: baseline needs its optimum inside the grid: a winner at either end of a varied parameter is
#: flagged (``"at_edge"`` in the result, and a warning), and the grid is then widened. The
#: first grids (cg 5-20, l1 1e-3..1e-2, tv 1e-3..1e-2, sirt 30/100, tv_ct 2..10) put seven of
#: the eight winners on an edge; these are their widened successors.
MRI_GRID: dict[str, list[dict[str, Any]]] = {
    "cg_sense": [{"iterations": n} for n in (5, 10, 20, 40, 80, 160)],
    # L1-wavelet by FISTA: at small lam it needs many iterations (100, the first grid's only
    # value, left it 2.4 / 3.1 dB short at 4x / 8x), so iterations are gridded too
    "l1_wavelet": [{"lam": lam, "iterations": n} for n in (100, 300, 1000)
                   for lam in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)]
    # 1000 iterations won at 8x on the grid's edge (2026-12-04): 3000 around its lam
    + [{"lam": lam, "iterations": 3000} for lam in (3e-5, 1e-4, 3e-4)],
    # TV by ADMM: with its then default rho = 1 (0.1 since 2026-12-05) the PSNR still rose from
    # 300 to 1000 iterations (30, the first grid's only value, left it 5.5-8.3 dB short); rho
    # 0.03-0.1 reaches in 100 iterations what rho 1 had not in 300 (4x: 33.89 vs 33.67 dB at lam
    # 3e-3), so rho is gridded at 100 iterations
    "tv": [{"lam": lam, "iterations": 100, "rho": rho} for rho in (0.03, 0.1, 0.3)
           for lam in (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)]
    + [{"lam": lam, "iterations": 100, "rho": 0.01} for lam in (1e-4, 3e-4, 1e-3)]
    + [{"lam": 1e-4, "iterations": 100, "rho": 0.03}]
    # rho 0.01 won at both accelerations on the grid's edge (2026-12-04): three steps below it
    + [{"lam": lam, "iterations": 100, "rho": rho} for rho in (0.003, 0.001, 0.0003)
       for lam in (1e-4, 3e-4, 1e-3, 3e-3)],
    # kernel (rows, columns): 3 columns is the narrowest window with acquired neighbours, the end
    # of the parameter's range rather than of the grid (GRID_BOUNDS: a 3-column winner is not
    # flagged); 11 columns lost at both accelerations in a first grid (the 8x ACS band is only 13
    # columns wide)
    "grappa": [{"kernel_size": (kx, ky), "lam": lam} for kx in (3, 5, 7, 9) for ky in (3, 5, 7, 9)
               for lam in (1e-4, 1e-3, 1e-2, 1e-1)],
}
#: Per method, values at which a parameter's range itself ends (components named as in
#: :func:`edge_parameters`): a winner there is not on the grid's edge, as no wider grid exists.
GRID_BOUNDS: dict[str, dict[str, tuple]] = {"grappa": {"kernel_size[1]": (3,)}}
CT_GRID: dict[str, list[dict[str, Any]]] = {
    "sirt": [{"iterations": n} for n in (30, 100, 300)],
    # TV by ADMM (tv_ct's default since 2026-12-05; rho relative to ||A||^2): on the validation
    # slices at 30 views (lam 10, rho 0.01) 100 iterations reach a lower objective than PDHG's 3000
    # and 300 one lower than PDHG's 10000 (the grid of 2026-12-04 had PDHG's 1000 / 3000, and its
    # winner lam 10 / 3000 iterations on its edge)
    "tv_ct": [{"lam": lam, "iterations": n, "rho": rho} for n in (100, 300)
              for rho in (0.002, 0.005, 0.01, 0.02) for lam in (3.0, 5.0, 10.0, 20.0)]
    # around the first 32 points' winner (lam 10, 300 iterations, rho 0.01-0.02 within 0.01 dB):
    # lam 7 / 14, and 1000 iterations to show that 300 have converged
    + [{"lam": lam, "iterations": 300, "rho": rho} for rho in (0.01, 0.02) for lam in (7.0, 14.0)]
    + [{"lam": 10.0, "iterations": 1000, "rho": 0.02}],
}


def prepared_mri_slices(data_dir: str | Path, acceleration: float, max_volumes: int | None = None,
                        remove_oversampling: bool = False) -> list[tuple[Any, Any, np.ndarray, str]]:
    """``(slice with ESPIRiT maps, slice with crop-0 maps, target, volume)`` per slice;
    ``remove_oversampling``: k-space cropped to the recon rows first, as the held-out rows of
    the methods whose pipelines crop it (:func:`~mrirecon.heldout.protocol.readout_cropped`)."""
    from mrirecon.bench.methods import center_fraction_for
    from mrirecon.io import FastMRIFile
    from mrirecon.pipeline.schema import CalibrateConfig, PreprocessConfig, UndersampleConfig
    from mrirecon.pipeline.slice_mri import make_slice
    from mrirecon.pipeline.stages_mri import calibrate, preprocess, undersample

    cf = center_fraction_for(acceleration)
    ucfg = UndersampleConfig(enabled=True, mask="equispaced_fraction", center_fractions=(cf,),
                             accelerations=(acceleration,), seed="file")
    files = sorted(Path(data_dir).glob("*.h5"))[:max_volumes]
    if not files:  # was: "evaluate_volumes: no volumes given", naming no folder
        raise FileNotFoundError(f"{data_dir}: no fastMRI .h5 files to tune on (write the validation "
                                "split there first: heldout.validation.write_validation_mri)")
    out = []
    for p in files:
        f = FastMRIFile(p)
        try:
            target = f.reference(key="reconstruction_rss").numpy()
            for i in range(len(f)):
                s = make_slice(f.read_slice(i, with_reference=False), i, p.name, None)
                pcfg = PreprocessConfig(coil_compression=None, remove_oversampling=remove_oversampling)
                s = undersample(preprocess(s, pcfg), ucfg)
                s = calibrate(s, CalibrateConfig())
                s0 = replace(s, maps=calibrate(s, replace(CalibrateConfig(), crop=0.0)).maps)
                out.append((s, s0, target[i], p.name))
        finally:
            f.close()
    return out


def score_mri(slices, method: str, params: Mapping[str, Any], model=None) -> dict[str, float]:
    """Mean PSNR / SSIM over volumes of one method on prepared slices."""
    from mrirecon.metrics import evaluate_volumes
    from mrirecon.pipeline.schema import PostprocessConfig, ReconstructConfig
    from mrirecon.pipeline.stages_mri import postprocess, reconstruct

    preds: dict[str, list] = {}
    refs: dict[str, list] = {}
    for s, s0, target, vol in slices:
        si = s0 if model is not None and getattr(model, "full_fov_maps", True) else s
        out = reconstruct(si, ReconstructConfig(method=method, params=dict(params)), model)
        preds.setdefault(vol, []).append(postprocess(out, PostprocessConfig()).numpy())
        refs.setdefault(vol, []).append(target)
    rep = evaluate_volumes({k: np.stack(v) for k, v in refs.items()}, {k: np.stack(v) for k, v in preds.items()},
                           nonfinite="nan")  # a grid point that diverges ranks last
    return {"PSNR": float(np.mean(rep.values["PSNR"])), "SSIM": float(np.mean(rep.values["SSIM"]))}


def best_of(grid_scores: list[dict]) -> dict:
    """The grid point with the best ``PSNR`` (to 0.01 dB), ties to the better ``SSIM``."""
    return max(grid_scores, key=lambda r: (round(r["PSNR"], 2), r["SSIM"]))


def edge_parameters(grid_scores: list[dict], bounds: Mapping[str, Sequence] | None = None) -> list[str]:
    """Names of the varied parameters whose best value is the grid's smallest or largest.

    Sequence-valued parameters count per component (``kernel_size[0]``, ``kernel_size[1]``).

    A parameter counts as varied when the grid holds more than one value of it; a winner at
    either end means the optimum may lie outside the grid, so the tuned baseline may be unfair.
    ``bounds`` (:data:`GRID_BOUNDS` of the method): per parameter, the values where its range
    ends; a winner there is not flagged.
    """
    def flat(params: Mapping[str, Any]) -> dict[str, Any]:  # a tuple / list: one per component
        out = {}
        for k, v in params.items():
            if isinstance(v, (tuple, list)):
                out.update({f"{k}[{i}]": x for i, x in enumerate(v)})
            else:
                out[k] = v
        return out

    best = flat(best_of(grid_scores)["params"])
    points = [flat(r["params"]) for r in grid_scores]
    out = []
    for key in sorted({k for r in points for k in r}):
        values = sorted({r[key] for r in points if key in r})
        if (len(values) > 1 and key in best and best[key] in (values[0], values[-1])
                and best[key] not in tuple((bounds or {}).get(key, ()))):
            out.append(key)
    return out


def _result(method: str, grid_scores: list[dict], where: str) -> dict:
    """``{"best", "grid", "at_edge"}``, warning when the winner sits on the grid's edge."""
    edge = edge_parameters(grid_scores, GRID_BOUNDS.get(method))
    if edge:
        warnings.warn(f"{where} {method}: best {', '.join(edge)} at the edge of the grid; "
                      "widen the grid", stacklevel=3)
    return {"best": best_of(grid_scores)["params"], "grid": grid_scores, "at_edge": edge}


def tune_mri(data_dir: str | Path, accelerations: Sequence[float] = (4, 8),
             grid: Mapping[str, list[dict]] | None = None) -> dict:
    """``{acc: {method: {"best": params, "grid": [...]}}}`` for the classical MRI methods."""
    from mrirecon.heldout.protocol import readout_cropped

    grid = MRI_GRID if grid is None else grid
    out: dict = {}
    for acc in accelerations:
        prepared: dict[bool, list] = {}  # the data each method's held-out row sees
        res = {}
        for m, points in grid.items():
            crop = readout_cropped(m)
            if crop not in prepared:
                prepared[crop] = prepared_mri_slices(data_dir, float(acc), remove_oversampling=crop)
            scores = [{"params": p, **score_mri(prepared[crop], m, p)} for p in points]
            res[m] = _result(m, scores, f"MRI {acc}x")
        out[float(acc)] = res
    return out


def tune_model_mri(data_dir: str | Path, model: torch.nn.Module, settings: list[dict[str, Any]],
                   accelerations: Sequence[float] = (4, 8), max_volumes: int | None = None,
                   remove_oversampling: bool = False) -> dict:
    """Score a learned model with attribute overrides ``settings`` (e.g. a PnP schedule) on the
    data its held-out row sees (``remove_oversampling``: as its pipeline crops the readout)."""
    out: dict = {}
    with _attributes_kept(model, settings):
        for acc in accelerations:
            slices = prepared_mri_slices(data_dir, float(acc), max_volumes, remove_oversampling)
            scores = []
            for st in settings:
                for k, v in st.items():
                    setattr(model, k, v)
                scores.append({"params": st, **score_mri(slices, "model", {}, model)})
                print(acc, scores[-1], flush=True)
            out[float(acc)] = _result("model", scores, f"MRI {acc}x")
    return out


@contextlib.contextmanager
def _attributes_kept(model: torch.nn.Module | None, settings: Sequence[Mapping[str, Any]]):
    """Put back the attributes that ``settings`` override once the scoring ends (the model was
    left at the last setting tried, whatever scored best)."""
    names = {k for st in settings for k in st} if model is not None else set()
    missing = object()
    kept = {k: getattr(model, k, missing) for k in names}
    try:
        yield
    finally:
        for k, v in kept.items():
            if v is missing:
                delattr(model, k)
            else:
                setattr(model, k, v)


def tune_ct(slices, views: Sequence[int] = (30, 60), grid: Mapping[str, list[dict]] | None = None,
            model: torch.nn.Module | None = None, model_settings: list[dict] | None = None) -> dict:
    """``{views: {method: {"best", "grid"}}}`` on validation CT slices; ``model`` as ``"model"``,
    scored with each attribute override of ``model_settings`` (default: once, as it is); the
    overridden attributes are put back afterwards."""
    grid = CT_GRID if grid is None else grid
    settings = [{}] if model_settings is None else model_settings  # None: the model as it is
    out: dict = {}
    with _attributes_kept(model, settings):
        for nv in views:
            out[int(nv)] = _tune_ct_views(slices, nv, grid, model, settings)
    return out


def _tune_ct_views(slices, nv: int, grid: Mapping[str, list[dict]], model, settings) -> dict:
    """:func:`tune_ct` at one view count: ``{method: {"best", "grid"}}``."""
    from mrirecon.heldout.protocol import reconstruct_ct
    from mrirecon.metrics import evaluate_volumes

    res = {}
    items = list(grid.items()) + ([("model", settings)] if model is not None else [])
    for m, points in items:
        scores = []
        for p in points:
            if m == "model":
                for k, v in p.items():
                    setattr(model, k, v)
            ps, ss = [], []
            for s in slices:
                img, _ = reconstruct_ct(s, nv, "model" if m == "model" else m,
                                        {} if m == "model" else p, model if m == "model" else None)
                rep = evaluate_volumes({s.name: s.reference.numpy()[None]}, {s.name: img.numpy()[None]}, crop=False,
                                       nonfinite="nan")
                ps.append(float(rep.values["PSNR"][0]))
                ss.append(float(rep.values["SSIM"][0]))
            scores.append({"params": p, "PSNR": float(np.mean(ps)), "SSIM": float(np.mean(ss))})
        res[m] = _result(m, scores, f"CT {nv} views")
    return res
