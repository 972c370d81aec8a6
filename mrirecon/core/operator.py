"""The one linear-operator abstraction shared by solvers and networks.

A :class:`LinearOperator` maps tensors of trailing shape ``domain_shape`` to tensors of trailing
shape ``range_shape``; any leading (batch) dimensions pass through unchanged. Subclasses
implement ``_forward`` and ``_adjoint`` (and may override ``_gram`` with a cheaper closed form).
The public ``forward``/``adjoint``/``gram`` check shapes and then call them.

Operators are ``torch.nn.Module`` instances so that their constant tensors (masks, coil maps,
geometry tables) registered as buffers follow ``.to(device)``; they hold no trainable state and
never change after construction.

Everything is written with differentiable torch primitives (or an autograd ``Function`` whose
backward is the adjoint), so the vector-Jacobian product of ``A`` is ``A.H`` under PyTorch's
complex convention.
"""

from __future__ import annotations

from collections.abc import Callable
from numbers import Number
from typing import TypeVar

import torch
from torch import Tensor

from mrirecon.core.kinds import kind_keeping
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.core.power import max_eigenvalue
from mrirecon.core import capabilities as caps

Shape = tuple[int | None, ...] | None
C = TypeVar("C")


def _format(shape: Shape) -> str:
    if shape is None:
        return "(...)"
    inner = ", ".join("*" if s is None else str(s) for s in shape)
    return f"(..., {inner})" if inner else "(...)"


def check_trailing_shape(name: str, what: str, x: Tensor, expected: Shape) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``x``'s trailing dims match ``expected``.

    ``None`` entries in ``expected`` match any size; ``expected=None`` matches everything.
    """
    if expected is None:
        return
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: {what} must be a torch.Tensor, got {type(x).__name__}")
    n = len(expected)
    got = tuple(x.shape)
    ok = len(got) >= n and all(e is None or e == g for e, g in zip(expected, got[len(got) - n :]))
    if not ok:
        raise ValueError(f"{name}: {what} must have shape {_format(expected)}, got {got}")


class LinearOperator(torch.nn.Module):
    """Base class of all linear operators ``A: X -> Y``.

    Parameters
    ----------
    domain_shape, range_shape
        Trailing shapes of inputs and outputs (``None`` entries are free). ``None`` disables
        the check on that side.

    Notes
    -----
    ``A(x)`` and ``A.forward(x)`` apply the operator, ``A.H(y)`` / ``A.adjoint(y)`` its adjoint,
    ``A.gram(x)`` the normal operator ``A^H A``. ``A @ B`` composes, ``A @ x`` applies,
    ``A + B``, ``A - B``, ``c * A`` and ``-A`` build new operators.

    A subclass you write must make ``_adjoint`` the conjugate transpose of ``_forward`` and a
    closed-form ``_gram`` equal ``_adjoint(_forward(x))``: test it with
    :func:`~mrirecon.core.check_operator`. The learned models that take any operator (every
    :class:`~mrirecon.models.UnrolledModel`, PnP-DPIR, unrolled EM) and the data-consistency
    blocks run it on an operator holding a class defined outside mrirecon or a
    :class:`FunctionOperator` the first time they meet it
    (:func:`~mrirecon.core.operator_check.check_operator_once`) and refuse a wrong one.
    Tensors a learned model should differentiate may be buffers, parameters, plain attributes
    or captured by a FunctionOperator's functions: the implicit CG backward of the proximal
    data consistency finds them through autograd in an operator holding your code.
    """

    def _apply(self, fn, recurse: bool = True):
        """Dtype moves keep real buffers real and complex ones complex, at the precision asked
        for (:mod:`mrirecon.core.kinds`); device moves are unchanged."""
        return super()._apply(kind_keeping(fn), recurse)

    def __init__(self, domain_shape: Shape = None, range_shape: Shape = None) -> None:
        super().__init__()
        self.domain_shape = None if domain_shape is None else tuple(domain_shape)
        self.range_shape = None if range_shape is None else tuple(range_shape)

    # -- to implement ---------------------------------------------------------------------
    def _forward(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _adjoint(self, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _gram(self, x: Tensor) -> Tensor:
        return self._adjoint(self._forward(x))

    # -- public, shape-checked ------------------------------------------------------------
    @property
    def name(self) -> str:
        return type(self).__name__

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102 - documented on the class
        check_trailing_shape(self.name, "input", x, self.domain_shape)
        return self._forward(x)

    def adjoint(self, y: Tensor) -> Tensor:
        """Apply ``A^H``."""
        check_trailing_shape(f"{self.name}.H", "input", y, self.range_shape)
        return self._adjoint(y)

    def gram(self, x: Tensor) -> Tensor:
        """Apply the normal operator ``A^H A`` (closed form where the subclass has one)."""
        check_trailing_shape(f"{self.name}.gram", "input", x, self.domain_shape)
        return self._gram(x)

    def gram_bound(self, x: Tensor) -> Tensor | None:
        """A closed-form upper bound on ``lambda_max(A^H A) = ||A||_2^2``, or ``None``.

        For images shaped like ``x`` whose leading axes beyond the operator's domain are
        independent systems: the result is shaped like
        :func:`~mrirecon.core.power.max_eigenvalue`'s with that many ``batch_dims``
        (``x.shape[:b] + (1,) * len(domain)``). It costs no operator application, so solvers
        that need a Lipschitz constant (FISTA's step ``1 / L``) use it instead of power
        iterations where it exists; any ``L >= ||A||^2`` keeps their convergence guarantee, an
        under-estimate from a truncated power iteration does not. Operators that know such a
        bound (unitary transforms, sampling, coil maps) override this; the default is ``None``.
        """
        return None

    @property
    def H(self) -> LinearOperator:  # noqa: N802 - mathematical notation
        """The adjoint operator ``A^H`` as a LinearOperator."""
        return AdjointOperator(self)

    # -- algebra --------------------------------------------------------------------------
    def __matmul__(self, other):
        if isinstance(other, LinearOperator):
            return ComposedOperator(self, other)
        if isinstance(other, Tensor):
            return self.forward(other)
        if hasattr(other, "__array__"):  # NumPy took it over and failed inside its matmul
            raise TypeError(f"{self.name} @ x: x must be a torch.Tensor, got "
                            f"{type(other).__module__}.{type(other).__name__} of shape "
                            f"{getattr(other, 'shape', '?')}; convert it, e.g. torch.from_numpy(x)")
        return NotImplemented

    def __add__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator(self, other)
        return NotImplemented

    def __sub__(self, other):
        if isinstance(other, LinearOperator):
            return SumOperator(self, ScaledOperator(other, -1.0))
        return NotImplemented

    def __mul__(self, scalar):
        if isinstance(scalar, (Number, Tensor)) and not isinstance(scalar, bool):
            return ScaledOperator(self, scalar)
        return NotImplemented

    __rmul__ = __mul__

    def __neg__(self):
        return ScaledOperator(self, -1.0)

    def __truediv__(self, scalar):
        if isinstance(scalar, (Number, Tensor)):
            return ScaledOperator(self, 1.0 / scalar)
        return NotImplemented

    # -- capabilities (mrirecon.core.capabilities) ---------------------------------------
    def capability(self, cap: type[C]) -> C | None:
        """The object implementing capability protocol ``cap`` for this operator, or ``None``.

        By default the operator itself when it implements ``cap``; operators built by the
        algebra override this to pass their parts' capabilities on where the maths allows.
        Use :func:`mrirecon.core.capabilities.require_capability` in models.
        """
        if cap is caps.CoilExpandReduce and not isinstance(self, caps.HasSamplingMask):
            return None  # expand/reduce claim A = M E: only with a sampling mask
        return self if isinstance(self, cap) else None

    def __hash__(self) -> int:  # nn.Module equality is identity; keep it hashable
        return id(self)

    def extra_repr(self) -> str:
        return f"domain={_format(self.domain_shape)}, range={_format(self.range_shape)}"

    # -- norms ----------------------------------------------------------------------------
    @accepts_deprecated_names
    def operator_norm(
        self,
        x0: Tensor,
        *,
        iterations: int = 100,
        tolerance: float = 1e-6,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Operator norm ``||A||_2 = sigma_max`` (largest singular value), by power iteration.

        ``sqrt`` of :func:`~mrirecon.core.power.max_eigenvalue` on ``A.gram`` (which returns
        ``lambda_max(A^H A) = sigma_max^2``, the quantity step sizes need).

        Parameters
        ----------
        x0
            A tensor in the domain; only its shape, dtype and device are used (the start vector
            is random, drawn from ``generator``, seed 0 by default). Batch dimensions are
            treated as one vector.
        iterations, tolerance
            Stop after ``iterations`` or when the relative change of the estimate is below
            ``tolerance``.

        Returns
        -------
        Tensor
            0-d real tensor.
        """
        lam = max_eigenvalue(self.gram, x0, iterations=iterations, tolerance=tolerance,
                             generator=generator)
        return torch.sqrt(lam.reshape(()))


def _is_zero(c: Number | Tensor) -> bool:
    """Whether the scalar ``c`` (or any entry of a tensor ``c``) is zero."""
    return bool((c == 0).any()) if isinstance(c, Tensor) else c == 0


def _same_shapes(a: Shape, b: Shape) -> Shape:
    """Merge two trailing-shape specs (``None`` entries are free)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if len(a) >= len(b) else b


def _clash(a: Shape, b: Shape) -> bool:
    """Whether two trailing-shape specs fix different sizes for one axis (aligned at the end)."""
    if a is None or b is None:
        return False
    return any(p is not None and q is not None and p != q for p, q in zip(reversed(a), reversed(b)))


def _check_factor(op: LinearOperator, c: Tensor) -> None:
    """Refuse a tensor factor of ``c * A`` other than a scalar or one value per batch entry.

    ``c * A`` scales ``A``'s output by ``c`` and its adjoint's by ``conj(c)``: only right when
    ``c`` spans no axis of the domain or range. An ``(H, W)`` weight on a SENSE operator gave a
    dot-test error of 0.40, ``(V, D)`` sinogram weights on a projector 0.16, per-coil weights
    ``(C, 1, 1)`` an adjoint of shape ``(C, H, W)``. Accepted: a single value with no more axes
    than the shorter of domain and range, and, when domain and range have as many axes, a
    factor whose trailing axes over them are 1 (``(B, 1, 1)`` for a batch of ``B`` images).
    """
    dom, rng = op.domain_shape, op.range_shape
    if c.ndim == 0 or dom is None or rng is None:
        return  # nothing to say where the operator leaves its shapes open
    short, long_ = sorted((len(dom), len(rng)))
    if c.numel() == 1 and c.ndim <= short:
        return
    if short == long_ and all(n == 1 for n in c.shape[c.ndim - short:]):
        return
    raise ValueError(
        f"c * {op.name}: the factor c of shape {tuple(c.shape)} must be a scalar"
        + (f" or one value per batch entry (trailing axes 1: {(-1,) + (1,) * short})"
           if short == long_ else "")
        + f"; {op.name} maps {_format(dom)} to {_format(rng)}, and c * A scales only its "
        f"output by c and its adjoint's by conj(c), which is not the adjoint for weights over "
        f"these axes: write Diagonal(w) @ A (weights on the output) or A @ Diagonal(w) (on the "
        f"input)")


class AdjointOperator(LinearOperator):
    """``A^H`` as an operator; its adjoint is ``A`` again."""

    def __init__(self, op: LinearOperator) -> None:
        super().__init__(op.range_shape, op.domain_shape)
        self.op = op

    @property
    def name(self) -> str:
        return f"{self.op.name}.H"

    def _forward(self, x: Tensor) -> Tensor:
        return self.op._adjoint(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.op._forward(y)

    @property
    def H(self) -> LinearOperator:  # noqa: N802
        return self.op


class ComposedOperator(LinearOperator):
    """``outer @ inner``: ``x -> outer(inner(x))``."""

    def __init__(self, outer: LinearOperator, inner: LinearOperator) -> None:
        super().__init__(inner.domain_shape, outer.range_shape)
        if (
            outer.domain_shape is not None
            and inner.range_shape is not None
            and len(outer.domain_shape) == len(inner.range_shape)
            and any(
                a is not None and b is not None and a != b
                for a, b in zip(outer.domain_shape, inner.range_shape)
            )
        ):
            raise ValueError(
                f"cannot compose {outer.name} (input {_format(outer.domain_shape)}) with "
                f"{inner.name} (output {_format(inner.range_shape)})"
            )
        self.outer = outer
        self.inner = inner

    @property
    def name(self) -> str:
        return f"({self.outer.name} @ {self.inner.name})"

    def _forward(self, x: Tensor) -> Tensor:
        return self.outer.forward(self.inner.forward(x))

    def capability(self, cap):
        """``A @ B`` has the sampling mask of ``A`` and, when ``A = M E``, the factorisation
        ``M (E B)``; FBP and pseudo-inverse do not pass (no exact rule for a product)."""
        if cap is caps.HasSamplingMask:
            return caps.capability(self.outer, cap)
        if cap is caps.CoilExpandReduce:
            if caps.capability(self.outer, caps.HasSamplingMask) is None:
                return None
            outer = caps.capability(self.outer, cap)
            return None if outer is None else caps.ComposedExpandReduce(outer, self.inner)
        return super().capability(cap)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def _gram(self, x: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.gram(self.inner.forward(x)))

    def gram_bound(self, x: Tensor) -> Tensor | None:
        """``||A B||^2 <= ||A||^2 ||B||^2`` when both parts have a bound (the outer one is
        asked about the inner one's output, which has the shape of ``x`` for the shape-keeping
        parts this is used with: sampling, Fourier, scaling)."""
        inner = self.inner.gram_bound(x)
        outer = None if inner is None else self.outer.gram_bound(x)
        return None if outer is None else inner * outer


class SumOperator(LinearOperator):
    """``A + B`` (both on the same domain and range)."""

    def __init__(self, a: LinearOperator, b: LinearOperator) -> None:
        # was never compared: sense(maps, mask) + Identity() built, and its adjoint returned
        # (C, H, W) for an (H, W) domain
        ad, ar, bd, br = a.domain_shape, a.range_shape, b.domain_shape, b.range_shape
        if _clash(ad, bd) or _clash(ar, br) or (
                None not in (ad, ar, bd, br) and len(ar) - len(ad) != len(br) - len(bd)):
            raise ValueError(f"cannot add {a.name} ({_format(ad)} -> {_format(ar)}) and {b.name} "
                             f"({_format(bd)} -> {_format(br)}): A + B needs the same input and "
                             "output shapes")
        super().__init__(_same_shapes(ad, bd), _same_shapes(ar, br))
        self.a = a
        self.b = b

    @property
    def name(self) -> str:
        return f"({self.a.name} + {self.b.name})"

    def _add(self, p: Tensor, q: Tensor, adjoint: bool) -> Tensor:
        """``p + q`` (the parts' outputs), refused where broadcasting would make up an output:
        their trailing axes (the sum's range, or domain for the adjoint) must agree, and a
        part that declares its shapes must not be widened by one that leaves them open
        (``sense(maps, mask) + Identity()``: ``.H`` returned ``(C, H, W)`` for an ``(H, W)``
        domain). Leading (batch) axes broadcast as before."""
        if p.shape == q.shape:
            return p + q
        side = "domain_shape" if adjoint else "range_shape"
        shape, pa, qb = getattr(self, side), getattr(self.a, side), getattr(self.b, side)
        k = 0 if shape is None else len(shape)
        bad = bool(k) and (p.ndim < k or q.ndim < k or p.shape[-k:] != q.shape[-k:])
        try:
            r = p + q
        except RuntimeError:
            r, bad = None, True
        if not bad and (pa is None) != (qb is None):
            bad = r.shape != (q.shape if pa is None else p.shape)
        if bad:
            h = ".H" if adjoint else ""
            raise ValueError(f"{self.name}{h}: {self.a.name}{h} gives {tuple(p.shape)} and "
                             f"{self.b.name}{h} gives {tuple(q.shape)} for the same input: A + B "
                             "needs parts with the same input and output shapes")
        return r

    def _forward(self, x: Tensor) -> Tensor:
        return self._add(self.a.forward(x), self.b.forward(x), False)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._add(self.a.adjoint(y), self.b.adjoint(y), True)


class ScaledOperator(LinearOperator):
    """``c * A`` for a (possibly complex, possibly tensor) scalar ``c``.

    A tensor ``c`` is a (non-persistent) buffer: it follows ``.to()`` and, when it requires a
    gradient, is among the operator's tensors that
    :class:`~mrirecon.models.blocks.ProximalDC`'s implicit backward differentiates (as a plain
    attribute it was not, and ``dL/dc`` through MoDL's data consistency came out +67.5 where
    finite differences give -48.2).
    """

    def __init__(self, op: LinearOperator, scalar: Number | Tensor) -> None:
        if isinstance(scalar, Tensor):
            _check_factor(op, scalar)
        super().__init__(op.domain_shape, op.range_shape)
        self.op = op
        if isinstance(scalar, Tensor):
            self.register_buffer("scalar", scalar, persistent=False)
        else:
            self.scalar = scalar

    @property
    def name(self) -> str:
        return f"{self.scalar} * {self.op.name}"

    def _conj_scalar(self):
        s = self.scalar
        if isinstance(s, Tensor):
            return s.conj()
        return s.conjugate() if isinstance(s, complex) else s

    def _forward(self, x: Tensor) -> Tensor:
        return self.scalar * self.op.forward(x)

    def capability(self, cap):
        """``c A`` keeps ``A``'s mask; expand / reduce scale by ``c`` / ``conj(c)``; FBP and
        pseudo-inverse by ``1 / c`` (see :mod:`mrirecon.core.capabilities`)."""
        base = caps.capability(self.op, cap)
        if base is None:
            return None
        if cap is caps.HasSamplingMask:
            return base
        if cap is caps.CoilExpandReduce:
            return caps.ScaledExpandReduce(base, self.scalar)
        if cap is caps.HasFBP:
            return caps.ScaledFBP(base, self.scalar)
        if cap is caps.HasPseudoInverse:
            return caps.ScaledPseudoInverse(base, self.scalar)
        if cap is caps.HasImageSupport:  # c A x = 0 <=> A x = 0 for c != 0
            return base if not _is_zero(self.scalar) else None
        return None

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._conj_scalar() * self.op.adjoint(y)

    def _gram(self, x: Tensor) -> Tensor:
        s = self.scalar
        scale = (s.abs() ** 2) if isinstance(s, Tensor) else abs(s) ** 2
        return scale * self.op.gram(x)

    def gram_bound(self, x: Tensor) -> Tensor | None:
        """``|c|^2`` times the bound of ``A`` (a scalar ``c``; a tensor ``c`` by its largest
        modulus, which bounds any broadcast scaling)."""
        base = self.op.gram_bound(x)
        if base is None:
            return None
        s = self.scalar
        scale = float(s.abs().max()) ** 2 if isinstance(s, Tensor) else abs(s) ** 2
        return base * scale


class FunctionOperator(LinearOperator):
    """Wrap a pair of callables (forward, adjoint) as an operator, e.g. for quick experiments."""

    def __init__(
        self,
        forward: Callable[[Tensor], Tensor],
        adjoint: Callable[[Tensor], Tensor],
        domain_shape: Shape = None,
        range_shape: Shape = None,
        gram: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__(domain_shape, range_shape)
        self._f, self._a, self._g = forward, adjoint, gram

    def _forward(self, x: Tensor) -> Tensor:
        return self._f(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return self._a(y)

    def _gram(self, x: Tensor) -> Tensor:
        return self._g(x) if self._g is not None else self._a(self._f(x))


def inner(a: Tensor, b: Tensor) -> Tensor:
    """Complex inner product ``<a, b> = sum(conj(a) * b)`` over all elements."""
    if a.is_complex() or b.is_complex():
        return torch.sum(a.conj() * b)
    return torch.sum(a * b)


def dot_test(op: LinearOperator, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Return ``(<A x, y>, <x, A^H y>)``; equal up to rounding for a correct adjoint."""
    return inner(op(x), y), inner(x, op.H(y))


def relative_adjoint_error(op: LinearOperator, x: Tensor, y: Tensor) -> float:
    """``|<Ax, y> - <x, A^H y>| / (||Ax|| ||y||)``: the dot-test error, scale free."""
    return adjoint_error_of(x, op(x), y, op.H(y))


def adjoint_error_of(x: Tensor, ax: Tensor, y: Tensor, ahy: Tensor) -> float:
    """:func:`relative_adjoint_error` from ``A x`` and ``A^H y`` already computed: ``|<Ax, y> -
    <x, A^H y>|`` over the mean of ``||Ax|| ||y||`` and ``||x|| ||A^H y||``.

    Between a real space and a complex one (a real image in and a real ``A^H y`` out, complex
    k-space in between: :class:`~mrirecon.operators.PhaseConstrained`) ``A`` is only
    real-linear and its adjoint is that of the real inner product ``Re <a, b>``, so the real
    parts are compared: the complex comparison refused that correct adjoint with a 5e-2 "dot
    test". A space is real when both its tensors are (a real ``x`` into a complex-linear
    operator whose ``A^H y`` is complex keeps the complex comparison, which also checks the
    imaginary part of ``A^H y``)."""
    scale = torch.linalg.vector_norm(ax) * torch.linalg.vector_norm(y)
    scale = scale + torch.linalg.vector_norm(x) * torch.linalg.vector_norm(ahy)
    lhs, rhs = inner(ax, y), inner(x, ahy)
    if not (x.is_complex() or ahy.is_complex()) or not (ax.is_complex() or y.is_complex()):
        lhs, rhs = lhs.real, rhs.real
    diff = torch.abs(lhs - rhs)
    return float(diff / (scale / 2 + torch.finfo(scale.dtype).tiny))

