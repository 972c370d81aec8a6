"""The ``mrirecon`` command line: the only place in the package that parses ``argv``.

Layout: :func:`build_parser` creates the top-level parser; each command group registers itself
with one ``_add_<group>(subparsers)`` function, and every leaf command is one ``cmd_<name>``
function taking the parsed :class:`argparse.Namespace` and returning an exit code. To add a
command, write ``_add_<group>`` + ``cmd_<name>`` and call ``_add_<group>`` in
:func:`build_parser`.

Commands
--------
``mrirecon simulate mri``  simulated multi-coil brain k-space in the fastMRI layout
``mrirecon simulate ct``   simulated low-dose CT in the LoDoPaB-CT layout (both: :mod:`mrirecon.cli_simulate`)
``mrirecon train``         train a network from a YAML config (torchrun-aware) or rebuild a
                          shipped prior (``denoiser``, ``prior``, ``gmm``, ``perceptual``,
                          ``radial``; see :mod:`mrirecon.cli_train`)
``mrirecon run``           run a pipeline (pipelines/*.yaml) on files, folders or globs
``mrirecon demo``          simulate data, run the MRI and CT pipelines, write ./demo_out
``mrirecon bench``         benchmark table of methods x accelerations (fastMRI-style, or CT)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mrirecon.cli_stdout import (BarSafeHandler, NamedStdout, StdoutClosed, bars_fit,
                                 end_progress_bars, ensure_stderr, last_words, stdout_to_devnull)
from mrirecon.cli_types import (Extend, acceleration, definition, folder, fraction, int_at_least,
                                not_empty, path, positive_float)

#: ``mrirecon --help`` examples: data at fastMRI's geometry (640 x 320 k-space, 8 coils), the
#: training range of the model ``mri_learned`` runs
MAIN_EXAMPLES = (
    "examples:\n  mrirecon demo\n"
    "  mrirecon simulate mri --out data/mri --volumes 2 --slices 4 --coils 8 --size 320 320 "
    "--readout-oversampling 2\n"
    "  mrirecon run mri_learned --input data/mri --output out --set undersample.enabled=true\n"
    "  mrirecon bench --data data/mri --accelerations 4 8 --methods zero_filled,cg_sense,l1_wavelet "
    "--output bench\nrun `mrirecon COMMAND --help` for every option of a command, `mrirecon train "
    "--help` for training examples with their data.")




class SafeLogFormatter(logging.Formatter):
    """Log lines with the control characters of their text (an input file's name, a header
    string) written ``\\xNN``, and a message's later lines indented: a name holding ESC
    sequences recoloured the terminal, and one holding ``\\nINFO fake.h5`` forged a log line.
    Tabs and the message's own line breaks stay."""

    def format(self, record: logging.LogRecord) -> str:
        from mrirecon.io.atomic import control_escaped

        return control_escaped(super().format(record)).replace("\n", "\n    ")


#: Every command's log line: its level first (``grep '^WARNING' run.log``), then the logger
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def log_to_stderr(debug: bool = False) -> None:
    """The log of every command, set up once by :func:`_main` before the command runs (and
    before :func:`~mrirecon.threads.configure_threads`, whose warnings were bare lines through
    ``logging.lastResort``): one handler on stderr, each record one line of
    :data:`LOG_FORMAT` through :class:`SafeLogFormatter`, the root logger at INFO. ``debug``
    (``--debug``) lowers only the ``mrirecon`` loggers to DEBUG: the root at DEBUG let
    matplotlib's font manager, pylibjpeg and h5py fill the log (257 of a 3-input run's 310
    lines, none of them mrirecon's). A caller's own logging (the root already holding a
    handler) is left as it is."""
    root = logging.getLogger()
    if root.handlers:  # the caller's own logging (a nested call, a test's capture)
        return
    handler = BarSafeHandler()  # a record between progress bars on a line of its own
    handler.setFormatter(SafeLogFormatter(LOG_FORMAT))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if debug:
        logging.getLogger("mrirecon").setLevel(logging.DEBUG)


def add_progress(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` of a command that draws progress bars."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show progress bars (default: only when stderr is a terminal, so "
                             "that a log redirected to a file holds only log records)")


def progress_wanted(args: argparse.Namespace) -> bool:
    """Whether the command draws progress bars: as ``--progress`` / ``--no-progress`` say,
    else only when stderr is a terminal. Redirected to a file (nohup, Slurm, cron), the bars'
    ``\\r`` and cursor-up frames made 400 of a 200-input log's lines, and a warning logged
    while a bar was open started after its escapes (``grep '^WARNING'`` missed it)."""
    if getattr(args, "progress", None) is not None:
        return bool(args.progress)
    return bars_fit(sys.stderr)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default after its help, only where it says something: not
    for required options, flags, options whose default is ``None`` (their help says what
    happens), help that names its default itself, nor for options without help. Lists are
    shown as typed (``4 8``). (``(default: None)`` stood beside "(default 30)" and after
    required options.)"""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if isinstance(action, argparse.BooleanOptionalAction):
            # Python 3.10's BooleanOptionalAction appended its own "(default: None)"
            text = text.removesuffix(" (default: %(default)s)")
            if text and "default" not in text:
                return f"{text} (default: {action.option_strings[0 if default else -1]})"
        if (not text or action.required or not action.option_strings or default is None
                or default is False or default is argparse.SUPPRESS or "default" in text
                or default == []):
            return text
        if isinstance(default, (list, tuple)):
            shown = " ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
            return f"{text} (default: {shown.replace('%', '%%')})"
        return super()._get_help_string(action)


def _add_threads(parser: argparse.ArgumentParser) -> None:
    """``--threads`` after the command too (``mrirecon run ... --threads 2``)."""
    parser.add_argument("--threads", type=int_at_least(1), default=argparse.SUPPRESS, metavar="N",
                        help="CPU threads (default: MRIRECON_THREADS, else OMP_NUM_THREADS, when "
                             "set; else the cores available to this process)")


# ---- simulate ------------------------------------------------------------------------------


SIMULATE_HELP = "write simulated datasets (MRI: fastMRI layout, CT: LoDoPaB layout)"


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    from mrirecon.cli_simulate import add_simulate

    add_simulate(subparsers)


# ---- train ---------------------------------------------------------------------------------


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    from mrirecon.cli_train import add_train

    add_train(subparsers, int_at_least, positive_float, _add_threads)


# ---- run / demo ----------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    """``mrirecon run``: one pipeline over many inputs; exit 1 when any input failed."""
    from mrirecon.pipeline.definitions import load_pipeline_warned
    from mrirecon.pipeline.runner import run_pipeline

    config, text, warned = load_pipeline_warned(args.pipeline, args.set)
    return run_pipeline(config, args.input, args.output, resume=args.resume, device=args.device,
                        progress=progress_wanted(args), config_text=text, replace_others=args.prune,
                        config_warnings=warned)


def cmd_demo(args: argparse.Namespace) -> int:
    """``mrirecon demo``: the main job on bundled anatomy (about 3 minutes on 2 CPU cores)."""
    from mrirecon.pipeline.demo import run_demo

    result = run_demo(args.output, quick=args.quick, progress=progress_wanted(args))
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
            f"(in this order; CT has no calibrate; the optional adapt stage fine-tunes a copy of "
            f"a learned model on all slices of each volume after calibrate and before "
            f"reconstruct), then each volume goes through "
            f"{' and '.join(STAGES[-2:])}; outputs are written atomically with "
            "provenance.json, metrics.csv and report.html. One bad file is reported and skipped; "
            "the exit code is 1 when any file failed. Under torchrun the inputs are sharded "
            "across processes."
        ),
    )
    run.add_argument("pipeline", type=definition, help="pipeline YAML path or shipped pipeline name")
    run.add_argument("--input", "-i", nargs="+", action=Extend, type=path, required=True,
                     metavar="PATH", help="input files, folders or glob patterns (quote globs; "
                     "repeats add up: --input a.h5 --input b.h5 is --input a.h5 b.h5)")
    run.add_argument("--output", "-o", required=True, metavar="DIR", type=folder,
                     help="output folder; one that holds outputs of inputs not given now (an "
                          "earlier run's) is refused, as metrics.csv and the report would not "
                          "list them: use a new folder, give those inputs again, or --prune")
    run.add_argument("--device", choices=["cpu", "cuda", "auto"], default=None,
                     help="compute device (default: the pipeline's `device`)")
    run.add_argument("--resume", action="store_true",
                     help="skip inputs finished by an earlier run into --output (same input, config "
                          "and weights); refused when that folder holds outputs of inputs not "
                          "given now: pass those again with the new inputs, or use another --output")
    run.add_argument("--prune", action="store_true",
                     help="delete the outputs of inputs not given now from --output (e.g. a file "
                          "removed from an input folder since the last run) instead of refusing")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a pipeline value, e.g. reconstruct.params.lam=0.01 (repeatable)")
    add_progress(run)
    _add_threads(run)
    run.set_defaults(func=cmd_run, _parser=run)

    demo = subparsers.add_parser(
        "demo",
        help="simulate data and run the MRI and CT pipelines (make demo)",
        description=(
            "Simulate a small multi-coil brain dataset (MNI152 anatomy) and a low-dose CT set, run "
            "the learned MRI pipelines trained at the 128 x 128 simulation geometry (VarNet, MoDL, "
            "PnP-DnCNN), ESPIRiT + L1-wavelet and CG-SENSE, and the CT pipelines, and write "
            "DICOM, NIfTI, HDF5, PNG figures, report.html and metrics.md under --output."
        ),
    )
    demo.add_argument("--output", "-o", default="demo_out", metavar="DIR", type=folder,
                      help="output folder (default: ./demo_out)")
    demo.add_argument("--quick", action="store_true", help="smaller data (for tests)")
    add_progress(demo)
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
    table = bench_from_cli(
        args.data, args.output, challenge=args.challenge, accelerations=args.accelerations,
        methods=",".join(args.methods), weights=args.weights, sets=args.set, max_volumes=args.max_volumes,
        mask_type=args.mask_type, resume=not args.no_resume, progress=progress_wanted(args),
        device=args.device, center_fractions=fractions, photons=args.photons,
        remove_oversampling=args.remove_oversampling)
    # as ``run`` does when an input fails: the table stands, its means are over fewer volumes
    return 1 if table.skipped else 0


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    bench = subparsers.add_parser(
        "bench", help="fastMRI-style benchmark: NMSE/PSNR/SSIM per method and acceleration",
        formatter_class=HelpFormatter,
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
    bench.add_argument("--data", required=True, metavar="DIR", type=path,
                       help="folder of fastMRI .h5 files (ct: LoDoPaB-layout observation_*.hdf5 "
                            "with their ground_truth_*.hdf5)")
    bench.add_argument("--output", "-o", required=True, metavar="DIR", type=folder,
                       help="output folder")
    bench.add_argument("--challenge", choices=("multicoil", "singlecoil", "ct"), default="multicoil",
                       help="ct: LoDoPaB-layout sinograms; --accelerations are then sparse-view "
                            "factors (keep every k-th view)")
    bench.add_argument("--photons", type=positive_float, default=None,
                       help="ct only: re-simulate this incident photon count (lower dose)")
    bench.add_argument("--accelerations", type=acceleration, nargs="+", action=Extend,
                       default=[4.0, 8.0], metavar="R",
                       help="undersampling factors to score each method at (ct: keep every R-th "
                            "view; repeats add up)")
    bench.add_argument("--center-fractions", type=fraction, nargs="+", action=Extend, default=None,
                       metavar="F",
                       help="fully sampled centre fraction per acceleration, in the order of "
                            "--accelerations (default: fastMRI's, 0.08 at 4x and 0.04 at 8x, "
                            "0.32 / R at another factor R)")
    bench.add_argument("--methods", action=Extend, default=["zero_filled,cg_sense,l1_wavelet"],
                       help="comma-separated reconstruction methods and learned models (repeats "
                            "add up; default: zero_filled,cg_sense,l1_wavelet)")
    bench.add_argument("--weights", action="append", default=[], metavar="METHOD=PATH",
                       help="weights of a learned method (repeatable)")
    bench.add_argument("--set", action="append", default=[], metavar="METHOD.PARAM=VALUE",
                       help="method parameter, e.g. l1_wavelet.lam=0.002 or calibrate.crop=0 (repeatable)")
    bench.add_argument("--max-volumes", type=int_at_least(1), default=None,
                       help="use the first N files (default: all)")
    bench.add_argument("--mask-type", default=None, type=not_empty,
                       help="fastMRI mask type (default: equispaced_fraction multicoil, random "
                            "singlecoil); ct keeps every k-th view (sparse_view) and refuses others")
    bench.add_argument("--remove-oversampling", action="store_true",
                       help="MRI only: crop k-space to the header's recon rows first (exact; as "
                            "the classical and plug-and-play pipelines do; default: as acquired)")
    bench.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu",
                       help="compute device (auto: cuda when available)")
    bench.add_argument("--no-resume", action="store_true",
                       help="recompute every entry: results.jsonl is started afresh, dropping "
                            "the records of other methods and accelerations in it too")
    add_progress(bench)
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
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mrirecon {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (and debug logs)")
    parser.add_argument("--threads", type=int_at_least(1), default=None, metavar="N",
                        help="CPU threads (default: MRIRECON_THREADS, else OMP_NUM_THREADS, when "
                             "set; else the cores available to this process, from its affinity "
                             "and cgroup quota, shared among torchrun ranks; see "
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
               NotADirectoryError, FileExistsError, TimeoutError)

def missing_package(err: ImportError) -> str | None:
    """The one line for a dependency that is not installed (``err`` a ``ModuleNotFoundError``
    of a package outside mrirecon), naming it and its install line, or, when an installed
    package's own code imported it, naming that package to upgrade; for one installed but older
    than a floor (:class:`~mrirecon.core.names.OutdatedPackage`) its own message; ``None``
    otherwise (an internal error). A missing yaml was a raw traceback, a missing tqdm or nilearn "internal
    error: ... (report it)"."""
    from mrirecon.core.names import OutdatedPackage

    if isinstance(err, OutdatedPackage):  # installed, but older than a floor (finufft 2.3)
        return str(err)
    top = (getattr(err, "name", None) or "").split(".")[0]
    if not isinstance(err, ModuleNotFoundError) or not top or top == "mrirecon":
        return None
    from mrirecon.core.names import importing_distribution, pip_name
    from mrirecon.recon.registry import installed

    if top in sys.modules or installed(top):  # a submodule of an installed package: a broken install
        return None
    if (owner := importing_distribution(err)) is not None:  # pydicom 2.4's pkg_resources
        dist, version = owner
        return (f"the installed package {dist} {version} failed to import its dependency {top}, "
                f"which is missing: upgrade it (pip install --upgrade {dist})")
    pip = pip_name(top)
    return (f"the Python package {pip} (import {top}), which this command needs, is not "
            f"installed: pip install {pip}")


def _one_line(err: BaseException) -> str:
    why = getattr(err, "strerror", None) or ""
    if isinstance(err, OSError) and err.filename is not None and f"{err.filename}:" not in why:
        # "sim_file: File exists", not a bare "File exists": str(err) always holds the name
        # ("[Errno 17] File exists: 'sim_file'"), so testing it dropped the path every time
        two = f" -> {err.filename2}" if err.filename2 is not None else ""
        text = f"{err.filename}{two}: {why or err}"
    elif isinstance(err, OSError) and err.errno is not None and err.strerror:
        text = err.strerror  # "PATH: No such file or directory" (io.atomic), not "[Errno 2] ..."
    else:
        text = str(err) if not isinstance(err, KeyError) else str(err.args[0] if err.args else err)
    return " ".join(text.split())  # one line, even for multi-line messages


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``mrirecon`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    Bad arguments exit with status 2 and a message naming the option. A user error raised by
    the command (a ``ValueError`` such as a config, data-format or option problem, a missing or
    unwritable file) also exits with status 2 and one line, no traceback. Any other exception
    is an internal error: one line and status 1, or the full traceback with ``--debug``. The
    standard output closed by its reader (``| head``) ends the command quietly with status 141
    (128 + SIGPIPE, as a Unix tool killed by SIGPIPE); a write to it that fails otherwise (a
    full disk) is an error naming ``stdout`` (:class:`NamedStdout`).
    """
    ensure_stderr()  # closed (``2>&-``): errors went to the standard output
    stream = sys.stdout
    if stream is None or isinstance(stream, NamedStdout):  # closed (``>&-``), or a nested call
        return _main(argv)
    sys.stdout = NamedStdout(stream)
    try:
        return _main(argv)
    except StdoutClosed:
        stdout_to_devnull(stream)
        raise SystemExit(141) from None
    except OSError as err:  # --help or --version into a full disk
        if err.filename != "stdout":
            raise
        from mrirecon.io.errors import disk_error

        print(f"mrirecon: error: {disk_error(err) or _one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        sys.stdout = stream


def _main(argv: Sequence[str] | None = None) -> int:
    """:func:`main` with its standard output wrapped."""
    from mrirecon.threads import configure_threads, set_wait_policy

    set_wait_policy()  # before torch loads OpenMP (build_parser may import it)
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line, e.g. after the command's options
    try:  # the parsers import the commands' modules (yaml: a raw traceback when missing)
        from mrirecon.cli_train import normalise_argv

        argv = normalise_argv(argv)
        parser = build_parser(command_of(argv))
    except ModuleNotFoundError as err:
        if debug or (line := missing_package(err)) is None:
            raise
        print(f"mrirecon: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        args = parser.parse_args([a for a in argv if a != "--debug"])
    except SystemExit:
        if sys.stdout is not None:  # --help, --version: the text reaches the reader, or fails named
            sys.stdout.flush()
        raise
    # every command's log, before configure_threads warns (bench: "N finished entries reused
    # from results.jsonl" and the skips are INFO lines, as run's)
    log_to_stderr(debug)
    prog = getattr(args, "_parser", parser).prog
    from mrirecon.io.errors import Terminated, disk_error, lost_peer  # lost_peer: a rank died

    restore_signals = _on_sigterm_raise(Terminated)
    shown = _warnings_as_log_lines()
    try:
        if getattr(args, "set", None):  # run, train CONFIG, bench: one key given twice
            from mrirecon.core.config import check_repeated

            check_repeated(args.set)
        configure_threads(args.threads)
        code = int(args.func(args))
        if sys.stdout is not None:  # what the command printed, now: a failure is classified below
            sys.stdout.flush()
        return code
    except StdoutClosed:
        raise
    except USER_ERRORS as err:
        if debug:  # the traceback, and still a user error's status (re-raised, it exited 1)
            sys.excepthook(*sys.exc_info())
        end_progress_bars()
        print(f"{prog}: error: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except Terminated as err:  # SIGTERM (kill, a scheduler), SIGHUP: cleaned up as for Ctrl-C
        import signal

        name = str(err) or "SIGTERM"
        last_words(f"{prog}: terminated" + ("" if name == "SIGTERM" else f" ({name})"))
        raise SystemExit(128 + getattr(signal, name, signal.SIGTERM)) from None
    except KeyboardInterrupt:
        last_words(f"{prog}: interrupted")
        raise SystemExit(130) from None
    except Exception as err:
        line, disk = missing_package(err), disk_error(err)
        if debug and line is None and disk is None:
            raise  # an internal error: its traceback, status 1
        if debug:
            sys.excepthook(*sys.exc_info())
        end_progress_bars()
        if line is not None:
            print(f"{prog}: error: {line}", file=sys.stderr)
            raise SystemExit(2) from None
        if disk is not None:  # a full disk, a quota, a read-only file system: the user's
            print(f"{prog}: error: {disk}", file=sys.stderr)
            raise SystemExit(2) from None
        print(f"{prog}: " + (lost_peer(err) or f"internal error: {type(err).__name__}: "
              f"{_one_line(err)} (run with --debug for the traceback and report it)"),
              file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        import warnings

        warnings.showwarning = shown
        restore_signals()


def _warnings_as_log_lines():
    """Under the command line, a ``warnings.warn`` is one log line like every other line of a
    run (``WARNING mrirecon.calib.prewhiten: prewhiten: coil 5 of 8 holds no noise ...``), not
    Python's ``FILE:LINE: UserWarning: ...`` with the warning's source line quoted under it, the
    one raw entry in a run's log. A warning from outside the package keeps its category and
    place. Returns the ``warnings.showwarning`` it replaced (restored by :func:`main`)."""
    import os
    import warnings

    package = os.path.dirname(os.path.abspath(__file__))

    def show(message, category, filename, lineno, file=None, line=None):
        path = os.path.abspath(filename)
        kind = "" if category is UserWarning else f"{category.__name__}: "
        if path.startswith(package + os.sep) and path.endswith(".py"):
            module = os.path.relpath(path[:-3], os.path.dirname(package)).replace(os.sep, ".")
            logging.getLogger(module).warning("%s%s", kind, message)
        elif filename.startswith("<") or path == os.path.abspath(sys.argv[0]):
            # a check's warning attributed to its caller outside the package (recon.checks):
            # under the command line that is the ``mrirecon`` script or runpy, no place to show
            logging.getLogger("mrirecon").warning("%s%s", kind, message)
        else:
            logging.getLogger("py.warnings").warning("%s: %s (%s:%d)", category.__name__, message,
                                                     filename, lineno)

    previous, warnings.showwarning = warnings.showwarning, show
    return previous


def _on_sigterm_raise(exc: type[BaseException]):
    """Raise ``exc(NAME)`` on SIGTERM and on SIGHUP (the ssh session or terminal closed) in this
    process (as Ctrl-C raises ``KeyboardInterrupt``), so that a run ended so removes its
    temporary files and writes its run files; SIGHUP had killed it as SIGKILL does (run files
    saying "running", no ``metrics.csv`` for the finished inputs, ``.staging`` left). Only a
    signal whose handler is the default is taken: a handler of the caller's own stays, and so
    does an ignored SIGHUP (``nohup``). Returns a function that puts back the handlers it
    replaced (it does nothing where none was installed: not the main thread). A forked child (a
    data-loader worker) dies of the signal as before."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    replaced = {s: signal.getsignal(s) for s in wanted}
    replaced = {s: h for s, h in replaced.items() if h in (signal.SIG_DFL, None)}
    pid = os.getpid()

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise exc(signal.Signals(signum).name)

    for sig in replaced:
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, previous in replaced.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    return restore


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
