"""Classical reconstructions built from operators and solvers, callable by name.

``mrirecon.recon.run("l1_wavelet", y, op, lam=0.002)`` dispatches through the registry;
``available()`` lists the names. The functions are also importable directly.
"""

from mrirecon.recon.ct import fbp, sirt, tv_ct, tv_pdhg
from mrirecon.recon.grappa import grappa
from mrirecon.recon.mri import cg_sense, data_scale, l1_wavelet, tv, zero_filled, zero_filled_rss
from mrirecon.recon.registry import (
    available,
    canonical_parameters,
    describe,
    grappa_rss,
    needs_operator,
    package_problem,
    parameters,
    register,
    run,
)
from mrirecon.recon.variational import tv_least_squares, tv_objective

__all__ = [
    "available",
    "canonical_parameters",
    "cg_sense",
    "data_scale",
    "describe",
    "fbp",
    "grappa",
    "grappa_rss",
    "l1_wavelet",
    "needs_operator",
    "package_problem",
    "parameters",
    "register",
    "run",
    "sirt",
    "tv",
    "tv_ct",
    "tv_least_squares",
    "tv_objective",
    "tv_pdhg",
    "zero_filled",
    "zero_filled_rss",
]

# -- classical priors of the review (issue 9, part A) --------------------------------------
from mrirecon.recon.tgv import TGV_SETTINGS, tgv, tgv_objective, tgv_settings_problem

# each settings_problem: the values the method refuses, refused by a pipeline at load (they
# loaded and failed every input)
register("tgv", tgv, summary="MRI/CT: TGV^2-regularised least squares by PDHG (or ADMM)",
         settings_by_method=TGV_SETTINGS, settings_problem=tgv_settings_problem)
__all__ += ["tgv", "tgv_objective"]

# EPLL with a patch GMM prior (issue 9, part B)
from mrirecon.recon.epll import epll, epll_settings_problem  # noqa: E402

register("epll", epll, needs_op=True,
         summary="MRI/CT: EPLL by half-quadratic splitting with the shipped 8x8 patch GMM prior",
         settings_problem=epll_settings_problem)
__all__.append("epll")
from mrirecon.recon.nonlocal_pnp import pnp_bm3d, pnp_nlm, pnp_settings_problem

register("pnp_nlm", pnp_nlm, summary="MRI/CT: plug-and-play ADMM/HQS with non-local means",
         settings_problem=pnp_settings_problem, needs=("skimage",))
# registered without bm3d too (it was left out: "unknown method 'pnp_bm3d'"); run and bench
# refuse it at load naming the package (registry.package_problem)
register("pnp_bm3d", pnp_bm3d, summary="MRI/CT: plug-and-play ADMM/HQS with BM3D",
         settings_problem=pnp_settings_problem, needs=("bm3d",))
__all__ += ["pnp_bm3d", "pnp_nlm"]
from mrirecon.recon.dictionary import dlmri, dlmri_settings_problem

register("dlmri", dlmri, summary="MRI/CT: DLMRI-style patch dictionary learning (OMP + K-SVD + CG)",
         settings_problem=dlmri_settings_problem)
__all__ += ["dlmri"]
