"""Small residual CNN: head conv, ``blocks`` residual blocks (conv-ReLU-conv + skip), tail conv."""

from __future__ import annotations

from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """``x + conv(relu(conv(x)))`` with 3x3 convolutions and ``features`` channels."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(features, features, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(N, features, H, W) -> (N, features, H, W)``."""
        return x + self.body(x)


class ResNet(nn.Module):
    """Residual CNN on real ``(N, in_chans, H, W)``.

    Parameters
    ----------
    in_chans, out_chans
        Real channel counts (``2`` for one complex image).
    features
        Hidden channels.
    blocks
        Number of :class:`ResidualBlock` s.
    residual
        Add the input to the output (needs ``in_chans == out_chans``).
    """

    def __init__(
        self, in_chans: int = 2, out_chans: int = 2, features: int = 32, blocks: int = 4, residual: bool = True
    ) -> None:
        super().__init__()
        if residual and in_chans != out_chans:
            raise ValueError(f"ResNet: residual needs in_chans == out_chans, got {in_chans} != {out_chans}")
        self.head = nn.Conv2d(in_chans, features, 3, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(features) for _ in range(blocks)])
        self.tail = nn.Conv2d(features, out_chans, 3, padding=1)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, out_chans, H, W)``."""
        out = self.tail(self.blocks(self.head(x)))
        return x + out if self.residual else out
