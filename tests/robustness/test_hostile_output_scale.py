"""Outputs at a scale the data do not have: CG-SENSE with ESPIRiT maps from a 3-column centre
band wrote an image 8e8 times too bright with exit 0 and no warning; ESPIRiT kernels 1 column
wide were only a note; NaN / Inf predictions were scored NaN ("n/a" in the bench) instead
of refused; a crop lowered from 0.95 to 0.9472 was reported as "lowered to 0.95"."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from tests.helpers import clone_h5, simulated_ct_dir

FAST = ["export.formats=[hdf5]", "report.enabled=false"]


@pytest.fixture(scope="module")
def narrow_band_file(tmp_path_factory) -> Path:
    """One 48 x 40 slice, 8 coils whose sensitivities vary linearly across the field of view, a
    smooth blob with a bright point, noise 1e-4 (the oblique ISMRMRD probe as a fastMRI file):
    fastMRI's 4x mask (centre fraction 0.08) keeps a 3-column centre band."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder = tmp_path_factory.mktemp("narrow_band")
    (src,) = simulate_mri_dataset(folder / "sim", volumes=1, slices=1, coils=8, size=(48, 40),
                                  seed=5, resolution=2)  # for a valid header
    h, w, coils = 48, 40, 8
    yy, xx = np.mgrid[0:h, 0:w]
    image = 0.2 * np.exp(-(((yy - h / 2) / 14) ** 2 + ((xx - w / 2) / 12) ** 2)).astype(complex)
    image[h // 3, w // 4] += 1.0
    angles = np.arange(coils) * 2 * np.pi / coils
    sens = np.stack([np.exp(1j * a) * (1 + 0.5 * np.cos(a) * (yy - h / 2) / (h / 2)
                                       + 0.5 * np.sin(a) * (xx - w / 2) / (w / 2)) for a in angles])
    k = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(sens * image, axes=(-2, -1)), norm="ortho"),
                        axes=(-2, -1))
    rng = np.random.default_rng(0)
    k = (k + 1e-4 * (rng.normal(size=k.shape) + 1j * rng.normal(size=k.shape)))[None]
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=(-2, -1)), norm="ortho"),
                                  axes=(-2, -1))
    rss = np.sqrt((np.abs(coil_images) ** 2).sum(1)).astype(np.float32)
    return clone_h5(Path(src), folder / "narrow.h5", kspace=k.astype(np.complex64),
                    reconstruction_rss=rss)


def _run(path: Path, out: Path, pipeline: str, sets: list[str]) -> tuple[int, dict]:
    config = load_pipeline(pipeline, sets)[0]
    code = run_pipeline(config, [str(path)], out, progress=False)
    (entry,) = json.loads((out / "provenance.json").read_text())["files"]
    return code, entry


# ---- ESPIRiT kernels 1 column wide ---------------------------------------------------------

@pytest.mark.parametrize("fraction, band, kernel", [(0.08, 3, 1), (0.1, 4, 2), (0.125, 5, 3)])
def test_espirit_kernels_one_column_wide_are_a_warning(narrow_band_file, tmp_path, fraction,
                                                       band, kernel):
    """A 3-column band clamps ESPIRiT's kernels to 1 column, which was a note among the notes
    (while CG-SENSE wrote an image 8e8 times too bright); it is a warning now, naming the band,
    the kernel and what to do. 4- and 5-column bands (2- and 3-column kernels) keep the note."""
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [*FAST, f"undersample.center_fractions=[{fraction}]",
                        "evaluate.enabled=false"])
    assert code == 0
    warned = [w for w in entry["warnings"] if "ESPIRiT's kernels" in w]
    noted = [n for n in entry["notes"] if "calibrate.kernel_width=6: ESPIRiT used" in n]
    if kernel >= 2:
        assert warned == [] and len(noted) == 1 and f"6 x {kernel} kernels" in noted[0]
        return
    assert noted == []
    assert warned == [
        f"narrow.h5: slice 0: calibrate: ESPIRiT's kernels are 6 x {kernel} (readout x phase "
        f"encoding; calibrate.kernel_width=6): the {band}-column centre band holds kernels at "
        f"most {kernel} column(s) wide across phase encoding, which hardly constrain the coil "
        "maps there; on some data SENSE-type reconstructions with such maps amplify noise by "
        "orders of magnitude: use a wider centre band (undersample.center_fractions, or a lower "
        "acceleration) or calibrate.method=walsh"]


def test_a_kernel_width_asked_for_is_no_warning(narrow_band_file, tmp_path):
    """calibrate.kernel_width=2 on a band that holds wider kernels is the user's choice."""
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [*FAST, "undersample.enabled=false", "calibrate.kernel_width=2",
                        "evaluate.enabled=false"])
    assert code == 0 and not [w for w in entry["warnings"] if "kernel" in w]


# ---- the output's scale against the zero-filled image ------------------------------------------

SCALE = re.compile(r"narrow\.h5: reconstruct\.method 'cg_sense': the reconstruction's 99th "
                   r"percentile is (\S+)x the zero-filled image's \(within 0\.1-10x for faithful "
                   r"reconstructions\): ")


def test_cg_sense_with_one_column_kernel_maps_stays_on_scale(narrow_band_file, tmp_path):
    """CG-SENSE (lam 0, 40 iterations) with the 6 x 1-kernel maps wrote an image whose 99th
    percentile was 8.6e8 times the zero-filled image's (-155 dB) with exit 0: CG stepped along
    the gram's null space once its residual was rounding noise. CG stops there since (the
    Rayleigh-quotient floor, tests/solvers/test_cg_semidefinite.py): the image is on scale,
    poorer than with Walsh maps (34.5 dB) but an image of the data."""
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective", FAST)
    assert code == 0 and entry["metrics"]["psnr"] > 15
    assert not [w for w in entry["warnings"] if "99th percentile" in w]


@pytest.mark.parametrize("formats", ["[hdf5]", "[hdf5, png]"])  # own zero-filled images, previews
def test_an_output_far_brighter_than_the_zero_filled_image_is_warned(narrow_band_file, tmp_path,
                                                                     formats, monkeypatch):
    """An output 1e9 times brighter than the zero-filled image (here made so; a solver that
    amplifies noise did it with exit 0 and no warning) is warned, naming the narrow centre band
    the maps came from."""
    from mrirecon.pipeline import stages_mri

    original = stages_mri.reconstruct

    def bright(s, cfg, model, **kwargs):
        out = original(s, cfg, model, **kwargs)
        return type(out)(**{**out.__dict__, "image": out.image * 1e9})

    monkeypatch.setattr(stages_mri, "reconstruct", bright)
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [f"export.formats={formats}", "report.enabled=false"])
    assert code == 0 and entry["metrics"]["psnr"] < -100  # still written and scored
    (msg,) = [w for w in entry["warnings"] if "99th percentile" in w]
    found = SCALE.match(msg)
    assert found and float(found.group(1)) > 1e8, msg
    assert msg.endswith("the solver amplified noise (coil maps from a 3-column centre band?); "
                        "its intensities are not the data's: try calibrate.method=walsh, a wider "
                        "centre band (undersample.center_fractions) or regularisation "
                        "(reconstruct.params lam)")


@pytest.mark.parametrize("sets", [["calibrate.method=walsh"], ["undersample.enabled=false"],
                                  ["undersample.center_fractions=[0.15]"]])
def test_faithful_outputs_are_not_warned(narrow_band_file, tmp_path, sets):
    """The same data with Walsh maps (ratio 0.96, 34.5 dB), fully sampled (1.0) or a 6-column
    band (1.1)."""
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [*FAST, *sets, "evaluate.enabled=false"])
    assert code == 0 and not [w for w in entry["warnings"] if "99th percentile" in w]


def test_a_nearly_black_output_is_warned(narrow_band_file, tmp_path, monkeypatch):
    """An output 1000 times darker than the zero-filled image (here made so) is warned too."""
    from mrirecon.pipeline import stages_mri

    original = stages_mri.reconstruct

    def dark(s, cfg, model, **kwargs):
        out = original(s, cfg, model, **kwargs)
        return type(out)(**{**out.__dict__, "image": out.image * 1e-3})

    monkeypatch.setattr(stages_mri, "reconstruct", dark)
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [*FAST, "calibrate.method=walsh", "evaluate.enabled=false"])
    assert code == 0
    (msg,) = [w for w in entry["warnings"] if "99th percentile" in w]
    found = SCALE.match(msg)
    assert found and float(found.group(1)) < 0.01, msg  # Walsh's 0.96, times 1e-3
    assert msg.endswith("the output is nearly black (coil maps zero over the object, or a model "
                        "far outside its training range?); compare it with the zero-filled image")


# ---- NaN / Inf predictions in the metrics and the bench -----------------------------------------

@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("as_tensor", [False, True])
def test_a_non_finite_prediction_is_refused_like_a_non_finite_reference(bad, as_tensor):
    """A NaN prediction scored NaN (an Inf one -inf dB) and a table printed "n/a" for the
    whole method, while the same value in the reference was refused."""
    from mrirecon import metrics

    rng = np.random.default_rng(0)
    gt = np.abs(rng.normal(size=(2, 16, 16)))
    pred = gt + 0.05
    pred[0, 3, 3] = bad
    if as_tensor:
        gt, pred = torch.from_numpy(gt), torch.from_numpy(pred)
    for name in ("mse", "nmse", "psnr", "ssim"):
        with pytest.raises(ValueError, match=rf"^{name}: pred holds 1 NaN or Inf values \(a "
                                             r"diverged reconstruction\?\); it has no score$"):
            getattr(metrics, name)(gt, pred)
    for crop in (True, False):
        with pytest.raises(ValueError, match=r"^evaluate_volumes: volume 'bad': pred holds 1 NaN"):
            metrics.evaluate_volumes({"good": gt, "bad": gt}, {"good": gt + 0.05, "bad": pred},
                                     crop=crop)
        with pytest.raises(ValueError, match=r"^evaluate_volumes: volume 'bad': gt holds 1 NaN"):
            metrics.evaluate_volumes({"good": gt, "bad": pred}, {"good": gt, "bad": gt},
                                     crop=crop)
        # a loop that ranks states (training validation, tuning grids) asks for NaN instead:
        # the diverged volume scores NaN, the others as alone
        rep = metrics.evaluate_volumes({"good": gt, "bad": gt}, {"good": gt + 0.05, "bad": pred},
                                       crop=crop, nonfinite="nan")
        alone = metrics.evaluate_volumes({"good": gt}, {"good": gt + 0.05}, crop=crop)
        for m, v in rep.values.items():
            assert np.isnan(v[1]) and v[0] == alone.values[m][0]


def _diverging(module, method: str, monkeypatch) -> None:
    """``module.reconstruct`` returns NaN images for ``method``."""
    original = module.reconstruct

    def reconstruct(s, cfg, model, **kwargs):
        out = original(s, cfg, model, **kwargs)
        if cfg.method != method:
            return out
        return type(out)(**{**out.__dict__, "image": out.image * float("nan")})

    monkeypatch.setattr(module, "reconstruct", reconstruct)


def test_the_mri_bench_refuses_a_diverged_method_by_name(tmp_path, monkeypatch):
    """A diverged method's row read "n/a" for every metric, naming neither file nor cause."""
    from mrirecon.bench import run_bench
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline import stages_mri

    simulate_mri_dataset(tmp_path / "data", volumes=1, slices=1, coils=4, size=(32, 32), seed=1,
                         resolution=2)
    _diverging(stages_mri, "cg_sense", monkeypatch)
    with pytest.raises(ValueError, match=r"run_bench: \S+\.h5: method 'cg_sense': "
                                         r"evaluate_volumes: volume 'volume': pred holds \d+ NaN "
                                         r"or Inf values \(a diverged reconstruction\?\)"):
        run_bench(tmp_path / "data", "multicoil", [4], ["zero_filled", "cg_sense"],
                  progress=False, verbose=False)


def test_the_ct_bench_refuses_a_diverged_method_by_name(tmp_path, monkeypatch):
    from mrirecon.bench import run_ct_bench
    from mrirecon.pipeline import stages_ct

    data = simulated_ct_dir(tmp_path / "ct", views=24, size=16, seed=2)
    _diverging(stages_ct, "sirt", monkeypatch)
    with pytest.raises(ValueError, match=r"run_ct_bench: \S+\.hdf5: method 'sirt': "
                                         r"evaluate_volumes: volume 'volume': pred holds \d+ NaN"):
        run_ct_bench(data, (2,), "fbp,sirt", progress=False, params={"sirt": {"iterations": 2}})


# ---- the crop "lowered" to its own value ------------------------------------------------------

def test_a_lowered_crop_is_printed_below_the_configured_one(narrow_band_file, tmp_path,
                                                            monkeypatch):
    """The crop safeguard lowered 0.95 to 0.9472 and the warning said "lowered to 0.95"; then
    it printed 2 decimals, which ``calibrate.crop`` could not repeat: it prints the crop
    exactly, and ``provenance.json`` lists it per slice."""
    from mrirecon import calib

    original = calib.centre_maps

    def lowered(*args, **kwargs):
        maps, crop = original(*args, **kwargs)
        return maps, torch.full_like(crop, 0.9472410082817078)

    monkeypatch.setattr(calib, "centre_maps", lowered)
    code, entry = _run(narrow_band_file, tmp_path / "o", "mri_retrospective",
                       [*FAST, "undersample.enabled=false", "evaluate.enabled=false"])
    assert code == 0
    (msg,) = [w for w in entry["warnings"] if "the crop was lowered" in w]
    assert ("the crop was lowered to 0.9472410082817078, exactly (calibrate.crop set to it, "
            "with calibrate.max_cropped_energy=null, repeats this slice's cut, one value for "
            "every slice: each slice's crop is in provenance.json files[].calibration.espirit_crop; "
            "null alone keeps 0.95)" in msg)
    assert set(entry["calibration"]["espirit_crop"]) == {0.9472410082817078}
