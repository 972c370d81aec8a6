"""LoDoPaB-CT HDF5 layout: reader and writer.

The public LoDoPaB-CT dataset (Leuschner et al., Sci. Data 2021; read by ``dival``) is a folder
of HDF5 files, each with one dataset ``data``:

* ``observation_{part}_{i:03d}.hdf5``: ``(n, 1000, 513)`` float32 post-log sinograms divided
  by ``MU_MAX``: ``-log(N / N0) / MU_MAX`` with ``N0 = 4096`` photons per detector bin and
  zero counts replaced by 0.1;
* ``ground_truth_{part}_{i:03d}.hdf5``: ``(n, 362, 362)`` float32 images ``mu / MU_MAX`` clipped
  to ``[0, 1]``, with ``mu(HU) = MU_WATER + HU (MU_WATER - MU_AIR) / 1000``,
  ``MU_WATER = 20 /m``, ``MU_AIR = 0.02 /m`` and ``MU_MAX = mu(3071 HU) = 81.35858 /m``;

``n = 128`` except in the last file of a part (``train``, ``validation``, ``test``). The image
domain is ``[-0.13, 0.13]^2`` m (pixel 0.7182 mm) and the geometry ODL's
``parallel_beam_geometry``: angles ``(i + 1/2) pi / 1000``, 513 detector bins over
``[-0.13 sqrt 2, 0.13 sqrt 2]`` m. Observations therefore equal the ray transform of the
ground truth with lengths in metres.

Image arrays follow ODL: ``a[ix, iy]`` with ``x`` along axis 0. mrirecon images are
``(rows, cols)`` with columns along ``+x`` and rows along ``-y`` (see
:class:`~mrirecon.operators.ct_geometry.CTGeometry`, whose angle and detector conventions are
ODL's), so ``image = rot90(a)`` and ``a = rot90(image, -1)``; with that,
``ct_operator(geometry)(image)`` reproduces the stored sinogram.

Files written here add, without changing the public layout: a ``hu`` dataset (Hounsfield
units, same layout as ``data``) in ground-truth files, and root attributes ``geometry``
(JSON of the :class:`CTGeometry`), ``mu_max_per_m``, ``mu_water_per_mm``,
``mu_air_per_mm``, ``photons`` and ``min_photon_count``. Files without them are read with the
public dataset's constants, and with its geometry only at its public shape (another file without
``geometry`` is refused); the observation files of a part must say the same
(:mod:`mrirecon.io.lodopab_attrs`).
"""

from __future__ import annotations

import contextlib
import glob
import operator
import os
import re
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.containers import Image, ImageGeometry, Sinogram
from mrirecon.io import lodopab_attrs as _attrs
from mrirecon.io.atomic import atomic_write_together, hdf5_image
from mrirecon.io.errors import (
    CORRUPTION_ERRORS,
    DataFormatError,
    as_format_error,
    hdf5_dataset,
    open_hdf5,
    refuse_nonfinite,
)
from mrirecon.operators.ct_geometry import CTGeometry

# the public dataset's constants and geometry, and the geometry attribute's JSON, live beside the
# rules for each file's attributes (mrirecon.io.lodopab_attrs); they are read from here
from mrirecon.io.lodopab_attrs import (  # noqa: F401
    FAN_KEYS,
    GEOMETRY_KEYS,
    HALF_FOV_MM,
    IMAGE_SHAPE,
    MAX_ANGLE_SPAN,
    MIN_PHOTON_COUNT,
    MU_AIR_PER_M,
    MU_MAX_PER_M,
    MU_MAX_PER_MM,
    MU_WATER_PER_M,
    NUM_ANGLES,
    NUM_DETECTORS,
    PHOTONS,
    geometry_from_json,
    check_min_photon_count,
    geometry_to_json,
    lodopab_geometry,
)

SAMPLES_PER_FILE = 128
_NAME = re.compile(r"^(observation|ground_truth)_(\w+?)_(\d{3})\.hdf5$")


def parse_name(name: str) -> tuple[str, str, int] | None:
    """``(kind, part, number)`` of a LoDoPaB file name (``observation_test_007.hdf5`` ->
    ``("observation", "test", 7)``; ``kind`` ``observation`` or ``ground_truth``), ``None`` for
    another name: the one reading of the layout's names (the pipeline, the training sets and the
    overlap check each had a regex of their own, one of them taking part names the reader
    refused)."""
    m = _NAME.match(name)
    return None if m is None else (m.group(1), m.group(2), int(m.group(3)))
#: The most one cached slab of samples may hold (bytes): a dataset compressed in chunks of many
#: samples is decompressed once per chunk, not once per sample (one gzip chunk spanning a
#: 128-sample file cost 501 ms per sample read, 84 s to read the file)
SLAB_CACHE_BYTES = 1 << 29


def to_lodopab_layout(image: np.ndarray) -> np.ndarray:
    """mrirecon ``(..., rows, cols)`` -> ODL/LoDoPaB ``(..., x, y)`` (``rot90(image, -1)``)."""
    return np.ascontiguousarray(np.rot90(np.asarray(image), -1, axes=(-2, -1)))


def from_lodopab_layout(array: np.ndarray) -> np.ndarray:
    """ODL/LoDoPaB ``(..., x, y)`` -> mrirecon ``(..., rows, cols)`` (``rot90(array)``)."""
    return np.ascontiguousarray(np.rot90(np.asarray(array), 1, axes=(-2, -1)))


def hu_to_attenuation(
    hu, mu_water: float = MU_WATER_PER_M / 1000, mu_air: float = MU_AIR_PER_M / 1000
):
    """Linear attenuation (1/mm) of Hounsfield units: ``mu_w + HU (mu_w - mu_air) / 1000``."""
    return mu_water + np.asarray(hu, dtype=np.float64) * (mu_water - mu_air) / 1000.0


def attenuation_to_hu(
    mu, mu_water: float = MU_WATER_PER_M / 1000, mu_air: float = MU_AIR_PER_M / 1000
):
    """Inverse of :func:`hu_to_attenuation`."""
    return (np.asarray(mu, dtype=np.float64) - mu_water) * 1000.0 / (mu_water - mu_air)


def reference_file_name(observation_name: str) -> str | None:
    """``ground_truth_<part>_NNN.hdf5``, the reference scored with ``observation_<part>_NNN.hdf5``
    (``None`` for any other name)."""
    if not observation_name.startswith("observation_"):
        return None
    return "ground_truth_" + observation_name[len("observation_"):]


def lodopab_file_name(kind: str, part: str, index: int) -> str:
    """``observation_{part}_{index:03d}.hdf5`` or ``ground_truth_{part}_{index:03d}.hdf5``."""
    if kind not in ("observation", "ground_truth"):
        raise ValueError(
            f"lodopab_file_name: kind must be 'observation' or 'ground_truth', got {kind!r}"
        )
    return f"{kind}_{part}_{int(index):03d}.hdf5"


def lodopab_file_splits(samples: int, samples_per_file: int = SAMPLES_PER_FILE) -> list[slice]:
    """The samples of each file :func:`write_lodopab` writes, in file order (LoDoPaB's layout:
    ``samples_per_file`` per file, the last one partial)."""
    if samples_per_file < 1:
        raise ValueError(f"write_lodopab: samples_per_file must be >= 1, got {samples_per_file}")
    return [slice(start, min(start + samples_per_file, samples))
            for start in range(0, samples, samples_per_file)]


@contextlib.contextmanager
def _open(path: Path):
    """``h5py.File(path, "r")`` as a context; an unreadable, truncated or damaged file (also
    when the damage shows only while reading inside the block) is a :class:`DataFormatError`."""
    h5 = open_hdf5(path, "LoDoPaB", " (deleted or moved after its folder was listed?)")
    try:
        with h5:
            yield h5
    except CORRUPTION_ERRORS as err:
        new = as_format_error(path, "data", err)
        if new is err:
            raise
        raise new from err


def write_lodopab(
    out_dir: str | os.PathLike,
    part: str,
    sinograms: np.ndarray,
    attenuation: np.ndarray | None = None,
    *,
    geometry: CTGeometry,
    hu: np.ndarray | None = None,
    photons: float | None = None,
    min_photon_count: float | None = None,
    mu_water: float = MU_WATER_PER_M / 1000,
    mu_air: float = MU_AIR_PER_M / 1000,
    samples_per_file: int = SAMPLES_PER_FILE,
    attrs: dict | None = None,
) -> list[Path]:
    """Write a part of a dataset in the LoDoPaB-CT layout (atomically, file by file). What
    :class:`LoDoPaBFiles` would refuse (angles in degrees; water's attenuation per cm) is refused
    here, by the reader's rules, naming the argument at fault.

    Parameters
    ----------
    out_dir
        Folder; files ``observation_{part}_{i:03d}.hdf5`` / ``ground_truth_{part}_{i:03d}.hdf5``
        (the latter only with ``attenuation``).
    part
        Dataset part name (letters, digits, underscore), e.g. ``"train"``.
    sinograms
        ``(N, views, detectors)`` post-log line integrals ``-log(N / N0)`` (dimensionless,
        lengths in mm times attenuation in 1/mm); stored divided by ``MU_MAX`` (1/m).
    attenuation
        ``(N, H, W)`` linear attenuation (1/mm, mrirecon orientation), stored as ``mu / MU_MAX``
        clipped to ``[0, 1]`` (ODL layout). ``None``: observation files only (no metrics).
    geometry
        The acquisition geometry (stored as the ``geometry`` attribute): angles in radians.
    hu
        ``(N, H, W)`` Hounsfield units (mrirecon orientation), stored as dataset ``hu``.
    photons, min_photon_count, mu_water, mu_air
        Noise model and HU conversion (1/mm: water 0.015-0.08, LoDoPaB 0.02), as attributes.
    samples_per_file
        Samples per file (128 in the public dataset).
    attrs
        Extra root attributes of every file (overriding the above), checked by the reader's rules.

    Returns
    -------
    list of Path
        Observation files then ground-truth files (if any).
    """
    if not re.fullmatch(r"\w+", part):
        raise ValueError(f"write_lodopab: part must be a word (e.g. 'train'), got {part!r}")
    sino = np.asarray(sinograms, dtype=np.float64)
    mu = None if attenuation is None else np.asarray(attenuation, dtype=np.float64)
    n = sino.shape[0]
    if sino.ndim != 3 or sino.shape[1:] != geometry.sinogram_shape:
        raise ValueError(
            f"write_lodopab: sinograms must be (N, {geometry.sinogram_shape[0]}, "
            f"{geometry.sinogram_shape[1]}) for the geometry, got {sino.shape}"
        )
    if mu is not None and mu.shape != (n,) + geometry.image_shape:
        raise ValueError(
            f"write_lodopab: attenuation must be {(n,) + geometry.image_shape}, got {mu.shape}"
        )
    if hu is not None and mu is None:
        raise ValueError("write_lodopab: hu needs attenuation (the ground truth it is stored with)")
    if hu is not None and np.shape(hu) != mu.shape:
        raise ValueError(f"write_lodopab: hu must be {mu.shape}, got {np.shape(hu)}")
    splits = lodopab_file_splits(n, samples_per_file)
    for field, values in (("sinograms", sino), ("attenuation", mu), ("hu", hu)):
        refuse_nonfinite("write_lodopab", f"{out_dir} ({part})", field, values)
    root = {
        "geometry": geometry_to_json(geometry),
        "mu_max_per_m": MU_MAX_PER_M,
        "mu_water_per_mm": float(mu_water),
        "mu_air_per_mm": float(mu_air),
        "layout": "LoDoPaB-CT (ODL x, y axes); mrirecon image = rot90(data)",
    }
    if photons is not None:
        root["photons"] = float(photons)
    if min_photon_count is not None:
        root["min_photon_count"] = float(min_photon_count)
    root.update(attrs or {})
    out = Path(out_dir)
    _attrs.check_as_written(root, out / lodopab_file_name("observation", part, 0), attrs or {})
    out.mkdir(parents=True, exist_ok=True)
    obs_paths, gt_paths = [], []
    for i, sl in enumerate(splits):
        obs = (sino[sl] / MU_MAX_PER_M).astype(np.float32)
        kinds = [("observation", obs, None)]
        if mu is not None:
            gt = to_lodopab_layout(np.clip(mu[sl] / MU_MAX_PER_MM, 0.0, 1.0)).astype(np.float32)
            hu_part = (None if hu is None
                       else to_lodopab_layout(np.asarray(hu)[sl]).astype(np.float32))
            kinds.append(("ground_truth", gt, hu_part))
        pair = [(out / lodopab_file_name(kind, part, i), hdf5_image(_filler(data, extra, root)))
                for kind, data, extra in kinds]
        # an observation and its ground truth are written together or not at all: a full disk
        # left observation_*_000 without its reference (and crashed Python, exit 139)
        atomic_write_together(pair)
        obs_paths.append(pair[0][0])
        gt_paths.extend(p for p, _ in pair[1:])
    return obs_paths + gt_paths


def _same_views(path: Path, shape: tuple, head: Path, head_shape: tuple) -> None:
    """Refuse ``path``'s sinograms of (views, detectors) ``shape`` beside ``head``'s
    ``head_shape``: every file of a part is read with its first file's geometry."""
    if tuple(shape) != tuple(head_shape):
        raise DataFormatError(path, "data", f"(views, detectors) {tuple(shape)} differs from "
                              f"{head.name} {tuple(head_shape)}")


def _filler(data: np.ndarray, hu: np.ndarray | None, attrs: dict):
    """What :func:`write_lodopab` writes into one file: ``data``, ``hu`` and the attributes."""
    def fill(h5: h5py.File) -> None:
        h5.create_dataset("data", data=data)
        if hu is not None:
            h5.create_dataset("hu", data=hu)
        for key, value in attrs.items():
            h5.attrs[key] = value
    return fill


class LoDoPaBFiles:
    """Random access to one part of a dataset in the LoDoPaB-CT layout (public or ours).

    Parameters
    ----------
    root
        Folder holding ``observation_{part}_{i:03d}.hdf5`` (and optionally the matching
        ``ground_truth_...`` files; the public challenge set has none).
    part
        ``"train"``, ``"validation"``, ``"test"`` or any part name written by
        :func:`write_lodopab`.
    only
        Read just the file numbered ``only`` (and its ground truth): what one pipeline input
        needs, so that a damaged or different file beside it cannot fail it.

    Notes
    -----
    Sample ``k`` is found by the per-file counts read from the files (not assumed to be 128).
    Every file is read with the attributes of the first one, and refused where its own differ
    (:func:`~mrirecon.io.lodopab_attrs.check_same_attrs`).
    Observations are returned as stored (``-log(N/N0) / MU_MAX``) by :meth:`observation`;
    :meth:`sinogram` and :meth:`attenuation` return mrirecon containers in physical units.
    """

    def __init__(self, root: str | os.PathLike, part: str, only: int | None = None) -> None:
        self.root = Path(root)
        self.part = part
        # the part is a name, not a pattern ('t*' matched test and train alike)
        named = {f: parse_name(f.name) for f in
                 self.root.glob(f"observation_{glob.escape(part)}_[0-9][0-9][0-9].hdf5")}
        # a name the layout does not read ("a-b" as a part) is no file of the part (was: an
        # AttributeError on its number); the numbers come from the same reading
        files = sorted(f for f, n in named.items() if n is not None and n[1] == part
                       and (only is None or n[2] == int(only)))
        if not files:
            raise FileNotFoundError(
                f"LoDoPaBFiles: no observation_{part}_###.hdf5 files in {self.root}"
            )
        # any numbers: one file copied out of a part (observation_test_005.hdf5) or a part
        # with a file missing reads like the rest (they were refused, every file of the part)
        self.file_numbers = [named[f][2] for f in files]
        self.observation_files = files
        gts = [self.root / lodopab_file_name("ground_truth", part, i) for i in self.file_numbers]
        #: per file: its ground truth, or ``None`` where it is missing
        self.ground_truth_paths: list[Path | None] = [p if p.exists() else None for p in gts]
        self.counts, attrs = [], []
        for path in files:
            with _open(path) as h5:
                data = self._data(h5, path)
                if data.ndim != 3 or min(data.shape) < 1:
                    raise DataFormatError(
                        path, "data", f"expected (n, views, detectors), got shape {data.shape}"
                    )
                if data.dtype.kind != "f":  # post-log line integrals: integers are not a scaling
                    raise DataFormatError(path, "data", f"expected floating-point post-log "
                                          f"values, got {data.dtype}")
                if path != files[0]:
                    _same_views(path, tuple(data.shape[1:]), files[0], self.sinogram_shape)
                self.counts.append(data.shape[0])
                if path == files[0]:
                    self.sinogram_shape = tuple(data.shape[1:])
                attrs.append(_attrs.root_attrs(h5, path))
        #: the root attributes of the first observation file, which every file is read with
        self.attrs = attrs[0]
        self._starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.geometry = self._geometry()
        _attrs.check_units(self.attrs, files[0])
        for path, own in zip(files[1:], attrs[1:]):  # each file of the part says the same
            _attrs.check_same_attrs(files[0], self.attrs, self.geometry, path, own)
        #: per file: the scale of its ground truth's stored values (1/m), its own attribute
        self._gt_mu_max: list[float | None] = []
        for gt, obs, n in zip(self.ground_truth_paths, files, self.counts):
            if gt is None:
                self._gt_mu_max.append(None)
                continue
            with _open(gt) as h5:
                data = self._data(h5, gt)
                want = (n, *self.geometry.image_shape[::-1])  # ODL (x, y) layout
                if tuple(data.shape) != want or data.dtype.kind != "f":
                    raise DataFormatError(gt, "data", f"expected {want} floating-point images "
                                          f"(one per sinogram of {obs.name}, on its geometry), "
                                          f"got {data.dtype} {data.shape}")
                # a ground truth stored / 2 with mu_max_per_m 162.7 was read at the
                # observation's scale: the reference off by 2x, 12.8 instead of 25.2 dB, no word
                self._gt_mu_max.append(_attrs.scale_attr(dict(h5.attrs), gt, self.mu_max_per_m,
                                                         self.mu_water))
        self._slabs: dict = {}  # decompressed chunks of samples (see _read)

    @staticmethod
    def _data(h5: h5py.File, path: Path) -> h5py.Dataset:
        return hdf5_dataset(h5, path, "data")

    def _geometry(self) -> CTGeometry:
        geometry = _attrs.stored_geometry(self.attrs, self.observation_files[0])
        if geometry is None:  # LoDoPaB's, and only at its public shape
            shape = None
            first = next((p for p in self.ground_truth_paths if p is not None), None)
            if first is not None:
                with _open(first) as h5:
                    # stored in the ODL (x, y) layout: the image is (rows, cols) = (y, x)
                    shape = tuple(self._data(h5, first).shape[1:])[::-1]
            geometry = _attrs.public_geometry(self.observation_files[0], self.sinogram_shape,
                                              shape, first)
        if geometry.sinogram_shape != self.sinogram_shape:
            raise DataFormatError(
                self.observation_files[0],
                "data",
                f"(views, detectors) {self.sinogram_shape} does not match the geometry "
                f"{geometry.sinogram_shape}",
            )
        return geometry

    def check_joins(self, alone: LoDoPaBFiles) -> None:
        """Refuse the observation file that ``alone`` (a reader of one file, ``only=N``) read
        where one reader of this part with it would refuse it: another (views, detectors),
        geometry, scale or dose than this reader's first file
        (:func:`~mrirecon.io.lodopab_attrs.check_same_attrs`), or, without a stored geometry,
        ground-truth images of another size. ``mrirecon bench`` reads each file alone (one that
        cannot be read is skipped, not the whole part) and joins them by these rules."""
        path, head = alone.observation_files[0], self.observation_files[0]
        _same_views(path, alone.sinogram_shape, head, self.sinogram_shape)
        _attrs.check_same_attrs(head, self.attrs, self.geometry, path, alone.attrs)
        truth = alone.ground_truth_paths[0]
        if truth is not None and alone.geometry.image_shape != self.geometry.image_shape:
            n, want = alone.counts[0], self.geometry.image_shape[::-1]  # ODL (x, y) layout
            raise DataFormatError(truth, "data", f"expected {(n, *want)} floating-point images "
                                  f"(one per sinogram of {path.name}, on the geometry of "
                                  f"{head.name}), got {(n, *alone.geometry.image_shape[::-1])}")

    def check_joins_attrs(self, path: Path) -> None:
        """:meth:`check_joins`' attribute rule for an observation file that cannot be read alone
        (its own attributes refused without a geometry of its own): another geometry, scale or
        dose is refused as this part's reader refuses it; a file that cannot even be opened
        passes (its reader's error says why)."""
        try:
            with _open(path) as h5:
                own = _attrs.root_attrs(h5, path)
        except (ValueError, OSError):
            return
        _attrs.check_same_attrs(self.observation_files[0], self.attrs, self.geometry, path, own)

    def __getstate__(self) -> dict:  # pickled (worker processes): without the cached samples
        return {**self.__dict__, "_slabs": {}}

    @property
    def photons(self) -> float:
        """Incident photons per bin as recorded (informational: the data are post-log)."""
        return _attrs.photons(self.attrs, self.observation_files[0])

    @property
    def data_photons(self) -> float | None:
        """Photons per bin of the Poisson noise the observations already hold: the ``photons``
        attribute; the public dataset's 4096 for files in the public layout (no ``geometry``
        attribute); ``None`` for files written here without ``photons`` (noise-free)."""
        return _attrs.data_photons(self.attrs, self.observation_files[0])

    @property
    def min_photon_count(self) -> float:
        """The count floor of the observations' noise (zero detections stored as this many
        photons): the ``min_photon_count`` attribute, LoDoPaB's 0.1 without it, checked by
        :func:`~mrirecon.io.lodopab_attrs.check_min_photon_count`."""
        return check_min_photon_count(self.attrs, self.observation_files[0])

    @property
    def mu_max_per_m(self) -> float:
        """The scale of the stored values (1/m): observations are line integrals / MU_MAX and
        ground truths mu / MU_MAX; the ``mu_max_per_m`` attribute, LoDoPaB's without it."""
        return _attrs.number_attr(self.attrs, "mu_max_per_m", MU_MAX_PER_M,
                                  self.observation_files[0])

    @property
    def mu_water(self) -> float:
        """Water attenuation (1/mm) of the HU conversion."""
        return _attrs.mu_water(self.attrs, self.observation_files[0])

    @property
    def mu_air(self) -> float:
        return _attrs.mu_air(self.attrs, self.observation_files[0])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        truths = sum(p is not None for p in self.ground_truth_paths)
        return (f"LoDoPaBFiles({str(self.root)!r}, part={self.part!r}, {len(self.counts)} files "
                f"({truths} with ground truth), {len(self)} samples, {self.geometry!r})")

    @property
    def file_starts(self) -> list[int]:
        """The sample index of each observation file's first image (``[0, 128, 256, ...]``)."""
        return [int(v) for v in self._starts[:-1]]

    def locate(self, index: int) -> tuple[int, int]:
        """``(file, image)`` of sample ``index``: which observation file (0-based, in
        :attr:`observation_files` order) and which image in it; a negative index counts from
        the end; an index out of range or not an integer is refused naming the part."""
        try:  # a float (1.0 from np.linspace) failed inside h5py, reported as a corrupt file
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"LoDoPaBFiles({self.root}, {self.part!r}): a sample index must be an "
                            f"integer, got {index!r}") from None
        n = len(self)
        if not -n <= index < n:
            raise IndexError(
                f"LoDoPaBFiles({self.root}, {self.part!r}): index {index} out of range "
                f"for {n} samples"
            )
        index %= n
        f = int(np.searchsorted(self._starts, index, side="right") - 1)
        return f, index - int(self._starts[f])

    def _read(self, files: list[Path], index: int, key: str = "data") -> np.ndarray:
        f, k = self.locate(index)
        with _open(files[f]) as h5:
            ds = hdf5_dataset(h5, files[f], key)
            if ds.ndim == 3 and float(ds.shape[1]) * ds.shape[2] * ds.dtype.itemsize > 1 << 33:
                raise DataFormatError(files[f], key, f"one sample of shape {ds.shape[1:]} exceeds "
                                      "8 GiB; the shape is corrupt")
            if ds.ndim != 3 or not k < ds.shape[0] or ds.dtype.kind not in "fiu":
                raise DataFormatError(files[f], key, f"expected (n > {k}, H, W) real numbers, "
                                      f"got {ds.dtype} {ds.shape}")
            try:
                out = self._sample(files is self.observation_files, files[f], ds, k)
            except (OSError, RuntimeError, ValueError) as err:
                raise DataFormatError(files[f], f"{key}[{k}]", f"unreadable ({err})") from None
        if not np.isfinite(out).all():
            bad = int(out.size - np.isfinite(out).sum())
            raise DataFormatError(files[f], f"{key}[{k}]", f"{bad} NaN or Inf values")
        return out

    def _sample(self, observed: bool, path: Path, ds: h5py.Dataset, k: int) -> np.ndarray:
        """``ds[k]``. Of a dataset compressed in chunks of several samples, the samples of
        ``k``'s chunk are decompressed once and kept (one slab per kind of dataset, at most
        :data:`SLAB_CACHE_BYTES`) for the next reads of the same file."""
        chunks = ds.chunks
        if not chunks or chunks[0] < 2 or ds.id.get_create_plist().get_nfilters() == 0:
            return np.asarray(ds[k])
        start = k - k % chunks[0]
        stop = min(start + chunks[0], ds.shape[0])
        if (stop - start) * ds.shape[1] * ds.shape[2] * ds.dtype.itemsize > SLAB_CACHE_BYTES:
            return np.asarray(ds[k])
        st = os.stat(path)  # a file rewritten since is read again
        tag = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, start)
        slot = (observed, ds.name)
        entry = self._slabs.get(slot)
        if entry is None or entry[0] != tag:  # (kept in a local: another thread may replace it)
            entry = None
            self._slabs.pop(slot, None)  # the old slab freed before the next one is read
            entry = (tag, np.asarray(ds[start:stop]))
            self._slabs[slot] = entry
        return entry[1][k - start].copy()

    def observation(self, index: int) -> np.ndarray:
        """Stored observation ``(views, detectors)`` float32 (``-log(N/N0) / MU_MAX``)."""
        return self._read(self.observation_files, index)

    def ground_truth(self, index: int) -> np.ndarray:
        """Stored ground truth ``(x, y)`` float32 in ``[0, 1]`` (ODL layout)."""
        f, _ = self.locate(index)
        if self.ground_truth_paths[f] is None:
            raise FileNotFoundError(
                f"LoDoPaBFiles: {self.observation_files[f].name} in {self.root} has no "
                f"{lodopab_file_name('ground_truth', self.part, self.file_numbers[f])}"
            )
        return self._read(self.ground_truth_paths, index)

    @property
    def ground_truth_files(self) -> list[Path] | None:
        """Every observation file's ground truth, or ``None`` when one is missing (supervised
        training and the benchmark need them all)."""
        paths = self.ground_truth_paths
        return None if any(p is None for p in paths) else list(paths)

    def has_ground_truth(self, file: int) -> bool:
        """Whether observation file ``file`` (its position in :attr:`observation_files`) has its
        ground truth (per file: a part missing one reference still scores the others)."""
        return self.ground_truth_paths[file] is not None

    def sinogram(self, index: int) -> Sinogram:
        """Sample ``index`` as a :class:`Sinogram` of line integrals ``-log(N/N0)``
        ``(1, views, detectors)``, float32."""
        data = torch.from_numpy(self.observation(index).astype(np.float64) * self.mu_max_per_m)
        return Sinogram(
            data=data[None].float(),
            geometry=self.geometry,
            photons=self.photons,
            source=str(self.observation_files[self.locate(index)[0]]),
        )

    def attenuation(self, index: int) -> Image:
        """Ground truth ``index`` as attenuation (1/mm), mrirecon orientation, ``(1, H, W)``."""
        mu = (from_lodopab_layout(self.ground_truth(index)).astype(np.float64)
              * (self._gt_mu_max[self.locate(index)[0]] / 1000))
        p = self.geometry.pixel_size
        return Image(
            data=torch.from_numpy(mu[None]).float(),
            geometry=ImageGeometry(spacing=(p, p, p), placed=False),
            kind="attenuation",
            modality="CT",
            source=str(self.ground_truth_paths[self.locate(index)[0]]),
        )

    def hu(self, index: int) -> np.ndarray:
        """Hounsfield units ``(H, W)`` (mrirecon orientation): the stored ``hu`` dataset when
        present, else converted from the (clipped) ground truth."""
        f, _ = self.locate(index)
        if self.ground_truth_paths[f] is not None:
            with _open(self.ground_truth_paths[f]) as h5:
                if "hu" in h5:
                    return from_lodopab_layout(self._read(self.ground_truth_paths, index, "hu"))
        mu = self.attenuation(index).data[0].double().numpy()
        return attenuation_to_hu(mu, self.mu_water, self.mu_air).astype(np.float32)
