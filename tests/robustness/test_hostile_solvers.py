"""The iterative solvers and the reconstructions on them, given what a notebook or a pipeline
gives them: a stack of slices of other brightness or coil-map scale (EPLL, the patch prior's
normalisation, TGV with per-slice maps), systems that are not positive definite (CG, MoDL's
data consistency with a learned weight gone negative), a tolerance the iteration limit does not
reach, and a tolerance of 1 or more. Each must now give the slice's own reconstruction, or an
error naming the parameter, or say that the result is not converged (once per reconstruction,
once per input in a pipeline run)."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch

from mrirecon import recon
from mrirecon.operators import ParallelBeam, sense
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.solvers import admm, cg, convergence_record, fista, pdhg

H, W, C = 32, 24, 4
SOLVER_LOG = "mrirecon.solvers"


def _phantom(dtype=torch.complex128, seed=0, flip=False) -> torch.Tensor:
    """A smooth complex blob image (positive magnitude, slowly varying phase)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    mag = (torch.exp(-((xx - 0.2) ** 2 + yy ** 2) / 0.3) + 0.5 * (xx.abs() + yy.abs() < 0.6)
           + 0.3 * torch.exp(-((xx + 0.4) ** 2 + (yy - 0.3) ** 2) / 0.02))
    img = torch.polar(mag, 0.6 * xx + 0.3 * yy ** 2 + 0.1 * seed)
    return (img.flip(-1) if flip else img).to(dtype)


def _maps(dtype=torch.complex128, shift=0) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H, dtype=torch.float64),
                            torch.linspace(-1, 1, W, dtype=torch.float64), indexing="ij")
    out = []
    for c in range(C):
        a = 2 * math.pi * (c + shift) / C
        out.append(torch.polar(torch.exp(-((xx - math.cos(a)) ** 2 + (yy - math.sin(a)) ** 2)),
                               a + 0.3 * xx))
    m = torch.stack(out)
    return (m / m.abs().pow(2).sum(0).sqrt()).to(dtype)


def _mask(r=3, acs=6) -> torch.Tensor:
    m = torch.zeros(W, dtype=torch.bool)
    m[::r] = True
    m[W // 2 - acs // 2: W // 2 + acs // 2] = True
    return m


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def _eps(t: torch.Tensor) -> float:
    return torch.finfo(t.real.dtype).eps


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("mrirecon") and r.levelno == logging.WARNING]


# -- F1: EPLL and the patch prior's normalisation, per slice ----------------------------------

def _two_slices(dim=1.0, weak_maps=1.0, noise=0.002):
    x = torch.stack([_phantom(), dim * _phantom(seed=1, flip=True)])
    maps = torch.stack([_maps(), weak_maps * _maps(shift=1)])
    op = sense(maps, _mask())
    g = torch.Generator().manual_seed(1)
    y = op(x)
    y = (y + noise * torch.randn(y.shape, dtype=y.dtype, generator=g)) * _mask()
    alone = [sense(maps[i], _mask()) for i in range(2)]
    return x, y, op, alone


@pytest.mark.parametrize("dim, weak_maps", [(0.1, 1.0), (1.0, 1 / 3)])
def test_epll_batch_is_each_slice_alone(dim, weak_maps):
    """A slice 10x dimmer than its neighbour (one scale for the stack: 19.2 dB batched, 38.7
    alone), or with 3x weaker coil maps (one ||A||^2, the largest, for the stack: 33.6 dB
    batched, 40.9 alone): ``recon.run("epll", stack)`` is now each slice's reconstruction."""
    x, y, op, alone = _two_slices(dim, weak_maps)
    kw = dict(iterations=2, stride=2, cg_iterations=5)
    batch = recon.run("epll", y, op, **kw)
    for i in range(2):
        one = recon.run("epll", y[i], alone[i], **kw)
        assert _rel(batch[i], one) <= 1e3 * _eps(one), i  # was 0.47 (dim), 0.07 (weak maps)


def test_patch_prior_normalisation_keeps_each_slices_lipschitz_constant():
    """``normalise_problem`` (EPLL, the unrolled EM network) takes ``||A||^2`` per batch item
    from the start vector of the item alone (was: the largest over the batch, 9x too large
    for a slice with 3x weaker maps)."""
    from mrirecon.models.gmm import normalise_problem

    _, y, op, alone = _two_slices(weak_maps=1 / 3)
    _, scale, lip = normalise_problem(y, op, batch_dims=1)
    assert lip.shape == (2, 1, 1) and scale.shape == (2, 1, 1)
    for i in range(2):
        _, scale_i, lip_i = normalise_problem(y[i:i + 1], alone[i], batch_dims=1)
        torch.testing.assert_close(lip[i], lip_i[0], rtol=1e2 * _eps(y), atol=0)
        torch.testing.assert_close(scale[i], scale_i[0], rtol=1e3 * _eps(y), atol=0)
    assert float(lip[0] / lip[1]) == pytest.approx(9.0, rel=0.05)


def test_epll_batch_dims_zero_still_treats_the_stack_as_one_problem():
    """An explicit ``batch_dims=0`` keeps its meaning (one scale for everything)."""
    _, y, op, _ = _two_slices(dim=0.1)
    kw = dict(iterations=1, stride=2, cg_iterations=3)
    assert _rel(recon.run("epll", y, op, batch_dims=0, **kw),
                recon.run("epll", y, op, **kw)) > 1e-3


# -- F2: CG on systems that are not positive definite; MoDL's learned weight -------------------

def _sense_problem(dtype=torch.complex128):
    op = sense(_maps(dtype), _mask())
    y = op(_phantom(dtype)) * _mask()
    return op, op.H(y)


@pytest.mark.parametrize("shift, at", [(-0.5, None), (None, 0)])
def test_cg_refuses_a_system_that_is_not_positive_definite(shift, at):
    """``A^H A - 0.5 I`` (indefinite) stopped after 2 iterations with a residual of 12 %; a
    negative-definite system returned zeros after one, both without a word."""
    op, b = _sense_problem()
    if shift is not None:
        def gram(v):
            return op.gram(v) + shift * v
    else:
        def gram(v):
            return -op.gram(v) - 0.1 * v
    with pytest.raises(ValueError, match=r"cg: the system is not positive definite: .* at "
                                         r"iteration " + (str(at) if at is not None else r"\d+")):
        cg(gram, b, iterations=50, tolerance=1e-8)


def test_cg_names_the_system_of_a_batch_that_is_not_positive_definite():
    d = torch.ones(2, 10, dtype=torch.float64)
    d[1, :] = -1.0
    with pytest.raises(ValueError, match=r"iteration 0 \(system \(1,\) of the batch\)"):
        cg(lambda v: d * v, torch.ones(2, 10, dtype=torch.float64), iterations=5, batch_dims=1)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_cg_on_semi_definite_grams_run_far_past_convergence_is_not_refused(dtype, caplog):
    """What the shipped methods solve, at float32 too, where ``p^H A p`` near convergence is
    rounding noise: CG-SENSE without regularisation (semi-definite) for 300 iterations, a
    one-coil projection gram that converges in one step and then freezes (with a tolerance:
    a stall at rounding is convergence, not reported), and a batch with one such system."""
    op, b = _sense_problem(dtype)
    x = cg(op.gram, b, iterations=300)
    assert _rel(op.gram(x), b) < 1e-3
    mask = _mask(4, 6)
    for seed in range(10):
        g = torch.Generator().manual_seed(seed)
        phase = 2 * math.pi * torch.rand(1, H, W, generator=g, dtype=b.real.dtype)
        op1 = sense(torch.polar(torch.ones_like(phase), phase), mask)
        b1 = op1.H(op1(torch.randn(H, W, dtype=dtype, generator=g)))
        with caplog.at_level(logging.WARNING):
            x1 = cg(op1.gram, b1, iterations=30, tolerance=1e-12)
        assert _rel(x1, b1) < 1e3 * _eps(b1)
    assert _warnings(caplog) == []


def test_cg_exact_convergence_stops_quietly(caplog):
    """``p^H A p == 0`` with a zero residual (the solution reached exactly) is a stop, not an
    error: a diagonal system solved in as many steps as distinct eigenvalues."""
    d = torch.tensor([1.0, 1.0, 2.0, 2.0], dtype=torch.float64)
    with caplog.at_level(logging.WARNING):
        x = cg(lambda v: d * v, torch.ones(4, dtype=torch.float64), iterations=10, tolerance=1e-14)
    torch.testing.assert_close(x, 1 / d)
    assert _warnings(caplog) == []


def test_modl_data_consistency_refuses_a_negative_learned_weight():
    """An unconstrained ``lam`` that training drove below zero gave 17.8 dB (-0.05) or an all-
    zero image (-2) without a word; the shipped positive weights and ``lam = 0`` still run."""
    from mrirecon.models.blocks.cg_dc import ProximalDC

    op, aty = _sense_problem()
    y = op(_phantom())[None]
    z = 0.9 * _phantom()[None]
    dc = ProximalDC(lam=0.05).double()
    good = dc(z, y, op)
    assert torch.isfinite(good).all()
    for bad in (-0.05, -2.0, float("nan")):
        with torch.no_grad():
            dc.lam.fill_(bad)
        with pytest.raises(ValueError, match=r"ProximalDC: lam must be finite and >= 0"):
            dc(z, y, op)
    with torch.no_grad():
        dc.lam.fill_(0.0)
    assert torch.isfinite(dc(z, y, op)).all()


def test_shipped_modl_weights_still_load_and_run():
    from mrirecon.training.weights import available_weights, load_pretrained

    if "modl_brain_sim" not in available_weights():
        pytest.skip("modl_brain_sim is not shipped")
    model = load_pretrained("modl_brain_sim")
    lams = [float(m.lam.detach()) for m in model.modules()
            if isinstance(getattr(m, "lam", None), torch.Tensor)]
    assert lams and min(lams) > 0
    op = sense(_maps(torch.complex64)[None], _mask())
    with torch.no_grad():
        out = model(op(_phantom(torch.complex64)[None]) * _mask(), op)
    assert torch.isfinite(out).all()


# -- F3: an iteration limit reached short of the tolerance is said, once ----------------------

def test_cg_sense_short_of_its_tolerance_says_so_once(caplog):
    """``cg_sense(iterations=3, tolerance=1e-6)`` returned a relative residual of 7e-3 (22.6 dB
    where the converged image has 69.9) without a word."""
    op, _ = _sense_problem()
    y = op(_phantom()) * _mask()
    res = []
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.cg_sense(y, op, iterations=3, tolerance=1e-6, callback=lambda i, x, r: res.append(r))
    (msg,) = _warnings(caplog)
    achieved = res[-1]  # the callback's relative residual, as the warning's
    assert achieved > 1e-4
    assert "cg stopped at its iteration limit (3 iterations)" in msg
    assert f"{achieved:.2g}" in msg and "tolerance 1e-06" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.cg_sense(y, op, iterations=3)  # a fixed iteration count: nothing to say
        recon.cg_sense(y, op, iterations=200, tolerance=1e-6)  # converged: nothing either
    assert _warnings(caplog) == []


@pytest.mark.parametrize("name, kw, solver", [
    ("l1_wavelet", dict(lam=1e-3, random_shift=False), "fista"),
    ("tv", dict(lam=1e-3), "admm"),
    ("tv", dict(lam=1e-3, method="pdhg"), "pdhg"),
    ("tgv", dict(lam=1e-3), "admm"),
    ("pnp_nlm", dict(), "plug_and_play (admm)"),
])
def test_each_method_short_of_its_tolerance_says_so_once(name, kw, solver, caplog):
    """Through ``recon.run``: one warning naming the solver, however many inner solves ran
    (ADMM's CG x-updates are inexact by design and say nothing)."""
    op, _ = _sense_problem()
    y = op(torch.stack([_phantom(), _phantom(seed=1)])) * _mask()
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.run(name, y, op, iterations=3, tolerance=1e-7, **kw)
    (msg,) = _warnings(caplog)
    assert msg.startswith(f"{name}: {solver} stopped at its iteration limit (3 iterations)")
    assert "above its tolerance 1e-07" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.run(name, y, op, iterations=3, **kw)
    assert _warnings(caplog) == []


def test_sirt_short_of_its_tolerance_says_so_once(caplog):
    op = ParallelBeam(CTGeometry.parallel((24, 24), num_views=20))
    y = op(torch.rand(24, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.run("sirt", y, op, iterations=4, tolerance=1e-6)
    (msg,) = _warnings(caplog)
    assert msg.startswith("sirt stopped at its iteration limit (4 iterations)")


def test_l1_wavelet_with_random_shifts_never_meets_a_small_tolerance(caplog):
    """Cycle spinning keeps the relative change near 1e-2 (module docstring): a tolerance of
    1e-4 runs every iteration, and now says so."""
    op, _ = _sense_problem()
    y = op(_phantom()) * _mask()
    changes = []
    with caplog.at_level(logging.WARNING, logger=SOLVER_LOG):
        recon.l1_wavelet(y, op, 2e-3, iterations=150, tolerance=1e-4,
                         callback=lambda i, x, r: changes.append(r))
    assert len(changes) == 150 and min(changes[-50:]) > 1e-3
    (msg,) = _warnings(caplog)
    assert "fista stopped at its iteration limit (150 iterations)" in msg


def test_solvers_called_directly_say_it_or_record_it():
    """Each solver reports into an active record (what the pipeline reads) instead of logging."""
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    b = torch.ones(2, dtype=torch.float64)
    with convergence_record() as record:
        cg(lambda v: A @ v, b, iterations=1, tolerance=1e-12)
        fista(lambda v: A @ v - b, None, torch.zeros(2, dtype=torch.float64), 0.3, iterations=2,
              tolerance=1e-12)
        eye = torch.eye(2, dtype=A.dtype)
        admm(lambda v, rho, x: torch.linalg.solve(A + rho * eye, b + rho * v), lambda v, t: v,
             lambda v: v, torch.zeros(2, dtype=torch.float64), 1.0, iterations=2, tolerance=1e-12)
        from mrirecon.operators import Identity

        pdhg(Identity((2,)), lambda p, s: (p - s * b) / (1 + s), None,
             torch.zeros(2, dtype=torch.float64), iterations=2, tolerance=1e-12)
    assert [e.solver for _, e in record.entries] == ["cg", "fista", "admm", "pdhg"]
    assert all(e.achieved > e.tolerance for _, e in record.entries)


def test_pipeline_says_an_unconverged_reconstruction_once_per_input(mri_file, tmp_path):
    """``mri_retrospective`` with a tolerance its 40 iterations do not reach: one warning for
    the input naming its slices (log and provenance), not one per slice; none without one."""
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    base = ["export.formats=[hdf5]", "report.enabled=false", "calibrate.method=walsh"]
    for tol, expected in (("1e-9", 1), ("0", 0)):
        config = load_pipeline("mri_retrospective",
                               base + [f"reconstruct.params.tolerance={tol}"])[0]
        out = tmp_path / f"tol{tol}"
        assert run_pipeline(config, [str(mri_file)], out, progress=False) == 0
        warnings = json.loads((out / "provenance.json").read_text())["files"][0]["warnings"]
        said = [w for w in warnings if "stopped at its iteration limit" in w]
        assert len(said) == expected, warnings
        if expected:
            assert "all 2 slices: reconstruct.method 'cg_sense': cg stopped" in said[0]
            assert "above its tolerance 1e-09" in said[0]


def test_the_bench_keeps_its_fixed_budget_quiet(mri_file, caplog):
    """`mrirecon bench`'s cg_sense (40 iterations, early exit at 1e-6) is a fixed budget of its
    own (as is the trainers' CG-SENSE validation baseline), not a user's request for a converged
    result: no solver warning per slice (the bench's scores say how good it is)."""
    from mrirecon.bench import run_bench
    from mrirecon.pipeline.schema import CalibrateConfig

    with caplog.at_level(logging.WARNING):
        table = run_bench(mri_file.parent, accelerations=(4,), methods="cg_sense", progress=False,
                          verbose=False, calibration=CalibrateConfig(method="walsh"))
    assert len(table.records) == 1 and np.isfinite(table.records[0]["PSNR"])
    assert not [r for r in caplog.records if "stopped at its iteration limit" in r.getMessage()]


# -- F4: a tolerance of 1 or more ------------------------------------------------------------

@pytest.mark.parametrize("tol", [1.0, 5.0])
def test_a_tolerance_of_one_or_more_is_refused_everywhere(tol):
    """``cg_sense(tolerance=1)`` returned zeros after 0 iterations (13 dB), ``tv`` its first
    iterate; the pipeline ran it with exit 0 and PSNR 6 dB."""
    op, aty = _sense_problem()
    y = op(_phantom()) * _mask()
    match = r"tolerance must be a finite number >= 0 and < 1"
    for name, kw in [("cg_sense", {}), ("l1_wavelet", dict(lam=1e-3)), ("tv", dict(lam=1e-3)),
                     ("tv", dict(lam=1e-3, method="pdhg")), ("tgv", dict(lam=1e-3))]:
        with pytest.raises(ValueError, match=rf"{name}: {match}"):
            recon.run(name, y, op, tolerance=tol, **kw)
    with pytest.raises(ValueError, match=rf"cg_sense: {match}"):
        recon.cg_sense(y, op, tolerance=tol)  # called directly
    for who, call in [("cg", lambda: cg(op.gram, aty, tolerance=tol)),
                      ("fista", lambda: fista(lambda v: op.gram(v) - aty, None, aty, 0.5,
                                              tolerance=tol)),
                      ("pdhg", lambda: pdhg(op, lambda p, s: p, None, aty, tolerance=tol))]:
        with pytest.raises(ValueError, match=rf"{who}: {match}"):
            call()
    ct = ParallelBeam(CTGeometry.parallel((16, 16), num_views=12))
    with pytest.raises(ValueError, match=rf"sirt: {match}"):
        recon.sirt(ct(torch.rand(16, 16, dtype=torch.float64)), ct, 3, tolerance=tol)


def test_a_pipeline_with_a_tolerance_of_one_is_refused_at_load(mri_file, tmp_path, capsys):
    from mrirecon.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["run", "mri_retrospective", "-i", str(mri_file), "-o", str(tmp_path / "o"),
              "--no-progress", "--set", "reconstruct.params.tolerance=1"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "reconstruct.params.tolerance: must be a finite number >= 0 and < 1" in err
    assert not (tmp_path / "o").exists()


# -- F5: TGV (ADMM) with per-slice coil maps --------------------------------------------------

def test_tgv_admm_takes_per_slice_coil_maps():
    """``recon.run("tgv", y, sense(maps_BxCxHxW, mask))`` failed with "only one element tensors
    can be converted to Python scalars" (the relative ADMM penalty took one image and got B
    eigenvalues). Now each slice gets its own penalty: the batch is each slice run with its own
    (1, C, H, W) maps, and within the power iteration's 1e-3 of a run with (C, H, W) maps."""
    x, y, op, alone = _two_slices(dim=0.7, weak_maps=3.0, noise=0.0)
    batch = recon.run("tgv", y, op, lam=2e-3, iterations=10)
    for i in range(2):
        one = recon.run("tgv", y[i:i + 1], sense(op.maps[i:i + 1], _mask()), lam=2e-3,
                        iterations=10)[0]
        assert _rel(batch[i], one) <= 1e3 * _eps(one)
        assert _rel(batch[i], recon.run("tgv", y[i], alone[i], lam=2e-3, iterations=10)) < 1e-3
        assert _rel(batch[i], x[i]) < 0.2


def test_admm_takes_one_penalty_per_problem():
    """A tensor ``rho`` (one per problem) gives each problem the run it gets with its number."""
    d = torch.tensor([[1.0, 2.0, 3.0], [0.5, 1.5, 4.0]], dtype=torch.float64)
    b = torch.ones(2, 3, dtype=torch.float64)

    def x_update(v, rho, x):
        return (d * b + rho * v) / (d * d + rho)

    def prox(v, t):
        return torch.sign(v) * torch.clamp(v.abs() - 0.1 * t, min=0)

    rho = torch.tensor([0.5, 2.0], dtype=torch.float64)
    both = admm(x_update, prox, lambda v: v, torch.zeros_like(b), rho, iterations=5, batch_dims=1)
    for i in range(2):
        one = admm(lambda v, r, x: (d[i] * b[i] + r * v) / (d[i] ** 2 + r), prox, lambda v: v,
                   torch.zeros(3, dtype=torch.float64), float(rho[i]), iterations=5)
        torch.testing.assert_close(both[i], one, rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match=r"admm: rho must be finite and > 0"):
        admm(x_update, prox, lambda v: v, torch.zeros_like(b), -rho, iterations=1, batch_dims=1)


# -- F6: what a batch of slices shares, as the docstrings say ---------------------------------

def test_tv_pdhg_batch_equals_slices_alone_only_with_operators_of_one_norm():
    """The module docstring of ``recon.mri`` (which promised per-slice steps): PDHG's scalar
    steps come from the largest ``||A||`` of the batch, so a slice agrees with its run alone
    (to the power iteration's accuracy) with shared maps, not with maps of another scale."""
    x = torch.stack([_phantom(), 0.7 * _phantom(seed=1, flip=True)])
    shared = sense(_maps(), _mask())
    y = shared(x) * _mask()
    kw = dict(lam=2e-3, iterations=20, method="pdhg")
    batch = recon.run("tv", y, shared, **kw)
    assert _rel(batch[1], recon.run("tv", y[1], shared, **kw)) < 1e-5
    _, y2, op2, alone = _two_slices(dim=0.7, weak_maps=1 / 3, noise=0.0)
    batch = recon.run("tv", y2, op2, **kw)
    assert _rel(batch[1], recon.run("tv", y2[1], alone[1], **kw)) > 1e-3
    assert "largest ``||A||`` of the batch" in recon.mri.__doc__


@pytest.mark.parametrize("bad", [float("inf"), -float("inf")])
def test_proximal_dc_refuses_an_infinite_learned_weight(bad):
    """``lam = +inf`` (a diverged training step) is refused like NaN and negative values, not
    turned into a NaN image."""
    from mrirecon.models.blocks.cg_dc import ProximalDC

    op, _ = _sense_problem()
    y = op(_phantom())[None]
    dc = ProximalDC(lam=0.05).double()
    with torch.no_grad():
        dc.lam.fill_(bad)
    with pytest.raises(ValueError, match=r"ProximalDC: lam must be finite and >= 0"):
        dc(0.9 * _phantom()[None], y, op)
