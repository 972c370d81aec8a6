"""Typed configuration: YAML -> frozen dataclasses, validated once, with errors that name the key.

Every pipeline and training config is a tree of frozen dataclasses. :func:`load_config` reads a
YAML file, applies ``--set key.path=value`` overrides and builds the tree, rejecting unknown keys
(with a did-you-mean hint), wrong types and bad literal values. Errors are :class:`ConfigError`
and name the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from mrirecon.core.checks import param_problem
from mrirecon.core.names import DEPRECATED

T = TypeVar("T")


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
        keys = [o.split("=", 1)[0].strip() for o in overrides if "=" in o]
        if not any(self.key == k or self.key.startswith((k + ".", k + "[")) or k.startswith(self.key + ".")
                   for k in keys if self.key):
            return self
        return ConfigError(f"--set over {self.source}" if self.source else "--set", self.key,
                           self.message)


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float syntax.

    PyYAML implements YAML 1.1, where a float needs a dot: ``1e-3`` (what everyone writes for a
    learning rate or a weight) is the *string* '1e-3' there, so ``--set adapt.lr=1e-3`` was
    refused as "must be a number" and a string-typed check would have let it through. Here
    ``1e-3``, ``5E4`` and ``.5`` are floats, as in YAML 1.2 and JSON; ``nan`` / ``inf``
    without the dot stay strings (YAML's spelling is ``.nan`` / ``.inf``).

    A key given twice in one mapping (``undersample:`` twice, or ``30:`` and ``30.0:`` in a
    table) is refused with both lines: PyYAML keeps the last one without a word.
    """

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found the key {key!r} twice (first on line {first.line + 1}): the later "
                        "one would silently replace the earlier; keep one", key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                 |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (safe: no Python tags)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


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
        raise ConfigError(source, key, f"expected {_describe(tp)}, got {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(source, key, f"must be one of {choices}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, source=source, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        variadic = origin is tuple and get_args(tp)[-1:] == (Ellipsis,)
        if not isinstance(value, (list, tuple)):  # one value for a list: --set accelerations=8
            value = [value] if origin is list or tp is list or variadic else value
            if not isinstance(value, (list, tuple)):
                raise ConfigError(source, key, f"expected a list, got {value!r}")
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
            raise ConfigError(source, key, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(source, key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(source, key, f"expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(source, key, f"expected a path, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, *, source: str = "", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for k in data:
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
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
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def apply_overrides(data: dict, overrides: typing.Iterable[str], source: str = "--set") -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested dict copy."""
    import copy

    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(source, item, "override must look like key.path=value")
        path, raw = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise ConfigError(source, path, "empty key in override")
        node = data
        for k in keys[:-1]:
            k = _existing_key(node, k)
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise ConfigError(source, path, f"{k!r} is not a section")
            node = child
        if not raw.strip() and isinstance(node.get(keys[-1]), dict):  # reset to defaults, silently
            raise ConfigError(source, path.strip(), "an empty value would replace the whole section "
                              "by its defaults; set its keys instead (e.g. "
                              f"{path.strip()}.KEY=VALUE)")
        try:
            node[_existing_key(node, keys[-1])] = load_yaml(raw) if raw.strip() else None
        except yaml.YAMLError as e:
            problem = " ".join(str(e).split())
            raise ConfigError(source, path.strip(), f"value {raw!r} is not valid YAML ({problem}); "
                              "quote it, e.g. --set 'key=\"text\"'") from None
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


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if p.exists() and not (p.is_file() or p.is_dir()):
        raise ConfigError(str(p), "", "not a regular file (FIFO, socket or device)")
    try:
        text = p.read_text()
    except UnicodeDecodeError as e:
        raise ConfigError(str(p), "", f"not a UTF-8 text file ({e})") from None
    except OSError as e:
        raise ConfigError(str(p), "", f"cannot read config: {e.strerror or e}") from e
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        raise ConfigError(str(p), "", f"invalid YAML (tags such as !!python/... are refused): "
                                      f"{' '.join(str(e).split())}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(p), "", "the top level must be a mapping")
    return data


def load_config(cls: type[T], path: str | Path, overrides: typing.Iterable[str] = ()) -> T:
    """Read ``path``, apply overrides and build ``cls``; the one way configs enter the program."""
    data = apply_overrides(read_yaml(path), overrides)
    try:
        return from_dict(cls, data, source=str(path))
    except ConfigError as err:
        raise err.blamed_on(overrides) from None


# ---- checks shared by the pipeline and training validators ------------------------------


def fail(source: str, key: str, message: str) -> ConfigError:
    return ConfigError(source, key, message)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def signature_params(fn, skip: int) -> tuple[dict[str, Any], bool]:
    """``({name: default}, takes **kwargs)`` of ``fn`` after its first ``skip`` parameters."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    named = {p.name: p.default for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


def check_params(method: str, params: dict, valid: dict[str, Any], *, source: str = "",
                 prefix: str = "reconstruct.params", extra: tuple[str, ...] = ()) -> None:
    """Names of ``params`` against ``valid`` (did-you-mean) and their values (:func:`mrirecon.core.checks.param_problem`)."""
    for key, value in params.items():
        if key not in valid and key not in extra:
            close = difflib.get_close_matches(str(key), list(valid) + list(extra), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            names = ", ".join(sorted(valid)) or "(none)"
            raise fail(source, f"{prefix}.{key}",
                        f"{method} has no parameter {key!r}{hint}; valid: {names}")
        problem = param_problem(str(key), value, valid.get(key, inspect.Parameter.empty))
        if problem:
            raise fail(source, f"{prefix}.{key}", problem)


def deprecated_aliases(valid: dict[str, Any]) -> tuple[str, ...]:
    """Old spellings (``num_cascades``, ``nu``, ...) a model still takes for one release
    (:mod:`mrirecon.core.names`; ``build_model`` renames them with a FutureWarning)."""
    return tuple(old for old, new in DEPRECATED.items() if new in valid and old not in valid)


def at_least(source: str, key: str, value, minimum) -> None:
    if value is not None and not (_is_number(value) and math.isfinite(value) and value >= minimum):
        raise fail(source, key, f"must be >= {minimum}, got {value!r}")
