"""Device names as users write them (``"cpu"``, ``"cuda"``, ``"auto"``): one resolution rule for
``mrirecon run``, ``mrirecon bench`` and training."""

from __future__ import annotations

import torch

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str | torch.device | None, source: str | None = None) -> str:
    """``"cpu"`` or ``"cuda"``: ``"auto"`` (and ``None``) picks CUDA when torch sees a GPU.

    ``source`` names where the device was given, as the user wrote it (``"--device"``,
    ``"map_location"``, ``"device"`` of a config): the messages name it and give the fix in
    its terms. Without it they speak of the ``device`` setting, which is right wherever it came
    from (they once advised ``--device cpu`` to ``mrirecon train --set device=cuda``, which
    has no ``--device``, and to a pipeline YAML's ``device: cuda`` run from Python).

    Raises
    ------
    ValueError
        ``"cuda"`` asked for but no GPU is available to torch, or an unknown name.
    """
    name = "auto" if name is None else str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = name.split(":", 1)[0]
    what = source or "device"
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"{what} must be one of {', '.join(DEVICES)}, got {name!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what} {name}: no CUDA GPU is available to torch here; use {what} "
                         "cpu (or auto)")
    return name
