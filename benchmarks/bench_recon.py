"""CG-SENSE and L1-wavelet: time per slice and SSIM against SigPy at equal iteration counts.

Data: a smoothed Shepp-Logan phantom (1 px Gaussian) x SigPy birdcage coil maps (normalised to
unit root-sum-of-squares), centred k-space with complex Gaussian noise, complex64, a fastMRI
equispaced-fraction column mask (4x, 8 % centre) drawn with seed 0. Methods:

* ``mrirecon.recon.cg_sense`` vs ``sigpy.mri.app.SenseRecon`` (``lamda`` 0, ``--cg-iterations``);
* ``mrirecon.recon.l1_wavelet`` vs ``sigpy.mri.app.L1WaveletRecon`` (same ``--lam``, same
  ``--l1-iterations``, both with 30 power iterations for the step, ``power_iterations=30``:
  ``iterations + 30`` normal-operator applications on each side; ours with its default cycle
  spinning and, for reference, without it). A third row times ours as the pipelines call it:
  the step from the operator's closed-form ``gram_bound``, no power iteration (less work than
  SigPy's, so not like for like).

SSIM is the fastMRI definition (7 x 7 window, ``data_range = gt.max()``) of the magnitude
against the phantom. Times are the best of ``--repeats`` runs per slice, measured in this one
run; ``ratio`` is ours / peer, our time / SigPy's (below 1: we are faster), as in every
benchmark.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_recon.py            # 15 x 640 x 368
    OMP_NUM_THREADS=1 python benchmarks/bench_recon.py --quick    # 15 x 320 x 320, fewer runs

Torch uses ``--threads`` threads (default 1, like NumPy under ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import numpy as np
import sigpy
import sigpy.mri
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mrirecon.functional import fft2c
from mrirecon.metrics import ssim
from mrirecon.operators import sense
from mrirecon.recon import cg_sense, l1_wavelet
from mrirecon.sampling import EquispacedFractionMask
from _timing import best_time, ratio_text  # noqa: E402 (benchmarks/ is on sys.path)

#: SigPy's ``L1WaveletRecon`` estimates its step by this many power iterations
#: (``LinearLeastSquares``' ``max_power_iter``); ours does the same for equal work.
POWER_ITERATIONS = 30


def simulate(coils: int, h: int, w: int, noise: float = 0.003, seed: int = 0):
    """Phantom ``(h, w)`` float64, maps ``(coils, h, w)`` and masked k-space (complex64), mask."""
    gt = gaussian_filter(np.abs(sigpy.shepp_logan((h, w))), 1.0)
    maps = sigpy.mri.birdcage_maps((coils, h, w), r=1.0)
    maps = maps / np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    k = fft2c(torch.tensor(maps * gt)).numpy()
    rng = np.random.default_rng(seed)
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    mask = EquispacedFractionMask([0.08], [4])(w, seed=seed).numpy()
    y = (k * mask).astype(np.complex64)
    return gt, maps.astype(np.complex64), y, mask.astype(np.float32)


def score(gt: np.ndarray, x) -> float:
    x = np.abs(np.asarray(x))
    return float(ssim(gt[None], x[None].astype(np.float64)))


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="15 x 320 x 320, one repeat")
    p.add_argument("--coils", type=int_at_least(1), default=15)
    p.add_argument("--size", type=int_at_least(1), nargs=2, default=None, help="H W (default 640 368)")
    p.add_argument("--cg-iterations", type=int_at_least(1), default=10)
    p.add_argument("--l1-iterations", type=int_at_least(1), default=50)
    p.add_argument("--lam", type=float, default=0.002)
    p.add_argument("--repeats", type=int_at_least(1), default=None)
    p.add_argument("--threads", type=int_at_least(1), default=1)
    args = p.parse_args(argv)
    h, w = args.size or ((320, 320) if args.quick else (640, 368))
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)

    gt, maps, y, mask = simulate(args.coils, h, w)
    op = sense(torch.from_numpy(maps), torch.from_numpy(mask))
    yt = torch.from_numpy(y)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__} ({args.threads} thr), "
          f"numpy {np.__version__}, sigpy {sigpy.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"data: {args.coils} coils x {h} x {w}, complex64, 4x equispaced-fraction, "
          f"best of {repeats}\n")

    rows = []
    with torch.inference_mode():
        t_ours, x = best_time(lambda: cg_sense(yt, op, iterations=args.cg_iterations), repeats)
    t_ref, r = best_time(lambda: sigpy.mri.app.SenseRecon(
        y, maps, weights=mask, max_iter=args.cg_iterations, show_pbar=False).run(), repeats)
    rows.append((f"CG-SENSE ({args.cg_iterations} it)", t_ours, t_ref, score(gt, x), score(gt, r)))

    n, p_it = args.l1_iterations, POWER_ITERATIONS
    with torch.inference_mode():
        t_ours, x = best_time(lambda: l1_wavelet(yt, op, args.lam, iterations=n,
                                                 power_iterations=p_it), repeats)
        t_fix, xf = best_time(lambda: l1_wavelet(yt, op, args.lam, iterations=n,
                                                 power_iterations=p_it, random_shift=False),
                              repeats)
        t_bound, xb = best_time(lambda: l1_wavelet(yt, op, args.lam, iterations=n), repeats)
    t_ref, r = best_time(lambda: sigpy.mri.app.L1WaveletRecon(
        y, maps, args.lam, weights=mask, max_iter=n, max_power_iter=p_it,
        show_pbar=False).run(), repeats)
    rows.append((f"L1-wavelet ({n} + {p_it} power it, lam {args.lam:g})", t_ours, t_ref,
                 score(gt, x), score(gt, r)))
    rows.append(("  same, no cycle spinning", t_fix, t_ref, score(gt, xf), score(gt, r)))
    rows.append((f"  ours, gram_bound step ({n} it, as pipelines run it)", t_bound,
                 t_ref, score(gt, xb), score(gt, r)))

    print(f"{'method':<52} {'ours s':>8} {'sigpy s':>8} {'ratio ours/peer':>22} "
          f"{'SSIM ours':>10} {'SSIM sigpy':>10}")
    for name, a, b, sa, sb in rows:
        print(f"{name:<52} {a:8.3f} {b:8.3f} {ratio_text(a, b):>22} {sa:10.4f} {sb:10.4f}")


if __name__ == "__main__":
    main()
