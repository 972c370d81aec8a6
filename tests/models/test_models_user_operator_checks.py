"""Every learned model that takes any operator tests a user's operator once
(:func:`~mrirecon.core.operator_check.check_operator_once`) and refuses a wrong one, naming it;
mrirecon's own operators are never tested."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import LinearOperator, operator_check
from mrirecon.functional import fft2c, ifft2c
from mrirecon.models import build_model

N = 16
_DEN = {"denoiser": "dncnn", "denoiser_params": {"depth": 3, "features": 4}}
# the models that accept any LinearOperator, at small sizes
MODELS = {
    "modl": dict(iterations=2, layers=3, features=4, cg_iterations=3),
    "ista_net_plus": dict(iterations=2, features=4),
    "vn": dict(iterations=2, num_filters=4, kernel_size=3, num_rbf=7),
    "pnp_admm": dict(iterations=2, cg_iterations=3, **_DEN),
    "pnp_hqs": dict(iterations=2, cg_iterations=3, **_DEN),
    "red": dict(iterations=2, cg_iterations=3, **_DEN),
    "pnp_dpir": dict(iterations=2, depth=3, features=4),
    "admm_csnet": dict(iterations=2),
    "unrolled_em": dict(iterations=1, cg_iterations=3),
    "primal_dual": dict(iterations=2, features=4),
    "fbpconvnet": dict(chans=4, num_pools=2),
}


def _mask() -> torch.Tensor:
    m = torch.zeros(N, N)
    m[:, ::2] = 1
    m[:, N // 2 - 2: N // 2 + 2] = 1
    return m


class MaskedFFT(LinearOperator):
    def __init__(self) -> None:
        super().__init__((N, N), (N, N))
        self.register_buffer("mask", _mask())

    def _forward(self, x):
        return self.mask * fft2c(x)

    def _adjoint(self, y):
        return ifft2c(self.mask * y)


class NumpyIfft(MaskedFFT):
    """The audit's bug: the adjoint uses ``torch.fft.ifft2``'s default normalisation,
    ``A^H / sqrt(H W)`` (PnP-ADMM's output moved by 0.73, the primal-dual net's by 0.97)."""

    def _adjoint(self, y):
        s = torch.fft.ifftshift(self.mask * y, dim=(-2, -1))
        return torch.fft.fftshift(torch.fft.ifft2(s), dim=(-2, -1))


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, N, N, dtype=torch.complex64, generator=g)
    return MaskedFFT()(x)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_taking_any_operator_refuses_a_wrong_adjoint(name):
    # Was: PnP-ADMM, PnP-HQS, RED, ADMM-CSNet and the primal-dual net returned images 0.73,
    # 0.73, 0.13, 0.91, 0.97 (relative) off the correct operator's; DPIR, unrolled EM and
    # FBPConvNet (0.97 off) ran it
    model = build_model(name, init_seed=0, **MODELS[name]).eval()
    y = _data()
    with torch.no_grad():
        assert torch.isfinite(model(y, MaskedFFT())).all()  # a correct user operator runs
        cls = type("NumpyIfft", (NumpyIfft,), {})  # a class of this test's own: untrusted
        with pytest.raises(ValueError, match=r"check_operator: NumpyIfft: its adjoint is not the "
                                             r"conjugate transpose of its forward"):
            model(y, cls())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_never_test_mrirecon_operators(name, monkeypatch):
    from mrirecon.operators import sense

    def refuse(*args, **kwargs):
        raise AssertionError("check_operator ran on a mrirecon operator")

    monkeypatch.setattr(operator_check, "check_operator", refuse)
    op = sense(torch.ones(1, N, N, dtype=torch.complex64), _mask()[0].bool())
    model = build_model(name, init_seed=0, **MODELS[name]).eval()
    with torch.no_grad():
        model(op(torch.ones(1, N, N, dtype=torch.complex64)), op)
        model(op(torch.ones(1, N, N, dtype=torch.complex64)), 2.0 * op)
