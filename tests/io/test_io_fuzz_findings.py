"""Readers on the three non-clean outcomes of the input-file fuzzer (docs/robustness.md): a
``mrirecon.geometry`` beyond float32, fastMRI label attributes stored as arrays, and a radial
header matrix far beyond what its readouts resolve."""

import json
import re
import warnings

import h5py
import numpy as np
import pytest

from mrirecon.containers import MAX_LENGTH_MM, ImageGeometry
from mrirecon.data import Header
from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset
from mrirecon.io import DataFormatError, read_ismrmrd
from mrirecon.io import noncartesian_limits as limits
from mrirecon.io.errors import DataWarning
from mrirecon.io.fastmri import FastMRIFile, _attr_value, write_fastmri  # noqa: F401 (still there)
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
from mrirecon.io.ismrmrd_stream import open_ismrmrd

GEOMETRY_FIELD = "ismrmrd_header/userParameters/mrirecon.geometry"
F32_MAX = float(np.finfo(np.float32).max)


def _header(**changes):
    h = Header(encoded_matrix=(32, 24, 1), recon_matrix=(16, 16, 1),
               encoded_fov_mm=(200.0, 150.0, 3.0), recon_fov_mm=(100.0, 100.0, 3.0),
               padding_left=2, padding_right=21, acquisition="CORPD_FBK", patient_id="a1b2c3",
               geometry=ImageGeometry(spacing=(3.0, 6.25, 6.25), placed=False))
    return h.with_(**changes)


# 1: a geometry beyond float32 ---------------------------------------------------------------

@pytest.mark.parametrize("key, value", [("spacing", [1e300, 1e300, 1e300]),
                                        ("spacing", [3.0, 2 * F32_MAX, 6.25]),
                                        ("spacing", [3.0, 6.25, 1.5 * MAX_LENGTH_MM]),
                                        ("origin", [1e300, 0.0, 0.0]),
                                        ("origin", [0.0, -2 * MAX_LENGTH_MM, 0.0]),
                                        ("slice_thickness", 1e300)])
def test_stored_geometry_beyond_float32_or_plausible_is_refused(key, value):
    """Was: 1e300 mm passed the float64 checks, the NIfTI's voxel sizes and affine were inf
    (float32 cast), exit 0. Refused as NaN is, naming the user parameter."""
    xml = header_to_xml(_header())
    stored = json.loads(re.search(r"<value>(\{.*?\})</value>", xml).group(1))
    stored[key] = value
    xml = re.sub(r"<value>\{.*?\}</value>", f"<value>{json.dumps(stored)}</value>", xml)
    with pytest.raises(DataFormatError, match=re.escape(GEOMETRY_FIELD)) as err:
        parse_ismrmrd_header(xml, source="h.xml")
    assert key in str(err.value) and "h.xml" in str(err.value)


def test_geometry_bound_keeps_float32_finite_and_allows_the_bound():
    g = ImageGeometry(spacing=(MAX_LENGTH_MM,) * 3, origin=(-MAX_LENGTH_MM, 0.0, MAX_LENGTH_MM))
    # what the NIfTI writer stores: float32, finite
    assert np.isfinite(g.affine_ras().astype(np.float32)).all()
    assert MAX_LENGTH_MM < F32_MAX
    with pytest.raises(ValueError, match="spacing"):
        ImageGeometry(spacing=(1.0, 1.0, np.nextafter(MAX_LENGTH_MM, np.inf)))


def test_fov_beyond_the_bound_names_the_recon_fov():
    """A header without ``mrirecon.geometry`` takes its spacing from the recon FOV: 1e300 mm
    there gave the same inf NIfTI; the error names the FOV and the matrix."""
    xml = header_to_xml(_header())
    xml = re.sub(r"<userParameterString>\s*<name>mrirecon\.geometry</name>.*?"
                 r"</userParameterString>", "", xml, flags=re.S)
    xml = re.sub(r"(<reconSpace>.*?<fieldOfView_mm>\s*<x>)[^<]*", r"\g<1>1e300", xml, flags=re.S)
    with pytest.raises(DataFormatError, match=r"recon FOV \(1e\+300.*recon matrix \(16, 16, 1\)") as err:
        parse_ismrmrd_header(xml, source="h.xml")
    # the field, not "dataset/data: malformed", as the Cartesian reader had it
    assert "h.xml: ismrmrd_header/encoding/reconSpace/fieldOfView_mm" in str(err.value)


# 2: fastMRI label attributes stored as arrays -----------------------------------------------

@pytest.mark.parametrize("name, value", [("patient_id", np.arange(3)),
                                         ("acquisition", np.array([b"CORPD_FBK", b"X"])),
                                         ("patient_id", np.array([], dtype=np.int64))])
def test_label_attribute_array_is_ignored_with_a_warning(tmp_path, name, value):
    """Was: "ismrmrd_header: corrupt or unreadable (ValueError: The truth value of an array ...
    is ambiguous)": the valid XML header was blamed. fastMRI's SliceDataset passes attrs through
    unread, so the label is ignored (the header's own is kept) with a warning naming it."""
    path = write_fastmri(tmp_path / "f.h5", np.ones((2, 2, 32, 24), np.complex64), _header())
    with h5py.File(path, "r+") as h5:
        h5.attrs[name] = value
    with FastMRIFile(path) as f, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        header = f.header
    assert (header.acquisition, header.patient_id) == ("CORPD_FBK", "a1b2c3")
    said = [w.message for w in caught if isinstance(w.message, DataWarning)]
    assert len(said) == 1 and said[0].field == f"attrs/{name}"
    assert f"shape {value.shape}" in said[0].problem and str(path) in str(said[0])


def test_label_attribute_one_element_array_still_labels(tmp_path):
    path = write_fastmri(tmp_path / "f.h5", np.ones((2, 2, 32, 24), np.complex64), _header())
    with h5py.File(path, "r+") as h5:
        h5.attrs["patient_id"] = np.array([b"xyz"])
        h5.attrs["acquisition"] = "CORPDFS_FBK"
    with FastMRIFile(path) as f, warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        assert (f.header.patient_id, f.header.acquisition) == ("xyz", "CORPDFS_FBK")


# 3: a radial header matrix beyond what the readouts resolve ---------------------------------

N = 16


@pytest.fixture(scope="module")
def radial(tmp_path_factory):
    """1 slice x 2 coils, 8 spokes of 2 N = 32 samples on an N x N matrix."""
    out = tmp_path_factory.mktemp("radial")
    (path,) = simulate_noncartesian_dataset(out, "radial", volumes=1, slices=1, coils=2,
                                            size=(N, N), readouts=8, snr_db=None)
    return path


def _with_matrix(radial, path, n):
    with h5py.File(radial) as h5:
        xml, records = h5["dataset/xml"][0].decode(), h5["dataset/data"][()]
    xml = re.sub(r"(<encodedSpace>\s*<matrixSize>\s*)<x>\d+</x>\s*<y>\d+</y>",
                 rf"\g<1><x>{n}</x><y>{n}</y>", xml)
    with h5py.File(path, "w") as h5:
        group = h5.create_group("dataset")
        group.create_dataset("xml", data=np.array([xml], dtype=h5py.string_dtype("utf-8")))
        group.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return path


@pytest.mark.parametrize("n", [3000, 10**6])
def test_radial_matrix_beyond_the_samples_is_refused_up_front(radial, tmp_path, monkeypatch, n):
    """Was: 33 s and 1.4 GB then "no samples within the calibration disc" (3000), a 23.8 GiB
    allocation (20000) or a FINUFFT malloc failure blamed on dataset/data (10^6)."""
    import mrirecon.functional.density as density

    def no_grid(*args, **kwargs):
        raise AssertionError("a density grid was planned before the matrix was checked")

    monkeypatch.setattr(density, "pipe_menon_density", no_grid)
    path = _with_matrix(radial, tmp_path / "m.h5", n)
    for read in (read_ismrmrd, open_ismrmrd):
        with pytest.raises(DataFormatError) as err:
            read(path)
        assert err.value.field == limits.MATRIX_FIELD and err.value.file == str(path)
        assert f"({n}, {n})" in err.value.problem and "32 samples" in err.value.problem


def test_matrix_bound_is_16_samples_a_pixel(radial):
    header = read_ismrmrd(radial).header  # the valid file passes
    samples, fail = 32, (lambda field, problem: DataFormatError("f.h5", field, problem))
    limits.check_noncartesian_matrix(header.with_(encoded_matrix=(16 * samples, 16, 1)),
                                     samples, 2, fail)
    with pytest.raises(DataFormatError, match=r"resolve at most 512 pixels"):
        limits.check_noncartesian_matrix(header.with_(encoded_matrix=(16, 16 * samples + 1, 1)),
                                         samples, 2, fail)


def test_matrix_beyond_memory_is_refused(radial, tmp_path, monkeypatch):
    """Within what the samples resolve but beyond half the memory: refused like the Cartesian
    reader's grids (half the memory), naming the matrix."""
    need = N * N * (limits.GRID_BYTES_PER_PIXEL + 2 * limits.COIL_BYTES_PER_PIXEL)
    monkeypatch.setattr(limits, "memory_bytes", lambda: 2 * need)  # exactly enough
    read_ismrmrd(radial)
    monkeypatch.setattr(limits, "memory_bytes", lambda: 2 * need - 2)
    with pytest.raises(DataFormatError, match="half of it") as err:
        read_ismrmrd(radial)
    assert err.value.field == limits.MATRIX_FIELD


def test_dicom_slice_thickness_beyond_any_image_names_slicethickness(tmp_path):
    """SliceThickness 1e300 on every slice of a CT series: refused by ImageGeometry's bound and
    named as the element it came from (was labelled ImagePositionPatient)."""
    from pydicom.uid import generate_uid

    from mrirecon.io.dicom import save_part10
    from mrirecon.io.dicom_read import read_dicom_series
    from tests.helpers import ct_slice_dataset

    words = np.zeros((6, 7), dtype=np.uint16)
    series = generate_uid()
    for k in range(2):
        save_part10(ct_slice_dataset(k, series, words, thickness="1e300"), tmp_path / f"{k}.dcm")
    with pytest.raises(DataFormatError, match="SliceThickness") as err:
        read_dicom_series(tmp_path)
    assert "ImagePositionPatient" not in str(err.value).split(":")[1]


def test_an_acquisition_position_beyond_any_patient_names_the_field(radial, tmp_path):
    """A ``head.position`` of 1e30 mm (finite in float32): was "dataset/data: malformed
    (ImageGeometry.origin must be …)" from the radial reader, naming no acquisition."""
    bad = tmp_path / "far.h5"
    with h5py.File(radial) as src, h5py.File(bad, "w") as h5:
        src.copy("dataset", h5)
    with h5py.File(bad, "r+") as h5:
        table = h5["dataset/data"]
        record = table[3]
        record["head"]["position"][1] = 1e30
        table[3] = record
    with pytest.raises(DataFormatError, match=r"far\.h5: data\[3\]\.head\.position: .* beyond "
                                              r"100000 mm"):
        read_ismrmrd(bad)
    read_ismrmrd(radial)  # the file as simulated


# 4: the 100 m bound met by values the readers derive (slice gaps, corner origins) ------------

def test_derived_geometry_beyond_100_m_names_the_field_it_came_from(radial, tmp_path):
    """Positions, affines and CT geometry within each field's own checks may still give an image
    beyond 100 m (a corner past it, a 200 m slice gap): each reader names the field the value
    came from, not "dataset/data: malformed", PixelSpacing or a bare ValueError."""
    import nibabel as nib
    from pydicom.uid import generate_uid

    from mrirecon.io.dicom import save_part10
    from mrirecon.io.dicom_read import read_dicom_series
    from mrirecon.io.lodopab import LoDoPaBFiles, write_lodopab
    from mrirecon.io.nifti import read_nifti
    from mrirecon.operators.ct_geometry import MAX_FOV_MM, CTGeometry
    from tests.helpers import ct_slice_dataset

    assert MAX_FOV_MM == MAX_LENGTH_MM
    corner = tmp_path / "corner.h5"  # x = -99990 mm: inside the bound, the image's corner not
    with h5py.File(radial) as src, h5py.File(corner, "w") as h5:
        src.copy("dataset", h5)
    with h5py.File(corner, "r+") as h5:
        table = h5["dataset/data"]
        records = table[()]
        records["head"]["position"][:, 0] = -99990.0
        for name, cosines in (("read_dir", (1, 0, 0)), ("phase_dir", (0, 1, 0)),
                              ("slice_dir", (0, 0, 1))):  # placed: the simulator leaves them 0
            records["head"][name][:] = cosines
        table[...] = records
    with pytest.raises(DataFormatError, match=r"corner\.h5: data\[\d*\]\.head\.position: the "
                                              r"slices' positions give ImageGeometry\.origin"):
        read_ismrmrd(corner)
    series, words = generate_uid(), np.zeros((6, 7), dtype=np.uint16)
    for k in range(2):  # slices 200 m apart
        ds = ct_slice_dataset(k, series, words)
        ds.ImagePositionPatient = ["0", "0", f"{2e5 * k:g}"]
        save_part10(ds, tmp_path / "dcm" / f"{k}.dcm")
    with pytest.raises(DataFormatError, match=r": ImagePositionPatient: .*between slices"):
        read_dicom_series(tmp_path / "dcm")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 2), np.float32), np.diag([1.0, 1.0, 2e5, 1.0])),
             tmp_path / "far.nii")
    with pytest.raises(DataFormatError, match=r"far\.nii: srow_x, srow_y, srow_z"):
        read_nifti(tmp_path / "far.nii")
    geo = CTGeometry.parallel((16, 16), 8)
    write_lodopab(tmp_path / "ct", "test", np.zeros((1, 8, geo.num_detectors), np.float32),
                  np.zeros((1, 16, 16), np.float32), geometry=geo)
    (path,) = (tmp_path / "ct").glob("observation_*.hdf5")
    with h5py.File(path, "r+") as h5:
        stated = json.loads(h5.attrs["geometry"])
        h5.attrs["geometry"] = json.dumps({**stated, "pixel_size": 2e5})
    with pytest.raises(DataFormatError, match=r"attrs/geometry: .*beyond 100000 mm"):
        LoDoPaBFiles(tmp_path / "ct", "test").observation(0)


@pytest.mark.parametrize("element", ["SpacingBetweenSlices", "SliceThickness"])
def test_a_single_slice_spacing_beyond_100_m_names_its_element(tmp_path, element):
    """A one-slice series takes its slice spacing from SpacingBetweenSlices, else SliceThickness:
    2e5 mm there was blamed on ImagePositionPatient (PixelSpacing before)."""
    from pydicom.uid import generate_uid

    from mrirecon.io.dicom import save_part10
    from mrirecon.io.dicom_read import read_dicom_series
    from tests.helpers import ct_slice_dataset

    ds = ct_slice_dataset(0, generate_uid(), np.zeros((6, 7), dtype=np.uint16),
                          thickness="200000" if element == "SliceThickness" else "2.5")
    if element == "SpacingBetweenSlices":
        ds.SpacingBetweenSlices = "200000"
    save_part10(ds, tmp_path / "a.dcm")
    with pytest.raises(DataFormatError, match=rf"a\.dcm: {element}: 200000 mm is beyond"):
        read_dicom_series(tmp_path)
