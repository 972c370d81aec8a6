"""Small valid inputs that the hostile tests corrupt: a fastMRI volume, a LoDoPaB-layout CT
part, an ISMRMRD raw file and MR / CT DICOM series (all generated, a few kB each)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import torch

from tests.helpers import simulated_ct_dir
from mrirecon.containers import Image, ImageGeometry


@pytest.fixture(scope="session")
def mri_file(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri_src")
    (path,) = simulate_mri_dataset(out, volumes=1, slices=2, coils=2, size=(32, 24), seed=5,
                                   resolution=2)
    return Path(path)


@pytest.fixture(scope="session")
def ct_dir(tmp_path_factory) -> Path:
    return simulated_ct_dir(tmp_path_factory.mktemp("ct_src"), views=24, size=16, seed=2)


def _image(modality: str, seed: int = 0) -> Image:
    g = torch.Generator().manual_seed(seed)
    data = torch.rand(3, 16, 16, generator=g)
    if modality == "CT":
        data = data * 1000 - 800
    geometry = ImageGeometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                             orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), slice_thickness=2.0)
    return Image(data, geometry, kind="hu" if modality == "CT" else "magnitude",
                 modality=modality, description=f"{modality} test")


@pytest.fixture(scope="session")
def dicom_series(tmp_path_factory):
    """``make(folder, modality="CT", seed=0)`` writes a 3-slice 16 x 16 series there."""
    from mrirecon.io import write_dicom_series

    def make(folder: Path, modality: str = "CT", seed: int = 0) -> list[Path]:
        return write_dicom_series(_image(modality, seed), folder)

    return make


@pytest.fixture(scope="session")
def ismrmrd_file(tmp_path_factory) -> Path:
    """2 slices of 16 x 12 k-space, 2 coils; slice 1 skips every other line (so the reader
    returns a per-slice mask (slices, W))."""
    ismrmrd = pytest.importorskip("ismrmrd")
    X = ismrmrd.xsd
    enc_x, enc_y, coils = 16, 12, 2
    header = X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=coils),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[X.encodingType(
            encodedSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=enc_x, y=enc_y, z=1),
                                             fieldOfView_mm=X.fieldOfViewMm(x=160, y=120, z=5)),
            reconSpace=X.encodingSpaceType(matrixSize=X.matrixSizeType(x=enc_x, y=enc_y, z=1),
                                           fieldOfView_mm=X.fieldOfViewMm(x=160, y=120, z=5)),
            encodingLimits=X.encodingLimitsType(
                kspace_encoding_step_1=X.limitType(minimum=0, maximum=enc_y - 1, center=enc_y // 2),
                slice=X.limitType(minimum=0, maximum=1, center=0)),
            trajectory=X.trajectoryType.CARTESIAN)],
    )
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("mrd") / "raw.h5"
    x = np.linspace(-1, 1, enc_x)
    with ismrmrd.Dataset(str(path), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(X.ToXML(header))
        for s in range(2):
            for line in range(enc_y):
                if s == 1 and line % 2 and abs(line - enc_y // 2) > 2:
                    continue
                signal = np.exp(-((x * 3) ** 2)) * np.exp(-(((line - enc_y // 2) / 3) ** 2))
                data = (signal[None] * (1 + 0.1 * rng.normal(size=(coils, enc_x)))).astype(np.complex64)
                acq = ismrmrd.Acquisition.from_array(
                    data, center_sample=enc_x // 2, read_dir=(0.0, 1.0, 0.0),
                    phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0),
                    position=(0.0, 0.0, 5.0 * s))
                acq.idx.kspace_encode_step_1 = line
                acq.idx.slice = s
                ds.append_acquisition(acq)
    return path
