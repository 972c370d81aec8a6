"""Self-supervised data splits: acquired k-space points (SSDU) and CT views (Noise2Inverse).

SSDU (Yaman et al., MRM 2020) splits the acquired k-space locations ``Omega`` into two disjoint
sets: ``Theta`` (the network's data consistency, i.e. the mask of the operator it is given) and
``Lambda`` (held out; the loss compares the network's k-space there with the measurement).
:func:`ssdu_split` draws ``Lambda`` from ``Omega`` minus a small central block that always stays
in ``Theta`` (the network needs the lowest frequencies to place the image), uniformly or with a
Gaussian density centred on k-space (std ``shape / 4`` per axis, as in SSDU's reference code),
so the loss set mimics the variable density of the acquisition. Masks are 2-D ``(H, W)``: a
Cartesian column mask becomes a point mask, which :class:`~mrirecon.operators.mri.SenseOperator`
accepts as any other mask.

For CT, :func:`split_views` partitions the acquired views into disjoint subsets (interleaved, as
Noise2Inverse's angular splits, or random); each subset's reconstruction is scored against the
other subsets' measurements through the projector restricted to those views.

Every draw comes from an explicit ``torch.Generator``. A split that the acquired points or views
cannot give with the settings asked raises :class:`SplitError`, which names the parameter to
change; callers add their own key (``loss.ssdu.ratio``, ``adapt.acs_block``) and the file.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from mrirecon.core.checks import as_tensor

Selection = Literal["uniform", "gaussian"]


class SplitError(ValueError):
    """No split of these acquired points / views can be drawn with these settings (the data
    are valid; a setting is not, for them). ``setting`` is the parameter to change (``ratio``,
    ``acs_block``, ``parts``) and ``reason`` starts with its value, so that a caller can write
    ``f"{its key} {reason}"`` (``loss.ssdu.ratio 0.0001 of the 832 acquired points ...``)."""

    def __init__(self, where: str, setting: str, reason: str) -> None:
        super().__init__(f"{where}: {setting} {reason}")
        self.setting, self.reason = setting, reason


def _points_mask(mask: Tensor, shape: tuple[int, int]) -> Tensor:
    """``mask`` (``(W,)``, ``(1, W)``, ``(H, 1)`` or ``(H, W)``, 0/1) -> ``(H, W)`` bool."""
    if not isinstance(mask, Tensor):
        mask = as_tensor(mask)
    if mask.is_complex() or mask.ndim == 0:
        raise ValueError("ssdu_split: mask must be a real (W,) or (H, W) 0/1 tensor")
    m = mask.reshape(-1) if mask.ndim > 2 and mask.numel() == shape[-1] else mask
    if m.ndim == 1:
        m = m[None, :]
    if m.ndim != 2 or m.shape[0] not in (1, shape[0]) or m.shape[1] not in (1, shape[1]):
        raise ValueError(f"ssdu_split: mask {tuple(mask.shape)} does not fit k-space {tuple(shape)}")
    return (m != 0).expand(shape).clone()


def centre_block(shape: tuple[int, int], block: tuple[int, int]) -> Tensor:
    """``(H, W)`` bool: the ``block`` rows x columns around the k-space centre (``H // 2``,
    ``W // 2``, the DC sample of a centred FFT)."""
    h, w = shape
    out = torch.zeros(shape, dtype=torch.bool)
    bh, bw = min(max(int(block[0]), 0), h), min(max(int(block[1]), 0), w)
    r0, c0 = h // 2 - bh // 2, w // 2 - bw // 2
    out[r0:r0 + bh, c0:c0 + bw] = True
    return out


def loss_count(omega: Tensor, candidates: Tensor, ratio: float, acs_block: tuple[int, int]) -> int:
    """Points :func:`ssdu_split` moves to the loss set: ``round(ratio * |omega|)``, at most the
    acquired points outside the ACS block (``candidates``). :class:`SplitError` when that is 0,
    saying why: no point outside the block (``acs_block``), or a ``ratio`` that rounds to no
    point (before, both read "no acquired point outside the ACS block", also when hundreds were)."""
    acquired, outside = int(omega.sum()), int(candidates.sum())
    if outside < 1:
        raise SplitError("ssdu_split", "acs_block", f"{tuple(acs_block)} leaves none of the "
                         f"{acquired} acquired points outside the central block (rows, columns) "
                         "that always stays in the data-consistency set: no point is left to hold "
                         "out; lower it")
    count = round(float(ratio) * acquired)
    if count < 1:
        raise SplitError("ssdu_split", "ratio", f"{float(ratio):g} of the {acquired} acquired "
                         f"points rounds to {count} points to hold out ({outside} lie outside the "
                         f"ACS block {tuple(acs_block)}); at least {1.0 / acquired:.2g} holds out one")
    return min(count, outside)


def ssdu_split(
    mask: Tensor,
    shape: tuple[int, int],
    generator: torch.Generator,
    *,
    ratio: float = 0.4,
    selection: Selection = "gaussian",
    acs_block: tuple[int, int] = (4, 4),
) -> tuple[Tensor, Tensor]:
    """Split the acquired points of ``mask`` into disjoint ``(dc, loss)`` masks.

    Parameters
    ----------
    mask
        Acquired locations, ``(W,)`` column mask or ``(H, W)`` point mask (0/1).
    shape
        ``(H, W)`` of the k-space.
    generator
        The only source of randomness (seed it per sample and epoch).
    ratio
        ``|Lambda| / |Omega|``: fraction of the acquired points moved to the loss set (SSDU's
        ``rho``, 0.4 in the paper), ``0 < ratio < 1``. Counted over all acquired points; the
        loss set is drawn from the points outside the ACS block.
    selection
        ``"uniform"`` or ``"gaussian"`` (probability ``exp(-d_y^2 / 2 s_y^2 - d_x^2 / 2 s_x^2)``
        with ``s = shape / 4``, distance from the centre).
    acs_block
        ``(rows, cols)`` central block whose acquired points always stay in the DC set.

    Returns
    -------
    dc, loss
        ``(H, W)`` bool masks with ``dc | loss == mask`` and ``dc & loss`` empty.
    """
    if not 0.0 < float(ratio) < 1.0:
        raise ValueError(f"ssdu_split: ratio must be in (0, 1), got {ratio!r}")
    if selection not in ("uniform", "gaussian"):
        raise ValueError(f"ssdu_split: selection must be 'uniform' or 'gaussian', got {selection!r}")
    if not isinstance(generator, torch.Generator):
        raise ValueError("ssdu_split: generator must be a torch.Generator (explicit seed)")
    shape = (int(shape[-2]), int(shape[-1]))
    omega = _points_mask(mask.cpu() if isinstance(mask, Tensor) else mask, shape)
    candidates = omega & ~centre_block(shape, acs_block)
    idx = torch.nonzero(candidates.reshape(-1)).reshape(-1)
    count = loss_count(omega, candidates, ratio, acs_block)
    if selection == "uniform":
        weights = torch.ones(idx.numel(), dtype=torch.float64)
    else:
        h, w = shape
        rows = (idx // w).double() - h // 2
        cols = (idx % w).double() - w // 2
        weights = torch.exp(-0.5 * (rows / (h / 4)) ** 2 - 0.5 * (cols / (w / 4)) ** 2)
        weights = weights.clamp_min(1e-300)  # every candidate stays drawable
    chosen = idx[torch.multinomial(weights, count, replacement=False, generator=generator)]
    loss = torch.zeros(shape[0] * shape[1], dtype=torch.bool)
    loss[chosen] = True
    loss = loss.reshape(shape)
    return omega & ~loss, loss


def split_views(num_views: int, parts: int = 2, *, generator: torch.Generator | None = None,
                interleaved: bool = True) -> list[Tensor]:
    """Partition ``num_views`` acquired views into ``parts`` disjoint, sorted index sets.

    ``interleaved`` (Noise2Inverse): view ``v`` goes to subset ``(v + offset) % parts``, each
    subset covering the whole arc; ``offset`` is drawn from ``generator`` when given. Otherwise
    a random partition (``generator`` required) of nearly equal sizes.
    """
    n, k = int(num_views), int(parts)
    if k < 2 or n < k:
        raise SplitError("split_views", "parts", f"{k} for {n} views: need 2 <= parts <= views "
                         "(each part at least one view)")
    if interleaved:
        offset = 0 if generator is None else int(torch.randint(k, (1,), generator=generator))
        labels = (torch.arange(n) + offset) % k
    else:
        if not isinstance(generator, torch.Generator):
            raise ValueError("split_views: a random partition needs a torch.Generator")
        labels = torch.empty(n, dtype=torch.long)
        labels[torch.randperm(n, generator=generator)] = torch.arange(n) % k
    return [torch.nonzero(labels == j).reshape(-1) for j in range(k)]
