"""What a notebook echoes: short one-line reprs with shapes (not values) for the containers, the
CT geometry, the training samples and sets; ``set[i]`` and ``FiniteDifference((H, W))`` refused
with a message that says the right call; ``mrirecon.viz.__all__``; documented parameters."""

from __future__ import annotations

import inspect
import math
from dataclasses import fields, replace

import pytest
import torch

#: "under ~300 characters for typical objects" (LoDoPaB / fastMRI sizes)
SHORT = 300


def _lodopab_geometry(beam: str = "parallel"):
    """LoDoPaB's grid (362 x 362, 1000 views, 513 detectors); a fan beam of the same size."""
    from mrirecon.operators.ct_geometry import CTGeometry

    if beam == "parallel":
        return CTGeometry.parallel((362, 362), 1000, 513, pixel_size=0.7)
    return CTGeometry.fan((362, 362), 1000, 513, source_isocenter=500.0, source_detector=1000.0,
                          pixel_size=0.7, detector_offset=1.25)


def _one_short_line(r: str) -> None:
    assert "\n" not in r and len(r) < SHORT, (len(r), r[:400])
    assert "tensor(" not in r and "array(" not in r, r[:400]


@pytest.mark.parametrize("beam", ["parallel", "fan"])
def test_a_ct_geometry_repr_summarises_its_views(beam):
    """The dataclass repr printed every angle (19,709 characters at 1000 views)."""
    g = _lodopab_geometry(beam)
    r = repr(g)
    _one_short_line(r)
    for part in ("views=1000", "detectors=513", "image=(362, 362)", "pixel_size=0.7 mm",
                 f"{max(g.angles):.4g}] rad"):
        assert part in r, (part, r)
    assert repr(g.angles[1]) not in r  # the angles themselves are not listed
    if beam == "fan":
        assert "source_isocenter=500 mm" in r and "source_detector=1000 mm" in r
        assert "detector_offset=1.25 mm" in r


def test_ct_geometry_equality_still_compares_every_angle():
    g = _lodopab_geometry()
    nudged = replace(g, angles=g.angles[:-1] + (g.angles[-1] + 1e-9,))
    assert repr(nudged) == repr(g) and nudged != g
    assert replace(g) == g and hash(replace(g)) == hash(g)


def test_container_reprs_show_shapes_and_dtypes_not_values():
    """The default reprs printed the tensors' values (13,997 characters for this KSpace) and
    never a shape."""
    from mrirecon.containers import Header, Image, ImageGeometry, KSpace, Sinogram

    header = Header(encoded_matrix=(64, 48, 1), recon_matrix=(64, 48, 1),
                    encoded_fov_mm=(220, 165, 5), recon_fov_mm=(220, 165, 5), num_coils=4)
    k = KSpace(torch.randn(3, 4, 64, 48, dtype=torch.complex64), header,
               reference=torch.rand(3, 64, 48), noise=torch.zeros(4, 256, dtype=torch.complex64),
               source="data/mri/file_brain_AXT2_200_2000019.h5")
    r = repr(k)
    _one_short_line(r)
    for part in ("data=(3, 4, 64, 48) complex64", "reference=(3, 64, 48) float32",
                 "noise=(4, 256) complex64", "recon_matrix=(64, 48, 1)", "num_coils=4",
                 "file_brain_AXT2_200_2000019.h5"):
        assert part in r, (part, r)
    assert "mask=" not in r and "trajectory=" not in r  # None (their default): left out

    sino = Sinogram(torch.zeros(1, 1000, 513), _lodopab_geometry(), photons=4096.0)
    r = repr(sino)
    _one_short_line(r)
    assert "data=(1, 1000, 513) float32" in r and "views=1000" in r and "photons=4096" in r

    image = Image(torch.zeros(40, 320, 320), ImageGeometry((3, 0.5, 0.5), (1, 2, 3)), kind="hu",
                  modality="CT")
    r = repr(image)
    _one_short_line(r)
    assert "data=(40, 320, 320) float32" in r and "spacing=(3, 0.5, 0.5) mm" in r
    assert "kind='hu'" in r
    # numpy data (the containers take them): numpy 2's arrays have .device, the string 'cpu'
    import numpy as np

    r = repr(Image(np.zeros((2, 8, 8), np.float32), ImageGeometry((3, 0.5, 0.5), (1, 2, 3))))
    assert "data=(2, 8, 8) float32" in r, r

    many = KSpace(torch.zeros(40, 2, 8, 8, dtype=torch.complex64),
                  Header(encoded_matrix=(8, 8, 1), recon_matrix=(8, 8, 1)))
    assert "slice_indices=(0, 1, ..., 39: 40 values)" in repr(many)
    assert "(2, 4, 4) float32 meta" in repr(Image(torch.zeros(2, 4, 4, device="meta")))


def test_container_fields_and_equality_are_the_dataclasses():
    from mrirecon.containers import Header, Image, KSpace

    assert [f.name for f in fields(KSpace)] == ["data", "header", "mask", "noise", "reference",
                                                "slice_indices", "source", "trajectory",
                                                "density", "calibration"]
    assert [f.name for f in fields(Image)] == ["data", "geometry", "kind", "modality",
                                               "description", "source"]
    k = KSpace(torch.zeros(1, 2, 8, 8, dtype=torch.complex64),
               Header(encoded_matrix=(8, 8, 1), recon_matrix=(8, 8, 1)))
    assert replace(k) == k and replace(k, source="other.h5") != k
    assert KSpace.__hash__ is None  # eq=True, not frozen: unhashable as before


def _mri_sample(coils: int = 15, size=(640, 368)):
    from mrirecon.training.data import TrainingSample

    y = torch.zeros(1, coils, *size, dtype=torch.complex64)
    return TrainingSample(y=y, maps=y, mask=torch.ones(size[1], dtype=torch.bool),
                          target=torch.zeros(1, 320, 320), max_value=torch.ones(1),
                          fname="file1000000.h5", slice_index=17, num_low_frequencies=26)


def test_training_sample_reprs_show_shapes_at_fastmri_and_lodopab_size():
    """``MRITrainingSet.get(0, mask_seed=1)`` printed 5,139 characters of zeros, no shape."""
    from mrirecon.training.data_ct import CTSample

    r = repr(_mri_sample())
    _one_short_line(r)
    for part in ("y=(1, 15, 640, 368) complex64", "mask=(368,) bool", "target=(1, 320, 320) "
                 "float32", "fname='file1000000.h5'", "slice_index=17"):
        assert part in r, (part, r)

    ct = CTSample(y=torch.zeros(1, 1000, 513), geometry=_lodopab_geometry(),
                  target=torch.zeros(1, 362, 362), max_value=torch.ones(1),
                  fname="train_00042", norm=143.99)
    r = repr(ct)
    _one_short_line(r)
    for part in ("y=(1, 1000, 513) float32", "target=(1, 362, 362) float32", "views=1000",
                 "fname='train_00042'", "norm=143.99"):
        assert part in r, (part, r)


def test_training_sample_fields_and_equality_are_the_dataclasses():
    from mrirecon.training.data import TrainingSample
    from mrirecon.training.data_ct import CTSample

    assert [f.name for f in fields(TrainingSample)] == [
        "y", "maps", "mask", "target", "max_value", "fname", "slice_index", "num_low_frequencies"]
    assert [f.name for f in fields(CTSample)] == [
        "y", "geometry", "target", "max_value", "fname", "slice_index", "norm"]
    s = _mri_sample(2, (8, 8))
    assert replace(s) == s and replace(s, slice_index=3) != s


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from tests.helpers import tiny_ct_part, tiny_mri_folders

    root = tmp_path_factory.mktemp("reprs")
    return {**tiny_mri_folders(root / "mri"), "ct": tiny_ct_part(root / "ct", samples=2)}


def test_training_set_reprs_name_the_folder_the_samples_and_the_settings(folders):
    """They were ``<mrirecon.training.data.MRITrainingSet object at 0x...>``."""
    from mrirecon.io.lodopab import LoDoPaBFiles
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.data_ct import CTTrainingSet

    mask = MaskConfig(type="random", center_fractions=(0.16,), accelerations=(4,))
    r = repr(MRITrainingSet(folders["train"], mask, train=False))
    _one_short_line(r)
    for part in (repr(str(folders["train"])), "4 samples", "mask=random 4x (centre 0.16)",
                 "maps='learned'", "train=False"):
        assert part in r, (part, r)

    r = repr(CTTrainingSet(folders["ct"], views=12, photons=1000.0))
    _one_short_line(r)
    for part in (repr(str(folders["ct"])), "2 samples", "part='train'", "views=48, kept 1 in 4",
                 "photons=1000", "train=True"):
        assert part in r, (part, r)

    r = repr(LoDoPaBFiles(folders["ct"], "train"))
    _one_short_line(r)
    for part in (repr(str(folders["ct"])), "part='train'", "(1 with ground truth)", "2 samples",
                 "CTGeometry(parallel, image=(32, 32), views=48"):
        assert part in r, (part, r)

    r = repr(AcquiredMRISet(folders["val"], maps="learned"))
    _one_short_line(r)
    for part in (repr(str(folders["val"])), "1 files", "2 samples", "maps='learned'"):
        assert part in r, (part, r)


def test_indexing_a_training_set_names_get_and_its_seed(folders):
    """``MRITrainingSet(...)[0]`` failed with "'MRITrainingSet' object is not subscriptable"."""
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.data_ct import CTTrainingSet

    for train_set, drawn in ((MRITrainingSet(folders["train"]), "mask"),
                             (CTTrainingSet(folders["ct"]), "view offset and noise")):
        name = type(train_set).__name__
        with pytest.raises(TypeError) as err:
            train_set[1]
        msg = str(err.value)
        for part in (f"{name}[1]", f"{name}.get(index, mask_seed=...)", ".get(1, mask_seed=0)",
                     f"{drawn} drawn from mask_seed", "train=False", ".get(1)"):
            assert part in msg, (part, msg)
        assert train_set.get(1, mask_seed=0).fname  # the call it names works


def test_finite_difference_given_a_shape_first_says_the_right_call():
    """``FiniteDifference((32, 24))`` failed with "can't multiply sequence by non-int of type
    'tuple'" (the siblings take the shape first: ``Fourier((32, 24))``)."""
    from mrirecon.operators import FiniteDifference

    for bad, call in (((32, 24), "FiniteDifference(2, shape=(32, 24))"),
                      ([4, 32, 24], "FiniteDifference(3, shape=(4, 32, 24))")):
        with pytest.raises(TypeError) as err:
            FiniteDifference(bad)
        msg = str(err.value)
        assert "FiniteDifference: ndim" in msg and call in msg, msg
        assert eval(call, {"FiniteDifference": FiniteDifference}).domain_shape[-1] == 24
    with pytest.raises(TypeError, match="ndim"):
        FiniteDifference(2.0)
    assert FiniteDifference(2).ndim == 2 and FiniteDifference(shape=(32, 24)).ndim == 2


def test_viz_all_lists_its_public_functions():
    import mrirecon.viz as viz

    public = {n for n, v in vars(viz).items() if inspect.isfunction(v) and not n.startswith("_")
              and v.__module__ == viz.__name__}
    assert set(viz.__all__) == public == {"image_grid", "point_spread_function",
                                          "results_folder"}
    assert all(callable(getattr(viz, n)) for n in viz.__all__)
    namespace: dict = {}
    exec("from mrirecon.viz import *", namespace)
    assert not {"np", "torch", "Path", "math", "os", "tempfile"} & set(namespace)


def test_write_ismrmrd_noncartesian_documents_every_parameter():
    from mrirecon.io.ismrmrd_noncartesian import write_ismrmrd_noncartesian

    doc = inspect.getdoc(write_ismrmrd_noncartesian)
    missing = [p for p in inspect.signature(write_ismrmrd_noncartesian).parameters
               if f"\n{p}\n" not in doc]
    assert not missing, missing
    assert "sample_time_us" in doc and math.isfinite(
        inspect.signature(write_ismrmrd_noncartesian).parameters["dwell_time_us"].default)
