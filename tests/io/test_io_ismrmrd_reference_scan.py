"""ISMRMRD Cartesian scans whose parallel-imaging reference (ACS) is a separate scan.

Siemens-style GRAPPA with a separate reference: the imaging lines are every R-th line (no fully
sampled centre among them) and 24 reference lines are acquired apart (calibration-only flag,
``calibrationMode`` separate), here with 3x the gain and another contrast, so they can never be
averaged into the imaging data. They were refused ("a reference scan of its own, which mrirecon
cannot use yet"), so such a scan could not be reconstructed at all. They now serve calibration
only: ESPIRiT maps and the GRAPPA kernel come from them.

Measured on a simulated 96 x 96 brain (8 coils, readout 2x oversampled, a noise scan whose
covariance mixes the coils), imaging lines every 2nd column, PSNR against the RSS of the fully
sampled k-space prewhitened alike (dB; mri_cs unless said):

======================================  ==================  ==============================
method                                  separate reference  same scan, integrated 24 ACS
======================================  ==================  ==============================
l1_wavelet (mri_cs)                     37.90               39.92
cg_sense (lam 0, 30 iterations)         40.43               41.79
grappa                                  35.46               41.74
l1_wavelet, coil_compression=4 (SVD)    37.83               39.92
l1_wavelet, coil_compression=4 (GCC)    37.90               39.92
grappa, coil_compression=4 (GCC)        33.48               40.12
mri_modl (ESPIRiT crop 0)               23.25               41.30
mri_modl, calibrate.crop=0.95           30.43               39.01
======================================  ==================  ==============================

The integrated scan's data hold the 24 ACS columns on top of the every-2nd-line pattern (12 more
measured columns at the centre of k-space): that is its advantage, not the reference's
handling. A reference identical to the imaging scan (same gain and contrast) gives the same
figures as the 3x / other-contrast one (37.79 / 35.31 dB for l1_wavelet / grappa; 20.36 for
mri_modl with the 5-unroll weights the two MoDL rows above were first measured with: 20.36 /
35.83 and 25.74 / 32.07 dB). The reference not prewhitened with the data gave 15.8 (l1_wavelet) and 14.4 dB
(grappa). Walsh maps give 21.2 against 38.6 dB: SENSE on a plain 2x pattern needs maps cropped
to the object (ESPIRiT's crop); the same holds without any reference (cg_sense with maps from
the fully sampled centre band: 29.2 Walsh, 33.8 ESPIRiT crop 0, 43.9 ESPIRiT crop 0.95). MoDL
(trained at 4-8x with a centre band and uncropped maps) generalises poorly to this pattern with
uncropped maps; with cropped ones it keeps the pixels no coil sees at zero.
"""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

ismrmrd = pytest.importorskip("ismrmrd")

from mrirecon.functional import center_crop, ifft2c, rss  # noqa: E402
from mrirecon.io.ismrmrd_raw import read_ismrmrd  # noqa: E402
from mrirecon.metrics import psnr  # noqa: E402
from mrirecon.pipeline.definitions import load_pipeline  # noqa: E402
from mrirecon.pipeline.runner import run_pipeline  # noqa: E402

R, REF_LINES, GAIN = 2, 24, 3.0
SEPARATE = ("</trajectory><parallelImaging><accelerationFactor><kspace_encoding_step_1>2"
            "</kspace_encoding_step_1><kspace_encoding_step_2>1</kspace_encoding_step_2>"
            "</accelerationFactor><calibrationMode>separate</calibrationMode></parallelImaging>")


def contrast(kspace: np.ndarray) -> np.ndarray:
    """The same coils' k-space of another contrast and gain: coil images times a smooth real
    weight ``GAIN * (0.6 + 0.8 * row / H)`` (the coil sensitivities stay the same)."""
    img = ifft2c(torch.from_numpy(kspace))
    h = img.shape[-2]
    weight = GAIN * (0.6 + 0.8 * torch.arange(h, dtype=torch.float32) / h)
    from mrirecon.functional import fft2c

    return fft2c(img * weight[:, None]).numpy()


def mixing(coils: int) -> np.ndarray:
    """``(coils, coils)`` the noise scan's coil mixing: its covariance is ``M M^H``, so
    prewhitening mixes and rescales the coils (a reference left out of it would not match)."""
    rng = np.random.default_rng(2)
    return np.eye(coils) + 0.3 * (rng.normal(size=(coils, coils)) + 1j * rng.normal(size=(coils, coils)))


def write_scan(src: Path, dst: Path, kind: str, step: float = 5.0) -> None:
    """An ISMRMRD file from the fastMRI file ``src``: ``kind`` ``full`` (every line),
    ``integrated`` (every R-th line plus 24 calibration-only ACS lines of the same scan) or
    ``separate`` (every R-th line plus 24 reference lines of another contrast and gain,
    calibration-only, header calibrationMode separate), ``mismatch`` (the same without the
    header's word: told apart by the lines' mismatch with the imaging lines); a noise scan of covariance
    :func:`mixing` ``M M^H``. Slice ``s`` lies at ``s * step`` mm along the slice normal."""
    with h5py.File(src, "r") as f:
        kspace = f["kspace"][()]
        xml = f["ismrmrd_header"][()].decode()
    slices, coils, h, w = kspace.shape
    centre = w // 2
    reference = contrast(kspace) if kind in ("separate", "mismatch") else kspace
    if kind == "separate":
        xml = xml.replace("</trajectory>", SEPARATE)
    ref_cols = range(centre - REF_LINES // 2, centre + REF_LINES // 2)
    acqs = []
    rng = np.random.default_rng(0)
    q = np.linalg.qr(rng.normal(size=(4096, coils)) + 1j * rng.normal(size=(4096, coils)))[0]
    noise = ismrmrd.Acquisition.from_array(  # covariance exactly MIXING MIXING^H
        np.ascontiguousarray(mixing(coils) @ q.T * np.sqrt(4095), np.complex64))
    noise.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    acqs.append(noise)

    def line(data, s, col, calibration=False):
        acq = ismrmrd.Acquisition.from_array(
            np.ascontiguousarray(data, dtype=np.complex64), center_sample=h // 2,
            read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0),
            position=(0.0, 0.0, step * s))
        acq.idx.kspace_encode_step_1 = col
        acq.idx.slice = s
        if calibration:
            acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
        return acq

    for s in range(slices):
        for col in range(w):
            if kind == "full" or col % R == centre % R:
                acqs.append(line(kspace[s, :, :, col], s, col))
        if kind != "full":
            acqs += [line(reference[s, :, :, col], s, col, True) for col in ref_cols]
    with ismrmrd.Dataset(str(dst), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for i in np.random.default_rng(1).permutation(len(acqs)):
            ds.append_acquisition(acqs[i])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """``(folder, truth)``: the three scans of one simulated 96 x 96 slice with 2x readout
    oversampling, and :func:`truth`."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("refscan")
    (src,) = simulate_mri_dataset(root / "sim", volumes=1, slices=1, coils=8, size=(96, 96),
                                  seed=5, readout_oversampling=2)
    for kind in ("full", "integrated", "separate", "mismatch"):
        (root / kind).mkdir()
        write_scan(Path(src), root / kind / "scan.h5", kind)
    return root, truth(Path(src))


def truth(src: Path) -> torch.Tensor:
    """``(slices, 96, 96)`` RSS of the fully sampled k-space of ``src``, prewhitened with the
    noise scan's covariance as the pipeline prewhitens (mri_cs: ``prewhiten: true``)."""
    from mrirecon.calib import prewhiten

    with h5py.File(src, "r") as f:
        full = torch.from_numpy(f["kspace"][()])
    m = torch.from_numpy(mixing(full.shape[1])).to(torch.complex128)
    white = torch.stack([prewhiten(k.to(torch.complex128), cov=m @ m.mH) for k in full])
    return center_crop(rss(ifft2c(white), dim=1), (96, 96)).float()


def run(root: Path, kind: str, pipeline: str, *extra: str):
    """``(reconstruction (slices, h, w), provenance entry)`` of ``mrirecon run``."""
    config = load_pipeline(pipeline, ["export.formats=[hdf5]", "report.enabled=false",
                                      *extra])[0]
    out = root / f"out{len(list(root.iterdir()))}"
    code = run_pipeline(config, [str(root / kind / "scan.h5")], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    if code != 0:
        return None, entry
    with h5py.File(out / "reconstructions" / "scan.h5") as f:
        return torch.from_numpy(f["reconstruction"][()]), entry


def test_the_reader_keeps_the_reference_apart_with_the_datas_placement(tmp_path):
    """Two slices stored in descending position order, readout 2x oversampled: the reference
    lines come back in ``calibration`` (sorted, cropped like the data), never in the data or the
    mask, and the header notes them."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (src,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=2, coils=4, size=(32, 32),
                                  seed=2, readout_oversampling=2)
    write_scan(Path(src), tmp_path / "scan.h5", "separate", step=-5.0)  # slice 1 lies first
    with h5py.File(src, "r") as f:
        kspace = f["kspace"][()]
    reference = contrast(kspace)
    k = read_ismrmrd(tmp_path / "scan.h5")
    ref_cols = list(range(16 - REF_LINES // 2, 16 + REF_LINES // 2))
    imaging = [c for c in range(32) if c % R == 0]
    data, cal = k.data.numpy(), k.calibration.numpy()
    assert cal.shape == data.shape == (2, 4, 64, 32)
    np.testing.assert_allclose(cal[..., ref_cols], reference[::-1][..., ref_cols], rtol=1e-5,
                               atol=1e-5 * np.abs(reference).max())
    assert not cal[..., [c for c in range(32) if c not in ref_cols]].any()
    np.testing.assert_array_equal(data[..., imaging], kspace[::-1][..., imaging])
    assert not data[..., [c for c in range(32) if c not in imaging]].any()  # no reference line
    assert k.mask.tolist() == [c in imaging for c in range(32)]
    assert k.header.extra["calibration_note"] == (
        "separate reference scan (header calibrationMode 'separate'): 24 reference lines per slice "
        "(columns 4..27 of 32) are used only for calibration: the coil maps and the GRAPPA kernel "
        "come from them; the image is reconstructed from the imaging lines alone")
    cropped = read_ismrmrd(tmp_path / "scan.h5", crop_readout_oversampling=True)
    assert cropped.calibration.shape == cropped.data.shape == (2, 4, 32, 32)
    from mrirecon.functional import crop_readout

    torch.testing.assert_close(cropped.calibration, crop_readout(k.calibration, 32),
                               rtol=1e-4, atol=1e-4 * float(k.calibration.abs().max()))


@pytest.mark.parametrize("method, extra, gap", [
    # measured (dB): separate / integrated 37.90 / 39.92, 40.43 / 41.79, 35.46 / 41.74
    ("l1_wavelet", (), 3.0),
    ("cg_sense", ("reconstruct.method=cg_sense", "reconstruct.params={lam: 0.0, iterations: 30}"),
     2.5),
    ("grappa", ("reconstruct.method=grappa", "reconstruct.params={}"), 7.5),
    # coil compression to 4 (SVD, GCC): 37.83 / 39.92, 37.90 / 39.92; GRAPPA after GCC
    # 33.48 / 40.12
    ("l1_wavelet svd 4", ("preprocess.coil_compression=4",), 3.0),
    ("l1_wavelet gcc 4", ("preprocess.coil_compression=4", "preprocess.compression_method=gcc"),
     3.0),
    ("grappa gcc 4", ("reconstruct.method=grappa", "reconstruct.params={}",
                      "preprocess.coil_compression=4", "preprocess.compression_method=gcc"), 7.5),
])
def test_a_separate_reference_scan_reconstructs_near_integrated_acs(scans, method, extra, gap):
    """Imaging every 2nd line with no centre band, plus a separate 24-line reference of 3x the
    gain and another contrast: refused before; now the maps / GRAPPA kernel come from the
    reference and the PSNR stays within ``gap`` dB of the same scan with integrated ACS (whose
    data hold the 24 ACS columns too, 12 more measured columns: GRAPPA's larger gap is theirs;
    a reference identical to the imaging lines gives the same figures as this one, 37.79 /
    35.31 dB for l1_wavelet / grappa). Prewhitening mixes the coils (noise covariance M M^H): a
    reference left out of it gave 15.8 / 14.4 dB."""
    root, truth = scans
    separate, entry = run(root, "separate", "mri_cs", *extra)
    integrated, _ = run(root, "integrated", "mri_cs", *extra)
    assert separate is not None, entry.get("error")
    got, ref = float(psnr(truth, separate)), float(psnr(truth, integrated))
    assert got > ref - gap and got > 32.0, (method, got, ref)
    (note,) = [w for w in entry["warnings"] if "separate reference scan" in w]
    assert "header calibrationMode 'separate'" in note and "24 reference lines per slice" in note
    assert "the coil maps and the GRAPPA kernel come from them" in note


def test_varnet_is_refused_and_modl_uses_the_reference_maps(scans):
    """E2E-VarNet estimates its coil maps from the k-space's own centre, which these imaging
    lines lack: refused, naming the file and the pipelines that can use the reference. MoDL
    reconstructs with the calibrate stage's ESPIRiT maps (from the reference); with mri_modl's
    uncropped maps (crop 0) a plain every-2nd-line pattern is poorly conditioned (measured 23.3
    dB with the 10-unroll weights, integrated ACS 41.3; the 5-unroll weights 20.4 / 35.8;
    cg_sense with crop-0 maps from the fully sampled centre band, no reference involved: 33.8 vs
    41.4). Cropped maps (calibrate.crop=0.95) are outside the card's range: a warning. They
    gave 25.7 dB with the 5-unroll weights and 8.1 dB with the 10-unroll ones, which drifted
    outside the maps' support; MoDL now keeps the pixels no coil sees at zero (30.4 dB; with
    integrated ACS 39.0 against 4.7 before, tests/models/test_modl_support.py)."""
    root, truth = scans
    image, entry = run(root, "separate", "mri_varnet")
    assert image is None and entry["status"] == "failed"
    assert entry["error"].startswith("ValueError: scan.h5: slice 0: reconstruct.method 'varnet' "
                                     "estimates its coil maps from the k-space's own fully "
                                     "sampled centre")
    assert "separate reference scan" in entry["error"]
    assert "mri_cs" in entry["error"] and "mri_modl" in entry["error"]
    image, entry = run(root, "separate", "mri_modl")
    assert image is not None, entry.get("error")
    assert float(psnr(truth, image)) > 21.0  # measured 23.25 (10-unroll weights; 5-unroll 20.4)
    assert any("separate reference scan" in w for w in entry["warnings"])
    # cropped maps, which the model never saw, warn; the support projection keeps them usable
    image, entry = run(root, "separate", "mri_modl", "calibrate.crop=0.95")
    assert any("ESPIRiT crop (calibrate.crop) 0.95 is outside" in w for w in entry["warnings"])
    assert float(psnr(truth, image)) > 27.0  # measured 30.43 (8.05 without the projection)


def test_a_reference_told_apart_by_its_mismatch_reconstructs_alike(scans):
    """Without calibrationMode in the header, the reference lines are told apart by their
    mismatch with the imaging lines at the same 12 positions (3x gain, another contrast): the
    same image as with the header's word, and the note gives the mismatch."""
    root, truth = scans
    told, _ = run(root, "separate", "mri_cs")
    found, entry = run(root, "mismatch", "mri_cs")
    assert found is not None, entry.get("error")
    torch.testing.assert_close(found, told)
    (note,) = [w for w in entry["warnings"] if "separate reference scan" in w]
    assert "differ from the imaging lines at the same 12 positions by" in note


def test_self_supervised_training_samples_take_their_maps_from_the_reference(scans):
    """AcquiredMRISet (SSDU on data as acquired) took its maps from the data's own centre band:
    with a separate reference the imaging lines have none ("has 1 fully sampled centre
    column(s)"). ESPIRiT maps now come from the reference (the same as the calibrate stage's
    with crop 0, which MoDL's pipeline uses), prewhitened with the data's noise scan as the
    preprocess stage whitens it; learned maps are refused."""
    from mrirecon.calib import centre_maps, prewhiten
    from mrirecon.training.data_acquired import AcquiredMRISet

    root, _ = scans
    sample = AcquiredMRISet(root / "separate" / "scan.h5", maps="espirit").get(0)
    k = read_ismrmrd(root / "separate" / "scan.h5")
    assert sample.mask.tolist() == k.mask.tolist()  # the imaging lines alone
    torch.testing.assert_close(sample.y[0], prewhiten(k.data[0], noise=k.noise) * k.mask)
    band = torch.zeros(96, dtype=torch.bool)
    band[36:60] = True
    expected = centre_maps(prewhiten(k.calibration[0], noise=k.noise), band, crop=0.0)
    torch.testing.assert_close(sample.maps[0], expected.to(torch.complex64))
    with pytest.raises(ValueError, match=r"scan.h5 slice 0: the calibration lines are a separate "
                                         r"reference scan.*use data.maps: espirit or walsh"):
        AcquiredMRISet(root / "separate" / "scan.h5", maps="learned").get(0)


def test_a_3d_reference_gets_the_datas_partition_transform_and_crop(tmp_path):
    """3-D (4 partitions), readout oversampled, reversed odd lines: the reference comes back
    exactly as its lines would as imaging data of their own (partition FFT, flip, crop), and
    the data exactly as the imaging lines alone."""
    from tests.io.test_io_ismrmrd import COILS, ENC_X, ENC_Y, acquisition, cplx, make_xml, write

    z, rng = 4, np.random.default_rng(11)
    xml = make_xml(enc_z=z, step1=(0, ENC_Y - 1, ENC_Y // 2), step2=(0, z - 1, z // 2), slices=1)
    separate = xml.replace("</trajectory>", SEPARATE)

    def lines(ky, flags=(), gain=1.0):
        out = []
        for part in range(z):
            for line in ky:
                data = cplx(rng, COILS, ENC_X) * gain
                flip = line % 2 == 1
                out.append(acquisition(data[:, ::-1] if flip else data, line, 0, part=part,
                                       center=ENC_X // 2, slice_dir=(0.0, 0.0, -1.0),
                                       flags=[*flags, *([ismrmrd.ACQ_IS_REVERSE] if flip else [])]))
        return out

    imaging = lines(range(0, ENC_Y, 3))
    reference = lines(range(4, 8), [ismrmrd.ACQ_IS_PARALLEL_CALIBRATION], gain=3.0)
    write(tmp_path / "both.h5", separate, imaging + reference)
    write(tmp_path / "imaging.h5", xml, imaging)
    for acq in reference:
        acq.clear_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    write(tmp_path / "reference.h5", xml, reference)
    for crop in (False, True):
        both = read_ismrmrd(tmp_path / "both.h5", crop_readout_oversampling=crop)
        alone = read_ismrmrd(tmp_path / "imaging.h5", crop_readout_oversampling=crop)
        ref = read_ismrmrd(tmp_path / "reference.h5", crop_readout_oversampling=crop)
        assert both.data.shape == (z, COILS, ENC_X // 2 if crop else ENC_X, ENC_Y)
        torch.testing.assert_close(both.data, alone.data)
        torch.testing.assert_close(both.mask, alone.mask)
        torch.testing.assert_close(both.calibration, ref.data)


def test_same_scan_acs_fill_only_the_positions_no_imaging_line_has():
    """Fails if ismrmrd_reference.py:51 ``gap = (count == 0) & (ccount > 0)`` -> ``gap =
    ccount > 0``. Calibration-only lines of the same scan (within CALIBRATION_MISMATCH of the
    imaging lines where both exist) fill the gaps; where an imaging line exists it is kept as
    it is (sum, count, energy untouched): the ACS are not averaged into it (the module
    docstring: "they fill the positions no imaging line has")."""
    from mrirecon.containers import Header
    from mrirecon.io.ismrmrd_reference import CALIBRATION_MISMATCH, separate_reference

    rng = np.random.default_rng(0)
    slices, z, coils, x, y = 1, 1, 2, 8, 8
    full = (rng.standard_normal((slices, z, coils, x, y))
            + 1j * rng.standard_normal((slices, z, coils, x, y))).astype(np.complex64)
    imaging = np.zeros((slices, z, y), np.int64)
    imaging[..., 0:6:2] = 1  # lines 0, 2, 4
    acs = np.zeros((slices, z, y), np.int64)
    acs[..., 2:6] = 1  # lines 2..5: overlap at 2 and 4
    noise = 0.1 * CALIBRATION_MISMATCH * full * rng.standard_normal(full.shape)  # same scan
    kspace = full * imaging[:, :, None, None, :]
    ck = (full + noise).astype(np.complex64) * acs[:, :, None, None, :]
    energy = (np.abs(kspace) ** 2).sum(axis=(2, 3))
    cenergy = (np.abs(ck) ** 2).sum(axis=(2, 3))
    before = kspace.copy(), imaging.copy(), energy.copy()
    header = Header(encoded_matrix=(x, y, 1), recon_matrix=(x, y, 1),
                    encoded_fov_mm=(200.0, 200.0, 5.0), recon_fov_mm=(200.0, 200.0, 5.0))
    grids = {False: (kspace, imaging, energy, [0, 4]), True: (ck, acs, cenergy, [2, 5])}
    calibration, out = separate_reference(header, grids)
    assert calibration is None and "calibration_note" not in out.extra
    held = imaging  # the counts, updated in place
    gap = [3, 5]
    np.testing.assert_array_equal(kspace[..., [0, 2, 4]], before[0][..., [0, 2, 4]])
    np.testing.assert_array_equal(held[..., [0, 2, 4]], 1)
    np.testing.assert_array_equal(energy[..., [0, 2, 4]], before[2][..., [0, 2, 4]])
    np.testing.assert_array_equal(kspace[..., gap], ck[..., gap])
    np.testing.assert_array_equal(held[..., gap], 1)
    np.testing.assert_array_equal(held[..., [1, 6, 7]], 0)


def _grids(rng, repeats: int):
    slices, z, coils, x, y = 1, 1, 2, 8, 8
    line = (rng.standard_normal((slices, z, coils, x, y))
            + 1j * rng.standard_normal((slices, z, coils, x, y))).astype(np.complex64)
    imaging = np.zeros((slices, z, y), np.int64)
    imaging[..., 0::2] = 1
    acs = np.zeros((slices, z, y), np.int64)
    acs[..., 2:6] = repeats
    kspace = line * imaging[:, :, None, None, :]
    ck = (line * acs[:, :, None, None, :]).astype(np.complex64)  # sums of `repeats` equal lines
    energy = (np.abs(kspace) ** 2).sum(axis=(2, 3))
    cenergy = (np.abs(ck) ** 2).sum(axis=(2, 3))
    return line, {False: (kspace, imaging, energy, [0, 6]), True: (ck, acs, cenergy, [2, 5])}


def test_a_separate_reference_is_the_mean_of_its_repeats_and_a_borrowed_one_stays_apart():
    """Fails if ismrmrd_reference.py:57 ``ck / max(ccount, 1)`` -> ``ck``, or if
    ismrmrd_reference.py:50 ``borrowed is None and`` is dropped. A separate reference acquired
    twice per line is returned as the mean of its repeats (the sums over the counts), zero
    elsewhere; lines borrowed from another counter value (``borrowed="repetition 0"``) are a
    separate reference even when they agree with the imaging lines, and the note says where
    they come from."""
    from mrirecon.containers import Header
    from mrirecon.io.ismrmrd_reference import separate_reference

    header = Header(encoded_matrix=(8, 8, 1), recon_matrix=(8, 8, 1),
                    encoded_fov_mm=(200.0, 200.0, 5.0), recon_fov_mm=(200.0, 200.0, 5.0))
    rng = np.random.default_rng(1)
    line, grids = _grids(rng, repeats=2)
    sep = header.with_(extra={**header.extra, "calibration_mode": "separate"})
    calibration, out = separate_reference(sep, grids)
    eps = 4 * np.finfo(np.float32).eps * float(np.abs(line).max())
    np.testing.assert_allclose(calibration[..., 2:6], line[..., 2:6], rtol=0, atol=eps)
    assert not calibration[..., [0, 1, 6, 7]].any()
    assert "separate reference scan" in out.extra["calibration_note"]

    line, grids = _grids(rng, repeats=1)
    kspace_before = grids[False][0].copy()
    calibration, out = separate_reference(header, grids, borrowed="repetition 0")
    assert calibration is not None
    assert "taken from repetition 0" in out.extra["calibration_note"]
    np.testing.assert_array_equal(grids[False][0], kspace_before)  # no gap filled


def test_a_streamed_slice_without_reference_lines_gets_the_whole_reads_zero_calibration(tmp_path):
    """A separate reference acquired for slice 0 only: read whole, slice 1's calibration is zeros;
    streamed slice by slice (``open_ismrmrd``) it must be the same zeros, never ``None`` beside a
    calibrated slice (every streamed slice equals the whole read's, bit for bit)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io.ismrmrd_stream import open_ismrmrd

    (src,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=2, coils=4, size=(32, 32),
                                  seed=2)
    write_scan(Path(src), tmp_path / "both.h5", "separate")
    with ismrmrd.Dataset(str(tmp_path / "both.h5"), "dataset", create_if_needed=False) as ds:
        xml = ds.read_xml_header()
        acqs = [ds.read_acquisition(i) for i in range(ds.number_of_acquisitions())]
    kept = [a for a in acqs if not (a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
                                    and a.idx.slice == 1)]
    assert len(acqs) - len(kept) == REF_LINES
    with ismrmrd.Dataset(str(tmp_path / "one.h5"), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for a in kept:
            ds.append_acquisition(a)
    whole = read_ismrmrd(tmp_path / "one.h5")
    assert whole.calibration is not None and whole.calibration[0].abs().amax() > 0
    assert not whole.calibration[1].any()
    stream = open_ismrmrd(tmp_path / "one.h5")
    assert stream.streamed
    for i in range(2):
        part = stream.read(i)
        assert part.calibration is not None, i
        assert torch.equal(part.calibration, whole.calibration[i: i + 1]), i
        assert torch.equal(part.data, whole.data[i: i + 1]), i
