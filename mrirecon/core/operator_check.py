"""Does a :class:`~mrirecon.core.LinearOperator` compute what its methods claim?

Everything built on an operator trusts that it is linear, that ``A.H`` is the conjugate
transpose of ``A`` (``<A u, v> = <u, A^H v>``), that ``A.gram(u)`` equals ``A.H(A(u))`` and, for
an operator with :class:`~mrirecon.core.CoilExpandReduce`, that ``A x = M expand(x)`` and
``A^H y = reduce(M y)``. mrirecon's own operators are tested for these (``tests/helpers.py``);
an operator a user writes is not, and a wrong one does no visible harm: with an adjoint that
lost a ``conj``, MoDL's data consistency returned images with a relative error of 88 (gradient
steps: 1.5e17), a closed-form ``_gram`` that forgot the sampling mask passed the dot test while
every CG solve used it, a ``reduce`` without a ``conj`` left k-space data consistency 0.72 off
the data, and an affine operator (an offset in k-space) passed the dot test.

:func:`check_operator` runs these tests, and checks the shape and precision of the outputs
first, and raises ``ValueError`` naming the operator, what fails and the relative errors. :func:`check_operator_once` is what the learned models
(:class:`~mrirecon.models.UnrolledModel`'s template, PnP-DPIR, unrolled EM) and the
data-consistency blocks (:class:`~mrirecon.models.ProximalDC`,
:class:`~mrirecon.models.GradientDC`) call on every operator: it tests an operator holding a
part of a class defined outside mrirecon the first time it is met (the functions a
:class:`~mrirecon.core.FunctionOperator` wraps once, however often they are wrapped anew; other
classes once per instance until :data:`TRUSTED_AFTER` instances passed), and nothing for
mrirecon's own operators, so the shipped models pay a set lookup.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

import torch
from torch import Tensor

from mrirecon.core.capabilities import CoilExpandReduce, HasSamplingMask, capability
from mrirecon.core.kinds import real_dtype
from mrirecon.core.operator import (FunctionOperator, LinearOperator, Shape, _format,
                                    adjoint_error_of)

__all__ = ["check_operator", "check_operator_once", "holds_user_code"]


def operator_tolerance(dtype: torch.dtype) -> float:
    """The relative error :func:`check_operator` accepts at ``dtype``: ``sqrt(eps)`` of its real
    precision (3.5e-4 at float32 / complex64, 1.5e-8 at float64 / complex128). Rounding keeps
    a correct operator 100x or more below it; wrong adjoints and grams are 1e-2 .. 1 off."""
    real = torch.empty((), dtype=dtype).real.dtype if dtype.is_complex else dtype
    return math.sqrt(torch.finfo(real if real.is_floating_point else torch.float32).eps)


def _default_dtype(op: LinearOperator) -> torch.dtype:
    """The precision of the operator's tensors: complex when any is complex, else the first
    floating one's; complex64 for an operator without floating tensors."""
    tensors = [t for t in list(op.buffers()) + list(op.parameters())
               if t.is_floating_point() or t.is_complex()]
    for t in tensors:
        if t.is_complex():
            return t.dtype
    return tensors[0].dtype if tensors else torch.complex64


def _probe(op: LinearOperator, x: Tensor | None) -> Tensor:
    """An example input: ``x``, or zeros of ``op.domain_shape`` (every entry known)."""
    if x is not None:
        if not isinstance(x, Tensor):
            raise TypeError(f"check_operator: x must be a torch.Tensor (an image in the domain of "
                            f"{op.name}), got {type(x).__name__}")
        return x
    dom = op.domain_shape
    if dom is None or any(s is None for s in dom):
        raise ValueError(f"check_operator: {op.name} has domain shape {dom}, with sizes it does "
                         "not fix; pass an example image x")
    buffers = list(op.buffers())
    device = buffers[0].device if buffers else torch.device("cpu")
    return torch.zeros(dom, dtype=_default_dtype(op), device=device)


def _random_like(t: Tensor, gen: torch.Generator) -> Tensor:
    """Standard normal values shaped like ``t`` (drawn on the CPU from ``gen``, so the global
    random state is untouched and the test is the same on every device)."""
    wide = torch.complex128 if t.is_complex() else torch.float64
    return torch.randn(t.shape, dtype=wide, generator=gen).to(dtype=t.dtype, device=t.device)


def _norm(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def _finite(t: Tensor) -> bool:
    return bool(torch.isfinite(t).all())


def _precisions(op: LinearOperator) -> set[torch.dtype]:
    """The real precisions of the operator's floating and complex tensors."""
    return {real_dtype(t.dtype) for t in list(op.buffers()) + list(op.parameters())
            if t.is_floating_point() or t.is_complex()}


def _checked_output(name: str, method: str, got, given: Tensor, side: str,
                    expected: Shape, own: set[torch.dtype]) -> Tensor:
    """``got``, the output of ``method`` for input ``given``, if it is a tensor whose trailing
    axes are ``expected`` (the operator's declared ``side`` shape, ``None``: not declared), in
    ``given``'s precision or the one torch promotes it to with the operator's tensors (precisions
    ``own``: a float64 ``DenseMatrix`` on a float32 input); else a ``ValueError`` naming the
    operator, method, expected and got."""
    where = f"check_operator: {name}{method} returned"
    if not isinstance(got, Tensor):
        raise ValueError(f"{where} a {type(got).__name__}, not a torch.Tensor")
    if expected is not None:
        n, shape = len(expected), tuple(got.shape)
        if len(shape) < n or any(e is not None and e != g
                                 for e, g in zip(expected, shape[len(shape) - n:])):
            raise ValueError(f"{where} shape {shape} for an input of shape {tuple(given.shape)}; "
                             f"its {side} is {_format(expected)}: make it return tensors of the "
                             f"{side} shape (or declare the {side} shape it has)")
    precision = real_dtype(given.dtype)
    if real_dtype(got.dtype) not in {precision} | {torch.promote_types(precision, p) for p in own}:
        raise ValueError(f"{where} {got.dtype} for {given.dtype} input: an operator keeps the "
                         "precision of its input (complex64 -> complex64, float32 -> float32 or "
                         "complex64; wider only where its own tensors are), or everything solved "
                         "with it changes precision without a word: cast the result back "
                         "(.to(x.dtype) or .to(x.real.dtype))")
    return got


def _scalars(gen: torch.Generator, complex_: bool) -> tuple:
    """Two random scalars (complex where both spaces are: a real-linear operator between a real
    and a complex space is only tested with real ones, as its dot test is)."""
    if complex_:
        return tuple(complex(c) for c in torch.randn(2, dtype=torch.complex128, generator=gen))
    return tuple(float(c) for c in torch.randn(2, dtype=torch.float64, generator=gen))


def _linearity(op: LinearOperator, u: Tensor, au: Tensor, gain: float,
               gen: torch.Generator, complex_: bool) -> tuple[float, float]:
    """``(||A 0||, ||A(a u + b z) - a A u - b A z||)`` relative to ``||A||`` times the norm of
    the input, ``||A||`` estimated by ``gain`` (a lower bound: ``max(||A u|| / ||u||,
    ||A^H v|| / ||v||)``), for a random ``z`` and random scalars ``a, b``."""
    z = _random_like(u, gen)
    a, b = _scalars(gen, complex_)
    zero = _norm(op(torch.zeros_like(u)))
    mix = op(a * u + b * z)
    rest = _norm(mix - (a * au + b * op(z)))

    def rel(err: float, size: float) -> float:
        scale = gain * size
        return err / scale if scale > 0 else (0.0 if err == 0 else math.inf)

    return rel(zero, _norm(u)), rel(rest, abs(a) * _norm(u) + abs(b) * _norm(z))


def _expand_reduce(name: str, er, mask: Tensor, u: Tensor, au: Tensor, v: Tensor,
                   ahv: Tensor, gen: torch.Generator, own: set[torch.dtype]) -> dict[str, float]:
    """The :class:`~mrirecon.core.CoilExpandReduce` identities, with the mask as k-space data
    consistency applies it (:func:`~mrirecon.models.blocks.soft_dc.kspace_mask`: boolean, a coil
    axis where ``expand`` adds one): ``A u = M expand(u)``, ``A^H v = reduce(M v)``, and the dot
    test between ``expand`` and ``reduce``."""
    k = er.expand(u)
    _checked_output(name, ".expand (CoilExpandReduce)", k, u, "k-space", None, own)
    m = mask.bool()
    m = m.unsqueeze(-3) if k.ndim > u.ndim else m
    zero = torch.zeros((), dtype=k.dtype, device=k.device)
    mk = torch.where(m, k, zero)
    if mk.shape != au.shape:
        raise ValueError(f"check_operator: {name}: M * expand(u) has shape {tuple(mk.shape)} "
                         f"(expand {tuple(k.shape)}, mask {tuple(mask.shape)}), A u "
                         f"{tuple(au.shape)}: CoilExpandReduce needs A x = M * expand(x)")
    r = er.reduce(torch.where(m, v, zero))
    _checked_output(name, ".reduce (CoilExpandReduce)", r, v, "domain", None, own)
    if r.shape != ahv.shape:
        raise ValueError(f"check_operator: {name}: reduce(M * v) has shape {tuple(r.shape)}, "
                         f"A^H v {tuple(ahv.shape)}: CoilExpandReduce needs A^H y = "
                         "reduce(M * y)")
    w = _random_like(k, gen)
    rw = er.reduce(w)
    if not all(_finite(t) for t in (k, r, rw)):
        raise ValueError(f"check_operator: {name}: expand / reduce returned NaN or Inf for "
                         "finite random input")
    return {"expand": _norm(mk - au) / (_norm(au) or 1.0),
            "reduce": _norm(r - ahv) / (_norm(ahv) or 1.0),
            "expand_reduce": adjoint_error_of(u, k, w, rw)}


_PROBLEMS = {
    "zero": "A(0) is not 0 (an offset added to the output?)",
    "superposition": "A(a u + b z) differs from a A u + b A z (a clip, a ReLU, a normalisation "
                     "by the input?)",
    "adjoint": "its adjoint is not the conjugate transpose of its forward (the dot test "
               "<A u, v> = <u, A^H v> fails: a missing conj, a shifted mask or index, a "
               "lost scale factor?)",
    "gram": "its gram differs from H(forward(u)) (a closed-form _gram that forgot a mask or "
            "weight?)",
    "expand": "M * expand(u) differs from A u (CoilExpandReduce needs A x = M * expand(x): "
              "expand is the fully sampled k-space of which A keeps the sampled part)",
    "reduce": "reduce(M * v) differs from A^H v (CoilExpandReduce needs A^H y = reduce(M * y))",
    "expand_reduce": "reduce is not the adjoint of expand (<expand(u), w> = <u, reduce(w)> "
                     "fails: a conj, phase or weight missing in one of them?)",
}
_LABELS = {"adjoint": "dot test", "gram": "gram", "zero": "A(0)",
           "superposition": "superposition", "expand": "expand", "reduce": "reduce",
           "expand_reduce": "expand/reduce dot test"}


def check_operator(op: LinearOperator, x: Tensor | None = None, *,
                   tolerance: float | None = None) -> dict[str, float]:
    """Test that ``op`` is linear and its adjoint, gram (and expand / reduce) agree with its
    forward; raise ``ValueError`` if not.

    Two random vectors ``u`` (shaped like ``x``) and ``v`` (shaped like ``op(u)``) are drawn
    (seed 0); then

    - the outputs: ``A u``, ``A^H v`` and ``A.gram(u)`` must be tensors whose trailing axes are
      the declared ``range_shape`` / ``domain_shape`` (where declared), in the precision of
      their input (complex64 -> complex64, float32 -> float32 or complex64; wider only as
      torch promotes the input with the operator's own tensors, a float64 ``DenseMatrix`` on a
      float32 input): an error names the method, the expected and the returned shape or dtype;
    - linearity: ``A(0) = 0`` and ``A(a u + b z) = a A u + b A z`` for a random ``z`` and random
      scalars ``a, b`` (complex where domain and range are), relative to ``||A||`` (estimated by
      ``max(||A u|| / ||u||, ||A^H v|| / ||v||)``) times the input's norm;
    - the dot test: ``|<A u, v> - <u, A^H v>|`` relative to
      ``(||A u|| ||v|| + ||u|| ||A^H v||) / 2`` (:func:`~mrirecon.core.relative_adjoint_error`);
    - the gram test: ``||A.gram(u) - A.H(A(u))|| / ||A.H(A(u))||`` (a closed-form ``_gram`` must
      be the normal operator of ``_forward`` / ``_adjoint``; the dot test cannot see it);
    - for an operator with the :class:`~mrirecon.core.CoilExpandReduce` capability (and so a
      :class:`~mrirecon.core.HasSamplingMask` mask ``M``, applied as k-space data consistency
      applies it: boolean, with a coil axis where ``expand`` adds one): ``A u = M expand(u)``,
      ``A^H v = reduce(M v)`` (relative errors) and the dot test between ``expand`` and
      ``reduce``; k-space data consistency (``HardProjectionDC``, ``CascadeNet(dc="kspace")``)
      uses them instead of ``A`` and ``A^H``.

    Call it on an operator you wrote before solving with it or training through it. The
    learned models and the data consistency blocks run it themselves on an operator holding
    your code the first time they meet it (:func:`check_operator_once`).

    Parameters
    ----------
    op
        The operator.
    x
        An example image in its domain: only its shape, dtype and device are used. ``None``:
        ``op.domain_shape`` (all sizes fixed) in the precision of the operator's tensors
        (complex if any is complex; complex64 for an operator without tensors).
    tolerance
        Largest relative error accepted; default :func:`operator_tolerance` of the dtype
        (``sqrt(eps)``), or the operator class's ``adjoint_tolerance`` attribute where it sets
        one (an operator whose adjoint is knowingly approximate).

    Returns
    -------
    dict
        ``{"adjoint": dot-test error, "gram": gram error, "zero": A(0) error,
        "superposition": superposition error, "tolerance": tolerance}``, with ``"expand"``,
        ``"reduce"`` and ``"expand_reduce"`` (the expand / reduce dot test) for an operator
        with expand / reduce.

    Raises
    ------
    ValueError
        An output of the wrong shape or precision, an error above the tolerance or a NaN / Inf
        result; the message names the operator class, what fails and the relative errors.
    """
    if not isinstance(op, LinearOperator):
        raise TypeError(f"check_operator: op must be a LinearOperator, got {type(op).__name__}")
    probe = _probe(op, x)
    if tolerance is None:
        tolerance = getattr(type(op), "adjoint_tolerance", None) or operator_tolerance(probe.dtype)
    name = op.name if op.name == type(op).__name__ else f"{type(op).__name__} ({op.name})"
    er = capability(op, CoilExpandReduce)
    sampled = None if er is None else capability(op, HasSamplingMask)
    gen = torch.Generator().manual_seed(0)
    dom, rng, own = op.domain_shape, op.range_shape, _precisions(op)
    with torch.no_grad():
        u = _random_like(probe, gen)
        au = _checked_output(name, " forward (_forward)", op(u), u, "range", rng, own)
        v = _random_like(au, gen)
        ahv = _checked_output(name, ".H (_adjoint)", op.H(v), v, "domain", dom, own)
        ref = op.H(au)
        gram = _checked_output(name, ".gram (_gram)", op.gram(u), u, "domain", dom, own)
        if not all(_finite(t) for t in (au, ahv, ref, gram)):
            raise ValueError(f"check_operator: {name} returned NaN or Inf for finite random input "
                             f"of shape {tuple(u.shape)} ({u.dtype})")
        try:
            adj = adjoint_error_of(u, au, v, ahv)
            gram_err = _norm(gram - ref) / (_norm(ref) or 1.0)
            gain = max(_norm(au) / (_norm(u) or 1.0), _norm(ahv) / (_norm(v) or 1.0))
            complex_ = (u.is_complex() or ahv.is_complex()) and au.is_complex()
            zero, superposition = _linearity(op, u, au, gain, gen, complex_)
        except RuntimeError as e:  # outputs whose shapes do not fit (shapes not declared)
            raise ValueError(f"check_operator: {name}: for u of shape {tuple(u.shape)}, A u "
                             f"{tuple(au.shape)}, A^H v {tuple(ahv.shape)} and gram(u) "
                             f"{tuple(gram.shape)} do not fit together ({e}); declare "
                             "domain_shape / range_shape and return tensors of those shapes") from e
        found = {"adjoint": adj, "gram": gram_err, "zero": zero,
                 "superposition": superposition}
        if sampled is not None:
            try:
                found.update(_expand_reduce(name, er, sampled.mask, u, au, v, ahv, gen, own))
            except RuntimeError as e:  # a mask, expand or reduce of shapes that do not fit
                raise ValueError(f"check_operator: {name}: expand / reduce and the mask "
                                 f"{tuple(sampled.mask.shape)} do not fit u of shape "
                                 f"{tuple(u.shape)} and A u {tuple(au.shape)} ({e}); "
                                 "CoilExpandReduce needs A x = M * expand(x) and A^H y = "
                                 "reduce(M * y)") from e
    failed = [key for key in _PROBLEMS if key in found and not found[key] <= tolerance]
    found["tolerance"] = float(tolerance)
    if failed:
        linear = [_PROBLEMS[k] for k in failed if k in ("zero", "superposition")]
        problems = (["it is not linear (affine? non-linear?): " + " and ".join(linear)]
                    if linear else []) + [_PROBLEMS[k] for k in failed if k not in ("zero",
                                                                                  "superposition")]
        errors = ", ".join(f"{_LABELS[k]} {found[k]:.2e}" for k in _LABELS if k in found)
        raise ValueError(f"check_operator: {name}: {'; '.join(problems)}. "
                         f"Relative errors: {errors} (tolerance {tolerance:.1e} at "
                         f"{probe.dtype}); solvers and data-consistency layers would return wrong "
                         "images without a word: fix _forward / _adjoint / _gram (expand / "
                         "reduce) until check_operator(op) passes")
    return found


#: a class defined outside mrirecon is trusted after this many of its instances passed (the
#: instances of one class may differ: a flag, a mask, a variant of the adjoint)
TRUSTED_AFTER = 3
_PASSED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # user class -> instances passed
_CLEAR: weakref.WeakSet = weakref.WeakSet()  # operators (whole) that need no further test
_TESTED: weakref.WeakSet = weakref.WeakSet()  # parts of an operator that passed
# FunctionOperators' functions that passed: id key -> weak references to the objects behind it
# (a key whose objects died is stale: ids are reused)
_TESTED_FUNCTIONS: dict[tuple, tuple] = {}


def _own(cls: type) -> bool:
    return cls.__module__.split(".", 1)[0] == "mrirecon"


def holds_user_code(op: LinearOperator) -> bool:
    """Whether ``op`` or a part of it (sums, products, scalings) is a
    :class:`~mrirecon.core.FunctionOperator` (the caller's functions) or of a class defined
    outside mrirecon: code whose tensors may live in closures or plain attributes, not in
    ``op.buffers()`` / ``op.parameters()``. True for an object that is no LinearOperator."""
    if not isinstance(op, LinearOperator):
        return True
    return any(isinstance(m, FunctionOperator) or not _own(type(m))
               for m in op.modules() if isinstance(m, LinearOperator))


def _function_objects(m: FunctionOperator) -> tuple | None:
    """The objects that make a FunctionOperator what it is: its functions (a bound method as
    its function and instance, since ``obj.method`` is a new object on each access) and its
    shapes; ``None`` when one of them cannot be referenced weakly (then it is not remembered)."""
    objects: list = []
    for f in (m._f, m._a, m._g):
        if f is None:
            continue
        owner = getattr(f, "__self__", None)
        objects += [f.__func__, owner] if hasattr(f, "__func__") and owner is not None else [f]
    try:
        refs = tuple(weakref.ref(o) for o in objects)
    except TypeError:
        return None
    return refs


def _function_key(m: FunctionOperator) -> tuple | None:
    refs = _function_objects(m)
    if refs is None:
        return None
    return (tuple(id(r()) for r in refs), m._g is None, m.domain_shape, m.range_shape), refs


def _functions_tested(m: FunctionOperator) -> bool:
    found = _function_key(m)
    if found is None:
        return False
    key, refs = found
    known = _TESTED_FUNCTIONS.get(key)
    return known is not None and all(a() is not None and a() is b() for a, b in zip(known, refs))


def _remember_functions(m: FunctionOperator) -> None:
    found = _function_key(m)
    if found is None:
        return
    if len(_TESTED_FUNCTIONS) > 1024:  # drop the entries whose functions died
        for k in [k for k, v in _TESTED_FUNCTIONS.items() if any(r() is None for r in v)]:
            del _TESTED_FUNCTIONS[k]
    key, refs = found
    _TESTED_FUNCTIONS[key] = refs


def _known(m: LinearOperator) -> bool:
    try:
        return m in _TESTED
    except TypeError:  # a class that made itself unhashable (__eq__ without __hash__)
        return False


def _untested(m: LinearOperator) -> bool:
    """Whether part ``m`` makes its operator need a test: a FunctionOperator (the caller's
    functions) whose instance and functions never passed, or an instance of a class defined
    outside mrirecon that never passed and whose class is not yet trusted."""
    if isinstance(m, FunctionOperator):
        return not (_known(m) or _functions_tested(m))
    return not _own(type(m)) and not _known(m) and _PASSED.get(type(m), 0) < TRUSTED_AFTER


def check_operator_once(op: LinearOperator, x: Tensor | Callable[[], Tensor]) -> None:
    """:func:`check_operator` ``(op, x)`` the first time an operator holding a part defined
    outside mrirecon is met; nothing for mrirecon's own operators.

    The parts are ``op`` and those of sums, products and scalings built from it. A
    :class:`~mrirecon.core.FunctionOperator` (the caller's functions) is tested once: its
    instance, and the functions it wraps, are remembered after a pass, so the same functions
    wrapped anew (``FunctionOperator(f, fh, ...)`` in a loop) and new sums, products and
    scalings of tested parts with mrirecon's own operators (``F / norm`` at every training
    step) are not tested again. Another class defined outside mrirecon is tested once per
    instance until :data:`TRUSTED_AFTER` of its instances passed. Operators never change after
    construction, so an operator found clear is remembered: a set lookup per call afterwards.
    (A part is remembered when the operator holding it passed: parts whose errors cancel in
    their composite are not told apart.)

    ``x`` is an example image, or a function that makes one, called only when a test runs (a
    model passes ``lambda: op.H(y)``, which costs nothing for a known operator). An object that
    is no :class:`~mrirecon.core.LinearOperator` is left to the caller's own checks.
    """
    if not isinstance(op, LinearOperator):
        return
    try:
        if op in _CLEAR:
            return
    except TypeError:  # a class that made itself unhashable (__eq__ without __hash__)
        pass
    parts = [m for m in op.modules() if isinstance(m, LinearOperator)]
    if any(_untested(m) for m in parts):
        check_operator(op, x() if callable(x) else x)
        for cls in {type(m) for m in parts if not _own(type(m)) and not _known(m)}:
            _PASSED[cls] = _PASSED.get(cls, 0) + 1
        for m in parts:
            if isinstance(m, FunctionOperator):
                _remember_functions(m)
            try:
                _TESTED.add(m)
            except TypeError:
                pass
    try:
        _CLEAR.add(op)
    except TypeError:
        pass
