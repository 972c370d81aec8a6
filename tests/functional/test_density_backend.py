"""Pipe-Menon density weights and the NUFFT backend they need (finufft >= 2.4).

finufft 2.3 ignores the ``spreadinterponly`` option with only a warning and runs the full,
deconvolved NUFFT instead of the plain spreading: the weights came out 1e144 times too large
(``gridding_gain`` 9e109). These tests run in the floors check (``.ci/floors``)."""

from __future__ import annotations

import math

import pytest
import torch

from mrirecon.functional.density import gridding_gain, pipe_menon_density

finufft = pytest.importorskip("finufft")


def _radial(spokes: int = 64, samples: int = 128) -> torch.Tensor:
    r = torch.linspace(-0.5, 0.5 - 1.0 / samples, samples, dtype=torch.float64)
    angle = torch.arange(spokes, dtype=torch.float64) * math.pi / spokes
    return torch.stack([r[None] * torch.cos(angle)[:, None], r[None] * torch.sin(angle)[:, None]], -1)


def test_pipe_menon_weights_grid_a_smooth_object_at_its_intensity():
    # the library scale: a gridded smooth object at its intensity (gain 1). The weights are
    # converged to within the kernel tolerance (eps 1e-3) and the fixed point's discretisation
    # (0.4 % at oversampling 2, the docstring's figure): 5 % leaves room and still catches any
    # wrong backend (finufft 2.3 gave 9e109)
    trajectory = _radial()
    weights = pipe_menon_density(trajectory, (64, 64))
    assert torch.isfinite(weights).all() and (weights > 0).all()
    assert gridding_gain(weights, trajectory, (64, 64)) == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("version", ["2.3.0", "2.3.1", "2.2.0", "1.1.2"])
def test_pipe_menon_refuses_a_finufft_without_spreadinterponly(monkeypatch, version):
    monkeypatch.setattr(finufft, "__version__", version)
    with pytest.raises(ImportError, match=rf"pipe_menon_density needs finufft >= 2\.4 .*found "
                                          rf"finufft {version}.*pip install 'finufft>=2\.4'"):
        pipe_menon_density(_radial(8, 16), (16, 16))


@pytest.mark.parametrize("version", ["2.4.0", "2.4.1", "2.5.0rc1", "3.0.0.dev0"])
def test_pipe_menon_takes_a_finufft_with_spreadinterponly(monkeypatch, version):
    trajectory = _radial(8, 16)
    reference = pipe_menon_density(trajectory, (16, 16))
    monkeypatch.setattr(finufft, "__version__", version)
    assert torch.equal(pipe_menon_density(trajectory, (16, 16)), reference)


def test_the_cli_names_an_outdated_finufft_as_a_users_error(monkeypatch, tmp_path, capsys):
    # `mrirecon simulate mri --trajectory spiral` computes Pipe-Menon weights: with finufft 2.3
    # it ended in "internal error: ImportError: ... (report it)", status 1; an outdated package
    # is the user's to upgrade, like a missing one: one line, status 2
    from mrirecon.cli import main

    monkeypatch.setattr(finufft, "__version__", "2.3.0")
    with pytest.raises(SystemExit) as end:
        main(["simulate", "mri", "--out", str(tmp_path / "sim"), "--volumes", "1", "--slices", "1",
              "--coils", "2", "--size", "32", "32", "--trajectory", "spiral", "--readouts", "8"])
    assert end.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "internal error" not in err and "needs finufft >= 2.4" in err
    assert "found finufft 2.3.0" in err and "pip install 'finufft>=2.4'" in err
