"""Helpers shared by the unrolled models: optional gradient checkpointing, data scaling and the
geometric self-ensemble."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _NormBase

from mrirecon.core import LinearOperator
from mrirecon.operators.mri import SenseOperator
from mrirecon.operators.nufft import NufftSense


def run_stage(fn: Callable[..., Tensor], *args, checkpointing: bool = False):
    """Call ``fn(*args)``; with ``checkpointing`` (and grad enabled) recompute it in backward.

    Uses ``torch.utils.checkpoint.checkpoint(..., use_reentrant=False)``, so non-tensor
    arguments such as operators pass through and dropout RNG state is preserved.

    Checkpointing is a memory setting only: the recomputation in backward leaves the running
    statistics of batch / instance norm layers as the forward left them (they are saved before
    and restored after it), so a training step updates them once, as without checkpointing.
    The layers are found in ``fn`` itself when it is a module, else in the module ``fn`` is a
    method of (``self.step`` of :class:`~mrirecon.models.template.UnrolledModel`). Was: every
    step's batch norm updated its statistics twice per training step (``num_batches_tracked``
    4 instead of 2; MoDL's eval output 0.2 % off after one step).
    """
    if checkpointing and torch.is_grad_enabled():
        # imported here: torch 2.4's torch.utils.checkpoint imported SymPy (2.13's does not),
        # ~0.7 s of every process that imports the models, the classical pipelines included
        from torch.utils.checkpoint import checkpoint

        return checkpoint(_stats_updated_once(fn), *args, use_reentrant=False)
    return fn(*args)


def _stats_updated_once(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn`` whose second and later calls (checkpoint's recomputations) leave the running
    statistics of the norm layers of ``fn``'s module as they found them."""
    owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
    if not isinstance(owner, nn.Module):
        return fn
    calls = 0

    def stage(*args):
        nonlocal calls
        calls += 1
        tracked = [m for m in owner.modules() if isinstance(m, _NormBase)
                   and m.track_running_stats and m.training] if calls > 1 else []
        if not tracked:
            return fn(*args)
        saved = [(b, b.clone()) for m in tracked for b in m.buffers(recurse=False)]
        try:  # checkpoint may stop the recomputation early (an exception): restore anyway
            return fn(*args)
        finally:
            with torch.no_grad():
                for b, v in saved:
                    b.copy_(v)

    return stage


#: Beyond this many elements per sample ``torch.quantile`` refuses its input; the maximum is used.
QUANTILE_LIMIT = 16_000_000


def sample_scale(x: Tensor, q: float | None = None, *, signed: bool = False) -> Tensor:
    """The per-sample scale the models divide their data by, shaped ``(B, 1, ..., 1)``.

    ``max |x|`` over all axes but the first; with ``q`` the ``q``-quantile of ``|x|`` (of ``x``
    itself with ``signed``, for real images), computed in ``x``'s precision (float32 for lower
    ones), and ``max |x|`` where that quantile is not positive (or beyond ``QUANTILE_LIMIT``
    elements). 1 for an all-zero sample, so dividing by it is always safe; a model returns 0 for
    such a sample (:func:`zero_blank`), the limit of ``c model(y)`` as ``c -> 0``.

    No floor: a fixed epsilon (1e-12) made the output stop following the data below it (k-space
    at 1e-20 gave images 1e9 too bright; DPIR, the staged CT net and the FBP-started
    primal-dual kept it after ``batch_scale`` had dropped it), and the scanner's units are
    arbitrary.

    Not detached: the models compute ``s f(y / s)``, whose derivative in ``y`` includes
    ``ds/dy``; with ``s`` detached, autograd's gradient w.r.t. the data was 1-20 % off finite
    differences. A scale computed from ``y`` and a fixed operator does not depend on any weight,
    so weight gradients are bit for bit those of a detached ``s``; where the operator holds
    maps made by a network, compute ``x`` through :func:`scale_operator` (the stop-gradient
    that those networks ask for).
    """
    if x.ndim < 2:
        raise ValueError(f"expected a batch axis first, got shape {tuple(x.shape)}")
    flat = x.reshape(x.shape[0], -1)
    peak = flat.abs().amax(dim=1)
    s = peak
    if q is not None and flat.shape[1] <= QUANTILE_LIMIT:
        v = flat if signed else flat.abs()
        if v.dtype not in (torch.float32, torch.float64):
            v = v.float()
        s = torch.quantile(v, q, dim=1).to(peak.dtype)  # exactly proportional to x
        s = torch.where(s > 0, s, peak)
    s = torch.where(s > 0, s, torch.ones_like(s))
    return s.reshape((-1,) + (1,) * (x.ndim - 1))


def batch_scale(x: Tensor) -> Tensor:
    """Per-sample ``max |x|`` over all axes but the first, shaped ``(B, 1, ..., 1)``; 1 for an
    all-zero sample (:func:`sample_scale` without ``q``: no floor, not detached)."""
    return sample_scale(x)


def zero_blank(out: Tensor, source: Tensor) -> Tensor:
    """``out`` with every sample whose ``source`` is all zero set to 0 (same batch axis first).

    The scale of an all-zero sample is 1 (:func:`sample_scale`), so a network with biases or a
    noise-level input returned an image of its own there (0.15 for ``modl_brain_sim``, whose
    images peak at 1e-3) instead of the 0 that ``c model(y)`` tends to as ``c -> 0``. Samples
    holding data, NaN included, are returned bit for bit."""
    held = (source.reshape(source.shape[0], -1) != 0).any(dim=1)
    held = held.reshape((-1,) + (1,) * (out.ndim - 1))
    return torch.where(held, out, torch.zeros((), dtype=out.dtype, device=out.device))


def scale_operator(op: LinearOperator, y: Tensor, *,
                   stop_maps_gradient: bool = False) -> LinearOperator:
    """The operator to compute the scale of data ``y`` with: ``op`` itself, or, with
    ``stop_maps_gradient``, the same operator on ``maps.detach()`` when it is a SENSE or
    NUFFT-SENSE operator whose coil maps require a gradient and ``y`` does not.

    ``stop_maps_gradient`` is what a model asks for when its coil maps are made by a network
    it trains (:class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel` sets
    ``maps_scale_stop_gradient`` on the models it wraps): with data that do not require a
    gradient (training), the scale then passes no gradient to the network that made the maps,
    which is how those networks were trained: a training step of the shipped
    ``modl_radial_learned_maps_sim`` gives the weight gradients of the detached scale bit for
    bit (the scale's path would change the sensitivity network's by 0.04-0.35 %). When ``y``
    requires a gradient the scale stays attached to the maps even then, so the gradient w.r.t.
    ``y`` is that of the computed map (3.6e-9 from central differences in float64; through
    ``maps.detach()`` it missed the maps' dependence on ``y``, 2.9e-4 off).

    Without it (the default: maps the user optimises, ``nn.Parameter`` ESPIRiT maps refined
    through a model) nothing is cut, and the gradient w.r.t. the maps is that of the computed
    map. Was: the stop-gradient applied to any maps that required a gradient, and the maps'
    gradient through MoDL / VN / the primal-dual net with ``normalize=True`` was 13 % / 11 % /
    98 % off finite differences. The forward values are the same either way. Other operators
    holding tensors that require a gradient (wrapped ones, ``op * c``) are returned as they
    are: their scale carries those gradients.
    """
    if (stop_maps_gradient and isinstance(op, (SenseOperator, NufftSense))
            and op.maps.requires_grad and not y.requires_grad):
        return op.with_maps(op.maps.detach())
    return op


def normalized_data(y: Tensor, op: LinearOperator, *,
                    stop_maps_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Scale ``y`` so that ``max |A^H y| = 1`` per sample.

    Returns ``(y / s, A^H y / s, s_img)`` where ``s_img`` is the scale shaped like the image
    batch (:func:`batch_scale`: 1 for an all-zero sample, differentiable in ``y`` and in the
    operator's tensors, computed through :func:`scale_operator` with ``stop_maps_gradient``);
    multiply a reconstruction by it to return to the data's units (``A`` is linear). Models
    whose nonlinearities have a fixed range (RBF activations, thresholds) need this.
    """
    aty = op.H(y)
    sop = scale_operator(op, y, stop_maps_gradient=stop_maps_gradient)
    s_img = batch_scale(aty if sop is op else sop.H(y))
    s_data = s_img.reshape((-1,) + (1,) * (y.ndim - 1))
    return y / s_data, aty / s_img, s_img


def request_maps_scale_stop_gradient(model: nn.Module) -> None:
    """Make every model inside ``model`` (itself included) that normalises its data through
    :func:`scale_operator` compute the scale with ``stop_maps_gradient``: those with a
    ``maps_scale_stop_gradient`` attribute (:class:`~mrirecon.models.template.UnrolledModel`,
    :class:`~mrirecon.models.pnp.dpir.PnPDPIR`). For a wrapper whose coil maps come from a
    network it trains (:class:`~mrirecon.models.unrolled.learned_maps.LearnedMapsModel`)."""
    for m in model.modules():
        if hasattr(m, "maps_scale_stop_gradient"):
            m.maps_scale_stop_gradient = True


def require_batch(name: str, y: Tensor, min_ndim: int = 2) -> None:
    """Raise a ValueError naming the model unless ``y`` has a leading batch axis."""
    if not isinstance(y, Tensor) or y.ndim < min_ndim:
        raise ValueError(
            f"{name}: data y must have a leading batch axis and at least {min_ndim} dims, "
            f"got {tuple(getattr(y, 'shape', ()))}"
        )


def dihedral(x: Tensor, t: int, inverse: bool = False) -> Tensor:
    """Transform ``t`` (0..7) of the dihedral group of the square on the last two axes: transpose
    when ``t & 4``, then flip the rows when ``t & 1`` and the columns when ``t & 2`` (``t = 5`` is
    ``rot90`` by +90 degrees, ``6`` by -90, ``3`` by 180); ``inverse`` undoes it."""
    dims = [d for d, bit in ((-2, 1), (-1, 2)) if t & bit]
    if inverse:
        x = x.flip(dims) if dims else x
        return x.transpose(-1, -2) if t & 4 else x
    x = x.transpose(-1, -2) if t & 4 else x
    return x.flip(dims) if dims else x


def dihedral_mean(fn: Callable[..., Tensor], x: Tensor, *args) -> Tensor:
    """Geometric self-ensemble: the mean of ``T^-1 fn(T x, *args)`` over the 8 flips and
    transposes ``T`` of the last two axes (the dihedral group of the square).

    The result is exactly equivariant to those 8 transforms whatever ``fn`` is, and equals
    ``fn(x)`` when ``fn`` already is. ``fn`` must map an image to an image of the same layout
    (fully convolutional, so a transposed non-square input is fine); it is called 8 times.
    """
    acc = None
    for t in range(8):
        r = dihedral(fn(dihedral(x, t), *args), t, inverse=True)
        acc = r if acc is None else acc + r
    return acc / 8
