"""Simulated MRI (fastMRI layout) and CT (LoDoPaB layout) datasets from the allowed anatomy."""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage

from mrirecon.data.anatomy import (
    CONTRASTS,
    load_mni_brain,
    random_ellipses_hu,
    shepp_logan,
    tissue_image,
)
from mrirecon.data.simulate_mri import (
    ORIENTATIONS,
    birdcage_maps,
    simulate_mri_dataset,
    simulate_mri_volume,
)
from mrirecon.functional import center_crop, ifft2c, rss
from mrirecon.io.ct_sources import CT_SOURCES, load_ct_sources, read_ct_slices
from mrirecon.io.fastmri import read_fastmri
from mrirecon.io.ismrmrd_header import parse_ismrmrd_header

SMALL = dict(slices=2, coils=(3, 5), size=(24, 20), readout_oversampling=2)


def _datasets(path):
    with h5py.File(path, "r") as h5:
        return {k: h5[k][()] for k in h5.keys()}, dict(h5.attrs)


@pytest.fixture(scope="module")
def mri_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim_mri")
    return simulate_mri_dataset(out, volumes=2, seed=7, snr_db=25.0, **SMALL)


# ---- anatomy -------------------------------------------------------------------------------


def test_mni_tissue_maps_are_fractions():
    brain = load_mni_brain(1)
    total = brain.gm + brain.wm + brain.csf
    assert brain.t1.shape == (197, 233, 189)
    assert total.max() <= 1 + 1e-5 and min(brain.gm.min(), brain.wm.min(), brain.csf.min()) >= 0
    # CSF fills the lateral ventricles (MNI x = +-10, y = -10, z = 20 mm), dark on T1
    for x in (-10, 10):
        ijk = tuple(np.round(np.linalg.inv(brain.affine) @ [x, -10, 20, 1])[:3].astype(int))
        assert brain.csf[ijk] > 0.8 and brain.t1[ijk] < 0.4
    lower, upper = brain.brain_extent_mm()
    assert np.all(upper - lower > [120, 150, 120])


def test_tissue_contrasts_order_csf_correctly():
    gm, wm, csf, zero = (
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        np.array([0, 0, 1.0]),
        np.zeros(3),
    )
    t2 = tissue_image("T2", zero, gm, wm, csf, zero, zero)
    flair = tissue_image("FLAIR", zero, gm, wm, csf, zero, zero)
    assert t2[2] > t2[0] > t2[1]  # CSF bright, GM > WM on T2
    assert flair[2] < flair[1] < flair[0]  # CSF nulled on FLAIR
    with pytest.raises(ValueError, match="unknown contrast 'T3'"):
        tissue_image("T3", zero, gm, wm, csf, zero, zero)


def test_shepp_logan_matches_sigpy_and_ellipses_are_hu():
    import sigpy

    np.testing.assert_array_equal(shepp_logan((32, 32)), np.real(sigpy.shepp_logan((32, 32))))
    img = random_ellipses_hu((64, 64), np.random.default_rng(0))
    assert img[0, 0] == -1000 and -200 < np.median(img[24:40, 24:40]) < 1500


def test_ct_sources_match_pydicom_modality_lut():
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut

    slices = load_ct_sources()
    assert [s.name for s in slices] == [
        CT_SOURCES[0],
        CT_SOURCES[1],
        CT_SOURCES[1],
        CT_SOURCES[2],
        CT_SOURCES[3],
    ]
    for s in slices:
        assert s.values.dtype == np.float32 and s.values.min() >= -1024 and s.values.max() <= 3071
        assert 0.2 < s.pixel_spacing[0] < 1.0
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    expected = np.clip(apply_modality_lut(ds.pixel_array, ds), -1024, 3071)
    np.testing.assert_array_equal(read_ct_slices("CT_small.dcm")[0].hu, expected.astype(np.float32))
    assert slices[0].pixel_spacing == (0.661468, 0.661468)
    with pytest.raises(ValueError, match="not an allowed CT source"):
        read_ct_slices("MR_small.dcm")


# ---- MRI -----------------------------------------------------------------------------------


def test_birdcage_matches_sigpy_and_has_unit_sum_of_squares():
    import sigpy.mri

    nc, ny, nx = 6, 24, 32
    y, x = np.mgrid[:ny, :nx]
    ours = birdcage_maps(nc, (x - nx / 2) / (nx / 2), (y - ny / 2) / (ny / 2), radius=1.5)
    np.testing.assert_allclose(ours, sigpy.mri.birdcage_maps((nc, ny, nx), r=1.5), atol=1e-12)
    rotated = birdcage_maps(nc, (x - nx / 2) / (nx / 2), (y - ny / 2) / (ny / 2), 0.3, 1.4, 0.7)
    np.testing.assert_allclose(np.sum(np.abs(rotated) ** 2, axis=0), 1.0, atol=1e-12)
    assert not np.allclose(np.abs(rotated), np.abs(ours))


def test_mri_file_layout_and_reference(mri_files):
    assert len(mri_files) == 2
    for path in mri_files:
        data, attrs = _datasets(path)
        k = data["kspace"]
        assert (
            k.dtype == np.complex64 and k.ndim == 4 and k.shape[0] == 2 and k.shape[2:] == (48, 20)
        )
        assert 3 <= k.shape[1] <= 5
        ref = data["reconstruction_rss"]
        assert ref.dtype == np.float32 and ref.shape == (2, 24, 20)
        expected = center_crop(
            rss(ifft2c(torch.from_numpy(k).to(torch.complex128)), dim=-3), (24, 20)
        )
        np.testing.assert_allclose(ref, expected.numpy(), rtol=1e-6, atol=1e-6 * float(ref.max()))
        assert attrs["acquisition"] == path.name.split("_")[2]
        assert attrs["max"] == pytest.approx(float(ref.max()))
        assert attrs["norm"] == pytest.approx(
            float(np.linalg.norm(ref.astype(np.float64))), rel=1e-6
        )
        assert len(attrs["patient_id"]) == 64
        params = json.loads(attrs["simulation"])
        assert params["coils"] == k.shape[1]
        assert attrs["acquisition"].startswith(
            {"axial": "AX", "coronal": "COR", "sagittal": "SAG"}[params["orientation"]]
        )
        assert attrs["acquisition"].endswith(params["contrast"])


def test_mri_header_is_consistent_with_the_data(mri_files):
    for path in mri_files:
        data, attrs = _datasets(path)
        header = parse_ismrmrd_header(data["ismrmrd_header"])
        params = json.loads(attrs["simulation"])
        px, ds = params["pixel_mm"], params["slice_spacing_mm"]
        _, coils, h_enc, w = data["kspace"].shape
        assert header.encoded_matrix == (h_enc, w, 1) and header.recon_matrix == (24, 20, 1)
        np.testing.assert_allclose(header.encoded_fov_mm, (h_enc * px, w * px, ds))
        np.testing.assert_allclose(header.recon_fov_mm, (24 * px, 20 * px, ds))
        assert header.num_coils == coils and (header.padding_left, header.padding_right) == (0, w)
        g = header.geometry
        np.testing.assert_allclose(g.spacing, (ds, px, px))
        step = np.subtract(g.slice_position(1), g.slice_position(0))
        np.testing.assert_allclose(np.linalg.norm(step), ds, rtol=1e-9)
        # the orientation is the named one rotated in-plane: the slice normal is unchanged
        r0, c0 = ORIENTATIONS[params["orientation"]]
        np.testing.assert_allclose(np.abs(g.slice_direction), np.abs(np.cross(r0, c0)), atol=1e-9)
        assert read_fastmri(path).header == header


def test_header_geometry_locates_the_template_anatomy():
    """Sampling the T1 template at the header's pixel positions reproduces the written image."""
    vol = simulate_mri_volume(
        3,
        slices=2,
        coils=2,
        size=(32, 28),
        seed=1,
        snr_db=None,
        contrasts="T1",
        deformation_mm=0.0,
        bias=0.0,
        phase_rad=0.0,
    )
    g, brain = vol.header.geometry, load_mni_brain(1)
    rows, cols = np.mgrid[:32, :28]
    positions = []
    for s in range(2):
        p = (
            np.array(g.slice_position(s))
            + rows[..., None] * g.spacing[1] * g.column_direction
            + cols[..., None] * g.spacing[2] * g.row_direction
        )
        positions.append(p)
    ras = np.stack(positions) * np.array([-1.0, -1.0, 1.0])
    ijk = (ras - brain.affine[:3, 3]) @ np.linalg.inv(brain.affine[:3, :3]).T
    expected = ndimage.map_coordinates(brain.t1, np.moveaxis(ijk, -1, 0), order=1)
    got = center_crop(vol.image.abs(), (32, 28)).numpy()
    inside = expected > 0.05
    assert inside.mean() > 0.2
    corr = np.corrcoef(got[inside], expected[inside])[0, 1]
    assert corr > 0.99
    # a one-slice shift of the geometry is clearly worse
    shifted = ndimage.map_coordinates(
        brain.t1, np.moveaxis(ijk + 2 * g.slice_direction * [-1, -1, 1], -1, 0), order=1
    )
    assert np.corrcoef(got[inside], shifted[inside])[0, 1] < corr - 0.01


@pytest.mark.parametrize("orientation", list(ORIENTATIONS))
def test_non_square_matrix_keeps_the_whole_head_in_view(orientation):
    """A fastMRI-shaped matrix (640 x 368, here at a quarter of the pixels over the same field of
    view) covers the head as a scanner's FOV does: nothing of it touches the image border."""
    vol = simulate_mri_volume(0, slices=3, coils=2, size=(160, 92), seed=5, snr_db=None,
                              orientations=[orientation], resolution=2)
    head = vol.image.abs()
    peak = float(head.max())
    g = vol.header.geometry
    # the template ends at the neck, which leaves any FOV along superior-inferior (LPS z) as
    # on a scanner; left-right and anterior-posterior must be covered
    edges = []
    if abs(g.column_direction[2]) < 0.7:  # rows run along L-R or A-P: first and last row
        edges += [head[:, 0], head[:, -1]]
    if abs(g.row_direction[2]) < 0.7:
        edges += [head[:, :, 0], head[:, :, -1]]
    assert edges
    border = torch.cat(edges, dim=-1)
    assert float(border.max()) < 0.02 * peak
    # and the head fills a sensible part of the shorter axis (not a tiny head in a huge FOV)
    extent = (head > 0.05 * peak).any(dim=1).sum(dim=-1).max()
    assert int(extent) > 0.5 * head.shape[-1]


def test_coil_maps_unit_sum_of_squares_and_snr():
    kw = dict(slices=2, coils=6, size=(32, 32), seed=11, contrasts="PD")
    noisy = simulate_mri_volume(0, snr_db=20.0, **kw)
    clean = simulate_mri_volume(0, snr_db=None, **kw)
    torch.testing.assert_close(noisy.maps, clean.maps, rtol=0, atol=0)
    torch.testing.assert_close(noisy.image, clean.image, rtol=0, atol=0)
    sos = torch.sum(noisy.maps.abs() ** 2, dim=1)
    torch.testing.assert_close(sos, torch.ones_like(sos), rtol=0, atol=1e-12)
    kc = clean.kspace.to(torch.complex128)
    noise = noisy.kspace.to(torch.complex128) - kc
    snr = 10 * math.log10(float(torch.mean(kc.abs() ** 2)) / float(torch.mean(noise.abs() ** 2)))
    assert snr == pytest.approx(20.0, abs=0.15)
    # noise is white complex Gaussian: real and imaginary parts have equal variance
    assert float(noise.real.var() / noise.imag.var()) == pytest.approx(1.0, abs=0.1)


def test_mri_same_seed_same_bytes_any_thread_count(tmp_path, mri_files):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)  # a different count than the fixture
        again = simulate_mri_dataset(tmp_path / "a", volumes=2, seed=7, snr_db=25.0, **SMALL)
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in again] == [p.name for p in mri_files]
    for p, q in zip(mri_files, again):
        (d1, a1), (d2, a2) = _datasets(p), _datasets(q)
        for key in ("kspace", "reconstruction_rss", "ismrmrd_header"):
            assert np.asarray(d1[key]).tobytes() == np.asarray(d2[key]).tobytes(), key
        assert a1 == a2
    other = simulate_mri_dataset(tmp_path / "b", volumes=1, seed=8, snr_db=25.0, **SMALL)
    assert _datasets(other[0])[0]["kspace"].shape != _datasets(mri_files[0])[0][
        "kspace"
    ].shape or not np.array_equal(
        _datasets(other[0])[0]["kspace"], _datasets(mri_files[0])[0]["kspace"]
    )


def test_volumes_vary_and_choices_cycle():
    vols = [
        simulate_mri_volume(
            i,
            slices=1,
            coils=2,
            size=(16, 16),
            seed=5,
            snr_db=None,
            contrasts=["T2", "FLAIR"],
            orientations=["axial", "sagittal"],
        )
        for i in range(3)
    ]
    assert [v.header.acquisition for v in vols] == ["AXT2", "SAGFLAIR", "AXT2"]
    assert vols[0].parameters["slab_offset_mm"] != vols[2].parameters["slab_offset_mm"]
    assert not torch.allclose(vols[0].image, vols[2].image)
    assert set(CONTRASTS) == {"T1", "T2", "PD", "FLAIR"}


@pytest.mark.parametrize("trajectory", ["cartesian", "radial"])
def test_the_files_written_are_the_names_checked_before_simulating(trajectory, tmp_path,
                                                                   monkeypatch):
    """The datasets drew each file's name twice: once (volume_acquisition) for the names the
    stale-files check guards, again from the simulated volume's header for the file written.
    The list drawn first is now the only source; here it is made to differ from the header's
    draw, and the files written follow it."""
    from mrirecon.data import simulate_mri as sim_mri
    from mrirecon.data import simulate_noncartesian as sim_nc

    module = sim_mri if trajectory == "cartesian" else sim_nc
    monkeypatch.setattr(module, "volume_acquisition", lambda i, *args: f"AXTEST{i}")
    small = dict(volumes=2, slices=1, coils=1, size=(12, 12), seed=3, resolution=2)
    if trajectory == "cartesian":
        paths = sim_mri.simulate_mri_dataset(tmp_path, **small)
        tail = ""
    else:
        paths = sim_nc.simulate_noncartesian_dataset(tmp_path, trajectory, readouts=8, **small)
        tail = f"_{trajectory}"
    expected = [f"file_brain_AXTEST{i}_sim3_{i:04d}{tail}.h5" for i in range(2)]
    assert [p.name for p in paths] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


def test_accelerated_files_look_like_fastmri_test_files(tmp_path):
    paths = simulate_mri_dataset(
        tmp_path, volumes=1, slices=1, coils=2, size=(16, 32), seed=2, acceleration=4
    )
    data, attrs = _datasets(paths[0])
    mask = data["mask"]
    assert mask.shape == (32,) and mask.dtype == bool
    assert attrs["acceleration"] == 4.0 and attrs["num_low_frequency"] == round(32 * 0.08)
    assert 32 / 4 - 2 <= mask.sum() <= 32 / 4 + 3
    assert mask[16] and np.all(data["kspace"][..., ~mask] == 0)
    assert np.all(np.abs(data["kspace"][..., mask]).sum(axis=(0, 1, 2)) > 0)
    assert read_fastmri(paths[0]).mask is not None


@pytest.mark.parametrize("acc, mask_type", [(100, "equispaced_fraction"), (16, "random"),
                                           (32, "equispaced_fraction"),
                                           (16, "equispaced_fraction")])
def test_a_too_high_acceleration_is_refused_before_any_volume_naming_one_that_passes(
        tmp_path, monkeypatch, acc, mask_type):
    """--acceleration 100 on 32 columns said "use at most 32"; 32 (and 16) were then refused
    ("keeps 1 of 32 k-space columns; at least 3 ... are needed"), and only after volume 0 had
    been simulated. The value printed now passes, and nothing is simulated first."""
    import re

    import mrirecon.data.simulate_mri as sim

    made = []
    volume = sim.simulate_mri_volume
    monkeypatch.setattr(sim, "simulate_mri_volume",
                        lambda *a, **k: made.append(a) or volume(*a, **k))
    small = dict(volumes=2, slices=1, coils=2, size=(8, 32), seed=2, mask_type=mask_type)
    with pytest.raises(ValueError, match=r"use at most \d+") as err:
        simulate_mri_dataset(tmp_path / "a", acceleration=acc, **small)
    assert made == [] and not (tmp_path / "a").exists()
    most = int(re.search(r"use at most (\d+)", str(err.value)).group(1))
    assert 2 <= most < acc
    paths = simulate_mri_dataset(tmp_path / "b", acceleration=most, **small)
    assert all(_datasets(p)[0]["mask"].sum() >= 3 for p in paths)
    with pytest.raises(ValueError, match="keeps [012] of 32"):
        simulate_mri_dataset(tmp_path / "c", acceleration=most + 1, **small)


def test_mri_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="size"):
        simulate_mri_volume(0, size=(0, 8))
    with pytest.raises(ValueError, match="unknown contrast 'T5'"):
        simulate_mri_volume(0, size=(8, 8), contrasts="T5")
    with pytest.raises(ValueError, match="acceleration"):
        simulate_mri_dataset(tmp_path, volumes=1, size=(8, 8), acceleration=0.5)
    with pytest.raises(ValueError, match="seed"):
        simulate_mri_volume(0, size=(8, 8), seed=-1)


@pytest.mark.parametrize("snr_db", [400.0, -400.0, 4000.0, -4000.0, float("nan")])
def test_an_snr_float32_cannot_hold_is_refused(snr_db):
    """Beyond +-138 dB one of signal and noise is below float32's rounding of the other: at 400
    dB the k-space came back without a sample changed by the noise, attrs saying 400 dB; at
    -400 dB it was pure noise; 4000 / -4000 dB failed with a bare OverflowError /
    ZeroDivisionError."""
    with pytest.raises(ValueError, match=r"simulate_mri: snr_db must be None or within \+-138 dB"):
        simulate_mri_volume(0, slices=1, coils=2, size=(8, 8), snr_db=snr_db)


def test_the_snr_limit_is_where_float32_still_holds_the_noise():
    """At the limit the noise's RMS, 10^(-138/20) of the signal's, is still above float32's
    relative spacing (2^-23), so it changes nearly every k-space sample."""
    from mrirecon.data.simulate_mri import SNR_DB_LIMIT

    assert 10 ** (-SNR_DB_LIMIT / 20) > np.finfo(np.float32).eps
    kw = dict(slices=1, coils=2, size=(16, 16), seed=0)
    clean = simulate_mri_volume(0, snr_db=None, **kw).kspace
    noisy = simulate_mri_volume(0, snr_db=SNR_DB_LIMIT, **kw).kspace
    assert (noisy != clean).float().mean() > 0.9


# ---- CT ------------------------------------------------------------------------------------

ct = pytest.importorskip("mrirecon.operators.ct", reason="CT projector not available")


def test_ct_attenuation_hu_and_poisson_statistics():
    from mrirecon.data.simulate_ct import simulate_ct_samples

    kw = dict(samples=3, geometry="parallel", views=24, size=32, seed=4, fov_mm=200.0)
    noisy = simulate_ct_samples(photons=2e4, **kw)
    clean = simulate_ct_samples(photons=None, **kw)
    np.testing.assert_array_equal(noisy.hu, clean.hu)
    np.testing.assert_array_equal(noisy.clean, clean.sinogram)
    # HU -> attenuation
    np.testing.assert_allclose(noisy.attenuation, np.maximum(0.0192 * (1 + noisy.hu / 1000), 0))
    # the clean sinogram is the operator applied to the attenuation
    op = ct.ct_operator(noisy.geometry)
    expected = op(torch.from_numpy(noisy.attenuation)).double().numpy()
    np.testing.assert_allclose(noisy.clean, expected, rtol=1e-6, atol=1e-9)
    # Poisson model: standardised counts have mean 0 and variance 1
    lam = 2e4 * np.exp(-noisy.clean)
    counts = 2e4 * np.exp(-noisy.sinogram)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6 * counts.max())
    z = (counts - lam) / np.sqrt(lam)
    assert abs(z.mean()) < 4 / math.sqrt(z.size)
    assert z.std() == pytest.approx(1.0, abs=0.06)
    diff = noisy.sinogram - noisy.clean
    assert abs(diff.mean()) < 0.01 * noisy.clean.mean()


def test_parallel_sinogram_conserves_mass():
    """Each parallel view integrates mu over the whole image (units: mm)."""
    from mrirecon.data.simulate_ct import simulate_ct_samples

    sim = simulate_ct_samples(
        samples=1, views=12, size=48, seed=0, photons=None, sources="phantom", fov_mm=240.0
    )
    g = sim.geometry
    per_view = sim.clean[0].sum(axis=1) * g.detector_spacing
    total = sim.attenuation[0].sum() * g.pixel_size**2
    np.testing.assert_allclose(per_view, total, rtol=0.02)


def test_ct_dataset_reads_back_and_is_reproducible(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset, simulate_ct_samples
    from mrirecon.io.lodopab import MU_MAX_PER_M, LoDoPaBFiles

    kw = dict(
        geometry="fan", views=16, photons=5000.0, size=24, seed=9, samples=3, samples_per_file=2
    )
    first = simulate_ct_dataset(tmp_path / "a", **kw)
    second = simulate_ct_dataset(tmp_path / "b", **kw)
    assert [p.name for p in first] == [
        "observation_train_000.hdf5",
        "observation_train_001.hdf5",
        "ground_truth_train_000.hdf5",
        "ground_truth_train_001.hdf5",
    ]
    for p, q in zip(first, second):
        assert _datasets(p)[0]["data"].tobytes() == _datasets(q)[0]["data"].tobytes()
    files = LoDoPaBFiles(tmp_path / "a", "train")
    sim = simulate_ct_samples(kw["samples"], "fan", 16, 5000.0, 24, 9)
    assert files.geometry == sim.geometry and files.geometry.beam == "fan"
    for i in range(3):
        np.testing.assert_allclose(
            files.sinogram(i).data[0].numpy(), sim.sinogram[i], rtol=1e-6, atol=1e-6
        )
        np.testing.assert_allclose(
            files.attenuation(i).data[0].numpy(), sim.attenuation[i], rtol=1e-6, atol=1e-9
        )
        np.testing.assert_allclose(files.hu(i), sim.hu[i], atol=1e-3)
        assert files.observation(i).max() < 10 / MU_MAX_PER_M * 10
    assert files.photons == 5000.0 and files.mu_water == pytest.approx(0.0192)


def test_ct_argument_errors():
    from mrirecon.data.simulate_ct import simulate_ct_samples

    with pytest.raises(ValueError, match="geometry must be 'parallel' or 'fan'"):
        simulate_ct_samples(geometry="cone")
    with pytest.raises(ValueError, match="photons"):
        simulate_ct_samples(photons=-1.0)
    with pytest.raises(ValueError, match="sources"):
        simulate_ct_samples(sources="mayo")


@pytest.mark.parametrize("geometry", ["parallel", "fan"])
@pytest.mark.parametrize("fov_mm", [1e4 * (1 + 1e-12), 1e40, 1e300, float("inf"), float("nan"),
                                    0.0])
def test_a_field_of_view_beyond_10_m_is_refused(geometry, fov_mm):
    """1e40 and 1e300 mm were simulated (pixels of 6e38 / 6e298 mm; the fan beam at 1e300 made
    NaN sinograms); inf failed with 'cannot convert float NaN to integer'. 10 m is taken."""
    from mrirecon.data.simulate_ct import ct_simulation_geometry

    with pytest.raises(ValueError, match=r"simulate_ct: fov_mm must be in \(0, 10000\] mm"):
        ct_simulation_geometry(geometry, 16, 4, None, fov_mm)
    assert ct_simulation_geometry(geometry, 16, 4, None, 1e4).image_shape == (16, 16)


def test_projector_follows_the_odl_convention_the_lodopab_layout_assumes():
    """u = x cos(theta) + y sin(theta) with x along columns and y along -rows (ODL's
    Parallel2dGeometry: detector at +y, axis +x, counter-clockwise); a point in a corner
    lands on the predicted side of the detector."""
    from mrirecon.io.lodopab import lodopab_geometry

    g = lodopab_geometry((33, 33), num_angles=4, num_detectors=49, half_fov_mm=33.0)
    op = ct.ct_operator(g)
    for row, col in ((4, 28), (28, 28), (4, 4)):
        img = torch.zeros(33, 33, dtype=torch.float64)
        img[row, col] = 1.0
        sino = op(img).numpy()
        x, y = (col - 16) * g.pixel_size, (16 - row) * g.pixel_size
        for v, theta in enumerate(g.angles):
            u = x * math.cos(theta) + y * math.sin(theta)
            got = float(np.sum(sino[v] * g.detector_positions) / np.sum(sino[v]))
            assert got == pytest.approx(u, abs=1.5 * g.detector_spacing), (row, col, theta)


def test_scanner_hardware_fills_only_air_and_lies_outside_the_body():
    from mrirecon.data.anatomy import add_scanner_hardware_hu

    hu = np.pad(random_ellipses_hu((121, 121), np.random.default_rng(0)), 40, constant_values=-1000.0)
    hu[hu < -900] = -1000.0
    body = hu > -500
    near_body = ndimage.binary_dilation(body, iterations=1)
    assert np.array_equal(add_scanner_hardware_hu(hu, np.random.default_rng(1), 0.0, 0.0), hu)
    for p_table, p_holder in ((1.0, 0.0), (0.0, 1.0)):
        for seed in range(4):
            out = add_scanner_hardware_hu(hu, np.random.default_rng(seed), p_table, p_holder)
            assert np.array_equal(out, add_scanner_hardware_hu(hu, np.random.default_rng(seed),
                                                               p_table, p_holder))  # seeded
            changed = out != hu
            assert np.all(hu[changed] == -1000.0)  # air only, never the body
            assert changed.sum() > 100 and -1000.0 <= out.min() and out.max() <= 1200.0
            if p_table:  # a dense shell (100-1200 HU) around its core
                assert (out[changed] >= 100).sum() > 50
            else:  # one U-shaped plastic shell (-200..400 HU) around the body, open on one side
                values = np.unique(out[changed])
                assert len(values) == 1 and -200 <= values[0] <= 400
                assert not (changed & near_body).any()  # at a gap (a table may touch the body)
                assert ndimage.label(changed)[1] <= 2
                angle = np.degrees(np.arctan2(*(np.argwhere(changed) - np.argwhere(body).mean(0)).T))
                assert np.ptp(angle) > 140
    assert add_scanner_hardware_hu(hu, np.random.default_rng(0)) is not hu  # a copy


def test_scanner_hardware_blur_band_limits_the_same_hardware_in_air_only():
    from mrirecon.data.anatomy import add_scanner_hardware_hu

    hu = np.pad(random_ellipses_hu((121, 121), np.random.default_rng(0)), 40,
                constant_values=-1000.0)
    hu[hu < -900] = -1000.0
    for seed in range(3):
        sharp = add_scanner_hardware_hu(hu, np.random.default_rng(seed), 1.0, 1.0)
        soft = add_scanner_hardware_hu(hu, np.random.default_rng(seed), 1.0, 1.0, blur=(0.5, 1.0))
        body = hu >= -900
        assert np.array_equal(soft[body], hu[body])  # the body is never touched
        # the same hardware, smoothed: a Gaussian keeps the excess over air (mass), lowers peaks
        # and edges; mass leaks only into the body (not written) and past the image border
        excess, smooth = sharp - hu, soft - hu
        assert 0.9 * excess.sum() < smooth.sum() <= excess.sum() * (1 + 1e-12)
        assert smooth.max() <= excess.max() + 1e-9 and smooth.min() >= -1e-9
        both_air = ~body[1:] & ~body[:-1]  # steps inside the air, where only hardware lies
        steepest = [np.abs(np.diff(x, axis=0))[both_air].max() for x in (soft, sharp)]
        assert steepest[0] < 0.8 * steepest[1]


def test_with_scanner_hardware_names_a_wrong_shape_and_is_seeded():
    from mrirecon.data.simulate_ct import (MU_WATER_70KEV_PER_MM, ct_simulation_geometry,
                                           with_scanner_hardware)

    geom = ct_simulation_geometry("parallel", 64, 30, 96, 260.0)
    with pytest.raises(ValueError, match=r"with_scanner_hardware: attenuation must be \(N, \(64"):
        with_scanner_hardware(np.zeros((64, 64)), geom, 4096.0, 0)
    mu = MU_WATER_70KEV_PER_MM * (1 + np.pad(random_ellipses_hu((40, 40), np.random.default_rng(1)),
                                             12, constant_values=-1000.0) / 1000)[None]
    (s1, m1), (s2, m2) = (with_scanner_hardware(mu, geom, 4096.0, 3) for _ in range(2))
    assert s1.shape == (2, 30, 96) and m1.shape == (2, 64, 64)
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(m1, m2)
    assert not np.array_equal(m1[0], m1[1])  # a table copy and a head-holder copy
