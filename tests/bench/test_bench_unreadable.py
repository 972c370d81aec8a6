"""`mrirecon bench` over a folder where one file cannot be read (a partial download, a truncated
copy): that volume is skipped with the reader's message and listed under the table of the
others, exit 1, as `mrirecon run` skips it and as the bench skips a volume it cannot score. Was
(audit a19, finding 3): the plan opened every file first and stopped at the first bad one: exit 2,
"mrirecon bench: error: …/zz_partial.h5: file: not a readable HDF5 file", no table, nothing
scored (MRI and CT alike)."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest

from mrirecon.bench import run_bench, run_ct_bench
from tests.helpers import cli_exit, simulated_ct_dir


def _truncated(src: Path, dst: Path, size: int = 5000) -> Path:
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        f.truncate(size)
    return dst


@pytest.fixture(scope="module")
def mri_data(tmp_path_factory) -> Path:
    """3 simulated 2-coil volumes (1 slice, 32 x 32) and a copy of the first cut at 5000 bytes."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder = tmp_path_factory.mktemp("mri")
    paths = simulate_mri_dataset(folder, volumes=3, slices=1, coils=2, size=(32, 32), seed=0)
    _truncated(paths[0], folder / "zz_partial.h5")
    return folder


def test_mri_bench_skips_an_unreadable_file_and_tables_the_others(mri_data, tmp_path, caplog):
    out = tmp_path / "bench"
    assert cli_exit("bench", "--data", str(mri_data), "--output", str(out), "--accelerations",
                    "2", "4", "--methods", "zero_filled", "--no-progress") == 1
    md = (out / "bench_table.md").read_text()
    rows = list(csv.DictReader(io.StringIO((out / "bench_table.csv").read_text())))
    assert [(r["method"], float(r["acceleration"]), int(r["volumes"])) for r in rows] == [
        ("zero_filled", 2.0, 3), ("zero_filled", 4.0, 3)]
    skipped = md.split("Skipped volumes (not scored, not in the rows above):\n")[1].splitlines()
    assert [s.split(": ")[0] for s in skipped] == ["- zz_partial.h5 at 2x (zero_filled)",
                                                   "- zz_partial.h5 at 4x (zero_filled)"]
    assert all("zz_partial.h5: file: not a readable HDF5 file" in s for s in skipped), skipped
    assert "zz_partial" not in (out / "bench_volumes.csv").read_text()
    assert any("zz_partial.h5: file: not a readable HDF5 file" in r.getMessage()  # the warning
               and "skipped: the table scores the other volumes" in r.getMessage()
               for r in caplog.records)
    # the library call: the same table, the file listed; resumed, only the skipped one is tried
    table = run_bench(mri_data, accelerations=(4,), methods="zero_filled", output_dir=out,
                      progress=False, verbose=False)
    assert table.row("zero_filled", 4).volumes == 3 and len(table.skipped) == 1
    assert table.skipped[0].startswith("zz_partial.h5 at 4x (zero_filled): ")


def test_mri_bench_of_only_unreadable_files_fails_with_the_readers_error(mri_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(mri_data / "zz_partial.h5", data)
    with pytest.raises(ValueError, match=r"zz_partial\.h5: file: not a readable HDF5 file"):
        run_bench(data, accelerations=(4,), methods="zero_filled", progress=False, verbose=False)


@pytest.fixture(scope="module")
def ct_data(tmp_path_factory) -> Path:
    """observation_test_000..003 with their ground truths (copies of one 2-sample file); 002's
    observation and 003's ground truth cut short."""
    src = simulated_ct_dir(tmp_path_factory.mktemp("ct_src"), views=60, size=32, seed=3)
    folder = tmp_path_factory.mktemp("ct")
    for i in range(4):
        for kind in ("observation", "ground_truth"):
            shutil.copy(src / f"{kind}_test_000.hdf5", folder / f"{kind}_test_{i:03d}.hdf5")
    _truncated(src / "observation_test_000.hdf5", folder / "observation_test_002.hdf5")
    _truncated(src / "ground_truth_test_000.hdf5", folder / "ground_truth_test_003.hdf5")
    return folder


def test_ct_bench_skips_unreadable_files_and_tables_the_others(ct_data, tmp_path):
    out = tmp_path / "bench"
    assert cli_exit("bench", "--challenge", "ct", "--data", str(ct_data), "--output", str(out),
                    "--accelerations", "2", "--methods", "fbp", "--no-progress") == 1
    rows = list(csv.DictReader(io.StringIO((out / "bench_table.csv").read_text())))
    assert [(r["method"], int(r["volumes"])) for r in rows] == [("fbp", 2)]
    md = (out / "bench_table.md").read_text()
    skipped = md.split("Skipped volumes (not scored, not in the rows above):\n")[1].splitlines()
    assert len(skipped) == 2, skipped
    assert skipped[0].startswith("- observation_test_002.hdf5 at 2x (fbp): ")
    assert "observation_test_002.hdf5: file: not a readable HDF5 file" in skipped[0]
    assert skipped[1].startswith("- observation_test_003.hdf5 at 2x (fbp): ")
    assert "ground_truth_test_003.hdf5: file: not a readable HDF5 file" in skipped[1]
    table = run_ct_bench(ct_data, (2,), ["fbp"], progress=False)  # in memory: the same
    assert [r["volume"] for r in table.records] == ["observation_test_000.hdf5",
                                                    "observation_test_001.hdf5"]
    assert len(table.skipped) == 2
