"""Classical methods and pipelines with a user's own operator or method (b88 audit): SIRT
refuses a signed system matrix, and an unknown pipeline method says how a method of one's own
is run."""

from __future__ import annotations

import pytest
import torch

from mrirecon.core import LinearOperator
from mrirecon.operators import FanBeam, ParallelBeam
from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.recon import run, sirt

N = 12


class Dense(LinearOperator):
    """``A x = R x.flatten()`` for a dense real matrix ``R`` (a user's CT system matrix)."""

    def __init__(self, R):
        super().__init__((N, N), (R.shape[0],))
        self.register_buffer("R", R)

    def _forward(self, x):
        return x.reshape(*x.shape[:-2], N * N) @ self.R.T

    def _adjoint(self, y):
        return (y @ self.R).reshape(*y.shape[:-1], N, N)


def test_sirt_refuses_a_system_matrix_with_negative_sums_naming_the_counts():
    """SIRT divides by A 1 and A^T 1: a user operator with signed entries returned an all-NaN
    image, blamed on "a diverging iteration"."""
    g = torch.Generator().manual_seed(0)
    R = torch.randn(40, N * N, generator=g)
    op = Dense(R)
    y = op(torch.rand(N, N, generator=g)).abs()
    rows, cols = int((R.sum(1) < 0).sum()), int((R.sum(0) < 0).sum())
    assert rows and cols
    for call in (lambda: sirt(y, op, iterations=3), lambda: run("sirt", y, op, iterations=3)):
        with pytest.raises(ValueError, match=rf"sirt: {rows} of 40 row sums A 1 and {cols} of "
                                             rf"{N * N} column sums A\^T 1 of Dense are negative "
                                             r".*needs a nonnegative system matrix"):
            call()
    R[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"sirt: .*row sums .*are negative \(or NaN / Inf\)"):
        sirt(y, Dense(R), iterations=3)


def test_sirt_runs_on_a_nonnegative_user_matrix_and_on_projectors_with_rays_missing_the_image():
    """Zero sums are normal: rays that miss the image (a detector wider than the image, a fan
    beam's outer rays) are skipped as before."""
    g = torch.Generator().manual_seed(1)
    R = torch.rand(40, N * N, generator=g)
    R[:5] = 0  # rays that see nothing
    x = torch.rand(N, N, generator=g)
    assert torch.isfinite(sirt(Dense(R)(x), Dense(R), iterations=5)).all()
    for geo in (CTGeometry.parallel((N, N), 8, 3 * N), CTGeometry.fan((N, N), 10, 4 * N)):
        op = (ParallelBeam if geo.beam == "parallel" else FanBeam)(geo)
        assert (op(torch.ones(N, N)) == 0).any()  # some rays miss the image
        out = sirt(op(x), op, iterations=20)
        assert torch.isfinite(out).all()
        assert float((out - x).norm()) < float(x.norm())


def test_an_unknown_pipeline_method_says_how_to_run_a_method_of_ones_own(tmp_path):
    """``mrirecon run my.yaml`` with ``method: my_cg`` said "unknown method 'my_cg'; classical:
    ..." and nothing of recon.register or run_pipeline (the CLI imports no user code)."""
    from mrirecon.core.config import ConfigError
    from mrirecon.pipeline.definitions import load_pipeline

    path = tmp_path / "my.yaml"
    path.write_text("name: mine\nmodality: mri\nreconstruct:\n  method: my_cg\n")
    with pytest.raises(ConfigError, match=r"unknown method 'my_cg'; classical: .*learned: .*\. A "
                                          r"method of your own .*mrirecon\.recon\.register\(name, "
                                          r"fn\) and run from Python .*run_pipeline\(config, .*"
                                          r"'mrirecon run' command imports no code of yours"):
        load_pipeline(str(path))
