"""k-space that looks valid but cannot be what the pipeline assumes (a spike, DC at the corner,
a mask that disagrees with the data, duplicated or dead coils): refused or reported by name,
measured on simulated fastMRI files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.pipeline.checks_mri import (DUPLICATE_CORRELATION, SPIKE_RATIO, check_kspace,
                                          coil_warnings, reconcile_mask)
from tests.helpers import clone_h5, read_kspace, simulated_volume

FAST = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
        "export.formats=[hdf5]", "report.enabled=false"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return simulated_volume(tmp_path_factory.mktemp("mri"), coils=4)


def _run(path: Path, tmp_path: Path, *extra: str) -> dict:
    config = load_pipeline("mri_cs", FAST + list(extra))[0]
    out = tmp_path / (path.stem + "_out")
    run_pipeline(config, [str(path)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return entry


def test_clean_data_pass_every_check(clean, tmp_path):
    k = torch.from_numpy(read_kspace(clean)[0])
    check_kspace(k, "x")
    mask, notes = reconcile_mask(k, torch.ones(k.shape[-1], dtype=torch.bool), "x")
    assert bool(mask.all()) and notes == {} and coil_warnings(k) == {}
    entry = _run(clean, tmp_path, "undersample.enabled=true")
    assert entry["status"] == "ok" and entry["warnings"] == []


def test_a_noise_only_slice_is_neither_a_spike_nor_off_centre(clean, tmp_path):
    # edge slices of real volumes hold noise only: no peak to place, isolated noise samples are
    # no spikes (was refused as "DC far from the centre" / "a spike")
    noise = torch.randn(8, 640, 368, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    check_kspace(noise, "noise")
    k = read_kspace(clean)
    rng = np.random.default_rng(0)
    k[1] = (rng.normal(size=k[1].shape) + 1j * rng.normal(size=k[1].shape)) * np.abs(k[1]).mean()
    entry = _run(clone_h5(clean, tmp_path / "edge.h5", kspace=k), tmp_path, "undersample.enabled=true")
    assert entry["status"] == "ok", entry["error"]


def test_a_kspace_spike_is_refused_naming_coil_row_and_column(clean, tmp_path):
    k = read_kspace(clean)
    k[1, 2, 10, 7] = 1e9  # slice 1, coil 2, row 10, column 7 (was: an image 1e10x too bright)
    entry = _run(clone_h5(clean, tmp_path / "spike.h5", kspace=k), tmp_path)
    assert entry["status"] == "failed"
    assert "spike.h5: slice 1: k-space sample (coil 2, row 10, column 7) is 1e+09" in entry["error"]
    # the centre has a higher bar: a flat object filling the field of view has a DC far above
    # its readout neighbours (here 10x), which is no spike
    flat = torch.full((1, 32, 32), 1e-3, dtype=torch.complex64)
    flat[0, 15:18, 16] = torch.tensor([100.0, 1000.0, 100.0])
    check_kspace(flat, "flat")
    assert SPIKE_RATIO >= 10


def test_a_spike_replacing_dc_is_refused(clean, tmp_path):
    k = read_kspace(clean)
    k[:, :, 32, 24] = 1e9  # every coil's DC (was exit 0 and an image 1e10x too bright)
    entry = _run(clone_h5(clean, tmp_path / "dc.h5", kspace=k), tmp_path)
    assert entry["status"] == "failed" and "(coil 0, row 32, column 24) is 1e+09" in entry["error"]


def test_kspace_with_dc_off_centre_is_refused(clean, tmp_path):
    k = np.roll(read_kspace(clean), 8, axis=-1)  # DC 8 of 48 columns off (a wrong centring shift)
    entry = _run(clone_h5(clean, tmp_path / "rolled.h5", kspace=k), tmp_path)
    assert entry["status"] == "failed" and "column 32, far from the centre (32, 24)" in entry["error"]


def test_kspace_with_dc_at_the_corner_is_refused(clean, tmp_path):
    k = np.fft.ifftshift(read_kspace(clean), axes=(-2, -1))  # stored without the centring shift
    entry = _run(clone_h5(clean, tmp_path / "corner.h5", kspace=k), tmp_path)
    assert entry["status"] == "failed" and "corner.h5: slice 0: the k-space energy peaks at row " \
        in entry["error"] and "fftshift" in entry["error"]


def test_undersampled_data_without_a_mask_are_not_called_fully_sampled(clean, tmp_path):
    k = read_kspace(clean)
    keep = np.zeros(k.shape[-1], bool)
    keep[::4] = True
    keep[20:28] = True
    k[..., ~keep] = 0  # no `mask` dataset: the reader's mask is every acquired column
    entry = _run(clone_h5(clean, tmp_path / "nomask.h5", kspace=k), tmp_path)
    assert entry["status"] == "ok"
    (note,) = entry["warnings"]
    n_empty = int((~keep).sum())
    assert note.startswith("nomask.h5: all 2 slices: ") and \
        f"{n_empty} of 48 column(s) the mask marks sampled hold no data" in note
    mask, _ = reconcile_mask(torch.from_numpy(k[0]), torch.ones(48, dtype=torch.bool), "x")
    assert torch.equal(mask, torch.from_numpy(keep))
    # zero padding outside the header's acquirable columns is not "empty": no note, mask kept
    padded = torch.from_numpy(read_kspace(clean)[0])
    padded[..., :4] = 0
    padded[..., 44:] = 0
    acquired = torch.zeros(48, dtype=torch.bool)
    acquired[4:44] = True
    ones = torch.ones(48, dtype=torch.bool)
    assert reconcile_mask(padded, ones, "x", acquired) == (ones, {})


def test_a_mask_that_does_not_describe_the_kspace_is_refused(clean, tmp_path):
    k = read_kspace(clean)
    mask = np.zeros(k.shape[-1], bool)
    mask[::3] = True
    mask[21:27] = True
    k[..., ~mask] = 0
    reversed_ = clone_h5(clean, tmp_path / "reversed.h5", kspace=k, mask=mask[::-1].copy())
    entry = _run(reversed_, tmp_path)
    assert entry["status"] == "failed" and "mask: " in entry["error"] and \
        "does not describe this k-space" in entry["error"]
    transposed = np.zeros_like(k)  # undersampled along the readout instead: refused
    transposed[..., ::4, :] = read_kspace(clean)[..., ::4, :]
    entry = _run(clone_h5(clean, tmp_path / "rows.h5", kspace=transposed), tmp_path)
    assert entry["status"] == "failed" and "48 of 64 k-space rows (readout positions) are zero" \
        in entry["error"] and "transposed" in entry["error"]
    fewer = mask.copy()
    fewer[::6] = False  # drops acquired columns: their data are discarded, and said so
    entry = _run(clone_h5(clean, tmp_path / "fewer.h5", kspace=k, mask=fewer), tmp_path)
    assert entry["status"] == "ok" and any("hold data the mask marks unsampled: discarded" in w
                                           for w in entry["warnings"])


def test_duplicated_and_dead_coils_are_reported(clean, tmp_path):
    k = read_kspace(clean)
    dup = np.concatenate([k[:, :2], k[:, :2] * (0.5 + 0.5j)], 1)  # coils 2, 3 repeat 0, 1
    entry = _run(clone_h5(clean, tmp_path / "dup.h5", kspace=dup), tmp_path, "undersample.enabled=true")
    (msg,) = entry["warnings"]
    assert "2 of 4 coils repeat another coil's k-space" in msg and "2 = 0, 3 = 1" in msg
    assert "the data hold 2 distinct coils" in msg
    dead = k.copy()
    dead[:, 3] = 0
    entry = _run(clone_h5(clean, tmp_path / "dead.h5", kspace=dead), tmp_path,
                 "undersample.enabled=true")
    assert entry["status"] == "ok" and any("coil 3 of 4 hold no signal" in w for w in entry["warnings"])
    loud = k.copy()
    loud[:, 1] *= 100  # 1e4x the power
    (msg,) = coil_warnings(torch.from_numpy(loud[0])).values()
    assert msg.startswith("coil 1's power is") and "x the median coil's" in msg
    # distinct coils of the simulation stay far from the threshold
    flat = torch.from_numpy(k[0]).reshape(4, -1).to(torch.complex128)
    norm = flat.abs().square().sum(1).sqrt()
    corr = (flat @ flat.conj().T).abs() / (norm[:, None] * norm[None, :])
    assert float(torch.triu(corr, 1).max()) < 1 - 100 * (1 - DUPLICATE_CORRELATION)


def test_a_fractional_mask_value_is_named(clean, tmp_path):
    mask = np.ones(48, np.float32)
    mask[5] = 0.5
    entry = _run(clone_h5(clean, tmp_path / "half.h5", mask=mask), tmp_path)
    assert entry["status"] == "failed"
    assert "half.h5: mask: expected 0/1 values, got 1 other value(s), e.g. 0.5" in entry["error"]


def test_an_acceleration_that_keeps_no_column_names_the_options(clean, tmp_path):
    # was: "the sampling mask selects no k-space column … nothing was acquired" (blamed the data)
    entry = _run(clean, tmp_path, "undersample.enabled=true", "undersample.accelerations=[200]",
                 "undersample.center_fractions=[0.001]")
    assert entry["status"] == "failed"
    # the mask function refuses an acceleration above the column count before drawing (with a
    # centre fraction of 0.04 it drew the 2-column centre band alone, 24x labelled 200x)
    assert ": slice 0: undersample (mask equispaced_fraction, accelerations [200], " \
           "center_fractions [0.001]): EquispacedFractionMask: acceleration " \
           "200 is above the number of k-space columns, 48: a mask keeps about num_cols / " \
           "acceleration of them, so the acceleration must be at most 48" in entry["error"]


def test_partial_fourier_headers_are_reported():
    """Asymmetric encoding limits (partial Fourier 6/8) were reconstructed as plain undersampling
    without a word; symmetric ones (fastMRI's, one line apart) raise nothing."""
    from mrirecon.containers import Header
    from mrirecon.pipeline.sampling_mri import partial_fourier_note

    base = Header(encoded_matrix=(256, 256, 1), recon_matrix=(128, 128, 1),
                  encoded_fov_mm=(200.0, 200.0, 3.0), recon_fov_mm=(100.0, 100.0, 3.0))
    assert partial_fourier_note(base) is None  # no limits in the header
    assert partial_fourier_note(base.with_(extra={"encoding_limits_step_1": (0, 319, 160)})) is None
    note = partial_fourier_note(base.with_(extra={"encoding_limits_step_1": (0, 191, 128)}))
    assert note is not None and "128 before, 63 after; 75% of a symmetric acquisition" in note


def test_a_narrow_calibration_band_does_not_blank_the_image(tmp_path):
    """96 x 80 at 4x keeps a 7-column centre band; ESPIRiT's eigenvalues then stay below the
    0.95 crop inside the brain and CG-SENSE scored 5.9 dB (zero-filled RSS 16 dB), no warning.
    The crop is lowered for such slices and the run says so; the crop kept, the run warns of
    the energy its image puts into the unmeasured columns."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=1, coils=8, size=(96, 80), seed=0)
    path = Path(path)

    def run(*extra):
        config = load_pipeline("mri_retrospective", ["export.formats=[hdf5]", "report.enabled=false",
                                                     *extra])[0]
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        run_pipeline(config, [str(path)], out, progress=False)
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        return entry

    rss = run("reconstruct.method=zero_filled_rss", "reconstruct.params={}")["metrics"]["psnr"]
    fixed = run("calibrate.max_cropped_energy=null")
    lowered = run()
    assert fixed["metrics"]["psnr"] < rss  # below the zero-filled image: said since 2026-12
    (energy,) = fixed["warnings"]  # (sampling_mri.unsupported_energy_warning)
    assert "unmeasured k-space columns" in energy
    assert lowered["metrics"]["psnr"] > rss + 1
    (msg,) = lowered["warnings"]
    # the band ESPIRiT calibrates on: 6 of the 7 acquired columns, the odd band lying one column
    # off its centred placement (BART's ecalib takes the same); the note had said 7
    assert "crop was lowered" in msg and "6-column" in msg


def test_thin_non_cartesian_trajectories_are_reported():
    """One or two spokes, or every readout copied from the first, were reconstructed (TV:
    9.2-9.6 dB) without a word; a single spiral interleave covers k-space and is no case."""
    from mrirecon.data.simulate_noncartesian import make_trajectory
    from mrirecon.pipeline.checks_mri import trajectory_warnings

    shape = (64, 64)
    radial, _ = make_trajectory("radial", shape, 40)
    for kind, readouts in (("radial", 8), ("radial", 40), ("spiral", 1), ("spiral", 8)):
        traj, _ = make_trajectory(kind, shape, readouts)
        assert trajectory_warnings(traj, shape) == {}, (kind, readouts)
    for thin, text in ((radial[:1], "1 readout in 1 distinct direction"),
                       (radial[:2], "2 readouts in 2 distinct directions"),
                       (radial[:1].expand(64, -1, -1), "64 readouts in 1 distinct direction")):
        (msg,) = trajectory_warnings(thin, shape).values()
        assert msg.startswith(text)


def test_partial_fourier_is_filled_by_phase_constrained_cg_sense(tmp_path):
    """A 6/8 partial Fourier file through cg_sense: the missing quarter of the lines was
    reconstructed as unsampled k-space; the phase constraint (a real image times the phase of
    the symmetric centre) recovers most of what the full acquisition gives."""
    from tests.helpers import partial_fourier_file

    path = partial_fourier_file(tmp_path)  # lines 0..23 never acquired: 72 of 96 (75 %)

    def run(mode):
        config = load_pipeline("mri_cs", ["reconstruct.method=cg_sense", "export.formats=[hdf5]",
                                          "reconstruct.params={lam: 0.0, iterations: 30}",
                                          "report.enabled=false", "evaluate.enabled=true",
                                          f"preprocess.partial_fourier={mode}"])[0]
        out = tmp_path / mode
        run_pipeline(config, [str(path)], out, progress=False)
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        (note,) = [w for w in entry["warnings"] if "partial Fourier" in w]
        return entry["metrics"]["psnr"], note

    plain, note_plain = run("none")
    constrained, note = run("phase_constrained")
    assert "as unsampled k-space" in note_plain and "phase-constrained CG-SENSE" in note
    assert constrained > plain + 3  # measured +5 to +7 dB on 128 x 128 brains at 6/8


def test_partial_echo_support_and_masks():
    """The reader's readout range becomes the rows the operator samples: as recorded on the
    reader's readout, scaled and shrunk by READOUT_MARGIN on a cropped one (oversampling
    removed), refused when it leaves the echo's centre unsampled; the phase comes from the rows
    mirrored about the centre."""
    from mrirecon.containers import Header
    from mrirecon.pipeline.sampling_mri import (READOUT_MARGIN, readout_support, sampling_mask,
                                                symmetric_mask)
    from mrirecon.pipeline.slice_mri import MRISlice, operator

    base = Header(encoded_matrix=(64, 16, 1), recon_matrix=(32, 16, 1),
                  encoded_fov_mm=(200.0, 100.0, 3.0), recon_fov_mm=(100.0, 100.0, 3.0))
    assert readout_support(base, 64) is None
    header = base.with_(extra={"readout_range": [16, 64, 64]})
    rows = readout_support(header, 64)
    assert rows.tolist() == [False] * 16 + [True] * 48
    cropped = readout_support(header, 32)  # rows 8.. map to the first 8 never-sampled ones
    assert cropped.tolist() == [False] * (8 + READOUT_MARGIN) + [True] * (24 - READOUT_MARGIN)
    with pytest.raises(ValueError, match="echo's centre"):
        readout_support(base.with_(extra={"readout_range": [40, 64, 64]}), 64)
    mask = torch.zeros(16, dtype=torch.bool)
    mask[::2] = True
    s = MRISlice(torch.zeros(4, 64, 16, dtype=torch.complex64), mask, header, "pe.h5", 0)
    full = sampling_mask(s)
    assert full.shape == (64, 16) and torch.equal(full, rows[:, None] & mask[None, :])
    maps = torch.ones(4, 64, 16, dtype=torch.complex64) / 2
    assert torch.equal(operator(s, maps).mask.squeeze().bool(), full)
    assert operator(MRISlice(s.kspace, mask, base, "full.h5", 0), maps).mask.squeeze().shape == (16,)
    sym = symmetric_mask(s).any(-1)
    kept = sym.nonzero().flatten()
    assert torch.equal(sym.flip(0)[:-1], sym[1:])  # row 32 + k kept iff 32 - k kept
    assert kept.min() == 16 and kept.max() == 48 and bool(rows[kept].all())


def test_partial_echo_is_filled_by_phase_constrained_cg_sense(tmp_path):
    """An ISMRMRD partial echo (the first quarter of every readout never sampled) was taken as
    measured zeros by every method (CG-SENSE 7 dB below the full echo on a 160 x 160 brain
    with 2x readout oversampling). cg_sense now fills it with the phase of the symmetric part of
    the echo, and every operator leaves those samples unsampled; the run says which."""
    from mrirecon.metrics import psnr
    from tests.helpers import partial_echo_files

    pytest.importorskip("ismrmrd")
    partial_echo_files(tmp_path)  # full/scan.h5, pe/scan.h5: 32 of 128 readout samples missing

    def run(name, *extra):
        config = load_pipeline("mri_cs", ["export.formats=[hdf5]", "report.enabled=false", *extra])[0]
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        assert run_pipeline(config, [str(tmp_path / name / "scan.h5")], out, progress=False) == 0
        (entry,) = json.loads((out / "provenance.json").read_text())["files"]
        with h5py.File(out / "reconstructions" / "scan.h5") as f:
            return f["reconstruction"][()], [w for w in entry["warnings"] if "partial echo" in w]

    cg = ["reconstruct.method=cg_sense", "reconstruct.params={lam: 0.0, iterations: 30}"]
    full, none = run("full", *cg)
    plain, (note_plain,) = run("pe", *cg, "preprocess.partial_fourier=none")
    constrained, (note,) = run("pe", *cg)
    _, (note_l1,) = run("pe")
    assert none == [] and "96 never sampled" not in note  # counted on the reader's 128 samples
    assert "32 never sampled" in note and "phase-constrained CG-SENSE" in note
    assert "left unsampled in the operator's mask" in note_plain and note_l1 == note_plain
    gain = psnr(full[None], constrained[None]) - psnr(full[None], plain[None])
    assert gain > 3  # measured +5.7 dB here, +6.9 dB on a 160 x 160 brain through cg_sense


def test_grappa_says_what_its_kernel_cannot_reach(tmp_path):
    """A 2-column centre band made a 1-column kernel that filled nothing (the output was the
    zero-filled image, bit for bit, no word): refused. A 3-column kernel at 8x leaves most of
    each 7-column gap empty: the run says which share, and the library counts the same."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.sampling_mri import unreachable_share
    from mrirecon.recon.grappa import grappa

    def run(size, extra=()):
        folder = tmp_path / f"{size[0]}x{size[1]}"
        simulate_mri_dataset(folder, volumes=1, slices=1, coils=4, size=size, seed=1)
        config = load_pipeline("mri_retrospective", [
            "reconstruct.method=grappa", "reconstruct.params={}", "calibrate.method=none",
            "undersample.accelerations=[8]", "undersample.center_fractions=[0.04]",
            "export.formats=[hdf5]", "report.enabled=false", *extra])[0]
        run_pipeline(config, [str(folder)], folder / "out", progress=False)
        (entry,) = json.loads((folder / "out" / "provenance.json").read_text())["files"]
        return entry

    narrow = run((64, 50))
    assert narrow["status"] == "failed" and "at least 3 columns" in narrow["error"]
    entry = run((64, 64))
    (note,) = [w for w in entry["warnings"] if "GRAPPA" in w]
    assert entry["status"] == "ok" and "stay empty: the kernel spans 3 columns" in note

    mask = torch.zeros(64, dtype=torch.bool)
    mask[::8], mask[31:34] = True, True
    k = torch.randn(4, 16, 64, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    calib = k[:, :, 27:36]  # a 9-column calibration block
    for ky in (1, 3, 5, 9):
        _, unfilled = grappa(k * mask, calib, (3, ky), mask=mask, return_unfilled=True)
        assert unfilled == pytest.approx(unreachable_share(mask, ky), abs=1e-12), ky
    assert unreachable_share(mask, 1) == 1.0 and unreachable_share(mask, 15) == 0.0


def test_coils_are_checked_as_acquired_not_after_compression(tmp_path):
    """mri_learned compresses 15 coils to 12; the coil checks ran on the virtual coils, whose
    first holds most of the power, and warned on every such file that 'coil 0's power is
    1.24e+04x the median coil's (a mis-scaled channel?)'. The channels as acquired are checked."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(tmp_path / "in", volumes=1, slices=1, coils=15, size=(64, 48), seed=4)
    path = Path(path)
    compress = ["preprocess.coil_compression=12", "undersample.enabled=true"]
    entry = _run(path, tmp_path, *compress)
    assert entry["status"] == "ok" and not [w for w in entry["warnings"] if "coil" in w], entry["warnings"]
    loud = read_kspace(path)
    loud[:, 9] *= 100  # a mis-scaled channel still named by its own index
    entry = _run(clone_h5(path, tmp_path / "loud.h5", kspace=loud), tmp_path, *compress)
    assert any("coil 9's power is" in w for w in entry["warnings"]), entry["warnings"]


def test_training_range_is_checked_on_the_matrix_as_acquired(tmp_path):
    """mri_learned crops the readout oversampling (exact) before its model: the range check
    compares the data as acquired (640 rows for fastMRI), not the cropped k-space, which would
    warn on every file that it is outside the 640 x 320 training range."""
    from types import SimpleNamespace

    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io import FastMRIFile
    from mrirecon.pipeline.schema import PreprocessConfig
    from mrirecon.pipeline.slice_mri import make_slice
    from mrirecon.pipeline.stages_mri import preprocess
    from mrirecon.pipeline.volume import _warn_outside_range

    (path,) = simulate_mri_dataset(tmp_path, volumes=1, slices=1, coils=2, size=(32, 48), seed=1,
                                   readout_oversampling=2)
    f = FastMRIFile(path)
    try:
        s = make_slice(f.read_slice(0, with_reference=False), 0, Path(path).name, None)
    finally:
        f.close()
    cropped = preprocess(s, PreprocessConfig(remove_oversampling=True))
    assert tuple(cropped.kspace.shape[-2:]) == (32, 48) and cropped.acquired_rows == 64
    assert preprocess(s, PreprocessConfig(remove_oversampling=False)).acquired_rows is None
    card = {"model": {"name": "m"}, "training_range": {"matrix": {"min": [64, 48], "max": [64, 48]}}}
    config = SimpleNamespace(modality="mri", calibrate=SimpleNamespace(method="espirit", crop=0.0))
    assert _warn_outside_range(config, SimpleNamespace(model_card=card), cropped) == []
    card["training_range"]["matrix"] = {"min": [32, 48], "max": [32, 48]}  # the cropped size is not
    (msg,) = _warn_outside_range(config, SimpleNamespace(model_card=card), cropped)  # what it saw
    assert msg.startswith("matrix 64 x 48 is outside the m training range 32 x 48")


def _coil_kspace(n: int = 128, coils: int = 8) -> torch.Tensor:
    """Fully sampled ``(coils, n, n)`` k-space of a Shepp-Logan image with a smooth phase,
    birdcage coils, fft2c."""
    import sigpy.mri as spmri

    from mrirecon.data.anatomy import shepp_logan
    from mrirecon.functional import fft2c

    maps = spmri.birdcage_maps((coils, n, n), r=1.2)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    yy = np.mgrid[:n, :n][0] / n
    x = shepp_logan((n, n)) * np.exp(1j * 0.8 * np.pi * (yy - 0.5) ** 2)
    return fft2c(torch.from_numpy(maps * x).to(torch.complex64))


def test_coil_axis_last_is_named_not_called_a_spike():
    """BART / MATLAB (H, W, coils) k-space read as (coils, H, W) (128 "coils" of 128 x 8): the
    coil axis holds DC. Was: "a spike (...); remove it (e.g. by its neighbours' mean)" about the
    k-space centre. Now the coil axis and np.moveaxis are named; the same k-space in fastMRI
    order, and a real array with one coil 30x louder at the middle index, pass."""
    k = _coil_kspace()
    with pytest.raises(ValueError, match=r"coil axis last .*np\.moveaxis\(k, -1, -3\)") as err:
        check_kspace(k.movedim(0, -1).contiguous(), "f.h5")
    assert "spike" not in str(err.value) and "coil 64 of 128" in str(err.value)
    check_kspace(k, "f.h5")
    loud = k.clone()
    loud[k.shape[0] // 2] *= 30  # a coil beside the object: louder, not a k-space centre
    check_kspace(loud, "f.h5")


@pytest.mark.parametrize("loud", [7, 8, 9])
def test_a_noise_only_slice_with_one_loud_middle_channel_is_not_coils_last(loud):
    """An edge slice holds noise only; a 16-channel array whose channel 7-9 has 3.5x the noise
    std (12x the energy) peaked at the middle coil with no column peak, and the whole input was
    refused as "coil axis last". Noise has no k-space centre to place (as the DC-position rule
    says): its rows show no peak either, and the coils beside the loud one read the median. The
    real coil-last array, also with its noise, is still refused."""
    rng = np.random.default_rng(0)
    gain = np.ones(16)
    gain[loud] = 3.5
    noise = (rng.normal(size=(16, 128, 96)) + 1j * rng.normal(size=(16, 128, 96))) * gain[:, None, None]
    check_kspace(torch.from_numpy(noise.astype(np.complex64)), "slice 0")
    k = _coil_kspace()
    k = k + 1e-3 * float(k.abs().max()) * torch.randn_like(k)
    with pytest.raises(ValueError, match=r"coil axis last"):
        check_kspace(k.movedim(0, -1).contiguous(), "f.h5")


def test_to_magnitude_combines_coil_images_by_root_sum_of_squares():
    """GRAPPA's coil images become their root-sum-of-squares (the saved and scored image); a
    complex image its modulus, a real one itself."""
    from mrirecon.pipeline.stages_mri import to_magnitude

    coils = torch.randn(5, 6, 7, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    got = to_magnitude(coils)
    assert got.shape == (6, 7) and not got.is_complex()
    ref = torch.sqrt((coils.abs() ** 2).sum(0))
    assert torch.allclose(got, ref, rtol=10 * torch.finfo(torch.float64).eps, atol=0)
    assert torch.equal(to_magnitude(coils[0]), coils[0].abs())
    assert torch.equal(to_magnitude(coils[0].real), coils[0].real)


def test_each_slice_of_a_per_slice_mask_gets_its_own_row():
    """make_slice picks row ``index`` of a reader's per-slice mask ``(slices, W)`` (ISMRMRD with
    slice-dependent sampling): slice 0 reconstructed with slice 1's mask would silently lose the
    lines only it sampled."""
    from mrirecon.containers import Header, KSpace
    from mrirecon.pipeline.slice_mri import make_slice

    n, coils, h, w = 3, 2, 16, 12
    rows = torch.zeros(n, w, dtype=torch.bool)
    for k in range(n):  # slice k: every (k + 2)-th column plus a 4-column centre band
        rows[k, ::k + 2] = True
        rows[k, w // 2 - 2:w // 2 + 2] = True
    g = torch.Generator().manual_seed(0)
    vol = torch.randn(n, coils, h, w, dtype=torch.complex64, generator=g)
    vol = vol * rows[:, None, None, :]  # each slice holds data in its own sampled columns only
    header = Header(encoded_matrix=(h, w, 1), recon_matrix=(h, w, 1))
    for k in range(n):
        s = make_slice(KSpace(vol[k:k + 1], header, mask=rows), k, "f.h5", None)
        assert torch.equal(s.mask.reshape(-1).cpu(), rows[k]), k
