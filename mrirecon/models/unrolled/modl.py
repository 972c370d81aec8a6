"""MoDL (Aggarwal, Mani & Jacob, IEEE TMI 2019): a shared CNN denoiser alternating with a
conjugate-gradient data-consistency step with learned ``lambda``.

``x_0 = A^H y``; for ``k = 1..K``: ``z = D_w(x)``, ``x = (A^H A + lam I)^{-1} (A^H y + lam z)``.

Published defaults: K = 10 unrolls, denoiser of 5 conv layers with 64 features and batch norm
(residual), weights shared across iterations, ``lam`` initialised to 0.05, 10 CG iterations.
Works with any ``LinearOperator`` (MRI ``sense``, CT projectors).

Outside the operator's image support (pixels where every coil map is zero, as ESPIRiT's
``crop`` leaves the background) ``A`` sees nothing, so the data-consistency step returns ``z``
there unchanged: whatever the denoiser put into those pixels survives and feeds the next unroll.
With ``support`` (default) the data-consistency step also constrains the image to 0 there
(:class:`~mrirecon.models.blocks.ProximalDC` ``support``; capability
:class:`~mrirecon.core.HasImageSupport`), which keeps every iterate zero there, as ``A^H y`` is.
Maps without zeros (what the shipped models trained on) make this the identity. Measured with
the 10-unroll ``modl_fastmri_diverse`` on 0.95-cropped ESPIRiT maps: see
``tests/models/test_modl_support.py``.
"""

from __future__ import annotations

from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.backbones.complex import ComplexImageCNN
from mrirecon.models.backbones.dncnn import DnCNN
from mrirecon.models.blocks.cg_dc import ProximalDC
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel


class MoDL(UnrolledModel):
    """MoDL ``model(y, op) -> x``.

    Parameters
    ----------
    iterations
        Number of unrolls ``K`` (10).
    layers, features, batchnorm
        Denoiser depth / width / batch norm (5, 64, True).
    lam
        Initial DC weight (0.05), learned.
    cg_iterations
        CG iterations per DC step (10).
    shared
        One denoiser for all unrolls (MoDL) or one per unroll.
    normalize
        Scale data so that ``max |A^H y| = 1`` per sample; undone on output.
    implicit
        CG backward by a second CG solve (memory independent of CG iterations). That is the
        gradient of the *converged* data-consistency map (:mod:`mrirecon.solvers.implicit`),
        not of the ``cg_iterations`` steps the forward runs: with the shipped 8 CG steps the
        weight gradient of ``modl_brain_sim`` is 20 % from the exact gradient of the computed
        map (cosine 0.98), ``modl_radial_sim`` 0.3 %, the learned-maps model 3.3 %.
        ``implicit=False`` differentiates the iterations themselves (memory grows with them).
    checkpointing
        Recompute each unroll in backward.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    support
        Data consistency constrained to the operator's image support (see the module
        docstring); operators without the capability are left alone.

    Notes
    -----
    With ``batchnorm`` (``modl_brain_sim``) the denoiser's batch norm uses batch statistics in
    ``model.train()``: the output then differs from ``eval()``'s (8.3 % for
    ``modl_brain_sim``), and every forward pass in train mode overwrites the running
    statistics the shipped weights carry, also under ``torch.no_grad()``. For fine-tuning in a
    notebook at batch size 1, keep the batch-norm layers in eval mode (``m.eval()`` for each
    ``torch.nn.BatchNorm2d``) or use a model without batch norm (``modl_fastmri_diverse``).
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 10,
        layers: int = 5,
        features: int = 64,
        batchnorm: bool = True,
        lam: float = 0.05,
        cg_iterations: int = 10,
        shared: bool = True,
        normalize: bool = True,
        implicit: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = None,
        support: bool = True,
    ) -> None:
        super().__init__()
        count = 1 if shared else iterations
        with seeded_init(init_seed):
            self.denoisers = nn.ModuleList(
                [
                    ComplexImageCNN(DnCNN(2, 2, depth=layers, features=features, batchnorm=batchnorm, residual=True))
                    for _ in range(count)
                ]
            )
        self.dc = ProximalDC(lam, cg_iterations=cg_iterations, implicit=implicit, support=support)
        self.iterations, self.shared = iterations, shared
        self.normalize, self.checkpointing = normalize, checkpointing

    def num_steps(self) -> int:
        return self.iterations

    def step(self, i: int, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> Tensor:
        """``x <- (A^H A + lam I)^{-1} (A^H y + lam D(x))``."""
        return self.dc(self.denoisers[0 if self.shared else i](x), y, op, aty)
