"""ISTA-Net+ (Zhang & Ghanem, CVPR 2018): unrolled ISTA with learned transforms.

Phase ``k``:

    r = x - rho_k A^H (A x - y)                      (gradient step, learned rho_k)
    x = r + G( F~( soft(F(D(r)), theta_k) ) )        (learned D, F, F~, G; soft threshold)

``F`` and ``F~`` are conv-ReLU-conv transforms; the symmetry constraint ``F~(F(.)) = I`` enters
the training loss: a training forward leaves ``symmetry_weight`` times it in
``model.auxiliary_loss``, which :class:`~mrirecon.training.trainer.Trainer` takes and adds to its
loss (:func:`~mrirecon.models.template.take_auxiliary_loss`; ``mrirecon train`` trained without it
before 2026-12-07), and :meth:`ISTANetPlus.forward_with_symmetry` returns it unweighted. A loop of
your own adds ``take_auxiliary_loss(model)`` to its loss likewise. Published
defaults: 9 phases, 32 features, ``rho`` 0.5, ``theta`` 0.01, symmetry weight 0.01. Works with any
``LinearOperator``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.names import accepts_deprecated_names
from mrirecon.models.backbones.complex import (
    flatten_image_batch,
    from_channels,
    to_channels,
    unflatten_image_batch,
)
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.init import seeded_init
from mrirecon.models.template import UnrolledModel


def soft_threshold(z: Tensor, theta: Tensor) -> Tensor:
    """``sign(z) max(|z| - theta, 0)`` (real tensors)."""
    return torch.sign(z) * F.relu(torch.abs(z) - theta)


class ISTANetPlusPhase(nn.Module):
    """One ISTA-Net+ phase; returns the new iterate and the symmetry residual."""

    def __init__(self, features: int = 32, rho: float = 0.5, theta: float = 0.01) -> None:
        super().__init__()

        def conv(cin: int, cout: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 3, padding=1, bias=False)

        self.dc = GradientDC(rho)
        self.theta = nn.Parameter(torch.tensor([float(theta)]))
        self.conv_d = conv(2, features)
        self.forward_1, self.forward_2 = conv(features, features), conv(features, features)
        self.backward_1, self.backward_2 = conv(features, features), conv(features, features)
        self.conv_g = conv(features, 2)

    def transform(self, z: Tensor) -> Tensor:
        """``F``: conv-ReLU-conv."""
        return self.forward_2(F.relu(self.forward_1(z)))

    def inverse_transform(self, z: Tensor) -> Tensor:
        """``F~``: conv-ReLU-conv, trained to invert :meth:`transform`."""
        return self.backward_2(F.relu(self.backward_1(z)))

    def forward(self, x: Tensor, y: Tensor, op: LinearOperator, aty: Tensor) -> tuple[Tensor, Tensor]:
        """Images ``x`` ``(B, H, W)`` -> (next iterate, ``F~(F(D r)) - D r`` features)."""
        r = self.dc(x, y, op, aty)
        flat, lead = flatten_image_batch(r)
        features = self.conv_d(to_channels(flat))
        coded = self.transform(features)
        update = self.conv_g(self.inverse_transform(soft_threshold(coded, self.theta)))
        out = r + unflatten_image_batch(from_channels(update, r.is_complex()), lead)
        return out, self.inverse_transform(coded) - features


class ISTANetPlus(UnrolledModel):
    """ISTA-Net+ ``model(y, op) -> x``.

    Parameters
    ----------
    iterations
        Unrolled ISTA phases (9).
    features
        Channels of the learned transforms (32).
    rho, theta
        Initial step size and threshold.
    normalize
        Scale data so that ``max |A^H y| = 1`` (thresholds are absolute), undone on output.
    checkpointing
        Recompute each phase in backward.
    init_seed
        Seed of the weight initialisation (:func:`~mrirecon.models.init.seeded_init`).
    symmetry_weight
        Weight of the symmetry loss ``mean_k mean |F~_k(F_k(D r)) - D r|^2`` (of the normalised
        image's features with ``normalize``) that a training forward (``model.training`` with
        autograd on) leaves in ``auxiliary_loss`` (0.01, the paper's; 0: none): the mean over
        the training forwards since it was last taken.
    """

    @accepts_deprecated_names
    def __init__(
        self,
        iterations: int = 9,
        features: int = 32,
        rho: float = 0.5,
        theta: float = 0.01,
        normalize: bool = True,
        checkpointing: bool = False,
        init_seed: int | None = None,
        symmetry_weight: float = 0.01,
    ) -> None:
        super().__init__()
        if not symmetry_weight >= 0:
            raise ValueError(f"ISTANetPlus: symmetry_weight must be >= 0, got {symmetry_weight}")
        self.symmetry_weight = float(symmetry_weight)
        self.auxiliary_loss: Tensor | None = None
        self._auxiliary_count = 0
        with seeded_init(init_seed):
            self.phases = nn.ModuleList([ISTANetPlusPhase(features, rho, theta) for _ in range(iterations)])
        self.normalize, self.checkpointing = normalize, checkpointing

    def num_steps(self) -> int:
        return len(self.phases)

    def initial_state(self, y: Tensor, op: LinearOperator, aty: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, symmetry) = (A^H y, 0)``: the iterate and the running symmetry loss."""
        return aty, torch.zeros((), dtype=aty.real.dtype, device=aty.device)

    def step(self, i: int, state: tuple[Tensor, Tensor], y: Tensor, op: LinearOperator,
             aty: Tensor) -> tuple[Tensor, Tensor]:
        x, residual = self.phases[i](state[0], y, op, aty)
        return x, state[1] + torch.mean(residual**2)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the last forward's term out (a tensor inside a graph)."""
        return {**super().__getstate__(), "auxiliary_loss": None}

    def output(self, state: tuple[Tensor, Tensor]) -> Tensor:
        if not (self.training and torch.is_grad_enabled() and self.symmetry_weight > 0):
            self.auxiliary_loss = None
            return state[0]
        term = self.symmetry_weight * state[1] / max(len(self.phases), 1)
        # the mean over the forwards since the term was last taken (a self-supervised loss's
        # SSDU splits or CT view parts, itself their mean); the last alone dropped the others
        n = 0 if self.auxiliary_loss is None else self._auxiliary_count
        self.auxiliary_loss = term if n == 0 else (self.auxiliary_loss * n + term) / (n + 1)
        self._auxiliary_count = n + 1
        return state[0]

    def forward_with_symmetry(self, y: Tensor, op: LinearOperator) -> tuple[Tensor, Tensor]:
        """Reconstruction and the symmetry loss ``mean_k mean |F~_k(F_k(D r)) - D r|^2``.

        The ISTA-Net+ training loss is ``||x - x_true||^2 / N + 0.01 * symmetry``.
        """
        (x, symmetry), scale = self.iterate(y, op)
        symmetry = symmetry / max(len(self.phases), 1)
        return self.unscale(x, scale), symmetry
