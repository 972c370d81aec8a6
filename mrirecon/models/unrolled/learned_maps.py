"""Coil sensitivities estimated jointly by a network for non-Cartesian data (E2E-VarNet's
sensitivity model, on a trajectory), wrapped around any unrolled model.

:class:`NonCartesianSensitivityModel`: the samples within ``calib_width / 2`` cycles/FOV of the
k-space centre are density compensated (Pipe-Menon weights of the operator's trajectory), tapered
by a Hann window and gridded per coil with the adjoint NUFFT
(:func:`~mrirecon.calib.noncartesian.gridded_calibration_images`, the same low-resolution coil
images ESPIRiT and Walsh calibrate on); a small :class:`~mrirecon.models.backbones.NormUnet`
refines each coil image (complex as two channels, coils as batch) as a gated residual,
``c + g * NormUnet(c)`` with the learned gate ``g`` starting at 0, and the result is divided by
its root-sum-of-squares over coils, so ``sum_c |S_c|^2 = 1`` at every pixel. At
initialisation the maps are therefore the classic low-resolution estimate (coil images over
their RSS), and training refines them (with a plain NormUnet output, as in E2E-VarNet, a
short CPU training started from random maps and stayed behind ESPIRiT).

:class:`LearnedMapsModel`: ``model(y, op) -> x`` with ``x = inner(y, op.with_maps(S(y, op)))``.
The operator must be a :class:`~mrirecon.operators.nufft.NufftSense`; it carries the trajectory,
its Toeplitz kernel (reused by ``with_maps``) and optional data weights, and its own maps are
ignored (only their coil count is used). Gradients reach the sensitivity network through every
use of the maps in the reconstruction (``A^H y``, the gram in the inner model's data
consistency, including MoDL's implicit CG backward), so both train end to end (``mrirecon train
radial --maps learned``), except one: when the data ``y`` do not require a gradient (as in
training), the inner model's normalisation scale (``max |A^H y|`` for MoDL, the start's quantile
for DPIR) is computed on ``maps.detach()`` (the model asks every model it wraps for it,
:func:`~mrirecon.models.common.request_maps_scale_stop_gradient`; outside this wrapper the scale
stays attached to maps that require a gradient): a
stop-gradient that keeps the weight gradients the shipped ``modl_radial_learned_maps_sim`` was
trained with, bit for bit (the scale's path would change the sensitivity network's gradient by
0.04-0.35 %). When ``y`` requires a gradient nothing is cut: the gradient w.r.t. ``y`` (and the
weights') is that of the computed map (3.6e-9 from central differences in float64).

The maps are invariant to the scale of ``y`` (NormUnet normalises its input and the RSS
division removes the rest), so a scale-equivariant inner model stays scale equivariant. The
sensitivity network works on ``y`` divided by the power of two just above its peak (exact: the
maps are bit for bit those of ``y``); at the data's own scale the squares of the NormUnet's
statistics and of the RSS under- or overflowed float32: ``modl_radial_learned_maps_sim`` was
1.5e-3 off at ``c = 1e-17``, returned an image of 1e-37 at 1e-18, was 1.0 off at 1e23 and
refused the data as "all-zero maps" from 1e25 (now 1.3e-6 .. 1.7e-6 from 1e-30 to 1e30, its
rounding at ``c = 3``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mrirecon.calib.noncartesian import gridded_calibration_images
from mrirecon.core.magnitude import sample_power_of_two
from mrirecon.functional.density import cached_pipe_menon_density
from mrirecon.models.backbones.normunet import NormUnet
from mrirecon.models.common import request_maps_scale_stop_gradient
from mrirecon.models.init import seeded_init
from mrirecon.operators.nufft import NufftSense

class NonCartesianSensitivityModel(nn.Module):
    """Coil maps ``(B, C, H, W)`` of unit root-sum-of-squares from non-Cartesian samples.

    Parameters
    ----------
    chans, pools
        Size of the per-coil :class:`NormUnet` (fastMRI's sensitivity U-Net: 8, 4).
    calib_width
        Diameter of the calibration disc in cycles/FOV (the pipeline's ESPIRiT default: 24).
    """

    def __init__(self, chans: int = 8, pools: int = 2, calib_width: int = 24) -> None:
        super().__init__()
        if calib_width < 2:
            raise ValueError(f"NonCartesianSensitivityModel: calib_width must be >= 2, got {calib_width}")
        self.calib_width = int(calib_width)
        self.norm_unet = NormUnet(chans, pools)
        self.gate = nn.Parameter(torch.zeros(()))

    def density(self, op: NufftSense) -> Tensor:
        """Pipe-Menon weights of ``op``'s trajectory on its device, computed once per
        trajectory tensor (on the host, with finufft) and moved there once."""
        return cached_pipe_menon_density(op.trajectory, op.image_shape)

    def calibration_images(self, y: Tensor, op: NufftSense) -> Tensor:
        """Density-compensated, tapered gridding of the central samples per coil ``(B, C, H, W)``."""
        y = op.unweighted(y)  # the data are W^(1/2) N S x
        return gridded_calibration_images(y, op.trajectory, op.image_shape, self.calib_width,
                                          self.density(op))

    def forward(self, y: Tensor, op: NufftSense) -> Tensor:
        if not isinstance(op, NufftSense):
            raise TypeError("NonCartesianSensitivityModel needs a nufft_sense operator (it reads "
                            f"the trajectory), got {type(op).__name__}")
        if y.ndim != 2 + len(op.kshape) or not y.is_complex():
            raise ValueError(f"NonCartesianSensitivityModel: y must be complex (B, coils, *K) with K = "
                             f"{op.kshape}, got {tuple(y.shape)} {y.dtype}")
        # an exact rescale (module docstring)
        y = y / sample_power_of_two(y)
        images = self.calibration_images(y, op)
        b, c, h, w = images.shape
        refined = self.norm_unet(images.reshape(b * c, 1, h, w)).reshape(b, c, h, w)
        maps = images + self.gate.to(images.real.dtype) * refined
        norm = torch.sqrt((maps.abs() ** 2).sum(dim=1, keepdim=True))
        return maps / norm.clamp_min(torch.finfo(norm.dtype).tiny)


class LearnedMapsModel(nn.Module):
    """``model(y, op) -> x``: an unrolled model on the operator with network-estimated maps.

    Parameters
    ----------
    model, model_params
        The inner reconstruction model by registry name and its parameters (e.g. ``"modl"``,
        ``{"iterations": 4, ...}``); built with :func:`~mrirecon.models.registry.build_model`.
    sens_chans, sens_pools, calib_width
        The sensitivity network (:class:`NonCartesianSensitivityModel`).
    init_seed
        Seed of the weight initialisation of both networks.
    """

    def __init__(self, model: str = "modl", model_params: dict[str, Any] | None = None,
                 sens_chans: int = 8, sens_pools: int = 2, calib_width: int = 24,
                 init_seed: int | None = None) -> None:
        super().__init__()
        from mrirecon.models.registry import build_model  # the registry imports this module

        if str(model).lower().replace("-", "_") in ("learned_maps", "varnet"):
            raise ValueError(f"LearnedMapsModel: inner model {model!r} is not a plain model(y, op) "
                             "on given maps")
        with seeded_init(init_seed):
            self.sensitivity = NonCartesianSensitivityModel(sens_chans, sens_pools, calib_width)
            self.model = build_model(model, **dict(model_params or {}))
        request_maps_scale_stop_gradient(self.model)  # the scale on detached maps (module doc)

    def maps(self, y: Tensor, op: NufftSense) -> Tensor:
        """The estimated maps ``(B, C, H, W)``."""
        return self.sensitivity(y, op)

    def forward(self, y: Tensor, op: NufftSense) -> Tensor:
        return self.model(y, op.with_maps(self.sensitivity(y, op)))
