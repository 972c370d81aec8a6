"""GRAPPA's calibration band inside a wider run, its share of unfilled holes, and the registry's
GRAPPA taking the acquired samples from the operator's mask."""

import torch

from mrirecon.functional import ifft2c, rss
from mrirecon.operators import sense
from mrirecon.recon import run
from mrirecon.recon.grappa import acs_region, grappa


def test_acs_region_is_centred_on_the_centre_column_inside_a_wider_run():
    """Inside a fully sampled run
    wider than the band, the band is the one ESPIRiT's calibration_region / centre_window take,
    columns W // 2 - width // 2 on (centred exactly for odd widths), and only where the run
    ends does it move."""
    W = 64
    cols = torch.arange(W, dtype=torch.float64)
    k = (cols + 1).to(torch.complex128).expand(2, 8, W).clone()  # sample value = column + 1
    run = torch.zeros(W, dtype=torch.bool)
    run[W // 2 - 10: W // 2 + 14] = True  # asymmetric run [22, 46)
    for width in (7, 8, 12):
        got = acs_region(k, width, run)[0, 0].real.long() - 1
        assert got.tolist() == list(range(W // 2 - width // 2, W // 2 - width // 2 + width))
        if width % 2:
            assert float(got.double().mean()) == W // 2
    # a run that ends just left of the centred band: the band moves right to fit, no further
    run = torch.zeros(W, dtype=torch.bool)
    run[W // 2 - 2: W // 2 + 10] = True
    got = acs_region(k, 8, run)[0, 0].real.long() - 1
    assert got.tolist() == list(range(W // 2 - 2, W // 2 + 6))


def test_grappa_unfilled_share_counts_every_hole():
    """The share of holes left
    empty equals (holes whose kernel window holds no acquired sample) / (holes), counted here
    directly from the mask, and exactly those holes stay zero."""
    g = torch.Generator().manual_seed(0)
    C, H, W, R, ACS = 4, 16, 48, 4, 8
    full = torch.randn(C, H, W, dtype=torch.complex128, generator=g)
    cols = torch.zeros(W, dtype=torch.bool)
    cols[::R] = True
    cols[W // 2 - ACS // 2: W // 2 + ACS // 2] = True
    out, share = grappa(full * cols, ACS, kernel_size=(1, 3), return_unfilled=True)
    padded = torch.nn.functional.pad(cols, (1, 1))
    has_neighbour = padded[:-2] | padded[2:]  # column w-1 or w+1 acquired (kernel width 3)
    empty = ~cols & ~has_neighbour
    expected = int(empty.sum()) / int((~cols).sum())
    assert 0 < expected < 1 and int(empty.sum()) > 1  # several holes share the empty pattern
    assert share == expected
    assert bool((out[..., empty] == 0).all()) and bool((out[..., ~cols & has_neighbour] != 0).all())


def test_registry_grappa_takes_the_acquired_samples_from_the_operators_mask():
    """An acquired column that holds
    exact zeros in every coil is still acquired (kept, not estimated) when the operator says
    so; run("grappa", y, op) equals grappa with that mask, not with the nonzero pattern."""
    g = torch.Generator().manual_seed(0)
    C, H, W, ACS = 4, 16, 40, 10
    full = torch.randn(C, H, W, dtype=torch.complex128, generator=g)
    cols = torch.zeros(W, dtype=torch.bool)
    cols[::2] = True
    cols[W // 2 - ACS // 2: W // 2 + ACS // 2] = True
    y = full * cols
    y[..., 2] = 0  # acquired, measured as exact zeros
    mask = cols.expand(H, W)
    op = sense(torch.ones(C, H, W, dtype=torch.complex128), mask)
    want = rss(ifft2c(grappa(y, ACS, (5, 5), 0.01, mask=cols)), dim=-3)
    got = run("grappa", y, op, calib=ACS)
    assert torch.equal(got, want)
    assert not torch.equal(got, rss(ifft2c(grappa(y, ACS, (5, 5), 0.01)), dim=-3))
