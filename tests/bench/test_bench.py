"""``mrirecon bench``: table layout, fastMRI metrics and masks, resume, atomic outputs, errors."""

from __future__ import annotations

import csv
import io
import json
import re

import numpy as np
import pytest
import torch

from mrirecon import bench
from mrirecon.bench import run_bench
from mrirecon.bench import table as bench_table
from mrirecon.containers import Header
from mrirecon.data.simulate_mri import birdcage_maps
from mrirecon.functional import center_crop, fft2c, ifft2c, rss
from mrirecon.io import FastMRIFile, write_fastmri
from mrirecon.pipeline import code_identity, stages_mri

fastmri_evaluate = pytest.importorskip("fastmri.evaluate")
fastmri_subsample = pytest.importorskip("fastmri.data.subsample")

H, W, RECON = 64, 64, (32, 32)
PADDING = (2, 62)  # like knee files: the outermost phase-encoding columns were never acquired


def _phantom(rng: np.random.Generator) -> np.ndarray:
    """A complex ``(H, W)`` image of random ellipses inside the central recon region."""
    yy, xx = np.mgrid[:H, :W].astype(np.float64)
    img = np.zeros((H, W))
    for _ in range(6):
        cy, cx = rng.uniform(H / 2 - 8, H / 2 + 8), rng.uniform(W / 2 - 8, W / 2 + 8)
        ay, ax = rng.uniform(3, 10, size=2)
        img += rng.uniform(0.3, 1.0) * (((yy - cy) / ay) ** 2 + ((xx - cx) / ax) ** 2 <= 1)
    phase = rng.uniform(-1, 1) * (xx - W / 2) / W + rng.uniform(-1, 1) * (yy - H / 2) / H
    return 1e-3 * img * np.exp(1j * phase)


def _header() -> Header:
    return Header(
        encoded_matrix=(H, W, 1),
        recon_matrix=(*RECON, 1),
        padding_left=PADDING[0],
        padding_right=PADDING[1],
        acquisition="CORPD_FBK",
    )


def _write_volumes(folder, count: int, slices: int = 2, coils: int | None = 4, seed: int = 0):
    """Fully sampled fastMRI files; targets are the RSS (or magnitude) of the acquired data."""
    rng = np.random.default_rng(seed)
    acquired = np.zeros(W, dtype=bool)
    acquired[PADDING[0] : PADDING[1]] = True
    paths = []
    for v in range(count):
        x = np.stack([_phantom(rng) for _ in range(slices)])  # (S, H, W)
        if coils is None:
            k = fft2c(torch.from_numpy(x)) * torch.from_numpy(acquired)
            k = k + 2e-6 * torch.randn(
                k.shape, dtype=k.dtype, generator=torch.Generator().manual_seed(v)
            )
            target = center_crop(ifft2c(k).abs(), RECON)
            kspace, ref = k.to(torch.complex64), {"reconstruction_esc": target}
        else:
            g = np.linspace(-1, 1, H)[:, None], np.linspace(-1, 1, W)[None, :]
            maps = torch.from_numpy(birdcage_maps(coils, g[1], g[0], rotation=0.3 * v))  # (C, H, W)
            k = fft2c(maps[None] * torch.from_numpy(x)[:, None]) * torch.from_numpy(acquired)
            noise = torch.randn(k.shape, dtype=k.dtype, generator=torch.Generator().manual_seed(v))
            k = (k + 2e-6 * noise) * torch.from_numpy(acquired)
            kspace = k.to(torch.complex64)
            ref = {"reconstruction_rss": center_crop(rss(ifft2c(kspace), dim=1), RECON)}
        paths.append(
            write_fastmri(folder / f"file{1000000 + 7 * v}.h5", kspace, _header(), reference=ref)
        )
    return paths


@pytest.fixture(scope="module")
def multicoil_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multicoil_val")
    _write_volumes(folder, 2)
    return folder


@pytest.fixture(scope="module")
def varnet_weights(tmp_path_factory):
    from mrirecon.models import build_model

    torch.manual_seed(0)
    params = {"iterations": 2, "sens_chans": 4, "sens_pools": 2, "chans": 4, "pools": 2}
    model = build_model("varnet", **params)
    path = tmp_path_factory.mktemp("weights") / "varnet_tiny.pt"
    torch.save(model.state_dict(), path)
    return path, params, sum(p.numel() for p in model.parameters())


def _reference_mask(name: str, acc: int, mask_type: str) -> tuple[np.ndarray, int]:
    cf = {4: 0.08, 8: 0.04}[acc]
    mask_fn = fastmri_subsample.create_mask_for_mask_type(mask_type, [cf], [acc])
    mask, num_low = mask_fn((1, H, W, 2), seed=tuple(map(ord, name)))
    mask = mask.reshape(-1).numpy().astype(bool)
    mask[: PADDING[0]] = False
    mask[PADDING[1] :] = False
    return mask, int(num_low)


def _fastmri_metrics(target: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    w = target.shape[-1]
    gt, pr = (center_crop(torch.from_numpy(a), (w, w)).numpy() for a in (target, pred))
    return {
        "NMSE": fastmri_evaluate.nmse(gt, pr),
        "PSNR": fastmri_evaluate.psnr(gt, pr),
        "SSIM": fastmri_evaluate.ssim(gt, pr),
    }


def test_multicoil_table_metrics_and_masks_match_fastmri(multicoil_dir, varnet_weights, tmp_path):
    wpath, wparams, nparams = varnet_weights
    methods = ["zero_filled_rss", "zero_filled", "cg_sense", "l1_wavelet", "grappa", "varnet"]
    seen = []
    table = run_bench(
        multicoil_dir,
        "multicoil",
        (4, 8),
        methods,
        weights={"varnet": wpath},
        params={
            "varnet": wparams,
            "l1_wavelet": {"iterations": 20},
            "grappa": {"kernel_size": [5, 3]},
        },
        output_dir=tmp_path,
        progress=False,
        verbose=False,
        on_record=lambda rec, pred: seen.append((rec, pred)),
    )
    assert [(r.method, r.acceleration) for r in table.rows] == [
        (m, a) for m in methods for a in (4.0, 8.0)
    ]
    assert all(r.volumes == 2 for r in table.rows)
    assert len(seen) == len(methods) * 2 * 2

    per_row: dict[tuple[str, float], list[dict]] = {}
    for rec, pred in seen:
        path = multicoil_dir / rec["volume"]
        with FastMRIFile(path) as f:
            target = f.reference(key="reconstruction_rss").numpy()
            kspace = f.read_volume(with_reference=False).data
        assert pred.shape == target.shape
        ref = _fastmri_metrics(target, pred)
        for m in ("NMSE", "PSNR", "SSIM"):
            assert rec[m] == pytest.approx(ref[m], rel=1e-5, abs=1e-7), (rec["method"], m)
        per_row.setdefault((rec["method"], rec["acceleration"]), []).append(ref)
        # the mask is fastMRI's for this file name (seeded by the name, padding removed)
        mask, num_low = _reference_mask(
            rec["volume"], int(rec["acceleration"]), "equispaced_fraction"
        )
        got = bench_table.decode_mask(rec["mask"], rec["mask_width"]).numpy()
        np.testing.assert_array_equal(got, mask)
        assert rec["num_low_frequencies"] == num_low
        if rec["method"] == "zero_filled_rss":  # the runner really undersampled with that mask
            expect = center_crop(rss(ifft2c(kspace * torch.from_numpy(mask)), dim=1), RECON)
            np.testing.assert_allclose(pred, expect.numpy(), rtol=1e-5, atol=1e-9)
        assert rec["num_params"] == (nparams if rec["method"] == "varnet" else 0)
        assert rec["seconds_per_slice"] > 0

    for row in table.rows:
        refs = per_row[(row.method, row.acceleration)]
        for m in ("NMSE", "PSNR", "SSIM"):
            vals = np.array([r[m] for r in refs])
            assert row.mean[m] == pytest.approx(vals.mean(), rel=1e-5)
            assert 2 * row.std[m] == pytest.approx(2 * vals.std(ddof=1), rel=1e-4, abs=1e-9)
    # ESPIRiT maps from the narrow centre band (5 columns at 4x, 3 at 8x, default 6 x 6 kernels)
    # are usable: CG-SENSE beats the zero-filled adjoint at 4x and no method collapses at 8x
    for method in ("cg_sense", "l1_wavelet"):
        assert table.row(method, 8).mean["NMSE"] < 0.3, method
    # GRAPPA (ACS = the centre band) fills k-space better than zero filling
    assert table.row("grappa", 4).mean["NMSE"] < 0.5 * table.row("zero_filled_rss", 4).mean["NMSE"]
    assert table.row("cg_sense", 4).mean["NMSE"] < table.row("zero_filled", 4).mean["NMSE"]
    assert table.row("cg_sense", 4).mean["SSIM"] > table.row("zero_filled", 4).mean["SSIM"]

    # outputs: CSV, Markdown, per-volume CSV
    rows = list(csv.DictReader(io.StringIO((tmp_path / "bench_table.csv").read_text())))
    assert [(r["method"], r["acceleration"]) for r in rows] == [
        (m, a) for m in methods for a in ("4", "8")
    ]
    assert float(rows[0]["NMSE_mean"]) == table.rows[0].mean["NMSE"]
    md = (tmp_path / "bench_table.md").read_text().strip().splitlines()
    # the rows, then what ± is and the thread count the times were measured with
    assert len(md) == 2 + len(table.rows) + 4 and "SSIM" in md[0] and "parameters" in md[0]
    assert f"{nparams:,}" in md[-5] and "± 2 std over volumes" in md[-3]
    assert md[-1].startswith(f"Measured with {torch.get_num_threads()} CPU thread(s) (")  # +source
    vols = list(csv.DictReader(io.StringIO((tmp_path / "bench_volumes.csv").read_text())))
    assert len(vols) == len(seen)
    assert {r["volume"] for r in vols} == {p.name for p in multicoil_dir.glob("*.h5")}


def test_singlecoil_uses_esc_target_and_random_masks(tmp_path):
    data = tmp_path / "singlecoil_val"
    _write_volumes(data, 2, slices=1, coils=None, seed=3)
    seen = []
    table = run_bench(
        data,
        "singlecoil",
        [4],
        "zero_filled,cg_sense",
        output_dir=tmp_path / "out",
        progress=False,
        verbose=False,
        on_record=lambda r, p: seen.append((r, p)),
    )
    assert [r.method for r in table.rows] == ["zero_filled", "cg_sense"]
    for rec, pred in seen:
        with FastMRIFile(data / rec["volume"]) as f:
            target = f.reference(key="reconstruction_esc").numpy()
        ref = _fastmri_metrics(target, pred)
        for m in ("NMSE", "PSNR", "SSIM"):
            assert rec[m] == pytest.approx(ref[m], rel=1e-5, abs=1e-7)
        mask, _ = _reference_mask(rec["volume"], 4, "random")
        np.testing.assert_array_equal(bench_table.decode_mask(rec["mask"], W).numpy(), mask)
        assert rec["mask_type"] == "random"
    with pytest.raises(ValueError, match="single-coil k-space.*challenge='multicoil'"):
        run_bench(data, "multicoil", [4], ["zero_filled"], progress=False, verbose=False)


def test_resume_skips_finished_entries(multicoil_dir, tmp_path, monkeypatch):
    calls: list[tuple[str, str]] = []
    original = stages_mri.reconstruct  # the pipeline's reconstruct stage: the bench runs it too

    def counting(s, cfg, model, **kwargs):
        calls.append((cfg.method, s.file_name))
        return original(s, cfg, model, **kwargs)

    monkeypatch.setattr(stages_mri, "reconstruct", counting)
    kwargs = {
        "challenge": "multicoil",
        "accelerations": [4],
        "methods": ["zero_filled_rss", "cg_sense"],
        "progress": False,
        "verbose": False,
    }
    names = sorted(p.name for p in multicoil_dir.glob("*.h5"))

    def interrupt_after_first_volume(rec, pred):
        if rec["volume"] != names[0] or rec["method"] == "cg_sense":
            raise KeyboardInterrupt("simulated interruption")

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_bench(multicoil_dir, output_dir=out, on_record=interrupt_after_first_volume, **kwargs)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [(json.loads(x)["method"], json.loads(x)["volume"]) for x in lines] == [
        ("zero_filled_rss", names[0]),
        ("cg_sense", names[0]),
    ]
    calls.clear()
    resumed = run_bench(multicoil_dir, output_dir=out, **kwargs)
    assert sorted(set(calls)) == [("cg_sense", names[1]), ("zero_filled_rss", names[1])]

    calls.clear()
    again = run_bench(multicoil_dir, output_dir=out, **kwargs)
    assert calls == []  # nothing recomputed
    assert again.to_csv() == resumed.to_csv() and again.to_markdown() == resumed.to_markdown()
    assert len((out / "results.jsonl").read_text().splitlines()) == 4

    fresh = run_bench(multicoil_dir, output_dir=tmp_path / "fresh", **kwargs)
    for a, b in zip(fresh.rows, resumed.rows):
        assert (a.method, a.volumes) == (b.method, b.volumes)
        for m in ("NMSE", "PSNR", "SSIM"):
            assert a.mean[m] == pytest.approx(b.mean[m], rel=1e-9)
            assert a.std[m] == pytest.approx(b.std[m], rel=1e-6, abs=1e-12)

    # changed settings are not mistaken for finished work; resume=False recomputes everything
    calls.clear()
    run_bench(multicoil_dir, output_dir=out, params={"cg_sense": {"iterations": 3}}, **kwargs)
    assert {m for m, _ in calls} == {"cg_sense"}
    calls.clear()
    run_bench(multicoil_dir, output_dir=out, resume=False, **kwargs)
    assert sorted(set(calls)) == sorted(
        (m, n) for m in ("zero_filled_rss", "cg_sense") for n in names
    )
    assert len((out / "results.jsonl").read_text().splitlines()) == 4

    # other mrirecon code (an upgrade): its scores are not this version's, so all are redone
    monkeypatch.setattr(code_identity, "code_sha256", lambda: "0" * 64)
    calls.clear()
    run_bench(multicoil_dir, output_dir=out, **kwargs)
    assert sorted(set(calls)) == sorted((m, n) for m in kwargs["methods"] for n in names)


def test_tables_are_written_atomically(tmp_path, monkeypatch):
    row = bench_table.BenchRow(
        "cg_sense",
        4.0,
        2,
        {"NMSE": 0.01, "PSNR": 30.0, "SSIM": 0.9},
        {"NMSE": 0.001, "PSNR": 1.0, "SSIM": 0.01},
        0.5,
        0,
    )
    bench_table.write_table(bench_table.BenchTable([row]), tmp_path)
    before = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(before) == {"bench_table.csv", "bench_table.md", "bench_volumes.csv"}

    from mrirecon.io import atomic

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    worse = bench_table.BenchTable([bench_table.BenchRow("tv", 8.0, 1, row.mean, row.std, 1.0, 0)])
    with pytest.raises(OSError, match="disk full"):
        bench_table.write_table(worse, tmp_path)
    assert {
        p.name: p.read_text() for p in tmp_path.iterdir()
    } == before  # old files intact, no temp files

    store = bench_table.ResultsFile(tmp_path / "results.jsonl")
    with pytest.raises(OSError, match="disk full"):
        store.append({"method": "tv", "acceleration": 4, "volume": "a.h5", "config": "x"})
    assert not (tmp_path / "results.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_errors_name_the_problem(multicoil_dir, tmp_path):
    with pytest.raises(
        ValueError, match=r"unknown method\(s\) 'sense_magic'.*cg_sense.*l1_wavelet.*varnet"
    ):
        run_bench(multicoil_dir, methods="zero_filled,sense_magic", progress=False, verbose=False)
    with pytest.raises(
        ValueError, match=r"'fbp' is a CT reconstruction; this benchmark is MRI"
    ):  # CT entries are not for k-space
        run_bench(multicoil_dir, methods=["fbp"], progress=False, verbose=False)
    with pytest.raises(ValueError, match="challenge must be one of"):
        run_bench(
            multicoil_dir, challenge="knee", methods="zero_filled", progress=False, verbose=False
        )
    with pytest.raises(ValueError, match="learned method 'modl' needs weights"):
        run_bench(multicoil_dir, methods="modl", progress=False, verbose=False)
    with pytest.raises(ValueError, match="not among the methods"):
        run_bench(
            multicoil_dir,
            methods="cg_sense",
            params={"tv": {"lam": 1}},
            progress=False,
            verbose=False,
        )
    with pytest.raises(FileNotFoundError, match="no fastMRI .h5 files"):
        run_bench(tmp_path, methods="cg_sense", progress=False, verbose=False)
    # a file or a missing path as the data folder said "no fastMRI .h5 files in X.h5"
    one = next(iter(sorted(multicoil_dir.glob("*.h5"))))
    with pytest.raises(FileNotFoundError, match=rf"run_bench: data folder {re.escape(str(one))} "
                                                r"is a file; pass the folder that holds"):
        run_bench(one, methods="cg_sense", progress=False, verbose=False)
    with pytest.raises(FileNotFoundError, match=r"data folder .*missing does not exist"):
        run_bench(tmp_path / "missing", methods="cg_sense", progress=False, verbose=False)
    undersampled = tmp_path / "test_set"
    undersampled.mkdir()
    src = next(iter(sorted(multicoil_dir.glob("*.h5"))))
    with FastMRIFile(src) as f:
        vol = f.read_volume()
    mask = np.zeros(W, dtype=bool)
    mask[::4] = True
    write_fastmri(
        undersampled / "file1.h5",
        vol.data * torch.from_numpy(mask),
        vol.header,
        reference=vol.reference,
        mask=mask,
    )
    with pytest.raises(ValueError, match="already undersampled"):
        run_bench(undersampled, methods="zero_filled_rss", progress=False, verbose=False)
    no_target = tmp_path / "no_target"
    no_target.mkdir()
    write_fastmri(no_target / "file2.h5", vol.data, vol.header)
    with pytest.raises(ValueError, match="file2.h5 has no target 'reconstruction_rss'"):
        run_bench(no_target, methods="zero_filled_rss", progress=False, verbose=False)


def test_command_line_strings_are_parsed():
    assert bench.parse_weights(["varnet=/w/v.pt", "modl=a.pt,vn=b.pt"]) == {
        "varnet": "/w/v.pt",
        "modl": "a.pt",
        "vn": "b.pt",
    }
    params, calib = bench.parse_sets(
        ["l1_wavelet.lam=0.01", "cg_sense.iterations=5", "calibrate.kernel_width=4"]
    )
    assert params == {"l1_wavelet": {"lam": 0.01}, "cg_sense": {"iterations": 5}}
    assert calib == {"kernel_width": 4}
    with pytest.raises(ValueError, match="method=PATH"):
        bench.parse_weights(["varnet"])
    with pytest.raises(ValueError, match="method.param=value"):
        bench.parse_sets(["lam=0.01"])


def test_cli_bench_subcommand(multicoil_dir, tmp_path, capsys):
    from mrirecon.cli import main

    out = tmp_path / "cli"
    argv = [
        "bench",
        "--data",
        str(multicoil_dir),
        "--accelerations",
        "4",
        "--methods",
        "zero_filled_rss,cg_sense",
        "--set",
        "cg_sense.iterations=3",
        "--set",
        "calibrate.crop=0",
        "--max-volumes",
        "1",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| cg_sense \| 4x \| \d\.\d\dx \| 1 \|", printed)
    assert re.search(r"\| zero_filled_rss \| 4x \| \d\.\d\dx \| 1 \|", printed)
    assert (out / "bench_table.md").read_text() in printed
    assert len((out / "results.jsonl").read_text().splitlines()) == 2
    with pytest.raises(SystemExit) as exc:
        main(argv + ["--set", "calibrate.kernel=4"])
    assert exc.value.code == 2
    assert "calibrate.kernel: unknown key (did you mean 'kernel_width'?)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # a CT-only option is refused, not ignored
        main(argv + ["--photons", "1000"])
    assert exc.value.code == 2
    assert "--photons applies to --challenge ct" in capsys.readouterr().err


def test_cli_bench_center_fractions(multicoil_dir, tmp_path, capsys):
    """``--center-fractions`` (one per acceleration) reach the masks: the README's table uses
    0.16 / 0.08, which fastMRI's defaults (0.08 / 0.04) would not reproduce."""
    import json

    from mrirecon.cli import main

    out = tmp_path / "cf"
    argv = ["bench", "--data", str(multicoil_dir), "--accelerations", "4", "8",
            "--center-fractions", "0.16", "0.08", "--methods", "zero_filled_rss",
            "--max-volumes", "1", "--output", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["acceleration"], r["center_fraction"]) for r in rows) == [(4.0, 0.16), (8.0, 0.08)]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv[:7] + ["0.16"] + argv[9:])  # one fraction for two accelerations
    assert exc.value.code == 2
    assert "--center-fractions: give one per acceleration (2), got 1" in capsys.readouterr().err


def test_learned_weights_from_card_state_dict_and_fastmri_checkpoint(varnet_weights, tmp_path):
    import yaml
    from fastmri.models import VarNet as FastMRIVarNet

    from mrirecon.models import fastmri_varnet_state_dict

    wpath, wparams, nparams = varnet_weights
    reference = torch.load(wpath, weights_only=True)
    # a bare state dict + the parameters it was trained with
    model = bench.load_model("varnet", wparams, wpath)
    assert not model.training and sum(p.numel() for p in model.parameters()) == nparams
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, reference[k], rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not match varnet"):
        bench.load_model("varnet", {**wparams, "chans": 8}, wpath)
    # a .pt with its model card: the card defines the model
    carded = tmp_path / "varnet_card.pt"
    carded.write_bytes(wpath.read_bytes())
    carded.with_suffix(".yaml").write_text(
        yaml.safe_dump({"model": {"name": "varnet", "params": wparams}})
    )
    assert sum(p.numel() for p in bench.load_model("varnet", {}, carded).parameters()) == nparams
    with pytest.raises(ValueError, match="are for model 'varnet', not 'modl'"):
        bench.load_model("modl", {}, carded)
    with pytest.raises(ValueError, match="defined by its model card"):
        bench.load_model("varnet", {"chans": 4}, carded)
    # a checkpoint of the reference fastmri.models.VarNet loads through the key mapping
    torch.manual_seed(1)
    ref_model = FastMRIVarNet(num_cascades=2, sens_chans=4, sens_pools=2, chans=4, pools=2)
    ref_path = tmp_path / "fastmri_varnet.pt"
    torch.save(
        {"state_dict": {f"varnet.{k}": v for k, v in ref_model.state_dict().items()}}, ref_path
    )
    loaded = bench.load_model("varnet", wparams, ref_path).state_dict()
    mapped = fastmri_varnet_state_dict(ref_model.state_dict())
    assert set(mapped) == set(loaded)
    for k, v in mapped.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0)


def test_a_reference_in_another_layout_or_scale_is_noted(tmp_path, caplog):
    """The pipeline's reference checks run in the benchmark too (MRI here, CT in
    test_bench_ct): a transposed, rescaled or slice-reversed ``reconstruction_rss`` (scored as read, a few dB
    with no word before) is noted in the records, the volumes CSV, the Markdown table and the
    log, once per volume; a correct one is not."""
    import h5py

    paths = _write_volumes(tmp_path / "data", 4)
    with h5py.File(paths[3], "r+") as f:  # slices stored last to first
        f["reconstruction_rss"][...] = f["reconstruction_rss"][()][::-1]
    with h5py.File(paths[1], "r+") as f:  # stored transposed
        f["reconstruction_rss"][...] = np.swapaxes(f["reconstruction_rss"][()], -1, -2)
    with h5py.File(paths[2], "r+") as f:  # another unit: a uint16-like magnitude
        f["reconstruction_rss"][...] = f["reconstruction_rss"][()] * 1e5
    with caplog.at_level("WARNING", logger="mrirecon.bench"):
        table = run_bench(tmp_path / "data", "multicoil", (4,), ["zero_filled_rss", "cg_sense"],
                          output_dir=tmp_path / "out", progress=False, verbose=False)
    notes = {(r["volume"], r["method"]): r["reference_notes"] for r in table.records}
    for method in ("zero_filled_rss", "cg_sense"):
        assert notes[paths[0].name, method] == []
        (turned,) = notes[paths[1].name, method]
        assert turned.startswith(f"{paths[1].name}: reconstruction_rss: the reference matches")
        assert "transposed" in turned
        (scaled,) = notes[paths[2].name, method]
        assert "the reference's scale is" in scaled and scaled.endswith("(every method's output)")
        (reversed_,) = notes[paths[3].name, method]
        assert "the reference slices match the output far better in reverse order" in reversed_
    md = table.to_markdown()
    assert md.count(f"- {turned}") == 1 and md.count(f"- {scaled}") == 1
    assert paths[0].name not in md
    rows = {(r["volume"], r["method"]): r for r in csv.DictReader(io.StringIO(table.volumes_csv()))}
    assert rows[paths[0].name, "cg_sense"]["reference_notes"] == ""
    assert rows[paths[2].name, "cg_sense"]["reference_notes"] == scaled
    # the reference's scale noted once (the data warnings run gives, logged since, are apart)
    assert sum(paths[2].name in m and "reconstruction_rss" in m for m in caplog.messages) == 1


def test_readout_crop_is_exact_where_it_must_be_and_kept_apart(multicoil_dir, tmp_path, capsys):
    """``remove_oversampling`` (the classical and plug-and-play pipelines' readout crop) leaves
    the zero-filled image unchanged (the crop is exact: a hybrid-space crop commutes with the
    phase-encoding inverse FFT), marks its records and does not resume from uncropped ones."""
    from mrirecon.cli import main

    preds: dict[tuple[str, bool], np.ndarray] = {}
    out = tmp_path / "run"
    kwargs = {"challenge": "multicoil", "accelerations": [4], "methods": ["zero_filled_rss"],
              "max_volumes": 1, "progress": False, "verbose": False, "output_dir": out}
    for crop in (False, True):
        run_bench(multicoil_dir, remove_oversampling=crop, **kwargs,
                  on_record=lambda rec, pred: preds.update({(rec["method"], crop): pred}))
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["remove_oversampling"] for r in records] == [False, True]
    assert records[0]["config"] != records[1]["config"]
    a, b = preds[("zero_filled_rss", False)], preds[("zero_filled_rss", True)]
    assert a.shape == b.shape == (2, *RECON)
    # complex64 FFTs of a 64-point readout: a few ulps of the image peak
    assert np.abs(a - b).max() <= 64 * np.finfo(np.float32).eps * np.abs(a).max()
    with pytest.raises(SystemExit) as exc:  # an MRI-only option is refused for CT, not ignored
        main(["bench", "--data", str(tmp_path), "--output", str(tmp_path / "ct"),
              "--challenge", "ct", "--remove-oversampling"])
    assert exc.value.code == 2
    assert "--remove-oversampling crops MRI readouts" in capsys.readouterr().err


def test_a_fastmri_varnet_checkpoint_gets_the_centre_width_fastmri_feeds_it(multicoil_dir,
                                                                            tmp_path):
    """fastMRI's validation passes E2E-VarNet the mask function's centre width (5 columns of 64
    at 4x: odd), where the mask alone shows a symmetric band of 4. A fastMRI checkpoint in the
    benchmark got the mask's band, so its images were not fastMRI's for the same weights and
    mask (max difference 0.18-0.43 of the image peak on knee-like files, -0.06 dB). Now the
    benchmark gives fastMRI's validation output to float32 rounding."""
    from fastmri.data import transforms as T
    from fastmri.data.mri_data import SliceDataset
    from fastmri.models import VarNet as FastMRIVarNet

    torch.manual_seed(0)
    arch = {"num_cascades": 2, "sens_chans": 4, "sens_pools": 2, "chans": 4, "pools": 2}
    reference = FastMRIVarNet(**arch).eval()
    path = tmp_path / "fastmri_varnet.pt"
    torch.save(reference.state_dict(), path)
    preds = {}
    bench.run_bench(multicoil_dir, "multicoil", (4,), ["varnet"], mask_type="equispaced_fraction",
                    weights={"varnet": str(path)},
                    params={"varnet": {"iterations": 2, "sens_chans": 4, "sens_pools": 2,
                                       "chans": 4, "pools": 2}},
                    progress=False, verbose=False,
                    on_record=lambda r, p: preds.__setitem__(r["volume"], p))
    mask_fn = fastmri_subsample.create_mask_for_mask_type("equispaced_fraction", [0.08], [4])
    data = SliceDataset(multicoil_dir, challenge="multicoil",
                        transform=T.VarNetDataTransform(mask_fn, use_seed=True))
    widths = set()
    for i in range(len(data)):
        s = data[i]
        widths.add(int(s.num_low_frequencies))
        with torch.no_grad():
            out = reference(s.masked_kspace[None], s.mask[None], s.num_low_frequencies)
        expected = T.center_crop(out, RECON)[0]
        ours = torch.as_tensor(preds[s.fname][s.slice_num])
        eps = torch.finfo(torch.float32).eps
        # two networks of float32 arithmetic in other orders: a few hundred eps of the peak
        assert float((ours - expected).abs().max()) <= 1e3 * eps * float(expected.abs().max())
    assert widths == {5}  # the case where the two conventions differ
