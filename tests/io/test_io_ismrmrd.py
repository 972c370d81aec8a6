"""ISMRMRD raw reader on files written by the reference ``ismrmrd`` package; header XML."""

import ismrmrd
import numpy as np
import pytest
import torch

from mrirecon.data import Header, ImageGeometry
from mrirecon.io.errors import DataFormatError
from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header
from mrirecon.io.ismrmrd_raw import read_ismrmrd

X = ismrmrd.xsd
COILS, ENC_X, ENC_Y, REC_X = 3, 16, 12, 8
FOV_X, FOV_Y = 200.0, 120.0


def make_xml(enc_z=1, step1=(0, 8, 4), step2=None, slices=2):
    limits = X.encodingLimitsType(
        kspace_encoding_step_1=X.limitType(minimum=step1[0], maximum=step1[1], center=step1[2]),
        slice=X.limitType(minimum=0, maximum=slices - 1, center=0),
    )
    if step2 is not None:
        limits.kspace_encoding_step_2 = X.limitType(
            minimum=step2[0], maximum=step2[1], center=step2[2])
    header = X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(
            systemFieldStrength_T=3.0, receiverChannels=COILS),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=X.encodingSpaceType(
                matrixSize=X.matrixSizeType(x=ENC_X, y=ENC_Y, z=enc_z),
                fieldOfView_mm=X.fieldOfViewMm(x=FOV_X, y=FOV_Y, z=5.0 * enc_z)),
            reconSpace=X.encodingSpaceType(
                matrixSize=X.matrixSizeType(x=REC_X, y=ENC_Y, z=enc_z),
                fieldOfView_mm=X.fieldOfViewMm(x=FOV_X / 2, y=FOV_Y, z=5.0 * enc_z)),
            encodingLimits=limits,
            trajectory=X.trajectoryType.CARTESIAN,
        )],
        sequenceParameters=X.sequenceParametersType(TR=[500.0], TE=[12.5], flipAngle_deg=[70.0]),
    )
    return X.ToXML(header)


def acquisition(data, line, slice_, *, part=0, flags=(), center=0, average=0, repetition=0,
                position=(0.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0)):
    acq = ismrmrd.Acquisition.from_array(
        np.ascontiguousarray(data, dtype=np.complex64),
        center_sample=center, read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0),
        slice_dir=slice_dir, position=position,
    )
    acq.idx.kspace_encode_step_1 = line
    acq.idx.kspace_encode_step_2 = part
    acq.idx.slice = slice_
    acq.idx.average = average
    acq.idx.repetition = repetition
    for flag in flags:
        acq.set_flag(flag)
    return acq


def write(path, xml, acquisitions, seed=0):
    order = np.random.default_rng(seed).permutation(len(acquisitions))
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for i in order:  # shuffled acquisition order
            ds.append_acquisition(acquisitions[i])


def centred(transform, x, axis):
    """Reference 1-D centred orthonormal (i)FFT with numpy."""
    shifted = np.fft.ifftshift(x, axes=axis)
    return np.fft.fftshift(transform(shifted, axis=axis, norm="ortho"), axes=axis)


def cplx(rng, *shape):
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


@pytest.fixture
def scan(tmp_path):
    """2 slices, partial Fourier (lines 0..8 of 12, centre at line 4), partial echo on
    slice 1, two noise scans, a navigator and a phase-correction line, a repeated average."""
    rng = np.random.default_rng(1)
    truth = np.zeros((2, COILS, ENC_X, ENC_Y), np.complex64)
    acqs, positions = [], [(0.0, 0.0, -6.0), (0.0, 0.0, 0.0)]
    for s in range(2):
        for line in range(9):
            col = line + 2  # ENC_Y // 2 - center
            if s == 1:  # partial echo: 12 samples, k-space centre at sample 4
                data = cplx(rng, COILS, 12)
                truth[s, :, 4:, col] = data
                acqs.append(acquisition(data, line, s, center=4, position=positions[s]))
            else:
                data = cplx(rng, COILS, ENC_X)
                acqs.append(acquisition(data, line, s, center=ENC_X // 2, position=positions[s]))
                if line == 3:  # second average of this line
                    again = cplx(rng, COILS, ENC_X)
                    acqs.append(acquisition(again, line, s, center=ENC_X // 2, average=1,
                                            position=positions[s]))
                    data = (data + again) / np.float32(2)
                truth[s, :, :, col] = data
    noise = [cplx(rng, COILS, 20), cplx(rng, COILS, 20)]
    acqs.insert(0, acquisition(noise[1], 0, 0, flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT]))
    acqs.insert(0, acquisition(noise[0], 0, 0, flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT]))
    acqs.append(acquisition(cplx(rng, COILS, ENC_X) * 100, 5, 0, center=8,
                            flags=[ismrmrd.ACQ_IS_NAVIGATION_DATA]))
    acqs.append(acquisition(cplx(rng, COILS, ENC_X) * 100, 6, 1, center=8,
                            flags=[ismrmrd.ACQ_IS_PHASECORR_DATA]))
    path = tmp_path / "raw.h5"
    # noise acquisitions come first in a real file; keep them first, shuffle the rest
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(make_xml())
        ds.append_acquisition(acqs[0])
        ds.append_acquisition(acqs[1])
        for i in np.random.default_rng(2).permutation(np.arange(2, len(acqs))):
            ds.append_acquisition(acqs[i])
    return path, truth, np.concatenate(noise, axis=1)


def test_reads_ground_truth_layout_mask_and_noise(scan):
    path, truth, noise = scan
    k = read_ismrmrd(path)
    assert k.data.shape == (2, COILS, ENC_X, ENC_Y) and k.data.dtype == torch.complex64
    assert torch.allclose(k.data, torch.from_numpy(truth), atol=1e-6, rtol=0)
    assert not k.data[0, :, :, [0, 1, 11]].any()
    expected_mask = torch.zeros(ENC_Y, dtype=torch.bool)
    expected_mask[2:11] = True
    assert torch.equal(k.mask, expected_mask)
    assert torch.equal(k.noise, torch.from_numpy(noise))
    h = k.header
    assert h.encoded_matrix == (ENC_X, ENC_Y, 1) and h.num_coils == COILS
    assert (h.padding_left, h.padding_right) == (2, 11)
    assert (h.field_strength_t, h.repetition_time_ms, h.echo_time_ms, h.flip_angle_deg) == \
        (3.0, 500.0, 12.5, 70.0)


def test_geometry_from_acquisition_directions(scan):
    path, _, _ = scan
    g = read_ismrmrd(path).header.geometry
    row_mm, col_mm = (FOV_X / 2) / REC_X, FOV_Y / ENC_Y
    assert g.orientation == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # phase_dir, read_dir
    assert g.spacing == (6.0, row_mm, col_mm)  # slice gap from positions, not the 5 mm FOV
    expected = np.array([0.0, 0.0, -6.0]) - (REC_X // 2) * row_mm * np.array([0, 1, 0]) \
        - (ENC_Y // 2) * col_mm * np.array([1, 0, 0])
    np.testing.assert_allclose(g.origin, expected)


def test_readout_oversampling_crop_matches_numpy(scan):
    path, truth, _ = scan
    k = read_ismrmrd(path, crop_readout_oversampling=True)
    img = centred(np.fft.ifft, truth, 2)
    img = img[:, :, (ENC_X - REC_X) // 2: (ENC_X + REC_X) // 2]
    expected = centred(np.fft.fft, img, 2)
    assert k.data.shape == (2, COILS, REC_X, ENC_Y)
    np.testing.assert_allclose(k.data.numpy(), expected, atol=1e-5)
    assert k.header.encoded_matrix == (REC_X, ENC_Y, 1)
    assert k.header.encoded_fov_mm[0] == FOV_X / 2


@pytest.mark.parametrize("z", [2, 3, 4])  # 2: the smallest slab (a bound of the 3-D checks)
def test_3d_partitions_become_slices(tmp_path, z):
    rng = np.random.default_rng(3)
    truth = cplx(rng, z, COILS, ENC_X, ENC_Y)  # (kz, coils, kx, ky), fully sampled
    acqs = [acquisition(truth[p, :, :, line], line, 0, part=p, center=ENC_X // 2)
            for p in range(z) for line in range(ENC_Y)]
    path = tmp_path / "3d.h5"
    write(path, make_xml(enc_z=z, step1=(0, ENC_Y - 1, ENC_Y // 2), step2=(0, z - 1, z // 2),
                         slices=1), acqs)
    k = read_ismrmrd(path)
    expected = centred(np.fft.ifft, truth, 0)
    assert k.data.shape == (z, COILS, ENC_X, ENC_Y) and k.mask is None and k.noise is None
    np.testing.assert_allclose(k.data.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_3d_slab_geometry_places_each_partition(tmp_path, slice_sign):
    """A point one partition above a 3-D slab's centre (and off-centre in plane) is found at its
    true position: ``position`` is the slab centre, so partition 0 lies ``z // 2`` partitions
    before it (it was put at the centre: half a slab off); a ``slice_dir`` against
    ``phase x read`` reverses the partitions."""
    z, dz = 6, 5.0  # make_xml: partition thickness fov_z / z = 5 mm
    centre = np.array([10.0, -20.0, 30.0])
    slice_dir = (0.0, 0.0, slice_sign)
    img = np.zeros((z, COILS, ENC_X, ENC_Y), np.complex64)  # (partition, coil, read, phase)
    img[z // 2 + 1, :, ENC_X // 2 + 2, ENC_Y // 2 - 3] = 1.0
    k = centred(np.fft.fft, centred(np.fft.fft, centred(np.fft.fft, img, 0), 2), 3)
    acqs = [acquisition(k[p, :, :, line], line, 0, part=p, center=ENC_X // 2,
                        position=tuple(centre), slice_dir=slice_dir)
            for p in range(z) for line in range(ENC_Y)]
    path = tmp_path / "slab.h5"
    write(path, make_xml(enc_z=z, step1=(0, ENC_Y - 1, ENC_Y // 2), step2=(0, z - 1, z // 2),
                         slices=1), acqs)
    ks = read_ismrmrd(path, crop_readout_oversampling=True)  # rows = the recon grid's
    mag = centred(np.fft.ifft, centred(np.fft.ifft, ks.data.numpy(), 2), 3)
    s, _, r, c = np.unravel_index(np.abs(mag).argmax(), mag.shape)
    g = ks.header.geometry
    assert g.spacing[0] == dz
    world = (np.array(g.origin) + s * dz * g.slice_direction + r * g.spacing[1] * g.column_direction
             + c * g.spacing[2] * g.row_direction)
    truth = (centre + dz * np.array(slice_dir) + 2 * g.spacing[1] * np.array([0.0, 1.0, 0.0])
             - 3 * g.spacing[2] * np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(world, truth, atol=1e-9)


SLAB_Z, SLAB_DZ = 4, 5.0  # make_xml: partition thickness fov_z / z = 5 mm; a slab is 20 mm
#: positions are float32 in the file (and in a NIfTI affine), |z| <= 50 mm here
SLAB_TOL = 4 * float(np.finfo(np.float32).eps) * 50


def _slabs(path, centres, slice_sign=1.0):
    """Slabs ``idx.slice = 0, 1, ...`` of ``SLAB_Z`` partitions centred at ``centres`` mm on the
    z axis (the slice normal), each with weak noise (seeded by its centre) and a point of
    amplitude ``1 + centre / 10`` in partition 1; returns the point's true z per slab."""
    acqs = []
    for s, c in enumerate(centres):
        rng = np.random.default_rng(int(c * 10) + 1000)
        img = (0.01 * rng.normal(size=(SLAB_Z, COILS, ENC_X, ENC_Y))).astype(np.complex64)
        img[1, :, ENC_X // 2, ENC_Y // 2] = 1 + c / 10
        k = centred(np.fft.fft, centred(np.fft.fft, centred(np.fft.fft, img, 0), 2), 3)
        acqs += [acquisition(k[p, :, :, line], line, s, part=p, center=ENC_X // 2,
                             position=(0.0, 0.0, c), slice_dir=(0.0, 0.0, slice_sign))
                 for p in range(SLAB_Z) for line in range(ENC_Y)]
    write(path, make_xml(enc_z=SLAB_Z, step1=(0, ENC_Y - 1, ENC_Y // 2),
                         step2=(0, SLAB_Z - 1, SLAB_Z // 2), slices=len(centres)), acqs)
    return [c + slice_sign * (1 - SLAB_Z // 2) * SLAB_DZ for c in centres]


def _points(k):
    """(amplitude, slice index) of each slab's point: the brightest pixel of each slice that holds
    one (the noise is 0.01)."""
    img = np.abs(centred(np.fft.ifft, centred(np.fft.ifft, k.data.numpy(), 2), 3))[:, 0]
    peak = img.max(axis=(1, 2))
    return {round(float(peak[i]), 1): int(i) for i in np.flatnonzero(peak > 0.5)}


@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
@pytest.mark.parametrize("centres", [(0.0, 20.0, 40.0), (40.0, 20.0, 0.0), (0.0, 40.0, 20.0)])
def test_contiguous_slabs_in_any_index_order_form_one_exact_volume(tmp_path, centres, slice_sign):
    """Multi-slab 3-D (TOF): contiguous slabs stored in any idx.slice order give the ascending
    file's volume, each slab's point at its true z and the slices one partition apart."""
    truth = _slabs(tmp_path / "slabs.h5", centres, slice_sign)
    _slabs(tmp_path / "ascending.h5", sorted(centres), slice_sign)
    k, ref = read_ismrmrd(tmp_path / "slabs.h5"), read_ismrmrd(tmp_path / "ascending.h5")
    assert k.data.shape == (3 * SLAB_Z, COILS, ENC_X, ENC_Y)
    np.testing.assert_array_equal(k.data.numpy(), ref.data.numpy())
    g = k.header.geometry
    assert g.spacing[0] == SLAB_DZ and g == ref.header.geometry
    first = min(centres) - (SLAB_Z // 2 if slice_sign > 0 else SLAB_Z - 1 - SLAB_Z // 2) * SLAB_DZ
    np.testing.assert_allclose([g.slice_position(i)[2] for i in range(3 * SLAB_Z)],
                               first + SLAB_DZ * np.arange(3 * SLAB_Z), rtol=0, atol=SLAB_TOL)
    points = _points(k)
    assert len(points) == 3
    for c, z in zip(centres, truth):
        assert g.slice_position(points[round(1 + c / 10, 1)])[2] == pytest.approx(z, abs=SLAB_TOL)


@pytest.mark.parametrize("centres, named", [
    ((0.0, 15.0, 30.0), r"idx\.slice 0 and 1 overlap by 5\.000 mm \(1 partition\); idx\.slice "
                        r"1 and 2 overlap by 5\.000 mm"),  # 25 % of a slab
    ((30.0, 15.0, 0.0), r"idx\.slice 2 and 1 overlap by 5\.000 mm \(1 partition\)"),
    ((0.0, 25.0, 50.0), r"idx\.slice 0 and 1 leave a gap of 5\.000 mm \(1 partition\)"),
    ((0.0, 17.5, 40.0), r"0 and 1 overlap by 2\.500 mm \(0\.5 partitions\); idx\.slice 1 and 2 "
                        r"leave a gap of 2\.500 mm"),
    ((0.0, 20.0, 20.0), r"idx\.slice 1 and 2 overlap by 20\.000 mm \(4 partitions\)"),
])
def test_overlapping_or_gapped_slabs_are_refused(tmp_path, centres, named):
    """They were stacked as if contiguous: slab 2 of 25 %-overlapping slabs written 10 mm off,
    the written slice positions evenly spaced although the slabs' partitions coincide."""
    _slabs(tmp_path / "slabs.h5", centres)
    with pytest.raises(DataFormatError, match=r"slabs\.h5: dataset/data\[\]\.idx\.slice / head\."
                                              r"position: the 3 slabs of 4 partitions x 5 mm = 20 "
                                              r"mm .*" + named + r".*load\.counters\.slice=N"):
        read_ismrmrd(tmp_path / "slabs.h5")


def test_one_slab_of_overlapping_slabs_is_read_alone_and_placed_exactly(tmp_path):
    import json

    import nibabel as nib

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    centres = (0.0, 15.0, 30.0)  # 25 % overlap
    truth = _slabs(tmp_path / "tof.h5", centres)
    for s, c in enumerate(centres):
        k = read_ismrmrd(tmp_path / "tof.h5", counters={"slice": s})
        assert k.data.shape == (SLAB_Z, COILS, ENC_X, ENC_Y)
        g = k.header.geometry
        np.testing.assert_allclose([g.slice_position(i)[2] for i in range(SLAB_Z)],
                                   c + SLAB_DZ * (np.arange(SLAB_Z) - SLAB_Z // 2),
                                   atol=SLAB_TOL, rtol=0)
        (point,) = _points(k).items()
        assert point[0] == round(1 + c / 10, 1)
        assert g.slice_position(point[1])[2] == pytest.approx(truth[s], abs=SLAB_TOL)
    # the pipeline: refused naming the way out, which then writes slab 1 where it lies
    fast = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[nifti]", "report.enabled=false"]
    for extra, status in (([], "failed"), (["load.counters.slice=1"], "ok")):
        out = tmp_path / f"out{len(extra)}"
        run_pipeline(load_pipeline("mri_cs", fast + extra)[0], [str(tmp_path / "tof.h5")], out,
                     progress=False)
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        assert entry["status"] == status
    assert "overlap by 5.000 mm" in json.loads(
        (tmp_path / "out0" / "provenance.json").read_text())["files"][0]["error"]
    (nii,) = (tmp_path / "out1").rglob("*.nii*")
    volume = nib.load(nii)
    profile = np.asarray(volume.dataobj).max(axis=(0, 1))  # (cols, rows, slices)
    assert volume.affine[2, 2] == pytest.approx(SLAB_DZ, abs=SLAB_TOL)
    z_point = (volume.affine @ [0, 0, int(profile.argmax()), 1])[2]
    assert z_point == pytest.approx(truth[1], abs=SLAB_TOL)
    assert (volume.affine @ [0, 0, 0, 1])[2] == pytest.approx(15.0 - 2 * SLAB_DZ, abs=SLAB_TOL)


def test_repetitions_need_selection(tmp_path):
    rng = np.random.default_rng(4)
    reps = [cplx(rng, COILS, ENC_X, ENC_Y) for _ in range(2)]
    acqs = [acquisition(reps[r][:, :, line], line, 0, center=ENC_X // 2, repetition=r)
            for r in range(2) for line in range(ENC_Y)]
    path = tmp_path / "reps.h5"
    write(path, make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), acqs)
    with pytest.raises(DataFormatError, match=r"reps\.h5.*idx\.repetition"):
        read_ismrmrd(path)
    k = read_ismrmrd(path, counters={"repetition": 1})
    assert torch.equal(k.data[0], torch.from_numpy(reps[1]))
    # the pipeline picks one too (was: only the Python API could; the error named it)
    import json

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    fast = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[hdf5]", "report.enabled=false"]
    for extra, status in (([], "failed"), (["load.counters.repetition=1"], "ok")):
        out = tmp_path / f"out{len(extra)}"
        run_pipeline(load_pipeline("mri_cs", fast + extra)[0], [str(path)], out, progress=False)
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        assert entry["status"] == status
    assert "--set load.counters.repetition=VALUE" in json.loads(
        (tmp_path / "out0" / "provenance.json").read_text())["files"][0]["error"]


def test_bad_files_raise_data_format_error(tmp_path):
    rng = np.random.default_rng(5)
    bad_line = tmp_path / "line.h5"
    write(bad_line, make_xml(slices=1), [acquisition(cplx(rng, COILS, ENC_X), 11, 0, center=8)])
    with pytest.raises(DataFormatError, match=r"line\.h5.*kspace_encode_step_1"):
        read_ismrmrd(bad_line)  # line 11 + shift 2 = column 13 >= 12
    with pytest.raises(DataFormatError, match=r"line\.h5: other"):
        read_ismrmrd(bad_line, dataset="other")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataFormatError, match=r"junk\.h5: file"):
        read_ismrmrd(junk)


def test_header_round_trip_and_schema_validity():
    header = Header(
        encoded_matrix=(640, 368, 1), recon_matrix=(320, 320, 1),
        encoded_fov_mm=(280.0, 140.0, 4.5), recon_fov_mm=(140.0, 140.0, 3.0),
        padding_left=17, padding_right=351, acquisition="CORPD_FBK", field_strength_t=2.89362,
        repetition_time_ms=2750.0, echo_time_ms=27.0, flip_angle_deg=90.0, num_coils=15,
        geometry=ImageGeometry(spacing=(3.3, 0.4375, 0.4375), origin=(-70.0, -70.0, 12.5),
                               orientation=(0, 1, 0, 0, 0, -1)),
        patient_id="3f1c", extra={"patient_position": "FFS"},
    )
    xml = header_to_xml(header)
    assert parse_ismrmrd_header(xml) == header
    ref = X.CreateFromDocument(xml)  # the reference schema binding accepts it
    enc = ref.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y) == (640, 368)
    lim = enc.encodingLimits.kspace_encoding_step_1
    assert 368 // 2 - lim.center == 17 and 17 + lim.maximum + 1 == 351
    assert ref.acquisitionSystemInformation.systemFieldStrength_T == pytest.approx(2.89362)
    # and a header written by the reference package parses with derived geometry
    parsed = parse_ismrmrd_header(make_xml())
    assert parsed.geometry.spacing == (5.0, (FOV_X / 2) / REC_X, FOV_Y / ENC_Y)
    assert (parsed.padding_left, parsed.padding_right) == (2, 11)


@pytest.mark.parametrize("xml, field", [
    ("", "ismrmrd_header"),
    ("<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'><encoding>", "malformed"),
    ("<ismrmrdHeader xmlns='http://example.org/other'/>", "namespace"),
    ("<ismrmrdHeader xmlns='http://www.ismrm.org/ISMRMRD'/>", "encoding"),
    (make_xml().replace("<x>16</x>", "<x>sixteen</x>"), "matrixSize/x"),
])
def test_invalid_headers(xml, field):
    with pytest.raises(DataFormatError, match=rf"hdr\.xml: .*{field}"):
        parse_ismrmrd_header(xml, source="hdr.xml")


def _lines(rng, z_of_slice, *, reverse_odd=False, lines=range(9)):
    """Fully sampled lines 0..8 of each slice at ``z_of_slice``; odd lines flagged
    ACQ_IS_REVERSE and stored in acquisition order when ``reverse_odd`` (EPI)."""
    truth = np.zeros((len(z_of_slice), COILS, ENC_X, ENC_Y), np.complex64)
    acqs = []
    for s, z in enumerate(z_of_slice):
        for line in lines:
            data = cplx(rng, COILS, ENC_X)
            truth[s, :, :, line + 2] = data
            flip = reverse_odd and line % 2 == 1
            acqs.append(acquisition(data[:, ::-1] if flip else data, line, s, center=ENC_X // 2,
                                    position=(0.0, 0.0, z),
                                    flags=[ismrmrd.ACQ_IS_REVERSE] if flip else []))
    return truth, acqs


def test_reversed_lines_are_flipped_back(tmp_path):
    # EPI stores every other line in acquisition order (was: put on the grid unflipped, 13 dB)
    truth, acqs = _lines(np.random.default_rng(3), (0.0, 6.0), reverse_odd=True)
    write(tmp_path / "epi.h5", make_xml(), acqs)
    np.testing.assert_array_equal(read_ismrmrd(tmp_path / "epi.h5").data.numpy(), truth)


def test_slices_are_ordered_by_position_not_by_index(tmp_path):
    # slice indices descending or interleaved along the normal were written mirrored or at
    # wrong positions; unevenly spaced slices cannot form one volume
    for zs, order in (((0.0, -6.0, -12.0), [2, 1, 0]), ((0.0, 10.0, 5.0), [0, 2, 1])):
        truth, acqs = _lines(np.random.default_rng(4), zs)
        write(tmp_path / "s.h5", make_xml(slices=3), acqs)
        k = read_ismrmrd(tmp_path / "s.h5")
        np.testing.assert_array_equal(k.data.numpy(), truth[order])
        g = k.header.geometry
        assert g.spacing[0] == pytest.approx(abs(zs[1] - zs[0]) if order[0] == 2 else 5.0)
        assert g.origin[2] == pytest.approx(min(zs))
        (tmp_path / "s.h5").unlink()
    _, acqs = _lines(np.random.default_rng(5), (0.0, 5.0, 20.0))
    write(tmp_path / "uneven.h5", make_xml(slices=3), acqs)
    with pytest.raises(DataFormatError, match=r"head.position: the 3 slices lie at \[0.0, 5.0, "
                                              r"20.0\] mm along the slice normal: not evenly spaced"):
        read_ismrmrd(tmp_path / "uneven.h5")


def test_a_line_beyond_the_headers_encoding_limit_is_named(tmp_path):
    # was: read, then dropped by the pipeline as "data the file's mask marks unsampled"
    _, acqs = _lines(np.random.default_rng(6), (0.0, 6.0), lines=range(10))  # limit: 0..8
    write(tmp_path / "beyond.h5", make_xml(), acqs)
    with pytest.raises(DataFormatError, match=r"idx.kspace_encode_step_1: 9 exceeds the header's "
                                              r"encodingLimits/kspace_encoding_step_1/maximum = 8"):
        read_ismrmrd(tmp_path / "beyond.h5")


def test_calibration_only_lines_fill_gaps_but_a_separate_reference_scan_stays_apart(tmp_path):
    # imaging every 3rd line plus calibration-only ACS lines at the centre: the same scan's ACS
    # fill the gaps and never average into imaging lines. A reference scan of another gain was
    # averaged in (4.9 dB, exit 0), then refused ("differ ... by 200%: a separate reference
    # scan"), as was a header that says the calibration is separate; both are now returned
    # apart in KSpace.calibration and never enter the data or the mask
    rng = np.random.default_rng(7)
    truth = cplx(rng, 1, COILS, ENC_X, ENC_Y)
    cal = ismrmrd.ACQ_IS_PARALLEL_CALIBRATION
    imaging = [acquisition(truth[0, :, :, line + 2], line, 0, center=ENC_X // 2)
               for line in range(0, 9, 3)]
    acs = range(2, 7)  # lines 2..6: 3 and 6 are imaging lines too
    imaging_cols = [line + 2 for line in range(0, 9, 3)]
    acs_cols = [line + 2 for line in acs]

    def scan(gain, name, xml=None):
        calib = [acquisition(truth[0, :, :, line + 2] * gain, line, 0, center=ENC_X // 2,
                             flags=[cal]) for line in acs]
        write(tmp_path / name, xml or make_xml(slices=1), imaging + calib)
        return tmp_path / name

    k = read_ismrmrd(scan(1.0, "same.h5"))
    cols = [line + 2 for line in sorted({0, 3, 6, *acs})]
    np.testing.assert_array_equal(k.data.numpy()[..., cols], truth[..., cols])
    assert k.calibration is None and "calibration_note" not in k.header.extra

    def assert_apart(k, gain):
        data, ref = k.data.numpy(), k.calibration.numpy()
        others = [c for c in range(ENC_Y) if c not in imaging_cols]
        np.testing.assert_array_equal(data[..., imaging_cols], truth[..., imaging_cols])
        assert not data[..., others].any()  # no reference line in the data
        assert k.mask.tolist() == [c in imaging_cols for c in range(ENC_Y)]
        np.testing.assert_allclose(ref[..., acs_cols], gain * truth[..., acs_cols], rtol=1e-6)
        assert not ref[..., [c for c in range(ENC_Y) if c not in acs_cols]].any()

    k = read_ismrmrd(scan(3.0, "gain.h5"))
    assert_apart(k, 3.0)
    assert k.header.extra["calibration_note"].startswith(
        "separate reference scan (their calibration-only lines (ACQ_IS_PARALLEL_CALIBRATION) "
        "differ from the imaging lines at the same 2 positions by 200%: another contrast or "
        "gain): 5 reference lines per slice (columns 4..8 of 12) are used only for calibration")
    with pytest.raises(DataFormatError, match=r"kspace_encode_step_1 4\) was not acquired"):
        read_ismrmrd(scan(3.0, "gain.h5"), include_calibration=False)  # the reference left out
    separate = make_xml(slices=1).replace(  # schema order: parallelImaging after trajectory
        "</trajectory>", "</trajectory><parallelImaging><accelerationFactor>"
        "<kspace_encoding_step_1>3</kspace_encoding_step_1><kspace_encoding_step_2>1"
        "</kspace_encoding_step_2></accelerationFactor><calibrationMode>separate"
        "</calibrationMode></parallelImaging>")
    k = read_ismrmrd(scan(1.0, "sep.h5", separate))  # same gain, but the header says separate
    assert_apart(k, 1.0)
    assert k.header.extra["calibration_note"].startswith(
        "separate reference scan (header calibrationMode 'separate'): 5 reference lines")
    k = read_ismrmrd(scan(1.0, "sep.h5", separate), crop_readout_oversampling=True)
    assert k.calibration.shape == k.data.shape == (1, COILS, REC_X, ENC_Y)


def test_acquisitions_of_a_second_encoding_space_are_never_dropped_silently(tmp_path):
    """A reference scan in encoding space 1 was dropped without a word (the run then failed on
    a missing calibration band, or, told to use Walsh maps, gave 13.9 dB instead of 42.0):
    refused when its lines are calibration lines, otherwise read without them and noted."""
    rng = np.random.default_rng(4)
    truth = cplx(rng, COILS, ENC_X, ENC_Y)
    lines = [acquisition(truth[:, :, line], line, 0, center=ENC_X // 2) for line in range(ENC_Y)]

    def second_space(flags):
        extra = [acquisition(truth[:, :, line], line, 0, center=ENC_X // 2, flags=flags)
                 for line in range(4, 8)]
        for acq in extra:
            acq.encoding_space_ref = 1
        return extra

    xml = make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1)
    write(tmp_path / "ref.h5", xml, lines + second_space([ismrmrd.ACQ_IS_PARALLEL_CALIBRATION]))
    with pytest.raises(DataFormatError, match=r"encoding_space_ref: 4 parallel-calibration "
                                              r"acquisitions are in encoding space \[1\]"):
        read_ismrmrd(tmp_path / "ref.h5")
    write(tmp_path / "other.h5", xml, lines + second_space([]))
    k = read_ismrmrd(tmp_path / "other.h5")
    np.testing.assert_allclose(k.data[0].numpy(), truth, atol=1e-6)  # encoding space 0 only
    assert k.header.extra["other_encodings_note"].startswith("4 acquisitions of encoding space [1]")


def test_noise_scans_are_scaled_to_the_imaging_bandwidth(tmp_path):
    """Noise variance grows with the bandwidth 1 / dwell: a noise scan at 2.5 us beside imaging
    at 5 us was used as it was, so prewhitening made the image 1.41x too dark."""
    rng = np.random.default_rng(5)
    lines = [acquisition(cplx(rng, COILS, ENC_X), line, 0, center=ENC_X // 2) for line in range(ENC_Y)]
    for acq in lines:
        acq.sample_time_us = 5.0
    noise = cplx(rng, COILS, 64)
    scan = acquisition(noise, 0, 0, flags=[ismrmrd.ACQ_IS_NOISE_MEASUREMENT])
    scan.sample_time_us = 2.5
    write(tmp_path / "n.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), [scan] + lines)
    got = read_ismrmrd(tmp_path / "n.h5").noise.numpy()
    np.testing.assert_allclose(got, noise * np.sqrt(2.5 / 5.0), rtol=1e-6)


def test_a_partial_echo_is_noted(tmp_path):
    """Samples a partial echo never took were zeros that every method took as measured (the
    image blurred along the readout): the reader records which readout rows hold data (the
    pipeline's operators leave the others unsampled) and says so; a full echo says nothing."""
    rng = np.random.default_rng(6)
    lines = [acquisition(cplx(rng, COILS, 12), line, 0, center=4) for line in range(ENC_Y)]
    write(tmp_path / "pe.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), lines)
    note = read_ismrmrd(tmp_path / "pe.h5").header.extra["partial_echo_note"]
    assert note.startswith(f"partial echo: readout samples 4..15 of {ENC_X} hold data (4 never sampled)")
    assert read_ismrmrd(tmp_path / "pe.h5").header.extra["readout_range"] == [4, ENC_X, ENC_X]
    full = [acquisition(cplx(rng, COILS, ENC_X), line, 0, center=ENC_X // 2) for line in range(ENC_Y)]
    write(tmp_path / "full.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), full)
    assert not {"partial_echo_note", "readout_range"} & set(read_ismrmrd(tmp_path / "full.h5").header.extra)


def test_repeats_that_disagree_are_noted(tmp_path):
    """Repeated lines (idx.average) were averaged whatever they held: a second average that was
    another echo, or empty, blended into the image without a word. Averages that differ by noise
    (a tenth of the signal's amplitude here) read without a note; disagreeing ones are named with their
    share, and the pipeline reports it (``reader_notes``)."""
    from mrirecon.pipeline.slice_mri import reader_notes

    rng = np.random.default_rng(3)
    first = cplx(rng, 9, COILS, ENC_X) * np.float32(10)

    def read(name, second):
        acqs = []
        for line in range(9):
            acqs.append(acquisition(first[line], line, 0, center=ENC_X // 2))
            acqs.append(acquisition(second(first[line]), line, 0, center=ENC_X // 2, average=1))
        write(tmp_path / name, make_xml(slices=1), acqs)
        return read_ismrmrd(tmp_path / name)

    noisy = read("nex2.h5", lambda x: x + cplx(rng, *x.shape))
    assert "repeats_note" not in noisy.header.extra and "repeats" not in reader_notes(noisy.header)
    for name, second, share in (("empty.h5", np.zeros_like, "50%"),
                                ("echo.h5", lambda x: cplx(rng, *x.shape) * np.float32(10), "5")):
        k = read(name, second)
        note = reader_notes(k.header)["repeats"]
        assert note.startswith("9 readouts were acquired up to 2 times (idx.average [0, 1])"), name
        assert f"differ by {share}" in note and "averaged anyway" in note, (name, note)


def test_a_zero_recon_fov_is_recorded_unless_the_slice_positions_give_the_spacing(tmp_path):
    """reconSpace/fieldOfView_mm x = z = 0: 1 mm voxels along them (nothing said before); the
    header records which axes were assumed, so the pipeline can say so on NIfTI / DICOM export.
    Two slices 6 mm apart give the slice spacing, so only x stays assumed."""
    xml = make_xml()
    start = xml.index("<reconSpace>")
    recon = xml[start:xml.index("</reconSpace>")]
    zeroed = recon.replace("<x>100.0</x>", "<x>0.0</x>").replace("<z>5.0</z>", "<z>0.0</z>")
    assert zeroed.count("0.0</") == 3
    xml = xml.replace(recon, zeroed)
    header = parse_ismrmrd_header(xml)
    assert header.extra["fov_unknown_axes"] == ("x", "z")
    assert header.geometry.spacing == (1.0, 1.0, FOV_Y / ENC_Y)
    assert "fov_unknown_axes" not in parse_ismrmrd_header(make_xml()).extra
    rng = np.random.default_rng(0)
    acqs = [acquisition(cplx(rng, COILS, ENC_X), line, s, center=ENC_X // 2,
                        position=(0.0, 0.0, 6.0 * s)) for s in range(2) for line in range(9)]
    write(tmp_path / "raw.h5", xml, acqs)
    h = read_ismrmrd(tmp_path / "raw.h5").header
    assert h.geometry.spacing == (6.0, 1.0, FOV_Y / ENC_Y)
    assert h.extra["fov_unknown_axes"] == ("x",)
