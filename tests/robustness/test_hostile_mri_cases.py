"""Hostile MRI cases of an audit: ``null`` method settings, dead coils and extreme k-space scales
through E2E-VarNet and the ESPIRiT crop safeguard, scoring runs with inputs (or slices) without a
reference, and an ESPIRiT kernel larger than its calibration band."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mrirecon.core.config import ConfigError
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import FIXTURES, clone_h5

EPS32 = torch.finfo(torch.float32).eps
QUICK = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}",
         "reconstruct.params_by_acceleration={}", "calibrate.method=none",
         "export.formats=[hdf5]", "report.enabled=false"]


def _entries(out: Path) -> dict[str, dict]:
    files = json.loads((out / "provenance.json").read_text())["files"]
    return {Path(f["input"]).name: f for f in files}


# ---- F1: null for a method setting ------------------------------------------------------------

@pytest.mark.parametrize("override, key, default", [
    ("reconstruct.params.lam=null", "reconstruct.params.lam", "0.0"),
    ("reconstruct.params.tolerance=null", "reconstruct.params.tolerance", "0.0"),
    ("reconstruct.params_by_acceleration.4.iterations=null",
     "reconstruct.params_by_acceleration.4.iterations", "10"),
])
def test_null_for_a_method_setting_is_refused_at_load(override, key, default):
    """`--set reconstruct.params.lam=null` passed validation, then every input failed with a
    bare "TypeError: unsupported operand type(s) for ** or pow(): 'NoneType' and 'int'" (or
    "'<' not supported between ... 'NoneType'"), naming no setting."""
    with pytest.raises(ConfigError, match=rf"{key}: must not be null \(None\): the default is "
                                          rf"{default}; remove the key to use the default"):
        load_pipeline("mri_retrospective", [override])


@pytest.mark.parametrize("pipeline, override, key", [
    ("mri_cs", "reconstruct.params.lam=null", "reconstruct.params.lam"),
    ("mri_tv", "reconstruct.params_by_acceleration.4.lam=null",
     "reconstruct.params_by_acceleration.4.lam"),
    ("ct_tv", "reconstruct.params_by_views.30.lam=null", "reconstruct.params_by_views.30.lam"),
])
def test_null_for_a_setting_without_a_default_is_refused_at_load(pipeline, override, key):
    """A required `lam` (l1_wavelet, tv, tv_ct have none by default) took null as "unknown":
    the config loaded, then every input failed with "l1_wavelet: lam must be a finite number
    >= 0, got None", exit 1, where the docs promise a refusal before any input is read."""
    with pytest.raises(ConfigError, match=rf"{key}: must not be null \(None\): the method needs "
                                          r"it \(it has no default\)"):
        load_pipeline(pipeline, [override])


def test_null_is_kept_where_it_is_the_default_and_checked_in_learned_tables(mri_file, tmp_path):
    """None stays a value where the method's default is None (tv's rho: the solver's choice);
    a learned model's table entry (its card's overridable settings) is checked alike; the CLI
    refuses with exit 2 before any input is read."""
    config = load_pipeline("mri_cs", ["reconstruct.method=tv", "reconstruct.params={lam: 0.01, "
                                      "rho: null}", "reconstruct.params_by_acceleration={}"])[0]
    assert config.reconstruct.params == {"lam": 0.01, "rho": None}
    table = load_pipeline("mri_pnp_brain_sim", ["reconstruct.params_by_acceleration.4.rho=0.01"])[0]
    assert table.reconstruct.params_by_acceleration == {4.0: {"rho": 0.01}}
    with pytest.raises(ConfigError, match=r"params_by_acceleration.4.iterations: must not be null"):
        load_pipeline("mri_pnp_brain_sim", ["reconstruct.params_by_acceleration.4.iterations=null"])

    from mrirecon.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--threads", "1", "run", "mri_retrospective", "--input", str(mri_file), "--output",
              str(tmp_path / "o"), "--no-progress", "--set", "reconstruct.params.lam=null"])
    assert exit_.value.code == 2 and not (tmp_path / "o" / "provenance.json").exists()


# ---- F2: E2E-VarNet with a dead coil, at extreme k-space scales -------------------------------

def _tiny_varnet():
    """The stored fastMRI fixture: VarNet with fastMRI's weights and its masked k-space."""
    from mrirecon.models import VarNet, fastmri_varnet_state_dict
    from mrirecon.operators import sense

    data = torch.load(FIXTURES / "varnet_tiny_fastmri.pt", weights_only=True)
    with pytest.warns(FutureWarning):  # fastMRI's num_cascades
        model = VarNet(**data["config"]).eval()
    model.load_state_dict(fastmri_varnet_state_dict(data["state_dict"]), strict=True)
    y = torch.view_as_complex(data["masked_kspace"].contiguous())
    mask = data["mask"][:, 0, 0, :, 0][:, None, :]

    def op(coils: int):
        return sense(torch.ones(coils, *y.shape[-2:], dtype=y.dtype), mask)

    return model, y, op


def test_varnet_with_a_dead_coil_gives_the_image_of_the_live_coils():
    """An all-zero coil made the sensitivity NormUnet divide 0 by its std 0: NaN maps, and every
    such file failed with "SenseOperator: the coil maps hold NaN or Inf values", naming no file
    or coil. Its map is now 0, so the image is that of the live coils alone."""
    model, y, op = _tiny_varnet()
    dead = y.clone()
    dead[:, 1] = 0
    live = y[:, [c for c in range(y.shape[1]) if c != 1]]
    with torch.no_grad():
        out = model(dead, op(y.shape[1]))
        alone = model(live, op(live.shape[1]))
        maps = model.kspace(dead, op(y.shape[1]))[1].maps
    assert bool(torch.isfinite(out).all()) and float(out.abs().max()) > 0
    assert bool((maps[:, 1] == 0).all())
    tol = 16 * EPS32 * float(alone.abs().max())  # the same sums, one of them with a zero term
    assert float((out - alone).abs().max()) <= tol


def test_varnet_follows_the_scale_of_the_k_space():
    """At 1e-30 (or 1e30) the squares inside NormUnet's std and the RSS underflowed (overflowed)
    float32: NaN maps or an all-zero image. The model now runs on k-space scaled by a power of
    two, so a power-of-two scale gives the scaled image bit for bit."""
    model, y, op = _tiny_varnet()
    with torch.no_grad():
        base = model(y, op(y.shape[1]))
        for p in (-100, 100):
            assert torch.equal(model(y * 2.0 ** p, op(y.shape[1])), base * 2.0 ** p)
        for factor in (1e-30, 1e30):
            out = model((y * factor).to(torch.complex64), op(y.shape[1])) / factor
            assert float((out - base).abs().max()) <= 1e3 * EPS32 * float(base.abs().max())


def test_varnet_pipeline_runs_a_file_with_a_dead_coil(mri_file, tmp_path):
    """mri_varnet_brain_sim failed on any file with a dead coil; now the input is reconstructed
    (with the preprocess warning naming the coil)."""
    with h5py.File(mri_file) as f:
        k = f["kspace"][()]
    k[:, 1] = 0
    bad = clone_h5(mri_file, tmp_path / "in" / "dead.h5", kspace=k)
    config = load_pipeline("mri_varnet_brain_sim", ["export.formats=[hdf5]", "report.enabled=false",
                                                    "undersample.enabled=true"])[0]
    out = tmp_path / "out"
    assert run_pipeline(config, [str(bad)], out, progress=False) == 0
    entry = _entries(out)["dead.h5"]
    assert entry["status"] == "ok" and any("coil 1 of 2" in w for w in entry["warnings"])
    with h5py.File(out / entry["outputs"]["hdf5"]) as f:  # relative to the output folder
        image = f["reconstruction"][()]
    assert np.isfinite(image).all() and image.max() > 0


# ---- F3: the ESPIRiT crop safeguard at any k-space scale -------------------------------------

def test_espirit_crop_safeguard_does_not_depend_on_the_k_space_scale(tmp_path):
    """The band image's energy was squared in float32: at 1e-30 it was all 0, at 1e30 Inf, and
    the crop stayed at 0.95 where the data at scale 1 lower it (maps zero over the object)."""
    from mrirecon.calib import centre_maps
    from mrirecon.data.simulate_mri import simulate_mri_volume
    from mrirecon.sampling import center_mask

    vol = simulate_mri_volume(0, slices=1, coils=8, size=(96, 80), seed=0)
    k = vol.kspace[0].to(torch.complex64)
    centre = torch.from_numpy(center_mask(80, 7)).bool()
    mask = centre.clone()
    mask[::4] = True
    maps, crop = centre_maps(k * mask, centre, return_crop=True)
    assert 0 < float(crop) < 0.95  # the case lowers the crop
    for p in (-100, 100):  # exact scales: the same maps and crop, bit for bit
        scaled, c = centre_maps(k * mask * 2.0 ** p, centre, return_crop=True)
        assert float(c) == float(crop) and torch.equal(scaled, maps)
    for factor in (1e-30, 1e30):
        scaled, c = centre_maps((k * factor).to(torch.complex64) * mask, centre, return_crop=True)
        assert float(c) == pytest.approx(float(crop), abs=1e-4)
        assert float((scaled - maps).norm() / maps.norm()) < 1e-3


# ---- F4 / F5: inputs and slices without a reference in a scoring run --------------------------

def _run(config, inputs, out):
    code = run_pipeline(config, [str(p) for p in inputs], out, progress=False)
    return code, _entries(out)


def test_an_input_without_a_reference_among_scored_ones_is_warned(mri_file, tmp_path):
    """b.h5 (no reconstruction_rss) dropped out of metrics.csv and its mean without a word while
    a.h5 was scored. A run where no input has a reference (a fastMRI test set) warns nobody."""
    import shutil

    a = tmp_path / "in" / "a.h5"
    a.parent.mkdir()
    shutil.copy(mri_file, a)
    b = clone_h5(mri_file, tmp_path / "in" / "b.h5", reconstruction_rss=None)
    config = load_pipeline("mri_retrospective", QUICK + ["report.enabled=true"])[0]
    code, entries = _run(config, [a, b], tmp_path / "out")
    assert code == 0 and entries["a.h5"]["metrics"] and not entries["b.h5"]["metrics"]
    (msg,) = [w for w in entries["b.h5"]["warnings"] if "reference" in w]
    assert msg.startswith("b.h5: no metrics: the file holds no reference image "
                          "(reconstruction_rss / reconstruction_esc), while 1 other input(s)")
    assert not any("reference" in w for w in entries["a.h5"]["warnings"])
    assert "b.h5: no metrics" in (tmp_path / "out" / "report.html").read_text()
    assert [r.split(",")[0] for r in (tmp_path / "out" / "metrics.csv").read_text().split()[1:]] \
        == ["a.h5"]
    # resumed: said again, once (the status record does not hold it)
    code, entries = _run(config, [a, b], tmp_path / "out")
    assert [w for w in entries["b.h5"]["warnings"] if "reference" in w] == [msg]
    # no input with a reference: nothing to warn about per file
    c = clone_h5(mri_file, tmp_path / "test" / "c.h5", reconstruction_rss=None)
    d = clone_h5(mri_file, tmp_path / "test" / "d.h5", reconstruction_rss=None)
    code, entries = _run(config, [c, d], tmp_path / "out_test")
    assert code == 0 and all(not e["metrics"] and not any("reference" in w for w in e["warnings"])
                             for e in entries.values())


def test_an_all_zero_reference_slice_is_left_out_of_the_metrics(mri_file, tmp_path):
    """reconstruction_rss with slice 1 all zero (the others fine) was scored without a word:
    the slice's whole energy counted as error (13.9 dB instead of 22.4 on a 3-slice volume). It
    is left out, with a warning naming the file, the dataset and the slice."""
    from mrirecon.pipeline.volume import evaluate

    with h5py.File(mri_file) as f:
        ref = f["reconstruction_rss"][()]
    ref[1] = 0
    bad = clone_h5(mri_file, tmp_path / "in" / "zero.h5", reconstruction_rss=ref)
    config = load_pipeline("mri_retrospective", QUICK)[0]
    code, entries = _run(config, [bad], tmp_path / "out")
    entry = entries["zero.h5"]
    assert code == 0
    assert ("zero.h5: reconstruction_rss slice 1 is all zero while the reconstruction is not "
            "(a placeholder, or a reference that was not written?): left out of the metrics, "
            "which score the other 1 of 2 slices") in entry["warnings"]
    with h5py.File(tmp_path / "out" / entry["outputs"]["hdf5"]) as f:  # relative to it
        recon = torch.from_numpy(f["reconstruction"][()])
    first = evaluate(torch.from_numpy(ref[:1]), recon[:1], crop=True)
    whole = evaluate(torch.from_numpy(ref), recon, crop=True)
    assert entry["metrics"]["psnr"] == pytest.approx(first["psnr"], rel=1e-9)
    assert whole["psnr"] < first["psnr"] - 1  # what was reported before


# ---- F6: an ESPIRiT kernel larger than its calibration band ----------------------------------

def test_an_espirit_kernel_wider_than_the_band_is_noted(mri_file, tmp_path):
    """calibrate.kernel_width=64 on a 24-column band of 32 rows was clamped to 24 x 22 without a
    word while provenance recorded 64; the input's notes now say which kernel was used (22 x 22:
    a kernel as tall as the 24 calibration rows took one position along them)."""
    base = ["reconstruct.method=zero_filled", *QUICK[1:3], "calibrate.method=espirit",
            "undersample.enabled=false",  # zero_filled: SENSE with the maps (RSS makes none)
            "export.formats=[hdf5]", "report.enabled=false", "evaluate.enabled=false"]
    notes = {}
    for width in (64, 6):
        config = load_pipeline("mri_cs", [*base, f"calibrate.kernel_width={width}"])[0]
        code, entries = _run(config, [mri_file], tmp_path / f"o{width}")
        assert code == 0
        notes[width] = [n for n in entries[mri_file.name]["notes"] if "kernel_width" in n]
    assert notes[64] == [f"{mri_file.name}: all 2 slices: calibrate.kernel_width=64: ESPIRiT used "
                         "22 x 22 kernels (readout x phase encoding): a kernel spans at most 22 of "
                         "the 24 calibration rows, and at most 22 columns across the 24-column "
                         "centre band (3 kernel positions must fit along each)"]
    assert notes[6] == []
