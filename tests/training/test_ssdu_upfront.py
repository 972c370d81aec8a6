"""Self-supervised (SSDU) sets check before step 1 what failed steps in or went unsaid:
- a fully sampled file whose retrospective mask (``data.mask``, seeded by its name) leaves a
  centre band under 3 columns is refused when the set is made, with a centre fraction that
  works (it failed when the file was first drawn, advising data.maps: learned / leaving the file
  out, neither of which helps: the mask is the setting);
- the band check covers the files used (``max_slices``), as the supervised set's does, with
  the band each kind of maps needs (ESPIRiT 3 columns, Walsh 1: Walsh was refused under 3);
- a validation folder's files without a reference are named when the set is made, not at the
  first validation (``val_every`` steps in); a folder of test files only is said at INFO (it
  warned "1 of 1 ... NMSE / PSNR / SSIM are those of the other 0")."""

from __future__ import annotations

import logging
import re
import shutil

import numpy as np
import pytest
import torch

from mrirecon.sampling.acs import acs_width
from mrirecon.training.config import MaskConfig, SSDUConfig
from mrirecon.training.data_acquired import AcquiredMRISet
from mrirecon.training.ssdu import make_ssdu_validate_fn
from tests.training.test_ssdu import _undersampled_only
from tests.training.test_ssdu_checks import ScaledAdjoint

MASK = MaskConfig(type="random", center_fractions=(0.16,), accelerations=(4,))  # 8 columns


def _simulate(folder, seed, volumes=1, slices=1, masked=False):
    """Fully sampled files; ``masked``: with a 4x random mask (centre fraction 0.16) stored
    beside them, for :func:`_undersampled_only`."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    kw = {"acceleration": 4, "center_fraction": 0.16, "mask_type": "random"} if masked else {}
    return simulate_mri_dataset(folder, volumes=volumes, slices=slices, coils=4, size=(48, 48),
                                seed=seed, resolution=2, **kw)


def _narrow_own_mask(src, out):
    """A test-layout copy of ``src`` whose own mask has a 2-column centre band."""
    from mrirecon.io import read_fastmri, write_fastmri

    k = read_fastmri(src)
    mask = np.zeros(k.data.shape[-1], bool)
    mask[::4] = True
    mask[23:25] = True
    return write_fastmri(out / src.name, k.data * torch.from_numpy(mask), k.header, mask=mask)


def test_a_fully_sampled_file_whose_drawn_band_is_too_narrow_is_refused_when_made(tmp_path):
    _simulate(tmp_path / "fs", seed=11, slices=2)
    # a mask seeded by the file name whose centre band is round(48 x 0.04) = 2 columns, no
    # column drawn beside it: as get() draws it (learned maps: none calibrated)
    candidates = [MaskConfig(kind, (0.04,), (8,)) for kind in ("random", "equispaced", "magic")]
    narrow = next(m for m in candidates
                  if acs_width(AcquiredMRISet(tmp_path / "fs", m, maps="learned").get(0).mask) == 2)
    with pytest.raises(ValueError, match=r"is fully sampled, and the mask data\.mask draws on "
                                         r"it \(\w+, seeded by the file name\) has 2 fully "
                                         r"sampled centre column\(s\)") as err:
        AcquiredMRISet(tmp_path / "fs", narrow, maps="espirit")  # was: raised in get(), steps in
    text = str(err.value)
    assert str(tmp_path / "fs") in text and "data.maps: learned" not in text
    least = float(re.search(r"widen data\.mask\.center_fractions \(to at least ([0-9.]+)",
                            text).group(1))
    wider = MaskConfig(narrow.type, (least,), narrow.accelerations)
    data = AcquiredMRISet(tmp_path / "fs", wider, maps="espirit")  # the advice is accepted
    for i in range(len(data)):
        s = data.get(i)
        assert acs_width(s.mask) >= 3 and torch.isfinite(s.maps.abs()).all()


def test_the_band_check_covers_the_files_used(tmp_path):
    good = _simulate(tmp_path / "a", seed=12, slices=2)
    narrow = _simulate(tmp_path / "b", seed=13, slices=2)
    (tmp_path / "both").mkdir()
    shutil.copy(good[0], tmp_path / "both" / "a.h5")
    shutil.copy(narrow[0], tmp_path / "b" / "b.h5")
    _narrow_own_mask(tmp_path / "b" / "b.h5", tmp_path / "both")
    with pytest.raises(ValueError, match=r"b\.h5 \(mask row 0\) has 2 fully sampled centre "
                                         r"column\(s\); .*use data\.maps: walsh"):
        AcquiredMRISet(tmp_path / "both", MASK, maps="espirit")
    kept = AcquiredMRISet(tmp_path / "both", MASK, maps="espirit", max_slices=2)  # a.h5's only
    assert [p.name for p in kept.source_files()] == ["a.h5"]
    # Walsh maps calibrate from any band (as supervised training and mrirecon run take them):
    # 2 columns were refused as for ESPIRiT
    walsh = AcquiredMRISet(tmp_path / "both", MASK, maps="walsh")
    for i in range(len(walsh)):
        maps = walsh.get(i).maps[0]
        norm = (maps.abs() ** 2).sum(0)
        assert torch.isfinite(norm).all() and torch.allclose(
            norm.max(), torch.ones(()), atol=1e3 * torch.finfo(torch.float32).eps)


def test_files_without_a_reference_are_named_when_the_validation_set_is_made(tmp_path, caplog):
    full = _simulate(tmp_path / "full", seed=14, volumes=2)
    (tested,) = _undersampled_only(_simulate(tmp_path / "extra", seed=15, masked=True),
                                   tmp_path / "test")
    (tmp_path / "mixed").mkdir()
    for p in [*full, tested]:
        shutil.copy(p, tmp_path / "mixed" / p.name)
    with caplog.at_level(logging.INFO, logger="mrirecon.train"):
        mixed = AcquiredMRISet(tmp_path / "mixed", MASK, maps="espirit", train=False)
        named = [r for r in caplog.records if "no reference" in r.getMessage()]
        assert len(named) == 1 and named[0].levelno == logging.WARNING  # before any validation
        assert tested.name in named[0].getMessage() and "1 of 3" in named[0].getMessage()
        assert mixed.files_without_reference() == [tested.name]
        caplog.clear()
        tests_only = AcquiredMRISet(tmp_path / "test", MASK, maps="espirit", train=False)
        scores = make_ssdu_validate_fn(tests_only, SSDUConfig())(ScaledAdjoint(), "cpu")
    assert set(scores) == {"ssdu_loss"}
    said = [r for r in caplog.records if "reference" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO], [r.getMessage() for r in said]
    assert "val_ssdu_loss only" in said[0].getMessage()
