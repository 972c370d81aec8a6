"""Noise-level-conditioned, bias-free CNN denoiser for plug-and-play priors.

``D(x, sigma)``: a DnCNN-style stack of 3x3 convolutions and ReLUs **without any bias**, fed
with ``[Re x, Im x, sigma]`` and returning ``x`` minus the predicted noise. Without biases
(Mohan et al., ICLR 2020) the network is positively homogeneous,
``D(c x, c sigma) = c D(x, sigma)`` for every ``c > 0``, so its output does not depend on the
arbitrary scale of the data (scanner k-space units, CT photon counts, matrix size): only the
noise level *relative to the image* matters, and the same weights serve every data scale.
Real images (CT) use a zero imaginary channel and get a real result.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.models.backbones.complex import flatten_image_batch, from_channels, to_channels
from mrirecon.models.backbones.fused import sequential_conv_relu


class NoiseLevelDenoiser(nn.Module):
    """Bias-free conditioned denoiser ``(x (..., H, W), sigma) -> (..., H, W)``.

    Parameters
    ----------
    depth
        Number of 3x3 conv layers (>= 2).
    features
        Hidden channels.

    Notes
    -----
    ``sigma`` is the standard deviation of the noise per real / imaginary part, in the units of
    ``x``: a float or a tensor broadcastable to the leading dims of ``x``.
    """

    def __init__(self, depth: int = 8, features: int = 32) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"NoiseLevelDenoiser: depth must be >= 2, got {depth}")
        layers: list[nn.Module] = [nn.Conv2d(3, features, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(features, 2, 3, padding=1, bias=False))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, sigma: float | Tensor) -> Tensor:
        """Denoised ``x`` (same shape and dtype)."""
        flat, lead = flatten_image_batch(x)
        n = flat.shape[0]
        s = torch.as_tensor(sigma, dtype=flat.real.dtype, device=flat.device)
        s = s.expand(lead).reshape(n) if s.ndim else s.expand(n)
        chans = to_channels(flat)  # (N, 2, H, W)
        smap = s.reshape(n, 1, 1, 1).expand(n, 1, *chans.shape[-2:])
        noise = sequential_conv_relu(self.net, torch.cat([chans, smap], dim=1))
        out = from_channels(chans - noise, x.is_complex())
        return out.reshape(x.shape)
