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
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel
from mrirecon.solvers import max_eigenvalue


class GramVarNet(UnrolledModel):
    """``model(y, op) -> x``; see the module docstring.

    Parameters
    ----------
    iterations
        Number of cascades (8).
    chans, pools
        NormUnet width and depth per cascade (18, 4).
    eta
        Initial (learned) relative step size.
    power_iterations
        Power iterations for ``L``.
    checkpointing
        Recompute each cascade in backward.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    """

    normalize = True  # always: the NormUnets and eta assume max |A^H y| = 1

    @accepts_deprecated_names
    def __init__(self, iterations: int = 8, chans: int = 18, pools: int = 4, eta: float = 1.0,
                 power_iterations: int = 10, checkpointing: bool = False,
                 init_seed: int | None = None) -> None:
        super().__init__()
        with seeded_init(init_seed):
            self.regularizers = nn.ModuleList([NormUnet(chans, pools) for _ in range(iterations)])
        self.eta = nn.Parameter(torch.full((iterations,), float(eta)))
        self.power_iterations = int(power_iterations)
        self.checkpointing = checkpointing

    def num_steps(self) -> int:
        return len(self.regularizers)

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, 1 / L)`` with ``x = A^H y / L``: one gradient step from zero, on the image's
        scale, whereas ``A^H y`` itself is ``L`` times too bright where the sampling is dense
        (radial centre).

        ``L`` is differentiable in coil maps that require a gradient (the ``power_iterations``
        are recorded then: about 5-9 % more saved tensors and 2-8 % more time for a training
        step through network-made or user-optimised maps; nothing otherwise), so the gradient
        w.r.t. the maps is that of the computed map. Was: ``L`` under ``no_grad``, 0.7-2.3 %
        off finite differences."""
        lmax = max_eigenvalue(op.gram, aty, batch_dims=1, iterations=self.power_iterations,
                              differentiable=True)
        step = (1.0 / lmax.clamp_min(1e-12)).reshape(-1, 1, 1).to(aty.real.dtype)
        return step * aty, step

    def step(self, k: int, state: tuple[Tensor, Tensor], y: Tensor, op: LinearOperator,
             aty: Tensor) -> tuple[Tensor, Tensor]:
        x, step = state
        dc = step * self.eta[k] * (op.gram(x) - aty)
        return x - dc - self.regularizers[k](x.unsqueeze(1)).squeeze(1), step

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        return state[0]
