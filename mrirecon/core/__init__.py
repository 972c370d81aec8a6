"""Operator core: the LinearOperator base, its algebra and the dot-test helpers."""

from mrirecon.core.operator import (
    AdjointOperator,
    ComposedOperator,
    FunctionOperator,
    LinearOperator,
    ScaledOperator,
    SumOperator,
    check_trailing_shape,
    dot_test,
    inner,
    relative_adjoint_error,
)

__all__ = [
    "AdjointOperator",
    "ComposedOperator",
    "FunctionOperator",
    "LinearOperator",
    "ScaledOperator",
    "SumOperator",
    "check_trailing_shape",
    "dot_test",
    "inner",
    "relative_adjoint_error",
]
