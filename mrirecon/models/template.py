"""The one skeleton of iterative models: check the batch, normalise, iterate, rescale.

:class:`UnrolledModel` owns ``forward``; a model supplies only what differs:

- :meth:`~UnrolledModel.num_steps` and :meth:`~UnrolledModel.step` (one unrolled iteration,
  called as ``step(i, state, y, op, aty)``);
- optionally :meth:`~UnrolledModel.initial_state` (default ``A^H y``) and
  :meth:`~UnrolledModel.output` (default: the state is the image).

``forward(y, op)``:

1. ``y`` and ``op`` pass :func:`~mrirecon.models.input_checks.check_model_input` (a tensor of
   finite values, of the operator's trailing shape, complex for an MRI operator and real for a
   CT one, of the weights' precision, sampled with the operator's mask) and ``y`` must have a
   leading batch axis (``ValueError`` naming the model otherwise); an operator holding a user's
   code is tested once (:func:`~mrirecon.core.operator_check.check_operator_once`: a wrong
   adjoint or gram raises ``ValueError`` naming it; mrirecon's own operators cost a set lookup);
2. with ``normalize`` the data are divided per sample by ``s = max |A^H y|`` (see
   :func:`~mrirecon.models.common.normalized_data`), so thresholds and activations of fixed
   range see the same scale whatever the scanner's units;
3. ``state = initial_state(...)``, then ``state = step(i, state, ...)`` for every step, each
   recomputed in backward when ``checkpointing`` is set;
4. the image ``output(state)`` is multiplied by ``s`` again (by 0 for a sample whose ``A^H y``
   is all zero: :func:`~mrirecon.models.common.zero_blank`; a model built with
   ``normalize=False`` has no ``s`` and returns what its network makes of a blank sample).

Because ``A`` is linear and ``s`` scales with the data, a normalised model is scale equivariant:
``model(c y, op) = c model(y, op)`` for ``c > 0`` (up to rounding), for any ``c`` that keeps the
data finite and normal (1e-30 .. 1e30 on float32 data: ``s`` has no floor). ``s`` is
differentiable in ``y`` (the gradient w.r.t. the data is that of ``s f(y / s)``) and in coil
maps that require a gradient, not in the weights (see
:func:`~mrirecon.models.common.sample_scale`); a model inside
:class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel` computes it on the detached
network-made maps (``maps_scale_stop_gradient``, :func:`~mrirecon.models.common.scale_operator`).

Output contract: every reconstruction model returns the image ``(B, H, W)`` in the data's
units, complex for MRI and real for CT; the magnitude (or, for VarNet, the root-sum-of-squares
of its coil images) is a separate step, see :mod:`mrirecon.models.output`.
:func:`~mrirecon.models.reconstruct_slices` holds any ``model(y, op)`` to it: ``(1, *domain)``
for one slice of data, the data's dtype, finite values, ``y`` left unmodified.

Auxiliary training losses: a model whose published training adds a term of its own (ISTA-Net+'s
symmetry constraint) leaves it, weighted, in ``model.auxiliary_loss`` after a training forward
(``None`` otherwise); :func:`take_auxiliary_loss` sums those of every submodule (a model inside
``LearnedMapsModel`` or DistributedDataParallel too) and clears them, and the trainer adds the sum
to its loss (image or self-supervised). Cleared, the model can be copied again (``deepcopy`` of a
tensor inside a graph fails), and ``__getstate__`` leaves the term out of copies and pickles.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.operator_check import check_operator_once
from mrirecon.models.common import normalized_data, run_stage, zero_blank
from mrirecon.models.input_checks import check_model_input

State = Any  # a tensor, or a tuple of tensors for models with auxiliary variables


class UnrolledModel(nn.Module):
    """Base class of the unrolled / plug-and-play models (see the module docstring).

    Subclasses set ``self.normalize`` and ``self.checkpointing`` (both default ``False`` at
    class level, so models without them keep the plain behaviour).
    """

    normalize: bool = False
    checkpointing: bool = False
    #: the scale on detached coil maps, for maps a wrapping network makes
    #: (:func:`~mrirecon.models.common.scale_operator`; set by ``LearnedMapsModel``)
    maps_scale_stop_gradient: bool = False

    # -- what a model implements --------------------------------------------------------
    def num_steps(self) -> int:
        """Number of unrolled steps."""
        raise NotImplementedError

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor) -> State:
        """The state before the first step; default the (normalised) ``A^H y``."""
        return aty

    def step(self, i: int, state: State, y: Tensor, op: LinearOperator, aty: Tensor) -> State:
        """Step ``i`` of the iteration; ``y`` and ``aty`` are normalised when ``normalize``."""
        raise NotImplementedError

    def output(self, state: State) -> Tensor:
        """The image of the final state; default: the state is the image."""
        return state

    # -- the template -------------------------------------------------------------------
    def prepare(self, y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor, Tensor | None]:
        """``(y / s, A^H y / s, s)`` with ``normalize``, else ``(y, A^H y, None)``."""
        shape = op.range_shape if isinstance(op, LinearOperator) else None
        rank = len(shape) if shape is not None else 1  # (C, H, W) k-space failed deep inside
        check_model_input(type(self).__name__, self, y, op, batch_ndim=rank + 1)
        check_operator_once(op, lambda: op.H(y))
        if self.normalize:
            return normalized_data(y, op, stop_maps_gradient=self.maps_scale_stop_gradient)
        return y, op.H(y), None

    def iterate(self, y: Tensor, op: LinearOperator) -> tuple[State, Tensor | None]:
        """Run all steps; returns the final state and the scale ``s`` to multiply the output by
        (or ``None``): ``prepare``'s, with 0 for a sample whose ``A^H y`` is all zero."""
        y, aty, scale = self.prepare(y, op)
        state = self.run_steps(self.initial_state(y, op, aty), y, op, aty)
        return state, None if scale is None else zero_blank(scale, aty)

    def run_steps(self, state: State, y: Tensor, op: LinearOperator, aty: Tensor) -> State:
        """Every step from ``state`` (each checkpointed with ``checkpointing``)."""
        for i in range(self.num_steps()):
            state = run_stage(self.step, i, state, y, op, aty, checkpointing=self.checkpointing)
        return state

    @staticmethod
    def unscale(x: Tensor, scale: Tensor | None) -> Tensor:
        """Undo the normalisation: ``x * s`` (or ``x``)."""
        return x * scale if scale is not None else x

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)`` in the units of ``y``."""
        state, scale = self.iterate(y, op)
        # a set lookup after prepare's check; the test itself for a model whose iterate does
        # not call prepare (the FBP-started primal-dual net), after its input checks
        check_operator_once(op, lambda: op.H(y))
        return self.unscale(self.output(state), scale)


def take_auxiliary_loss(model: nn.Module) -> Tensor | float:
    """The sum of the loss terms that ``model``'s submodules' last training forward left
    (``auxiliary_loss``: ISTA-Net+'s symmetry, inside a wrapper or DistributedDataParallel
    too), else 0; each is cleared (``None``) once taken."""
    total: Tensor | float = 0.0
    for m in model.modules():
        aux = m.__dict__.get("auxiliary_loss")
        if aux is not None:
            total = total + aux
            m.auxiliary_loss = None
    return total
