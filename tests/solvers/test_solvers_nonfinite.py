"""Iterative solvers stop at a non-finite iterate, naming the iteration and the step: FISTA
with a step 100x above 1/L was NaN from iteration 17 and still ran all 400 of its iterations
(with a tolerance, a NaN relative change never stopped it either) before ``recon.run`` refused
the result."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon import recon
from mrirecon.core.checks import NonFiniteError
from mrirecon.operators import FiniteDifference, Identity, sense
from mrirecon.solvers import admm, fista, pdhg, project_nonnegative
from mrirecon.solvers.stopping import FINITE_CHECK_EVERY


def _sense_problem(n: int = 64):
    y_, x_ = torch.linspace(-1, 1, n)[:, None], torch.linspace(-1, 1, n)[None, :]
    img = ((y_ ** 2 + x_ ** 2) < 0.7).to(torch.complex64)
    maps = torch.stack([torch.exp(-((x_ - a) ** 2 + (y_ - b) ** 2))
                        for a, b in [(0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)]]).to(torch.complex64)
    maps = maps / maps.abs().square().sum(0).sqrt()
    mask = torch.zeros(n, n)
    mask[:, ::4] = 1
    mask[:, n // 2 - 4:n // 2 + 4] = 1
    op = sense(maps, mask)
    return op, op(img)


class _Counter:
    """A callback: how many iterations ran and the first whose iterate is non-finite."""

    def __init__(self) -> None:
        self.calls, self.first = 0, None

    def __call__(self, it: int, x: torch.Tensor, rel: float) -> None:
        self.calls += 1
        if self.first is None and not bool(torch.isfinite(x).all()):
            self.first = it


def test_l1_wavelet_with_a_diverging_step_stops_at_the_first_nan_naming_the_step():
    op, y = _sense_problem()
    seen = _Counter()
    with pytest.raises(NonFiniteError, match=r"fista: .*iteration (\d+).*step 100\b") as err:
        recon.run("l1_wavelet", y, op, lam=1e-3, iterations=400, step=100.0, callback=seen)
    assert seen.first is not None  # it did diverge (first NaN / Inf at iteration ~17 of 400)
    assert seen.calls <= seen.first + 1 + FINITE_CHECK_EVERY  # was: all 400
    assert "1/L" in str(err.value)


@pytest.mark.parametrize("tolerance", [0.0, 1e-4])
def test_fista_without_callback_stops_within_the_check_period(tolerance):
    """No callback and no tolerance: no relative change is computed, the iterate is checked
    every FINITE_CHECK_EVERY iterations; with a tolerance, every iteration (NaN <= tol is
    False: it never stopped)."""
    op, y = _sense_problem()
    aty = op.H(y)
    seen = _Counter()  # the same run with a callback: where the iterate first goes non-finite
    with pytest.raises(NonFiniteError):
        fista(lambda v: op.gram(v) - aty, None, torch.zeros_like(aty), 100.0, iterations=400,
              callback=seen)
    assert seen.first is not None and seen.calls == seen.first + 1
    calls = [0]

    def grad_f(v):
        calls[0] += 1
        return op.gram(v) - aty

    with pytest.raises(NonFiniteError, match=r"iteration (\d+) of 400.*step 100\b") as err:
        fista(grad_f, None, torch.zeros_like(aty), 100.0, iterations=400, tolerance=tolerance)
    stopped = int(err.value.args[0].split("iteration ")[1].split()[0])
    assert calls[0] == stopped  # the iteration it names is the one it stopped at
    most = 0 if tolerance > 0 else FINITE_CHECK_EVERY - 1  # was: all 400
    assert seen.first + 1 <= stopped <= seen.first + 1 + most, (stopped, seen.first)


def test_fista_per_system_step_names_the_largest_step():
    op, y = _sense_problem()
    aty = op.H(y)
    steps = torch.tensor([0.5, 100.0]).reshape(2, 1, 1)
    with pytest.raises(NonFiniteError, match=r"step up to 100\b"):
        fista(lambda v: op.gram(v) - aty, None, torch.zeros(2, *aty.shape, dtype=aty.dtype),
              steps, iterations=400)


def test_fista_finite_runs_are_unchanged_and_check_no_more_than_asked():
    """A converging run is untouched: the same iterate as the plain recurrence (the check only
    reads the iterate)."""
    torch.manual_seed(0)
    a = torch.randn(30, 20, dtype=torch.float64)
    b = torch.randn(30, dtype=torch.float64)
    lip = float(torch.linalg.matrix_norm(a, 2)) ** 2
    x = fista(lambda v: a.T @ (a @ v - b), None, torch.zeros(20, dtype=torch.float64),
              1 / lip, iterations=37, accelerate=False)
    ref = torch.zeros(20, dtype=torch.float64)
    for _ in range(37):
        ref = ref - (a.T @ (a @ ref - b)) / lip
    assert torch.allclose(x, ref, rtol=0, atol=1e-12)


def test_admm_stops_at_a_nan_x_update_naming_rho():
    calls = [0]

    def x_update(v, rho, x_prev):  # an x-update that goes bad at its 5th call
        calls[0] += 1
        return v * (math.nan if calls[0] >= 5 else 1.0)

    x0 = torch.ones(8, 8, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"admm: .*iteration 5\b.*rho 2\b"):
        admm(x_update, lambda v, t: v, Identity(), x0, 2.0, iterations=1000, callback=lambda *a: None)
    assert calls[0] == 5
    calls[0] = 0
    with pytest.raises(NonFiniteError, match=r"admm: .*iteration 10\b.*every 10"):
        admm(x_update, lambda v, t: v, Identity(), x0, 2.0, iterations=1000)
    assert calls[0] == FINITE_CHECK_EVERY


def test_pdhg_with_diagonal_steps_too_large_stops_naming_them():
    """Diagonal (tensor) steps are used as given: 50x too large ones diverge."""
    torch.manual_seed(0)
    x0 = torch.zeros(16, 16, dtype=torch.float64)
    f = torch.rand(16, 16, dtype=torch.float64)
    D = FiniteDifference(2)
    blocks = [Identity(), D]
    prox_data = lambda v, s: (v - s * f) / (1 + s)  # noqa: E731  conj of 1/2||x - f||^2
    prox_tv = lambda v, s: v.clamp(-0.1, 0.1)  # noqa: E731  conj of 0.1 ||Dx||_1
    sig = [torch.full_like(x0, 50.0), torch.full_like(D(x0), 50.0)]
    seen = _Counter()
    with pytest.raises(NonFiniteError, match=r"pdhg: .*iteration \d+.*tau up to 50\b"):
        pdhg(blocks, [prox_data, prox_tv], lambda v, t: project_nonnegative(v), x0, sig,
             torch.full_like(x0, 50.0), iterations=5000, callback=seen)
    assert seen.first is not None and seen.calls <= seen.first + 1


def test_a_run_ending_between_two_checks_still_refuses_its_last_iterate():
    """Without a callback or tolerance the iterate is checked every FINITE_CHECK_EVERY
    iterations: a run of as many iterations as it takes to go non-finite (19 here, between two
    checks) returned its NaN iterate without an error."""
    op, y = _sense_problem()
    aty = op.H(y)
    seen = _Counter()
    with pytest.raises(NonFiniteError):
        fista(lambda v: op.gram(v) - aty, None, torch.zeros_like(aty), 100.0, iterations=400,
              callback=seen)
    last = seen.first + 1  # the first non-finite iteration, 1-based (19 here: between checks)
    with pytest.raises(NonFiniteError, match=rf"iteration {last} of {last}\b"):
        fista(lambda v: op.gram(v) - aty, None, torch.zeros_like(aty), 100.0, iterations=last)


def test_per_system_ratio_is_the_slowest_systems():
    """The batch's relative change is that of its slowest system (a bright slice must not stop a
    dim one early), a system with zero scale counting its change alone."""
    from mrirecon.solvers.stopping import per_system_ratio

    num = torch.tensor([[3.0, 4.0], [0.0, 1.0], [0.5, 0.0]], dtype=torch.float64)
    den = torch.tensor([[1.0, 0.0], [10.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    assert per_system_ratio(num, den, batch=1) == 5.0  # max(5, 0.1, 0.5)
    assert per_system_ratio(num[1:], den[1:], batch=1) == 0.5  # the zero-scale system: |num|
    whole = float(torch.linalg.vector_norm(num) / torch.linalg.vector_norm(den))
    assert per_system_ratio(num, den) == whole
