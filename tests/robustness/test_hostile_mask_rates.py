"""Undersampling rates that were said wrongly, or masks that could not be drawn, found by an audit
of the sampling masks:

* ``mrirecon bench`` took a centre fraction that alone kept more than ``1 / R`` of the columns
  (``--accelerations 8 --center-fractions 0.5``: 32 of 64 columns in a row labelled 8x), which
  ``mrirecon run`` refuses at load;
* the bench's rows and a one-pair ``run`` said only the nominal factor (fastMRI's "8x" keeps 11
  of 64 columns, 5.82x);
* a learned model's training-range check, and the range a trained model's card states, counted
  the header's padding columns as undersampled ones;
* the CT views note said "the data hold 20 views" of a 60-view file that kept every 3rd;
* acceleration 1 was taken (a "1x" mask of 32 of 33 columns; "undersample.enabled is false"
  said of a run with it true), and accelerations above the column count ended in numpy's words;
* the calibration block of ``poisson_disc`` / ``variable_density`` missed the DC sample for an
  odd block on an even grid.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import cli_exit, simulated_ct_dir

W = 64
PADDING = (12, 52)  # acquired columns of the padded file: 40 of 64, centred on W // 2


def _pad(path: Path, padding: tuple[int, int] = PADDING) -> Path:
    """Give a simulated fastMRI file knee-like phase-encoding padding: the header's
    encodingLimits/kspace_encoding_step_1 say columns ``[left, right)`` were acquired, and the
    k-space outside them is zero (as fastMRI's knee files store it)."""
    left, right = padding
    with h5py.File(path, "r+") as f:
        xml = f["ismrmrd_header"][()].decode()
        block = re.search(r"<kspace_encoding_step_1>.*?</kspace_encoding_step_1>", xml, re.S).group(0)
        new = re.sub(r"<minimum>\d+</minimum>", "<minimum>0</minimum>", block)
        new = re.sub(r"<maximum>\d+</maximum>", f"<maximum>{right - left - 1}</maximum>", new)
        new = re.sub(r"<center>\d+</center>", f"<center>{W // 2 - left}</center>", new)
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = xml.replace(block, new).encode()
        k = f["kspace"][()]
        k[..., :left] = 0
        k[..., right:] = 0
        f["kspace"][...] = k
    return path


@pytest.fixture(scope="module")
def sim64(tmp_path_factory) -> Path:
    """Two fully sampled 2-coil volumes of one 64 x 64 slice each."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("sim64")
    simulate_mri_dataset(out, volumes=2, slices=1, coils=2, size=(W, W), seed=0, resolution=2)
    return out


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Path:
    """A folder of one fully sampled 64 x 64 volume whose header acquires columns [12, 52)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("padded")
    (path,) = simulate_mri_dataset(out, volumes=1, slices=1, coils=2, size=(W, W), seed=1,
                                   resolution=2)
    _pad(Path(path))
    return out


def _sampled(rec: dict) -> int:
    from mrirecon.bench.table import decode_mask

    return int(decode_mask(rec["mask"], rec["mask_width"]).sum())


# ---- F1: the bench's (centre fraction, acceleration) pairs -----------------------------------


@pytest.mark.parametrize("mask_type, fraction, acc", [("random", 0.5, 8), ("equispaced", 0.5, 8),
                                                      ("equispaced_fraction", 0.25, 4)])
def test_bench_refuses_a_centre_band_that_alone_exceeds_the_factor(sim64, tmp_path, mask_type,
                                                                   fraction, acc):
    """Was: random / equispaced exit 0 with rows labelled 8x from 32 / 36 of 64 columns;
    equispaced_fraction failed every volume in the mask function's words, naming no option."""
    from mrirecon.bench import run_bench

    with pytest.raises(ValueError, match=rf"run_bench: center_fractions: {fraction:g} at "
                                         rf"acceleration {acc}: keeps at least 1 / {acc} .* "
                                         rf"use a fraction below {1 / acc:.3g}"):
        run_bench(sim64, methods="zero_filled", accelerations=[acc], mask_type=mask_type,
                  center_fractions={acc: fraction}, output_dir=tmp_path / "out", progress=False,
                  verbose=False)
    assert not (tmp_path / "out" / "bench_table.md").exists()


def test_bench_cli_refuses_the_pair_and_acceleration_1(sim64, tmp_path, capsys):
    """The CLI goes through the same check: exit 2 before any volume is read."""
    base = ["bench", "--data", str(sim64), "--methods", "zero_filled", "--no-progress",
            "--max-volumes", "1"]
    assert cli_exit(*base, "-o", str(tmp_path / "a"), "--accelerations", "4",
                    "--center-fractions", "0.25") == 2
    assert "center_fractions: 0.25 at acceleration 4: keeps at least 1 / 4" in capsys.readouterr().err
    assert cli_exit(*base, "-o", str(tmp_path / "b"), "--accelerations", "1") == 2
    err = capsys.readouterr().err
    assert "accelerations: must be a finite number above 1, got 1.0" in err
    assert not list(tmp_path.glob("*/bench_table.*"))


# ---- F2: achieved rates beside the nominal factor --------------------------------------------


@pytest.mark.parametrize("mask_type", ["equispaced", "random"])
def test_bench_rows_say_the_achieved_acceleration(sim64, tmp_path, mask_type):
    """The row keeps the nominal factor as its label and gives the mean over volumes of
    acquirable / sampled columns beside it (CSV, Markdown, per volume). Was: "8x" only, for
    masks of 11 of 64 columns (5.82x) or 7 (9.14x)."""
    from mrirecon.bench import run_bench

    table = run_bench(sim64, methods="zero_filled", accelerations=[4, 8], mask_type=mask_type,
                      output_dir=tmp_path, progress=False, verbose=False)
    for acc in (4, 8):
        recs = [r for r in table.records if r["acceleration"] == acc]
        rates = [W / _sampled(r) for r in recs]
        assert len(rates) == 2 and all(r["acquirable_columns"] == W for r in recs)
        row = table.row("zero_filled", acc)
        assert row.acceleration == acc
        assert row.achieved == pytest.approx(np.mean(rates), rel=1e-12)
    assert table.row("zero_filled", 8).achieved != 8  # the centre band: not the label
    rows = list(csv.DictReader(io.StringIO((tmp_path / "bench_table.csv").read_text())))
    assert [(r["acceleration"], float(r["achieved_acceleration_mean"])) for r in rows] == \
        [(f"{a}", table.row("zero_filled", a).achieved) for a in (4, 8)]
    md = (tmp_path / "bench_table.md").read_text().splitlines()
    assert "| acceleration (nominal) | achieved (acquirable / sampled columns, mean) |" in md[0]
    assert f"| zero_filled | 8x | {table.row('zero_filled', 8).achieved:.2f}x | 2 |" in md[3]
    vols = list(csv.DictReader(io.StringIO((tmp_path / "bench_volumes.csv").read_text())))
    for v in vols:
        n = len(v["sampled_columns"].split())
        assert float(v["achieved_acceleration"]) == pytest.approx(W / n, rel=1e-12)


def test_bench_achieved_rate_leaves_the_padding_out(padded, tmp_path):
    """On a file acquiring 40 of its 64 columns the rate is 40 / sampled, as ``run`` chooses its
    parameters and as the training-range check now counts."""
    from mrirecon.bench import run_bench

    table = run_bench(padded, methods="zero_filled", accelerations=[4], output_dir=None,
                      progress=False, verbose=False)
    (rec,) = table.records
    assert rec["acquirable_columns"] == PADDING[1] - PADDING[0]
    assert table.rows[0].achieved == pytest.approx(40 / _sampled(rec), rel=1e-12)


def test_old_records_without_acquirable_columns_say_n_a():
    """Records of results.jsonl from before the field (resumed) give no achieved rate rather
    than the full width's, which is wrong on padded files; CT records need none."""
    from mrirecon.bench.table import build_table, encode_mask

    mask = torch.zeros(W, dtype=torch.bool)
    mask[::4] = True
    rec = {"method": "m", "acceleration": 4.0, "volume": "v.h5", "slices": 1, "NMSE": 0.1,
           "PSNR": 30.0, "SSIM": 0.9, "seconds_per_slice": 1.0, "num_params": 0,
           "mask": encode_mask(mask), "mask_width": W}
    table = build_table([rec], ["m"], [4.0])
    assert table.rows[0].achieved is None and "| m | 4x | n/a | 1 |" in table.to_markdown()
    ct = build_table([rec], ["m"], [4.0], challenge="ct")
    assert ct.rows[0].achieved == 4.0 and "| m | 4x | 4.00x | 1 |" in ct.to_markdown()


def test_a_one_pair_run_notes_its_achieved_rate(mri_file, tmp_path):
    """Was: only several configured pairs got the drawn-mask note; one pair wrote no achieved
    rate anywhere (provenance, report, metrics)."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline
    from mrirecon.sampling import EquispacedFractionMask, file_seed

    sets = ["undersample.enabled=true", "undersample.accelerations=[4]",
            "undersample.center_fractions=[0.08]", "reconstruct.method=zero_filled_rss",
            "calibrate.method=none", "reconstruct.params_by_acceleration={}",
            "export.formats=[hdf5]", "report.enabled=false"]
    config = load_pipeline("mri_retrospective", sets)[0]
    assert run_pipeline(config, [str(mri_file)], tmp_path, progress=False) == 0
    (entry,) = json.loads((tmp_path / "provenance.json").read_text())["files"]
    mask, num_low = EquispacedFractionMask([0.08], [4]).sample_vector(24, seed=file_seed(mri_file))
    n = int(mask.sum())
    (note,) = [x for x in entry["notes"] if "undersample:" in x]
    assert note.endswith(f"undersample: the 4x mask (nominal) with centre fraction 0.08 "
                         f"({num_low} centre columns): {n} of 24 acquirable columns, "
                         f"{24 / n:.2f}x achieved")


# ---- F3: padding columns are not undersampled ------------------------------------------------


def test_training_range_check_counts_acquirable_columns():
    """``warn_slice_outside_range`` took W / sampled: 128 / 15 = 8.53x, "outside the modl
    training range 4 .. 8", for a mask of 15 of the 104 acquired columns (6.93x)."""
    from types import SimpleNamespace

    from mrirecon.containers import Header
    from mrirecon.pipeline.model_range import warn_slice_outside_range
    from mrirecon.pipeline.schema import PipelineConfig
    from mrirecon.pipeline.slice_mri import MRISlice

    header = Header(encoded_matrix=(128, 128, 1), recon_matrix=(128, 128, 1), padding_left=12,
                    padding_right=116)
    mask = torch.zeros(128, dtype=torch.bool)
    mask[np.r_[20:116:8, 62, 63, 64]] = True  # 12 + 3 = 15 columns, all inside [12, 116)
    mask[:12] = mask[116:] = False
    s = MRISlice(torch.zeros(2, 128, 128, dtype=torch.complex64), mask, header, "k.h5", 0)
    model = SimpleNamespace(model_card={"model": {"name": "m"},
                                        "training_range": {"accelerations": [4, 8]}})
    assert warn_slice_outside_range(PipelineConfig(name="t", modality="mri"), model, s) == []
    model = SimpleNamespace(model_card={"model": {"name": "m"},
                                        "training_range": {"accelerations": [2, 3]}})
    (msg,) = warn_slice_outside_range(PipelineConfig(name="t", modality="mri"), model, s)
    assert msg.startswith(f"acceleration {104 / 15:g} is outside the m training range 2 .. 3")


def test_trained_card_range_counts_acquirable_columns(padded):
    """The card ``mrirecon train`` writes states the rates its masks had on the acquired
    columns (what ``get`` hands the model and ``run`` later compares): each drawn mask's
    40 / sampled lies inside it. Was: 64 / sampled of a mask over the whole width (about 4.0
    for 4x), while the masks trained on were 3.1-3.3x."""
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet

    ts = MRITrainingSet(padded, MaskConfig(type="equispaced_fraction", center_fractions=(0.08,),
                                           accelerations=(4,)))
    lo, hi = ts.training_range()["accelerations"]
    for seed in range(4):
        sample = ts.get(0, mask_seed=seed)
        assert not sample.mask[:PADDING[0]].any() and not sample.mask[PADDING[1]:].any()
        rate = (PADDING[1] - PADDING[0]) / int(sample.mask.sum())
        assert lo - 1e-4 <= rate <= hi + 1e-4, (seed, rate, lo, hi)


# ---- F4: the CT views note --------------------------------------------------------------------


def test_ct_views_note_says_what_was_kept_of_what(tmp_path):
    """21 of 60 views: every 3rd is kept, 20 views. Was: "undersample.views=21: the data hold 20
    views, fewer, so all 20 were kept" (the count after the cut)."""
    data = simulated_ct_dir(tmp_path / "ct", views=60, size=16, seed=0)
    out = tmp_path / "out"
    assert cli_exit("run", "ct_fbp", "-i", str(data), "-o", str(out), "--no-progress", "--set",
                    "undersample.enabled=true", "--set", "undersample.views=21",
                    "--set", "export.formats=[hdf5]") == 0
    for entry in json.loads((out / "provenance.json").read_text())["files"]:
        views = [n for n in entry["notes"] if "undersample.views" in n]
        assert views and all("undersample.views=21: every 3rd of the 60 views kept: 20 views "
                             "(21 asked)" in n for n in views), views
        assert not any("the data hold" in n for n in entry["notes"])


def test_ct_views_note_is_silent_when_the_count_is_met():
    from mrirecon.pipeline.schema import UndersampleConfig
    from mrirecon.pipeline.ct_consistency import views_note

    assert views_note(60, 2, 30, UndersampleConfig(enabled=True, views=30)) is None
    assert views_note(60, 1, 60, UndersampleConfig(enabled=True, views=100)) == (
        "undersample.views=100: the data hold 60 views, fewer, so all 60 were kept")
    assert "every 11th of the 1000 views kept: 91 views (90 asked)" in views_note(
        1000, 11, 91, UndersampleConfig(enabled=True, views=90))


# ---- F5: acceleration 1 ------------------------------------------------------------------------


def test_simulate_refuses_acceleration_1(tmp_path, capsys):
    """Was: a "1x" file whose mask kept 32 of 33 columns (fastMRI's arange(offset, W - 1))."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    with pytest.raises(ValueError, match=r"acceleration \(--acceleration\): must be a finite "
                                         r"number above 1, got 1 .*leave it out"):
        simulate_mri_dataset(tmp_path / "lib", volumes=1, slices=1, coils=2, size=(32, 33),
                             acceleration=1, resolution=2)
    assert cli_exit("simulate", "mri", "--out", str(tmp_path / "cli"), "--volumes", "1",
                    "--slices", "1", "--coils", "2", "--size", "32", "33",
                    "--template-resolution", "2", "--acceleration", "1") == 2
    assert "must be a finite number above 1" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.h5"))


def test_run_refuses_acceleration_1_at_load():
    from mrirecon.core.config import ConfigError
    from mrirecon.pipeline.definitions import load_pipeline

    with pytest.raises(ConfigError, match=r"undersample.accelerations\[0\]: must be a finite "
                                          r"number above 1, got 1 .*set undersample.enabled=false"):
        load_pipeline("mri_retrospective", ["undersample.accelerations=[1]",
                                            "undersample.mask=random"])
    # with undersampling off the factor is never read: a config that says 1 loads as before
    config = load_pipeline("mri_cs", ["undersample.enabled=false", "undersample.accelerations=[1]",
                                      "undersample.center_fractions=[0.08]"])[0]
    assert list(config.undersample.accelerations) == [1]


def test_a_mask_that_keeps_every_column_is_not_said_to_be_undersampling_off(tmp_path):
    """A file acquiring only columns [20, 44) of 64, undersampled at 2x with centre fraction
    0.45: the 29-column centre band holds every acquired column. Was: "the k-space is fully
    sampled and undersample.enabled is false" of a run with it true."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    (path,) = simulate_mri_dataset(tmp_path / "in", volumes=1, slices=1, coils=2, size=(W, W),
                                   seed=2, resolution=2)
    _pad(Path(path), (20, 44))
    sets = ["undersample.enabled=true", "undersample.accelerations=[2]",
            "undersample.center_fractions=[0.45]", "reconstruct.method=zero_filled_rss",
            "calibrate.method=none", "reconstruct.params_by_acceleration={}",
            "export.formats=[hdf5]", "report.enabled=false"]
    assert run_pipeline(load_pipeline("mri_retrospective", sets)[0], [str(path)],
                        tmp_path / "out", progress=False) == 0
    (entry,) = json.loads((tmp_path / "out" / "provenance.json").read_text())["files"]
    (warning,) = [w for w in entry["warnings"] if "fully sampled" in w]
    assert "undersample.enabled is false" not in warning
    assert "the undersample.mask=equispaced_fraction mask at undersample.accelerations=[2] kept " \
           "every acquirable column" in warning
    assert any("24 of 24 acquirable columns, 1.00x achieved" in n for n in entry["notes"])


# ---- F6: accelerations above the column count ------------------------------------------------


@pytest.mark.parametrize("mask_type", ["random", "equispaced", "equispaced_fraction", "magic",
                                       "magic_fraction"])
@pytest.mark.parametrize("acc", [65, 1e20, 1e308])
@pytest.mark.parametrize("fraction", [0.0, 0.04])
def test_mask_functions_refuse_accelerations_above_the_width(mask_type, acc, fraction):
    """Was: "high is out of bounds for int64", "cannot convert float NaN / infinity to
    integer", or an all-zero mask (random and others with centre fraction 0)."""
    from mrirecon.sampling import create_mask_for_mask_type

    fn = create_mask_for_mask_type(mask_type, [fraction], [acc])
    with pytest.raises(ValueError, match=re.escape(f"acceleration {acc:g} is above the number "
                                                   f"of k-space columns, {W}: ") +
                       f".*must be at most {W}"):
        fn(W, seed=1)


def test_the_width_is_the_largest_acceleration():
    """``W`` keeps one column (offset anywhere in ``[0, W)``), ``W + 1`` is refused. Was: at
    ``W + 1`` "offset must be an integer in [0, 65)" of an offset never given."""
    from mrirecon.sampling import create_mask_for_mask_type

    for offset in (0, W - 1):
        mask = create_mask_for_mask_type("equispaced", [0.0], [W])(W, seed=1, offset=offset)
        assert mask.nonzero().flatten().tolist() == [offset]
    with pytest.raises(ValueError, match=f"must be at most {W}"):
        create_mask_for_mask_type("equispaced", [0.0], [W + 1])(W, seed=1)


@pytest.mark.parametrize("acc", ["1e20", "1e308", "33"])
def test_simulate_refuses_accelerations_above_the_width(tmp_path, capsys, acc):
    """Was: "error: high is out of bounds for int64" (1e20), "internal error: OverflowError:
    cannot convert float infinity to integer" (1e308, exit 1); checked before any simulation."""
    assert cli_exit("simulate", "mri", "--out", str(tmp_path), "--volumes", "1", "--slices", "1",
                    "--coils", "2", "--size", "32", "32", "--template-resolution", "2",
                    "--acceleration", acc) == 2
    err = capsys.readouterr().err
    assert f"acceleration (--acceleration) {float(acc):g} is above the 32 k-space columns " \
           "(--size)" in err and "internal error" not in err
    assert not list(tmp_path.glob("*.h5"))


# ---- F7: the calibration block of the 2-D masks holds DC -------------------------------------


@pytest.mark.parametrize("shape, calib", [((32, 32), (1, 1)), ((32, 32), (5, 5)),
                                          ((64, 48), (3, 7)), ((33, 32), (5, 5))])
def test_calibration_block_is_espirits_block_around_dc(shape, calib):
    """The block is the one ESPIRiT calibrates on (``N // 2 - n // 2`` on): sigpy's formula put
    an odd block on an even grid one row / column low, the (1, 1) block off DC. Blocks sigpy
    places there too (even blocks, odd grids) stay where they were."""
    from mrirecon.calib.espirit import calibration_region as espirit_block
    from mrirecon.sampling.nonuniform import calibration_region

    def expected(shape, calib):
        index = torch.arange(shape[0] * shape[1]).reshape(shape)
        out = np.zeros(shape, dtype=bool)
        out.reshape(-1)[espirit_block(index, calib).reshape(-1).numpy()] = True
        return out

    region = calibration_region(shape, calib)
    np.testing.assert_array_equal(region, expected(shape, calib))
    assert region[shape[0] // 2, shape[1] // 2]
    even = tuple(c + c % 2 for c in calib)  # sigpy's rows int(N / 2 - n / 2) on
    sigpy = np.zeros(shape, dtype=bool)
    sigpy[int(shape[0] / 2 - even[0] / 2):int(shape[0] / 2 + even[0] / 2),
          int(shape[1] / 2 - even[1] / 2):int(shape[1] / 2 + even[1] / 2)] = True
    np.testing.assert_array_equal(calibration_region(shape, even), sigpy)


def test_two_d_masks_sample_dc_with_a_one_sample_block():
    """Was: DC unsampled in 9 of 20 variable_density((32, 32), 8, (1, 1)) masks and 7 of 10
    poisson_disc((32, 32), 4, (1, 1)) masks."""
    from mrirecon.sampling import poisson_disc, variable_density

    assert all(bool(variable_density((32, 32), 8, (1, 1), seed=i)[16, 16]) for i in range(20))
    assert all(bool(poisson_disc((32, 32), 4, (1, 1), seed=i)[16, 16]) for i in range(4))
