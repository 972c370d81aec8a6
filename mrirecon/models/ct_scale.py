"""The learned CT models' projector scale: ``A / ||A||`` and ``y / ||A||``, whoever calls them.

The learned CT models (:class:`~mrirecon.models.unrolled.primal_dual.LearnedPrimalDual`,
:class:`~mrirecon.models.unrolled.staged_ct.StagedCTNet`) are trained on the unit-norm projector
``A / ||A||`` with data ``y / ||A||`` (:mod:`mrirecon.training.data_ct`); their CNNs see
data-space arrays (``A f``, ``A^H h``) and data-consistency weights whose scale is that of the
unit-norm projector. Given the bare projector instead (``model(y, ct_operator(geometry))``, as a
script would write it) the shipped primal-dual models returned values of 1e9 and more and the
staged one lost 13 dB, silently. :func:`unit_norm_ct` applies the scaling the pipeline does
(:func:`mrirecon.pipeline.stages_ct.reconstruct`) inside the models, bit for bit the same: the
image ``x`` solving ``A x = y`` is unchanged by it.
"""

from __future__ import annotations

from torch import Tensor

from mrirecon.core import LinearOperator
from mrirecon.operators.ct import FanBeam, ParallelBeam, projector_norm


def unit_norm_ct(y: Tensor, op: LinearOperator) -> tuple[Tensor, LinearOperator]:
    """``(y / ||A||, A * (1 / ||A||))`` for a bare CT projector ``A`` at its natural scale (the
    :class:`~mrirecon.operators.ct.ParallelBeam` / :class:`~mrirecon.operators.ct.FanBeam` that
    :func:`~mrirecon.operators.ct.ct_operator` and ``cached_ct_operator`` return), with
    ``||A|| =`` :func:`~mrirecon.operators.ct.projector_norm` of its geometry (cached per
    geometry); ``(y, op)`` unchanged for any other operator: the pipeline's and the trainers'
    scaled projector, a user's own normalised one, an MRI operator.

    The same expressions as the pipeline's, so a model called with the bare projector returns
    exactly what the pipeline returns; differentiable in ``y``.
    """
    if not isinstance(op, (ParallelBeam, FanBeam)):
        return y, op
    norm = projector_norm(op.geometry)
    return y / norm, op * (1.0 / norm)
