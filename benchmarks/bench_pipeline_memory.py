"""Peak memory of `mrirecon run` against the number of slices (issue: bounded streaming).

Writes fastMRI-layout volumes of 15 coils x 640 x 368 with N slices (default 4 and 40), runs the
retrospective pipeline on each in a fresh subprocess and reports the peak resident set size
(VmHWM). Streaming one slice at a time means the peak must not grow with N: a 40-slice volume is
1.1 GB of k-space, a slice 28 MB.

    python benchmarks/bench_pipeline_memory.py [--slices 4 40] [--method zero_filled_rss]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, sys, time
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
path, out, method = sys.argv[1:4]
config, _ = load_pipeline("mri_retrospective", [f"reconstruct.method={method}", "reconstruct.params={}",
                          "reconstruct.params_by_acceleration={}",
                          "calibrate.method=none", "export.formats=[hdf5]", "report.enabled=false"])
t = time.perf_counter()
code = run_pipeline(config, [path], out, progress=False)
hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
print(json.dumps({"code": code, "seconds": time.perf_counter() - t, "peak_mib": int(hwm) / 1024}))
"""


def write_volume(path: Path, slices: int, coils: int, shape: tuple[int, int]) -> None:
    """A synthetic volume written one slice at a time (the writer never holds the volume)."""
    import h5py

    from mrirecon.containers import Header
    from mrirecon.io.ismrmrd_header import header_to_xml

    h, w = shape
    rng = np.random.default_rng(0)
    header = Header((h, w, 1), (320, 320, 1), (2 * h * 0.5, w * 0.5, 3.0), (160.0, 160.0, 3.0))
    with h5py.File(path, "w") as f:
        ks = f.create_dataset("kspace", (slices, coils, h, w), dtype=np.complex64)
        ref = f.create_dataset("reconstruction_rss", (slices, 320, 320), dtype=np.float32)
        for s in range(slices):
            ks[s] = (rng.standard_normal((coils, h, w)) + 1j * rng.standard_normal((coils, h, w))).astype(np.complex64)
            ref[s] = rng.random((320, 320)).astype(np.float32)
        f.create_dataset("ismrmrd_header", data=header_to_xml(header))
        f.attrs["acquisition"] = "CORPD_FBK"
        f.attrs["max"] = 1.0


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--slices", type=int_at_least(1), nargs="+", default=[4, 40])
    ap.add_argument("--coils", type=int_at_least(1), default=15)
    ap.add_argument("--shape", type=int_at_least(1), nargs=2, default=[640, 368])
    ap.add_argument("--method", default="zero_filled_rss")
    args = ap.parse_args(argv)
    from _timing import machine_line, others_running  # benchmarks/ is on sys.path
    print(f"machine: {machine_line()}\nbefore: {others_running()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.slices:
            path = Path(tmp) / f"vol_{n}.h5"
            t = time.perf_counter()
            write_volume(path, n, args.coils, tuple(args.shape))
            size = path.stat().st_size / 2**20
            res = subprocess.run([sys.executable, "-c", CHILD, str(path), str(Path(tmp) / f"out{n}"),
                                  args.method], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append((n, size, r["peak_mib"], r["seconds"]))
            print(f"slices={n:3d} file={size:7.0f} MiB peak RSS={r['peak_mib']:7.0f} MiB "
                  f"run={r['seconds']:.1f} s (write {time.perf_counter() - t - r['seconds']:.1f} s)")
    (n0, _, p0, _), (n1, _, p1, _) = rows[0], rows[-1]
    print(f"peak RSS ratio {n1} vs {n0} slices: {p1 / p0:.3f} (k-space ratio {n1 / n0:.0f}x)")
    print(f"after: {others_running()}")


if __name__ == "__main__":
    main()
