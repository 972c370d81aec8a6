"""Scanner faults in non-Cartesian (radial, spiral) data: a gradient delay, a k-space spike, a
receiver DC offset and a trajectory that does not describe the data (docs/robustness.md). Files
are simulated as the audit did: a 64 x 64 brain, 6 coils, 80 spokes of 128 samples (2x
oversampled) or 8 spiral interleaves, the fault injected before the ISMRMRD writer."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import pytest
import torch

from mrirecon.containers import Header
from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.functional.density import pipe_menon_density, radial_density
from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
from mrirecon.metrics import psnr
from mrirecon.operators import nufft_sense
from mrirecon.pipeline import checks_noncart as cn
from mrirecon.pipeline.checks_mri import dc_offsets, remove_dc_offsets
from mrirecon.pipeline.checks_noncart import (DELAY_WARN_SAMPLES, check_readouts,
                                              estimate_gradient_delay, spoke_geometry)
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.slice_mri import MRISlice
from mrirecon.sampling import golden_angle_radial, radial_trajectory, spiral_trajectory

SIZE, SPOKES, COILS, SAMPLES = 64, 80, 6, 128


@pytest.fixture(scope="module")
def volume():
    return simulate_mri_volume(0, slices=1, coils=COILS, size=(SIZE, SIZE), seed=5)


def _sample(volume, trajectory, seed=1, noise=True):
    k = nufft_sense(volume.maps.to(torch.complex64), trajectory.float(),
                    toeplitz=False)(volume.image.to(torch.complex64))
    if noise:
        g = torch.Generator().manual_seed(seed)
        sigma = volume.parameters["noise_sigma"]
        k = k + sigma * torch.complex(torch.randn(k.shape, generator=g),
                                      torch.randn(k.shape, generator=g))
    return k


def _delayed(trajectory, along_ky, along_kx):
    """Spokes shifted by a per-axis delay (samples): the sample at k measures k + d S u."""
    u, _, spacing = spoke_geometry(trajectory)
    shift = spacing * torch.stack([along_ky * u[:, 0], along_kx * u[:, 1]], -1)
    return (trajectory + shift[:, None]).clamp(-0.5, 0.4999)


def _run(folder: Path, volume, k, trajectory, kind="radial", pipeline="mri_radial_cs",
         overrides=()):
    folder.mkdir(parents=True, exist_ok=True)
    header = volume.header.with_(extra={**volume.header.extra, "trajectory": kind})
    density = (radial_density(trajectory, (SIZE, SIZE)) if kind == "radial"
               else pipe_menon_density(trajectory, (SIZE, SIZE)))
    path = write_ismrmrd_noncartesian(folder / "scan.h5", k, trajectory, header, density)
    out = folder / "out"
    shutil.rmtree(out, ignore_errors=True)
    config, text = load_pipeline(pipeline, list(overrides))
    rc = run_pipeline(config, [str(path)], out, progress=False, config_text=text)
    (record,) = json.loads((out / "provenance.json").read_text())["files"]
    result = {"rc": rc, "error": record.get("error") or "",
              "warnings": [w for w in record.get("warnings", []) if "training range" not in w]}
    if rc == 0:
        with h5py.File(out / "reconstructions" / "scan.h5", "r") as h5:
            image = torch.from_numpy(h5["reconstruction"][()])
        result["psnr"] = float(psnr(volume.image.abs(), image))
    return result


@pytest.mark.parametrize("layout", ["golden", "uniform"])
def test_gradient_delay_is_estimated_per_axis_and_clean_spokes_read_zero(volume, layout):
    traj = (golden_angle_radial if layout == "golden" else radial_trajectory)(SPOKES, SAMPLES)
    traj = traj.double()
    # clean spokes, several noise draws: far below the warning (measured: <= 0.003 samples)
    for seed in (1, 2, 3):
        clean = estimate_gradient_delay(_sample(volume, traj, seed)[0], traj)
        assert float(clean.abs().max()) < DELAY_WARN_SAMPLES / 4
    for ky, kx in ((0.5, 0.5), (1.0, 1.0), (-0.5, 1.5)):
        found = estimate_gradient_delay(_sample(volume, _delayed(traj, ky, kx))[0], traj)
        assert abs(float(found[0, 0]) - ky) < 0.05 and abs(float(found[1, 1]) - kx) < 0.05
        assert abs(float(found[0, 1])) < 0.05


def test_spiral_readouts_are_not_estimated(volume):
    sp = spiral_trajectory(SIZE, 0.24, 8, undersampling_edge=2.0, dwell_time=4e-6)
    assert spoke_geometry(sp) is None
    assert estimate_gradient_delay(_sample(volume, sp)[0], sp) is None


def test_a_gradient_delay_is_named_and_corrected_on_request(volume, tmp_path):
    traj = golden_angle_radial(SPOKES, SAMPLES).double()
    clean = _run(tmp_path / "clean", volume, _sample(volume, traj), traj)
    assert not any("gradient delay:" in w for w in clean["warnings"])
    k = _sample(volume, _delayed(traj, 1.0, 1.0))
    warned = _run(tmp_path / "warn", volume, k, traj)  # was: 19.8 dB, exit 0, no word
    (msg,) = [w for w in warned["warnings"] if "gradient delay:" in w]
    assert "+1.00 samples along kx" in msg and "+1.00 along ky" in msg
    assert "preprocess.gradient_delay=correct" in msg
    fixed = _run(tmp_path / "fix", volume, k, traj,
                 overrides=["preprocess.gradient_delay=correct"])
    assert any("the trajectory was shifted by the estimate" in w for w in fixed["warnings"])
    # 19.8 -> 39.6 dB (clean 39.65): the trajectory and its density weights moved (36.5 dB
    # when the weights stayed at the nominal positions: test_noncart_density_follows_trajectory)
    assert warned["psnr"] < clean["psnr"] - 10
    assert fixed["psnr"] > clean["psnr"] - 0.5
    assert not any("data residual" in w for w in fixed["warnings"])
    # the residual check names the mismatch the delay leaves when it is not corrected
    assert any("data residual" in w for w in warned["warnings"])
    assert not any("data residual" in w for w in clean["warnings"])


def test_an_unknown_gradient_delay_value_is_refused():
    with pytest.raises(Exception, match="gradient_delay"):
        load_pipeline("mri_radial_cs", ["preprocess.gradient_delay=fix"])


@pytest.mark.parametrize("factor", [10.0, 1e9])
def test_a_spike_on_a_readout_is_refused_naming_it(volume, factor):
    traj = golden_angle_radial(SPOKES, SAMPLES).double()
    sp = spiral_trajectory(SIZE, 0.24, 8, undersampling_edge=2.0, dwell_time=4e-6)
    for t, (r, n) in ((traj, (7, 32)), (sp, (3, 40))):
        k = _sample(volume, t)[0]
        check_readouts(k, t, (SIZE, SIZE), "clean")  # clean readouts pass
        k[1, r, n] = factor * float(k.abs().max())
        with pytest.raises(ValueError, match=f"coil 1, readout {r}, sample {n}.*a spike"):
            check_readouts(k, t, (SIZE, SIZE), "x")


def test_a_spike_in_a_radial_file_fails_the_input(volume, tmp_path):
    traj = golden_angle_radial(SPOKES, SAMPLES).double()
    k = _sample(volume, traj)
    k[0, 1, 7, 32] = 10 * float(k.abs().max())  # was: 23.5 dB, exit 0, no word
    result = _run(tmp_path, volume, k, traj)
    assert result["rc"] == 1 and "readout 7, sample 32" in result["error"]


def test_a_radial_dc_offset_is_estimated_from_outer_samples_and_subtracted(volume, tmp_path):
    traj = golden_angle_radial(SPOKES, SAMPLES).double()
    k = _sample(volume, traj)
    noise = float((k[0] - _sample(volume, traj, noise=False)[0]).abs().square().mean().sqrt())
    offsets, _ = dc_offsets(k[0], traj)
    assert not bool((offsets != 0).any())  # clean coils: none
    sp = spiral_trajectory(SIZE, 0.24, 8, undersampling_edge=2.0, dwell_time=4e-6)
    assert not bool((dc_offsets(_sample(volume, sp)[0], sp)[0] != 0).any())
    offset = 20 * noise * (1 + 1j) / math.sqrt(2)
    k[0, 2] += offset
    offsets, _ = dc_offsets(k[0], traj)
    assert (offsets != 0).nonzero().flatten().tolist() == [2]
    # a mean of ~2,500 samples, plus what the object's k-space leaves there (clean coils: about
    # one noise std, z < 5): within 5 % of the offset
    assert abs(complex(offsets[2]) - offset) < 0.05 * abs(offset)
    fixed = remove_dc_offsets(k[0], traj)
    assert torch.equal(fixed[0], k[0, 0])  # the other coils untouched
    assert torch.allclose(fixed[2], k[0, 2] - offsets[2].to(k.dtype))
    clean = _run(tmp_path / "clean", volume, _sample(volume, traj), traj)
    result = _run(tmp_path / "dc", volume, k, traj)  # was: 33.5 dB, exit 0, no word
    assert any("coil 2" in w and "DC offset" in w for w in result["warnings"])
    assert result["psnr"] > clean["psnr"] - 0.5


def test_a_wrong_golden_angle_increment_is_named_by_the_residual(volume, tmp_path):
    phi = (1 + 5 ** 0.5) / 2

    def radial_at(step):
        theta = torch.arange(SPOKES, dtype=torch.float64) * step
        rho = (torch.arange(SAMPLES, dtype=torch.float64) - SAMPLES / 2) / SAMPLES
        return torch.stack([rho * torch.cos(theta)[:, None], rho * torch.sin(theta)[:, None]], -1)

    k = _sample(volume, radial_at(math.pi / phi))
    right = _run(tmp_path / "ok", volume, k, radial_at(math.pi / phi))
    wrong = _run(tmp_path / "wrong", volume, k, radial_at(math.pi / (phi + 6)))  # was: silent
    assert not any("data residual" in w for w in right["warnings"])
    (msg,) = [w for w in wrong["warnings"] if "data residual" in w]
    assert "angle increment" in msg


def test_refine_finds_the_minimum_of_a_quadratic_per_axis():
    """The sub-sample refinement of the RING search: on an exact quadratic the fitted minimum is
    the true one (float64 rounding only), axis 0 for the first spoke, axis 1 for the second."""
    di, dj = 0.3, -0.45
    g = torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64)
    x, y = torch.meshgrid(g, g, indexing="ij")
    patch = 2 * (x - di) ** 2 + 0.5 * (x - di) * (y - dj) + 3 * (y - dj) ** 2 + 1
    ti, tj = cn._refine(patch)
    assert ti == pytest.approx(di, abs=1e-9) and tj == pytest.approx(dj, abs=1e-9)


def _slice(source: str, n: int = 32):
    traj = radial_trajectory(24, 2 * n).double()
    g = torch.Generator().manual_seed(0)
    k = torch.complex(torch.randn(2, 24, 2 * n, generator=g), torch.randn(2, 24, 2 * n, generator=g))
    header = Header(encoded_matrix=(n, n, 1), recon_matrix=(n, n, 1)).with_(
        extra={"density_source": source})
    return MRISlice(k, torch.ones(2 * n, dtype=torch.bool), header, "f.h5", 0,
                    trajectory=traj, density=radial_density(traj, (n, n)))


def test_a_quarter_sample_delay_is_named(monkeypatch):
    """DELAY_WARN_SAMPLES' own figure: a quarter of a sample cost 4-6 dB, so it must be named."""
    delay = torch.tensor([[0.25, 0.0], [0.0, 0.0]], dtype=torch.float64)
    monkeypatch.setattr(cn, "estimate_gradient_delay", lambda *a, **k: delay)
    out = cn.gradient_delay(_slice("file"), "warn")
    assert "gradient delay:" in out.notes.get("gradient_delay", "")
    monkeypatch.setattr(cn, "estimate_gradient_delay", lambda *a, **k: delay * 0.01)
    assert "gradient_delay" not in cn.gradient_delay(_slice("file"), "warn").notes


def test_corrected_delay_recomputes_pipe_menon_and_moves_file_weights(monkeypatch):
    delay = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    monkeypatch.setattr(cn, "estimate_gradient_delay", lambda *a, **k: delay)
    s = _slice("pipe_menon")
    out = cn.gradient_delay(s, "correct")
    torch.testing.assert_close(out.density, pipe_menon_density(out.trajectory, (32, 32)).to(
        s.density.dtype))
    f = _slice("file")
    out = cn.gradient_delay(f, "correct")
    torch.testing.assert_close(out.density, cn.delay_density(f.density, f.trajectory, delay))


def test_a_spike_on_a_kspace_axis_is_refused():
    """The exempt centre is the 5 x 5 cells around k = 0 on both axes, not a cross along the
    axes: a spike far out on the kx axis (spoke 0 of a uniform layout runs along it). Two coils,
    so the cross-coil rule (3 or more) cannot catch it instead."""
    n = 32
    vol = simulate_mri_volume(0, slices=1, coils=2, size=(n, n), seed=3)  # < 3: no cross-coil rule
    traj = radial_trajectory(24, 2 * n).double()
    k = nufft_sense(vol.maps.to(torch.complex128), traj, toeplitz=False)(
        vol.image.to(torch.complex128))[0]  # (coils, readouts, samples)
    cn.check_readouts(k, traj, (n, n), "clean")
    assert float(traj[0, 8, 0]) == 0.0 and abs(float(traj[0, 8, 1])) * n > 2.5  # on the kx axis
    k[1, 0, 8] = 10 * float(k.abs().max())
    with pytest.raises(ValueError, match="coil 1, readout 0, sample 8.*a spike"):
        cn.check_readouts(k, traj, (n, n), "x")
