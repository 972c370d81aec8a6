"""HDF5 inputs whose data lie outside the file (an external link, a virtual dataset mapping other
files, external raw storage). h5py follows them without a word: a 1-KiB ``kspace`` link read
another file with exit 0 (PSNR -0.001 dB where the file's own data score 40 dB), raw storage read
``/etc/passwd`` as k-space, a FIFO as raw storage hung the run, and ``--resume`` trusted a checksum
that covered only the link. Every reader opening through ``io.errors.open_hdf5`` refuses them,
naming the dataset; soft links inside the file stay readable."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from mrirecon.io import DataFormatError
from mrirecon.io.fastmri import FastMRIFile


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path_factory.mktemp("src"), volumes=1, slices=1, coils=2,
                                   size=(32, 32), seed=0, resolution=2)
    return Path(path)


def _copy_without(src: Path, dst: Path, name: str) -> h5py.File:
    f = h5py.File(dst, "w")
    with h5py.File(src, "r") as s:
        for key in s:
            if key != name:
                s.copy(key, f)
        f.attrs.update(dict(s.attrs))
    return f


def _outside(src: Path, folder: Path) -> Path:
    out = folder / "elsewhere.h5"
    with h5py.File(src, "r") as s, h5py.File(out, "w") as o:
        o["kspace"] = s["kspace"][()][:, ::-1] * 3  # other data
    return out


@pytest.mark.parametrize("kind, words", [
    ("external_link", "is an external link to .*elsewhere.h5:/kspace"),
    ("virtual", "is a virtual dataset mapping .*elsewhere.h5"),
    ("raw_storage", "keeps its bytes in external raw storage"),
])
def test_kspace_kept_outside_the_file_is_refused_naming_it(source, tmp_path, kind, words):
    other = _outside(source, tmp_path)
    path = tmp_path / "x.h5"
    with h5py.File(source, "r") as s:
        kspace = s["kspace"][()]
    f = _copy_without(source, path, "kspace")
    if kind == "external_link":
        f["kspace"] = h5py.ExternalLink(str(other), "/kspace")
    elif kind == "virtual":
        layout = h5py.VirtualLayout(shape=kspace.shape, dtype=kspace.dtype)
        layout[:] = h5py.VirtualSource(str(other), "kspace", shape=kspace.shape)
        f.create_virtual_dataset("kspace", layout)
    else:
        raw = tmp_path / "raw.bin"
        raw.write_bytes(kspace.astype(np.complex64).tobytes())
        f.create_dataset("kspace", shape=kspace.shape, dtype=np.complex64,
                         external=[(str(raw), 0, h5py.h5f.UNLIMITED)])
    f.close()
    with pytest.raises(DataFormatError, match=rf"x.h5: kspace: {words}: its data lie outside"):
        with FastMRIFile(path) as fm:
            fm.read_slice(0)


def test_a_soft_link_inside_the_file_is_read(source, tmp_path):
    path = tmp_path / "soft.h5"
    f = _copy_without(source, path, "")
    f["kspace_alias"] = h5py.SoftLink("/kspace")
    f.close()
    with FastMRIFile(path) as fm, h5py.File(source, "r") as s:
        np.testing.assert_array_equal(fm.read_slice(0).data.numpy()[0], s["kspace"][0])


def test_the_pipeline_fails_the_input_and_writes_nothing(source, tmp_path):
    from tests.robustness.test_hostile_inputs import mri_config, run_one

    other = _outside(source, tmp_path)
    path = tmp_path / "in" / "x.h5"
    path.parent.mkdir()
    f = _copy_without(source, path, "reconstruction_rss")
    f["reconstruction_rss"] = h5py.ExternalLink(str(other), "/kspace")
    f.close()
    entry = run_one(mri_config(), path, tmp_path / "out")
    assert entry["status"] == "failed"
    assert "reconstruction_rss: is an external link" in entry["error"]
