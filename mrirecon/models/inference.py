"""Slice-by-slice inference without autograd bookkeeping."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mrirecon.core import LinearOperator
from mrirecon.core.checks import NonFiniteError, finite_and_nonzero, nonfinite_count


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

    Raises
    ------
    ValueError
        The model broke the output contract of :mod:`mrirecon.models.template` on a slice
        (the message names the model class and the slice): for data ``y[None]`` it must return
        the image ``(1, *op.domain_shape)`` (``None`` sizes free), of the data's dtype (complex
        k-space: a complex image of its precision, not the magnitude; a real sinogram: a real
        image), finite (:class:`~mrirecon.core.checks.NonFiniteError`; data holding NaN / Inf are
        refused before the call, naming the slice). A model that writes into its input ``y`` in place is refused
        too; it is given a copy of each slice, so the caller's ``ys`` stay as they were.
    """
    n = len(ys)
    if isinstance(ops, LinearOperator):
        ops = [ops] * n
    if len(ops) != n:
        raise ValueError(f"reconstruct_slices: {n} slices of data but {len(ops)} operators")
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(n):
            # a copy made outside inference mode, so that its version counter tells whether
            # the model wrote into it (slices of a stacked tensor are views of the caller's)
            y = ys[i].detach().unsqueeze(0).clone()
            if not finite_and_nonzero(y)[0]:  # said with the slice, before the model's own
                # input check (which has no index)
                raise NonFiniteError(f"reconstruct_slices: {type(model).__name__}: the data of slice {i} "
                                     f"hold {nonfinite_count(y)} NaN or Inf value(s)")
            version = y._version
            with torch.inference_mode():
                x = model(y, ops[i])
            if y._version != version:
                raise ValueError(f"reconstruct_slices: {type(model).__name__} wrote into its input "
                                 f"y in place (slice {i}): a model must not modify its data "
                                 "(the caller's data were not changed: the model was given a copy)")
            out.append(_checked_output(model, x, y, ops[i], i))
    finally:
        model.train(was_training)
    return torch.stack(out)


def _checked_output(model: nn.Module, x: object, y: Tensor, op: LinearOperator, i: int) -> Tensor:
    """``x[0]`` where ``x`` keeps the output contract (see :func:`reconstruct_slices`)."""
    who = f"reconstruct_slices: {type(model).__name__}"
    if not isinstance(x, Tensor):
        raise ValueError(f"{who} returned a {type(x).__name__} for slice {i}, not an image tensor")
    dom = op.domain_shape
    sizes = "..." if dom is None else ", ".join("*" if s is None else str(s) for s in dom)
    want = f"(1, {sizes})"
    fits = x.ndim >= 1 and x.shape[0] == 1 and (dom is None or (
        x.ndim == 1 + len(dom) and all(d is None or d == s for d, s in zip(dom, x.shape[1:]))))
    if not fits:
        raise ValueError(f"{who} returned shape {tuple(x.shape)} for slice {i} (data "
                         f"{tuple(y.shape)}): a model maps data (1, ...) to the image {want} of "
                         f"{op.name}'s domain, with the batch axis kept and nothing added")
    if x.dtype != y.dtype:
        kind = ("a magnitude or real part? return the complex image and take its magnitude "
                "afterwards (mrirecon.models.output)" if y.is_complex() and not x.is_complex()
                else "the image has the dtype of the data: complex for k-space, real for "
                     "sinograms, in the data's precision")
        raise ValueError(f"{who} returned {x.dtype} for {y.dtype} data (slice {i}): {kind}")
    if not bool(torch.isfinite(x).all()):  # the data were checked finite before the call
        raise NonFiniteError(f"{who} returned NaN or Inf for slice {i} from finite data "
                             "(weights with NaN / Inf, or a diverging iteration)")
    return x[0]


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
