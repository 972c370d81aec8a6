"""The training loss of :class:`~mrirecon.training.config.LossConfig`: weighted SSIM + L1 + MSE
+ perceptual (the adversarial term needs a discriminator and lives in the trainer)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.metrics import SSIMLoss
from mrirecon.training.config import LossConfig


class ReconstructionLoss(nn.Module):
    """``w_ssim (1 - SSIM) + w_l1 |x - t|_1 + w_mse |x - t|^2 + w_perc P(x, t)`` on magnitudes.

    SSIM uses the fastMRI constants and each sample's own data range (its volume maximum); L1
    and MSE are means over pixels divided by the data range (resp. its square) so the three
    terms are on comparable, scale-free footing. ``P`` is
    :class:`~mrirecon.training.perceptual.PerceptualLoss` (built only when its weight is > 0).
    The ``adversarial`` weight is applied by :class:`~mrirecon.training.trainer.Trainer`.

    Call as ``loss(prediction, target, max_value)`` with real ``(B, h, w)`` images and
    ``max_value`` ``(B,)``; returns a scalar.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config or LossConfig()
        c = self.config
        weights = (c.ssim, c.l1, c.mse, c.perceptual, c.adversarial)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"ReconstructionLoss: weights must be >= 0 and not all zero, got {c}")
        self.ssim = SSIMLoss()
        self.perceptual = None
        if c.perceptual:
            from mrirecon.training.perceptual import PerceptualLoss

            self.perceptual = PerceptualLoss()

    def forward(self, prediction: Tensor, target: Tensor, max_value: Tensor) -> Tensor:
        if prediction.shape != target.shape or prediction.ndim != 3:
            raise ValueError(
                f"ReconstructionLoss: prediction {tuple(prediction.shape)} and target "
                f"{tuple(target.shape)} must both be (B, h, w)"
            )
        scale = torch.as_tensor(
            max_value, dtype=prediction.dtype, device=prediction.device
        ).reshape(-1)
        if scale.numel() != prediction.shape[0]:
            raise ValueError(
                f"ReconstructionLoss: {scale.numel()} max values for a batch of "
                f"{prediction.shape[0]}"
            )
        c = self.config
        total = prediction.new_zeros(())
        if c.ssim:
            total = total + c.ssim * self.ssim(prediction.unsqueeze(1), target.unsqueeze(1), scale)
        diff = (prediction - target) / scale[:, None, None]
        if c.l1:
            total = total + c.l1 * diff.abs().mean()
        if c.mse:
            total = total + c.mse * diff.square().mean()
        if self.perceptual is not None:
            total = total + c.perceptual * self.perceptual(prediction, target, scale)
        return total
