"""A volume's evaluation and export after the slice loop: CT's HU conversion in chunks of
float64 (``ct_hu.to_hu``), bit for bit the whole-volume conversion, and the estimate with
which ``stream._check_volume_memory`` refuses a volume (``stream.volume_memory_need``)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.io import lodopab
from mrirecon.pipeline import ct_hu, stream
from mrirecon.pipeline.stream import VolumeRun

ATTENUATION_TO_HU = lodopab.attenuation_to_hu  # unspied


def ct_run(shape=(5, 40, 36), preview: bool = True) -> VolumeRun:
    g = torch.Generator().manual_seed(4)
    mu = torch.rand(shape, generator=g) * 0.05
    ref = torch.rand(shape, generator=g) * 0.05
    view = torch.rand(shape, generator=g) * 0.05 if preview else None
    return VolumeRun(shape[0], {"fbp": mu}, {"fbp": 0.0}, reference=ref, preview=view)


def whole_volume_hu(mu: torch.Tensor, units: dict) -> torch.Tensor:
    """The conversion as it was: one float64 copy of the volume."""
    return torch.from_numpy(np.asarray(ATTENUATION_TO_HU(mu.double().numpy(), **units))).float()


@pytest.mark.parametrize("units", [{}, {"mu_water": 0.0193, "mu_air": 0.00002}])
def test_hu_volumes_convert_a_chunk_at_a_time_to_the_same_bits(units, monkeypatch):
    run = ct_run()
    slice_voxels = 40 * 36
    monkeypatch.setattr(ct_hu, "HU_CHUNK_VOXELS", 2 * slice_voxels + 7)  # 2 slices a chunk
    sizes = []
    real = lodopab.attenuation_to_hu

    def spy(mu, **kw):
        sizes.append(np.asarray(mu).size)
        return real(mu, **kw)

    monkeypatch.setattr(lodopab, "attenuation_to_hu", spy)
    hu, eval_ref, eval_pred, display_ref, preview = ct_hu.hu_volumes(
        run, {"hu_units": units}, "fbp")
    for got, mu in ((hu, run.outputs["fbp"]), (display_ref, run.reference),
                    (preview, run.preview)):
        assert got.dtype == torch.float32 and got.shape == mu.shape
        assert torch.equal(got, whole_volume_hu(mu, units))
    assert max(sizes) == 2 * slice_voxels and len(sizes) == 3 * 3  # 5 slices in 3 chunks, 3 volumes
    assert torch.equal(eval_pred, run.outputs["fbp"] / lodopab.MU_MAX_PER_MM)
    assert torch.equal(eval_ref, run.reference / lodopab.MU_MAX_PER_MM)
    assert ct_hu.hu_volumes(ct_run(preview=False), {"hu_units": units}, "fbp")[4] is None


def test_hu_volumes_make_no_whole_volume_float64_temporaries(monkeypatch):
    """64 x 128 x 128 (4 MiB float32) in chunks of 4 slices: numpy's float64 temporaries of the
    conversion stay within a few chunks (:data:`ct_hu.HU_CHUNK_VOXELS`), where they were
    2-3 float64 volumes each for the output, the reference and the preview."""
    monkeypatch.setattr(ct_hu, "HU_CHUNK_VOXELS", 4 * 128 * 128)
    run = ct_run((64, 128, 128))
    volume = 64 * 128 * 128 * 8  # bytes of one float64 copy
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        ct_hu.hu_volumes(run, {"hu_units": {}}, "fbp")
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    chunk = min(volume, ct_hu.HU_CHUNK_VOXELS * 8)
    assert peak <= 3 * chunk < volume, f"{peak / 2**20:.1f} MiB"


def test_the_volume_estimate_counts_the_scale_check_images_without_previews():
    out, ref = torch.zeros(32, 24), torch.zeros(32, 24)
    per_image = 32 * 24 * 4
    with_previews = stream.volume_memory_need(10, [out, ref, torch.zeros(32, 24)], True)
    assert with_previews == stream.VOLUME_MEMORY_FACTOR * 10 * 3 * per_image
    # png off: no previews, but the MRI output-scale check keeps a zero-filled image a slice
    assert stream.volume_memory_need(10, [out, ref], False) == with_previews
    assert stream.volume_memory_need(10, [out, ref], True) == 2 / 3 * with_previews


class _Source:
    """A volume of ``n`` 32 x 32 slices whose source holds ``held`` bytes of input (``None``: no
    ``held_bytes`` member, as most sources); records the slices read."""

    def __init__(self, n: int, held: int | None) -> None:
        self.n, self.reads = n, []
        if held is not None:
            self.held_bytes = lambda: held

    def __len__(self) -> int:
        return self.n

    def read(self, i: int) -> torch.Tensor:
        self.reads.append(i)
        return torch.zeros(32, 32)

    def close(self) -> None:
        pass


class _Identity(stream.Modality):
    def __init__(self, source: _Source) -> None:
        self.source = source

    def load(self, path):
        return self.source

    def undersample(self, s):
        return s

    def reconstruct(self, s, method):
        return s

    def postprocess(self, s):
        return s


def test_input_a_source_holds_whole_is_counted_and_refused_before_slice_1(monkeypatch):
    """Half the memory holds the 4 slices' outputs (6x their bytes) but not them and an input
    of twice that held whole (a 3-D slab or non-Cartesian ISMRMRD file read whole): refused
    after slice 0, before slice 1 is read, naming the held input; a streamed source (0 bytes
    held) and one without ``held_bytes`` run every slice. Was: the held input not counted."""
    from mrirecon.io import errors
    from mrirecon.pipeline.schema import ReconstructConfig

    n = 4
    outputs = stream.volume_memory_need(n, [torch.zeros(32, 32)], True)
    assert outputs == stream.VOLUME_MEMORY_FACTOR * n * 32 * 32 * 4
    monkeypatch.setattr(errors, "memory_bytes", lambda: int(4 * outputs))  # half: 2x outputs
    method = [stream.Method("identity", ReconstructConfig())]
    whole = _Source(n, held=int(2 * outputs))
    with pytest.raises(ValueError, match=r"outputs would hold .* GiB .* with the .* GiB of input "
                                         r"the reader holds whole"):
        stream.stream_volume(_Identity(whole), Path("slab.h5"), method, progress=False)
    assert whole.reads == [0]
    for held in (0, None):
        streamed = _Source(n, held)
        run = stream.stream_volume(_Identity(streamed), Path("x.h5"), method, progress=False)
        assert streamed.reads == list(range(n)) and run.outputs["identity"].shape == (n, 32, 32)


def test_the_mri_source_reports_the_kspace_it_holds_whole(tmp_path):
    """``_MRISource.held_bytes``: a non-Cartesian ISMRMRD file (streamed) holds the trajectory
    and weights every slice shares, not its samples; a 2-D Cartesian one (streamed) and a
    fastMRI file nothing. Was: the non-Cartesian samples too (read whole)."""
    from mrirecon.io import read_ismrmrd
    from mrirecon.pipeline.stages_mri import _MRISource
    from tests.helpers import fastmri_to_ismrmrd, radial_ismrmrd, simulated_volume

    radial, k, traj = radial_ismrmrd(tmp_path / "radial.h5")
    vol = read_ismrmrd(radial)
    expect = vol.trajectory.nbytes + vol.density.nbytes
    assert expect < k.numel() * 8
    assert _MRISource(radial, "ismrmrd").held_bytes() == expect
    fastmri = simulated_volume(tmp_path, coils=4, slices=3, size=(32, 24))
    fastmri_to_ismrmrd(fastmri, tmp_path / "cart.h5")
    assert _MRISource(tmp_path / "cart.h5", "ismrmrd").held_bytes() == 0
    assert _MRISource(fastmri, "fastmri").held_bytes() == 0


def _tiled(src, dst, n: int) -> None:
    """The LoDoPaB pair of ``src`` tiled to ``n`` samples in ``dst``."""
    import h5py

    dst.mkdir()
    for kind in ("observation", "ground_truth"):
        with h5py.File(src / f"{kind}_test_000.hdf5", "r") as f, \
                h5py.File(dst / f"{kind}_test_000.hdf5", "w") as g:
            for key in f:
                d = f[key]
                g.create_dataset(key, data=np.concatenate([d[()]] * (n // d.shape[0])))
            for key, value in f.attrs.items():
                g.attrs[key] = value


@pytest.mark.slow
def test_a_ct_volumes_peak_grows_per_slice_within_the_volume_estimate(tmp_path, monkeypatch):
    """``ct_fbp`` with every export (HDF5, NIfTI, DICOM, PNG) at 8 and 32 slices of 256 x 256:
    the peak RSS grows per slice by less than the guard's estimate for a slice
    (:func:`stream.volume_memory_need`: output, reference and preview). It grew 16-21 MiB a
    512 x 512 slice (5.3-7x the three images) while the guard assumed 4x."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from tests.helpers import fresh_python

    simulate_ct_dataset(tmp_path / "src", geometry="parallel", views=180, size=256, seed=1,
                        samples=2, part="test", sources="phantom")
    # a fixed mmap threshold: glibc's dynamic one let the heap's high-water mark wander, 2.9-4.5
    # MiB a slice over runs of the same code; with it, 2.0 every run (what the arrays hold)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    peaks = {}
    for n in (8, 32):
        _tiled(tmp_path / "src", tmp_path / f"v{n}", n)
        code = (
            "import torch\ntorch.set_num_threads(1)\nfrom pathlib import Path\n"
            "from mrirecon.pipeline.definitions import load_pipeline\n"
            "from mrirecon.pipeline.runner import run_pipeline\n"
            "cfg, _ = load_pipeline('ct_fbp', [])\n"
            f"code = run_pipeline(cfg, [Path({str(tmp_path / f'v{n}' / 'observation_test_000.hdf5')!r})], "
            f"Path({str(tmp_path / f'out{n}')!r}), progress=False)\n"
            "assert code == 0, code\n"
            "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
        peaks[n] = int(fresh_python(code, timeout=600).splitlines()[-1]) * 1024
    per_slice = (peaks[32] - peaks[8]) / 24
    image = torch.zeros(256, 256)
    estimate = stream.volume_memory_need(1, [image, image, image], True)
    assert per_slice < estimate, (f"{per_slice / 2**20:.2f} MiB a slice, estimated "
                                  f"{estimate / 2**20:.2f} MiB")
    print(f"peak growth {per_slice / 2**20:.2f} MiB a slice, estimate {estimate / 2**20:.2f} MiB")
