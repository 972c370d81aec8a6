"""Hostile case: the shipped learned CT models called from Python with the bare projector.

``model(y[None], ct_operator(geometry))`` (as the README writes it) gave values of 1e9 and more
from ``primal_dual_lodopab`` (-216 dB on a LoDoPaB slice at 30 views) and 1e17 from
``primal_dual_ct_sim`` (-368 dB), and 19.15 dB instead of 31.87 from ``staged_ct_lodopab``: only
the pipeline scaled the projector and the data to the unit norm the weights were trained at
(``A / ||A||``, ``y / ||A||``). The models now apply that scaling themselves to a bare CT
projector (:func:`mrirecon.models.ct_scale.unit_norm_ct`), with the pipeline's expressions, so the
two calls agree bit for bit; any other operator (the pipeline's and the trainers' scaled one, a
user's own) is used as given, gradients included.

Small geometries (32 x 32, 24 views): the models run outside their training range, which is
enough for an identity of two calls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mrirecon.data.simulate_ct import ct_simulation_geometry, poisson_postlog
from mrirecon.models import ct_scale
from mrirecon.models.ct_scale import unit_norm_ct
from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual
from mrirecon.models.unrolled.staged_ct import StagedCTNet
from mrirecon.operators.ct import cached_ct_operator, ct_operator, projector_norm
from mrirecon.sampling.views import sparse_view
from mrirecon.training.weights import load_pretrained
from tests.models.problems import ct_phantom_mu

N = 32
SHIPPED = ("primal_dual_lodopab", "primal_dual_ct_sim", "staged_ct_lodopab")


def _raw(beam: str = "parallel", dtype=torch.float32):
    """``(y (views, detectors), geometry)``: post-log data at every 2nd of 48 views, raw scale."""
    full = ct_simulation_geometry(beam, N, 48, None, 60.0)
    g, _ = sparse_view(full, 2)
    with torch.no_grad():
        clean = ct_operator(g)(torch.from_numpy(ct_phantom_mu(N, 0))).numpy()
    y = poisson_postlog(clean, 4096.0, np.random.default_rng(1), min_count=0.1)
    return torch.from_numpy(y).to(dtype), g


def _pipeline_call(model, y, g):
    """Exactly :func:`mrirecon.pipeline.stages_ct.reconstruct`'s call."""
    norm = projector_norm(g)
    return model((y / norm).unsqueeze(0), cached_ct_operator(g, "cpu") * (1.0 / norm))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_ct_model_with_the_bare_projector_is_the_pipeline_result(name):
    y, g = _raw()
    model = load_pretrained(name).eval()
    with torch.inference_mode():
        pipeline = _pipeline_call(model, y, g)
        raw = model(y[None], ct_operator(g))  # the README's call
        cached = model(y[None], cached_ct_operator(g, "cpu"))
        given = model(y[None], ct_operator(g) * 1.0)  # a scaled operator: used as given
    assert raw.shape == (1, N, N) and raw.dtype == torch.float32
    assert torch.equal(raw, pipeline) and torch.equal(cached, pipeline)
    # not vacuous: at the projector's own scale (||A|| ~ 40 here) the weights give another image
    # (before the fix, the bare projector's result: 1e8-fold off for the primal-dual models)
    assert float((given - pipeline).abs().max()) > 0.1 * float(pipeline.abs().max())


@pytest.mark.parametrize("name", ["primal_dual_lodopab", "staged_ct_lodopab"])
def test_fan_beam_and_float64_bare_projector_calls_match_too(name):
    y, g = _raw("fan", torch.float64)
    model = load_pretrained(name).double().eval()
    with torch.inference_mode():
        assert torch.equal(model(y[None], ct_operator(g)), _pipeline_call(model, y, g))


def test_only_a_bare_projector_is_rescaled():
    y, g = _raw()
    op = ct_operator(g)
    scaled = op * 0.5  # a user's own scale: kept
    assert unit_norm_ct(y, scaled) == (y, scaled)
    y2, op2 = unit_norm_ct(y, op)
    norm = projector_norm(g)
    assert torch.equal(y2, y / norm) and op2.op is op and op2.scalar == 1.0 / norm
    probe = torch.ones(1, N, N)
    assert torch.equal(op2(probe), (op * (1.0 / norm))(probe))


def _small(kind: str):
    if kind == "staged":
        return StagedCTNet(iterations=1, chans=2, num_pools=1, lam=[0.3], lam0=0.003, cg_iterations=4,
                           init_seed=0)
    m = LearnedPrimalDual(iterations=2, n_primal=2, n_dual=1, features=4, fbp_start=True,
                          init_seed=0)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # the zero-initialised last layers would make it the FBP
        for it in m.iterations:
            last = it.primal[-1].weight
            last.copy_(0.05 * torch.randn(last.shape, generator=g))
    return m


@pytest.mark.parametrize("kind", ["staged", "primal_dual", "primal_dual_plain"])
def test_gradients_of_the_scaled_training_call_are_unchanged(kind, monkeypatch):
    """Training passes ``A / ||A||`` (a scaled operator): no norm is computed, nothing rescaled;
    the bare projector's call gives the same loss and weight gradients."""
    y, g = _raw()
    norm = projector_norm(g)
    model = (LearnedPrimalDual(iterations=2, n_primal=2, n_dual=1, features=4, init_seed=0)
             if kind == "primal_dual_plain" else _small(kind))
    grads = []
    for call in ("scaled", "raw"):
        model.zero_grad()
        if call == "scaled":
            def refuse(_):
                raise AssertionError("projector_norm called for a scaled operator")
            monkeypatch.setattr(ct_scale, "projector_norm", refuse)
            out = model((y / norm)[None], ct_operator(g) * (1.0 / norm))
            monkeypatch.undo()
        else:
            out = model(y[None], ct_operator(g))
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert grads[0] and len(grads[0]) == len(grads[1])
    for a, b in zip(*grads):
        assert torch.equal(a, b)
