"""Operator core: the LinearOperator base, its algebra, typed capabilities, power iteration and
the dot-test helpers (``check_operator``: adjoint and gram of an operator you wrote)."""

from mrirecon.core.capabilities import (
    CoilExpandReduce,
    HasFBP,
    HasImageSupport,
    HasPseudoInverse,
    HasSamplingMask,
    capability,
    require_capability,
)
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
from mrirecon.core.operator_check import check_operator
from mrirecon.core.power import max_eigenvalue

__all__ = [
    "CoilExpandReduce",
    "HasFBP",
    "HasImageSupport",
    "HasPseudoInverse",
    "HasSamplingMask",
    "capability",
    "require_capability",
    "AdjointOperator",
    "ComposedOperator",
    "FunctionOperator",
    "LinearOperator",
    "ScaledOperator",
    "SumOperator",
    "check_operator",
    "check_trailing_shape",
    "dot_test",
    "inner",
    "max_eigenvalue",
    "relative_adjoint_error",
]
