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

import codecs
import functools
import io
import os
import pickle
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import torch
import yaml
from torch import Tensor

from mrirecon.core.names import did_you_mean
from mrirecon.io.atomic import atomic_write_bytes, atomic_write_text

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def is_shipped_weights(pt: Path, name: str) -> bool:
    """Whether ``pt`` is the shipped weights file that the name ``name`` (as the user wrote it)
    stands for: a shipped name stays a name in cards and provenance."""
    return pt.parent == WEIGHTS_DIR and name == pt.stem


def _places(p: Path, base: Path | None) -> list[Path]:
    """The absolute places a relative path ``p`` is looked for: beside ``base`` first (the
    folder of the pipeline file that names it), then in the working directory."""
    if p.is_absolute():
        return [Path(os.path.abspath(p))]
    roots = ([base] if base is not None else []) + [Path.cwd()]
    return list(dict.fromkeys(Path(os.path.abspath(root / p)) for root in roots))


def available_weights() -> list[str]:
    """Names of the reconstruction models shipped in ``mrirecon/weights`` (a ``.pt`` and a card).

    Cards with a ``kind`` other than ``reconstruction`` (e.g. the perceptual loss's
    ``feature_network``) are not models and are left out.
    """
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(
        p.stem
        for p in WEIGHTS_DIR.glob("*.pt")
        if p.with_suffix(".yaml").is_file()
        and _card_kind(p.with_suffix(".yaml")) == "reconstruction"
    )


def _read_card(card_path: Path):
    """A model card's YAML (safe loader: tags such as ``!!python/object`` are refused)."""
    try:
        return _read_yaml(card_path)
    except yaml.YAMLError as err:
        where = " ".join(str(err).split())
        raise ValueError(f"load_pretrained: {card_path}: not a valid model card ({where})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"load_pretrained: {card_path}: cannot read the model card ({err})") from None


def _card_kind(card_path: Path) -> str:
    return _card_kind_cached(str(card_path), card_path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _card_kind_cached(card_path: str, mtime_ns: int) -> str:
    try:
        card = _read_card(Path(card_path))
    except ValueError:
        return "unreadable"
    return str(card.get("kind", "reconstruction")) if isinstance(card, dict) else "reconstruction"


def _read_yaml(path: Path):
    """A card through libyaml's C loader when present (the cards are long: the Python loader
    took ~0.2 s each, and listing the shipped weights reads every card). Read as UTF-8 (a
    byte-order mark dropped) whatever the locale: cards are written UTF-8 and may be edited."""
    from mrirecon.core.yaml_loader import load_card_yaml  # an alias bomb refused, too

    return load_card_yaml(path.read_text(encoding="utf-8-sig"))


def resolve_weights(name_or_path: str | os.PathLike, who: str = "load_pretrained",
                    base: str | os.PathLike | None = None) -> Path:
    """The absolute ``.pt`` path of a shipped name (``mrirecon/weights/<name>.pt``) or a file.

    A value with a folder part (``/``, ``./``) or a suffix (``.pt``, ``.ckpt``) is a path and
    nothing else: a missing one "does not exist", naming where it was looked for. A relative
    path is looked for beside ``base`` (the folder of the pipeline file that names it), then in
    the working directory; two different files there are refused. A bare name is a shipped
    name; a file of that name there as well is refused as ambiguous (``./NAME`` is the file).
    Folders are never weights (an ``--output`` folder named like shipped weights is no file),
    nor are devices, FIFOs and sockets (``/dev/null``: "not a regular file").
    A leading ``~`` is the home folder (``load_pretrained("~/x.pt")`` looked for ``./~/x.pt``).
    An unknown name suggests the closest shipped one; anything but a str or ``os.PathLike`` is a
    ``TypeError`` (``None`` was "expected str, bytes or os.PathLike object, not NoneType").
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or isinstance(os.fspath(name_or_path), bytes):
        raise TypeError(f"{who}: name_or_path must be a shipped weights name or a path to a .pt "
                        f"file (a str or os.PathLike), got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if text.startswith("~"):
        text = os.path.expanduser(text)
    p = Path(text)
    base = Path(base) if base is not None else None
    places = _places(p, base)
    labels = dict(zip(places, ["beside the pipeline file", "in the working directory"]
                      if len(places) == 2 else ["in the working directory"]))
    files: list[Path] = []
    for q in places:
        if q.is_file() and not any(os.path.samefile(q, f) for f in files):
            files.append(q)
    if len(files) > 1:
        raise ValueError(f"{who}: {text!r} names two different files, {files[0]} (beside the "
                         f"pipeline file) and {files[1]} (in the working directory); give the "
                         "one you mean by its absolute path")
    pathlike = p.is_absolute() or "/" in text or os.sep in text or bool(p.suffix)
    shipped = WEIGHTS_DIR / f"{text}.pt"
    if not pathlike and text and shipped.is_file():
        if files:
            raise ValueError(f"{who}: {text!r} is both the shipped weights {shipped} and the file "
                             f"{files[0]} ({labels.get(files[0], 'here')}); write ./{text} (or "
                             "its absolute path) for the file, or move it away for the shipped "
                             "weights")
        return shipped  # a folder of that name is no weights, so not in the way
    if files:
        return files[0]
    folders = [q for q in places if q.is_dir()]
    if folders:
        raise ValueError(f"{who}: {folders[0]} is a folder, not a .pt state dict")
    special = [q for q in places if q.exists()]  # /dev/null was "does not exist"
    if special:
        raise ValueError(f"{who}: {special[0]} is not a regular file (a device, FIFO or socket), "
                         "not a .pt state dict; give the weights file's path")
    if pathlike:
        if p.is_absolute():
            raise FileNotFoundError(f"{who}: weights file {places[0]} does not exist")
        looked = " and ".join(f"{q} ({labels[q]})" for q in places)
        rule = ("a relative path is looked for beside the pipeline file, then in the working "
                "directory" if base is not None else "a relative path is taken from the working "
                "directory")
        raise FileNotFoundError(f"{who}: weights file {text} does not exist: looked for {looked}; "
                                f"{rule}")
    names = sorted(q.stem for q in WEIGHTS_DIR.glob("*.pt")) if WEIGHTS_DIR.is_dir() else []
    raise FileNotFoundError(
        f"{who}: no weights named {text!r}{did_you_mean(text, names)}; shipped: "
        f"{', '.join(names) or 'none'} "
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


#: What a file that is no PyTorch weights starts with, and what to do about it.
_LFS_POINTER = b"version https://git-lfs"
_LEGACY_MAGIC = b"L119547037146038801333356"  # torch's legacy magic number, pickle protocol 0


def _sniff(path: Path, who: str) -> str:
    """``"zip"`` (torch's archive format), ``"pickle"`` (torch's legacy format) or ``"other"``
    for the first bytes of ``path``; a Git LFS pointer or a text file (a model card, an HTML
    page saved instead of the download) is refused here, naming what it is: ``torch.load``
    called them "pickled Python objects … code inside them would run", or said "101"."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as err:
        raise ValueError(f"{who}: {path} cannot be read ({err.strerror or err})") from None
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" or head.startswith(_LEGACY_MAGIC):
        return "pickle"
    if head.startswith(_LFS_POINTER):
        raise ValueError(f"{who}: {path} is a Git LFS pointer, not the weights (a short text "
                         "naming the file that LFS should have put there): run `git lfs pull` "
                         "(or download the file itself)")
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "other"
    if text and all(c.isprintable() or c in "\t\n\r\f" for c in text):
        if path.suffix in (".yaml", ".yml") and path.with_suffix(".pt").is_file():
            raise ValueError(f"{who}: {path} is a model card (YAML text), not the weights: give "
                             f"{path.with_suffix('.pt')}, which it describes")
        first = " ".join(text.split())[:40]
        raise ValueError(f"{who}: {path} is a text file, not PyTorch weights (a model card? an "
                         f"HTML page saved instead of the download?): it begins {first!r}; give "
                         "the .pt file")
    return "other"


def check_archive(path: Path, who: str) -> None:
    """Refuse a torch zip archive whose members fail their CRC-32 check: ``torch.load`` does
    not check it, so flipped bits load as other numbers (the shipped VarNet gave 4.7 dB for
    18.7, exit 0). Reading the ~4 MB shipped files once costs a few milliseconds."""
    if not zipfile.is_zipfile(path):  # cut short: torch.load fails, damage_note says why
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as err:
        raise ValueError(f"{who}: {path} is damaged: its zip archive cannot be read ({err}); "
                         "download or copy it again, or rebuild it (shipped weights: make "
                         "weights)") from None
    if not any(n.endswith("data.pkl") for n in names):
        raise ValueError(f"{who}: {path} is a zip archive, but not PyTorch weights (no data.pkl "
                         f"among its {len(names)} members, e.g. {names[0] if names else 'none'}; a "
                         "NumPy .npz?): save the tensors with torch.save(state_dict, PATH)")
    if bad is not None:
        raise ValueError(f"{who}: {path}: member {bad}: CRC mismatch: the file is damaged (its "
                         "bytes are not those written); download or copy it again, or rebuild "
                         "it (shipped weights: make weights)")


def check_map_location(map_location, who: str = "load_pretrained") -> None:
    """Refuse a ``map_location`` device that torch cannot load onto here, naming it: ``"cuda"``
    without a GPU, ``"gpu"`` or ``"CPU"`` (not torch's names) and ``"meta"`` (no values) all
    read "the weights file cannot be read safely", blaming the file. A dict or a function
    (``torch.load``'s other forms) is left to torch."""
    if not isinstance(map_location, (str, torch.device)):
        return
    text = str(map_location)
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError, ValueError):
        low = text.strip().lower()
        hint = "no device torch knows"
        if low.startswith("gpu"):
            hint = "torch's name of an NVIDIA GPU is 'cuda'"
        elif low != text and low.split(":")[0] in ("cpu", "cuda", "mps"):
            hint = f"device names are lower case: {low!r}"
        raise ValueError(f"{who}: map_location {text!r} is not a device ({hint}); use 'cpu' or "
                         "'cuda' (or 'cuda:N')") from None
    if device.type == "meta":
        raise ValueError(f"{who}: map_location {text!r} loads no values (meta tensors hold none); "
                         "load on 'cpu', then model.to('meta') if a model without data is wanted")
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{who}: map_location {text!r}: no CUDA GPU is available to torch "
                             "here; use map_location='cpu'")
        if device.index is not None and device.index >= count:
            raise ValueError(f"{who}: map_location {text!r}: torch sees {count} CUDA GPU(s) here "
                             f"(cuda:0 to cuda:{count - 1})")
    elif device.type != "cpu":
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type, None)
        available = getattr(backend, "is_available", None)
        if not callable(available) or not available():  # no such backend installed: "xla"
            raise ValueError(f"{who}: map_location {text!r}: no {device.type} device is available "
                             "to torch here; use map_location='cpu'")


def read_state_dict(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu",
                    who: str = "load_pretrained") -> dict[str, Tensor]:
    """The state dict in a shipped name's or a path's ``.pt`` file (weights only).

    Raises
    ------
    FileNotFoundError
        Unknown name or missing file.
    ValueError
        The file cannot be read safely, is damaged (a member fails its CRC-32), is no PyTorch
        file (a Git LFS pointer, a text file) or holds no tensors by name (names the file).
    """
    check_map_location(map_location, who)
    path = resolve_weights(name_or_path, who)
    kind = _sniff(path, who)
    if kind == "zip":
        check_archive(path, who)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message advises the unsafe load, with escape codes
        if kind == "other":
            raise ValueError(f"{who}: {path} is not a PyTorch weights file (neither torch's zip "
                             f"archive nor a pickle: {str(e).splitlines()[0][:80]}); give the "
                             ".pt file") from None
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
