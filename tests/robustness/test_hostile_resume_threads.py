"""``--resume`` under another thread count or device: the reproducibility audit's F5. A run with
``--threads 1``, resumed with ``--threads 2``, skipped the input (a resume keeps finished work)
and ``provenance.json`` said ``"threads": 2`` beside the 1-thread result (PSNR 23.7746; a real
2-thread run gave 23.7635). The status records held no thread count or device."""

from __future__ import annotations

import json
import logging
import shutil

import torch

from mrirecon.pipeline.runner import run_pipeline
from tests.robustness.test_hostile_outputs import mri_config


def _entries(out):
    prov = json.loads((out / "provenance.json").read_text())
    return prov, {f["name"]: f for f in prov["files"]}


def test_a_resume_under_other_threads_or_device_keeps_and_says_so(mri_file, tmp_path,
                                                                    caplog):
    src = tmp_path / "in" / "vol.h5"
    src.parent.mkdir()
    shutil.copy(mri_file, src)
    out, config = tmp_path / "out", mri_config()
    torch.set_num_threads(1)  # restored by conftest's autouse fixture
    assert run_pipeline(config, [str(src)], out, progress=False, device="cpu") == 0
    record = json.loads((out / ".status" / "vol.json").read_text())
    assert (record["threads"], record["device"]) == (1, "cpu")  # what made the outputs
    prov, files = _entries(out)
    assert (files["vol"]["threads"], files["vol"]["device"]) == (1, "cpu")
    image = (out / "reconstructions" / "vol.h5").read_bytes()

    # the same settings: skipped without a word about them
    caplog.clear()
    with caplog.at_level(logging.INFO, "mrirecon"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    prov, files = _entries(out)
    assert files["vol"]["status"] == "skipped" and files["vol"]["threads"] == 1
    assert not [n for n in files["vol"]["notes"] if "--threads" in n]
    assert not [r for r in caplog.records if "--threads" in r.getMessage()]

    # 2 threads: kept (not run again), labelled with the settings that made it, and said once
    torch.set_num_threads(2)  # restored by conftest's autouse fixture
    caplog.clear()
    with caplog.at_level(logging.INFO, "mrirecon"):
        assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    prov, files = _entries(out)
    entry = files["vol"]
    assert entry["status"] == "skipped" and prov["threads"] == 2
    assert (entry["threads"], entry["device"]) == (1, "cpu")
    (note,) = [n for n in entry["notes"] if "--threads" in n]
    assert "vol.h5" in note and "--threads 1" in note and "--threads 2" in note
    assert [r.getMessage() for r in caplog.records if "--threads" in r.getMessage()] == [note]
    assert (out / "reconstructions" / "vol.h5").read_bytes() == image
    record = json.loads((out / ".status" / "vol.json").read_text())
    assert record["threads"] == 1 and not [n for n in record["notes"] if "--threads" in n]

    # made on another device (a GPU run's record): said too, naming it
    record["device"] = "cuda:0"
    (out / ".status" / "vol.json").write_text(json.dumps(record))
    torch.set_num_threads(1)  # restored by conftest's autouse fixture
    assert run_pipeline(config, [str(src)], out, progress=False, resume=True) == 0
    prov, files = _entries(out)
    (note,) = [n for n in files["vol"]["notes"] if "device" in n and "--resume" in n]
    assert "cuda:0" in note and "cpu" in note and files["vol"]["device"] == "cuda:0"
    assert (out / "reconstructions" / "vol.h5").read_bytes() == image


def test_a_status_record_with_a_bad_thread_count_is_unreadable(mri_file, tmp_path,
                                                               caplog):
    """The new fields are checked as the others: ``"threads": "two"`` reprocesses the input."""
    from mrirecon.pipeline.run_state import status_problem

    assert status_problem({"threads": "two"}) is not None
    assert status_problem({"threads": 0}) is not None
    assert status_problem({"device": 3}) is not None
    assert status_problem({"calibration": []}) is not None
    assert status_problem({"threads": 2, "device": "cpu", "calibration": {}}) is None
