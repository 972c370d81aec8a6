"""``torchrun ... -m mrirecon run`` where one rank's input fails: torchrun stops every rank once
one exits non-zero, and the failing rank, with less work, finished first: the other rank was
stopped mid-input (exit 143), its inputs in progress left without outputs or run files. The
failing rank now waits for the others (torchrun's agent store) before it exits 1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_rank_whose_input_failed_lets_the_other_ranks_finish(tmp_path):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    made = simulate_mri_dataset(tmp_path / "sim", volumes=2, slices=2, coils=2, size=(64, 64),
                                seed=4)
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(made[0], inputs / "a.h5")  # rank 0: a.h5 and c.h5; rank 1: b.h5
    (inputs / "b.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)  # truncated
    shutil.copy(made[1], inputs / "c.h5")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mrirecon", "run", "mri_cs", "--input", str(inputs), "--output", str(out),
           "--set", "reconstruct.params_by_acceleration.4.iterations=300"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log[-3000:]
    assert "waiting for the other 1 rank(s) to finish" in log and "terminated" not in log
    assert sorted(p.name for p in (out / "reconstructions").glob("*.h5")) == ["a.h5", "c.h5"]
    rank0 = json.loads((out / "provenance.rank0.json").read_text())
    assert rank0["status"] == "complete" and rank0["file_counts"]["ok"] == 2
    rank1 = json.loads((out / "provenance.rank1.json").read_text())
    assert rank1["file_counts"] == {"ok": 0, "skipped": 0, "failed": 1}
