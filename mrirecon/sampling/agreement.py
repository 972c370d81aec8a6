"""Whether k-space fits a sampling mask: one rule for ``recon.run`` (the data ``y`` against the
operator's mask) and the pipeline's ``reconcile_mask`` (a file's k-space against its mask)."""

from __future__ import annotations

from torch import Tensor


def mask_disagreement(held: Tensor, keep: Tensor,
                      inside: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Where data and a mask disagree, as ``(empty, dropped)`` boolean tensors.

    ``empty``: the mask samples there but the data hold nothing (only where ``inside``: zero
    padding outside the acquired span is never "empty"); ``dropped``: the data hold something
    the mask leaves out. Either alone is ordinary (data undersampled by this mask or a subset of
    it; fully sampled data that the mask undersamples); both at once mean the data were
    undersampled with another mask (fftshifted, flipped, transposed, another seed).

    Parameters
    ----------
    held
        Where the data hold a nonzero value (bool; columns ``(..., W)`` or samples
        ``(..., H, W)``).
    keep
        Where the mask samples (bool), broadcastable with ``held``.
    inside
        Where a sample of the mask may count as empty (bool), or ``None`` for everywhere.
    """
    empty = keep & ~held
    if inside is not None:
        empty = empty & inside.to(empty.device)
    return empty, ~keep & held


def held_span(held: Tensor, dims: int = 1) -> Tensor:
    """``held``'s span (bool, its shape): between the first and the last held entry along the
    last axis (``dims=1``: columns), and for ``dims=2`` also along the second-to-last (per row
    and per column: a fully sampled ellipse spans no corner, a zero-padded band no edge)."""
    span = _between(held, -1)
    if dims == 2:
        span = span & _between(held, -2)
    return span


def _between(held: Tensor, dim: int) -> Tensor:
    after_first = held.cumsum(dim) > 0
    before_last = held.flip(dim).cumsum(dim).flip(dim) > 0
    return after_first & before_last
