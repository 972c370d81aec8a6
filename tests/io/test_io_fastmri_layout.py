"""write_fastmri against arrays in other tools' axis orders (audit a19: numpy's one multi-coil
slice without its slice axis, BART / MATLAB coil-last and column-major k-space)."""

import h5py
import numpy as np
import pytest

from mrirecon.data import Header
from mrirecon.io.errors import DataFormatError
from mrirecon.io.fastmri import FastMRIFile, write_fastmri
from mrirecon.io.ismrmrd_header import header_to_xml

COILS, H, W = 4, 32, 24


def header(**changes) -> Header:
    return Header(encoded_matrix=(H, W, 1), recon_matrix=(H, W, 1),
                  encoded_fov_mm=(220.0, 165.0, 5.0), recon_fov_mm=(220.0, 165.0, 5.0), **changes)


def kspace(shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)


def test_one_multicoil_slice_without_its_slice_axis_is_refused(tmp_path):
    """(coils, H, W), numpy's commonest shape of one slice, was stored as 4 single-coil slices
    and reconstructed as 4 shaded coil images, exit 0."""
    k = kspace((COILS, H, W))
    for hdr in (header(num_coils=COILS), header_to_xml(header(num_coils=COILS))):
        with pytest.raises(ValueError, match=r"one multi-coil slice is kspace\[None\]"):
            write_fastmri(tmp_path / "one.h5", k, hdr)
    assert not any(tmp_path.iterdir())
    # k[None] is that slice; 3-D k-space is single-coil slices
    with FastMRIFile(write_fastmri(tmp_path / "one.h5", k[None], header(num_coils=COILS))) as f:
        assert f.shape == (1, COILS, H, W)
    with FastMRIFile(write_fastmri(tmp_path / "sc.h5", k, header())) as f:
        assert f.shape == (COILS, 1, H, W)
    # fastMRI's single-coil files keep the scanner's header (15 channels, 35 slices): written
    with FastMRIFile(write_fastmri(tmp_path / "knee.h5", kspace((3, H, W)),
                                   header(num_coils=15))) as f:
        assert f.shape == (3, 1, H, W) and f.header.extra["receiver_channels"] == 15


def test_a_multicoil_volume_records_its_coil_count(tmp_path):
    """A header built in Python names no channel count; the file's header now names the coils,
    so that k-space later stored without its slice axis is told apart from slices."""
    path = write_fastmri(tmp_path / "v.h5", kspace((1, COILS, H, W)), header())
    with h5py.File(path) as f:
        assert f"<receiverChannels>{COILS}</receiverChannels>" in f["ismrmrd_header"][()].decode()
    with FastMRIFile(path) as f:
        assert f.header.extra["receiver_channels"] == COILS and f.header.num_coils == COILS
    # a header's own count (coil-compressed data: fewer coils than channels) is kept
    with FastMRIFile(write_fastmri(tmp_path / "c.h5", kspace((1, 2, H, W)),
                                   header(num_coils=COILS))) as f:
        assert f.header.extra["receiver_channels"] == COILS and f.shape[1] == 2


@pytest.mark.parametrize("order, array, hint", [
    ("coil_last", lambda k: np.moveaxis(k, 0, -1)[None], r"coil axis last\?.*np\.moveaxis"),
    ("matlab", lambda k: np.swapaxes(k, -1, -2)[None], r"transposed.*MATLAB.*np\.swapaxes"),
])
def test_kspace_in_another_axis_order_is_refused_naming_the_order(tmp_path, order, array, hint):
    """Was: written with a header that contradicts it, then refused by the reader naming no
    cause ("(x, y) = (32, 24) but kspace is (H, W) = (24, 4)")."""
    k = array(kspace((COILS, H, W)))
    with pytest.raises(ValueError, match=r"\(x, y\) = \(32, 24\) but kspace is .*" + hint):
        write_fastmri(tmp_path / f"{order}.h5", k, header())
    assert not any(tmp_path.iterdir())
    # the reader says the same of such a file written without write_fastmri
    path = tmp_path / f"{order}_raw.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("ismrmrd_header", data=header_to_xml(header()))
    with pytest.raises(DataFormatError, match=r"\(x, y\) = \(32, 24\) but kspace is .*" + hint):
        FastMRIFile(path).header
    # any other mismatch names none of the two
    with pytest.raises(ValueError, match=r"but kspace is \(H, W\) = \(32, 20\).*wrong\)$"):
        write_fastmri(tmp_path / "other.h5", kspace((1, COILS, H, 20)), header())
