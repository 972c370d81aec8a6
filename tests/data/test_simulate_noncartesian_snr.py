"""``simulate mri --snr-db X`` on a radial or spiral trajectory: every sample gets the noise of
the same object's Cartesian scan at X dB (the SNR of its Cartesian k-space, as the help and the
module say), so the file's own SNR is higher, the trajectory sampling the centre densely
(audit a17, finding 2: the help had defined the SNR over the samples written, which radial files
missed by 14 dB; the noise is kept, since the radial models were trained on it, and the text
corrected)."""

import math

import pytest
import torch

pytest.importorskip("ismrmrd")


def written_kspace(tmp_path, trajectory: str | None, snr_db: float | None) -> torch.Tensor:
    from mrirecon.cli import main
    from mrirecon.io import read_ismrmrd, read_fastmri

    out = tmp_path / f"{trajectory}_{snr_db}"
    argv = ["simulate", "mri", "--out", str(out), "--volumes", "1", "--slices", "2",
            "--coils", "4", "--size", "64", "64", "--seed", "3"]
    argv += ["--trajectory", trajectory] if trajectory else []
    argv += ["--noise-free"] if snr_db is None else ["--snr-db", str(snr_db)]
    assert main(argv) == 0
    (path,) = sorted(out.glob("*.h5"))
    data = (read_ismrmrd if trajectory else read_fastmri)(path).data
    return data.to(torch.complex128)


@pytest.mark.parametrize("trajectory", ["radial", "spiral"])
def test_noncartesian_samples_get_the_cartesian_scans_noise(tmp_path, trajectory):
    snr_db = 20.0
    cartesian = written_kspace(tmp_path, None, snr_db) - written_kspace(tmp_path, None, None)
    clean = written_kspace(tmp_path, trajectory, None)
    noise = written_kspace(tmp_path, trajectory, snr_db) - clean  # same object, same coils
    # the Cartesian file has the SNR asked over its own samples
    grid_clean = written_kspace(tmp_path, None, None)
    grid_snr = 10 * math.log10(float(grid_clean.abs().pow(2).mean())
                               / float(cartesian.abs().pow(2).mean()))
    n_grid, n = cartesian.numel(), noise.numel()
    # a noise power estimated from n complex samples has relative std 1 / sqrt(n); 5 of those
    assert grid_snr == pytest.approx(snr_db, abs=5 * 10 * math.log10(math.e) / math.sqrt(n_grid))
    # the trajectory's samples carry the same noise power per sample
    ratio = float(noise.abs().pow(2).mean() / cartesian.abs().pow(2).mean())
    assert ratio == pytest.approx(1.0, abs=5 * (1 / math.sqrt(n) + 1 / math.sqrt(n_grid)))
    # so the file's own SNR is above the one asked: its readouts sample the centre densely
    own = 10 * math.log10(float(clean.abs().pow(2).mean()) / float(noise.abs().pow(2).mean()))
    assert own > snr_db + 6
    # white and circular: equal power in the real and imaginary parts and across coils
    assert float(noise.real.var() / noise.imag.var()) == pytest.approx(1.0, abs=10 / math.sqrt(n))


def test_the_help_says_which_snr_the_option_sets():
    from mrirecon.cli_simulate import add_simulate
    import argparse

    parser = argparse.ArgumentParser()
    add_simulate(parser.add_subparsers())
    help_text = " ".join(parser._subparsers._group_actions[0].choices["simulate"]
                         ._subparsers._group_actions[0].choices["mri"].format_help().split())
    assert "Cartesian k-space" in help_text and "radial / spiral" in help_text
