"""Readout oversampling removal in hybrid space (functional.crop_readout, the MRI preprocess
stage): identical images to cropping after the reconstruction, same output layout."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import random_like_shape
from mrirecon.functional import center_crop, crop_readout, ifft2c
from mrirecon.operators import sense


# even lengths take the shift-free path, odd ones the centred one; 34 of 64 starts at an odd row
@pytest.mark.parametrize("shape,rows", [((3, 64, 24), 32), ((2, 40, 18), 20), ((2, 33, 10), 16),
                                        ((2, 64, 8), 34), ((2, 40, 6), 21), ((1, 640, 4), 320)])
def test_crop_readout_is_the_image_crop(shape, rows):
    k = random_like_shape(shape, torch.complex128)
    out = crop_readout(k, rows)
    assert out.shape == (*shape[:-2], rows, shape[-1])
    # orthonormal FFTs: exact up to the rounding of three length-N transforms
    tol = 64 * torch.finfo(torch.float64).eps * np.log2(shape[-2] * shape[-1]) * float(k.abs().max())
    torch.testing.assert_close(ifft2c(out), center_crop(ifft2c(k), (rows, shape[-1])), atol=tol, rtol=0)
    assert crop_readout(k, shape[-2]) is k
    with pytest.raises(ValueError, match="rows"):
        crop_readout(k, shape[-2] + 1)


def test_sense_adjoint_on_cropped_data_is_the_crop_of_the_full_adjoint():
    """A^H y with cropped maps on readout-cropped data = the crop of A^H y on the full grid
    (the linear part of every classical method), so only iterative details can differ."""
    c, h, w, rows = 4, 48, 20, 24
    maps = random_like_shape((c, h, w), torch.complex128)
    mask = torch.rand(w, generator=torch.Generator().manual_seed(0)) < 0.5
    y = random_like_shape((c, h, w), torch.complex128) * mask
    full = sense(maps, mask).H(y)
    small = sense(center_crop(maps, (rows, w)), mask).H(crop_readout(y, rows))
    tol = 64 * torch.finfo(torch.float64).eps * np.log2(h * w) * c * float(y.abs().max() * maps.abs().max())
    torch.testing.assert_close(small, center_crop(full, (rows, w)), atol=tol, rtol=0)


@pytest.fixture(scope="module")
def oversampled(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("os")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=4, size=(32, 32), seed=4, resolution=2,
                         readout_oversampling=2)
    return out


def test_pipeline_removes_oversampling_without_changing_the_result(oversampled, tmp_path):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    fast = ["reconstruct.method=cg_sense", "reconstruct.params={lam: 0.0, iterations: 30}",
            "calibrate.calib_width=12", "calibrate.kernel_width=4",
            "undersample.enabled=true", "undersample.mask=equispaced_fraction",
            "undersample.center_fractions=[0.25]", "undersample.accelerations=[2]",
            "evaluate.enabled=true", "export.formats=[hdf5]", "report.enabled=false"]
    files = sorted(oversampled.glob("*.h5"))
    with h5py.File(files[0], "r") as f:
        assert f["kspace"].shape[-2] == 2 * f["reconstruction_rss"].shape[-2]  # really oversampled
        ref = f["reconstruction_rss"][()]
    recs, nmse = {}, {}
    for remove in (False, True):
        config, text = load_pipeline("mri_cs", fast + [f"preprocess.remove_oversampling={str(remove).lower()}"])
        out = tmp_path / str(remove)
        assert run_pipeline(config, [str(f) for f in files], out, progress=False) == 0
        prov = json.loads((out / "provenance.json").read_text())
        nmse[remove] = prov["files"][0]["metrics"]["nmse"]
        with h5py.File(out / "reconstructions" / f"{files[0].stem}.h5", "r") as h5:
            recs[remove] = h5["reconstruction"][()]
    assert recs[True].shape == recs[False].shape == ref.shape  # same output layout
    # the two agree to within the reconstruction's own error against the reference (they differ
    # only through ESPIRiT maps estimated on different grids), and cropping costs no accuracy
    diff = np.sum((recs[True] - recs[False]) ** 2) / np.sum(ref**2)
    assert diff < max(nmse.values())
    assert nmse[True] < 1.2 * nmse[False]


def test_exported_geometry_follows_the_crop(oversampled, tmp_path):
    """Every voxel of a `fixed` crop, and of the uncropped oversampled image (`crop: none`), is
    written at the world position where the `recon_size` output holds the same value (the
    export kept the recon grid's origin: anatomy 86-154 mm off)."""
    import nibabel as nib

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    fast = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "preprocess.remove_oversampling=false", "export.formats=[nifti]", "report.enabled=false"]
    (path,) = sorted(oversampled.glob("*.h5"))[:1]
    vols = {}
    for crop in ("recon_size", "none", "fixed"):
        config = load_pipeline("mri_cs", fast + [f"postprocess.crop={crop}",
                                                 "postprocess.crop_size=[10,24]"])[0]
        assert run_pipeline(config, [str(path)], tmp_path / crop, progress=False) == 0
        img = nib.load(tmp_path / crop / "nifti" / f"{path.stem}.nii.gz")
        vols[crop] = (np.asarray(img.dataobj, dtype=np.float64), img.affine)
    full, full_affine = vols["recon_size"]
    assert full.size == 2 * 32 * 32
    for crop, (data, affine) in [(c, vols[c]) for c in ("none", "fixed")]:
        assert data.shape != full.shape
        idx = np.indices(data.shape).reshape(3, -1)
        world = affine[:3, :3] @ idx + affine[:3, 3:]
        back = np.linalg.solve(full_affine[:3, :3], world - full_affine[:3, 3:])
        assert np.abs(back - np.round(back)).max() < 1e-6  # on the same grid
        back = np.round(back).astype(int)
        inside = np.all((back >= 0) & (back < np.array(full.shape)[:, None]), axis=0)
        assert inside.sum() == min(data.size, full.size)  # the overlap is the smaller grid
        np.testing.assert_array_equal(data.reshape(-1)[inside], full[tuple(back[:, inside])])
