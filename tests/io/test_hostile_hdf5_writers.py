"""HDF5 inputs as other writers make them (audit a19): datasets compressed with a filter this
HDF5 lacks (hdf5plugin's blosc / zstd / ...), a file another process holds open for writing,
attributes stored as 1-element arrays (MATLAB's ``h5writeatt``, HDF5.jl, ``attrs[k] = [v]``), an
ISMRMRD ``xml`` stored as a scalar string, a dangling soft link. Each test builds its file here;
hdf5plugin is needed by one test only (skipped without it: it is no dependency)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.io import DataFormatError
from mrirecon.io.fastmri import FastMRIFile
from mrirecon.io.ismrmrd_raw import read_ismrmrd
from mrirecon.io.lodopab import LoDoPaBFiles, lodopab_geometry, write_lodopab
from mrirecon.io.probe import hdf5_layout

ZSTD = 32015  # hdf5plugin's Zstd(); HDF5 has no such filter built in
EPS32 = float(np.finfo(np.float32).eps)  # attributes written as float32 arrays


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("src"), volumes=1, slices=2, coils=2,
                                   size=(32, 32), seed=0, resolution=2)
    return Path(path)


@pytest.fixture(scope="module")
def ismrmrd_source(source, tmp_path_factory) -> Path:
    from tests.helpers import fastmri_to_ismrmrd

    dst = tmp_path_factory.mktemp("ism") / "raw.h5"
    fastmri_to_ismrmrd(source, dst)
    return dst


@pytest.fixture(scope="module")
def lodopab_part(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ct")
    rng = np.random.default_rng(0)
    geometry = lodopab_geometry((16, 16), 12, 23)
    write_lodopab(root, "test", rng.uniform(0, 1, (2, 12, 23)).astype(np.float32),
                  rng.uniform(0, 0.02, (2, 16, 16)).astype(np.float32), geometry=geometry,
                  samples_per_file=2)
    return root


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def _add_filter(h5: h5py.File, key: str, code: int) -> None:
    """Rewrite dataset ``key`` with filter ``code`` appended to its pipeline, its chunks' bytes
    kept and marked as passed through that filter: how a writer with the filter (hdf5plugin)
    stores it, as far as a reader without the filter can tell. Heap IDs of variable-length
    data stay valid (same file)."""
    ds = h5[key]
    if ds.chunks is None:  # contiguous: chunk it first (one chunk per leading index)
        data = ds[()]
        del h5[key]
        h5.create_dataset(key, data=data, chunks=(1,) * min(data.ndim, 1) + data.shape[1:])
        ds = h5[key]
    dcpl = ds.id.get_create_plist()
    dcpl.set_filter(code, h5py.h5z.FLAG_OPTIONAL, ())  # allowed for a filter HDF5 lacks
    new = h5py.h5d.create(h5.id, b"_filtered", ds.id.get_type(), ds.id.get_space(), dcpl=dcpl)
    for i in range(ds.id.get_num_chunks()):
        offset = ds.id.get_chunk_info(i).chunk_offset
        _mask, raw = ds.id.read_direct_chunk(offset)
        new.write_direct_chunk(offset, raw, filter_mask=0)
    for name, value in ds.attrs.items():
        h5["_filtered"].attrs[name] = value
    del h5[key]
    h5.move("_filtered", key)


def _without_hdf5plugin(monkeypatch, code: int = ZSTD) -> None:
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)  # "import hdf5plugin" fails
    if h5py.h5z.filter_avail(code):
        pytest.skip(f"HDF5 filter {code} is loaded in this process (hdf5plugin imported earlier, "
                    "or HDF5_PLUGIN_PATH)")


# -- 1. a filter this HDF5 lacks ------------------------------------------------------------

@pytest.mark.parametrize("kind", ["kspace", "reconstruction_rss", "lodopab", "ismrmrd_data",
                                  "ismrmrd_xml"])
def test_a_dataset_compressed_with_a_filter_hdf5_lacks_is_refused_naming_filter_and_fix(
        source, ismrmrd_source, lodopab_part, tmp_path, monkeypatch, kind):
    """Was: the file opened, then the first read failed "kspace[0]: unreadable (Can't
    synchronously read data (can't open directory (/usr/local/lib/plugin) ...))", naming neither
    the filter nor a fix (LoDoPaB "data[1]", ISMRMRD "dataset/data" alike)."""
    _without_hdf5plugin(monkeypatch)
    if kind == "lodopab":
        root = tmp_path / "ct"
        shutil.copytree(lodopab_part, root)
        path, field = root / "observation_test_000.hdf5", "data"
    elif kind.startswith("ismrmrd"):
        path, field = _copy(ismrmrd_source, tmp_path / "raw.h5"), f"dataset/{kind[8:]}"
    else:
        path, field = _copy(source, tmp_path / "f.h5"), kind
    with h5py.File(path, "a") as h5:
        if kind == "ismrmrd_xml":  # a chunked (1,) xml, as a writer compressing everything has it
            text = h5["dataset/xml"][0]
            del h5["dataset/xml"]
            h5.create_dataset("dataset/xml", data=[text], dtype=h5py.string_dtype(), chunks=(1,))
        _add_filter(h5, field, ZSTD)
    if kind == "lodopab":
        read = lambda: LoDoPaBFiles(root, "test").observation(1)  # noqa: E731
    elif kind.startswith("ismrmrd"):
        read = lambda: read_ismrmrd(path)  # noqa: E731
    else:
        read = lambda: FastMRIFile(path).read_slice(0)  # noqa: E731
    with pytest.raises(DataFormatError) as info:
        read()
    msg = str(info.value)
    assert msg.startswith(f"{path}: {field}: compressed with zstd (HDF5 filter 32015), which "
                          "this Python's HDF5 cannot decode: pip install hdf5plugin"), msg
    assert "HDF5_PLUGIN_PATH" in msg and "h5repack -f NONE" in msg and "/plugin" not in msg


def test_an_unknown_filter_is_named_by_its_id(source, tmp_path, monkeypatch):
    """A filter id no table names (and no hdf5plugin provides) still names its id."""
    _without_hdf5plugin(monkeypatch, 40000)
    path = _copy(source, tmp_path / "f.h5")
    with h5py.File(path, "a") as h5:
        _add_filter(h5, "kspace", 40000)
    with pytest.raises(DataFormatError, match=r"f\.h5: kspace: compressed with an unnamed "
                                              r"filter \(HDF5 filter 40000\)"):
        FastMRIFile(path).read_slice(0)
    shutil.copy(source, path)
    with h5py.File(path, "a") as h5:  # filters HDF5 has (gzip, shuffle) read as before
        ks = h5["kspace"][()]
        del h5["kspace"]
        h5.create_dataset("kspace", data=ks, chunks=(1,) + ks.shape[1:], compression="gzip",
                          shuffle=True)
    with FastMRIFile(path) as f:
        assert torch.equal(f.read_slice(1).data[0], torch.from_numpy(ks[1]))


@pytest.mark.skipif(importlib.util.find_spec("hdf5plugin") is None,
                    reason="hdf5plugin not installed (no dependency: only this test uses it)")
def test_a_zstd_file_reads_once_hdf5plugin_is_installed(source, tmp_path):
    """hdf5plugin is imported when a dataset needs a filter HDF5 lacks: the file written with
    its Zstd() reads as the uncompressed one, without the caller importing it."""
    path = tmp_path / "zstd.h5"
    script = ("import sys, h5py, hdf5plugin\n"
              "src, dst = sys.argv[1:3]\n"
              "with h5py.File(src) as s, h5py.File(dst, 'w') as o:\n"
              "    o.attrs.update(dict(s.attrs))\n"
              "    [s.copy(k, o) for k in s if k != 'kspace']\n"
              "    ks = s['kspace'][()]\n"
              "    o.create_dataset('kspace', data=ks, chunks=(1,) + ks.shape[1:], "
              "**hdf5plugin.Zstd())\n")
    subprocess.run([sys.executable, "-c", script, str(source), str(path)], check=True,
                   env={**os.environ, "HDF5_PLUGIN_PATH": ""})
    with h5py.File(path) as h5:
        assert h5["kspace"].id.get_create_plist().get_filter(0)[0] == ZSTD
    with FastMRIFile(source) as f:
        expected = f.read_slice(1)
    with FastMRIFile(path) as f:
        got = f.read_slice(1)
    assert torch.equal(got.data, expected.data) and torch.equal(got.reference, expected.reference)


# -- 2. a file another process holds open for writing -------------------------------------------

_HOLD = ("import sys, time, h5py\n"
         "f = h5py.File(sys.argv[1], 'a', libver=sys.argv[2])\n"
         "if sys.argv[2] == 'latest':\n"
         "    f.swmr_mode = True\n"
         "print('holding', flush=True)\n"
         "time.sleep(120)\n")


@pytest.mark.parametrize("writer", ["live", "swmr_killed"])
def test_a_file_open_for_writing_in_another_process_says_so(source, tmp_path, writer):
    """Was: "<file>: not a readable HDF5 file ([Errno 11] Unable to synchronously open file
    (unable to lock file, errno = 11 ...))" (or "file is already open for write"), a healthy
    file called corrupt while a conversion script still wrote it."""
    path = _copy(source, tmp_path / "in" / "x.h5")
    if writer == "swmr_killed":  # SWMR needs the latest file format
        with h5py.File(source) as s, h5py.File(path, "w", libver="latest") as o:
            o.attrs.update(dict(s.attrs))
            for key in s:
                s.copy(key, o)
    env = {k: v for k, v in os.environ.items() if k != "HDF5_USE_FILE_LOCKING"}
    child = subprocess.Popen([sys.executable, "-c", _HOLD, str(path),
                              "latest" if writer == "swmr_killed" else "earliest"],
                             stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "holding"
        if writer == "swmr_killed":  # killed mid-write: the superblock's flags stay set
            child.kill()
            child.wait()
        for read in (hdf5_layout, lambda p: FastMRIFile(p).read_slice(0)):
            with pytest.raises(DataFormatError) as info:
                read(path)
            msg = str(info.value)
            assert msg.startswith(f"{path}: file: is open for writing in another process"), msg
            assert "not a readable" not in msg and "run again once that process has closed it" \
                in msg
            assert ("HDF5_USE_FILE_LOCKING=FALSE" in msg) == (writer == "live")
            assert (f"h5clear -s {path}" in msg) == (writer == "swmr_killed")
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    if writer == "live":  # its lock died with it: the same file reads
        assert hdf5_layout(path) == "fastmri" and FastMRIFile(path).read_slice(0) is not None


@pytest.mark.parametrize("code,why", [(11, "Resource temporarily unavailable"),
                                      (37, "No locks available"),
                                      (95, "Operation not supported"), (22, "Invalid argument")])
def test_a_file_system_without_locks_is_not_called_another_process(source, tmp_path, monkeypatch,
                                                                   code, why):
    """h5py's text under NFS without lockd (flock -> ENOLCK, seen with an LD_PRELOAD flock),
    EOPNOTSUPP or EINVAL. Was: "is open for writing in another process (HDF5 file lock)" for
    every errno, no such process existing, and h5py's text (the errno) dropped."""
    path = _copy(source, tmp_path / "x.h5")
    text = (f"Unable to synchronously open file (unable to lock file, errno = {code}, error "
            f"message = '{why}')")

    def locked(*args, **kwargs):
        raise OSError(code, text)

    monkeypatch.setattr(h5py, "File", locked)
    for read in (hdf5_layout, lambda p: FastMRIFile(p).read_slice(0)):
        with pytest.raises(DataFormatError) as info:
            read(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: file: ") and "not a readable" not in msg, msg
        assert ("another process" in msg) == (code == 11), msg
        assert "HDF5_USE_FILE_LOCKING=FALSE" in msg, msg
        if code != 11:  # HDF5's BEST_EFFORT ignores ENOSYS only: it would fail the same way
            assert "does not support the file locks HDF5 takes" in msg and text in msg, msg


# -- 3. attributes stored as 1-element arrays ----------------------------------------------------

def test_attributes_stored_as_one_element_arrays_read_as_their_value(source, tmp_path):
    """Was: ``FastMRIFile.max`` array([0.00098]), MRITrainingSet "attrs/max: array([...]) is not
    a number", AcquiredMRISet (SSDU) "TypeError: only 0-dimensional arrays can be converted to
    Python scalars", and ``acquisition`` / ``patient_id`` "[b'CORPD_FBK']" / "['abc']" (another
    patient to the train/val overlap check than "abc")."""
    from mrirecon.training.data import MRITrainingSet, checked_volume_max
    from mrirecon.training.data_acquired import AcquiredMRISet

    plain = _copy(source, tmp_path / "plain" / "f.h5")
    wrapped = _copy(source, tmp_path / "wrapped" / "f.h5")
    with h5py.File(plain, "a") as h5:
        h5.attrs["patient_id"] = "abc"
        attrs = dict(h5.attrs)
    with h5py.File(wrapped, "a") as h5:
        h5.attrs["max"] = np.array([attrs["max"]])
        h5.attrs["norm"] = np.array([attrs["norm"]], dtype=np.float32)
        h5.attrs["acquisition"] = np.array([str(attrs["acquisition"]).encode()])  # |S9
        h5.attrs["patient_id"] = np.array(["abc"], dtype=h5py.string_dtype())
    with FastMRIFile(plain) as a, FastMRIFile(wrapped) as b:
        assert isinstance(b.max, float) and b.max == a.max
        assert b.norm == pytest.approx(a.norm, rel=EPS32)
        assert b.acquisition == a.acquisition == str(attrs["acquisition"]) != ""
        assert b.patient_id == a.patient_id == "abc"
        assert b.header.patient_id == "abc" and b.header.acquisition == a.header.acquisition
    assert checked_volume_max(wrapped) == checked_volume_max(plain) == attrs["max"]
    assert float(MRITrainingSet(wrapped.parent).get(0, mask_seed=0).max_value) == \
        pytest.approx(attrs["max"], rel=EPS32)
    sample = AcquiredMRISet(wrapped.parent, maps="learned").get(0)
    assert float(sample.max_value) == pytest.approx(attrs["max"], rel=EPS32)


def test_a_lodopab_geometry_stored_as_a_one_element_string_array_is_read(lodopab_part, tmp_path):
    """Was: "attrs/geometry: not a valid CT geometry (Expecting value: line 1 column 2)", while a
    1-element ``photons`` passed."""
    root = tmp_path / "ct"
    shutil.copytree(lodopab_part, root)
    for name in ("observation_test_000.hdf5", "ground_truth_test_000.hdf5"):
        with h5py.File(root / name, "a") as h5:
            if "geometry" in h5.attrs:
                h5.attrs["geometry"] = np.array([h5.attrs["geometry"]], dtype=h5py.string_dtype())
    got, expected = LoDoPaBFiles(root, "test"), LoDoPaBFiles(lodopab_part, "test")
    assert got.geometry == expected.geometry == lodopab_geometry((16, 16), 12, 23)
    np.testing.assert_array_equal(got.observation(1), expected.observation(1))


# -- 4. ISMRMRD xml stored as a scalar string -----------------------------------------------------

@pytest.mark.parametrize("storage", ["vlen", "fixed"])
def test_an_ismrmrd_xml_stored_as_a_scalar_string_is_read(ismrmrd_source, tmp_path, storage):
    """Was: "dataset/data: unreadable (Illegal slicing argument for scalar dataspace)": the
    wrong dataset named, and a valid file refused."""
    path = _copy(ismrmrd_source, tmp_path / "raw.h5")
    with h5py.File(path, "a") as h5:
        text = h5["dataset/xml"][0]
        del h5["dataset/xml"]
        if storage == "vlen":
            h5["dataset/xml"] = text.decode()  # h5py's scalar variable-length str
        else:
            h5["dataset/xml"] = np.bytes_(text)  # scalar |S<n>
        assert h5["dataset/xml"].shape == ()
    got, expected = read_ismrmrd(path), read_ismrmrd(ismrmrd_source)
    assert got.header == expected.header and torch.equal(got.data, expected.data)


def test_an_ismrmrd_xml_of_several_strings_is_refused_naming_it(ismrmrd_source, tmp_path):
    path = _copy(ismrmrd_source, tmp_path / "raw.h5")
    with h5py.File(path, "a") as h5:
        text = h5["dataset/xml"][0]
        del h5["dataset/xml"]
        h5["dataset/xml"] = np.array([text, text])
    with pytest.raises(DataFormatError, match=r"raw\.h5: dataset/xml: expected one string, got "
                                              r"shape \(2,\)"):
        read_ismrmrd(path)


# -- 5. a dangling soft link ---------------------------------------------------------------------

@pytest.mark.parametrize("target", ["/raw/kspace", "/kspace"])
def test_a_dangling_soft_link_is_refused_naming_it_and_its_target(source, tmp_path, target):
    """Was: "file: corrupt or unreadable (KeyError: 'Unable to synchronously open object
    (component not found)')", naming neither the link nor its target (``/kspace``: a link to
    itself, which HDF5 cannot follow)."""
    path = _copy(source, tmp_path / "f.h5")
    with h5py.File(path, "a") as h5:
        del h5["kspace"]
        h5["kspace"] = h5py.SoftLink(target)
    words = "does not exist in this file" if target == "/raw/kspace" else "cannot be followed"
    for read in (hdf5_layout, lambda p: FastMRIFile(p).read_slice(0)):
        with pytest.raises(DataFormatError, match=rf"f\.h5: kspace: is a soft link to {target}, "
                                                  f"which {words}"):
            read(path)


def test_a_soft_link_to_an_existing_dataset_still_reads(source, tmp_path):
    path = _copy(source, tmp_path / "f.h5")
    with h5py.File(path, "a") as h5:
        h5.move("kspace", "raw_kspace")
        h5["kspace"] = h5py.SoftLink("/raw_kspace")
    with FastMRIFile(path) as f, FastMRIFile(source) as g:
        assert torch.equal(f.read_slice(1).data, g.read_slice(1).data)
