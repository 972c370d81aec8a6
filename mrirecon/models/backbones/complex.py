"""Complex images <-> real CNN channels, the one place a complex tensor meets a real CNN.

Every variable uses two channels ``[real, imag]``; a real variable (e.g. a CT image) gets a
zero imaginary channel and only the real channel of the output is kept. The same weights
therefore serve complex MRI images and real CT images.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.functional import channels_to_complex, complex_to_channels


def to_channels(x: Tensor, dim: int = 1) -> Tensor:
    """Complex or real ``(B, C, ...)`` -> real ``(B, 2C, ...)`` ([all real parts, all imag parts])."""
    if x.is_complex():
        return complex_to_channels(x, dim=dim)
    return torch.cat([x, torch.zeros_like(x)], dim=dim)


def from_channels(z: Tensor, complex_output: bool, dim: int = 1) -> Tensor:
    """Inverse of :func:`to_channels`: complex ``(B, C, ...)``, or the real half when real."""
    if complex_output:
        return channels_to_complex(z, dim=dim)
    return torch.chunk(z, 2, dim=dim)[0]


def flatten_image_batch(x: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """``(*lead, H, W) -> (prod(lead), 1, H, W)`` and ``lead`` (for :func:`unflatten_image_batch`)."""
    if x.ndim < 2:
        raise ValueError(f"image tensor must have at least 2 dims (H, W), got {tuple(x.shape)}")
    lead = tuple(x.shape[:-2])
    return x.reshape((-1, 1) + tuple(x.shape[-2:])), lead


def unflatten_image_batch(x: Tensor, lead: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`flatten_image_batch` for a one-channel ``(N, 1, H, W)`` tensor."""
    return x.reshape(lead + tuple(x.shape[-2:]))


class ComplexImageCNN(nn.Module):
    """Apply a real 2-in / 2-out CNN to images ``(..., H, W)``, complex or real.

    Parameters
    ----------
    cnn
        Real network ``(N, 2, H, W) -> (N, 2, H, W)``.
    residual
        Return ``x + cnn(x)`` instead of ``cnn(x)``.

    Notes
    -----
    Input and output have the same shape and dtype: complex in, complex out; real in, real out.
    :class:`~mrirecon.models.backbones.NormUnet` is refused: it takes complex ``(B, C, H, W)``
    images and splits them into channels itself, so wrapped here it met a 4-channel input and
    failed inside its first convolution ("expected input[1, 4, 48, 48] to have 2 channels").
    """

    def __init__(self, cnn: nn.Module, residual: bool = False) -> None:
        super().__init__()
        from mrirecon.models.backbones.normunet import NormUnet  # it imports this module

        if isinstance(cnn, NormUnet):
            raise TypeError(
                "ComplexImageCNN: NormUnet takes complex (B, C, H, W) images and returns complex "
                "ones (it splits real and imaginary channels itself), so it needs no "
                "ComplexImageCNN; use it directly on a batch of images (B, H, W) with a channel "
                "axis: NormUnet(...)(x.unsqueeze(-3)).squeeze(-3), for complex (MRI) images "
                "only, as it returns complex output for a real (CT) image")
        self.cnn = cnn
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        """``(..., H, W) -> (..., H, W)``, same dtype."""
        flat, lead = flatten_image_batch(x)
        out = from_channels(self.cnn(to_channels(flat)), x.is_complex())
        out = unflatten_image_batch(out, lead)
        return x + out if self.residual else out
