"""Operators of second-order total generalised variation (TGV², Bredies, Kunisch & Pock 2010),
used by :func:`mrirecon.recon.tgv`.

* :class:`SymmetrizedGradient` ``E``: vector field ``(..., 2, H, W)`` -> symmetric matrix field
  ``(..., 3, H, W)``, from backward differences ``D^- = -(D^+)^H``;
* :class:`TGVBlock`: the three blocks ``[x, grad x - v, E v]`` of PDHG on the stacked primal
  variable ``u = (x, v_H, v_W)``;
* :class:`TGVSplit`: the ``grad x - v`` and ``E v`` blocks (and ``x``) stacked, the split
  ``z = K u`` of ADMM.

``absolute=True`` on the first two gives the element-wise absolute value of its matrix, for the
Pock-Chambolle diagonal preconditioners. The difference kernels (signed and ``|D|``) are those of
:mod:`mrirecon.functional.finite_differences`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.functional import forward_difference, forward_difference_adjoint

#: Frobenius weight of the off-diagonal entry in the 3-component storage of a symmetric matrix
SQRT2 = math.sqrt(2.0)


def _bwd(v: Tensor, dim: int, absolute: bool) -> Tensor:
    """Backward difference ``D^- = -(D^+)^H``: ``v[i] - v[i-1]`` with ``v[-1] = v[N-1] = 0``
    (``|D^-| = |D^+|^T``)."""
    if absolute:
        return forward_difference_adjoint(v, dim, absolute=True)
    return -forward_difference_adjoint(v, dim)


def _bwd_adj(w: Tensor, dim: int, absolute: bool) -> Tensor:
    """Adjoint of :func:`_bwd` (``-D^+``; ``|D^+|`` for the absolute value)."""
    if absolute:
        return forward_difference(w, dim, absolute=True)
    return -forward_difference(w, dim)


class SymmetrizedGradient(LinearOperator):
    """Symmetrised gradient ``E v = (D^- v + (D^- v)^T) / 2``: ``(..., 2, H, W) -> (..., 3, H, W)``.

    ``v = (v_H, v_W)`` is a vector field, ``D^-`` backward differences (the negative adjoint of
    the forward differences of :class:`~mrirecon.operators.FiniteDifference`). The symmetric
    2x2 result is stored as ``(E_HH, E_WW, sqrt(2) E_HW)`` so that the Euclidean norm of the
    three components is the Frobenius norm of the matrix and the standard inner product is the
    Frobenius one; the adjoint is then the plain Euclidean adjoint (``-div`` of the symmetric
    field).

    Parameters
    ----------
    absolute
        Apply ``|E|`` (the element-wise absolute value of the matrix) instead, for the diagonal
        preconditioners of PDHG.
    """

    def __init__(self, absolute: bool = False) -> None:
        super().__init__((2, None, None), (3, None, None))
        self.absolute = absolute

    def _forward(self, v: Tensor) -> Tensor:
        a = self.absolute
        v_h, v_w = v[..., 0, :, :], v[..., 1, :, :]
        off = (_bwd(v_h, -1, a) + _bwd(v_w, -2, a)) / SQRT2  # sqrt(2) * (d_W v_H + d_H v_W) / 2
        return torch.stack([_bwd(v_h, -2, a), _bwd(v_w, -1, a), off], dim=-3)

    def _adjoint(self, w: Tensor) -> Tensor:
        a = self.absolute
        w_hh, w_ww, w_off = w[..., 0, :, :], w[..., 1, :, :], w[..., 2, :, :] / SQRT2
        v_h = _bwd_adj(w_hh, -2, a) + _bwd_adj(w_off, -1, a)
        v_w = _bwd_adj(w_ww, -1, a) + _bwd_adj(w_off, -2, a)
        return torch.stack([v_h, v_w], dim=-3)


class TGVBlock(LinearOperator):
    """One regulariser block of TGV² on the stacked ``u = (x, v_H, v_W)`` ``(..., 3, H, W)``.

    * ``kind="image"``: ``u -> x`` ``(..., H, W)`` (compose with ``A`` for the data block);
    * ``kind="grad"``: ``u -> grad x - v`` ``(..., 2, H, W)``;
    * ``kind="sym"``: ``u -> E v`` ``(..., 3, H, W)``.

    ``absolute=True`` applies the element-wise absolute value of the block's matrix (diagonal
    preconditioning).
    """

    KINDS = ("image", "grad", "sym")

    def __init__(self, kind: str, absolute: bool = False) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"TGVBlock: kind must be one of {self.KINDS}, got {kind!r}")
        out = {"image": (None, None), "grad": (2, None, None), "sym": (3, None, None)}[kind]
        super().__init__((3, None, None), out)
        self.kind, self.absolute = kind, absolute
        self.sym = SymmetrizedGradient(absolute)

    @property
    def name(self) -> str:
        return f"TGVBlock[{self.kind}]"

    def _forward(self, u: Tensor) -> Tensor:
        if self.kind == "image":
            return u[..., 0, :, :]
        if self.kind == "sym":
            return self.sym(u[..., 1:, :, :])
        x, a = u[..., 0, :, :], self.absolute
        grad = torch.stack([forward_difference(x, -2, absolute=a),
                            forward_difference(x, -1, absolute=a)], dim=-3)
        return grad + u[..., 1:, :, :] if a else grad - u[..., 1:, :, :]

    def _adjoint(self, p: Tensor) -> Tensor:
        if self.kind == "image":
            zeros = torch.zeros_like(p).unsqueeze(-3).expand(*p.shape[:-2], 2, *p.shape[-2:])
            return torch.cat([p.unsqueeze(-3), zeros], dim=-3)
        if self.kind == "sym":
            v = self.sym.H(p)
            return torch.cat([torch.zeros_like(v[..., :1, :, :]), v], dim=-3)
        a = self.absolute
        x = (forward_difference_adjoint(p[..., 0, :, :], -2, absolute=a)
             + forward_difference_adjoint(p[..., 1, :, :], -1, absolute=a))
        return torch.cat([x.unsqueeze(-3), p if a else -p], dim=-3)


class TGVSplit(LinearOperator):
    """The ADMM split of TGV² on ``u = (x, v_H, v_W)`` ``(..., 3, H, W)``: ``u -> (grad x - v,
    E v)`` ``(..., 5, H, W)``, and with ``image=True`` also ``x`` ``(..., 6, H, W)`` (for the
    constraint ``x >= 0``). The rows are those of :class:`TGVBlock` ``"grad"``, ``"sym"`` and
    ``"image"`` stacked on axis ``-3``, so ``K^H K`` is the sum of their normal operators."""

    def __init__(self, image: bool = False) -> None:
        super().__init__((3, None, None), (6 if image else 5, None, None))
        self.image = image
        self.grad, self.sym, self.copy = TGVBlock("grad"), TGVBlock("sym"), TGVBlock("image")

    def _forward(self, u: Tensor) -> Tensor:
        parts = [self.grad(u), self.sym(u)] + ([u[..., :1, :, :]] if self.image else [])
        return torch.cat(parts, dim=-3)

    def _adjoint(self, z: Tensor) -> Tensor:
        u = self.grad.H(z[..., :2, :, :]) + self.sym.H(z[..., 2:5, :, :])
        return u + self.copy.H(z[..., 5, :, :]) if self.image else u
