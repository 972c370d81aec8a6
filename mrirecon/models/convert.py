"""Key mapping at the boundary to the fastMRI reference checkpoints (the one place it lives)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_PREFIXES = ("varnet.", "model.", "module.")
_RULES = (
    (re.compile(r"^sens_net\.norm_unet\.unet\.(.+)$"), r"sensitivity.norm_unet.unet.\1"),
    (re.compile(r"^cascades\.(\d+)\.model\.unet\.(.+)$"), r"cascades.\1.denoiser.unet.\2"),
    (re.compile(r"^cascades\.(\d+)\.dc_weight$"), r"cascades.\1.dc.weight"),
)


def fastmri_varnet_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Map a ``fastmri.models.VarNet`` state dict to :class:`mrirecon.models.VarNet` keys.

    Accepts the plain model state dict or a Lightning ``VarNetModule`` one (keys prefixed with
    ``varnet.``; a ``module.`` DataParallel prefix is stripped too; ``loss.*`` buffers are
    dropped). U-Net parameter names are
    shared, so only the containers are renamed:

    ``sens_net.norm_unet.unet.*`` -> ``sensitivity.norm_unet.unet.*``,
    ``cascades.i.model.unet.*`` -> ``cascades.i.denoiser.unet.*``,
    ``cascades.i.dc_weight`` -> ``cascades.i.dc.weight``.

    Raises ``KeyError`` naming the first key that is no VarNet parameter.
    """
    out: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix) :], True
        if name.startswith("loss."):  # Lightning module's SSIM-loss buffer, not a model weight
            continue
        for pattern, replacement in _RULES:
            if pattern.match(name):
                out[pattern.sub(replacement, name)] = value
                break
        else:
            raise KeyError(f"fastmri_varnet_state_dict: {key!r} is not a fastMRI VarNet parameter")
    return out
