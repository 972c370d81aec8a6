"""One patch-extraction kernel with an explicit border rule (EPLL/patch GMM: ``cover``, DLMRI:
``drop``): layouts, round trip patches -> image, and ``drop`` = ``torch.nn.functional.unfold``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mrirecon.functional.patches import (
    extract_patches,
    fold_patches,
    patch_counts,
    patch_index,
    patch_starts,
)
from mrirecon.operators import Patches


def test_patch_starts_border_rules():
    assert patch_starts(10, 4, 3, "cover") == [0, 3, 6]  # 6 = 10 - 4 reached by the strides
    assert patch_starts(11, 4, 3, "cover") == [0, 3, 6, 7]  # shifted last patch touches the border
    assert patch_starts(11, 4, 3, "drop") == [0, 3, 6]  # pixel 10 is in no patch
    assert patch_starts(11, 4, 1, "drop") == patch_starts(11, 4, 1, "cover") == list(range(8))
    with pytest.raises(ValueError, match="border must be one of"):
        patch_starts(11, 4, 3, "wrap")
    with pytest.raises(ValueError, match="patch size 12 exceeds"):
        patch_starts(11, 12, 1)
    with pytest.raises(ValueError, match="stride must be >= 1"):
        patch_starts(11, 4, 0)


@pytest.mark.parametrize("border", ["cover", "drop"])
@pytest.mark.parametrize("stride", [1, 2, 3])
def test_round_trip_patches_to_image(border, stride):
    # overlap-add of the patches divided by the counts is the image on every covered pixel
    g = torch.Generator().manual_seed(0)
    shape = (11, 9)
    x = torch.randn(2, *shape, dtype=torch.complex128, generator=g)
    index = patch_index(shape, 4, stride, border)
    counts = patch_counts(index, shape)
    back = fold_patches(extract_patches(x, index), index, shape)
    covered = counts > 0
    # a sum of n equal terms divided by n: relative rounding error below n * eps
    rtol = float(counts.max()) * torch.finfo(torch.float64).eps
    torch.testing.assert_close(back[:, covered] / counts[covered], x[:, covered], rtol=rtol,
                               atol=0)
    if border == "cover":
        assert bool(covered.all())
    else:  # drop: exactly the rows/columns the strides miss are uncovered
        rows = max(r for r in patch_starts(11, 4, stride, "drop")) + 4
        cols = max(c for c in patch_starts(9, 4, stride, "drop")) + 4
        assert bool(covered[:rows, :cols].all()) and not bool(covered[rows:].any())
        assert not bool(covered[:, cols:].any())


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_drop_border_is_unfold(stride):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 9, dtype=torch.float64, generator=g)
    op = Patches((11, 9), patch_size=4, stride=stride, border="drop")
    ref = F.unfold(x.unsqueeze(1), 4, stride=stride).transpose(1, 2)
    torch.testing.assert_close(op(x), ref, rtol=0, atol=0)
    p = torch.randn(op(x).shape, dtype=torch.float64, generator=g)
    ref_fold = F.fold(p.transpose(1, 2), (11, 9), 4, stride=stride).squeeze(1)
    torch.testing.assert_close(op.H(p), ref_fold)


def test_patches_defaults_are_the_documented_ones():
    from mrirecon.operators.patches import Patches

    op = Patches((12, 10))
    assert (op.patch_size, op.stride, op.border) == (8, 1, "cover")
    x = torch.arange(120, dtype=torch.float64).reshape(12, 10)
    p = op(x)
    assert p.shape == ((12 - 8 + 1) * (10 - 8 + 1), 64)
    torch.testing.assert_close(p[0].reshape(8, 8), x[:8, :8], rtol=0, atol=0)
