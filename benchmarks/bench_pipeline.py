"""Per-slice, end-to-end pipeline times against peer scripts doing the same work, in one run.

What is timed (wall clock, one slice, after the data exist on disk):

* MRI, fastMRI-size multi-coil slices simulated by ``mrirecon simulate mri`` (640 x 368 with
  15 coils and 640 x 320 with 8 coils: 2x readout oversampling, 4x equispaced mask stored in the
  file like fastMRI test data):
  - ``mri_cs`` = ``run_pipeline`` (read, prewhiten, oversampling removal, ESPIRiT, 50 FISTA
    L1-wavelet iterations at lam 1e-3, crop, HDF5 export), its first (cold) and second (warm)
    call. The pipeline itself runs the validated 300 iterations at lam 1e-4 (since 2026-12-04);
    the benchmark sets 50 / 1e-3 so that both sides do the same work as ``pics -i 50``;
  - BART: a script that converts the slice to ``.cfl``, runs ``bart ecalib -m1 -t <t>`` and
    ``bart pics -w <scale> -R W:3:0:<lam> -i 50`` (``W:3`` and ``W:7`` are the same on 2-D
    data), reads the result and crops it, on ``mri_cs``'s problem: ``t`` is the square of
    ``mri_cs``'s ESPIRiT threshold (BART thresholds squared singular values) and ``scale`` its
    data scale of the slice (:func:`bart_problem`); the wavelet still differs (BART's redundant
    ``dau2`` against our db4); once on the k-space as
    stored and once on readout-cropped k-space (the same reduction our pipeline makes); without
    ``bart`` on PATH these two rows are skipped with a note (:data:`BART_MISSING`), the rest run;
  - SigPy: ``EspiritCalib`` + ``L1WaveletRecon`` (50 iterations) on the readout-cropped slice;
  - ``mri_varnet`` (our E2E-VarNet with the shipped weights) and fastMRI's ``VarNet`` with the
    same weights (key mapping by :func:`mrirecon.models.fastmri_varnet_state_dict`), each
    reading the slice from the file and cropping the output;
  - ``mri_learned`` (the default learned pipeline: ESPIRiT + MoDL) against that fastMRI
    ``VarNet`` run (the issue's bar for the learned pipeline's time);
* CT at the LoDoPaB geometry (362 x 362, 1000 views, 513 detectors): ``ct_fbp`` and
  ``ct_learned`` pipelines against ASTRA's CPU ``FBP`` (Hann) and scikit-image ``iradon``
  (Hann) on the same sinogram;
* kernels: the wavelet pair (640 x 368 complex64, db4, 4 levels) against PyWavelets and SigPy's
  ``linop.Wavelet``; FBP of 512 x 512 / 1000 views against ``iradon`` and ASTRA;
* cold start: ``mrirecon run mri_cs`` on the 8-coil slice as a fresh process, minus a fresh
  ``import torch``, against the warm per-slice call;
* each at ``--threads`` (default 1 and 2; the peers get the same count through
  ``OMP_NUM_THREADS``), and ``mri_cs`` / ``ct_fbp`` again beside a second CPU-bound process.

Images are compared by NRMSE after the best scale, ``min_s ||s a - b|| / ||b||``, against our
result and against the reference image of the file. The ratio is ours / peer (below 1: we are
faster), as in every benchmark; ``--json`` also writes the run (machine, start, threads, loads,
rows) atomically. Usage::

    python benchmarks/bench_pipeline.py                    # everything (about 15 minutes)
    python benchmarks/bench_pipeline.py --quick            # 8-coil MRI, CT, kernels only
    python benchmarks/bench_pipeline.py --sections mri ct  # choose sections
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does, before torch loads

import argparse  # noqa: E402
import contextlib  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _timing import machine_line, others_running  # noqa: E402 (benchmarks/ is on sys.path)

#: lam of the BART / SigPy comparison, on k-space divided by mri_cs's data scale (the zero-filled
#: RSS peak): the BART script passes that scale as ``pics -w`` (:func:`bart_problem`), since pics
#: otherwise divides by its own estimate and the same number is another weight
LAM = 0.001
#: mri_cs at the peers' work (pics -i 50, L1WaveletRecon max_iter 50); mri_cs.yaml runs 300
CS_SETS = [f"reconstruct.params.lam={LAM}", "reconstruct.params.iterations=50"]
REPEAT = 1  # --repeat: best-of-N warm calls for mri_cs and the BART scripts
PEER = Path(__file__).with_name("peer_scripts.py")


#: Printed when ``bart`` is not on PATH: the MRI section runs without its two BART rows (as
#: ``bench_partial_fourier.py`` skips its BART row); the other peers do not need it.
BART_MISSING = "bart not found (make benchdeps): BART rows skipped"


def have_bart() -> bool:
    return shutil.which("bart") is not None


def nrmse(a, b) -> float:
    """``min_s ||s a - b|| / ||b||`` (NRMSE after the best scale)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    s = float(a @ b) / max(float(a @ a), 1e-300)
    return float(np.linalg.norm(s * a - b) / np.linalg.norm(b))


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def busy_process(enabled: bool):
    """A second CPU-bound process beside the benchmark (contention)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if enabled else None
    try:
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def peer(cmd: list[str], threads: int) -> dict:
    """Run ``peer_scripts.py`` in a child with ``threads`` OpenMP/BLAS threads; its JSON."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, str(PEER), *cmd], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"peer {cmd[0]} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- data ---------------------------------------------------------------------------------


def make_data(root: Path, quick: bool) -> dict:
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    data = {"mri": {}}
    sets = [("8 coils, 640 x 320", 8, (320, 320), 6)]
    if not quick:
        sets.insert(0, ("15 coils, 640 x 368", 15, (320, 368), 5))
    for name, coils, size, seed in sets:
        out = root / f"mri{coils}"
        (path,) = simulate_mri_dataset(out, volumes=1, slices=1, coils=coils, size=size, seed=seed,
                                       acceleration=4, readout_oversampling=2,
                                       contrasts=["T2"], orientations=["axial"])
        data["mri"][name] = Path(path)
    paths = simulate_ct_dataset(root / "ct", geometry="parallel", views=1000, size=362,
                                detectors=513, samples=1, part="test", seed=3, photons=4096.0)
    data["ct"] = next(Path(p) for p in paths if Path(p).name.startswith("observation"))
    return data


# ---- ours ---------------------------------------------------------------------------------


def run_ours(pipeline: str, path: Path, out: Path, sets: list[str] = ()) -> tuple[float, np.ndarray]:
    """One ``run_pipeline`` call on a one-slice file; (seconds, reconstruction)."""
    import h5py

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    cs = CS_SETS if pipeline == "mri_cs" else []
    config, _ = load_pipeline(pipeline, ["export.formats=[hdf5]", "report.enabled=false",
                                         "evaluate.enabled=false", *cs, *sets])
    shutil.rmtree(out, ignore_errors=True)
    seconds, code = timed(run_pipeline, config, [str(path)], out, progress=False)
    if code != 0:
        raise RuntimeError(f"{pipeline} failed on {path}")
    with h5py.File(next((out / "reconstructions").glob("*.h5")), "r") as f:
        return seconds, f["reconstruction"][0]


def reference_of(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        return f["reconstruction_rss"][0]


def ct_truth(obs: Path) -> np.ndarray:
    from mrirecon.io.lodopab import LoDoPaBFiles

    files = LoDoPaBFiles(obs.parent, "test")
    return files.attenuation(0).data[0].numpy()


def bart_problem(path: Path, ref_shape: tuple[int, int]) -> list[str]:
    """``[THRESH, SCALE]`` of the BART script for ``mri_cs``'s problem on the slice at ``path``:
    the pipeline's ESPIRiT threshold (singular values; the script passes its square to
    ``ecalib -t``) and its data scale, :func:`mrirecon.recon.data_scale` of the readout-cropped
    k-space (the pipeline's order; for the k-space as stored the zero-filled image has the same
    pixel values, so the same scale serves both BART rows)."""
    import h5py

    from mrirecon.functional.fft import crop_readout
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.recon.mri import data_scale

    config, _ = load_pipeline("mri_cs", list(CS_SETS))
    with h5py.File(path, "r") as f:
        k = torch.from_numpy(np.asarray(f["kspace"][0]))
    scale = data_scale(crop_readout(k, ref_shape[0]))
    return [repr(float(config.calibrate.threshold)), repr(scale)]


# ---- sections -----------------------------------------------------------------------------


def section_kernels(threads: int, work: Path, rows: list) -> None:
    r = peer(["kernels", str(work / "kernels")], threads)
    torch.set_num_threads(threads)
    from mrirecon.functional.wavelet import dwt2, idwt2
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.operators.fbp import fbp

    x = torch.randn(640, 368, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    idwt2(dwt2(x, "db4", 4), "db4", 4)
    t_w = min(timed(lambda: idwt2(dwt2(x, "db4", 4), "db4", 4))[0] for _ in range(20))
    rows.append((f"wavelet fwd + adj 640 x 368 c64, {threads} thr", t_w, "PyWavelets", r["pywt_s"]))
    rows.append((f"wavelet fwd + adj 640 x 368 c64, {threads} thr", t_w, "SigPy linop.Wavelet", r["sigpy_s"]))
    # the same pair against PyWavelets in this process, interleaved (60 alternating repeats, the
    # median): on a busy machine a child run minutes apart sees a different load
    import pywt

    xn = x.numpy()
    ours_t, pywt_t = [], []
    for _ in range(60):
        ours_t.append(timed(lambda: idwt2(dwt2(x, "db4", 4), "db4", 4))[0])
        pywt_t.append(timed(lambda: pywt.waverec2(pywt.wavedec2(xn, "db4", mode="periodization", level=4),
                                                  "db4", mode="periodization"))[0])
    rows.append((f"wavelet fwd + adj 640 x 368 c64, {threads} thr, interleaved (median of 60)",
                 float(np.median(ours_t)), "PyWavelets wavedec2 + waverec2, same process", float(np.median(pywt_t)),
                 f"min: ours {min(ours_t) * 1e3:.1f} ms, pywt {min(pywt_t) * 1e3:.1f} ms"))
    g = CTGeometry.parallel((512, 512), 1000)
    sino = torch.from_numpy(np.load(r["sino_path"]))
    t_cold, img = timed(fbp, sino, g, filter="hann")
    t_f = min(timed(fbp, sino, g, filter="hann")[0] for _ in range(3))
    img = img.numpy()
    truth = np.load(r["phantom_path"])
    note = (f"NRMSE vs phantom: ours {nrmse(img, truth):.4f}, iradon {nrmse(np.load(r['iradon_path']), truth):.4f},"
            f" ASTRA {nrmse(np.load(r['astra_path']), truth):.4f}; ours cold {t_cold:.3f} s")
    rows.append((f"FBP 512^2 / 1000 views Hann, {threads} thr", t_f, "scikit-image iradon", r["iradon_s"], note))
    rows.append((f"FBP 512^2 / 1000 views Hann, {threads} thr", t_f, "ASTRA CPU FBP", r["astra_s"]))


def section_mri(data: dict, threads: int, work: Path, rows: list, quick: bool, cs_only: bool = False) -> None:
    torch.set_num_threads(threads)
    for name, path in data["mri"].items():
        ref = reference_of(path)
        t_cold, ours = run_ours("mri_cs", path, work / "cs")
        problem = bart_problem(path, ref.shape[-2:]) if have_bart() else []
        # best of REPEAT warm calls for ours and each BART script, alternated (single calls
        # on a shared machine swing by 20-40 %)
        t_warm, bart_full, bart_crop = float("inf"), None, None
        for _ in range(REPEAT):
            t, ours = run_ours("mri_cs", path, work / "cs")
            t_warm = min(t_warm, t)
            if not have_bart():  # its rows are skipped (main says so)
                continue
            b = peer(["bart", str(path), str(work / "bart_full"), str(LAM), "full", *problem], threads)
            bart_full = b if bart_full is None or b["seconds"] < bart_full["seconds"] else bart_full
            b = peer(["bart", str(path), str(work / "bart_crop"), str(LAM), "crop", *problem], threads)
            bart_crop = b if bart_crop is None or b["seconds"] < bart_crop["seconds"] else bart_crop
        note = f"NRMSE vs reference: ours {nrmse(ours, ref):.4f}"
        for label, b in (("BART ecalib + pics (k-space as stored)", bart_full),
                         ("BART ecalib + pics (readout cropped first)", bart_crop)):
            if b is None:
                continue
            img = np.load(b["image_path"])
            rows.append((f"mri_cs {name}, {threads} thr (cold {t_cold:.2f} s)", t_warm, label, b["seconds"],
                         f"NRMSE ours vs BART {nrmse(ours, img):.4f}; BART vs reference "
                         f"{nrmse(img, ref):.4f}; {note}"))
        if cs_only:
            continue
        if threads == 1 and not quick:
            sp = peer(["sigpy", str(path), str(work / "sigpy"), str(LAM)], threads)
            img = np.load(sp["image_path"])
            rows.append((f"mri_cs {name}, {threads} thr", t_warm, "SigPy EspiritCalib + L1WaveletRecon "
                         "(readout cropped)", sp["seconds"],
                         f"NRMSE ours vs SigPy {nrmse(ours, img):.4f}; SigPy vs reference {nrmse(img, ref):.4f}"))
        t_cold, learned = run_ours("mri_varnet_brain_sim", path, work / "vn")
        t_warm, learned = run_ours("mri_varnet_brain_sim", path, work / "vn")
        fm = peer(["varnet", str(path), str(work / "fastmri")], threads)
        img = np.load(fm["image_path"])
        rows.append((f"mri_varnet {name}, {threads} thr (cold {t_cold:.2f} s)", t_warm,
                     "fastMRI VarNet, same weights", fm["seconds"],
                     f"NRMSE ours vs fastMRI {nrmse(learned, img):.2e}"))
        # the default learned pipeline (MoDL since issue 14) against the same fastMRI VarNet run
        t_cold, modl = run_ours("mri_learned", path, work / "learned")
        t_warm, modl = run_ours("mri_learned", path, work / "learned")
        rows.append((f"mri_learned (MoDL) {name}, {threads} thr (cold {t_cold:.2f} s)", t_warm,
                     "fastMRI VarNet", fm["seconds"],
                     f"NRMSE vs reference: mri_learned {nrmse(modl, ref):.4f}, "
                     f"fastMRI VarNet (varnet_brain_sim weights) {nrmse(img, ref):.4f}"))


def section_ct(data: dict, threads: int, work: Path, rows: list) -> None:
    torch.set_num_threads(threads)
    obs = data["ct"]
    truth = ct_truth(obs)
    t_cold, _ = run_ours("ct_fbp", obs, work / "fbp")
    t_warm, _ = run_ours("ct_fbp", obs, work / "fbp")
    r = peer(["ct", str(obs), str(work / "ctpeer")], threads)
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.operators.fbp import fbp

    files = LoDoPaBFiles(obs.parent, "test")
    mu = fbp(files.sinogram(0).data[0], files.geometry, filter="hann").numpy()
    note = f"NRMSE vs ground truth: ours {nrmse(mu, truth):.4f}"
    for label, key in (("ASTRA CPU FBP (Hann)", "astra"), ("scikit-image iradon (Hann)", "iradon")):
        img = np.load(r[f"{key}_path"])
        rows.append((f"ct_fbp LoDoPaB 362^2 / 1000 views, {threads} thr (cold {t_cold:.2f} s)", t_warm,
                     label, r[f"{key}_s"], f"{note}; {key} {nrmse(img, truth):.4f}; ours vs {key} "
                     f"{nrmse(mu, img):.4f}"))
    t_cold, _ = run_ours("ct_learned", obs, work / "pd")
    t_warm, _ = run_ours("ct_learned", obs, work / "pd")
    rows.append((f"ct_learned (30 views) LoDoPaB, {threads} thr (cold {t_cold:.2f} s)", t_warm,
                 "ASTRA CPU FBP, 1000 views", r["astra_s"]))


def section_contention(data: dict, work: Path, rows: list, threads_list: list[int]) -> None:
    name, path = list(data["mri"].items())[-1]
    for threads in threads_list:
        torch.set_num_threads(threads)
        run_ours("mri_cs", path, work / "cs")
        quiet = run_ours("mri_cs", path, work / "cs")[0]
        with busy_process(True):
            busy = run_ours("mri_cs", path, work / "cs")[0]
        rows.append((f"mri_cs {name}, {threads} thr, beside a busy process", busy,
                     "same, without it (this run)", quiet, f"slow-down {busy / quiet:.2f}x"))
        run_ours("ct_fbp", data["ct"], work / "fbp")
        quiet = run_ours("ct_fbp", data["ct"], work / "fbp")[0]
        with busy_process(True):
            busy = run_ours("ct_fbp", data["ct"], work / "fbp")[0]
        rows.append((f"ct_fbp LoDoPaB, {threads} thr, beside a busy process", busy,
                     "same, without it (this run)", quiet, f"slow-down {busy / quiet:.2f}x"))


def section_cold(data: dict, threads: int, work: Path, rows: list) -> None:
    """What a user pays per process: ``mrirecon run mri_cs`` on one slice as a fresh process
    against ``import torch`` alone and the warm per-slice call (best of two each)."""
    name, path = list(data["mri"].items())[-1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def process(cmd: list[str]) -> float:
        best = float("inf")
        for _ in range(2):
            shutil.rmtree(work / "cli", ignore_errors=True)
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            best = min(best, time.perf_counter() - t0)
        return best

    torch_import = process([sys.executable, "-c", "import torch"])
    cli = process([sys.executable, "-m", "mrirecon.cli", "--threads", str(threads), "run", "mri_cs",
                   "-i", str(path), "-o", str(work / "cli"), "--no-progress",
                   "--set", "export.formats=[hdf5]", "--set", "report.enabled=false",
                   "--set", "evaluate.enabled=false", *(a for x in CS_SETS for a in ("--set", x))])
    torch.set_num_threads(threads)
    run_ours("mri_cs", path, work / "cs")
    warm = min(run_ours("mri_cs", path, work / "cs")[0] for _ in range(2))
    rows.append((f"mri_cs {name}, {threads} thr: fresh `mrirecon run` process minus `import torch`",
                 cli - torch_import, "warm call in a running process", warm,
                 (f"process {cli:.2f} s, import torch {torch_import:.2f} s: the rest of a cold start "
                  f"is {cli - torch_import - warm:.2f} s beyond the warm call")))


#: Sections that failed in this run (``main`` exits 1 after the table when any did).
FAILED: list[str] = []


def _guard(rows: list, section, *args) -> None:
    """Run a section; a failing peer is reported, recorded in :data:`FAILED` (the run then exits
    1, so ``run_all.py`` / ``make bench`` report it: it exited 0) and the other sections still
    run."""
    start = len(rows)
    try:
        section(*args)
    except Exception as err:  # noqa: BLE001 (a benchmark reports and goes on)
        FAILED.append(f"{section.__name__}: {type(err).__name__}: {err}")
        print(f"# {section.__name__} failed: {type(err).__name__}: {err}", flush=True)
    for row in rows[start:]:
        print("# row:", row, flush=True)


def main(argv: list[str] | None = None) -> None:
    from mrirecon.cli_types import int_at_least  # counts: 0 was a raw traceback
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int_at_least(1), nargs="+", default=[1, 2])
    ap.add_argument("--sections", nargs="+", default=["kernels", "mri", "ct", "cold", "contention"],
                    choices=["kernels", "mri", "ct", "cold", "contention"])
    ap.add_argument("--quick", action="store_true", help="8-coil MRI only, no SigPy")
    ap.add_argument("--cs-only", action="store_true",
                    help="MRI section: mri_cs against BART only (no SigPy, no mri_learned)")
    ap.add_argument("--json", default=None,
                    help="also write the run (machine, start, threads, loads, rows) to this JSON file")
    ap.add_argument("--repeat", type=int_at_least(1), default=1,
                    help="best of N alternated warm calls for mri_cs and the BART scripts")
    args = ap.parse_args(argv)
    global REPEAT
    REPEAT = max(1, args.repeat)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    loads = {"before": others_running()}
    print(f"# bench_pipeline, {started}\n# {machine_line()}\n# before: {loads['before']}", flush=True)
    if "mri" in args.sections and not have_bart():
        print(f"# {BART_MISSING}", flush=True)
    rows: list = []
    FAILED.clear()  # this run's (main may be called again in one process)
    with tempfile.TemporaryDirectory(prefix="mrirecon-bench-") as tmp:
        work = Path(tmp)
        data = make_data(work / "data", args.quick) if set(args.sections) - {"kernels"} else {}
        for threads in args.threads:
            if "kernels" in args.sections:
                _guard(rows, section_kernels, threads, work, rows)
            if "mri" in args.sections:
                _guard(rows, section_mri, data, threads, work, rows, args.quick, args.cs_only)
            if "ct" in args.sections:
                _guard(rows, section_ct, data, threads, work, rows)
            if "cold" in args.sections:
                _guard(rows, section_cold, data, threads, work, rows)
            loads[f"after {threads} thread(s)"] = others_running()
            print(f"# after {threads} thread(s): {loads[f'after {threads} thread(s)']}", flush=True)
        if "contention" in args.sections:
            _guard(rows, section_contention, data, work, rows, args.threads)
    loads["after"] = others_running()
    print(f"# after: {loads['after']}")
    print("\n| work | ours (s) | peer | peer (s) | ratio ours/peer | agreement, notes |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        what, ours, peer_name, peer_s = row[:4]
        note = row[4] if len(row) > 4 else ""
        print(f"| {what} | {ours:.3f} | {peer_name} | {peer_s:.3f} | {ours / peer_s:.2f} | {note} |")
    if args.json:
        from mrirecon.io.atomic import atomic_write_text

        run = {"machine": machine_line(), "started": started, "threads": args.threads,
               "sections": args.sections, "quick": args.quick, "bart": have_bart(),
               "load": loads,
               "rows": [{"work": r[0], "ours_s": r[1], "peer": r[2], "peer_s": r[3],
                         "ratio_ours_per_peer": r[1] / r[3], "notes": r[4] if len(r) > 4 else ""}
                        for r in rows]}
        atomic_write_text(args.json, json.dumps(run, indent=1))
    if FAILED:  # the table above lacks their rows
        sys.exit(f"bench_pipeline: {len(FAILED)} section(s) failed: " + "; ".join(FAILED))


if __name__ == "__main__":
    main()
