"""Tune the MRI bench defaults of the classical methods (``mrirecon.bench.methods.DEFAULT_PARAMS``)
on training data, never on the bench's own (``--seed 21``).

    python benchmarks/tune_bench_mri.py --work DIR [--methods tv,l1_wavelet,cg_sense,tgv]

Simulates ``--seed 5`` brains as the bench's data are made (2 volumes x 3 slices, 4-8 coils,
128 x 128), runs each grid point through :func:`mrirecon.bench.mri.run_bench` with the bench's
masks (centre fractions 0.16 / 0.08 at 4x / 8x) and prints every point's PSNR / SSIM and the
winner: the best PSNR summed over 4x and 8x (ties to 0.01 dB by the SSIM sum), flagged when it
lies on its grid's edge, by :mod:`mrirecon.heldout.tune`'s rules. One
thread; results in ``DIR/tune_<method>.json`` (``{"best": row, "grid": [row, ...]}``, each row
``params``, ``psnr4`` / ``psnr8`` / ``ssim4`` / ``ssim8``, their sums ``PSNR`` / ``SSIM`` and
``seconds``; written whole or not at all). Data already in ``DIR/data`` are reused. Unknown
``--methods`` are refused (exit 2) before anything is simulated. The grids are the ones of
2026-12-05 (a first grid, then the points that its edge winners asked for).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

GRIDS = {
    "cg_sense": [{"iterations": i, "tolerance": 1e-6} for i in (5, 10, 20, 40, 80)],
    "l1_wavelet": [{"lam": lam, "iterations": i}
                   for lam, i in itertools.product((1e-4, 3e-4, 1e-3, 3e-3, 1e-2), (50, 300, 1000))],
    "tv": [{"lam": lam, "iterations": 100, "rho": r}
           for lam, r in itertools.product((1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
                                           (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 1.0))],
    "tgv": [{"lam": lam, "iterations": 100} for lam in (3e-4, 1e-3, 3e-3, 1e-2)],
    # the review's other classical priors around their hand-set defaults (rho 1 / sigma_scale 3,
    # noise_std 0.02, lam 0.03 / sparsity 5)
    # (second pass: the smaller rho / noise_std / lam that the first grid's edge winners asked for)
    "pnp_nlm": [{"rho": r, "sigma_scale": s} for r, s in itertools.product((0.3, 1.0, 3.0), (1.5, 3.0, 6.0))]
    + [{"rho": 0.1, "sigma_scale": s} for s in (1.5, 3.0, 6.0)] + [{"rho": r, "sigma_scale": 3.0} for r in (0.03, 0.01, 0.003)],
    "epll": [{"noise_std": s} for s in (0.005, 0.01, 0.02, 0.04, 0.0025, 0.00125)],
    "dlmri": [{"lam": lam, "sparsity": k} for lam, k in itertools.product((0.01, 0.03, 0.1), (3, 5, 8))]
    + [{"lam": lam, "sparsity": 5} for lam in (0.003, 0.001)],
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--methods", default=",".join(GRIDS), help=f"comma-separated, of {', '.join(GRIDS)}")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in GRIDS]
    if unknown or not methods:  # was a KeyError after the data had been simulated
        ap.error(f"--methods {','.join(unknown) or '(none)'}: no grid; valid: {', '.join(GRIDS)}")
    import torch

    from mrirecon.bench.mri import run_bench
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.heldout.tune import best_of, edge_parameters
    from mrirecon.io.atomic import atomic_write_text

    torch.set_num_threads(1)
    data = args.work / "data"
    if not any(data.glob("*.h5")):
        simulate_mri_dataset(data, volumes=2, slices=3, coils=(4, 8), size=(128, 128), seed=5)
    for method in methods:
        rows = []
        for params in GRIDS[method]:
            t = time.perf_counter()
            table = run_bench(data, "multicoil", (4, 8), [method], params={method: params},
                              output_dir=None, progress=False, verbose=False,
                              center_fractions={4: 0.16, 8: 0.08})
            r4, r8 = table.row(method, 4), table.row(method, 8)
            rows.append({"params": params, "psnr4": r4.mean["PSNR"], "psnr8": r8.mean["PSNR"],
                         "ssim4": r4.mean["SSIM"], "ssim8": r8.mean["SSIM"],
                         "PSNR": r4.mean["PSNR"] + r8.mean["PSNR"],  # what the choice sums
                         "SSIM": r4.mean["SSIM"] + r8.mean["SSIM"],
                         "seconds": time.perf_counter() - t})
            print(method, json.dumps(rows[-1]), flush=True)
        best, edge = best_of(rows), edge_parameters(rows)  # the held-out tuning's rules
        print(f"{method}: best {best['params']} ({best['psnr4']:.2f} / {best['psnr8']:.2f} dB)"
              + (f", on the grid's edge in {', '.join(edge)}" if edge else ""), flush=True)
        atomic_write_text(args.work / f"tune_{method}.json",
                          json.dumps({"best": best, "grid": rows}, indent=1))


if __name__ == "__main__":
    main()
