"""Non-Cartesian ISMRMRD raw data: writer, and the reader branch of :func:`read_ismrmrd`.

Layout (what scanners and the Gadgetron export): one acquisition per readout (radial spoke or
spiral interleave) and slice; ``head.trajectory_dimensions`` is 2 (``kx, ky``) or 3
(``kx, ky, density weight``), and ``traj`` holds ``(samples, trajectory_dimensions)`` float32.
Coordinates are normalised k-space, ``[-0.5, 0.5)`` (the convention of
:mod:`mrirecon.functional.nufft`); ``kx`` runs along the readout direction ``read_dir``, which
is the image's row axis ``H`` (the Cartesian reader puts the readout on ``H`` too), ``ky`` along
``phase_dir``. Files in cycles/FOV (``|k|`` up to ``matrix / 2``) are rescaled by the encoded
matrix. ``idx.kspace_encode_step_1`` numbers the readouts, ``idx.slice`` the slices.

The reader returns ``KSpace(data=(slices, coils, readouts, samples), trajectory=(readouts,
samples, 2), density=(readouts, samples))``; without weights in the file the density is
computed (Pipe-Menon) for the trajectory.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch

from mrirecon.containers import Header, KSpace
from mrirecon.io.atomic import atomic_path
from mrirecon.io.ismrmrd_header import header_to_xml

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
        names the ISMRMRD trajectory (``radial``, ``spiral``).
    density
        Optional ``(readouts, samples)`` weights, stored as the third trajectory dimension.
    """
    kspace = torch.as_tensor(kspace)
    slices, coils, readouts, samples = kspace.shape
    if tuple(trajectory.shape) != (readouts, samples, 2):
        raise ValueError(f"write_ismrmrd_noncartesian: trajectory {tuple(trajectory.shape)} does "
                         f"not match k-space (readouts, samples) = {(readouts, samples)}")
    traj = trajectory.detach().cpu().numpy().astype(np.float32)
    if density is not None:
        traj = np.concatenate([traj, density.detach().cpu().numpy().astype(np.float32)[..., None]], -1)
    dims = traj.shape[-1]
    g = header.geometry
    col, row = np.asarray(g.orientation[:3], float), np.asarray(g.orientation[3:], float)
    records = np.zeros(slices * readouts, dtype=ACQUISITION)
    data = kspace.detach().cpu().to(torch.complex64).numpy()
    for s in range(slices):
        pos = np.asarray(g.slice_position(s), float) + (header.encoded_matrix[0] // 2) * g.spacing[1] * row \
            + (header.encoded_matrix[1] // 2) * g.spacing[2] * col
        for r in range(readouts):
            rec = records[s * readouts + r]
            head = rec["head"]
            head["version"] = 1
            head["scan_counter"] = s * readouts + r
            head["number_of_samples"] = samples
            head["available_channels"] = head["active_channels"] = coils
            head["center_sample"] = samples // 2 if bool((traj[r, 0, :2] != 0).any()) else 0
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
    xml = header_to_xml(header)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        grp = h5.create_group("dataset")
        grp.create_dataset("xml", data=np.array([xml.encode()], dtype=h5py.string_dtype("utf-8")))
        grp.create_dataset("data", data=records, maxshape=(None,), chunks=True)
    return Path(path)


def read_noncartesian(path: Path, header: Header, records: np.ndarray, imaging: np.ndarray,
                      noise: torch.Tensor | None, geometry, fail) -> KSpace:
    """The non-Cartesian branch of :func:`mrirecon.io.read_ismrmrd` (see the module docstring)."""
    from mrirecon.functional.density import pipe_menon_density

    heads = records["head"]
    idx = heads["idx"]
    dims = int(heads["trajectory_dimensions"][imaging[0]])
    if dims not in (2, 3):
        raise fail(f"data[{imaging[0]}].head.trajectory_dimensions",
                   f"expected 2 (kx, ky) or 3 (kx, ky, weight) for 2-D data, got {dims}")
    channels = int(heads["active_channels"][imaging[0]])
    samples = int(heads["number_of_samples"][imaging[0]])
    steps = idx["kspace_encode_step_1"][imaging].astype(np.int64)
    slices_of = idx["slice"][imaging].astype(np.int64)
    readouts = int(steps.max()) + 1
    num_slices = int(slices_of.max()) + 1
    data = np.zeros((num_slices, channels, readouts, samples), np.complex64)
    traj = np.full((readouts, samples, dims), np.nan, np.float32)
    seen = np.zeros((num_slices, readouts), bool)
    for a, r, s in zip(imaging, steps, slices_of):
        head = heads[a]
        for name, want in (("active_channels", channels), ("number_of_samples", samples),
                           ("trajectory_dimensions", dims)):
            if int(head[name]) != want:
                raise fail(f"data[{a}].head.{name}", f"expected {want} like the first readout, "
                                                     f"got {int(head[name])}")
        raw = np.asarray(records[a]["data"], np.float32)
        if raw.size != 2 * channels * samples:
            raise fail(f"data[{a}].data", f"expected {2 * channels * samples} floats, got {raw.size}")
        t = np.asarray(records[a]["traj"], np.float32)
        if t.size != samples * dims:
            raise fail(f"data[{a}].traj", f"expected {samples * dims} floats, got {t.size}")
        t = t.reshape(samples, dims)
        if np.isnan(traj[r, 0, 0]):
            traj[r] = t
        elif not np.allclose(traj[r], t, atol=1e-6):
            raise fail(f"data[{a}].traj", f"readout {r} has a different trajectory in slice {s}; "
                                          "only one trajectory per file is supported")
        data[s, :, r] = raw.view(np.complex64).reshape(channels, samples)
        seen[s, r] = True
    if not seen.all():
        missing = np.argwhere(~seen)[0]
        raise fail(f"{path.name}:data", f"slice {missing[0]} has no readout {missing[1]}")
    if not (np.isfinite(data).all() and np.isfinite(traj).all()):
        raise fail("data", "NaN or Inf samples or trajectory")
    coords = traj[..., :2].astype(np.float64)
    h, w = header.encoded_matrix[0], header.encoded_matrix[1]
    peak = np.abs(coords).max()
    if peak > 0.5 + 1e-4:  # cycles / FOV: rescale by the matrix
        coords = coords / np.array([h, w], float)
        if np.abs(coords).max() > 0.5 + 1e-4:
            raise fail("data.traj", f"coordinates up to {peak:.4g} exceed the encoded matrix {(h, w)}")
    coords = np.clip(coords, -0.5, np.nextafter(0.5, 0))
    trajectory = torch.from_numpy(coords)
    if dims == 3:
        density = torch.from_numpy(traj[..., 2].astype(np.float64))
        if (density < 0).any():
            raise fail("data.traj", "negative density weights")
    else:
        density = pipe_menon_density(trajectory, (h, w))
    header = header.with_(num_coils=channels, geometry=geometry)
    return KSpace(data=torch.from_numpy(data), header=header, mask=None, noise=noise,
                  source=str(path), trajectory=trajectory, density=density)
