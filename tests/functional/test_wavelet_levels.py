"""``functional.max_levels``: the wavelet depth the sparsity operators use."""

import pytest

from mrirecon.functional import max_levels
from mrirecon.functional.wavelet import wavelet_filters


@pytest.mark.parametrize("name", ["haar", "db2", "db4", "sym8"])
@pytest.mark.parametrize("shape", [(16, 16), (64, 32), (128, 96), (48, 48)])
def test_max_levels_is_the_last_level_whose_bands_reach_the_filter_length(name, shape):
    """max_levels: every level halves even sizes and the coarsest band keeps >= L samples (L
    the filter length), and one more level would break that (guards against >= -> >, which gave one
    level fewer whenever a band equals L, e.g. 16 x 16 db4). Untested before."""
    L = len(wavelet_filters(name)[0])
    n = max_levels(shape, name)
    h, w = shape
    for _ in range(n):
        assert h % 2 == 0 and w % 2 == 0
        h, w = h // 2, w // 2
        assert h >= L and w >= L
    assert h % 2 or w % 2 or h // 2 < L or w // 2 < L
