"""FBPConvNet (Jin, McCann, Froustey & Unser, IEEE TIP 2017): a residual U-Net applied to a
direct reconstruction.

``x = x_0 + UNet(x_0)`` where ``x_0`` is the operator's pseudo-inverse-like reconstruction: a
user-given ``initial(y, op)``, else ``op.fbp(y)`` or ``op.pseudo_inverse(y)`` when the operator
offers one, else ``op.H(y)`` (for MRI with normalised maps, the zero-filled image). The paper's
U-Net has 64 channels at the first of 5 levels (4 poolings); ours has instance norm like the
fastMRI U-Net.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.unet import Unet
from mrirecon.models.common import batch_scale, require_batch


def initial_reconstruction(y: Tensor, op: LinearOperator) -> Tensor:
    """``op.fbp(y)`` / ``op.pseudo_inverse(y)`` when the operator has one, else ``op.H(y)``."""
    for name in ("fbp", "pseudo_inverse"):
        method = getattr(op, name, None)
        if callable(method):
            return method(y)
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
        ``initial(y, op) -> x_0``; default :func:`initial_reconstruction`.
    normalize
        Divide ``x_0`` by its per-sample maximum magnitude before the U-Net; undone on output.
    """

    def __init__(
        self,
        chans: int = 64,
        num_pools: int = 4,
        drop_prob: float = 0.0,
        initial: Callable[[Tensor, LinearOperator], Tensor] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.cnn = ComplexImageCNN(Unet(2, 2, chans=chans, num_pool_layers=num_pools, drop_prob=drop_prob), residual=True)
        self.initial = initial if initial is not None else initial_reconstruction
        self.normalize = normalize

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)``."""
        require_batch("FBPConvNet", y)
        x0 = self.initial(y, op)
        if not self.normalize:
            return self.cnn(x0)
        scale = batch_scale(x0)
        return self.cnn(x0 / scale) * scale
