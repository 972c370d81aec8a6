"""Cartesian MRI operators: sampling ``P``, centred Fourier ``F``, coil sensitivities ``S``.

The multi-coil forward model is ``A = P F S`` (:func:`sense`); single-coil is the one-coil
case, or ``P F`` (:func:`single_coil`) when the data carry no coil axis. Shapes follow fastMRI:
images ``(..., H, W)``, k-space ``(..., coils, H, W)``, masks broadcastable to ``(..., H, W)``
(a fastMRI column mask is ``(1, W)``).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from mrirecon.core import HasSamplingMask, LinearOperator
from mrirecon.core.checks import NonFiniteError, as_tensor, broadcasts_to, finite_and_nonzero
from mrirecon.core.kinds import real_dtype
from mrirecon.core.magnitude import sum_abs2
from mrirecon.functional import coil_combine, fft2c, ifft2c, uncentred_fft2, uncentred_ifft2

#: Coil-image bytes per block of rows of the no-grad column-mask gram on one thread (fits a CPU
#: core's L2 cache): 8 x 320 x 320 complex64 gram 2.6 ms in 40-row blocks against 2.8 ms in one
#: piece, and 6.5 ms whenever glibc had handed the 6.5 MB buffers back to the OS between calls
#: (page faults; inside the PnP-ADMM solve 1.63-1.71 s of grams per slice in blocks, 1.65-1.88 s
#: in one piece). With more threads the gram stays in one piece: each block's operations are
#: parallel regions that first wake the sleeping workers (``OMP_WAIT_POLICY=PASSIVE``, as the
#: CLI sets), and on two threads the solve's grams took 1.85 s in blocks against 1.14 s.
_GRAM_BLOCK_BYTES = 1 << 20


def _as_mask(mask: Tensor, who: str) -> Tensor:
    if not isinstance(mask, Tensor):
        mask = as_tensor(mask)  # np.flip(m) too
    if mask.is_complex() or mask.ndim == 0:
        raise ValueError(f"{who}: mask must be a real vector (W,) or array (..., H, W)")
    given = tuple(mask.shape)
    if mask.ndim == 1:
        mask = mask[None, :]
    if mask.ndim == 4 and mask.shape[:2] == (1, 1) and mask.shape[-1] == 1 and mask.shape[-2] > 1:
        raise ValueError(f"{who}: mask {tuple(mask.shape)} is fastMRI's layout for k-space stored as "
                         "real pairs (coils, H, W, 2); here k-space is complex (..., H, W), so a "
                         "column mask is (W,) or (1, W): pass mask.reshape(1, -1)")
    if not torch.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{who}: mask must contain only 0 and 1")
    if mask.requires_grad and torch.is_grad_enabled():  # .bool() would drop its gradient
        raise ValueError(f"{who}: the mask requires grad, but the operator holds it as 0 / 1 "
                         "samples with no derivative: pass mask.detach() (a learned mask needs "
                         "its own relaxation, e.g. a weighting operator)")
    mask = mask.bool()
    empty = ~mask.reshape(-1, mask.shape[-2] * mask.shape[-1]).any(-1)
    if bool(empty.any()):  # the operator is zero there: every reconstruction returned zeros
        which = f": {int(empty.sum())} of its {empty.numel()} masks are" if empty.numel() > 1 else " is"
        raise ValueError(f"{who}: mask {given}{which} all zero: no k-space sample is "
                         "kept (an all-zero mask gives an all-zero image)")
    return mask


def _sum_of_squares_max(maps: Tensor) -> Tensor:
    """``max over (H, W) of sum_c |maps_c|^2``, shaped ``(..., 1, 1)`` for maps ``(..., C, H, W)``."""
    return sum_abs2(maps.detach(), -3).amax(dim=(-2, -1), keepdim=True)


def coil_reduce(maps: Tensor, coil_images: Tensor) -> Tensor:
    """``sum_c conj(maps[c]) * coil_images[c]`` over axis -3: the coil reduction of every SENSE
    adjoint, :func:`mrirecon.functional.coil_combine` (``einsum``, differentiable).

    Outside autograd the column-mask gram reduces coils with an in-place product and a sum
    instead (:meth:`SenseOperator._gram_columns_nograd`), a third of this ``einsum``'s time at
    15 x 320 x 368 on one CPU thread."""
    return coil_combine(coil_images, maps)


def _checked_maps(maps: Tensor, who: str) -> Tensor:
    """Coil maps ``(..., C, H, W)``: real maps become complex (the adjoint's ``einsum`` needs one
    dtype); NaN / Inf are refused (CG took a NaN right-hand side for converged and returned 0)."""
    if not isinstance(maps, Tensor):  # a numpy array was told its shape was wrong
        raise TypeError(f"{who}: maps must be a torch.Tensor (..., coils, H, W), got "
                        f"{type(maps).__name__} (torch.from_numpy(maps) for a numpy array)")
    if maps.ndim < 3:
        raise ValueError(f"{who}: maps must have the shape (..., coils, H, W), got "
                         f"{tuple(maps.shape)}")
    if not maps.is_complex():
        if not maps.is_floating_point():
            raise ValueError(f"{who}: maps must be complex (or real floating point), got {maps.dtype}")
        maps = maps.to(torch.complex128 if maps.dtype == torch.float64 else torch.complex64)
    if maps.requires_grad:  # estimated maps: training's business
        return maps
    finite, nonzero = finite_and_nonzero(maps)
    if not finite:
        bad = int((~torch.isfinite(maps)).any(dim=-3).sum())
        raise NonFiniteError(f"{who}: the coil maps hold NaN or Inf values at {bad} pixel(s) (maps "
                         "divided by a zero sum of squares outside a crop?)")
    if not nonzero:  # every reconstruction through them returned an all-zero image
        raise ValueError(f"{who}: the coil maps {tuple(maps.shape)} are all zero (an ESPIRiT crop "
                         "that zeroed every pixel, or a calibration band without signal?)")
    return maps


def maps_support(maps: Tensor) -> Tensor:
    """``(..., H, W)`` boolean: the pixels where at least one coil map ``(..., C, H, W)`` is
    non-zero (capability :class:`~mrirecon.core.HasImageSupport` of the operators built on
    maps: outside it a pixel is in their null space)."""
    return (maps != 0).any(dim=-3)


class MapsSupport:
    """Capability :class:`~mrirecon.core.HasImageSupport` of an operator on coil maps
    ``self.maps`` (:class:`Sensitivity`, :class:`SenseOperator`, ``NufftSense``):
    :func:`maps_support` of its maps."""

    @property
    def support(self) -> Tensor:
        return maps_support(self.maps)


def _sense_mask(mask: Tensor, maps: Tensor) -> Tensor:
    """``SenseOperator``'s mask: :func:`_as_mask`, :func:`_coil_mask`, and its H and W against
    the maps' (1 or equal)."""
    mask = _coil_mask(_as_mask(mask, "SenseOperator"), maps, "SenseOperator")
    h, w = maps.shape[-2:]
    for got, want, axis in ((mask.shape[-2], h, "H"), (mask.shape[-1], w, "W")):
        if got not in (1, want):
            raise ValueError(f"SenseOperator: mask {tuple(mask.shape)} does not match maps "
                             f"{tuple(maps.shape)} along {axis}")
    return mask


def _coil_mask(mask: Tensor, maps: Tensor, who: str) -> Tensor:
    """A full 2-D mask with an axis aligned to the coils (``mask = y != 0``, ``(C, H, W)``) -> one
    pattern for all coils; refused when the coils' patterns differ (it would broadcast as a batch
    of masks)."""
    c = maps.shape[-3]
    if mask.ndim == maps.ndim >= 4 and mask.shape[-3] == 1:
        # (B, 1, H, W) beside maps (B, C, H, W): a coil axis of one, as (y != 0).any(1,
        # keepdim=True) gives; read as a batch (B, 1) of masks it made A.H(y) (B, 1, H, W)
        # (B x B images for B > 1), VarNet failed to unpack, MoDL returned (B, 1, H, W)
        return mask.squeeze(-3)
    if c == 1 or mask.ndim < 3 or mask.ndim != maps.ndim or mask.shape[-3] != c or mask.shape[-2] == 1:
        return mask  # (B, 1, W) column masks of a batch stay a batch
    if bool((mask == mask[..., :1, :, :]).all()):
        return mask[..., :1, :, :].squeeze(-3)
    raise ValueError(f"{who}: mask {tuple(mask.shape)} has an axis of the coil count ({c}) and the "
                     "coils' sampling patterns differ; a Cartesian SENSE operator samples every coil "
                     "alike. If these are masks of a batch, give the maps a batch axis (maps[None])")


def _bound_shape(x: Tensor, domain_ndim: int, value: Tensor) -> Tensor:
    """``value`` (a scalar, or per-system bounds ``(..., 1, 1)``) broadcast to
    ``x.shape[:b] + (1,) * domain_ndim``, the shape :func:`~mrirecon.core.max_eigenvalue`
    returns for ``b = x.ndim - domain_ndim`` batch axes."""
    b = max(x.ndim - domain_ndim, 0)
    value = torch.as_tensor(value, dtype=x.real.dtype, device=x.device)
    if value.ndim < domain_ndim:
        value = value.reshape((1,) * domain_ndim)
    if value.ndim > b + domain_ndim:  # more systems than the image has axes for: the worst
        value = value.reshape(-1, *value.shape[-(b + domain_ndim):]).amax(0)
    return value.expand(x.shape[:b] + (1,) * domain_ndim).clone()


def check_batch_axes(op: LinearOperator, v: Tensor, core: int, who: str) -> None:
    """Refuse an input whose batch axes (before its last ``core``) do not broadcast with the
    leading axes of ``op.maps`` ``(..., C, H, W)`` (and of ``op.mask`` ``(..., H, W)``): maps
    for 2 slices applied to 3 failed in torch with "einsum(): dimension 0 covered by ellipsis
    ...", naming neither the operator nor a shape."""
    batch = tuple(v.shape[: max(v.ndim - core, 0)])
    mask = getattr(op, "mask", None)
    for what, own in (("maps", op.maps), ("mask", mask)):
        if own is None:
            continue
        lead = tuple(own.shape[: own.ndim - (3 if what == "maps" else 2)])
        if not all(a == b or 1 in (a, b) for a, b in zip(reversed(batch), reversed(lead))):
            raise ValueError(f"{who}: input {tuple(v.shape)} has batch axes {batch}, which do not "
                             f"match the {what} {tuple(own.shape)} (batch axes {lead}): give one "
                             f"{'set of maps' if what == 'maps' else 'mask'} per slice or one for all")


def _mask_shape(mask: Tensor) -> tuple[int | None, int | None]:
    h, w = mask.shape[-2], mask.shape[-1]
    return (None if h == 1 else h, None if w == 1 else w)


class Sampling(LinearOperator, HasSamplingMask):
    """``P``: keep the sampled k-space locations, zero the others (a self-adjoint projection).

    Declares :class:`~mrirecon.core.HasSamplingMask`: its data are MRI k-space.

    Parameters
    ----------
    mask
        Boolean (or 0/1) mask, ``(W,)`` for a column mask or anything broadcastable to
        ``(..., H, W)``.
    """

    def __init__(self, mask: Tensor) -> None:
        mask = _as_mask(mask, "Sampling")
        shape = _mask_shape(mask)
        super().__init__(shape, shape)
        self.register_buffer("mask", mask)

    def _forward(self, x: Tensor) -> Tensor:
        return x * self.mask

    _adjoint = _forward
    _gram = _forward

    def gram_bound(self, x: Tensor) -> Tensor:
        """``1``: a 0/1 mask is a projection."""
        return _bound_shape(x, 2, torch.ones(()))

    # capabilities: P = M I (expand and reduce are the identity); P is an orthogonal
    # projection, so it is its own pseudo-inverse
    def expand(self, x: Tensor) -> Tensor:
        """``E x = x`` (``P = M E`` with ``E = I``)."""
        return x

    def reduce(self, k: Tensor) -> Tensor:
        """``E^H k = k``."""
        return k

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """``P^+ = P``."""
        return self.forward(y)


class Fourier(LinearOperator):
    """``F``: centred orthonormal 2-D FFT over the last two axes (unitary: ``F^H F = I``)."""

    def __init__(self, shape: tuple[int, int] | None = None) -> None:
        shape = tuple(shape) if shape is not None else (None, None)
        super().__init__(shape, shape)

    def _forward(self, x: Tensor) -> Tensor:
        return fft2c(x)

    def _adjoint(self, y: Tensor) -> Tensor:
        return ifft2c(y)

    def _gram(self, x: Tensor) -> Tensor:
        return x

    def gram_bound(self, x: Tensor) -> Tensor:
        """``1`` (unitary)."""
        return _bound_shape(x, 2, torch.ones(()))

    def pseudo_inverse(self, y: Tensor) -> Tensor:
        """``F^+ = F^H`` (unitary)."""
        return self.adjoint(y)


class Sensitivity(MapsSupport, LinearOperator):
    """``S``: image ``(..., H, W)`` -> coil images ``(..., C, H, W)`` by the coil maps.

    Parameters
    ----------
    maps
        Complex coil sensitivities ``(..., C, H, W)``; leading axes broadcast against the batch
        (one set of maps per sample is ``(B, C, H, W)``).
    """

    def __init__(self, maps: Tensor) -> None:
        maps = _checked_maps(maps, "Sensitivity")
        c, h, w = maps.shape[-3:]
        super().__init__((h, w), (c, h, w))
        self.register_buffer("maps", maps)

    @property
    def num_coils(self) -> int:
        return self.maps.shape[-3]

    def _forward(self, x: Tensor) -> Tensor:
        check_batch_axes(self, x, 2, self.name)
        return self.maps * x.unsqueeze(-3)

    def _adjoint(self, y: Tensor) -> Tensor:
        check_batch_axes(self, y, 3, f"{self.name}.H")
        return coil_reduce(self.maps, y)

    def _gram(self, x: Tensor) -> Tensor:
        check_batch_axes(self, x, 2, f"{self.name}.gram")
        return torch.sum(self.maps.abs() ** 2, dim=-3) * x

    def gram_bound(self, x: Tensor) -> Tensor:
        """``max_pixels sum_c |S_c|^2`` per set of maps: ``S^H S`` is that diagonal."""
        return _bound_shape(x, 2, _sum_of_squares_max(self.maps))


class SenseOperator(MapsSupport, LinearOperator, HasSamplingMask):
    """Multi-coil Cartesian operator ``A = P F S`` with a closed-form normal operator.

    Declares :class:`~mrirecon.core.HasSamplingMask` (its data are MRI k-space) and has
    :class:`~mrirecon.core.CoilExpandReduce` (``expand = F S``, ``reduce = S^H F^H``).

    ``A^H A x = S^H F^H P F S x``; because a circular convolution commutes with the FFT shifts,
    the gram runs on uncentred FFTs with the mask shifted once per mask tensor, i.e. two plain
    FFTs per coil and nothing else. For a column mask ``(1, W)`` (every fastMRI mask) the 2-D
    transform factorises, ``F^H P F = I_H (x) F_W^H P_W F_W``, so the gram needs only 1-D FFTs
    along ``W``.

    Parameters
    ----------
    maps
        ``(..., C, H, W)`` complex coil sensitivities.
    mask
        ``(W,)`` column mask or broadcastable to ``(..., H, W)``.
    """

    def __init__(self, maps: Tensor, mask: Tensor) -> None:
        maps = _checked_maps(maps, "SenseOperator")
        mask = _sense_mask(mask, maps)
        c, h, w = maps.shape[-3:]
        super().__init__((h, w), (c, h, w))
        self.register_buffer("maps", maps)
        self.register_buffer("mask", mask)

    def __setattr__(self, name: str, value) -> None:
        """``op.mask = new_mask`` is checked and converted as the constructor's ``mask`` is (a
        ``(W,)`` vector, the coils' own ``y != 0`` ...), so the operator and its gram use it."""
        if name == "mask" and "mask" in self.__dict__.get("_buffers", {}) and value is not None:
            value = _sense_mask(value, self.maps)
        super().__setattr__(name, value)

    @property
    def num_coils(self) -> int:
        return self.maps.shape[-3]

    def _forward(self, x: Tensor) -> Tensor:
        check_batch_axes(self, x, 2, self.name)
        return fft2c(self.maps * x.unsqueeze(-3)) * self.mask.unsqueeze(-3)

    def gram_bound(self, x: Tensor) -> Tensor:
        """``||P F S||^2 <= ||S||^2 = max_pixels sum_c |S_c|^2`` per set of maps (``P`` is a
        projection, ``F`` unitary). ESPIRiT or RSS-normalised maps give 1, tight whenever the
        fully sampled centre covers the maps' bandwidth - the constant BART's ``pics`` assumes
        for its step unless ``-e`` asks for a power iteration."""
        return _bound_shape(x, 2, _sum_of_squares_max(self.maps))

    def _adjoint(self, y: Tensor) -> Tensor:
        check_batch_axes(self, y, 3, f"{self.name}.H")
        return coil_reduce(self.maps, ifft2c(y * self.mask.unsqueeze(-3)))

    def _derived(self, slot: str, source: Tensor, make, *extra):
        """``make()``, a value derived from the buffer ``source``, kept in attribute ``slot``
        while ``source`` is the same live tensor (a weak reference: the buffer is not kept alive)
        with the same storage, version, dtype, device and layout, and ``extra`` is the same.
        So replacing the buffer (``op.maps = maps_k``), moving it (``op.to(...)``, which makes a
        new tensor) or editing it in place rebuilds the value. A key of the data pointer and
        version alone matched new maps allocated at the address of freed ones (version 0): the
        gram used another slice's ``conj(maps)``, 1.18 off ``A^H A``."""
        if source.is_inference():  # no version counter: nothing to key a cache on
            return make()
        state = (source.data_ptr(), source._version, source.dtype, source.device,
                 tuple(source.shape), source.stride(), *extra)
        cached = self.__dict__.get(slot)
        if cached is not None and cached[0]() is source and cached[1] == state:
            return cached[2]
        # built as a normal tensor also under torch.inference_mode (reconstruct_slices, the
        # README's MoDL example), as the wavelet, NUFFT and CT caches are: it was rebuilt on
        # every call there (a gram +50-65 %, MoDL on a 640 x 320 slice +22-43 %)
        with torch.inference_mode(False):
            value = make()
        self.__dict__[slot] = (weakref.ref(source), state, value)
        return value

    def __getstate__(self):
        """Pickling and ``copy.deepcopy`` leave out the caches of :meth:`_derived` (weak
        references cannot be pickled; a copy rebuilds them)."""
        state = dict(self.__dict__)
        for slot in _DERIVED_SLOTS:
            state.pop(slot, None)
        return state

    def _unshifted_mask(self) -> Tensor:
        """``ifftshift(mask)``, the mask of the uncentred FFTs of the gram, made once per mask
        tensor and rebuilt when the mask is replaced, moved or edited in place
        (:meth:`_derived`). A buffer made at construction had kept the gram on the old mask
        after ``op.mask = ...`` while ``A`` and ``A.H`` used the new one (CG-SENSE: relative
        error 2.67, no word)."""
        return self._derived("_unshifted_cache", self.mask,
                             lambda: torch.fft.ifftshift(self.mask, dim=(-2, -1)))

    def _conj_maps(self) -> Tensor:
        """``conj(maps)`` materialised once per maps tensor (the no-grad gram multiplies by it in
        place); rebuilt when the maps are replaced, moved or modified in place
        (:meth:`_derived`)."""
        return self._derived("_conj_cache", self.maps, lambda: self.maps.conj().resolve_conj())

    def _gram(self, x: Tensor) -> Tensor:
        check_batch_axes(self, x, 2, f"{self.name}.gram")
        if self.mask.shape[-2] == 1 and not (torch.is_grad_enabled()
                                             and (x.requires_grad or self.maps.requires_grad)):
            return self._gram_columns_nograd(x)
        coil_images = self.maps * x.unsqueeze(-3)
        mask = self._unshifted_mask().unsqueeze(-3)
        if self.mask.shape[-2] == 1:  # column mask: the FFT along H cancels
            # unnormalised forward + 1/W inverse == the orthonormal pair, one scaling pass fewer;
            # the mask is applied in place (the FFT's backward does not need its output)
            k = _masked(torch.fft.fft(coil_images, dim=-1), mask)
            return coil_reduce(self.maps, torch.fft.ifft(k, dim=-1))
        k = _masked(uncentred_fft2(coil_images), mask)
        return coil_reduce(self.maps, uncentred_ifft2(k))

    def _gram_columns_nograd(self, x: Tensor) -> Tensor:
        """The column-mask gram outside autograd: 1-D FFTs along W with the inverse's ``1/W``
        folded into the (cached, real) mask, and the coil reduction as an in-place product
        with the cached ``conj(maps)`` plus a sum over coils (a third of the time of the
        batched-matrix einsum at 15 x 320 x 368, one thread; see benchmarks/README.md), in
        blocks of rows of ``_GRAM_BLOCK_BYTES`` coil-image bytes."""
        w = self.maps.shape[-1]
        # the scale in the precision of the result: complex128 data through complex64 maps
        # had 1/W rounded to float32 (1.5e-8 from A.H(A(x)), and in cg_sense's result)
        real = real_dtype(torch.promote_types(self.maps.dtype, x.dtype))
        m = self._unshifted_mask()
        scaled = self._derived("_scaled_mask", m, lambda: m.to(real) / w, real, w)
        scaled, conj_maps = scaled.unsqueeze(-3), self._conj_maps()
        maps, x = self.maps, x.unsqueeze(-3)
        # one row's coil images: their broadcast shape and dtype (torch.broadcast_shapes
        # would import SymPy, ~0.7 s of a fresh process)
        # (a batch of masks widens it: maps (C, H, W), masks (B, 1, W), one image (H, W))
        first = maps[..., :1, :] * x[..., :1, :] * scaled[..., :1, :]
        h = maps.shape[-2]
        out = first.new_empty(first.shape[:-3] + (h, w))
        # Rows are independent (1-D FFTs along W, a per-pixel coil sum), so on one CPU thread
        # the gram runs on blocks of rows whose coil images fit the L2 cache: the five passes
        # over them stay in cache, and no buffer is large enough for the allocator to map fresh
        # pages. The arithmetic per element is unchanged (bit-identical results).
        rows = h
        if x.device.type == "cpu" and torch.get_num_threads() == 1:
            rows = max(1, _GRAM_BLOCK_BYTES // (first.numel() * first.element_size()))
        for r in range(0, h, rows):
            block = slice(r, r + rows)
            k = _masked(torch.fft.fft(maps[..., block, :] * x[..., block, :], dim=-1), scaled)
            coil_images = torch.fft.ifft(k, dim=-1, norm="forward").mul_(conj_maps[..., block, :])
            torch.sum(coil_images, dim=-3, out=out[..., block, :])
        return out

    # capability CoilExpandReduce (A = M E, E = F S), with HasSamplingMask (.mask): the
    # pieces for models that work in coil k-space (E2E-VarNet, k-space data consistency)
    def expand(self, x: Tensor) -> Tensor:
        """``F S x``: fully sampled multi-coil k-space of an image."""
        return fft2c(self.maps * x.unsqueeze(-3))

    def reduce(self, k: Tensor) -> Tensor:
        """``S^H F^H k``: coil-combined image of (any) multi-coil k-space."""
        return coil_reduce(self.maps, ifft2c(k))

    def with_maps(self, maps: Tensor) -> SenseOperator:
        """Same sampling, new sensitivities (e.g. maps estimated by a network)."""
        return SenseOperator(maps, self.mask)


_DERIVED_SLOTS = ("_conj_cache", "_scaled_mask", "_unshifted_cache")


def _masked(k: Tensor, mask: Tensor) -> Tensor:
    """``k * mask``, in place unless the mask widens ``k`` (a batch of masks on one image's
    coil k-space: ``A.gram`` raised torch's broadcast error where ``A.H(A(x))`` worked)."""
    if broadcasts_to(tuple(mask.shape), tuple(k.shape)):
        return k.mul_(mask)
    return k * mask


def sense(maps: Tensor, mask: Tensor) -> SenseOperator:
    """The multi-coil operator ``P F S`` for coil maps ``(..., C, H, W)`` and a mask."""
    return SenseOperator(maps, mask)


def single_coil(mask: Tensor, shape: tuple[int, int] | None = None) -> LinearOperator:
    """The single-coil operator ``P F`` on images ``(..., H, W)`` (no coil axis)."""
    return Sampling(mask) @ Fourier(shape)
