"""The ``mrirecon`` command line: the only place in the package that parses ``argv``.

Layout: :func:`build_parser` creates the top-level parser; each command group registers itself
with one ``_add_<group>(subparsers)`` function, and every leaf command is one ``cmd_<name>``
function taking the parsed :class:`argparse.Namespace` and returning an exit code. To add a
command, write ``_add_<group>`` + ``cmd_<name>`` and call ``_add_<group>`` in
:func:`build_parser`.

Commands
--------
``mrirecon simulate mri``  simulated multi-coil brain k-space in the fastMRI layout
``mrirecon simulate ct``   simulated low-dose CT in the LoDoPaB-CT layout
``mrirecon train``         train a network from a YAML config (torchrun-aware) or rebuild a
                          shipped prior (``denoiser``, ``prior``, ``gmm``, ``perceptual``,
                          ``radial``; see :mod:`mrirecon.cli_train`)
``mrirecon run``           run a pipeline (pipelines/*.yaml) on files, folders or globs
``mrirecon demo``          simulate data, run the MRI and CT pipelines, write ./demo_out
``mrirecon bench``         benchmark table of methods x accelerations (fastMRI-style, or CT)
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence

# ---- argument types ------------------------------------------------------------------------


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def _fraction(text: str) -> float:
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {text}")
    return value


def _acceleration(text: str) -> float:
    value = _positive_float(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` after the command too (``mrirecon run ... --threads 2``)."""
    parser.add_argument("--threads", type=_int_at_least(1), default=argparse.SUPPRESS, metavar="N",
                        help="CPU threads (default: the cores available to this process)")


# ---- simulate ------------------------------------------------------------------------------


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
    if args.trajectory != "cartesian":
        from mrirecon.data.simulate_noncartesian import simulate_noncartesian_dataset

        if args.acceleration is not None or args.readout_oversampling != 1:
            args._parser.error("--acceleration and --readout-oversampling are Cartesian options; "
                               "use --readouts for radial / spiral undersampling")
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


SIMULATE_HELP = "write simulated datasets (MRI: fastMRI layout, CT: LoDoPaB layout)"


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Simulate multi-coil brain MRI volumes from the MNI152 template: random "
        "slab position, orientation, contrast (T1/T2/PD/FLAIR), elastic "
        "deformation, bias and phase; birdcage coil maps; complex Gaussian noise. "
        "Writes file_brain_<ACQ>_sim<seed>_<n>.h5 with kspace (slices, coils, H, W) "
        "complex64, reconstruction_rss and the ISMRMRD header.",
        epilog="example: mrirecon simulate mri --out sim_mri --volumes 4 --slices 8 --coils 8 "
        "--size 320 320 --seed 0",
    )
    mri.add_argument("--out", required=True, help="output folder (created)")
    mri.add_argument(
        "--volumes", type=_int_at_least(1), default=4, help="number of volumes (files)"
    )
    mri.add_argument("--slices", type=_int_at_least(1), default=8, help="slices per volume")
    mri.add_argument(
        "--coils",
        type=_int_at_least(1),
        default=8,
        help="receive coils (the minimum when --max-coils is given)",
    )
    mri.add_argument(
        "--max-coils",
        type=_int_at_least(1),
        default=None,
        help="draw the coil count per volume uniformly in [--coils, --max-coils]",
    )
    mri.add_argument(
        "--size",
        type=_int_at_least(4),
        nargs=2,
        metavar=("H", "W"),
        default=[320, 320],
        help="recon size in pixels (rows = readout, columns = phase encoding)",
    )
    mri.add_argument("--seed", type=_int_at_least(0), default=0, help="dataset seed")
    mri.add_argument(
        "--snr-db",
        type=_finite_float,
        default=None,
        help="k-space SNR in dB: 10 log10(mean |k|^2 / noise variance) (default 30)",
    )
    mri.add_argument("--noise-free", action="store_true", help="write noise-free k-space")
    mri.add_argument(
        "--acceleration",
        type=_acceleration,
        default=None,
        help="undersample like fastMRI test files (mask dataset, zeroed columns)",
    )
    mri.add_argument(
        "--readout-oversampling",
        type=_int_at_least(1),
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
        type=_int_at_least(1),
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Simulate low-dose CT: ground truths from the allowed CT DICOM images and "
        "random ellipse phantoms (HU -> mu = 0.0192/mm (1 + HU/1000)), projected "
        "with the package's CT operator, Poisson noise with --photons incident "
        "photons per bin. Writes observation_<part>_NNN.hdf5 (post-log / MU_MAX) "
        "and ground_truth_<part>_NNN.hdf5 (mu / MU_MAX in [0, 1], plus HU).",
        epilog="example: mrirecon simulate ct --out sim_ct --geometry parallel --views 180 "
        "--photons 4096 --size 128 --seed 0",
    )
    ct.add_argument("--out", required=True, help="output folder (created)")
    ct.add_argument(
        "--geometry", choices=("parallel", "fan"), default="parallel", help="beam geometry"
    )
    ct.add_argument("--views", type=_int_at_least(1), default=180, help="projection angles")
    ct.add_argument(
        "--photons",
        type=_positive_float,
        default=None,
        help="incident photons per detector bin I0 (default and LoDoPaB: 4096)",
    )
    ct.add_argument("--noise-free", action="store_true", help="write noise-free sinograms")
    ct.add_argument(
        "--size", type=_int_at_least(8), default=128, help="image size N (N x N pixels)"
    )
    ct.add_argument("--seed", type=_int_at_least(0), default=0, help="dataset seed")
    ct.add_argument("--samples", type=_int_at_least(1), default=8, help="number of images")
    ct.add_argument("--part", default="train", help="dataset part name in the file names")
    ct.add_argument(
        "--sources",
        choices=("mixed", "dicom", "phantom"),
        default="mixed",
        help="ground-truth sources",
    )
    ct.add_argument(
        "--detectors",
        type=_int_at_least(1),
        default=None,
        help="detector bins (default: cover the image diagonal)",
    )
    ct.add_argument("--fov-mm", type=_positive_float, default=260.0, help="field of view in mm")
    ct.add_argument(
        "--min-count",
        type=_positive_float,
        default=None,
        help="floor of the photon counts before the log (default 1; LoDoPaB: 0.1)",
    )
    _add_threads(ct)
    ct.set_defaults(func=cmd_simulate_ct, _parser=ct)


# ---- train ---------------------------------------------------------------------------------


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from mrirecon.cli_train import add_train

    add_train(subparsers, _int_at_least, _positive_float, _add_threads)


# ---- run / demo ----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """``mrirecon run``: one pipeline over many inputs; exit 1 when any input failed."""
    import logging

    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config, text = load_pipeline(args.pipeline, args.set)
    return run_pipeline(config, args.input, args.output, resume=args.resume, device=args.device,
                        progress=not args.no_progress, config_text=text)


def cmd_demo(args: argparse.Namespace) -> int:
    """``mrirecon demo``: the main job on bundled anatomy (about 3 minutes on 2 CPU cores)."""
    import logging

    from mrirecon.pipeline.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = run_demo(args.output, quick=args.quick, progress=not args.no_progress)
    return 1 if result["failures"] else 0


def _add_run(subparsers: argparse._SubParsersAction) -> None:
    from mrirecon.pipeline.definitions import shipped_pipelines
    from mrirecon.pipeline.stream import STAGES

    run = subparsers.add_parser(
        "run",
        help="run a pipeline on scanner files",
        description=(
            "Run a pipeline (a YAML file, or the name of a shipped one: "
            f"{', '.join(shipped_pipelines())}) on fastMRI/ISMRMRD/LoDoPaB HDF5 files or DICOM "
            f"series. Slices are streamed one at a time through the stages {', '.join(STAGES[:-2])} "
            f"(in this order; CT has no calibrate), then each volume goes through "
            f"{' and '.join(STAGES[-2:])}; outputs are written atomically with "
            "provenance.json, metrics.csv and report.html. One bad file is reported and skipped; "
            "the exit code is 1 when any file failed. Under torchrun the inputs are sharded "
            "across processes."
        ),
    )
    run.add_argument("pipeline", help="pipeline YAML path or shipped pipeline name")
    run.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                     help="input files, folders or glob patterns (quote globs)")
    run.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    run.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None,
                     help="compute device (default: the pipeline's `device`)")
    run.add_argument("--resume", action="store_true", help="skip inputs finished by an earlier run")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a pipeline value, e.g. reconstruct.params.lam=0.01 (repeatable)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads(run)
    run.set_defaults(func=cmd_run, _parser=run)

    demo = subparsers.add_parser(
        "demo",
        help="simulate data and run the MRI and CT pipelines (make demo)",
        description=(
            "Simulate a small multi-coil brain dataset (MNI152 anatomy) and a low-dose CT set, run "
            "the default MRI pipeline with the shipped weights and the CT pipelines, and write "
            "DICOM, NIfTI, HDF5, PNG figures, report.html and metrics.md under --output."
        ),
    )
    demo.add_argument("--output", "-o", default="demo_out", metavar="DIR",
                      help="output folder (default: ./demo_out)")
    demo.add_argument("--quick", action="store_true", help="smaller data (for tests)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads(demo)
    demo.set_defaults(func=cmd_demo, _parser=demo)


# ---- bench ---------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    """``mrirecon bench``: benchmark table (see :mod:`mrirecon.bench`)."""
    from mrirecon.bench.cli import bench_from_cli

    fractions = None
    if args.center_fractions is not None:
        if args.challenge == "ct":
            args._parser.error("--center-fractions applies to MRI challenges, not --challenge ct")
        if len(args.center_fractions) != len(args.accelerations):
            args._parser.error(f"--center-fractions: give one per acceleration "
                               f"({len(args.accelerations)}), got {len(args.center_fractions)}")
        fractions = dict(zip(args.accelerations, args.center_fractions))
    bench_from_cli(args.data, args.output, challenge=args.challenge, accelerations=args.accelerations,
                   methods=args.methods, weights=args.weights, sets=args.set,
                   max_volumes=args.max_volumes, mask_type=args.mask_type, resume=not args.no_resume,
                   progress=not args.no_progress, device=args.device, center_fractions=fractions,
                   photons=args.photons)
    return 0


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="fastMRI-style benchmark: NMSE/PSNR/SSIM per method and acceleration",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Undersample every fully sampled fastMRI volume in --data with fastMRI's mask "
                    "for its file name (--challenge ct: every LoDoPaB-layout observation file, "
                    "keeping every k-th view), reconstruct it slice by slice with each method "
                    "through the same stages as `mrirecon run`, score it against "
                    "reconstruction_rss (single-coil: reconstruction_esc; CT: the ground truth) and "
                    "write bench_table.csv, bench_table.md, bench_volumes.csv and results.jsonl to "
                    "--output. Finished (method, acceleration, volume) entries are skipped on "
                    "a rerun (--no-resume recomputes them).",
        epilog="example: mrirecon bench --data multicoil_val --challenge multicoil --accelerations "
               "4 8 --methods zero_filled,cg_sense,l1_wavelet,varnet --weights varnet=varnet.pt "
               "--output bench_out --set l1_wavelet.lam=0.002")
    bench.add_argument("--data", required=True, metavar="DIR",
                       help="folder of fastMRI .h5 files (ct: LoDoPaB-layout observation_*.hdf5 "
                            "with their ground_truth_*.hdf5)")
    bench.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    bench.add_argument("--challenge", choices=("multicoil", "singlecoil", "ct"), default="multicoil",
                       help="ct: LoDoPaB-layout sinograms; --accelerations are then sparse-view "
                            "factors (keep every k-th view)")
    bench.add_argument("--photons", type=_positive_float, default=None,
                       help="ct only: re-simulate this incident photon count (lower dose)")
    bench.add_argument("--accelerations", type=_acceleration, nargs="+", default=[4.0, 8.0])
    bench.add_argument("--center-fractions", type=_fraction, nargs="+", default=None,
                       metavar="F",
                       help="fully sampled centre fraction per acceleration, in the order of "
                            "--accelerations (default: fastMRI's, 0.08 at 4x and 0.04 at 8x)")
    bench.add_argument("--methods", default="zero_filled,cg_sense,l1_wavelet",
                       help="comma-separated reconstruction methods and learned models")
    bench.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                       help="weights of a learned method (repeatable)")
    bench.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                       help="method parameter, e.g. l1_wavelet.lam=0.002 or calibrate.crop=0 (repeatable)")
    bench.add_argument("--max-volumes", type=_int_at_least(1), default=None, help="use the first N files")
    bench.add_argument("--mask-type", default=None,
                       help="fastMRI mask type (default: equispaced_fraction multicoil, random "
                            "singlecoil); ct keeps every k-th view (sparse_view) and refuses others")
    bench.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    bench.add_argument("--no-resume", action="store_true", help="recompute entries already in results.jsonl")
    bench.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_threads(bench)
    bench.set_defaults(func=cmd_bench, _parser=bench)


# ---- entry point ---------------------------------------------------------------------------


def command_of(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (after the global ``--threads N`` and ``--debug``), or
    ``None`` when another option comes first (``--help``, ``--version``, a typo)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--threads":
            i += 2
        elif arg == "--debug" or arg.startswith("--threads="):
            i += 1
        else:
            return None if arg.startswith("-") else arg
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``mrirecon`` parser with every command group registered.

    ``simulate`` and ``train`` read their choices and options from the simulation and training
    code (SciPy, the training modules: ~0.6 s of imports); they are built in full only when
    ``command`` is theirs or ``None`` (the top-level help), and are listed by name and help
    line otherwise, so that ``mrirecon run`` does not pay for them at every cold start.
    """
    from mrirecon import __version__
    from mrirecon.cli_train import TRAIN_HELP

    parser = argparse.ArgumentParser(
        prog="mrirecon",
        description="Model-based deep-learning reconstruction for MRI and CT.",
        epilog="examples:\n"
               "  mrirecon demo\n"
               "  mrirecon simulate mri --out data/mri --volumes 2 --slices 4 --coils 8 --size 320 320 "
               "--readout-oversampling 2\n"
               "  mrirecon run mri_learned --input data/mri --output out --set undersample.enabled=true\n"
               "  mrirecon bench --data data/mri --accelerations 4 8 --methods zero_filled,cg_sense,"
               "l1_wavelet --output bench\n"
               "(fastMRI's geometry, 640 x 320 k-space with 8 coils: the shipped mri_learned model's "
               "training range)\n"
               "run `mrirecon COMMAND --help` for every option of a command, `mrirecon train --help` "
               "for training examples with their data.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mrirecon {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (and debug logs)")
    parser.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                        help="CPU threads (default: the cores available to this process, from its "
                             "affinity and cgroup quota, shared among torchrun ranks; see "
                             "mrirecon/threads.py)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, add, help_ in (("simulate", _add_simulate, SIMULATE_HELP), ("train", _add_train, TRAIN_HELP)):
        if command is None or command == name:
            add(subparsers)
        else:
            subparsers.add_parser(name, help=help_)
    _add_run(subparsers)
    _add_bench(subparsers)
    return parser


USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError,
               NotADirectoryError, FileExistsError)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in str(err):
        text = f"{err.filename}: {err.strerror or err}"
    else:
        text = str(err) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err)
    return " ".join(text.split())  # one line, even for multi-line messages


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mrirecon`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad arguments exit with status 2 and a message naming the option. A user error raised by
    the command (a ``ValueError`` such as a config, data-format or option problem, a missing or
    unwritable file) also exits with status 2 and one line, no traceback. Any other exception
    is an internal error: one line and status 1, or the full traceback with ``--debug``.
    """
    from mrirecon.threads import configure_threads, set_wait_policy

    set_wait_policy()  # before torch loads OpenMP (build_parser may import it)
    from mrirecon.cli_train import normalise_argv

    argv = normalise_argv(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(command_of(argv))
    debug = "--debug" in argv  # accepted anywhere on the line, e.g. after the command's options
    args = parser.parse_args([a for a in argv if a != "--debug"])
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    prog = getattr(args, "_parser", parser).prog
    try:
        configure_threads(args.threads)
        return int(args.func(args))
    except USER_ERRORS as err:
        if debug:
            raise
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as err:
        if debug:
            raise
        print(f"{prog}: internal error: {type(err).__name__}: {_one_line(err)} (run with --debug "
              "for the traceback and report it)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
