"""Held-out protocol: data kept apart from training, deployment geometry, range warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

import mrirecon
from mrirecon.io.ct_sources import CT_SOURCES
from mrirecon.io.heldout_sources import HELDOUT_CT, HELDOUT_MR
from mrirecon.pipeline.model_range import range_warnings, warn_outside_range
from mrirecon.training.prior_images import NATURAL_IMAGES
from tests.helpers import imported_modules

PKG = Path(mrirecon.__file__).parent


def test_reserved_images_are_disjoint_from_training_sources():
    assert not set(HELDOUT_CT) & set(CT_SOURCES)
    assert not set(HELDOUT_MR) & set(CT_SOURCES)
    assert not set(NATURAL_IMAGES) & RESERVED_SKIMAGE
    import skimage.data

    # each a real name (the list had "ihc" and "phantom", names skimage.data does not have)
    assert RESERVED_SKIMAGE <= set(skimage.data.__all__) and set(NATURAL_IMAGES) <= set(
        skimage.data.__all__)


#: scikit-image's medical and microscopy images: held out, never training images
RESERVED_SKIMAGE = {"brain", "retina", "cell", "cells3d", "microaneurysms", "immunohistochemistry",
                    "shepp_logan_phantom", "kidney", "lily", "skin", "palisades_of_vogt",
                    "human_mitosis", "protein_transport"}


def _heldout_imports(path: Path) -> set[str]:
    """What ``path`` imports of the held-out package or the held-out image readers."""
    return {m for m in imported_modules(path)
            if m.split(".")[:2] == ["mrirecon", "heldout"] or m.startswith("mrirecon.io.heldout_sources")}


@pytest.mark.parametrize("folder", ["training", "data", "models"])
def test_training_code_never_imports_the_heldout_package(folder):
    for path in (PKG / folder).rglob("*.py"):
        bad = _heldout_imports(path)
        assert not bad, f"{path} imports {bad}"


@pytest.mark.parametrize("line", ["from mrirecon.io import heldout_sources as _h",
                                  "from mrirecon import heldout as _hh",
                                  "from ..heldout import protocol as _p",
                                  "import mrirecon.heldout.tune",
                                  "def f():\n    from mrirecon.io.heldout_sources import read_heldout_ct"])
def test_the_heldout_scan_sees_every_form_of_the_import(tmp_path, line):
    """The scan above would pass vacuously if it missed a form: each one, written into a
    training module of a package laid out like mrirecon, is found; a reader of the training
    sources (``mrirecon.io.ct_sources``) is not."""
    for folder in (tmp_path / "mrirecon", tmp_path / "mrirecon" / "training"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "__init__.py").write_text("")
    path = tmp_path / "mrirecon" / "training" / "checkpoint.py"
    path.write_text(f"from mrirecon.io import ct_sources\n{line}\n")
    assert _heldout_imports(path)
    path.write_text("from mrirecon.io import ct_sources\nfrom mrirecon import heldout_like\n")
    assert _heldout_imports(path) == set()


def test_heldout_modules_read_only_reserved_images():
    src = (PKG / "heldout" / "data.py").read_text()
    assert "load_ct_sources" not in src and "simulate_mri_volume" not in src and "anatomy" not in src


def test_range_warnings_name_each_property_outside_the_card():
    card = {"model": {"name": "pnp_dpir"},
            "training_range": {"matrix": {"min": [64, 64], "max": [640, 400]}, "coils": [4, 16],
                               "accelerations": [4, 8], "views": [30, 60]}}
    assert range_warnings(card, matrix=(640, 320), coils=8, acceleration=4.0) == []
    msgs = range_warnings(card, matrix=(1024, 320), coils=2, acceleration=12.0, views=10)
    assert len(msgs) == 4
    assert any("matrix 1024 x 320" in m for m in msgs) and any("coils 2" in m for m in msgs)
    assert any("acceleration 12" in m for m in msgs) and any("views 10" in m for m in msgs)
    assert range_warnings({"model": {"name": "x"}}, coils=99) == []
    assert range_warnings(None, coils=99) == []
    radial = {"model": {"name": "modl"}, "training_range": {"spokes": [40, 40]}}
    assert range_warnings(radial, spokes=40) == []
    assert range_warnings(radial, spokes=36) == ["readouts (spokes / interleaves) 36 is outside the modl training range 40 .. 40"]
    # the kind of trajectory (a radial model on a spiral gave 19.1 dB against TV's 31.1, no word)
    radial["training_range"]["trajectory"] = ["radial"]
    assert range_warnings(radial, spokes=40, trajectory="Radial") == []
    assert range_warnings(radial, spokes=40, trajectory=None) == []  # a header without the kind
    assert range_warnings(radial, spokes=40, trajectory="spiral") == [
        "trajectory spiral is outside the modl training range (radial)"]
    # maps cropped by ESPIRiT for a model trained on crop-0 maps (modl_fastmri_diverse: 8.1 dB
    # on a 2x scan with calibrate.crop=0.95, 23.3 dB with the pipeline's crop 0, no word)
    cropped = {"model": {"name": "modl"}, "training_range": {"maps_crop": [0.0, 0.0]}}
    assert range_warnings(cropped, maps_crop=0.0) == [] and range_warnings(cropped) == []
    assert range_warnings(cropped, maps_crop=0.95) == [
        "the coil maps' ESPIRiT crop (calibrate.crop) 0.95 is outside the modl training range 0 .. 0"]


def test_a_pnp_noise_schedule_outside_the_denoisers_training_is_warned():
    """mri_pnp with sigma_max 100 / sigma_min 50 (the denoiser saw 0.003 .. 0.25 of the peak)
    gave an image 55x too bright at -23 dB, with only a plausibility warning blaming the coil
    maps: the bias-free denoiser extrapolates linearly in its sigma input."""
    from mrirecon.pipeline.model_range import _noise_schedule
    from mrirecon.training.weights import load_model

    shipped = load_model("pnp_dncnn_diverse", {}, "pnp_dncnn_diverse")
    assert shipped.model_card["training_range"]["noise_levels"] == [0.003, 0.25]
    assert warn_outside_range(shipped, noise_schedule=_noise_schedule(shipped)) == []  # 0.1 .. 0.005
    loud = load_model("pnp_dncnn_diverse", {"sigma_max": 100, "sigma_min": 50}, "pnp_dncnn_diverse")
    assert range_warnings(loud.model_card, noise_schedule=_noise_schedule(loud)) == [
        "the noise schedule sigma_max 100 .. sigma_min 50 (reconstruct.params) is outside the noise "
        "levels pnp_dpir's denoiser was trained on, 0.003 .. 0.25: it extrapolates there"]
    assert _noise_schedule(load_model("modl_brain_sim", {}, "modl_brain_sim")) is None


def test_warn_outside_range_logs_once_per_message(caplog):
    class M:
        model_card = {"model": {"name": "m"}, "training_range": {"coils": [4, 8]}}

    m = M()
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        warn_outside_range(m, coils=16)
        warn_outside_range(m, coils=16)
    assert sum("coils 16" in r.message for r in caplog.records) == 1


def test_intensity_ratios_detect_compression():
    from mrirecon.heldout.protocol import intensity_ratios

    ref = np.linspace(0, 1, 1000).reshape(10, 100)  # ref = i / 999, i = 0 .. 999
    tol = 1000 * np.finfo(np.float64).eps  # sums of 1000 float64 terms, one interpolation
    assert intensity_ratios(ref, ref) == pytest.approx((1.0, 1.0), rel=tol)
    mr, pr = intensity_ratios(ref, 0.3 * ref)
    assert mr == pytest.approx(0.3, rel=tol) and pr == pytest.approx(0.3, rel=tol)
    # highlights clipped at 0.5 (the compression the 99th percentile is there to see): the mean
    # keeps i / 999 for i <= 499 and 0.5 for the 500 pixels above, sum 499 * 500 / (2 * 999) +
    # 250 of the reference's 500 (ratio 0.750); the 99th percentile (rank 0.99 * 999 = 989.01,
    # reference value 0.99) drops to 0.5 (ratio 0.505), and a complex image's phase does not count
    # (magnitudes; a real image keeps its sign: test_heldout_figures.py)
    mean_ratio = (499 * 500 / (2 * 999) + 250) / 500
    mr, pr = intensity_ratios(ref, np.exp(0.7j) * np.minimum(ref, 0.5))
    assert mr == pytest.approx(mean_ratio, rel=tol) and pr == pytest.approx(0.5 / 0.99, rel=tol)


def test_heldout_readers_return_scaled_images():
    pytest.importorskip("pydicom")
    from mrirecon.io.heldout_sources import read_heldout_ct, read_heldout_mr

    try:
        mr = read_heldout_mr("s1045.ima.gz")
        ct = read_heldout_ct(HELDOUT_CT[0])
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert mr.shape == (256, 256) and mr.min() == 0 and 0.9 < np.percentile(mr, 99.9) <= 1.0 + 1e-12
    assert ct.ndim == 2 and ct.min() >= -1024 and ct.max() > 500  # bone present, in HU
    with pytest.raises(ValueError, match="not a held-out"):
        read_heldout_ct(CT_SOURCES[0])


def test_knee_width_part_holds_the_same_images_at_640_x_368():
    """The held-out protocol's knee-width part (``eval --parts mri368``): the same reserved
    images and phases (other noise draws) at fastMRI's 640 x 368 (the object in the centre columns),
    references the 320 x 320 centre of the fully sampled RSS, as fastMRI's."""
    pytest.importorskip("pydicom")
    from mrirecon.functional import ifft2c
    from mrirecon.heldout.data import heldout_mri_volumes

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    try:
        narrow, wide = heldout_mri_volumes(width=320), heldout_mri_volumes(width=368)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    for a, b in zip(narrow, wide):
        assert b.name == a.name + "_w368" and tuple(b.kspace.shape) == (1, 8, 640, 368)
        rss = ifft2c(b.kspace[0].to(torch.complex128)).abs().pow(2).sum(0).sqrt()[160:480, 24:344]
        assert b.reference.shape == a.reference.shape == (1, 320, 320)
        np.testing.assert_allclose(b.reference[0], rss.numpy(), rtol=4 * np.finfo(np.float32).eps,
                                   atol=4 * np.finfo(np.float32).eps * float(rss.max()))
        # two noisy copies of one object at >= 28 dB k-space SNR: correlation 1 - O(1e-2.8)
        assert np.corrcoef(a.reference.ravel(), b.reference.ravel())[0, 1] > 0.99, b.name
    with pytest.raises(ValueError, match="held-out MRI width 300"):
        heldout_mri_volumes(width=300)


def test_edge_parameters_flag_a_winner_on_the_grid_edge():
    from mrirecon.heldout.tune import _result, edge_parameters

    def grid(psnrs, lams=(1e-4, 1e-3, 1e-2)):
        return [{"params": {"lam": lam, "iterations": 100}, "PSNR": p, "SSIM": 0.5}
                for lam, p in zip(lams, psnrs)]

    assert edge_parameters(grid([30.0, 31.0, 29.0])) == []          # interior optimum
    assert edge_parameters(grid([32.0, 31.0, 29.0])) == ["lam"]     # smallest lam wins
    assert edge_parameters(grid([29.0, 31.0, 32.0])) == ["lam"]     # largest lam wins
    # iterations is not varied here, so it is never reported
    with pytest.warns(UserWarning, match="lam at the edge"):
        res = _result("l1_wavelet", grid([32.0, 31.0, 29.0]), "MRI 4x")
    assert res["best"] == {"lam": 1e-4, "iterations": 100} and res["at_edge"] == ["lam"]
    # a tuple parameter (GRAPPA's kernel) is checked per component: (7, 3) is neither the
    # smallest nor the largest kernel, but 7 rows is the largest row count in the grid
    kernels = [{"params": {"kernel_size": (kx, ky)}, "PSNR": 30.0 + (kx == 7 and ky == 5), "SSIM": 0.5}
               for kx in (3, 5, 7) for ky in (3, 5, 7)]
    assert edge_parameters(kernels) == ["kernel_size[0]"]


def test_every_pipeline_has_a_heldout_row_in_the_shipped_results():
    """Every shipped pipeline (training configs, radial and adaptation pipelines excepted: the
    Cartesian protocol does not cover radial data, adaptation has its own held-out runs) maps to
    a protocol method that runs its model or classical method, and the README's tables (made
    from benchmarks/heldout_results) hold that row at both settings."""
    import json

    from mrirecon.heldout.protocol import CT_METHODS, MRI_METHODS, PIPELINE_ROWS
    from mrirecon.pipeline.definitions import load_pipeline

    names = sorted(p.stem for p in (PKG / "pipelines").glob("*.yaml"))
    covered = [n for n in names if not n.startswith(("train_", "mri_radial_")) and not n.endswith("_adapt")]
    assert sorted(PIPELINE_ROWS) == covered
    results = PKG.parent / "benchmarks" / "heldout_results"
    tables = {part: json.loads((results / f"heldout_{part}.json").read_text()) for part in ("mri", "ct")}
    for name, (part, row) in PIPELINE_ROWS.items():
        config, _ = load_pipeline(name)
        assert row in (MRI_METHODS if part == "mri" else CT_METHODS), name
        assert row == (config.reconstruct.weights or config.reconstruct.method), name
        assert len(tables[part]) == 2 and all(row in t for t in tables[part].values()), (name, row)


@pytest.mark.parametrize("part", ["mri", "mri368", "ct"])
def test_shipped_rows_keep_per_volume_scores_that_make_their_means(part):
    """Every held-out row records its volumes / slices (what a 2- or 3-volume mean hides) and
    their mean is the row's (per-volume PSNR is stored to 3 decimals, SSIM and the intensity
    ratios to 4), so a p99 miss can be traced to the volumes it comes from."""
    import json

    from mrirecon.heldout.data import CT_VARIANTS, MRI_VARIANTS, heldout_ct_name, heldout_mri_name

    rows = json.loads((PKG.parent / "benchmarks" / "heldout_results" / f"heldout_{part}.json").read_text())
    if part.startswith("mri"):  # mri368: the knee-width part, every MRI method too
        width = int(part[3:] or 320)
        names = {heldout_mri_name(n, v, width) + ".h5" for n in HELDOUT_MR for v in range(MRI_VARIANTS)}
        from mrirecon.heldout.protocol import MRI_METHODS

        assert all(set(t) == set(MRI_METHODS) for t in rows.values()), part
    else:
        names = {heldout_ct_name(n, v) for n in HELDOUT_CT for v in range(CT_VARIANTS)}
    for setting, table in rows.items():
        for method, r in table.items():
            per = r["per_volume"]
            assert set(per) == names and r["volumes"] == len(names), (setting, method)
            assert np.mean([v["PSNR"] for v in per.values()]) == pytest.approx(r["PSNR"], abs=5e-4)
            for key in ("SSIM", "mean_ratio", "p99_ratio"):
                assert np.mean([v[key] for v in per.values()]) == pytest.approx(r[key], abs=5e-5), \
                    (setting, method, key)
            # "± 2 std" is the sample std (ddof 1), as fastMRI's and `mrirecon bench`'s: the
            # tables once divided by n (18 % / 29 % too small for 3 / 2 volumes). Bound: each
            # stored value is off by at most half its last digit, which moves 2 std by at most
            # 2 * half * sqrt(n / (n - 1)).
            n = len(per)
            for key, half in (("PSNR", 5e-4), ("SSIM", 5e-5)):
                two_std = 2 * np.std([v[key] for v in per.values()], ddof=1)
                assert two_std == pytest.approx(r[key + "_2std"], abs=2 * half * np.sqrt(n / (n - 1)) + 1e-12), \
                    (setting, method, key)


@pytest.mark.parametrize("part", ["mri", "mri368", "ct"])
def test_readme_tables_are_the_shipped_results(part):
    """The README's held-out tables are ``heldout.protocol.table`` of the shipped JSON, line for
    line and in order (the knee-width table without its times per slice, which were measured
    beside training jobs), so a re-run that updates the JSON cannot leave the README behind."""
    import json

    from mrirecon.heldout.protocol import table

    shipped = json.loads((PKG.parent / "benchmarks" / "heldout_results" / f"heldout_{part}.json").read_text())
    rendered = table({float(k): v for k, v in shipped.items()}, "views" if part == "ct" else "acceleration")
    lines = rendered.strip("\n").split("\n")
    if part == "mri368":
        lines = [line.rsplit("|", 2)[0] + "|" for line in lines]
    readme = (PKG.parent / "README.md").read_text()
    assert "\n".join(lines) + "\n" in readme, f"README's {part} table differs from heldout_{part}.json"


def test_weight_cards_quote_the_shipped_heldout_rows():
    """Every PSNR / SSIM / NMSE (and its ± 2 std) a card's ``metrics_held_out`` quotes for a method of the held-out tables
    (its own row and the baselines beside it; settings at the top or under a matrix, ``mri`` /
    ``ct``) is that table's figure to the digits quoted: cards kept TV at 28.80 dB and
    L1-wavelet at 27.23 dB after the re-tuned rows (29.70 / 26.73) had replaced them in the
    README. A block with a ``note`` is a dated record of other settings (it says so) and is
    left as written."""
    import json

    import yaml

    results = PKG.parent / "benchmarks" / "heldout_results"
    tables = {p: json.loads((results / f"heldout_{p}.json").read_text())
              for p in ("mri", "ct", "mri368")}
    settings = {"4x": "4.0", "8x": "8.0", "30 views": "30", "60 views": "60", "30_views": "30",
                "60_views": "60"}
    parts = {"640x368": "mri368", "ct": "ct"}  # other parents: the 640 x 320 MRI table
    quoted = []

    def walk(block: dict, part: str | None, where: str) -> None:
        for key, rows in block.items():
            if not isinstance(rows, dict):
                continue
            if key not in settings:
                walk(rows, parts.get(key, part), f"{where}.{key}")
                continue
            table = tables[part or ("ct" if "views" in key else "mri")][settings[key]]
            for method, row in rows.items():
                ref = table.get(method)
                for metric in (("PSNR", "SSIM", "NMSE", "PSNR_2std", "SSIM_2std", "NMSE_2std")
                               if ref is not None and isinstance(row, dict) else ()):
                    if metric in row:
                        digits = len(repr(float(row[metric])).split(".")[1])
                        assert abs(row[metric] - ref[metric]) <= 0.5 * 10.0 ** -digits + 1e-12, \
                            (f"{where}.{key}.{method}.{metric} {row[metric]} is {ref[metric]:.4f} "
                             f"in the shipped table")
                        quoted.append(where)

    for path in sorted((PKG / "weights").glob("*.yaml")):
        held = yaml.safe_load(path.read_text()).get("metrics_held_out") or {}
        if "mrirecon/heldout" in str(held.get("protocol", "")) and "note" not in held:
            walk(held, None, path.name)
    # the loop is not empty: the three cards that quote the tables were read
    assert {q.split(".")[0] for q in quoted} == {"modl_fastmri_diverse", "primal_dual_lodopab",
                                               "varnet_fastmri_diverse"}

def test_range_check_accepts_the_effective_acceleration_of_nominal_fastmri_masks():
    from mrirecon.pipeline.model_range import range_warnings
    from mrirecon.sampling import EquispacedFractionMask

    card = {"model": {"name": "m"}, "training_range": {"accelerations": [4, 8]}}
    for w, cf, acc in ((368, 0.08, 4), (320, 0.08, 4), (368, 0.04, 8), (372, 0.04, 8)):
        mask = EquispacedFractionMask([cf], [acc])(w, seed=0)
        effective = w / float(mask.sum())
        assert range_warnings(card, acceleration=effective) == [], (w, acc, effective)
    assert range_warnings(card, acceleration=3.0) and range_warnings(card, acceleration=10.0)


def test_every_adaptation_pipeline_has_shipped_heldout_adaptation_results():
    """The adaptation pipelines (excepted above) are measured by benchmarks/adapt_heldout.py on
    the same held-out data: a result file for the pipeline's own weights whose unadapted scores
    are the protocol's row of those weights, volume for volume (MRI at 4x) or slice for slice (CT)."""
    import json

    import numpy as np

    from mrirecon.pipeline.definitions import load_pipeline

    results = PKG.parent / "benchmarks" / "heldout_results"
    names = sorted(p.stem for p in (PKG / "pipelines").glob("*_adapt.yaml"))
    assert names == ["ct_learned_adapt", "mri_learned_adapt"]
    mri, _ = load_pipeline("mri_learned_adapt")
    adapted = json.loads((results / f"adapt_heldout_{mri.reconstruct.weights}.json").read_text())
    row = json.loads((results / "heldout_mri.json").read_text())["4.0"][mri.reconstruct.weights]
    assert set(adapted["without"]) == set(row["per_volume"])
    for vol, r in adapted["without"].items():  # the data as mri_learned_adapt preprocesses them
        assert abs(r["PSNR"] - row["per_volume"][vol]["PSNR"]) < 0.01, vol  # = the protocol's row
    ct, _ = load_pipeline("ct_learned_adapt")
    shipped = json.loads((results / f"adapt_heldout_ct_{ct.reconstruct.weights}.json").read_text())
    table = json.loads((results / "heldout_ct.json").read_text())
    assert shipped["weights"] == ct.reconstruct.weights
    assert shipped["adapt"] == {k: getattr(ct.adapt, k)
                                for k in ("steps", "time_budget_s", "validation_fraction", "lr")}
    for views in ("30", "60"):
        slices = shipped[views]["slices"]
        assert len(slices) == table[views][ct.reconstruct.weights]["volumes"]
        without = np.mean([s["without"]["PSNR"] for s in slices.values()])
        # the same model on the same data as the table's row (float32 reconstructions)
        assert abs(without - table[views][ct.reconstruct.weights]["PSNR"]) < 0.01, views
        for s in slices.values():  # adaptation keeps the initial state unless validation improved
            assert (s["best_step"] == 0) == (s["with"] == s["without"])


def test_heldout_rows_see_the_readout_as_their_pipelines_do():
    """A held-out MRI row runs on readout-cropped k-space exactly when its pipeline does
    (``preprocess.remove_oversampling``; unset: classical methods crop, learned models do not),
    so a row's score and time are those of the pipeline a user runs; the shipped rows say which."""
    import json

    from mrirecon.heldout.protocol import MRI_METHODS, PIPELINE_ROWS, readout_cropped
    from mrirecon.pipeline.definitions import load_pipeline

    for name, (part, row) in PIPELINE_ROWS.items():
        if part == "mri":
            config, _ = load_pipeline(name)
            flag = config.preprocess.remove_oversampling
            assert readout_cropped(row) == (config.reconstruct.weights is None if flag is None else flag), name
    assert readout_cropped("pnp_dncnn_brain_sim") and readout_cropped("modl_fastmri_diverse")
    assert not readout_cropped("varnet_fastmri_diverse")
    assert all(readout_cropped(m) for m in ("zero_filled", "grappa"))  # no pipeline of their own
    rows = json.loads((PKG.parent / "benchmarks" / "heldout_results" / "heldout_mri.json").read_text())
    for table in rows.values():
        assert {m: r["readout_cropped"] for m, r in table.items()} == {m: readout_cropped(m) for m in MRI_METHODS}


def test_pipelines_run_the_parameters_of_their_heldout_rows():
    """A classical pipeline runs, at every acceleration / view count of the protocol, the
    parameters the validation split chose for its held-out row there (its
    ``params_by_acceleration`` / ``params_by_views`` entry under its ``params``, at the nominal
    rate and at a mask's effective one 4 % off), and a learned one the settings its row adds to
    the card's (the CT PnP's lam), so the README's rows are what ``mrirecon run`` gives. Until
    2026-12-04 ``mri_cs`` ran lam 1e-3 / 50 FISTA iterations (validation split 29.2 dB at 4x
    against the row's 35.1) and ``mri_retrospective`` lam 0.01 / 20 CG iterations, while their
    rows reported the tuned 1e-4 / 300 and 40 iterations; until 2026-12-05 every classical
    pipeline ran its 4x (30-view) setting on 8x (60-view) data as well (on the validation split
    -0.74 dB for L1-wavelet at 8x, -1.13 dB for CT TV at 60 views)."""
    from mrirecon.heldout.protocol import (CT_MODEL_PARAMS, CT_MODEL_TABLES, CT_PARAMS, MRI_MODEL_PARAMS,
                                           MRI_MODEL_TABLES, MRI_PARAMS, PIPELINE_ROWS)
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.param_tables import for_slice
    from mrirecon.recon import available

    checked, tabled = [], []
    for name, (part, row) in PIPELINE_ROWS.items():
        config, _ = load_pipeline(name)
        if config.reconstruct.weights is not None:  # a learned row: the card's settings and these
            given = (MRI_MODEL_PARAMS if part == "mri" else CT_MODEL_PARAMS).get(row, {})
            assert dict(config.reconstruct.params) == dict(given), name
            table = (MRI_MODEL_TABLES if part == "mri" else CT_MODEL_TABLES).get(row, {})
            for setting in MRI_PARAMS if part == "mri" else CT_PARAMS:  # its entry at each setting
                for value in (setting, setting / 1.04, setting * 1.04):
                    chosen = for_slice(config.reconstruct, value)
                    assert chosen.warning is None, (name, value)
                    assert dict(chosen.config.params) == {**table.get(setting, {}), **given}, (name, value)
            tabled += [name] if table else []
            continue
        assert row in available(), name
        for setting, methods in (MRI_PARAMS if part == "mri" else CT_PARAMS).items():
            tuned = methods.get(row)
            assert tuned is not None, f"{name}: the protocol has no validated parameters for {row}"
            for value in (setting, setting / 1.04, setting * 1.04):
                chosen = for_slice(config.reconstruct, value)
                assert chosen.warning is None and dict(chosen.config.params) == dict(tuned), \
                    (name, value)
        checked.append(name)
    assert sorted(checked) == ["ct_fbp", "ct_tv", "mri_cs", "mri_retrospective", "mri_tv"]
    assert sorted(tabled) == ["ct_pnp", "mri_pnp"]


def test_protocol_parameters_are_the_winners_of_the_shipped_tuning():
    """``MRI_PARAMS`` / ``CT_PARAMS`` (what the held-out rows and the classical pipelines run)
    are the ``best`` entries of ``benchmarks/heldout_results/tuned.json`` (the validation grids),
    for every classical method and setting the tuning holds, and each of those winners is a point
    of the current grid (``tune.MRI_GRID`` / ``CT_GRID``): a grid widened without re-tuning, or
    a protocol edited by hand, fails here."""
    import json

    from mrirecon.heldout.protocol import CT_PARAMS, MRI_PARAMS
    from mrirecon.heldout.tune import CT_GRID, MRI_GRID

    def plain(p):  # JSON has lists where the protocol has tuples
        return {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}

    tuned = json.loads((PKG.parent / "benchmarks" / "heldout_results" / "tuned.json").read_text())
    checked = []
    for part, params, grids, key in (("mri", MRI_PARAMS, MRI_GRID, float), ("ct", CT_PARAMS, CT_GRID, int)):
        for setting, methods in tuned[part].items():
            for method, res in methods.items():
                assert plain(params[key(setting)][method]) == res["best"], (part, setting, method)
                assert [plain(p) for p in grids[method]] == [g["params"] for g in res["grid"]], \
                    (part, setting, method)
                checked.append((part, setting, method))
    assert ("ct", "30", "tv_ct") in checked and ("mri", "8.0", "tv") in checked


def test_best_of_ranks_psnr_to_0_01_db_and_breaks_ties_by_ssim():
    """Two points 0.004 dB apart are a tie at the 0.01 dB the PSNR is ranked to: the better SSIM
    wins; 0.02 dB apart, the PSNR decides whatever the SSIM."""
    from mrirecon.heldout.tune import best_of

    a = {"params": {"lam": 1e-3}, "PSNR": 30.004, "SSIM": 0.80}
    b = {"params": {"lam": 3e-3}, "PSNR": 30.000, "SSIM": 0.81}
    assert best_of([a, b])["params"] == {"lam": 3e-3} == best_of([b, a])["params"]
    c = {"params": {"lam": 1e-2}, "PSNR": 30.020, "SSIM": 0.70}
    assert best_of([a, b, c])["params"] == {"lam": 1e-2}


def test_shipped_tuning_winners_follow_best_of():
    """Every ``best`` of ``tuned.json`` (classical methods, PnP and unroll schedules) is
    ``tune.best_of`` of its own grid: the documented rule (PSNR to 0.01 dB, ties by SSIM)
    is the one that chose them (CT TV at 60 views is such a tie: the raw-PSNR maximum is another
    point)."""
    import json

    from mrirecon.heldout.tune import best_of

    tuned = json.loads((PKG.parent / "benchmarks" / "heldout_results" / "tuned.json").read_text())
    checked = []

    def walk(node, where):
        if isinstance(node, dict) and "grid" in node:
            assert best_of(node["grid"])["params"] == node["best"], where
            checked.append(where)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, where + (key,))

    walk(tuned, ())
    assert {("ct", "60", "tv_ct"), ("mri", "4.0", "tv"), ("pnp_mri", "8.0"), ("pnp_ct", "30", "model")} \
        <= set(checked)


def test_mri_pnp_runs_the_chosen_points_of_its_shipped_grids():
    """``mri_pnp``'s per-acceleration DPIR schedules (``MRI_MODEL_TABLES``, ``mri_pnp.yaml``) are
    the ``chosen`` points of ``tuned.json``'s ``pnp_mri`` grids (``PNP_SETTINGS``), which the
    diverse-slice check picked (not always the validation ``best``: the card's
    ``schedule_per_acceleration``)."""
    import json
    import sys

    from mrirecon.heldout.protocol import MRI_MODEL_TABLES
    from mrirecon.training.weights import model_card

    sys.path.insert(0, str(PKG.parent / "benchmarks"))
    from heldout import PNP_SETTINGS

    res = json.loads((PKG.parent / "benchmarks" / "heldout_results" / "tuned.json").read_text())["pnp_mri"]
    card = model_card("pnp_dncnn_diverse")["model"]["params"]
    assert sorted(float(a) for a in res) == sorted(MRI_MODEL_TABLES["pnp_dncnn_diverse"]) == sorted(PNP_SETTINGS)
    for acc, r in res.items():
        runs = {**card, **MRI_MODEL_TABLES["pnp_dncnn_diverse"][float(acc)]}
        assert {k: runs[k] for k in r["chosen"]} == r["chosen"], acc
        assert r["chosen"] in [g["params"] for g in r["grid"]] or r["chosen"] == {k: card[k] for k in r["chosen"]}
        assert [g["params"] for g in r["grid"]] == PNP_SETTINGS[float(acc)], acc


def test_ct_pnp_runs_the_winners_of_its_shipped_grids():
    """``ct_pnp``'s DPIR schedule per view count (``CT_MODEL_PARAMS`` / ``CT_MODEL_TABLES``,
    ``ct_pnp.yaml``) on top of the card is the ``best`` of ``tuned.json``'s ``pnp_ct`` grid there,
    whose points are ``PNP_CT_SETTINGS`` and whose winner lies inside it (the first round had
    chosen among three points on one slice)."""
    import json
    import sys

    from mrirecon.heldout.protocol import CT_MODEL_PARAMS, CT_MODEL_TABLES
    from mrirecon.training.weights import model_card

    sys.path.insert(0, str(PKG.parent / "benchmarks"))
    from heldout import PNP_CT_SETTINGS

    tuned = json.loads((PKG.parent / "benchmarks" / "heldout_results" / "tuned.json").read_text())["pnp_ct"]
    assert sorted(int(v) for v in tuned) == sorted(PNP_CT_SETTINGS) == sorted(CT_MODEL_TABLES["pnp_dncnn_diverse"])
    for views, entry in tuned.items():
        res = entry["model"]
        runs = {**model_card("pnp_dncnn_diverse")["model"]["params"], **CT_MODEL_PARAMS["pnp_dncnn_diverse"],
                **CT_MODEL_TABLES["pnp_dncnn_diverse"][int(views)]}
        assert {k: runs[k] for k in res["best"]} == res["best"], views
        assert [g["params"] for g in res["grid"]] == PNP_CT_SETTINGS[int(views)] and res["at_edge"] == [], views
