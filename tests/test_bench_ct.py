"""`mrirecon bench --challenge ct`: methods x sparse-view factors on LoDoPaB-layout data."""

from pathlib import Path

import numpy as np
import pytest

from mrirecon.cli import main
from mrirecon.pipeline.bench_ct import run_ct_bench


@pytest.fixture(scope="module")
def ct_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    out = tmp_path_factory.mktemp("ctbench")
    simulate_ct_dataset(out, geometry="parallel", views=60, photons=4096.0, size=48, seed=5,
                        samples=2, part="test", sources="phantom")
    return out


def test_table_rows_metrics_and_files(ct_dir, tmp_path):
    table = run_ct_bench(ct_dir, (3,), "fbp,sirt", output_dir=tmp_path, progress=False,
                         params={"sirt": {"iterations": 30}})
    rows = [r for r in table.splitlines() if r.startswith("| fbp") or r.startswith("| sirt")]
    assert len(rows) == 2 and all("| 1/3 |" in r for r in rows)
    csv = (tmp_path / "bench_ct_volumes.csv").read_text().splitlines()
    assert csv[0] == "method,acceleration,volume,nmse,psnr,ssim,seconds_per_slice" and len(csv) == 3
    psnr = {line.split(",")[0]: float(line.split(",")[4]) for line in csv[1:]}
    assert psnr["sirt"] > psnr["fbp"]  # iterative beats FBP at 20 views
    assert (tmp_path / "bench_ct_table.md").read_text() == table


def test_metrics_match_direct_computation(ct_dir):
    from mrirecon.io.lodopab import MU_MAX_PER_MM, LoDoPaBFiles
    from mrirecon.metrics import psnr
    from mrirecon.operators.fbp import fbp
    from mrirecon.sampling import sparse_view

    table = run_ct_bench(ct_dir, (2,), ["fbp"], progress=False)
    files = LoDoPaBFiles(ct_dir, "test")
    geometry, idx = sparse_view(files.geometry, 2)
    recs, refs = [], []
    for k in range(len(files)):
        sino = files.sinogram(k).data[0][..., idx, :]
        recs.append(fbp(sino.double(), geometry, filter="ram-lak").float().numpy() / MU_MAX_PER_MM)
        refs.append(files.attenuation(k).data[0].numpy() / MU_MAX_PER_MM)
    expected = psnr(np.stack(refs), np.stack(recs))
    row = next(r for r in table.splitlines() if r.startswith("| fbp"))
    assert abs(float(row.split("|")[4].split("±")[0]) - expected) < 0.01


def test_unknown_method_and_cli(ct_dir, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown method 'ct_magic'"):
        run_ct_bench(ct_dir, (2,), ["ct_magic"], progress=False)
    assert main(["bench", "--challenge", "ct", "--data", str(ct_dir), "--output", str(tmp_path),
                 "--accelerations", "2", "--methods", "fbp", "--no-progress"]) == 0
    assert "| fbp | 1/2 |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "--challenge", "ct", "--data", str(ct_dir), "--output", str(tmp_path),
              "--accelerations", "2.5", "--methods", "fbp"])
