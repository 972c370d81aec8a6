"""PnP-ADMM around pnp_dncnn_brain_sim (the model of pipelines/mri_pnp_brain_sim.yaml) per slice:
this checkout against an older revision of ``mrirecon`` (default: the commit before the speed-ups
of the PnP inference path), on the same slice, in one run.

Data: one validation-split slice (:func:`mrirecon.heldout.validation.write_validation_mri`: a
simulated MNI152 brain, 640 x 320, 8 coils, 30 dB; none of the held-out sources), prepared by
the pipeline's stages as ``mri_pnp_brain_sim`` does: prewhitening, readout crop to 320 x 320,
fastMRI equispaced-fraction mask 4x with centre 0.08 seeded by the file name, ESPIRiT maps with
crop 0. The model is loaded as the runner loads it (``load_model`` + ``ready_for_inference``;
40 ADMM iterations, rho 0.005, 10 CG steps) and called under ``torch.no_grad`` as
``stages_mri.reconstruct`` calls it.

Each child process (one revision, one thread count) runs one untimed slice, ``--repeats`` timed
ones, and one more with timers around the parts (denoiser forward, SENSE gram, CG without its
grams). The revisions alternate, ``--rounds`` times; the figure is the median over all timed
slices. The outputs of the two revisions are compared by their relative L2 difference against
a float32 bound (see :data:`TOLERANCE`); ``--float64`` also runs the old revision in float64 and
prints both revisions' own float32 error against it.

Usage::

    python benchmarks/bench_pnp.py                      # 1 and 2 threads, 3 repeats x 2 rounds
    python benchmarks/bench_pnp.py --threads 1 --repeats 3 --rounds 1 --baseline main
    python benchmarks/bench_pnp.py --size 128 128 --iterations 2 --threads 1 --repeats 1 \
        --rounds 1 --baseline HEAD                      # a smoke run (seconds), not a figure

``--size H W`` simulates the validation-split brain at ``H x W`` instead of 320 x 320 (same seed,
8 coils, 30 dB, 2x readout oversampling); ``--iterations`` overrides the card's 40 ADMM
iterations (in both revisions; the float32 bound is then taken over that many).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _timing import best_time

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "5844f4e"  # main before the blocked gram, the fused CG updates and the fused conv + ReLU

#: Relative L2 bound for two float32 evaluations of the same slice that differ only in rounding
#: (summation order, fused multiply-adds): ``256 eps sqrt(N)``. ``N = 40 x (11 + 8) = 760`` is
#: the number of dependent stages of the solve (per ADMM iteration 11 grams with their CG
#: updates, and 8 convolution layers); one stage's result may differ by a few hundred ulp in
#: the worst case (its longest reductions: 288-term convolution dot products, length-320 FFTs,
#: CG inner products over 2 x 320 x 320 terms), and independent stage errors add like a random
#: walk as long as the iteration does not amplify them. 256 * 1.19e-7 * 27.6 = 8.4e-4.
ITERATIONS = 40  # pnp_dncnn_brain_sim's card


def tolerance(iterations: int = ITERATIONS) -> float:
    """The float32 bound ``256 eps sqrt(iterations x (11 + 8))`` (see :data:`TOLERANCE`)."""
    return 256 * 2.0**-23 * math.sqrt(iterations * (11 + 8))


TOLERANCE = tolerance()


def _slice(tmp: Path, size: tuple[int, int] | None = None) -> Path:
    """The prepared slice ``{"y", "maps", "mask"}`` saved under ``tmp``; ``size``: the
    validation-split brain simulated at ``H x W`` instead of its 320 x 320."""
    sys.path.insert(0, str(ROOT))
    import torch
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.heldout.validation import VAL_SEED, write_validation_mri
    from mrirecon.io import FastMRIFile
    from mrirecon.pipeline.schema import CalibrateConfig, PreprocessConfig, UndersampleConfig
    from mrirecon.pipeline.slice_mri import make_slice, operator
    from mrirecon.pipeline.stages_mri import calibrate, preprocess, undersample

    if size is None:
        path = Path(write_validation_mri(tmp / "data", volumes=1)[0])
    else:  # write_validation_mri's arguments at another matrix size
        path = Path(simulate_mri_dataset(tmp / "data", volumes=1, slices=1, coils=8, size=tuple(size),
                                         seed=VAL_SEED, snr_db=30.0, readout_oversampling=2)[0])
    f = FastMRIFile(path)
    try:
        s = make_slice(f.read_slice(0, with_reference=False), 0, path.name, None)
    finally:
        f.close()
    s = preprocess(s, PreprocessConfig(prewhiten=True, remove_oversampling=True))
    s = undersample(s, UndersampleConfig(enabled=True, mask="equispaced_fraction", center_fractions=(0.08,),
                                         accelerations=(4,), seed="file"))
    s = calibrate(s, CalibrateConfig(method="espirit", crop=0.0))
    maps = s.maps.to(torch.complex64)[None]
    out = tmp / "slice.pt"
    torch.save({"y": s.kspace.to(torch.complex64)[None], "maps": maps, "mask": operator(s, maps).mask}, out)
    return out


def _child(cfg: dict) -> dict:
    sys.path.insert(0, cfg["code"])
    import torch

    torch.set_num_threads(cfg["threads"])
    import mrirecon.solvers.implicit as implicit
    from mrirecon.models.inference import ready_for_inference
    from mrirecon.operators import sense
    from mrirecon.training.weights import load_model

    assert Path(sys.modules["mrirecon"].__file__).is_relative_to(cfg["code"])
    data = torch.load(cfg["data"], weights_only=True)
    y, maps = data["y"], data["maps"]
    model = ready_for_inference(load_model("pnp_admm", {"iterations": cfg["iterations"]},
                                           "pnp_dncnn_brain_sim"), "cpu")
    if cfg["float64"]:
        model, y, maps = model.double(), y.to(torch.complex128), maps.to(torch.complex128)
    op = sense(maps, data["mask"])
    with torch.no_grad():  # every timed call (the parent takes medians over children), one warm-up
        times, out = best_time(lambda: model(y, op), cfg["repeats"], warmup=1, reduce=list)
        parts = _parts(model, op, y, implicit)
    torch.save(out, cfg["out"])
    return {"times_s": times, "parts_s": parts}


def _parts(model, op, y, implicit) -> dict:
    """One more slice with wall-clock timers around the denoiser, the gram and CG."""
    acc = {"denoiser": 0.0, "gram": 0.0, "cg": 0.0}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                acc[name] += time.perf_counter() - t0
        return wrapper

    cls, den = type(op), model.denoiser
    saved = cls._gram, den.forward, implicit.cg
    cls._gram, den.forward, implicit.cg = timed("gram", cls._gram), timed("denoiser", den.forward), timed("cg", implicit.cg)
    try:
        t0 = time.perf_counter()
        model(y, op)
        total = time.perf_counter() - t0
    finally:
        cls._gram, implicit.cg = saved[0], saved[2]
        del den.forward
    return {"total": total, "denoiser": acc["denoiser"], "gram": acc["gram"],
            "cg_vector_ops": acc["cg"] - acc["gram"], "rest": total - acc["denoiser"] - acc["cg"]}


def _run(code: Path, data: Path, out: Path, threads: int, repeats: int, float64: bool = False,
         iterations: int = ITERATIONS) -> dict:
    cfg = {"code": str(code), "data": str(data), "out": str(out), "threads": threads, "repeats": repeats,
           "float64": float64, "iterations": iterations}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}  # as the CLI
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True,
                          text=True, env=env, cwd=tempfile.gettempdir())
    if proc.returncode:
        raise RuntimeError(f"child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _load() -> str:
    return "load average " + "/".join(f"{v:.2f}" for v in os.getloadavg())


def _rel(a, b) -> float:
    import torch

    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:  # before any import of mrirecon: the child runs cfg["code"]'s
        print(json.dumps(_child(json.loads(argv[1]))))
        return
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    parser.add_argument("--threads", type=int_at_least(1), nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int_at_least(1), default=3, help="timed slices per child")
    parser.add_argument("--rounds", type=int_at_least(1), default=2, help="old/new child pairs per thread count")
    parser.add_argument("--float64", action="store_true", help="also the old revision in float64")
    parser.add_argument("--size", type=int_at_least(1), nargs=2, default=None, metavar=("H", "W"),
                        help="the validation brain at H x W (default its 320 x 320)")
    parser.add_argument("--iterations", type=int_at_least(1), default=ITERATIONS,
                        help=f"ADMM iterations (default the card's {ITERATIONS})")
    a = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        old_code = tmp / "old"
        old_code.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", a.baseline, "mrirecon"],
                                 capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            # extraction filters came with Python 3.11.4 / 3.10.12 (Debian 12's 3.11.2 has none);
            # without them the archive is this repository's own files, written by git
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(old_code, **safe)
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True).stdout.strip()
        data = _slice(tmp, a.size)
        shape = " x ".join(map(str, torch.load(data, weights_only=True)["maps"].shape[1:]))
        print(f"# bench_pnp: pnp_admm + pnp_dncnn_brain_sim, {a.iterations} ADMM iterations, 1 slice "
              f"{shape} (readout cropped), old = {a.baseline}, new = {commit} (working tree), "
              f"{a.repeats} repeats x {a.rounds} rounds")
        print(f"# {os.cpu_count()} cores, torch {torch.__version__}; before: {_load()}", flush=True)
        outs = {}
        for threads in a.threads:
            times: dict[str, list[float]] = {"old": [], "new": []}
            parts: dict[str, list[dict]] = {"old": [], "new": []}
            for _ in range(a.rounds):
                for which, code in (("old", old_code), ("new", ROOT)):
                    out = tmp / f"{which}.pt"
                    r = _run(code, data, out, threads, a.repeats, iterations=a.iterations)
                    times[which] += r["times_s"]
                    parts[which].append(r["parts_s"])
                    outs[which] = torch.load(out, weights_only=True)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"threads={threads}: per slice old {med['old']:.2f} s, new {med['new']:.2f} s, "
                  f"ratio new/old {med['new'] / med['old']:.3f}; {_load()}")
            for which in ("old", "new"):
                mid = {k: statistics.median(p[k] for p in parts[which]) for k in parts[which][0]}
                print(f"  parts {which}: " + ", ".join(f"{k} {v:.2f} s" for k, v in mid.items()))
            print(f"  all times old {[round(t, 2) for t in times['old']]}, new {[round(t, 2) for t in times['new']]}",
                  flush=True)
        diff, bound = _rel(outs["new"], outs["old"]), tolerance(a.iterations)
        print(f"relative L2 difference new vs old: {diff:.2e} (float32 bound {bound:.1e}: "
              f"{'within' if diff <= bound else 'EXCEEDED'})")
        if a.float64:
            _run(old_code, data, tmp / "f64.pt", a.threads[0], 1, float64=True, iterations=a.iterations)
            ref = torch.load(tmp / "f64.pt", weights_only=True)
            print(f"float32 error against the old code in float64: old {_rel(outs['old'].to(ref.dtype), ref):.2e}, "
                  f"new {_rel(outs['new'].to(ref.dtype), ref):.2e}")
        print(f"# after: {_load()}")


if __name__ == "__main__":
    main()
