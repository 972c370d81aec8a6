"""Non-Cartesian ISMRMRD raw data: writer, and the reader branch of :func:`read_ismrmrd`.

Layout (what scanners and the Gadgetron export): one acquisition per readout (radial spoke or
spiral interleave) and slice; ``head.trajectory_dimensions`` is 2 (``kx, ky``) or 3
(``kx, ky, density weight``), and ``traj`` holds ``(samples, trajectory_dimensions)`` float32.
Coordinates are normalised k-space, ``[-0.5, 0.5)`` (the convention of
:mod:`mrirecon.functional.nufft`); ``kx`` runs along the readout direction ``read_dir``, which
is the image's row axis ``H`` (the Cartesian reader puts the readout on ``H`` too), ``ky`` along
``phase_dir``. ``idx.kspace_encode_step_1`` numbers the readouts, ``idx.slice`` the slices;
slices are sorted by position along the slice normal as in the Cartesian reader.

Trajectory units are decided from the extent: with ``N`` the encoded matrix along an axis,
the candidates have the edges ``e = 0.5`` (normalised), ``e = pi`` (radians per sample,
converted by ``1 / 2 pi``) and ``e = N / 2`` (cycles/FOV, converted by ``1 / N``). A unit is
accepted when the largest ``|k|`` reaches at least half its edge on some axis and exceeds the
edge on no axis by more than half a grid cell (``max |k_axis| <= e (1 + 1 / N_axis)``: a
spiral's design overshoot of a few tenths of a percent, or a sample rounded across the edge;
such samples are moved onto the edge). Exactly one unit must fit, otherwise the file is refused
naming the extent found. The bounds keep the candidates apart: normalised ends at ``0.5 (1 +
1/N)`` (<= 0.53 for N >= 16) where radians start at ``pi / 2`` (1.57); radians end at ``pi (1
+ 1/N)`` below where cycles/FOV start (``N / 4``) for every ``N >= 14``; for smaller matrices an
extent that fits both is refused as ambiguous. A unit reached below 0.8 of its edge is accepted
with a note (``header.extra["trajectory_note"]``): the image then has a coarser resolution than
the header's matrix.

Per readout, ``discard_pre`` / ``discard_post`` samples (and their trajectory and weights) are
dropped, as the Cartesian reader drops them; so are samples at the start or end of every
readout that are zero in every slice, coil and readout (not measured, written as zeros), with a
note. (Readouts that hold no sample at all, lost spokes, are dropped per slice by the pipeline:
``pipeline.checks_mri.lost_readouts``.) A readout acquired several times in one slice
(``idx.average``, or stored twice) is averaged, as the Cartesian reader averages repeated lines;
its copies must share the trajectory. Density weights stored in the file (a third trajectory
dimension) keep their shape but, when the intensity they give a gridded image
(:func:`~mrirecon.functional.density.gridding_gain`, set by the samples near the k-space
centre) is not within 2x of what :func:`pipe_menon_density`'s give (the library's convention,
``H W`` times the k-space area a sample stands for; the analytic radial ramp grids 1.2 %
brighter), are scaled to it, with a note: ISMRMRD fixes no scale, and a constant factor would
otherwise change the gridded image's intensity, the data scale classical methods divide by, and
so the meaning of ``lam`` (weights x 1000 gave TV 16.1 dB instead of 32.1). (The weights' sums
were compared before: Pipe-Menon's weights saturate in the sparse periphery of undersampled
radial spokes, and the correct ramp of 40 spokes at 128 x 128, which sums to 2.6x theirs, was
multiplied by 0.39: ``mri_radial_cs`` 39.9 / 38.8 dB instead of 42.0 / 40.8 dB.) Weights
of spokes through the centre that are not smallest at the sample where the trajectory passes
the centre (:func:`weights_off_centre`: computed for another trajectory, e.g. a ramp by
sample index on a trajectory that carries a measured 1-sample shift, 36.5 dB instead of
39.6) are replaced by Pipe-Menon's for the trajectory, with a note. 3-D data
(``encodedSpace`` ``z > 1``: a 3-D trajectory ``kx, ky, kz``, or stack-of-stars partitions in
``kspace_encode_step_2``) are refused, as are negative, non-finite or all-zero density weights,
and, before anything is read, an ``encodedSpace`` matrix beyond what the readouts' samples
resolve or the memory holds (:mod:`~mrirecon.io.noncartesian_limits`).

``center_sample`` is the sample nearest the k-space centre (the writer sets it so: ``n / 2``
for a full spoke, earlier for a partial echo, 0 for spirals and centre-out spokes). The reader
keeps it (``header.extra["center_sample"]``) and, for spokes through the centre whose two sides
differ (a partial echo), records ``echo_samples = [before, after]`` with a note; the trajectory
decides where the centre is (:func:`echo_centre`).

The reader returns ``KSpace(data=(slices, coils, readouts, samples), trajectory=(readouts,
samples, 2), density=(readouts, samples))``; without weights in the file the density is
computed (Pipe-Menon) for the trajectory. Samples and trajectories are read in chunks of rows
(:class:`~mrirecon.io.ismrmrd_stream.Rows`; ``table[()]`` held 2.3-3.8x the samples): the whole
read fills the volume as it checks (peak about the volume and two chunks), and
:func:`~mrirecon.io.ismrmrd_stream.open_ismrmrd` checks every row once when the file is opened,
keeping the trajectory, repeat counts and which samples were measured, then reads one slice's
acquisitions when it is asked for, bit-identical to that slice of the whole read.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.containers import Header, KSpace
from mrirecon.io.atomic import atomic_hdf5
from mrirecon.io.errors import refuse_nonfinite
from mrirecon.io.ismrmrd_header import header_to_xml
from mrirecon.io.noncartesian_limits import check_noncartesian_matrix
from mrirecon.io.partial_echo import is_partial_echo

# the ISMRMRD acquisition header, field by field (ISMRMRD specification, version 1)
_IDX = np.dtype([
    ("kspace_encode_step_1", "<u2"), ("kspace_encode_step_2", "<u2"), ("average", "<u2"),
    ("slice", "<u2"), ("contrast", "<u2"), ("phase", "<u2"), ("repetition", "<u2"),
    ("set", "<u2"), ("segment", "<u2"), ("user", "<u2", (8,)),
])
HEAD = np.dtype([
    ("version", "<u2"), ("flags", "<u8"), ("measurement_uid", "<u4"), ("scan_counter", "<u4"),
    ("acquisition_time_stamp", "<u4"), ("physiology_time_stamp", "<u4", (3,)),
    ("number_of_samples", "<u2"), ("available_channels", "<u2"), ("active_channels", "<u2"),
    ("channel_mask", "<u8", (16,)), ("discard_pre", "<u2"), ("discard_post", "<u2"),
    ("center_sample", "<u2"), ("encoding_space_ref", "<u2"), ("trajectory_dimensions", "<u2"),
    ("sample_time_us", "<f4"), ("position", "<f4", (3,)), ("read_dir", "<f4", (3,)),
    ("phase_dir", "<f4", (3,)), ("slice_dir", "<f4", (3,)),
    ("patient_table_position", "<f4", (3,)), ("idx", _IDX), ("user_int", "<i4", (8,)),
    ("user_float", "<f4", (8,)),
])
ACQUISITION = np.dtype([("head", HEAD), ("traj", h5py.vlen_dtype(np.float32)),
                        ("data", h5py.vlen_dtype(np.float32))])


def write_ismrmrd_noncartesian(
    path: str | os.PathLike,
    kspace: torch.Tensor,
    trajectory: torch.Tensor,
    header: Header,
    density: torch.Tensor | None = None,
    *,
    dwell_time_us: float = 4.0,
    reference: torch.Tensor | None = None,
) -> Path:
    """Write non-Cartesian multi-coil data as an ISMRMRD file, atomically.

    Parameters
    ----------
    path
        Target ``.h5``.
    kspace
        ``(slices, coils, readouts, samples)`` complex.
    trajectory
        ``(readouts, samples, 2)`` normalised coordinates (``[..., 0]`` along the readout).
    header
        Header of the image grid (``encoded_matrix``, FOV, geometry); ``extra["trajectory"]``
        names the ISMRMRD trajectory (``radial``, ``spiral``; ``other`` is written when it is
        missing; ``cartesian`` / ``epi`` are refused: the reader reads a Cartesian header's
        ``traj`` as Cartesian lines, :func:`~mrirecon.io.ismrmrd_encoding.traj_ignored`).
    density
        Optional ``(readouts, samples)`` weights, stored as the third trajectory dimension.
    dwell_time_us
        Time between samples of a readout in microseconds, written as every acquisition's
        ``sample_time_us`` (default 4.0). Recorded only: the reader does not use it for
        imaging data (it scales noise scans to the imaging bandwidth, and none are written here).
    reference
        Optional ``(slices, rows, cols)`` magnitude image of the object (the recon matrix),
        stored beside the ISMRMRD group as the root dataset
        :data:`~mrirecon.io.ismrmrd_stream.REFERENCE` (fastMRI's name;
        ISMRMRD readers ignore it): what ``mrirecon run`` scores the reconstructions against.

    Each readout's ``center_sample`` is its sample nearest the k-space centre (a partial echo:
    the samples before the echo that were never acquired are absent from ``trajectory``).
    """
    kind = str(header.extra.get("trajectory", "")).strip().lower()
    if kind in ("cartesian", "epi"):
        raise ValueError(f"write_ismrmrd_noncartesian: header.extra['trajectory'] is {kind!r}; "
                         "name the non-Cartesian trajectory (radial, spiral, goldenangle, "
                         "other): a Cartesian header's traj is read as Cartesian lines")
    if not kind:  # the header's trajectory element would say cartesian
        header = header.with_(extra={**header.extra, "trajectory": "other"})
    kspace = torch.as_tensor(kspace)
    slices, coils, readouts, samples = kspace.shape
    if samples > 65535:  # head.number_of_samples: "Python integer 67024 out of bounds for uint16"
        raise ValueError(f"write_ismrmrd_noncartesian: {samples} samples per readout; ISMRMRD "
                         "stores number_of_samples as a 16-bit count (at most 65535): split "
                         "each readout into more interleaves or spokes")
    if tuple(trajectory.shape) != (readouts, samples, 2):
        raise ValueError(f"write_ismrmrd_noncartesian: trajectory {tuple(trajectory.shape)} does "
                         f"not match k-space (readouts, samples) = {(readouts, samples)}")
    traj = trajectory.detach().cpu().numpy().astype(np.float32)
    if density is not None:
        traj = np.concatenate([traj, density.detach().cpu().numpy().astype(np.float32)[..., None]], -1)
    data = kspace.detach().cpu().to(torch.complex64).numpy()
    ref = None if reference is None else torch.as_tensor(reference).detach().cpu().numpy()
    if ref is not None and (ref.ndim != 3 or ref.shape[0] != slices or np.iscomplexobj(ref)):
        raise ValueError(f"write_ismrmrd_noncartesian: reference must be a real (slices, rows, "
                         f"cols) image with {slices} slices, got {ref.dtype} {ref.shape}")
    for field, values in (("kspace", data), ("trajectory", traj[..., :2]),
                          ("density", traj[..., 2:]),
                          ("reference", ref if ref is not None else np.zeros(0))):
        refuse_nonfinite("write_ismrmrd_noncartesian", path, field, values)
    dims = traj.shape[-1]
    # the sample nearest the k-space centre: n // 2 for a full spoke, earlier for a partial
    # echo (the samples before the echo never acquired), 0 for a spiral or centre-out spoke
    centre = np.argmin(np.linalg.norm(traj[..., :2], axis=-1), axis=-1)
    g = header.geometry
    col, row = np.asarray(g.orientation[:3], float), np.asarray(g.orientation[3:], float)
    records = np.zeros(slices * readouts, dtype=ACQUISITION)
    for s in range(slices):
        pos = np.asarray(g.slice_position(s), float) + header.fov_centre[0] * g.spacing[1] * row \
            + header.fov_centre[1] * g.spacing[2] * col  # as acquisition_geometry reads it back
        for r in range(readouts):
            rec = records[s * readouts + r]
            head = rec["head"]
            head["version"] = 1
            head["scan_counter"] = s * readouts + r
            head["number_of_samples"] = samples
            head["available_channels"] = head["active_channels"] = coils
            head["center_sample"] = centre[r]
            head["trajectory_dimensions"] = dims
            head["sample_time_us"] = dwell_time_us
            head["position"] = pos
            head["read_dir"], head["phase_dir"] = row, col
            head["slice_dir"] = np.cross(row, col)
            head["idx"]["kspace_encode_step_1"] = r
            head["idx"]["slice"] = s
            if r == readouts - 1:
                head["flags"] = np.uint64(1) << np.uint64(7)  # last in slice
            records[s * readouts + r] = (head, traj[r].reshape(-1),
                                         np.ascontiguousarray(data[s, :, r]).view(np.float32).reshape(-1))
    # the counters the acquisitions carry (were the Cartesian columns': e1 0..30 for 33 spokes)
    xml = header_to_xml(header, {"kspace_encoding_step_1": (0, readouts - 1, 0),
                                 "slice": (0, slices - 1, 0)})
    with atomic_hdf5(path) as h5:
        grp = h5.create_group("dataset")
        grp.create_dataset("xml", data=np.array([xml.encode()], dtype=h5py.string_dtype("utf-8")))
        grp.create_dataset("data", data=records, maxshape=(None,), chunks=True)
        if ref is not None:
            from mrirecon.io.ismrmrd_stream import REFERENCE

            h5.create_dataset(REFERENCE, data=ref.astype(np.float32), chunks=(1, *ref.shape[1:]))
    return Path(path)



#: A trajectory's largest |k| must reach at least this fraction of its unit's edge (0.5
#: normalised, pi radians, N / 2 cycles/FOV) for the unit to be accepted: the encoded matrix is
#: the trajectory's resolution (N = 2 k_max FOV), so a real trajectory reaches its edge, and at
#: this bound the three candidates cannot be confused (see the module docstring).
UNIT_LOW = 0.5
#: Below this fraction of the edge the image has a coarser resolution than the header's matrix
#: (a 0.8 N matrix): accepted, with a note.
UNIT_NOTE = 0.8


def trajectory_unit(peak: np.ndarray, matrix: tuple[int, int]) -> tuple[str, np.ndarray] | None:
    """The unit of a trajectory whose largest ``|kx|, |ky|`` are ``peak``, and the per-axis
    edges of that unit (divide by ``2 * edge`` to normalise); ``None`` when no unit or more than
    one fits (see the module docstring for the rule)."""
    n = np.asarray(matrix, float)
    fits = {}
    for unit, edge in (("normalised", np.full(2, 0.5)), ("radians", np.full(2, np.pi)),
                       ("cycles/FOV", n / 2)):
        frac = peak / edge
        if frac.max() >= UNIT_LOW and (frac <= 1 + 1 / n).all():
            fits[unit] = edge
    distinct = {tuple(e) for e in fits.values()}
    if len(distinct) != 1:
        return None
    unit = next(iter(fits))
    return unit, fits[unit]


def symmetric_length(before: int, after: int) -> int:
    """Samples of the symmetric readout a partial echo was cut from: a full spoke of ``n``
    samples has ``n / 2`` before its centre sample and ``n / 2 - 1`` after it."""
    return 2 * max(before, after + 1)


def echo_centre(coords: np.ndarray, centre: int, matrix: tuple[int, int], first: int) -> dict:
    """``header.extra`` entries for the readouts' echo: ``center_sample`` (the file's, after
    ``discard_pre``) and, for readouts through the k-space centre whose samples before and after
    it differ (a partial echo, :func:`~mrirecon.io.partial_echo.is_partial_echo`: ``max(2,
    5 %)`` or more of a symmetric readout never sampled, the Cartesian reader's rule),
    ``echo_samples`` ``[before, after]`` and a ``partial_echo_note``. The trajectory
    decides (it is what the operator uses): a ``center_sample`` more than a sample away from the
    sample nearest the centre gets a ``center_sample_note`` (0, which writers leave when they do
    not set it, gets none). Spirals and centre-out spokes (centre at sample 0) have no partial
    echo."""
    samples = coords.shape[1]
    radius = np.linalg.norm(coords * np.asarray(matrix, float), axis=-1)  # in grid cells
    nearest = np.argmin(radius, axis=-1)
    through = radius[np.arange(len(radius)), nearest] <= 0.5  # readouts that pass the centre
    out = {"center_sample": int(centre)}
    if not through.all():
        return out
    found = int(np.median(nearest))
    if centre > 0 and abs(found - centre) > 1:
        out["center_sample_note"] = (
            f"data[{first}].head.center_sample is {centre} (after discard_pre), but the trajectory "
            f"passes the k-space centre at sample {found} of {samples}: the trajectory is used")
    before, after = found, samples - 1 - found
    full = symmetric_length(before, after)
    missing = full - samples
    if 0 < min(before, after) and is_partial_echo(missing, full):
        out["echo_samples"] = [before, after]
        out["partial_echo_note"] = (
            f"partial echo: the readouts pass the k-space centre at sample {found} of {samples} "
            f"({before} before, {after} after; {missing} of a symmetric {full}-sample "
            f"readout, {missing / full:.0%}, never sampled)")
    return out


#: Weights at a spoke's centre sample above this many times the spoke's smallest weight (in
#: most spokes) belong to another trajectory: density compensation weighs the k-space centre
#: least (the ramp's and Pipe-Menon's centre sample is each spoke's smallest weight).
CENTRE_WEIGHT_RATIO = 2.0


def weights_off_centre(density: np.ndarray, coords: np.ndarray, matrix: tuple[int, int]) -> tuple[int, int] | None:
    """``(weights' centre sample, trajectory's centre sample)`` (medians over the readouts) when
    the density weights ``(readouts, samples)`` of spokes through the k-space centre
    (``coords`` ``(readouts, samples, 2)`` normalised) are not smallest where the trajectory
    passes the centre: the weight of the sample nearest the centre exceeds
    :data:`CENTRE_WEIGHT_RATIO` times the spoke's smallest weight in most spokes (weights
    computed for another trajectory, e.g. the nominal one of a trajectory that carries a
    measured gradient delay). ``None`` when they agree, or for readouts that do not pass the
    centre between their ends (spirals, centre-out spokes)."""
    radius = np.linalg.norm(coords * np.asarray(matrix, float), axis=-1)
    nearest = np.argmin(radius, axis=-1)
    rows = np.arange(len(radius))
    if not ((radius[rows, nearest] <= 0.5) & (nearest > 0) & (nearest < radius.shape[1] - 1)).all():
        return None
    w = density.astype(np.float64)
    off = w[rows, nearest] > CENTRE_WEIGHT_RATIO * w.min(axis=-1)
    if off.mean() <= 0.5:
        return None
    return int(np.median(np.argmin(w, axis=-1))), int(np.median(nearest))


def _zero_samples(nonzero: np.ndarray, header: Header, pre: int, stored: int):
    """The samples to keep, ``(a, b, header)``: drop those at the start or end of every readout
    that are zero in every slice, coil and readout (``nonzero`` ``(samples,)``: whether any
    acquisition holds a non-zero sample there), as ``discard_pre`` / ``discard_post`` would, with a
    note (``header.extra["zero_samples_note"]``): not measured (a readout cut short, its end
    written as zeros), and taken as measured zeros they gave ``mri_radial_cs`` 22.7 dB for 32 of
    128 samples; dropped, the readouts are a partial echo (:func:`echo_centre`). All-zero data,
    or fewer than 2 samples left, are kept as they are."""
    held = np.flatnonzero(nonzero)
    n = nonzero.size
    if not held.size or (held[0] == 0 and held[-1] == n - 1) or held[-1] - held[0] < 1:
        return 0, n, header
    a, b = int(held[0]), int(held[-1]) + 1
    runs = [f"{pre}..{pre + a - 1}"] if a else []
    runs += [f"{pre + b}..{pre + n - 1}"] if b < n else []
    note = (f"readout samples {' and '.join(runs)} (of {stored}) are zero in every readout, coil "
            "and slice: not measured? they were dropped as discard_pre / discard_post drop "
            "samples (as measured zeros they pull the image towards zero k-space)")
    return a, b, header.with_(extra={**header.extra, "zero_samples_note": note})


def _fill(rows, acquisitions: np.ndarray, heads: np.ndarray, shape: tuple[int, int, int],
          slot: np.ndarray, data: np.ndarray | None, traj: np.ndarray, seen: np.ndarray,
          count: np.ndarray, energy: np.ndarray, nonzero: np.ndarray, fail) -> None:
    """Read ``acquisitions`` (ascending) from ``rows`` (:class:`~mrirecon.io.ismrmrd_stream.Rows`,
    chunks of rows) and check each: channels, trajectory dimensions, sample counts, NaN / Inf
    samples and trajectory, negative weights, and a trajectory equal to the first acquisition's
    of that readout (``seen``; the first one's is kept in ``traj``). Each readout's samples are
    added to ``data[slot[slice], :, readout]`` (``None``: the checks alone), its repeats counted
    in ``count[slice, readout]``, its ``|x|^2`` summed in ``energy``, and ``nonzero`` marks the
    samples any acquisition holds non-zero. ``shape``: ``(channels, dims, samples)``."""
    channels, dims, samples = shape
    idx = heads["idx"]
    for a, record in rows.iter(acquisitions):
        head = heads[a]
        r, s = int(idx["kspace_encode_step_1"][a]), int(idx["slice"][a])
        for name, want in (("active_channels", channels), ("trajectory_dimensions", dims)):
            if int(head[name]) != want:
                raise fail(f"data[{a}].head.{name}", f"expected {want} like the first readout, "
                                                     f"got {int(head[name])}")
        n, p, q = int(head["number_of_samples"]), int(head["discard_pre"]), int(head["discard_post"])
        if n - p - q != samples:
            raise fail(f"data[{a}].head.number_of_samples",
                       f"expected {samples} samples (after discard_pre / discard_post) like the "
                       f"first readout, got {n} - {p} - {q} = {n - p - q}")
        raw = np.asarray(record["data"], np.float32)
        if raw.size != 2 * channels * n:
            raise fail(f"data[{a}].data", f"expected {2 * channels * n} floats, got {raw.size}")
        t = np.asarray(record["traj"], np.float32)
        if t.size != n * dims:
            raise fail(f"data[{a}].traj", f"expected {n * dims} floats, got {t.size}")
        t = t.reshape(n, dims)[p: n - q]
        x = raw.view(np.complex64).reshape(channels, n)[:, p: n - q]
        if not np.isfinite(t).all():
            raise fail(f"data[{a}].traj", f"{int((~np.isfinite(t)).sum())} NaN or Inf values")
        if not np.isfinite(x).all():
            raise fail(f"data[{a}].data", f"{int((~np.isfinite(x)).sum())} NaN or Inf samples")
        if dims == 3 and (t[:, 2] < 0).any():
            raise fail(f"data[{a}].traj", f"negative density weights (third trajectory dimension, "
                                          f"down to {float(t[:, 2].min()):.3g}); if it is kz: 3-D "
                                          "trajectories are not supported")
        if seen[r]:
            if not np.allclose(traj[r], t, atol=1e-6):
                raise fail(f"data[{a}].traj", f"readout {r} has a different trajectory in slice "
                                              f"{s}; only one trajectory per file is supported")
        else:
            traj[r], seen[r] = t, True
        if data is not None:  # repeats (idx.average, a readout stored twice) averaged later
            data[slot[s], :, r] += x
        count[s, r] += 1
        energy[s, r] += float(np.vdot(x, x).real)
        nonzero |= (x != 0).any(0)


def _repeat_part(kspace: np.ndarray, count: np.ndarray, energy: np.ndarray) -> tuple | None:
    """:func:`~mrirecon.io.ismrmrd_slab.repeat_note_of`'s sums for one slice ``(coils, readouts,
    samples)`` (averaged) with the repeat counts and energies ``(readouts,)``; ``None`` without a
    repeated readout. Slice by slice: a volume read whole and one read a slice at a time give the
    same note."""
    rep = count > 1
    if not rep.any():
        return None
    lines = np.moveaxis(kspace, 0, 1)[rep]
    return (int(rep.sum()), int(count[rep].max()), float((energy[rep] / count[rep]).sum()),
            float(np.vdot(lines, lines).real))


def read_noncartesian(path: Path, header: Header, records, imaging: np.ndarray,
                      noise: torch.Tensor | None, geometry, fail,
                      order: np.ndarray | None = None, stream: bool = False):
    """The non-Cartesian branch of :func:`mrirecon.io.read_ismrmrd` (see the module docstring):
    a :class:`KSpace`, or with ``stream`` an :class:`~mrirecon.io.ismrmrd_stream.ISMRMRDSlices`
    that reads one slice's acquisitions when it is asked for, bit-identical to that slice of the
    whole read. ``records``: the table's :class:`~mrirecon.io.ismrmrd_stream.Rows` (samples and
    trajectories read in chunks of rows, never ``table[()]``). Every check runs over the file
    once, in acquisition order, before a sample is returned (the whole read fills the volume in
    that pass; the streamed one keeps the trajectory, the repeat counts and which samples were
    measured, and with repeated readouts reads each slice once more for the repeats' note).

    ``order`` permutes the slices into position order (``ismrmrd_placement.slice_order``)."""
    from mrirecon.functional.density import gridding_gain, pipe_menon_density
    from mrirecon.io.ismrmrd_raw import _check_allocation
    from mrirecon.io.ismrmrd_slab import repeat_note_of
    heads = records["head"]
    idx = heads["idx"]
    first = imaging[0]
    dims = int(heads["trajectory_dimensions"][first])
    if dims not in (2, 3):
        raise fail(f"data[{first}].head.trajectory_dimensions",
                   f"expected 2 (kx, ky) or 3 (kx, ky, weight) for 2-D data, got {dims}")
    enc_z = header.encoded_matrix[2]
    if enc_z > 1:
        raise fail("ismrmrd_header/encoding/encodedSpace/matrixSize/z",
                   f"{enc_z}: 3-D non-Cartesian data (3-D trajectories kx, ky, kz; stack of "
                   "stars) are not supported, only 2-D radial / spiral slices")
    partitions = idx["kspace_encode_step_2"][imaging]
    if partitions.any():
        a = int(imaging[np.argmax(partitions)])
        raise fail(f"data[{a}].idx.kspace_encode_step_2",
                   f"partitions {np.unique(partitions).tolist()}: 3-D stack-of-stars data are "
                   "not supported, only 2-D radial / spiral slices")
    channels = int(heads["active_channels"][first])
    pre, post = int(heads["discard_pre"][first]), int(heads["discard_post"][first])
    samples = int(heads["number_of_samples"][first]) - pre - post
    if samples < 1:
        raise fail(f"data[{first}].head.discard_pre",
                   f"discard_pre {pre} + discard_post {post} leave no sample of "
                   f"{int(heads['number_of_samples'][first])}")
    check_noncartesian_matrix(header, samples, channels, fail)  # before any grid or plan
    steps = idx["kspace_encode_step_1"][imaging].astype(np.int64)
    slices_of = idx["slice"][imaging].astype(np.int64)
    readouts = int(steps.max()) + 1
    num_slices = int(slices_of.max()) + 1
    keys = np.unique(slices_of * readouts + steps)  # no grid allocated before this check
    if keys.size < num_slices * readouts:  # first (slice, readout) without an acquisition
        gaps = np.flatnonzero(keys != np.arange(keys.size))
        first_gap = int(gaps[0]) if gaps.size else keys.size
        raise fail("data[].idx.slice / kspace_encode_step_1",
                   f"slice {first_gap // readouts} has no readout {first_gap % readouts} (slices "
                   f"0..{num_slices - 1} x readouts 0..{readouts - 1} need {num_slices * readouts} "
                   f"readouts; the file has {keys.size} distinct ones)")
    _check_allocation(fail, "data[].idx.slice / kspace_encode_step_1",
                      (num_slices, 1, channels, samples, readouts), imaging.size,
                      held_slices=1 if stream else None)
    shape = (channels, dims, samples)
    traj = np.full((readouts, samples, dims), np.nan, np.float32)
    count = np.zeros((num_slices, readouts), np.int64)
    energy = np.zeros((num_slices, readouts))  # sum over repeats of each readout's |x|^2
    nonzero = np.zeros(samples, bool)
    # the volume is filled in position order (slot: each slice's place), never permuted after
    slot = np.arange(num_slices) if order is None else np.argsort(order)
    data = None if stream else np.zeros((num_slices, channels, readouts, samples), np.complex64)
    _fill(records, imaging, heads, shape, slot, data, traj, np.zeros(readouts, bool), count,
          energy, nonzero, fail)
    stored = traj  # every sample's: what a slice read later is checked against

    def read_slice(s: int) -> np.ndarray:
        """Slice ``s`` ``(1, coils, readouts, samples)``, averaged, read alone."""
        one = np.zeros((1, channels, readouts, samples), np.complex64)
        counts, energies = np.zeros_like(count), np.zeros_like(energy)
        _fill(records, imaging[slices_of == s], heads, shape, np.zeros(num_slices, np.int64), one,
              stored, np.ones(readouts, bool), counts, energies, np.zeros(samples, bool), fail)
        one /= counts[s][None, None, :, None]
        return one

    if data is not None:
        data /= count[slot.argsort()][:, None, :, None]
        parts = [_repeat_part(data[slot[s]], count[s], energy[s]) for s in range(num_slices)]
    elif (count > 1).any():  # the repeats' note needs the averages: each slice read once more
        parts = [_repeat_part(read_slice(s)[0], count[s], energy[s]) for s in range(num_slices)]
    else:
        parts = []
    header = repeat_note_of(header, [p for p in parts if p is not None], idx["average"][imaging])
    cut, end, header = _zero_samples(nonzero, header, pre, int(heads["number_of_samples"][first]))
    traj = traj[:, cut:end]
    h, w = header.encoded_matrix[0], header.encoded_matrix[1]
    coords = traj[..., :2].astype(np.float64)
    peak = np.abs(coords).reshape(-1, 2).max(0)
    found = trajectory_unit(peak, (h, w))
    if found is None:
        reached = ", ".join(f"{float((peak / e).max()):.3g} of {name}" for name, e in (
            ("0.5 (normalised)", 0.5), ("pi (radians)", np.pi),
            (f"N / 2 = {h / 2:g} x {w / 2:g} (cycles/FOV)", np.array([h, w]) / 2)))
        raise fail("data[].traj", f"the trajectory reaches |kx| = {peak[0]:.4g}, |ky| = "
                                  f"{peak[1]:.4g}: {reached}, for the encoded matrix {(h, w)}; "
                                  "a unit needs between half its edge and the edge plus half a "
                                  "grid cell (exactly one unit must fit): are the units or the "
                                  "header's matrix wrong?")
    unit, edge = found
    coords = coords * (0.5 / edge)
    reach = float((peak / edge).max())
    extra = dict(header.extra, trajectory_unit=unit)
    if reach < UNIT_NOTE:
        extra["trajectory_note"] = (
            f"the trajectory ({unit}) reaches {reach:.2f} of the edge of the encoded matrix "
            f"{(h, w)}: the image has the resolution of a {round(reach * h)} x {round(reach * w)} "
            "matrix; is the header's encodedSpace matrix (or the trajectory's scale) off?")
    coords = np.clip(coords, -0.5, np.nextafter(0.5, 0))
    centre = max(int(heads["center_sample"][first]) - pre - cut, 0)
    extra.update(echo_centre(coords, centre, (h, w), first))
    trajectory = torch.from_numpy(coords)
    extra["density_source"] = "file" if dims == 3 else "pipe_menon"
    if dims == 3:
        density = torch.from_numpy(traj[..., 2].astype(np.float64))
        if not bool((density > 0).any()):
            raise fail("data[].traj", "the density weights (third trajectory dimension) are all "
                                      "zero: every sample would be ignored")
        # ISMRMRD fixes no scale for weights; the gridded image's intensity (which sets the
        # pipeline's data scale, and with it what lam means) follows it: take the shape from
        # the file and the scale from the library's convention (module docstring), judged by
        # the intensity each set of weights gives a gridded image, not by their sums
        reference = pipe_menon_density(trajectory, (h, w))
        off = weights_off_centre(traj[..., 2], coords, (h, w))
        if off is not None:
            density = reference
            extra["density_source"] = "pipe_menon"
            extra["density_centre_note"] = (
                f"the file's density weights are smallest at sample {off[0]}, but the trajectory "
                f"passes the k-space centre at sample {off[1]}: weights of another trajectory "
                "(computed for the nominal one, before a gradient delay was measured?); "
                "Pipe-Menon weights for the file's trajectory were used")
        own = gridding_gain(density, trajectory, (h, w))
        want = gridding_gain(reference, trajectory, (h, w))
        factor = want / own if own > 0 else float(reference.sum() / density.sum())
        if not 0.5 <= factor <= 2:  # another convention (within 2x: the library's own ramps)
            density = density * factor
            extra["density_scale_note"] = (
                f"the file's density weights were multiplied by {factor:.3g} to the library's "
                f"scale (H W times the k-space area of a sample: they gridded an image at "
                f"{own:.3g} of its intensity, Pipe-Menon weights at {want:.3g}); their shape "
                "is the file's")
    else:
        density = pipe_menon_density(trajectory, (h, w))
    header = header.with_(num_coils=channels, geometry=geometry, extra=extra)
    from mrirecon.io.ismrmrd_stream import reference_reader

    reference = reference_reader(path, num_slices, fail)
    if data is not None:
        ref = None if reference is None else reference(slice(None))
        if ref is not None and order is not None:  # in position order, as the k-space
            ref = ref[torch.as_tensor(np.asarray(order))]
        return KSpace(data=torch.from_numpy(data[..., cut:end]), header=header, mask=None,
                      noise=noise, source=str(path), trajectory=trajectory, density=density,
                      reference=ref)
    from mrirecon.io.ismrmrd_stream import ISMRMRDSlices

    plan = KSpace(data=torch.zeros((num_slices, 0, readouts, end - cut), dtype=torch.complex64),
                  header=header, mask=None, noise=noise, source=str(path), trajectory=trajectory,
                  density=density)  # a volume of no coils: the slice count, what each read shares
    return ISMRMRDSlices(plan, lambda s: (torch.from_numpy(read_slice(s)[..., cut:end]), None),
                         order, reference=reference)


def read_traj_acquisitions(path, header, records, imaging, noise_sel, calib_only, fail,
                           dataset, stream: bool = False) -> KSpace:
    """:func:`~mrirecon.io.read_ismrmrd`'s branch for acquisitions that carry ``traj`` (the
    acquisition table's :class:`~mrirecon.io.ismrmrd_stream.Rows` ``records``, its selections
    ``imaging`` / ``noise_sel`` / ``calib_only``): noise scans, slice order and geometry as in
    the Cartesian branch, then :func:`read_noncartesian` (``stream``: an
    :class:`~mrirecon.io.ismrmrd_stream.ISMRMRDSlices` that reads a slice at a time). Slices are
    put in position order as in the Cartesian branch; the readout numbers
    (``kspace_encode_step_1``) are not checked against ``encodingLimits``, which our writer and
    Cartesian-minded exporters fill from the matrix, not the readout count."""
    from mrirecon.io.ismrmrd_placement import acquisition_geometry, gap_known, slice_order
    from mrirecon.io.ismrmrd_raw import _check_limits, _noise_scans

    heads = records["head"]
    _check_limits(header, heads["idx"], imaging, fail,
                  ("slice", "repetition", "contrast", "phase", "set", "average"))
    noise = _noise_scans(heads, records, noise_sel, imaging, calib_only, fail, dataset,
                         channels=int(heads["active_channels"][imaging[0]]))
    positions: dict[int, np.ndarray] = {}
    sources: dict[int, int] = {}
    for a in imaging:
        if (s := int(heads["idx"]["slice"][a])) not in positions:
            positions[s], sources[s] = np.asarray(heads[a]["position"], float), int(a)
    num_slices = int(heads["idx"]["slice"][imaging].max()) + 1
    order = slice_order(heads[imaging[0]], positions, num_slices, fail, dataset, sources=sources,
                        acquisition=int(imaging[0]))
    if order is not None:  # slice index order is not position order: sort by position
        positions = {i: positions[int(s)] for i, s in enumerate(order)}
    geometry = acquisition_geometry(heads[imaging[0]], header, num_slices, positions, fail=fail,
                                    acquisition=int(imaging[0]))
    return read_noncartesian(path, gap_known(header, geometry), records, imaging, noise,
                             geometry, fail, order, stream)
