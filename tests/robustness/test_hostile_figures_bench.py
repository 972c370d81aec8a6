"""Hostile inputs to the figures, the PNG writers, the benchmark's scoring and the notebooks'
results folder: a blank reference slice drew its figure's panels black; a volume wider than
tall (which ``mrirecon run`` scores) aborted ``mrirecon bench``, and so did any one volume it
could not score; complex / NaN / constant images reached the PNG writers unchecked; a missing
``MRIRECON_NB_OUT`` folder failed a notebook's last cell after minutes of work."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import ROOT, clone_h5

# ---- 1. figures of a slice whose reference is blank ---------------------------------------

FAST = ["reconstruct.method=zero_filled_rss", "reconstruct.params={}", "calibrate.method=none",
        "export.formats=[png]", "report.enabled=false", "undersample.enabled=true"]


def _strips(png: Path, panels: int) -> list[np.ndarray]:
    """The figure's RGB pixels, split into its ``panels`` equal-width columns (the middle rows:
    no titles, no suptitle)."""
    from matplotlib.image import imread

    rgb = imread(png)[..., :3]
    h, w = rgb.shape[:2]
    band = rgb[int(0.3 * h):int(0.8 * h)]
    return [band[:, i * w // panels:(i + 1) * w // panels] for i in range(panels)]


def _grey_levels(strip: np.ndarray) -> int:
    """Pixels of ``strip`` that are neither black nor white (an image with content)."""
    grey = strip.mean(-1)
    return int(((grey > 0.05) & (grey < 0.95)).sum())


def _coloured(strip: np.ndarray) -> int:
    """Pixels that are not grey (the magma error map, its colour bar)."""
    return int((np.ptp(strip, axis=-1) > 0.05).sum())


def test_figure_of_a_slice_with_a_blank_reference_is_not_black(mri_file, tmp_path, caplog):
    """reconstruction_rss[1] = 0: the metrics leave slice 1 out, but its figure took the grey
    window from that reference (0): reconstruction and zero-filled panels all black, and an
    "|error|" panel that showed the reconstruction itself."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    with h5py.File(mri_file) as h5:
        ref = h5["reconstruction_rss"][()]
    ref[1] = 0
    data = clone_h5(mri_file, tmp_path / "in" / "b.h5", reconstruction_rss=ref)
    out = tmp_path / "out"
    config = load_pipeline("mri_cs", FAST)[0]
    assert run_pipeline(config, [str(data)], out, progress=False) == 0
    assert "slice 1 is all zero while the reconstruction is not" in caplog.text
    good, blank = (_strips(out / "figures" / "b" / f"slice_{k:03d}.png", 4) for k in (0, 1))
    # slice 0 (a reference): every panel shows an image, the error map in colour
    assert all(_grey_levels(good[i]) > 100 for i in (0, 1, 3))
    assert _coloured(good[2]) > 100
    # slice 1: reconstruction and zero-filled input on their own window, not black
    assert _grey_levels(blank[0]) > 100 and _grey_levels(blank[3]) > 100
    # the blank reference is shown as it is (black), and no error map is drawn
    assert _grey_levels(blank[1]) < 10
    assert _coloured(blank[2]) == 0


def test_figures_show_slices_inside_the_volume_not_its_ends(mri_file, tmp_path):
    """The picks were np.linspace(0, n - 1, k): both end slices, often noise outside the
    anatomy (2 of 3 panels of a 40-slice brain), and slice 0 alone for one figure."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline
    from mrirecon.pipeline.volume import figure_slices

    assert figure_slices(40, 3) == [6, 20, 33] and figure_slices(40, 1) == [20]
    for n in range(1, 50):
        for most in range(1, 6):
            picks = figure_slices(n, most)
            assert len(set(picks)) == min(n, most) and 0 <= min(picks) and max(picks) < n
            if n >= 3 * most:  # room to stay off both ends
                assert 0 not in picks and n - 1 not in picks, (n, most, picks)
    out = tmp_path / "out"
    config = load_pipeline("mri_cs", [*FAST, "report.max_slices_in_figures=1"])[0]
    assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
    assert [p.name for p in (out / "figures" / mri_file.stem).iterdir()] == ["slice_001.png"]


def test_figure_with_a_non_finite_reference_slice_is_written(tmp_path):
    """A reference slice with NaN (evaluate disabled lets it reach the figures) set the
    window to NaN; the PNG writers now refuse NaN, so the panel says why instead."""
    from mrirecon.containers import Image, ImageGeometry
    from mrirecon.pipeline.volume import _figures

    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 24), indexing="ij")
    disc = ((yy**2 + xx**2) < 0.6).float() * (1 + yy)
    recon = torch.stack([disc, disc])
    geometry = ImageGeometry(spacing=(2.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                             orientation=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), slice_thickness=2.0)
    ref = recon.clone()
    ref[1, 3, 3] = float("nan")
    paths = _figures(Image(recon, geometry, kind="magnitude", modality="MR"), ref, None,
                     tmp_path / "fig", 8)
    assert len(paths) == 2
    strips = _strips(Path(paths[1]), 3)
    assert _grey_levels(strips[0]) > 100  # the reconstruction, on its own window
    assert _coloured(strips[2]) == 0  # no error map against a NaN reference


# ---- 3. the PNG writers ---------------------------------------------------------------------


def _img(seed=0):
    return np.random.default_rng(seed).random((16, 12)) + 0.1


@pytest.mark.parametrize("writer", ["save_png", "save_panel"])
def test_png_writers_refuse_complex_images(tmp_path, writer):
    """save_png wrote the real part (numpy's ComplexWarning only); save_panel failed in
    matplotlib ("minvalue must be less than or equal to maxvalue") when that part was < 0."""
    from mrirecon.io import png

    z = -_img() * np.exp(0.3j)  # real part negative everywhere
    target = tmp_path / "f.png"
    if writer == "save_png":
        with pytest.raises(TypeError, match=r"save_png: .*f\.png: image is complex \(complex128\); "
                                            r"a PNG shows real values: pass the magnitude"):
            png.save_png(z, target)
    else:
        with pytest.raises(TypeError, match=r"save_panel: .*f\.png: images\[1\] \('reference'\) is "
                                            r"complex"):
            png.save_panel([_img(), z], ["reconstruction", "reference"], target)
    assert not target.exists()
    # the magnitude, passed explicitly, is written
    assert getattr(png, writer)(*([np.abs(z)] if writer == "save_png" else
                                  ([np.abs(z)], ["magnitude"])), target).is_file()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_png_writers_refuse_nan_and_inf(tmp_path, bad):
    """One NaN pixel made save_png's whole PNG transparent, one Inf pixel made it black."""
    from mrirecon.io.png import save_panel, save_png

    img = _img()
    img[2, 3] = bad
    with pytest.raises(ValueError, match=r"save_png: .*a\.png: image has 1 NaN or Inf values; "
                                         r"nothing written"):
        save_png(img, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"save_panel: .*b\.png: images\[0\] \('x'\) has 1 NaN or "
                                         r"Inf values"):
        save_panel([img], ["x"], tmp_path / "b.png")
    assert not list(tmp_path.iterdir())


def test_png_constant_images_and_windows(tmp_path):
    """A constant image was drawn black whatever its value (a zero-width window); a vmax of 0
    drew every grey panel black without a word."""
    from matplotlib.image import imread

    from mrirecon.io.png import save_panel, save_png

    for value, grey in ((5.0, 1.0), (0.0, 0.0), (-2.0, 0.0)):
        path = save_png(np.full((8, 8), value), tmp_path / f"c{value}.png")
        np.testing.assert_allclose(imread(path)[..., :3], grey, atol=1e-6)
    ramp = np.linspace(0, 1, 64).reshape(8, 8)
    np.testing.assert_allclose(imread(save_png(ramp, tmp_path / "r.png"))[0, 0, :3], 0, atol=1e-6)
    with pytest.raises(ValueError, match=r"vmin \(1\) must be less than vmax \(1\)"):
        save_png(ramp, tmp_path / "w.png", vmin=1, vmax=1)
    with pytest.raises(ValueError, match=r"save_panel: .*p\.png: vmax must be a finite number > 0 "
                                         r"\(the grey panels show 0\.\.vmax\), got 0"):
        save_panel([ramp], ["x"], tmp_path / "p.png", vmax=0.0)
    with pytest.raises(ValueError, match=r"save_panel: .*p\.png: 2 images but 1 titles"):
        save_panel([ramp, ramp], ["x"], tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"images\[0\] \('x'\) must be a 2-D image \(H, W\), got "
                                         r"shape \(2, 8, 8\)"):
        save_panel([np.stack([ramp, ramp])], ["x"], tmp_path / "p.png")
    with pytest.raises(ValueError, match=r"save_panel: .*p\.png: no images given"):
        save_panel([], [], tmp_path / "p.png")
    assert not (tmp_path / "p.png").exists() and not (tmp_path / "w.png").exists()
    # an all-zero error map and a text panel are drawn
    assert save_panel([ramp, np.zeros((8, 8)), "not available"], ["a", "|error|", "b"],
                      tmp_path / "ok.png", error_index=1).is_file()


# ---- 2. the benchmark: one crop rule with `mrirecon run`, unscorable volumes skipped --------


def _fastmri(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """fastmri.evaluate's metrics after its crop; a target wider than tall (which its
    center_crop refuses) whole."""
    fastmri_evaluate = pytest.importorskip("fastmri.evaluate")
    from fastmri.data.transforms import center_crop

    h, w = target.shape[-2:]
    if h >= w:
        target, pred = (center_crop(torch.from_numpy(a), (w, w)).numpy() for a in (target, pred))
    return {"NMSE": fastmri_evaluate.nmse(target, pred), "PSNR": fastmri_evaluate.psnr(target, pred),
            "SSIM": fastmri_evaluate.ssim(target, pred)}


def test_fastmri_crop_rule():
    from mrirecon.metrics import crop_to_target, fastmri_crop

    assert fastmri_crop((2, 640, 368)) == (368, 368)
    assert fastmri_crop((320, 320)) == (320, 320)
    assert fastmri_crop((2, 40, 64)) == (40, 64)  # fastMRI refuses it; scored whole
    gt = np.arange(2 * 4 * 6, dtype=np.float64).reshape(2, 4, 6)
    pred = np.arange(2 * 6 * 8, dtype=np.float64).reshape(2, 6, 8)
    g, p = crop_to_target(gt, pred)  # the prediction cropped to the target's shape
    np.testing.assert_array_equal(g.numpy(), gt)
    np.testing.assert_array_equal(p.numpy(), pred[:, 1:5, 1:7])


def test_bench_scores_a_wide_volume_as_run_does(mri_file, tmp_path):
    """A 40 x 64 volume that `mrirecon run` scores whole failed the benchmark after its
    reconstruction ("target of shape (2, 40, 64) is smaller than the crop (64, 64)"), no table
    written; the tall volume's scores keep fastMRI's crop."""
    from mrirecon.bench.mri import run_bench
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.volume import evaluate

    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mri_file, data / "tall.h5")  # 32 x 24
    (wide,) = simulate_mri_dataset(tmp_path / "sim", volumes=1, slices=2, coils=2, size=(24, 32),
                                   seed=3, resolution=2)
    shutil.copy(wide, data / "wide.h5")
    seen = {}
    table = run_bench(data, accelerations=[4], methods="zero_filled", output_dir=tmp_path / "out",
                      progress=False, verbose=False, center_fractions={4.0: 0.16},
                      on_record=lambda rec, pred: seen.setdefault(rec["volume"], (rec, pred)))
    assert table.row("zero_filled", 4).volumes == 2 and not table.skipped
    assert (tmp_path / "out" / "bench_table.md").is_file()
    for name, shape in (("tall.h5", (2, 32, 24)), ("wide.h5", (2, 24, 32))):
        rec, pred = seen[name]
        with h5py.File(data / name) as h5:
            target = h5["reconstruction_rss"][()]
        assert target.shape == pred.shape == shape
        ref = _fastmri(target, pred)
        run = evaluate(torch.from_numpy(target), torch.from_numpy(pred), crop=True)  # run's path
        for m in ("NMSE", "PSNR", "SSIM"):
            assert rec[m] == pytest.approx(ref[m], rel=1e-6, abs=1e-9), (name, m)
            assert rec[m] == pytest.approx(run[m.lower()], rel=1e-9, abs=1e-12), (name, m)


def test_bench_skips_a_volume_it_cannot_score_and_tables_the_others(mri_file, tmp_path, caplog):
    """One volume whose target is on another grid aborted the whole benchmark (exit 2, no
    table); it is now skipped, warned about and listed under the table of the others. A run in
    which no volume can be scored still fails with the volume's own error."""
    from mrirecon.bench.mri import run_bench
    from mrirecon.cli import main

    with h5py.File(mri_file) as h5:
        ref = h5["reconstruction_rss"][()]
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mri_file, data / "a_good.h5")
    clone_h5(mri_file, data / "b_bad.h5", reconstruction_rss=np.ascontiguousarray(ref[:, 2:-2, 2:-2]))
    why = (r"b_bad.h5: reconstruction_rss: the reference image of slice 0 is \(28, 20\), the "
           r"postprocessed output is \(32, 24\); the target must be the image on the output's grid")
    out = tmp_path / "out"
    kwargs = dict(accelerations=[4], methods="zero_filled", progress=False, verbose=False,
                  center_fractions={4.0: 0.16})
    table = run_bench(data, output_dir=out, **kwargs)
    row = table.row("zero_filled", 4)
    assert row.volumes == 1 and [r["volume"] for r in table.records] == ["a_good.h5"]
    (line,) = table.skipped
    assert line.startswith("b_bad.h5 at 4x (zero_filled): ") and re.search(why, line)
    md = (out / "bench_table.md").read_text()
    assert "Skipped volumes (not scored, not in the rows above):\n- b_bad.h5 at 4x" in md
    assert "b_bad.h5" not in (out / "bench_volumes.csv").read_text()
    assert any("skipped: the table scores the other volumes" in r.getMessage()
               and "b_bad.h5" in r.getMessage() for r in caplog.records)
    # the command line: the table written, exit 1 (as `run` when an input fails: the means are
    # over fewer volumes than were given)
    assert main(["bench", "--data", str(data), "--output", str(tmp_path / "cli"), "--accelerations",
                 "4", "--center-fractions", "0.16", "--methods", "zero_filled", "--no-progress"]) == 1
    assert "b_bad.h5 at 4x" in (tmp_path / "cli" / "bench_table.md").read_text()
    # nothing scorable: the volume's own error, as before
    (data / "a_good.h5").unlink()
    with pytest.raises(ValueError, match=why):
        run_bench(data, output_dir=tmp_path / "none", **kwargs)
    assert not (tmp_path / "none" / "bench_table.md").exists()


# ---- 4. the notebooks' results folder -------------------------------------------------------


def test_results_folder_is_created_or_refused_clearly(tmp_path):
    from mrirecon.viz import results_folder

    assert results_folder(None) is None and results_folder("") is None
    nested = tmp_path / "a" / "b"
    assert results_folder(str(nested)) == nested and nested.is_dir()
    assert list(nested.iterdir()) == []  # the write check leaves nothing behind
    afile = tmp_path / "file.json"
    afile.write_text("{}")
    with pytest.raises(NotADirectoryError, match=r"MRIRECON_NB_OUT='.*file\.json': .*is a file, "
                                                 r"not a folder"):
        results_folder(str(afile))
    with pytest.raises(NotADirectoryError, match=r"MRIRECON_NB_OUT='.*file\.json/sub': cannot "
                                                 r"create the results folder"):
        results_folder(str(afile / "sub"))
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(PermissionError, match=r"cannot create or write to the results folder"):
            results_folder(str(locked / "x"))


NOTEBOOK_SOURCES = sorted((ROOT / "notebooks" / "src").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("source", NOTEBOOK_SOURCES, ids=lambda p: p.stem[:2])
def test_notebooks_check_their_results_folder_before_any_work(source, tmp_path):
    """MRIRECON_NB_OUT naming a folder that does not exist failed notebooks 01, 04, 06 on their
    last cell with a raw FileNotFoundError (04 after 402 s of benchmark): every notebook now
    resolves it in its first code cell, creating a missing folder and failing at once on a path
    it cannot use."""
    code = source.read_text()
    call = code.index("results_folder(os.environ.get(\"MRIRECON_NB_OUT\"))")
    start = code.index("\n# %%\n")  # the first code cell
    assert start < call < code.index("\n# %%", start + 1)
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    env = {**os.environ, "MRIRECON_NB_QUICK": "1", "MPLBACKEND": "Agg",
           "MRIRECON_NB_OUT": str(blocker / "out"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run([sys.executable, str(source)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    assert "NotADirectoryError: MRIRECON_NB_OUT=" in run.stderr
    assert "cannot create the results folder" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # nothing else written
