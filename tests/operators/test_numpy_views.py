"""Masks given as numpy views with a negative stride (``np.flip(m)``, ``m[::-1]``, as a user
mirrors a sampling pattern) work as their copies do; torch refuses such arrays ("At least one
stride in the given numpy array is negative"), and ``sense``, ``single_coil``, ``Sampling``,
``grappa`` and ``ssdu_split`` passed that on naming no argument."""

from __future__ import annotations

import numpy as np
import torch

from mrirecon.operators import Sampling, sense, single_coil
from mrirecon.recon.grappa import grappa
from mrirecon.sampling.split import ssdu_split


def _mask(w=24):
    m = np.zeros(w, bool)
    m[::3] = True
    m[w // 2 - 5: w // 2 + 5] = True
    m[1] = True  # asymmetric: the flip is another mask
    return m


def test_flipped_numpy_masks_act_as_their_copies():
    m = np.flip(_mask())
    assert m.strides[0] < 0
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 20, 24, dtype=torch.complex64, generator=g)
    x = torch.randn(20, 24, dtype=torch.complex64, generator=g)
    assert torch.equal(sense(maps, m)(x), sense(maps, m.copy())(x))
    assert torch.equal(single_coil(m)(x), single_coil(m.copy())(x))
    m2 = np.ones((20, 24))[::-1] * m
    assert torch.equal(Sampling(m2)(x), Sampling(m2.copy())(x))
    a, b = (ssdu_split(mm, (20, 24), torch.Generator().manual_seed(1)) for mm in (m, m.copy()))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_grappa_takes_a_flipped_numpy_mask():
    w, h = 24, 20
    m = np.flip(_mask(w))
    g = torch.Generator().manual_seed(2)
    k = torch.randn(4, h, w, dtype=torch.complex64, generator=g) * torch.from_numpy(m.copy())
    torch.testing.assert_close(grappa(k, 10, (3, 3), mask=m), grappa(k, 10, (3, 3), mask=m.copy()),
                               rtol=0, atol=0)
