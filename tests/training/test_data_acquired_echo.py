"""SSDU training on acquired data with a partial echo, and files that hold several volumes
(``AcquiredMRISet``).

A partial echo leaves one side of every readout never sampled. ``mrirecon run`` gives such a slice
an ``(H, W)`` operator mask that leaves those rows unsampled (``pipeline.sampling_mri``); training
gave the sample a ``(W,)`` column mask, so SSDU put the never-sampled rows into both its
data-consistency and loss sets as measured zeros (390 of 1229 and 122 of 819 points in the
audit's 64 x 48 file): the model learnt to predict zeros there, another problem than the one it
is deployed on.
"""

import ismrmrd
import numpy as np
import pytest
import torch

from mrirecon.sampling.split import ssdu_split
from tests.io.test_io_ismrmrd import COILS, ENC_X, ENC_Y, acquisition, cplx, make_xml, write

X = ismrmrd.xsd
ECHO0 = 4  # rows 0..3 of the 16-sample readout never sampled
LINES = sorted(set(range(0, ENC_Y, 2)) | {5, 7})  # every 2nd line, a 5-line centre band


def _partial_echo_scan(path, contrasts=1):
    rng = np.random.default_rng(2)
    acqs = [acquisition(cplx(rng, COILS, ENC_X - ECHO0), y, 0, center=ENC_X // 2 - ECHO0)
            for y in LINES]
    for a, c in zip(acqs, np.arange(len(acqs)) % contrasts):
        a.idx.contrast = int(c)
    write(path, make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1), acqs)
    return path


def _expected(kspace, header, columns):
    """The operator mask ``mrirecon run`` gives the slice (its readout kept as acquired)."""
    from mrirecon.pipeline.sampling_mri import readout_support, zero_rows_echo

    rows = readout_support(zero_rows_echo(header, kspace), kspace.shape[-2])
    return rows[:, None] & columns.reshape(1, -1).bool()


@pytest.mark.parametrize("layout", ["ismrmrd", "fastmri"])
def test_ssdu_splits_leave_a_partial_echos_never_sampled_rows_out(tmp_path, layout):
    """The sample's operator mask is the run's ``(H, W)`` mask (columns x the readout rows that
    hold data), for an ISMRMRD file (the reader's ``readout_range``) and for the same k-space in
    the fastMRI layout (a band of zero rows on one side, ``zero_rows_echo``); no SSDU split puts
    a point on the never-sampled rows, and the two sets still partition the acquired points."""
    from mrirecon.io import read_ismrmrd, write_fastmri
    from mrirecon.training.data_acquired import AcquiredMRISet

    (tmp_path / "data").mkdir()
    source = _partial_echo_scan(tmp_path / ("data" if layout == "ismrmrd" else ".") / "pe.h5")
    k = read_ismrmrd(source)
    assert k.header.extra["readout_range"] == [ECHO0, ENC_X, ENC_X]
    if layout == "fastmri":
        extra = {key: v for key, v in k.header.extra.items()
                 if key not in ("readout_range", "partial_echo_note")}
        write_fastmri(tmp_path / "data" / "pe.h5", k.data, k.header.with_(extra=extra),
                      mask=k.mask)
    s = AcquiredMRISet(tmp_path / "data", maps="walsh").get(0)
    columns = torch.zeros(ENC_Y, dtype=torch.bool)
    columns[LINES] = True
    op = s.operator()
    assert torch.equal(op.mask.bool().cpu(), _expected(k.data[0], k.header, columns))
    assert not op.mask[:ECHO0].any() and bool(op.mask[ECHO0:, LINES].all())
    assert s.num_low_frequencies == 5  # the centre band of the columns (4..8), as before
    acquired = int(op.mask.sum())
    for seed in range(5):
        dc, loss = ssdu_split(op.mask.cpu(), (ENC_X, ENC_Y), torch.Generator().manual_seed(seed),
                              ratio=0.4)
        assert not dc[:ECHO0].any() and not loss[:ECHO0].any()
        assert int(dc.sum()) + int(loss.sum()) == acquired and not (dc & loss).any()


def test_a_full_echo_keeps_its_column_mask(tmp_path):
    """Without a never-sampled side the sample's mask stays the ``(W,)`` columns."""
    from mrirecon.training.data_acquired import AcquiredMRISet

    rng = np.random.default_rng(3)
    write(tmp_path / "full.h5", make_xml(step1=(0, ENC_Y - 1, ENC_Y // 2), slices=1),
          [acquisition(cplx(rng, COILS, ENC_X), y, 0, center=ENC_X // 2) for y in LINES])
    s = AcquiredMRISet(tmp_path / "full.h5", maps="walsh").get(0)
    assert s.mask.shape == (ENC_Y,) and int(s.mask.sum()) == len(LINES)


def test_several_echoes_in_one_file_get_advice_that_works_for_training(tmp_path):
    """A file with two contrasts (echoes) was refused advising ``--set load.counters.contrast``,
    which training does not have; the refusal now says what to do for training."""
    from mrirecon.io.errors import DataFormatError
    from mrirecon.training.data_acquired import AcquiredMRISet

    path = _partial_echo_scan(tmp_path / "echoes.h5", contrasts=2)
    with pytest.raises(DataFormatError) as err:
        AcquiredMRISet(path, maps="walsh")
    message = str(err.value)
    assert "idx.contrast: found values [0, 1]" in message
    assert "load.counters" not in message.replace("training has no load.counters", "")
    assert "one file per idx.contrast value" in message and "data.train" in message
