"""fastMRI HDF5 reader/writers against the reference ``fastmri`` package."""

import argparse

import h5py
import numpy as np
import pytest
import torch
from fastmri import evaluate as fm_evaluate
from fastmri.data import SliceDataset as FMSliceDataset
from fastmri.data.subsample import RandomMaskFunc
from fastmri.data.transforms import VarNetDataTransform

from mrirecon.data import Header
from mrirecon.io.errors import DataFormatError
from mrirecon.io.fastmri import FastMRIFile, read_fastmri, write_fastmri, write_reconstruction
from mrirecon.io.ismrmrd_header import header_to_xml

SLICES, COILS, H, W = 3, 4, 32, 24


def make_header(**changes):
    h = Header(encoded_matrix=(H, W, 1), recon_matrix=(16, 16, 1),
               encoded_fov_mm=(200.0, 150.0, 3.0), recon_fov_mm=(100.0, 100.0, 3.0),
               padding_left=2, padding_right=21, acquisition="CORPD_FBK",
               field_strength_t=2.89, repetition_time_ms=2800.0, echo_time_ms=30.0,
               flip_angle_deg=90.0, patient_id="a1b2c3")
    return h.with_(**changes)


def volume(seed, shape):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.fixture
def multicoil(tmp_path):
    root = tmp_path / "multicoil"
    ks = volume(0, (SLICES, COILS, H, W))
    ref = np.abs(np.random.default_rng(1).normal(size=(SLICES, 16, 16))).astype(np.float32)
    path = write_fastmri(root / "file1.h5", ks, make_header(), reference=ref)
    return path, ks, ref


def test_round_trip_multicoil(multicoil):
    path, ks, ref = multicoil
    with FastMRIFile(path) as f:
        assert len(f) == SLICES and f.shape == (SLICES, COILS, H, W) and f.is_multicoil
        assert f.header == make_header(num_coils=COILS)
        assert f.padding == (2, 21)
        assert f.acquisition == "CORPD_FBK" and f.patient_id == "a1b2c3"
        assert f.max == pytest.approx(ref.max()) and f.norm == pytest.approx(np.linalg.norm(ref))
        assert f.acceleration is None and f.mask is None
        k = f.read_slice(1)
        assert k.data.shape == (1, COILS, H, W) and k.data.dtype == torch.complex64
        assert torch.equal(k.data[0], torch.from_numpy(ks[1]))
        assert torch.equal(k.reference[0], torch.from_numpy(ref[1]))
        assert k.slice_indices == (1,) and k.source == str(path)
        assert torch.equal(k.mask, torch.arange(W).ge(2) & torch.arange(W).lt(21))
    vol = read_fastmri(path)
    assert torch.equal(vol.data, torch.from_numpy(ks))
    assert torch.equal(vol.reference, torch.from_numpy(ref))
    with h5py.File(path) as hf:  # the stored layout itself
        assert hf["kspace"].dtype == np.complex64 and hf["reconstruction_rss"].dtype == np.float32
        assert set(hf.keys()) == {"kspace", "reconstruction_rss", "ismrmrd_header"}


def test_read_slice_reads_only_that_slice(multicoil, monkeypatch):
    path, ks, _ = multicoil
    selections = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        if self.name == "/kspace":
            selections.append(args)
        return original(self, args, *rest, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with FastMRIFile(path) as f:
        f.read_slice(2)
    assert selections == [2]


def test_reference_slice_dataset_and_varnet_transform_agree(multicoil, tmp_path):
    path, ks, ref = multicoil
    theirs = FMSliceDataset(root=path.parent, challenge="multicoil")
    assert len(theirs) == SLICES
    kspace, mask, target, attrs, fname, slice_num = theirs[2]
    with FastMRIFile(path) as f:
        ours = f.read_slice(2)
        header = f.header
        np.testing.assert_array_equal(kspace, ours.data[0].numpy())
        np.testing.assert_array_equal(target, ours.reference[0].numpy())
        assert mask is None and fname == path.name and slice_num == 2
        assert (attrs["padding_left"], attrs["padding_right"]) == f.padding
        assert attrs["encoding_size"] == header.encoded_matrix
        assert attrs["recon_size"] == header.recon_matrix
        assert attrs["acquisition"] == header.acquisition and attrs["max"] == f.max
    # with a mask function, fastMRI zeroes the mask outside [padding_left, padding_right)
    transform = VarNetDataTransform(mask_func=RandomMaskFunc([0.25], [2], seed=0))
    sample = FMSliceDataset(root=path.parent, challenge="multicoil", transform=transform)[0]
    assert not (sample.mask.reshape(-1) & ~ours.mask).any()

    # test-set layout: stored mask, VarNet's mask == ours (stored mask within the padding)
    test_mask = np.random.default_rng(7).integers(0, 2, W).astype(bool)
    test_mask[0] = True  # outside the padding: must be dropped
    masked = ks * test_mask
    test_path = write_fastmri(tmp_path / "test" / "file2.h5", masked, make_header(),
                              mask=test_mask, attrs={"acceleration": 4})
    sample = FMSliceDataset(root=test_path.parent, challenge="multicoil",
                            transform=VarNetDataTransform())[1]
    with FastMRIFile(test_path) as f:
        ours = f.read_slice(1)
        assert f.acceleration == 4 and torch.equal(f.mask, torch.from_numpy(test_mask))
        assert torch.equal(sample.mask.reshape(-1), ours.mask) and not ours.mask[0]
        assert torch.equal(torch.view_as_complex(sample.masked_kspace), ours.data[0])
        assert sample.crop_size == f.header.recon_size and ours.reference is None


def test_single_coil(tmp_path):
    ks = volume(2, (2, H, W))
    esc = np.abs(volume(3, (2, 16, 16))).astype(np.float32)
    rss = esc * 2
    path = write_fastmri(tmp_path / "sc" / "f.h5", ks, make_header(),
                         reference={"reconstruction_esc": esc, "reconstruction_rss": rss})
    with FastMRIFile(path) as f:
        assert not f.is_multicoil and f.shape == (2, 1, H, W) and f.header.num_coils == 1
        k = f.read_slice(0)
        assert k.data.shape == (1, 1, H, W) and torch.equal(k.data[0, 0], torch.from_numpy(ks[0]))
        assert f.reference_key == "reconstruction_esc"
        assert torch.equal(f.reference(1, key="reconstruction_rss"), torch.from_numpy(rss[1]))
        assert torch.equal(f.reference(1), torch.from_numpy(esc[1]))
        assert read_fastmri(path).data.shape == (2, 1, H, W)
    kspace, _, target, _, _, _ = FMSliceDataset(root=path.parent, challenge="singlecoil")[1]
    np.testing.assert_array_equal(kspace, ks[1])
    np.testing.assert_array_equal(target, esc[1])  # fastMRI's single-coil target is esc too


FASTMRI_KNEE_XML = """<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <studyInformation><studyTime>16:16:09</studyTime></studyInformation>
  <measurementInformation><measurementID>45167_40416089_40416098_326</measurementID>
    <patientPosition>FFS</patientPosition><protocolName>CORPD_FBK</protocolName>
  </measurementInformation>
  <acquisitionSystemInformation><systemVendor>SIEMENS</systemVendor>
    <systemFieldStrength_T>2.89362</systemFieldStrength_T><receiverChannels>4</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>123251815</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace><matrixSize><x>32</x><y>24</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>280</x><y>140.0</y><z>4.5</z></fieldOfView_mm></encodedSpace>
    <reconSpace><matrixSize><x>16</x><y>16</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>140</x><y>140</y><z>3</z></fieldOfView_mm></reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>18</maximum><center>9</center></kspace_encoding_step_1>
      <slice><minimum>0</minimum><maximum>2</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
  <sequenceParameters><TR>2750</TR><TE>32</TE><TI>100</TI><flipAngle_deg>90</flipAngle_deg></sequenceParameters>
</ismrmrdHeader>"""


def test_reads_reference_layout_written_by_h5py(tmp_path):
    """A file laid out like fastMRI's own (tests/create_temp_data.py + a knee-style header)."""
    path = tmp_path / "ref" / "file1000001.h5"
    path.parent.mkdir()
    ks = volume(4, (SLICES, COILS, H, W))
    recon = np.abs(volume(5, (SLICES, 16, 16))).astype("<f4")
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=ks)
        hf.create_dataset("reconstruction_rss", data=recon)
        hf.create_dataset("ismrmrd_header", data=np.bytes_(FASTMRI_KNEE_XML))
        hf.attrs["max"] = recon.max()
        hf.attrs["norm"] = np.linalg.norm(recon)
        hf.attrs["acquisition"] = "CORPD_FBK"
        hf.attrs["patient_id"] = "6c8a"
    with FastMRIFile(path) as f:
        h = f.header
        assert h.encoded_matrix == (32, 24, 1) and h.recon_matrix == (16, 16, 1)
        assert h.encoded_fov_mm == (280.0, 140.0, 4.5) and h.recon_fov_mm == (140.0, 140.0, 3.0)
        assert (h.padding_left, h.padding_right) == (24 // 2 - 9, 24 // 2 - 9 + 19)
        assert (h.field_strength_t, h.repetition_time_ms, h.echo_time_ms, h.flip_angle_deg) == \
            (2.89362, 2750.0, 32.0, 90.0)
        assert h.acquisition == "CORPD_FBK" and h.patient_id == "6c8a" and h.num_coils == COILS
        assert h.geometry.spacing == (3.0, 140 / 16, 140 / 16)
        assert f.max == pytest.approx(recon.max())
        assert torch.equal(f.read_slice(2).data[0], torch.from_numpy(ks[2]))
        assert torch.equal(f.reference(0), torch.from_numpy(recon[0]))
    _, _, _, attrs, _, _ = FMSliceDataset(root=path.parent, challenge="multicoil")[0]
    assert (attrs["padding_left"], attrs["padding_right"]) == (h.padding_left, h.padding_right)


def test_write_reconstruction_is_read_by_fastmri_evaluate(tmp_path):
    targets, preds = tmp_path / "targets", tmp_path / "preds"
    rng = np.random.default_rng(6)
    expected = []
    for i in range(2):
        gt = np.abs(rng.normal(size=(2, 16, 16))).astype(np.float32) + 1
        pred = gt + 0.1 * rng.normal(size=gt.shape).astype(np.float32)
        write_fastmri(targets / f"v{i}.h5", volume(i, (2, COILS, H, W)), make_header(),
                      reference=gt)
        write_reconstruction(preds / f"v{i}.h5", torch.from_numpy(pred))
        expected.append(np.sum((gt - pred) ** 2) / np.sum(gt ** 2))
    args = argparse.Namespace(target_path=targets, predictions_path=preds,
                              acquisition=None, acceleration=None)
    metrics = fm_evaluate.evaluate(args, "reconstruction_rss")
    assert metrics.means()["NMSE"] == pytest.approx(np.mean(expected), rel=1e-5)
    with h5py.File(preds / "v0.h5") as hf:
        assert list(hf.keys()) == ["reconstruction"] and hf["reconstruction"].dtype == np.float32


def _write_raw(path, **datasets):
    with h5py.File(path, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)


@pytest.mark.parametrize("case, field", [
    ("missing_kspace", "kspace"), ("rank", "kspace"), ("dtype", "kspace"),
    ("missing_header", "ismrmrd_header"), ("bad_xml", "ismrmrd_header"),
    ("namespace", "ismrmrd_header"), ("corrupt", "file"), ("truncated", "file|kspace"),
])
def test_bad_files_raise_data_format_error(tmp_path, multicoil, case, field):
    path = tmp_path / f"{case}.h5"
    xml = header_to_xml(make_header())
    ks = volume(0, (2, COILS, H, W))
    if case == "missing_kspace":
        _write_raw(path, ismrmrd_header=xml)
    elif case == "rank":
        _write_raw(path, kspace=ks[0, 0], ismrmrd_header=xml)
    elif case == "dtype":
        _write_raw(path, kspace=np.abs(ks), ismrmrd_header=xml)
    elif case == "missing_header":
        _write_raw(path, kspace=ks)
    elif case == "bad_xml":
        _write_raw(path, kspace=ks, ismrmrd_header="<ismrmrdHeader")
    elif case == "namespace":
        other = xml.replace("www.ismrm.org/ISMRMRD", "example.org/x")
        _write_raw(path, kspace=ks, ismrmrd_header=other)
    elif case == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        good = multicoil[0].read_bytes()
        path.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataFormatError, match=rf"{case}\.h5: ({field})") as info:
        with FastMRIFile(path) as f:
            f.header
            f.read_slice(len(f) - 1)
    assert info.value.file == str(path)


def test_nan_is_reported_for_the_slice_read(tmp_path):
    ks = volume(0, (3, COILS, H, W))
    ks[1, 2, 5, 7] = np.nan
    ks[1, 0, 0, 0] = np.inf
    path = tmp_path / "nan.h5"
    _write_raw(path, kspace=ks, ismrmrd_header=header_to_xml(make_header()))
    with FastMRIFile(path) as f:
        assert torch.equal(f.read_slice(0).data[0], torch.from_numpy(ks[0]))
        with pytest.raises(DataFormatError, match=r"nan\.h5: kspace\[1\]: 2 NaN or Inf"):
            f.read_slice(1)
        with pytest.raises(DataFormatError, match=r"nan\.h5: kspace:"):
            f.read_volume()


def test_failed_write_leaves_no_partial_file(tmp_path, multicoil):
    target = tmp_path / "out" / "vol.h5"
    ks = volume(0, (2, COILS, H, W))
    # kspace and header are written before the attribute that h5py cannot store
    with pytest.raises(TypeError):
        write_fastmri(target, ks, make_header(), attrs={"bad": object()})
    assert list(target.parent.iterdir()) == []
    # an existing file survives a failed overwrite unchanged
    existing = multicoil[0]
    before = existing.read_bytes()
    with pytest.raises(TypeError):
        write_fastmri(existing, ks, make_header(), attrs={"bad": object()})
    assert existing.read_bytes() == before
    assert sorted(p.name for p in existing.parent.iterdir()) == [existing.name]


def test_writer_validates_inputs(tmp_path):
    ks = volume(0, (2, COILS, H, W))
    with pytest.raises(ValueError, match="NaN"):
        write_fastmri(tmp_path / "a.h5", np.where(ks == ks[0, 0, 0, 0], np.nan, ks), make_header())
    with pytest.raises(ValueError, match="reconstruction_rss"):
        write_fastmri(tmp_path / "a.h5", ks, make_header(), reference=np.ones((3, 16, 16)))
    with pytest.raises(ValueError, match="mask"):
        write_fastmri(tmp_path / "a.h5", ks, make_header(), mask=np.ones(W + 1))
    with pytest.raises(ValueError, match="real"):
        write_reconstruction(tmp_path / "r.h5", torch.ones(2, 4, 4, dtype=torch.complex64))
    assert not any(tmp_path.iterdir())


def test_big_endian_k_space_reads_like_native(tmp_path, multicoil):
    """'>c8' (written by a big-endian tool) was refused: "expected complex64 samples, got >c8"."""
    from tests.helpers import clone_h5

    path, ks, _ = multicoil
    big = clone_h5(path, tmp_path / "big.h5", kspace=ks.astype(">c8"))
    with FastMRIFile(big) as f:
        assert torch.equal(f.read_slice(2).data[0], torch.from_numpy(ks[2]))


def test_k_space_chunked_across_slices_is_decompressed_once(tmp_path):
    """One gzip chunk for the whole volume (MATLAB's h5create default chunking) was decompressed
    again for every slice read: the chunk cache must hold a chunk and live with one dataset handle."""
    ks = volume(3, (6, 4, 128, 128))  # 3 MiB: above HDF5's 1 MiB default cache
    path = write_fastmri(tmp_path / "v.h5", ks, make_header(encoded_matrix=(128, 128, 1),
                                                              padding_left=0, padding_right=128))
    chunked = tmp_path / "chunked.h5"
    with h5py.File(path, "r") as a, h5py.File(chunked, "w") as b:
        for key in a:
            if key != "kspace":
                a.copy(key, b)
        b.create_dataset("kspace", data=ks, chunks=ks.shape, compression="gzip", compression_opts=1)
        b.attrs.update(dict(a.attrs))
    reads = []
    with FastMRIFile(chunked) as f:
        cache = f._file.id.get_access_plist().get_cache()[2]
        assert cache >= ks.nbytes
        for i in range(len(f)):
            assert torch.equal(f.read_slice(i).data[0], torch.from_numpy(ks[i]))
            reads.append(id(f._kspace_ds))
    assert len(set(reads)) == 1  # one dataset handle, so its chunk cache persists between slices


def test_write_fastmri_attrs_override_the_defaults(tmp_path):
    """write_fastmri's attrs: max / norm / acquisition / patient_id are *defaults* (from the
    reference and the header); values passed in attrs are written instead."""
    import h5py


    ks = volume(0, (2, 3, 32, 24))
    ref = np.ones((2, 16, 16), np.float32)
    given = {"max": 2.5, "norm": 7.0, "patient_id": "other", "acquisition": "CORPDFS_FBK"}
    path = write_fastmri(tmp_path / "f.h5", ks, make_header(), reference=ref, attrs=given)
    with h5py.File(path) as f:
        got = {k: f.attrs[k] for k in given}
    got = {k: (v.decode() if isinstance(v, bytes) else v.item() if hasattr(v, "item") else v)
           for k, v in got.items()}
    assert got == given
