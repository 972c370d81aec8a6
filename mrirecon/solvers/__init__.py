"""Solvers are functions over callables: the same ``cg`` serves CG-SENSE, MoDL and ADMM."""

from mrirecon.solvers.cg import cg

__all__ = ["cg"]
