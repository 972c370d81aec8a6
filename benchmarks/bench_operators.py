"""Operator speed against peers, measured in one run on one machine.

(a) Multi-coil normal operator ``A^H A`` of ``sense(maps, mask)`` (15 coils x 640 x 368,
    complex64) against SigPy's ``Sense(maps, weights=mask).N`` and against the physical floor of
    two bare FFTs (``torch.fft.fft2`` + ``torch.fft.ifft2`` on the 15-coil stack).
(b) Parallel-beam forward + back-projection of a 512 x 512 float32 image with 720 views against
    scikit-image (``radon`` + ``iradon(filter_name=None)``) and ASTRA's CPU projector
    (``create_projector("linear")``, ``create_sino``, ``create_backprojection``).

Each timing is the median of ``--repeats`` runs after one warm-up (scikit-image: fewer runs, see
``--skimage-repeats``, because one run takes seconds). Torch uses as many threads as the machine
has cores; SigPy's NumPy FFT, scikit-image and ASTRA's CPU projector run on one thread. Ratios
are ``ours / peer`` (below 1 means we are faster).

Usage::

    python benchmarks/bench_operators.py            # sizes above
    python benchmarks/bench_operators.py --quick    # 8 x 320 x 184 and 256 x 256 / 360 views
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mrirecon.operators import ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry
from _timing import best_time, ratio_text  # noqa: E402 (benchmarks/ is on sys.path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timeit(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    return best_time(fn, repeats, warmup=warmup, reduce=statistics.median)[0]


def _row(name: str, seconds: float, ours: float | None = None) -> str:
    ratio = "" if ours is None else f"ratio ours/peer {ratio_text(ours, seconds)}"
    return f"  {name:<44s} {seconds * 1e3:10.1f} ms  {ratio}"


def bench_sense(coils: int, h: int, w: int, repeats: int) -> dict:
    import sigpy.mri.linop as spl

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(coils, h, w, dtype=torch.complex64, generator=g)
    maps = maps / torch.sqrt(torch.sum(maps.abs() ** 2, dim=0))
    mask = torch.rand(w, generator=g) < 0.25
    mask[w // 2 - 12 : w // 2 + 12] = True
    x = torch.randn(h, w, dtype=torch.complex64, generator=g)
    op = sense(maps, mask)

    ours = timeit(lambda: op.gram(x), repeats)
    stack = maps * x
    floor = timeit(lambda: torch.fft.ifft2(torch.fft.fft2(stack)), repeats)

    weights = np.broadcast_to(mask.numpy().astype(np.float32), (h, w)).copy()
    S = spl.Sense(maps.numpy(), weights=weights)
    normal = S.N
    xn = x.numpy()
    peer = timeit(lambda: normal(xn), repeats)
    diff = np.linalg.norm(normal(xn) - op.gram(x).numpy()) / np.linalg.norm(normal(xn))

    print(f"(a) SENSE normal operator A^H A: {coils} coils x {h} x {w} complex64")
    print(_row("mrirecon sense(maps, mask).gram", ours))
    print(_row("two FFTs (torch fft2 + ifft2, the floor)", floor, ours))
    print(_row("SigPy Sense(maps, weights=mask).N", peer, ours))
    print(f"  relative difference to SigPy: {diff:.2e}")
    return {"ours": ours, "floor": floor, "sigpy": peer}


def bench_ct(n: int, views: int, repeats: int, skimage_repeats: int) -> dict:
    import astra
    from skimage.transform import iradon, radon

    geometry = CTGeometry.parallel((n, n), views)
    op = ParallelBeam(geometry)
    rng = np.random.default_rng(0)
    img = np.zeros((n, n), dtype=np.float32)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    img[xx**2 + yy**2 < (0.45 * n) ** 2] = 1.0
    img += 0.1 * rng.random((n, n), dtype=np.float32)
    x = torch.from_numpy(img)

    def ours_fn():
        return op.H(op(x))

    ours = timeit(ours_fn, repeats)

    vol = astra.create_vol_geom(n, n)
    proj = astra.create_proj_geom(
        "parallel", 1.0, geometry.num_detectors, np.asarray(geometry.angles)
    )
    pid = astra.create_projector("linear", vol_geom=vol, proj_geom=proj)

    def astra_fn():
        sid, sino = astra.create_sino(img, pid)
        bid, back = astra.create_backprojection(sino, pid)
        astra.data2d.delete([sid, bid])
        return sino, back

    peer_astra = timeit(astra_fn, repeats)
    sino_astra, _ = astra_fn()
    astra.projector.delete(pid)
    diff = np.linalg.norm(op(x).numpy() - sino_astra) / np.linalg.norm(sino_astra)

    theta = np.degrees(np.asarray(geometry.angles))

    def skimage_fn():
        sino = radon(img, theta=theta, circle=False)
        return iradon(sino, theta=theta, filter_name=None, output_size=n, circle=False)

    peer_sk = timeit(skimage_fn, skimage_repeats, warmup=0)

    print(
        f"(b) parallel beam forward + back-projection: {n} x {n} float32, {views} views, "
        f"{geometry.num_detectors} detectors"
    )
    print(_row("mrirecon ParallelBeam: A then A.H", ours))
    print(_row("ASTRA CPU 'linear': create_sino + backprojection", peer_astra, ours))
    print(_row(f"scikit-image radon + iradon(None) [{skimage_repeats} run(s)]", peer_sk, ours))
    print(f"  relative difference of the sinogram to ASTRA 'linear': {diff:.2e}")
    return {"ours": ours, "astra": peer_astra, "skimage": peer_sk}


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeats", type=int_at_least(1), default=5)
    parser.add_argument("--skimage-repeats", type=int_at_least(1), default=1)
    parser.add_argument("--threads", type=int_at_least(1), default=os.cpu_count())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import astra
    import sigpy
    import skimage

    print("machine:", cpu_model(), f"| {os.cpu_count()} cores | torch threads {args.threads}")
    print(
        f"torch {torch.__version__}, numpy {np.__version__}, sigpy {sigpy.__version__}, "
        f"scikit-image {skimage.__version__}, astra {astra.__version__}"
    )
    print("date:", datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    if hasattr(os, "getloadavg"):
        print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    print(f"median of {args.repeats} runs after one warm-up; ratio = ours / peer\n")

    if args.quick:
        s = bench_sense(8, 320, 184, args.repeats)
        c = bench_ct(256, 360, args.repeats, args.skimage_repeats)
    else:
        s = bench_sense(15, 640, 368, args.repeats)
        c = bench_ct(512, 720, args.repeats, args.skimage_repeats)

    print(
        "\nsummary (targets: gram <= 1.3x the two-FFT floor; CT >= 10x faster than "
        "scikit-image and no slower than ASTRA CPU)"
    )
    print(f"  gram / two-FFT floor : {ratio_text(s['ours'], s['floor'])}")
    print(f"  gram / SigPy         : {ratio_text(s['ours'], s['sigpy'])}")
    print(f"  CT / scikit-image    : {ratio_text(c['ours'], c['skimage'])}")
    print(f"  CT / ASTRA CPU       : {ratio_text(c['ours'], c['astra'])}")


if __name__ == "__main__":
    main()
