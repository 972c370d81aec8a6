"""``benchmarks/heldout_bart.py``: BART's ``ecalib`` + ``pics`` as registered reconstruction methods
of the held-out protocol (skipped where ``bart`` is missing), and its refusal without BART."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
needs_bart = pytest.mark.skipif(shutil.which("bart") is None, reason="bart not installed (make sysdeps)")


@pytest.fixture
def heldout_bart(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("heldout_bart")


def test_refused_without_bart_before_any_data(heldout_bart, monkeypatch, tmp_path):
    monkeypatch.setattr(heldout_bart.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="bart not found"):
        heldout_bart.main(["--work", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


@needs_bart
def test_bart_pics_reconstructs_through_the_registry(heldout_bart, tmp_path, restored_registry):
    """A fully sampled 4-coil disc through ``recon.run``: BART's image has the object's shape and
    magnitude (its maps are BART's own, normalised as ESPIRiT's: |x| = the object inside the
    maps' support, to the few per cent of ESPIRiT's eigenvalue below 1), and a second solve of the
    same k-space reuses the maps."""
    from mrirecon import recon
    from mrirecon.functional.fft import fft2c
    from mrirecon.operators import SenseOperator

    torch.set_num_threads(1)
    h, w = 48, 40
    yy, xx = np.mgrid[:h, :w]
    img = (((yy - 24) / 14) ** 2 + ((xx - 20) / 12) ** 2 < 1).astype(np.complex64)
    maps = np.stack([np.exp(-((yy - 12 - 24 * (c // 2)) ** 2 + (xx - 10 - 20 * (c % 2)) ** 2) / 600)
                     for c in range(4)]).astype(np.complex64)
    maps /= np.sqrt((abs(maps) ** 2).sum(0))
    y = fft2c(torch.from_numpy(maps * img))
    recon.register("bart_l1_test", heldout_bart.BartPics("W", tmp_path))
    op = SenseOperator(torch.from_numpy(maps), torch.ones(w, dtype=torch.bool))
    x = recon.run("bart_l1_test", y, op, lam=1e-6, iterations=30)
    assert tuple(x.shape) == (h, w)
    inside = abs(img) > 0
    err = np.abs(np.abs(x.numpy()) - np.abs(img))[inside]
    assert np.median(err) < 0.05 and np.abs(x.numpy())[~inside].mean() < 0.05
    recon.run("bart_l1_test", y, op, lam=1e-3, iterations=30)
    assert len(list(tmp_path.glob("*.maps.cfl"))) == 1
