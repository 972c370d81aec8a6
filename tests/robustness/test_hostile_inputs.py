"""No silent wrong results and bounded resources: hostile input files through the readers and
the pipeline. Every case ends in a clear error naming the file (and field), never an image."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import clone_h5, fresh_python
from mrirecon.io.errors import DataFormatError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import expand_inputs, run_pipeline

FAST_MRI = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[hdf5]", "report.enabled=false"]


def run_one(config, path: Path, out: Path) -> dict:
    """Run ``config`` on one input; returns that input's provenance entry."""
    code = run_pipeline(config, [str(path)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert code == (0 if entry["status"] == "ok" else 1)
    if entry["status"] == "failed":  # nothing half-written under the final names
        assert not (out / "reconstructions").exists() or not any((out / "reconstructions").iterdir())
    return entry


def mri_config(*extra):
    return load_pipeline("mri_cs", FAST_MRI + list(extra))[0]


def _header_with(xml: bytes, old: bytes, new: bytes) -> bytes:
    assert old in xml
    return xml.replace(old, new, 1)


# ---- fastMRI content ---------------------------------------------------------------------

def test_header_matrix_that_does_not_match_kspace_is_an_error(mri_file, tmp_path):
    with h5py.File(mri_file) as h5:
        xml = h5["ismrmrd_header"][()]
        w = h5["kspace"].shape[-1]
    start = xml.index(b"<encodedSpace>")
    y_at = xml.index(f"<y>{w}</y>".encode(), start)
    bad_xml = xml[:y_at] + f"<y>{w + 8}</y>".encode() + xml[y_at + len(f"<y>{w}</y>"):]
    bad = clone_h5(mri_file, tmp_path / "bad.h5", ismrmrd_header=bad_xml)
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "failed"
    assert "encodedSpace/matrixSize" in entry["error"] and f"{w + 8}" in entry["error"]
    assert "W) = (" in entry["error"] and "bad.h5" in entry["error"]


@pytest.mark.parametrize("case, message", [
    ("zero_mask", "sampling mask selects no k-space column"),
    ("zero_kspace", "k-space is all zero"),
    ("nan_kspace", "NaN or Inf samples"),
    ("inf_reference", "reconstruction_rss, or reconstruction_esc of a single-coil file) holds NaN"),
])
def test_inputs_that_cannot_be_reconstructed_fail_with_the_reason(mri_file, tmp_path, case, message):
    with h5py.File(mri_file) as h5:
        kspace = h5["kspace"][()]
        ref = h5["reconstruction_rss"][()]
    replace = {
        "zero_mask": {"mask": np.zeros(kspace.shape[-1], bool)},
        "zero_kspace": {"kspace": np.zeros_like(kspace)},
        "nan_kspace": {"kspace": np.where(np.arange(kspace.shape[-1]) == 3, np.nan, kspace).astype(kspace.dtype)},
        "inf_reference": {"reconstruction_rss": np.where(ref > ref.mean(), np.inf, ref).astype(np.float32)},
    }[case]
    bad = clone_h5(mri_file, tmp_path / f"{case}.h5", **replace)
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "failed" and message in entry["error"]
    assert f"{case}.h5" in entry["error"]


def test_a_complex_reference_is_refused_not_scored_by_its_real_part(mri_file, tmp_path):
    """A complex ``reconstruction_rss`` (the coil-combined image, not its magnitude) was cast to
    its real part: exit 0, 32.15 instead of 40.39 dB on the simulated brain, and only torch's
    warning about discarding the imaginary part, naming no file."""
    from mrirecon.io import FastMRIFile

    with h5py.File(mri_file) as h5:
        ref = h5["reconstruction_rss"][()]
    phase = np.exp(1j * np.linspace(0, np.pi, ref.size)).reshape(ref.shape)
    bad = clone_h5(mri_file, tmp_path / "cref.h5",
                   reconstruction_rss=(ref * phase).astype(np.complex64))
    entry = run_one(mri_config(), bad, tmp_path / "out")
    assert entry["status"] == "failed" and not entry["metrics"]
    assert "cref.h5: reconstruction_rss: expected real magnitude images, got complex64 (complex: " \
           "store its magnitude, abs)" in entry["error"]
    with FastMRIFile(bad) as f, pytest.raises(DataFormatError, match="reconstruction_rss"):
        f.reference(0)
    # a real reference in any numeric storage is still read as stored
    good = clone_h5(mri_file, tmp_path / "f64.h5", reconstruction_rss=ref.astype(">f8"))
    with FastMRIFile(good) as f:
        assert torch.equal(f.reference(1), torch.from_numpy(ref[1].astype(np.float64)))


def test_all_zero_kspace_is_refused_by_the_library_too():
    import torch

    from mrirecon import recon

    with pytest.raises(ValueError, match="all zero"):
        recon.run("zero_filled_rss", torch.zeros(2, 8, 8, dtype=torch.complex64))


# ---- modality mix-ups --------------------------------------------------------------------

def test_ct_pipeline_refuses_an_mr_series_and_mri_pipeline_refuses_ct(dicom_series, ct_dir, tmp_path):
    dicom_series(tmp_path / "mr", "MR")
    ct = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(ct, tmp_path / "mr", tmp_path / "out1")
    assert entry["status"] == "failed" and "needs a CT series" in entry["error"]
    assert not (tmp_path / "out1" / "dicom").exists()
    entry = run_one(mri_config(), ct_dir / "observation_test_000.hdf5", tmp_path / "out2")
    assert entry["status"] == "failed" and "MRI pipeline needs fastMRI, ISMRMRD or BART" in entry["error"]


def test_ct_pipeline_names_rescale_type_of_a_ct_series_not_in_hu(tmp_path):
    # before: a CT series with RescaleType US (attenuation) was refused with "found Modality 'CT'
    # (attenuation); use an MRI pipeline for MR data", advice for another case
    from mrirecon.containers import Image
    from mrirecon.io import write_dicom_series
    from tests.robustness.conftest import _image

    ct = _image("CT")
    mu = Image(0.02 * (1 + ct.data / 1000), ct.geometry, kind="attenuation", modality="CT")
    write_dicom_series(mu, tmp_path / "mu")
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, tmp_path / "mu", tmp_path / "out")
    assert entry["status"] == "failed"
    assert entry["error"] == (f"ValueError: {tmp_path / 'mu'}: RescaleType: is not HU, so the CT "
                              "values are read as attenuation; a CT pipeline needs a series in "
                              "Hounsfield units (RescaleType HU or absent): export it in HU")
    assert not (tmp_path / "out" / "reconstructions").exists()


def test_a_damaged_lodopab_file_fails_alone(ct_dir, tmp_path):
    """One damaged observation file (or one of another detector count) beside a good one made
    every file of the folder fail: each input now reads only its own file and reference."""
    folder = tmp_path / "part"
    shutil.copytree(ct_dir, folder)
    (folder / "observation_test_001.hdf5").write_bytes(b"not HDF5" * 64)
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    assert run_pipeline(config, [str(folder)], tmp_path / "out", progress=False) == 1
    files = {f["input"].split("/")[-1]: f for f in
             json.loads((tmp_path / "out" / "provenance.json").read_text())["files"]}
    assert files["observation_test_000.hdf5"]["status"] == "ok"
    assert files["observation_test_000.hdf5"]["metrics"]["psnr"] > 15
    assert files["observation_test_001.hdf5"]["status"] == "failed"
    with h5py.File(folder / "observation_test_001.hdf5", "w") as h5:  # another geometry
        h5["data"] = np.zeros((1, 7, 9), np.float32)
    entry = run_one(config, folder / "observation_test_000.hdf5", tmp_path / "out2")
    assert entry["status"] == "ok"


def test_a_ct_series_with_rectangular_pixels_is_refused(tmp_path):
    """The projector's pixels are square: a 0.5 x 0.8 mm series was projected with 0.5 mm
    columns (the simulated sinogram's physics off by 1.6x across the columns), no word."""
    from mrirecon.containers import Image, ImageGeometry
    from mrirecon.io import write_dicom_series

    g = ImageGeometry(spacing=(2.0, 0.5, 0.8), orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    write_dicom_series(Image(torch.rand(2, 16, 16) * 1000 - 800, g, kind="hu", modality="CT"),
                       tmp_path / "ct")
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, tmp_path / "ct", tmp_path / "out")
    assert entry["status"] == "failed" and "PixelSpacing 0.5 x 0.8 mm" in entry["error"]


@pytest.mark.parametrize("case, message", [
    ("flipped", "mean line integral is negative"),  # log(I / I0) stored instead of -log
    ("zero", "the sinogram is all zero"),
    # a sinogram scaled far beyond any transmission (x 1e30: images of 1e33 HU before the check)
    ("huge", "post-log line integrals -log(I / I0) stay below 1000"),
    # every ray the same (was exit 0 and images of 1.5-61 kHU from ct_learned)
    ("constant", "the sinogram is constant"),
])
def test_ct_sinograms_that_cannot_be_post_log_data_fail_with_the_reason(ct_dir, tmp_path, case,
                                                                          message):
    root = tmp_path / case
    shutil.copytree(ct_dir, root)
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        data = h5["data"][...]
        h5["data"][...] = {"flipped": -data, "zero": 0 * data, "huge": 1e30 * data,
                           "constant": np.full_like(data, data.mean())}[case]
    ct = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(ct, obs, tmp_path / "out")
    assert entry["status"] == "failed" and message in entry["error"]
    assert "observation_test_000.hdf5: slice 0" in entry["error"]


def _ct_warnings(ct_dir, tmp_path, name, change) -> list[str]:
    root = tmp_path / name
    shutil.copytree(ct_dir, root)
    obs = root / "observation_test_000.hdf5"
    with h5py.File(obs, "r+") as h5:
        h5["data"][...] = change(h5["data"][...])
    ct = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(ct, obs, tmp_path / (name + "_out"))
    assert entry["status"] == "ok"
    return entry["warnings"]


def test_truncated_projections_and_an_air_scan_are_reported_not_refused(ct_dir, tmp_path):
    """An object wider than the detector (here: a water disc of 1.5 x the detector's width added
    to the phantoms' projections, its exact chords) gives every method a bright rim; the run
    goes on, and the warning names the file, the slices and the level. A sinogram of
    line integrals below 0.5 mm of water is an air scan (or data scaled down)."""
    assert not _ct_warnings(ct_dir, tmp_path, "plain", lambda d: d)  # the phantoms: air at the edges

    def wide_disc(data):
        n = data.shape[-1]
        s = (np.arange(n) - (n - 1) / 2) / (n / 2)  # detector position, edges at +-1
        chord = 2 * np.sqrt(1.5 ** 2 - s ** 2)  # a centred disc of radius 1.5 half-widths
        return data + 0.2 * data.max() * chord / chord.max()

    (msg,) = _ct_warnings(ct_dir, tmp_path, "wide", wide_disc)
    assert msg.startswith("observation_test_000.hdf5: all 2 slices: the projections look truncated")
    assert "detector bins read a mean line integral of" in msg
    air = _ct_warnings(ct_dir, tmp_path, "air", lambda d: d * 1e-30)
    (msg,) = [m for m in air if "air scan" in m]
    assert "all 2 slices: the projection averaged over the" in msg
    # the ground truth was not scaled down with the data: the metrics say little, and the run says so
    assert len(air) == 2 and "ground_truth_test: the reference's scale is" in air[1 - air.index(msg)]


# ---- DICOM series with a bad file --------------------------------------------------------

def test_truncated_file_in_a_dicom_series_is_an_error_with_the_count(dicom_series, tmp_path):
    from mrirecon.io import read_dicom_series

    paths = dicom_series(tmp_path / "s", "CT")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 3])  # truncated inside the header
    with pytest.raises(DataFormatError, match=r"slice_0002.dcm: SeriesInstanceUID: missing"):
        read_dicom_series(tmp_path / "s")
    paths[1].write_bytes(data[:200])  # truncated inside the file meta: cannot be parsed
    with pytest.raises(DataFormatError, match=r"1 of 3 files are unreadable \(first: slice_0002.dcm"):
        read_dicom_series(tmp_path / "s")
    ct = load_pipeline("ct_fbp", ["export.formats=[hdf5,dicom]", "report.enabled=false"])[0]
    entry = run_one(ct, tmp_path / "s", tmp_path / "out")
    assert entry["status"] == "failed" and "1 of 3 files are unreadable" in entry["error"]
    assert not (tmp_path / "out" / "dicom").exists()


def test_truncated_pixel_data_is_an_error(dicom_series, tmp_path):
    from mrirecon.io import read_dicom_series

    paths = dicom_series(tmp_path / "s", "MR")
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[:-100])  # pixels cut short
    with pytest.raises(DataFormatError, match="slice_0003.dcm"):
        read_dicom_series(tmp_path / "s")


def test_a_dicom_series_in_two_frames_of_reference_is_refused(dicom_series, tmp_path):
    """One SeriesInstanceUID whose slices carry two FrameOfReferenceUID values (positions in two
    patient coordinate systems) was stacked into one volume, exit 0; now the series is refused
    naming the folder, the element and each value with its slice count. A slice without the
    element is not counted."""
    import pydicom

    from mrirecon.io import read_dicom_series
    from tests.helpers import rewrite_dicom

    paths = dicom_series(tmp_path / "s", "CT")
    frame = str(pydicom.dcmread(paths[0]).FrameOfReferenceUID)
    other = "1.2.826.0.1.3680043.8.498.1"
    rewrite_dicom(paths[2], FrameOfReferenceUID=other)
    frames = sorted([(frame, f"2 slices, first: {paths[0].name}"),
                     (other, f"1 slice, first: {paths[2].name}")])  # listed in UID order
    expected = (f"{tmp_path / 's'}: FrameOfReferenceUID: the series' slices lie in 2 frames of "
                "reference: " + ", ".join(f"{uid} ({n})" for uid, n in frames))
    with pytest.raises(DataFormatError) as err:
        read_dicom_series(tmp_path / "s")
    assert expected in str(err.value) and "cannot be stacked into one volume" in str(err.value)
    ct = load_pipeline("ct_fbp", ["export.formats=[hdf5,dicom]", "report.enabled=false"])[0]
    entry = run_one(ct, tmp_path / "s", tmp_path / "out")
    assert entry["status"] == "failed" and expected in entry["error"]
    assert not (tmp_path / "out" / "dicom").exists()
    rewrite_dicom(paths[2], FrameOfReferenceUID=None)  # absent: the other two agree
    assert read_dicom_series(tmp_path / "s").data.shape == (3, 16, 16)


def test_non_dicom_files_beside_a_series_are_ignored(dicom_series, tmp_path):
    from mrirecon.io import read_dicom_series

    dicom_series(tmp_path / "s", "MR")
    (tmp_path / "s" / "README").write_text("notes")
    assert read_dicom_series(tmp_path / "s").data.shape == (3, 16, 16)


# ---- ISMRMRD -------------------------------------------------------------------------------

def test_per_slice_masks_from_ismrmrd_run_in_the_pipeline(ismrmrd_file, tmp_path):
    from mrirecon.io import read_ismrmrd

    k = read_ismrmrd(ismrmrd_file)
    assert k.mask is not None and k.mask.shape == (2, 12) and not bool((k.mask[0] == k.mask[1]).all())
    entry = run_one(mri_config(), ismrmrd_file, tmp_path / "out")
    assert entry["status"] == "ok" and entry["slices"] == 2
    with h5py.File(tmp_path / "out" / "reconstructions" / "raw.h5") as h5:
        rec = h5["reconstruction"][()]
    assert np.isfinite(rec).all() and (rec.reshape(2, -1).max(axis=1) > 0).all()


def _edit_acquisitions(path: Path, edit) -> None:
    with h5py.File(path, "r+") as h5:
        table = h5["dataset/data"]
        records = table[()]
        edit(records)
        table[...] = records


def _read_in_child(path: Path, reader: str) -> str:
    """``reader(path)`` in a fresh interpreter (a reader stuck inside HDF5 cannot be interrupted
    here): ``"ok"`` or the error's type and message; fails the test after 60 s."""
    return fresh_python(f"from mrirecon.io import {reader}\n"
                        f"try:\n    {reader}({str(path)!r}); print('ok')\n"
                        "except Exception as e:\n    print(type(e).__name__, e)", timeout=60)


def test_ismrmrd_heap_corruptions_that_hang_hdf5_are_refused(ismrmrd_file, tmp_path):
    """HDF5 2.0 (h5py 3.16) loops for ever on a global heap collection whose free space has size
    0; the reader checks heap IDs first (found by the fuzz tests), also one naming no collection."""
    import struct

    raw = ismrmrd_file.read_bytes()
    at = raw.index(b"GCOL")  # the first collection: the xml header's
    size, pos = struct.unpack_from("<Q", raw, at + 8)[0], at + 16
    while struct.unpack_from("<H", raw, pos)[0] != 0:  # walk the objects to the free space
        pos += 16 + (struct.unpack_from("<Q", raw, pos + 8)[0] + 7) // 8 * 8
    assert pos < at + size
    bad = bytearray(raw)
    bad[pos + 8:pos + 16] = bytes(8)
    (tmp_path / "free.h5").write_bytes(bytes(bad))
    out = _read_in_child(tmp_path / "free.h5", "read_ismrmrd")
    assert out.startswith("DataFormatError") and "free.h5: dataset/xml" in out
    assert f"collection at {at} has a free space of 0 bytes" in out
    # an acquisition whose samples name address 0 (the superblock), not a collection
    with h5py.File(ismrmrd_file) as h5:
        table = h5["dataset/data"]
        tid = table.id.get_type()
        member = [tid.get_member_name(i) for i in range(tid.get_nmembers())].index(b"data")
        where = table.id.get_chunk_info(3).byte_offset + tid.get_member_offset(member)
    bad = bytearray(raw)
    assert struct.unpack_from("<I", raw, where)[0] > 0  # the element count
    bad[where + 4:where + 12] = bytes(8)
    (tmp_path / "addr.h5").write_bytes(bytes(bad))
    out = _read_in_child(tmp_path / "addr.h5", "read_ismrmrd")
    assert out.startswith("DataFormatError") and "addr.h5: dataset/data" in out
    assert "no global heap collection at address 0" in out


def test_ismrmrd_index_beyond_the_header_limits_is_refused(ismrmrd_file, tmp_path):
    from mrirecon.io import read_ismrmrd

    bad = tmp_path / "bad.h5"
    shutil.copy(ismrmrd_file, bad)
    _edit_acquisitions(bad, lambda r: r["head"]["idx"]["slice"].__setitem__(3, 40000))
    with pytest.raises(DataFormatError, match=r"idx.slice: 40000 exceeds the header's encodingLimits/slice/maximum = 1"):
        read_ismrmrd(bad)


def test_ismrmrd_grid_larger_than_memory_is_refused_before_allocating(ismrmrd_file, tmp_path):
    """A 1-MB file whose indices and header (no limits) would ask for tens of GiB."""
    from mrirecon.io import read_ismrmrd

    bad = tmp_path / "huge.h5"
    shutil.copy(ismrmrd_file, bad)
    with h5py.File(bad, "r+") as h5:
        xml = h5["dataset/xml"][0]
        xml = xml.decode() if isinstance(xml, bytes) else xml
        start, end = xml.index("<slice>"), xml.index("</slice>") + len("</slice>")
        xml = xml[:start] + xml[end:]
        enc = xml.index("<encodedSpace>")
        xml = xml[:enc] + xml[enc:].replace("<x>16</x>", "<x>4096</x>", 1).replace(
            "<y>12</y>", "<y>4096</y>", 1)
        assert "<x>4096</x>" in xml and "<y>4096</y>" in xml
        del h5["dataset/xml"]
        h5.create_dataset("dataset/xml", data=[xml.encode()], dtype=h5py.string_dtype())
    _edit_acquisitions(bad, lambda r: r["head"]["idx"]["slice"].__setitem__(3, 65535))
    with pytest.raises(DataFormatError, match=r"would fill a k-space grid .* GiB"):
        read_ismrmrd(bad)


# ---- special files and absurd sizes --------------------------------------------------------

def _refused_quickly(fn, *args):
    """Call ``fn``; fail (instead of hanging the suite) if it blocks for 20 s."""
    box = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # noqa: BLE001
            box["error"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"{fn.__name__} blocked on a special file"
    return box.get("error")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_input_is_refused_not_opened(tmp_path):
    from mrirecon.io import FastMRIFile, read_ismrmrd
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.io.probe import hdf5_layout

    fifo = tmp_path / "observation_test_000.hdf5"
    os.mkfifo(fifo)
    err = _refused_quickly(expand_inputs, [str(fifo)])
    assert isinstance(err, ValueError) and "not a regular file" in str(err)
    for reader in (hdf5_layout, read_ismrmrd, lambda p: FastMRIFile(p).header,
                   lambda p: LoDoPaBFiles(p.parent, "test")):
        err = _refused_quickly(reader, fifo)
        assert isinstance(err, DataFormatError) and "FIFO" in str(err), err
    # a FIFO inside an input folder is never taken as an input
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "x.h5")
    err = _refused_quickly(expand_inputs, [str(tmp_path / "d")])
    assert isinstance(err, FileNotFoundError)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_read_nifti_names_a_folder_or_fifo_in_place_of_the_file(tmp_path):
    # before: both were reported as missing ("read_nifti: P does not exist", FileNotFoundError)
    from mrirecon.io import read_nifti

    (tmp_path / "folder.nii").mkdir()
    os.mkfifo(tmp_path / "fifo.nii.gz")
    err = _refused_quickly(read_nifti, tmp_path / "folder.nii")
    assert isinstance(err, DataFormatError)
    assert str(err) == f"{tmp_path / 'folder.nii'}: file: is a folder; pass a data file"
    err = _refused_quickly(read_nifti, tmp_path / "fifo.nii.gz")
    assert isinstance(err, DataFormatError)
    assert str(err) == (f"{tmp_path / 'fifo.nii.gz'}: file: is not a regular file (FIFO, socket "
                        "or device); pass a data file")
    with pytest.raises(FileNotFoundError, match="does not exist"):  # a missing file stays so
        read_nifti(tmp_path / "missing.nii")


def test_a_missing_fastmri_file_is_named_like_a_missing_ismrmrd_file(tmp_path):
    # before: h5py's raw "[Errno 2] Unable to synchronously open file (unable to open file: name =
    # '…', errno = 2, error message = 'No such file or directory', flags = 0, o_flags = 0)"
    from mrirecon.io import FastMRIFile, read_fastmri, read_ismrmrd

    missing = tmp_path / "missing.h5"
    for reader in (read_fastmri, lambda p: FastMRIFile(p).header):
        with pytest.raises(FileNotFoundError) as info:
            reader(missing)
        assert str(info.value) == f"{missing}: no such fastMRI file"
    with pytest.raises(FileNotFoundError, match=f"^{missing}: no such ISMRMRD file$"):
        read_ismrmrd(missing)


def test_simulate_with_absurd_sizes_fails_before_allocating(tmp_path):
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    with pytest.raises(ValueError, match=r"simulate_mri: .*GiB of memory"):
        simulate_mri_dataset(tmp_path / "m", volumes=1, slices=4000, coils=64, size=(4096, 4096))
    with pytest.raises(ValueError, match=r"simulate_ct: .*GiB of memory"):
        simulate_ct_dataset(tmp_path / "c", size=100_000, samples=10)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_fastmri_dataset_shape_larger_than_memory_is_refused(tmp_path):
    """A 1.5-kB file (chunked, compressed, never written) declaring a 4.7-TiB k-space slice."""
    from mrirecon.io import FastMRIFile

    path = tmp_path / "bomb.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("kspace", shape=(1, 64, 100_000, 100_000), dtype=np.complex64,
                          chunks=(1, 1, 64, 64), compression="gzip")
    assert path.stat().st_size < 10_000
    with pytest.raises(DataFormatError, match=r"bomb.h5: kspace: one slice of shape .* GiB"):
        FastMRIFile(path).read_slice(0)


# ---- k-space scale and precision: any scanner's units, fastMRI's complex128 ----------------

@pytest.mark.parametrize("factor", [2.0 ** 100, 2.0 ** -70])  # ~1e30 / ~1e-21, exact in binary
def test_espirit_maps_do_not_depend_on_the_kspace_scale(mri_file, factor):
    # the calibration Gram matrix overflowed / underflowed float32 there and no kernel survived
    # (an MKL "inconsistent configuration" error from an empty FFT); a power-of-two scale keeps
    # every sample's mantissa, so the maps must be bit-identical
    import torch

    from mrirecon.calib.espirit import espirit_maps

    with h5py.File(mri_file, "r") as h5:
        k = torch.from_numpy(h5["kspace"][0])
    ref = espirit_maps(k, calib_width=12, kernel_width=4)
    assert torch.equal(espirit_maps(k * factor, calib_width=12, kernel_width=4), ref)


def test_complex128_kspace_runs_through_a_learned_model(mri_file, tmp_path):
    # valid fastMRI data may be stored as complex128; float32 weights used to fail on them
    with h5py.File(mri_file, "r") as h5:
        k = h5["kspace"][...].astype(np.complex128)
    c128 = clone_h5(mri_file, tmp_path / "in" / "c128.h5", kspace=k)
    config = load_pipeline("mri_modl", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    images = []
    for name, path in (("c64", mri_file), ("c128", c128)):
        entry = run_one(config, path, tmp_path / name)
        assert entry["status"] == "ok", entry.get("error")
        (rec,) = (tmp_path / name / "reconstructions").rglob("*.h5")
        with h5py.File(rec, "r") as h5:
            images.append(h5["reconstruction"][...])
    np.testing.assert_allclose(images[1], images[0], rtol=0,
                               atol=1e3 * np.finfo(np.float32).eps * np.abs(images[0]).max())


@pytest.mark.parametrize("factor", [2.0 ** 70, 2.0 ** -70])
def test_a_learned_pipeline_follows_any_kspace_scale(mri_file, tmp_path, factor):
    # issue 14: a model's output scaling must not depend on the scanner's arbitrary k-space scale;
    # a 1e-12 floor in the models' normalisation left images at ~1e-20 data 1e9 too bright
    with h5py.File(mri_file, "r") as h5:
        k = h5["kspace"][...]
    config = load_pipeline("mri_modl", ["export.formats=[hdf5]", "report.enabled=false",
                                        "evaluate.enabled=false"])[0]
    _assert_follows_scale(config, mri_file, k, factor, tmp_path)


def _assert_follows_scale(config, mri_file, k, factor, tmp_path) -> None:
    """The pipeline's image of the k-space times ``factor`` is its image of the file times
    ``factor``, to float32 rounding (a thousand eps of the peak through the iterations)."""
    scaled = clone_h5(mri_file, tmp_path / "in" / "scaled.h5", kspace=(k * factor).astype(k.dtype))
    images = []
    for name, path in (("base", mri_file), ("scaled", scaled)):
        assert run_one(config, path, tmp_path / name)["status"] == "ok"
        (rec,) = (tmp_path / name / "reconstructions").rglob("*.h5")
        with h5py.File(rec, "r") as h5:
            images.append(h5["reconstruction"][...].astype(np.float64))
    base = images[0] * factor
    assert np.abs(base).max() > 0
    np.testing.assert_allclose(images[1], base, rtol=0,
                               atol=1e3 * np.finfo(np.float32).eps * np.abs(base).max())


@pytest.mark.parametrize("method", ["l1_wavelet", "cg_sense", "zero_filled_rss"])
def test_a_classical_pipeline_follows_a_tiny_kspace_scale(mri_file, tmp_path, method):
    # before: recon.data_scale squared the coil images, whose |x|^2 underflow float32 at
    # ~1e-21 data, so the scale fell back to 1: lam stayed absolute and the CG / RSS ran on
    # squares that underflow; every method wrote an all-zero image with exit 0 (NMSE 1)
    from mrirecon.recon import data_scale

    factor = 2.0 ** -70  # exact in binary: every sample keeps its mantissa
    with h5py.File(mri_file, "r") as h5:
        k = h5["kspace"][...]
    assert data_scale(torch.from_numpy(k[0] * factor)) == data_scale(torch.from_numpy(k[0])) * factor
    params = "{lam: 0.001, iterations: 5}" if method == "l1_wavelet" else "{}"
    config = load_pipeline("mri_cs", ["export.formats=[hdf5]", "report.enabled=false",
                                      "evaluate.enabled=false", f"reconstruct.method={method}",
                                      f"reconstruct.params={params}"])[0]
    _assert_follows_scale(config, mri_file, k, factor, tmp_path)


@pytest.mark.parametrize("n", [4, 6, 7])  # 7: the window fits, metrics as usual
def test_images_smaller_than_the_ssim_window_are_written_without_metrics(tmp_path, n):
    # before: a 4 x 4 CT series reconstructed, then the input failed in the metrics with
    # "ValueError: ssim_map: win_size 7 exceeds image size (4, 4)", naming no file or field,
    # and nothing was written
    from mrirecon.containers import Image
    from mrirecon.io import write_dicom_series
    from tests.robustness.conftest import _image

    geometry = _image("CT").geometry
    hu = torch.rand(1, n, n, generator=torch.Generator().manual_seed(0)) * 1000 - 500
    write_dicom_series(Image(hu, geometry, kind="hu", modality="CT"), tmp_path / "in" / "tiny")
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5]", "report.enabled=false"])[0]
    entry = run_one(config, tmp_path / "in" / "tiny", tmp_path / "out")
    assert entry["status"] == "ok", entry["error"]
    said = (f"tiny: reference: no metrics: the images are {n} x {n}, smaller than the 7 x 7 "
            "window of fastMRI's SSIM")
    assert (entry["metrics"] == {}) == (said in entry["warnings"]) == (n < 7), entry["metrics"]
    with h5py.File(tmp_path / "out" / "reconstructions" / "tiny.h5", "r") as h5:
        rec = h5["reconstruction"][...]
    assert rec.shape == (1, n, n) and np.isfinite(rec).all() and np.abs(rec).max() > 0
