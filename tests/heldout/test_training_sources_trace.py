"""The training images' sources, by the files they open (an audit hook in a child process),
not by what the code imports: the import check let a training module read a held-out image
through ``ct_sources.packaged_dicom_file`` or matplotlib's ``get_sample_data`` unseen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mrirecon.io.ct_sources import CT_SOURCES
from mrirecon.io.heldout_sources import HELDOUT_CT, HELDOUT_MR

SCRIPT = """
import json, sys
opened = set()
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)):
        opened.add(args[0].decode() if isinstance(args[0], bytes) else args[0])
sys.addaudithook(hook)
from mrirecon.training.prior_images import PriorImageBank
PriorImageBank(size=32, seed=0, mni_volumes=1, mni_slices=1)  # MoDL, VarNet, PnP priors
from mrirecon.training.ct_staged import CTImageRecipe
recipe = CTImageRecipe(seed=0, size=64, mni_volumes=1)  # the CT models
for _ in range(4):
    recipe.draw()
print(json.dumps(sorted(opened)))
"""

# the reserved images' files: pydicom(-data)'s held-out DICOMs, matplotlib's head slice, and
# scikit-image's medical and microscopy images by file name
RESERVED = set(HELDOUT_MR) | set(HELDOUT_CT) | {
    "brain.tiff", "retina.jpg", "cell.png", "cells3d.tif", "microaneurysms.png", "ihc.png",
    "phantom.png", "kidney.tif", "lily.tif", "skin.jpg", "palisades_of_vogt.tif",
    "mitosis.tif", "protein_transport.tif"}


def test_building_the_training_images_opens_no_held_out_file():
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                          os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600, check=True)
    opened = {Path(p).name for p in json.loads(out.stdout.strip().splitlines()[-1])}
    assert not opened & RESERVED, sorted(opened & RESERVED)
    dicoms = {n for n in opened if n.endswith(".dcm")}
    assert dicoms <= set(CT_SOURCES), sorted(dicoms - set(CT_SOURCES))
    # the trace saw the sources it guards (it is not vacuous): the CT files and a natural image
    assert set(CT_SOURCES) <= opened and "camera.png" in opened
