"""Two ``torchrun``-style ranks (gloo, CPU): the trainer calls a ``validate_fn`` on every rank
only when it is marked ``collective`` (``make_validate_fn``'s, the SSDU one's), which then share
the work; a user's own ``validate_fn`` runs on rank 0 alone, as documented. Was (0beacf6): every
``validate_fn`` ran on every rank, so SSDU validation was done in full W times over and a user's
rank-0 function ran on each rank."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

from tests.helpers import TINY_MODL, TINY_MODL_MASK
from tests.training.test_ddp_validation import _ranks, _tiny_folders

SSDU = """
import json, sys
import torch.distributed as dist
import mrirecon.training.run as run
import mrirecon.training.ssdu as ssdu
from mrirecon.training.data_acquired import AcquiredMRISet

out = sys.argv[2]
inside = []  # in the trainer's validation (the card's baseline pass reads the slices too)
get = AcquiredMRISet.get
def logged(self, index, mask_seed=None):
    if inside:
        with open(f"{out}/read.{dist.get_rank()}", "a") as f:
            f.write(f"{index}\\n")
    return get(self, index, mask_seed)
AcquiredMRISet.get = logged

made = ssdu.make_ssdu_validate_fn
def watched(val_set, cfg, **kw):
    validate = made(val_set, cfg, **kw)
    def counted(model, device):
        inside.append(1)
        try:
            scores = validate(model, device)
        finally:
            inside.clear()
        with open(f"{out}/scores.{dist.get_rank()}", "a") as f:
            f.write(json.dumps(scores) + "\\n")
        return scores
    counted.collective = getattr(validate, "collective", False)  # as the trainer sees it
    return counted
ssdu.make_ssdu_validate_fn = watched
run.train_from_config(sys.argv[1], [f"output_dir={out}/out"], progress=False)
"""


def test_two_ranks_share_the_ssdu_validation(tmp_path):
    """Rank ``r`` computes the SSDU loss of, and scores, volumes ``r, r + 2, ...``: each slice is
    read twice (loss, scoring) by one rank only; both ranks return the figures of one process.
    Was: both ranks read every slice twice (12 reads on each rank, 24 in all, not 12)."""
    from mrirecon.models.registry import build_model
    from mrirecon.training.config import MaskConfig, SSDUConfig
    from mrirecon.training.data_acquired import AcquiredMRISet
    from mrirecon.training.ssdu import make_ssdu_validate_fn

    ssdu = {"ratio": 0.4, "selection": "uniform", "splits": 2}
    cfg = _tiny_folders(tmp_path, val_volumes=3, val_every=2, acceleration=4,
                        center_fraction=0.16, loss={"ssdu": ssdu})
    script = tmp_path / "ssdu.py"
    script.write_text(SSDU)
    results = _ranks(script, [str(cfg), str(tmp_path)])
    assert [rc for rc, _ in results] == [0, 0], results
    read = [[int(i) for i in (tmp_path / f"read.{r}").read_text().split()] for r in (0, 1)]
    val = AcquiredMRISet(tmp_path / "val", MaskConfig(**TINY_MODL_MASK), "espirit", train=False)
    n = len(val)
    assert n == 6
    keys = val.volume_keys()
    names = list(dict.fromkeys(keys))
    share = [{i for i in range(n) if keys[i] in names[r::2]} for r in (0, 1)]  # volumes r, r + 2
    assert share == [{0, 1, 4, 5}, {2, 3}]
    for r in (0, 1):  # its own slices, once for the loss and once for the scoring
        assert sorted(read[r]) == sorted(list(share[r]) * 2), (r, read[r])
    scores = [json.loads((tmp_path / f"scores.{r}").read_text().splitlines()[-1]) for r in (0, 1)]
    assert scores[0] == scores[1]  # gathered: every rank returns the whole result
    assert set(scores[0]) == {"ssdu_loss", "NMSE", "PSNR", "SSIM"}
    model = build_model("modl", **TINY_MODL)
    model.load_state_dict(torch.load(tmp_path / "out" / "model.pt", weights_only=True))
    one = make_ssdu_validate_fn(val, SSDUConfig(**ssdu))(model, "cpu")
    assert set(one) == set(scores[0])
    for k, v in one.items():  # float32 images (threads may sum in another order)
        assert scores[0][k] == pytest.approx(v, rel=1e-5), k


PLAIN = """
import sys
import torch.distributed as dist
import mrirecon.training.run as run

def plain(val_set):
    def validate(model, device):  # a user's own: no collective marker
        with open(f"{sys.argv[2]}/called.{dist.get_rank()}", "a") as f:
            f.write("1\\n")
        return {"mine": 1.5}
    return validate
run.make_validate_fn = plain
run.train_from_config(sys.argv[1], [f"output_dir={sys.argv[2]}/out"], progress=False)
"""


def test_a_plain_validate_fn_runs_on_rank_0_alone(tmp_path):
    """A ``validate_fn`` without ``collective = True`` is called on rank 0 only (the others wait
    in the barrier), as the trainer's docstring promised before 0beacf6; its scores are logged."""
    cfg = _tiny_folders(tmp_path, val_volumes=1, val_every=1)
    script = tmp_path / "plain.py"
    script.write_text(PLAIN)
    results = _ranks(script, [str(cfg), str(tmp_path)])
    assert [rc for rc, _ in results] == [0, 0], results
    assert (tmp_path / "called.0").read_text().split() == ["1", "1"]  # steps 1 and 2
    assert not (tmp_path / "called.1").exists()
    with open(tmp_path / "out" / "train_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val_mine"]) for r in rows] == [1.5, 1.5]


LEFT = """
import os, sys
import mrirecon.training.run as run

run.train_from_config(sys.argv[1], [f"output_dir={sys.argv[2]}/out"], progress=False)
names = []
for tid in os.listdir("/proc/self/task"):
    try:
        with open(f"/proc/self/task/{tid}/comm") as f:
            names.append(f.read().strip())
    except OSError:  # a thread that ended meanwhile
        pass
print("THREADS", sorted(n for n in names if "gloo" in n or "tcpstore" in n))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads Linux's /proc")
def test_the_process_group_is_gone_when_training_returns(tmp_path):
    """After a two-rank training (DistributedDataParallel) returns, neither rank holds a gloo
    worker or socket thread, nor rank 0 the rendezvous store's: the group was freed by the
    teardown, not left to the process's exit. Was (torch._dynamo first imported by DDP's
    constructor, after the group existed, kept references to it): 3 gloo threads on each rank
    and the store's on rank 0 until exit, where a peer's exit could meet them half torn down
    (a rare SIGABRT, "terminate called without an active exception", of a finished run)."""
    cfg = _tiny_folders(tmp_path, val_volumes=1, val_every=2)
    script = tmp_path / "left.py"
    script.write_text(LEFT)
    results = _ranks(script, [str(cfg), str(tmp_path)])
    assert [rc for rc, _ in results] == [0, 0], results
    for _, out in results:
        assert "THREADS []" in out, out
