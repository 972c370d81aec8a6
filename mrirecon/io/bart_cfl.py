"""BART's arrays (``NAME.hdr`` + ``NAME.cfl``) as BART reads and writes them, and BART k-space as
mrirecon's :class:`~mrirecon.containers.KSpace`.

The format (BART 0.8, ``src/misc/io.c``): ``NAME.hdr`` is text whose line after ``# Dimensions``
holds the dimensions, space-separated (BART writes 16 and a trailing space; other ``#`` sections,
``# Command`` / ``# Files`` / ``# Creator``, are ignored as BART ignores them); ``NAME.cfl`` is the
raw data, complex64 little-endian in column-major (Fortran) order: the first dimension varies
fastest. A path may be given as ``NAME``, ``NAME.cfl`` or ``NAME.hdr``, as BART's tools take
``NAME``. BART's raw-array format (``.ra``) is not read: ``bart copy NAME.ra NAME`` converts it.

BART's dimensions (``src/misc/mri.h``) are :data:`BART_DIMS`. Multi-coil 2-D k-space is
``(READ, PHS1, 1, COIL)`` with the slices of a multi-slice scan on ``SLICE`` (13): mrirecon's
``(slices, coils, H, W)`` with ``H`` the readout. BART's centred FFT (``bart fft -u``, unitary) is
mrirecon's :func:`~mrirecon.functional.fft.fft2c` for even sizes and for odd ones (k = 0 at
``N // 2``; checked against ``bart fft`` in ``tests/io/test_bart_cfl.py``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from mrirecon.containers import Header, KSpace
from mrirecon.io.atomic import atomic_path
from mrirecon.io.errors import DataFormatError, refuse_nonfinite

#: BART's dimension names in order (``enum mri_dims``); arrays hold up to 16.
BART_DIMS = ("READ", "PHS1", "PHS2", "COIL", "MAPS", "TE", "COEFF", "COEFF2", "ITER", "CSHIFT",
             "TIME", "TIME2", "LEVEL", "SLICE", "AVG", "BATCH")
#: The dimensions k-space may use here: readout, phase encoding, coils and slices.
KSPACE_DIMS = {0: "READ", 1: "PHS1", 3: "COIL", 13: "SLICE"}
#: What each other dimension holds in BART's k-space and how to make one 2-D slice stack of it.
_OTHER_DIM_ADVICE = {
    2: "3-D k-space (partitions on PHS2): transform them to slices first, "
       "`bart fft -iu 4 NAME hybrid; bart transpose 2 13 hybrid NAME2` (each partition a slice)",
    4: "several sensitivity maps (MAPS): this is a map or image array, not k-space",
    5: "several echoes (TE): reconstruct one at a time, `bart slice 5 E NAME NAME_E`",
    10: "several time frames (TIME): reconstruct one at a time, `bart slice 10 T NAME NAME_T`",
    14: "several averages (AVG): average them first, `bart avg 16384 NAME NAME_avg`",
}
_BYTES = 8  # complex64
_HDR_MAX = 1 << 16  # bytes read of a header: BART's are a few lines (dims, command, files)


def cfl_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(NAME.hdr, NAME.cfl)`` for ``path`` given as ``NAME``, ``NAME.cfl`` or ``NAME.hdr``."""
    p = Path(path)
    if p.suffix.lower() == ".ra":
        raise DataFormatError(p, "file", "BART's raw-array format (.ra) is not read: convert it "
                                         f"with `bart copy {p} {p.with_suffix('')}` (.hdr + .cfl)")
    base = p.with_suffix("") if p.suffix in (".cfl", ".hdr") else p
    return base.with_name(base.name + ".hdr"), base.with_name(base.name + ".cfl")


def read_cfl_dims(path: str | os.PathLike) -> tuple[int, ...]:
    """The dimensions in ``NAME.hdr`` as written (BART writes 16)."""
    hdr, _ = cfl_paths(path)
    try:
        if not hdr.is_file() and hdr.exists():  # a FIFO would block, a device never end
            raise DataFormatError(hdr, "file", "not a regular file")
        with open(hdr, "rb") as f:
            raw = f.read(_HDR_MAX + 1)
    except FileNotFoundError:
        raise DataFormatError(hdr, "file", "missing: a BART array is NAME.hdr (its dimensions) "
                                           "beside NAME.cfl (its data)") from None
    except (IsADirectoryError, PermissionError) as e:
        raise DataFormatError(hdr, "file", f"cannot read it ({e.strerror})") from None
    if len(raw) > _HDR_MAX:
        raise DataFormatError(hdr, "file", f"over {_HDR_MAX} bytes: not a BART header (BART "
                                           "writes a few lines)")
    lines = [line.strip() for line in raw.decode("ascii", errors="replace").splitlines()]
    try:
        line = lines[lines.index("# Dimensions") + 1]
    except (ValueError, IndexError):
        raise DataFormatError(hdr, "# Dimensions", "no '# Dimensions' line followed by the "
                                                   "dimensions: not a BART header") from None
    try:
        dims = tuple(int(v) for v in line.split())
    except ValueError:
        raise DataFormatError(hdr, "# Dimensions", f"not whole numbers: {line[:80]!r}") from None
    if not dims or min(dims) < 1:
        raise DataFormatError(hdr, "# Dimensions", f"expected positive sizes, got {line[:80]!r}")
    return dims


def _checked(path: str | os.PathLike) -> tuple[tuple[int, ...], Path]:
    """The header's dimensions and the data file, whose size they must give exactly."""
    dims = read_cfl_dims(path)
    _, cfl = cfl_paths(path)
    need = math.prod(dims) * _BYTES  # Python ints: numpy's int64 product wraps silently
    try:
        size = cfl.stat().st_size
    except FileNotFoundError:
        raise DataFormatError(cfl, "file", "missing: a BART array is NAME.hdr beside NAME.cfl "
                                           "(its data)") from None
    if not cfl.is_file():
        raise DataFormatError(cfl, "file", "not a regular file")
    if size != need:
        what = "truncated" if size < need else "longer than its header says"
        raise DataFormatError(cfl, "data", f"{size} bytes, but the header's dimensions {dims} "
                                           f"need {need} (complex64): {what}")
    return dims, cfl


def _read_bytes(cfl: Path, offset: int, count: int, field: str) -> np.ndarray:
    """``count`` complex64 values from byte ``offset`` of ``cfl``, by a plain read: a memory map
    of a file that ``bart`` rewrites in place (it truncates an existing output) killed the
    whole process with SIGBUS on the first page past the new end; a short read is refused."""
    with open(cfl, "rb") as f:
        f.seek(offset)
        raw = f.read(count * _BYTES)
    if len(raw) != count * _BYTES:
        raise DataFormatError(cfl, field, f"the file ended {len(raw)} bytes into the "
                                          f"{count * _BYTES} to read at byte {offset}: it changed "
                                          "(rewritten by bart?) after its size was checked")
    return np.frombuffer(raw, dtype="<c8")


def read_cfl(path: str | os.PathLike) -> np.ndarray:
    """A BART array as a complex64 numpy array of its dimensions, trailing singleton dimensions
    dropped (as BART's Python ``readcfl`` does; a ``(16, 16, 1, 4)`` array keeps its ``PHS2``)."""
    dims, cfl = _checked(path)
    keep = max((i + 1 for i, d in enumerate(dims) if d != 1), default=1)
    data = _read_bytes(cfl, 0, math.prod(dims), "data")
    return data.reshape(dims[:keep], order="F").astype(np.complex64, order="F")


def write_cfl(path: str | os.PathLike, array) -> tuple[Path, Path]:
    """Write ``array`` (numpy or torch; real or complex) as BART does: ``NAME.cfl`` complex64
    column-major and ``NAME.hdr`` with its dimensions (16 at least, as BART's tools write them).
    complex128 is rounded to complex64, the one type BART reads. Each file is written to a
    temporary file and renamed, the data first, so that a reader never sees a header without
    its data. NaN / Inf are refused (BART's tools would run on them). Returns the two paths."""
    hdr, cfl = cfl_paths(path)
    a = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if a.dtype.kind not in "biufc":
        raise TypeError(f"write_cfl: {cfl}: expected numbers, got dtype {a.dtype}")
    if a.ndim > len(BART_DIMS):
        raise ValueError(f"write_cfl: {cfl}: {a.ndim} dimensions, BART holds at most "
                         f"{len(BART_DIMS)}")
    if a.size == 0:
        raise ValueError(f"write_cfl: {cfl}: empty array {a.shape}")
    refuse_nonfinite("write_cfl", cfl, "array", a)
    dims = tuple(a.shape) + (1,) * (len(BART_DIMS) - a.ndim)
    with atomic_path(cfl) as tmp:
        with open(tmp, "wb") as f:
            f.write(np.asarray(a, dtype="<c8").tobytes(order="F"))
    with atomic_path(hdr) as tmp:
        tmp.write_text("# Dimensions\n" + "".join(f"{d} " for d in dims) + "\n", encoding="ascii")
    return hdr, cfl


class BartKSpaceFile:
    """Multi-coil 2-D k-space in BART's dimensions ``(READ, PHS1, 1, COIL, ..., SLICE)``, read
    one slice at a time by plain reads (the reader :class:`mrirecon.pipeline.stages_mri`
    runs for ``.cfl`` inputs, with :class:`~mrirecon.io.fastmri.FastMRIFile`'s interface).

    A BART array has no header: the encoded and recon matrices are its ``(READ, PHS1)`` size
    (readout oversampling, if any, is not known and stays in the image), the FOV is unknown (the
    run says that 1 mm voxels were assumed) and the sampled columns are those with data, as
    BART's ``pics`` estimates its pattern (a slice without data is blank). Any other dimension above 1 is refused, naming it and
    the BART command that makes 2-D slices of it.
    """

    mask = None
    reference_key = None

    def __init__(self, path: str | os.PathLike) -> None:
        self.hdr, self.cfl = cfl_paths(path)
        self.path = self.cfl
        dims, _ = _checked(path)
        dims = dims + (1,) * (len(BART_DIMS) - len(dims))
        if len(dims) > len(BART_DIMS):
            extra = [i for i in range(len(BART_DIMS), len(dims)) if dims[i] > 1]
            if extra:
                raise DataFormatError(self.hdr, "# Dimensions", f"{len(dims)} dimensions with "
                                      f"data on dimension(s) {extra}: BART k-space has 16")
            dims = dims[: len(BART_DIMS)]
        for i, d in enumerate(dims):
            if d > 1 and i not in KSPACE_DIMS:
                advice = _OTHER_DIM_ADVICE.get(i, "not a dimension of 2-D multi-coil k-space")
                raise DataFormatError(self.hdr, f"# Dimensions[{i}] ({BART_DIMS[i]})",
                                      f"{d}: {advice}; mrirecon reads (READ, PHS1, 1, COIL) "
                                      "k-space with slices on SLICE (13)")
        self.dims = dims
        rows, cols, coils, slices = dims[0], dims[1], dims[3], dims[13]
        if rows < 2 or cols < 2:
            raise DataFormatError(self.hdr, "# Dimensions", f"READ x PHS1 = {rows} x {cols}: "
                                  "not 2-D k-space")
        self.shape = (slices, coils, rows, cols)
        self.header = Header(encoded_matrix=(rows, cols, 1), recon_matrix=(rows, cols, 1),
                             num_coils=coils, extra={
                                 "fov_unknown_axes": ("x", "y", "z"),
                                 "fov_unknown_source": "a BART array holds no field of view"})

    def __len__(self) -> int:
        return self.shape[0]

    def __enter__(self) -> BartKSpaceFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read_slice(self, index: int, *, with_reference: bool = True) -> KSpace:
        """Slice ``index`` as :class:`KSpace` ``(1, coils, H, W)`` with ``mask`` the columns that
        hold data in any coil (``None`` when all do); NaN / Inf samples are refused naming the
        slice."""
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"{self.cfl}: slice {index} of {n}")
        index %= n
        slices, coils, rows, cols = self.shape
        count = rows * cols * coils  # one slice is one block: the dimensions before SLICE are 1
        block = _read_bytes(self.cfl, index * count * _BYTES, count, f"data[SLICE={index}]")
        block = np.ascontiguousarray(np.moveaxis(block.reshape((rows, cols, coils), order="F"),
                                                 -1, 0))  # (coils, H, W)
        if not np.isfinite(block).all():
            bad = int(block.size - np.count_nonzero(np.isfinite(block)))
            raise DataFormatError(self.cfl, f"data[SLICE={index}]", f"{bad} NaN or Inf samples")
        data = torch.from_numpy(block).unsqueeze(0)
        sampled = torch.from_numpy((block != 0).any(axis=(0, 1)))  # BART's pattern: the data
        # a blank slice (no column with data) keeps no mask: it is the pipeline's blank slice,
        # as the same slice of a fastMRI file (an all-False mask failed the whole volume)
        return KSpace(data=data, header=self.header, slice_indices=(index,), source=str(self.cfl),
                      mask=None if bool(sampled.all()) or not bool(sampled.any()) else sampled)

    def sampling_mask(self) -> None:
        """``None``: each slice's sampled columns are those holding data (:meth:`read_slice`)."""
        return None

    def close(self) -> None:
        """Nothing is held open: each slice is read by its own open and read."""
