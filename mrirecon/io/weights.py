"""The one reader of weight files: shipped names or paths to ``.pt`` state dicts.

Everything that reads weights (:func:`mrirecon.training.weights.load_pretrained` and
``load_model``, the shipped patch GMM of EPLL / unrolled EM, the perceptual loss's feature
network) goes through :func:`read_state_dict`: names resolve to ``mrirecon/weights/<name>.pt``,
files are read with ``torch.load(weights_only=True)`` (no pickled code runs), and what comes
back must be a mapping of tensors (a training checkpoint's ``model`` entry is unwrapped).
Models never read files: loaders build them and load these tensors into them.

Every trainer writes through :func:`write_weights`: the ``.pt`` and its ``.yaml`` card each
atomically (a crash mid-write leaves the previous file), the card without YAML anchors.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from torch import Tensor

from mrirecon.io.atomic import atomic_write_bytes, atomic_write_text

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def resolve_weights(name_or_path: str | os.PathLike, who: str = "load_pretrained") -> Path:
    """A ``.pt`` path for a shipped name (``mrirecon/weights/<name>.pt``) or an existing file."""
    p = Path(name_or_path)
    if p.is_dir():  # else "does not exist", or looked up as a shipped name
        raise ValueError(f"{who}: {p} is a folder, not a .pt state dict")
    if p.suffix == ".pt" or p.is_file():
        if not p.is_file():
            raise FileNotFoundError(f"{who}: weights file {p} does not exist")
        return p
    shipped = WEIGHTS_DIR / f"{p.name}.pt"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in WEIGHTS_DIR.glob("*.pt")) if WEIGHTS_DIR.is_dir() else []
    raise FileNotFoundError(
        f"{who}: no weights named {str(name_or_path)!r}; shipped: {', '.join(names) or 'none'} "
        "(or give a path to a .pt file)"
    )


def nonfinite_tensors(state: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point / complex tensors of ``state`` holding NaN or Inf."""
    return [k for k, v in state.items() if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex())
            and not bool(torch.isfinite(v.detach()).all())]


def damage_note(path: str | os.PathLike, err: BaseException) -> str | None:
    """Why ``torch.load`` failed on ``path`` with ``err``, in words, when the file is cut short
    or damaged (torch says "[Errno 22] Invalid argument", "failed finding central directory"
    or nothing at all); ``None`` for other failures."""
    import zipfile

    try:
        size = os.stat(path).st_size
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return None
    if size == 0:
        what = "empty, 0 bytes"
    elif head == b"PK\x03\x04" and not zipfile.is_zipfile(path):
        what = f"a PyTorch archive of {size} bytes without its end, the zip central directory"
    elif isinstance(err, EOFError) or "unexpected EOF" in str(err):
        what = f"its data end early, after {size} bytes"
    else:
        return None
    return f"is truncated or damaged: {what} (an interrupted save or copy?)"


def read_state_dict(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    who: str = "load_pretrained") -> dict[str, Tensor]:
    """The state dict in a shipped name's or a path's ``.pt`` file (weights only).

    Raises
    ------
    FileNotFoundError
        Unknown name or missing file.
    ValueError
        The file cannot be read safely or holds no tensors by name (names the file).
    """
    path = resolve_weights(name_or_path, who)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's message advises the unsafe load, with escape codes
        raise ValueError(f"{who}: {path} cannot be read safely: it holds pickled Python objects "
                         "(a whole model, or a checkpoint with custom classes), which are not "
                         "loaded: code inside them would run; save the state dict "
                         "(torch.save(model.state_dict(), PATH)) and load that") from None
    except Exception as e:
        note = damage_note(path, e)
        if note:
            raise ValueError(f"{who}: {path} {note}; it cannot be read") from e
        raise ValueError(f"{who}: {path} cannot be read safely: {str(e) or type(e).__name__}") from e
    for key in ("model", "state_dict"):  # a training checkpoint
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{who}: {path} holds no state dict (tensors by parameter name)")
    bad = nonfinite_tensors(state)
    if bad:  # diverged training: caught here, not blamed on every input the model then meets
        raise ValueError(f"{who}: {path} holds NaN or Inf values in {len(bad)} of its {len(state)} "
                         f"tensors ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})")
    return state


class _CardDumper(yaml.SafeDumper):
    """Writes a value that occurs twice (a best score also in the history) out in full: cards
    are read by people, who should not have to resolve ``&id001`` / ``*id001``."""

    def ignore_aliases(self, data) -> bool:
        return True


def card_yaml(card: Mapping, width: int = 80) -> str:
    """A model card as YAML text, in its key order and without anchors."""
    return yaml.dump(dict(card), Dumper=_CardDumper, sort_keys=False, width=width)


def write_weights(path: str | os.PathLike, state: Mapping[str, Tensor] | None, card: Mapping | None,
                  width: int = 80) -> Path:
    """Write ``state`` to ``path`` (a ``.pt`` state dict, tensors detached and on the CPU) and
    ``card`` to ``<stem>.yaml`` beside it, each atomically; ``None`` skips that file."""
    path = Path(path)
    if state is not None:  # checked before anything is written: the card would describe them
        bad = nonfinite_tensors(state)
        if bad:
            raise ValueError(f"{path}: refusing to write weights with NaN or Inf values in {len(bad)} "
                             f"of their {len(state)} tensors ({', '.join(bad[:3])}"
                             f"{', ...' if len(bad) > 3 else ''}): the training diverged (a lower "
                             "learning rate may help); nothing was written")
    path.parent.mkdir(parents=True, exist_ok=True)
    if state is not None:
        tensors = {k: v.detach().cpu().clone() for k, v in state.items()}
        buffer = io.BytesIO()  # not the temp file: torch names the archive inside after it, so
        torch.save(tensors, buffer)  # equal weights would get different bytes and sha256
        atomic_write_bytes(path, buffer.getvalue())
    if card is not None:
        atomic_write_text(path.with_suffix(".yaml"), card_yaml(card, width))
    return path
