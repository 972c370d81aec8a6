"""The benchmark scripts (``benchmarks/``, ``make bench``) run: each at its smallest setting, in
this process (``main(argv)``), skipped where a peer package is missing. They are not unit tests
of speed; they catch a script that no longer runs (``bench_calib.py`` crashed on every run after
``_timing.best_time`` took keyword-only arguments, and nothing noticed), a BART-less machine
refused, a benchmark doing other work than its docstring says, a ratio printed the other way."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def scripts(monkeypatch):
    """``benchmarks/`` importable as the scripts import each other (``from _timing import``)."""
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # bench_pipeline sets it (restored after)
    return lambda name: importlib.import_module(name)


def test_ratio_text_is_ours_over_peer(scripts):
    ratio_text = scripts("_timing").ratio_text
    assert ratio_text(0.607, 1.632) == "0.37 (2.7x faster)"
    assert ratio_text(0.380, 0.287) == "1.32 (1.3x slower)"
    assert ratio_text(2.0, 2.0) == "1.00 (as fast)"


def test_bench_calib_runs(scripts, capsys):
    pytest.importorskip("pygrappa")
    pytest.importorskip("sigpy")
    scripts("bench_calib").main(["--quick", "--coils", "4", "--shape", "64", "64"])
    out = capsys.readouterr().out
    assert out.count("ratio ours/peer") == 2, out  # ESPIRiT and GRAPPA, ours / peer
    corr = float(out.split("inside object: min ")[1].split(",")[0])
    assert corr > 0.99, out  # the maps agree with SigPy's (1.000000 at 160 x 160)
    _says_machine_and_load(out)


def test_bench_calib_skip_grappa_runs_without_pygrappa(scripts, capsys, monkeypatch):
    """The README's `bench_calib.py --skip grappa --kernels` failed at import without pygrappa
    (imported at the top for the GRAPPA part alone); the GRAPPA part names it when missing."""
    import sys

    pytest.importorskip("sigpy")
    monkeypatch.setitem(sys.modules, "pygrappa", None)  # import pygrappa -> ImportError
    sys.modules.pop("bench_calib", None)
    calib = scripts("bench_calib")
    calib.main(["--quick", "--coils", "4", "--shape", "64", "64", "--skip", "grappa"])
    assert capsys.readouterr().out.count("ratio ours/peer") == 1  # ESPIRiT's only
    with pytest.raises(SystemExit, match="the GRAPPA peer pygrappa is not installed"):
        calib.main(["--quick", "--coils", "4", "--shape", "64", "64", "--skip", "espirit"])
    sys.modules.pop("bench_calib", None)


def test_bench_recon_runs_and_its_l1_rows_do_equal_work(scripts, capsys, monkeypatch):
    """The L1-wavelet rows run ``iterations + 30`` normal-operator applications on both sides
    (SigPy's 30 power iterations for the step; ours took the step from ``gram_bound`` with no
    power iteration, 50 against 80 grams, while the docstring said both did 30); the third row,
    ours as the pipelines run it, ``iterations`` only."""
    pytest.importorskip("sigpy")
    bench_recon = scripts("bench_recon")
    counts, sense = [0], bench_recon.sense  # counts[0]: CG-SENSE's grams

    def counting_sense(*args, **kwargs):
        op = sense(*args, **kwargs)
        gram = op.gram

        def counted(x):
            counts[-1] += 1
            return gram(x)

        op.gram = counted
        return op

    def l1_wavelet(*args, **kwargs):
        counts.append(0)
        return original(*args, **kwargs)

    original = bench_recon.l1_wavelet
    monkeypatch.setattr(bench_recon, "sense", counting_sense)
    monkeypatch.setattr(bench_recon, "l1_wavelet", l1_wavelet)
    n = 3
    bench_recon.main(["--coils", "4", "--size", "64", "64", "--cg-iterations", "2",
                      "--l1-iterations", str(n), "--repeats", "1"])
    out = capsys.readouterr().out
    power = bench_recon.POWER_ITERATIONS
    assert counts[1:] == [n + power, n + power, n], counts
    assert out.count("faster)") + out.count("slower)") + out.count("as fast)") == 4, out
    assert "ratio ours/peer" in out


def test_bench_recon_power_iterations_are_sigpys():
    sigpy_app = pytest.importorskip("sigpy.app")
    import inspect

    sys.path.insert(0, str(BENCH))
    try:
        bench_recon = importlib.import_module("bench_recon")
    finally:
        sys.path.remove(str(BENCH))
    default = inspect.signature(sigpy_app.LinearLeastSquares.__init__).parameters["max_power_iter"]
    assert bench_recon.POWER_ITERATIONS == default.default == 30


def test_bench_partial_fourier_runs_without_bart(scripts, capsys, monkeypatch):
    bench_pf = scripts("bench_partial_fourier")
    monkeypatch.setattr(bench_pf.shutil, "which", lambda name: None)
    bench_pf.main(["--quick", "--size", "64", "64", "--coils", "4"])
    out = capsys.readouterr().out
    assert "bart not found (make benchdeps)" in out and "BART homodyne" not in out, out


def test_bench_operators_runs(scripts, capsys):
    pytest.importorskip("sigpy")
    pytest.importorskip("astra")
    pytest.importorskip("skimage")
    scripts("bench_operators").main(["--quick", "--threads", "1", "--repeats", "1"])
    out = capsys.readouterr().out
    assert out.count("ratio ours/peer") == 4 and "CT / ASTRA CPU       : " in out, out


def test_bench_noncartesian_runs(scripts, capsys):
    pytest.importorskip("sigpy")
    pytest.importorskip("torchkbnufft")
    scripts("bench_noncartesian").main(["--problem", "2", "32", "24", "64", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "(c) radial CG-SENSE" in out and out.count("ratio ours/peer") == 5, out


def test_bench_models_runs(scripts, capsys):
    pytest.importorskip("fastmri")
    scripts("bench_models").main(["--cascades", "1", "--repeats", "1", "--size", "32",
                                  "--coils", "2"])
    out = capsys.readouterr().out
    assert "ratio ours/peer: time " in out and "ours (mrirecon)" in out, out
    assert float(out.split("output difference (first 4096 pixels): ")[1].split()[0]) < 1e-4
    _says_machine_and_load(out)


_PEAK_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    import torch
    from bench_models import peak_rss_delta

    def allocate(mib):
        return torch.ones(mib << 18)  # float32: mib MiB, touched

    if sys.argv[2] == "freed":  # 200 MiB held and freed before the baseline
        x = allocate(200)
        del x
    peak_rss_delta(lambda: allocate(1))  # warm up the allocator
    _, delta, _ = peak_rss_delta(lambda: float(allocate(64).sum()))
    print(delta)
    """
)


def test_bench_models_peak_delta_counts_reused_memory():
    """A child that allocated and freed 200 MiB before the baseline reports the same peak delta
    for a 64 MiB forward pass as one that did not (a ``ru_maxrss`` baseline reported about 0
    for it: the high-water mark already held the freed 200 MiB)."""
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("no /proc/self/clear_refs")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path),
           "MALLOC_MMAP_THRESHOLD_": "1048576"}  # as bench_models runs its children
    deltas = {}
    for case in ("fresh", "freed"):
        proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(BENCH), case],
                              capture_output=True, text=True, timeout=300, env=env)
        # clear_refs present but not writable (read-only /proc, no CAP_SYS_RESOURCE in some
        # sandboxes) or a kernel that does not reset VmHWM: bench_models exits saying so
        if proc.returncode != 0 and ("cannot reset the peak RSS" in proc.stderr
                                     or "did not reset VmHWM" in proc.stderr):
            pytest.skip(proc.stderr.strip().splitlines()[-1])
        assert proc.returncode == 0, proc.stderr
        deltas[case] = float(proc.stdout.split()[-1])
    # 64 MiB allocated and touched, plus allocator noise of a few MiB
    assert 60 < deltas["fresh"] < 72 and abs(deltas["freed"] - deltas["fresh"]) < 4, deltas


def test_bench_pipeline_memory_runs(scripts, capsys):
    scripts("bench_pipeline_memory").main(["--slices", "1", "--coils", "2", "--shape", "64",
                                           "64"])
    out = capsys.readouterr().out
    assert "peak RSS ratio 1 vs 1 slices: 1.000" in out, out
    _says_machine_and_load(out)


def _says_machine_and_load(out):
    """The brief's "say what else was running": the machine, and the load before and after
    (bench_calib, bench_models and bench_pipeline_memory printed neither)."""
    lines = out.splitlines()
    assert any(line.startswith("machine: ") and " cores, " in line for line in lines), out
    for when in ("before", "after"):
        assert any(line.startswith(f"{when}: load average") and "busiest:" in line
                   for line in lines), out


def test_bench_pipeline_without_bart_skips_its_rows_and_writes_the_run(scripts, capsys, tmp_path,
                                                                        monkeypatch):
    """``--quick --sections mri`` without ``bart`` on PATH runs (it exited 1 at once, so
    ``run_all.py`` and ``make bench`` reported it failed), says why the BART rows are missing and
    has none; ``--json`` writes the machine, start, threads and loads with the rows, atomically.
    The pipelines and peers are stubbed: this checks the script's own logic, not the timings."""
    bench_pipeline = scripts("bench_pipeline")
    called = []
    monkeypatch.setattr(bench_pipeline.shutil, "which", lambda name: None)
    monkeypatch.setattr(bench_pipeline, "make_data", lambda root, quick: {
        "mri": {"8 coils, 640 x 320": tmp_path / "slice.h5"}, "ct": tmp_path / "obs.h5"})
    monkeypatch.setattr(bench_pipeline, "reference_of", lambda path: np.ones((4, 4)))
    monkeypatch.setattr(bench_pipeline, "run_ours",
                        lambda pipeline, path, out, sets=(): (0.5, np.ones((4, 4))))

    def peer(cmd, threads):
        called.append(cmd[0])
        np.save(tmp_path / "peer.npy", np.ones((4, 4)))
        return {"seconds": 1.0, "image_path": str(tmp_path / "peer.npy")}

    monkeypatch.setattr(bench_pipeline, "peer", peer)
    writes = []
    import mrirecon.io.atomic as atomic

    original = atomic.atomic_write_text
    monkeypatch.setattr(atomic, "atomic_write_text",
                        lambda path, text: (writes.append(path), original(path, text)))
    target = tmp_path / "run.json"
    bench_pipeline.main(["--quick", "--sections", "mri", "--threads", "1", "--json",
                         str(target)])
    out = capsys.readouterr().out
    assert "bart not found (make benchdeps): BART rows skipped" in out
    assert "bart" not in called and "BART" not in out.split("| work |")[1], out
    run = json.loads(target.read_text())
    assert writes == [str(target)]
    assert set(run) >= {"machine", "started", "threads", "load", "rows"} and run["bart"] is False
    assert run["threads"] == [1] and set(run["load"]) == {"before", "after 1 thread(s)", "after"}
    assert [r["peer"] for r in run["rows"]] == ["fastMRI VarNet, same weights", "fastMRI VarNet"]
    assert run["rows"][0]["ratio_ours_per_peer"] == 0.5


def test_bench_pipeline_exits_1_when_a_section_failed(scripts, capsys, monkeypatch):
    """A failing section (a peer missing: ``No module named 'astra'``) was reported, its rows left
    out of the table, and the script exited 0, so ``run_all.py`` / ``make bench`` said nothing
    failed. It still runs the other sections and prints the table, then exits 1 naming it."""
    bench_pipeline = scripts("bench_pipeline")

    def broken(threads, work, rows):
        raise ModuleNotFoundError("No module named 'astra'")

    monkeypatch.setattr(bench_pipeline, "section_kernels", broken)
    with pytest.raises(SystemExit) as stop:
        bench_pipeline.main(["--sections", "kernels", "--threads", "1"])
    assert "bench_pipeline: 1 section(s) failed: broken: ModuleNotFoundError: No module named " \
           "'astra'" in str(stop.value.code)
    assert "| work | ours (s) |" in capsys.readouterr().out  # the table of what did run


def test_run_all_parses_its_options_before_starting_anything(scripts, monkeypatch, capsys):
    """``run_all.py --help`` and a mistyped option start no benchmark (they had started the
    half-hour full-size suite: the arguments were searched for ``--quick`` only)."""
    run_all = scripts("run_all")
    started = []
    monkeypatch.setattr(run_all.subprocess, "run", lambda *a, **k: started.append(a))
    with pytest.raises(SystemExit) as help_exit:
        run_all.main(["--help"])
    assert help_exit.value.code == 0 and "--quick" in capsys.readouterr().out
    with pytest.raises(SystemExit) as typo_exit:
        run_all.main(["--quik"])
    assert typo_exit.value.code == 2 and "unrecognized arguments: --quik" in capsys.readouterr().err
    assert started == []

    class Done:
        returncode = 0

    monkeypatch.setattr(run_all.subprocess, "run", lambda args: started.append(args) or Done())
    assert run_all.main(["--quick"]) == 0
    assert len(started) == len(run_all.SCRIPTS)
    assert all("--quick" in a or "--slices" in a for a in started)


def test_bench_pipeline_bart_rows_solve_mri_cs_calibration_and_scale(scripts, tmp_path,
                                                                      monkeypatch):
    """The BART script gets ``mri_cs``'s problem: ``ecalib -t`` = the square of the pipeline's
    ESPIRiT threshold (BART thresholds squared singular values: its default 0.001 is thresh
    0.0316, not 0.02) and ``pics -w`` = mri_cs's data scale of the readout-cropped slice (pics
    divided by its own estimate, 0.31x / 0.52x of it on the bench slice: another lam)."""
    import h5py
    import torch

    from mrirecon.functional.fft import crop_readout
    from mrirecon.recon.mri import data_scale

    bench_pipeline, peer_scripts = scripts("bench_pipeline"), scripts("peer_scripts")
    ecalib, pics = peer_scripts.bart_commands("k", "0.001", "0.02", "123.5")
    assert ecalib[ecalib.index("-t") + 1] == "0.0004" and ecalib[-2:] == ["k", "k_maps"]
    assert pics[pics.index("-w") + 1] == "123.5" and "W:3:0:0.001" in pics
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((1, 2, 8, 4)) + 1j * rng.standard_normal((1, 2, 8, 4)))
    with h5py.File(tmp_path / "slice.h5", "w") as f:
        f["kspace"] = k.astype(np.complex64)
    called = []
    monkeypatch.setattr(bench_pipeline, "have_bart", lambda: True)
    monkeypatch.setattr(bench_pipeline, "reference_of", lambda path: np.ones((4, 4)))
    monkeypatch.setattr(bench_pipeline, "run_ours",
                        lambda pipeline, path, out, sets=(): (0.5, np.ones((4, 4))))

    def peer(cmd, threads):
        called.append(cmd)
        np.save(tmp_path / "peer.npy", np.ones((4, 4)))
        return {"seconds": 1.0, "image_path": str(tmp_path / "peer.npy")}

    monkeypatch.setattr(bench_pipeline, "peer", peer)
    rows = []
    bench_pipeline.section_mri({"mri": {"tiny": tmp_path / "slice.h5"}}, 1, tmp_path, rows,
                               quick=True, cs_only=True)
    scale = data_scale(crop_readout(torch.from_numpy(k[0].astype(np.complex64)), 4))
    assert [c[4:] for c in called] == [["full", "0.02", repr(scale)], ["crop", "0.02", repr(scale)]]
    assert len(rows) == 2


def test_peer_scripts_help_and_an_unknown_peer_are_said_not_raised(scripts, capsys):
    """``peer_scripts.py --help`` (or no / an unknown peer) crashed with KeyError / IndexError."""
    peers = scripts("peer_scripts")
    with pytest.raises(SystemExit) as ok:
        peers.main(["--help"])
    with pytest.raises(SystemExit) as bad:
        peers.main(["nope"])
    assert (ok.value.code, bad.value.code) == (0, 2)
    assert "``bart FILE OUT LAM" in capsys.readouterr().err
