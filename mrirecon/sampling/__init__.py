"""Seeded sampling: fastMRI-compatible Cartesian masks, Poisson-disc and variable-density
masks, radial / spiral / stack-of-stars trajectories, CT view selection, low-dose noise and
binomial dose thinning."""

from mrirecon.sampling.acs import acs_bounds, acs_width
from mrirecon.sampling.cartesian import (
    MASK_TYPES,
    EquispacedFractionMask,
    EquispacedMask,
    MagicFractionMask,
    MagicMask,
    MaskFunction,
    RandomMask,
    apply_mask,
    center_mask,
    create_mask_for_mask_type,
    file_seed,
)
from mrirecon.sampling.nonuniform import (
    GOLDEN_ANGLE_FULL,
    GOLDEN_ANGLE_HALF,
    golden_angle_radial,
    poisson_disc,
    radial_trajectory,
    spiral_trajectory,
    stack_of_stars,
    tiny_golden_angle,
    variable_density,
)
from mrirecon.sampling.views import (check_thinning, limited_angle, low_dose_noise, select_views,
                                     sparse_view, thin_dose, view_factor)

__all__ = [
    "acs_bounds",
    "acs_width",
    "GOLDEN_ANGLE_FULL",
    "GOLDEN_ANGLE_HALF",
    "MASK_TYPES",
    "EquispacedFractionMask",
    "EquispacedMask",
    "MagicFractionMask",
    "MagicMask",
    "MaskFunction",
    "RandomMask",
    "apply_mask",
    "center_mask",
    "check_thinning",
    "create_mask_for_mask_type",
    "file_seed",
    "golden_angle_radial",
    "limited_angle",
    "low_dose_noise",
    "poisson_disc",
    "radial_trajectory",
    "select_views",
    "sparse_view",
    "view_factor",
    "spiral_trajectory",
    "stack_of_stars",
    "thin_dose",
    "tiny_golden_angle",
    "variable_density",
]
