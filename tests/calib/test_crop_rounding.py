"""The ESPIRiT crop safeguard (:func:`mrirecon.calib.centre.safe_crop`) under rounding: the
reproducibility audit's F1. Its threshold sat one float32 ulp below the first kept eigenvalue,
and the eigenvalues (from complex64 kernels) moved by up to 1.8e-5 relative between 1 and 2 CPU
threads: on the audit's slice two pixels 1.8e-6 apart swapped places, the support of the maps
changed, and ``mri_tv``'s image moved by 0.6 % (PSNR 23.7746 against 23.7635 dB)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from mrirecon.calib import centre_maps, centre_window
from mrirecon.calib.centre import EIGENVALUE_ULPS, GAP_PRECISIONS, _band_energy, espirit_block, safe_crop
from mrirecon.calib.espirit import espirit_maps


@pytest.fixture(scope="module")
def audit_file(tmp_path_factory):
    """The audit's data (``mrirecon simulate mri --volumes 1 --slices 2 --coils 4 --size 96 80
    --seed 3 --template-resolution 2 --acceleration 4``): a 7-column centre band."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("audit"), volumes=1, slices=2,
                                   coils=4, size=(96, 80), seed=3, acceleration=4, resolution=2)
    return path


def _band(path):
    from mrirecon.pipeline.stages_mri import acs_width

    with h5py.File(path) as f:
        k, mask = torch.from_numpy(f["kspace"][()]), torch.from_numpy(f["mask"][()]).bool()
    return k, centre_window(mask, min(24, acs_width(mask)))


def test_the_crop_support_does_not_depend_on_threads_or_rounding(audit_file):
    k, band = _band(audit_file)
    got = {}
    for n in (1, 2):
        torch.set_num_threads(n)  # restored by conftest's autouse fixture
        got[n] = centre_maps(k, band, return_crop=True)
    (maps1, crop1), (maps2, crop2) = got[1], got[2]
    assert torch.equal(crop1, crop2) and bool((crop1 < 0.95).all())  # lowered on both slices
    assert torch.equal(maps1.abs().sum(-3) > 0, maps2.abs().sum(-3) > 0)
    # the same maps (the kernels are decomposed in double precision: bit-identical here)
    eps = torch.finfo(torch.float32).eps
    assert float((maps1 - maps2).abs().max()) <= 64 * eps

    # every eigenvalue perturbed by up to 1e-6 relative: the same pixels are cut
    block, kernel = espirit_block(int(band.sum()), k.shape[-2])
    low = k * band
    _, eig = espirit_maps(low, calib_width=block, kernel_width=kernel, thresh=0.02, crop=0.0,
                          return_eigenvalues=True)
    energy = _band_energy(low)
    crop = safe_crop(eig, energy, 0.95, 0.005)
    assert torch.equal(crop, crop1)
    g = torch.Generator().manual_seed(0)
    for _ in range(4):
        noise = 2 * torch.rand(eig.shape, generator=g, dtype=torch.float64) - 1
        moved = (eig.double() * (1 + 1e-6 * noise)).float()
        again = safe_crop(moved, energy, 0.95, 0.005)
        assert torch.equal(moved.double() > again[:, None, None], eig.double() > crop[:, None, None])
    # the crop is a short decimal that, pinned, repeats the cut (no safeguard)
    for s in range(2):
        assert len(repr(float(crop[s]))) <= 9
        pinned = centre_maps(k[s], band, crop=float(crop[s]), max_cropped_energy=None)
        assert torch.equal(pinned.abs().sum(-3) > 0, maps1[s].abs().sum(-3) > 0)


def test_the_audit_slice_gives_the_same_tv_image_at_1_and_2_threads(audit_file, tmp_path):
    """mri_tv on the audit's file: slice 1 moved by 6.1e-3 relative between 1 and 2 threads;
    now the images agree to float32 rounding (here bit for bit)."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    config = load_pipeline("mri_tv", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    images, crops = {}, {}
    for n in (1, 2):
        torch.set_num_threads(n)  # restored by conftest's autouse fixture
        out = tmp_path / f"t{n}"
        assert run_pipeline(config, [str(audit_file)], out, progress=False) == 0
        with h5py.File(next((out / "reconstructions").glob("*.h5"))) as f:
            images[n] = f["reconstruction"][()]
        import json

        entry = json.loads((out / "provenance.json").read_text())["files"][0]
        crops[n] = entry["calibration"]["espirit_crop"]
        assert entry["threads"] == n
    a, b = images[1], images[2]
    # float32 rounding over a solve of ~N pixels: sqrt(N) eps per step, a few hundred steps
    tol = 300 * np.sqrt(a[0].size) * np.finfo(np.float32).eps
    for s in range(a.shape[0]):
        assert np.linalg.norm(a[s] - b[s]) <= tol * np.linalg.norm(a[s])
    assert crops[1] == crops[2] and len(crops[1]) == 2 and max(crops[1]) < 0.95


def test_safe_crop_cuts_only_at_gaps_rounding_cannot_close():
    """Brute force over every boundary of the sorted eigenvalues: the cut fits the share, ends
    at the highest gap wider than GAP_PRECISIONS precisions that fits, and the threshold lies
    at least 3/8 of that gap from both sides; ties are cut together or not at all."""
    g = torch.Generator().manual_seed(0)
    eig = torch.rand(3, 9, 7, generator=g)
    eig[1, :4, :] = 0.5  # a 28-pixel tie
    eig[2, 0, :3] = torch.tensor([0.3, 0.3 + 2e-6, 0.3 + 4e-6])  # closer than the least gap
    energy = torch.rand(3, 9, 7, generator=g) ** 4
    precision = EIGENVALUE_ULPS * torch.finfo(torch.float32).eps
    for share in (0.0, 0.01, 0.2, 0.9):
        got = safe_crop(eig, energy, 0.95, share)
        assert got.dtype == torch.float64 and got.shape == (3,)
        for b in range(3):
            e, w = eig[b].double().ravel(), energy[b].double().ravel()
            v, o = torch.sort(e)
            cum = torch.cumsum(w[o], 0)
            if w[e <= 0.95].sum() <= share * w.sum():
                assert float(got[b]) == 0.95
                continue
            ok = [i for i in range(len(v) - 1) if v[i + 1] - v[i] > GAP_PRECISIONS * precision
                  * v[i + 1] and cum[i] <= share * w.sum()]
            if not ok:
                assert float(got[b]) == 0.0
                continue
            lo, hi = float(v[ok[-1]]), float(v[ok[-1] + 1])
            assert lo + 3 / 8 * (hi - lo) <= float(got[b]) <= hi - 3 / 8 * (hi - lo)
            assert w[e <= got[b]].sum() <= share * w.sum()
    # the three near-equal values of slice 2 are never split
    for share in torch.linspace(0, 0.5, 60).tolist():
        t = float(safe_crop(eig, energy, 0.95, share)[2])
        assert len({bool(x <= t) for x in eig[2, 0, :3].double()}) == 1
    # a crop the share allows comes back as given, exactly (0.95 is not a float32)
    assert safe_crop(eig, torch.zeros_like(energy), 0.95, 0.005).tolist() == [0.95] * 3


def test_safe_crop_counts_an_eigenvalue_equal_to_the_crop_as_cut():
    """Fails if centre.py:173 ``ev <= crop`` -> ``ev < crop``: the maps are cut where
    ``eig <= applied``, so the energy there must stay within the share even when an eigenvalue
    equals the crop exactly."""
    ev = torch.tensor([[[0.25, 0.5], [1.0, 1.0]]], dtype=torch.float32)
    energy = torch.tensor([[[0.001, 10.0], [5.0, 5.0]]], dtype=torch.float32)
    crop, share = 0.5, 0.005
    applied = safe_crop(ev, energy, crop, share)
    cut = (ev.double() <= applied[..., None, None]) * energy.double()
    assert float(cut.sum()) <= share * float(energy.double().sum())
    assert float(applied[0]) < 0.5
