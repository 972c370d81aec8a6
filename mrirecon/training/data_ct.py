"""CT training samples: LoDoPaB-layout sinograms -> (sparse-view / lower-dose data, projector, image).

Each sample is one image (its own "volume" for the per-volume metrics). ``views`` keeps
``num_views // views``-spaced views (training draws the offset of that pattern from the mask
seed, validation uses offset 0); ``photons`` lowers the dose as the pipeline does
(:func:`~mrirecon.pipeline.stages_ct.undersample`): data that hold Poisson noise (LoDoPaB: 4096
photons per bin) are thinned binomially to exactly ``photons`` (a higher dose is refused),
noise-free data get Poisson noise at ``photons``; seeded by the mask seed (training) or the
sample index (validation), so validation data never change.

The model sees the operator scaled to unit norm, ``A / ||A||``, and data ``y / ||A||`` (the same
least-squares problem, as in Adler & Oktem's learned primal-dual): then ``A^H y`` has the scale
of the image, which the models' data normalisation relies on. ``||A||`` is computed once per
view pattern by power iteration.
"""

from __future__ import annotations

import logging

import math
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from mrirecon.operators.ct_geometry import CTGeometry
from mrirecon.training.sample_sets import SampleSet, ShortRepr

log = logging.getLogger("mrirecon.train")


@dataclass
class CTSample(ShortRepr):
    """One CT image ready for ``model(y, operator())``.

    Attributes
    ----------
    y
        ``(1, views, detectors)`` float32 post-log line integrals (dimensionless) divided by
        ``norm``.
    geometry
        Acquisition geometry of the kept views.
    target
        ``(1, H, W)`` float32 attenuation (1/mm), or ``None`` (observations without ground
        truth: self-supervised view-splitting training).
    max_value
        ``(1,)`` float32 maximum of the target (SSIM / PSNR data range).
    fname, slice_index
        ``"<part>_<index>"`` and 0 (each image is scored as its own volume).
    norm
        ``||A||`` of the projector: ``y * norm`` are the measured line integrals.
    """

    y: Tensor
    geometry: CTGeometry
    target: Tensor | None
    max_value: Tensor
    fname: str
    slice_index: int = 0
    norm: float = 1.0

    def to(self, device: torch.device | str) -> CTSample:
        """The same sample with every tensor on ``device``."""
        return replace(
            self,
            y=self.y.to(device),
            target=None if self.target is None else self.target.to(device),
            max_value=self.max_value.to(device),
        )

    def operator(self):
        """``ct_operator(geometry) / norm`` on ``y``'s device: ``(1, H, W) -> (1, views,
        detectors)`` (built on the host, supervised CT training on CUDA failed at its first
        step; shared per geometry and device, :func:`~mrirecon.operators.ct.cached_ct_operator`)."""
        from mrirecon.operators.ct import cached_ct_operator

        return cached_ct_operator(self.geometry, str(self.y.device)) * (1.0 / self.norm)


def _find_part(folder: Path) -> str:
    from mrirecon.io.lodopab import parse_name

    parts = sorted(
        {n[1] for p in folder.glob("observation_*_000.hdf5")
         if (n := parse_name(p.name)) is not None and n[2] == 0}
    )
    if len(parts) != 1:
        raise ValueError(
            f"CTTrainingSet: expected one LoDoPaB part (observation_<part>_000.hdf5) in {folder}, "
            f"found {parts or 'none'}"
        )
    return parts[0]


class CTTrainingSet(SampleSet):
    """Images of a LoDoPaB-layout folder (one part) with sparse views and extra dose noise.

    Parameters
    ----------
    folder
        Folder with ``observation_<part>_###.hdf5`` and ``ground_truth_<part>_###.hdf5``.
    views
        Keep about this many views (every ``num_views // views``-th), or all when ``None``.
    photons
        Lower the dose to this many incident photons per bin (binomial thinning of noisy data,
        at most their own dose; Poisson noise on noise-free data), or keep the stored noise
        when ``None``.
    train
        Random view offset / noise from the mask seed (training) or fixed ones (validation).
    max_slices
        Keep at most this many images.
    sample_rate, seed
        Keep this fraction of the images, drawn with ``seed`` (the rule of
        :class:`~mrirecon.training.data.MRITrainingSet` for slices), before ``max_slices``.
    require_reference
        Refuse a folder without ``ground_truth_<part>_###.hdf5`` (supervised training); with
        ``False`` samples carry ``target = None`` when it is missing.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        views: int | None = None,
        photons: float | None = None,
        train: bool = True,
        *,
        max_slices: int | None = None,
        require_reference: bool = True,
        sample_rate: float = 1.0,
        seed: int = 0,
    ) -> None:
        from mrirecon.io.lodopab import LoDoPaBFiles

        from mrirecon.data.dataset import check_subset

        check_subset("CTTrainingSet", sample_rate, max_slices)
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"CTTrainingSet: data folder {folder} does not exist")
        self.part = _find_part(folder)
        self.files = LoDoPaBFiles(folder, self.part)
        if self.files.ground_truth_files is None and require_reference:
            raise ValueError(
                f"CTTrainingSet: {folder} has no ground_truth_{self.part}_###.hdf5 files"
            )
        full = self.files.geometry.num_views
        if views is not None and not 1 <= views <= full:
            raise ValueError(f"CTTrainingSet: views must be in [1, {full}], got {views}")
        if photons is not None and not photons > 0:
            raise ValueError(f"CTTrainingSet: photons must be > 0, got {photons}")
        if photons is not None and self.files.data_photons is not None:
            from mrirecon.sampling import check_thinning

            check_thinning(self.files.data_photons, photons,
                           f"CTTrainingSet: {self.files.observation_files[0].name}: photons")
        from mrirecon.sampling import view_factor  # 40 of 60 views kept all 60 here too

        self.factor = 1 if views is None else view_factor(full, int(views), "CTTrainingSet: views")
        self.photons, self.train = photons, bool(train)
        kept = list(range(len(self.files)))
        if sample_rate < 1.0:  # MRITrainingSet's (SliceDataset's) seeded draw, of images
            import numpy as np

            from mrirecon.data.dataset import subsample_indices

            kept = [int(i) for i in subsample_indices(len(kept), sample_rate,
                                                      np.random.default_rng(seed), "sample_rate")]
            if not kept:
                raise ValueError(f"CTTrainingSet: sample_rate {sample_rate:g} kept none of the "
                                 f"{len(self.files)} images in {folder}")
        self.indices = kept if max_slices is None else kept[:max_slices]
        check_ct_dose(self.files, self.indices, photons)
        if self.files.ground_truth_files is not None:
            for k, used in enumerate(used_by_file(self.files, self.indices)):  # first, last used
                if used and self.files.ground_truth_paths[k] is not None:
                    check_ct_references(self.files, sorted({used[0], used[-1]}))
            if not self.train:  # validation scores every image: each needs a target (train: get)
                for i in self.indices:
                    check_ct_target(self.files, i, self.files.attenuation(i).data)

    def __len__(self) -> int:
        return len(self.indices)

    _seeded = "view offset and noise"  # what ``[i]``'s message says the seed draws

    @property
    def folder(self) -> Path:
        """The data folder."""
        return self.files.root

    def _repr_settings(self) -> list[str]:
        g = self.files.geometry
        kept = "" if self.factor == 1 else f", kept 1 in {self.factor}"
        dose = "as stored" if self.photons is None else f"{self.photons:g}"
        return [f"part={self.part!r}", f"views={g.num_views}{kept}", f"photons={dose}"]

    def volume_keys(self) -> list[str]:
        """Each sample's ``fname`` (each image is a volume of its own)
        (:func:`~mrirecon.training.validation.volume_groups`)."""
        return [self._fname(i) for i in self.indices]

    def _fname(self, i: int) -> str:
        return f"{self.part}_{i:05d}"

    def source_files(self) -> list[Path]:
        """The observation files whose images this set uses (``max_slices``), each followed by
        its ground truth where there is one."""
        out = []
        for k, used in enumerate(used_by_file(self.files, self.indices)):
            if used:
                obs = self.files.observation_files[k]
                gt = self.files.ground_truth_paths[k]
                out += [obs] + ([gt] if gt is not None else [])
        return out

    def training_range(self) -> dict:
        """A model card's ``training_range`` for this set: the image grid, the views kept (over
        every offset training draws), the beam type, the detector count and the dose
        (``photons``: ``data.ct_photons``, else the files' own dose; ``inf`` for noise-free
        files; left out for files that hold noise of an unknown dose). Without the dose, weights
        trained at 4096 photons ran at 1000 (``undersample.photons``) without a word, 3 dB
        below FBP."""
        from mrirecon.io.lodopab_attrs import unknown_dose
        from mrirecon.sampling import sparse_view

        g = self.files.geometry
        views = [sparse_view(g, self.factor, o)[0].num_views
                 for o in range(min(self.factor, g.num_views))]
        shape = [int(n) for n in g.image_shape]
        out = {"matrix": {"min": shape, "max": shape}, "views": [min(views), max(views)],
               "geometry": [str(g.beam)], "detectors": [int(g.num_detectors)] * 2}
        dose = self.photons if self.photons is not None else self.files.data_photons
        if dose is None and unknown_dose(self.files.attrs) is None:
            dose = math.inf  # noise-free files, no noise added
        if dose is not None:
            out["photons"] = [float(dose)] * 2
        return out

    def get(self, index: int, mask_seed: int | None = None) -> CTSample:
        """Sample ``index``; training draws the view offset and noise from ``mask_seed``."""
        from mrirecon.sampling import low_dose_noise, sparse_view, thin_dose

        if not 0 <= index < len(self):
            raise IndexError(f"CTTrainingSet: index {index} out of range for {len(self)} images")
        if self.train and mask_seed is None:
            raise ValueError("CTTrainingSet.get: training samples need a mask_seed")
        i = self.indices[index]
        sino = self.files.sinogram(i).data.to(torch.float64)  # (1, views, detectors)
        if self.train and (isinstance(mask_seed, bool) or not isinstance(mask_seed, numbers.Integral)):
            raise TypeError(f"CTTrainingSet.get: mask_seed must be an integer (it seeds the view "
                            f"offset and the noise), got {mask_seed!r}")
        seed = int(mask_seed) if self.train else 1_000_003 + i
        g = torch.Generator().manual_seed(seed)
        geometry = self.files.geometry
        if self.factor > 1:
            offset = int(torch.randint(self.factor, (1,), generator=g)) if self.train else 0
            geometry, kept = sparse_view(geometry, self.factor, offset)
            sino = sino[..., torch.as_tensor(kept), :]
        if self.photons is not None and self.files.data_photons is None:
            from mrirecon.io.lodopab_attrs import unknown_dose
            from mrirecon.sampling.views import check_noise_free

            # as the pipeline: noise added to data that already hold it gives another dose
            check_noise_free(sino, f"CTTrainingSet: {self.files.observation_files[0].name}: photons",
                             unknown_dose(self.files.attrs))
            sino = low_dose_noise(sino, self.photons, g)
        elif self.photons is not None:  # noisy data: the pipeline's exact thinning
            sino = thin_dose(sino, self.files.data_photons, self.photons, g,
                             min_counts=self.files.min_photon_count,
                             who=f"CTTrainingSet: {self.files.observation_files[0].name}: photons")
        target = (self.files.attenuation(i).data.to(torch.float32)
                  if self.files.ground_truth_files is not None else None)
        if target is not None:  # the SSIM / PSNR data range is its maximum
            check_ct_target(self.files, i, target)
        norm = self.operator_norm(geometry)
        return CTSample(
            y=(sino / norm).to(torch.float32),
            norm=norm,
            geometry=geometry,
            target=target,
            max_value=(target.amax().reshape(1) if target is not None
                       else torch.tensor([float("nan")])),
            fname=self._fname(i),
        )

    def operator_norm(self, geometry: CTGeometry) -> float:
        """``||A||_2`` of ``ct_operator(geometry)`` (shared, cached per geometry)."""
        from mrirecon.operators.ct import projector_norm

        return projector_norm(geometry)


#: Views projected by :func:`check_ct_reference_scale` (about this many, evenly spaced): enough to
#: judge a factor of 10, at a small fraction of one full projection's cost.
SCALE_CHECK_VIEWS = 8


def used_by_file(files, indices: list[int]) -> list[list[int]]:
    """Per file of ``files`` (:class:`~mrirecon.io.lodopab.LoDoPaBFiles`), the images of
    ``indices`` (the set's) that lie in it, in order: what the per-file checks read."""
    return [[i for i in indices if start <= i < start + int(n)]
            for start, n in zip(files.file_starts, files.counts)]


def check_ct_dose(files, indices: list[int], photons: float | None) -> None:
    """The noise of each file's first image used against the dose the files state
    (``attrs/photons``; :func:`~mrirecon.training.ct_dose_check.dose_warning`, the rule of
    ``mrirecon run``): refused where ``photons`` lowers the dose from that statement (the
    samples would hold another dose than the card records), a warning otherwise (the stored
    noise is trained as it is). Was: not judged in training."""
    from mrirecon.training.ct_dose_check import dose_warning

    if files.data_photons is None:
        return
    for k, used in enumerate(used_by_file(files, indices)):
        if not used or (msg := dose_warning(files.sinogram(used[0]).data.double(),
                                            float(files.data_photons))) is None:
            continue
        where = (f"CTTrainingSet: {files.observation_files[k]}: attrs/photons: image "
                 f"{used[0] - files.file_starts[k]}")
        if photons is not None:
            raise ValueError(f"{where}: {msg}. photons={photons:g} would lower the dose from the "
                             "stated one: correct attrs/photons, or train on the stored noise "
                             "(photons: null)")
        log.warning("%s: %s", where, msg)


def check_ct_references(files, indices: list[int]) -> None:
    """The checks of the ground truths of images ``indices`` (one or two of one file of
    ``files``) when a CT data set is built, each image and sinogram read once: a target
    (:func:`check_ct_target`), the scale of the first (:func:`check_ct_reference_scale`), the
    layout and order of all (:func:`check_ct_reference_orientation`), the file's
    ``attrs/geometry`` against the first (:func:`check_ct_reference_geometry`)."""
    read = {}
    for index in indices:
        ref = files.attenuation(index).data.to(torch.float32)
        check_ct_target(files, index, ref)
        read[index] = (files.sinogram(index).data.to(torch.float64), ref)
    check_ct_reference_scale(files, indices[0], *read[indices[0]])
    check_ct_reference_orientation(files, read)
    check_ct_reference_geometry(files, indices[0], *read[indices[0]])


def check_ct_reference_scale(files, index: int, sinogram: Tensor, image: Tensor) -> None:
    """Refuse a LoDoPaB-layout image (``files``: :class:`~mrirecon.io.lodopab.LoDoPaBFiles`)
    whose ground truth ``image`` is on another scale than its ``sinogram`` (both as read, in
    float32 / float64): the projection of the ground truth
    at about :data:`SCALE_CHECK_VIEWS` of the views against the measured line integrals there
    (L2 norms; the rule and factor of :func:`mrirecon.data.dataset.off_scale`, which MRI training
    and ``mrirecon run`` use). A ground truth x 1000 (hand-made files whose ``data`` is in other
    units than the sinogram's, with the same ``mu_max_per_m``) trained before with exit 0; a
    model trained so maps data to images 1000x too bright."""
    from mrirecon.data.dataset import off_scale
    from mrirecon.operators.ct import ct_operator
    from mrirecon.sampling import sparse_view

    geometry = files.geometry
    geometry_kept, kept = sparse_view(geometry, max(1, geometry.num_views // SCALE_CHECK_VIEWS), 0)
    sino = sinogram[..., torch.as_tensor(kept), :]
    projected = ct_operator(geometry_kept)(image).to(torch.float64)
    if (ratio := off_scale(projected, sino)) is None:
        return
    file, local = files.locate(index)
    raise ValueError(
        f"CTTrainingSet: {files.ground_truth_paths[file]}: data: image {local} projects to "
        f"{ratio:.3g}x the line integrals of its sinogram in "
        f"{files.observation_files[file].name} (L2 norms over {len(kept)} of its "
        f"{geometry.num_views} views; a ground truth on the sinogram's scale gives 1.0x): the "
        "model would learn to map the data to images on another scale: store the ground truth "
        f"in the sinogram's units (attenuation / mu_max, as LoDoPaB), or scale it by {1 / ratio:.3g}")


def check_ct_reference_geometry(files, index: int, sinogram: Tensor, image: Tensor) -> None:
    """Refuse a LoDoPaB-layout file (``files``: :class:`~mrirecon.io.lodopab.LoDoPaBFiles`)
    whose ground truth of image ``index`` projects onto its sinogram far better with another
    geometry than with ``attrs/geometry`` (the detector pitch at the isocentre, a source
    distance or pitch a few percent off, the other detector shape, an axis shift, a parallel
    beam's pitch or pixel size, the angles offset by a start angle not recorded:
    :func:`~mrirecon.training.ct_reference_geometry.
    reference_geometry_note`, the rule ``mrirecon run`` and ``bench`` report by). Such files
    trained with exit 0 and no word: the model learns the data through the wrong projector."""
    from mrirecon.training.ct_reference_geometry import reference_geometry_note

    file, local = files.locate(index)
    gt = files.ground_truth_paths[file]
    note = reference_geometry_note(sinogram, image, files.geometry,
                                   f"the ground truth in {gt.name} (image {local})")
    if note is not None:
        raise ValueError(
            f"CTTrainingSet: {files.observation_files[file]}: attrs/geometry: {note}. Training "
            "would teach the model these data through the wrong projector: correct "
            "attrs/geometry (lengths in mm, the pitch at the detector)")


def check_ct_target(files, index: int, target: Tensor) -> None:
    """Refuse image ``index`` of ``files`` whose ground truth ``target`` is nowhere positive
    (all zero: a blank placeholder): its maximum is the SSIM / PSNR data range, so the loss was
    NaN ("training loss became nan at step 2", no file named) and validation failed with "nmse:
    gt of shape (1, 32, 32) is all zero", no file named either."""
    peak = float(target.max())
    if peak > 0:
        return
    file, local = files.locate(index)
    raise ValueError(
        f"CTTrainingSet: {files.ground_truth_paths[file]}: data: image {local} is nowhere "
        f"positive (maximum {peak:g}): no training target (a blank placeholder?), and its "
        "maximum is the loss's data range: remove the image (and its sinogram in "
        f"{files.observation_files[file].name}) or store its ground truth")


#: Views of the FBP that :func:`check_ct_reference_orientation` compares with the ground truth
#: (about this many, evenly spaced): streaks do not move the correlation of a 362 x 362 image by
#: the 0.2 margin, and the FBP costs an eighth of a full one for LoDoPaB's 1000 views.
ORIENTATION_CHECK_VIEWS = 128


def check_ct_reference_orientation(files, read: dict[int, tuple[Tensor, Tensor]]) -> None:
    """Refuse ground truths of images ``read`` (``{index: (sinogram, ground truth)}`` as read,
    of one file of ``files``, a :class:`~mrirecon.io.lodopab.LoDoPaBFiles`) that match the FBP of their sinograms far better
    flipped, transposed or rotated than as read, or (two images) in the other order
    (:func:`~mrirecon.training.reference_checks.orientation_note` and ``slice_order_note``, the
    rules of ``mrirecon run`` and ``bench``; a matching 180-degree rotation or mirror also names
    the sinogram as a cause, ``CT_DATA_CAUSES``). A ground truth without the rotation the LoDoPaB
    layout requires trained with exit 0 and no word: the model learns to rotate its images."""
    from mrirecon.operators.fbp import fbp
    from mrirecon.sampling import sparse_view
    from mrirecon.training.reference_checks import (CT_DATA_CAUSES, orientation_note,
                                                    slice_order_note)

    geometry = files.geometry
    factor = max(1, geometry.num_views // ORIENTATION_CHECK_VIEWS)
    kept_geometry, kept = sparse_view(geometry, factor, 0)
    indices = list(read)
    file, _ = files.locate(indices[0])
    where = f"CTTrainingSet: {files.ground_truth_paths[file]}: data"
    consequence = ("Training would teach the model to map the data to the reference as read: "
                   "store the ground truth in the layout of the sinogram's images")
    refs, images = [], []
    for index, (sinogram, ref) in read.items():
        image = fbp(sinogram[..., torch.as_tensor(kept), :], kept_geometry,
                    filter="hann").to(torch.float32)
        against = f"the FBP of its sinogram in {files.observation_files[file].name}"
        note = orientation_note(ref, image, against, " (LoDoPaB ground truths are ODL (x, y), "
                                "not (rows, cols))", consequence=consequence,
                                causes=CT_DATA_CAUSES)
        if note is not None:
            raise ValueError(f"{where}: image {files.locate(index)[1]}: {note}")
        refs.append(ref[0])
        images.append(image[0])
    if len(indices) > 1:
        note = slice_order_note(torch.stack(refs), torch.stack(images), consequence=(
            "image i of the ground truth is the target of sinogram i: " + consequence))
        if note is not None:
            shown = ", ".join(str(files.locate(i)[1]) for i in indices)
            raise ValueError(f"{where}: images {shown} against the FBPs of their sinograms in "
                             f"{files.observation_files[file].name}: {note}")
