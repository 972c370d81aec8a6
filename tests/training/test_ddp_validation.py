"""Two ``torchrun``-style ranks (gloo, CPU): collectives wait ``MRIRECON_COLLECTIVE_TIMEOUT``
seconds, and validation is shared among the ranks (rank 0 validated alone while the others
waited in a barrier, past NCCL's 10-minute default on a full validation set)."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.helpers import TINY_MODL, TINY_MODL_MASK, tiny_modl_config, two_ranks_gather

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_RUN_ID", "TORCHELASTIC_USE_AGENT_STORE", "MRIRECON_RENDEZVOUS_TIMEOUT",
            "MRIRECON_COLLECTIVE_TIMEOUT")
HARD_S = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ranks(script: Path, args: list[str], **extra: str) -> list[tuple[int, str]]:
    """Run ``script`` as rank 0 and rank 1 of a 2-process job; ``[(exit code, output)]``."""
    port = str(_free_port())
    procs = []
    for r in (0, 1):
        env = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
        env.update(OMP_NUM_THREADS="1", RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r),
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                   **extra)
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    out = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=HARD_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a rank still running after {HARD_S} s")
        out.append((p.returncode, text))
    return out

def _tiny_folders(tmp_path: Path, val_volumes: int, val_every: int, **config) -> Path:
    """Simulated 32 x 32 training (2 volumes) and validation (``val_volumes``) folders of 2
    slices and 2 coils, and the tiny MoDL config over them (``config``: more settings, e.g.
    ``loss``; ``acceleration`` / ``center_fraction`` go to the simulator, undersampling the
    files as acquired): the set-up of every two-rank validation test."""
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    kw = {"slices": 2, "coils": 2, "size": (32, 32), "resolution": 2}
    kw.update({k: config.pop(k) for k in ("acceleration", "center_fraction") if k in config})
    simulate_mri_dataset(tmp_path / "train", volumes=2, seed=1, **kw)
    simulate_mri_dataset(tmp_path / "val", volumes=val_volumes, seed=2, **kw)
    return tiny_modl_config(tmp_path, tmp_path / "train", tmp_path / "val", tmp_path / "unused",
                            max_steps=2, val_every=val_every, checkpoint_every=100, **config)



def test_the_collective_timeout_is_read_from_the_environment(monkeypatch):
    from mrirecon.training.distributed import COLLECTIVE_TIMEOUT_S, collective_timeout

    monkeypatch.delenv("MRIRECON_COLLECTIVE_TIMEOUT", raising=False)
    assert collective_timeout() == COLLECTIVE_TIMEOUT_S >= 3600
    monkeypatch.setenv("MRIRECON_COLLECTIVE_TIMEOUT", " 90 ")
    assert collective_timeout() == 90
    for bad, message in (("0", "must be >= 1 (seconds), got 0"), ("-5", "got -5"),
                         ("1h", "must be an integer, got '1h'")):
        monkeypatch.setenv("MRIRECON_COLLECTIVE_TIMEOUT", bad)
        with pytest.raises(ValueError, match="MRIRECON_COLLECTIVE_TIMEOUT in the environment"):
            collective_timeout()
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            collective_timeout()


BARRIER = """
import sys, time
import torch.distributed as dist
from mrirecon.training.distributed import distributed_context
rank, world, _ = distributed_context()
if rank == 0:
    time.sleep(float(sys.argv[1]))
t = time.monotonic()
try:
    dist.barrier()
except Exception as err:
    print(f"failed after {time.monotonic() - t:.1f} s: {type(err).__name__}", flush=True)
    sys.exit(3)
print(f"met after {time.monotonic() - t:.1f} s", flush=True)
dist.destroy_process_group()
"""


def test_collectives_wait_the_collective_timeout(tmp_path):
    """The group was made without ``timeout=``: NCCL's 10 minutes applied, and no setting
    changed it (gloo here: its 30 minutes would let rank 1 wait the 8 s out)."""
    script = tmp_path / "barrier.py"
    script.write_text(BARRIER)
    (rc0, out0), (rc1, out1) = _ranks(script, ["8"], MRIRECON_COLLECTIVE_TIMEOUT="2")
    assert rc1 == 3, out1
    waited = float(out1.split("failed after ")[1].split(" s")[0])
    assert 1.5 <= waited < 6, out1  # the 2 s given, not the 8 s rank 0 slept
    assert rc0 != 0, out0  # its peer is gone: the barrier fails there too
    results = _ranks(script, ["3"], MRIRECON_COLLECTIVE_TIMEOUT="60")
    assert [rc for rc, _ in results] == [0, 0], results


TRAIN = """
import sys, time
import mrirecon.training.run as run
from mrirecon.training.data import MRITrainingSet
import torch.distributed as dist

inside = []  # in the trainer's validation (the card's baseline pass reads the slices too)
get = MRITrainingSet.get
def logged(self, index, mask_seed=None):
    s = get(self, index, mask_seed)
    if inside:
        with open(f"{sys.argv[2]}/read.{dist.get_rank()}", "a") as f:
            f.write(f"{s.fname} {s.slice_index}\\n")
    return s
MRITrainingSet.get = logged

made = run.make_validate_fn
def slow(val_set):
    validate = made(val_set)
    def timed(model, device):
        time.sleep(float(sys.argv[3]))  # a validation longer than the collective timeout
        inside.append(1)
        try:
            return validate(model, device)
        finally:
            inside.clear()
    timed.collective = validate.collective  # a wrapper passes the marker on
    return timed
run.make_validate_fn = slow
run.train_from_config(sys.argv[1], [f"output_dir={sys.argv[2]}/out"], progress=False)
"""


def test_two_ranks_share_the_validation_volumes(tmp_path):
    """Each rank scores every other volume; the logged means are those of one process. A
    validation of 6 s on every rank passes a 4 s collective timeout (rank 0 validating alone
    made rank 1's barrier time out)."""
    from mrirecon.models.registry import build_model
    from mrirecon.training.config import MaskConfig
    from mrirecon.training.data import MRITrainingSet
    from mrirecon.training.validation import validate_model

    cfg = _tiny_folders(tmp_path, val_volumes=3, val_every=2)
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    results = _ranks(script, [str(cfg), str(tmp_path), "6"], MRIRECON_COLLECTIVE_TIMEOUT="4")
    assert [rc for rc, _ in results] == [0, 0], results
    read = [(tmp_path / f"read.{r}").read_text().split("\n")[:-1] for r in (0, 1)]
    files = [{line.split()[0] for line in lines} for lines in read]
    val = MRITrainingSet(tmp_path / "val", MaskConfig(**TINY_MODL_MASK), maps="espirit",
                         train=False)
    names = list(dict.fromkeys(val.volume_keys()))
    assert files == [{names[0], names[2]}, {names[1]}]  # volumes r, r + 2, ... of rank r
    assert sum(map(len, read)) == len(val)  # each slice read once, by one rank
    model = build_model("modl", **TINY_MODL)
    model.load_state_dict(torch.load(tmp_path / "out" / "model.pt", weights_only=True))
    one = validate_model(model, val).mean()
    with open(tmp_path / "out" / "train_log.csv", newline="") as f:
        last = list(csv.DictReader(f))[-1]
    for k, v in one.items():  # float32 images (threads may sum in another order), 8 digits logged
        assert float(last[f"val_{k}"]) == pytest.approx(v, rel=1e-5), k


def test_the_rendezvous_wait_leaves_sighup_its_default_action():
    """While torch waits in C++ for peers, Python's handlers never run: SIGTERM, SIGINT and
    SIGHUP get their default action (the process ends) and the CLI's handlers come back after.
    Was: SIGHUP (the CLI's handler since SIGHUP ends a run as SIGTERM does) was held until the
    rendezvous timed out, up to 600 s."""
    import signal

    from mrirecon.training.distributed import _default_stop_signals

    def handler(signum, frame):  # pragma: no cover - never delivered here
        pass

    previous = signal.signal(signal.SIGHUP, handler)
    try:
        with _default_stop_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is handler
    finally:
        signal.signal(signal.SIGHUP, previous)


class _Store:
    def __init__(self, calls):
        self.calls = calls

    def set_timeout(self, t):
        self.calls.append(("timeout", t.total_seconds()))

    def wait(self, keys):
        self.calls.append(("wait", list(keys)))

    def set(self, key, value):
        self.calls.append(("set", key, value))


@pytest.mark.parametrize("rank, expected", [
    (0, [("timeout", 60.0), ("wait", ["mrirecon/left/1", "mrirecon/left/2"])]),
    (2, [("set", "mrirecon/left/2", "1")]),
])
def test_leave_group_rank_0_waits_for_each_other_rank_once(monkeypatch, rank, expected):
    """Rank 0 waits for the keys ranks 1..W-1 set; a key no rank sets (its own) made every
    multi-process run wait out the minute at its end."""
    import mrirecon.training.distributed as d

    calls: list = []
    monkeypatch.setattr(d.dist, "get_rank", lambda: rank)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 3)
    monkeypatch.setattr(d.dist, "destroy_process_group", lambda: calls.append(("destroy",)))
    monkeypatch.setattr(d, "_RENDEZVOUS_STORE", _Store(calls))
    d.leave_group()
    assert calls == [("destroy",), *expected]
    assert d._RENDEZVOUS_STORE is None


def test_broadcast_buffers_writes_rank_0s_values_into_every_buffer(monkeypatch):
    import mrirecon.training.distributed as d

    m = torch.nn.Module()
    m.register_buffer("f", torch.zeros(3))
    m.register_buffer("b", torch.zeros(2, dtype=torch.bool))
    m.register_buffer("c", torch.zeros(2, dtype=torch.complex64))
    m.register_buffer("t", torch.zeros(2, 3).t())  # not contiguous

    def rank_0_holds_ones(t, src):
        assert src == 0
        t.fill_(1)

    monkeypatch.setattr(d.dist, "broadcast", rank_0_holds_ones)
    d.broadcast_buffers(m)
    assert torch.equal(m.f, torch.ones(3)) and bool(m.b.all())
    assert torch.equal(m.c, torch.full((2,), 1 + 1j, dtype=torch.complex64))
    assert torch.equal(m.t, torch.ones(3, 2))


def _launch(monkeypatch, port="29511"):
    for k, v in {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                 "MRIRECON_RENDEZVOUS_TIMEOUT": "5", "MRIRECON_COLLECTIVE_TIMEOUT": "77"}.items():
        monkeypatch.setenv(k, v)


def test_after_the_rendezvous_the_store_waits_the_collective_timeout(monkeypatch):
    """NCCL creates its communicators at the first collective, through the store: a rank that
    waited there longer than the rendezvous timeout failed though the collective timeout was
    hours."""
    import mrirecon.training.distributed as d

    calls: list = []
    store, seen = _Store(calls), {}
    _launch(monkeypatch)
    monkeypatch.setattr(d.dist, "rendezvous", lambda *a, **k: iter([(store, 0, 2)]))
    monkeypatch.setattr(d.dist, "PrefixStore", lambda prefix, s: s)
    monkeypatch.setattr(d.dist, "init_process_group", lambda **k: seen.update(k))
    monkeypatch.setattr(d, "_RENDEZVOUS_STORE", None)
    d.rendezvous()
    assert calls == [("timeout", 5.0), ("timeout", 77.0)]
    assert seen["timeout"].total_seconds() == 77 and d._RENDEZVOUS_STORE is store


@pytest.mark.parametrize("port", ["0", "65536"])
def test_a_master_port_outside_1_65535_is_refused(monkeypatch, port):
    import mrirecon.training.distributed as d

    _launch(monkeypatch, port)
    monkeypatch.setattr(d.dist, "rendezvous", lambda *a, **k: pytest.fail("it waited"))
    with pytest.raises(ValueError, match=rf"must be a port number in \[1, 65535\], got {port}$"):
        d.rendezvous()


class _Volumes:
    """5 volumes of 2 slices, 16 x 16, with volume_keys(); the prediction a per-volume blur."""

    train = False

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.targets = torch.rand(10, 1, 16, 16, generator=g)

    def __len__(self):
        return 10

    def volume_keys(self):
        return [f"v{i // 2}" for i in range(10)]

    def get(self, i, mask_seed=None):
        return SimpleNamespace(fname=f"v{i // 2}", slice_index=i % 2, target=self.targets[i])


def _recon(s):
    k = int(s.fname[1:]) + 1  # volumes reconstructed differently well
    return s.target + 0.02 * k * torch.sin(torch.arange(16.0) * k)


def test_two_ranks_scores_come_back_in_volume_order(monkeypatch):
    """Rank r scores volumes r, r + W, ...; the gathered report is the 1-process one, volume for
    volume (with 2 volumes per rank the rank-major concatenation is out of order)."""
    from mrirecon.training import validation as V

    data = _Volumes()
    one = V.evaluate_reconstructor(_recon, data)

    def run_rank(rank):
        monkeypatch.setattr(V, "_rank_and_world", lambda distributed: (rank, 2))
        return V.evaluate_reconstructor(_recon, data, distributed=True)

    two = two_ranks_gather(monkeypatch, run_rank)
    assert two.names == one.names == [f"v{i}" for i in range(5)]
    for k in one.values:
        np.testing.assert_array_equal(two.values[k], one.values[k])
