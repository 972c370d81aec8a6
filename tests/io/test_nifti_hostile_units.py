"""NIfTI files as other tools write them, read by ``read_nifti``: lengths in meters or microns
(``xyzt_units``), float64 data that float32 cannot hold, truncated data blocks, RGB voxels and
NaN / Inf in the fields that give the affine. Each file is built here with nibabel."""

from __future__ import annotations

import gzip
import re
import struct
import warnings

import nibabel as nib
import numpy as np
import pytest

from mrirecon.io.errors import DataFormatError
from mrirecon.io.nifti import read_nifti

#: voxel sizes (i, j, k) and position of the test volume, in the file's units
SIZES, SHIFT = (2.0, 3.0, 4.0), (-10.0, 20.0, 30.0)
VOL = np.arange(16 * 12 * 5, dtype=np.float32).reshape(16, 12, 5) + 1


def _save(path, data=VOL, unit="mm", affine=None, codes=(1, 1)):
    """``codes``: the (sform, qform) codes."""
    if affine is None:
        affine = np.diag([*SIZES, 1.0])
        affine[:3, 3] = SHIFT
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=codes[0])
    img.set_qform(affine, code=codes[1])
    img.header.set_xyzt_units(xyz=unit, t="sec")
    nib.save(img, path)
    return path


@pytest.mark.parametrize("unit, mm", [("mm", 1.0), ("unknown", 1.0), ("meter", 1000.0),
                                      ("micron", 0.001)])
def test_lengths_in_other_units_are_read_in_mm(tmp_path, unit, mm):
    """A header in meters (or microns) gives spacing and position in mm: they were read as mm,
    1000x off, with the data unchanged. "unknown" stays mm, as NIfTI readers take it."""
    image = read_nifti(_save(tmp_path / f"{unit}.nii", unit=unit))
    ref = read_nifti(_save(tmp_path / "ref.nii"))
    # spacing is (slice, row, col) = (k, j, i) sizes; positions LPS = RAS with x, y negated
    np.testing.assert_allclose(image.geometry.spacing, np.array(SIZES[::-1]) * mm, rtol=1e-6)
    np.testing.assert_allclose(image.geometry.origin,
                               np.array([-SHIFT[0], -SHIFT[1], SHIFT[2]]) * mm, rtol=1e-6)
    assert image.geometry.orientation == ref.geometry.orientation
    assert np.array_equal(image.data.numpy(), ref.data.numpy())


def test_a_left_handed_affine_in_meters_places_its_first_slice_in_mm(tmp_path):
    """The slice order reversal of a left-handed affine takes its new origin from the scaled
    affine too."""
    affine = np.diag([*SIZES, 1.0])
    affine[2, 2] = -SIZES[2]
    affine[:3, 3] = SHIFT
    image = read_nifti(_save(tmp_path / "las_m.nii", unit="meter", affine=affine))
    last = SHIFT[2] - SIZES[2] * (VOL.shape[2] - 1)  # z of the file's last slice, in meters
    np.testing.assert_allclose(image.geometry.origin,
                               np.array([-SHIFT[0], -SHIFT[1], last]) * 1000, rtol=1e-6)
    assert np.array_equal(image.data.numpy()[0], VOL[:, :, -1].T)


def test_an_invalid_space_unit_code_is_refused_naming_the_field(tmp_path):
    path = _save(tmp_path / "u5.nii")
    raw = bytearray(path.read_bytes())
    raw[123] = 5 | 8  # xyzt_units (byte 123): space code 5 is none of NIfTI's
    path.write_bytes(bytes(raw))
    with pytest.raises(DataFormatError, match=r"u5.nii: xyzt_units: space unit code 5"):
        read_nifti(path)


@pytest.mark.parametrize("scale, word", [(1e36, "beyond"), (1e-300, "below")])
def test_float64_data_float32_cannot_hold_are_refused(tmp_path, scale, word):
    """float64 data beyond float32's 3.4e38 were read as Inf (numpy's RuntimeWarning only),
    data peaking below its smallest normal as all zeros: refused as ``write_nifti`` refuses
    to write them."""
    path = _save(tmp_path / "f64.nii", data=VOL.astype(np.float64) * scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way to the error
        with pytest.raises(DataFormatError, match=rf"f64.nii: data: .* {word} the"):
            read_nifti(path)


def test_float64_data_within_float32_range_read_as_before(tmp_path):
    data = VOL.astype(np.float64) * 1e30
    data[0, 0, 0] = np.inf  # stored Inf is the file's, not the cast's: left to the caller
    image = read_nifti(_save(tmp_path / "ok.nii", data=data))
    expect = np.transpose(data, (2, 1, 0)).astype(np.float32)
    assert np.array_equal(image.data.numpy(), expect)


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_written_data_beyond_float32_are_refused_by_the_readers_rule(tmp_path, dtype):
    """int16 output of float64 data beyond float32's 3.4e38 escaped as nibabel's HeaderDataError
    "Slope cannot be 0 or infinite", naming no file; float32 output warned of an overflow in
    the cast first. Both are refused by the rule read_nifti applies, before any cast."""
    import torch

    from mrirecon.containers import Image
    from mrirecon.io.nifti import write_nifti

    data = torch.from_numpy(VOL.astype(np.float64) * 1e36)  # peak 9.6e38
    path = tmp_path / "big.nii"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning on the way to the error
        with pytest.raises(ValueError, match=r"write_nifti: .*big\.nii: Image.data reaches "
                                             r"9.6e\+38, beyond the 3.4e\+38 of float32 NIfTI"):
            write_nifti(Image(data=data, kind="magnitude"), path, dtype=dtype)
    assert not path.exists()
    within = write_nifti(Image(data=data * 1e-3, kind="magnitude"), path, dtype=dtype)
    assert bool(torch.isfinite(read_nifti(within).data).all())


def test_a_truncated_file_is_refused_naming_file_and_data(tmp_path):
    """The data block is read after the header: a cut-off file escaped as a raw EOFError
    (.nii.gz) or OSError (.nii), not naming the file."""
    full = _save(tmp_path / "full.nii")
    blob = full.read_bytes()
    cut = tmp_path / "cut.nii"
    cut.write_bytes(blob[:-200])
    gz = tmp_path / "cut.nii.gz"
    gz.write_bytes(gzip.compress(blob)[: len(gzip.compress(blob)) * 2 // 3])
    for path in (cut, gz):
        with pytest.raises(DataFormatError, match=rf"{path.name}: data: truncated or damaged"):
            read_nifti(path)


def test_rgb_voxels_are_refused_by_name(tmp_path):
    """RGB24 voxels failed with numpy's DTypePromotionError (VoidDType and Float64DType)."""
    rgb = np.zeros(VOL.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "rgb.nii"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    with pytest.raises(DataFormatError, match=r"rgb.nii: datatype: is RGB \(128, 3 channels"):
        read_nifti(path)


def _patch(path, offset, value):
    raw = bytearray(path.read_bytes())
    raw[offset:offset + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("offset, field, codes", [
    (280, "srow_x", (1, 1)),       # sform: srow_x[0] (NIfTI-1 header byte 280)
    (292, "srow_x", (1, 1)),       # its translation
    (304, "srow_y", (1, 1)),
    (268, "qoffset_x", (0, 1)),    # qform only: qoffset_x
    (80, "pixdim[1]", (0, 1)),     # qform only: its voxel size
    (84, "pixdim[2]", (0, 0)),     # no xform: pixdim gives the voxel sizes
])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_in_the_affine_is_refused_naming_the_field(tmp_path, offset, field, codes,
                                                               bad):
    """Was "ImageGeometry.spacing must be finite" (or origin), naming neither file nor field."""
    path = _patch(_save(tmp_path / "x.nii", codes=codes), offset, bad)
    with pytest.raises(DataFormatError, match=rf"x.nii: {re.escape(field)}.*holds NaN or Inf"):
        read_nifti(path)


def _scaled(path, slope, inter):
    """int16 voxels 0..99 with ``scl_slope`` / ``scl_inter`` (header bytes 112 / 116) set."""
    data = (np.arange(VOL.size).reshape(VOL.shape) % 100).astype(np.int16)
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    _patch(path, 112, slope)
    return _patch(path, 116, inter), data


@pytest.mark.parametrize("slope", [float("inf"), float("-inf")])
def test_infinite_slope_is_read_unscaled_with_a_warning_naming_it(tmp_path, slope):
    """nibabel reads an infinite ``scl_slope`` as "no scaling" (like 0 and NaN); that passed
    without a word, so a damaged header gave intensities off by the lost factor."""
    path, data = _scaled(tmp_path / "s.nii", slope, 0.0)
    with pytest.warns(UserWarning, match=r"s.nii: scl_slope: is -?inf: .*read unscaled"):
        image = read_nifti(path)
    np.testing.assert_array_equal(image.data.numpy(), np.transpose(data, (2, 1, 0)))


@pytest.mark.parametrize("slope, scale", [(float("nan"), 1.0), (0.0, 1.0), (2.0, 2.0)])
def test_slopes_that_mean_no_scaling_or_a_factor_pass_quietly(tmp_path, slope, scale):
    """NaN (what nibabel writes for "unset") and 0 (the standard's "no scaling") are no damage;
    a finite slope is applied."""
    path, data = _scaled(tmp_path / "s.nii", slope, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image = read_nifti(path)
    np.testing.assert_array_equal(image.data.numpy(), scale * np.transpose(data, (2, 1, 0)))


@pytest.mark.parametrize("inter", [float("nan"), float("inf")])
def test_non_finite_intercept_beside_a_slope_is_refused_naming_it(tmp_path, inter):
    """Was "x.nii is not a readable NIfTI file: Valid slope but invalid intercept nan"."""
    path, _ = _scaled(tmp_path / "s.nii", 1.0, inter)
    with pytest.raises(DataFormatError, match=r"s.nii: scl_inter: is not finite"):
        read_nifti(path)


def _sheared():
    a = np.diag([*SIZES, 1.0])
    a[0, 1] = 0.5
    return a


@pytest.mark.parametrize("case, field, problem", [
    ("4d", "dim", "has shape (16, 12, 5, 2); expected one 3-D volume"),
    ("zero_slices", "dim", "empty volume of shape (16, 12, 0)"),
    ("sheared_sform", "srow_x, srow_y, srow_z (sform, code 1)", "sheared (axes not orthogonal)"),
    ("flat_sform", "srow_x, srow_y, srow_z (sform, code 1)", "axis k has length 0"),
    ("junk", "file", "not a readable NIfTI file"),
])
def test_every_refusal_of_read_nifti_is_a_data_format_error_naming_the_field(tmp_path, case,
                                                                              field, problem):
    """The docstring promises a DataFormatError naming the file and field: a 4-D file, a sheared
    or zero-length affine and a file nibabel cannot load raised a plain ValueError (callers that
    catch DataFormatError missed it); an empty volume (16, 12, 0) was returned as an empty
    Image where every other reader refuses empty data."""
    path = tmp_path / "x.nii"
    if case == "4d":
        _save(path, data=np.stack([VOL, VOL], axis=-1))
    elif case == "zero_slices":
        _save(path, data=VOL[:, :, :0])
    elif case == "sheared_sform":
        _save(path, affine=_sheared(), codes=(1, 0))
    elif case == "flat_sform":  # (a zero pixdim nibabel sets to 1 itself, with a log line)
        _patch(_save(path, codes=(1, 0)), 320, 0.0)  # srow_z[2] (NIfTI-1 header byte 320)
    else:
        path.write_bytes(b"not a nifti file")
    with pytest.raises(DataFormatError) as info:
        read_nifti(path)
    assert (info.value.file, info.value.field) == (str(path), field), str(info.value)
    assert problem in info.value.problem, str(info.value)
