"""ISMRMRD reading at the bounds of its rules: an unset ``center_sample``, the 3D label of a
2-partition slab, the voxel and spacing tolerances of the header, placement tolerances, the
reference-scan mismatch bound, ramp-sampled EPI with its trajectory."""

import ismrmrd
import numpy as np
import pytest

from mrirecon.data import Header, ImageGeometry
from mrirecon.io.dicom_technique import mr_technique
from mrirecon.io.errors import DataFormatError
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
from mrirecon.io.ismrmrd_placement import directions_set, slice_order
from mrirecon.io.ismrmrd_raw import read_ismrmrd
from tests.io.test_io_ismrmrd import COILS, ENC_X, ENC_Y, acquisition, cplx, make_xml, write
from tests.robustness.test_hostile_ismrmrd_converters import N, _acq, _kspace, _write, _xml


@pytest.mark.parametrize("z, kind", [(1, None), (2, "3D"), (64, "3D")])
def test_mr_acquisition_type_is_3d_for_every_slab(z, kind):
    h = Header(encoded_matrix=(32, 32, z), recon_matrix=(32, 32, z),
               encoded_fov_mm=(200.0, 200.0, 2.0 * z), recon_fov_mm=(200.0, 200.0, 2.0 * z))
    assert mr_technique(h).get("MRAcquisitionType") == kind


def _header(ex, rx, fe=256.0, fr=256.0, **kw):
    return Header(encoded_matrix=(ex, 96, 1), recon_matrix=(rx, 96, 1),
                  encoded_fov_mm=(fe, 165.0, 5.0), recon_fov_mm=(fr, 165.0, 5.0), num_coils=4, **kw)


@pytest.mark.parametrize("rx, noted", [(256, False), (255, False), (254, True), (250, True)])
def test_readout_voxel_rule_allows_fov_rounding_and_half_a_recon_voxel_only(rx, noted):
    """same_voxel's rule (module docstring): each FOV rounded to the mm (0.5 mm each) plus the
    recon extent off by half a recon voxel. 256 mm over x = 256 encoded (1 mm rows), recon
    256 mm over rx: the labelled extent rx * 1 mm misses 256 mm by 256 - rx rows. Allowed:
    0.5 + 0.5 mm + half a row = 1.5 rows; 1 row off passes, 2 rows off are noted."""
    h = parse_ismrmrd_header(header_to_xml(_header(256, rx)))
    assert ("readout_voxel_note" in h.extra) is noted, h.extra.get("readout_voxel_note")


@pytest.mark.parametrize("factor, noted", [(1.0, False), (1.009, False), (1.02, True), (0.97, True)])
def test_a_stored_geometry_more_than_one_percent_off_the_fov_is_noted(factor, noted):
    """SPACING_TOLERANCE is 1 %: a stored row spacing 2-3 % off reconSpace x / matrix x is a
    contradiction to note (the earlier test only checks 1 mm vs 1.72 mm and 0.5 % off)."""
    h0 = _header(256, 256)
    g = ImageGeometry(spacing=(5.0, factor * 256 / 256, 165 / 96))
    h = parse_ismrmrd_header(header_to_xml(h0.with_(geometry=g)))
    assert ("geometry_spacing_note" in h.extra) is noted, h.extra.get("geometry_spacing_note")


class Refused(Exception):
    pass


def fail(field, problem):
    return Refused(f"{field}: {problem}")


def _head(read, phase):
    return {"read_dir": np.asarray(read, float), "phase_dir": np.asarray(phase, float),
            "slice_dir": np.zeros(3)}


@pytest.mark.parametrize("angle_deg, ok", [(0.0, True), (0.05, True), (1.0, False), (5.0, False)])
def test_read_and_phase_directions_must_be_orthogonal_within_1e_3(angle_deg, ok):
    """directions_set: unit vectors at right angles within 1e-3 (cosine); 1 degree off is a
    cosine of 0.017: no slice plane, refused."""
    a = np.radians(angle_deg)
    head = _head((1.0, 0.0, 0.0), (np.sin(a), np.cos(a), 0.0))
    if ok:
        assert directions_set(head, fail) is True
    else:
        with pytest.raises(Refused, match="are not orthogonal"):
            directions_set(head, fail)


@pytest.mark.parametrize("last, ok", [(15.0, True), (15.04, True), (15.5, False)])
def test_slices_must_be_evenly_spaced_within_one_percent(last, ok):
    """slice_order: gaps may spread by 1 % of the mean gap; 5, 5, 5.5 mm (a 10 % spread) are
    not one volume."""
    head = _head((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    normal = np.cross(head["phase_dir"], head["read_dir"])
    positions = {s: z * normal for s, z in enumerate((0.0, 5.0, 10.0, last))}
    if ok:
        slice_order(head, positions, 4, fail, "dataset")
    else:
        with pytest.raises(Refused, match="not evenly spaced"):
            slice_order(head, positions, 4, fail, "dataset")


@pytest.mark.parametrize("gain, apart", [(1.0, False), (1.5, True), (0.5, True)])
def test_a_reference_beyond_the_mismatch_bound_is_kept_apart(tmp_path, gain, apart):
    truth = cplx(np.random.default_rng(7), 1, COILS, ENC_X, ENC_Y)
    cal = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
    imaging = [acquisition(truth[0, :, :, line + 2], line, 0, center=ENC_X // 2)
               for line in range(0, 9, 3)]
    calib = [acquisition(truth[0, :, :, line + 2] * gain, line, 0, center=ENC_X // 2, flags=[cal])
             for line in range(2, 7)]
    write(tmp_path / "s.h5", make_xml(slices=1), imaging + calib)
    k = read_ismrmrd(tmp_path / "s.h5")
    assert (k.calibration is not None) is apart
    imaging_cols = [line + 2 for line in range(0, 9, 3)]
    np.testing.assert_array_equal(k.data.numpy()[..., imaging_cols], truth[..., imaging_cols])


def test_ramp_sampled_epi_with_its_traj_is_read_by_the_traj(tmp_path):
    k = _kspace()
    ramp = np.sign(np.linspace(-1, 1, N)) * np.abs(np.linspace(-1, 1, N)) ** 1.5 * N / 2
    acqs = [_acq(k[:, :, c], c, traj=np.stack([ramp, np.full(N, c - N // 2)], 1)) for c in range(N)]
    xml = _xml(trajectory="epi", ramps=(100, 100))
    got = read_ismrmrd(_write(tmp_path / "ramp_traj.h5", xml, acqs))
    assert got.trajectory is not None  # the ramps are regridded from traj
    assert "cartesian_traj_note" not in got.header.extra
    plain = [_acq(k[:, :, c], c) for c in range(N)]
    with pytest.raises(DataFormatError, match="'epi' with ramp sampling"):
        read_ismrmrd(_write(tmp_path / "ramp_plain.h5", xml, plain))


def test_unset_center_sample_centres_a_full_readout(tmp_path):
    """``center_sample`` 0 means "not set" (as some converters and simulators write it): a full
    readout is then centred at ``n // 2``, and reads bit for bit as the file that says so."""
    rng = np.random.default_rng(7)
    truth = cplx(rng, COILS, ENC_X, ENC_Y)
    xml = make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1)
    read = {}
    for centre in (0, ENC_X // 2):
        path = tmp_path / f"c{centre}.h5"
        write(path, xml, [acquisition(truth[:, :, line], line, 0, center=centre)
                          for line in range(ENC_Y)])
        read[centre] = read_ismrmrd(path).data.numpy()
    np.testing.assert_array_equal(read[0], read[ENC_X // 2])
