"""Deep cascade of CNNs (Schlemper et al., IEEE TMI 2018).

``n_c`` cascades, each a residual CNN of ``n_d`` conv layers (3 x 3, ``n_f`` features, ReLU)
followed by data consistency. Published defaults: 5 cascades of 5 layers with 64 features,
unshared weights. ``dc="kspace"`` (the paper's, for Cartesian sense-style operators) replaces
(noise-free, ``nu=None``) or averages (``(k + nu y) / (1 + nu)``) the sampled coil k-space;
``dc="gradient"`` is a learned gradient step :class:`~mrirecon.models.blocks.GradientDC` and
works with any operator (CT).
"""

from __future__ import annotations

from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.blocks.hard_dc import HardProjectionDC
from mrirecon.models.common import normalized_data, require_batch, run_stage


def _is_cartesian(op: LinearOperator) -> bool:
    return all(hasattr(op, attr) for attr in ("mask", "expand", "reduce"))


class CascadeBlock(nn.Module):
    """Residual CNN then data consistency."""

    def __init__(self, layers: int, features: int, dc: str, nu: float | None, eta: float) -> None:
        super().__init__()
        if dc not in ("kspace", "gradient"):
            raise ValueError(f"CascadeNet: dc must be 'kspace' or 'gradient', got {dc!r}")
        self.cnn = ComplexImageCNN(DnCNN(2, 2, depth=layers, features=features, batchnorm=False, residual=True))
        self.dc = HardProjectionDC(nu, learnable=nu is not None) if dc == "kspace" else GradientDC(eta)

    def forward(self, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """Images ``x`` ``(B, H, W)`` -> next images."""
        x = self.cnn(x)
        if isinstance(self.dc, GradientDC):
            return self.dc(x, y, op, aty)
        if not _is_cartesian(op):
            raise TypeError(
                f"CascadeNet(dc='kspace') needs a Cartesian sense-style operator, got "
                f"{getattr(op, 'name', type(op).__name__)}; use dc='gradient' for other operators"
            )
        return self.dc.image(x, y, op)


class CascadeNet(nn.Module):
    """Deep cascade CNN ``model(y, op) -> x``.

    Parameters
    ----------
    num_cascades, layers, features
        ``n_c``, ``n_d``, ``n_f`` (5, 5, 64).
    dc
        ``"kspace"`` (hard/weighted k-space projection) or ``"gradient"`` (any operator).
    nu
        ``None``: noise-free replacement of sampled k-space; a float: learned noisy-data weight.
    eta
        Initial gradient step for non-Cartesian operators (CT).
    normalize
        Scale data so that ``max |A^H y| = 1``; undone on output.
    checkpointing
        Recompute each cascade in backward.
    """

    def __init__(
        self,
        num_cascades: int = 5,
        layers: int = 5,
        features: int = 64,
        dc: str = "kspace",
        nu: float | None = None,
        eta: float = 0.5,
        normalize: bool = True,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.cascades = nn.ModuleList([CascadeBlock(layers, features, dc, nu, eta) for _ in range(num_cascades)])
        self.normalize, self.checkpointing = normalize, checkpointing

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)`` starting from ``A^H y``."""
        require_batch("CascadeNet", y)
        if self.normalize:
            y, aty, scale = normalized_data(y, op)
        else:
            aty, scale = op.H(y), None
        x = aty
        for cascade in self.cascades:
            x = run_stage(cascade, x, y, op, aty, checkpointing=self.checkpointing)
        return x * scale if scale is not None else x
