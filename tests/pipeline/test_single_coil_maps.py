"""fastMRI single-coil data through ``mrirecon run`` (audit c4): the one coil's map is 1.

ESPIRiT ran on the one coil with the pipelines' crop (0.95): a fully sampled slice reconstructed
with a negligible ``lam`` came back as 0.955-1.05 of its ``reconstruction_esc`` inside the object
with the background zeroed (41 dB against its own target), where the benchmark's single-coil
challenge (unit maps) gave the target; every file was warned that ESPIRiT's 6 x 1 kernels
amplify noise; and ``calibrate.method: none`` left an operator method no map at all ("needs coil
maps"). One coil's image is the coil's own: its map is 1 whatever ``calibrate`` says.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mrirecon.containers import Header
from mrirecon.functional import center_crop, fft2c, ifft2c
from mrirecon.io import write_fastmri
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

H, W, RECON = 64, 48, (32, 32)
FAST = ["report.enabled=false", "export.formats=[hdf5]"]


@pytest.fixture(scope="module")
def esc_file(tmp_path_factory):
    """A fully sampled single-coil volume (2 slices, 2x readout oversampling) with its ESC target
    (the cropped magnitude of the k-space's image), and a little noise in the background."""
    yy, xx = np.mgrid[-1:1:H * 1j, -1:1:W * 1j]
    obj = ((xx / 0.7) ** 2 + (yy / 0.4) ** 2 < 1) * (1.0 + 0.5 * ((xx - 0.2) ** 2 + yy ** 2 < 0.02))
    img = np.stack([obj * np.exp(1j * (0.4 * xx + 0.3 * yy + s)) for s in range(2)]) * 1e-4
    k = fft2c(torch.from_numpy(img))
    k = k + 1e-8 * torch.randn(k.shape, dtype=k.dtype, generator=torch.Generator().manual_seed(0))
    k = k.to(torch.complex64)
    target = center_crop(ifft2c(k).abs(), RECON)
    header = Header(encoded_matrix=(H, W, 1), recon_matrix=(*RECON, 1), acquisition="CORPD_FBK")
    path = tmp_path_factory.mktemp("esc") / "file1000001.h5"
    write_fastmri(path, k, header, reference={"reconstruction_esc": target})
    return path


def _run(path, tmp_path, name, sets):
    config = load_pipeline(name, [*FAST, *sets])[0]
    assert run_pipeline(config, [str(path)], tmp_path / "o", progress=False) == 0
    with h5py.File(tmp_path / "o" / "reconstructions" / path.name, "r") as f:
        return f["reconstruction"][()]


@pytest.mark.parametrize("calibrate", ["espirit", "walsh", "none"])
def test_a_fully_sampled_single_coil_slice_gives_its_esc_target(esc_file, tmp_path, calibrate,
                                                                caplog):
    """CG-SENSE of a fully sampled single-coil slice is the coil's image: its ESC target to
    float32 precision (the solve's tolerance), background included, whatever calibrate says."""
    out = _run(esc_file, tmp_path, "mri_cs", [
        f"calibrate.method={calibrate}", "reconstruct.method=cg_sense", "reconstruct.params={}",
        "reconstruct.params_by_acceleration={}"])
    with h5py.File(esc_file, "r") as f:
        target = f["reconstruction_esc"][()]
    scale = float(np.abs(target).max())
    tol = 1e3 * float(np.finfo(np.float32).eps)  # CG's stopping rule in float32, not the digits
    np.testing.assert_allclose(out, target, atol=tol * scale, rtol=0)
    background = target < 0.01 * scale
    assert float(out[background].mean()) > 0.5 * float(target[background].mean())  # not zeroed
    assert not any("ESPIRiT" in r.getMessage() for r in caplog.records), caplog.text


def test_zero_filled_with_calibrate_none_runs_on_one_coil(esc_file, tmp_path):
    """``calibrate.method: none`` with an operator method was refused ("needs coil maps") on data
    with one coil, which need none."""
    out = _run(esc_file, tmp_path, "mri_cs", [
        "calibrate.method=none", "reconstruct.method=zero_filled", "reconstruct.params={}",
        "reconstruct.params_by_acceleration={}"])
    with h5py.File(esc_file, "r") as f:
        target = f["reconstruction_esc"][()]
    np.testing.assert_allclose(out, target, rtol=10 * float(np.finfo(np.float32).eps),
                               atol=10 * float(np.finfo(np.float32).eps) * float(target.max()))
