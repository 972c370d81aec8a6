"""What ``mrirecon bench`` can run: method names, defaults, masks and learned-model loading.

Classical methods are entries of the :mod:`mrirecon.recon` registry (for MRI its k-space
methods); learned methods are the ``model(y, op)`` models of :mod:`mrirecon.models` (weights
from a file) and the shipped weights of :mod:`mrirecon.training.weights` (used by name). Every
method becomes a :class:`~mrirecon.pipeline.stream.Method` of the pipeline's streaming runner.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mrirecon.models.inference import ready_for_inference
from mrirecon.pipeline.schema import ReconstructConfig
from mrirecon.recon import canonical_parameters
from mrirecon.pipeline.stages_mri import needs_maps  # noqa: F401  (bench.mri imports it from here)
from mrirecon.pipeline.stream import Method
from mrirecon.training.weights import load_model

CHALLENGES = ("multicoil", "singlecoil")
#: Models of the registry that are not ``model(y, op)`` reconstructions.
_BACKBONES = ("unet", "dncnn", "resnet")
#: Defaults of the classical MRI methods (``lam`` relative to the image peak, see
#: :mod:`mrirecon.bench.mri`), tuned on 2026-12-05 on training data, never the bench's:
#: ``simulate mri --volumes 2 --slices 3 --coils 4 --max-coils 8 --size 128 128 --seed 5``, the
#: bench's masks (centre fractions 0.16 / 0.08), best PSNR summed over 4x and 8x, every winner
#: inside its grid (``benchmarks/tune_bench_mri.py``). They had been set by hand and left the
#: iterative solvers short of their minimum: TV at ADMM's absolute ``rho`` 1 (24.46 / 21.04 dB
#: there, against 31.16 / 23.83 at ``rho`` 0.003), CG-SENSE at 10 iterations (23.44 / 20.38
#: against 25.58 / 21.28 at 40), L1-wavelet at 50 FISTA iterations (26.40 / 21.70 against 28.72 /
#: 21.45 at ``lam`` 3e-4 with 300). TGV's ``lam`` 1e-3 won its grid with its ADMM default. The
#: review's other priors, tuned the same way around their function defaults: PnP-NLM ``rho`` 0.01
#: (24.96 / 20.47 dB at its default 1, 29.91 / 22.84), EPLL ``noise_std`` 0.0025 (24.40 / 20.49
#: at 0.02, 27.28 / 22.13), DLMRI ``lam`` 0.003 (25.23 / 21.58 at its default 0.03, 27.05 /
#: 21.86; sparsity 5, its default, won at ``lam`` 0.01).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "cg_sense": {"iterations": 40, "tolerance": 1e-6},
    "l1_wavelet": {"lam": 3e-4, "iterations": 300},
    "tv": {"lam": 3e-4, "iterations": 100, "rho": 0.003},
    "tgv": {"lam": 1e-3, "iterations": 100},
    "pnp_nlm": {"rho": 0.01, "sigma_scale": 3.0},
    "epll": {"noise_std": 0.0025},
    "dlmri": {"lam": 0.003},
}
#: Defaults of the CT methods, tuned once on simulated training data (allowed sources only);
#: iterative methods run on data scaled to an image peak near 1 (see ``stages_ct.reconstruct``).
#: ``tv_ct`` re-tuned on 2026-12-05 for its ADMM solver (``simulate ct --seed 0``, 6 images,
#: 30 of 180 views, lam 5-40 at 100 / 300 iterations: lam 15, 100 iterations, 29.18 dB); its
#: lam 5 of before was tuned for 100 unconverged PDHG iterations, whose early stop smoothed
#: the image (converged, lam 5 gives 1.8 dB less on the bench's images). ``tgv`` re-tuned the
#: same day for its ADMM default, on the same data at 100 iterations (within 0.6 % of the
#: minimum objective): lam 5 / 7 / 10 / 15 / 20 gave 26.59 / 27.04 / 27.43 / 27.64 / 27.58 dB;
#: its lam 5 had suited 100 unconverged PDHG iterations. Bench images (30 of 180 views, one
#: thread): PDHG lam 5 26.29 dB, ADMM lam 5 26.26 dB, ADMM lam 15 28.66 dB (2.1 s per slice).
CT_DEFAULTS: dict[str, dict[str, Any]] = {
    "sirt": {"iterations": 50},
    "tv_ct": {"lam": 15.0, "iterations": 100},
    "tgv": {"lam": 15.0, "iterations": 100},
    "pnp_nlm": {"rho": 0.1, "sigma_scale": 1.0},
}
#: fastMRI centre fractions by acceleration; others use ``0.32 / acceleration``.
CENTER_FRACTIONS = {4.0: 0.08, 8.0: 0.04}


def default_mask_type(challenge: str) -> str:
    """``equispaced_fraction`` for multi-coil, ``random`` for single-coil (fastMRI paper)."""
    return "random" if challenge == "singlecoil" else "equispaced_fraction"


def center_fraction_for(
    acceleration: float, overrides: Mapping[float, float] | None = None
) -> float:
    """Centre fraction used at ``acceleration``: ``overrides``, fastMRI's, or ``0.32 / acc``."""
    acc = float(acceleration)
    table = {**CENTER_FRACTIONS, **{float(k): float(v) for k, v in (overrides or {}).items()}}
    return table.get(acc, 0.32 / acc)


def classical_methods(modality: str = "mri") -> list[str]:
    """Entries of the :mod:`mrirecon.recon` registry for ``modality`` (``"mri"``: the CT
    reconstructions left out; ``"ct"``: the MRI ones), by
    :func:`~mrirecon.pipeline.validate.wrong_modality`."""
    from mrirecon import recon
    from mrirecon.pipeline.validate import wrong_modality

    return [m for m in recon.available() if wrong_modality(m, modality) is None]


def learned_methods(modality: str | None = "mri") -> list[str]:
    """Model names and shipped weights names for ``modality`` (``None``: of both), the
    backbones left out; the other modality's (``staged_ct_lodopab`` for MRI) are refused by
    :func:`build_methods`, so they are not offered."""
    from mrirecon.models.registry import available_models
    from mrirecon.pipeline.validate import wrong_modality
    from mrirecon.training.weights import available_weights

    names = sorted(m for m in available_models() if m not in _BACKBONES) + available_weights()
    return [m for m in names if modality is None or wrong_modality(m, modality) is None]


def available_methods(modality: str = "mri") -> dict[str, list[str]]:
    """``{"classical": [...], "learned": [...]}``: every name the benchmark of ``modality``
    runs (:func:`run_bench` for ``"mri"``)."""
    return {"classical": classical_methods(modality), "learned": learned_methods(modality)}


def parse_methods(methods: str | Sequence[str], modality: str = "mri") -> list[str]:
    """The method names of ``methods``, each once; a name of no modality is refused listing
    the methods of ``modality`` (a name of the other one is refused by :func:`build_methods`,
    saying so)."""
    from mrirecon import recon

    if isinstance(methods, str):
        methods = methods.split(",")
    names = [m.strip() for m in methods if m and m.strip()]
    if not names:
        raise ValueError("run_bench: no methods given")
    if len(set(names)) != len(names):
        raise ValueError(f"run_bench: methods listed twice in {names}")
    known = set(recon.available()) | set(learned_methods(None))
    unknown = [m for m in names if m not in known]
    if unknown:
        valid = available_methods(modality)
        raise ValueError(
            f"run_bench: unknown method(s) {', '.join(map(repr, unknown))}; valid classical "
            f"methods: {', '.join(valid['classical'])}; "
            f"learned models: {', '.join(valid['learned'])}"
        )
    return names


# ---- methods of the runner -------------------------------------------------------------------


def check_settings(names: Sequence[str], weights: Mapping[str, Any], params: Mapping[str, Any],
                   where: str = "run_bench") -> None:
    """Weights and parameters only for methods that are run."""
    stray = sorted(set(weights) - set(names)) + sorted(set(params) - set(names))
    if stray:
        raise ValueError(
            f"{where}: weights/params given for {stray}, which are not among the methods {names}"
        )


def build_methods(names: Iterable[str], classical: Iterable[str],
                  weights: Mapping[str, str | os.PathLike], params: Mapping[str, Mapping[str, Any]],
                  defaults: Mapping[str, Mapping[str, Any]], device, where: str = "run_bench",
                  modality: str = "mri") -> dict[str, Method]:
    """``{name: Method}``: classical methods with ``defaults`` merged under ``params``; learned
    ones loaded (:func:`~mrirecon.training.weights.load_model`) with ``params`` and ``weights``
    and moved to ``device``. A method of the other ``modality`` (an MRI reconstruction in the
    CT bench, a CT model in the MRI bench) or a parameter the method does not take is a
    ``ValueError`` naming it, before any data are read."""
    from mrirecon.core.config import check_params, signature_annotations
    from mrirecon.pipeline.validate import check_classical_settings, check_installed, wrong_modality
    from mrirecon.recon.registry import _lookup, settable_parameters

    classical = set(classical)
    out: dict[str, Method] = {}
    for m in names:
        if m in classical:
            if m in weights:
                raise ValueError(f"{where}: {m} is a classical method; it takes no weights")
            if (why := wrong_modality(m, modality)) is not None:
                raise ValueError(f"{where}: {why}; this benchmark is {modality.upper()}")
            check_installed(m, where, m)  # before its parameters' names, as run
            given = canonical_parameters(m, params.get(m, {}))  # old names: renamed, warned
            check_params(m, given, settable_parameters(m), source=where, prefix=m,
                         annotations=signature_annotations(_lookup(m).fn, 2))
            p = {**defaults.get(m, {}), **given}
            check_classical_settings(m, p, where, m, lambda key, m=m: f"{m}.{key}")  # as run
            out[m] = Method(m, ReconstructConfig(method=m, params=p))
        else:
            if (why := wrong_modality(m, modality)) is not None:  # by name, before loading
                raise ValueError(f"{where}: {why}; this benchmark is {modality.upper()}")
            model = ready_for_inference(load_model(m, dict(params.get(m, {})), weights.get(m)),
                                        device)  # as the pipeline runs it
            if (why := wrong_modality(m, modality, model)) is not None:
                raise ValueError(f"{where}: {why}; this benchmark is {modality.upper()}")
            out[m] = Method(m, ReconstructConfig(method=m, params=dict(params.get(m, {}))), model)
    return out


def method_weights_id(method: Method, weights: Mapping[str, str]) -> str | None:
    """:func:`weights_id` of the weights ``method`` runs: those given for it (``--weights``),
    or for a learned method named by shipped weights (``--methods modl_brain_sim``) that file."""
    given = weights.get(method.name)
    return weights_id(given if given is not None else
                      method.name if method.model is not None else None)


def weights_id(weights: str | os.PathLike | None) -> str | None:
    """What identifies weights in a fingerprint: a file's path, size and time and those of its
    card (an edited card, e.g. other unroll counts, changes the model: its old scores were
    printed again); a shipped name is its file (keyed by the name alone, retrained or replaced
    shipped weights had their old scores printed again); else the name."""
    if weights is None:
        return None
    p = Path(weights)
    if not p.is_file():
        from mrirecon.io.weights import resolve_weights

        try:
            p = resolve_weights(weights, "bench")
        except (FileNotFoundError, ValueError, TypeError):  # a model class, untrained
            return str(weights)
    if p.is_file():
        st = p.stat()
        key = f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}"
        card = p.with_suffix(".yaml")
        if card.is_file():
            cs = card.stat()
            key += f":{cs.st_size}:{cs.st_mtime_ns}"
        return key
    return str(weights)
