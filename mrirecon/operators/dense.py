"""A dense matrix as a :class:`~mrirecon.core.LinearOperator` (compressed-sensing test problems,
LDAMP's i.i.d. Gaussian measurements)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mrirecon.core import LinearOperator


class DenseMatrix(LinearOperator):
    """``x (..., *domain_shape) -> M x.flatten() (..., m)`` for a dense ``(m, n)`` matrix.

    Parameters
    ----------
    matrix
        ``(m, n)`` real or complex matrix, ``n = prod(domain_shape)``.
    domain_shape
        Trailing shape of the inputs (e.g. ``(H, W)`` images); default ``(n,)``.
    iid
        Whether the entries are i.i.d. (sub-)Gaussian with variance ``1/m`` (the AMP
        assumption; set by :func:`gaussian_matrix`).
    """

    def __init__(self, matrix: Tensor, domain_shape: tuple[int, ...] | None = None, *,
                 iid: bool = False) -> None:
        if matrix.ndim != 2:
            raise ValueError(f"DenseMatrix: matrix must be 2-D, got shape {tuple(matrix.shape)}")
        m, n = matrix.shape
        shape = (n,) if domain_shape is None else tuple(int(s) for s in domain_shape)
        if math.prod(shape) != n:
            raise ValueError(f"DenseMatrix: domain_shape {shape} has {math.prod(shape)} elements, "
                             f"the matrix has {n} columns")
        super().__init__(shape, (m,))
        self.register_buffer("matrix", matrix)
        self.iid = bool(iid)

    def _common(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """``v`` and the matrix in their promoted dtype. Casting the matrix to ``v``'s dtype
        dropped a complex matrix's imaginary part for a real input (error 0.84, with only
        torch's once-per-process warning) and rounded a float64 matrix to a float32 input."""
        dtype = torch.promote_types(v.dtype, self.matrix.dtype)
        return v.to(dtype), self.matrix.to(dtype)

    def _forward(self, x: Tensor) -> Tensor:
        lead = x.shape[: x.ndim - len(self.domain_shape)]
        x, matrix = self._common(x)
        return x.reshape(*lead, -1) @ matrix.T

    def _adjoint(self, y: Tensor) -> Tensor:
        y, matrix = self._common(y)
        return (y @ matrix.conj()).reshape(*y.shape[:-1], *self.domain_shape)


def gaussian_matrix(
    m: int, domain_shape: tuple[int, ...], *, generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
) -> DenseMatrix:
    """A ``DenseMatrix`` with i.i.d. ``N(0, 1/m)`` real entries (unit-norm columns on average)."""
    n = math.prod(domain_shape)
    matrix = torch.randn(m, n, generator=generator, dtype=torch.float64) / math.sqrt(m)
    return DenseMatrix(matrix.to(dtype), domain_shape, iid=True)
