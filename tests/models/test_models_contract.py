"""Structural rules of the models package, checked on the source: weights are read and
written in one place, models ask operators for typed capabilities instead of probing attributes,
and no model reads files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from mrirecon.io.weights import read_state_dict, resolve_weights
from mrirecon.models import magnitude, rss_image
from mrirecon.operators.mri import Fourier

ROOT = Path(__file__).resolve().parents[2] / "mrirecon"


def _sources(*parts: str):
    paths = sorted((ROOT.joinpath(*parts)).rglob("*.py"))
    assert len(paths) > 5, ROOT.joinpath(*parts)  # a wrong root would make every rule vacuous
    for p in paths:
        yield p, p.read_text()


def test_weights_are_read_by_the_one_reader():
    # io/weights.py reads weights; training/checkpoint.py reads resumable training checkpoints
    allowed = {ROOT / "io" / "weights.py", ROOT / "training" / "checkpoint.py"}
    call = re.compile(r"(?<!`)torch\.load\(")  # a call, not a ``torch.load(...)`` in a docstring
    offenders = [str(p.relative_to(ROOT)) for p, text in _sources() if call.search(text) and p not in allowed]
    assert offenders == []


def test_weights_are_written_by_the_one_writer():
    # io/weights.py writes weights and cards (atomically); training/checkpoint.py checkpoints
    allowed = {ROOT / "io" / "weights.py", ROOT / "training" / "checkpoint.py"}
    call = re.compile(r"(?<!`)torch\.save\(|yaml\.safe_dump\(card")
    offenders = [str(p.relative_to(ROOT)) for p, text in _sources() if call.search(text) and p not in allowed]
    assert offenders == []


def test_writer_round_trips_and_a_failed_write_keeps_the_previous_files(tmp_path, monkeypatch):
    import yaml

    from mrirecon.io import atomic
    from mrirecon.io.weights import write_weights

    best = {30: 30.5, 60: 32.25}  # one object twice: yaml.safe_dump would write &id001 / *id001
    card = {"model": {"name": "x"}, "training": {"best": best, "history": [{"val": best}]}}
    w = torch.randn(3, 2, requires_grad=True)
    path = write_weights(tmp_path / "sub" / "m.pt", {"w": w}, card)
    text = path.with_suffix(".yaml").read_text()
    assert "&id" not in text and "*id" not in text and yaml.safe_load(text) == card
    assert list(yaml.safe_load(text)) == ["model", "training"]  # the card's own key order
    assert torch.equal(read_state_dict(path)["w"], w.detach())
    # equal weights, equal bytes (adapted weights' sha256 in provenance.json differed between
    # identical runs: torch named the archive inside after the random temp file)
    again = write_weights(tmp_path / "other" / "m.pt", {"w": w}, None)
    assert again.read_bytes() == path.read_bytes()
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_weights(path, {"w": torch.zeros(3, 2)}, {"model": {"name": "y"}})
    with pytest.raises(OSError, match="disk full"):
        write_weights(path, None, {"model": {"name": "y"}})
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before  # no temp files left
    monkeypatch.undo()
    # diverged weights: refused before either file is touched (neither the .pt nor its card)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"m\.pt: refusing to write weights with NaN or Inf values "
                                             r"in 1 of their 2 tensors \(b\).*nothing was written"):
            write_weights(path, {"w": torch.zeros(3, 2), "b": torch.tensor([1.0, bad])},
                          {"model": {"name": "y"}})
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    fresh = tmp_path / "new" / "m.pt"
    with pytest.raises(ValueError, match="nothing was written"):
        write_weights(fresh, {"w": torch.full((2,), float("nan"), dtype=torch.complex64)}, {"model": {}})
    assert not fresh.parent.exists()


def test_models_ask_for_capabilities_not_attributes():
    pattern = re.compile(r"(getattr|hasattr)\(op\b")
    offenders = [str(p.relative_to(ROOT)) for p, text in _sources("models") if pattern.search(text)]
    assert offenders == []


def test_models_read_no_files():
    pattern = re.compile(r"(?<!`)torch\.load\(|\bopen\(|read_state_dict|WEIGHTS_DIR|Path\(")
    offenders = [str(p.relative_to(ROOT)) for p, text in _sources("models") if pattern.search(text)]
    assert offenders == []


def test_reader_resolves_names_and_refuses_what_is_not_a_state_dict(tmp_path):
    assert resolve_weights("patch_gmm").name == "patch_gmm.pt"
    state = read_state_dict("patch_gmm")
    assert {"gmm.means", "gmm.covs", "gmm.weights"} <= set(state)
    bad = tmp_path / "bad.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "step": 3}, bad)
    assert set(read_state_dict(bad)) == {"w"}  # a training checkpoint is unwrapped
    torch.save([1, 2], bad)
    with pytest.raises(ValueError, match="bad.pt holds no state dict"):
        read_state_dict(bad, who="test")
    with pytest.raises(FileNotFoundError, match="no weights named 'nothing_here'"):
        read_state_dict("nothing_here")
    with pytest.raises(ValueError, match=r"test: .* is a folder, not a \.pt state dict"):
        read_state_dict(tmp_path, who="test")  # not "no weights named" / "does not exist"


def test_named_output_steps():
    x = torch.tensor([[3 + 4j, -1j]], dtype=torch.complex64)
    assert torch.equal(magnitude(x), torch.tensor([[5.0, 1.0]]))
    real = torch.tensor([-1.0, 2.0])
    assert magnitude(real) is real  # a real (CT) image is returned as is
    # RSS of the coil images of k-space = sqrt(sum_c |F^H k_c|^2)
    g = torch.Generator().manual_seed(0)
    k = torch.randn(2, 3, 8, 6, dtype=torch.complex128, generator=g)
    coil = Fourier().H(k)
    ref = coil.abs().square().sum(-3).sqrt()
    assert torch.allclose(rss_image(k), ref, rtol=8 * torch.finfo(torch.float64).eps, atol=0)
