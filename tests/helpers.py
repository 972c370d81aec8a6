"""Shared test helpers (``from tests.helpers import ...``): the operator checks, paths, HDF5 cloning.

The one kit of operator checks, run over every operator factory in the test suite.

Each ``check_*`` asserts a mathematical property of a LinearOperator:
linearity, the dot test ``<Ax, y> = <x, A^H y>``, ``gram == A^H A``, autograd VJP == adjoint,
and ``operator_norm`` against the largest singular value of the dense matrix.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.core import LinearOperator, inner

# dot-test tolerances by precision (relative to ||Ax|| ||y||)
TOL = {torch.float64: 1e-10, torch.complex128: 1e-10, torch.float32: 1e-5, torch.complex64: 1e-5}


def random_like_shape(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        return torch.complex(
            torch.randn(shape, dtype=real, generator=g), torch.randn(shape, dtype=real, generator=g)
        )
    return torch.randn(shape, dtype=dtype, generator=g)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / max(float(torch.linalg.vector_norm(b)), 1e-300))


def range_sample(op: LinearOperator, x: torch.Tensor, seed=1) -> torch.Tensor:
    """A random tensor in the operator's range with the right shape and dtype."""
    ax = op(x)
    return random_like_shape(ax.shape, ax.dtype, seed)


def check_linearity(op, x, tol):
    x2 = random_like_shape(x.shape, x.dtype, 7)
    a, b = (0.7 - 0.2j, -1.3 + 0.5j) if x.is_complex() else (0.7, -1.3)
    lhs = op(a * x + b * x2)
    rhs = a * op(x) + b * op(x2)
    assert _rel(lhs, rhs) < tol * 10, f"{op.name} is not linear: {_rel(lhs, rhs)}"


def check_adjoint(op, x, tol):
    y = range_sample(op, x)
    lhs = inner(op(x), y)
    rhs = inner(x, op.H(y))
    scale = float(torch.linalg.vector_norm(op(x)) * torch.linalg.vector_norm(y))
    err = float(torch.abs(lhs - rhs)) / scale
    assert err < tol, f"{op.name} fails the dot test: relative error {err:.3e} >= {tol:.0e}"


def check_gram(op, x, tol):
    g = op.gram(x)
    ref = op.H(op(x))
    assert g.shape == x.shape, f"{op.name}.gram changed the shape: {g.shape} vs {x.shape}"
    assert _rel(g, ref) < tol * 10, f"{op.name}.gram != A^H A: {_rel(g, ref):.3e}"


def check_vjp(op, x, tol):
    y = range_sample(op, x)
    xr = x.clone().requires_grad_(True)
    out = op(xr)
    (grad,) = torch.autograd.grad(out, xr, grad_outputs=y)
    ref = op.H(y)
    assert _rel(grad, ref) < tol * 10, f"{op.name}: autograd VJP != adjoint ({_rel(grad, ref):.3e})"
    # and through the adjoint: the VJP of A^H is A
    yr = y.clone().requires_grad_(True)
    (grad2,) = torch.autograd.grad(op.H(yr), yr, grad_outputs=x)
    assert _rel(grad2, op(x)) < tol * 10, f"{op.name}.H: autograd VJP != forward"


def dense_matrix(op, x):
    """The matrix of ``op`` acting on tensors shaped like ``x`` (tiny sizes only)."""
    n = x.numel()
    cols = []
    for i in range(n):
        e = torch.zeros(n, dtype=x.dtype)
        e[i] = 1
        cols.append(op(e.reshape(x.shape)).reshape(-1))
    return torch.stack(cols, dim=1)


def check_operator_norm(op, x, rtol=1e-3):
    M = dense_matrix(op, x)
    smax = torch.linalg.matrix_norm(M, ord=2)
    est = op.operator_norm(x, iterations=500, tolerance=1e-12, generator=torch.Generator().manual_seed(3))
    assert abs(float(est) - float(smax)) <= rtol * float(smax), (
        f"{op.name}: operator_norm {float(est):.6g} vs largest singular value {float(smax):.6g}"
    )


def check_operator(op: LinearOperator, x: torch.Tensor, *, norm: bool = False) -> None:
    """Run every check on ``op`` with domain sample ``x`` (its dtype sets the tolerance)."""
    tol = TOL[x.dtype]
    check_linearity(op, x, tol)
    check_adjoint(op, x, tol)
    check_gram(op, x, tol)
    check_vjp(op, x, tol)
    if norm:
        check_operator_norm(op, x)

ROOT = Path(__file__).resolve().parents[1]  # the repository
FIXTURES = ROOT / "tests" / "fixtures"      # small reference files made by the scripts there


def clone_h5(src: Path, dst: Path, **replace) -> Path:
    """Copy an HDF5 file's root datasets and attributes, replacing datasets by keyword
    (``None`` drops one). Writes hostile content that the package's writers refuse."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for key in a:
            if key in replace:
                if replace[key] is not None:
                    b.create_dataset(key, data=replace[key])
            else:
                a.copy(key, b)
        for key, value in replace.items():
            if key not in a and value is not None:
                b.create_dataset(key, data=value)
        for key, value in a.attrs.items():
            b.attrs[key] = value
    return dst


def _package_of(path: Path) -> list[str]:
    """The dotted package a source file belongs to, as parts (``mrirecon/training/x.py`` ->
    ``["mrirecon", "training"]``; a package's ``__init__.py`` belongs to that package): the
    folders above it that hold an ``__init__.py``."""
    parts: list[str] = []
    folder = Path(path).resolve().parent
    while (folder / "__init__.py").is_file():
        parts.insert(0, folder.name)
        folder = folder.parent
    return parts


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a source file imports, for the source-scan tests (layering, argv,
    held-out); imports inside functions count too.

    ``import a.b`` gives ``a.b``; ``from a.b import c`` gives ``a.b`` and ``a.b.c`` (``c`` may be
    a submodule: ``from mrirecon import heldout`` imports ``mrirecon.heldout``); a relative
    ``from ..b import c`` is resolved against the file's package first (``from . import c`` in
    package ``p`` gives ``p`` and ``p.c``)."""
    import ast

    package = _package_of(path)
    names: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 >= len(package):
                    raise ValueError(f"{path}: relative import beyond the top-level package")
                base = package[:len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names if a.name != "*")
    return names


def shepp_sense_problem(n: int = 64, noise: float = 0.001, coils: int = 4,
                        acceleration: int = 4):
    """``(gt, op, y)``: a smoothed Shepp-Logan magnitude (numpy), a SENSE operator with unit-RSS
    birdcage maps and a fastMRI equispaced-fraction mask (centre 0.08, seed 0), complex128, and
    its masked k-space with complex white noise of std ``noise`` (seed 0)."""
    import numpy as np
    import sigpy as sp
    import sigpy.mri as spmri
    from scipy.ndimage import gaussian_filter

    from mrirecon.functional import fft2c
    from mrirecon.operators import sense
    from mrirecon.sampling import EquispacedFractionMask

    gt = gaussian_filter(np.abs(sp.shepp_logan((n, n))), 1.0)
    maps = spmri.birdcage_maps((coils, n, n), r=1.0).astype(np.complex128)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    rng = np.random.default_rng(0)
    k = np.asarray(fft2c(torch.tensor(maps * gt)))
    k = k + noise * (rng.standard_normal(k.shape) + 1j * rng.standard_normal(k.shape))
    mask = EquispacedFractionMask([0.08], [acceleration])(n, seed=0).numpy().astype(np.float64)
    return gt, sense(torch.tensor(maps), torch.tensor(mask)), torch.tensor(k * mask)


#: The fastMRI-style mask and the smallest E2E-VarNet of the training tests.
TRAIN_MASK = {"type": "equispaced_fraction", "center_fractions": [0.16, 0.08], "accelerations": [4, 8]}
TINY_VARNET = {"iterations": 2, "chans": 4, "pools": 2, "sens_chans": 2, "sens_pools": 2}


def simulated_mri_split(root: Path, val_slices: int = 2) -> dict[str, Path]:
    """Tiny simulated fastMRI train / val folders (3 coils, 32 x 32) under ``root``."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    simulate_mri_dataset(root / "train", volumes=2, slices=2, coils=3, size=(32, 32), seed=1)
    simulate_mri_dataset(root / "val", volumes=1, slices=val_slices, coils=3, size=(32, 32), seed=2)
    return {"train": root / "train", "val": root / "val"}


#: The smallest MoDL and its mask of the tests that train on a user's folders.
TINY_MODL = {"iterations": 2, "layers": 3, "features": 8, "lam": 0.05, "cg_iterations": 3,
             "shared": True}
TINY_MODL_MASK = {"type": "equispaced_fraction", "center_fractions": [0.16], "accelerations": [4]}


def tiny_mri_folders(root: Path) -> dict[str, Path]:
    """32 x 32, 2 coils: training (2 volumes x 2 slices) and validation (1 volume) folders."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    kw = {"slices": 2, "coils": 2, "size": (32, 32), "resolution": 2}
    simulate_mri_dataset(root / "train", volumes=2, seed=1, **kw)
    simulate_mri_dataset(root / "val", volumes=1, seed=2, **kw)
    return {"train": root / "train", "val": root / "val"}


def tiny_ct_part(root: Path, samples: int) -> Path:
    """A LoDoPaB-layout training part ``root/train`` of ``samples`` phantom images, 32 x 32, 48
    parallel views, 4096 photons (seed 3)."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    simulate_ct_dataset(root / "train", seed=3, part="train", samples=samples, geometry="parallel",
                        views=48, size=32, sources="phantom", photons=4096.0)
    return root / "train"


def tiny_modl_config(tmp_path: Path, train: Path, val: Path, out: Path, *, max_steps: int = 4,
                     checkpoint_every: int = 2, **changes) -> Path:
    """A tiny MoDL training config (:data:`TINY_MODL`, ESPIRiT maps) as ``tmp_path/t.yaml``;
    ``changes`` replace top-level keys."""
    import yaml

    cfg = {"name": "t", "output_dir": str(out), "seed": 0, "device": "cpu",
           "data": {"train": str(train), "val": str(val), "maps": "espirit",
                    "mask": TINY_MODL_MASK},
           "model": {"name": "modl", "params": dict(TINY_MODL)},
           "optim": {"lr": 1e-3, "max_steps": max_steps, "batch_size": 1}, "loss": {"ssim": 1.0},
           "log_every": 1, "val_every": 2, "checkpoint_every": checkpoint_every,
           "tensorboard": False}
    cfg.update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def simulated_ct_dir(out: Path, *, views: int, size: int, seed: int) -> Path:
    """Two parallel-beam phantom observations at 4096 photons in the LoDoPaB layout."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset

    simulate_ct_dataset(out, geometry="parallel", views=views, photons=4096.0, size=size, seed=seed,
                        samples=2, part="test", sources="phantom")
    return out


def fresh_python(code: str, timeout: float | None = None) -> str:
    """Run ``code`` in a fresh interpreter (what a user's first call in a new process sees:
    imports, caches; a call that may hang inside C, which no alarm in this process could stop);
    its standard output, stripped. Fails with the child's stderr, or after ``timeout`` seconds."""
    import subprocess
    import sys

    import pytest

    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s: {code}")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.strip()


def peak_rss_growth(setup: str, warm_up: str, measure: str) -> tuple[float, str]:
    """Peak RSS growth, in MiB, of the statement ``measure`` in a fresh interpreter (one torch
    thread), after ``setup`` and a ``warm_up`` statement (imports, the allocator's first pools);
    and what ``measure`` evaluates to, as text. ``/proc``'s VmHWM is reset to the current RSS
    just before ``measure`` (``clear_refs`` 5); skips the test where that cannot be done."""
    import os
    import subprocess
    import sys
    import textwrap

    import pytest

    code = "\n".join([
        "import torch", "torch.set_num_threads(1)", textwrap.dedent(setup), warm_up,
        "def status(field):",
        "    try:",
        "        with open('/proc/self/status') as f:",
        "            return next(int(line.split()[1]) * 1024 for line in f",
        "                        if line.startswith(field + ':'))",
        "    except (OSError, StopIteration, ValueError, IndexError):",
        "        raise SystemExit(print(f'skip: no {field} in /proc/self/status'))",
        "try:",
        "    with open('/proc/self/clear_refs', 'w') as f:",
        "        f.write('5')",
        "except OSError:",
        "    raise SystemExit(print('skip: cannot write /proc/self/clear_refs'))",
        "before = status('VmRSS')",
        "if status('VmHWM') > before + 2**20:",
        "    raise SystemExit(print('skip: VmHWM was not reset'))",
        f"result = {measure}",
        "print((status('VmHWM') - before) / 2**20)",
        "print(result)",
    ])
    # the caller's environment (HOME, TMPDIR, the loader's and Python's variables) with one
    # OpenMP thread and this process's import path (the repository, the tests package)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if proc.stdout.startswith("skip"):
        pytest.skip(proc.stdout.strip())
    growth, result = proc.stdout.split("\n", 1)
    return float(growth), result.strip()


DISC_ROWS, DISC_COLS = 128, 64  # a tiny deployment-style MRI slice: 2x readout oversampling


class DiscSource:
    """Stand-in MRI image source for the deployment simulators: a bright disc with a ramp (the real
    bank loads MNI volumes)."""

    size = DISC_COLS

    def draw(self, rng):
        yy, xx = np.mgrid[:DISC_COLS, :DISC_COLS] / DISC_COLS - 0.5
        mag = (xx**2 + yy**2 < 0.16) * (0.5 + xx + rng.uniform(0, 0.2))
        return np.clip(mag, 0, None) / np.clip(mag, 0, None).max(), "procedural"


def endless_bands(band):
    """A stand-in for ``training.deploy_mri.DeploymentBands`` (same constructor arguments) that
    yields ``band`` forever: the deployment trainers' loop and card, not their data."""

    class Bands(torch.utils.data.IterableDataset):
        def __init__(self, *args, **kwargs):
            super().__init__()

        def __iter__(self):
            while True:
                yield band

    return Bands


def ct_slice_dataset(k: int, series: str, words: np.ndarray, *, thickness: str = "2.5",
                     bits_stored: int = 12, signed: bool = False, intercept: str = "-1024",
                     **attributes):
    """Slice ``k`` of an axial CT Image Storage series ``series`` (0.8 mm pixels, 2.5 mm apart),
    ``words`` its stored pixel values (little endian, 16 bits allocated); ``attributes`` are set
    first (patient, technique ...). Save it with ``mrirecon.io.dicom.save_part10``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    for kw, value in attributes.items():
        setattr(ds, kw, value)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, generate_uid()
    ds.SeriesInstanceUID, ds.Modality = series, "CT"
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = ["-100", "-120", f"{-50 + 2.5 * k:g}"]
    ds.PixelSpacing, ds.SliceThickness = ["0.8", "0.8"], thickness
    ds.InstanceNumber = k + 1
    ds.Rows, ds.Columns = words.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, "1", "HU"
    ds.PixelData = words.astype("<i2" if signed else "<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def rewrite_dicom(path, **changes) -> None:
    """Set (``None``: delete) elements of the DICOM file ``path`` in place."""
    import pydicom

    from mrirecon.io.dicom import save_part10

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        if value is None:
            del ds[key]
        else:
            setattr(ds, key, value)
    save_part10(ds, path)


def fastmri_to_ismrmrd(src: Path, dst: Path, first_sample: int = 0) -> None:
    """Write the k-space of a fastMRI file as ISMRMRD acquisitions (one readout per slice and
    phase-encoding line, in scrambled order), with the file's own ISMRMRD header.
    ``first_sample`` > 0 drops that many samples from the start of every readout (a partial
    echo: ``center_sample`` then says where the echo's centre is). Skips the calling test
    where ismrmrd (test extra) is not installed."""
    import pytest

    pytest.importorskip("ismrmrd")
    import ismrmrd
    import ismrmrd.xsd

    with h5py.File(src, "r") as f:
        kspace = f["kspace"][()]
        xml = f["ismrmrd_header"][()]
    xml = xml.decode() if isinstance(xml, bytes) else str(xml)
    limits = ismrmrd.xsd.CreateFromDocument(xml).encoding[0].encodingLimits
    centre = int(limits.kspace_encoding_step_1.center)
    slices, coils, h, w = kspace.shape
    acqs = []
    for s in range(slices):
        for col in range(w):
            acq = ismrmrd.Acquisition.from_array(
                np.ascontiguousarray(kspace[s, :, first_sample:, col], dtype=np.complex64),
                center_sample=h // 2 - first_sample,
                read_dir=(0.0, 1.0, 0.0), phase_dir=(1.0, 0.0, 0.0), slice_dir=(0.0, 0.0, 1.0))
            acq.idx.kspace_encode_step_1 = col - (w // 2 - centre)
            acq.idx.slice = s
            acqs.append(acq)
    with ismrmrd.Dataset(str(dst), "dataset", create_if_needed=True) as ds:
        ds.write_xml_header(xml)
        for i in np.random.default_rng(0).permutation(len(acqs)):
            ds.append_acquisition(acqs[i])


def ismrmrd_xml(*, nx: int, ny: int, coils: int, fov_mm: float, step1=None, z: int = 1,
                step2=None, slices: int = 1, trajectory: str = "cartesian", ramps=None,
                mode=None) -> str:
    """An ISMRMRD header of ``nx`` x ``ny`` (x ``z``) encoded = recon matrix, ``fov_mm`` square
    in-plane, 5 mm slices / partitions, ``coils`` receivers at 3 T. ``step1`` / ``step2``:
    ``(minimum, maximum, center)`` of the encoding limits (``step1`` default: the full ``ny``
    lines, centre ``ny // 2``); ``ramps``: ``(rampUpTime, rampDownTime)`` of an EPI
    trajectoryDescription; ``mode``: a parallel-imaging calibrationMode (R = 2 along ky). Skips
    the calling test where ismrmrd (test extra) is not installed."""
    import pytest

    X = pytest.importorskip("ismrmrd").xsd
    step1 = (0, ny - 1, ny // 2) if step1 is None else step1
    limits = X.encodingLimitsType(
        kspace_encoding_step_1=X.limitType(minimum=step1[0], maximum=step1[1], center=step1[2]),
        slice=X.limitType(minimum=0, maximum=slices - 1, center=0))
    if step2 is not None:
        limits.kspace_encoding_step_2 = X.limitType(minimum=step2[0], maximum=step2[1],
                                                    center=step2[2])

    def space():
        return X.encodingSpaceType(matrixSize=X.matrixSizeType(x=nx, y=ny, z=z),
                                   fieldOfView_mm=X.fieldOfViewMm(x=fov_mm, y=fov_mm, z=5.0 * z))

    enc = X.encodingType(encodedSpace=space(), reconSpace=space(), encodingLimits=limits,
                         trajectory=X.trajectoryType(trajectory))
    if ramps is not None:
        enc.trajectoryDescription = X.trajectoryDescriptionType(
            identifier="ConventionalEPI", userParameterLong=[
                X.userParameterLongType(name=name, value=value) for name, value in (
                    ("etl", ny), ("rampUpTime", ramps[0]), ("rampDownTime", ramps[1]),
                    ("flatTopTime", 200), ("numSamples", nx))])
    if mode is not None:
        enc.parallelImaging = X.parallelImagingType(
            accelerationFactor=X.accelerationFactorType(kspace_encoding_step_1=2,
                                                        kspace_encoding_step_2=1),
            calibrationMode=X.calibrationModeType(mode))
    return X.ToXML(X.ismrmrdHeader(
        acquisitionSystemInformation=X.acquisitionSystemInformationType(receiverChannels=coils),
        experimentalConditions=X.experimentalConditionsType(H1resonanceFrequency_Hz=127_732_435),
        encoding=[enc]))


def simulated_volume(folder: Path, *, coils: int, slices: int = 2, size=(64, 48),
                     seed: int = 3) -> Path:
    """One simulated fully sampled fastMRI file in ``folder`` (``slices`` x ``coils`` x
    ``size``, seed ``seed``)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=slices, coils=coils, size=size,
                                   seed=seed)
    return Path(path)


def read_kspace(path: Path) -> np.ndarray:
    """The ``kspace`` dataset of a fastMRI file, ``(slices, coils, h, w)``."""
    with h5py.File(path) as h5:
        return h5["kspace"][...]


def partial_fourier_file(folder: Path, *, size: int = 96, missing: int = 24) -> Path:
    """A simulated fastMRI file (1 slice, 8 coils, ``size`` x ``size``, seed 0) made partial
    Fourier: the first ``missing`` phase-encoding lines never acquired (zeroed) and the header's
    encoding limits saying so (``padding_left``)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=1, coils=8, size=(size, size), seed=0)
    path = Path(path)
    with h5py.File(path, "r+") as f:
        header = parse_ismrmrd_header(f["ismrmrd_header"][()], str(path))
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = header_to_xml(header.with_(padding_left=missing)).encode()
        k = f["kspace"][...]
        k[..., :missing] = 0
        f["kspace"][...] = k
    return path


def partial_echo_files(folder: Path) -> tuple[Path, Path]:
    """``(full, pe)``: one simulated fastMRI slice (64 x 64, 2x readout oversampling, 8 coils,
    seed 3) written as ISMRMRD raw data twice, with the full echo and with the first 32 of its
    128 readout samples never sampled (a partial echo)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (src,) = simulate_mri_dataset(folder / "sim", volumes=1, slices=1, coils=8, size=(64, 64),
                                  seed=3, readout_oversampling=2)
    paths = []
    for name, first in (("full", 0), ("pe", 32)):
        (folder / name).mkdir()
        fastmri_to_ismrmrd(Path(src), folder / name / "scan.h5", first_sample=first)
        paths.append(folder / name / "scan.h5")
    return paths[0], paths[1]


def cli_exit(*argv: str) -> int:
    """``mrirecon --threads 1 ARGV``'s exit status, as the shell sees it (argparse and the
    commands' refusals exit through ``SystemExit``)."""
    from mrirecon.cli import main

    try:
        return main(["--threads", "1", *argv])
    except SystemExit as exc:
        return int(exc.code)


def radial_ismrmrd(path, readouts: int = 32, samples: int = 64, slices: int = 2, coils: int = 4):
    """A small radial ISMRMRD file (random k-space on ``readouts`` spokes of ``samples`` over a
    64 x 64 matrix, 200 mm FOV): ``(path, kspace, trajectory)``."""
    import numpy as np
    import torch

    from mrirecon.containers import Header
    from mrirecon.io import write_ismrmrd_noncartesian

    angles = torch.arange(readouts) * np.pi / readouts
    r = torch.linspace(-0.5, 0.5, samples)
    traj = torch.stack([r[None] * torch.cos(angles)[:, None],
                        r[None] * torch.sin(angles)[:, None]], -1)
    k = torch.randn(slices, coils, readouts, samples, dtype=torch.complex64)
    header = Header(encoded_matrix=(64, 64, 1), recon_matrix=(64, 64, 1),
                    encoded_fov_mm=(200.0, 200.0, 5.0), recon_fov_mm=(200.0, 200.0, 5.0),
                    extra={"trajectory": "radial"})
    return write_ismrmrd_noncartesian(path, k, traj, header), k, traj



def default_signals() -> None:
    """``preexec_fn`` of a child whose reaction to SIGINT / SIGHUP / SIGTERM a test checks: the
    three at their defaults. A suite started in the background (``nohup make test &``, ``cmd &``
    in a script) runs with SIGINT (and under ``nohup`` SIGHUP) ignored; children inherit that,
    and ``mrirecon`` rightly leaves an ignored signal ignored, so those tests failed there (exit
    0 for an expected 130, a 60 s wait for an expected 129)."""
    import signal

    for name in ("SIGINT", "SIGHUP", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)


def two_ranks_gather(monkeypatch, run_rank):
    """Two ranks meeting in ``torch.distributed.all_gather_object``, simulated in one process:
    ``run_rank(1)`` runs until it gathers (its object is kept and its run stops there), then
    ``run_rank(0)`` runs to the end, gathering ``[its object, rank 1's]``; returns what it
    returns."""
    import pytest
    import torch.distributed as dist

    kept = []

    class Gathered(Exception):
        pass

    def rank_1(out, obj):
        kept.append(obj)
        raise Gathered

    monkeypatch.setattr(dist, "all_gather_object", rank_1)
    with pytest.raises(Gathered):
        run_rank(1)
    monkeypatch.setattr(dist, "all_gather_object",
                        lambda out, obj: out.__setitem__(slice(None), [obj, kept[0]]))
    return run_rank(0)
