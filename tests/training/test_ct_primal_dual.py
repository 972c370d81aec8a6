"""Continuing a learned primal-dual training (``mrirecon train primal_dual_ct --init``)."""

from __future__ import annotations

import pytest
import torch
import yaml

from mrirecon.models.unrolled.primal_dual import LearnedPrimalDual
from mrirecon.training.ct_primal_dual import save, train_primal_dual_ct

# the smallest network the trainer builds; one pool sample, validated every 3 steps
TINY = dict(iterations=1, features=4, n_primal=2, n_dual=2, pool=2, refresh_every=100,
            val_every=3, threads=1)


def _first_run(out):
    """An init state dict with the card a finished first run leaves beside it."""
    model = LearnedPrimalDual(iterations=1, n_primal=2, n_dual=2, features=4, fbp_start=True,
                              init_seed=3)
    args = {"budget_s": 600.0, "seed": 0, **{k: v for k, v in TINY.items()}, "lr": 1e-3}
    curve = [{"step": 150, "loss": 0.002, "val_psnr": {30: 21.0, 60: 24.5}, "elapsed_s": 300,
              "load": 1.0}]
    card = save(model, out, args, 300, curve, {"step": 150, "val_psnr": {30: 21.0, 60: 24.5}},
                {30: 20.8, 60: 24.3}, 600.0, (0.1, 0.1, 0.1))
    return model, card


def test_a_continuation_never_ends_below_its_start_and_its_card_keeps_the_first_run(tmp_path):
    # a learning rate that wrecks every step must leave the starting weights in --out, bit for
    # bit (written before the first step, so also when --out is another file than --init), and
    # the card must describe both runs
    init, out = tmp_path / "start.pt", tmp_path / "pd.pt"
    _, first = _first_run(init)
    start = torch.load(init, weights_only=True)
    card = train_primal_dual_ct(out, budget_s=10.0, seed=1, lr=10.0, init=str(init),
                                log=lambda m: None, **TINY)
    end = torch.load(out, weights_only=True)
    assert start.keys() == end.keys() and all(torch.equal(start[k], end[k]) for k in start)
    t = card["training"]
    assert t == yaml.safe_load(out.with_suffix(".yaml").read_text())["training"]
    # it trained, and lost: the budget leaves 1 s of steps, 3 of them on a fast machine and 1 on
    # a loaded CI runner (the last step is always validated, so the history is never empty)
    assert t["best_step"] == 0 and t["steps"] >= 1 and t["history"]
    assert all(min(h["val_psnr"].values()) < min(t["validation_psnr_db"].values())
               for h in t["history"])
    assert f"--out {out}" in t["command"] and f"--init {init}" in t["command"] and "--seed 1" in t["command"]
    run1 = t["first_run"]
    assert run1["seed"] == 0 and run1["steps"] == 300 and run1["best_step"] == 150
    assert run1["history"] == first["training"]["history"] and "--init" not in run1["command"]
    assert t["total_wall_time_s"] == pytest.approx(600.0 + t["wall_time_s"], abs=0.1)
    minutes = round(t["total_wall_time_s"] / 60)
    assert card["description"].endswith(
        f"Trained on one shared CPU thread, in 2 runs (each continuing the one before; {minutes} min "
        "in all).")
    assert "runs" not in first["description"] and "first_run" not in first["training"]


def test_init_of_another_architecture_names_the_file_and_the_options(tmp_path):
    out = tmp_path / "pd.pt"
    _first_run(out)
    with pytest.raises(ValueError, match=r"train primal_dual_ct: --init .*pd\.pt.*features"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(out), log=lambda m: None,
                             **{**TINY, "features": 8})
    with pytest.raises(FileNotFoundError, match=r"train primal_dual_ct: --init .*missing\.pt"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(tmp_path / "missing.pt"),
                             log=lambda m: None, **TINY)
    assert not (tmp_path / "new.pt").exists()


@pytest.mark.parametrize("edit, message", [
    # the primal_dual_ct_sim card: no fbp_start, i.e. trained from A^T y; the shapes match, so
    # it was continued as an FBP-start model without a word
    (lambda m: m["params"].pop("fbp_start"),
     r"model.params.fbp_start = False \(absent: LearnedPrimalDual's default\), this run True"),
    (lambda m: m.update(name="staged_ct"), r"has model.name 'staged_ct', this run trains 'primal_dual'"),
])
def test_init_whose_card_describes_another_function_is_refused(tmp_path, edit, message):
    init = tmp_path / "pd.pt"
    _first_run(init)
    card = yaml.safe_load(init.with_suffix(".yaml").read_text())
    edit(card["model"])
    init.with_suffix(".yaml").write_text(yaml.safe_dump(card))
    with pytest.raises(ValueError, match=rf"train primal_dual_ct: --init {init}: its card .*{message}"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(init), log=lambda m: None,
                             **TINY)
    assert not (tmp_path / "new.pt").exists()


def test_a_diverged_run_writes_nothing_and_says_so(tmp_path):
    # every validation score NaN / Inf: no card without weights, no "wrote" in the log
    out, logged = tmp_path / "pd.pt", []
    with pytest.raises(ValueError, match=r"no validation score of the \d+ steps was finite .*--lr, "
                                         r"now 1e\+30.*nothing written to .*pd\.pt"):
        train_primal_dual_ct(out, budget_s=5.0, lr=1e30, log=logged.append, **TINY)
    assert list(tmp_path.iterdir()) == [] and not any("wrote" in m for m in logged)


def test_init_that_is_a_folder_or_holds_nan_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError,
                       match=r"train primal_dual_ct: --init: .* is a folder, not a \.pt state dict"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(tmp_path), log=lambda m: None,
                             **TINY)
    init = tmp_path / "start.pt"
    model, _ = _first_run(init)
    state = model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].fill_(float("nan"))
    torch.save(state, init)
    with pytest.raises(ValueError, match=rf"--init: .*start\.pt holds NaN or Inf values in 1 of its "
                                         rf"\d+ tensors \({name}\)"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(init), log=lambda m: None,
                             **TINY)
    init.write_bytes(b"")
    with pytest.raises(ValueError, match=r"start\.pt is truncated or damaged: empty, 0 bytes"):
        train_primal_dual_ct(tmp_path / "new.pt", budget_s=5.0, init=str(init), log=lambda m: None,
                             **TINY)
    assert not (tmp_path / "new.pt").exists() and not (tmp_path / "new.yaml").exists()
