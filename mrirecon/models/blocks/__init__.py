"""Data-consistency layers shared by every unrolled model and every modality."""

from mrirecon.models.blocks.cg_dc import ProximalDC, cg_solve
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.blocks.hard_dc import HardProjectionDC
from mrirecon.models.blocks.soft_dc import SoftKspaceDC, kspace_mask

__all__ = ["GradientDC", "HardProjectionDC", "ProximalDC", "SoftKspaceDC", "cg_solve", "kspace_mask"]
