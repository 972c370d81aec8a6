"""Argument checks shared by the solvers, the reconstruction registry and the config loader.

A count of iterations that is zero or negative, or a weight that is NaN, infinite or negative,
never gives an error downstream: the solvers then return their starting point (all zeros) or
NaN images. These helpers turn such values into a ``ValueError`` that names the parameter.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

# parameter names that count iterations / stages / repeats / sizes of a network: integers >= 1
COUNT_NAMES = re.compile(
    r"(^|_)(iterations?|cascades|stages|phases|layers|levels|blocks|probes|features|chans|pools|"
    r"pool_layers|filters|depth|components|atoms_per_axis|sparsity|n_primal|n_dual|num_[a-z_]+)$")
# weights, step sizes, tolerances and noise levels: finite and >= 0
NONNEGATIVE_NAMES = re.compile(
    r"(^|_)(lam|lamda|lambda|rho|mu|nu|eta|theta|gamma|sigma|sigmas|tol|tolerance|step|"
    r"relaxation|noise_std|sigma_start|sigma_end|sigma_min|sigma_max|sigma_scale|h|ratio|"
    r"step_ratio|drop_prob|frequency_scaling)$")

# relative tolerances (a fraction of a norm): also < 1, as ``check_tolerance`` requires
TOLERANCE_NAMES = re.compile(r"(^|_)(tol|tolerance)$")

# parameters whose None means something although their default is not None: ``init_seed``
# (VN and ADMM-CSNet default to 0; None leaves the initialisation unseeded)
NULLABLE_NAMES = frozenset({"init_seed"})

class NonFiniteError(ValueError):
    """NaN or Inf values met inside a computation (CG's right-hand side or ``A^H A p``, coil
    maps): a ``ValueError`` whose type tells callers that rank states (test-time adaptation)
    that the values went bad, without reading the message."""


class LearnedWeightError(ValueError):
    """A learned weight outside the range its layer needs (MoDL's negative ``lam``): like
    :class:`NonFiniteError`, what diverged weights meet, so test-time adaptation counts it as
    a diverged step rather than a failed input."""


_EMPTY = inspect.Parameter.empty


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# names whose value is one weight: a tensor or array of several is refused (per-slice weights
# are not supported by any method); other names (``sigmas``, ``step``) are not judged
_SCALAR_NAMES = re.compile(r"(^|_)(lam|lamda|lambda)$")


def _array_like(v: Any) -> bool:
    """A numpy scalar or array, or a torch tensor (not a Python number)."""
    plain = isinstance(v, (bool, int, float, str))
    return not plain and hasattr(v, "shape") and hasattr(v, "dtype")


def _scalar_of(v: Any) -> Any:
    """``float(v)`` for a numpy scalar or a one-element real array / tensor (``np.float32``,
    ``torch.tensor(1e-3)``: what arithmetic on arrays gives); ``v`` itself otherwise."""
    if not _array_like(v) or math.prod(v.shape) != 1:
        return v
    dtype = v.dtype
    if hasattr(v, "is_complex"):  # torch
        if v.is_complex() or str(dtype) == "torch.bool":
            return v
        kind = "f" if v.is_floating_point() else "i"
    else:
        kind = getattr(dtype, "kind", "O")
    if kind not in "fiu":
        return v
    try:
        return float(v) if kind == "f" else int(v)  # np.int64 iterations stay integers
    except (TypeError, ValueError):
        return v


def _shape_problem(v: Any) -> str | None:
    kind = "a tensor" if hasattr(v, "requires_grad") else "an array"
    return f"must be a number, got {kind} of shape {tuple(v.shape)}"


def checked_weight(who: str, name: str, value: Any) -> Any:
    """A regularisation weight (``lam``) checked by the methods themselves (called directly,
    not through :func:`mrirecon.recon.run`): a finite number ``>= 0``. A numpy scalar or a 0-d
    (one-element) array or tensor counts as its number and is returned as a ``float`` (a tensor
    that requires grad is returned as it is); several values are refused: "lam must be a number,
    got a tensor of shape (2,)". The methods' own ``lam < 0`` let NaN and infinity through
    (``np.float32('nan')``: an all-NaN image from ``l1_wavelet``, ``inf``: an all-zero one)."""
    if isinstance(value, bool) or isinstance(value, str) or value is None:
        raise ValueError(f"{who}: {name} must be a finite number >= 0, got {value!r}")
    if _array_like(value) and math.prod(value.shape) != 1:
        raise ValueError(f"{who}: {name} {_shape_problem(value)}")
    try:  # (detached: float() of a tensor that requires grad warns on every call)
        f = float(value.detach() if hasattr(value, "detach") else value)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: {name} must be a finite number >= 0, got {value!r}") from None
    if not (math.isfinite(f) and f >= 0):
        raise ValueError(f"{who}: {name} must be >= 0 and finite, got {value!r}")
    if getattr(value, "requires_grad", False):
        return value.reshape(())  # a learned weight: keep its graph
    return f


_SEQUENCE_ANNOTATION = re.compile(r"\b(Sequence|list|tuple|List|Tuple|Iterable|Collection)\b")


def _admits_sequence(annotation: Any, default: Any) -> bool:
    """Whether a parameter takes a list (per-stage weights): its annotation says so
    (``float | Sequence[float]``), its default is one, or its annotation is unknown."""
    if isinstance(default, (list, tuple)) or annotation is _EMPTY:
        return True
    return bool(_SEQUENCE_ANNOTATION.search(str(annotation)))


def param_problem(name: str, value: Any, default: Any = _EMPTY,
                  annotation: Any = _EMPTY, *, required: bool = False) -> str | None:
    """What is wrong with ``value`` for a parameter called ``name`` (``None`` when fine).

    Counts (``iterations``, ``cg_iterations``, ...) must be integers >= 1; weights, step
    sizes and tolerances (``lam``, ``rho``, ``tolerance``, ...) finite and >= 0 (not
    ``true`` / ``false``, and one number unless ``annotation``, the signature's, admits a
    sequence); any number finite; and a value whose default is a number, a bool or a string
    must have that kind. A mapping is judged by :func:`mapping_problem`. Values of other types
    (tensors, modules, callables) are not judged.

    ``None`` (YAML's ``null``) is a value only where the default is ``None`` itself (e.g. ``rho``:
    the solver's own choice) or unknown, or for :data:`NULLABLE_NAMES`: elsewhere it reached the
    solver, and every input failed with a bare ``TypeError`` naming no setting. ``required``: the
    signature has the parameter without a default (``l1_wavelet``'s ``lam``): ``null`` is
    refused there too (it passed the load check as "unknown", and every input failed).
    """
    if value is None:
        if required and name not in NULLABLE_NAMES:
            return "must not be null (None): the method needs it (it has no default)"
        if default is _EMPTY or default is None or name in NULLABLE_NAMES:
            return None
        return (f"must not be null (None): the default is {default!r}; remove the key to use "
                "the default")
    value = _scalar_of(value)  # np.float32(nan), torch.tensor(inf): judged as numbers
    if _array_like(value) and _SCALAR_NAMES.search(name):
        return _shape_problem(value)  # lam=torch.tensor([1e-3, 1e-3]): was a bare RuntimeError
    if isinstance(value, Mapping):
        return mapping_problem(name, value, default, annotation)
    if not isinstance(value, (int, float, str, list, tuple)):
        return None  # tensors, arrays, modules, callables: the function's own business
    if _is_number(value) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    if COUNT_NAMES.search(name) and (_is_number(default) or default in (_EMPTY, None)):
        return count_problem(value, 1)
    if NONNEGATIVE_NAMES.search(name) and isinstance(value, str) and not isinstance(default, str):
        return f"must be a number, got {value!r}"  # e.g. `lam=nan` in YAML is the string 'nan'
    if NONNEGATIVE_NAMES.search(name) and isinstance(value, bool) and not isinstance(default, bool):
        return f"must be a number, got {value!r}"  # `lam=yes` is YAML's true: failed per input
    if NONNEGATIVE_NAMES.search(name) and isinstance(value, (list, tuple)) \
            and not _admits_sequence(annotation, default):
        return f"must be one number, got the list {value!r}"  # lam=[0.1]: failed per input
    if NONNEGATIVE_NAMES.search(name) and (_is_number(value) or isinstance(value, (list, tuple))):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None:  # only reached inside a list: a per-stage list may skip a stage
                continue
            if not _is_number(v):
                return f"must be a number, got {value!r}"
            if not math.isfinite(v) or v < 0:
                return f"must be finite and >= 0, got {value!r}"
            if TOLERANCE_NAMES.search(name) and v >= 1:
                return TOLERANCE_PROBLEM.format(value=value)
        return None
    if default in (_EMPTY, None):
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"must be an integer, got {value!r}"
    if isinstance(default, float) and not _is_number(value):
        return f"must be a number, got {value!r}"
    if isinstance(default, str) and not isinstance(value, str):
        return f"must be a string, got {value!r}"
    return None


_MAPPING_ANNOTATION = re.compile(r"\b(dict|Dict|Mapping|MutableMapping|Any)\b")


def mapping_problem(name: str, value: Mapping, default: Any = _EMPTY,
                    annotation: Any = _EMPTY) -> str | None:
    """What is wrong with the mapping ``value`` (YAML's ``{4: 300, 8: 1000}``) for the parameter
    ``name`` (``None``: it takes one, e.g. ``model_params: dict | None``). A count, a weight or a
    parameter whose default is a number, a bool or a string, or whose annotation admits no
    mapping, takes one value: the mapping passed the load checks and every input failed on a
    bare ``TypeError`` naming no setting ("'dict' object cannot be interpreted as an integer")."""
    scalar = isinstance(default, (bool, int, float, str))
    typed = annotation is not _EMPTY and not _MAPPING_ANNOTATION.search(str(annotation))
    if not (COUNT_NAMES.search(name) or NONNEGATIVE_NAMES.search(name) or scalar or typed):
        return None
    return (f"must be one value, not a mapping, got {value!r}; a pipeline's values per "
            "acceleration or view count go under reconstruct.params_by_acceleration (MRI) / "
            f"params_by_views (CT), e.g. {{4: {{{name}: ...}}, 8: {{{name}: ...}}}}")


def settings_of_other_methods(method: str, owners: Mapping[str, tuple[str, ...]],
                              given: Mapping[str, Any]) -> list[str]:
    """The settings in ``given`` (passed: not ``None``) that only another method than ``method``
    reads (``owners``: each method's own settings)."""
    return [n for other, names in owners.items() if other != method for n in names
            if given.get(n) is not None]


def check_method_settings(who: str, method: str, owners: Mapping[str, tuple[str, ...]],
                          hint: str = "", **given: Any) -> None:
    """Refuse the settings in ``given`` that were passed (not ``None``) but belong to another
    method than ``method``: ``owners`` maps each method to the settings only it reads. A solver
    that silently ignored them would run something else than the caller asked for."""
    if method not in owners:
        raise ValueError(f"{who}: method must be {' or '.join(map(repr, owners))}, got {method!r}")
    wrong = settings_of_other_methods(method, owners, given)
    if wrong:  # named under the method that owns the first of them
        other = next(m for m, names in owners.items() if wrong[0] in names)
        wrong = [n for n in wrong if n in owners[other]]
        one = len(wrong) == 1
        raise ValueError(f"{who}: {', '.join(wrong)} {'is a setting' if one else 'are settings'} of "
                         f"method={other!r}, not of method={method!r}{hint}; pass method={other!r} "
                         f"to use {'it' if one else 'them'}")


def count_problem(value: Any, least: int) -> str | None:
    """What is wrong with ``value`` as a count ``>= least`` (``None``: fine): a Python or numpy
    integer (``np.arange`` / grid values), not a bool. The settings checks of the prior
    reconstructions use it (``isinstance(value, int)`` there refused ``np.int64(4)``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        return f"must be an integer >= {least}, got {value!r}"
    return None


def positive_problem(value: Any) -> str | None:
    """What is wrong with ``value`` as a finite number ``> 0`` (``None``: fine; a value that is no
    number at all is left to :func:`param_problem`, which names its type)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and not (math.isfinite(value) and value > 0):
        return f"must be {'' if math.isnan(value) or value <= 0 else 'finite and '}> 0, got {value!r}"
    return None


def check_iterations(who: str, **counts: int) -> None:
    """Each keyword must be an integer >= 1 (e.g. ``check_iterations("cg", iterations=n)``):
    a Python or numpy integer (``np.arange`` / grid values), not a bool."""
    for name, n in counts.items():
        if (problem := count_problem(n, 1)) is not None:
            raise ValueError(f"{who}: {name} {problem}")


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether ``shape`` broadcasts to ``target`` without widening it. (Not
    ``torch.broadcast_shapes``: its first call imports SymPy, about 0.7 s of every process's
    first reconstruction.)"""
    return len(shape) <= len(target) and all(s in (1, t) for s, t in zip(reversed(shape), reversed(target)))


def start_at(who: str, arg: str, start: object, shape: tuple[int, ...], of: str, *,
             copy: bool = True) -> Any:
    """A start ``arg`` (a solver's ``x0``, ``z0``, ``y0``; a reconstruction's ``x0``) checked
    against ``shape`` (that of ``of``, which sets the shape the solver works at) and returned at
    that shape: one that broadcasts to it without changing it is expanded into a writable copy
    (one start for a stack of problems); a start of more or other axes is refused (``cg``
    returned two images for one ``rhs``; ``admm`` and ``pdhg`` failed on torch's "The size of
    tensor a (32) must match"), as is anything but a tensor (a numpy array: "'numpy.ndarray'
    object has no attribute 'clone'"). A start of the very shape is returned as a copy
    (``copy``: the solvers write into it) or itself."""
    import torch

    if not isinstance(start, torch.Tensor):
        raise TypeError(f"{who}: {arg} must be a torch.Tensor, got {type(start).__name__}")
    got = tuple(start.shape)
    if got == shape:
        return start.clone() if copy else start
    if not broadcasts_to(got, shape):
        raise ValueError(f"{who}: {arg} must have the shape {shape} of {of}, got {got}")
    return start.expand(shape).clone()


def check_start(who: str, x0: Any, image: Any, y: Any) -> Any:
    """A start ``x0`` must be a tensor that broadcasts to the shape of ``image`` (``A.H(y)``, the
    shape the solver returns) without changing it; returns ``x0`` at that shape and in the
    image's dtype (``None`` stays ``None``; :func:`start_at`, ``x0`` itself when of that shape
    and dtype); a complex start for a real image, and NaN / Inf, are refused naming ``x0``.
    One ``(H, W)`` start for a batch of slices is fine; a start with more images than ``y`` was
    broadcast the other way without a word (``cg_sense`` with ``x0`` of shape ``(2, H, W)`` and
    one ``y`` returned 2 images)."""
    if x0 is None:
        return None
    x0 = start_at(who, "x0", x0, tuple(image.shape), f"the image of y {tuple(y.shape)} (A.H(y))",
                  copy=False)
    # the image's dtype and no NaN / Inf, for every method alike: dlmri failed on torch's
    # "shape '[-1, 72]' is invalid" (a real start) or "double != float"; cg_sense, tv, sirt
    # returned x0's precision, not y's; sirt returned all NaN, pnp_nlm blamed "an x0 of zeros"
    if x0.is_complex() and not image.is_complex():
        raise TypeError(f"{who}: x0 is complex ({x0.dtype}) where the image of y is real "
                        f"({image.dtype}); pass a real start")
    if bad := nonfinite_count(x0):
        raise ValueError(f"{who}: x0 holds {bad} NaN or Inf values; start from a finite image "
                         "(or from none)")
    return x0.to(device=image.device, dtype=image.dtype)


def check_seed(who: str, seed: Any, below: int | None = None) -> None:
    """``seed`` must be ``None``, an integer ``>= 0`` (and ``< below``) or a sequence of them
    (fastMRI's ``file_seed``): numpy said "Cannot cast scalar from dtype('float64') to
    dtype('int64') according to the rule 'safe'" for ``seed=1.5``, naming no argument."""
    if seed is None:
        return
    values = [seed]
    if hasattr(seed, "__iter__") and not isinstance(seed, (str, bytes)):
        try:
            values = list(seed)
        except TypeError:  # a 0-d array
            pass
    if not values or any(isinstance(v, bool) or not isinstance(v, numbers.Integral) for v in values):
        raise TypeError(f"{who}: seed must be an integer or a tuple of integers (e.g. "
                        f"file_seed(path)), got {seed!r}")
    if any(v < 0 or (below is not None and v >= below) for v in values):
        limit = f"in [0, {below})" if below is not None else ">= 0"
        raise ValueError(f"{who}: seed must be an integer (or integers) {limit}, got {seed!r}")


def check_nonnegative(who: str, **values: float) -> None:
    """Each keyword must be a finite number >= 0 (a Python or 0-dim tensor scalar)."""
    for name, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue  # tensors of per-element weights are the caller's business
        if not (math.isfinite(f) and f >= 0):
            raise ValueError(f"{who}: {name} must be finite and >= 0, got {v!r}")


#: Why a tolerance >= 1 is refused (:func:`check_tolerance`, :func:`param_problem`)
TOLERANCE_PROBLEM = ("must be a finite number >= 0 and < 1 (relative to a norm: 1e-4 stops at a "
                     "0.01 % change; 0 runs every iteration), got {value!r}: a solver stops "
                     "before its first iteration at 1 or more and returns its start (zeros)")


def check_tolerance(who: str, **values: float) -> None:
    """Each keyword is a relative stopping tolerance: a finite number ``>= 0`` and ``< 1``. At
    ``1`` or more every solver met it before its first step (``cg_sense(tolerance=1)`` returned
    zeros after 0 iterations, exit 0). A tensor of several values is the caller's business."""
    for name, v in values.items():
        if isinstance(v, (bool, str, type(None))):
            raise ValueError(f"{who}: {name} must be a number, got {v!r}")
    check_nonnegative(who, **values)
    for name, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue  # a tensor of several values is the caller's business
        if f >= 1:
            raise ValueError(f"{who}: {name} " + TOLERANCE_PROBLEM.format(value=v))

def nonfinite_count(t) -> int:
    """How many values of tensor ``t`` are NaN or Inf (a complex value counts once): the figure
    of an error message, after :func:`finite_and_nonzero` found one."""
    import torch

    return int((~torch.isfinite(t.detach())).sum())


def finite_and_nonzero(t) -> tuple[bool, bool]:
    """``(every value finite, some value nonzero)`` for a real or complex tensor, in one pass.

    The minimum and maximum of the real view decide both: ``min`` / ``max`` propagate NaN and
    reach ``+-inf`` exactly when a value is infinite, and all values are zero exactly when both
    are. One ``aminmax`` reads the data once without a boolean temporary, 30-40x less time than
    ``isfinite(x).all()`` plus ``(x != 0).any()`` on a 8 x 320 x 320 complex64 k-space (CPU).
    An empty tensor is finite and not nonzero.
    """
    import torch

    if t.is_conj():  # a lazy conjugate: the same moduli, and view_as_real refuses it
        t = t.conj()
    r = torch.view_as_real(t) if t.is_complex() else t
    if r.numel() == 0:
        return True, False
    lo, hi = (float(v) for v in torch.aminmax(r.detach()))
    return math.isfinite(lo) and math.isfinite(hi), lo != 0 or hi != 0


def as_tensor(x: Any):
    """``torch.as_tensor(x)``, where a numpy view with a negative stride (``np.flip(m)``,
    ``m[::-1]``), which torch refuses ("At least one stride in the given numpy array is
    negative"), naming no argument, is copied first."""
    import numpy as np
    import torch

    if isinstance(x, np.ndarray) and any(s < 0 for s in x.strides):
        x = np.ascontiguousarray(x)
    return torch.as_tensor(x)


def require_floating(x: Any, who: str) -> None:
    """Refuse an integer or boolean tensor given to a transform that computes in floating point
    (``who`` names it), as the CT projectors do: the wavelet wrote float coefficients into a copy
    of the input, so int16 truncated them and uint8 wrapped around; finite differences of a
    uint8 image wrapped by 256."""
    import torch

    if isinstance(x, torch.Tensor) and not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"{who}: input must be float32/float64 or complex, got {x.dtype}; "
                        "convert it first, e.g. x.float()")
