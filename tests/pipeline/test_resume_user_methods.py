"""``--resume`` and the bench's resume with a reconstruction the user registered
(``recon.register``): its code is part of the code identity, so an edited function is run
again and an unchanged one resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import mrirecon
from mrirecon import recon
from mrirecon.pipeline import code_identity
from mrirecon.pipeline.code_identity import code_sha256, source_sha256
from mrirecon.recon import registry


@pytest.fixture(scope="module")
def mri_dir(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    out = tmp_path_factory.mktemp("mri")
    simulate_mri_dataset(out, volumes=1, slices=2, coils=4, size=(64, 48), seed=3, resolution=2)
    return out


CALLS: list[str] = []


def _version_1():
    """A new function object each call, from the same source (a notebook cell run again)."""
    def my_method(y, op, *, iterations: int = 4):
        """MRI: version 1 (CG-SENSE)"""
        CALLS.append("v1")
        return recon.cg_sense(y, op, iterations=iterations)
    return my_method


def _version_2():
    def my_method(y, op, *, iterations: int = 4):
        """MRI: version 2 (zero-filled)"""
        CALLS.append("v2")
        return op.H(y)
    return my_method


def test_the_code_identity_holds_the_registered_functions(restored_registry):
    """Without a user's function it is the package's checksum (records of earlier runs stay
    valid), computed once per process; each registration is recomputed on every call."""
    package_sha256 = code_identity.package_sha256
    package_sha256.cache_clear()
    plain = code_sha256()
    assert plain == package_sha256() == source_sha256(Path(mrirecon.__file__).resolve().parent)
    assert set(code_identity.code_identity()) == {"code_sha256", "git_commit"}
    recon.register("my_cs_ident", _version_1())
    v1 = code_sha256()
    assert v1 != plain and code_identity.code_identity()["registered_code"] == {
        "my_cs_ident": registry.registered_code()["my_cs_ident"]}
    recon.register("my_cs_ident", _version_2(), overwrite=True)
    assert code_sha256() not in (plain, v1)
    recon.register("my_cs_ident", _version_1(), overwrite=True)
    assert code_sha256() == v1
    assert package_sha256.cache_info().misses == 1  # the package's files read once


def test_an_edited_registered_method_is_run_again_on_resume(mri_dir, tmp_path, restored_registry,
                                                              caplog):
    """The audit's repro: the bench row and metrics.csv of version 1 (22.61 / 23.20 dB) were
    reused after version 2 (20.05 dB fresh) was registered."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    recon.register("my_cs_resume", _version_1())
    config, _ = load_pipeline("mri_retrospective", [
        "reconstruct.method=my_cs_resume", "reconstruct.params={}",
        "reconstruct.params_by_acceleration={}", "calibrate.calib_width=12",
        "calibrate.kernel_width=4", "export.formats=[hdf5]"])
    out = tmp_path / "out"
    CALLS.clear()
    assert run_pipeline(config, [str(mri_dir)], out, progress=False) == 0
    assert CALLS and set(CALLS) == {"v1"}
    first = (out / "metrics.csv").read_text()

    # the same body (the cell run again, another function object): resumed, nothing run
    recon.register("my_cs_resume", _version_1(), overwrite=True)
    CALLS.clear()
    assert run_pipeline(config, [str(mri_dir)], out, progress=False, resume=True) == 0
    assert CALLS == []
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["skipped"]

    # another body: run again, with a line that names the method
    recon.register("my_cs_resume", _version_2(), overwrite=True)
    CALLS.clear()
    with caplog.at_level(logging.INFO, logger="mrirecon.pipeline"):
        assert run_pipeline(config, [str(mri_dir)], out, progress=False, resume=True) == 0
    assert CALLS and set(CALLS) == {"v2"}
    assert (out / "metrics.csv").read_text() != first
    assert "other code of the registered reconstruction my_cs_resume" in caplog.text
    prov = json.loads((out / "provenance.json").read_text())
    assert [f["status"] for f in prov["files"]] == ["ok"]


def test_the_bench_reruns_an_edited_registered_method(mri_dir, tmp_path, restored_registry):
    """``run_bench`` resumes by default: version 1's scores were printed for version 2."""
    from mrirecon.bench.mri import run_bench

    kwargs = dict(accelerations=[4], methods=["my_cs_bench"], output_dir=tmp_path / "bench",
                  progress=False, verbose=False)
    recon.register("my_cs_bench", _version_1())
    CALLS.clear()
    first = run_bench(mri_dir, **kwargs)
    assert CALLS and set(CALLS) == {"v1"}
    recon.register("my_cs_bench", _version_1(), overwrite=True)
    CALLS.clear()
    again = run_bench(mri_dir, **kwargs)
    assert CALLS == [] and again.rows[0].mean == first.rows[0].mean
    recon.register("my_cs_bench", _version_2(), overwrite=True)
    CALLS.clear()
    second = run_bench(mri_dir, **kwargs)
    assert CALLS and set(CALLS) == {"v2"}
    fresh = run_bench(mri_dir, **{**kwargs, "output_dir": None})
    assert second.rows[0].mean == fresh.rows[0].mean != first.rows[0].mean
