"""`mrirecon bench` when a method fails with something other than a ValueError, when the
shipped weights it scores change, and `--no-resume` over other methods' records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from mrirecon import recon
from mrirecon.bench import run_bench
from mrirecon.recon import registry


@pytest.fixture(scope="module")
def mri_two(tmp_path_factory) -> Path:
    """Two simulated 4-coil volumes of 2 slices, 48 x 40."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    folder = tmp_path_factory.mktemp("two")
    simulate_mri_dataset(folder, volumes=2, slices=2, coils=4, size=(48, 40), seed=4)
    return folder


def test_a_method_failing_with_another_error_skips_its_volume_and_the_table_is_written(
        mri_two, tmp_path, monkeypatch):
    """Fails if an error other than ValueError (a LinAlgError, a GPU out of memory) on one
    volume stops the whole bench without a table (a resume then died on it again) instead of
    skipping that volume, named with the error's type, as a ValueError is."""
    calls = {"n": 0}

    def flaky(y, op, **params):
        calls["n"] += 1
        if calls["n"] == 3:  # the second volume's first slice
            raise torch.linalg.LinAlgError("the factorization could not be completed")
        return op.H(y)

    monkeypatch.setitem(registry._REGISTRY, "flaky_test", registry._REGISTRY["zero_filled"])
    recon.register("flaky_test", flaky, overwrite=True)
    out = tmp_path / "out"
    table = run_bench(mri_two, "multicoil", (4,), ["zero_filled", "flaky_test"], output_dir=out,
                      center_fractions={4: 0.16}, progress=False)
    assert (out / "bench_table.md").is_file()
    assert len(table.skipped) == 1 and "LinAlgError: the factorization" in str(table.skipped[0])


def test_shipped_weights_are_keyed_by_their_file_not_their_name(tmp_path, monkeypatch):
    """Fails if shipped weights are keyed by their name alone: retrained or replaced weights had
    their old scores printed again by a resumed bench (`run --resume` hashes the file)."""
    from mrirecon.bench.methods import Method, method_weights_id, weights_id
    from mrirecon.io.weights import resolve_weights
    from mrirecon.pipeline.schema import ReconstructConfig

    pt = resolve_weights("modl_brain_sim")
    key = weights_id("modl_brain_sim")
    assert str(pt) in key and key == weights_id(pt)
    learned = Method("modl_brain_sim", ReconstructConfig(method="modl_brain_sim"), model=object())
    assert method_weights_id(learned, {}) == key
    classical = Method("cg_sense", ReconstructConfig(method="cg_sense"))
    assert method_weights_id(classical, {}) is None


def test_no_resume_says_it_drops_the_other_records(mri_two, tmp_path, caplog):
    """Fails if ``--no-resume`` of one method drops the records of the others from
    results.jsonl without a word (one run cut 12 records to 3)."""
    out = tmp_path / "out"
    run_bench(mri_two, "multicoil", (4,), ["zero_filled", "zero_filled_rss"], output_dir=out,
              center_fractions={4: 0.16}, progress=False)
    with caplog.at_level(logging.WARNING, logger="mrirecon.bench"):
        run_bench(mri_two, "multicoil", (4,), ["zero_filled"], output_dir=out,
                  center_fractions={4: 0.16}, progress=False, resume=False)
    assert any("--no-resume:" in r.getMessage() and "4 earlier record(s)" in r.getMessage()
               for r in caplog.records)
    records = (out / "results.jsonl").read_text().splitlines()
    assert {json.loads(r)["method"] for r in records} == {"zero_filled"}
