"""Init cards (:mod:`mrirecon.training.init_card`): what a card that starts a training from
another model's weights must hold, and what is kept of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


def _init_card(tmp_path: Path, card: dict) -> Path:
    init = tmp_path / "init.pt"
    init.write_bytes(b"")  # check_init_card reads only the card beside it
    init.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    return init


def test_an_init_card_omitting_a_default_parameter_is_accepted(tmp_path):
    """Fails if init_card.py ``saved.get(key, defaults.get(key))`` -> ``saved.get(key)``:
    older cards list only the parameters that differ from the model class's default, so a
    parameter the card omits means its default; a continued run at that default must be accepted,
    and one at another value refused, naming the default."""
    from mrirecon.training.init_card import check_init_card

    class Net:
        def __init__(self, stages: int = 2, filter: str = "hann"):
            pass

    init = _init_card(tmp_path, {"model": {"name": "net", "params": {"stages": 3}}})
    check_init_card(init, "staged_ct", "net", {"stages": 3, "filter": "hann"}, Net)
    with pytest.raises(ValueError, match=r"model\.params\.filter = 'hann' \(absent: Net's default\), "
                                         r"this run 'ram-lak'"):
        check_init_card(init, "staged_ct", "net", {"stages": 3, "filter": "ram-lak"}, Net)
    with pytest.raises(ValueError, match=r"model\.params\.stages = 3, this run 2"):
        check_init_card(init, "staged_ct", "net", {"stages": 2, "filter": "hann"}, Net)
    with pytest.raises(ValueError, match=r"has model\.name 'net', this run trains 'other'"):
        check_init_card(init, "staged_ct", "other", {"stages": 3}, Net)


def test_read_init_card_keeps_only_the_run_record_keys(tmp_path):
    """Fails if init_card.py ``{k: training[k] for k in RUN_KEYS if k in training}`` ->
    ``dict(training)``: a continued run's ``training.first_run`` keeps the first run's record
    (:data:`RUN_KEYS`), not everything under its ``training`` (optimizer, loss, data sections
    that the continued card states itself)."""
    from mrirecon.training.init_card import RUN_KEYS, earlier_runs, read_init_card

    training = {"command": "mrirecon train staged_ct --out x", "seed": 3, "steps": 10,
                "optimizer": {"name": "adam", "lr": 1e-3}, "loss": "l1", "validation": {"psnr": 1.0},
                "first_run": {"seed": 1, "command": "first"}}
    init = _init_card(tmp_path, {"model": {"name": "staged_ct"}, "training": training})
    record = read_init_card(init)
    assert record == {k: v for k, v in training.items() if k in RUN_KEYS}
    assert set(record) == {"command", "seed", "steps", "first_run"}
    assert [r["seed"] for r in earlier_runs(record)] == [1, 3]  # oldest first
    init.with_suffix(".yaml").write_text(yaml.safe_dump({"model": {"name": "staged_ct"},
                                                         "training": "not a mapping"}))
    assert read_init_card(init) is None
