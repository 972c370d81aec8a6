"""NIfTI-1 writer/reader: axis order, RAS affine, round trips, int16 scaling, bad inputs."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from mrirecon.data import Image, ImageGeometry
from mrirecon.io.errors import DataFormatError
from mrirecon.io.nifti import read_nifti, write_nifti


def oblique_geometry() -> ImageGeometry:
    rot = Rotation.from_euler("zyx", [35, 10, -25], degrees=True).as_matrix()
    return ImageGeometry(
        spacing=(2.5, 0.75, 1.1), origin=(-12.0, 33.5, 7.25),
        orientation=tuple(rot[:, 0]) + tuple(rot[:, 1]),
    )


def volume(dtype=torch.float32, shape=(3, 5, 4)) -> Image:
    g = torch.Generator().manual_seed(3)
    data = torch.randn(shape, generator=g, dtype=torch.float64)
    if dtype.is_complex:
        data = torch.complex(data, torch.randn(shape, generator=g, dtype=torch.float64))
        return Image(data.to(dtype), oblique_geometry(), kind="complex")
    return Image(data.to(dtype), oblique_geometry(), description="nifti test")


def assert_same_geometry(a: ImageGeometry, b: ImageGeometry, atol: float = 2e-5) -> None:
    # the affine is stored in float32: compare to float32 precision
    np.testing.assert_allclose(a.spacing, b.spacing, rtol=0, atol=atol)
    np.testing.assert_allclose(a.origin, b.origin, rtol=0, atol=atol * 10)
    np.testing.assert_allclose(a.orientation, b.orientation, rtol=0, atol=atol)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_float32_round_trip_is_exact(tmp_path, suffix):
    image = volume()
    path = write_nifti(image, tmp_path / f"v{suffix}")
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]  # no temp files left
    if suffix == ".nii.gz":
        assert path.read_bytes()[:2] == b"\x1f\x8b"
        assert gzip.decompress(path.read_bytes())[344:348] == b"n+1\x00"
    back = read_nifti(path)
    assert torch.equal(back.data, image.data)
    assert_same_geometry(back.geometry, image.geometry)
    assert (back.kind, back.modality, back.description) == ("magnitude", "MR", "nifti test")


def test_header_axes_affine_and_world_coordinates(tmp_path):
    image = volume()
    path = write_nifti(image, tmp_path / "v.nii")
    nii = nib.load(path)
    s, r, c = image.data.shape
    assert nii.shape == (c, r, s) and nii.get_data_dtype() == np.float32
    affine = image.geometry.affine_ras()
    np.testing.assert_allclose(nii.affine, affine, atol=1e-5)
    qform, qcode = nii.header.get_qform(coded=True)
    sform, scode = nii.header.get_sform(coded=True)
    assert (int(qcode), int(scode)) == (1, 1)
    np.testing.assert_allclose(qform, affine, atol=1e-5)
    np.testing.assert_allclose(sform, affine, atol=1e-5)
    assert nii.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(nii.header.get_zooms(), (1.1, 0.75, 2.5), atol=1e-6)
    # voxel (slice k, row j, col i) sits at nifti[i, j, k]; its RAS position is the LPS
    # position (origin + i*dc*row_dir + j*dr*col_dir + k*ds*normal) with x, y negated
    arr = nii.get_fdata()
    g = image.geometry
    for k, j, i in [(0, 0, 0), (2, 4, 3), (1, 3, 0)]:
        assert arr[i, j, k] == image.data[k, j, i].item()
        lps = (np.array(g.origin) + i * g.spacing[2] * g.row_direction
               + j * g.spacing[1] * g.column_direction + k * g.spacing[0] * g.slice_direction)
        ras = [-lps[0], -lps[1], lps[2], 1]
        np.testing.assert_allclose(nii.affine @ [i, j, k, 1], ras, atol=1e-4)


def test_int16_with_scl_slope(tmp_path):
    image = volume(shape=(2, 6, 5))
    path = write_nifti(image, tmp_path / "q.nii", dtype="int16")
    nii = nib.load(path)
    assert nii.get_data_dtype() == np.int16
    slope, inter = float(nii.dataobj.slope), float(nii.dataobj.inter)  # scl_slope, scl_inter
    assert 0 < slope < 1e-3
    lo, hi = float(image.data.min()), float(image.data.max())
    assert inter == float(np.float32((lo + hi) / 2))  # mid-range: the int16 range is symmetric
    stored = np.asanyarray(nii.dataobj.get_unscaled())
    assert np.abs(stored).max() >= 32760  # full range used
    back = read_nifti(path)
    err = (back.data.double() - image.data.double()).abs().max().item()
    assert err <= slope / 2 * 1.01 + 1e-6


def test_complex_round_trip(tmp_path):
    image = volume(torch.complex64)
    path = write_nifti(image, tmp_path / "c.nii.gz")
    assert nib.load(path).get_data_dtype() == np.complex64
    back = read_nifti(path)
    assert back.kind == "complex" and torch.equal(back.data, image.data)


def test_left_handed_and_2d_files_are_read_in_world_coordinates(tmp_path):
    # a file whose k axis runs against i x j (e.g. slices stored top-down): the reader
    # reverses the slices so that every voxel keeps its world position
    image = volume()
    arr = np.transpose(image.data.numpy(), (2, 1, 0))[:, :, ::-1]
    affine = image.geometry.affine_ras().copy()
    last = affine @ [0, 0, arr.shape[2] - 1, 1]
    affine[:3, 2] *= -1
    affine[:3, 3] = last[:3]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), affine), tmp_path / "lh.nii")
    back = read_nifti(tmp_path / "lh.nii", modality="CT")
    assert back.kind == "hu"
    assert torch.equal(back.data, image.data)
    assert_same_geometry(back.geometry, image.geometry)
    # 2-D file: one slice; no sform/qform code -> pixdim affine
    plain = nib.Nifti1Image(np.ones((4, 3), np.float32), None)
    plain.header.set_zooms((0.5, 0.25))
    nib.save(plain, tmp_path / "two.nii")
    flat = read_nifti(tmp_path / "two.nii")
    assert flat.data.shape == (1, 3, 4)
    np.testing.assert_allclose(flat.geometry.spacing[1:], (0.25, 0.5))


def test_bad_inputs(tmp_path):
    image = volume()
    with pytest.raises(ValueError, match=r"must end in .nii or .nii.gz"):
        write_nifti(image, tmp_path / "v.img")
    with pytest.raises(ValueError, match="dtype must be"):
        write_nifti(image, tmp_path / "v.nii", dtype="uint8")
    with pytest.raises(ValueError, match="kind is 'magnitude' but data dtype is complex64"):
        write_nifti(Image(volume(torch.complex64).data, image.geometry), tmp_path / "v.nii")
    bad = Image(torch.tensor([[[1.0, float("inf")]]]), image.geometry)
    with pytest.raises(ValueError, match=r"write_nifti: .*v\.nii: Image\.data has 1 NaN or Inf values; nothing written"):
        write_nifti(bad, tmp_path / "v.nii")
    assert not any(tmp_path.iterdir())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_nifti(tmp_path / "missing.nii")
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), sheared), tmp_path / "shear.nii")
    with pytest.raises(DataFormatError, match=r"shear.nii: srow_x, srow_y, srow_z \(sform, code "
                       r"2\): the affine is sheared"):
        read_nifti(tmp_path / "shear.nii")
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(DataFormatError, match=r"t.nii: dim: has shape \(2, 2, 2, 3\)"):
        read_nifti(tmp_path / "t.nii")
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file")
    with pytest.raises(DataFormatError, match="junk.nii: file: not a readable NIfTI"):
        read_nifti(tmp_path / "junk.nii")


def test_a_geometry_without_a_position_is_written_as_unknown(tmp_path):
    """Voxel sizes only (a fastMRI header, LoDoPaB): xform codes 0 (unknown), so that no viewer
    takes the placeholder origin / orientation for scanner coordinates; read back unplaced."""
    g = ImageGeometry(spacing=(3.0, 0.5, 0.75), placed=False)
    img = Image(torch.rand(4, 6, 5), g)
    path = write_nifti(img, tmp_path / "x.nii.gz")
    hdr = nib.load(path).header
    assert int(hdr["qform_code"]) == 0 and int(hdr["sform_code"]) == 0
    np.testing.assert_allclose(hdr.get_zooms(), (0.75, 0.5, 3.0))
    back = read_nifti(path)
    assert not back.geometry.placed and back.geometry.spacing == g.spacing
    torch.testing.assert_close(back.data, img.data, rtol=0, atol=0)
    # the placeholder orientation survives the round trip, and a second write is the first's
    # bytes (it came back as -1,0,0,0,-1,0 and flipped srow_x / srow_y on the next write)
    assert back.geometry.orientation == g.orientation and back.geometry.origin == g.origin
    again = write_nifti(back, tmp_path / "again.nii.gz")
    assert nib.load(again).get_sform().tolist() == hdr.get_sform().tolist()
    placed = write_nifti(Image(img.data, ImageGeometry(spacing=g.spacing)), tmp_path / "y.nii")
    assert int(nib.load(placed).header["sform_code"]) == 1 and read_nifti(placed).geometry.placed


@pytest.mark.parametrize("lo, hi", [(273.9233746429086, 273.9643481668448),
                                    (37689.34611418802, 37690.69707923824), (0.0, 65534.001),
                                    # the centre 16383.5 (1 + 2^-20) rounds in float32
                                    (0.0, 32767 * (1 + 2**-20)), (1000.0, 32767 * (1 + 2**-20))])
def test_int16_extremes_are_not_clipped_when_slope_and_inter_round_to_float32(tmp_path, lo, hi):
    """The header stores scl_slope and scl_inter in float32. For data with an offset large
    against their range the rounded centre moved by many steps, and the extremes needed more
    than 32767 steps from it: they were clipped (273.92-273.96: by 22 steps). The slope now
    covers the range about the rounded centre, rounded up, so every value comes back within
    half a step (plus float64 rounding of stored * slope + inter)."""
    data = torch.linspace(lo, hi, 60, dtype=torch.float64).reshape(1, 6, 10)
    image = volume(shape=(1, 6, 10))
    image = type(image)(data=data, geometry=image.geometry, kind=image.kind)
    path = write_nifti(image, tmp_path / "q.nii", dtype="int16")
    nii = nib.load(path)
    slope = float(nii.dataobj.slope)
    back = np.asarray(nii.dataobj, dtype=np.float64)  # stored * slope + inter, in float64
    err = np.abs(np.transpose(back, (2, 1, 0)) - data.numpy()).max()
    assert err <= slope / 2 + 4 * np.finfo(np.float64).eps * abs(hi)


def test_a_five_dimensional_file_of_one_volume_is_read(tmp_path):
    """(x, y, z, 1, 1) holds one volume (as (x, y, z, 1) does) and was refused as if it held
    several; (x, y, z, 1, 3), a vector per voxel, still is."""
    data = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    nib.save(nib.Nifti1Image(data[..., None, None], np.diag([2.0, 3.0, 4.0, 1.0])),
             tmp_path / "one.nii")
    nib.save(nib.Nifti1Image(data[..., None], np.diag([2.0, 3.0, 4.0, 1.0])), tmp_path / "four.nii")
    torch.testing.assert_close(read_nifti(tmp_path / "one.nii").data,
                               read_nifti(tmp_path / "four.nii").data, rtol=0, atol=0)
    nib.save(nib.Nifti1Image(np.stack([data] * 3, -1)[..., None, :], np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(DataFormatError, match="expected one 3-D volume"):
        read_nifti(tmp_path / "v.nii")
