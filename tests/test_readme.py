"""Every code block in README.md runs, in order, in one fresh folder, and does what the text says.

* ``bash`` blocks: each ``mrirecon ...`` line runs as written (through ``python -m mrirecon.cli``
  so the checkout under test is used); ``make demo`` / ``make test`` are checked with
  ``make -n`` against a missing venv (what a fresh machine would run), and the demo itself runs
  as ``mrirecon demo --quick`` (the same job on smaller data).
* ``python`` blocks run with ``exec`` in that folder; their printed figures are checked against
  the claims in the README's text.
"""

from __future__ import annotations

import contextlib
import io
import os
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import ROOT

README = ROOT / "README.md"


def code_blocks(text: str) -> list[tuple[str, str]]:
    """``[(language, code), ...]`` of the fenced blocks, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def commands(code: str) -> list[list[str]]:
    out = []
    for line in code.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(shlex.split(line))
    return out


def run_cli(argv: list[str], cwd: Path) -> str:
    assert argv[0] == "mrirecon", argv
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-m", "mrirecon.cli", *argv[1:]], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{shlex.join(argv)} exited {res.returncode}:\n{res.stderr[-3000:]}"
    return res.stdout


def make_dry_run(target: str) -> str:
    """What ``make TARGET`` runs on a machine without the venv, with the Makefile's defaults (the
    caller's ``TORCH_SPEC``, ``PYTHON`` or make flags, which a GPU user sets, are left out)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TORCH_SPEC", "PYTHON", "VENV", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    res = subprocess.run(["make", "-n", target, "VENV=/nonexistent/venv"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_readme_starts_with_the_two_commands():
    blocks = code_blocks(README.read_text())
    lang, code = blocks[0]
    assert lang == "bash"
    assert [c[:2] for c in commands(code)] == [["make", "demo"], ["make", "test"]]


def test_make_demo_installs_runtime_only_and_make_test_adds_test_extras():
    demo = make_dry_run("demo")
    assert "torch==2.13.0" in demo and "pip install -q -e ." in demo
    assert "[test]" not in demo and "fastmri" not in demo and "apt-get" not in demo
    test = make_dry_run("test")
    assert 'pip install -q -e ".[test]"' in test and "fastmri==0.3.0" in test
    assert "sysdeps:" in test or "apt-get" in test  # system packages only through sysdeps
    sysdeps = make_dry_run("sysdeps")
    assert all(tool in sysdeps for tool in ("dicom3tools", "dcm2niix", "chromium", "bart"))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("readme")


def _figures(output: str) -> dict[str, dict[str, float]]:
    """``{"MRI L1-wavelet": {"psnr": ..., "ssim": ...}, "CT TV": {...}}`` from the tour."""
    found = {}
    for m in re.finditer(r"^(MRI|CT)\s+(\S+)\s+PSNR ([\d.]+) dB(?:\s+SSIM ([\d.]+))?", output, re.M):
        found[f"{m.group(1)} {m.group(2)}"] = {
            "psnr": float(m.group(3)), "ssim": float(m.group(4)) if m.group(4) else None}
    return found


def test_every_readme_block_runs_and_does_what_the_text_says(workdir, monkeypatch):
    blocks = code_blocks(README.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(workdir)
    printed = []
    for lang, code in blocks[1:]:  # the first block is checked by the make tests above
        if lang == "bash":
            for argv in commands(code):
                printed.append(run_cli(argv, workdir))
        elif lang == "python":
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
            printed.append(buffer.getvalue())
        else:
            pytest.fail(f"README block of unknown language {lang!r}")
    tour = _figures("".join(printed))
    assert set(tour) == {"MRI zero-filled", "MRI L1-wavelet", "MRI MoDL", "CT FBP", "CT TV"}, tour
    # "L1-wavelet gains several dB of PSNR over zero-filled"
    assert tour["MRI L1-wavelet"]["psnr"] >= tour["MRI zero-filled"]["psnr"] + 3
    # "MoDL has the best SSIM"
    mri = [k for k in tour if k.startswith("MRI")]
    assert max(mri, key=lambda k: tour[k]["ssim"]) == "MRI MoDL"
    # "TV beats FBP on CT"
    assert tour["CT TV"]["psnr"] > tour["CT FBP"]["psnr"]
    # CT from your own sinogram: the skimage and ASTRA data, converted as the README says, come
    # out as well as skimage's own iradon / mrirecon's own projection of the phantom (a half-bin
    # axis error costs 6 dB, lengths left in pixels more: the bound is 1 dB)
    own = {m[0]: (float(m[1]), float(m[2])) for m in re.findall(
        r"^own CT ([^,]+), FBP PSNR ([\d.]+) dB \(\D+ ([\d.]+) dB\)$", "".join(printed), re.M)}
    assert set(own) == {"sinogram", "ASTRA fanflat"}, own
    assert all(psnr > ref - 1.0 for psnr, ref in own.values()), own
    # MRI from your own k-space: centred orthonormal fft2 of the known image read back as the
    # RSS image to complex64 rounding (eps * sqrt(H W) relative at worst: 98 dB at 128 x 96);
    # ifft2 instead of fft2 gives 16.0 dB, numpy's unnormalised fft2 -28.0 dB
    mri = re.findall(r"^own MRI k-space, RSS PSNR ([\d.-]+) dB$", "".join(printed), re.M)
    bound = -20 * np.log10(np.finfo(np.float32).eps * np.sqrt(128 * 96))
    assert len(mri) == 1 and float(mri[0]) > bound, (mri, bound)
    # getting started: the run wrote what the outputs table lists, and resume skipped it all
    out = workdir / "recon_cs"
    for rel in ("report.html", "provenance.json", "reconstructions", "nifti", "dicom", "figures"):
        assert (out / rel).exists(), rel
    import json

    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["skipped", "skipped"]  # the --resume run


def test_demo_prints_only_folders_it_wrote(tmp_path):
    """``make demo`` runs ``mrirecon demo``; its closing printout names only existing paths."""
    stdout = run_cli(["mrirecon", "demo", "--quick", "--no-progress", "--output",
                      str(tmp_path / "demo")], tmp_path)
    listed = re.findall(r"^\s{4}\S+\s+(/\S+)$", stdout, re.M)
    assert any(p.endswith("report.html") for p in listed)
    assert any(p.endswith("dicom") for p in listed)
    missing = [p for p in listed if not Path(p).exists()]
    assert not missing, missing
    assert (tmp_path / "demo" / "metrics.md").is_file()
    # every pipeline wrote DICOM, and no model ran outside its card's training range (the demo
    # ran models trained at 128 x 128 and 640 x 320 on 192 x 160 data: "results may be unreliable")
    runs = sorted(p.parent for p in (tmp_path / "demo").glob("*/provenance.json"))
    assert len(runs) >= 4 and all((r / "dicom").is_dir() for r in runs), runs
    warned = [w for r in runs for f in json.loads((r / "provenance.json").read_text())["files"]
              for w in f["warnings"] if "training range" in w]
    assert not warned, warned
    # the shipped models at their own geometry lead their baselines (quick run on 2026-12-05:
    # PnP 35.96 dB against L1-wavelet's 30.72; the staged CT model 31.45 and the learned
    # primal-dual 30.43 against FBP's 17.06); the bounds are under half of those gaps
    psnr = {r.name: np.mean([f["metrics"]["psnr"] for f in json.loads((r / "provenance.json").read_text())["files"]])
            for r in runs}
    assert psnr["mri_pnp_brain_sim"] > psnr["mri_l1_wavelet"] + 2.0, psnr
    assert min(psnr["ct_learned_30views"], psnr["ct_primal_dual_30views"]) > psnr["ct_fbp_30views"] + 6.0, psnr
