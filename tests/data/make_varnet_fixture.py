"""Make ``tests/data/varnet_tiny_fastmri.pt`` once from the reference ``fastmri.models.VarNet``.

The file holds a tiny reference VarNet's state dict (fastMRI key names), an input in the
reference's format (real ``(B, C, H, W, 2)`` masked k-space, ``(B, 1, 1, W, 1)`` mask) and the
reference's output ``(B, H, W)``, so that the key mapping and the numerics of
``mrirecon.models.VarNet`` are tested even where fastmri is not installed.

Run from the repository root:  ``python tests/data/make_varnet_fixture.py``
"""

from __future__ import annotations

from pathlib import Path

import torch

CONFIG = dict(num_cascades=2, sens_chans=4, sens_pools=2, chans=4, pools=2)
BATCH, COILS, H, W, ACS = 2, 2, 32, 24, 6


def make() -> dict:
    from fastmri.models import VarNet

    torch.manual_seed(0)
    ref = VarNet(**CONFIG).eval()
    g = torch.Generator().manual_seed(1)
    kspace = torch.randn(BATCH, COILS, H, W, 2, generator=g)
    mask = torch.rand(BATCH, W, generator=g) < 0.3
    mask[:, W // 2 - ACS // 2 : W // 2 + ACS // 2] = True
    mask[1, W // 2 + ACS // 2] = False  # asymmetric edge, exercises ACS detection
    mask5 = mask[:, None, None, :, None]
    masked = kspace * mask5
    with torch.no_grad():
        out = ref(masked, mask5, None)
    return {
        "config": CONFIG,
        "state_dict": {k: v.clone() for k, v in ref.state_dict().items()},
        "masked_kspace": masked,
        "mask": mask5,
        "output": out,
    }


if __name__ == "__main__":
    path = Path(__file__).with_name("varnet_tiny_fastmri.pt")
    torch.save(make(), path)
    print(f"wrote {path} ({path.stat().st_size} bytes)")
