"""Non-Cartesian E2E-VarNet-style cascade with image-domain data consistency via the gram.

E2E-VarNet (Sriram et al. 2020) updates multi-coil k-space, ``k <- k - eta M (k - y) + F S R(S^H F^H k)``,
which needs a Cartesian mask. On a trajectory the same gradient step lives in the image
domain, where the normal operator is cheap (Toeplitz embedding for ``nufft_sense``)::

    x <- x - eta_k / L (A^H A x - A^H y) - R_k(x)

with ``R_k`` a NormUnet per cascade and ``L`` the largest eigenvalue of ``A^H A`` per sample (a
few power iterations, so ``eta`` has the same meaning for every trajectory and density).
Works with any ``LinearOperator`` (Cartesian ``sense`` included).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.common import normalized_data, require_batch, run_stage
from mrirecon.solvers import max_eigenvalue


class GramVarNet(nn.Module):
    """``model(y, op) -> x``; see the module docstring.

    Parameters
    ----------
    num_cascades
        Number of cascades (8).
    chans, pools
        NormUnet width and depth per cascade (18, 4).
    eta
        Initial (learned) relative step size.
    power_iterations
        Power iterations for ``L``.
    checkpointing
        Recompute each cascade in backward.
    """

    def __init__(self, num_cascades: int = 8, chans: int = 18, pools: int = 4, eta: float = 1.0,
                 power_iterations: int = 10, checkpointing: bool = False) -> None:
        super().__init__()
        self.regularizers = nn.ModuleList([NormUnet(chans, pools) for _ in range(num_cascades)])
        self.eta = nn.Parameter(torch.full((num_cascades,), float(eta)))
        self.power_iterations = int(power_iterations)
        self.checkpointing = checkpointing

    def _cascade(self, x: Tensor, aty: Tensor, op: LinearOperator, step: Tensor, k: int) -> Tensor:
        dc = step * self.eta[k] * (op.gram(x) - aty)
        return x - dc - self.regularizers[k](x.unsqueeze(1)).squeeze(1)

    def forward(self, y: Tensor, op: LinearOperator) -> Tensor:
        """Data ``y`` ``(B, ...)`` -> image ``(B, H, W)`` starting from ``A^H y / L``."""
        require_batch("GramVarNet", y)
        y, aty, scale = normalized_data(y, op)
        with torch.no_grad():
            lmax = max_eigenvalue(op.gram, aty, batch_dims=1, iterations=self.power_iterations)
        step = (1.0 / lmax.clamp_min(1e-12)).reshape(-1, 1, 1).to(aty.real.dtype)
        # start after one gradient step from zero, x = A^H y / L: on the image's scale, whereas
        # A^H y itself is L times too bright where the sampling is dense (radial centre)
        x = step * aty
        for k in range(len(self.regularizers)):
            x = run_stage(self._cascade, x, aty, op, step, k, checkpointing=self.checkpointing)
        return x * scale
