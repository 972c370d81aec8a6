"""LoDoPaB-layout files that read wrong with exit 0, or slowly: a file without ``attrs/geometry``
at another shape than the public one (a geometry was invented from its counts), a part whose
files state other geometries or scales (every file was read with the first one's), a dataset
compressed in one chunk (decompressed again for every sample), and ``fbp`` settings that failed
every input instead of the config."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.core.config import ConfigError
from mrirecon.io.errors import DataFormatError
from mrirecon.io.lodopab import LoDoPaBFiles, lodopab_file_name, lodopab_geometry, write_lodopab
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

FAST = ["export.formats=[hdf5]", "report.enabled=false"]


@pytest.fixture(scope="module")
def fan_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    out = tmp_path_factory.mktemp("fan")
    simulate_ct_dataset(out, geometry="fan", views=36, size=16, seed=4, samples=2, part="test",
                        sources="phantom")
    return out


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _drop_geometry(path: Path) -> None:
    with h5py.File(path, "r+") as h5:
        del h5.attrs["geometry"]


def _provenance(out: Path) -> dict:
    return {Path(f["input"]).name: f
            for f in json.loads((out / "provenance.json").read_text())["files"]}


# ---- F2: no attrs/geometry, not the public shape ----------------------------------------------

@pytest.mark.parametrize("which", ["parallel", "fan"])
def test_a_file_without_geometry_at_another_shape_is_refused(which, ct_dir, fan_dir, tmp_path):
    """Without ``attrs/geometry`` a half-turn parallel geometry sized to the file's counts was
    invented: a full-turn scan read so gave 16.0 dB, a fan-beam file 15.5 dB, exit 0, no word.
    LoDoPaB's geometry is assumed at the public shape only; any other file names the attribute."""
    root = _copy(ct_dir if which == "parallel" else fan_dir, tmp_path / which)
    obs = root / "observation_test_000.hdf5"
    _drop_geometry(obs)
    with pytest.raises(DataFormatError) as err:
        LoDoPaBFiles(root, "test")
    assert str(err.value).startswith(f"{obs}: attrs/geometry: missing, and the data are not "
                                     "LoDoPaB's public shape (1000 views x 513 detectors")
    config = load_pipeline("ct_fbp", FAST)[0]
    assert run_pipeline(config, [str(obs)], tmp_path / "out", progress=False) == 1
    entry = _provenance(tmp_path / "out")[obs.name]
    assert entry["status"] == "failed" and "attrs/geometry: missing" in entry["error"]


def test_the_public_shape_without_attributes_reads_with_lodopabs_geometry(tmp_path):
    """The public files carry no attributes: their shape alone says LoDoPaB's geometry. A ground
    truth of another grid beside a public-shape sinogram is refused, naming it."""
    rng = np.random.default_rng(0)
    with h5py.File(tmp_path / lodopab_file_name("observation", "test", 0), "w") as h5:
        h5["data"] = rng.uniform(0, 0.05, (1, 1000, 513)).astype(np.float32)
    files = LoDoPaBFiles(tmp_path, "test")  # no ground truth (the challenge part)
    assert files.geometry == lodopab_geometry() and files.data_photons == 4096
    gt = tmp_path / lodopab_file_name("ground_truth", "test", 0)
    with h5py.File(gt, "w") as h5:
        h5["data"] = rng.uniform(0, 1, (1, 362, 362)).astype(np.float32)
    assert LoDoPaBFiles(tmp_path, "test").geometry == lodopab_geometry()
    with h5py.File(gt, "w") as h5:
        h5["data"] = rng.uniform(0, 1, (1, 256, 256)).astype(np.float32)
    with pytest.raises(DataFormatError, match=r"observation_test_000.hdf5: attrs/geometry: "
                                              r"missing, .*found images 256 x 256 in "
                                              r"ground_truth_test_000.hdf5"):
        LoDoPaBFiles(tmp_path, "test")


# ---- F4: files of one part with other attributes ----------------------------------------------

def _two_files(src: Path, root: Path, edit) -> Path:
    """A part of two files: ``src``'s file 000 and a copy as 001, edited by ``edit(h5)``."""
    root.mkdir()
    for i in range(2):
        for kind in ("observation", "ground_truth"):
            shutil.copy(src / lodopab_file_name(kind, "test", 0),
                        root / lodopab_file_name(kind, "test", i))
    with h5py.File(root / "observation_test_001.hdf5", "r+") as h5:
        edit(h5)
    return root


def _geometry_edit(**change):
    def edit(h5):
        h5.attrs["geometry"] = json.dumps({**json.loads(h5.attrs["geometry"]), **change})
    return edit


def _rescaled(h5):  # valid by the layout's rule: the same line integrals, stored / 2
    h5["data"][...] = h5["data"][()] / 2
    h5.attrs["mu_max_per_m"] = 2 * float(h5.attrs["mu_max_per_m"])


def _set(key, value):
    def edit(h5):
        h5.attrs[key] = value
    return edit


@pytest.mark.parametrize("edit, field, said", [
    (_geometry_edit(detector_spacing=2.03125), "attrs/geometry", "detector_spacing: 2.03125"),
    (_geometry_edit(source_detector=1200.0), "attrs/geometry", "source_detector: 1200.0"),
    (_rescaled, "attrs/mu_max_per_m",
     "162.71716 differs from observation_test_000.hdf5's 81.35858"),
    (_set("photons", 1024.0), "attrs/photons", "1024.0 differs"),
    (_set("min_photon_count", 0.5), "attrs/min_photon_count", "0.5 differs"),
    (_set("mu_water_per_mm", 0.02), "attrs/mu_water_per_mm",
     "0.02 differs from observation_test_000.hdf5's 0.0192"),
    (lambda h5: h5.attrs.__delitem__("geometry"), "attrs/geometry",
     "missing, while observation_test_000.hdf5 states one"),
], ids=["detector_spacing", "fan_distance", "mu_max", "photons", "min_count", "mu_water",
        "no_geometry"])
def test_files_of_a_part_with_other_attributes_are_refused(fan_dir, tmp_path, edit, field, said):
    """``LoDoPaBFiles(root, part)`` read every file with the first file's attributes: a second
    file with another detector pitch came back at the first one's, one stored / 2 with
    ``mu_max_per_m`` x 2 at half its line integrals; ``CTTrainingSet`` and the CT bench built on
    it without a word. Each file is now checked against the first, naming both and the
    attribute; `mrirecon run`, which reads each file alone, reads each with its own."""
    from mrirecon.bench import run_ct_bench
    from mrirecon.training.data_ct import CTTrainingSet

    root = _two_files(fan_dir, tmp_path / "part", edit)
    second = root / "observation_test_001.hdf5"
    for build in (lambda: LoDoPaBFiles(root, "test"), lambda: CTTrainingSet(root, train=False),
                  lambda: run_ct_bench(root, (2,), ["fbp"], progress=False)):
        with pytest.raises(DataFormatError) as err:
            build()
        text = str(err.value)
        assert text.startswith(f"{second}: {field}: ") and said in text, text
        assert "of its first file, observation_test_000.hdf5" in text
    if said.startswith("missing"):
        return
    alone = LoDoPaBFiles(root, "test", only=1)  # the pipeline's reading: the file's own
    first = LoDoPaBFiles(root, "test", only=0)
    if edit is _rescaled:
        np.testing.assert_allclose(alone.sinogram(0).data.numpy(), first.sinogram(0).data.numpy(),
                                   rtol=1e-6)


def test_the_same_attributes_in_another_form_still_read(ct_dir, tmp_path):
    """What decides is what the reader takes from a file: a geometry written with its keys in
    another order and angles differing in the last bits is the same geometry."""
    def edit(h5):
        g = json.loads(h5.attrs["geometry"])
        g["angles"] = [a * (1 + 1e-15) for a in g["angles"]]
        h5.attrs["geometry"] = json.dumps(dict(reversed(list(g.items()))))
    root = _two_files(ct_dir, tmp_path / "part", edit)
    files = LoDoPaBFiles(root, "test")
    assert len(files) == 4
    np.testing.assert_array_equal(files.sinogram(2).data.numpy(), files.sinogram(0).data.numpy())


def test_a_mixed_part_still_runs_file_by_file(fan_dir, tmp_path):
    """`mrirecon run` opens each input alone: a part whose second file stores its sinogram / 2
    with ``mu_max_per_m`` x 2 reconstructs both files alike."""
    root = _two_files(fan_dir, tmp_path / "part", _rescaled)
    config = load_pipeline("ct_fbp", FAST)[0]
    assert run_pipeline(config, [str(root)], tmp_path / "out", progress=False) == 0
    runs = _provenance(tmp_path / "out")
    psnr = [runs[f"observation_test_00{i}.hdf5"]["metrics"]["psnr"] for i in range(2)]
    assert psnr[0] > 15 and psnr[1] == pytest.approx(psnr[0], abs=0.01)


# ---- F7a: a dataset compressed in one chunk -----------------------------------------------------

def test_a_file_compressed_in_one_chunk_is_decompressed_once(ct_dir, tmp_path, monkeypatch):
    """A 128-sample file whose data are one gzip chunk cost 501 ms per sample read (every read
    decompressed the whole file; 84 s to read it), against 4 ms stored per sample. The chunk's
    samples are now decompressed once and kept (not pickled), and a file rewritten since is read
    again."""
    root = _copy(ct_dir, tmp_path / "ct")
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r") as h5:
        one, attrs = h5["data"][0], dict(h5.attrs)
    n = 8
    data = (one[None] * (1 + 0.01 * np.arange(n))[:, None, None]).astype(np.float32)

    def write(values):  # as the package writes files: a new file renamed over the old one
        with h5py.File(tmp_path / "new.hdf5", "w") as h5:
            h5.create_dataset("data", data=values, chunks=values.shape, compression="gzip")
            h5.attrs.update(attrs)
        (tmp_path / "new.hdf5").replace(obs)

    write(data)
    (root / "ground_truth_test_000.hdf5").unlink()
    reads = []
    plain = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__",
                        lambda ds, key: reads.append(key) or plain(ds, key))
    files = LoDoPaBFiles(root, "test")
    got = [files.observation(k) for k in range(n)]
    assert len(reads) == 1  # one decompression for the 8 samples (was 8)
    for k in range(n):
        np.testing.assert_array_equal(got[k], data[k])
    got[0][...] = 0  # the caller's copy, not the kept chunk
    np.testing.assert_array_equal(files.observation(0), data[0])
    copy = pickle.loads(pickle.dumps(files))
    assert copy._slabs == {} and len(pickle.dumps(files)) < data.nbytes
    np.testing.assert_array_equal(copy.observation(3), data[3])
    write(data * 2)  # rewritten: read again, not from the kept chunk
    np.testing.assert_array_equal(files.observation(5), data[5] * 2)


# ---- F7b: fbp settings the filter refuses -----------------------------------------------------

@pytest.mark.parametrize("setting, key, said", [
    ("reconstruct.params.filter=hamming", "reconstruct.params.filter",
     "fbp has no filter 'hamming'; valid: ram-lak, shepp-logan, cosine, hann"),
    ("reconstruct.params.filter=Hann", "reconstruct.params.filter", "fbp has no filter 'Hann'"),
    ("reconstruct.params.frequency_scaling=2", "reconstruct.params.frequency_scaling",
     "must be in (0, 1]"),
    ("reconstruct.params.frequency_scaling=0", "reconstruct.params.frequency_scaling",
     "must be in (0, 1]"),
])
def test_fbp_settings_it_refuses_fail_the_config_not_each_input(ct_dir, tmp_path, capsys,
                                                                 setting, key, said):
    """``filter=hamming`` or ``frequency_scaling=2`` loaded, and every input failed (exit 1) with
    the filter's error; now the config is refused at load (exit 2) naming the setting."""
    from mrirecon.cli import main

    with pytest.raises(ConfigError) as err:
        load_pipeline("ct_fbp", [setting])
    assert f"{key}: {said}" in str(err.value)
    with pytest.raises(SystemExit) as exc:
        main(["run", "ct_fbp", "-i", str(ct_dir), "-o", str(tmp_path / "o"), "--set", setting])
    assert exc.value.code == 2 and key in capsys.readouterr().err
    assert not (tmp_path / "o" / "reconstructions").exists()
    for fine in ("reconstruct.params.filter=cosine", "reconstruct.params.frequency_scaling=0.5"):
        load_pipeline("ct_fbp", [fine])


def test_a_part_name_the_layout_does_not_read_is_no_part(ct_dir, tmp_path):
    """``observation_a-b_000.hdf5`` matched the reader's glob but not its name rule, and
    LoDoPaBFiles(d, "a-b") failed with "AttributeError: 'NoneType' object has no attribute
    'group'"; the bench took "a-b" for a part and met the same error. Names are read once
    (io.lodopab.parse_name): such a file is no file of any part."""
    from mrirecon.bench.ct import run_ct_bench

    src = sorted(ct_dir.glob("observation_*_000.hdf5"))[0]
    odd = tmp_path / "odd"
    odd.mkdir()
    shutil.copy(src, odd / "observation_a-b_000.hdf5")
    shutil.copy(ct_dir / src.name.replace("observation_", "ground_truth_"),
                odd / "ground_truth_a-b_000.hdf5")
    with pytest.raises(FileNotFoundError, match=r"no observation_a-b_###.hdf5 files"):
        LoDoPaBFiles(odd, "a-b")
    with pytest.raises(FileNotFoundError, match=r"run_ct_bench: no observation_<part>_NNN.hdf5"):
        run_ct_bench(odd, [2], "fbp", progress=False)


@pytest.mark.parametrize("floor, said", [
    (1e6, "1000000.0 is not below attrs/photons 4096.0"),
    (4096.0, "4096.0 is not below attrs/photons 4096.0"),
    (0.0, "expected a positive photon count, got 0.0"),
])
def test_a_count_floor_not_below_the_dose_is_refused_naming_both(ct_dir, tmp_path, floor, said):
    """``min_photon_count`` 1e6 beside ``photons`` 4096 was accepted without a word, and the
    count-floor checks (log(photons / min_photon_count), :func:`ct_plausibility.count_floor`)
    were off for the file. Refused where the floor is used, as a floor of 0 is."""
    root = _copy(ct_dir, tmp_path / "ct")
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        assert float(h5.attrs["photons"]) == 4096.0
        h5.attrs["min_photon_count"] = floor
    files = LoDoPaBFiles(root, "test")
    with pytest.raises(DataFormatError) as err:
        files.min_photon_count
    assert (err.value.file, err.value.field) == (str(obs), "attrs/min_photon_count")
    assert said in err.value.problem, str(err.value)
    with h5py.File(obs, "r+") as h5:
        h5.attrs["min_photon_count"] = 4095.0  # below the dose: read
    assert LoDoPaBFiles(root, "test").min_photon_count == 4095.0


def test_a_second_file_whose_scale_differs_by_half_a_percent_is_refused(tmp_path):
    """Every file of a part is read with its first file's mu_max_per_m: a second file whose
    scale differs by 0.5 % (far above float64 rounding of a stored attribute, 1e-9) would have
    its line integrals read 0.5 % off. The comparison must be exact up to rounding."""
    geometry = lodopab_geometry((8, 8), 6, 9)
    rng = np.random.default_rng(0)
    write_lodopab(tmp_path, "train", rng.random((2, 6, 9)), geometry=geometry,
                  samples_per_file=1)
    with h5py.File(tmp_path / "observation_train_001.hdf5", "r+") as h5:
        h5.attrs["mu_max_per_m"] = float(h5.attrs["mu_max_per_m"]) * 1.005
    with pytest.raises(DataFormatError, match=r"mu_max_per_m.*differs from observation_train_000"):
        LoDoPaBFiles(tmp_path, "train")
