"""Scanner faults inside valid fastMRI files (the s18 scanner-data audit): a receiver DC offset
in one coil, a spike at or beside DC in one coil, a partial echo stored as zero readout rows.
Each was exit 0 with no word (or a misleading one); each is now named, and the offset and the
echo are handled as the data mean them."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.functional import fft2c, ifft2c
from mrirecon.pipeline.checks_mri import (CROSS_COIL_SPIKE_RATIO, DC_OFFSET_NOISE, check_kspace,
                                          coil_warnings, dc_offsets, remove_dc_offsets,
                                          removable_dc_offsets)
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import clone_h5, read_kspace, simulated_volume


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return simulated_volume(tmp_path_factory.mktemp("mri"), coils=8)


def _noise_std(k: np.ndarray) -> float:
    """Per-component std of the outer 8 readout rows (noise, nearly)."""
    edge = np.concatenate([k[..., :8, :].ravel(), k[..., -8:, :].ravel()])
    return float(np.sqrt(np.mean(np.abs(edge) ** 2) / 2))


def _run(path: Path, tmp_path: Path, *extra: str, pipeline: str = "mri_cs") -> tuple[dict, np.ndarray]:
    config = load_pipeline(pipeline, ["export.formats=[hdf5]", "report.enabled=false",
                                      "undersample.enabled=true", "undersample.seed=fixed",
                                      *extra])[0]
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    run_pipeline(config, [str(path)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    if entry["status"] != "ok":
        return entry, None
    with h5py.File(out / "reconstructions" / f"{path.stem}.h5") as f:
        return entry, f["reconstruction"][()]


# ---- a receiver DC offset ------------------------------------------------------------------


def test_a_dc_offset_in_one_coil_is_named_and_subtracted(clean, tmp_path):
    """5x the noise std added to every sample of coil 4 (an uncorrected ADC offset): was exit 0
    with no word and a bright dot at the FOV centre (mri_cs 29.4 -> 3.0 dB on 128 x 128)."""
    k0 = read_kspace(clean)
    sigma = _noise_std(k0)
    k = k0.copy()
    k[:, 4] += 5 * sigma * (1 + 1j) / np.sqrt(2)
    offsets, size = dc_offsets(torch.from_numpy(k[0]))
    assert (offsets != 0).nonzero().flatten().tolist() == [4]
    # the std of the outer rows holds a little object signal besides the noise: 4-5, not 5
    assert 3.5 < float(size[4]) <= 5.0 * 1.05
    # the estimate's error is that of a mean of ~2 * 8 * 48 samples: a few % of sigma
    n = 2 * (64 // 8) * 48
    est = complex(offsets[4])
    assert abs(est - 5 * sigma * (1 + 1j) / np.sqrt(2)) < 5 * sigma * (2 / n) ** 0.5 + 0.2 * sigma
    fixed = remove_dc_offsets(torch.from_numpy(k[0]))
    assert torch.equal(fixed[:4], torch.from_numpy(k[0][:4]))  # the other coils untouched
    # the dot: the zero-filled coil image's centre pixel, before and after
    dot = lambda x: float(ifft2c(x)[4, 32, 24].abs())  # noqa: E731
    before, clean_dot = dot(torch.from_numpy(k[0])), dot(torch.from_numpy(k0[0]))
    assert before > 10 * clean_dot
    # what is left is the estimate's error times sqrt(H W): under a tenth of the dot
    assert abs(dot(fixed) - clean_dot) < 0.1 * (before - clean_dot)
    (msg,) = coil_warnings(torch.from_numpy(k[0])).values()
    assert "1 of 8 coils hold a receiver DC offset" in msg and "coil 4: " in msg
    assert "bright dot at the centre of the field of view" in msg
    assert "estimated there and subtracted" in msg
    entry_clean, clean_img = _run(clean, tmp_path)
    entry, img = _run(clone_h5(clean, tmp_path / "dc.h5", kspace=k), tmp_path)
    assert entry["status"] == "ok" and not any("DC offset" in w for w in entry_clean["warnings"])
    (w,) = [w for w in entry["warnings"] if "DC offset" in w]
    assert w.startswith("dc.h5: all 2 slices: 1 of 8 coils hold a receiver DC offset")
    assert abs(entry["metrics"]["psnr"] - entry_clean["metrics"]["psnr"]) < 0.05


def test_a_constant_in_most_coils_is_named_but_not_subtracted(clean):
    """A constant in k-space is also a point-like object at the exact centre of the FOV, which
    every coil sees through its sensitivity: where most coils hold one (here a bright point seen
    by all 8 coils, and offsets in 5 of 8) nothing is subtracted, and the warning says why (the
    3-coil TOF slab of test_io_ismrmrd lost its centre profile to the subtraction)."""
    k0 = read_kspace(clean)[0]
    sigma = _noise_std(k0[None])
    centre = ifft2c(torch.from_numpy(k0))[:, 32, 24]  # each coil's sensitivity-weighted centre
    point = (20 * sigma * centre / centre.abs().max()).numpy()
    for k, flagged in ((k0 + point[:, None, None], 8),
                       (k0 + np.where(np.arange(8) < 5, 5 * sigma, 0)[:, None, None], 5)):
        k = torch.from_numpy(np.where(k0 != 0, k, 0))
        offsets, _, subtract = removable_dc_offsets(k)
        assert int((offsets != 0).sum()) >= flagged - 1 and not subtract
        assert torch.equal(remove_dc_offsets(k), k)
        (msg,) = coil_warnings(k).values()
        assert "it was not subtracted" in msg and "point-like bright structure" in msg


@pytest.mark.parametrize("size,coils,snr,acc,seed", [((64, 48), 4, 15.0, None, 4),
                                                     ((96, 80), 8, 40.0, None, 5),
                                                     ((64, 48), 4, 30.0, 4, 10),
                                                     ((128, 128), 8, 20.0, 8, 11)])
def test_clean_simulated_files_hold_no_dc_offset(tmp_path, size, coils, snr, acc, seed):
    """15-40 dB, fully sampled and fastMRI-style 4x / 8x files: the largest estimate was 0.23
    noise std (8x: the object's k-space in fewer columns), below DC_OFFSET_NOISE."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=2, coils=coils, size=size,
                                   seed=seed, snr_db=snr, acceleration=acc)
    for k in read_kspace(path):
        offsets, size_ = dc_offsets(torch.from_numpy(k))
        assert not bool((offsets != 0).any()) and float(size_.max()) < DC_OFFSET_NOISE / 2
        assert "dc_offset" not in coil_warnings(torch.from_numpy(k))


# ---- a spike at or beside DC ---------------------------------------------------------------


@pytest.mark.parametrize("factor", [10.0, 30.0, 1000.0])
@pytest.mark.parametrize("dr,dc", [(0, 0), (1, 0), (0, 1), (2, 2)])
def test_a_one_coil_spike_at_or_beside_dc_is_refused(clean, factor, dr, dc):
    """The readout neighbours of DC are large, so a spike there stood only 50-3000x them
    (the centre's bar is 1e4x): exit 0 at -12 to -33 dB, blamed on a mis-scaled coil or on the
    solver. Compared with the other coils at the same position it stands out."""
    k = torch.from_numpy(read_kspace(clean)[0])
    h, w = k.shape[-2:]
    k[3, h // 2 + dr, w // 2 + dc] = factor * k.abs().max()
    with pytest.raises(ValueError, match=rf"sample \(coil 3, row {h // 2 + dr}, column "
                                         rf"{w // 2 + dc}\) is .*a spike"):
        check_kspace(k, "x")


def test_a_spike_beside_dc_is_refused_by_the_pipeline(clean, tmp_path):
    k = read_kspace(clean)
    k[0, 3, 33, 24] = 10 * np.abs(k).max()
    entry, _ = _run(clone_h5(clean, tmp_path / "spk.h5", kspace=k), tmp_path)
    assert entry["status"] == "failed"
    assert "spk.h5: slice 0: k-space sample (coil 3, row 33, column 24)" in entry["error"]
    assert "the other coils' median there" in entry["error"] and "a spike" in entry["error"]


@pytest.mark.parametrize("size,coils,snr,acc,seed", [((128, 128), 8, 15.0, None, 4),
                                                     ((64, 48), 4, 30.0, 4, 10),
                                                     ((128, 128), 8, None, None, 9),
                                                     ((128, 128), 8, 30.0, None, 2026)])
def test_clean_files_and_a_flat_disc_are_no_spike(tmp_path, size, coils, snr, acc, seed):
    """Clean simulated brains (the demo's seed 2026 among them): their central samples above half
    the k-space maximum stand at most 2.9x the other coils' median; a uniform disc (DC-dominant)
    under smooth coils is no spike either."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.checks_mri import cross_coil_ratio

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=2, coils=coils, size=size,
                                   seed=seed, snr_db=snr, acceleration=acc)
    for k in read_kspace(path):
        k = torch.from_numpy(k)
        check_kspace(k, "x")
        h, w = k.shape[-2:]
        centre = k[:, h // 2 - 2: h // 2 + 3, w // 2 - 2: w // 2 + 3].abs()
        ratio = cross_coil_ratio(centre)
        big = centre > 0.5 * k.abs().max()  # the samples the spike rule's other bar lets through
        assert float(ratio[big].max()) < CROSS_COIL_SPIKE_RATIO / 1.5  # measured <= 2.9
    y, x = torch.meshgrid(torch.linspace(-1, 1, 64), torch.linspace(-1, 1, 64), indexing="ij")
    disc = (x ** 2 + y ** 2 < 0.8).to(torch.complex64)
    angles = torch.arange(8) * (2 * torch.pi / 8)
    maps = torch.stack([torch.exp(-((x - 0.9 * torch.cos(a)) ** 2 + (y - 0.9 * torch.sin(a)) ** 2))
                        * torch.exp(1j * a) for a in angles]).to(torch.complex64)
    check_kspace(fft2c(maps * disc), "disc")


def test_a_spike_at_every_coils_dc_is_still_refused(clean):
    k = torch.from_numpy(read_kspace(clean)[0])
    k[:, 32, 24] = 1e9  # all coils alike: no coil stands out, the readout neighbours' rule holds
    with pytest.raises(ValueError, match=r"is 1e\+09, .*x its readout neighbours"):
        check_kspace(k, "x")


# ---- a partial echo stored as zero rows ----------------------------------------------------


def test_a_fastmri_partial_echo_is_treated_as_the_ismrmrd_one(clean, tmp_path):
    """The same asymmetric echo (the first 16 of 64 readout samples never sampled), as ISMRMRD
    (center_sample says so) and as a fastMRI file (the rows zero in every coil): the fastMRI copy
    was taken as measured zeros without a word (mri_tv 28.8 against 32.6 dB on 128 x 128)."""
    pytest.importorskip("ismrmrd")
    from tests.helpers import fastmri_to_ismrmrd

    (tmp_path / "ism").mkdir()
    (tmp_path / "fm").mkdir()
    fastmri_to_ismrmrd(clean, tmp_path / "ism" / "scan.h5", first_sample=16)
    k = read_kspace(clean)
    k[..., :16, :] = 0
    fm = clone_h5(clean, tmp_path / "fm" / "scan.h5", kspace=k)
    cg = ["reconstruct.method=cg_sense", "reconstruct.params={lam: 0.0, iterations: 20}"]
    e_ism, x_ism = _run(tmp_path / "ism" / "scan.h5", tmp_path, *cg)
    e_fm, x_fm = _run(fm, tmp_path, *cg)
    (w_ism,) = [w for w in e_ism["warnings"] if "partial echo" in w]
    (w_fm,) = [w for w in e_fm["warnings"] if "partial echo" in w]
    assert "readout samples 16..63 of 64 hold data (16 never sampled)" in w_fm
    assert w_fm.split(": ", 1)[1] == w_ism.split(": ", 1)[1]  # the same words, file aside
    scale = float(np.abs(x_ism).max())
    assert float(np.abs(x_fm - x_ism).max()) < 1e-3 * scale  # float32 solves of one problem
    # zero rows on both sides (zero padding) or too few are no partial echo
    from mrirecon.pipeline.sampling_mri import zero_rows_echo
    from mrirecon.io import FastMRIFile

    with FastMRIFile(clean) as f:
        header = f.read_slice(0).header
    both = torch.from_numpy(read_kspace(clean)[0])
    both[..., :8, :] = 0
    both[..., -8:, :] = 0
    assert zero_rows_echo(header, both) is header
    one = torch.from_numpy(read_kspace(clean)[0])
    one[..., :1, :] = 0  # 1 of 64 rows: below max(2, 5 %)
    assert zero_rows_echo(header, one) is header
