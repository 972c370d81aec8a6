"""One vocabulary for parameters, with the old spellings as deprecated aliases for one release.

Across reconstruction methods, solvers, models, pipeline configs and the CLI:

- ``iterations``: the number of outer iterations of a solver, or of unrolled steps / cascades /
  stages / phases of a network. Inner solves keep a prefix (``cg_iterations``).
- ``lam``: the weight of the regulariser (or of the prior against the data term).

Older names (``max_iterations``, ``outer_iterations``, ``num_stages``, ``num_phases``,
``num_cascades``, ``stages``, ``lamda``, ``nu``) are still accepted where the canonical name is,
with a ``FutureWarning``; they go away in the next release. The warning of ``l1_wavelet``'s
``lamda`` adds that SigPy's ``L1WaveletRecon`` at the same value is another problem
(:data:`ALIAS_NOTES`, keyed by the function and the old name). A call or config that gives
both the old and the new name is an error, not a silent choice.

Names the user typed that match nothing (a model, a reconstruction, weights, a parameter) get a
did-you-mean hint from :func:`closest_name` / :func:`did_you_mean`; unknown names of a registry
raise :class:`UnknownNameError`.

Packages: :func:`pip_name` is the name ``pip install`` takes for an import name
(:data:`PIP_NAMES`), for every "not installed" message (the CLI's, the registry's, the
pipeline validation's); :func:`importing_distribution` names the installed package whose own
import of a missing module failed.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

ITERATIONS = "iterations"
WEIGHT = "lam"

#: pip names of the dependencies imported under another name
PIP_NAMES = {"yaml": "pyyaml", "pywt": "PyWavelets", "skimage": "scikit-image",
             "sklearn": "scikit-learn", "PIL": "pillow"}


def pip_name(module: str) -> str:
    """The name ``pip install`` takes for the package imported as ``module``."""
    return PIP_NAMES.get(module, module)


def packages_distributions() -> dict[str, list[str]]:
    """``importlib.metadata.packages_distributions()``: the distributions that provide each
    top-level module. Python 3.10's reads only ``top_level.txt``, which wheels built by meson,
    maturin or flit do not write (numpy, scipy, pywt, nibabel, ... had no owner there); the
    names such a distribution installs are inferred from its file list as Python 3.11 does."""
    import importlib.metadata as md
    import inspect
    import sys

    found = md.packages_distributions()
    if sys.version_info >= (3, 11):
        return found
    for dist in md.distributions():
        if dist.read_text("top_level.txt") is not None:
            continue
        tops = {f.parts[0] if len(f.parts) > 1 else inspect.getmodulename(str(f)) or str(f)
                for f in dist.files or ()}
        for top in tops:
            if "." not in top:
                found.setdefault(top, []).append(dist.metadata["Name"])
    return found


def importing_distribution(err: BaseException) -> tuple[str, str] | None:
    """``(distribution, version)`` of the installed package (not mrirecon, not the standard
    library) whose code raised ``err``, its innermost such frame; ``None`` when mrirecon's own
    code (or a script's) did. A ``ModuleNotFoundError`` raised there is a dependency of that
    package that is missing (nilearn 0.10.0 and pydicom 2.4 import ``pkg_resources``, which
    setuptools 81 dropped): the package is too old for the environment, and ``pip install``
    of the missing module's name would not help."""
    import importlib.metadata as md
    import sys
    from pathlib import Path

    frames = []
    tb = err.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        top = str(frame.f_globals.get("__name__") or "").split(".")[0]
        if not top or top in sys.stdlib_module_names:
            continue
        if top == "mrirecon":
            return None
        here = Path(frame.f_code.co_filename).resolve()
        for name in packages_distributions().get(top, []):
            dist = md.distribution(name)  # the frame's file must be one the package installed
            if any(f.parts[0] == top and Path(dist.locate_file(f)).resolve() == here
                   for f in dist.files or ()):
                return dist.metadata["Name"], dist.version
        return None  # a script's or a test's own module
    return None


# old name -> canonical name
DEPRECATED: Mapping[str, str] = {
    "max_iterations": ITERATIONS,
    "outer_iterations": ITERATIONS,
    "num_stages": ITERATIONS,
    "stages": ITERATIONS,
    "num_phases": ITERATIONS,
    "num_cascades": ITERATIONS,
    "lamda": WEIGHT,
    "nu": WEIGHT,
}

#: ``(target, old name)`` -> what the old name's warning adds there: where a value under the old
#: name meant something else in the library that spelt it so (a ported call that runs, but not
#: to that library's result). ``target`` is the function, method or registry name
#: (:func:`canonical_params`); the note is that target's alone (``cg_sense`` solves SigPy's
#: SenseRecon problem, and ``grappa`` spelt ``lamda`` itself: the note misled them).
ALIAS_NOTES: Mapping[tuple[str, str], str] = {
    ("l1_wavelet", "lamda"): (
        "; SigPy's L1WaveletRecon at the same value gives another image than l1_wavelet "
        "(NRMSE about 0.1), as its db4 transform is zero-padded with one more level where "
        "l1_wavelet's is periodised with cycle spinning"),
    ("tv", "lamda"): (
        "; SigPy's TotalVariationRecon at the same value gives another image than tv (NRMSE "
        "0.03-0.12), as its TV is anisotropic with circular differences where tv's is "
        "isotropic with Neumann boundaries"),
}

F = TypeVar("F", bound=Callable[..., Any])


class OutdatedPackage(ImportError):
    """An installed dependency older than the code that uses it needs (a floor in
    ``pyproject.toml``), found where it is used: the message names the package, the version
    found and the install line. ``mrirecon`` reports it as a user's error (one line, status 2),
    as it does a missing package (:func:`mrirecon.cli.missing_package`)."""


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry has (a model, a reconstruction): a ``ValueError`` (a value
    the caller gave is wrong) that stays a ``KeyError`` for callers that catch that, with the
    message printed as it is (a ``KeyError`` prints its repr, in quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def closest_name(name: object, choices: Iterable[str]) -> str | None:
    """The one of ``choices`` closest to ``name`` (``difflib``'s rule, as the config loader's
    hints), or ``None`` when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return close[0] if close else None


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``name``, else ``""``."""
    close = closest_name(name, choices)
    return f" (did you mean {close!r}?)" if close is not None else ""


def canonical_params(params: Mapping[str, Any], accepted: Iterable[str], where: str,
                     changed: Mapping[str, tuple[str, Callable[[Any], Any]]] | None = None,
                     target: str | None = None) -> dict[str, Any]:
    """Rename deprecated keys of ``params`` to the names in ``accepted``.

    A key is renamed only when it is a deprecated spelling, the target does not accept the old
    name itself, and it does accept the canonical one. ``where`` names the function, model or
    config field for the warning and the error (e.g. ``"mri_cs.yaml: reconstruct.params"``).
    ``changed`` adds one target's own old keywords whose value changed form as well,
    ``{old: (new, convert)}``: the value passed is ``convert(value)``. ``target`` is the
    function or registry name whose :data:`ALIAS_NOTES` the warning adds (default ``where``:
    a function's or a registry entry's name; a config field names its method here).
    """
    accepted, changed = set(accepted), changed or {}
    out: dict[str, Any] = {}
    for key, value in params.items():
        new, convert = changed.get(key, (DEPRECATED.get(key), None))
        if new is None or key in accepted or new not in accepted:
            out[key] = value
            continue
        if new in params:
            raise ValueError(f"{where}: both {key!r} (deprecated) and {new!r} are given; "
                             f"keep only {new!r}")
        warnings.warn(f"{where}: {key!r} is deprecated, use {new!r} (the old name goes away in "
                      f"the next release{ALIAS_NOTES.get((target or where, key), '')})",
                      FutureWarning, stacklevel=3)
        out[new] = value if convert is None else convert(value)
    return out


def accepts_deprecated_names(fn: F | None = None, /,
                             **changed: tuple[str, Callable[[Any], Any]]) -> Any:
    """Decorator: let ``fn`` be called with the deprecated spellings of its keyword parameters.

    The signature shown by ``inspect.signature`` stays the canonical one, so registries and
    config validation list only the new names. With keywords, the function's own old keywords
    whose value changed form too: ``@accepts_deprecated_names(cache_maps=("maps_cache",
    convert))`` passes ``maps_cache=convert(v)`` for ``cache_maps=v``, with the same warning.
    """
    if fn is None:
        return functools.partial(accepts_deprecated_names, **changed)
    accepted = [p.name for p in inspect.signature(fn).parameters.values()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    where = getattr(fn, "__qualname__", getattr(fn, "__name__", "function"))

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(k in DEPRECATED or k in changed for k in kwargs):
            kwargs = canonical_params(kwargs, accepted, where, changed)
        return fn(*args, **kwargs)

    return wrapper
