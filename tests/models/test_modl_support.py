"""Capability ``HasImageSupport`` and MoDL's projection onto it.

Where every coil map is zero (ESPIRiT's ``crop`` zeroes the background), ``A`` sees nothing: a
pixel there is in the null space, and MoDL's data-consistency step returns the denoiser's value
unchanged. The 10-unroll ``modl_fastmri_diverse`` drifted there: on a simulated 96 x 96 slice
(every 2nd line, a separate reference scan; tests/io/test_io_ismrmrd_reference_scan.py) with
0.95-cropped maps it scored 8.05 dB, and 4.71 dB with 24 integrated ACS lines, against 23.25 /
41.30 dB with the uncropped maps it trained on. Zeroing the denoiser's output outside the
support: 30.43 / 39.01 dB, the uncropped maps' figures unchanged to the bit.
"""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import HasImageSupport, capability
from mrirecon.core.kinds import real_dtype
from mrirecon.models import MoDL
from mrirecon.operators import sense
from mrirecon.operators.mri import Sensitivity, maps_support
from mrirecon.operators.nufft import NufftSense
from tests.models.problems import H, W, coil_maps, column_mask, phantom


def cropped_maps(dtype=torch.complex64) -> torch.Tensor:
    """:func:`coil_maps` zeroed outside a centred ellipse (as ESPIRiT's crop leaves them)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    inside = (yy / 0.8) ** 2 + (xx / 0.7) ** 2 < 1
    return coil_maps(dtype=dtype) * inside


def test_operators_on_maps_report_the_pixels_a_map_covers():
    maps = cropped_maps()
    want = (maps.abs() > 0).any(dim=0)
    assert 0 < int(want.sum()) < H * W
    torch.testing.assert_close(maps_support(maps), want, rtol=0, atol=0)
    op = sense(maps, column_mask())
    assert capability(op, HasImageSupport) is op
    torch.testing.assert_close(op.support, want, rtol=0, atol=0)
    assert torch.equal(Sensitivity(maps).support, want)
    traj = torch.rand(8, 16, 2, generator=torch.Generator().manual_seed(0)) - 0.5
    assert torch.equal(NufftSense(maps, traj).support, want)
    # outside the support the operator is blind: A x = 0 for x living there only
    x = torch.randn(H, W, dtype=torch.complex64) * ~want
    assert float(op(x).abs().max()) == 0.0 and float(op(torch.randn(H, W, dtype=torch.complex64)).abs().max()) > 0


def test_scaling_keeps_the_support_and_products_drop_it():
    op = sense(cropped_maps(), column_mask())
    assert capability(op * 2.5, HasImageSupport) is op
    assert capability(op * torch.tensor(1j), HasImageSupport) is op
    assert capability(op * 0.0, HasImageSupport) is None  # 0 A sees nothing at all
    from mrirecon.operators.generic import Identity

    assert capability(op @ Identity(), HasImageSupport) is None  # no exact rule for B's pixels


def _modl(support: bool) -> MoDL:
    return MoDL(iterations=3, layers=3, features=8, batchnorm=False, cg_iterations=5,
                init_seed=0, support=support).eval()


def test_modl_keeps_pixels_outside_the_maps_zero():
    maps = cropped_maps()
    op = sense(maps, column_mask())
    y = op(phantom(2))
    outside = ~maps_support(maps)
    with torch.no_grad():
        on, off = _modl(True)(y, op), _modl(False)(y, op)
    # without the projection the denoiser's bias survives outside (the failure); with it, zero
    assert float(off[:, outside].abs().max()) > 1e-3 * float(off.abs().max())
    assert float(on[:, outside].abs().max()) == 0.0
    assert float(on[:, ~outside].abs().max()) > 0


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_modl_on_maps_without_zeros_is_unchanged(dtype):
    """The shipped models trained on uncropped maps: there the projection is the identity."""
    op = sense(coil_maps(dtype=dtype), column_mask())
    assert bool(op.support.all())
    y = op(phantom(2, dtype=dtype))
    on, off = _modl(True).to(real_dtype(dtype)), _modl(False).to(real_dtype(dtype))
    with torch.no_grad():
        torch.testing.assert_close(on(y, op), off(y, op), rtol=0, atol=0)


def test_the_constrained_data_consistency_is_the_plain_one_at_the_projected_input():
    """ProximalDC(support=True) solves min ||A x - y||^2 + lam ||x - z||^2 with x = 0 where no
    map reaches: as A P = A, that is the plain proximal point of P z, zero outside."""
    from mrirecon.models import ProximalDC

    maps = cropped_maps(torch.complex128)
    op = sense(maps, column_mask())
    y = op(phantom(2, dtype=torch.complex128))
    z = torch.randn(2, H, W, dtype=torch.complex128, generator=torch.Generator().manual_seed(1))
    inside = maps_support(maps)
    with torch.no_grad():
        on = ProximalDC(0.05, cg_iterations=20, support=True).double()(z, y, op)
        plain = ProximalDC(0.05, cg_iterations=20).double()(z * inside, y, op)
        off = ProximalDC(0.05, cg_iterations=20).double()(z, y, op)
    torch.testing.assert_close(on, plain, rtol=0, atol=0)
    assert float(on[:, ~inside].abs().max()) == 0.0
    # the plain step passes z through there (to CG's accuracy after 20 iterations, not exactly)
    torch.testing.assert_close(off[:, ~inside], z[:, ~inside], rtol=1e-3, atol=1e-3 * float(z.abs().max()))
