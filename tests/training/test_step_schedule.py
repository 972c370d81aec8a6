"""A trainer run bounded by its step count repeats its weights bit for bit: the learning rate
follows the steps, and the clock (a slow first batch, a slow or loaded machine) never sets it.

The CT trainers (``train staged_ct`` / ``primal_dual_ct``) set every step's rate from the
wall-clock fraction of their budget and had no ``--max-steps``: one command gave 42 and 72
steps and weights 3.3 % apart. ``train modl`` / ``varnet`` / ``prior`` took the larger of the
time and step fractions, so the first step's rate (the step fraction is 0 there) came from the
clock: five runs of ``train modl --max-steps 6`` all differed (3e-8 .. 8e-8)."""

from __future__ import annotations

import shlex
import time
import types

import pytest
import torch
import yaml

from mrirecon.cli import main


class Clock:
    """A fake ``time.perf_counter`` / ``time.time``: ``tick`` seconds pass at every reading."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def fake_time(clock: Clock) -> types.SimpleNamespace:
    return types.SimpleNamespace(perf_counter=clock, time=clock, strftime=time.strftime)


def same_state(a, b) -> bool:
    a, b = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def rerun(command: str, out) -> None:
    """Run a card's ``mrirecon train ...`` command (into ``out``) through the command line."""
    words = shlex.split(command)
    assert words[:2] == ["mrirecon", "train"]
    words[words.index("--out") + 1] = str(out)
    assert main(words[1:]) == 0


@pytest.mark.parametrize("kind, options", [
    ("staged_ct", ["--iterations", "1", "--chans", "4", "--num-pools", "1", "--patch", "32",
                   "--batch", "1", "--pool", "1", "--val-every", "2", "--refresh-every", "2"]),
    ("primal_dual_ct", ["--iterations", "1", "--features", "4", "--n-primal", "2", "--n-dual", "2",
                        "--pool", "1", "--val-every", "2", "--refresh-every", "2"]),
])
def test_a_ct_run_of_max_steps_is_repeated_bit_for_bit_by_its_cards_same_steps_command(
        tmp_path, monkeypatch, kind, options):
    import mrirecon.training.ct_staged as staged
    from mrirecon.data.simulate_ct import ct_simulation_geometry
    from tests.models.problems import ct_phantom_mu, sparse_ct_data

    # a 32 x 32 validation split (the 362 x 362 one, scored at every validation and over the
    # lam grid, is most of a tiny run's time); the training samples are the trainer's own
    full = ct_simulation_geometry("parallel", 32, 48, None, 60.0)
    val = []
    for views, factor in ((30, 3), (60, 2)):
        y, op = sparse_ct_data(ct_phantom_mu(32, 3), full, factor, 1)
        val.append((y[0], op, torch.from_numpy(ct_phantom_mu(32, 3)).float(), views))
    import mrirecon.training.ct_primal_dual as primal_dual

    for module in (staged, primal_dual):
        monkeypatch.setattr(module, "validation_set", lambda sim, hardware=False: val)
    first = tmp_path / "first.pt"
    assert main(["train", kind, "--out", str(first), "--max-steps", "3", "--budget-s", "100000",
                 "--threads", "1", *options]) == 0
    training = yaml.safe_load(first.with_suffix(".yaml").read_text())["training"]
    assert "--max-steps 3" in training["command"]
    assert training.get("steps_per_stage", training.get("steps")) in ([3], 3)
    # the steps of the run, under a budget that never ends it: no clock in the schedule
    same = training["command_same_steps"]
    assert "--max-steps 3" in same and "--budget-s 1000000000.0" in same
    again = tmp_path / "again.pt"
    rerun(same, again)
    assert same_state(first, again)
    # a run continued from it keeps that command in its card's record of the first run, so the
    # chain repeats (the shipped recipes continue in place: --init X --out X); it was dropped
    cont = tmp_path / "cont.pt"
    assert main(["train", kind, "--out", str(cont), "--init", str(first), "--max-steps", "2",
                 "--budget-s", "100000", "--threads", "1", *options]) == 0
    chain = yaml.safe_load(cont.with_suffix(".yaml").read_text())["training"]["first_run"]
    assert chain["command_same_steps"] == same


def test_modl_max_steps_gives_the_same_weights_whatever_the_clock(tmp_path, monkeypatch):
    """The default ``--max-seconds`` (3000) with ``--max-steps 4``: a first batch that takes
    2000 s (worker start-up, simulation) and a slow machine (5 s per clock reading) give the
    weights of a fast one, bit for bit."""
    import mrirecon.training.deploy_mri as deploy
    import mrirecon.training.modl_deploy as md
    from mrirecon.training.deploy_mri import row_band, simulate_slice
    from tests.helpers import DISC_COLS, DISC_ROWS, DiscSource

    import numpy as np

    torch.set_num_threads(1)
    band = row_band(simulate_slice(np.random.default_rng(4), DiscSource(), 4, coils=4,
                                   rows=DISC_ROWS, cols=DISC_COLS), 0, 32)
    monkeypatch.setattr(md, "validation_slices", lambda seed, count: [])
    monkeypatch.setattr(md, "score_slices", lambda model, val: [{"PSNR": 20.0, "SSIM": 0.5}])
    outs = []
    for first_batch_s, tick in ((0.0, 1e-3), (2000.0, 5.0)):
        clock = Clock(tick)

        class Bands(torch.utils.data.IterableDataset):
            def __init__(self, *args, **kwargs):
                super().__init__()

            def __iter__(self, clock=clock, first_batch_s=first_batch_s):
                clock.now += first_batch_s
                while True:
                    yield band

        monkeypatch.setattr(deploy, "DeploymentBands", Bands)
        monkeypatch.setattr(md, "time", fake_time(clock))
        out = tmp_path / f"m{len(outs)}.pt"
        summary = md.train(out, iterations=1, layers=2, features=4, cg_iterations=2, max_steps=4,
                           val_every=2, workers=0, threads=1)
        assert summary["steps"] == 4
        outs.append(out)
    assert same_state(*outs)


def test_prior_max_steps_gives_the_same_weights_on_a_slow_machine(tmp_path, monkeypatch):
    import mrirecon.training.denoiser_prior as dp

    pool = torch.randn(8, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.complex64)
    monkeypatch.setattr(dp, "build_pool", lambda count, patch, seed: (pool, torch.zeros(8, dtype=bool)))
    outs = []
    for tick in (1e-3, 100.0):  # 100 s a clock reading: 3 steps far from the 3000 s budget
        monkeypatch.setattr(dp, "time", fake_time(Clock(tick)))
        out = tmp_path / f"p{len(outs)}.pt"
        assert dp.train(out, patch=16, batch=2, max_steps=3, depth=2, features=4, threads=1,
                        pool_size=8)["steps"] == 3
        outs.append(out)
    assert same_state(*outs)


def test_staged_max_steps_of_another_stage_count_is_refused_before_setup(tmp_path):
    from mrirecon.training.ct_staged import train_staged_ct

    with pytest.raises(ValueError, match=r"train staged_ct: --max-steps 3 4 5: give one step count "
                                         r"\(>= 1\) for every stage or one per stage \(2 stage\(s\)\)"):
        train_staged_ct(tmp_path / "m.pt", iterations=2, max_steps=(3, 4, 5), log=lambda m: None)
    assert not (tmp_path / "m.pt").exists()


def test_a_staged_card_records_each_stages_steps_once_every_stage_is_done(tmp_path):
    from mrirecon.cli import build_parser
    from mrirecon.cli_train import normalise_argv
    from mrirecon.models.unrolled.staged_ct import StagedCTNet
    from mrirecon.training.ct_staged import save

    model = StagedCTNet(iterations=2, chans=4, num_pools=1, lam=[0.1, 0.1], init_seed=0)
    args = dict(seed=0, budget_s=600.0, iterations=2, chans=4, num_pools=1, patch=32, batch=1, pool=2,
                refresh_every=2, lr=1e-3, val_every=5, threads=1)
    val = {30: 20.0, 60: 22.0}
    # after the first stage of two: no command repeats the run yet
    card = save(model, tmp_path / "m.pt", 1, args, [42], [], 60.0, (0.1,) * 3, val)
    assert "command_same_steps" not in card["training"]
    card = save(model, tmp_path / "m.pt", 2, args, [42, 17], [], 120.0, (0.1,) * 3, val)
    same = card["training"]["command_same_steps"]
    assert "--max-steps 42 17" in same and "--budget-s 1000000000.0" in same
    words = shlex.split(same)
    parsed = build_parser().parse_args(normalise_argv(words[1:]))
    assert parsed.max_steps == [42, 17] and parsed.budget_s == 1e9 and parsed.iterations == 2
