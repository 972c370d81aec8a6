"""The k-space capability (``HasSamplingMask``) is declared, not guessed from an attribute
name: a user's real operator with a buffer called ``mask`` (inpainting) is no MRI operator,
while the shipped MRI operators, and a user's class that declares it, still are."""

from __future__ import annotations

import pytest
import torch

from mrirecon import recon
from mrirecon.core import HasSamplingMask, LinearOperator, capability, check_operator
from mrirecon.models import build_model
from mrirecon.operators import Fourier, sense, single_coil
from mrirecon.recon.checks import is_kspace_operator

H = W = 24


class Inpainting(LinearOperator):
    """``y = mask * x``: a real image with missing pixels (self-adjoint)."""

    def __init__(self, keep: torch.Tensor, name: str = "mask") -> None:
        super().__init__((H, W), (H, W))
        self._key = name
        self.register_buffer(name, keep)

    def _forward(self, x):
        return getattr(self, self._key) * x

    def _adjoint(self, y):
        return getattr(self, self._key) * y


class DeclaredMaskedFFT(LinearOperator, HasSamplingMask):
    """A user's single-coil Cartesian operator that declares its sampling mask."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__((H, W), (H, W))
        self.register_buffer("mask", mask)
        self.fourier = Fourier()

    def _forward(self, x):
        return self.mask * self.fourier(x)

    def _adjoint(self, y):
        return self.fourier.H(self.mask * y)


def _inpainting_problem():
    g = torch.Generator().manual_seed(0)
    keep = (torch.rand(H, W, generator=g) < 0.6).to(torch.float64)
    x = torch.rand(H, W, generator=g, dtype=torch.float64)
    return keep, x


def _pnp():
    torch.manual_seed(0)
    return build_model("pnp_admm", iterations=2, denoiser="dncnn",
                       denoiser_params={"in_chans": 2, "out_chans": 2, "depth": 3,
                                        "features": 8}).double()


RUNS = {  # method: parameters, small
    "tgv": {"lam": 1e-2, "iterations": 10},
    "tv": {"lam": 1e-2, "iterations": 10},
    "tv_ct": {"lam": 1e-2, "iterations": 10},
    "cg_sense": {"iterations": 5},
    "l1_wavelet": {"lam": 1e-3, "iterations": 10},
}


def test_an_attribute_named_mask_makes_no_mri_operator():
    """An inpainting operator with a buffer ``mask`` was refused by tgv, tv_ct and PnP-ADMM
    ("y is real ... but MRI k-space is complex ... lost its phase"); the same operator with the
    buffer renamed ran. Both now give the same images, bit for bit."""
    keep, x = _inpainting_problem()
    masked, renamed = Inpainting(keep), Inpainting(keep, name="keep")
    assert check_operator(masked, x)["adjoint"] < 1e-12  # float64 dot test
    assert capability(masked, HasSamplingMask) is None and not is_kspace_operator(masked)
    y = masked(x)
    for method, params in RUNS.items():
        out = recon.run(method, y, masked, **params)
        assert torch.equal(out, recon.run(method, y, renamed, **params)), method
        assert not out.is_complex() and out.shape == (H, W)
        # on the kept pixels the data are fitted: closer to x than zero is
        err = torch.linalg.vector_norm((out - x) * keep) / torch.linalg.vector_norm(x * keep)
        assert err < 0.5, (method, float(err))
    net = _pnp()
    with torch.no_grad():
        out = net(y[None], masked)
        assert torch.equal(out, net(y[None], renamed)) and out.shape == (1, H, W)


def test_cg_sense_on_a_real_generic_operator_solves_the_normal_equations():
    """``cg_sense`` said "MRI k-space is complex" to any real operator; recon/mri.py says "any
    LinearOperator". On inpainting with ``lam`` its solution is ``y / (1 + lam)`` where kept and
    0 elsewhere (the normal equations are diagonal)."""
    keep, x = _inpainting_problem()
    op = Inpainting(keep)
    out = recon.run("cg_sense", op(x), op, lam=0.25, iterations=3)
    torch.testing.assert_close(out, keep * x / 1.25, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["tgv", "tv", "cg_sense", "l1_wavelet", "zero_filled"])
def test_shipped_mri_operators_still_refuse_real_data(method):
    """SENSE, single-coil (``Sampling @ Fourier``), a bare ``Fourier`` and scaled or composed
    forms of them map to complex k-space: a real y has lost its phase."""
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(W)
    maps = torch.randn(3, H, W, dtype=torch.complex128, generator=g)
    ops = [sense(maps, mask), 2.0 * sense(maps, mask), single_coil(mask), Fourier()]
    for op in ops:
        assert is_kspace_operator(op), op.name
        x = torch.randn(H, W, dtype=torch.complex128, generator=g)
        y = op(x)
        params = {"lam": 1e-3} if method in ("tgv", "tv", "l1_wavelet") else {}
        with pytest.raises(TypeError, match=rf"{method}: y is real .* but MRI k-space is complex "
                                            r"\(op .* maps images to it\): a real y has lost its "
                                            r"phase"):
            recon.run(method, y.real, op, **params)


def test_the_pnp_path_still_refuses_real_data_for_sense():
    g = torch.Generator().manual_seed(1)
    op = sense(torch.randn(3, H, W, dtype=torch.complex128, generator=g), torch.ones(W))
    y = op(torch.randn(H, W, dtype=torch.complex128, generator=g))
    with pytest.raises(TypeError, match=r"PnPADMM: the data y \(1, 3, 24, 24\) are real .* but "
                                        r"the MRI operator .* takes complex k-space"):
        _pnp()(y.real[None], op)


def test_a_users_class_declares_the_capability_by_its_base():
    """Declared: the mask capability, k-space data checks and the k-space DC layers."""
    mask = torch.zeros(W)
    mask[::2] = 1
    op = DeclaredMaskedFFT(mask.expand(H, W).clone())
    assert capability(op, HasSamplingMask) is op and is_kspace_operator(op)
    assert capability(2 * op, HasSamplingMask) is op
    x = torch.randn(H, W, dtype=torch.complex128, generator=torch.Generator().manual_seed(2))
    with pytest.raises(TypeError, match=r"tgv: y is real .* but MRI k-space is complex \(op "
                                        r"DeclaredMaskedFFT maps images to it\)"):
        recon.run("tgv", op(x).real, op, lam=1e-3)
    assert recon.run("cg_sense", op(x), op, iterations=3).is_complex()


def test_a_k_space_layer_tells_how_to_declare_the_capability():
    """A user's Cartesian operator with a ``mask`` attribute that does not declare it is told
    how to, by the layer that needs it."""
    from mrirecon.core import require_capability

    with pytest.raises(TypeError, match=r"CascadeNet needs an operator with the HasSamplingMask "
                                        r"capability, got Inpainting .*: a class of your own "
                                        r"declares it by listing HasSamplingMask among its bases"):
        require_capability(Inpainting(torch.ones(H, W)), HasSamplingMask, "CascadeNet")


@pytest.mark.parametrize("order", ["sense_first", "user_first"])
def test_a_sum_with_a_k_space_operator_maps_to_k_space(order):
    """``A + B`` has the range of both: when one term is a k-space operator (SENSE), the sum maps
    to k-space whatever the other is (a user's correction term), so a real y is refused as lost
    phase, as for SENSE alone (the docstring: "a scaled, summed or composed operator whose range
    is one of theirs")."""
    from mrirecon import recon
    from mrirecon.core import FunctionOperator
    from mrirecon.operators import sense
    from mrirecon.recon.checks import is_kspace_operator

    h, w, coils = 8, 6, 2
    g = torch.Generator().manual_seed(3)
    maps = torch.randn(coils, h, w, dtype=torch.complex128, generator=g)
    S = sense(maps, torch.ones(w))
    k = torch.randn(coils, h, w, dtype=torch.complex128, generator=g)  # fixed coil weights
    user = FunctionOperator(lambda x: 0.1 * k * x.unsqueeze(-3),
                            lambda y: 0.1 * (k.conj() * y).sum(-3), (h, w), (coils, h, w))
    op = S + user if order == "sense_first" else user + S
    assert is_kspace_operator(op)
    y = op(torch.randn(h, w, dtype=torch.complex128, generator=g))
    with pytest.raises(TypeError, match=r"a real y has lost its phase"):
        recon.run("cg_sense", y.real, op, iterations=2)


@pytest.mark.parametrize("method", ["zero_filled_rss", "grappa"])
def test_an_mri_method_that_ignores_op_refuses_real_k_space_whatever_op_is(method):
    """``zero_filled_rss`` and ``grappa`` ignore ``op``: their y is MRI k-space whatever operator
    is passed along (here a generic Identity), so a real y (lost phase) is refused, not turned
    into an RSS image of the wrong data."""
    from mrirecon import recon
    from mrirecon.operators import Identity

    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 16, 16, dtype=torch.complex128, generator=g)
    with pytest.raises(TypeError, match=r"lost its phase"):
        recon.run(method, y.real, Identity())
