"""Held-out protocol: tune baselines on the validation split, then score every pipeline once.

    python benchmarks/heldout.py tune --work DIR        # validation split only -> DIR/tuned.json
    python benchmarks/heldout.py eval --work DIR        # held-out data -> DIR/heldout_{mri,ct}.md

``tune`` writes the validation data (MNI152 brains and allowed CT images at the deployment
geometry) and grids the classical parameters (and the PnP schedule with ``--pnp``); copy the
winners into ``mrirecon/heldout/protocol.py`` (``MRI_PARAMS`` / ``CT_PARAMS``) and the PnP card.
``eval`` writes the held-out data (reserved images, see ``mrirecon/heldout/data.py``) and runs
the protocol with those parameters. Threads: ``--threads`` (default 1).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# PnP schedules tried on the validation split (attributes of PnPDPIR)
PNP_SETTINGS = [
    {"iterations": k, "sigma_max": smax, "sigma_min": smin, "lam": lam}
    for k in (12,) for smax in (0.05, 0.15) for smin in (0.005, 0.015) for lam in (3e-5, 1e-4, 3e-4)
]


def _json(path: Path, obj) -> None:
    from mrirecon.io.atomic import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def tune(work: Path, parts: list[str], weights: str | None) -> None:
    from mrirecon.heldout import tune as T
    from mrirecon.heldout.validation import validation_ct_slices, write_validation_mri

    out_path = work / "tuned.json"
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    t0 = time.perf_counter()
    if "mri" in parts:
        val = work / "val_mri"
        if not any(val.glob("*.h5")):
            write_validation_mri(val)
        result["mri"] = T.tune_mri(val)
        _json(out_path, result)
        print("mri classical", time.perf_counter() - t0, flush=True)
    if "ct" in parts:
        result["ct"] = T.tune_ct(validation_ct_slices())
        _json(out_path, result)
        print("ct classical", time.perf_counter() - t0, flush=True)
    if "pnp_mri" in parts or "pnp_ct" in parts:
        from mrirecon.training.weights import load_model

        model = load_model("pnp_dpir", {}, weights) if weights else load_model("pnp_dncnn_diverse", {}, None)
        if "pnp_mri" in parts:
            result["pnp_mri"] = T.tune_model_mri(work / "val_mri", model, PNP_SETTINGS)
            _json(out_path, result)
            print("pnp mri", time.perf_counter() - t0, flush=True)
        if "pnp_ct" in parts:
            result["pnp_ct"] = T.tune_ct(validation_ct_slices(), grid={}, model=model,
                                         model_settings=PNP_SETTINGS)
            _json(out_path, result)
            print("pnp ct", time.perf_counter() - t0, flush=True)


def evaluate(work: Path, parts: list[str]) -> None:
    from mrirecon.heldout import protocol as P
    from mrirecon.heldout.data import heldout_ct_slices, write_heldout_mri

    t0 = time.perf_counter()
    if "mri" in parts:
        data = work / "heldout_mri"
        if not any(data.glob("*.h5")):
            write_heldout_mri(data)
        res = P.run_mri(data, output_dir=work)
        _json(work / "heldout_mri.json", res)
        print(P.table(res, "acceleration"), f"{time.perf_counter() - t0:.0f} s", flush=True)
    if "ct" in parts:
        res = P.run_ct(heldout_ct_slices(), output_dir=work)
        _json(work / "heldout_ct.json", res)
        print(P.table(res, "views"), f"{time.perf_counter() - t0:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=("tune", "eval"))
    p.add_argument("--work", type=Path, required=True, help="folder for data and results")
    p.add_argument("--parts", default="mri,ct", help="tune: mri,ct,pnp_mri,pnp_ct; eval: mri,ct")
    p.add_argument("--weights", default=None, help="tune: a pnp_dpir .pt instead of the shipped one")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    parts = [x for x in a.parts.split(",") if x]
    (tune if a.mode == "tune" else evaluate)(a.work, *( [parts, a.weights] if a.mode == "tune" else [parts]))


if __name__ == "__main__":
    main()
