"""Data-consistency layers shared by every unrolled model and every modality."""

from mrirecon.models.blocks.cg_dc import ProximalDC, solve_proximal
from mrirecon.models.blocks.gradient_dc import GradientDC
from mrirecon.models.blocks.hard_dc import HardProjectionDC
from mrirecon.models.blocks.soft_dc import SoftKspaceDC, kspace_mask

__all__ = ["GradientDC", "HardProjectionDC", "ProximalDC", "SoftKspaceDC", "solve_proximal", "kspace_mask"]
