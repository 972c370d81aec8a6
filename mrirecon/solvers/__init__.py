"""Solvers are functions over callables: the same ``cg`` serves CG-SENSE, MoDL and ADMM.

* :func:`cg` - conjugate gradients for Hermitian positive (semi-)definite systems;
* :func:`cg_solve` - the same, differentiable by implicit differentiation (MoDL);
* :func:`fista` - accelerated proximal gradient;
* :func:`admm` - ADMM for ``f(x) + g(K x)`` (with :func:`least_squares_x_update`);
* :func:`pdhg` - Chambolle-Pock primal-dual for ``sum_i f_i(K_i x) + g(x)``;
* :func:`max_eigenvalue` - batched power iteration for step sizes (``lambda_max(A^H A)``, from
  :mod:`mrirecon.core.power`);
* :mod:`~mrirecon.solvers.prox` - proximal maps and projections;
* :func:`convergence_record` - collect the reports of solves that stopped at their iteration
  limit short of a ``tolerance > 0`` (logged as warnings when none is active;
  :mod:`~mrirecon.solvers.convergence`).
"""

from mrirecon.core.power import max_eigenvalue  # the one power iteration lives in core
from mrirecon.solvers.admm import admm, least_squares_x_update
from mrirecon.solvers.cg import cg
from mrirecon.solvers.convergence import ConvergenceRecord, convergence_record
from mrirecon.solvers.fista import fista
from mrirecon.solvers.implicit import cg_solve
from mrirecon.solvers.pdhg import diagonal_preconditioners, pdhg, pdhg_step_sizes
from mrirecon.solvers.prox import (
    conjugate_prox,
    group_soft_threshold,
    project_box,
    project_group_l2_ball,
    project_l2_ball,
    project_nonnegative,
    prox_l2_squared,
    soft_threshold,
)

__all__ = [
    "ConvergenceRecord",
    "admm",
    "cg",
    "cg_solve",
    "conjugate_prox",
    "convergence_record",
    "diagonal_preconditioners",
    "fista",
    "group_soft_threshold",
    "least_squares_x_update",
    "max_eigenvalue",
    "pdhg",
    "pdhg_step_sizes",
    "project_box",
    "project_group_l2_ball",
    "project_l2_ball",
    "project_nonnegative",
    "prox_l2_squared",
    "soft_threshold",
]
