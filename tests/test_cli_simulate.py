"""``mrirecon simulate mri|ct``: arguments, outputs equal to the library calls, errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from mrirecon.cli import build_parser, main


def _arrays(path):
    with h5py.File(path, "r") as h5:
        return {k: np.asarray(h5[k][()]) for k in h5.keys()}


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr()


def test_simulate_mri_matches_library(tmp_path, capsys):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    argv = [
        "simulate",
        "mri",
        "--out",
        str(tmp_path / "cli"),
        "--volumes",
        "2",
        "--slices",
        "1",
        "--coils",
        "2",
        "--size",
        "16",
        "12",
        "--seed",
        "3",
        "--snr-db",
        "28",
        "--contrast",
        "T2",
        "--acceleration",
        "4",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    lib = simulate_mri_dataset(
        tmp_path / "lib",
        volumes=2,
        slices=1,
        coils=2,
        size=(16, 12),
        seed=3,
        snr_db=28.0,
        contrasts=["T2"],
        acceleration=4.0,
    )
    assert [p.split("/")[-1] for p in printed] == [p.name for p in lib]
    for cli_path, lib_path in zip(printed, lib):
        a, b = _arrays(cli_path), _arrays(lib_path)
        assert a.keys() == b.keys() == {"kspace", "reconstruction_rss", "ismrmrd_header", "mask"}
        for key in a:
            assert a[key].tobytes() == b[key].tobytes()
        assert a["kspace"].shape == (1, 2, 16, 12)


def test_simulate_ct_matches_library(tmp_path, capsys):
    pytest.importorskip("mrirecon.operators.ct", reason="CT projector not available")
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    argv = [
        "simulate",
        "ct",
        "--out",
        str(tmp_path / "cli"),
        "--geometry",
        "parallel",
        "--views",
        "10",
        "--photons",
        "2000",
        "--size",
        "16",
        "--seed",
        "5",
        "--samples",
        "2",
        "--part",
        "validation",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out.split()
    lib = simulate_ct_dataset(
        tmp_path / "lib",
        geometry="parallel",
        views=10,
        photons=2000.0,
        size=16,
        seed=5,
        samples=2,
        part="validation",
    )
    assert (
        [p.split("/")[-1] for p in printed]
        == [p.name for p in lib]
        == ["observation_validation_000.hdf5", "ground_truth_validation_000.hdf5"]
    )
    for cli_path, lib_path in zip(printed, lib):
        assert _arrays(cli_path)["data"].tobytes() == _arrays(lib_path)["data"].tobytes()
    obs = _arrays(printed[0])["data"]
    assert obs.shape == (2, 10, 23) and obs.dtype == np.float32


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "mri", "--out", "x", "--size", "0", "16"], "--size: must be >= 4"),
        (["simulate", "mri", "--size", "16", "16"], "--out"),
        (["simulate", "mri", "--out", "x", "--coils", "two"], "--coils: expected an integer"),
        (
            ["simulate", "mri", "--out", "x", "--acceleration", "0.5"],
            "--acceleration: must be >= 1",
        ),
        (["simulate", "mri", "--out", "x", "--contrast", "T3"], "invalid choice: 'T3'"),
        (
            ["simulate", "mri", "--out", "x", "--coils", "8", "--max-coils", "4"],
            "--max-coils (4) must be >= --coils (8)",
        ),
        (["simulate", "mri", "--out", "x", "--snr-db", "inf"], "--snr-db: must be finite"),
        # wrote files, exit 0: at 400 dB noise of 2e-24 on k-space of 5e-3, lost in float32
        # rounding while the attrs said 400 dB; at -400 dB k-space of pure noise (peak 9e16)
        (["simulate", "mri", "--out", "x", "--snr-db", "400"], "--snr-db: 400 dB is beyond +-138 dB"),
        (["simulate", "mri", "--out", "x", "--snr-db", "-400"], "--snr-db: -400 dB is beyond +-138"),
        # wrote a file whose geometry has 6e298 mm pixels, beyond float32
        (["simulate", "ct", "--out", "x", "--fov-mm", "1e300"], "--fov-mm: 1e300 mm is larger than"),
        (["simulate", "ct", "--out", "x", "--geometry", "cone"], "invalid choice: 'cone'"),
        (["simulate", "ct", "--out", "x", "--photons", "-5"], "--photons: must be a positive"),
        (["simulate", "ct", "--out", "x", "--views", "0"], "--views: must be >= 1"),
        # a noise setting beside --noise-free was ignored without a word (noise-free data written)
        (["simulate", "ct", "--out", "x", "--noise-free", "--photons", "64"],
         "--noise-free writes data without noise; --photons would be ignored"),
        (["simulate", "ct", "--out", "x", "--noise-free", "--min-count", "0.1"], "--min-count would be"),
        (["simulate", "mri", "--out", "x", "--noise-free", "--snr-db", "10"], "--snr-db would be ignored"),
        (["simulate"], "required"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    code, captured = _exit(argv, capsys)
    assert code == 2
    assert message in captured.err


def test_readouts_with_a_cartesian_trajectory_is_refused(tmp_path, capsys):
    # before: --readouts was ignored without a word, fully sampled Cartesian k-space was
    # written and the command exited 0
    out = tmp_path / "sim"
    code, captured = _exit(["simulate", "mri", "--out", str(out), "--volumes", "1", "--slices",
                            "1", "--coils", "1", "--size", "8", "8", "--readouts", "5"], capsys)
    assert code == 2
    assert ("--readouts is a radial / spiral option (--trajectory radial or spiral); use "
            "--acceleration for Cartesian undersampling") in captured.err
    assert not out.exists()  # nothing written


def test_errors_from_the_simulator_are_reported(tmp_path, capsys):
    pytest.importorskip("mrirecon.operators.ct", reason="CT projector not available")
    code, captured = _exit(
        ["simulate", "ct", "--out", str(tmp_path), "--size", "8", "--views", "2", "--part", "a/b"],
        capsys,
    )
    assert code == 2 and "part must be a word" in captured.err


def test_help_texts(capsys):
    code, captured = _exit(["simulate", "mri", "--help"], capsys)
    assert code == 0 and "fastMRI" in captured.out and "--readout-oversampling" in captured.out
    code, captured = _exit(["simulate", "ct", "--help"], capsys)
    assert code == 0 and "LoDoPaB" in captured.out and "--photons" in captured.out
    assert "simulate" in build_parser().format_help()


def test_snr_and_fov_limits_admit_what_float32_can_hold():
    """The limits refuse only what float32 cannot represent: +-138 dB and 10 m still parse, and
    at 138 dB the noise is still above float32's rounding of the signal (2^-23 relative)."""
    import numpy as np

    from mrirecon.cli_simulate import SNR_DB_LIMIT, _fov_mm, _snr_db

    assert _snr_db("138") == 138.0 and _snr_db("-138") == -138.0 and _fov_mm("1e4") == 1e4
    assert 10 ** (-SNR_DB_LIMIT / 20) > np.finfo(np.float32).eps


def test_simulate_mri_without_noise_options_uses_the_library_default(tmp_path, capsys):
    """Fails if the CLI's default --snr-db changed from 30: the
    command without --snr-db writes the bytes ``simulate_mri_dataset``'s defaults write."""
    from mrirecon.cli import main
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    common = dict(volumes=1, slices=1, coils=2, size=(16, 12), seed=3)
    assert main(["simulate", "mri", "--out", str(tmp_path / "cli"), "--volumes", "1",
                 "--slices", "1", "--coils", "2", "--size", "16", "12", "--seed", "3"]) == 0
    printed = capsys.readouterr().out.split()
    lib = simulate_mri_dataset(tmp_path / "lib", **common)
    assert len(printed) == len(lib) == 1
    assert _arrays(printed[0])["kspace"].tobytes() == _arrays(lib[0])["kspace"].tobytes()


def test_simulate_ct_without_noise_options_uses_the_library_default(tmp_path, capsys):
    """Fails if the CLI's default --photons changed from 4096, the
    value its help states: without --photons the CLI writes the library default's data."""
    pytest.importorskip("mrirecon.operators.ct", reason="CT projector not available")
    from mrirecon.cli import main
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    assert main(["simulate", "ct", "--out", str(tmp_path / "cli"), "--geometry", "parallel",
                 "--views", "10", "--size", "16", "--seed", "5", "--samples", "1",
                 "--part", "validation"]) == 0
    printed = capsys.readouterr().out.split()
    lib = simulate_ct_dataset(tmp_path / "lib", geometry="parallel", views=10, size=16, seed=5,
                              samples=1, part="validation")
    assert _arrays(printed[0])["data"].tobytes() == _arrays(lib[0])["data"].tobytes()


def test_a_readout_longer_than_ismrmrd_can_count_is_refused_before_any_work(tmp_path, capsys):
    """One spiral interleave over a 420 x 420 matrix has 67024 samples; ISMRMRD counts them in
    16 bits: "internal error: OverflowError: Python integer 67024 out of bounds for uint16" after
    the whole simulation (18 s), leaving an empty folder."""
    out = tmp_path / "sp"
    with pytest.raises(SystemExit) as exc:
        main(["simulate", "mri", "--out", str(out), "--coils", "2", "--slices", "1",
              "--volumes", "1", "--template-resolution", "2", "--size", "420", "420",
              "--trajectory", "spiral", "--readouts", "1"])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "gives 67024 samples per readout; ISMRMRD files store at most 65535" in err
    assert "--readouts" in err and not out.exists()
