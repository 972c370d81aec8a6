"""A partial echo in radial data: the phase constraint of mri_radial_cs, its detection from the
spokes' directions, and the learned pipeline's warning."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace as NS

import h5py
import numpy as np
import pytest
import torch

from mrirecon.core import inner
from mrirecon.data.simulate_mri import simulate_mri_volume
from mrirecon.functional.density import radial_density
from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian
from mrirecon.metrics import psnr
from mrirecon.functional.nufft import DEFAULT_EPS
from mrirecon.operators import PhaseConstrained, nufft_sense
from mrirecon.pipeline import echo_noncartesian as echo
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
from mrirecon.sampling import golden_angle_radial, radial_trajectory
from tests.helpers import TOL, check_gram, check_linearity, check_vjp, random_like_shape

SIZE, SPOKES, SEED = 64, 40, 27
SAMPLES = 2 * SIZE  # 2x oversampled spokes, as the simulator writes them


def _over_2pi(spokes: int, samples: int) -> torch.Tensor:
    """Full spokes at uniform directed angles over 2 pi (an even count: each has an opposite)."""
    theta = torch.arange(spokes, dtype=torch.float64) * 2 * math.pi / spokes
    rho = (torch.arange(samples, dtype=torch.float64) - samples / 2) / samples
    return torch.stack([rho * torch.sin(theta)[:, None], rho * torch.cos(theta)[:, None]], -1)


@pytest.fixture(scope="module")
def volume():
    return simulate_mri_volume(0, slices=1, coils=8, size=(SIZE, SIZE), seed=SEED)


def _write(folder: Path, vol, traj: torch.Tensor, missing: int) -> Path:
    """The volume sampled on ``traj`` with noise, the first ``missing`` samples of every spoke
    never acquired, written by our writer (which sets center_sample)."""
    k = nufft_sense(vol.maps.to(torch.complex64), traj, toeplitz=False)(vol.image.to(torch.complex64))
    g = torch.Generator().manual_seed(1)
    k = k + vol.parameters["noise_sigma"] * torch.complex(torch.randn(k.shape, generator=g),
                                                          torch.randn(k.shape, generator=g))
    t, k = traj[:, missing:], k[..., missing:]
    header = vol.header.with_(extra={**vol.header.extra, "trajectory": "radial"})
    folder.mkdir(parents=True)
    return write_ismrmrd_noncartesian(folder / "scan.h5", k, t, header,
                                      radial_density(t, (SIZE, SIZE)))


def _run(path: Path, out: Path, name: str = "mri_radial_cs", overrides=()) -> tuple[np.ndarray, dict]:
    config, text = load_pipeline(name, list(overrides))
    assert run_pipeline(config, [str(path)], out, progress=False, config_text=text) == 0
    with h5py.File(out / "reconstructions" / "scan.h5", "r") as h5:
        rec = h5["reconstruction"][()]
    (f,) = json.loads((out / "provenance.json").read_text())["files"]
    return rec, f


# ---- the operator ---------------------------------------------------------------------------

@pytest.mark.parametrize("real", [torch.float64, torch.float32])
def test_phase_constrained_is_the_adjoint_in_the_real_inner_product(real):
    """P x = p x on real x, P^H y = Re(conj(p) y): <P x, y> and <x, P^H y> agree in the real
    inner product of the complex range (the real part of the complex one), also for A @ P with
    the NUFFT operator; the complex inner product keeps an imaginary part that no real x^T can
    give, so P has no adjoint there: the domain is real, and a complex image is refused."""
    cplx = torch.complex128 if real == torch.float64 else torch.complex64
    tol = TOL[real]
    p = torch.sgn(random_like_shape((2, 12, 10), cplx, 3))
    P = PhaseConstrained(p)
    x = random_like_shape((2, 12, 10), real, 4)
    y = random_like_shape((2, 12, 10), cplx, 5)
    lhs, rhs = inner(P(x), y), inner(x, P.H(y))
    scale = float(torch.linalg.vector_norm(P(x)) * torch.linalg.vector_norm(y))
    assert abs(float(lhs.real - rhs)) / scale < tol
    assert abs(float(lhs.imag)) / scale > 1e3 * tol  # the complex inner product differs
    check_linearity(P, x, tol)
    check_gram(P, x, tol)
    check_vjp(P, x, tol)  # autograd of a real-to-complex map is this adjoint
    with pytest.raises(TypeError, match="must be real"):
        P(x.to(cplx))
    # composed with the radial operator (Toeplitz gram): the real problem tv(phase=) solves
    maps = torch.sgn(random_like_shape((3, 12, 10), cplx, 6)) / math.sqrt(3)
    A = nufft_sense(maps, radial_trajectory(9, 24)) @ PhaseConstrained(p[0])
    x, y = x[0], random_like_shape(A(x[0]).shape, cplx, 7)
    lhs, rhs = inner(A(x), y).real, inner(x, A.H(y))
    scale = float(torch.linalg.vector_norm(A(x)) * torch.linalg.vector_norm(y))
    assert abs(float(lhs - rhs)) / scale < 10 * DEFAULT_EPS[cplx]  # the NUFFT's accuracy
    assert A.gram(x).dtype == real


# ---- detection ------------------------------------------------------------------------------

def test_spokes_over_pi_leave_the_missing_side_unmeasured():
    """Directed spokes over pi leave half the directions without a spoke; uniform spokes over
    2 pi and golden-angle steps of pi / phi (directed angles spread over 2 pi) leave none."""
    assert echo.unmeasured_share(radial_trajectory(40, 96)) == pytest.approx(0.5, abs=0.03)
    assert echo.unmeasured_share(_over_2pi(40, 96)) == 0
    assert echo.unmeasured_share(golden_angle_radial(40, 96)) == 0
    # golden angles folded into [0, pi) are a layout over pi
    folded = radial_trajectory(40, 96, golden=True)
    theta = torch.atan2(folded[:, -1, 0], folded[:, -1, 1]) % math.pi
    rho = (torch.arange(96, dtype=torch.float64) - 48) / 96
    folded = torch.stack([rho * torch.sin(theta)[:, None], rho * torch.cos(theta)[:, None]], -1)
    assert echo.unmeasured_share(folded) > 0.4


# ---- the pipeline ---------------------------------------------------------------------------

def test_radial_cs_fills_a_partial_echo_over_pi(volume, tmp_path):
    """Spokes over pi, the first 25 % of every spoke never sampled: mri_radial_cs solves for a
    real image times the phase of the spokes' symmetric part and says so. Measured (2 slices,
    this seed and size): TV 30.0 dB uncorrected, 37.8 dB phase-constrained, 41.6 dB for the
    full echo; this test's one slice gains 8.0 dB; asserted: at least 4 dB, half of that."""
    path = _write(tmp_path / "pe", volume, radial_trajectory(SPOKES, SAMPLES), SAMPLES // 4)
    with h5py.File(path, "r") as h5:
        assert h5["dataset/data"][0]["head"]["center_sample"] == SAMPLES // 4  # 32 of 96
    truth = torch.from_numpy(volume.image.abs().numpy())
    fixed, f = _run(path, tmp_path / "fixed")
    plain, g = _run(path, tmp_path / "plain", overrides=["preprocess.partial_fourier=none"])
    gain = float(psnr(truth, torch.from_numpy(fixed))) - float(psnr(truth, torch.from_numpy(plain)))
    assert gain >= 4.0, gain
    (note,) = [n for n in f["notes"] if "partial echo" in n]
    assert "32 before, 63 after" in note and "25%" in note and "phase constraint" in note
    assert not any("partial echo" in w for w in f["warnings"])
    # without the constraint the run warns that tv left the missing side unsampled
    (warning,) = [w for w in g["warnings"] if "partial echo" in w]
    assert "never measured" in warning and "unsampled" in warning


def test_radial_cs_leaves_spokes_over_2pi_alone(volume, tmp_path):
    """Uniform spokes over 2 pi: the spokes running the other way hold the missing samples, so
    the run applies no constraint (the same image as with preprocess.partial_fourier=none) and
    notes why."""
    path = _write(tmp_path / "pe", volume, _over_2pi(SPOKES, SAMPLES), SAMPLES // 4)
    short = ["reconstruct.params.iterations=10"]
    rec, f = _run(path, tmp_path / "a", overrides=short)
    plain, _ = _run(path, tmp_path / "b", overrides=[*short, "preprocess.partial_fourier=none"])
    np.testing.assert_array_equal(rec, plain)
    (note,) = [n for n in f["notes"] if "partial echo" in n]
    assert "span 2 pi" in note and "no fill" in note
    assert not any("partial echo" in w for w in f["warnings"])


def test_partial_echo_messages_are_worked_out_once_per_slice(volume, tmp_path, monkeypatch):
    """The run's warnings and notes of a slice came from two calls that each worked out the
    partial echo's messages (MRIStages.data_warnings, then data_notes); one call now serves
    both, and the note is the same."""
    path = _write(tmp_path / "pe", volume, _over_2pi(SPOKES, SAMPLES), SAMPLES // 4)
    calls = []
    real = echo.echo_messages

    def counted(s, *args):
        calls.append(s.index)
        return real(s, *args)

    monkeypatch.setattr(echo, "echo_messages", counted)
    _, f = _run(path, tmp_path / "out", overrides=["reconstruct.params.iterations=2"])
    assert calls == [0]  # the volume's one slice, once
    (note,) = [n for n in f["notes"] if "partial echo" in n]
    assert note.startswith("scan.h5: ") and "span 2 pi" in note and "no fill applied" in note


def test_learned_radial_pipeline_warns_of_an_uncorrected_partial_echo(volume, tmp_path, caplog):
    """mri_radial_learned does not correct a partial echo over pi: a logged warning names the
    file and the share never sampled."""
    path = _write(tmp_path / "pe", volume, radial_trajectory(SPOKES, SAMPLES), SAMPLES // 8)
    with caplog.at_level(logging.WARNING, logger="mrirecon.pipeline"):
        _, f = _run(path, tmp_path / "out", "mri_radial_learned")
    logged = [r.getMessage() for r in caplog.records if "partial echo" in r.getMessage()]
    assert len(logged) == 1 and logged[0] in f["warnings"]
    assert logged[0].startswith("scan.h5: ") and "16 of a symmetric 128-sample" in logged[0]
    assert "not corrected" in logged[0] and "density_weighted" in logged[0]


def test_symmetric_weights_are_a_hann_taper_over_the_symmetric_part():
    before, after, samples = 10, 30, 41
    reach = min(before, after)
    s = NS(header=NS(extra={"echo_samples": [before, after]}), trajectory=torch.zeros(3, samples, 2))
    w = echo.symmetric_weights(s)
    assert tuple(w.shape) == (3, samples)
    row = w[0]
    # the support is the (2 reach + 1)-sample symmetric part that echo_messages names
    assert int((row > 0).sum()) == 2 * reach + 1
    assert float(row[before]) == pytest.approx(1.0, abs=1e-12)
    for d in range(1, reach + 1):
        assert float(row[before + d]) == pytest.approx(float(row[before - d]), abs=1e-12)
        assert float(row[before + d]) < float(row[before + d - 1])  # tapering
    # tapered to zero at the edge (Hann: sin^2(pi / (2 (reach + 1))) <= (pi / (2 (reach + 1)))^2)
    assert float(row[before + reach]) <= (math.pi / (2 * (reach + 1))) ** 2


def test_a_given_phase_is_not_replaced_by_the_symmetric_phase():
    traj = radial_trajectory(16, 32)  # uniform spokes over pi: the missing side is unmeasured
    s = NS(trajectory=traj, header=NS(extra={"echo_samples": [8, 23]}))
    assert echo.applies(s, NS(method="tv", params={}), "phase_constrained", learned=False)
    assert not echo.applies(s, NS(method="tv", params={"phase": "given"}), "phase_constrained",
                            learned=False)
    assert not echo.applies(s, NS(method="tv", params={}), "zero_fill", learned=False)
