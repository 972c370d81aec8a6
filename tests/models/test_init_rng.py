"""What seeded model construction and weight loading leave of the caller's random state: a
seeded build (``init_seed`` an int, VN's and ADMM-CSNet's default 0, the trainer's critic, the
rebuild check of ``save_model``) seeds the CPU generator of a fork only, never the CUDA (MPS,
XPU) generators, which ``torch.manual_seed`` seeds for good; loading shipped weights draws
nothing from the global stream."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mrirecon.models import build_model
from mrirecon.models.init import seeded_init


@pytest.fixture
def device_seeds(monkeypatch) -> list[tuple[str, int]]:
    """Every seed given to an accelerator's generators (``torch.manual_seed`` gives one to
    each kind; on a CPU-only build CUDA's is queued and applied when CUDA starts)."""
    calls: list[tuple[str, int]] = []
    for module, name in ((torch.cuda, "manual_seed_all"), (torch.cuda, "manual_seed"),
                         (torch.mps, "manual_seed"), (torch.xpu, "manual_seed_all")):
        real = getattr(module, name)

        def record(seed, *args, _real=real, _label=f"{module.__name__}.{name}", **kwargs):
            calls.append((_label, int(seed)))
            return _real(seed, *args, **kwargs)

        monkeypatch.setattr(module, name, record)
    return calls


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _as_manual_seed(seed: int, build) -> dict[str, torch.Tensor]:
    """The weights ``build()`` draws after ``torch.manual_seed(seed)`` (what seeded_init did)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _state(build())


def test_seeded_builds_seed_no_accelerator_generator(device_seeds, tmp_path):
    """``build_model("vn")`` (init_seed 0), ``build_model("modl", init_seed=1)`` and
    ``save_model`` (whose card check rebuilds the model) called torch.cuda.manual_seed_all(0),
    (1), (1): the user's CUDA stream was reseeded for good. Now no accelerator seed is set and
    the CPU stream is as before."""
    from mrirecon.training.run import save_model

    torch.manual_seed(123)  # the user's seed, of every device
    cpu = torch.get_rng_state()
    device_seeds.clear()
    vn = build_model("vn")
    modl = build_model("modl", init_seed=1)
    save_model(modl, tmp_path / "m.pt")
    assert device_seeds == []
    assert torch.equal(torch.get_rng_state(), cpu)
    assert vn.build_params.get("init_seed", 0) == 0


def test_seeded_weights_are_those_of_manual_seed(device_seeds):
    """The CPU weights are bit for bit those drawn after ``torch.manual_seed(seed)``."""
    for name, seed in (("vn", 0), ("modl", 7), ("varnet", 3)):
        want = _as_manual_seed(seed, lambda: build_model(name, init_seed=None))
        device_seeds.clear()
        got = _state(build_model(name, init_seed=seed))
        assert device_seeds == []
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), name
    with seeded_init(5):
        a = torch.rand(4)
    with seeded_init(5):
        assert torch.equal(torch.rand(4), a)
    assert device_seeds == []


def test_the_critic_is_seeded_without_the_accelerators(device_seeds):
    """``Trainer._critic`` (loss.adversarial > 0) draws the discriminator from seed + 1 with
    the same weights as after ``torch.manual_seed(seed + 1)``, seeding no accelerator."""
    from mrirecon.training.losses_gan import AdversarialCritic
    from mrirecon.training.trainer import Trainer

    loss = SimpleNamespace(adversarial=0.1, adversarial_mode="lsgan", discriminator_lr=1e-4)
    fake = SimpleNamespace(cfg=SimpleNamespace(seed=4, loss=loss), device=torch.device("cpu"))
    torch.manual_seed(99)
    cpu = torch.get_rng_state()
    device_seeds.clear()
    critic = Trainer._critic(fake)
    assert device_seeds == []
    assert torch.equal(torch.get_rng_state(), cpu)
    want = _as_manual_seed(5, lambda: AdversarialCritic(mode="lsgan", lr=1e-4).discriminator)
    got = critic.discriminator.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_default_device_is_seeded_and_restored():
    """Under ``torch.set_default_device("cuda")`` the weights are drawn on the GPU: seeded
    there (two builds agree) and that generator restored after each build."""
    torch.cuda.manual_seed(11)
    state = torch.cuda.get_rng_state()
    torch.set_default_device("cuda")
    try:
        a, b = _state(build_model("modl", init_seed=2)), _state(build_model("modl", init_seed=2))
    finally:
        torch.set_default_device(None)
    assert all(v.is_cuda for v in a.values())
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(torch.cuda.get_rng_state(), state)


def _refused(load) -> None:
    """``load()`` refuses the weights naming the size they fit (found by rebuilding)."""
    with pytest.raises(ValueError, match="they fit modl with features=8"):
        load()


def _draw_after(load) -> torch.Tensor:
    torch.manual_seed(0)
    load()
    return torch.randn(3)


@pytest.mark.parametrize("load", ["pretrained_modl", "pretrained_pnp", "model_shipped",
                                  "model_cardless", "model_cardless_mismatch"])
def test_loading_weights_leaves_the_global_stream_alone(load, tmp_path):
    """``torch.manual_seed(0); load; torch.randn(3)`` gave [-0.120, 0.084, -0.398] for the
    shipped MoDL instead of [1.541, -0.293, -2.179]: the model was built with a random
    initialisation from the global stream, then overwritten by the weights. Now the draw
    after a load is the draw without it (each loader: a card, a shipped name, a state dict
    without a card, and one whose size search rebuilds the model several times)."""
    from mrirecon.training.weights import load_model, load_pretrained

    plain = build_model("modl", features=8, iterations=1, init_seed=0)
    torch.save(plain.state_dict(), tmp_path / "bare.pt")
    loads = {
        "pretrained_modl": lambda: load_pretrained("modl_brain_sim"),
        "pretrained_pnp": lambda: load_pretrained("pnp_dncnn_brain_sim"),
        "model_shipped": lambda: load_model("modl", {}, "modl_brain_sim"),
        "model_cardless": lambda: load_model("modl", {"features": 8, "iterations": 1},
                                             tmp_path / "bare.pt"),
        "model_cardless_mismatch": lambda: _refused(
            lambda: load_model("modl", {"iterations": 1}, tmp_path / "bare.pt")),
    }
    want = _draw_after(lambda: None)
    assert torch.equal(_draw_after(loads[load]), want)
