"""NIfTI files named as other tools name them: a suffix in another case (``x.Nii.Gz``,
``x.NII``: nibabel maps names case-sensitively and reported the file missing) and ``.hdr`` /
``.img`` pairs (were refused as "must end in .nii or .nii.gz"). Each reads exactly as the
same volume saved as one lower-case ``.nii``."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from mrirecon.io.errors import DataFormatError
from mrirecon.io.nifti import read_nifti

AFFINE = np.array([[2.0, 0, 0, -10], [0, 3.0, 0, 20], [0, 0, 4.0, 30], [0, 0, 0, 1]])
#: int16 with a slope and intercept: the pair's scaling lives in the .hdr, not the .img
STORED = (np.arange(6 * 5 * 4).reshape(6, 5, 4) * 7 - 60).astype(np.int16)


def _image(klass):
    img = klass(STORED, AFFINE)
    img.header.set_slope_inter(0.5, 3.0)
    img.set_sform(AFFINE, code=1)
    img.set_qform(AFFINE, code=1)
    return img


def _same(image, reference):
    assert image.data.dtype == reference.data.dtype
    assert np.array_equal(image.data.numpy(), reference.data.numpy())
    assert image.geometry == reference.geometry


@pytest.mark.parametrize("klass, lower, other", [
    (nib.Nifti1Image, "v.nii.gz", "v.Nii.Gz"), (nib.Nifti1Image, "v.nii", "v.NII"),
    (nib.Nifti2Image, "v.nii", "v.Nii"), (nib.Nifti2Image, "v.nii.gz", "v.NII.GZ")])
def test_a_suffix_in_another_case_reads_as_the_lower_case_file(tmp_path, klass, lower, other):
    nib.save(_image(klass), tmp_path / lower)
    shutil.copy(tmp_path / lower, tmp_path / other)
    reference = read_nifti(tmp_path / lower)
    assert np.allclose(reference.data.numpy().transpose(2, 1, 0), STORED * 0.5 + 3.0)
    _same(read_nifti(tmp_path / other), reference)


@pytest.mark.parametrize("klass, pair", [(nib.Nifti1Image, nib.Nifti1Pair),
                                         (nib.Nifti2Image, nib.Nifti2Pair)])
@pytest.mark.parametrize("given", ["p.hdr", "p.img"])
def test_either_half_of_a_pair_reads_as_the_single_file(tmp_path, klass, pair, given):
    nib.save(_image(klass), tmp_path / "v.nii")
    nib.save(_image(pair), tmp_path / "p.img")
    _same(read_nifti(tmp_path / given), read_nifti(tmp_path / "v.nii"))


def test_an_infinite_slope_in_a_pairs_header_is_warned_when_the_img_is_given(tmp_path):
    """The slope check reads the .hdr, not the first bytes of the .img's voxels."""
    nib.save(_image(nib.Nifti1Pair), tmp_path / "p.img")
    raw = bytearray((tmp_path / "p.hdr").read_bytes())
    raw[112:116] = np.float32(np.inf).tobytes()  # scl_slope
    (tmp_path / "p.hdr").write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="scl_slope"):
        image = read_nifti(tmp_path / "p.img")
    assert np.array_equal(image.data.numpy().transpose(2, 1, 0), STORED)


@pytest.mark.parametrize("case, field, words", [
    ("analyze", "magic", "Analyze 7.5"), ("missing_img", "file", "p.img"),
    ("upper_pair", "file", "lower-case"), ("not_nifti", "sizeof_hdr", "not a NIfTI file")])
def test_pairs_and_other_cases_that_cannot_be_read_are_refused_by_name(tmp_path, case, field,
                                                                        words):
    if case == "analyze":
        nib.save(nib.AnalyzeImage(STORED, AFFINE), tmp_path / "p.img")
        path = tmp_path / "p.hdr"
    elif case == "missing_img":
        nib.save(_image(nib.Nifti1Pair), tmp_path / "p.img")
        (tmp_path / "p.img").unlink()
        path = tmp_path / "p.hdr"
    elif case == "upper_pair":
        nib.save(_image(nib.Nifti1Pair), tmp_path / "p.img")
        for half in ("hdr", "img"):
            (tmp_path / f"p.{half}").rename(tmp_path / f"P.{half.upper()}")
        path = tmp_path / "P.HDR"
    else:
        path = tmp_path / "text.Nii"
        path.write_bytes(b"not an image " * 40)
    with pytest.raises(DataFormatError, match=field) as err:
        read_nifti(path)
    assert words in str(err.value) and path.name in str(err.value)
