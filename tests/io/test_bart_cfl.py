"""BART's ``.hdr`` / ``.cfl`` arrays: the format as BART reads and writes it (checked against the
``bart`` tool when it is installed: Debian package ``bart``, ``make sysdeps``), BART k-space as
mrirecon's slices, and ``mrirecon run`` on BART k-space."""

from __future__ import annotations

import logging
import shutil
import subprocess

import h5py
import numpy as np
import pytest
import torch

from mrirecon.containers import Header
from mrirecon.functional.fft import fft2c, ifft2c
from mrirecon.io import BartKSpaceFile, DataFormatError, read_cfl, write_cfl, write_fastmri

BART = shutil.which("bart")
needs_bart = pytest.mark.skipif(BART is None, reason="bart not installed (make sysdeps)")
EPS32 = float(np.finfo(np.float32).eps)


def _noise(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)


def _bart(*args, cwd):
    subprocess.run([BART, *map(str, args)], cwd=cwd, check=True, capture_output=True)


# ---- the format ------------------------------------------------------------------------------
def test_write_then_read_keeps_values_and_column_major_order(tmp_path):
    a = _noise((5, 3, 1, 2))
    hdr, cfl = write_cfl(tmp_path / "x", a)
    assert (hdr.name, cfl.name) == ("x.hdr", "x.cfl")
    assert hdr.read_text() == "# Dimensions\n5 3 1 2 " + "1 " * 12 + "\n"
    raw = np.fromfile(cfl, dtype="<c8")
    assert raw.size == a.size and raw[1] == a[1, 0, 0, 0] and raw[5] == a[0, 1, 0, 0]  # READ fastest
    np.testing.assert_array_equal(read_cfl(tmp_path / "x"), a)  # trailing 1s dropped, PHS2 kept
    for name in ("x.cfl", "x.hdr"):
        np.testing.assert_array_equal(read_cfl(tmp_path / name), a)


def test_write_rounds_complex128_and_takes_real_and_torch(tmp_path):
    a = _noise((4, 4)).astype(np.complex128) * (1 + 1e-12)
    write_cfl(tmp_path / "c", a)
    np.testing.assert_array_equal(read_cfl(tmp_path / "c"), a.astype(np.complex64))
    write_cfl(tmp_path / "r", torch.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(read_cfl(tmp_path / "r"), np.arange(6.0).reshape(2, 3) + 0j)


@pytest.mark.parametrize("bad", [np.full((2, 2), np.nan), np.ones((0, 2))])
def test_write_refuses_nan_and_empty_and_leaves_the_old_array(tmp_path, bad):
    write_cfl(tmp_path / "x", np.ones((2, 2)))
    with pytest.raises(ValueError, match="x.cfl"):
        write_cfl(tmp_path / "x", bad)
    np.testing.assert_array_equal(read_cfl(tmp_path / "x"), np.ones((2, 2)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.cfl", "x.hdr"]  # no temporary left


@pytest.mark.parametrize("case, field, words", [
    ("no_hdr", "x.hdr: file", "missing"),
    ("no_cfl", "x.cfl: file", "missing"),
    ("truncated", "x.cfl: data", "truncated"),
    ("longer", "x.cfl: data", "longer than its header"),
    ("no_dims_line", "# Dimensions", "not a BART header"),
    ("text_dims", "# Dimensions", "not whole numbers"),
    ("zero_dim", "# Dimensions", "positive sizes"),
])
def test_broken_arrays_are_refused_naming_file_and_field(tmp_path, case, field, words):
    write_cfl(tmp_path / "x", _noise((4, 3)))
    hdr, cfl = tmp_path / "x.hdr", tmp_path / "x.cfl"
    if case == "no_hdr":
        hdr.unlink()
    elif case == "no_cfl":
        cfl.unlink()
    elif case == "truncated":
        cfl.write_bytes(cfl.read_bytes()[:-8])
    elif case == "longer":
        cfl.write_bytes(cfl.read_bytes() + bytes(8))
    else:
        text = {"no_dims_line": "4 3\n", "text_dims": "# Dimensions\n4 three\n",
                "zero_dim": "# Dimensions\n4 0\n"}[case]
        hdr.write_text(text)
    with pytest.raises(DataFormatError, match=field) as err:
        read_cfl(tmp_path / "x")
    assert words in str(err.value)


def test_raw_array_format_is_refused_with_the_conversion(tmp_path):
    (tmp_path / "k.ra").write_bytes(bytes(64))
    with pytest.raises(DataFormatError, match=r"bart copy .*k\.ra"):
        read_cfl(tmp_path / "k.ra")


# ---- against BART itself ---------------------------------------------------------------------
@needs_bart
@pytest.mark.parametrize("h, w", [(16, 12), (15, 9)])
def test_bart_reads_our_arrays_and_its_centred_fft_is_ours(tmp_path, h, w):
    """``bart fft -u`` / ``-iu`` of an array we wrote, read back: mrirecon's fft2c / ifft2c,
    even and odd sizes (k = 0 at N // 2 in both). float32 FFTs of size n: error ~ eps log2(n)."""
    x = _noise((h, w, 1, 3))
    write_cfl(tmp_path / "img", x)
    _bart("fft", "-u", 3, "img", "k", cwd=tmp_path)
    _bart("fft", "-iu", 3, "img", "ki", cwd=tmp_path)
    coils = torch.from_numpy(np.moveaxis(x[:, :, 0, :], -1, 0))
    tol = 8 * EPS32 * np.log2(h * w) * float(np.abs(x).max())
    for name, ours in (("k", fft2c(coils)), ("ki", ifft2c(coils))):
        theirs = np.moveaxis(read_cfl(tmp_path / name)[:, :, 0, :], -1, 0)
        np.testing.assert_allclose(theirs, ours.numpy(), rtol=0, atol=tol)


@needs_bart
def test_we_read_bart_arrays_and_write_its_bytes(tmp_path):
    """``bart phantom -k`` (with its ``# Command`` / ``# Files`` sections) reads as BART shows it,
    and ``bart copy`` of an array we wrote has our data bytes."""
    _bart("phantom", "-k", "-s", 4, "-x", 16, "ksp", cwd=tmp_path)
    k = read_cfl(tmp_path / "ksp")
    assert k.shape == (16, 16, 1, 4) and k.dtype == np.complex64 and np.abs(k).max() > 0
    assert "# Command" in (tmp_path / "ksp.hdr").read_text()
    write_cfl(tmp_path / "ours", k[:, :, 0, :])
    _bart("copy", "ours", "theirs", cwd=tmp_path)
    assert (tmp_path / "ours.cfl").read_bytes() == (tmp_path / "theirs.cfl").read_bytes()
    _bart("transpose", 3, 13, "ksp", "ksl", cwd=tmp_path)  # coils -> slices: 4 single-coil slices
    f = BartKSpaceFile(tmp_path / "ksl")
    assert len(f) == 4 and f.shape == (4, 1, 16, 16)
    np.testing.assert_array_equal(f.read_slice(2).data[0, 0].numpy(), k[:, :, 0, 2])


# ---- BART k-space as slices ------------------------------------------------------------------
def test_kspace_dims_map_to_slices_coils_rows_columns(tmp_path):
    h, w, c, s = 8, 6, 3, 2
    dims = [h, w, 1, c] + [1] * 9 + [s]
    k = _noise(dims)
    k[:, 1] = 0  # column 1 unsampled in every coil of every slice
    write_cfl(tmp_path / "k", k)
    f = BartKSpaceFile(tmp_path / "k.cfl")
    assert len(f) == s and f.header.encoded_matrix == (h, w, 1) and f.header.num_coils == c
    for i in range(s):
        ks = f.read_slice(i)
        expect = np.moveaxis(k[:, :, 0, :, 0, 0, 0, 0, 0, 0, 0, 0, 0, i], -1, 0)
        np.testing.assert_array_equal(ks.data[0].numpy(), expect)
        assert ks.mask.tolist() == [True, False] + [True] * (w - 2)
    assert f.header.extra["fov_unknown_axes"] == ("x", "y", "z")


@pytest.mark.parametrize("dim, name, advice", [(2, "PHS2", "bart fft -iu 4"),
                                               (5, "TE", "bart slice 5"),
                                               (4, "MAPS", "not k-space"),
                                               (14, "AVG", "bart avg")])
def test_other_dimensions_are_refused_naming_them(tmp_path, dim, name, advice):
    dims = [8, 6, 1, 2] + [1] * 12
    dims[dim] = 3
    write_cfl(tmp_path / "k", _noise(dims))
    with pytest.raises(DataFormatError, match=rf"\[{dim}\] \({name}\)") as err:
        BartKSpaceFile(tmp_path / "k")
    assert advice in str(err.value)


def test_nan_sample_is_refused_naming_the_slice(tmp_path):
    k = _noise([8, 6, 1, 2] + [1] * 9 + [3])
    k[0, 0, 0, 1, ..., 2] = np.nan
    path = tmp_path / "k.cfl"
    (tmp_path / "k.hdr").write_text("# Dimensions\n" + " ".join(map(str, k.shape)) + "\n")
    path.write_bytes(np.asarray(k, "<c8").tobytes(order="F"))  # write_cfl refuses NaN
    f = BartKSpaceFile(path)
    f.read_slice(1)
    with pytest.raises(DataFormatError, match=r"k\.cfl: data\[SLICE=2\]: 1 NaN or Inf"):
        f.read_slice(2)


# ---- mrirecon run ----------------------------------------------------------------------------
def _run(inputs, out, caplog=None):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    config, _ = load_pipeline("mri_cs", ["evaluate.enabled=false", "report.enabled=false",
                                         "export.formats=[hdf5]",
                                         "reconstruct.params.iterations=5"])
    return run_pipeline(config, inputs, out, progress=False)


def test_run_on_bart_kspace_is_the_run_on_the_same_fastmri_file(tmp_path):
    """The same undersampled k-space as ``NAME`` (BART's way of naming it) and as a fastMRI file
    gives the same image, bit for bit; the columns without data are the sampling pattern."""
    torch.set_num_threads(1)
    yy, xx = np.mgrid[:32, :24]
    img = ((yy - 16) ** 2 / 100 + (xx - 12) ** 2 / 50 < 1).astype(np.complex64)
    maps = np.stack([np.exp(-((yy - 8 * c) ** 2 + (xx - 6 * c) ** 2) / 400) for c in range(4)])
    k = fft2c(torch.from_numpy(maps * img).to(torch.complex64)).numpy()
    k[:, :, np.r_[0:9:2, 15:24:2]] = 0
    vol = np.stack([k, 0 * k, k / 2])  # a blank middle slice: the pipeline's blank slice in both
    write_cfl(tmp_path / "ksp", np.moveaxis(vol, (0, 1), (-1, -2))[:, :, None, :, None]
              .reshape((32, 24, 1, 4) + (1,) * 9 + (3,), order="F"))
    write_fastmri(tmp_path / "h5" / "ksp.h5", vol,
                  Header(encoded_matrix=(32, 24, 1), recon_matrix=(32, 24, 1), num_coils=4))
    assert _run([str(tmp_path / "ksp")], tmp_path / "a") == 0
    assert _run([str(tmp_path / "h5" / "ksp.h5")], tmp_path / "b") == 0
    with h5py.File(tmp_path / "a" / "reconstructions" / "ksp.h5") as fa, \
            h5py.File(tmp_path / "b" / "reconstructions" / "ksp.h5") as fb:
        a, b = fa["reconstruction"][()], fb["reconstruction"][()]
    assert a.shape == (3, 32, 24) and np.abs(a[0]).max() > 0 and not a[1].any()
    np.testing.assert_array_equal(a, b)


def test_inputs_name_bart_arrays_once_and_refuse_a_folder_of_them(tmp_path, caplog):
    from mrirecon.pipeline.inputs import expand_inputs

    write_cfl(tmp_path / "ksp", _noise((8, 6, 1, 2)))
    write_cfl(tmp_path / "sens", _noise((8, 6, 1, 2)))
    cfl = tmp_path / "ksp.cfl"
    assert expand_inputs([str(tmp_path / "ksp")]) == [cfl]
    assert expand_inputs([str(tmp_path / "ksp.*")]) == [cfl]
    assert expand_inputs([str(tmp_path / "ksp.hdr")]) == [cfl]
    (tmp_path / "half.hdr").write_bytes((tmp_path / "ksp.hdr").read_bytes())  # its .cfl lost
    with pytest.raises(FileNotFoundError, match=r"input .*half: half.hdr is there but half.cfl "
                                                r"\(the array's data\) is missing"):
        expand_inputs([str(tmp_path / "half")])  # was: "input half does not exist"
    (tmp_path / "half.hdr").unlink()
    with pytest.raises(FileNotFoundError, match=r"holds BART arrays \(ksp.cfl, sens.cfl\).*by name"):
        expand_inputs([str(tmp_path)])
    write_fastmri(tmp_path / "scan.h5", _noise((1, 2, 8, 6)),
                  Header(encoded_matrix=(8, 6, 1), recon_matrix=(8, 6, 1), num_coils=2))
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        assert expand_inputs([str(tmp_path)]) == [tmp_path / "scan.h5"]
    assert "2 BART array(s) beside its HDF5 files are not read" in caplog.text
    # a pattern of wildcards alone is a folder's listing: its BART arrays are no inputs either
    for pattern in ("*", "*.*", "[a-z]*", "[!x]*", "*[a-z5]"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
            assert expand_inputs([str(tmp_path / pattern)]) == [tmp_path / "scan.h5"], pattern
        assert "matches BART arrays (ksp.cfl, sens.cfl)" in caplog.text
    assert expand_inputs([str(tmp_path / "*.cfl")]) == [cfl, tmp_path / "sens.cfl"]
    (tmp_path / "scan.h5").unlink()
    with pytest.raises(FileNotFoundError, match="wildcards alone"):
        expand_inputs([str(tmp_path / "*")])
    # an array named as an HDF5 file beside it: the advice says to run it apart
    write_fastmri(tmp_path / "ksp.h5", _noise((1, 2, 8, 6)),
                  Header(encoded_matrix=(8, 6, 1), recon_matrix=(8, 6, 1), num_coils=2))
    caplog.clear()
    with caplog.at_level(logging.WARNING, "mrirecon.pipeline"):
        expand_inputs([str(tmp_path)])
    assert "in a run of its own (another --output) for ksp.cfl" in caplog.text


def test_a_slice_cut_off_by_a_rewrite_is_refused_not_a_crash(tmp_path):
    """``bart`` truncates an existing output in place: a memory map died with SIGBUS on the first
    page past the new end (the whole run, no record); a plain read names the slice."""
    write_cfl(tmp_path / "k", _noise([8, 6, 1, 2] + [1] * 9 + [3]))
    f = BartKSpaceFile(tmp_path / "k")
    f.read_slice(2)
    cfl = tmp_path / "k.cfl"
    cfl.write_bytes(cfl.read_bytes()[: 8 * 6 * 2 * 8 + 40])  # slice 1 cut, slice 2 gone
    with pytest.raises(DataFormatError, match=r"k\.cfl: data\[SLICE=2\]: the file ended 0 bytes"):
        f.read_slice(2)
    with pytest.raises(DataFormatError, match=r"data\[SLICE=1\]: the file ended 40 bytes"):
        f.read_slice(1)


def test_resume_reads_an_array_again_when_only_its_header_changed(tmp_path):
    """``bart reshape`` rewrites NAME.hdr alone: the header is part of the input's checksum and
    recorded in provenance.json (``bart_headers``); --resume kept the old volume."""
    import json

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    torch.set_num_threads(1)
    yy, xx = np.mgrid[:24, :20]
    img = ((yy - 12) ** 2 / 60 + (xx - 10) ** 2 / 40 < 1).astype(np.complex64)
    k = fft2c(torch.from_numpy(np.stack([img, img * 1j]))).numpy()  # (2 coils, H, W)
    arr = np.moveaxis(k, 0, -1)[:, :, None, :]  # (24, 20, 1, 2)
    write_cfl(tmp_path / "k", arr)
    config, _ = load_pipeline("mri_retrospective", ["evaluate.enabled=false", "report.enabled=false",
                                                     "export.formats=[hdf5]", "calibrate.method=walsh"])
    out = tmp_path / "out"
    assert run_pipeline(config, [str(tmp_path / "k.cfl")], out, progress=False) == 0
    prov = json.loads((out / "provenance.json").read_text())
    assert list(prov["bart_headers"]) == [str((tmp_path / "k.hdr").resolve())]
    # the same bytes as 2 single-coil slices: coils on SLICE
    (tmp_path / "k.hdr").write_text("# Dimensions\n24 20 1 1 1 1 1 1 1 1 1 1 1 2 1 1 \n")
    assert run_pipeline(config, [str(tmp_path / "k.cfl")], out, progress=False, resume=True) == 0
    with h5py.File(out / "reconstructions" / "k.h5") as f:
        assert f["reconstruction"].shape[0] == 2


@pytest.mark.parametrize("name, wanted, words", [
    ("ksp.h5", "bart", "is 'bart', but ksp.h5 is no BART array"),
    ("ksp.cfl", "fastmri", "is 'fastmri', but this is a BART array"),
])
def test_an_explicit_format_a_bart_suffix_contradicts_names_load_format(tmp_path, name, wanted,
                                                                       words):
    from mrirecon.pipeline.stream import detect_format

    with pytest.raises(DataFormatError, match=r"load\.format: " + words + ".*auto"):
        detect_format(tmp_path / name, wanted)


def test_hostile_headers_are_refused_before_any_read(tmp_path):
    """Dimensions whose product overflows int64 (numpy's product wraps to a small or negative
    size), a header of megabytes, a FIFO in place of the header."""
    import os

    write_cfl(tmp_path / "x", _noise((4, 3)))
    (tmp_path / "x.hdr").write_text("# Dimensions\n" + "65536 " * 5 + "\n")  # 2**80 elements
    with pytest.raises(DataFormatError, match=r"x\.cfl: data: 96 bytes.* need "
                       f"{2 ** 80 * 8} .*truncated"):
        read_cfl(tmp_path / "x")
    (tmp_path / "x.hdr").write_text("# Dimensions\n4 3\n" + "#" * (1 << 17))
    with pytest.raises(DataFormatError, match=r"x\.hdr: file: over 65536 bytes"):
        read_cfl(tmp_path / "x")
    (tmp_path / "x.hdr").unlink()
    os.mkfifo(tmp_path / "x.hdr")
    with pytest.raises(DataFormatError, match=r"x\.hdr: file: not a regular file"):
        read_cfl(tmp_path / "x")


def test_an_explicit_format_an_hdf5_layout_contradicts_names_load_format(tmp_path):
    """load.format=ismrmrd on a fastMRI file failed as "dataset: group missing (found
    ['ismrmrd_header', 'kspace', ...])", fastmri on a LoDoPaB file as "kspace: dataset missing":
    a good file called broken. A layout that cannot be told is left to the reader."""
    from mrirecon.pipeline.stream import detect_format

    fastmri, ct, odd = tmp_path / "k.h5", tmp_path / "c.hdf5", tmp_path / "odd.h5"
    for path, key in ((fastmri, "kspace"), (ct, "data"), (odd, "something")):
        with h5py.File(path, "w") as f:
            f[key] = np.zeros((1, 4, 4), np.complex64 if key == "kspace" else np.float32)
    for path, wanted, holds in ((fastmri, "ismrmrd", "fastmri"), (fastmri, "ct_hdf5", "fastmri"),
                                (ct, "fastmri", "ct_hdf5")):
        with pytest.raises(DataFormatError, match=rf"{path.name}: load\.format: is '{wanted}', "
                                                  rf"but {path.name} holds {holds} data; "
                                                  r"load\.format: auto"):
            detect_format(path, wanted)
    assert detect_format(fastmri, "fastmri") == "fastmri"
    assert detect_format(ct, "ct_hdf5") == "ct_hdf5"
    assert detect_format(odd, "fastmri") == "fastmri"  # the reader names what it lacks
