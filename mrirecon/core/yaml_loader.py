"""The YAML dialect of mrirecon's configs: :class:`ConfigLoader` (safe, YAML 1.2 floats, no
repeated keys) and :func:`load_yaml` (which also refuses alias bombs). Re-exported by
:mod:`mrirecon.core.config`."""

from __future__ import annotations

import re
from typing import Any

import yaml


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


class AliasBomb(yaml.YAMLError):
    """A YAML document that expands past :data:`MAX_EXPANDED_VALUES`, or nests past Python's
    recursion limit (:func:`load_yaml`)."""


#: Values a config may expand to through YAML anchors and aliases; a shipped pipeline holds
#: a few hundred. Nine nested anchors of nine aliases each (1.3 KB) expand to 387 million.
MAX_EXPANDED_VALUES = 100_000


def load_yaml(text: str) -> Any:
    """Parse YAML text with :class:`ConfigLoader` (safe: no Python tags). A document whose
    anchors and aliases expand to more than :data:`MAX_EXPANDED_VALUES` values (a "billion
    laughs" alias bomb) is refused: its first check formatted the whole expansion into an error
    message (37 s, 2.7 GB, then "internal error: MemoryError")."""
    try:
        data = yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:  # PyYAML's parser recurses: an internal error was all it said
        raise _too_deep() from None
    return refuse_alias_bomb(data)


def load_card_yaml(text: str) -> Any:
    """A model card's YAML: PyYAML's safe loader (libyaml's C one when present: cards are long,
    and listing the shipped weights reads every card), with :func:`load_yaml`'s alias-bomb
    refusal. Cards come with weights from elsewhere: 1 KB of nested aliases loaded in 0.4 s,
    then the adapted model's inherited card was written out expanded (MemoryError at 3.5 GB
    after 6 minutes of ``mrirecon run mri_learned_adapt``)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506 (safe loaders only)
    except RecursionError:
        raise _too_deep() from None
    return refuse_alias_bomb(data)


def _too_deep() -> AliasBomb:
    return AliasBomb("it nests lists or mappings thousands deep; a config nests a few levels")


def refuse_alias_bomb(data: Any) -> Any:
    """``data`` (parsed YAML), refused (:class:`AliasBomb`) when its shared anchors expand to
    more than :data:`MAX_EXPANDED_VALUES` values or nest past Python's recursion limit."""
    deep = _too_deep()
    sizes: dict[int, int] = {}

    def expanded(node) -> int:  # values the node stands for, each shared node counted once
        if not isinstance(node, (dict, list)):
            return 1
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a cycle (an alias inside its own anchor) counts as 0 here
            items = node.items() if isinstance(node, dict) else enumerate(node)
            sizes[id(node)] = 1 + sum(expanded(v) for _, v in items)
        return sizes[id(node)]

    try:
        count = expanded(data)
    except RecursionError:  # nested past Python's recursion limit: no config is
        raise deep from None
    if count > MAX_EXPANDED_VALUES:
        raise AliasBomb(f"its anchors and aliases expand to {count:,} values (a config "
                        f"holds a few hundred; at most {MAX_EXPANDED_VALUES:,} are read): an "
                        "alias bomb, or aliases nested far deeper than a config needs")
    return data
