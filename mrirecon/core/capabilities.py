"""Typed operator capabilities: what some operators offer beyond ``A``, ``A^H`` and ``A^H A``.

A model that needs more than the three linear maps asks for a capability by protocol, once,
with :func:`require_capability`, instead of looking attributes up with ``getattr``. The lookup
goes through :meth:`LinearOperator.capability`, so operator algebra keeps what the maths
allows:

============================  ===========================  ================================
capability                    ``c * A`` (``ScaledOperator``)  ``A @ B`` (``ComposedOperator``)
============================  ===========================  ================================
:class:`HasSamplingMask`      mask unchanged               the mask of ``A`` (the outer one)
:class:`CoilExpandReduce`     expand ``c E``, reduce        expand ``E_A B``, reduce
                              ``conj(c) E^H``               ``B^H E_A^H``
:class:`HasFBP`               ``fbp(y) / c``                not passed (no exact rule)
:class:`HasPseudoInverse`     ``A^+ y / c``                 not passed (``(AB)^+ != B^+ A^+``)
:class:`HasImageSupport`      support unchanged (``c != 0``)  not passed (``B`` may move pixels)
============================  ===========================  ================================

Each entry is exact: ``(cA)^+ = A^+ / c`` for ``c != 0``; an FBP is a linear approximate
inverse, so the FBP of ``cA`` is ``fbp / c``; with ``A = M E`` and ``A^H = E^H M``,
``cA = M (cE)`` and ``(cA)^H = (conj(c) E^H) M``.

The capabilities are structural protocols (an operator with a ``fbp`` method has
:class:`HasFBP`) but for :class:`HasSamplingMask`, which says that the data are MRI k-space and
which a class declares by listing it among its bases (an attribute called ``mask`` made any
operator a k-space operator); :class:`CoilExpandReduce` is claimed only together with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

from torch import Tensor

if TYPE_CHECKING:
    from mrirecon.core.operator import LinearOperator


class HasSamplingMask:
    """``A = M E``: the data are the product of a 0/1 sampling mask ``M`` and ``E x``.

    ``mask`` is boolean (or 0/1), broadcastable to the data's trailing ``(H, W)``; a k-space
    data-consistency layer keeps or replaces the values where it is set, and the data are MRI
    k-space (complex: a real ``y`` has lost its phase; see
    :func:`mrirecon.recon.checks.is_kspace_operator`).

    Declared, not guessed: unlike the other capabilities this one is no structural protocol,
    since an attribute called ``mask`` is common in operators that have nothing to do with
    k-space (an inpainting operator ``y = mask * x`` on a real image was refused as "MRI
    k-space ... lost its phase"). An operator has it when its class lists it among its bases,
    as ``Sampling`` and ``SenseOperator`` do::

        class MyCartesian(LinearOperator, HasSamplingMask):
            def __init__(self, mask):
                super().__init__((H, W), (H, W))
                self.register_buffer("mask", mask)

    The base adds no attribute of its own (``mask`` is annotated only, so a buffer or
    parameter of that name can be registered); :class:`CoilExpandReduce` is claimed only
    together with it.
    """

    __slots__ = ()

    mask: Tensor


@runtime_checkable
class CoilExpandReduce(Protocol):
    """The factorisation ``A = M E`` of a Cartesian operator into sampling and expansion.

    ``expand(x) = E x`` is the fully sampled (multi-coil) k-space of an image and
    ``reduce(k) = E^H k`` its adjoint (for SENSE, ``F S`` and ``S^H F^H``), so that
    ``A x = M * expand(x)`` and ``A^H y = reduce(M * y)``. For SENSE with maps of unit
    root-sum-of-squares, ``reduce(expand(x)) = x``.

    k-space data consistency uses ``expand`` / ``reduce`` in place of ``A`` and ``A^H``, so
    :func:`~mrirecon.core.check_operator` tests both identities (with the mask boolean, and a
    coil axis where ``expand`` adds one) and the dot test between ``expand`` and ``reduce`` for
    an operator that has them: a ``reduce`` that lost a ``conj`` passed the dot test of ``A``
    and left the data 0.72 off after a hard projection.
    """

    def expand(self, x: Tensor) -> Tensor: ...

    def reduce(self, k: Tensor) -> Tensor: ...


@runtime_checkable
class HasFBP(Protocol):
    """A filtered back-projection: the analytic approximate inverse of a CT projector."""

    def fbp(self, y: Tensor, filter: str = "ram-lak") -> Tensor: ...


@runtime_checkable
class HasPseudoInverse(Protocol):
    """The Moore-Penrose pseudo-inverse ``A^+ y`` in closed form."""

    def pseudo_inverse(self, y: Tensor) -> Tensor: ...


@runtime_checkable
class HasImageSupport(Protocol):
    """The pixels the operator sees: ``support`` is boolean, broadcastable to the image
    ``(..., H, W)``. A pixel outside it lies in the null space of ``A`` (for SENSE: every coil
    map is zero there, as ESPIRiT's ``crop`` leaves the background), so no data constrain it
    and a reconstruction that keeps a value there invents it."""

    @property
    def support(self) -> Tensor: ...


CAPABILITIES = (HasSamplingMask, CoilExpandReduce, HasFBP, HasPseudoInverse, HasImageSupport)

C = TypeVar("C")


def capability(op: LinearOperator, cap: type[C]) -> C | None:
    """The object implementing ``cap`` for ``op`` (often ``op`` itself), or ``None``.

    Goes through ``op.capability(cap)`` so that scaled and composed operators pass their
    parts' capabilities on (see the module docstring); objects that are no ``LinearOperator``
    are checked structurally, but for :class:`HasSamplingMask`, which a class declares.
    """
    if cap not in CAPABILITIES:
        raise TypeError(f"capability: {getattr(cap, '__name__', cap)!r} is not an operator "
                        f"capability ({', '.join(c.__name__ for c in CAPABILITIES)})")
    method = getattr(type(op), "capability", None)
    if method is not None:
        return op.capability(cap)
    return op if isinstance(op, cap) else None


def require_capability(op: LinearOperator, cap: type[C], who: str, hint: str = "") -> C:
    """Like :func:`capability`, but raise a ``TypeError`` naming ``who``, ``cap`` and the
    operator's type when ``op`` lacks it (``hint``: what to use instead)."""
    found = capability(op, cap)
    if found is None:
        name = getattr(op, "name", type(op).__name__)
        declare = {HasSamplingMask: ": a class of your own declares it by listing "
                                    "HasSamplingMask among its bases",
                   CoilExpandReduce: ": it comes with expand / reduce methods and the "
                                     "HasSamplingMask capability, which a class of your own "
                                     "declares by listing it among its bases"}.get(cap, "")
        raise TypeError(f"{who} needs an operator with the {cap.__name__} capability, got "
                        f"{type(op).__name__} ({name}){declare}" + (f"; {hint}" if hint else ""))
    return found


# -- adapters used by ScaledOperator and ComposedOperator ----------------------------------


def _conj(c):
    if isinstance(c, Tensor):
        return c.conj()
    return c.conjugate() if isinstance(c, complex) else c


class ScaledExpandReduce:
    """``expand = c E``, ``reduce = conj(c) E^H`` for ``c * A`` with ``A = M E``."""

    def __init__(self, base: CoilExpandReduce, scalar) -> None:
        self.base, self.scalar = base, scalar

    def expand(self, x: Tensor) -> Tensor:
        return self.scalar * self.base.expand(x)

    def reduce(self, k: Tensor) -> Tensor:
        return _conj(self.scalar) * self.base.reduce(k)


class ComposedExpandReduce:
    """``expand = E_A B``, ``reduce = B^H E_A^H`` for ``A @ B`` with ``A = M E_A``."""

    def __init__(self, outer: CoilExpandReduce, inner: LinearOperator) -> None:
        self.outer, self.inner = outer, inner

    def expand(self, x: Tensor) -> Tensor:
        return self.outer.expand(self.inner.forward(x))

    def reduce(self, k: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.reduce(k))


class ScaledFBP:
    """The FBP of ``c * A``: ``fbp_A(y) / c``."""

    def __init__(self, base: HasFBP, scalar) -> None:
        if _is_zero(scalar):
            raise ZeroDivisionError("the FBP of 0 * A does not exist")
        self.base, self.scalar = base, scalar

    def fbp(self, y: Tensor, filter: str = "ram-lak") -> Tensor:
        return self.base.fbp(y, filter=filter) / self.scalar


class ScaledPseudoInverse:
    """``(c A)^+ = A^+ / c`` (``c != 0``)."""

    def __init__(self, base: HasPseudoInverse, scalar) -> None:
        self.base, self.scalar = base, scalar

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        if _is_zero(self.scalar):  # the pseudo-inverse of the zero map is zero
            return 0 * self.base.pseudo_inverse(y)
        return self.base.pseudo_inverse(y) / self.scalar


def _is_zero(c) -> bool:
    return bool((c == 0).all()) if isinstance(c, Tensor) else c == 0
