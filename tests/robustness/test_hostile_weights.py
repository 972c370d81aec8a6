"""Hostile weight files and weight names: damaged archives, names resolved by guesswork, paths
relative to a pipeline file, weights without a card, files that are no weights, values a
float32 model cannot hold, a malformed ``overridable`` (docs/robustness.md)."""

from __future__ import annotations

import logging
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mrirecon.core.config import ConfigError
from mrirecon.io.weights import WEIGHTS_DIR, check_archive, read_state_dict, resolve_weights, write_weights
from mrirecon.models import build_model
from mrirecon.pipeline.definitions import PIPELINES, load_pipeline
from mrirecon.training.weights import available_weights, load_model, load_pretrained, model_card

#: A MoDL small enough to build in milliseconds; trained-looking settings that are not the
#: constructor's defaults (iterations 10, cg_iterations 10, features 64) and do not show in
#: the shapes of its tensors (shared denoiser), except features.
TINY = {"iterations": 2, "layers": 3, "features": 4, "cg_iterations": 3}


def tiny_weights(path: Path, card: dict | None = None, **extra) -> Path:
    """A tiny MoDL's ``.pt`` at ``path`` with a card of its parameters (and ``extra`` sections);
    ``card={}`` writes none."""
    state = build_model("modl", **TINY).state_dict()
    if card is None:
        card = {"model": {"name": "modl", "params": dict(TINY)}, **extra}
    return write_weights(path, state, card or None)


def flip_bits(path: Path) -> str:
    """Flip the lowest exponent bit of every 16th float32 in each data member of the torch
    archive ``path`` (x2 or /2): sizes and zip structure unchanged, only the CRC-32 no longer
    match. Returns the first member's name."""
    with zipfile.ZipFile(path) as z:
        members = [i for i in z.infolist() if "/data/" in i.filename]
    raw = bytearray(path.read_bytes())
    for it in members:
        off = it.header_offset
        start = off + 30 + int.from_bytes(raw[off + 26:off + 28], "little") + \
            int.from_bytes(raw[off + 28:off + 30], "little")
        for i in range(0, it.file_size - 3, 64):
            raw[start + i + 2] ^= 0x80
    path.write_bytes(bytes(raw))
    return members[0].filename


# F1 ---------------------------------------------------------------------------------------

def test_flipped_bits_in_a_weights_archive_are_refused_naming_the_member(tmp_path):
    """torch.load does not check the members' CRC-32: flipped bits in the shipped VarNet loaded
    as other numbers (4.7 dB for 18.7, exit 0)."""
    pt = tiny_weights(tmp_path / "m.pt")
    clean = load_pretrained(pt).state_dict()
    member = flip_bits(pt)
    with pytest.raises(ValueError, match=rf"m\.pt: member {re.escape(member)}: CRC mismatch: the "
                                         r"file is damaged .*download or copy it again, or "
                                         r"rebuild it \(shipped weights: make weights\)"):
        load_pretrained(pt)
    # the damage is real: read unchecked, the same file gives other numbers
    state = torch.load(pt, weights_only=True)
    assert any(not torch.equal(state[k], clean[k]) for k in state)


def test_legacy_torch_files_and_the_shipped_archives_pass(tmp_path):
    """Legacy (non-zip) torch files have no CRC to check and still load; every shipped file's
    members match their CRC-32."""
    state = build_model("modl", **TINY).state_dict()
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert set(read_state_dict(tmp_path / "legacy.pt")) == set(state)
    for pt in sorted(WEIGHTS_DIR.glob("*.pt")):
        check_archive(pt, "test")


# F2 ---------------------------------------------------------------------------------------

def test_a_missing_path_with_a_folder_part_does_not_fall_back_to_shipped_weights(tmp_path):
    """``/nonexistent/models/varnet_brain_sim`` ran the shipped varnet_brain_sim, exit 0."""
    missing = tmp_path / "models" / "modl_brain_sim"
    with pytest.raises(FileNotFoundError, match=rf"weights file {re.escape(str(missing))} does not exist"):
        resolve_weights(missing)
    with pytest.raises(FileNotFoundError, match=rf"load_model: weights file {re.escape(str(missing))} does not exist"):
        load_model("modl", {}, str(missing))


def test_a_folder_named_like_shipped_weights_does_not_shadow_them(tmp_path, monkeypatch):
    """An --output folder named like the shipped weights gave "is a folder, not a .pt"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "modl_brain_sim").mkdir()
    assert resolve_weights("modl_brain_sim") == WEIGHTS_DIR / "modl_brain_sim.pt"
    assert load_model("modl_brain_sim", {}, None).iterations == model_card("modl_brain_sim")["model"]["params"]["iterations"]
    with pytest.raises(ValueError, match="is a folder, not a .pt"):
        resolve_weights("./modl_brain_sim")


def test_a_file_named_like_shipped_weights_in_the_working_directory_is_ambiguous(tmp_path, monkeypatch):
    """A suffix-less file named like shipped weights silently replaced them (17.67 dB, exit 0)."""
    monkeypatch.chdir(tmp_path)
    tiny_weights(tmp_path / "modl_brain_sim")  # writes modl_brain_sim and modl_brain_sim.yaml
    with pytest.raises(ValueError, match=r"'modl_brain_sim' is both the shipped weights .*modl_brain_sim\.pt "
                                         rf"and the file {re.escape(str(tmp_path / 'modl_brain_sim'))} "
                                         r"\(in the working directory\); write \./modl_brain_sim"):
        load_model("modl", {}, "modl_brain_sim")
    assert resolve_weights("./modl_brain_sim") == tmp_path / "modl_brain_sim"


# F3 ---------------------------------------------------------------------------------------

def _pipeline_file(folder: Path, weights: str) -> Path:
    text = (PIPELINES / "mri_modl_brain_sim.yaml").read_text()
    path = folder / "p.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(text.replace("weights: modl_brain_sim", f"weights: {weights}"))
    return path


def test_relative_weights_in_a_pipeline_file_are_found_beside_it(tmp_path, monkeypatch):
    """A relative reconstruct.weights was taken from the working directory alone: "weights file
    mine.pt does not exist" without saying where it looked, and a file of that name in the
    working directory won over the one beside the pipeline file."""
    pipe = _pipeline_file(tmp_path / "pl", "mine.pt")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigError, match=rf"p\.yaml: reconstruct\.weights: weights file mine\.pt does "
                                          rf"not exist: looked for {re.escape(str(tmp_path / 'pl' / 'mine.pt'))} "
                                          rf"\(beside the pipeline file\) and {re.escape(str(cwd / 'mine.pt'))} "
                                          r"\(in the working directory\)"):
        load_pipeline(str(pipe))
    tiny_weights(tmp_path / "pl" / "mine.pt")
    config = load_pipeline(str(pipe))[0]
    assert config.reconstruct.weights == str(tmp_path / "pl" / "mine.pt")
    assert load_model("modl", {}, config.reconstruct.weights).iterations == TINY["iterations"]
    tiny_weights(cwd / "mine.pt")  # another file of that name in the working directory
    with pytest.raises(ConfigError, match=r"'mine\.pt' names two different files, .*pl/mine\.pt "
                                          r"\(beside the pipeline file\) and .*elsewhere/mine\.pt"):
        load_pipeline(str(pipe))
    # --set is relative to the working directory, and shipped pipelines and names stay as they are
    assert load_pipeline(str(pipe), ["reconstruct.weights=mine.pt"])[0].reconstruct.weights == "mine.pt"
    assert load_pipeline("mri_modl_brain_sim")[0].reconstruct.weights == "modl_brain_sim"
    (cwd / "mine.pt").unlink()
    with pytest.raises(FileNotFoundError, match=rf"weights file mine\.pt does not exist: looked for "
                                                rf"{re.escape(str(cwd / 'mine.pt'))} \(in the working "
                                                r"directory\); a relative path is taken from the "
                                                "working directory"):
        resolve_weights("mine.pt", "reconstruct.weights")


# F4 ---------------------------------------------------------------------------------------

def test_a_link_to_carded_weights_finds_the_card_beside_its_target(tmp_path):
    """A symlink to a shipped .pt was taken for weights without a card (looked beside the link)."""
    pt = tiny_weights(tmp_path / "a" / "m.pt")
    link = tmp_path / "b" / "link.pt"
    link.parent.mkdir()
    os.symlink(pt, link)
    assert model_card(link)["model"]["params"] == TINY
    assert load_model("modl", {}, link).iterations == TINY["iterations"]  # not the default 10


def test_weights_without_a_card_warn_what_they_were_built_as(tmp_path, caplog):
    """A card-less MoDL was built with the constructor's iterations 10 / cg_iterations 10 where it
    was trained at 5 / 8 (20.84 against 21.65 dB), without a word."""
    pt = tiny_weights(tmp_path / "m.pt", card={})
    assert not (tmp_path / "m.yaml").exists()
    with caplog.at_level(logging.WARNING):
        model = load_model("modl", {"layers": 3, "features": 4}, pt)
    assert model.iterations == 10  # what the warning is about
    note = [r.getMessage() for r in caplog.records if "no model card" in r.getMessage()]
    assert len(note) == 1
    assert re.search(r"m\.pt has no model card \(m\.yaml\): built as modl with iterations=10 \(default\), "
                     r"layers=3, features=4, .*cg_iterations=10 \(default\).*; no training range is "
                     r"checked; write a card .*or pass reconstruct\.params", note[0])
    with pytest.raises(ValueError, match=r"size mismatch .*; they fit modl with features=4 \(set "
                                         r"reconstruct\.params\.features=4"):
        load_model("modl", {"layers": 3}, pt)


# F5 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    ("version https://git-lfs.github.com/spec/v1\noid sha256:4d7a21\nsize 3923654\n",
     r"is a Git LFS pointer, not the weights .*run `git lfs pull`"),
    ("<!DOCTYPE html><html><head><title>Sign in</title></head></html>\n",
     r"is a text file, not PyTorch weights \(a model card\? an HTML page"),
    ("hello world\n", r"is a text file, not PyTorch weights .*begins 'hello world'"),
])
def test_files_that_are_no_weights_are_named_for_what_they_are(tmp_path, content, message):
    """An LFS pointer or an HTML page got "holds pickled Python objects … code inside them would
    run"; a short text "cannot be read safely: 101"."""
    pt = tmp_path / "w.pt"
    pt.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        read_state_dict(pt)
    assert "pickled" not in str(err.value)


def test_a_card_binary_or_missing_checkpoint_given_as_weights_is_named(tmp_path):
    pt = tiny_weights(tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"m\.yaml is a model card \(YAML text\), not the weights: "
                                         r"give .*m\.pt"):
        load_model("modl", {}, tmp_path / "m.yaml")
    (tmp_path / "noise.pt").write_bytes(bytes(range(7, 255)) * 4)
    with pytest.raises(ValueError, match=r"noise\.pt is not a PyTorch weights file") as err:
        read_state_dict(tmp_path / "noise.pt")
    assert "pickled" not in str(err.value)
    np.savez(tmp_path / "arrays.npz", w=np.zeros(3))
    with pytest.raises(ValueError, match=r"arrays\.npz is a zip archive, but not PyTorch weights "
                                         r"\(no data\.pkl among its 1 members, e\.g\. w\.npy; a NumPy \.npz\?\)"):
        read_state_dict(tmp_path / "arrays.npz")
    missing = tmp_path / "missing.ckpt"
    with pytest.raises(FileNotFoundError, match=rf"weights file {re.escape(str(missing))} does not exist"):
        load_model("varnet", {}, str(missing))
    assert pt.is_file()


# F6 ---------------------------------------------------------------------------------------

def test_values_a_float32_model_cannot_hold_are_refused_naming_the_tensor(tmp_path):
    """float64 weights of 1e39 passed the NaN / Inf check and became Inf in the float32 model:
    every input then failed as "the reconstruction holds NaN or Inf values (diverged?)"."""
    state = {k: v.double() for k, v in build_model("modl", **TINY).state_dict().items()}
    pt = tmp_path / "m.pt"
    write_weights(pt, state, {"model": {"name": "modl", "params": dict(TINY)}})
    assert torch.isfinite(next(load_pretrained(pt).parameters())).all()  # in range: cast, loaded
    key = next(k for k, v in state.items() if v.is_floating_point())
    big = dict(state)
    big[key] = big[key].clone()
    big[key].view(-1)[0] = 1e39  # float32's max is 3.4e38
    write_weights(pt, big, None)
    with pytest.raises(ValueError, match=rf"load_pretrained: .*m\.pt: tensor {re.escape(key)} reaches "
                                         r"1e\+39, beyond the 3\.4e\+38 of the model's torch\.float32"):
        load_pretrained(pt)
    for dtype, why in ((torch.complex64, "drop its imaginary part"), (torch.int32, "integers")):
        odd = {k: v.to(dtype) if k == key else v.float() for k, v in state.items()}
        write_weights(pt, odd, None)
        with pytest.raises(ValueError, match=rf"m\.pt: tensor {re.escape(key)} is {dtype} where the "
                                             rf"model's is real torch\.float32: .*{why}"):
            load_pretrained(pt)


# F7 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("overridable, message", [
    ("iterations", r"overridable: expected a list of the model's parameter names .*got 'iterations'"),
    (["iterations", "iteratoins"], r"overridable: 'iteratoins' is no parameter of modl"),
    ([3], r"overridable: expected a list"),
])
def test_a_malformed_overridable_is_refused_when_the_card_is_read(tmp_path, overridable, message):
    """`overridable: iterations` (a string) was split into letters; unknown names were kept."""
    pt = tiny_weights(tmp_path / "m.pt", overridable=overridable)
    with pytest.raises(ValueError, match=rf"m\.yaml: {message}"):
        model_card(pt)
    with pytest.raises(ValueError, match=rf"m\.yaml: {message}"):
        load_model("modl", {"iterations": 4}, pt)


def test_every_shipped_card_and_a_valid_overridable_pass(tmp_path):
    for name in available_weights():
        model_card(name)
    pt = tiny_weights(tmp_path / "m.pt", overridable=["iterations", "cg_iterations"])
    assert load_model("modl", {"iterations": 4}, pt).iterations == 4
    assert yaml.safe_load((tmp_path / "m.yaml").read_text())["overridable"] == ["iterations", "cg_iterations"]


def test_the_card_of_a_linked_weights_file_enters_the_run_hashes(tmp_path):
    """``--resume`` and provenance hash the card that is read: beside the link's target."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.run_state import weights_sha256

    pt = tiny_weights(tmp_path / "a" / "m.pt")
    link = tmp_path / "b" / "link.pt"
    link.parent.mkdir()
    os.symlink(pt, link)
    config = load_pipeline("mri_modl", [f"reconstruct.weights={link}"])[0]
    hashes = weights_sha256(config)
    assert set(hashes) == {str(link), str(pt.with_suffix(".yaml"))}


def test_is_shipped_weights_needs_the_name_and_nonfinite_tensors_sees_complex_nan():
    """Fails if weights.py:38 ``and name == pt.stem`` dropped and if weights.py:116
    ``or v.is_complex()`` dropped. A shipped file named by its path is a path, not the shipped
    name (cards and provenance keep what the user wrote); a complex tensor holding NaN or Inf
    is named as a real one is."""
    from mrirecon.io.weights import WEIGHTS_DIR, is_shipped_weights, nonfinite_tensors

    pt = WEIGHTS_DIR / "modl_brain_sim.pt"
    assert is_shipped_weights(pt, "modl_brain_sim")
    assert not is_shipped_weights(pt, str(pt))
    assert not is_shipped_weights(pt, "other_name")
    state = {"ok": torch.ones(2, dtype=torch.complex64),
             "nan": torch.tensor([1 + 0j, complex(float("nan"), 0)], dtype=torch.complex64),
             "inf": torch.tensor([complex(0, float("inf"))], dtype=torch.complex64),
             "real": torch.tensor([float("inf")]), "int": torch.tensor([1])}
    assert sorted(nonfinite_tensors(state)) == ["inf", "nan", "real"]


def test_a_legacy_pickle_with_code_is_refused_as_pickled_objects(tmp_path):
    """Fails if weights.py:158 ``head[:1] == b"\\x80" or`` dropped. A pickle of protocol >= 2
    (first byte 0x80: torch's legacy, non-zip save) holding objects that
    weights-only loading refuses is named as pickled Python objects (the unsafe-load advice),
    not as "not a PyTorch weights file"."""
    import datetime

    from mrirecon.io.weights import read_state_dict

    path = tmp_path / "model.pt"
    torch.save({"w": datetime.date(2020, 1, 1)}, path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    with pytest.raises(ValueError, match="pickled Python objects"):
        read_state_dict(path)


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_weights_load_in_their_own_precision_whatever_the_default_dtype(float64_default):
    """A notebook's torch.set_default_dtype(torch.float64) before load_pretrained built float64
    parameters, into which the float32 weights were upcast: complex64 data were then refused
    ("the data are torch.complex64 but the weights are torch.float64")."""
    from mrirecon.operators import sense

    model = load_pretrained("modl_brain_sim")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.get_default_dtype() == torch.float64  # the caller's setting is kept
    g = torch.Generator().manual_seed(0)
    op = sense(torch.ones(1, 16, 16, dtype=torch.complex64), torch.ones(16))
    y = op(torch.randn(16, 16, dtype=torch.complex64, generator=g))[None]
    with torch.no_grad():
        assert torch.isfinite(model(y, op)).all()


@pytest.mark.parametrize("name", ["modl_brain_sim", "primal_dual_ct_sim", "patch_gmm"])
def test_a_load_never_touches_the_process_wide_default_dtype(float64_default, monkeypatch, name):
    """The model was built inside set_default_dtype(float32) ... set_default_dtype(previous): the
    default is one per process, so other threads made float32 tensors while a load ran, and two
    loads at once (a service's request threads) left a float64 default at float32 for good. Now
    no load sets it; the model is built in the caller's default and cast, and equals the one
    built under a float32 default."""
    calls = []
    monkeypatch.setattr(torch, "set_default_dtype", lambda d: calls.append(d))
    model = load_pretrained(name)
    assert calls == [] and torch.get_default_dtype() == torch.float64
    assert {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()} \
        <= {torch.float32}
    monkeypatch.undo()
    torch.set_default_dtype(torch.float32)
    try:
        plain = load_pretrained(name)
    finally:
        torch.set_default_dtype(torch.float64)
    mine, theirs = dict(model.named_buffers()), dict(plain.named_buffers())
    assert mine.keys() == theirs.keys()
    for key, value in theirs.items():  # non-persistent buffers too: computed, not loaded
        torch.testing.assert_close(mine[key], value, rtol=4 * torch.finfo(torch.float32).eps,
                                   atol=0)
    for (k, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.equal(a, b), k


def test_weights_without_a_card_load_in_float32_whatever_the_default(float64_default, tmp_path):
    """``load_model(name, params, path)`` of a bare state_dict (no card) built the model in the
    caller's float64 default and refused complex64 data; as ``load_pretrained``, float32."""
    from mrirecon.training.weights import load_model, model_card

    card = model_card("modl_brain_sim")["model"]
    torch.set_default_dtype(torch.float32)
    try:
        torch.save(load_pretrained("modl_brain_sim").state_dict(), tmp_path / "bare.pt")
    finally:
        torch.set_default_dtype(torch.float64)
    model = load_model(card["name"], dict(card.get("params") or {}), tmp_path / "bare.pt")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert torch.get_default_dtype() == torch.float64
