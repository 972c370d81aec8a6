"""``mrirecon simulate mri`` / ``simulate ct`` (registered by :mod:`mrirecon.cli` on demand):
simulated multi-coil brain k-space in the fastMRI layout and low-dose CT in the LoDoPaB layout."""

from __future__ import annotations

import argparse

from mrirecon.cli import SIMULATE_HELP, HelpFormatter, _add_threads
from mrirecon.cli_types import (acceleration, finite_float, folder, int_at_least, positive_float,
                                seed, write_problem)
from mrirecon.data.simulate_ct import FOV_MM_LIMIT  # the limits (derived there) are the
from mrirecon.data.simulate_mri import SNR_DB_LIMIT  # simulators', which refuse the same values


def _snr_db(text: str) -> float:
    value = finite_float(text)
    if abs(value) > SNR_DB_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text} dB is beyond +-{SNR_DB_LIMIT:g} dB, where float32 k-space cannot hold both "
            "signal and noise (one is below the other's rounding); use --noise-free for data "
            "without noise")
    return value


def _fov_mm(text: str) -> float:
    value = positive_float(text)
    if value > FOV_MM_LIMIT:
        raise argparse.ArgumentTypeError(f"{text} mm is larger than {FOV_MM_LIMIT:g} mm (10 m)")
    return value


def _noise_options(args: argparse.Namespace, flags: dict[str, str], defaults: dict[str, float]) -> None:
    """Fill the noise options' defaults; with ``--noise-free`` a noise option given as well is an
    error (``simulate ct --noise-free --photons 64`` wrote noise-free data without a word)."""
    given = [flag for flag, dest in flags.items() if getattr(args, dest) is not None]
    if args.noise_free and given:
        args._parser.error(f"--noise-free writes data without noise; {', '.join(given)} would be "
                           "ignored: drop one of them")
    for dest, value in defaults.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


# not runner.check_output: that one creates the folder; simulate creates none before its checks
def _check_out(out: str) -> None:
    """``--out`` is a folder or can be created as one, or a user error naming it before any
    work: a file there failed after the simulation with a bare "error: File exists" (a file
    above it: "error: Not a directory"), naming neither the path nor the option. Nothing is
    created here (the simulators create the folder once their checks passed); the write check
    is :func:`mrirecon.cli_types.write_problem`, shared with ``train --out``."""
    from pathlib import Path

    from mrirecon.io.atomic import file_in_the_way

    path = Path(out)
    blocked = file_in_the_way(path)
    if blocked == path:
        raise ValueError(f"--out {out} is a file, not a folder; pass a folder path")
    if blocked is not None:
        raise ValueError(f"--out {out}: cannot create the folder ({blocked} is a file, not a "
                         "folder); pass a folder path")
    problem = write_problem(path)
    if problem:
        raise ValueError(f"--out {out}: {problem}; pass a writable location")


def _check_readouts(args: argparse.Namespace) -> None:
    """``--readouts`` a spiral can hold, named by its option (100000 spiral arms were a numpy
    gradient error naming no option). The memory and disk they need are checked by the library
    (``check_mri_budget`` in :func:`simulate_noncartesian_dataset`, before the trajectory is
    built: 100000000 radial spokes were "internal error: MemoryError"), once."""
    from mrirecon.sampling.nonuniform import max_spiral_interleaves

    n = max(args.size)
    if args.trajectory == "spiral" and args.readouts is not None:
        most = max_spiral_interleaves(n)
        if args.readouts > most:
            args._parser.error(f"--readouts {args.readouts}: a spiral of --size {args.size[0]} "
                               f"{args.size[1]} takes at most {most} interleaves (more reach the "
                               f"edge of k-space in one step of the design); {max(n // 8, 1)} "
                               "is the default")


def _remove_orphans(out: str) -> None:
    """Delete the temporary files (``.NAME.XXXXXXXX.h5.tmp``) that a simulation killed while
    writing left in ``out``: they stayed after any later run (a plain ``run`` removed only its
    own output folder's, and only with ``--resume``)."""
    import logging
    import time

    from mrirecon.io.atomic import remove_temp_files

    removed = remove_temp_files(out, before=time.time())
    if removed:
        logging.getLogger("mrirecon.data").info(
            "removed %d temporary file(s) an interrupted simulation left in %s", len(removed), out)


def cmd_simulate_mri(args: argparse.Namespace) -> int:
    """``mrirecon simulate mri``: write fastMRI-layout files; prints one path per line."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    _noise_options(args, {"--snr-db": "snr_db"}, {"snr_db": 30.0})
    options = {
        "readout_oversampling": args.readout_oversampling,
        "resolution": args.template_resolution,
    }
    if args.contrast:
        options["contrasts"] = args.contrast
    if args.orientation:
        options["orientations"] = args.orientation
    coils = args.coils if args.max_coils is None else (args.coils, args.max_coils)
    if args.max_coils is not None and args.max_coils < args.coils:
        args._parser.error(f"--max-coils ({args.max_coils}) must be >= --coils ({args.coils})")
    if args.trajectory == "cartesian" and args.readouts is not None:
        # it was ignored without a word: fully sampled Cartesian files written, exit 0
        args._parser.error("--readouts is a radial / spiral option (--trajectory radial or "
                           "spiral); use --acceleration for Cartesian undersampling")
    if args.trajectory != "cartesian" and (args.acceleration is not None
                                           or args.readout_oversampling != 1):
        args._parser.error("--acceleration and --readout-oversampling are Cartesian options; "
                           "use --readouts for radial / spiral undersampling")
    _check_out(args.out)
    if args.trajectory != "cartesian":
        _check_readouts(args)
    _remove_orphans(args.out)
    if args.trajectory != "cartesian":
        from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

        options.pop("readout_oversampling")
        paths = simulate_noncartesian_dataset(
            args.out, args.trajectory, volumes=args.volumes, slices=args.slices, coils=coils,
            size=tuple(args.size), seed=args.seed,
            snr_db=None if args.noise_free else args.snr_db, readouts=args.readouts, **options)
        for path in paths:
            print(path)
        return 0
    paths = simulate_mri_dataset(
        args.out,
        volumes=args.volumes,
        slices=args.slices,
        coils=coils,
        size=tuple(args.size),
        seed=args.seed,
        acceleration=args.acceleration,
        snr_db=None if args.noise_free else args.snr_db,
        **options,
    )
    for path in paths:
        print(path)
    return 0


def cmd_simulate_ct(args: argparse.Namespace) -> int:
    """``mrirecon simulate ct``: write LoDoPaB-layout files; prints one path per line."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    _noise_options(args, {"--photons": "photons", "--min-count": "min_count"},
                   {"photons": 4096.0, "min_count": 1.0})
    _check_out(args.out)
    _remove_orphans(args.out)
    paths = simulate_ct_dataset(
        args.out,
        geometry=args.geometry,
        views=args.views,
        photons=None if args.noise_free else args.photons,
        size=args.size,
        seed=args.seed,
        samples=args.samples,
        part=args.part,
        sources=args.sources,
        detectors=args.detectors,
        fov_mm=args.fov_mm,
        min_count=args.min_count,
    )
    for path in paths:
        print(path)
    return 0


def add_simulate(subparsers: argparse._SubParsersAction) -> None:
    """Register ``mrirecon simulate mri`` and ``mrirecon simulate ct``."""
    from mrirecon.data.anatomy import CONTRASTS
    from mrirecon.data.simulate_mri import ORIENTATIONS

    simulate = subparsers.add_parser(
        "simulate",
        help=SIMULATE_HELP,
        description="Write simulated scanner datasets from the allowed real anatomy "
        "(MNI152 template, allowed CT DICOM files) and phantoms. Files are written "
        "atomically; the same --seed gives identical data on every machine.",
    )
    kinds = simulate.add_subparsers(dest="kind", metavar="{mri,ct}", required=True)

    mri = kinds.add_parser(
        "mri",
        help="multi-coil brain k-space (fastMRI HDF5)",
        formatter_class=HelpFormatter,
        description="Simulate multi-coil brain MRI volumes from the MNI152 template: random "
        "slab position, orientation, contrast (T1/T2/PD/FLAIR), elastic "
        "deformation, bias and phase; birdcage coil maps; complex Gaussian noise. "
        "Writes file_brain_<ACQ>_sim<seed>_<n>.h5 with kspace (slices, coils, H, W) "
        "complex64, reconstruction_rss and the ISMRMRD header.",
        epilog="example: mrirecon simulate mri --out sim_mri --volumes 4 --slices 8 --coils 8 "
        "--size 320 320 --seed 0",
    )
    mri.add_argument("--out", "--output", "-o", required=True, type=folder,
                     help="output folder (created); --output / -o as in run, bench and demo")
    mri.add_argument(
        "--volumes", type=int_at_least(1), default=4, help="number of volumes (files)"
    )
    mri.add_argument("--slices", type=int_at_least(1), default=8, help="slices per volume")
    mri.add_argument(
        "--coils",
        type=int_at_least(1),
        default=8,
        help="receive coils (the minimum when --max-coils is given)",
    )
    mri.add_argument(
        "--max-coils",
        type=int_at_least(1),
        default=None,
        help="draw the coil count per volume uniformly in [--coils, --max-coils] (default: "
        "--coils for every volume)",
    )
    mri.add_argument(
        "--size",
        type=int_at_least(4),
        nargs=2,
        metavar=("H", "W"),
        default=[320, 320],
        help="recon size in pixels (rows = readout, columns = phase encoding)",
    )
    mri.add_argument("--seed", type=seed, default=0, help="dataset seed")
    mri.add_argument(
        "--snr-db",
        type=_snr_db,
        default=None,
        help="SNR in dB of the object's Cartesian k-space (radial / spiral samples get that "
        "scan's noise per sample, so their own SNR is higher: the centre is sampled densely): "
        "10 log10(mean |k|^2 / noise variance) (default 30)",
    )
    mri.add_argument("--noise-free", action="store_true", help="write noise-free k-space")
    mri.add_argument(
        "--acceleration",
        type=acceleration,
        default=None,
        help="undersample like fastMRI test files (mask dataset, zeroed columns; default: fully "
        "sampled)",
    )
    mri.add_argument(
        "--readout-oversampling",
        type=int_at_least(1),
        default=1,
        help="readout oversampling factor (fastMRI brain data: 2)",
    )
    mri.add_argument(
        "--contrast",
        choices=sorted(CONTRASTS),
        action="append",
        help="fix the contrast (repeat to cycle over volumes); random if absent",
    )
    mri.add_argument(
        "--orientation",
        choices=list(ORIENTATIONS),
        action="append",
        help="fix the orientation (repeat to cycle); random if absent",
    )
    mri.add_argument(
        "--trajectory",
        choices=("cartesian", "radial", "spiral"),
        default="cartesian",
        help="radial (golden-angle spokes) or spiral (variable density) write ISMRMRD files whose "
        "acquisitions carry traj (kx, ky, density weight); cartesian writes fastMRI files",
    )
    mri.add_argument(
        "--readouts",
        type=int_at_least(1),
        default=None,
        help="radial spokes (default: max(size)) or spiral interleaves (default: max(size) // 8)",
    )
    mri.add_argument(
        "--template-resolution",
        type=int,
        choices=(1, 2),
        default=1,
        help="MNI152 template resolution in mm",
    )
    _add_threads(mri)  # "--threads N (before or after the command)", as the README says
    mri.set_defaults(func=cmd_simulate_mri, _parser=mri)

    ct = kinds.add_parser(
        "ct",
        help="low-dose CT sinograms (LoDoPaB-CT HDF5)",
        formatter_class=HelpFormatter,
        description="Simulate low-dose CT: ground truths from the allowed CT DICOM images and "
        "random ellipse phantoms (HU -> mu = 0.0192/mm (1 + HU/1000)), projected "
        "with the package's CT operator, Poisson noise with --photons incident "
        "photons per bin. Writes observation_<part>_NNN.hdf5 (post-log / MU_MAX) "
        "and ground_truth_<part>_NNN.hdf5 (mu / MU_MAX in [0, 1], plus HU). The sinograms "
        "are the same operator applied to the stored image on the same grid (LoDoPaB projected "
        "a finer image): scores on them are higher than on measured data (an 'inverse crime').",
        epilog="example: mrirecon simulate ct --out sim_ct --geometry parallel --views 180 "
        "--photons 4096 --size 128 --seed 0",
    )
    ct.add_argument("--out", "--output", "-o", required=True, type=folder,
                    help="output folder (created); --output / -o as in run, bench and demo")
    ct.add_argument(
        "--geometry", choices=("parallel", "fan"), default="parallel", help="beam geometry"
    )
    ct.add_argument("--views", type=int_at_least(1), default=180, help="projection angles")
    ct.add_argument(
        "--photons",
        type=positive_float,
        default=None,
        help="incident photons per detector bin I0 (default and LoDoPaB: 4096)",
    )
    ct.add_argument("--noise-free", action="store_true", help="write noise-free sinograms")
    ct.add_argument(
        "--size", type=int_at_least(8), default=128, help="image size N (N x N pixels)"
    )
    ct.add_argument("--seed", type=seed, default=0,
                    help="dataset seed (give each --part its own: the same seed gives the same "
                    "images; a folder's other part of the same seed is warned of)")
    ct.add_argument("--samples", type=int_at_least(1), default=8, help="number of images")
    ct.add_argument("--part", default="train", help="dataset part name in the file names")
    ct.add_argument(
        "--sources",
        choices=("mixed", "dicom", "phantom"),
        default="mixed",
        help="ground-truth sources",
    )
    ct.add_argument(
        "--detectors",
        type=int_at_least(1),
        default=None,
        help="detector bins (default: cover the image diagonal)",
    )
    ct.add_argument("--fov-mm", type=_fov_mm, default=260.0, help="field of view in mm (<= 10 m)")
    ct.add_argument(
        "--min-count",
        type=positive_float,
        default=None,
        help="floor of the photon counts before the log (default 1; LoDoPaB: 0.1)",
    )
    _add_threads(ct)
    ct.set_defaults(func=cmd_simulate_ct, _parser=ct)
