"""Self-supervised (SSDU) training on a user's fastMRI-layout folders:
- a validation folder mixing test-layout files (no reference) with fully sampled ones scores the
  referenced volumes (one file without a reference had turned NMSE / PSNR / SSIM off for all,
  the card's validation record and baseline with them, without a word) and names the others;
- a file whose own mask's centre band is too narrow for coil maps is refused when the set is
  made, by path (it failed when its slice was first drawn, steps in, advising data.maps: learned,
  which loss.ssdu refuses);
- a fully sampled validation folder's accelerations are compared with a test folder's as drawn,
  with mrirecon run's 5 % slack (a nominal 8x beside an achieved 7.95x was "outside the range")."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
import torch

from mrirecon.training.config import MaskConfig, SSDUConfig
from mrirecon.training.data_acquired import AcquiredMRISet
from mrirecon.training.ssdu import make_ssdu_validate_fn
from mrirecon.training.validation import validation_mismatch
from tests.training.test_ssdu import _undersampled_only

MASK = MaskConfig(type="random", center_fractions=(0.16,), accelerations=(4,))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("ssdu_checks")
    kw = {"coils": 4, "size": (48, 48), "acceleration": 4, "center_fraction": 0.16,
          "mask_type": "random", "resolution": 2}
    full = simulate_mri_dataset(root / "full", volumes=2, slices=2, seed=5, **kw)
    extra = simulate_mri_dataset(root / "extra", volumes=1, slices=2, seed=6, **kw)
    (tested,) = _undersampled_only(extra, root / "test")
    (root / "mixed").mkdir()
    for p in [*full, tested]:
        shutil.copy(p, root / "mixed" / p.name)
    return root, tested.name


class ScaledAdjoint(torch.nn.Module):
    """A model of one parameter: its image is A^H y times that parameter."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, y, op):
        return self.w * op.adjoint(y)


def test_a_mixed_validation_folder_scores_the_referenced_volumes_and_names_the_rest(folders,
                                                                                 caplog):
    root, tested = folders
    cfg = SSDUConfig()
    mixed = AcquiredMRISet(root / "mixed", MASK, maps="espirit", train=False)
    alone = AcquiredMRISet(root / "full", MASK, maps="espirit", train=False)
    model = ScaledAdjoint()
    with caplog.at_level(logging.WARNING, logger="mrirecon.train"):
        got = make_ssdu_validate_fn(mixed, cfg)(model, "cpu")
    want = make_ssdu_validate_fn(alone, cfg)(model, "cpu")
    for metric in ("NMSE", "PSNR", "SSIM"):
        assert metric in got and got[metric] == want[metric], (got, want)
    said = [r.getMessage() for r in caplog.records if "no reference" in r.getMessage()]
    assert len(said) == 1 and tested in said[0] and "1 of 3" in said[0], said


def test_a_mask_whose_centre_band_is_too_narrow_is_refused_when_the_set_is_made(tmp_path):
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io import read_fastmri, write_fastmri

    (src,) = simulate_mri_dataset(tmp_path / "full", volumes=1, slices=1, coils=4, size=(48, 48),
                                  seed=7, resolution=2)
    k = read_fastmri(src)
    mask = np.zeros(48, bool)
    mask[::4] = True
    mask[23:25] = True  # a 2-column centre band
    path = write_fastmri(tmp_path / "narrow" / src.name, k.data * torch.from_numpy(mask), k.header,
                         mask=mask)
    with pytest.raises(ValueError, match=r"has 2 fully sampled centre column\(s\)") as err:
        AcquiredMRISet(tmp_path / "narrow", MASK, maps="espirit")
    assert str(path) in str(err.value) and "data.maps: learned" not in str(err.value)
    AcquiredMRISet(tmp_path / "narrow", MASK, maps="learned")  # needs no calibration band


def test_accelerations_are_compared_with_run_slack():
    train = {"accelerations": [3.8837, 7.9524]}
    assert validation_mismatch(train, {"accelerations": [3.8837, 8.0]}) == []
    assert validation_mismatch(train, {"accelerations": [3.8837, 8.5]}) != []
    assert validation_mismatch(train, {"accelerations": [3.6, 7.9]}) != []
    # other numbers keep the exact rule
    assert validation_mismatch({"coils": [8, 8]}, {"coils": [8, 9]}) != []


def test_a_fully_sampled_sets_range_holds_the_rates_its_masks_achieve(tmp_path):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    simulate_mri_dataset(tmp_path / "fs", volumes=1, slices=1, coils=4, size=(48, 48), seed=8,
                         resolution=2)  # fully sampled: the set draws its masks
    rng = AcquiredMRISet(tmp_path / "fs", MaskConfig(type="equispaced_fraction",
                                                     center_fractions=(0.08,), accelerations=(8,)),
                         maps="espirit").training_range()
    lo, hi = rng["accelerations"]
    # 48 columns: an 8x equispaced-fraction mask keeps 5 of them (9.6x as drawn); was [8, 8]
    assert lo <= 8.0 <= hi and (lo, hi) != (8.0, 8.0), rng


def test_model_reconstructor_scores_in_eval_mode_and_puts_the_mode_back():
    """``model_reconstructor``'s docstring said eval mode; it left that to the caller, so a model
    in train mode (as the trainer leaves it) was scored with batch statistics (16.2 against 21.1
    dB) and its running statistics moved."""
    from mrirecon.training.validation import model_reconstructor

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = torch.nn.BatchNorm2d(1)

        def forward(self, y, op):
            return self.bn(y.abs())

    class Sample:
        y = torch.rand(1, 1, 8, 8) * 5
        target = torch.zeros(1, 8, 8)

        def to(self, device):
            return self

        def operator(self):
            return None

    net = Net().train()
    with torch.no_grad():
        net.bn.running_mean.fill_(1.0)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = model_reconstructor(net)(Sample())
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with torch.no_grad():
        want = net.eval()(Sample.y, None)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
