"""LoDoPaB-CT HDF5 layout: constants, geometry, orientation, reader on public-layout files."""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest

from mrirecon.io.errors import DataFormatError
from mrirecon.io.lodopab import (
    MU_MAX_PER_M,
    MU_MAX_PER_MM,
    LoDoPaBFiles,
    attenuation_to_hu,
    from_lodopab_layout,
    geometry_to_json,
    hu_to_attenuation,
    lodopab_file_name,
    lodopab_geometry,
    to_lodopab_layout,
    write_lodopab,
)
from mrirecon.operators.ct_geometry import CTGeometry


def _write_public(root, part, counts, shape=(362, 362), sino=(1000, 513), with_gt=True, seed=0,
                  state_geometry=None):
    """Files exactly as the public dataset has them: one float32 ``data`` dataset, no attrs.
    At another shape than the public one (small test files) the observations state the
    geometry (``lodopab_geometry`` of that shape; ``state_geometry=False``: none), since a
    file of another shape without it is refused."""
    rng = np.random.default_rng(seed)
    obs, gts = [], []
    if state_geometry is None:
        state_geometry = (shape, sino) != ((362, 362), (1000, 513))
    for i, n in enumerate(counts):
        o = rng.uniform(0, 0.05, size=(n,) + sino).astype(np.float32)
        g = rng.uniform(0, 1, size=(n,) + shape).astype(np.float32)
        with h5py.File(root / lodopab_file_name("observation", part, i), "w") as h5:
            h5.create_dataset("data", data=o)
            if state_geometry:  # the ground truth is stored in the ODL (x, y) layout
                h5.attrs["geometry"] = geometry_to_json(lodopab_geometry(shape[::-1], *sino))
        if with_gt:
            with h5py.File(root / lodopab_file_name("ground_truth", part, i), "w") as h5:
                h5.create_dataset("data", data=g)
        obs.append(o)
        gts.append(g)
    return np.concatenate(obs), np.concatenate(gts)


def test_constants_match_the_lodopab_definition():
    assert MU_MAX_PER_M == pytest.approx(81.35858, abs=1e-9)
    # mu(HU) with MU_WATER = 20/m and MU_AIR = 0.02/m, in 1/mm
    assert hu_to_attenuation(3071) == pytest.approx(MU_MAX_PER_MM, rel=1e-12)
    assert hu_to_attenuation(0) == pytest.approx(0.020)
    assert hu_to_attenuation(-1000) == pytest.approx(0.00002)
    hu = np.array([-1000.0, -350.0, 0.0, 40.0, 1200.0])
    np.testing.assert_allclose(
        attenuation_to_hu(hu_to_attenuation(hu, 0.0192, 0.0), 0.0192, 0.0), hu
    )


def test_public_geometry():
    g = lodopab_geometry()
    assert g.beam == "parallel" and g.image_shape == (362, 362) and g.sinogram_shape == (1000, 513)
    assert g.pixel_size == pytest.approx(260 / 362)
    # 513 bins over [-0.13 sqrt2, 0.13 sqrt2] m: first and last bin centres
    edge = 130 * math.sqrt(2)
    assert g.detector_positions[0] == pytest.approx(-edge + g.detector_spacing / 2)
    assert g.detector_positions[-1] == pytest.approx(edge - g.detector_spacing / 2)
    np.testing.assert_allclose(g.angles[:2], [math.pi / 2000, 3 * math.pi / 2000])
    assert g.angles[-1] == pytest.approx(math.pi - math.pi / 2000)


def test_layout_orientation():
    img = np.zeros((4, 6))
    img[0, -1] = 1.0  # top right: x > 0 (last column), y > 0 (first row)
    a = to_lodopab_layout(img)
    assert a.shape == (6, 4) and a[-1, -1] == 1.0  # ODL a[ix, iy]: both at the positive end
    img2 = np.zeros((4, 6))
    img2[-1, 0] = 1.0  # bottom left: x < 0, y < 0
    assert to_lodopab_layout(img2)[0, 0] == 1.0
    x = np.random.default_rng(0).standard_normal((3, 5, 7))
    np.testing.assert_array_equal(from_lodopab_layout(to_lodopab_layout(x)), x)


def test_reads_public_layout(tmp_path):
    obs, gt = _write_public(tmp_path, "test", [2, 1])
    files = LoDoPaBFiles(tmp_path, "test")
    assert len(files) == 3 and files.counts == [2, 1]
    assert files.geometry == lodopab_geometry()
    assert files.photons == 4096 and files.mu_water == pytest.approx(0.020)
    for i in range(3):
        np.testing.assert_array_equal(files.observation(i), obs[i])
        np.testing.assert_array_equal(files.ground_truth(i), gt[i])
    np.testing.assert_array_equal(files.observation(-1), obs[2])
    sino = files.sinogram(2)
    assert tuple(sino.data.shape) == (1, 1000, 513)
    np.testing.assert_allclose(sino.data[0].numpy(), obs[2] * MU_MAX_PER_M, rtol=1e-6)
    mu = files.attenuation(1)
    assert mu.kind == "attenuation" and mu.modality == "CT"
    np.testing.assert_allclose(mu.data[0].numpy(), np.rot90(gt[1]) * MU_MAX_PER_MM, rtol=1e-6)
    np.testing.assert_allclose(
        files.hu(1), attenuation_to_hu(np.rot90(gt[1]) * MU_MAX_PER_MM), atol=0.05
    )
    with pytest.raises(IndexError, match="out of range for 3"):
        files.observation(3)


def test_observation_only_part_and_errors(tmp_path):
    _write_public(tmp_path, "challenge", [2], shape=(16, 16), sino=(10, 23), with_gt=False)
    files = LoDoPaBFiles(tmp_path, "challenge")
    assert files.ground_truth_files is None and files.geometry.sinogram_shape == (10, 23)
    with pytest.raises(FileNotFoundError, match="observation_challenge_000.hdf5 .* has no "
                                                "ground_truth_challenge_000.hdf5"):
        files.ground_truth(0)
    with pytest.raises(FileNotFoundError, match="observation_validation"):
        LoDoPaBFiles(tmp_path, "validation")
    (tmp_path / "gap").mkdir()
    _write_public(tmp_path / "gap", "train", [1], shape=(8, 8), sino=(4, 13))
    (tmp_path / "gap" / lodopab_file_name("observation", "train", 0)).rename(
        tmp_path / "gap" / lodopab_file_name("observation", "train", 2)
    )
    # a file copied out of its part (observation_train_002.hdf5 alone) reads like the others
    # (a part not numbered from 000 was refused, every file of it)
    gap = LoDoPaBFiles(tmp_path / "gap", "train")
    assert gap.file_numbers == [2] and not gap.has_ground_truth(0) and gap.observation(0).shape == (4, 13)
    (tmp_path / "bad").mkdir()
    with h5py.File(tmp_path / "bad" / lodopab_file_name("observation", "train", 0), "w") as h5:
        h5.create_dataset("sinogram", data=np.zeros((1, 4, 5)))
    with pytest.raises(DataFormatError, match="data"):
        LoDoPaBFiles(tmp_path / "bad", "train")


def test_a_file_deleted_after_listing_is_named_not_h5pys_raw_error(tmp_path):
    """An observation or ground truth deleted (or moved) between the folder's listing and its
    reading raised h5py's raw "[Errno 2] Unable to synchronously open file (unable to open
    file: name = …, errno = 2, …)"; now a FileNotFoundError in the package's words."""
    _write_public(tmp_path, "test", [2], shape=(16, 16), sino=(10, 23))
    files = LoDoPaBFiles(tmp_path, "test")
    for path, read in ((files.observation_files[0], files.observation),
                       (files.ground_truth_paths[0], files.ground_truth)):
        path.rename(path.with_name("moved.hdf5"))
        with pytest.raises(FileNotFoundError) as err:
            read(0)
        assert str(err.value) == (f"{path}: no such LoDoPaB file (deleted or moved after its "
                                  "folder was listed?)")
        path.with_name("moved.hdf5").rename(path)
    assert files.observation(1).shape == (10, 23)


def test_inconsistent_ground_truth_and_integer_sinograms_are_refused(tmp_path):
    # a ground truth with fewer images than its observation file, or of another size than the
    # geometry's image, names the ground-truth file (not a late "index out of range")
    g = CTGeometry.parallel((12, 10), 8, 21, pixel_size=2.0)
    for name, edit in (("count", lambda g: g[:1]), ("size", lambda g: g[:, :, :7]),
                       ("dtype", lambda g: (g * 100).astype(np.int16))):
        root = tmp_path / name
        write_lodopab(root, "test", np.ones((2, 8, 21)), np.full((2, 12, 10), 0.02), geometry=g)
        gt = root / lodopab_file_name("ground_truth", "test", 0)
        with h5py.File(gt, "r+") as h5:
            data = edit(h5["data"][...])
            del h5["data"]
            h5.create_dataset("data", data=data)
        # stored in the ODL (x, y) layout: (cols, rows)
        with pytest.raises(DataFormatError, match=r"ground_truth_test_000.hdf5.*\(2, 10, 12\)"):
            LoDoPaBFiles(root, "test")
    # without geometry attributes (the public files) only the public shape is read, with
    # LoDoPaB's geometry: a ground-truth grid and detector count of the file's own were turned
    # into an invented half-turn parallel geometry (tests/robustness/test_hostile_lodopab_files.py)
    _write_public(tmp_path, "pub", [1], shape=(16, 12), sino=(10, 29), state_geometry=False)
    with pytest.raises(DataFormatError, match=r"observation_pub_000.hdf5: attrs/geometry: missing"):
        LoDoPaBFiles(tmp_path, "pub")
    # post-log line integrals stored as integers are not data this reader can scale
    root = tmp_path / "int"
    root.mkdir()
    _write_public(root, "test", [1], shape=(16, 16), sino=(10, 23), with_gt=False)
    obs = root / lodopab_file_name("observation", "test", 0)
    with h5py.File(obs, "r+") as h5:
        o = (h5["data"][...] * 1000).astype(np.int16)
        del h5["data"]
        h5.create_dataset("data", data=o)
    with pytest.raises(DataFormatError, match="observation_test_000.hdf5.*floating-point.*int16"):
        LoDoPaBFiles(root, "test")


def test_write_round_trip(tmp_path):
    g = CTGeometry.fan(
        (12, 10), 8, 21, source_isocenter=100.0, source_detector=180.0, pixel_size=2.0
    )
    rng = np.random.default_rng(3)
    sino = rng.uniform(0, 3, size=(5, 8, 21))
    hu = rng.uniform(-1000, 3500, size=(5, 12, 10))
    mu = np.maximum(0.0192 * (1 + hu / 1000), 0)
    paths = write_lodopab(
        tmp_path,
        "val",
        sino,
        mu,
        geometry=g,
        hu=hu,
        photons=1000.0,
        min_photon_count=1.0,
        mu_water=0.0192,
        mu_air=0.0,
        samples_per_file=2,
    )
    assert [p.name for p in paths] == [
        lodopab_file_name(k, "val", i) for k in ("observation", "ground_truth") for i in range(3)
    ]
    files = LoDoPaBFiles(tmp_path, "val")
    assert files.counts == [2, 2, 1] and files.geometry == g
    assert files.photons == 1000.0 and files.mu_water == 0.0192 and files.mu_air == 0.0
    for i in range(5):
        np.testing.assert_allclose(files.observation(i), sino[i] / MU_MAX_PER_M, rtol=1e-6)
        gt = files.ground_truth(i)
        assert gt.shape == (10, 12) and gt.min() >= 0 and gt.max() <= 1
        np.testing.assert_allclose(
            from_lodopab_layout(gt), np.clip(mu[i] / MU_MAX_PER_MM, 0, 1), rtol=1e-6
        )
        np.testing.assert_allclose(files.hu(i), hu[i], rtol=1e-6)
        np.testing.assert_allclose(files.sinogram(i).data[0].numpy(), sino[i], rtol=1e-6)
    with h5py.File(paths[0]) as h5:
        assert set(h5.keys()) == {"data"} and h5["data"].dtype == np.float32


def test_write_errors(tmp_path):
    g = CTGeometry.parallel((8, 8), 4, 11)
    with pytest.raises(ValueError, match=r"sinograms must be \(N, 4, 11\)"):
        write_lodopab(tmp_path, "train", np.zeros((1, 4, 12)), np.zeros((1, 8, 8)), geometry=g)
    with pytest.raises(ValueError, match="attenuation must be"):
        write_lodopab(tmp_path, "train", np.zeros((1, 4, 11)), np.zeros((2, 8, 8)), geometry=g)
    with pytest.raises(ValueError, match="part must be a word"):
        write_lodopab(tmp_path, "../x", np.zeros((1, 4, 11)), np.zeros((1, 8, 8)), geometry=g)
    sino, mu = np.zeros((1, 4, 11)), np.zeros((1, 8, 8))
    sino[0, 1, 2], mu[0, 3, 3] = np.nan, np.inf  # were written; only the reader refused them
    out = tmp_path / "nan"
    with pytest.raises(ValueError, match=rf"{out} \(train\): sinograms has 1 NaN or Inf values"):
        write_lodopab(out, "train", sino, np.zeros((1, 8, 8)), geometry=g)
    with pytest.raises(ValueError, match="attenuation has 1 NaN or Inf values"):
        write_lodopab(out, "train", np.zeros((1, 4, 11)), mu, geometry=g)
    assert not out.exists() or not any(out.iterdir())  # nothing written


@pytest.mark.parametrize("kwargs, arg, hint", [
    ({"angles": "degrees"}, "geometry", r"angles span 179 rad.*were degrees given\?"),
    ({"mu_water": 0.19}, "mu_water=0.19", r"per cm\?"),
    ({"mu_water": 19.2}, "mu_water=19.2", r"per metre\?"),
    ({"mu_air": 0.01}, "mu_air=0.01", "no attenuation of air"),
    ({"photons": 100.0, "min_photon_count": 200.0}, "min_photon_count=200", "not below"),
    ({"attrs": {"mu_max_per_m": 5.0}}, r"attrs\['mu_max_per_m'\]", "no MU_MAX"),
])
def test_write_refuses_what_the_reader_refuses_naming_the_argument(tmp_path, kwargs, arg, hint):
    """Angles in degrees and water's attenuation per cm (0.19) were written; ``mrirecon run``
    then failed ("angles span 179 rad"; "attrs/mu_max_per_m: 81.35858 is no MU_MAX", a value
    the user never set). The writer applies the reader's rules and names its own argument."""
    kwargs = dict(kwargs)
    th = np.arange(0, 180, 1.0)
    angles = th if kwargs.pop("angles", None) else np.deg2rad(th)
    g = CTGeometry("parallel", (9, 9), tuple(angles), 13, 1.0, 1.0)
    out = tmp_path / "w"
    with pytest.raises(ValueError, match=rf"write_lodopab: {arg}.*{hint}"):
        write_lodopab(out, "test", np.zeros((1, 180, 13)), np.zeros((1, 9, 9)), geometry=g,
                      **kwargs)
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_write_without_reference_writes_observations_only(tmp_path):
    """A scanner user has no reference image: ``attenuation=None`` raised "attenuation must be
    (1, 9, 9), got ()", and zeros in its place were scored as a "placeholder reference"."""
    g = CTGeometry.parallel((9, 9), 6, 13)
    sino = np.random.default_rng(1).uniform(0, 2, size=(3, 6, 13))
    paths = write_lodopab(tmp_path, "scan", sino, geometry=g, samples_per_file=2)
    assert [p.name for p in paths] == [lodopab_file_name("observation", "scan", i) for i in (0, 1)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]
    files = LoDoPaBFiles(tmp_path, "scan")
    assert files.geometry == g and files.ground_truth_files is None
    assert not files.has_ground_truth(0) and not files.has_ground_truth(1)
    for i in range(3):
        np.testing.assert_allclose(files.sinogram(i).data[0].numpy(), sino[i], rtol=1e-6)
    with pytest.raises(ValueError, match="hu needs attenuation"):
        write_lodopab(tmp_path / "x", "scan", sino, geometry=g, hu=np.zeros((3, 9, 9)))


def test_a_sinogram_carries_no_image_geometry_of_its_own(tmp_path):
    """The image grid of a CT sample is the data set's (``LoDoPaBFiles.geometry.pixel_size``;
    the pipeline keeps it in ``run.info["image_geometry"]``): ``Sinogram`` had an
    ``image_geometry`` field that no reader set and nothing read, left at 1 mm, placed, beside
    the file's 0.5 mm pixel that ``attenuation()`` of the same sample states."""
    g = CTGeometry.parallel((16, 16), num_views=10, pixel_size=0.5)
    sino = np.random.default_rng(0).uniform(0, 0.1, size=(1, 10, g.num_detectors))
    write_lodopab(tmp_path, "t", sino, np.full((1, 16, 16), 0.02), geometry=g)
    files = LoDoPaBFiles(tmp_path, "t")
    s = files.sinogram(0)
    assert not hasattr(s, "image_geometry")
    assert files.attenuation(0).geometry.spacing[-1] == pytest.approx(0.5)
