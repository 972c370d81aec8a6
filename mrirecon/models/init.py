"""One way to seed weight initialisation, shared by every model.

Every model takes ``init_seed``:

- ``None`` (the default of most models): the weights are drawn from torch's global generator,
  so whoever builds the model decides (the trainer calls ``torch.manual_seed(cfg.seed)``
  before ``build_model``, which makes a training run reproducible);
- an ``int``: the weights are drawn inside :func:`seeded_init`, i.e. from the CPU generator
  seeded with it, and the global generator is left exactly as it was; the CUDA (MPS, XPU)
  generators are not seeded (``torch.manual_seed``, which seeded them for good, is not
  called). Two models built with the same seed and parameters have identical weights,
  wherever they are built.

(VN and ADMM-CSNet default to ``init_seed=0``: their filters were always seeded.)

Threads: torch's CPU generator is one per process. Seeded builds (and the builds of
:func:`~mrirecon.training.weights.build_to_load`) take one module-level re-entrant lock
(:func:`build_lock`), so they run one at a time and a seeded build from a thread has the weights
of a serial one. Nothing stops another thread from drawing from the global generator meanwhile:
its draws during a seeded build come from the seeded state (and change the build's weights), and
the restore at the end of the build rewinds its stream. Build models before starting threads
that draw random numbers, or let those threads draw from their own ``torch.Generator``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

_BUILD_LOCK = threading.RLock()


def _new_lock_after_fork() -> None:
    # a fork while another thread built a model would leave the child's copy held for good
    global _BUILD_LOCK
    _BUILD_LOCK = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def build_lock() -> threading.RLock:
    """The re-entrant lock that seeded builds hold while they fork and reseed torch's CPU
    generator (a seeded build inside another, e.g. a denoiser built by name, re-enters it)."""
    return _BUILD_LOCK


@contextlib.contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Context in which module construction draws its random weights from ``seed``.

    ``None`` does nothing (the global generator is used and advanced as usual). With an int,
    the CPU generator's state is saved, seeded with ``seed`` and restored on exit, so code after
    the block sees the global random stream as if the block had not run. Only the CPU
    generator is seeded (``torch.default_generator.manual_seed``): the weights are those
    ``torch.manual_seed(seed)`` gave, bit for bit, but no accelerator's generator is touched
    (under ``torch.set_default_device("cuda")``, where the weights are drawn from that
    device's generator, it is seeded too, and restored on exit).

    The block holds :func:`build_lock`, so seeded builds from several threads run one at a time
    and give the serial weights. While it runs, any other thread that draws from torch's global
    generator draws from the seeded state and has its stream rewound at the exit: build models
    before starting such threads, or give them their own ``torch.Generator``.
    """
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"init_seed must be an int or None, got {type(seed).__name__}")
    # torch.manual_seed would seed every CUDA/MPS/XPU generator too, which the fork does not
    # restore: only the generators the weights are drawn from are seeded, each in the fork
    default = torch.empty(0).device  # torch.set_default_device("cuda"): drawn there
    cuda = [] if default.type != "cuda" else [
        default.index if default.index is not None else torch.cuda.current_device()]
    with build_lock(), torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(seed)
        yield
