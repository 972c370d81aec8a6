"""Run every benchmark in one go (``make bench``); each prints its own ratios against peers.

    python benchmarks/run_all.py [--quick]

Run on a quiet machine: the figures are ratios measured within one run, but a loaded machine
skews multi-threaded timings. Paste the output into benchmarks/README.md with the machine line.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_operators.py", "bench_recon.py", "bench_calib.py", "bench_models.py",
           "bench_pipeline_memory.py", "bench_pipeline.py", "bench_noncartesian.py",
           "bench_partial_fourier.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every benchmark script in turn (make bench).")
    parser.add_argument("--quick", action="store_true",
                        help="each script at its small setting (minutes, not half an hour)")
    quick = parser.parse_args(argv).quick
    failed = []
    for name in SCRIPTS:
        args = [sys.executable, str(HERE / name)]
        if quick and name != "bench_pipeline_memory.py":
            args.append("--quick")
        if quick and name == "bench_pipeline_memory.py":
            args += ["--slices", "2", "8", "--coils", "4", "--shape", "320", "184"]
        print(f"\n===== {name} =====", flush=True)
        if subprocess.run(args).returncode != 0:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
