"""Property tests: random corruptions of valid fastMRI, ISMRMRD, LoDoPaB and DICOM files.

The property, for every reader: it returns a valid object (finite data of the documented shape)
or raises :class:`~mrirecon.io.errors.DataFormatError` naming the file -- never another
exception type, never a hang (each example is time-boxed). Examples are derandomised so that the
suite is deterministic; the counts are small to keep it fast.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import re
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrirecon.io.errors import DataFormatError



def _import_all_mrirecon_modules() -> None:
    """Hypothesis (>= 6.1xx) also draws byte and string constants harvested from the project
    modules loaded at the time (``hypothesis.internal.conjecture.providers``), so without this
    the derandomised examples changed with the tests run before these (``pytest tests/io
    tests/robustness`` tried a corruption that ``make test`` did not). Loading every module
    first makes the examples a function of the tree alone."""
    import importlib
    import pkgutil

    import mrirecon

    for info in pkgutil.walk_packages(mrirecon.__path__, "mrirecon."):
        importlib.import_module(info.name)


_import_all_mrirecon_modules()

# MRIRECON_FUZZ_EXAMPLES=500 explores more (and randomly) when hunting for new failures
_EXTRA = int(os.environ.get("MRIRECON_FUZZ_EXAMPLES", "0"))
SETTINGS = settings(max_examples=_EXTRA or 30, deadline=None, derandomize=not _EXTRA,
                    database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                          HealthCheck.too_slow])
TIME_BOX_S = 20


class Hang(Exception):
    pass


@contextlib.contextmanager
def time_box(seconds: int = TIME_BOX_S):
    """Fail the example if the reader takes longer than ``seconds`` (a hang)."""
    def handler(signum, frame):
        raise Hang(f"reader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    # a reader stuck inside a C call (HDF5's heap loader once looped for ever) never returns to
    # the interpreter, so the alarm above cannot fire: then dump every thread's stack and end
    # the test run, rather than hang the suite
    faulthandler.dump_traceback_later(6 * seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# a corruption: (kind, position in [0, 1), payload); positions favour the first 4 kB, where
# the HDF5 superblock, object headers and DICOM meta / header live
corruption = st.tuples(
    st.sampled_from(["truncate", "flip", "overwrite", "zero"]),
    st.one_of(st.floats(0, 1, exclude_max=True), st.integers(0, 4095)),
    st.binary(min_size=1, max_size=32),
)


def corrupt(data: bytes, ops) -> bytes:
    buf = bytearray(data)
    for kind, where, payload in ops:
        if not buf:
            break
        pos = int(where * len(buf)) if isinstance(where, float) else min(where, len(buf) - 1)
        if kind == "truncate":
            del buf[pos:]
        elif kind == "flip":
            buf[pos] ^= payload[0] or 0xFF
        elif kind == "overwrite":
            buf[pos: pos + len(payload)] = payload
        else:
            buf[pos: pos + 8 * len(payload)] = bytes(min(8 * len(payload), len(buf) - pos))
    return bytes(buf)


def finite(t) -> bool:
    t = torch.as_tensor(t)
    return bool(torch.isfinite(torch.view_as_real(t) if t.is_complex() else t).all())


def check(read):
    """Run ``read()``; a valid result or a DataFormatError pass, anything else fails."""
    with time_box():
        try:
            read()
        except DataFormatError as err:
            assert err.file and err.field and str(err)


# ---- fastMRI --------------------------------------------------------------------------------

def read_fastmri_all(path: Path):
    from mrirecon.io import FastMRIFile

    with FastMRIFile(path) as f:
        n = len(f)
        header = f.header
        k = f.read_slice(n - 1)
        assert k.data.ndim == 4 and k.data.is_complex() and finite(k.data)
        assert k.data.shape[-2:] == tuple(header.encoded_matrix[:2])
        if k.mask is not None:
            assert k.mask.shape == (k.data.shape[-1],)
        if k.reference is not None:
            assert k.reference.ndim == 3


@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=4))
def test_fastmri_reader_on_corrupted_files(mri_file, tmp_path, ops):
    path = tmp_path / "c.h5"
    path.write_bytes(corrupt(mri_file.read_bytes(), ops))
    check(lambda: read_fastmri_all(path))


# ---- ISMRMRD --------------------------------------------------------------------------------

@SETTINGS
@given(ops=st.lists(corruption, min_size=1, max_size=4))
def test_ismrmrd_reader_on_corrupted_files(ismrmrd_file, tmp_path, ops):
    from mrirecon.io import read_ismrmrd

    path = tmp_path / "c.h5"
    path.write_bytes(corrupt(ismrmrd_file.read_bytes(), ops))

    def read():
        k = read_ismrmrd(path)
        assert k.data.ndim == 4 and finite(k.data)

    check(read)


# ---- LoDoPaB --------------------------------------------------------------------------------

@SETTINGS
@given(which=st.sampled_from(["observation", "ground_truth"]),
       ops=st.lists(corruption, min_size=1, max_size=4))
def test_lodopab_reader_on_corrupted_files(ct_dir, tmp_path, which, ops):
    from mrirecon.io.lodopab import LoDoPaBFiles

    root = tmp_path / "ct"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(ct_dir, root)
    target = root / f"{which}_test_000.hdf5"
    target.write_bytes(corrupt(target.read_bytes(), ops))

    def read():
        files = LoDoPaBFiles(root, "test")
        for i in range(len(files)):
            s = files.sinogram(i)
            assert s.data.ndim == 3 and finite(s.data)
            if files.ground_truth_files is not None:
                assert finite(files.attenuation(i).data)

    check(read)


# ---- DICOM ----------------------------------------------------------------------------------

@SETTINGS
@given(victim=st.integers(0, 2), ops=st.lists(corruption, min_size=1, max_size=4))
def test_dicom_reader_on_corrupted_files(dicom_series, tmp_path_factory, tmp_path, victim, ops):
    from mrirecon.io import read_dicom_series

    folder = tmp_path / "s"
    shutil.rmtree(folder, ignore_errors=True)
    paths = dicom_series(folder, "MR", seed=3)
    paths[victim].write_bytes(corrupt(paths[victim].read_bytes(), ops))

    def read():
        image = read_dicom_series(folder)
        assert image.data.shape == (3, 16, 16) and finite(image.data)  # never fewer slices

    check(read)


def test_corrupt_helper_changes_the_bytes():
    data = bytes(range(256)) * 4
    assert corrupt(data, [("truncate", 0.5, b"x")]) == data[:512]
    assert corrupt(data, [("zero", 10, b"ab")])[10:26] == bytes(16)
    assert corrupt(data, [("flip", 3, b"\x01")])[3] == data[3] ^ 1
    assert np.frombuffer(corrupt(data, [("overwrite", 0.0, b"zz")])[:2], np.uint8).tolist() == [122, 122]


# ---- structural corruptions: valid HDF5 holding wrong content -------------------------------

small_shape = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)
dtypes = st.sampled_from(["complex64", "complex128", "float32", "int16", "bool", "S4"])


@st.composite
def arrays(draw):
    shape, dtype = draw(small_shape), draw(dtypes)
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.sampled_from([0.0, 1.0, -2.5, np.nan, np.inf, 1e30]),
                           min_size=size, max_size=size))
    arr = np.asarray(values, dtype=np.float64).reshape(shape)
    if dtype == "S4":
        return arr.astype("S4")
    if dtype in ("int16", "bool"):
        return np.nan_to_num(arr, posinf=7, neginf=-7).clip(-7, 7).astype(dtype)
    return arr.astype(dtype)


@SETTINGS
@given(field=st.sampled_from(["kspace", "ismrmrd_header", "mask", "reconstruction_rss"]),
       value=st.one_of(st.none(), arrays(), st.sampled_from([
           b"", b"<ismrmrdHeader", b"\x00\xff", "<ismrmrdHeader xmlns='x'/>"])),
       matrix=st.one_of(st.none(), st.tuples(st.integers(-2, 70000), st.integers(-2, 70000))))
def test_fastmri_reader_on_wrong_content(mri_file, tmp_path, field, value, matrix):
    from tests.helpers import clone_h5

    import h5py

    if isinstance(value, bytes) and b"\x00" in value:
        value = np.void(value)  # opaque bytes (HDF5 strings cannot hold NUL)
    replace = {field: value}
    if matrix is not None:  # the header's encoded matrix set to other sizes
        with h5py.File(mri_file) as h5:
            xml = h5["ismrmrd_header"][()].decode()
        start = xml.index("<encodedSpace>")
        x0, x1 = xml.index("<x>", start), xml.index("</x>", start)
        y0, y1 = xml.index("<y>", start), xml.index("</y>", start)
        xml = xml[:x0] + f"<x>{matrix[0]}" + xml[x1:y0] + f"<y>{matrix[1]}" + xml[y1:]
        replace.setdefault("ismrmrd_header", xml.encode())
    path = clone_h5(mri_file, tmp_path / "w.h5", **replace)
    check(lambda: read_fastmri_all(path))


counters = st.sampled_from(["kspace_encode_step_1", "kspace_encode_step_2", "slice", "average",
                            "contrast", "phase", "repetition", "set", "segment"])
head_fields = st.sampled_from(["active_channels", "number_of_samples", "center_sample",
                               "discard_pre", "discard_post", "encoding_space_ref", "flags"])


@SETTINGS
@given(edits=st.lists(st.tuples(st.one_of(counters, head_fields), st.integers(0, 20),
                                st.sampled_from([0, 1, 2, 7, 100, 255, 40000, 65535])),
                      min_size=1, max_size=4))
def test_ismrmrd_reader_on_wrong_acquisition_headers(ismrmrd_file, tmp_path, edits):
    import h5py

    from mrirecon.io import read_ismrmrd

    path = tmp_path / "w.h5"
    shutil.copy(ismrmrd_file, path)
    with h5py.File(path, "r+") as h5:
        table = h5["dataset/data"]
        records = table[()]
        for name, row, value in edits:
            row %= len(records)
            head = records["head"]
            target = head["idx"] if name in head["idx"].dtype.names else head
            target[name][row] = np.asarray(value).astype(target[name].dtype)
        table[...] = records

    def read():
        k = read_ismrmrd(path)
        assert k.data.ndim == 4 and finite(k.data)

    check(read)


@SETTINGS
@given(which=st.sampled_from(["observation", "ground_truth"]), value=arrays(),
       geometry=st.one_of(st.none(), st.sampled_from(["", "{", "[]", '{"image_shape": 3}',
                                                      '{"image_shape": [-4, 8], "num_views": 0}'])))
def test_lodopab_reader_on_wrong_content(ct_dir, tmp_path, which, value, geometry):
    import h5py

    from tests.helpers import clone_h5
    from mrirecon.io.lodopab import LoDoPaBFiles

    root = tmp_path / "ct"
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(ct_dir, root)
    target = root / f"{which}_test_000.hdf5"
    clone_h5(ct_dir / target.name, target, data=value)
    if geometry is not None:
        with h5py.File(root / "observation_test_000.hdf5", "r+") as h5:
            h5.attrs["geometry"] = geometry

    def read():
        files = LoDoPaBFiles(root, "test")
        for i in range(len(files)):
            assert finite(files.sinogram(i).data)
            if files.ground_truth_files is not None:
                assert finite(files.attenuation(i).data)

    check(read)


dicom_values = st.sampled_from([0, 1, -1, 3, 16, 65535, 1e30, float("nan"), float("inf"), "",
                                "abc", "1\\2", "0\\0", "-1\\1", "0\\0\\0\\0\\0\\0",
                                "1\\0\\0\\1\\0\\0"])


@SETTINGS
@given(victim=st.integers(0, 2),
       edits=st.lists(st.tuples(st.sampled_from([
           "Rows", "Columns", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient",
           "RescaleSlope", "RescaleIntercept", "NumberOfFrames", "SamplesPerPixel",
           "BitsAllocated", "PixelRepresentation", "Modality", "SeriesInstanceUID",
           "SliceThickness", "SpacingBetweenSlices"]), dicom_values),
           min_size=1, max_size=3))
def test_dicom_reader_on_wrong_header_values(dicom_series, tmp_path, victim, edits):
    import warnings

    import pydicom

    from mrirecon.io import read_dicom_series
    from mrirecon.io.dicom import save_part10

    folder = tmp_path / "s"
    shutil.rmtree(folder, ignore_errors=True)
    paths = dicom_series(folder, "MR", seed=4)
    ds = pydicom.dcmread(paths[victim])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of invalid values as it stores them
        for keyword, value in edits:
            try:
                setattr(ds, keyword, value)
            except (TypeError, ValueError, OverflowError):
                continue  # pydicom refuses to hold it: not a file anyone can write
        try:
            save_part10(ds, paths[victim])
        except (TypeError, ValueError, OverflowError, Exception):  # noqa: BLE001
            return  # cannot be written, so cannot be read either

    def read():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = read_dicom_series(folder)
        assert image.data.shape[0] == 3 and finite(image.data)

    check(read)


# ---- a dataset stored as an HDF5 group (h5py's create_group by accident) ---------------------

def _group_in_place_of(path: Path, key: str) -> None:
    import h5py

    with h5py.File(path, "r+") as h5:
        if key in h5:
            del h5[key]
        h5.create_group(key).create_dataset("0", data=[1.0])


def _assert_group_error(err, path: Path, key: str) -> None:
    assert (err.file, err.field) == (str(path), key), str(err)
    assert err.problem == "is a group, expected a dataset", str(err)


@pytest.mark.parametrize("key", ["kspace", "ismrmrd_header", "mask", "reconstruction_rss",
                                 "reconstruction_esc"])
def test_fastmri_dataset_stored_as_a_group_is_named(mri_file, tmp_path, key):
    """Every dataset the fastMRI reader reads, stored as a group: a DataFormatError naming the
    file and the key. ``reconstruction_rss`` raised "AttributeError: 'Group' object has no
    attribute 'ndim'"; ``mask`` / ``ismrmrd_header`` "corrupt or unreadable (TypeError: ...)"."""
    import h5py

    from mrirecon.io import FastMRIFile, write_fastmri

    path = tmp_path / "g.h5"
    if key == "reconstruction_esc":  # a single-coil file (its reference key)
        with FastMRIFile(mri_file) as f:
            k = f.read_volume()
            xml = h5py.File(mri_file)["ismrmrd_header"][()].decode()
        # one coil of each slice: its header names one channel (2 of 2 slices read as a slice
        # without its slice axis, which write_fastmri refuses)
        xml = re.sub(r"<receiverChannels>\d+</receiverChannels>",
                     "<receiverChannels>1</receiverChannels>", xml)
        write_fastmri(path, k.data[:, 0].numpy(), xml,
                      reference={key: k.reference.numpy()})
    else:
        shutil.copy(mri_file, path)
    _group_in_place_of(path, key)
    with pytest.raises(DataFormatError) as info:
        read_fastmri_all(path)
    _assert_group_error(info.value, path, key)


@pytest.mark.parametrize("which, key", [("observation", "data"), ("ground_truth", "data"),
                                        ("ground_truth", "hu")])
def test_lodopab_dataset_stored_as_a_group_is_named(ct_dir, tmp_path, which, key):
    """The same for LoDoPaB: a ground truth's ``data`` as a group said "missing dataset; found
    ['data', 'hu']"."""
    from mrirecon.io.lodopab import LoDoPaBFiles

    root = tmp_path / "ct"
    shutil.copytree(ct_dir, root)
    target = root / f"{which}_test_000.hdf5"
    _group_in_place_of(target, key)
    with pytest.raises(DataFormatError) as info:
        files = LoDoPaBFiles(root, "test")
        files.sinogram(0), files.attenuation(0), files.hu(0)
    _assert_group_error(info.value, target, key)
