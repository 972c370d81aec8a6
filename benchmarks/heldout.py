"""Held-out protocol: tune baselines on the validation split, then score every pipeline once.

    python benchmarks/heldout.py tune --work DIR        # validation split only -> DIR/tuned.json
    python benchmarks/heldout.py eval --work DIR        # held-out data -> DIR/heldout_{mri,ct}.md
    python benchmarks/heldout.py eval --work DIR --parts mri368  # the knee-width part (640 x 368)
    python benchmarks/heldout.py tune --work DIR --parts models_mri --methods a,b  # shipped models
    python benchmarks/heldout.py tune --work DIR --parts mri --methods grappa  # one method's grid
    python benchmarks/heldout.py tune --work DIR --parts unrolls_mri  # MoDL's unroll count
    python benchmarks/heldout.py tune --work DIR --parts pnp_brain_mri  # PnP-ADMM schedule

``tune`` writes the validation data (MNI152 brains and allowed CT images at the deployment
geometry) and grids the classical parameters (and the PnP schedules with ``--parts
pnp_mri,pnp_ct``); copy the winners into ``mrirecon/heldout/protocol.py`` (``MRI_PARAMS`` /
``CT_PARAMS``; the DPIR schedules, after the diverse-slice check of the PnP card, into
``MRI_MODEL_TABLES`` / ``CT_MODEL_TABLES`` and ``mri_pnp.yaml`` / ``ct_pnp.yaml``), and
(``unrolls_mri`` / ``pnp_brain_mri``, the best PSNR summed over 4x and 8x) the
``modl_fastmri_diverse`` / ``pnp_dncnn_brain_sim`` cards.
``eval`` writes the held-out data (reserved images, see ``mrirecon/heldout/data.py``) and runs
the protocol with those parameters (``protocol.py``'s; a ``DIR/tuned.json`` is not read, only
compared, and each row records the ``params`` it ran). Unknown ``--parts`` / ``--methods`` are
refused (exit 2) naming the valid ones. Threads: ``--threads`` (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _dpir_grid(*grids: tuple) -> list[dict]:
    """DPIR schedules (``sigma_max`` 0.1): each grid's ``(iterations, sigma_min, lam)`` product in
    turn, a point already listed skipped."""
    points = [{"iterations": n, "sigma_max": 0.1, "sigma_min": smin, "lam": lam}
              for grid in grids for n in grid[0] for smin in grid[1] for lam in grid[2]]
    return [p for i, p in enumerate(points) if p not in points[:i]]


# PnP-DPIR schedules tried on the validation split (attributes of PnPDPIR), 2026-12-05: the first
# grid, then the winner's edges widened. mri_pnp per acceleration on both validation volumes (the
# rounds before had used one volume and two points, the card's 20 / 0.005 / 3e-6); which point
# runs is chosen with the diverse slices too (the card's schedule_per_acceleration)
_DPIR_FIRST = ((20, 40), (0.0025, 0.005, 0.01), (1e-6, 3e-6, 1e-5))
PNP_SETTINGS = {4.0: _dpir_grid(_DPIR_FIRST, ((40, 60, 100), (0.005, 0.01, 0.02), (3e-7, 1e-6, 3e-6))),
                8.0: _dpir_grid(_DPIR_FIRST, ((40, 60, 100), (0.01, 0.02, 0.04), (1e-7, 3e-7, 1e-6)))}
# ct_pnp per view count on both validation slices (the first round's three points had used one
# slice at 30 views)
_CT_FIRST = ((20, 40, 60), (0.005, 0.01, 0.02), (3e-6, 1e-5, 3e-5, 1e-4))
PNP_CT_SETTINGS = {
    30: _dpir_grid(_CT_FIRST, ((20, 40, 60), (0.005, 0.01), (3e-4, 1e-3)), ((40, 60), (0.0025,), (1e-4,))),
    60: _dpir_grid(_CT_FIRST, ((10,), (0.005, 0.01), (1e-4,)), ((10,), (0.005,), (3e-4,)),
                   ((20,), (0.005, 0.01), (3e-4,)), ((20,), (0.0025,), (1e-4,))),
}

#: MoDL unroll counts tried at inference (modl_fastmri_diverse trained with 10; shared denoiser)
MODL_UNROLL_SETTINGS = [{"iterations": n} for n in (5, 8, 10, 12, 15, 20)]
#: PnP-ADMM schedules of pnp_dncnn_brain_sim (its card's first choice, 30 / 0.005, was made on
#: 128 x 128 simulated slices, not at the deployment geometry)
PNP_BRAIN_SETTINGS = [{"iterations": n, "rho": rho}
                      for n, rho in ((30, 0.005), (40, 0.005), (40, 0.002), (60, 0.002), (30, 0.01), (60, 0.005))]
#: ``tune --parts PART``: the shipped MRI model and its settings gridded on the validation split
MODEL_SETTINGS = {"unrolls_mri": ("modl_fastmri_diverse", MODL_UNROLL_SETTINGS),
                  "pnp_brain_mri": ("pnp_dncnn_brain_sim", PNP_BRAIN_SETTINGS)}


def _json(path: Path, obj) -> None:
    _text(path, json.dumps(obj, indent=1, default=float))


def _text(path: Path, text: str) -> None:
    """Results are written whole or not at all: an interrupted run keeps the previous file."""
    from mrirecon.io.atomic import atomic_write_text

    atomic_write_text(path, text)


#: ``--parts`` of each mode
PARTS = {"tune": ("mri", "ct", "pnp_mri", "pnp_ct", "models_mri", "unrolls_mri", "pnp_brain_mri"),
         "eval": ("mri", "ct", "mri368")}
#: ``tune --parts models_mri``'s default weights
MODELS_MRI = ("modl_brain_sim", "varnet_brain_sim")


def method_choices(mode: str, part: str) -> tuple[str, ...]:
    """The names ``--methods`` may hold for ``part`` of ``mode`` (empty: the part takes none)."""
    from mrirecon.heldout import protocol as P
    from mrirecon.heldout.tune import MRI_GRID
    from mrirecon.recon import available

    if mode == "eval":
        return P.CT_METHODS if part == "ct" else P.MRI_METHODS
    if part == "mri":  # classical grids
        return tuple(MRI_GRID)
    if part == "models_mri":  # the protocol's learned MRI models
        return tuple(m for m in P.MRI_METHODS if m not in set(available()))
    return ()


def selection(mode: str, parts: list[str], methods: list[str] | None) -> dict[str, list[str] | None]:
    """``{part: its methods}`` (``None``: the part's defaults) for ``--parts`` / ``--methods``.

    An unknown part, or a method that no requested part takes, raises ``ValueError`` naming the
    valid choices (these were filtered out silently: ``eval --parts ct --methods tv`` wrote an
    empty table and exited 0). A part that takes methods but none of these is left out (``[]``);
    one that takes none (``tune --parts ct``) runs as without ``--methods``."""
    bad = [p for p in parts if p not in PARTS[mode]]
    if bad or not parts:
        raise ValueError(f"--parts {','.join(bad) or '(none)'}: not a part of {mode}; "
                         f"valid: {', '.join(PARTS[mode])}")
    if not methods:
        return {p: None for p in parts}
    choices = {p: method_choices(mode, p) for p in parts}
    stray = [m for m in methods if not any(m in c for c in choices.values())]
    if stray:
        valid = "; ".join(f"{p}: {', '.join(c)}" if c else f"{p}: none (it takes no --methods)"
                          for p, c in choices.items())
        raise ValueError(f"--methods {','.join(stray)}: not a method of --parts {','.join(parts)} "
                         f"({valid})")
    return {p: [m for m in methods if m in choices[p]] if choices[p] else None for p in parts}


def _val_mri(work: Path) -> Path:
    """``work/val_mri``, the MRI validation split, written there first if it holds no file."""
    from mrirecon.heldout.validation import write_validation_mri

    val = work / "val_mri"
    if not any(val.glob("*.h5")):
        write_validation_mri(val)
    return val


def tune(work: Path, parts: list[str], weights: str | None, methods: list[str] | None = None) -> None:
    from mrirecon.heldout import tune as T
    from mrirecon.heldout.protocol import readout_cropped
    from mrirecon.heldout.validation import validation_ct_slices

    chosen = selection("tune", parts, methods)
    parts = [p for p in parts if chosen[p] != []]

    out_path = work / "tuned.json"
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    t0 = time.perf_counter()
    if "mri" in parts:
        val = _val_mri(work)
        if chosen["mri"]:  # only these methods' grids, merged into the earlier result
            grid = {m: T.MRI_GRID[m] for m in chosen["mri"]}
            for acc, res in T.tune_mri(val, grid=grid).items():
                result.setdefault("mri", {}).setdefault(str(acc), {}).update(res)
        else:
            result["mri"] = T.tune_mri(val)
        _json(out_path, result)
        print("mri classical", time.perf_counter() - t0, flush=True)
    if "ct" in parts:  # two validation slices, tuned per view count
        result["ct"] = T.tune_ct(validation_ct_slices(2), views=(30, 60))
        _json(out_path, result)
        print("ct classical", time.perf_counter() - t0, flush=True)
    if "models_mri" in parts:  # shipped MRI models as their cards define them (which to ship)
        from mrirecon.training.weights import load_model

        val = _val_mri(work)
        result.setdefault("models_mri", {})
        for name in chosen["models_mri"] or MODELS_MRI:
            for acc in (4.0, 8.0):
                prepared = T.prepared_mri_slices(val, acc, remove_oversampling=readout_cropped(name))
                score = T.score_mri(prepared, "model", {}, load_model(name, {}, None))
                result["models_mri"].setdefault(name, {})[str(acc)] = score
                print(name, acc, score, flush=True)
            _json(out_path, result)
    for part, (name, settings) in MODEL_SETTINGS.items():  # inference settings of a shipped model
        if part in parts:
            from mrirecon.training.weights import load_model

            result[part] = T.tune_model_mri(_val_mri(work), load_model(name, {}, None), settings,
                                            remove_oversampling=readout_cropped(name))
            _json(out_path, result)
            print(part, time.perf_counter() - t0, flush=True)
    if "pnp_mri" in parts or "pnp_ct" in parts:
        from mrirecon.training.weights import load_model

        model = (load_model("pnp_dpir", {"depth": 8, "features": 32}, weights) if weights
                 else load_model("pnp_dncnn_diverse", {}, None))
        if "pnp_mri" in parts:
            val = _val_mri(work)  # was read, never written: a fresh DIR failed
            result["pnp_mri"] = {str(acc): T.tune_model_mri(
                val, model, points, accelerations=(acc,),
                remove_oversampling=readout_cropped("pnp_dncnn_diverse"))[acc] for acc, points in PNP_SETTINGS.items()}
            _json(out_path, result)
            print("pnp mri", time.perf_counter() - t0, flush=True)
        if "pnp_ct" in parts:
            result["pnp_ct"] = {str(nv): T.tune_ct(validation_ct_slices(), views=(nv,), grid={}, model=model,
                                                   model_settings=points)[nv]
                                for nv, points in PNP_CT_SETTINGS.items()}
            _json(out_path, result)
            print("pnp ct", time.perf_counter() - t0, flush=True)


def _merge(path: Path, res: dict) -> dict:
    """Merge ``res`` (``{setting: {method: row}}``) into the JSON at ``path`` (method-wise)."""
    old = json.loads(path.read_text()) if path.is_file() else {}
    for key, rows in res.items():
        old.setdefault(str(key), {}).update(rows)
    _json(path, old)
    return {float(k): v for k, v in old.items()}


def _warn_tuned_differs(work: Path, part: str, protocol: dict) -> None:
    """Say so when ``work/tuned.json`` holds ``part`` winners that the protocol does not run."""
    path = work / "tuned.json"
    tuned = json.loads(path.read_text()).get(part, {}) if path.is_file() else {}
    plain = {float(k): {m: json.loads(json.dumps(p)) for m, p in v.items()}  # tuples as JSON lists
             for k, v in protocol.items()}
    differ = [f"{m} at {key}: {r['best']}" for key, res in tuned.items() for m, r in res.items()
              if "best" in r and plain.get(float(key), {}).get(m) != r["best"]]
    if differ:
        print(f"note: {path} holds {part} winners that differ from the protocol's "
              f"({'; '.join(differ)}); eval runs the protocol's parameters: copy winners into "
              "mrirecon/heldout/protocol.py to run them", flush=True)


def evaluate(work: Path, parts: list[str], methods: list[str] | None) -> None:
    from mrirecon.heldout import protocol as P
    from mrirecon.heldout.data import heldout_ct_slices, write_heldout_mri

    chosen = selection("eval", parts, methods)
    t0 = time.perf_counter()
    for part, width in (("mri", 320), ("mri368", 368)):  # mri368: the knee-width part
        if part not in parts or chosen[part] == []:
            continue
        stem = "heldout_mri" if width == 320 else f"heldout_mri{width}"
        data = work / stem
        if not any(data.glob("*.h5")):
            write_heldout_mri(data, width=width)
        ms = chosen[part] or list(P.MRI_METHODS)
        _warn_tuned_differs(work, "mri", P.MRI_PARAMS)
        print("MRI model parameters", P.MRI_MODEL_PARAMS, P.MRI_MODEL_TABLES, flush=True)
        res = _merge(work / f"{stem}.json", P.run_mri(data, methods=ms))
        _text(work / f"{stem}.md", P.table(res, "acceleration"))
        print(P.table(res, "acceleration"), f"{time.perf_counter() - t0:.0f} s", flush=True)
    if "ct" in parts and chosen["ct"] != []:
        ms = chosen["ct"] or list(P.CT_METHODS)
        # the protocol's CT_PARAMS, as MRI runs MRI_PARAMS and the pipelines run both: a
        # `tuned.json` in DIR is not read (its winners are copied into protocol.py by hand; until
        # 2026-12-06 eval read it, and one without a 60-view entry ran the 30-view winners there)
        _warn_tuned_differs(work, "ct", P.CT_PARAMS)
        print("CT parameters", P.CT_PARAMS, P.CT_MODEL_PARAMS, P.CT_MODEL_TABLES, flush=True)
        res = _merge(work / "heldout_ct.json", P.run_ct(heldout_ct_slices(), methods=ms))
        _text(work / "heldout_ct.md", P.table(res, "views"))
        print(P.table(res, "views"), f"{time.perf_counter() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("tune", "eval"))
    p.add_argument("--work", type=Path, required=True, help="folder for data and results")
    p.add_argument("--parts", default="mri,ct", help="tune: mri,ct,pnp_mri,pnp_ct,models_mri,unrolls_mri,pnp_brain_mri; eval: mri,ct,mri368")
    p.add_argument("--weights", default=None, help="tune: a pnp_dpir .pt instead of the shipped one")
    p.add_argument("--methods", default=None, help="eval: comma-separated subset of the protocol's "
                   "methods; tune --parts mri: classical methods to grid (merged into tuned.json); "
                   "tune --parts models_mri: shipped MRI weights to score")
    p.add_argument("--threads", type=int_at_least(1), default=1)
    a = p.parse_args(argv)
    parts = [x for x in a.parts.split(",") if x]
    try:  # checked before any folder or data is written
        chosen = selection(a.mode, parts, a.methods.split(",") if a.methods else None)
    except ValueError as e:
        p.error(str(e))
    for part in (name for name, ms in chosen.items() if ms == []):
        print(f"--parts {part}: left out, none of --methods {a.methods} is one of its methods", flush=True)
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    if a.mode == "tune":
        tune(a.work, parts, a.weights, a.methods.split(",") if a.methods else None)
    else:
        evaluate(a.work, parts, a.methods.split(",") if a.methods else None)


if __name__ == "__main__":
    main()
