"""A CT method's output volume in the units of its outputs: Hounsfield units for export and
display, ``mu / MU_MAX`` for the metrics (:func:`hu_volumes`), converted a chunk of slices at a
time (:func:`to_hu`; split from :mod:`mrirecon.pipeline.stages_ct`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from mrirecon.pipeline.stream import VolumeRun

#: Voxels of a CT volume converted to HU at a time (2 MiB of float64): a whole-volume
#: ``mu.double()`` and its float64 temporaries, for the output, reference and preview, peaked at
#: 7.4 times a float32 volume (+471 MiB for 64 MiB).
HU_CHUNK_VOXELS = 1 << 18


def to_hu(mu: Tensor | None, hu_units: dict) -> Tensor | None:
    """``attenuation_to_hu(mu, **hu_units)`` as float32 of ``mu``'s shape, computed in float64 a
    chunk of slices at a time (:data:`HU_CHUNK_VOXELS`) into the float32 result: the values of a
    whole-volume float64 conversion to the bit (each voxel's arithmetic is the same), with one
    float32 volume and one chunk of float64 held."""
    from mrirecon.io.lodopab import attenuation_to_hu

    if mu is None:
        return None
    mu = mu.detach().cpu()
    out = torch.empty(mu.shape, dtype=torch.float32)
    if mu.ndim == 0 or mu.numel() == 0:
        out.copy_(torch.from_numpy(np.asarray(attenuation_to_hu(mu.double().numpy(), **hu_units))))
        return out
    rows = max(1, HU_CHUNK_VOXELS // max(1, mu[0].numel()))
    for i in range(0, mu.shape[0], rows):
        hu = attenuation_to_hu(mu[i:i + rows].double().numpy(), **hu_units)
        out[i:i + rows] = torch.from_numpy(np.asarray(hu)).float()
    return out


def hu_volumes(run: VolumeRun, info: dict, name: str):
    """Method ``name``'s attenuation volume of ``run`` -> ``(hu, eval_ref, eval_pred, display_ref,
    display_preview)``: HU for export and display (float32, converted a chunk at a time:
    :func:`to_hu`), ``mu / MU_MAX`` for the metrics."""
    from mrirecon.io.lodopab import MU_MAX_PER_MM

    mu, reference = run.outputs[name], run.reference
    eval_ref = None if reference is None else reference / MU_MAX_PER_MM
    units = info["hu_units"]
    return (to_hu(mu, units), eval_ref, mu / MU_MAX_PER_MM, to_hu(reference, units),
            to_hu(run.preview, units))
