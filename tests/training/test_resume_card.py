"""The card of a resumed ``mrirecon train`` run holds the validation record of the whole run: the
trainer's history is the kept rows of ``train_log.csv`` again. The card summarised the steps
after the resume only (first, best and last all the resumed step), and a ``--resume`` of a
finished run wrote a card without ``training.validation`` at all."""

from __future__ import annotations

import csv

import pytest
import yaml

from mrirecon.training.run import train_from_config
from tests.training.test_training import sim_data, write_config  # noqa: F401 (fixture)


def _validation(out) -> dict:
    """The card's per-metric record (``psnr``, ``ssim``: first / best / last)."""
    card = yaml.safe_load((out / "model.yaml").read_text())
    record = card["training"].get("validation") or {}
    return {k: v for k, v in record.items() if k in ("psnr", "ssim")}


@pytest.mark.filterwarnings("ignore:.*no better than its input")  # 4 steps of a tiny VarNet
def test_a_resumed_runs_card_records_validation_from_its_first_step(tmp_path, sim_data):  # noqa: F811
    cfg = write_config(tmp_path / "c.yaml", sim_data, tmp_path / "out", val_every=2,
                       checkpoint_every=1)
    out = tmp_path / "out"
    train_from_config(cfg, ["optim.max_steps=2"], progress=False)
    first = _validation(out)
    assert set(first) == {"psnr", "ssim"}
    assert {v["first"]["step"] for v in first.values()} == {2}
    train_from_config(cfg, ["optim.max_steps=4"], resume=True, progress=False)
    rows = [r for r in csv.DictReader((out / "train_log.csv").open()) if r.get("val_PSNR")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    record = _validation(out)
    psnr = {int(r["step"]): float(r["val_PSNR"]) for r in rows}
    for metric in record.values():
        assert metric["first"]["step"] == 2 and metric["last"]["step"] == 4
    best = max(psnr, key=psnr.get)
    assert record["psnr"]["best"]["step"] == best
    assert abs(record["psnr"]["first"]["value"] - psnr[2]) <= 1e-6 * abs(psnr[2])
    # resuming the finished run trains nothing and keeps the record
    train_from_config(cfg, ["optim.max_steps=4"], resume=True, progress=False)
    again = _validation(out)
    assert set(again) == {"psnr", "ssim"}
    assert {k: (v["first"]["step"], v["last"]["step"]) for k, v in again.items()} == {
        k: (2, 4) for k in record}
