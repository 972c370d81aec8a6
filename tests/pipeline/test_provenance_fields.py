"""What provenance.json records of a run: each package's own version, each input's own hash, the
elapsed time and the config warnings (a one-line change of the first two passed every test)."""

from __future__ import annotations


def _provenance(tmp_path, **kw):
    """provenance.json of _write_run_files on two inputs (hashes given), report off."""
    import json
    import time
    from dataclasses import replace

    from mrirecon.pipeline.run_files import _write_run_files
    from mrirecon.pipeline.schema import PipelineConfig

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    cfg = PipelineConfig(name="t", modality="mri")
    cfg = replace(cfg, report=replace(cfg.report, enabled=False))
    _write_run_files(cfg, tmp_path, [a, b], [], time.time() - 2.0, 0, 1, "", "cpu",
                     {str(a): "HA", str(b): "HB"}, **kw)
    return json.loads((tmp_path / "provenance.json").read_text()), a, b


def test_provenance_records_the_config_warnings(tmp_path):
    """run_files: the config warnings (inert settings, the model's range) reach provenance."""
    prov, _, _ = _provenance(tmp_path, config_warnings=["reconstruct.params.x has no effect"])
    assert prov["config_warnings"] == ["reconstruct.params.x has no effect"]


def test_provenance_records_each_inputs_own_hash_and_the_elapsed_time(tmp_path):
    prov, a, b = _provenance(tmp_path)
    assert prov["inputs"] == {str(a): "HA", str(b): "HB"}
    assert 2.0 <= prov["seconds"] < 60.0  # started 2 s before; a clock, not a timestamp


def test_provenance_records_each_packages_own_version(tmp_path):
    """run_files._versions_cached: every package's own version (torch, numpy, h5py, ...)."""
    import importlib.metadata as md

    prov, _, _ = _provenance(tmp_path)
    for name in ("torch", "numpy"):
        assert prov["versions"][name] == md.version(name), name
