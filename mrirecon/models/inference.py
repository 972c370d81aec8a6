"""Slice-by-slice inference without autograd bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator


def reconstruct_slices(
    model: nn.Module, ys: Sequence[Tensor] | Tensor, ops: Sequence[LinearOperator] | LinearOperator
) -> Tensor:
    """Run ``model(y, op)`` on one slice at a time under ``torch.inference_mode``.

    Parameters
    ----------
    model
        Any ``model(y, op) -> x``; put in eval mode for the call and restored afterwards.
    ys
        Slices of data: a sequence of tensors without a batch axis, or one tensor whose first
        axis runs over slices.
    ops
        One operator per slice, or a single operator shared by all slices.

    Returns
    -------
    Tensor
        The reconstructions stacked along a new first (slice) axis.
    """
    n = len(ys)
    if isinstance(ops, LinearOperator):
        ops = [ops] * n
    if len(ops) != n:
        raise ValueError(f"reconstruct_slices: {n} slices of data but {len(ops)} operators")
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = [model(ys[i].unsqueeze(0), ops[i])[0] for i in range(n)]
    finally:
        model.train(was_training)
    return torch.stack(out)


def channels_last_convs(model: nn.Module) -> nn.Module:
    """Store the weights of every 2-D convolution of ``model`` channels-last, in place.

    With channels-last weights, oneDNN runs CPU convolutions in NHWC (the output comes back
    channels-last; the next layers follow). Measured on one thread: a bare 5-layer, 32-feature
    DnCNN at 640 x 320 went from 1.68 to 0.33 s per call on a loaded machine; inside
    ``mri_learned`` (MoDL, 8 coils) the convolutions' CPU time went from 1.6-1.9 to 1.15-1.25 s
    per slice (benchmarks/README.md, Run 6). The results equal the NCHW ones to float32
    rounding. Only
    inference gains: with autograd the channels-last backward was slower, so training code
    does not use this. Other 4-D tensors (buffers such as coil maps) keep their layout, since
    code may ``view`` them.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.to(memory_format=torch.channels_last)
    return model


def ready_for_inference(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` moved to ``device`` in eval mode, with :func:`channels_last_convs` on CPU: what
    every loader of a model for reconstruction (pipeline, benchmarks, held-out protocol) does."""
    model = model.to(device).eval()
    if torch.device(device).type == "cpu":
        channels_last_convs(model)
    return model
