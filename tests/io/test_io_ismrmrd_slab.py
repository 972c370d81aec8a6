"""ISMRMRD 3-D slabs whose recon slab differs from the encoded partitions (slice interpolation,
slice oversampling), and lines repeated with different readout extents
(:mod:`mrirecon.io.ismrmrd_slab`)."""

import ismrmrd
import numpy as np
import pytest

from mrirecon.io.ismrmrd_raw import read_ismrmrd
from tests.io.test_io_ismrmrd import (COILS, ENC_X, ENC_Y, acquisition, centred, cplx, make_xml,
                                      write)

X = ismrmrd.xsd
#: float32 k-space through an FFT of a few hundred points: a few ulps of the largest value
TOL = 64 * float(np.finfo(np.float32).eps)


def slab_xml(enc_z, enc_fov_z, rec_z, rec_fov_z, slices=1):
    """A 3-D header: ``enc_z`` partitions over ``enc_fov_z`` mm, a recon slab of ``rec_z`` over
    ``rec_fov_z`` mm (no readout oversampling: x as encoded)."""
    limits = X.encodingLimitsType(
        kspace_encoding_step_1=X.limitType(minimum=0, maximum=ENC_Y - 1, center=ENC_Y // 2),
        kspace_encoding_step_2=X.limitType(minimum=0, maximum=enc_z - 1, center=enc_z // 2),
        slice=X.limitType(minimum=0, maximum=slices - 1, center=0))
    space = [X.encodingSpaceType(matrixSize=X.matrixSizeType(x=ENC_X, y=ENC_Y, z=z),
                                 fieldOfView_mm=X.fieldOfViewMm(x=160.0, y=120.0, z=f))
             for z, f in ((enc_z, enc_fov_z), (rec_z, rec_fov_z))]
    return X.ToXML(X.ismrmrdHeader(
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=COILS),
        encoding=[X.encodingType(encodedSpace=space[0], reconSpace=space[1], encodingLimits=limits,
                                 trajectory=X.trajectoryType.CARTESIAN)]))


def slab_lines(kspace, slab=0, centre=0.0, slice_sign=1.0):
    """The acquisitions of one slab's k-space ``(kz, coils, kx, ky)``, centred at ``centre`` mm
    on the z axis (the slice normal ``phase x read``), partitions along ``slice_sign`` z."""
    return [acquisition(kspace[p, :, :, line], line, slab, part=p, center=ENC_X // 2,
                        position=(0.0, 0.0, centre), slice_dir=(0.0, 0.0, slice_sign))
            for p in range(kspace.shape[0]) for line in range(ENC_Y)]


def slice_z(k):
    return np.array([k.header.geometry.slice_position(j)[2] for j in range(k.data.shape[0])])


@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_slice_interpolation_zero_fills_kz_to_the_recon_partitions(tmp_path, slice_sign):
    """6 partitions over 48 mm (8 mm each) with a recon slab of 8 over 48 mm (Siemens' slice
    resolution 75 %): they were returned as 6 slices labelled 6 mm apart (the slab 36 mm long,
    a point of partition 1, at -16 mm, exported at -12 mm). kz is zero-filled to 8 as the
    scanner does: each slice holds the band-limited object at the position it is labelled with.
    The object is two waves along z, exp(2 pi i m z / 48 mm) for m = 1 and -2 (in-plane
    k-space random), so the expected value at any exported z is known exactly."""
    rng = np.random.default_rng(5)
    n, m_fill, fov = 6, 8, 48.0
    waves = {1: cplx(rng, COILS, ENC_X, ENC_Y), -2: cplx(rng, COILS, ENC_X, ENC_Y)}
    kz = np.zeros((n, COILS, ENC_X, ENC_Y), np.complex64)
    for m, inplane in waves.items():
        kz[n // 2 + m] = inplane  # centred FT along z: kz line n // 2 + m is exp(2 pi i m z / fov)
    write(tmp_path / "si.h5", slab_xml(n, fov, m_fill, fov),
          slab_lines(kz, centre=30.0, slice_sign=slice_sign))
    k = read_ismrmrd(tmp_path / "si.h5")
    g = k.header.geometry
    assert k.data.shape == (m_fill, COILS, ENC_X, ENC_Y)
    assert g.spacing[0] == g.slice_thickness == fov / m_fill
    z = slice_z(k)
    before = 4 if slice_sign > 0 else 3  # the centre slice 4 of 8, in normal order
    np.testing.assert_allclose(z, 30.0 + fov / m_fill * (np.arange(m_fill) - before), atol=1e-5)
    phase = slice_sign * (z - 30.0) / fov  # the file's partition coordinate, in slab lengths
    expected = sum(inplane[None] * np.exp(2j * np.pi * m * phase)[:, None, None, None]
                   for m, inplane in waves.items()) / np.sqrt(m_fill)
    np.testing.assert_allclose(k.data.numpy(), expected, rtol=0, atol=TOL * np.abs(expected).max())
    assert k.mask is None and k.header.encoded_matrix[2] == m_fill
    assert "kz is zero-filled to 8 partitions" in k.header.extra["partition_interpolation_note"]


def _oversampled(rng, n=10):
    img = cplx(rng, n, COILS, ENC_X, ENC_Y)
    return img, centred(np.fft.fft, img, 0)


@pytest.mark.parametrize("slice_sign", [1.0, -1.0])
def test_slice_oversampling_is_cropped_to_the_recon_slab(tmp_path, slice_sign):
    """10 partitions of 5 mm (50 mm) for a recon slab of 8 x 5 mm (25 % slice oversampling):
    all 10 were returned, at -25 ... 20 mm (the scanner crops to -20 ... 15). Now the centre 8,
    each at its acquired position; two such slabs 40 mm apart (multi-slab TOF: contiguous recon
    slabs) read as one volume of 16 slices, where they were refused as overlapping by 2
    partitions."""
    rng = np.random.default_rng(7)
    (img0, k0), (img1, k1) = _oversampled(rng), _oversampled(rng)
    write(tmp_path / "one.h5", slab_xml(10, 50.0, 8, 40.0), slab_lines(k0, slice_sign=slice_sign))
    write(tmp_path / "two.h5", slab_xml(10, 50.0, 8, 40.0, slices=2),
          slab_lines(k0, 0, 0.0, slice_sign) + slab_lines(k1, 1, 40.0, slice_sign))
    for name, slabs in (("one.h5", {0.0: img0}), ("two.h5", {0.0: img0, 40.0: img1})):
        k = read_ismrmrd(tmp_path / name)
        count = 8 * len(slabs)
        z = slice_z(k)
        # partition 5 of 10 at the slab centre: the kept 1..8 lie 4 before and 3 after it
        start = -20.0 if slice_sign > 0 else -15.0
        assert k.data.shape == (count, COILS, ENC_X, ENC_Y) and k.header.geometry.spacing[0] == 5.0
        np.testing.assert_allclose(z, start + 5.0 * np.arange(count), atol=1e-4)
        for j, zj in enumerate(z):  # each slice is the partition acquired at its z
            centre = min(slabs, key=lambda c: abs(zj - c + slice_sign * 2.5))
            p = 5 + round(slice_sign * (zj - centre) / 5.0)
            np.testing.assert_allclose(k.data[j].numpy(), slabs[centre][p], rtol=0,
                                       atol=TOL * 4)
        assert "partition_interpolation_note" not in k.header.extra


def test_the_run_exports_the_recon_slab_of_an_oversampled_slab(tmp_path):
    """`mrirecon run` wrote 10 slices at -25 ... 20 mm; now the 8 recon slices at -20 ... 15."""
    import nibabel as nib

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    _, k0 = _oversampled(np.random.default_rng(8))
    write(tmp_path / "tof.h5", slab_xml(10, 50.0, 8, 40.0), slab_lines(k0))
    fast = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
            "export.formats=[nifti]", "report.enabled=false"]
    run_pipeline(load_pipeline("mri_cs", fast)[0], [str(tmp_path / "tof.h5")], tmp_path / "out",
                 progress=False)
    (nii,) = (tmp_path / "out").rglob("*.nii*")
    volume = nib.load(nii)
    assert volume.shape[2] == 8
    np.testing.assert_allclose([(volume.affine @ [0, 0, s, 1])[2] for s in range(8)],
                               -20.0 + 5.0 * np.arange(8), atol=1e-4)


@pytest.mark.parametrize("rec_fov_z, note", [(40.0, True), (0.0, False)])
def test_a_recon_slab_that_does_not_fit_keeps_the_acquired_partitions(tmp_path, rec_fov_z, note):
    """A recon slab of 8 over 40 mm beside 6 partitions over 48 mm is no whole number of recon
    partitions: the 6 are kept at their acquired 8 mm (they were labelled 5 mm), with a note; a
    recon FOV of 0 (unknown) takes the encoded one's 8 mm (it was 1 mm assumed)."""
    rng = np.random.default_rng(9)
    img = cplx(rng, 6, COILS, ENC_X, ENC_Y)
    write(tmp_path / "odd.h5", slab_xml(6, 48.0, 8, rec_fov_z),
          slab_lines(centred(np.fft.fft, img, 0)))
    k = read_ismrmrd(tmp_path / "odd.h5")
    np.testing.assert_allclose(k.data.numpy(), img, rtol=0, atol=TOL * 4)
    assert k.header.geometry.spacing[0] == 8.0
    np.testing.assert_allclose(slice_z(k), -24.0 + 8.0 * np.arange(6), atol=1e-5)
    assert ("partition_spacing_note" in k.header.extra) == note
    assert "z" not in k.header.extra.get("fov_unknown_axes", ())


def test_repeats_with_different_readout_extents_are_averaged_per_sample(tmp_path):
    """A line acquired twice, a full echo (idx.average 0) and a partial echo holding rows 6..15
    (average 1): rows 0..5, which only the full echo holds, came out at half their value, and the
    run said they were never sampled. Each sample is now the mean of the repeats that hold it,
    no row is unsampled, and repeats that agree where both hold are not called disagreeing."""
    rng = np.random.default_rng(11)
    full = cplx(rng, ENC_Y, COILS, ENC_X)
    second = full[:, :, 6:] + np.float32(0.05) * cplx(rng, ENC_Y, COILS, ENC_X - 6)
    acqs = [acquisition(full[y], y, 0, center=ENC_X // 2) for y in range(ENC_Y)]
    acqs += [acquisition(second[y], y, 0, center=ENC_X // 2 - 6, average=1) for y in range(ENC_Y)]
    write(tmp_path / "avg.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), acqs)
    k = read_ismrmrd(tmp_path / "avg.h5")
    expected = np.moveaxis(full, 0, -1).copy()  # (coils, x, y)
    expected[:, 6:] = (expected[:, 6:] + np.moveaxis(second, 0, -1)) / 2
    np.testing.assert_allclose(k.data[0].numpy(), expected, rtol=0, atol=TOL)
    assert not {"short_lines_note", "readout_range", "repeats_note"} & set(k.header.extra)
    # rows no repeat holds are still named (a partial echo on some lines only)
    short = [acquisition(full[y, :, 6:], y, 0, center=ENC_X // 2 - 6) if y % 2 else
             acquisition(full[y], y, 0, center=ENC_X // 2) for y in range(ENC_Y)]
    write(tmp_path / "short.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), short)
    note = read_ismrmrd(tmp_path / "short.h5").header.extra["short_lines_note"]
    assert note.startswith("6 of 12 k-space lines (1 slice(s); idx.kspace_encode_step_1 1, 3, 5")
    assert "their readout rows 0..5 of 16 were never sampled" in note


def test_an_odd_number_of_partitions_zero_fills_about_the_kz_centre(tmp_path):
    """5 partitions over 40 mm, recon slab 8 over 40 mm: kz zero-filled 5 -> 8 must keep the
    k-space centre (line 5 // 2) at 8 // 2; off by one line, every slice gets a phase ramp
    exp(2 pi i z / 40 mm). Two waves along z of known value at every exported z."""
    rng = np.random.default_rng(11)
    n, m_fill, fov = 5, 8, 40.0
    waves = {1: cplx(rng, COILS, ENC_X, ENC_Y), -2: cplx(rng, COILS, ENC_X, ENC_Y)}
    kz = np.zeros((n, COILS, ENC_X, ENC_Y), np.complex64)
    for m, inplane in waves.items():
        kz[n // 2 + m] = inplane
    write(tmp_path / "odd.h5", slab_xml(n, fov, m_fill, fov), slab_lines(kz, centre=30.0))
    k = read_ismrmrd(tmp_path / "odd.h5")
    assert k.data.shape == (m_fill, COILS, ENC_X, ENC_Y)
    z = slice_z(k)
    np.testing.assert_allclose(np.diff(z), fov / m_fill, atol=1e-5)
    phase = (z - 30.0) / fov
    expected = sum(inplane[None] * np.exp(2j * np.pi * m * phase)[:, None, None, None]
                   for m, inplane in waves.items()) / np.sqrt(m_fill)
    np.testing.assert_allclose(k.data.numpy(), expected, rtol=0, atol=TOL * np.abs(expected).max())


def test_a_cropped_slab_header_describes_the_kept_partitions(tmp_path):
    """10 partitions of 5 mm with a recon slab of 8: the header returned describes the 8 kept
    slices, 8 x 5 = 40 mm along z (not the 50 mm acquired)."""
    rng = np.random.default_rng(7)
    img = cplx(rng, 10, COILS, ENC_X, ENC_Y)
    write(tmp_path / "one.h5", slab_xml(10, 50.0, 8, 40.0), slab_lines(centred(np.fft.fft, img, 0)))
    h = read_ismrmrd(tmp_path / "one.h5").header
    assert h.encoded_matrix[2] == 8
    assert h.encoded_fov_mm[2] == pytest.approx(8 * h.geometry.spacing[0], rel=1e-12)
    assert h.geometry.spacing[0] == 5.0
