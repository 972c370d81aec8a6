"""Deep cascade of CNNs (Schlemper et al., IEEE TMI 2018).

``n_c`` cascades, each a residual CNN of ``n_d`` conv layers (3 x 3, ``n_f`` features, ReLU)
followed by data consistency. Published defaults: 5 cascades of 5 layers with 64 features,
unshared weights. ``dc="kspace"`` (the paper's, for Cartesian sense-style operators) replaces
(noise-free, ``lam=None``) or averages (``(k + lam y) / (1 + lam)``, the paper's ``nu``) the
sampled coil k-space;
``dc="gradient"`` is a learned gradient step :class:`~mrirecon.models.blocks.GradientDC` and
works with any operator (CT).
"""

from __future__ import annotations

from torch import Tensor, nn

from mrirecon.core import CoilExpandReduce, HasSamplingMask, LinearOperator, require_capability
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.blocks.hard_dc import HardProjectionDC
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel


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
        return self.dc.image(x, y, op)


class CascadeNet(UnrolledModel):
    """Deep cascade CNN ``model(y, op) -> x``.

    Parameters
    ----------
    iterations, layers, features
        Cascades ``n_c``, CNN layers ``n_d`` and features ``n_f`` (5, 5, 64).
    dc
        ``"kspace"`` (hard/weighted k-space projection; needs an operator with the
        :class:`~mrirecon.core.HasSamplingMask` and :class:`~mrirecon.core.CoilExpandReduce`
        capabilities: ``sense(maps, mask)``, or ``single_coil(mask)``, whose masks, one per
        slice ``(B, 1, W)`` or ``(B, H, W)`` included, keep to their own slice) or
        ``"gradient"`` (any operator).
    lam
        ``None``: noise-free replacement of sampled k-space; a float: learned noisy-data weight
        (the paper's ``nu``; the parameter keeps the state-dict key ``dc.nu``).
    eta
        Initial gradient step for non-Cartesian operators (CT).
    normalize
        Scale data so that ``max |A^H y| = 1``; undone on output.
    checkpointing
        Recompute each cascade in backward.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 5,
        layers: int = 5,
        features: int = 64,
        dc: str = "kspace",
        lam: float | None = None,
        eta: float = 0.5,
        normalize: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = None,
    ) -> None:
        super().__init__()
        with seeded_init(init_seed):
            self.cascades = nn.ModuleList([CascadeBlock(layers, features, dc, lam, eta) for _ in range(iterations)])
        self.kspace_dc = dc == "kspace"
        self.normalize, self.checkpointing = normalize, checkpointing

    def num_steps(self) -> int:
        return len(self.cascades)

    def prepare(self, y: Tensor, op: LinearOperator):
        if self.kspace_dc:  # checked once, before any work
            hint = "use dc='gradient' for other operators"
            require_capability(op, HasSamplingMask, "CascadeNet(dc='kspace')", hint)
            require_capability(op, CoilExpandReduce, "CascadeNet(dc='kspace')", hint)
        return super().prepare(y, op)

    def step(self, i: int, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """Residual CNN, then data consistency."""
        return self.cascades[i](x, y, op, aty)
