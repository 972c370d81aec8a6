"""Self-supervised training on acquired ISMRMRD data sees the k-space ``mrirecon run`` gives a
model: the pipeline's ``preprocess`` (prewhitening with the file's noise scan, the separate
reference scan included) and the ``calibrate`` stage's coil maps (audit a17, finding 1).

Before, ``AcquiredMRISet`` trained on the raw channels (per-coil noise std 5e-5 .. 4e-4,
correlated) while ``mrirecon run`` prewhitened the same slice (noise std 1, decorrelated): the
two inputs differed by 84 % after the best complex scale, and the maps were estimated from
differently weighted data.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("ismrmrd")

from mrirecon.io.ismrmrd_raw import read_ismrmrd  # noqa: E402
from tests.io.test_io_ismrmrd_reference_scan import write_scan  # noqa: E402

SIZE, COILS = 48, 4


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """``integrated`` (every 2nd line plus 24 ACS lines of the same scan) and ``separate``
    (every 2nd line plus a 24-line reference of another gain and contrast) ISMRMRD scans of one
    simulated slice, each with a noise scan whose covariance mixes and rescales the coils."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("acquired")
    (src,) = simulate_mri_dataset(root / "sim", volumes=1, slices=1, coils=COILS,
                                  size=(SIZE, SIZE), seed=3, readout_oversampling=2)
    for kind in ("integrated", "separate"):
        (root / kind).mkdir()
        write_scan(Path(src), root / kind / "scan.h5", kind)
    return root


def pipeline_slice(path: Path):
    """Slice 0 of ``path`` after ``mrirecon run``'s load, preprocess, undersample and calibrate
    stages of ``mri_modl`` (a learned model's pipeline: ESPIRiT crop 0, prewhitening on) with a
    learned model's default readout (as acquired: training has no readout crop; ``mri_modl``
    crops for its shipped weights, trained at the cropped deployment geometry)."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.stages_mri import MRIStages

    config = load_pipeline("mri_modl", ["preprocess.remove_oversampling=null"])[0]
    assert config.preprocess.prewhiten and config.calibrate.crop == 0.0
    stages = MRIStages(config, classical=False)
    source = stages.load(path)
    try:
        s = source.read(0)
    finally:
        source.close()
    return stages.calibrate(stages.undersample(stages.preprocess(s)))


@pytest.mark.parametrize("kind", ["integrated", "separate"])
def test_acquired_sample_is_the_pipelines_preprocessed_slice(scans, kind):
    """The sample's ``y`` is the preprocess stage's k-space times the mask (prewhitened with the
    noise scan), and its ESPIRiT maps are the calibrate stage's (from the prewhitened data's
    centre band, or from the prewhitened separate reference)."""
    from mrirecon.calib import noise_covariance, prewhiten
    from mrirecon.training.data_acquired import AcquiredMRISet

    path = scans / kind / "scan.h5"
    sample = AcquiredMRISet(path, maps="espirit").get(0)
    s = pipeline_slice(path)
    assert torch.equal(sample.mask, s.mask.reshape(-1).bool())
    y = sample.y[0]
    # float32 data through the same float32 whitening: equal to a few ulps of the largest sample
    eps = torch.finfo(torch.float32).eps
    scale = float(s.kspace.abs().max())
    torch.testing.assert_close(y, s.kspace, rtol=16 * eps, atol=16 * eps * scale)
    torch.testing.assert_close(sample.maps[0], s.maps.to(torch.complex64),
                               rtol=1e-4, atol=1e-4)  # ESPIRiT's eigenvectors in float32
    # and this is not the raw file: the data are whitened (unit noise covariance)
    ks = read_ismrmrd(path)
    assert not torch.allclose(y, ks.data[0] * sample.mask, rtol=0.1)
    white = noise_covariance(prewhiten(ks.noise, noise=ks.noise))
    torch.testing.assert_close(white, torch.eye(COILS, dtype=white.dtype), rtol=0, atol=1e-4)


def test_a_damaged_noise_scan_is_refused_naming_the_file(tmp_path, monkeypatch):
    """A noise scan the prewhitening cannot use (here: fewer samples than coils) stops training
    naming the file and slice, as ``mrirecon run`` stops on it."""
    import dataclasses

    import mrirecon.io as io
    from mrirecon.training.data_acquired import AcquiredMRISet

    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (src,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=1, coils=COILS,
                                  size=(32, 32), seed=1)
    (tmp_path / "scan").mkdir()
    path = tmp_path / "scan" / "scan.h5"
    write_scan(Path(src), path, "integrated")
    real = io.read_ismrmrd

    def short_noise(p, *a, **k):
        ks = real(p, *a, **k)
        return dataclasses.replace(ks, noise=ks.noise[:, :2])

    monkeypatch.setattr(io, "read_ismrmrd", short_noise)
    data = AcquiredMRISet(path, maps="espirit")
    with pytest.raises(ValueError, match=r"AcquiredMRISet: .*scan.h5 slice 0: prewhiten: the noise "
                                         r"scan holds 2 samples per coil for 4 coils"):
        data.get(0)
