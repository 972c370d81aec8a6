"""CT DICOM series inputs as scanners and PACS exports write them: padding outside the field of
view, words with bits above HighBit, bare data sets and empty files among the slices, a
localizer, lossy-compressed sources, and the messages of mixed folders and duplicate slices.
Each series is built here with pydicom (3 slices of 32 x 32)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tests.helpers import ct_slice_dataset
from mrirecon.io.dicom import save_part10
from mrirecon.io.dicom_read import looks_like_dicom, read_dicom_series, read_dicom_series_and_header
from mrirecon.io.errors import DataFormatError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

SIZE = 32
yy, xx = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
#: outside the scanned field of view (a circle): the corners a scanner pads
OUTSIDE = np.hypot(yy, xx) > 0.48 * SIZE
BODY = np.hypot(yy, xx) < 0.35 * SIZE


def phantom_hu(k: int = 0, metal: float | None = None) -> np.ndarray:
    """A water disk with a bone dot in air (and a metal dot)."""
    hu = np.where(BODY, 0.0, -1000.0)
    hu[np.hypot(yy - 3, xx + 4) < 2] = 1000.0 + 10 * k
    if metal is not None:
        hu[np.hypot(yy + 4, xx - 5) < 1.5] = metal
    return hu


def ct_dataset(k: int, series: str, words: np.ndarray, **kwargs) -> Dataset:
    ds = ct_slice_dataset(k, series, words, **kwargs)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def ct_series(folder: Path, *, slices: int = 3, words=None, names: str = "IM{k:04d}.dcm",
              edit=None, **kwargs) -> list[Path]:
    """A scanner's CT series (HU + 1024, 12 bits stored); ``words(k)`` gives slice k's stored
    words, ``edit(k, ds)`` changes its data set before it is written."""
    folder.mkdir(parents=True, exist_ok=True)
    series, paths = generate_uid(), []
    for k in range(slices):
        stored = words(k) if words is not None else phantom_hu(k) + 1024
        ds = ct_dataset(k, series, np.asarray(stored), **kwargs)
        if edit is not None:
            edit(k, ds)
        paths.append(save_part10(ds, folder / names.format(k=k)))
    return paths


def read_with_warnings(folder: Path, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image, header = read_dicom_series_and_header(folder, **kwargs)
    return image.data.numpy(), header, [str(w.message) for w in caught]


def ct_run(src: Path, out: Path, *settings: str) -> dict:
    config = load_pipeline("ct_fbp", ["export.formats=[hdf5,dicom]", "report.enabled=false",
                                      *settings])[0]
    code = run_pipeline(config, [str(src)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    assert code == (0 if entry["status"] == "ok" else 1)
    return entry


def reconstruction(out: Path, name: str) -> np.ndarray:
    (path,) = (out / "reconstructions").glob(f"{name}*.h5")
    with h5py.File(path) as f:
        return np.asarray(f["reconstruction"])


def padded_words(padding: int, *, signed: bool = False):
    def words(k):
        stored = (phantom_hu(k) + 1024).astype(np.int64)
        stored[OUTSIDE] = padding
        return stored.astype(np.int16 if signed else np.uint16)
    return words


# ---- F1: PixelPaddingValue --------------------------------------------------------------

def test_padding_outside_the_field_of_view_is_read_as_air_not_as_tissue(tmp_path):
    """Stored word 63536 (-2000 as int16) outside the FOV circle, PixelPaddingValue 63536,
    unsigned 16 bits: read as +62512 HU, a ring of ~60000 HU in the outputs and 17.9 dB, exit 0.
    Now air (-1024 HU) with a note, and the run gives what the series with air stored there
    gives, bit for bit."""
    padded, air = tmp_path / "padded", tmp_path / "air"
    ct_series(padded, words=padded_words(63536), bits_stored=16,
              edit=lambda k, ds: setattr(ds, "PixelPaddingValue", 63536))
    ct_series(air, words=padded_words(0), bits_stored=16)  # stored 0 = -1024 HU, no padding
    data, _, said = read_with_warnings(padded)
    assert np.all(data[:, OUTSIDE] == -1024) and data.max() == 1020
    (note,) = said
    assert "PixelPaddingValue: " in note and "hold the padding value 63536 (stored)" in note
    assert "read as air (-1024 HU), not as the 62512 HU" in note
    assert f"{3 * int(OUTSIDE.sum()):,} pixels in 3 of 3 files" in note

    entry = ct_run(padded, tmp_path / "out_padded")
    reference = ct_run(air, tmp_path / "out_air")
    assert entry["status"] == "ok"  # the one warning: metrics of a noise-free 360-view projection
    assert [w for w in entry["warnings"] if "projected from the series' images" not in w] == []
    assert any("padded: all 3 slices: PixelPaddingValue: " in n for n in entry["notes"])
    np.testing.assert_array_equal(reconstruction(tmp_path / "out_padded", "padded"),
                                  reconstruction(tmp_path / "out_air", "air"))
    assert entry["metrics"] == reference["metrics"]


def test_a_padding_word_beyond_bits_stored_is_padding_not_bone(tmp_path):
    """Raw word 0xF830 with BitsStored 12 and PixelPaddingValue 63536: pydicom clears the high
    bits to 0x830 = +1072 HU, a bone ring with no warning at all. The words are compared before
    the clearing: air, and no warning of bits above HighBit (the padding explains them)."""
    ct_series(tmp_path / "s", words=padded_words(0xF830), bits_stored=12,
              edit=lambda k, ds: setattr(ds, "PixelPaddingValue", 63536))
    data, _, said = read_with_warnings(tmp_path / "s")
    assert np.all(data[:, OUTSIDE] == -1024)
    (note,) = said
    assert "not as the 1072 HU their stored values give" in note and "HighBit" not in note


def test_a_padding_range_and_a_padding_value_that_reads_as_tissue(tmp_path):
    """Signed words -2000..-1100 outside the FOV with PixelPaddingValue -2000 and
    PixelPaddingRangeLimit -1100: all of them air (were -3024..-2124 HU). A padding value that
    reads as tissue (stored 1024 = 0 HU, PixelPaddingValue 1024) is still padding by the
    standard, but said as a warning: a wrong PixelPaddingValue would turn water into air."""
    def ranged(k):
        stored = (phantom_hu(k) + 1024).astype(np.int16)
        stored[OUTSIDE] = np.linspace(-2000, -1100, int(OUTSIDE.sum())).astype(np.int16)
        return stored

    def limits(k, ds):
        ds.add_new(0x00280120, "SS", -2000)
        ds.add_new(0x00280121, "SS", -1100)
    ct_series(tmp_path / "range", words=ranged, bits_stored=16, signed=True, edit=limits)
    data, _, said = read_with_warnings(tmp_path / "range")
    assert np.all(data[:, OUTSIDE] == -1024)
    assert "padding values -2000 to -1100 (PixelPaddingRangeLimit)" in said[0]
    assert "not as the -3024 to -2124 HU" in said[0]

    ct_series(tmp_path / "water", edit=lambda k, ds: setattr(ds, "PixelPaddingValue", 1024))
    with pytest.warns(UserWarning, match=r"a tissue value: if those pixels are not padding, the "
                                         r"files' PixelPaddingValue is wrong") as caught:
        data = read_dicom_series(tmp_path / "water").data.numpy()
    assert type(caught[0].message).__name__ == "DataWarning"
    assert np.all(data[:, BODY & (np.hypot(yy - 3, xx + 4) >= 2)] == -1024)


# ---- F2: bits above HighBit --------------------------------------------------------------

def test_words_with_bits_above_high_bit_are_warned_of(tmp_path):
    """Words of 5000 HU + 1024 = 6024 labelled BitsStored 12: the metal read as 904 HU, exit 0,
    no word. Now a warning names the file, BitsStored, the largest word and both readings (the
    values stay the standard's); in a run's record too. A declared overlay plane in bit 12
    (60xx,0102 without 60xx,3000) is legal and not warned of."""
    ct_series(tmp_path / "metal", words=lambda k: phantom_hu(k, metal=5000) + 1024)
    data, _, said = read_with_warnings(tmp_path / "metal")
    metal = np.hypot(yy + 4, xx - 5) < 1.5
    assert np.all(data[:, metal] == 904)  # cleared, as the standard reads them
    (msg,) = said
    assert msg.startswith(str(tmp_path / "metal" / "IM0000.dcm") + ": BitsStored: ")
    assert "pixels in 3 of 3 files have bits set above HighBit (largest stored word 6024, " \
           "BitsStored 12)" in msg
    assert "that word gives 904 HU, not 5000 HU" in msg
    assert "correct BitsStored and HighBit" in msg
    entry = ct_run(tmp_path / "metal", tmp_path / "out")
    assert any(w.startswith("metal: all 3 slices: IM0000.dcm: BitsStored: ")
               for w in entry["warnings"])

    def overlay(k):
        stored = (phantom_hu(k) + 1024).astype(np.uint16)
        stored[:4, :4] |= 1 << 12
        return stored

    def declared(k, ds):
        ds.add_new(0x60000102, "US", 12)  # OverlayBitPosition
    ct_series(tmp_path / "overlay", words=overlay, edit=declared)
    data, _, said = read_with_warnings(tmp_path / "overlay")
    assert not said and data[0, 0, 0] == -1000


# ---- F3: files of the series that were skipped ---------------------------------------------

def test_an_empty_or_cut_off_file_among_the_slices_fails_the_series(tmp_path):
    """Suffix-less Part 10 files, the last one empty (a copy cut short): 2 of 3 slices were
    reconstructed, exit 0, no word. Now the series fails naming the file, as it does with
    ``.dcm`` names; so does a few bytes' fragment. A README, a PNG and notes stay ignored."""
    folder = tmp_path / "s"
    paths = ct_series(folder, names="IM{k:04d}")
    (folder / "README").write_text("exported by the PACS\n")
    (folder / "thumb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    (folder / "notes").write_text("séance 3\n")
    assert read_dicom_series(folder).data.shape == (3, SIZE, SIZE)
    paths[-1].write_bytes(b"")
    with pytest.raises(DataFormatError, match=r"1 of 6 files are unreadable \(first: IM0002: "
                                              r"empty \(0 bytes\)"):
        read_dicom_series(folder)
    paths[-1].write_bytes(bytes(range(60)))  # a fragment, no DICOM data set
    with pytest.raises(DataFormatError, match=r"first: IM0002: only 60 bytes"):
        read_dicom_series(folder)
    entry = ct_run(folder, tmp_path / "out")
    assert entry["status"] == "failed" and "IM0002" in entry["error"]


@pytest.mark.parametrize("which, suffix", [("last", ""), ("all", ""), ("all", ".dcm")])
def test_bare_data_sets_without_preamble_are_slices(tmp_path, which, suffix):
    """Data sets written without the 128-byte preamble, ``DICM`` and file meta (older scanners,
    some PACS exports): the last of 3 suffix-less files was left out (2 slices, exit 0); all of
    them failed as "no DICOM image files among its 3 files", all as ``.dcm`` as "3 of 3 files
    are unreadable". pydicom reads them (force): now they are slices."""
    folder = tmp_path / "s"
    paths = ct_series(folder, names="IM{k:04d}" + suffix)
    for k, path in enumerate(paths):
        if which == "all" or k == len(paths) - 1:
            ds = pydicom.dcmread(path)
            ds.preamble, ds.file_meta = None, FileMetaDataset()
            pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
            assert path.read_bytes()[128:132] != b"DICM"
    data = read_dicom_series(folder).data.numpy()
    assert data.shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(data, np.stack([phantom_hu(k) for k in range(3)]))
    assert all(looks_like_dicom(path) for path in paths)  # what `mrirecon run` takes for a series


# ---- F4: a localizer ------------------------------------------------------------------------

def localizer(ds: Dataset) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.SeriesDescription = "Topogram 0.6 T20f"


def test_a_localizer_is_no_ct_slice(tmp_path):
    """A scout alone (ImageType ...\\LOCALIZER, coronal) was reconstructed and exported as an
    axial CT slice, exit 0; beside axial slices the series was refused naming an axial slice
    as the odd one. Now a lone localizer is refused naming it and LOCALIZER; among axial slices
    it is left out with a warning naming it (in a run's record too)."""
    ct_series(tmp_path / "scout", slices=1, names="IM_LOC.dcm",
              edit=lambda k, ds: localizer(ds))
    with pytest.raises(DataFormatError, match=r"IM_LOC.dcm: ImageType: ORIGINAL\\PRIMARY\\LOCALIZER: "
                                              r"a projection radiograph"):
        read_dicom_series(tmp_path / "scout")
    entry = ct_run(tmp_path / "scout", tmp_path / "out_scout")
    assert entry["status"] == "failed" and "LOCALIZER" in entry["error"]

    folder = tmp_path / "series"
    paths = ct_series(folder)
    scout = pydicom.dcmread(paths[0])
    localizer(scout)
    scout.SOPInstanceUID = generate_uid()
    save_part10(scout, folder / "A_LOC.dcm")
    data, _, said = read_with_warnings(folder)
    assert data.shape == (3, SIZE, SIZE)
    (msg,) = said
    assert "ImageType: 1 localizer image(s) left out (A_LOC.dcm)" in msg
    entry = ct_run(folder, tmp_path / "out_series")
    assert entry["status"] == "ok" and entry["slices"] == 3
    assert any("localizer image(s) left out (A_LOC.dcm)" in w for w in entry["warnings"])


def test_an_image_of_another_orientation_is_named_not_the_majority(tmp_path):
    """A coronal image (no LOCALIZER) named first among 3 axial ones: the error named the axial
    slice IM0000.dcm as differing from A_COR.dcm. Now the file that differs from the others."""
    folder = tmp_path / "s"
    paths = ct_series(folder)
    odd = pydicom.dcmread(paths[0])
    odd.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    odd.SOPInstanceUID = generate_uid()
    save_part10(odd, folder / "A_COR.dcm")
    with pytest.raises(DataFormatError, match=r"A_COR.dcm: ImageOrientationPatient: \[1.0, 0.0, "
                                              r"0.0, 0.0, 0.0, -1.0\] differs from the other 3 "
                                              r"slices' \[1.0, 0.0, 0.0, 0.0, 1.0, 0.0\]"):
        read_dicom_series(folder)


# ---- minor: lossy sources, mixed series, duplicates -------------------------------------

def test_a_lossy_compressed_source_says_so_and_its_export_keeps_it(tmp_path):
    """LossyImageCompression 01 (ratio 338.7, ISO_15444_1) on a slice other than the first:
    used as the metrics' reference and exported without LossyImageCompression, no word. Now a
    note, and the exported series says 01 with the ratio and method (PS3.3: never reset)."""
    def lossy(k, ds):
        if k == 1:
            ds.LossyImageCompression = "01"
            ds.LossyImageCompressionRatio = "338.687338501292"
            ds.LossyImageCompressionMethod = "ISO_15444_1"
    ct_series(tmp_path / "lossy", edit=lossy)
    _, header, said = read_with_warnings(tmp_path / "lossy")
    assert header.LossyImageCompression == "01"
    (msg,) = said
    assert "LossyImageCompression: 01 (1 of 3 files, first: IM0001.dcm, ratio 338.7:1, " \
           "ISO_15444_1)" in msg
    entry = ct_run(tmp_path / "lossy", tmp_path / "out")
    assert any("lossy: all 3 slices: LossyImageCompression: 01" in n for n in entry["notes"])
    for path in sorted((tmp_path / "out" / "dicom" / "lossy").glob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert ds.LossyImageCompression == "01" and ds.LossyImageCompressionMethod == "ISO_15444_1"
        assert float(ds.LossyImageCompressionRatio) == pytest.approx(338.687338501292)


def test_two_series_say_how_to_pick_one_from_the_command_line(tmp_path):
    """The hint named only the library's ``series_uid=``, which ``mrirecon run`` has not."""
    ct_series(tmp_path / "s")
    ct_series(tmp_path / "s", names="B{k:04d}.dcm")
    with pytest.raises(DataFormatError, match=r"mixes 2 series: .*move each series' files into a "
                                              r"folder of its own and pass those folders as inputs"
                                              r" \(`mrirecon run` reads one series per folder; "
                                              r"from Python, read_dicom_series\(folder, "
                                              r"series_uid=...\) reads one of them\)"):
        read_dicom_series(tmp_path / "s")


def test_duplicate_positions_say_whether_a_file_was_copied(tmp_path):
    """The same position twice: the error did not say whether it is one image copied (same
    SOPInstanceUID) or two images at one place (a repeated acquisition, a re-export)."""
    paths = ct_series(tmp_path / "copy")
    (tmp_path / "copy" / "IM0001 copy.dcm").write_bytes(paths[1].read_bytes())
    with pytest.raises(DataFormatError, match=r"\(same ImagePositionPatient\): the same image "
                                              r"twice \(both SOPInstanceUID .*: a copied file\)"):
        read_dicom_series(tmp_path / "copy")
    paths = ct_series(tmp_path / "two")
    again = pydicom.dcmread(paths[1])
    again.SOPInstanceUID = generate_uid()
    save_part10(again, tmp_path / "two" / "IM0001b.dcm")
    with pytest.raises(DataFormatError, match=r"two images at one position \(SOPInstanceUIDs "
                                              r"differ"):
        read_dicom_series(tmp_path / "two")


def test_bare_big_endian_data_sets_are_slices(tmp_path):
    """A data set without preamble in Explicit VR Big Endian (retired, still in old archives)
    starts with the tag bytes 00 08: it is a slice like a little-endian one, and a folder of
    them is what `mrirecon run` takes for a series (looks_like_dicom)."""
    folder = tmp_path / "s"
    paths = ct_series(folder, names="IM{k:04d}")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.preamble, ds.file_meta = None, FileMetaDataset()
        # pydicom writes OW bytes as given: store the 16-bit words big-endian ourselves
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
        pydicom.dcmwrite(path, ds, implicit_vr=False, little_endian=False)
        assert path.read_bytes()[:2] == b"\x00\x08"
    assert all(looks_like_dicom(path) for path in paths)
    data = read_dicom_series(folder).data.numpy()
    np.testing.assert_array_equal(data, np.stack([phantom_hu(k) for k in range(3)]))


@pytest.mark.parametrize("junk", [b"cut short during the copy\n", b"\x89PNG\r\n\x1a\n" + bytes(64)])
def test_a_dcm_file_that_is_no_data_set_fails_the_series(tmp_path, junk):
    """A file named .dcm is a slice by name: when its bytes are text or another format (a slice
    overwritten or cut short), the series fails naming it; leaving the last slice out read a
    volume one slice short, exit 0 (a middle one is caught by the spacing check, an end one
    is not)."""
    folder = tmp_path / "s"
    paths = ct_series(folder)
    assert read_dicom_series(folder).data.shape == (3, SIZE, SIZE)
    paths[-1].write_bytes(junk)
    with pytest.raises(DataFormatError, match=rf"1 of 3 files are unreadable \(first: {paths[-1].name}"):
        read_dicom_series(folder)


def test_a_dicomdir_index_beside_the_slices_is_no_slice(tmp_path):
    """Media exports put a DICOMDIR index (Media Storage Directory, no SOPClassUID) beside the
    images: it is skipped by name, not read as a damaged slice that fails the series."""
    folder = tmp_path / "s"
    ct_series(folder)
    ds = Dataset()
    ds.FileSetID = "EXPORT"
    ds.DirectoryRecordSequence = []
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    pydicom.dcmwrite(folder / "DICOMDIR", ds, enforce_file_format=True)
    assert (folder / "DICOMDIR").read_bytes()[128:132] == b"DICM"
    assert not looks_like_dicom(folder / "DICOMDIR")
    assert read_dicom_series(folder).data.shape == (3, SIZE, SIZE)
