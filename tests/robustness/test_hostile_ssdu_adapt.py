"""Self-supervised training (``loss.ssdu``) and scan-specific adaptation (``adapt:``) given data
or settings that cannot give the splits asked for (audit a14).

* A fully sampled fastMRI file with header padding (knee layout: k-space zero outside
  ``[padding_left, padding_right)``) was taken for undersampled data, so SSDU trained on nearly
  complete k-space (56 of 64 columns, "acceleration 1.14") instead of the study's fixed mask.
* E2E-VarNet with its own coil maps was accepted by ``loss.ssdu`` (the adapt stage refuses it).
* Too few acquired columns outside the centre block (or ``adapt.acs_block`` [1000, 1000]) failed
  the input with "too few acquired columns outside the centre for a validation set"; a ratio that
  holds out no point read "no acquired point outside the ACS block" with hundreds there; neither
  named the key or the file.
* ``adapt.validation_fraction`` 0.99 and 0.8 both held back 14 of 19 columns, 0.001 one, silently.
* ``loss.ssdu.view_parts`` above ``data.ct_views`` failed at the first step, unnamed; CT
  adaptation of 2 views advised a fraction that then failed in ``split_views``.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from mrirecon.operators.mri import sense
from mrirecon.training.adapt import AdaptConfig, CannotAdapt, _ct_setup, adapt_model


def _column_scan(columns: list[int], n: int = 32, coils: int = 2):
    """One slice ``[(y, sense(maps, mask))]`` whose acquired columns are ``columns``."""
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, coils, n, n, dtype=torch.complex64, generator=g)
    maps = maps / (maps.abs() ** 2).sum(1, keepdim=True).sqrt()
    mask = torch.zeros(n, dtype=torch.bool)
    mask[columns] = True
    op = sense(maps, mask)
    img = torch.randn(1, n, n, dtype=torch.complex64, generator=g)
    return [(op(img), op)]


class _Gain(nn.Module):
    """``x = w A^H y``: one weight, a complex image (enough for the adaptation's loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, y, op):
        return self.w * op.H(y)


def _quick(**kw) -> AdaptConfig:
    return AdaptConfig(**{"steps": 1, "time_budget_s": None, "val_every": 1, **kw})


# ---- F1: padded fully sampled files ----------------------------------------------------------


def _padded_file(folder: Path, padding: tuple[int, int]) -> Path:
    """A fully sampled simulated fastMRI file (1 slice, 2 coils, 32 x 32) whose header says only
    columns ``[left, right)`` were acquired, with k-space zero outside (fastMRI knee layout)."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io.ismrmrd_header import header_to_xml, parse_ismrmrd_header

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=1, coils=2, size=(32, 32), seed=3)
    path = Path(path)
    with h5py.File(path, "r+") as f:
        header = parse_ismrmrd_header(f["ismrmrd_header"][()], str(path))
        del f["ismrmrd_header"]
        f["ismrmrd_header"] = header_to_xml(
            header.with_(padding_left=padding[0], padding_right=padding[1])).encode()
        k = f["kspace"][...]
        k[..., :padding[0]] = 0
        k[..., padding[1]:] = 0
        f["kspace"][...] = k
    return path


@pytest.mark.parametrize("padding", [(0, 32), (3, 29)])
def test_a_padded_fully_sampled_file_gets_the_studys_fixed_mask(tmp_path, padding):
    from mrirecon.sampling import apply_mask, create_mask_for_mask_type, file_seed
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data_acquired import AcquiredMRISet

    path = _padded_file(tmp_path, padding)
    cfg = MaskConfig(center_fractions=(0.125,), accelerations=(4,))
    ds = AcquiredMRISet(path, cfg, maps="espirit")
    s = ds.get(0)
    # the fastMRI mask seeded by the file name, less the columns never acquired (apply_mask's rule)
    fn = create_mask_for_mask_type(cfg.type, cfg.center_fractions, cfg.accelerations)
    _, expected, _ = apply_mask(torch.ones(1, 32, 32, dtype=torch.complex64), fn,
                                seed=file_seed(path.name), padding=padding)
    assert torch.equal(s.mask, expected.reshape(-1).bool())  # was all 26 acquired columns
    assert int(s.mask.sum()) <= 32 // 4  # an undersampled training sample, not complete k-space
    held = (s.y[0] != 0).any(dim=(0, 1))
    assert not bool((held & ~s.mask).any())  # no data outside the mask the loss splits
    # the nominal 4x and the rates its masks achieve on the acquired columns (was [1.2308,
    # 1.2308]: all acquired columns; then [4.0, 4.0]: the nominal rate alone)
    lo, hi = ds.training_range()["accelerations"]
    achieved = (padding[1] - padding[0]) / int(s.mask.sum())
    assert lo <= 4.0 <= hi and lo <= achieved <= hi and achieved < 2 * 4.0


# ---- F2: models with their own coil maps under loss.ssdu -------------------------------------


def _train_yaml(tmp_path: Path, model: str, data: str = "maps: espirit", loss: str = "ssdu: {}") -> Path:
    p = tmp_path / "train.yaml"
    p.write_text(f"name: t\noutput_dir: {tmp_path / 'run'}\n"
                 f"data: {{train: {tmp_path}, val: {tmp_path}, {data}}}\n"
                 f"model: {model}\nloss: {{{loss}}}\n")
    return p


def _validated(path: Path):
    from mrirecon.core.config import load_config
    from mrirecon.training.config import TrainConfig
    from mrirecon.training.validate import validate_training

    return validate_training(load_config(TrainConfig, path), str(path))


def test_ssdu_training_refuses_a_model_that_estimates_its_own_coil_maps(tmp_path):
    from mrirecon.core.config import ConfigError

    for model, key in [("{name: varnet, params: {iterations: 2}}", "model.params.estimate_sensitivities"),
                       ("{name: VarNet, params: {estimate_sensitivities: true}}",
                        "model.params.estimate_sensitivities"),
                       ("{name: learned_maps}", "model.name")]:
        with pytest.raises(ConfigError, match=rf"train\.yaml: {key}: .* estimates its own coil "
                                              r"sensitivities, but loss\.ssdu scores its image"):
            _validated(_train_yaml(tmp_path, model))
    # E2E-VarNet on the sample's maps, and supervised E2E-VarNet with its own, stay allowed
    cfg = _validated(_train_yaml(tmp_path, "{name: varnet, params: {estimate_sensitivities: false}}"))
    assert cfg.model.params["estimate_sensitivities"] is False
    assert _validated(_train_yaml(tmp_path, "{name: varnet}", loss="l1: 1.0")).loss.ssdu is None


# ---- F3: a scan the adaptation cannot split: a warning, the unadapted model ------------------


@pytest.mark.parametrize("columns, block, outside", [
    ([14, 15, 16, 17, 20], (4, 4), 1),  # 5 columns, 4 in the centre block
    (list(range(0, 32, 4)) + [15, 16, 17], (1000, 1000), 0),
])
def test_too_few_columns_outside_the_centre_block_are_named(columns, block, outside):
    acquired = len(set(columns))
    with pytest.raises(CannotAdapt, match=rf"adapt: {outside} of the {acquired} acquired columns lie "
                                          rf"outside the central {block[1]} columns that "
                                          r"adapt\.acs_block .* lower adapt\.acs_block\[1\]"):
        adapt_model(_Gain(), _column_scan(columns), _quick(acs_block=block))


def _few_columns_file(folder: Path) -> Path:
    """A fastMRI test-style file whose 5 acquired columns are the 4-column centre and one more."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    (path,) = simulate_mri_dataset(folder, volumes=1, slices=2, coils=4, size=(32, 32), seed=1)
    keep = np.zeros(32, dtype=bool)
    keep[[14, 15, 16, 17, 24]] = True
    with h5py.File(path, "r+") as f:
        f["mask"] = keep
        f["kspace"][...] = f["kspace"][...] * keep
    return Path(path)


@pytest.mark.skipif("modl_fastmri_diverse" not in __import__(
    "mrirecon.training.weights", fromlist=["x"]).available_weights(), reason="no shipped weights")
def test_a_scan_adaptation_cannot_split_is_reconstructed_by_the_unadapted_model(tmp_path):
    from mrirecon.pipeline.definitions import load_pipeline
    from mrirecon.pipeline.runner import run_pipeline

    src = _few_columns_file(tmp_path / "in")
    images = {}
    for adapt in ("true", "false"):
        config, _ = load_pipeline("mri_learned_adapt", [f"adapt.enabled={adapt}", "adapt.steps=2",
                                                        "export.formats=[hdf5]", "device=cpu"])
        out = tmp_path / f"adapt_{adapt}"
        run_pipeline(config, [src], out)
        record, = json.loads((out / "provenance.json").read_text())["files"]
        assert record["status"] == "ok", record.get("error")  # was failed, exit 1
        with h5py.File(next((out / "reconstructions").glob("*.h5")), "r") as f:
            images[adapt] = f["reconstruction"][()]
        if adapt == "true":
            assert record["adapt"]["stopped"] == "skipped"
            warning, = [w for w in record["warnings"] if "adapt skipped" in w]
            assert "1 of the 5 acquired columns lie outside the central 4 columns" in warning
            assert "adapt.acs_block" in warning and "unadapted model" in warning
    np.testing.assert_array_equal(images["true"], images["false"])  # the unadapted model's image


# ---- F4: a ratio that holds out no point ------------------------------------------------------


def test_a_ratio_that_holds_out_no_point_is_told_apart_from_a_full_centre_block():
    from mrirecon.sampling.split import SplitError, ssdu_split

    mask = torch.zeros(32, dtype=torch.bool)
    mask[::4] = True
    g = torch.Generator().manual_seed(0)
    with pytest.raises(SplitError, match=r"ratio 0\.0001 of the 256 acquired points rounds to 0 "
                                         r"points to hold out \(2\d\d lie outside") as err:
        ssdu_split(mask, (32, 32), g, ratio=1e-4)
    assert err.value.setting == "ratio"  # was "no acquired point outside the ACS block"
    with pytest.raises(SplitError, match=r"acs_block \(1000, 1000\) leaves none of the 256") as err:
        ssdu_split(mask, (32, 32), g, acs_block=(1000, 1000))
    assert err.value.setting == "acs_block"


@pytest.mark.parametrize("setting, key", [({"ratio": 1e-4}, "loss.ssdu.ratio 0.0001 of the"),
                                          ({"acs_block": (1000, 1000)}, r"loss.ssdu.acs_block \(1000")])
def test_ssdu_training_names_the_key_and_file_of_a_split_it_cannot_draw(setting, key):
    from mrirecon.training.config import SSDUConfig
    from mrirecon.training.data import TrainingSample
    from mrirecon.training.ssdu import SelfSupervisedLoss

    (y, op), = _column_scan(list(range(0, 32, 4)))
    sample = TrainingSample(y=y, maps=op.maps, mask=op.mask.reshape(-1), target=None,
                            max_value=torch.tensor([1.0]), fname="scan_7.h5", slice_index=3,
                            num_low_frequencies=1)
    with pytest.raises(ValueError, match=rf"SSDU: scan_7\.h5 slice 3: {key}"):
        SelfSupervisedLoss(SSDUConfig(**setting))(_Gain(), sample, 0)


def test_an_adapt_ratio_that_holds_out_no_point_is_named():
    with pytest.raises(CannotAdapt, match=r"adapt: the training steps' split .*: adapt\.ratio "
                                          r"0\.0001 of the \d+ acquired points rounds to 0"):
        adapt_model(_Gain(), _column_scan(list(range(0, 32, 2))), _quick(ratio=1e-4))


# ---- F5: the validation fraction as realised --------------------------------------------------


@pytest.mark.parametrize("fraction, held", [(0.99, 14), (0.8, 14), (0.001, 1)])
def test_a_validation_fraction_the_scan_cannot_honour_is_warned_about(fraction, held):
    columns = list(range(0, 32, 2)) + [15, 17, 19]  # 19 acquired, 4 in the centre block
    _, report = adapt_model(_Gain(), _column_scan(columns), _quick(validation_fraction=fraction))
    asked = round(fraction * 19)
    warning, = report.warnings  # was: no word
    assert (f"adapt.validation_fraction {fraction:g} of 19 acquired columns asks {asked}, "
            f"but {held} ({held / 19:.2f}) are held back") in warning
    assert report.as_dict()["warnings"] == [warning]


def test_a_validation_fraction_honoured_up_to_rounding_is_not_warned_about():
    columns = list(range(0, 32, 2)) + [15, 17, 19]
    _, report = adapt_model(_Gain(), _column_scan(columns), _quick(validation_fraction=0.2))
    assert report.warnings == [] and "warnings" not in report.as_dict()


# ---- F6 / F7: CT view splits --------------------------------------------------------------------


def test_view_parts_above_the_views_kept_is_refused_at_load(tmp_path):
    from mrirecon.core.config import ConfigError

    p = _train_yaml(tmp_path, "{name: primal_dual}", data="modality: ct, ct_views: 30",
                    loss="ssdu: {view_parts: 100}")
    with pytest.raises(ConfigError, match=r"train\.yaml: loss\.ssdu\.view_parts: 100 view subsets "
                                          r"of the data\.ct_views 30 views"):
        _validated(p)
    p.write_text(p.read_text().replace("view_parts: 100", "view_parts: 30"))
    assert _validated(p).loss.ssdu.view_parts == 30


def test_view_parts_above_a_samples_views_names_the_key_and_file():
    from mrirecon.operators.ct import ct_operator, projector_norm
    from mrirecon.operators.ct_geometry import CTGeometry
    from mrirecon.training.config import SSDUConfig
    from mrirecon.training.data_ct import CTSample
    from mrirecon.training.ssdu import SelfSupervisedLoss

    geometry = CTGeometry.parallel(image_shape=(16, 16), num_views=6, num_detectors=23)
    norm = projector_norm(geometry)
    sample = CTSample(y=ct_operator(geometry)(torch.ones(1, 16, 16)) / norm, geometry=geometry,
                      target=None, max_value=torch.tensor([1.0]), fname="part_000_4", norm=norm)
    with pytest.raises(ValueError, match=r"SSDU: part_000_4 slice 0: loss\.ssdu\.view_parts 8 "
                                         r"for 6 views"):
        SelfSupervisedLoss(SSDUConfig(view_parts=8))(lambda y, op: torch.zeros(1, 16, 16), sample, 0)


def _ct_scan(views: int):
    from mrirecon.operators.ct import ct_operator
    from mrirecon.operators.ct_geometry import CTGeometry

    op = ct_operator(CTGeometry.parallel(image_shape=(16, 16), num_views=views, num_detectors=23))
    return [(op(torch.ones(1, 16, 16)), op)]


@pytest.mark.parametrize("fraction", [0.5, 0.4, 0.2])
def test_ct_adaptation_of_two_views_cannot_split_and_says_so(fraction):
    with pytest.raises(CannotAdapt, match=r"the sinogram has 2 view\(s\).* needs 3 views or more"):
        adapt_model(nn.Identity(), _ct_scan(2), _quick(validation_fraction=fraction))


@pytest.mark.parametrize("views", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("fraction", [0.5, 0.34, 0.2])
def test_every_ct_hold_out_that_is_accepted_leaves_two_views_to_train_on(views, fraction):
    try:
        (_, _, train, val), = _ct_setup(_ct_scan(views), _quick(validation_fraction=fraction))
    except CannotAdapt as exc:  # the adapt stage skips with a warning: 2 views, or none held back
        assert (views == 2 and "needs 3 views or more" in str(exc)) or \
            (views < round(1 / fraction) // 2 + 1 and "none would be held back" in str(exc))
        return
    assert val.numel() >= 1 and train.numel() >= 2
    assert sorted(train.tolist() + val.tolist()) == list(range(views))
