"""write_fastmri against arrays in other tools' axis orders (audit a19: numpy's one multi-coil
slice without its slice axis, BART / MATLAB coil-last and column-major k-space)."""

import h5py
import numpy as np
import pytest

from mrirecon.data import Header
from mrirecon.io.errors import DataFormatError
from mrirecon.io.fastmri import FastMRIFile, write_fastmri
from mrirecon.io.ismrmrd_header import header_to_xml
from mrirecon.io.probe import hdf5_layout

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
    # BART's 2-D multi-coil (READ, PHS1, 1, COIL), as readcfl keeps it (was: no hint)
    ("bart", lambda k: np.moveaxis(k, 0, -1)[:, :, None, :],
     r"BART's \(READ, PHS1, 1, COIL\) order\?.*np\.moveaxis\(k\[\.\.\., 0, :\], -1, 0\)\[None\]"),
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


def _raw_file(path, k, hdr=None):
    """A file written without write_fastmri (its checks): k-space and an optional header."""
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        if hdr is not None:
            f.create_dataset("ismrmrd_header", data=hdr if isinstance(hdr, str) else header_to_xml(hdr))
    return path


def _traj(kind: str, width: int = W) -> Header:
    h = Header(encoded_matrix=(H, width, 1), recon_matrix=(H, width, 1), num_coils=COILS,
               encoded_fov_mm=(220.0, 165.0, 5.0), recon_fov_mm=(220.0, 165.0, 5.0))
    return h.with_(extra={**h.extra, "trajectory": kind})


@pytest.mark.parametrize("kind", ["radial", "goldenangle", "spiral", " Radial "])
def test_a_noncartesian_header_in_the_fastmri_layout_is_refused(tmp_path, kind):
    """Audit a21 F1: radial spokes stored (slices, coils, spokes, samples) with a radial header
    (fastMRI breast's stack-of-stars layout) were read as a Cartesian grid: exit 0, no warning,
    image uncorrelated with the object (corr -0.02), with mri_cs and mri_radial_cs alike."""
    k = kspace((2, COILS, H, W))
    field = r"ismrmrd_header/encoding/trajectory: '" + kind.strip() + "'.*write_ismrmrd_noncartesian"
    with pytest.raises(DataFormatError, match=field):
        FastMRIFile(_raw_file(tmp_path / "r.h5", k, _traj(kind))).header
    # the trajectory is named, not the matrix, when spokes != the header's y (the usual case)
    bad_matrix = _traj(kind, width=2 * W)
    with pytest.raises(DataFormatError, match=field):
        FastMRIFile(_raw_file(tmp_path / "m.h5", k, bad_matrix)).header
    from mrirecon.io.fastmri import read_fastmri
    with pytest.raises(DataFormatError, match=field):
        read_fastmri(tmp_path / "r.h5")
    for hdr in (_traj(kind), header_to_xml(_traj(kind))):  # Header or XML
        with pytest.raises(ValueError, match=r"write_fastmri: .*" + field):
            write_fastmri(tmp_path / "w.h5", k, hdr)
    assert not (tmp_path / "w.h5").exists()
    # Cartesian (named, or no trajectory element) and EPI lines still read as the grid they are
    for name in ("cartesian", "epi"):
        ks = FastMRIFile(write_fastmri(tmp_path / f"{name}.h5", k, _traj(name))).read_volume()
        assert np.array_equal(ks.data.numpy(), k)
    xml = header_to_xml(header(num_coils=COILS)).replace("<trajectory>cartesian</trajectory>", "")
    assert np.array_equal(FastMRIFile(_raw_file(tmp_path / "n.h5", k, xml)).read_volume().data, k)


def test_interleaved_real_imag_kspace_is_refused_with_the_conversion_that_reads(tmp_path):
    """Audit a21 F3: Calgary-Campinas stores (slices, H, W, 2 x coils) float32, real and
    imaginary parts interleaved on the last axis: refused as "expected complex64 samples, got
    dtype float32", no word of how to convert. The hint's recipe gives back the k-space."""
    k = kspace((2, COILS, H, W))
    cc = np.empty((2, H, W, 2 * COILS), np.float32)
    cc[..., 0::2], cc[..., 1::2] = np.moveaxis(k.real, 1, -1), np.moveaxis(k.imag, 1, -1)
    with pytest.raises(DataFormatError, match=r"got dtype float32.*real/imag interleaved on the "
                       r"last axis.*Calgary-Campinas.*k\[\.\.\., 0::2\] \+ 1j \* k\[\.\.\., 1::2\]"
                       r".*np\.moveaxis\(k, -1, 1\)"):
        FastMRIFile(_raw_file(tmp_path / "cc.h5", cc, header(num_coils=COILS))).header
    x = cc  # the hint, as written
    assert np.array_equal(np.moveaxis(x[..., 0::2] + 1j * x[..., 1::2], -1, 1), k)
    # an odd last axis cannot be interleaved pairs: no such hint
    with pytest.raises(DataFormatError, match=r"got dtype float32$"):
        FastMRIFile(_raw_file(tmp_path / "odd.h5", cc[..., :3], header())).header


def test_matlab_compound_complex_is_refused_with_the_conversion_that_reads(tmp_path):
    """Audit a21 F3: MATLAB -v7.3 complex (CMRxRecon) is a compound dtype of 'real' and 'imag',
    in MATLAB's reversed axis order: refused naming the dtype only."""
    k = kspace((2, COILS, H, W))
    matlab = np.swapaxes(k, -1, -2)  # MATLAB's (H, W, coils, slices) as h5py reads it
    compound = np.empty(matlab.shape, [("real", "<f4"), ("imag", "<f4")])
    compound["real"], compound["imag"] = matlab.real, matlab.imag
    with pytest.raises(DataFormatError, match=r"\('imag', '<f4'\)\].*k\['real'\] \+ 1j \* "
                       r"k\['imag'\].*reversed.*np\.swapaxes\(k, -1, -2\)"):
        FastMRIFile(_raw_file(tmp_path / "m.h5", compound, header(num_coils=COILS))).header
    x = compound  # the hint, as written
    assert np.array_equal(np.swapaxes(x["real"] + 1j * x["imag"], -1, -2), k)


def test_converted_kspace_without_a_header_is_pointed_to_write_fastmri(tmp_path):
    """Audit a21 F3: "ismrmrd_header: dataset missing (found ['kspace'])" named no way to add
    one; write_fastmri with a Header (README: MRI from your own k-space) writes a file that
    reads."""
    k = kspace((1, COILS, H, W))
    with pytest.raises(DataFormatError, match=r"ismrmrd_header: dataset missing \(found "
                       r"\['kspace'\]\).*mrirecon\.io\.write_fastmri.*Header.*own k-space"):
        FastMRIFile(_raw_file(tmp_path / "bare.h5", k)).header
    assert FastMRIFile(write_fastmri(tmp_path / "w.h5", k, header())).header.num_coils == COILS


def test_an_unknown_hdf5_layout_names_the_layouts_that_are_read(tmp_path):
    """Audit a21 F3: CMRxRecon 2023's `kspace_full` gave "unknown HDF5 layout (top-level keys:
    [...])" without saying which layouts are read."""
    from mrirecon.io.probe import hdf5_layout

    with h5py.File(tmp_path / "cine.mat", "w") as f:
        f.create_dataset("kspace_full", data=np.zeros((2, 3), np.float32))
    with pytest.raises(DataFormatError, match=r"unknown HDF5 layout \(top-level keys: "
                       r"\['kspace_full'\]\).*fastMRI.*`kspace`.*ISMRMRD.*`dataset`.*LoDoPaB"):
        hdf5_layout(tmp_path / "cine.mat")


def test_a_top_level_dataset_named_dataset_is_no_ismrmrd_file(tmp_path):
    """ISMRMRD keeps its acquisitions in a *group* called ``dataset``; an array of that name
    (someone's own export) is an unknown layout, refused with the layouts mrirecon reads,
    not handed to the ISMRMRD reader; a group of that name is ISMRMRD."""
    path = tmp_path / "arrays.h5"
    with h5py.File(path, "w") as f:
        f["dataset"] = np.zeros((4, 8), np.complex64)
    with pytest.raises(DataFormatError, match=r"unknown HDF5 layout \(top-level keys: \['dataset'\]\)"):
        hdf5_layout(path)
    with h5py.File(path, "w") as f:
        f.create_group("dataset")["data"] = np.zeros(3)
    assert hdf5_layout(path) == "ismrmrd"


def test_an_observation_only_file_is_a_ct_sinogram_file(tmp_path):
    """Fails if probe.py:29 ``"observation"`` dropped from the CT keys. LoDoPaB-layout
    sinograms stored under ``observation`` alone (READ_HDF5_LAYOUTS names all three keys) are
    ``ct_hdf5``, not an unknown layout."""
    from mrirecon.io.probe import hdf5_layout

    path = tmp_path / "obs.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("observation", data=np.zeros((2, 8, 5), np.float32))
    assert hdf5_layout(path) == "ct_hdf5"


def test_fastmri_tensor_layout_kspace_is_refused_with_the_conversion_that_reads(tmp_path):
    """Fails if float k-space in fastMRI's own ``to_tensor`` layout ``(slices, coils, H, W, 2)``
    is refused without the conversion (other float layouts get one) or with one that does not
    give back the k-space."""
    k = kspace((2, COILS, H, W))
    x = np.stack([k.real, k.imag], -1).astype(np.float32)
    with pytest.raises(DataFormatError,
                       match=rf"kspace.*got shape \(2, {COILS}, {H}, {W}, 2\); real/imag "
                       r"pairs on a last axis of 2.*k = k\[\.\.\., 0\] \+ 1j \* k\[\.\.\., 1\]"):
        FastMRIFile(_raw_file(tmp_path / "t.h5", x, header(num_coils=COILS))).header
    assert np.array_equal(x[..., 0] + 1j * x[..., 1], k)
