"""``mrirecon demo``: the main job on a fresh machine, in a few minutes on two cores.

1. simulate a small multi-coil brain dataset from the bundled MNI152 anatomy (fastMRI layout)
   and a small low-dose CT dataset on the LoDoPaB-CT geometry (LoDoPaB layout: 362 x 362, 513
   detectors, 1000 parallel-beam angles, 4096 photons per bin);
2. run the learned MRI pipelines whose shipped weights were trained at this 128 x 128
   simulation geometry (E2E-VarNet, MoDL, PnP-ADMM with the DnCNN denoiser; 4x retrospective
   undersampling) and, for comparison, ESPIRiT + L1-wavelet and ESPIRiT + CG-SENSE, so that no
   model runs outside its training range;
3. run the CT pipelines on 30 of the 1000 views: FBP, the two learned models trained at this
   geometry (``ct_learned``: FBP + U-Net + CG data consistency; ``ct_primal_dual``: learned
   primal-dual) and, without ``quick``, TV by ADMM;
4. write DICOM, NIfTI, fastMRI-submission HDF5, PNG figures, ``report.html`` per pipeline and a
   combined ``metrics.md`` under the output folder, and print where they are.

The demo data come from the training sources (MNI152, the allowed CT images), so its metrics
show the pipelines working, not how they transfer: that is the held-out protocol's job
(README, "Held-out protocol").
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from mrirecon.io.atomic import atomic_write_text
from mrirecon.pipeline.definitions import load_pipeline

log = logging.getLogger("mrirecon.demo")

# what a pipeline run may write, in the order the closing printout lists it
_OUTPUTS = (("report", "report.html"), ("metrics", "metrics.csv"), ("DICOM", "dicom"),
            ("NIfTI", "nifti"), ("HDF5", "reconstructions"), ("figures", "figures"))

def _weights_available(name: str) -> bool:
    from mrirecon.training.weights import available_weights

    return name in available_weights()


def run_demo(output: str | Path = "demo_out", *, quick: bool = False, progress: bool = True) -> dict:
    """Run the demo; returns ``{"outputs": ..., "metrics": ..., "seconds": ...}``."""
    from mrirecon.data.simulate_ct import simulate_ct_dataset
    from mrirecon.data.simulate_mri import simulate_mri_dataset
    from mrirecon.io.lodopab import lodopab_geometry
    from mrirecon.pipeline.runner import run_pipeline

    out = Path(output)
    t0 = time.perf_counter()
    # the geometries the demo models were trained at (their cards' training_range): MRI
    # 128 x 128, 4-8 coils; CT the LoDoPaB geometry, 30 of 1000 views, 4096 photons (counts
    # floored at 0.1 photons, as the CT models' training data)
    mri_files = simulate_mri_dataset(out / "data" / "mri", volumes=1 if quick else 2,
                                     slices=2 if quick else 4, coils=8, size=(128, 128), seed=2026,
                                     allow_other_files=True)  # a rerun uses only these files
    ct_files = simulate_ct_dataset(out / "data" / "ct", geometry=lodopab_geometry(),
                                   photons=4096.0, seed=2026, samples=1 if quick else 3,
                                   part="test", min_count=0.1, allow_other_files=True)
    ct_obs = [str(p) for p in ct_files if Path(p).name.startswith("observation_")]
    mri_inputs = [str(p) for p in mri_files]
    # 4x with a 16 % centre band: the small demo matrix needs the wider band (fastMRI's 8 %
    # of 368 columns is 29 lines; of 128 it would be 10), and the demo models saw it in training
    retro = ["undersample.enabled=true", "undersample.accelerations=[4]",
             "undersample.center_fractions=[0.16]"]
    runs: list[tuple[str, str, list[str], list[str]]] = []
    for name, weights in (("mri_varnet_brain_sim", "varnet_brain_sim"),
                          ("mri_modl_brain_sim", "modl_brain_sim"),
                          ("mri_pnp_brain_sim", "pnp_dncnn_brain_sim")):
        if _weights_available(weights):
            runs.append((name, name, retro, mri_inputs))
    runs.append(("mri_l1_wavelet", "mri_cs", retro, mri_inputs))
    runs.append(("mri_cg_sense", "mri_retrospective", retro + [
        "reconstruct.params.iterations=10", "export.formats=[hdf5, nifti, dicom, png]"], mri_inputs))
    # every CT pipeline keeps 30 of the 1000 views (its undersample stage)
    runs.append(("ct_fbp_30views", "ct_fbp", ["undersample.enabled=true", "undersample.views=30"],
                 ct_obs))
    for name, weights in (("ct_learned", "staged_ct_lodopab"), ("ct_primal_dual", "primal_dual_lodopab")):
        if _weights_available(weights):
            runs.append((f"{name}_30views", name, [], ct_obs))
    if not quick:  # about 15-30 s per slice
        runs.append(("ct_tv_30views", "ct_tv", [], ct_obs))
    metrics: dict[str, dict] = {}
    failures = 0
    for label, name, overrides, inputs in runs:
        config, text = load_pipeline(name, overrides)
        log.info("running %s (%s) on %d input(s)", label, config.name, len(inputs))
        # the demo owns its folders: a --quick rerun after a full one (1 of 2 volumes) replaces
        # the full run's outputs rather than being refused for them
        code = run_pipeline(config, inputs, out / label, progress=progress, config_text=text,
                            replace_others=True)
        failures += code != 0
        prov = json.loads((out / label / "provenance.json").read_text(encoding="utf-8"))
        rows = [f for f in prov["files"] if f["metrics"]]
        if rows:
            keys = sorted(rows[0]["metrics"])
            metrics[label] = {k: sum(float(r["metrics"][k]) for r in rows) / len(rows)
                              for k in keys}  # "inf" for a perfect volume
    lines = ["| pipeline | NMSE | PSNR | SSIM |", "|---|---|---|---|"]
    for label, m in metrics.items():
        lines.append(f"| {label} | {m.get('nmse', float('nan')):.4f} | {m.get('psnr', float('nan')):.2f} "
                     f"| {m.get('ssim', float('nan')):.4f} |")
    table = "\n".join(lines) + "\n"
    atomic_write_text(out / "metrics.md", table)
    seconds = time.perf_counter() - t0
    print(table)
    print(f"demo finished in {seconds:.0f} s; outputs under {out.resolve()}:")
    for label, *_ in runs:
        print(f"  {label}:")
        for what, rel in _OUTPUTS:
            if (out / label / rel).exists():  # name only what this pipeline wrote
                print(f"    {what:9s} {out / label / rel}")
    return {"outputs": [str(out / r[0]) for r in runs], "metrics": metrics, "seconds": seconds,
            "failures": failures}
