"""NIfTI-1 export and import of an :class:`~mrirecon.data.Image` volume (via nibabel).

Axis order: our Image is ``(slices, rows, cols)`` while a NIfTI array is ``(i, j, k)`` with
the affine mapping ``(i, j, k)`` to RAS mm; we store ``i = col, j = row, k = slice``, so the
file's affine is exactly :meth:`ImageGeometry.affine_ras` and the data array is
``image.data.permute(2, 1, 0)``. qform and sform are both set (code 1, scanner; code 0,
unknown, for a geometry that is not ``placed``: the voxel sizes stand, the position does not),
units mm.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from mrirecon.containers import Image, ImageGeometry
from mrirecon.io.atomic import atomic_path
from mrirecon.io.errors import (DataFormatError, DataWarning, refuse_nonfinite, refuse_oversized,
                                require_regular_file, warn_data)

__all__ = ["read_nifti", "write_nifti"]

_SCANNER = 1
_UNKNOWN = 0
_ORTHO_TOL = 1e-4
#: Millimetres per space unit of ``xyzt_units`` (its low 3 bits: 0 unknown, read as mm; 1 meter;
#: 2 mm; 3 micron)
_MM_PER_UNIT = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}
_F32_MAX, _F32_TINY = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    if name.endswith(".nii"):
        return ".nii"
    raise ValueError(f"NIfTI path {path} must end in .nii or .nii.gz")


def _int16_scaling(data: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Quantise to int16 with ``value = stored * slope + inter``; error <= slope / 2."""
    lo, hi = float(data.min()), float(data.max())
    # slope and inter are stored as float32 in the header: quantise with those values, the
    # slope rounded up, so that the range fits +-32767 steps about the rounded centre exactly
    # (rounded to the nearest float32, an extreme could land up to 32767 x 2^-24 = 0.002 steps
    # past the end and be clipped by that much: still inside the half-step bound)
    inter = float(np.float32((lo + hi) / 2))
    need = max(hi - inter, inter - lo) / 32767
    if need <= 0:  # constant data
        return np.zeros(data.shape, np.int16), 1.0, inter
    slope32 = np.float32(need)
    if float(slope32) < need:
        slope32 = np.nextafter(slope32, np.float32(np.inf))
    slope = float(slope32)
    stored = np.clip(np.round((data - inter) / slope), -32767, 32767).astype(np.int16)
    return stored, slope, inter


def write_nifti(image: Image, path: str | os.PathLike, *, dtype: str = "float32") -> Path:
    """Write ``image`` ``(slices, rows, cols)`` as one NIfTI-1 file, atomically.

    Parameters
    ----------
    image
        Volume on an :class:`ImageGeometry`. ``kind="complex"`` data are written as
        complex64 (``dtype`` is then ignored).
    path
        Target ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
    dtype
        ``"float32"`` (exact for float32 data) or ``"int16"`` (``scl_slope``/``scl_inter``
        from the data range; error at most ``scl_slope / 2``). float64 data beyond float32's
        range (above 3.4e38, or with a peak below its smallest normal 1.2e-38) are refused.

    Returns
    -------
    Path
        ``path``. The array is ``(cols, rows, slices)``; qform = sform =
        ``image.geometry.affine_ras()`` with code 1 (scanner), or 0 when the geometry is not
        ``placed``; xyzt units mm / s.
    """
    path = Path(path)
    suffix = _suffix(path)
    if dtype not in ("float32", "int16"):
        raise ValueError(f"write_nifti: dtype must be 'float32' or 'int16', got {dtype!r}")
    data = image.data
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    data = np.asarray(data)
    if data.ndim != 3 or min(data.shape) < 1:
        raise ValueError(f"write_nifti: Image.data must be (slices, rows, cols), got {data.shape}")
    complex_data = np.iscomplexobj(data)
    if complex_data != (image.kind == "complex"):
        raise ValueError(
            f"write_nifti: Image.kind is {image.kind!r} but data dtype is {data.dtype}"
        )
    refuse_nonfinite("write_nifti", path, "Image.data", data)
    problem = _float32_range_problem(data, reading=False)
    if problem:  # float64 data at ~1e-40 or 1e39: the cast to float32 made zeros or Inf
        raise ValueError(f"write_nifti: {path}: Image.data {problem}")
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (col, row, slice)
    slope, inter = 1.0, 0.0
    if complex_data:
        array = array.astype(np.complex64)
    elif dtype == "int16":
        array, slope, inter = _int16_scaling(array.astype(np.float64))
    else:
        array = array.astype(np.float32)
    affine = image.geometry.affine_ras()
    header = nib.Nifti1Header()
    header.set_data_dtype(array.dtype)
    nii = nib.Nifti1Image(array, affine, header)
    code = _SCANNER if image.geometry.placed else _UNKNOWN  # pixdim only: voxel sizes, no place
    nii.set_qform(affine, code=code)
    nii.set_sform(affine, code=code)
    nii.header.set_xyzt_units(xyz="mm", t="sec")
    nii.header["slice_duration"] = 0.0
    if dtype == "int16" and not complex_data:
        nii.header.set_slope_inter(slope, inter)
    else:
        nii.header.set_slope_inter(1.0, 0.0)
    description = (image.description or "mrirecon").encode("ascii", "replace")[:79]
    nii.header["descrip"] = description
    blob = nii.to_bytes()
    if suffix == ".nii.gz":
        blob = gzip.compress(blob, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
    return path


def _affine_field(source: tuple[str, int], axis: int | None = None) -> str:
    """The header fields that give the affine from ``source`` (``("sform", code)``,
    ``("qform", code)`` or ``("pixdim", 0)``, :func:`_affine_mm`), or its axis ``axis``'s
    length (0, 1, 2: i, j, k), for a :class:`DataFormatError`."""
    kind, code = source
    if kind == "sform":
        return f"srow_x, srow_y, srow_z (sform, code {code})"
    length = f"pixdim[{axis + 1}]" if axis is not None else None
    if kind == "qform":
        return f"{length or 'quatern_b, quatern_c, quatern_d'} (qform, code {code})"
    return length or "pixdim"


def _geometry_from_affine(affine_ras: np.ndarray, path: Path,
                          source: tuple[str, int]) -> tuple[ImageGeometry, bool]:
    """ImageGeometry of an ``(i=col, j=row, k=slice)`` grid; ``True`` if k must be reversed.
    An axis of length 0 or axes not at right angles are refused naming the header fields that
    gave the affine (``source``, :func:`_affine_field`)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_ras
    m = lps[:3, :3]
    zooms = np.linalg.norm(m, axis=0)
    if np.any(zooms <= 0):
        axis = int(np.argmin(zooms))
        raise DataFormatError(path, _affine_field(source, axis),
                              f"axis {'ijk'[axis]} has length 0 (voxel sizes {zooms.tolist()} "
                              f"mm): the affine {np.round(affine_ras, 6).tolist()} gives no voxel "
                              "size along it")
    axes = m / zooms
    if np.max(np.abs(axes.T @ axes - np.eye(3))) > _ORTHO_TOL:
        raise DataFormatError(path, _affine_field(source),
                              "the affine is sheared (axes not orthogonal): "
                              f"{np.round(affine_ras, 6).tolist()}")
    origin = lps[:3, 3].copy()
    flip = float(np.dot(np.cross(axes[:, 0], axes[:, 1]), axes[:, 2])) < 0
    try:  # voxels or a position beyond 100 m (containers.MAX_LENGTH_MM): a corrupt header
        geometry = ImageGeometry(spacing=(float(zooms[2]), float(zooms[1]), float(zooms[0])),
                                 origin=tuple(origin),
                                 orientation=tuple(axes[:, 0]) + tuple(axes[:, 1]))
    except ValueError as err:
        raise DataFormatError(path, _affine_field(source), str(err)) from None
    return geometry, flip


def read_nifti(
    path: str | os.PathLike, *, modality: str = "MR", kind: str | None = None
) -> Image:
    """Read a 3-D NIfTI-1/2 file into an :class:`Image` ``(slices, rows, cols)``.

    Parameters
    ----------
    path
        ``.nii`` or ``.nii.gz`` file (any case), or either half of a NIfTI ``.hdr`` /
        ``.img`` pair. 2-D files give one slice; a 4-D file must have a single volume.
    modality
        ``"MR"`` or ``"CT"`` (NIfTI does not record it).
    kind
        Image kind; default ``"complex"`` for complex files, ``"hu"`` for CT, else
        ``"magnitude"``.

    Returns
    -------
    Image
        float32 (or complex64) data with ``scl_slope``/``scl_inter`` applied. The geometry
        comes from the sform (code > 0), else the qform (code > 0), else the pixdim-only
        affine, in mm whatever the header's xyz units (meter, micron; "unknown" is taken as
        mm). A left-handed affine (``k`` against ``i x j`` in LPS) is turned into our
        right-handed convention by reversing the slice order.

    Raises
    ------
    DataFormatError
        (a ``ValueError``) naming the file and field, for every refusal: a file nibabel
        cannot load (``file``), more than one volume or an empty one (``dim``), an affine with
        an axis of length 0 or axes not at right angles (``srow_x, srow_y, srow_z (sform, code
        N)``, or the qform's fields), a truncated data block, RGB / structured voxels, NaN /
        Inf in the fields of the affine (``srow_x``,
        ``quatern_b``, ``pixdim[1]``, ...), values float32 cannot hold (beyond 3.4e38, or a
        nonzero peak below 1.2e-38), a NaN / Inf ``scl_inter`` beside a usable ``scl_slope``.
        An infinite ``scl_slope`` is read unscaled (nibabel's rule) with a ``DataWarning``.
    """
    path = Path(path)
    pair = path.name.lower().endswith((".hdr", ".img"))
    if not pair:
        _suffix(path)
    require_regular_file(path)  # a folder or FIFO named x.nii was reported as "does not exist"
    if not path.is_file():
        raise FileNotFoundError(f"read_nifti: {path} does not exist")
    try:
        nii = _load(path, pair)
    except DataFormatError:
        raise
    except Exception as err:  # noqa: BLE001 - nibabel raises many kinds
        if "invalid intercept" in str(err):  # nibabel's HeaderDataError names no field
            raise DataFormatError(path, "scl_inter", f"is not finite while scl_slope is: the "
                                  "intensities (stored x scl_slope + scl_inter) cannot be "
                                  f"computed ({err})") from err
        raise DataFormatError(path, "file", f"not a readable NIfTI file "
                              f"({type(err).__name__}: {' '.join(str(err).split())})") from err
    shape = nii.shape
    while len(shape) > 3 and shape[-1] == 1:  # one volume: (x, y, z, 1) or (x, y, z, 1, 1)
        shape = shape[:-1]
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise DataFormatError(path, "dim", f"has shape {nii.shape}; expected one 3-D volume "
                              "(a 4-D or 5-D file of one volume is read)")
    if 0 in shape:  # every other reader refuses empty data
        raise DataFormatError(path, "dim", f"empty volume of shape {nii.shape}: no voxels")
    header = nii.header
    stored = header.get_data_dtype()
    if stored.fields is not None or stored.kind not in "biufc":  # RGB24 / RGBA32: numpy's error
        raise DataFormatError(path, "datatype", f"is {header.get_value_label('datatype')} "
                              f"({int(header['datatype'])}, {len(stored.fields or ()) or '?'} "
                              "channels per voxel): read_nifti reads one value per voxel (grey "
                              "levels or complex); convert the colour image to one channel")
    affine, placed, source = _affine_mm(header, path)
    geometry, flip = _geometry_from_affine(affine, path, source)
    if not placed:
        geometry = replace(geometry, placed=False)
    complex_data = np.issubdtype(stored, np.complexfloating)
    _check_slope(nii, path)
    # read as float64 (complex as stored): a 1.9-MB .nii.gz declaring 2000 x 2000 x 500 took
    # 2.1 GB, then "truncated or damaged (MemoryError)"
    refuse_oversized(path, "dim", float(np.prod(nii.shape, dtype=np.float64)) * (
        stored.itemsize if complex_data else 8), f"a {nii.shape} volume")
    try:  # nib.load reads the header only: a truncated file fails here
        array = np.asanyarray(nii.dataobj) if complex_data else nii.get_fdata(dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - EOFError, OSError, zlib.error, ...
        raise DataFormatError(path, "data", f"truncated or damaged: the voxels of shape "
                              f"{nii.shape} cannot be read ({type(err).__name__}: "
                              f"{' '.join(str(err).split())})") from err
    array = array.reshape(shape)
    problem = _float32_range_problem(array, reading=True)
    if problem:
        raise DataFormatError(path, "data", problem)
    if flip:
        array = array[:, :, ::-1]
        last = affine @ np.array([0, 0, shape[2] - 1, 1.0])
        lps_last = np.array([-last[0], -last[1], last[2]])
        geometry = replace(geometry, origin=tuple(float(v) for v in lps_last))
    data = np.ascontiguousarray(np.transpose(array, (2, 1, 0)))
    data = data.astype(np.complex64 if complex_data else np.float32)
    if kind is None:
        kind = "complex" if complex_data else ("hu" if modality == "CT" else "magnitude")
    return Image(
        data=torch.from_numpy(data), geometry=geometry, kind=kind, modality=modality,
        description=header["descrip"].item().decode("ascii", "replace").strip("\x00 "),
        source=str(path),
    )


def _load(path: Path, pair: bool):
    """``nib.load`` for ``.nii`` / ``.nii.gz`` and ``.hdr`` / ``.img`` pairs (NIfTI-1 or -2;
    an Analyze 7.5 header without the NIfTI magic has no orientation and is refused). nibabel
    maps names case-sensitively (``x.Nii.Gz`` failed as "no such file x.nii.Gz"), so a single
    file with another case is opened by its header size: 348 bytes NIfTI-1, 540 NIfTI-2."""
    if pair:
        if path.suffix not in (".hdr", ".img"):
            raise DataFormatError(path, "file", "a NIfTI pair's names must end in lower-case "
                                  ".hdr / .img (nibabel finds the other half by that name); "
                                  "rename both files")
        other = path.with_suffix(".img" if path.suffix == ".hdr" else ".hdr")
        if not other.is_file():
            raise DataFormatError(path, "file", f"the other half of the NIfTI pair, {other}, "
                                  "is missing")
        nii = nib.load(path)
        if not isinstance(nii, (nib.Nifti1Pair, nib.Nifti2Pair)):
            raise DataFormatError(path, "magic", f"is an Analyze 7.5 header "
                                  f"({type(nii).__name__}) without the NIfTI magic 'ni1': it "
                                  "records no orientation; convert it to NIfTI with the "
                                  "orientation known from its source")
        return nii
    if path.name.endswith((".nii", ".nii.gz")):
        return nib.load(path)
    with nib.openers.ImageOpener(path) as f:  # decompresses by the suffix, in any case
        head = f.read(4)
    size = int.from_bytes(head, "little") if len(head) == 4 else 0
    size = size if size in (348, 540) else int.from_bytes(head, "big") if len(head) == 4 else 0
    if size not in (348, 540):
        raise DataFormatError(path, "sizeof_hdr", f"is {head!r}, neither 348 (NIfTI-1) nor 540 "
                              "(NIfTI-2): not a NIfTI file")
    klass = nib.Nifti1Image if size == 348 else nib.Nifti2Image
    return klass.from_file_map({"image": nib.FileHolder(filename=str(path))})


def _check_slope(nii, path: Path) -> None:
    """Warn, naming ``scl_slope``, where the file's slope is infinite: nibabel then reads the
    stored values unscaled, as it does for the slopes 0 and NaN that mean "no scaling" (the
    NIfTI standard's 0; nibabel writes NaN for it), which pass without a word. ``nib.load``
    replaces the slope in ``nii.header``, so the file's own header is read again (348 bytes).
    A NaN / Inf intercept beside a usable slope fails in ``nib.load`` (named there)."""
    header_file = nii.file_map["header" if "header" in nii.file_map else "image"].filename
    with nib.openers.ImageOpener(header_file or path) as f:  # a pair's header is the .hdr
        slope = float(type(nii.header).from_fileobj(f)["scl_slope"])
    if np.isinf(slope):
        warn_data(DataWarning(path, "scl_slope", (
            f"is {slope}: no scaling can be applied, so the stored values are read unscaled "
            "(as nibabel reads them); check the intensities against the source")), stacklevel=3)


def _affine_mm(header, path: Path) -> tuple[np.ndarray, bool, tuple[str, int]]:
    """The header's voxel -> RAS affine in mm, whether it places the volume, and where it came
    from (``("sform", code)``, ``("qform", code)``, ``("pixdim", 0)``): the sform
    (code > 0), else the qform (code > 0), else the pixdim-only affine (no position). Lengths in
    the header's xyz units (meter, micron) are turned into mm; a NaN / Inf in the fields that
    give the affine is refused naming them (it was "ImageGeometry.spacing must be finite")."""
    sform, scode = header.get_sform(coded=True)
    qform, qcode = header.get_qform(coded=True)
    pixdim = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if scode and scode > 0:
        affine, placed, source = np.asarray(sform, dtype=np.float64), True, ("sform", int(scode))
        bad = [f"srow_{'xyz'[r]}" for r in range(3) if not np.isfinite(affine[r]).all()]
        fields = ", ".join(bad) + f" (sform, code {int(scode)})"
    elif qcode and qcode > 0:
        affine, placed, source = np.asarray(qform, dtype=np.float64), True, ("qform", int(qcode))
        names = ("quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y", "qoffset_z")
        bad = [n for n in names if not np.isfinite(float(header[n]))]
        bad += [f"pixdim[{i + 1}]" for i in range(3) if not np.isfinite(pixdim[i])]
        fields = ", ".join(bad or ["quatern_b..d / qoffset_x..z / pixdim"]) + \
            f" (qform, code {int(qcode)})"
    else:  # no xform (NIfTI "method 1"): voxel sizes along the array axes, no position; the
        # placeholder write_nifti writes for an unplaced image (LPS identity = RAS diag(-, -, +)),
        # so a round trip keeps its orientation (RAS diag(+, +, +) came back as -1,0,0,0,-1,0)
        affine = np.diag([-abs(pixdim[0]), -abs(pixdim[1]), abs(pixdim[2]), 1.0])
        placed, source = False, ("pixdim", 0)
        fields = ", ".join(f"pixdim[{i + 1}]" for i in range(3) if not np.isfinite(pixdim[i]))
    if not np.isfinite(affine).all():
        raise DataFormatError(path, fields, "holds NaN or Inf: the voxel-to-patient affine "
                              f"{np.round(affine, 6).tolist()} gives no voxel size or position")
    code = int(header["xyzt_units"]) & 0x07  # the space unit's bits (the time unit's: 0x38)
    if code not in _MM_PER_UNIT:
        raise DataFormatError(path, "xyzt_units", f"space unit code {code} is none of NIfTI's "
                              "(0 unknown, 1 meter, 2 mm, 3 micron)")
    scale = _MM_PER_UNIT[code]
    affine = affine.copy()
    affine[:3, :] *= scale  # the 3x3 and the translation: positions and sizes in mm
    return affine, placed, source


def _float32_range_problem(array: np.ndarray, *, reading: bool) -> str | None:
    """What float32 (complex64, part by part) cannot hold in ``array``, or ``None``: finite
    values beyond 3.4e38 (Inf after the cast) or a nonzero peak below the smallest normal
    1.2e-38 (zeros or a few bits). The one rule of :func:`write_nifti` (``reading=False``: it
    would write them so) and :func:`read_nifti` (``reading=True``: it would return them so).
    float32 / complex64 and integer arrays pass as they are; NaN / Inf already there are left
    to the caller."""
    if array.dtype in (np.float32, np.complex64) or array.dtype.kind in "iub" or array.size == 0:
        return None
    parts = (array.real, array.imag) if np.iscomplexobj(array) else (array,)
    peak = 0.0
    for part in parts:
        finite = np.abs(part[np.isfinite(part)])
        if finite.size:
            peak = max(peak, float(finite.max()))
    if peak > _F32_MAX:
        return (f"reaches {peak:.3g}, beyond the {_F32_MAX:.3g} of float32"
                + (", the data type read_nifti returns (it would be read as Inf); rescale it"
                   if reading else " NIfTI data; rescale it"))
    if 0 < peak < _F32_TINY:
        return (f"peaks at {peak:.3g}, below the {_F32_TINY:.3g} smallest normal float32 of "
                + ("the data read_nifti returns (it would be read as zeros or a few bits); "
                   "rescale it" if reading else "NIfTI data (it would be written as zeros or a "
                   "few bits); rescale it; nothing written"))
    return None
