"""One rule for ``--device auto`` (core.device.resolve_device), used by run, bench and training."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core.device import resolve_device


def test_auto_picks_cuda_only_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == "cpu"
    with pytest.raises(ValueError, match="no CUDA GPU is available"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda:1") == "cuda:1"
    assert resolve_device(torch.device("cpu")) == "cpu"


def test_unknown_device_is_an_error():
    with pytest.raises(ValueError, match="device must be one of cpu, cuda, auto, got 'tpu'"):
        resolve_device("tpu")
