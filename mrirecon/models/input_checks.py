"""Checks of the data ``y`` and operator ``op`` a reconstruction model is called with, shared by
every model's entry point (:meth:`~mrirecon.models.template.UnrolledModel.prepare`, the VarNet's
k-space entry, the CT models' ``forward``) and by the :class:`ModalityGuard` that
:func:`~mrirecon.training.weights.load_pretrained` registers on loaded weights, so that a model
refuses a mistake with the same words however it was made (``build_model``, a notebook's
trained ``result.model``, ``load_model`` of weights without a card, ``load_pretrained``).

:func:`check_model_input` refuses, in this order: data that are no tensor (a NumPy array),
NaN / Inf values, ``op=None``, data whose trailing shape is not the operator's range, half-
precision weights, real k-space for an MRI operator (or MRI weights) and complex data for a CT
operator (or CT weights), data or operator tensors of another precision than the weights, and
k-space undersampled with another mask than the operator's (:func:`mask_mismatch`, the rule and
wording of ``recon.run``). Each costs at most one pass over ``y``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mrirecon.core import CoilExpandReduce, HasFBP, HasSamplingMask, LinearOperator, capability
from mrirecon.core.checks import finite_and_nonzero, nonfinite_count
from mrirecon.core.kinds import COMPLEX_OF, REAL_OF
from mrirecon.core.operator import check_trailing_shape
from mrirecon.functional.fft import REAL_PAIRS_HINT
from mrirecon.models.common import require_batch
from mrirecon.sampling.agreement import judge_mask


_ABSENT = object()  # no ``op`` argument given (a denoiser's ``model(x)``)


def check_model_input(label: str, module: nn.Module, y: object, op: object = _ABSENT, *,
                      batch_ndim: int | None = None, modality: str | None = None,
                      reconstruction: bool = True) -> None:
    """Refuse data ``y`` (and operator ``op``) that the model ``module`` would fail on deep
    inside, or turn into a wrong image without a word; every message starts with ``label``
    (the weights file's name, or the model's class).

    Parameters
    ----------
    batch_ndim
        ``y`` must have a leading batch axis and at least this many axes
        (:func:`~mrirecon.models.common.require_batch`; ``None``: not judged here).
    modality
        ``"mri"`` / ``"ct"``: what the weights were trained for (their card); ``None``: judged
        from the operator alone (an MRI operator takes complex k-space, a CT one real sinograms).
    reconstruction
        ``module`` is called as ``model(y, op)``: the value and shape checks apply (``False``:
        the guard of weights of no modality, such as a denoiser called ``model(x, sigma)``).

    Anything but a tensor or array is refused by ``require_batch`` with ``batch_ndim``, else
    left to the model.
    """
    if not isinstance(y, Tensor):
        if hasattr(y, "__array__"):  # MoDL: "must have a leading batch axis ... got (1, 4,
            # 32, 32)" for a numpy array of that very shape; VarNet an AttributeError
            raise TypeError(f"{label}: the data y must be a torch.Tensor, got "
                            f"{type(y).__module__}.{type(y).__name__} "
                            f"{tuple(getattr(y, 'shape', ()))}; "
                            "convert it with torch.from_numpy(y)")
    if batch_ndim is not None:
        require_batch(label, y, batch_ndim)
    if not isinstance(y, Tensor):
        return
    is_op = isinstance(op, LinearOperator)
    if reconstruction:  # a VarNet blamed NaN data on "the coil maps hold NaN or Inf"
        finite, _ = finite_and_nonzero(y.detach())
        if not finite:
            raise ValueError(f"{label}: the data y {tuple(y.shape)} hold "
                             f"{nonfinite_count(y)} NaN or Inf values")
        if op is None:  # MoDL: "'NoneType' object has no attribute ..."
            raise TypeError(f"{label}: called as model(y, op) with op None; pass the "
                            "forward operator of y")
        if is_op:  # VarNet: "The size of tensor a (32) must match the size of tensor b (30)
            # at non-singleton dimension 3"
            check_trailing_shape(label, f"the data y for {op.name}", y, op.range_shape)
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    if weight is not None and weight.dtype not in COMPLEX_OF:  # float16, bfloat16: the
        # advice "convert the data (y.to(torch.float16))" dropped k-space's imaginary part,
        # and no operator or FBP here runs in half precision
        raise TypeError(f"{label}: the weights are {weight.dtype}; half-precision weights are "
                        "not supported for inference here (the operators, complex k-space "
                        "and FBP need float32 / float64): convert the model back with "
                        "model.float()")
    if is_op:  # first: real k-space for an MRI operator has lost its phase; the modality
        # check below blamed it on "a CT sinogram?" and advised other weights
        _check_kind(label, y, op)
    if modality is not None and y.is_complex() != (modality == "mri"):
        kind = "complex (MRI k-space?)" if y.is_complex() else "real (a CT sinogram?)"
        raise TypeError(f"{label}: these {modality.upper()} weights got {kind} data "
                        f"{tuple(y.shape)} {y.dtype}; use weights trained for that modality")
    real = y.real.dtype if y.is_complex() else y.dtype
    if weight is not None and real.is_floating_point and real != weight.dtype:
        want = COMPLEX_OF.get(weight.dtype)
        target = want if y.is_complex() and want is not None else weight.dtype
        raise TypeError(f"{label}: the data are {y.dtype} but the weights are {weight.dtype}; "
                        f"convert the data (y.to({target})) or the model "
                        f"(model.to({real}))")
    if weight is not None and isinstance(op, nn.Module):
        check_operator_precision(label, op, weight.dtype)
    if reconstruction and is_op:
        check_mask_fits(label, y, op)


def _check_kind(label: str, y: Tensor, op: LinearOperator) -> None:
    """Real data for an MRI operator (lost phase: a plausible complex image, 17 dB, no error)
    or complex data for a CT operator (with an FBP)."""
    name = op.name
    mri = capability(op, HasSamplingMask) is not None or capability(op, CoilExpandReduce) is not None
    if mri and not y.is_complex():
        raise TypeError(f"{label}: the data y {tuple(y.shape)} are real ({y.dtype}), but the MRI "
                        f"operator {name} takes complex k-space: a real y has lost its phase "
                        "(abs(), .real, or a cast such as astype(float32)) and would give a wrong "
                        f"image without error; pass the complex k-space ({REAL_PAIRS_HINT})")
    if not mri and y.is_complex() and capability(op, HasFBP) is not None:
        raise TypeError(f"{label}: the data y {tuple(y.shape)} are complex ({y.dtype}), but the "
                        f"CT operator {name} takes real sinograms (post-log line integrals)")


def check_operator_precision(label: str, op: nn.Module, weights: torch.dtype) -> None:
    """Refuse an operator holding a complex tensor (buffer or parameter: coil maps, phases) of
    more precision than the ``weights``' dtype: its results are promoted to that precision and
    reach the network as such ("Input type (double) and bias type (float)" in MoDL's first
    convolution). Real tensors are not compared: operators cast masks, trajectories and
    density weights to the data (the CT projectors' interpolation tables are float64 by
    design), and an operator of less precision is promoted to the data's."""
    tensors = [*op.named_parameters(), *op.named_buffers()]
    for key, t in tensors:
        real = REAL_OF.get(t.dtype)
        if real is None or torch.promote_types(real, weights) == weights:
            continue
        want = COMPLEX_OF.get(weights, weights)
        name = op.name if isinstance(op, LinearOperator) else type(op).__name__
        raise TypeError(f"{label}: the operator {name} holds {key} as {t.dtype} but the weights "
                        f"are {weights}: its results would reach the network's layers as "
                        f"{t.dtype}; convert the operator "
                        f"(op.to({want})), build it from {key.rsplit('.', 1)[-1]}.to({want}), or "
                        f"convert the model (model.to({real}))")


def check_mask_fits(label: str, y: Tensor, op: LinearOperator) -> None:
    """Refuse k-space ``y`` undersampled with another mask than ``op``'s (:func:`mask_mismatch`):
    ``ValueError("label: y does not fit the operator's mask ...")``."""
    message = mask_mismatch(y, op)
    if message is not None:
        raise ValueError(f"{label}: {message}")


def mask_mismatch(y: Tensor, op: LinearOperator) -> str | None:
    """Why k-space ``y`` was undersampled with another mask than ``op``'s sampling mask, in
    ``recon.run``'s words (after its ``name: ``), or ``None``: the rule and wording of
    :func:`mrirecon.sampling.agreement.judge_mask` and its ``MaskFit.mismatch``.

    ``y`` holds data where the mask drops them *and* the mask keeps samples where ``y`` holds
    none (inside ``y``'s span: zero padding at the edges is no sample) — fftshifted, flipped,
    transposed, another seed (``modl_brain_sim``: 6.8 dB with the fftshifted mask's operator,
    18 dB with another seed's, 25 dB with its own). Either alone is ordinary: fully sampled
    ``y`` undersampled by the operator (SSDU's and ZS-SSL's splits: ``y`` restricted to a
    subset of the mask, ``op`` of that subset), or ``y`` undersampled and ``op`` denser
    (``recon.run`` warns of it; a model takes those samples as measured zeros). Real ``y``,
    operators without a Cartesian mask (non-Cartesian, CT), masks that do not match ``y``'s
    trailing axes and per-sample masks of another batch (the operator names it) are not judged.
    One pass over ``y``.
    """
    if y.ndim < 2 or not y.is_complex():
        return None
    try:
        fit = judge_mask(y, op)
    except RuntimeError:  # per-sample masks of another batch: the operator names it
        return None
    return None if fit is None else fit.mismatch()


class ModalityGuard:
    """The forward pre-hook of loaded weights (:func:`check_model_input` under the weights
    file's name). Weights trained for one modality refuse the other's data when called: CT data
    are real sinograms, MRI k-space is complex (shipped CT weights on an MRI operator gave
    -7.4 dB with no word; the pipeline refuses such a config, a notebook call did not). Data in
    another precision than the weights (numpy's complex128 k-space) are refused with the
    conversion to make: they failed deep inside the first convolution ("Input type (double) and
    bias type (float)"); so is an operator whose complex tensors (coil maps, phases) are wider
    than the weights (complex128 maps from NumPy with complex64 data: the same error), naming
    both dtypes.

    A module-level class holding only the file's name and the modality, so that a loaded model
    pickles (``torch.save(model)``, spawned workers): a closure gave "Can't pickle local
    object '_guard_modality.<locals>.check'"."""

    def __init__(self, label: str, modality: str | None) -> None:
        self.label = label  # the weights file's name, for the messages
        self.modality = modality  # "mri", "ct" or None (plug-and-play priors serve both)

    def __call__(self, module: nn.Module, args: tuple) -> None:
        y = args[0] if args else None
        op = args[1] if len(args) > 1 else _ABSENT
        reconstruction = self.modality is not None or isinstance(op, LinearOperator)
        check_model_input(self.label, module, y, op, modality=self.modality,
                          reconstruction=reconstruction)
