"""Which wavelets and sizes ``operators.Wavelet`` takes, and what its refusals say (audit b22)."""

import numpy as np
import pytest
import torch

from mrirecon.functional.wavelet import ORTHONORMAL_TOLERANCE, wavelet_filters
from mrirecon.operators import Wavelet
from mrirecon.recon.mri import l1_wavelet_settings_problem

pywt = pytest.importorskip("pywt")
ORTHOGONAL_FLAGGED = [n for n in pywt.wavelist(kind="discrete") if pywt.Wavelet(n).orthogonal]


def _refusal(call) -> str:
    with pytest.raises(ValueError) as err:
        call()
    return str(err.value)


@pytest.mark.parametrize("name", ORTHOGONAL_FLAGGED)
def test_a_wavelet_is_taken_exactly_when_its_transform_is_orthogonal(name):
    """Every name PyWavelets flags orthogonal is either taken, and then ``W^H W = I`` holds to
    the filters' tolerance (what ``Wavelet.gram`` and ``l1_wavelet``'s prox assume), or
    refused by the one check (operator, explicit levels, pipeline settings) because PyWavelets'
    own periodised round trip is not the identity. Was: ``dmey`` (sum lo^2 = 1.0022) taken,
    round trip off by 5.4e-3 while ``gram`` returned ``x``."""
    x = torch.randn(128, 128, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    L = len(pywt.Wavelet(name).dec_lo)
    try:
        wavelet_filters(name)
    except ValueError as err:
        message = str(err)
        assert f"wavelet {name!r} is not orthogonal" in message and "'db4'" in message
        for levels in (None, 1):
            assert _refusal(lambda n=levels: Wavelet((128, 128), name, levels=n)) == message
        assert l1_wavelet_settings_problem({"wavelet": name})[0] == "wavelet"
        rec = pywt.waverec2(pywt.wavedec2(x.numpy(), name, mode="periodization", level=1),
                            name, mode="periodization")
        # not a rounding matter: far beyond what taps orthonormal to the tolerance could give
        assert np.linalg.norm(rec - x.numpy()) > 2 * L * ORTHONORMAL_TOLERANCE * float(x.norm())
        return
    W = Wavelet((128, 128), name, levels=1)
    # two 1-D steps, each off the identity by at most the sum of the L / 2 even-lag errors
    err = float((W.H(W(x)) - x).norm() / x.norm())
    assert err <= 2 * L * ORTHONORMAL_TOLERANCE, (name, err)
    assert l1_wavelet_settings_problem({"wavelet": name}) is None


def test_dmey_is_refused_saying_why():
    message = _refusal(lambda: Wavelet((64, 64), "dmey", levels=1))
    assert "wavelet 'dmey' is not orthogonal to float64 precision" in message
    assert "sum lo^2 = 1.00224" in message
    setting, said = l1_wavelet_settings_problem({"wavelet": "dmey"})
    assert setting == "wavelet" and message in said


@pytest.mark.parametrize("name", ["bior2.2", "db4x", "mexh", "dmey"])
def test_the_wavelet_name_is_checked_whatever_levels_is(name):
    """``Wavelet((64, 64), "bior2.2", levels=2)`` was built and failed at its first apply;
    with ``levels=None`` it was refused at construction. Now both refuse, with one message."""
    default = _refusal(lambda: Wavelet((64, 64), name))
    assert name in default
    for levels in (1, 2):
        assert _refusal(lambda n=levels: Wavelet((64, 64), name, levels=n)) == default


@pytest.mark.parametrize("shape, levels", [((1, 64), None), ((1, 64), 1), ((64, 1), 3),
                                           ((2, 64), 2), ((3, 3), 2), ((32, 32), 6),
                                           ((640, 368), 9)])
def test_a_refusal_offers_only_levels_that_are_taken(shape, levels):
    """``Wavelet((1, 64), "haar")`` said "1 levels need ... 2 pixels ...; give at most 1",
    refusing 1 and offering it: a side of 1 pixel takes no level, and the message says that;
    otherwise the offered number is taken and one more is refused."""
    message = _refusal(lambda: Wavelet(shape, "haar", levels=levels))
    assert f"the image is {shape[0]} x {shape[1]}" in message
    if min(shape) < 2:
        assert "too short for any level" in message and "give at most" not in message
        return
    most = int(message.rsplit("give at most ", 1)[1])
    assert Wavelet(shape, "haar", levels=most).levels == most
    with pytest.raises(ValueError, match="give at most"):
        Wavelet(shape, "haar", levels=most + 1)


@pytest.mark.parametrize("shape, padded", [((16, 14), True), ((12, 10), True), ((16, 16), False)])
def test_the_l1_wavelet_prox_step_is_exact_only_without_padding(shape, padded):
    """What ``l1_wavelet``'s docstring says of its step ``W^H soft(W v, t)``: the minimiser of
    ``t ||W x||_1 + 1/2 ||x - v||^2`` when ``2**levels`` divides the size, and not when the
    transform zero-pads (``W W^H != I``): PDHG with exact proxes finds a lower objective (any
    point lower than the step's proves it; the margin is the rounding of the sums)."""
    from mrirecon.solvers import pdhg, soft_threshold

    W = Wavelet(shape, "haar", levels=2)
    assert (W.padded != shape) is padded
    v = torch.randn(shape, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    t = 0.5

    def objective(x):
        return float(t * W(x).abs().sum() + 0.5 * (x - v).norm() ** 2)

    step = objective(W.H(soft_threshold(W(v), t)))
    best = objective(pdhg([W], [lambda q, s: q / torch.clamp(q.abs() / t, min=1)],
                          lambda u, s: (u + s * v) / (1 + s), torch.zeros_like(v), norms=[1.0],
                          iterations=2000))
    rounding = v.numel() * torch.finfo(torch.float64).eps * step
    if padded:
        assert best < step - rounding, (step, best)
    else:
        assert step <= best + rounding, (step, best)
