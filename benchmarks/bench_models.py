"""E2E-VarNet inference: mrirecon.models.VarNet vs fastmri.models.VarNet, same configuration.

Per model, a fresh subprocess builds the network (same weights via the key mapping), runs
``repeats`` timed forward passes on one 320 x 320, 15-coil slice (random k-space, 4x equispaced
column mask with 8 % ACS) under ``torch.inference_mode`` after one warm-up, and reports the median
time and the peak-RSS increase over the state just before the first forward pass
(:func:`peak_rss_delta`: the resident set then, ``VmRSS``, against the high-water mark
``VmHWM`` reset at that point through ``/proc/self/clear_refs``, so model construction and data
are excluded, and so is memory freed before it: our child builds fastMRI's model to copy its
weights and deletes it, and a high-water mark kept from then hid the forward pass's reuse of
that memory, 114 MiB at 12 cascades). Outputs of the two models are compared in the parent.
Linux only (``/proc``).

Usage::

    python benchmarks/bench_models.py            # 12 cascades, 18 chans, sens 8 (published)
    python benchmarks/bench_models.py --quick    # 4 cascades, 1 repeat (busy machines)
    python benchmarks/bench_models.py --cascades 1 --repeats 1 --size 64 --coils 4  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _status_mib(field: str) -> float:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/self/status`` in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_delta(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(fn(), peak RSS during fn - RSS before it, peak RSS)`` in MiB. The baseline is the
    resident set before ``fn`` (``VmRSS``), and the peak the high-water mark ``VmHWM`` reset to it
    (``/proc/self/clear_refs``): memory this process held and freed earlier is not in the
    baseline, so ``fn`` reusing it still counts (a high-water-mark baseline, ``ru_maxrss``,
    counted none of it)."""
    base = _status_mib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    except OSError as err:
        raise SystemExit(f"bench_models: cannot reset the peak RSS ({err})") from None
    if _status_mib("VmHWM") > max(base, _status_mib("VmRSS")) + 1.0:
        raise SystemExit("bench_models: /proc/self/clear_refs did not reset VmHWM")
    out = fn()
    peak = _status_mib("VmHWM")
    return out, peak - base, peak


def _child(which: str, cfg: dict) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from mrirecon.models import VarNet, fastmri_varnet_state_dict
    from mrirecon.operators import sense

    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    from fastmri.models import VarNet as RefVarNet

    arch = {k: cfg[k] for k in ("num_cascades", "chans", "sens_chans")}
    ref = RefVarNet(**arch).eval()
    coils, h, w = cfg["coils"], cfg["size"], cfg["size"]
    g = torch.Generator().manual_seed(1)
    k = torch.randn(1, coils, h, w, dtype=torch.complex64, generator=g)
    mask = torch.zeros(w, dtype=torch.bool)
    mask[::4] = True
    acs = round(0.08 * w)
    mask[(w - acs + 1) // 2 : (w - acs + 1) // 2 + acs] = True
    y = k * mask
    if which == "fastmri":
        model = ref
        args = (torch.view_as_real(y), mask[None, None, None, :, None], None)
    else:
        ours = {("iterations" if k == "num_cascades" else k): v for k, v in arch.items()}
        model = VarNet(**ours).eval()
        model.load_state_dict(fastmri_varnet_state_dict(ref.state_dict()))
        model = model.rss  # the quantity fastMRI's VarNet returns (forward adds the phase)
        del ref
        args = (y, sense(torch.ones(coils, h, w, dtype=torch.complex64), mask))
    times = []

    def forward_passes():
        with torch.inference_mode():
            out = model(*args)  # warm-up (untimed; its memory counts in the peak)
            for _ in range(cfg["repeats"]):
                t0 = time.perf_counter()
                out = model(*args)
                times.append(time.perf_counter() - t0)
        return out

    # after construction and data, before any forward pass
    out, delta, peak = peak_rss_delta(forward_passes)
    return {"model": which, "median_s": sorted(times)[len(times) // 2], "times_s": times,
            "peak_rss_delta_mib": delta, "peak_rss_mib": peak, "output": out.flatten().tolist()[:4096]}


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 cascades, 1 repeat")
    parser.add_argument("--cascades", type=int_at_least(1), default=None)
    parser.add_argument("--repeats", type=int_at_least(1), default=None)
    parser.add_argument("--threads", type=int_at_least(1), default=1)
    parser.add_argument("--size", type=int_at_least(1), default=320, help="slice H = W (default 320)")
    parser.add_argument("--coils", type=int_at_least(1), default=15)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    a = parser.parse_args(argv)
    if a.child:
        print(json.dumps(_child(a.child, json.loads(a.config))))
        return
    cfg = {
        "num_cascades": a.cascades or (4 if a.quick else 12),
        "chans": 18,
        "sens_chans": 8,
        "coils": a.coils,
        "size": a.size,
        "repeats": a.repeats or (1 if a.quick else 3),
        "threads": a.threads,
    }
    from _timing import machine_line, others_running  # benchmarks/ is on sys.path
    print(f"machine: {machine_line()}\nbefore: {others_running()}", flush=True)
    results = {}
    # Both children run with a fixed glibc mmap threshold: with glibc's moving threshold the
    # peak-RSS delta of either model swings by about +-50 MiB from run to run (heap reuse).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}
    for which in ("fastmri", "mrirecon"):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", which, "--config", json.dumps(cfg)],
            capture_output=True, text=True, env=env,
        )
        if proc.returncode != 0:  # its error was discarded (CalledProcessError alone)
            sys.exit(f"bench_models: the {which} child failed (exit {proc.returncode}):\n"
                     + proc.stderr.strip()[-2000:])
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    ref, ours = results["fastmri"]["output"], results["mrirecon"]["output"]
    diff = max(abs(p - q) for p, q in zip(ref, ours)) / max(abs(v) for v in ref)
    print(f"E2E-VarNet, 1 slice {cfg['size']}x{cfg['size']}, {cfg['coils']} coils, "
          f"cascades={cfg['num_cascades']}, chans=18, sens_chans=8, threads={cfg['threads']}, "
          f"repeats={cfg['repeats']}")
    print(f"{'model':<18} {'median time [s]':>16} {'peak RSS delta [MiB]':>22}")
    for label, which in (("ours (mrirecon)", "mrirecon"), ("peer (fastMRI)", "fastmri")):
        r = results[which]
        print(f"{label:<18} {r['median_s']:>16.3f} {r['peak_rss_delta_mib']:>22.1f}")
    ours_r, peer_r = results["mrirecon"], results["fastmri"]
    print(f"ratio ours/peer: time {ours_r['median_s'] / peer_r['median_s']:.3f}, memory "
          f"{ours_r['peak_rss_delta_mib'] / peer_r['peak_rss_delta_mib']:.3f} (below 1: ours is "
          "faster / smaller)")
    print(f"max relative output difference (first 4096 pixels): {diff:.2e}")
    print(f"after: {others_running()}")


if __name__ == "__main__":
    main()
