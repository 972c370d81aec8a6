"""`mrirecon bench --challenge ct`: methods x sparse-view factors on LoDoPaB-layout data, through
the pipeline's stages and the benchmark's table writer (resume, --device, the same table)."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import h5py
import pytest

from tests.helpers import simulated_ct_dir
from mrirecon.bench import run_ct_bench
from mrirecon.cli import main
from mrirecon.pipeline import stages_ct


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory) -> Path:
    return simulated_ct_dir(tmp_path_factory.mktemp("ctbench"), views=60, size=48, seed=5)


def test_table_rows_metrics_and_files(ct_dir, tmp_path):
    table = run_ct_bench(ct_dir, (3,), "fbp,sirt", output_dir=tmp_path, progress=False,
                         params={"sirt": {"iterations": 30}})
    assert table.challenge == "ct"
    assert [(r.method, r.acceleration, r.volumes) for r in table.rows] == [("fbp", 3.0, 1),
                                                                           ("sirt", 3.0, 1)]
    md = (tmp_path / "bench_table.md").read_text()
    assert md == table.to_markdown() and "| fbp | 3x | 3.00x | 1 |" in md
    vols = list(csv.DictReader(io.StringIO((tmp_path / "bench_volumes.csv").read_text())))
    assert [v["method"] for v in vols] == ["fbp", "sirt"]
    assert {v["mask_type"] for v in vols} == {"sparse_view"}
    assert [v["reference_notes"] for v in vols] == ["", ""]  # the reference checks pass here
    # the record's mask is the kept views: every 3rd of 60
    assert vols[0]["sampled_columns"] == " ".join(str(i) for i in range(0, 60, 3))
    psnr = {v["method"]: float(v["PSNR"]) for v in vols}
    assert psnr["sirt"] > psnr["fbp"]  # iterative beats FBP at 20 views
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2


def test_metrics_match_direct_computation(ct_dir):
    from mrirecon.io.lodopab import MU_MAX_PER_MM, LoDoPaBFiles
    from mrirecon.metrics import nmse, psnr, ssim
    from mrirecon.operators.fbp import fbp
    from mrirecon.sampling import sparse_view

    seen = []
    table = run_ct_bench(ct_dir, (2,), ["fbp"], progress=False,
                         on_record=lambda rec, pred: seen.append((rec, pred)))
    files = LoDoPaBFiles(ct_dir, "test")
    geometry, idx = sparse_view(files.geometry, 2)
    recs, refs = [], []
    for k in range(len(files)):
        sino = files.sinogram(k).data[0][..., idx, :]
        recs.append(fbp(sino.double(), geometry, filter="ram-lak").float().numpy() / MU_MAX_PER_MM)
        refs.append(files.attenuation(k).data[0].numpy() / MU_MAX_PER_MM)
    ref, rec = np.stack(refs).astype(np.float64), np.stack(recs).astype(np.float64)
    (record, pred), = seen
    # float32 reconstructions scored in float64: agreement to float32 rounding of the images
    np.testing.assert_allclose(pred, np.stack(recs), rtol=1e-5, atol=1e-6 * float(np.abs(rec).max()))
    assert record["PSNR"] == pytest.approx(psnr(ref, rec), abs=1e-3)
    assert record["NMSE"] == pytest.approx(nmse(ref, rec), rel=1e-4)
    assert record["SSIM"] == pytest.approx(ssim(ref, rec), abs=1e-4)
    assert table.row("fbp", 2).mean["PSNR"] == record["PSNR"]


def test_ct_bench_resumes_and_no_resume_recomputes(ct_dir, tmp_path, monkeypatch):
    calls = []
    original = stages_ct.reconstruct  # the pipeline's CT reconstruct stage

    def counting(s, cfg, model):
        calls.append((cfg.method, s.file_name, s.index))
        return original(s, cfg, model)

    monkeypatch.setattr(stages_ct, "reconstruct", counting)
    out = tmp_path / "out"
    first = run_ct_bench(ct_dir, (2,), "fbp,sirt", output_dir=out, progress=False,
                         params={"sirt": {"iterations": 5}})
    assert sorted({c[0] for c in calls}) == ["fbp", "sirt"] and len(calls) == 4  # 2 slices each
    calls.clear()
    again = run_ct_bench(ct_dir, (2,), "fbp,sirt", output_dir=out, progress=False,
                         params={"sirt": {"iterations": 5}})
    assert calls == [] and again.to_csv() == first.to_csv()
    # changed settings of one method recompute that method only
    run_ct_bench(ct_dir, (2,), "fbp,sirt", output_dir=out, progress=False,
                 params={"sirt": {"iterations": 6}})
    assert {c[0] for c in calls} == {"sirt"}
    calls.clear()
    run_ct_bench(ct_dir, (2,), "fbp,sirt", output_dir=out, progress=False, resume=False,
                 params={"sirt": {"iterations": 5}})
    assert sorted({c[0] for c in calls}) == ["fbp", "sirt"]
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2  # --no-resume starts the results file afresh
    # other data under the same file names (was: the old scores reused, the old table printed)
    other = tmp_path / "other"
    shutil.copytree(ct_dir, other)
    for f in other.glob("observation_*.hdf5"):
        with h5py.File(f, "r+") as h5:
            h5["data"][...] = h5["data"][()] * 1.1
    calls.clear()
    changed = run_ct_bench(other, (2,), "fbp,sirt", output_dir=out, progress=False,
                           params={"sirt": {"iterations": 5}})
    assert sorted({c[0] for c in calls}) == ["fbp", "sirt"]
    assert changed.to_csv() != first.to_csv()


def test_cli_ct_device_resume_and_refused_options(ct_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["bench", "--challenge", "ct", "--data", str(ct_dir), "--output", str(out),
            "--accelerations", "2", "--methods", "fbp", "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| fbp | 2x | 2.00x | 1 |" in printed and (out / "bench_table.md").read_text() in printed
    before = (out / "results.jsonl").read_text()
    assert main(argv) == 0 and (out / "results.jsonl").read_text() == before  # resumed
    assert main(argv + ["--no-resume"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 1
    capsys.readouterr()
    # the kept views are the CT "mask": sparse_view is accepted, fastMRI mask types are refused
    assert main(argv + ["--mask-type", "sparse_view"]) == 0
    capsys.readouterr()
    for extra, message in ((["--mask-type", "random"], "--mask-type random: CT keeps every k-th view"),
                           (["--center-fractions", "0.1"], "--center-fractions applies to MRI"),
                           (["--set", "calibrate.crop=0"], "CT has no coil calibration"),
                           (["--accelerations", "2.5"], "sparse-view factors")):
        with pytest.raises(SystemExit) as exc:
            main(argv + extra)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_unknown_method_and_stray_settings(ct_dir):
    with pytest.raises(ValueError, match="unknown method 'ct_magic'"):
        run_ct_bench(ct_dir, (2,), ["ct_magic"], progress=False)
    with pytest.raises(ValueError, match="not among the methods"):
        run_ct_bench(ct_dir, (2,), ["fbp"], params={"sirt": {"iterations": 3}}, progress=False)
    # an observation file or a missing path as the data folder said "no observation_<part>_NNN
    # .hdf5 files in observation_test_000.hdf5"
    one = ct_dir / "observation_test_000.hdf5"
    with pytest.raises(FileNotFoundError, match=r"run_ct_bench: data folder .*observation_test_000"
                                                r"\.hdf5 is a file; pass the folder"):
        run_ct_bench(one, (2,), ["fbp"], progress=False)
    with pytest.raises(FileNotFoundError, match=r"data folder .*nowhere does not exist"):
        run_ct_bench(ct_dir / "nowhere", (2,), ["fbp"], progress=False)


def test_methods_of_the_other_modality_odd_factors_and_misspelled_settings_are_refused(ct_dir):
    # were: MRI methods scored on sinograms (zero_filled at -67 dB), 9x of 60 views run as 10x
    # and labelled 9x, a misspelled parameter an "internal error"
    with pytest.raises(ValueError, match=r"'zero_filled' is an MRI reconstruction; this benchmark "
                                         r"is CT"):
        run_ct_bench(ct_dir, (2,), ["fbp", "zero_filled"], progress=False)
    with pytest.raises(ValueError, match=r"'modl_brain_sim' is an MRI model; this benchmark is CT"):
        run_ct_bench(ct_dir, (2,), ["modl_brain_sim"], progress=False)
    with pytest.raises(ValueError, match=r"sparse-view factor 9 does not divide the 60 views"):
        run_ct_bench(ct_dir, (9,), ["fbp"], progress=False)
    with pytest.raises(ValueError, match=r"fbp has no parameter 'filtr' \(did you mean 'filter'"):
        run_ct_bench(ct_dir, (2,), ["fbp"], params={"fbp": {"filtr": "hann"}}, progress=False)


def test_a_part_name_with_an_underscore_is_found(ct_dir, tmp_path):
    # `simulate ct --part val_x` writes observation_val_x_000.hdf5; the bench split the name
    # at the first "_" and found no part "val"
    for f in ct_dir.glob("*_test_*.hdf5"):
        shutil.copy(f, tmp_path / f.name.replace("_test_", "_val_x_"))
    table = run_ct_bench(tmp_path, (2,), ["fbp"], progress=False)
    assert sorted(r["volume"] for r in table.records) == sorted(
        f.name for f in tmp_path.glob("observation_val_x_*.hdf5"))


def test_photons_reach_the_records_and_the_noise(ct_dir, tmp_path):
    low = run_ct_bench(ct_dir, (1,), ["fbp"], photons=200.0, progress=False)
    full = run_ct_bench(ct_dir, (1,), ["fbp"], progress=False)
    assert low.records[0]["photons"] == 200.0 and full.records[0]["photons"] is None
    assert low.row("fbp", 1).mean["PSNR"] < full.row("fbp", 1).mean["PSNR"]  # more noise
    again = run_ct_bench(ct_dir, (1,), ["fbp"], photons=200.0, progress=False)
    assert again.row("fbp", 1).mean == low.row("fbp", 1).mean  # the noise is seeded



def test_photons_on_noisy_data_thin_them_as_the_pipeline_does(ct_dir, tmp_path, caplog):
    """``--photons`` on observations that already hold noise (these at 4096 photons) used to
    add noise on top (an effective ~819 photons for 1024, then warned of). The benchmark now
    lowers the dose as ``mrirecon run`` does (the same stages: binomial thinning, the same
    seeds), says so once, records how in every record, and refuses a dose above the data's
    before running anything; without ``--photons`` it says nothing."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.stages_ct import CTStages

    seen = []
    with caplog.at_level("INFO", logger="mrirecon.bench"):
        run_ct_bench(ct_dir, (1,), "fbp", output_dir=tmp_path / "a", progress=False,
                     photons=1024.0, on_record=lambda rec, pred: seen.append((rec, pred)))
    notes = [m for m in caplog.messages if "--photons" in m]
    assert len(notes) == 1 and "binomial thinning" in notes[0] and "exactly 1024" in notes[0]
    assert all(r["data_photons"] == 4096.0 and "binomial thinning" in r["dose"] for r, _ in seen)
    # the pipeline's FBP of the same file at the same dose is the benchmark's prediction
    config = load_pipeline("ct_fbp", ["undersample.enabled=true", "undersample.photons=1024",
                                      "reconstruct.params={filter: ram-lak}"])[0]
    stages = CTStages(config)
    rec, pred = seen[0]
    source = stages.load(ct_dir / rec["volume"])
    from mrirecon.io.lodopab import MU_MAX_PER_MM
    from mrirecon.pipeline.stream import Method

    method = Method("fbp", config.reconstruct, None)
    first = stages.reconstruct(stages.undersample(source.read(0)), method).image
    np.testing.assert_allclose(np.asarray(pred)[0], first.numpy() / MU_MAX_PER_MM, rtol=1e-5,
                               atol=1e-6)
    with pytest.raises(ValueError, match=r"run_ct_bench: observation_test_000\.hdf5: "
                                         r"--photons=5000 is above the dose"):
        run_ct_bench(ct_dir, (1,), "fbp", output_dir=tmp_path / "c", progress=False,
                     photons=5000.0)
    assert not (tmp_path / "c" / "results.jsonl").exists()
    caplog.clear()
    with caplog.at_level("INFO", logger="mrirecon.bench"):
        run_ct_bench(ct_dir, (3,), "fbp", output_dir=tmp_path / "b", progress=False)
    assert not [m for m in caplog.messages if "photons" in m]
