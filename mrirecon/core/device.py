"""Device names as users write them (``"cpu"``, ``"cuda"``, ``"auto"``): one resolution rule for
``mrirecon run``, ``mrirecon bench`` and training."""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device | None) -> str:
    """``"cpu"`` or ``"cuda"``: ``"auto"`` (and ``None``) picks CUDA when torch sees a GPU.

    Raises
    ------
    ValueError
        ``"cuda"`` asked for but no GPU is available to torch, or an unknown name.
    """
    name = "auto" if name is None else str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = name.split(":", 1)[0]
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA GPU is available to torch here; use --device "
                         "cpu (or auto)")
    return name
