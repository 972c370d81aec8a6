"""FBPConvNet (Jin, McCann, Froustey & Unser, IEEE TIP 2017): a residual U-Net applied to a
direct reconstruction.

``x = x_0 + UNet(x_0)`` where ``x_0`` is a direct reconstruction chosen by ``initial``:

- ``"auto"`` (default): the operator's filtered back-projection when it has the
  :class:`~mrirecon.core.HasFBP` capability (CT projectors, also after ``op * c``), else its
  :class:`~mrirecon.core.HasPseudoInverse`, else ``A^H y`` (for MRI with maps of unit RSS, the
  zero-filled image);
- ``"fbp"`` / ``"pseudo_inverse"``: that capability, a ``TypeError`` naming the operator when
  it lacks it; ``"adjoint"``: ``A^H y``;
- a callable ``initial(y, op)``.

The paper's U-Net has 64 channels at the first of 5 levels (4 poolings); ours has instance norm
like the fastMRI U-Net.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mrirecon.core import HasFBP, HasPseudoInverse, LinearOperator, capability, require_capability
from mrirecon.core.operator_check import check_operator_once
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.unet import Unet
from mrirecon.models.common import batch_scale, zero_blank
from mrirecon.models.input_checks import check_model_input
from mrirecon.models.init import seeded_init

INITIAL = ("auto", "fbp", "pseudo_inverse", "adjoint")


def initial_reconstruction(y: Tensor, op: LinearOperator, kind: str = "auto") -> Tensor:
    """The direct reconstruction ``x_0`` of ``kind`` (see the module docstring)."""
    if kind == "fbp":
        return require_capability(op, HasFBP, "FBPConvNet(initial='fbp')").fbp(y)
    if kind == "pseudo_inverse":
        return require_capability(op, HasPseudoInverse, "FBPConvNet(initial='pseudo_inverse')").pseudo_inverse(y)
    if kind == "adjoint":
        return op.H(y)
    if kind != "auto":
        raise ValueError(f"FBPConvNet: initial must be one of {', '.join(INITIAL)} or a callable, got {kind!r}")
    fbp = capability(op, HasFBP)
    if fbp is not None:
        return fbp.fbp(y)
    pinv = capability(op, HasPseudoInverse)
    if pinv is not None:
        return pinv.pseudo_inverse(y)
    return op.H(y)


class FBPConvNet(nn.Module):
    """Post-processing U-Net ``model(y, op) -> x``.

    Parameters
    ----------
    chans, num_pools
        U-Net size (64, 4).
    drop_prob
        U-Net dropout.
    initial
        ``"auto"``, ``"fbp"``, ``"pseudo_inverse"``, ``"adjoint"`` or a callable
        ``initial(y, op) -> x_0`` (module docstring).
    normalize
        Divide ``x_0`` by its per-sample maximum magnitude before the U-Net; undone on output
        (an all-zero ``x_0`` gives 0).
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    """

    def __init__(
        self,
        chans: int = 64,
        num_pools: int = 4,
        drop_prob: float = 0.0,
        initial: str | Callable[[Tensor, LinearOperator], Tensor] = "auto",
        normalize: bool = True,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        with seeded_init(init_seed):
            self.cnn = ComplexImageCNN(Unet(2, 2, chans=chans, num_pool_layers=num_pools, drop_prob=drop_prob),
                                       residual=True)
        if initial is None:
            initial = "auto"
        if isinstance(initial, str) and initial not in INITIAL:
            raise ValueError(f"FBPConvNet: initial must be one of {', '.join(INITIAL)} or a callable, "
                             f"got {initial!r}")
        self.initial = initial
        self.normalize = normalize

    def start(self, y: Tensor, op: LinearOperator) -> Tensor:
        """The U-Net's input ``x_0`` (before normalisation)."""
        if callable(self.initial):
            return self.initial(y, op)
        return initial_reconstruction(y, op, self.initial)

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)``."""
        check_model_input("FBPConvNet", self, y, op, batch_ndim=2)
        check_operator_once(op, lambda: op.H(y))  # a user's operator, once; ours: a lookup
        x0 = self.start(y, op)
        if not self.normalize:
            return self.cnn(x0)
        scale = batch_scale(x0)
        return zero_blank(self.cnn(x0 / scale) * scale, x0)
