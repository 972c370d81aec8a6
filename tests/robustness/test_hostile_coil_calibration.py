"""Hostile coil calibration of an audit: a dead or noise-only coil 0 (ESPIRiT's phase reference),
GCC on data narrower than its 24 calibration columns, noise scans with a dead channel, fewer
samples than coils or NaN / Inf samples, and NaN given to the coil compressions and Walsh maps."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.calib import (centre_maps, espirit_maps, gcc_compress, inati_combine, prewhiten,
                            svd_compress, walsh_maps, whitening_matrix)
from mrirecon.calib.espirit import REFERENCE_MIN_SHARE
from mrirecon.functional import ifft2c
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline

QUICK = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}",
         "reconstruct.params_by_acceleration={}", "export.formats=[hdf5]",
         "report.enabled=false"]


@pytest.fixture(scope="module")
def brain(tmp_path_factory) -> tuple[Path, torch.Tensor, float]:
    """A simulated 8-coil birdcage brain slice (64 x 56, 30 dB): file, k-space, noise sigma."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("brain"), volumes=1, slices=1,
                                   coils=8, size=(64, 56), seed=3, resolution=2)
    with h5py.File(path) as f:
        sigma = json.loads(f.attrs["simulation"])["noise_sigma"]
        return Path(path), torch.from_numpy(f["kspace"][0]), float(sigma)


def _move(k: torch.Tensor, coil: int, to: int) -> list[int]:
    """The coil order that puts ``coil`` at index ``to`` (the others keep their order)."""
    order = [c for c in range(k.shape[0]) if c != coil]
    order.insert(to, coil)
    return order


def _same_maps(a: torch.Tensor, b: torch.Tensor, ref: int) -> float:
    """Largest difference of two sets of maps once both are referenced to coil ``ref``'s phase
    (the phase convention), over the pixels both keep; their supports must agree."""
    keep_a, keep_b = a.abs().sum(0) > 0, b.abs().sum(0) > 0
    assert int((keep_a ^ keep_b).sum()) <= 2 and int(keep_a.sum()) > 0.3 * keep_a.numel()
    both = keep_a & keep_b
    ra, rb = (m * torch.sgn(m[ref]).conj() for m in (a, b))
    return float((ra - rb).abs()[:, both].max())


# ---- F1: a dead coil 0 ------------------------------------------------------------------------

def test_dead_coil_0_gives_the_maps_of_the_dead_coil_at_index_3(brain):
    """``sgn(0) = 0``: a dead (all-zero) coil 0, ESPIRiT's phase reference, zeroed every map, and
    the pipeline failed the file ("the coil maps are all zero ... try calibrate.crop=0", which
    did not help) where a dead coil 3 gave 27.98 dB. The strongest coil is now the reference:
    the maps are those of the same data with the dead coil moved to index 3, up to the phase
    convention, through espirit_maps and the pipeline's centre_maps alike."""
    _, k, _ = brain
    dead = k.clone()
    dead[0] = 0
    order = _move(dead, 0, 3)
    back = torch.tensor(order).argsort()
    band = torch.zeros(k.shape[-1], dtype=torch.bool)
    band[k.shape[-1] // 2 - 8: k.shape[-1] // 2 + 8] = True
    for maps in (espirit_maps, lambda x: centre_maps(x, band)):
        first, moved = maps(dead), maps(dead[order])[back]
        assert bool((first[0] == 0).all()) and bool((moved[0] == 0).all())
        assert _same_maps(first, moved, ref=1) < 1e-4
    # the pipeline reconstructs it, and still says coil 0 is dead
    path, _, _ = brain
    src = path.parent / "dead0" / path.name
    src.parent.mkdir()
    with h5py.File(path) as f, h5py.File(src, "w") as g:
        for key in f:
            g.create_dataset(key, data=f[key][()])
        g["kspace"][:, 0] = 0
        g.attrs.update(dict(f.attrs))
    config = load_pipeline("mri_cs", ["reconstruct.method=cg_sense", "reconstruct.params={}",
                                      "reconstruct.params_by_acceleration={}",
                                      "export.formats=[hdf5]", "report.enabled=false"])[0]
    out = path.parent / "out_dead0"
    assert run_pipeline(config, [str(src)], out, progress=False) == 0
    entry = json.loads((out / "provenance.json").read_text())["files"][0]
    assert "coil 0 of 8 hold no signal" in json.dumps(entry)
    with h5py.File(out / "reconstructions" / src.name) as f:
        image = f["reconstruction"][()]
    with h5py.File(path) as f:
        reference = f["reconstruction_rss"][()]
    from mrirecon.metrics import psnr

    assert psnr(reference, image / image.max() * reference.max()) > 20


# ---- F2: a noise-only coil 0 ------------------------------------------------------------------

def _phase_step(maps: torch.Tensor, coil: int) -> float:
    """Mean ``|angle(S(r + 1) conj S(r))|`` of coil ``coil``'s map between rows, inside the
    support: about 0.01 rad for a smooth map."""
    keep = maps.abs().sum(0) > 0
    both = keep[1:] & keep[:-1]
    m = maps[coil]
    return float(torch.angle(m[1:] * m[:-1].conj()).abs()[both].mean())


def test_noise_only_coil_0_no_longer_randomises_the_phase(brain):
    """A coil 0 that records noise only (a broken element) gave every map a random phase
    (0.136 rad between rows against 0.009, here 0.23 against 0.02; L1-wavelet 21.15 dB where a
    live reference coil gave 23.17, the mri_cs pipeline 21.98 against 23.44 with the noise coil
    at index 3). Coil 0's share of the calibration energy (1.6e-4 here) is far below
    REFERENCE_MIN_SHARE, so the strongest coil is the reference: the maps are those with the
    noise coil at index 3."""
    _, k, sigma = brain
    g = torch.Generator().manual_seed(0)
    noisy = k.clone()
    noisy[0] = sigma * torch.randn(k.shape[1:], dtype=torch.complex64, generator=g) * 2 ** 0.5
    maps = espirit_maps(noisy)
    order = _move(noisy, 0, 3)
    moved = espirit_maps(noisy[order])[torch.tensor(order).argsort()]
    assert _same_maps(maps, moved, ref=1) < 1e-4
    assert _phase_step(maps, 1) < 0.05
    as_before = maps * torch.sgn(maps[0]).conj()  # the former coil-0 reference
    assert _phase_step(as_before, 1) > 0.1


def test_a_live_coil_0_stays_the_reference_even_when_weak(brain):
    """Ordinary data keep coil 0 as the phase reference (SigPy's, BART's; the shipped pipelines'
    and learned models' maps stay bit for bit): coil 0's map is real and non-negative, also at a
    fifth of its amplitude (its energy share about 3 %, above REFERENCE_MIN_SHARE; the weakest
    coil of simulated birdcage brains holds 21 % or more)."""
    _, k, _ = brain
    for scale in (1.0, 0.2):
        weak = k.clone()
        weak[0] *= scale
        maps = espirit_maps(weak)
        assert float(maps[0].imag.abs().max()) < 1e-6 and float(maps[0].real.min()) >= 0
        assert float((maps[0] != 0).float().mean()) > 0.3
    assert REFERENCE_MIN_SHARE == 0.01


# ---- F3: GCC on data narrower than 24 columns -------------------------------------------------

def test_gcc_compression_of_data_narrower_than_24_columns(tmp_path):
    """preprocess.compression_method=gcc failed every file narrower than 24 columns with
    "gcc_compress: calibration width must be in [1, 20], got 24", naming no setting (the
    pipeline passed gcc_compress's default width); it now calibrates on all the columns."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.reference_mri import compress_coils

    (path,) = simulate_mri_dataset(tmp_path / "src", volumes=1, slices=1, coils=4, size=(32, 20),
                                   seed=2, resolution=2)
    with h5py.File(path) as f:
        k = torch.from_numpy(f["kspace"][0])
    out, ref = compress_coils(k, None, 2, "gcc")
    assert out.shape == (2, 32, 20) and ref is None
    assert torch.equal(out, gcc_compress(k, 2, 20)[0])
    config = load_pipeline("mri_cs", QUICK + ["preprocess.coil_compression=2",
                                              "preprocess.compression_method=gcc",
                                              "calibrate.method=none"])[0]
    assert run_pipeline(config, [str(path)], tmp_path / "o", progress=False) == 0


# ---- F4: noise scans with a dead channel or too few samples -----------------------------------

def _noise(coils: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(coils, dtype=torch.complex128) + 0.3 * torch.randn(
        coils, coils, dtype=torch.complex128, generator=g).tril(-1)
    return mix @ torch.randn(coils, samples, dtype=torch.complex128, generator=g)


def test_dead_channel_is_left_zero_and_the_others_whitened():
    """A dead channel (zero in the noise scan and the data) failed prewhitening with "noise
    covariance is not positive definite (failed at 6)", a LAPACK index naming no coil. The live
    channels are now whitened as they would be alone and the dead one stays zero, so the
    pipeline's dead-coil warning still names it."""
    noise, data = _noise(8, 400), _noise(8, 50, seed=1)
    noise[5], data[5] = 0, 0
    live = [c for c in range(8) if c != 5]
    with pytest.warns(UserWarning, match=r"prewhiten: coil 5 of 8 holds no noise and no data"):
        white = prewhiten(data, noise=noise)
    assert bool((white[5] == 0).all())
    torch.testing.assert_close(white[live], prewhiten(data[live], noise=noise[live]),
                               rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"whitening_matrix: coil 5 of 8 have no noise"):
        whitening_matrix(noise @ noise.mH)


def test_channel_without_noise_but_with_data_is_refused():
    """Its noise cannot be whitened: refused naming the coil and the pipeline's way out."""
    noise, data = _noise(8, 400), _noise(8, 50, seed=1)
    noise[2] = 0
    with pytest.raises(ValueError, match=r"coil 2 of 8 holds data but no noise in the noise scan"
                                         r".*preprocess.prewhiten=false"):
        prewhiten(data, noise=noise)


def test_fewer_noise_samples_than_coils_is_refused_naming_both():
    """4 noise samples per coil for 8 coils: a singular covariance, reported as "not positive
    definite (failed at 5)"."""
    with pytest.raises(ValueError, match=r"the noise scan holds 4 samples per coil for 8 coils"
                                         r".*longer noise scan.*preprocess.prewhiten=false"):
        prewhiten(_noise(8, 50), noise=_noise(8, 4))


def test_dependent_or_nan_noise_names_the_coil():
    """A coil whose noise the others explain, or NaN noise, names the coil (not a LAPACK index)."""
    noise = _noise(4, 200)
    noise[3] = noise[1]
    cov = noise @ noise.mH / 199
    cov[3, 3] *= 1 - 1e-6  # coil 3 a copy of coil 1: singular, here just below
    with pytest.raises(ValueError, match=r"not positive definite: the noise of coil 3 is .* a "
                                         r"combination of the noise of the coils before it"):
        prewhiten(_noise(4, 10), cov)
    noise = _noise(4, 200)
    noise[2, 7] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(the noise samples of coil 2\)"):
        prewhiten(_noise(4, 10), noise=noise)


def _ismrmrd_with_noise(src: Path, dst: Path, noise: np.ndarray, dead: int | None = None) -> None:
    """The fastMRI file ``src`` as ISMRMRD acquisitions after noise acquisitions of 32 samples
    (``noise`` ``(coils, n)``); coil ``dead`` zeroed in both."""
    import ismrmrd
    import ismrmrd.xsd

    with h5py.File(src) as f:
        k, xml = f["kspace"][0], f["ismrmrd_header"][()]
    xml = xml.decode() if isinstance(xml, bytes) else str(xml)
    centre = int(ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodingLimits
                 .kspace_encoding_step_1.center)
    if dead is not None:
        k, noise = k.copy(), noise.copy()
        k[dead], noise[dead] = 0, 0
    h, w = k.shape[1:]
    with ismrmrd.Dataset(str(dst), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for i in range(0, noise.shape[1], 32):
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(noise[:, i:i + 32], dtype=np.complex64), center_sample=0)
            acq.setFlag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            ds.append_acquisition(acq)
        for col in range(w):
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(k[:, :, col], dtype=np.complex64), center_sample=h // 2,
                read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
            acq.idx.kspace_encode_step_1 = col - (w // 2 - centre)
            ds.append_acquisition(acq)


def test_pipeline_prewhitens_a_scan_with_a_dead_channel(brain, tmp_path):
    """Through mri_cs (prewhiten: true): the file reconstructs, and the dead coil is named."""
    pytest.importorskip("ismrmrd")
    path, _, sigma = brain
    noise = (sigma * _noise(8, 256).numpy()).astype(np.complex64)
    _ismrmrd_with_noise(path, tmp_path / "scan.h5", noise, dead=5)
    config = load_pipeline("mri_cs", QUICK + ["calibrate.method=none"])[0]
    with pytest.warns(UserWarning, match=r"coil 5 of 8 holds no noise"):
        assert run_pipeline(config, [str(tmp_path / "scan.h5")], tmp_path / "o",
                            progress=False) == 0
    entry = json.loads((tmp_path / "o" / "provenance.json").read_text())["files"][0]
    assert "coil 5 of 8 hold no signal" in json.dumps(entry)


# ---- F5: NaN / Inf in an ISMRMRD noise scan ---------------------------------------------------

@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_noise_sample_is_refused_by_the_reader(brain, tmp_path, value):
    """Reported as "prewhiten: noise covariance is not positive definite (failed at 3)", naming
    neither file nor noise scan; the reader refuses it as it refuses NaN k-space."""
    pytest.importorskip("ismrmrd")
    from mrirecon.io import DataFormatError, read_ismrmrd

    path, _, sigma = brain
    noise = (sigma * _noise(8, 96).numpy()).astype(np.complex64)
    noise[2, 40] = value  # the second noise acquisition (32 samples each)
    _ismrmrd_with_noise(path, tmp_path / "scan.h5", noise)
    with pytest.raises(DataFormatError, match=r"scan.h5.*NaN or Inf samples in the noise scan "
                                              r"\(acquisition 1\)"):
        read_ismrmrd(tmp_path / "scan.h5")


# ---- minor: NaN given to the coil compressions and Walsh / Inati ------------------------------

def test_nan_is_refused_by_compression_and_walsh(brain):
    """svd_compress raised a raw torch LinAlgError ("linalg.eigh: The algorithm failed to
    converge"), walsh_maps returned NaN maps without a word."""
    _, k, _ = brain
    bad = k.clone()
    bad[3, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"svd_compress: kspace holds 1 NaN or Inf sample "
                                         r"\(coil 3\)"):
        svd_compress(bad, 4)
    with pytest.raises(ValueError, match=r"svd_compress: calib holds 1 NaN"):
        svd_compress(k, 4, calib=bad)
    with pytest.raises(ValueError, match=r"gcc_compress: kspace holds 1 NaN"):
        gcc_compress(bad, 4, 24)
    images = ifft2c(k)
    images[2, 5, 5] = float("inf")
    for name, call in (("walsh_maps", walsh_maps), ("inati_combine", inati_combine)):
        with pytest.raises(ValueError, match=rf"{name}: coil_images hold 1 NaN or Inf value"):
            call(images)
