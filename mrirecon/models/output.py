"""The output contract of the reconstruction models, and the named steps that follow it.

Every model ``model(y, op)`` returns the image ``(B, H, W)`` in the units of the data: complex
for MRI (the coil-combined image), real for CT. Turning it into what metrics and exports use is
a separate, named step:

- :func:`magnitude`: ``|x|`` of a complex image (a real image is returned as is);
- :func:`rss_image`: the root-sum-of-squares of multi-coil k-space's coil images, the quantity
  fastMRI's VarNet outputs (``VarNet.rss(y, op)`` runs the model and applies it).

VarNet's complex image has the RSS as its magnitude (see :class:`~mrirecon.models.VarNet`), so
``magnitude(varnet(y, op))`` is fastMRI's output for every caller alike.
"""

from __future__ import annotations

from torch import Tensor

from mrirecon.functional import ifft2c, rss


def magnitude(x: Tensor) -> Tensor:
    """The magnitude image of a model's output: ``|x|`` if complex, ``x`` itself if real."""
    return x.abs() if x.is_complex() else x


def rss_image(kspace: Tensor) -> Tensor:
    """Root-sum-of-squares of the coil images of multi-coil k-space ``(..., C, H, W)``:
    ``sqrt(sum_c |F^H k_c|^2)``, real ``(..., H, W)``."""
    return rss(ifft2c(kspace), dim=-3)
