"""Typed configuration: YAML -> frozen dataclasses, validated once, with errors that name the key.

Every pipeline and training config is a tree of frozen dataclasses. :func:`load_config` reads a
YAML file, applies ``--set key.path=value`` overrides and builds the tree, rejecting unknown keys
(with a did-you-mean hint), wrong types and bad literal values. Errors are :class:`ConfigError`
and name the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mrirecon.core.checks import _is_number, param_problem
from mrirecon.core.names import DEPRECATED, did_you_mean
from mrirecon.core.yaml_loader import (MAX_EXPANDED_VALUES, AliasBomb,  # noqa: F401
                                       ConfigLoader, load_yaml)

T = TypeVar("T")
log = logging.getLogger("mrirecon.config")

#: ``dataclasses.field(metadata={INTERNAL: True})``: a field the program records on a config
#: (where it was loaded from, ...), not a key of the YAML file: :func:`from_dict` refuses it as
#: unknown and :func:`to_dict` leaves it out (``provenance.json``'s config, its checksum).
INTERNAL = "mrirecon_internal"


def _yaml_fields(cls: Any) -> list[dataclasses.Field]:
    """The fields of dataclass ``cls`` that a YAML file sets (``init`` and not :data:`INTERNAL`)."""
    return [f for f in dataclasses.fields(cls) if f.init and not f.metadata.get(INTERNAL)]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the dotted key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source, self.key, self.message = source, key, message
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{key or '<root>'}: {message}")

    def blamed_on(self, overrides: typing.Iterable[str]) -> ConfigError:
        """The same error, its source ``--set over FILE`` when one of ``overrides`` set its key
        or a key under it (the message named only the pipeline file, where the key was never
        written)."""
        keys = [k for o in overrides if isinstance(o, str) for k in override_targets(o, str)]
        if not any(self.key == k or self.key.startswith((k + ".", k + "[")) or k.startswith(self.key + ".")
                   for k in keys if self.key):
            return self
        return ConfigError(f"--set over {self.source}" if self.source else "--set", self.key,
                           self.message)


def _describe(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) == 1:  # Optional[X]: X's own error (e.g. an unknown nested key) is clearer
            return _convert(value, kinds[0], source, key)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, source, key)
            except ConfigError:
                continue
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {shown(value)}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(source, key, f"must be one of {choices}, got {shown(value)}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:  # `reconstruct:` with every key under it commented out
            raise ConfigError(source, key, "the section is empty (null: are all its keys commented "
                              "out?), which would silently run its defaults; give its keys, or "
                              "delete the line to mean the defaults")
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping for {tp.__name__}, got {shown(value)}")
        return from_dict(tp, value, source=source, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        variadic = origin is tuple and get_args(tp)[-1:] == (Ellipsis,)
        if not isinstance(value, (list, tuple)):  # one value for a list: --set accelerations=8
            value = [value] if origin is list or tp is list or variadic else value
            if not isinstance(value, (list, tuple)):
                raise ConfigError(source, key, f"expected a list, got {shown(value)}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(source, key, f"expected {len(args)} values, got {len(value)}")
            items = [_convert(v, a, source, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            sub = args[0] if args else Any
            items = [_convert(v, sub, source, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {shown(value)}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true/false, got {shown(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected an integer, got {shown(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, key, f"expected a number, got {shown(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, key, f"expected a string, got {shown(value)}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(source, key, f"expected a path, got {shown(value)}")
    return value


def from_dict(cls: type[T], data: dict, *, source: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in _yaml_fields(cls)}
    for k in data:
        if k not in fields:
            hint = did_you_mean(k, fields)
            valid = ", ".join(sorted(fields))
            raise ConfigError(source, _join(prefix, str(k)), f"unknown key{hint}; valid keys: {valid}")
    kwargs = {}
    for name, f in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], source, key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key, "is required")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(source, prefix, str(e)) from e


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def to_dict(obj: Any) -> Any:
    """Dataclass tree -> plain YAML/JSON-able structure."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                if not f.metadata.get(INTERNAL)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _part(key: Any) -> str:
    """One dotted-key component, numbers in one spelling (``8``, ``"8"``, ``8.0`` name one
    table entry)."""
    try:
        value = float(key) if not isinstance(key, bool) else None
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        return str(key)
    return str(int(value)) if value.is_integer() else repr(value)


def _targets(value: Any, path: tuple[str, ...], part=_part) -> list[tuple[tuple[str, ...], bool]]:
    """``[(dotted key parts, clears)]`` one override value sets: a non-empty mapping each key in
    it (it is merged), anything else ``path`` itself (``clears``: an empty mapping)."""
    if isinstance(value, dict) and value:
        return [t for k, v in value.items() for t in _targets(v, (*path, part(k)), part)]
    return [(path, value == {})]


def override_targets(item: str, part=_part) -> list[str]:
    """The dotted keys one ``key.path=value`` override sets (a mapping value: each key in it,
    as it is merged; numbers in one spelling unless ``part`` is ``str``); ``[]`` for one that
    is no override."""
    path, sep, raw = item.partition("=")
    if not sep:
        return []
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = None
    keys = tuple(part(k.strip()) for k in path.strip().split("."))
    return [".".join(p) for p, _ in _targets(value, keys, part)]


def check_repeated(overrides: typing.Iterable[str], source: str = "--set") -> None:
    """Refuse two ``--set`` overrides of one command line that set one key, or a later one that
    replaces what an earlier one set (``lam=5`` and later ``params={}``): the later won without
    a word, where a key twice in a YAML file is refused. An empty mapping followed by keys
    under it (clear, then fill) is one meaning. (A list of overrides built in code, defaults
    then specifics, is applied in order by :func:`apply_overrides`.)"""
    parsed = []
    for item in overrides:
        try:
            keys, _, value = _parse_override(item, source)
        except (ConfigError, TypeError):
            continue  # refused by apply_overrides, with its own message
        parsed.append((item, tuple(_part(k) for k in keys), value))
    seen: list[tuple[tuple[str, ...], bool, int]] = []
    for i, (item, path, value) in enumerate(parsed):
        for key, clears in _targets(value, path):
            for earlier, earlier_clears, j in seen:
                n = min(len(key), len(earlier))
                if j == i or key[:n] != earlier[:n] or (earlier_clears and len(earlier) < len(key)):
                    continue  # another key, or keys filled into a mapping cleared before
                raise ConfigError(source, ".".join(key if len(key) <= len(earlier) else earlier),
                                  f"set twice, by {parsed[j][0]!r} and then {item!r}: the later "
                                  "would silently replace the earlier; keep one")
            seen.append((key, clears, i))


def _comment_dropped(raw: str, value: Any) -> bool:
    """Whether YAML read part of ``raw`` as a comment (`` #`` and after): fewer ``#`` in the
    parsed value (its strings and keys) than in the text."""
    if not re.search(r"(^|\s)#", raw):
        return False

    def count(v: Any) -> int:
        if isinstance(v, dict):
            return sum(count(k) + count(x) for k, x in v.items())
        if isinstance(v, (list, tuple)):
            return sum(count(x) for x in v)
        return str(v).count("#") if isinstance(v, str) else 0

    return count(value) < raw.count("#")


def _parse_override(item: Any, source: str) -> tuple[list[str], str, Any]:
    if not isinstance(item, str):
        raise TypeError(f"overrides: each must be a 'key.path=value' string, got "
                        f"{type(item).__name__} {item!r}")
    if "=" not in item:
        raise ConfigError(source, item, "override must look like key.path=value")
    path, raw = item.split("=", 1)
    keys = path.strip().split(".")
    if not all(k.strip() for k in keys):
        raise ConfigError(source, path, "empty key in override")
    keys = [k.strip() for k in keys]
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise ConfigError(source, path.strip(), f"value {raw!r} is not valid YAML ({problem}); "
                          "quote it, e.g. --set 'key=\"text\"'") from None
    if _comment_dropped(raw, value):  # `Scan #2` was the string 'Scan'
        raise ConfigError(source, path.strip(), f"value {raw!r} holds ' #', which YAML reads as the "
                          f"start of a comment (the value would be {value!r}); quote it, e.g. "
                          f"--set '{path.strip()}=\"{raw.strip()}\"'")
    return keys, raw, value


def _field_type(tp: Any, key: str) -> Any:
    """The type of field ``key`` of dataclass ``tp`` (``None``: unknown), through ``Optional``."""
    if tp is None:
        return None
    kinds = [a for a in get_args(tp) if a is not type(None)] \
        if get_origin(tp) in (Union, types.UnionType) else [tp]
    tp = kinds[0] if len(kinds) == 1 else None
    if tp is None or not dataclasses.is_dataclass(tp):
        return None
    hints = get_type_hints(tp)
    return hints.get(key) if key in {f.name for f in _yaml_fields(tp)} else None


def _is_list_type(tp: Any) -> bool:
    return tp in (list, tuple) or get_origin(tp) in (list, tuple)


#: Keys that name a section's method (``reconstruct.method``, ``model.name``): the section's
#: ``params*`` mappings are that method's settings.
METHOD_KEYS = ("method", "name")


def _method_changes(data: dict, parsed: list) -> dict[tuple[str, ...], tuple[Any, Any]]:
    """``{section: (old, new)}`` of the sections of ``data`` whose method the overrides change."""
    def leaves(value: Any, path: tuple[str, ...]):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                yield from leaves(v, (*path, str(k)))
        else:
            yield path, value

    out: dict[tuple[str, ...], tuple[Any, Any]] = {}
    for keys, _, value in parsed:
        for path, new in leaves(value, tuple(keys)):
            if len(path) < 2 or path[-1] not in METHOD_KEYS:
                continue
            node: Any = data
            for k in path[:-1]:
                node = node.get(_existing_key(node, k)) if isinstance(node, dict) else None
            old = node.get(path[-1]) if isinstance(node, dict) else None
            if old is not None and new != old:
                out[path[:-1]] = (old, new)
    return out


def _replaces(path: tuple[str, ...], key: Any, changes: dict) -> bool:
    """Whether a mapping for ``key`` of section ``path`` replaces instead of merging: it holds
    the settings (``params``, ``params_by_...``) of a method the overrides change."""
    return path in changes and str(key).startswith("params")


def _merged(current: dict, value: dict, path: tuple[str, ...] = (), changes: dict | None = None
            ) -> dict:
    """``value`` merged into a copy of ``current`` (the section at ``path``): nested non-empty
    mappings recursively, other values (an empty mapping too: it clears) replace, and so do the
    settings of a method that ``changes`` (:func:`_method_changes`)."""
    out = dict(current)
    spellings = [_part(k) for k in value]  # '30' and 30 in one mapping: left for the validation
    for k, v in value.items():
        one = spellings.count(_part(k)) == 1
        key = _existing_key(out, k) if isinstance(k, str) and one else k
        if isinstance(v, dict) and v and isinstance(out.get(key), dict) \
                and not _replaces(path, key, changes or {}):
            out[key] = _merged(out[key], v, (*path, str(key)), changes)
        else:
            out[key] = v
    return out


def overrides_list(overrides: Any, who: str) -> list:
    """``overrides`` as a list; a single string is refused naming ``who``'s argument (it was
    taken apart character by character: "--set: e: override must look like key.path=value")."""
    if isinstance(overrides, (str, bytes)):
        raise TypeError(f"{who}: overrides must be a list of 'key.path=value' strings, got the "
                        f"string {overrides!r}; write [{overrides!r}]")
    if overrides is None:
        return []
    return list(overrides)


def apply_overrides(data: dict, overrides: typing.Iterable[str], source: str = "--set", *,
                    schema: Any = None, quiet: bool = False) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict copy.

    Overrides apply in order (the command line refuses a key given twice:
    :func:`check_repeated`). A mapping given for a key whose value is a mapping is merged into
    it, recursively: keys it does not name keep their values (logged; ``--set
    calibrate={calib_width: 20}`` had reset ``crop`` to its default), except that the settings
    of a method that the overrides change (``reconstruct.params`` / ``params_by_...`` with
    ``reconstruct.method``, ``model.params`` with ``model.name``) are replaced: they belonged to
    the old method. An empty mapping clears a mapping (``reconstruct.params={}``); an empty value or an empty mapping for a section of
    ``schema`` (the config's dataclass), which would reset it to its defaults, is refused, as are
    an element of a list set by index and a value that YAML would cut at a `` #`` comment.
    """
    import copy

    overrides = overrides_list(overrides, "apply_overrides")
    data = copy.deepcopy(data)
    parsed = [_parse_override(item, source) for item in overrides]
    changes = _method_changes(data, parsed)
    for keys, raw, value in parsed:
        path = ".".join(keys)
        node, tp = data, schema
        for i, k in enumerate(keys):
            k = _existing_key(node, k)
            tp = _field_type(tp, str(k))
            if i == len(keys) - 1:
                break
            child = node.get(k)
            if isinstance(child, list) or (child is None and _is_list_type(tp)):
                where = ".".join(keys[:i + 1])
                raise ConfigError(source, where, f"is a list: its elements cannot be set by index "
                                  f"({path}); give the whole list, e.g. --set {where}=[...]")
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(source, path, f"{k!r} is not a section")
            node = child
        current = node.get(k)
        section = dataclasses.is_dataclass(tp) or isinstance(current, dict)
        if (section and not raw.strip()) or (value == {} and dataclasses.is_dataclass(tp)):
            what = "an empty value" if not raw.strip() else "an empty mapping"
            raise ConfigError(source, path, f"{what} would replace the whole section by its "
                              f"defaults; set its keys instead (e.g. {path}.KEY=VALUE)")
        section_of = tuple(keys[:-1])
        if isinstance(value, dict) and value and isinstance(current, dict) \
                and _replaces(section_of, keys[-1], changes):
            node[k] = value  # the settings of the method the overrides replace
            if not quiet:
                old, new = changes[section_of]
                log.info("%s %s=%s: replaces %s, which held the settings of %s (the overrides "
                         "change %s to %s)", source, path, raw.strip(), path, old,
                         ".".join(section_of) + "." + next(m for m in METHOD_KEYS
                                                          if m in node), new)
        elif isinstance(value, dict) and value and isinstance(current, dict):
            node[k] = _merged(current, value, tuple(keys), changes)
            kept = [str(c) for c in current if _part(c) not in {_part(v) for v in value}]
            if not quiet:
                log.info("%s %s=%s: merged into %s: the keys it does not name keep their values%s",
                         source, path, raw.strip(), path, f" ({', '.join(kept)})" if kept else "")
        else:
            node[k] = value
    return data


def _existing_key(node: dict, key: str) -> Any:
    """The key of ``node`` that dotted ``key`` names: itself, or a number of the same value (YAML
    reads ``8:`` as the integer 8, a dotted ``--set ...params_by_acceleration.8.lam`` gives the
    string "8"), so that an override replaces or extends that entry instead of adding a twin."""
    if key in node:
        return key
    try:
        value = float(key)
    except ValueError:
        return key
    return next((k for k in node if isinstance(k, (int, float)) and not isinstance(k, bool)
                 and float(k) == value), key)


def shown(value) -> str:
    """``repr(value)`` for a message, bounded: a YAML alias bomb (nine nested anchors, 1.3 KB)
    expands to billions of items, and its full repr in "expected a string, got ..." took 37 s
    and 2.7 GB before a MemoryError."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxtuple, r.maxstring, r.maxother = 3, 6, 6, 6, 80, 80
    return r.repr(value)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file. The file is read as UTF-8 whatever the
    locale (a byte-order mark, which Notepad and PowerShell 5 write, is dropped): read in the
    locale's encoding, cp1252 on a Western Windows turned "ü" into "Ã¼" in a DICOM series
    description without a word, and refused valid UTF-8 holding byte 0x81 ("ρ")."""
    p = Path(path)
    if p.exists() and not (p.is_file() or p.is_dir()):
        raise ConfigError(str(p), "", "not a regular file (FIFO, socket or device)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), "", f"not a UTF-8 text file ({e})") from None
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read config: {e.strerror or e}") from e
    try:
        data = load_yaml(text)
    except AliasBomb as e:
        raise ConfigError(str(p), "", str(e)) from None
    except yaml.YAMLError as e:  # the safe loader's word on tags only where a tag was the cause
        tag = isinstance(e, yaml.constructor.ConstructorError) and "constructor for the tag" in (
            e.problem or "")
        raise ConfigError(str(p), "", "invalid YAML" + (
            " (tags such as !!python/... are refused)" if tag else "")
            + f": {' '.join(str(e).split())}") from None
    if data is None:  # was "name: is required" (a pipeline) or a missing training key
        raise ConfigError(str(p), "", "the file is empty (or holds only comments); a config is a "
                          "YAML mapping of its sections")
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "the top level must be a mapping")
    return data


#: Top-level keys only a pipeline (``mrirecon run``) or only a training config (``mrirecon
#: train``) has: both kinds live in ``pipelines/``, and one given to the other command was
#: refused for its first key ("output_dir: unknown key; valid keys: adapt, ...").
_OWN_KEYS = {"run": ("modality", "reconstruct", "undersample", "export", "postprocess"),
             "train": ("output_dir", "optim", "model", "loss")}


def refuse_other_kind(data: dict, path: str | Path, command: str) -> None:
    """Refuse, naming the right command, a config mapping ``data`` (from ``path``) that is the
    other kind of file than ``command`` (``"run"`` or ``"train"``) reads: none of its own
    top-level keys and at least two of the other's."""
    other = "train" if command == "run" else "run"
    found = [k for k in _OWN_KEYS[other] if k in data]
    if len(found) < 2 or any(k in data for k in _OWN_KEYS[command]):
        return
    kind = "a training config" if other == "train" else "a pipeline definition"
    raise ConfigError(str(path), "", f"is {kind} (top-level keys {', '.join(found)}), not what "
                      f"mrirecon {command} reads: run it with `mrirecon {other} {path}`")


def load_config(cls: type[T], path: str | Path, overrides: typing.Iterable[str] = (),
                command: str | None = None) -> T:
    """Read ``path``, apply overrides and build ``cls``; the one way configs enter the program.
    ``command`` (``"train"``): refuse a file of the other kind naming it (:func:`refuse_other_kind`)."""
    raw = read_yaml(path)
    if command is not None:
        refuse_other_kind(raw, path, command)
    data = apply_overrides(raw, overrides, schema=cls)
    try:
        return from_dict(cls, data, source=str(path))
    except ConfigError as err:
        raise err.blamed_on(overrides) from None


# ---- checks shared by the pipeline and training validators ------------------------------


def fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(source, key, message)


def signature_params(fn, skip: int) -> tuple[dict[str, Any], bool]:
    """``({name: default}, takes **kwargs)`` of ``fn`` after its first ``skip`` parameters."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    named = {p.name: p.default for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def signature_annotations(fn, skip: int) -> dict[str, Any]:
    """``{name: annotation}`` of ``fn``'s parameters after its first ``skip`` (as written: a
    string under ``from __future__ import annotations``), for :func:`check_params`."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return {p.name: p.annotation for p in params}


def check_params(method: str, params: dict, valid: dict[str, Any], *, source: str = "",
                 prefix: str = "reconstruct.params", extra: tuple[str, ...] = (),
                 annotations: dict[str, Any] | None = None) -> None:
    """Names of ``params`` against ``valid`` (did-you-mean) and their values
    (:func:`mrirecon.core.checks.param_problem`, with the signature's ``annotations``)."""
    for key, value in params.items():
        if key not in valid and key not in extra:
            hint = did_you_mean(key, [*valid, *extra])
            names = ", ".join(sorted(valid)) or "(none)"
            raise fail(source, f"{prefix}.{key}",
                        f"{method} has no parameter {key!r}{hint}; valid: {names}")
        default = valid.get(key, inspect.Parameter.empty)
        problem = param_problem(str(key), value, default,
                                (annotations or {}).get(key, inspect.Parameter.empty),
                                required=key in valid and default is inspect.Parameter.empty)
        if problem:
            raise fail(source, f"{prefix}.{key}", problem)


def deprecated_aliases(valid: dict[str, Any]) -> tuple[str, ...]:
    """Old spellings (``num_cascades``, ``nu``, ...) a model still takes for one release
    (:mod:`mrirecon.core.names`; ``build_model`` renames them with a FutureWarning)."""
    return tuple(old for old, new in DEPRECATED.items() if new in valid and old not in valid)


def at_least(source: str, key: str, value, minimum) -> None:
    if value is not None and not (_is_number(value) and math.isfinite(value) and value >= minimum):
        raise fail(source, key, f"must be >= {minimum}, got {shown(value)}")
