"""One outer-k-space noise estimate (``checks_noncart.outer_noise`` / ``slice_noise``) for the
non-Cartesian data residual and the Cartesian k-space SNR, the residual rule that does not blame
the trajectory of clean data at any matrix size, the centre band the coil maps calibrate from
(``acs_columns``) and the DC offsets estimated once per slice (reread s18, findings 1, 2, 4, 5)."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.data.simulate_noncartesian import make_trajectory
from mrirecon.operators import nufft_sense
from mrirecon.pipeline.checks_noncart import (NOISE_DIFFERENCE_ORDER, RESIDUAL_EXCESS, outer_noise,
                                              slice_noise)

#: Relative std of a noise power from the median of n exponential |d|^2 (1 / (ln 2 sqrt(n))),
#: times sqrt(1 + 2 sum rho_j^2) = 1.62 for the overlapping 4th differences' correlation.
MEDIAN_SD = 1.62 / math.log(2)


def _noise(shape, sd, gen):
    return sd / math.sqrt(2) * torch.complex(torch.randn(shape, generator=gen, dtype=torch.float64),
                                             torch.randn(shape, generator=gen, dtype=torch.float64))


def test_outer_noise_of_pure_noise_is_the_rms_of_the_coils_powers():
    """Cartesian, coils of different noise: the square root of their mean power, to 5 sampling
    standard errors (per coil ``MEDIAN_SD / sqrt(n)``, averaged over the coils)."""
    assert NOISE_DIFFERENCE_ORDER == 4
    gen = torch.Generator().manual_seed(0)
    sds = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    k = torch.stack([_noise((128, 96), float(sd), gen) for sd in sds])
    k[:, :, ::3] = 0  # unsampled columns: left out
    true = float(sds.square().mean().sqrt())
    est = outer_noise(k)
    n = 4 * 16 * (13 - 4)  # per coil: 4 corners of 13 rows x 24 columns (16 sampled), 9 each
    rel = MEDIAN_SD / math.sqrt(n) * float(sds.pow(4).sum().sqrt() / sds.square().sum())
    assert abs(est ** 2 / true ** 2 - 1) < 5 * rel, (est, true)
    assert outer_noise(torch.zeros(2, 4, 8, dtype=torch.complex64)) is None


@pytest.mark.parametrize("kind,n,bias", [("radial", 64, 1.2), ("radial", 256, 1.1),
                                         ("spiral", 256, 1.45)])
def test_outer_noise_reads_the_simulators_noise_at_every_matrix(kind, n, bias):
    """Clean simulated spokes / spirals, 8 coils: the estimate against the true noise. The
    neighbour differences beyond 3/4 of the radius it replaces read 3.11x at 64 and 1.45x at 256,
    so one residual threshold meant another thing at each size. Measured: radial 1.12 / 1.03,
    spiral 1.31 (the spiral's outer samples lie farther apart along its readout)."""
    torch.set_num_threads(1)
    vol = simulate_mri_volume(0, slices=1, coils=8, size=(n, n), seed=0)
    traj, _ = make_trajectory(kind, (n, n))
    clean = nufft_sense(vol.maps.to(torch.complex64), traj, toeplitz=False)(
        vol.image.to(torch.complex64))
    clean = clean[0] if clean.ndim == 4 else clean
    true = math.sqrt(2) * vol.parameters["noise_sigma"]
    gen = torch.Generator().manual_seed(1)
    est = outer_noise(clean + _noise(clean.shape, true, gen).to(clean.dtype), traj)
    assert 0.95 < est / true < bias, est / true


def _slice(kspace, noise=None, extra=None):
    return SimpleNamespace(kspace=kspace, noise=noise, trajectory=None,
                           header=SimpleNamespace(extra=extra or {}))


def test_slice_noise_takes_the_noise_scan_when_there_is_one():
    gen = torch.Generator().manual_seed(2)
    k = _noise((4, 64, 64), 1.0, gen)  # the data's own noise: 1
    scan = _noise((4, 8192), 3.0, gen)  # the scan's: 3 (5 standard errors: 5 / sqrt(4 * 8192))
    sigma, source = slice_noise(_slice(k, scan), prewhitened=False)
    assert source == "the noise scan" and abs(sigma / 3.0 - 1) < 5 / math.sqrt(4 * 8192)
    assert slice_noise(_slice(k, scan), prewhitened=True) == (1.0, "the noise scan")
    # compressed coils (or another coil count) no longer match the scan: the data's own
    sigma, source = slice_noise(_slice(k, scan, {"acquired_coils": 8}), prewhitened=False)
    assert source == "the outer readout rows" and abs(sigma - 1.0) < 0.1


def _run(folder, n, kind="radial"):
    py = [sys.executable, "-m", "mrirecon"]
    subprocess.run(py + ["simulate", "mri", "--out", str(folder / "in"), "--volumes", "1",
                         "--slices", "1", "--coils", "8", "--size", str(n), str(n),
                         "--trajectory", kind, "--threads", "1"], check=True, capture_output=True)
    (path,) = (folder / "in").glob("*.h5")
    run = subprocess.run(py + ["run", "mri_radial_cs", "--input", str(path), "--output",
                               str(folder / "out"), "--threads", "1", "--no-progress"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stderr


def test_default_radial_simulation_at_256_is_not_blamed_on_its_trajectory(tmp_path):
    """Was: "data residual 2.73x the noise level ... inconsistent with the trajectory" on the
    project's own clean 256 x 256 radial file (1.81x at 192). The faults still warn:
    ``test_scanner_faults_noncart`` (wrong golden-angle step: 32 % of the data beyond the noise)
    and :func:`test_a_quarter_sample_delay_still_warns_at_any_snr` (11 %); clean 1.1-1.4 %."""
    err = _run(tmp_path, 256)
    assert "data residual" not in err, re.findall(r"data residual [^:]*", err)


@pytest.mark.parametrize("scale", [10 ** -0.5, 10 ** 0.5])  # 40 dB and 20 dB
def test_a_quarter_sample_delay_still_warns_at_any_snr(scale, tmp_path):
    """The 64 x 64 fault file of test_scanner_faults_noncart with its noise at 40 / 20 dB: a
    0.25-sample uncorrected delay leaves 11 % of the data beyond the noise (5.3-26.9x the
    noise); the clean file 1.3-1.4 % (1.2-3.5x), silent."""
    from tests.pipeline import test_scanner_faults_noncart as faults

    from mrirecon.sampling import golden_angle_radial

    vol = simulate_mri_volume(0, slices=1, coils=faults.COILS, size=(faults.SIZE,) * 2, seed=5)
    traj = golden_angle_radial(faults.SPOKES, faults.SAMPLES).double()

    def sample(t):
        clean = faults._sample(vol, t, noise=False)
        return clean + scale * (faults._sample(vol, t) - clean)

    clean = faults._run(tmp_path / "clean", vol, sample(traj), traj)
    delayed = faults._run(tmp_path / "delay", vol, sample(faults._delayed(traj, 0.25, 0.25)), traj)
    assert not any("data residual" in w for w in clean["warnings"])
    (msg,) = [w for w in delayed["warnings"] if "data residual" in w]
    excess = float(re.search(r"beyond the noise ([0-9.]+) %", msg).group(1))
    assert excess > 2 * 100 * RESIDUAL_EXCESS, msg


def test_dc_offsets_are_estimated_once_per_preprocess(tmp_path, monkeypatch):
    """``preprocess`` named (coil_warnings) and subtracted (remove_dc_offsets) two estimates."""
    import mrirecon.pipeline.checks_mri as cm
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.stages_mri import MRIStages

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=1, coils=4, size=(64, 64), seed=3)
    calls = []
    original = cm.dc_offsets
    monkeypatch.setattr(cm, "dc_offsets", lambda *a, **k: calls.append(1) or original(*a, **k))
    config, _ = load_pipeline("mri_cs", [])
    stages = MRIStages(config)
    k = stages.load(path).read(0)
    offset = torch.zeros_like(k.kspace)
    offset[1] = 20 * float(k.kspace[1, :8].abs().std())  # a receiver offset in coil 1
    out = stages.preprocess(replace(k, kspace=k.kspace + offset))
    assert len(calls) == 1
    assert "dc_offset" in out.notes and "subtracted" in out.notes["dc_offset"]
