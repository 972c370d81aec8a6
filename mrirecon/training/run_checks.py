"""Checks of ``mrirecon train`` around its data and its output folder, before anything is trained.

* :func:`check_fresh_output`: a fresh run into an ``output_dir`` that holds another run's
  checkpoint or model is refused (a restart of the same config replaces them), the way
  ``mrirecon run`` refuses an output folder holding other inputs' outputs;
* :func:`check_resume_config`: ``--resume`` compares the config with the one the checkpoint was
  made with (recorded in it), not with a ``config.yaml`` a later run may have replaced, both as
  this version reads them (:func:`canonical_config`);
* :func:`check_resume_files`: ``--resume`` compares the training files with those the
  checkpoint records (:func:`file_records`);
* :func:`check_validation_overlap`: validation files that are also training files (the same
  file, the same bytes, or the same data stored otherwise) are refused, files of the same
  ``patient_id`` reported;
* :func:`lock_output_dir`: a second run into a folder another one is writing into is refused.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from mrirecon.core.config import ConfigError
from mrirecon.io.atomic import file_sha256
from mrirecon.threads import env_int

log = logging.getLogger("mrirecon.train")

#: What a resumed run may change: how long it trains and how it logs, not what it learns from.
RESUMABLE_CHANGES = frozenset({"optim.max_steps", "log_every", "val_every", "checkpoint_every",
                               "val_max_slices", "tensorboard", "device", "output_dir", "name",
                               "data.maps_cache_mb"})  # memory and time only, never the result
#: What a run leaves in ``output_dir`` that belongs to it: another run must not mix with them.
RUN_OUTPUTS = ("checkpoints/last.pt", "model.pt", "model.yaml")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flat(v, key + ".") if isinstance(v, dict) and v else {key: v})
    return out


def _canonical_params(model: object) -> object:
    """``model`` (a config's ``model`` section) with the deprecated names of its ``params``
    renamed as :func:`~mrirecon.core.names.canonical_params` renames them when the model is
    built (``num_cascades`` -> ``iterations``), without its warning (the run gave it)."""
    if not (isinstance(model, dict) and isinstance(model.get("params"), dict)):
        return model
    from mrirecon.core.names import canonical_params
    from mrirecon.io.errors import quiet_warnings
    from mrirecon.models.registry import _MODELS, model_defaults, model_keywords

    name = str(model.get("name", "")).lower().replace("-", "_")
    if name not in _MODELS:
        return model
    accepted = model_keywords(name) or set(model_defaults(name))
    with quiet_warnings(FutureWarning):  # one lock: mrirecon.io.errors.quiet_warnings
        try:
            params = canonical_params(model["params"], accepted, "model.params")
        except ValueError:  # an old and a new name together: compared as written
            return model
    return {**model, "params": params}


def canonical_config(config: dict) -> dict:
    """``config`` (a recorded or current training config, a plain dict) as this version reads
    it: loaded through :class:`~mrirecon.training.config.TrainConfig` (keys added since take
    their defaults: a checkpoint of 5a8361d lacked ``loss.perceptual``, ``loss.adversarial``, ...,
    whose defaults are the old behaviour) and model parameters under their canonical names
    (:func:`_canonical_params`); as recorded, names renamed, when the schema refuses it (a key
    removed since, a value of another type)."""
    from mrirecon.core.config import from_dict, to_dict
    from mrirecon.training.config import TrainConfig

    config = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))
    if not isinstance(config, dict):
        return {}
    config = {**config, "model": _canonical_params(config.get("model"))}
    try:
        loaded = to_dict(from_dict(TrainConfig, config))
    except ConfigError:
        return config
    return yaml.safe_load(yaml.safe_dump(loaded, sort_keys=False))


def config_changes(before: dict, now: dict) -> list[tuple[str, object, object]]:
    """``(key, before, now)`` for every dotted key whose value differs between the canonical
    configs (:func:`canonical_config`: defaults filled in, parameter names canonical), except
    :data:`RESUMABLE_CHANGES` (sorted by key). Before, the raw dicts were compared: keys added
    since and a deprecated name renamed as its warning told refused the resume of an unchanged
    run."""
    old = _flat(canonical_config(before))
    new = _flat(canonical_config(now))
    return [(k, old.get(k), new.get(k)) for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]


def _defaults(now: dict, keys: Sequence[str]) -> dict[str, object]:
    """``{key: this version's default}`` for each dotted key of ``keys`` that ``now`` (a
    training config) can do without: the value :class:`TrainConfig` fills in when it is left
    out, the rest of ``now`` kept (``data.maps`` depends on the model)."""
    import copy

    from mrirecon.core.config import from_dict, to_dict
    from mrirecon.training.config import TrainConfig

    out = {}
    for key in keys:
        config = copy.deepcopy(canonical_config(now))
        *path, last = key.split(".")
        node = config
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or last not in node or key.startswith("model.params."):
            continue
        del node[last]
        try:
            out[key] = _flat(to_dict(from_dict(TrainConfig, config))).get(key)
        except ConfigError:  # a required key
            continue
    return out


def _setting(value: object) -> str:
    """``value`` as a YAML config line writes it (``learned``, ``0.001``, ``[4, 8]``)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _shown(changes: list[tuple[str, object, object]], now: dict | None = None) -> str:
    """The changes as ``key: before -> now``; a change to this version's default (the config
    leaves the key unset and the default changed since, or sets the new default) names the
    setting that keeps the run's value (``data.maps`` was ``learned`` for every model before
    1eabb06: "data.maps: 'learned' -> 'espirit'" did not say why or how to continue)."""
    shown = changes[:6]
    defaults = _defaults(now, [k for k, a, _ in shown if a is not None]) if now else {}

    def one(k: str, a: object, b: object) -> str:
        line = f"{k}: {a!r} -> {b!r}"
        if k in defaults and defaults[k] == b:
            line += (f" (the default of this version; the run was made with {a!r}: set "
                     f"{k}: {_setting(a)} to continue it)")
        return line

    return "; ".join(one(*c) for c in shown) + (
        f"; and {len(changes) - 6} more" if len(changes) > 6 else "")


def _parse(text: object) -> dict | None:
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return value if isinstance(value, dict) else None


def checkpoint_config(path: Path) -> dict | None:
    """The config recorded in the training checkpoint ``path`` (``None`` when it records none:
    written by an older version; or when it cannot be read: the resume itself says why)."""
    from mrirecon.training.checkpoint import load_checkpoint

    try:  # memory-mapped: the weights are not read
        ckpt = load_checkpoint(path, mmap=True)
    except (OSError, ValueError):  # damaged: resume names it, a fresh run replaces or refuses
        return None
    return _parse(ckpt.get("config")) if isinstance(ckpt, dict) else None


def recorded_config(out: Path) -> tuple[dict | None, str]:
    """The config of the run whose outputs ``out`` holds, and where it was found: the
    checkpoint's own record, else ``config.yaml`` (``(None, "")`` when neither has one)."""
    ckpt = out / "checkpoints" / "last.pt"
    if ckpt.is_file():
        cfg = checkpoint_config(ckpt)
        if cfg is not None:
            return cfg, str(ckpt)
    path = out / "config.yaml"
    if path.is_file():
        try:
            cfg = _parse(path.read_text(encoding="utf-8-sig"))
        except OSError:
            cfg = None
        if cfg is not None:
            return cfg, str(path)
    return None, ""


def check_resume_config(previous: Path | dict | str, now: dict, source: str,
                        where: Path | str | None = None) -> None:
    """Refuse ``--resume`` when the config ``now`` differs from the run being resumed (its
    config: a dict or YAML text recorded in the checkpoint, or a ``config.yaml`` path) in
    anything but :data:`RESUMABLE_CHANGES`. ``where``: the run's folder (default: the path's
    parent)."""
    if isinstance(previous, (str, dict)) and not isinstance(previous, Path):
        before = _parse(previous)
    else:
        path = Path(previous)
        where = where or path.parent
        if not path.is_file():
            return
        try:
            before = _parse(path.read_text(encoding="utf-8-sig"))
        except OSError:
            return  # unreadable: the checkpoint itself decides
    if before is None:
        return
    changed = config_changes(before, now)
    if changed:
        allowed = ", ".join(sorted(RESUMABLE_CHANGES - {"name", "output_dir"}))
        raise ConfigError(source, changed[0][0],
                          f"--resume continues the run in {where} whose config differs "
                          f"({_shown(changed, now)}); only {allowed} may change: resume with "
                          "the same config or start a new output_dir")


def resume_global_batch(previous: object, world_before: object, now: dict, world_now: int,
                        source: str) -> dict:
    """``now`` as :func:`check_resume_config` compares it with the run being resumed (its config
    ``previous``, trained by ``world_before`` processes; ``None``: a checkpoint of an older
    version, which does not say): a per-process ``optim.batch_size`` that keeps the global batch
    (``batch_size x processes``, what the sample order and the averaged gradient follow) under
    another process count is the recorded one; another global batch is refused. A one-process
    run at batch 2 resumed by 2 ranks at batch 1 was refused, while 2 ranks at batch 2 (a global
    batch of 4) resumed it without a word, as did 1 process resuming a 2-rank run: 0.5 off in
    the weights, the card describing one run."""
    before = _parse(previous)
    try:
        b_before = int(before["optim"]["batch_size"])
        b_now = int(now["optim"]["batch_size"])
    except (KeyError, TypeError, ValueError):
        return now
    if not isinstance(world_before, int) or isinstance(world_before, bool) or world_before < 1:
        return now
    g_before, g_now = b_before * world_before, b_now * world_now
    if g_before != g_now:
        if g_before % world_now == 0:
            fix = f"set optim.batch_size {g_before // world_now} with {world_now} process(es)"
        else:
            fix = f"run {world_before} process(es) with optim.batch_size {b_before}"
        raise ConfigError(source, "optim.batch_size", (
            f"--resume continues a run trained with a global batch of {g_before} (optim."
            f"batch_size {b_before} x {world_before} process(es)); this run's is {g_now} "
            f"({b_now} x {world_now}): the sample order and the averaged gradient follow the "
            f"global batch; {fix} to continue it"))
    return {**now, "optim": {**now["optim"], "batch_size": b_before}}


def file_records(train_set) -> list[dict]:
    """``{name, size, mtime_ns}`` of each file the training set ``train_set`` reads
    (``source_files()``; ``[]`` for a set without it), recorded in every checkpoint."""
    out = []
    for p in getattr(train_set, "source_files", list)():
        try:
            st = os.stat(p)
        except OSError:
            continue
        out.append({"name": Path(p).name, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)})
    return out


def _names(records: list[dict]) -> str:
    names = [r["name"] for r in records]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def check_resume_files(before: object, now: list[dict], source: str, where: Path | str,
                       folder: str) -> None:
    """Refuse ``--resume`` when the training files (:func:`file_records` of the set built now)
    are not those the checkpoint recorded (``before``: its ``train_files``; nothing is checked
    for a checkpoint of an older version, which records none): files added, removed or of
    another size. The epoch order is a permutation of the sample count, so the resumed run
    repeated some samples and skipped others, and its card listed files the earlier steps never
    saw, with no word. The config check cannot see it: ``data.train`` names the same folder. A
    demanding user wants the run's record to hold (a refusal, as for a changed config), and can
    start a new ``output_dir`` to train on the new files. Files whose size is the same but whose
    modification time changed (copied, touched, rewritten) are only reported."""
    if not isinstance(before, list) or not all(isinstance(r, dict) and "name" in r for r in before):
        return
    old = {r["name"]: r for r in before}
    new = {r["name"]: r for r in now}
    added = [new[k] for k in sorted(new.keys() - old.keys())]
    removed = [old[k] for k in sorted(old.keys() - new.keys())]
    both = sorted(old.keys() & new.keys())
    resized = [new[k] for k in both if old[k].get("size") != new[k]["size"]]
    touched = [new[k] for k in both if old[k].get("size") == new[k]["size"]
               and old[k].get("mtime_ns") != new[k]["mtime_ns"]]
    if added or removed or resized:
        what = "; ".join(f"{label}: {_names(r)}" for label, r in (
            ("added", added), ("removed", removed), ("another size", resized)) if r)
        raise ConfigError(source, "data.train",
                          f"--resume continues the run in {where}, which trained on other files "
                          f"of {folder} ({what}; {len(old)} file(s) then, {len(new)} now): the "
                          "order of the samples in each epoch depends on their number, so the "
                          "resumed run would repeat some and skip others, and its model card "
                          "would list files that the earlier steps never saw: put the files back "
                          "as they were, or start a new output_dir to train on these")
    if touched:
        log.warning("--resume: %d training file(s) of %s were modified since the checkpoint in "
                    "%s was written (same size, another modification time: %s): if their data "
                    "changed, the earlier steps trained on the old data", len(touched), folder,
                    where, _names(touched))


def check_fresh_output(out: Path, now: dict, source: str) -> list[Path]:
    """Before a fresh run (no ``--resume``, or ``--resume`` without a checkpoint) into ``out``:
    refuse when it holds :data:`RUN_OUTPUTS` of a run with another config (or one that recorded
    none), naming them: the new ``config.yaml`` would sit beside the old ``model.pt`` and
    ``model.yaml``, and a ``--resume`` after an interruption continued the old run's checkpoint
    with its optimiser state (logged as the new config). A restart of the same config (only
    :data:`RESUMABLE_CHANGES` differ) replaces them, as a rerun of ``mrirecon run`` on the same
    inputs does: returns the checkpoint it replaces (remove it when training starts,
    :func:`replace_outputs`); ``model.pt`` and ``model.yaml`` stay until the run writes its own."""
    present = [out / name for name in RUN_OUTPUTS if (out / name).is_file()]
    if not present:
        return []
    names = ", ".join(p.relative_to(out).as_posix() for p in present)
    before, where = recorded_config(out)
    changes = None if before is None else config_changes(before, now)
    if before is None or changes:
        what = (f"a config that differs ({_shown(changes, now)}; recorded in {where})"
                if changes else "no recorded config (no config.yaml, no config in its checkpoint)")
        raise ConfigError(source, "output_dir",
                          f"{out} holds the outputs of an earlier training run with {what}: "
                          f"{names}; a fresh run would leave them beside its own config.yaml, and "
                          "a --resume after an interruption would continue the earlier run: "
                          "continue that run with --resume (and its config), write to another "
                          "output_dir, or delete them to start over here (nothing was trained)")
    return [p for p in present if p.name == "last.pt"]


def lock_output_dir(out: Path):
    """A context manager: ``output_dir`` created and locked for this training run on rank 0 (the
    rank that writes there; :func:`~mrirecon.io.output_lock.locked_output`, the lock of
    ``mrirecon run``), nothing on the other ranks. Two runs into one folder interleaved their
    rows in one ``train_log.csv`` and left one run's ``config.yaml`` beside the other's weights
    and card; the second is refused, naming the first ("output_dir OUT: another mrirecon run
    (pid N on HOST, mrirecon train) is writing into this folder")."""
    import contextlib

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
    else:  # before the trainer sets up the process group: torchrun's environment
        rank = env_int("RANK", 0) if env_int("WORLD_SIZE", 1) > 1 else 0
    if rank != 0:
        return contextlib.nullcontext()
    from mrirecon.io.output_lock import locked_output

    return locked_output(out, option="output_dir", who="mrirecon train")


def replace_outputs(out: Path, stale: list[Path]) -> None:
    """Remove the earlier checkpoint a fresh run of the same config replaces, logging it."""
    for p in stale:
        if p.is_file():
            p.unlink()  # a resumable state gone: a warning (an INFO line was easy to miss)
            log.warning("%s: a fresh run of the same config: the earlier run's %s was removed "
                        "(--resume would have continued it; its model.pt / model.yaml are "
                        "replaced at the end)", out, p.relative_to(out).as_posix())


# -- validation data -----------------------------------------------------------------------------

#: Bytes read per sample of a file's fingerprint (9 samples: start, end and 7 between).
_CHUNK = 1 << 16


def _fingerprint(path: Path, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        for k in range(9):
            f.seek(max(size - _CHUNK, 0) * k // 8)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def overlapping_files(train: Sequence[Path], val: Sequence[Path]) -> list[tuple[Path, Path, str]]:
    """``(validation file, training file, how)`` for each validation file that is a training
    file: the same file (``how = "the same file"``: one path, a link, a hard link) or the same
    bytes (``"the same content"``). Cheap: only files of equal size are compared, by a
    fingerprint of 9 x 64 KiB first and a full SHA-256 when that matches."""
    def stat(p: Path):
        try:
            return os.stat(p)
        except OSError:
            return None

    tstats = [(p, stat(p)) for p in train]
    by_size: dict[int, list[Path]] = {}
    for p, st in tstats:
        if st is not None:
            by_size.setdefault(st.st_size, []).append(p)
    cache: dict[tuple[Path, str], str] = {}

    def digest(p: Path, size: int, kind: str) -> str:
        key = (p, kind)
        if key not in cache:
            cache[key] = _fingerprint(p, size) if kind == "fp" else file_sha256(p)
        return cache[key]

    out = []
    for v in val:
        sv = stat(v)
        if sv is None:
            continue
        same = next((p for p, st in tstats if st is not None
                     and (st.st_ino, st.st_dev) == (sv.st_ino, sv.st_dev)), None)
        if same is not None:
            out.append((v, same, "the same file"))
            continue
        for p in by_size.get(sv.st_size, ()):
            if (digest(p, sv.st_size, "fp") == digest(v, sv.st_size, "fp")
                    and digest(p, sv.st_size, "sha") == digest(v, sv.st_size, "sha")):
                out.append((v, p, "the same content"))
                break
    return out




def _data_signature(path: Path):
    """``(shape key, read, patient_id)`` of a training file's data: the shape of its k-space
    (fastMRI) or sinograms (a LoDoPaB observation file), a function returning the bytes of its
    middle slice's centre k-space row (:meth:`~mrirecon.io.FastMRIFile.data_line`) or middle
    sinogram as read (decompressed: whatever the chunks and filters) and its
    ``patient_id`` attribute; ``None`` for others (LoDoPaB ground truths: their observation is
    compared; ISMRMRD files) and files that cannot be read (the data sets were built from them,
    so only an unusual file gets here; it is compared by its bytes alone)."""
    try:
        from mrirecon.io.lodopab import LoDoPaBFiles, parse_name

        if (name := parse_name(path.name)) is not None and name[0] == "observation":
            files = LoDoPaBFiles(path.parent, name[1], only=name[2])
            n = len(files)
            return (("sinograms", n, *files.sinogram_shape),
                    lambda: files.observation(n // 2).tobytes(), None)
        if name is not None or path.suffix.lower() == ".mrd":  # a ground truth: its observation
            return None
        from mrirecon.io import FastMRIFile

        with FastMRIFile(path) as f:
            key = ("kspace", *f.shape)
            pid = f.patient_id

        def read() -> bytes:  # the centre row of one coil: whole slices of a fastMRI training
            with FastMRIFile(path) as f:  # set of one shape were 28 MB per file
                return f.data_line()

        return key, read, (str(pid) if pid not in (None, "") else None)
    except Exception:  # noqa: BLE001 - best effort: the byte comparison still applies
        return None


def same_data_files(train: Sequence[Path], val: Sequence[Path]
                    ) -> tuple[list[tuple[Path, Path, str]], list[tuple[Path, Path, str]]]:
    """``(same data, same patient)``: ``(validation file, training file, detail)`` for each
    validation file whose data are a training file's stored otherwise (the same k-space /
    sinogram shape and the same middle slice: a volume re-saved with other chunks, compression
    or attributes under another name; detail: what matched) and, of the rest, each with a
    training file's ``patient_id`` (detail: the id). Only files of equal shape are read; a
    middle slice that is all zero there proves nothing (two blanked volumes matched) and is not
    compared."""
    sig = {p: _data_signature(Path(p)) for p in list(val) + list(train)}
    digests: dict[Path, str] = {}

    def digest(p: Path) -> str | None:  # None: an all-zero line tells no two volumes apart
        if p not in digests:
            key, read, _ = sig[p]
            data = read()
            digests[p] = hashlib.sha256(repr(key).encode() + data).hexdigest() \
                if any(data) else None
        return digests[p]

    same, patient = [], []
    for v in val:
        if (sv := sig[v]) is None:
            continue
        match = next((t for t in train if (st := sig[t]) is not None and st[0] == sv[0]
                      and digest(v) is not None and digest(t) == digest(v)), None)
        if match is not None:
            what = "k-space" if sv[0][0] == "kspace" else "sinograms"
            same.append((v, match, f"{what} {tuple(sv[0][1:])}"))
            continue
        if sv[2] is not None:
            t = next((t for t in train if (st := sig[t]) is not None and st[2] == sv[2]), None)
            if t is not None:
                patient.append((v, t, sv[2]))
    return same, patient


def check_validation_overlap(train_set, val_set, source: str) -> None:
    """Refuse validation data that are also training data (``data.val`` the folder of
    ``data.train``, a link to it, copies of its files, or its data re-saved otherwise), naming
    them: validation on training data cannot show overfitting, and its metrics read as held-out
    ones. A validation file with a training file's ``patient_id`` (other data) is reported: the
    same patient's other scan is a milder leak, and anonymised ids may repeat."""
    train, val = train_set.source_files(), val_set.source_files()
    overlap = overlapping_files(train, val)
    seen = {v for v, _, _ in overlap}
    same, patient = same_data_files(train, [v for v in val if v not in seen])
    overlap += [(v, t, "the same data") for v, t, _ in same]
    detail = {v: d for v, _, d in same}
    for v, t, pid in patient:
        log.warning("data.val: %s has the patient_id %r of the training file %s (data.train): "
                    "validation on another scan of a training patient reads better than on new "
                    "patients", v, pid, t)
    if not overlap:
        return
    def pair(v: Path, t: Path, how: str) -> str:
        if how == "the same content":
            return f"{v} has the content of {t}"
        if how == "the same data":
            return (f"{v} holds the data of {t} (the same {detail[v]} and middle slice, stored "
                    "otherwise)")
        return str(v) if os.path.abspath(v) == os.path.abspath(t) else f"{v} is {t}"

    shown = "; ".join(pair(*o) for o in overlap[:4]) + (
        f"; and {len(overlap) - 4} more" if len(overlap) > 4 else "")
    raise ConfigError(source, "data.val",
                      f"{len(overlap)} of the {len(val)} validation file(s) are also training "
                      f"files (data.train): {shown}; validation must score data the model does "
                      "not train on (on training data it cannot show overfitting): use files "
                      "that are not in data.train, or set val_every: 0 (no validation)")
