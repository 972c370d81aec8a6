"""DnCNN (Zhang et al. 2017): conv-ReLU, (conv-BN-ReLU) x (depth-2), conv; residual learning.

Also the denoiser of MoDL (Aggarwal et al. 2019: 5 layers, 64 features, batch norm).
"""

from __future__ import annotations

from torch import Tensor, nn

from mrirecon.models.backbones.fused import sequential_conv_relu


class DnCNN(nn.Module):
    """Plain CNN of ``depth`` 3x3 conv layers on real ``(N, in_chans, H, W)``.

    Parameters
    ----------
    in_chans, out_chans
        Real channel counts (``2`` for one complex image).
    depth
        Number of conv layers (>= 2); DnCNN uses 17, MoDL 5.
    features
        Channels of the hidden layers (64 in both papers).
    batchnorm
        Batch norm after every hidden conv (as published); off gives a bias-only CNN.
    residual
        Return ``x + net(x)`` (requires ``in_chans == out_chans``); DnCNN predicts the noise and
        subtracts it, which is the same map up to the sign of the last layer.
    """

    def __init__(
        self,
        in_chans: int = 2,
        out_chans: int = 2,
        depth: int = 17,
        features: int = 64,
        batchnorm: bool = True,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN: depth must be >= 2, got {depth}")
        if residual and in_chans != out_chans:
            raise ValueError(f"DnCNN: residual needs in_chans == out_chans, got {in_chans} != {out_chans}")
        layers: list[nn.Module] = [nn.Conv2d(in_chans, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(nn.Conv2d(features, features, 3, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(features))
            layers.append(nn.ReLU(inplace=True))
        layers.append(nn.Conv2d(features, out_chans, 3, padding=1))
        self.net = nn.Sequential(*layers)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, out_chans, H, W)``."""
        out = sequential_conv_relu(self.net, x)  # conv + ReLU fused at inference on CPU
        return x + out if self.residual else out
