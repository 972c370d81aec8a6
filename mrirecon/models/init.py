"""One way to seed weight initialisation, shared by every model.

Every model takes ``init_seed``:

- ``None`` (the default of most models): the weights are drawn from torch's global generator,
  so whoever builds the model decides (the trainer calls ``torch.manual_seed(cfg.seed)``
  before ``build_model``, which makes a training run reproducible);
- an ``int``: the weights are drawn inside :func:`seeded_init`, i.e. from the CPU generator
  seeded with it, and the global generator is left exactly as it was. Two models built with
  the same seed and parameters have identical weights, wherever they are built.

(VN and ADMM-CSNet default to ``init_seed=0``: their filters were always seeded.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded_init(seed: int | None) -> Iterator[None]:
    """Context in which module construction draws its random weights from ``seed``.

    ``None`` does nothing (the global generator is used and advanced as usual). With an int,
    the CPU generator's state is saved, seeded with ``seed`` and restored on exit, so code after
    the block sees the global random stream as if the block had not run.
    """
    if seed is None:
        yield
        return
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"init_seed must be an int or None, got {type(seed).__name__}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
