"""Partial Fourier completion: our POCS against BART's ``homodyne``, time per slice and error.

Data: simulated multi-coil brain slices (``mrirecon.data.simulate_mri``, MNI152 anatomy, 30 dB
SNR), fully sampled; the last quarter of the readout (``--axis readout``, rows) or of the phase
encoding (``--axis phase``, columns) is set to zero, the side BART's ``homodyne`` expects to be
missing. Methods, each followed by RSS over the coils:

* zeros (what ``zero_filled_rss`` did before POCS);
* ``mrirecon.recon.partial_fourier.pocs_partial_fourier`` (its default 5 iterations, phase of the
  Hann-tapered symmetric part), as the pipeline's ``zero_filled_rss`` calls it;
* ``bart homodyne -C DIM 0.75`` (Noll's homodyne: ramp filter, phase of the symmetric centre,
  real part), on the same k-space written as a cfl file (file I/O inside its time).

Scores against the RSS of the full k-space: PSNR / SSIM of fastMRI's ``evaluate`` over the
slices. Times are the best of ``--repeats`` runs per slice, measured in this one run; ``ratio``
is ours / peer, our time / BART's (below 1: we are faster), as in every benchmark. BART needs the Debian package ``bart``
(``make benchdeps``); without it its row is skipped.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_partial_fourier.py --threads 1
    OMP_NUM_THREADS=2 python benchmarks/bench_partial_fourier.py --threads 2 --axis phase
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.functional import ifft2c, rss
from mrirecon.io import read_cfl, write_cfl
from mrirecon.metrics import evaluate_volumes
from mrirecon.recon.partial_fourier import POCS_ITERATIONS, pocs_partial_fourier
from _timing import best_time, ratio_text  # noqa: E402 (benchmarks/ is on sys.path)


def masks(h: int, w: int, axis: str, fraction: float = 0.75):
    """``measured``, ``fill`` and ``symmetric`` ``(h, w)`` for the first ``fraction`` of
    ``axis`` acquired."""
    n = h if axis == "readout" else w
    kept = torch.arange(n) < round(fraction * n)
    half = round(fraction * n) - 1 - n // 2
    sym = (torch.arange(n) - n // 2).abs() <= half
    if axis == "readout":
        return (kept[:, None].expand(h, w).clone(), (~kept)[:, None].expand(h, w).clone(),
                sym[:, None].expand(h, w).clone())
    return (kept[None, :].expand(h, w).clone(), (~kept)[None, :].expand(h, w).clone(),
            sym[None, :].expand(h, w).clone())


def bart_homodyne(k: np.ndarray, dim: int, fraction: float, folder: str) -> np.ndarray:
    """RSS of ``bart homodyne -C`` of k-space ``(coils, H, W)``."""
    base = os.path.join(folder, "k")
    write_cfl(base, np.transpose(k, (1, 2, 0))[:, :, None, :])  # (x=H, y=W, z, coils)
    subprocess.run(["bart", "homodyne", "-C", str(dim), str(fraction), base, base + "_h"],
                   check=True, capture_output=True)
    subprocess.run(["bart", "rss", "8", base + "_h", base + "_rss"], check=True, capture_output=True)
    return np.abs(read_cfl(base + "_rss").squeeze())


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--axis", choices=("readout", "phase"), default="readout")
    p.add_argument("--size", type=int_at_least(1), nargs=2, default=(320, 320), help="H W")
    p.add_argument("--coils", type=int_at_least(1), default=16)
    p.add_argument("--slices", type=int_at_least(1), default=4)
    p.add_argument("--repeats", type=int_at_least(1), default=3)
    p.add_argument("--threads", type=int_at_least(1), default=1)
    p.add_argument("--quick", action="store_true", help="2 slices, one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.slices, args.repeats = 2, 1
    torch.set_num_threads(args.threads)
    h, w = args.size
    vol = simulate_mri_volume(0, slices=args.slices, coils=args.coils, size=(h, w), seed=11)
    full = vol.kspace.to(torch.complex64)
    truth = rss(ifft2c(full)).numpy().astype(np.float64)
    measured, fill, symmetric = masks(h, w, args.axis)
    part = full * measured
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}; torch {torch.__version__} ({args.threads} thr), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"data: {args.slices} slices x {args.coils} coils x {h} x {w}, complex64, the last 25 % "
          f"of the {args.axis} never sampled; best of {args.repeats} per slice\n")

    def per_slice(fn):
        times, images = [], []
        for s in range(args.slices):
            t, img = best_time(lambda: fn(part[s]), args.repeats)
            times.append(t)
            images.append(np.asarray(img, np.float64))
        return float(np.mean(times)), np.stack(images)

    def scores(images):
        r = evaluate_volumes([truth], [images], crop=False, metrics=("PSNR", "SSIM"))
        return float(r.values["PSNR"][0]), float(r.values["SSIM"][0])

    rows = []
    with torch.inference_mode():
        t_zero, zero = per_slice(lambda k: rss(ifft2c(k)).numpy())
        t_ours, ours = per_slice(lambda k: rss(ifft2c(
            pocs_partial_fourier(k, measured, fill, symmetric))).numpy())
    rows.append(("zeros", t_zero, *scores(zero)))
    rows.append((f"ours: POCS, {POCS_ITERATIONS} iterations", t_ours, *scores(ours)))
    if shutil.which("bart"):
        dim = 0 if args.axis == "readout" else 1
        with tempfile.TemporaryDirectory() as folder:
            t_bart, bart = per_slice(lambda k: bart_homodyne(k.numpy(), dim, 0.75, folder))
        rows.append(("BART homodyne -C", t_bart, *scores(bart)))
    else:
        print("bart not found (make benchdeps): its row is skipped")
    print(f"{'method':<28} {'s / slice':>10} {'PSNR dB':>8} {'SSIM':>7}")
    for name, t, psnr_db, ssim_v in rows:
        print(f"{name:<28} {t:10.3f} {psnr_db:8.2f} {ssim_v:7.4f}")
    if len(rows) == 3:
        print(f"\nratio ours/peer (POCS / BART homodyne time): {ratio_text(rows[1][1], rows[2][1])}")


if __name__ == "__main__":
    main()
