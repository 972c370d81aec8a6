"""SliceDataset: indexing, subsets, filters, DataLoader workers, fastMRI parity."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fastmri.data import SliceDataset as FMSliceDataset
from torch.utils.data import DataLoader

from mrirecon.data import Header, SliceBatch, SliceDataset, SliceSample, collate_samples
from mrirecon.io.fastmri import write_fastmri

H, W, COILS = 16, 12, 2
SLICES = (3, 2, 4)
ACQ = ("CORPD_FBK", "CORPDFS_FBK", "CORPD_FBK")


def header(acquisition):
    return Header(encoded_matrix=(H, W, 1), recon_matrix=(8, 8, 1), padding_left=1,
                  padding_right=11, acquisition=acquisition)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    volumes = {}
    for v, (n, acq) in enumerate(zip(SLICES, ACQ)):
        shape = (n, COILS, H, W)
        ks = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
        ref = np.abs(rng.normal(size=(n, 8, 8))).astype(np.float32)
        write_fastmri(tmp_path / f"file{v}.h5", ks, header(acq), reference=ref)
        volumes[f"file{v}.h5"] = (ks, ref)
    return tmp_path, volumes


def test_samples_match_files_and_reference_dataset(folder):
    root, volumes = folder
    ds = SliceDataset(root)
    assert len(ds) == sum(SLICES) == len(FMSliceDataset(root=root, challenge="multicoil"))
    theirs = FMSliceDataset(root=root, challenge="multicoil")
    for i in range(len(ds)):
        s = ds[i]
        assert isinstance(s, SliceSample)
        ks, ref = volumes[s.file_name]
        assert torch.equal(s.kspace, torch.from_numpy(ks[s.slice_index]))
        assert torch.equal(s.reference, torch.from_numpy(ref[s.slice_index]))
        assert torch.equal(s.mask, (torch.arange(W) >= 1) & (torch.arange(W) < 11))
        kspace, _, target, _, fname, slice_num = theirs[i]  # same (file, slice) order
        assert (fname, slice_num) == (s.file_name, s.slice_index)
        np.testing.assert_array_equal(kspace, s.kspace.numpy())
    ds.close()


def test_subsets_and_filters(folder):
    root, _ = folder
    (root / "notes.txt").write_text("not a volume")  # ignored: pattern is *.h5
    full = SliceDataset(root)
    half = SliceDataset(root, sample_rate=0.5, seed=3)
    assert len(half) == round(sum(SLICES) * 0.5)
    assert set(half.samples) <= set(full.samples)
    assert SliceDataset(root, sample_rate=0.5, seed=3).samples == half.samples
    assert SliceDataset(root, sample_rate=0.5, seed=4).samples != half.samples or len(half) == 0
    vols = SliceDataset(root, volume_sample_rate=0.34, seed=1)
    assert len(vols.volumes) == 1 and len(vols) == vols.volumes[0].num_slices
    fs = SliceDataset(root, volume_filter=lambda info: info.header.acquisition == "CORPD_FBK")
    assert [v.path.name for v in fs.volumes] == ["file0.h5", "file2.h5"]
    assert len(fs) == SLICES[0] + SLICES[2]
    listed = SliceDataset([root / "file1.h5", root / "file0.h5"])
    assert [v.path.name for v in listed.volumes] == ["file1.h5", "file0.h5"]
    with pytest.raises(ValueError, match="not both"):
        SliceDataset(root, sample_rate=0.5, volume_sample_rate=0.5)
    with pytest.raises(FileNotFoundError):
        SliceDataset(root / "missing")


def _with_pid(sample):
    return {"kspace": sample.kspace, "file": sample.file_name, "slice": sample.slice_index,
            "pid": os.getpid()}


def test_dataloader_two_workers_after_parent_opened_files(folder):
    root, volumes = folder
    ds = SliceDataset(root, transform=_with_pid, max_open_files=2)
    parent = ds[0]  # the parent now holds an open handle that forked workers inherit
    assert parent["pid"] == os.getpid()
    loader = DataLoader(ds, batch_size=None, num_workers=2, shuffle=False)
    seen, pids = [], set()
    for item in loader:
        ks, _ = volumes[item["file"]]
        assert torch.equal(item["kspace"], torch.from_numpy(ks[item["slice"]]))
        seen.append((item["file"], item["slice"]))
        pids.add(item["pid"])
    assert len(seen) == len(set(seen)) == sum(SLICES)
    assert len(pids) == 2 and os.getpid() not in pids
    assert torch.equal(ds[len(ds) - 1]["kspace"], torch.from_numpy(volumes["file2.h5"][0][-1]))
    ds.close()


def test_collate_samples_batches(folder):
    root, volumes = folder
    loader = DataLoader(SliceDataset(root), batch_size=3, collate_fn=collate_samples)
    batch = next(iter(loader))
    assert isinstance(batch, SliceBatch)
    assert batch.kspace.shape == (3, COILS, H, W) and batch.mask.shape == (3, W)
    assert batch.reference.shape == (3, 8, 8) and batch.file_names == ["file0.h5"] * 3
    assert torch.equal(batch.kspace[2], torch.from_numpy(volumes["file0.h5"][0][2]))


def test_importing_data_does_not_import_h5py():
    code = "import sys, mrirecon.data; assert 'h5py' not in sys.modules, 'h5py imported'"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_a_seeded_subset_keeps_file_and_slice_order(seed):
    """Fails if dataset.py:198 the subset no longer sorted: ``SliceDataset``'s kept slices
    (and the CT set's images) stay in file order, which ``max_slices`` ("the first ones, in file
    order") and the per-volume validation grouping rely on; the subset is the seeded draw."""
    import numpy as np

    from mrirecon.data.dataset import subsample_indices

    a = subsample_indices(40, 0.5, np.random.default_rng(seed), "sample_rate")
    b = subsample_indices(40, 0.5, np.random.default_rng(seed), "sample_rate")
    assert len(a) == 20 and len(set(a.tolist())) == 20 and np.array_equal(a, b)
    assert np.all(np.diff(a) > 0), a


def test_a_file_replaced_or_deleted_after_the_build_is_refused_with_any_worker_count(folder):
    """Replaced (atomic rename), a file was read from the cached handle with no workers (the old
    data, silently) and anew in workers (data the build never checked); deleted, the first kept
    training and the second stopped: batches followed the worker count."""
    root, volumes = folder
    ds = SliceDataset(root)
    first = ds[0]  # file0.h5: its handle is now cached in this process
    ks, ref = volumes["file1.h5"]
    write_fastmri(root / "swap.h5", ks, header(ACQ[1]), reference=ref)
    os.replace(root / "swap.h5", root / "file0.h5")
    with pytest.raises(ValueError, match=r"file0\.h5: the file changed after the dataset was built"):
        ds[0]
    loader = DataLoader(ds, batch_size=None, num_workers=2, shuffle=False)
    with pytest.raises(ValueError, match=r"file0\.h5: the file changed after the dataset"):
        list(loader)
    (root / "file2.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"file2\.h5: no such file \(deleted or moved"):
        ds[len(ds) - 1]
    assert first.kspace.shape[0] == COILS


def test_macos_appledouble_files_beside_the_data_are_not_inputs(folder, caplog):
    """A folder copied by macOS to a FAT / exFAT / network drive holds ``._file0.h5`` (the
    AppleDouble resource fork, magic 00 05 16 07) beside ``file0.h5``: it matched ``*.h5`` and
    failed the run ("not a readable HDF5 file") or stopped a training. Left out, with a log line;
    a file named ``._x.h5`` without the magic stays an input."""
    import logging

    from mrirecon.data.dataset import list_data_files

    root, volumes = folder
    (root / "._file0.h5").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(60))
    with caplog.at_level(logging.INFO, logger="mrirecon.data"):
        files = list_data_files(root)
    assert [f.name for f in files] == sorted(volumes)
    assert any("AppleDouble" in r.getMessage() and "._file0.h5" in r.getMessage()
               for r in caplog.records)
    assert len(SliceDataset(root)) == sum(SLICES)
    (root / "._other.h5").write_bytes(b"\x89HDF\r\n\x1a\n")  # not AppleDouble: an input
    assert "._other.h5" in [f.name for f in list_data_files(root)]
