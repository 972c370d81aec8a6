"""Dtype moves of operators that keep each buffer real or complex.

``nn.Module.to(dtype)`` casts every floating-point and complex buffer to ``dtype`` itself.
For an operator that mixed real and complex constants this was wrong both ways:
``op.to(torch.complex128)`` (the move ``docs/architecture.md`` gives) made the NUFFT's real
trajectory, density weights and Toeplitz kernel complex, and ``A x`` then failed with
"nufft: trajectory must be real" (the shipped radial models with
"pipe_menon_density: trajectory must be real (*K, 2)"); CT projectors' interpolation tables and
the patch counts became complex too (twice the memory, torch's "Casting complex values to real
discards the imaginary part" at use). ``op.to(torch.float64)`` dropped the imaginary part of
coil maps and phases: SENSE and NUFFT-SENSE gave results 65-78 % off with only that warning.

Every :class:`~mrirecon.core.LinearOperator` (``LinearOperator._apply``, so also the ones a
user writes and the sums and products of operators) makes a dtype move set the precision and
leave the kind:
``complex128`` and ``float64`` both mean double precision (real buffers become ``float64``,
complex ones ``complex128``), ``complex64`` and ``float32`` single. Device moves and every other
``_apply`` (``cuda()``, ``double()``, ``share_memory()``) are unchanged; integer and boolean
buffers are never cast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

#: The complex dtype of each real precision, and the real dtype of each complex one. Use these
#: (or :func:`real_dtype`), not ``dtype.to_real()`` / ``to_complex()``: before torch 2.4 those
#: returned the dtype without taking a reference, so every call lowered ``torch.float64``'s
#: reference count by one until the interpreter freed it (a segmentation fault after a few
#: thousand calls: the column-mask SENSE gram crashed on torch 2.1-2.3, which the floor then,
#: ``torch>=2.1``, admitted; it is 2.4 now, for other reasons).
COMPLEX_OF = {torch.float32: torch.complex64, torch.float64: torch.complex128}
REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64,
           torch.complex32: torch.float16}


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of ``dtype``'s precision (``dtype`` itself where it is real)."""
    return REAL_OF.get(dtype, dtype)


def kind_keeping(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``fn`` (a tensor conversion of ``nn.Module._apply``) made to keep real tensors real and
    complex ones complex, at the precision ``fn`` chose."""

    def apply(t: Tensor) -> Tensor:
        if not (t.is_floating_point() or t.is_complex()):
            return fn(t)
        # what fn makes of this dtype, on an empty tensor (which casts without torch's one-time
        # "Casting complex values to real" warning, so that stays for the user's own casts)
        probe = fn(t.new_empty((0,)))
        if not isinstance(probe, Tensor) or probe.is_complex() == t.is_complex():
            return fn(t)
        if t.is_complex():  # a move to a real dtype: the complex dtype of its precision
            if probe.dtype not in (torch.float32, torch.float64):  # no complex half here
                return t.to(device=probe.device)
            return torch.complex(fn(t.real.contiguous()), fn(t.imag.contiguous()))
        return t.to(device=probe.device, dtype=probe.real.dtype)  # real at the complex precision

    return apply

