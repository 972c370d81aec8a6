"""The PNG writers leave the caller's matplotlib alone: writing a figure switched the process's
backend to Agg (``matplotlib.use``), so a notebook's ``%matplotlib inline`` showed no figure
after the first ``run_pipeline`` with PNG export, and pyplot tracked (and closed) the library's
figures among the user's. Each check runs in a fresh interpreter: the backend is process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import ROOT
from mrirecon.io.png import display_range, save_png

_SCRIPT = r"""
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
import matplotlib
matplotlib.use("svg")                  # the user's backend (inline, QtAgg, ipympl ...)
import matplotlib.pyplot as plt
plt.figure(); plt.plot([1, 2, 3])      # a figure the user is still working on
before = {"backend": matplotlib.get_backend(), "figures": plt.get_fignums()}
import numpy as np
from mrirecon.io.png import save_line_plot, save_panel, save_png
img = np.linspace(0, 1, 12 * 10).reshape(12, 10)
save_png(img, out / "a.png")
save_panel([img, img, "not available: test"], ["x", "y", "z"], out / "b.png", error_index=1)
save_line_plot([4, 8], {"m": [0.9, 0.8]}, out / "c.png", xlabel="R")
after_writers = {"backend": matplotlib.get_backend(), "figures": plt.get_fignums()}
from mrirecon.data.simulate_mri import simulate_mri_dataset
from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.runner import run_pipeline
(src,) = simulate_mri_dataset(out / "src", volumes=1, slices=1, coils=2, size=(24, 16), seed=3,
                              resolution=2)
cfg, text = load_pipeline("mri_cs", ["reconstruct.method=zero_filled_rss", "reconstruct.params={}",
                                     "calibrate.method=none", "export.formats=[png]"])
code = run_pipeline(cfg, [src], out / "run", progress=False, config_text=text)
after_run = {"backend": matplotlib.get_backend(), "figures": plt.get_fignums()}
print(json.dumps({"before": before, "writers": after_writers, "run": after_run, "code": code,
                  "pngs": sorted(p.name for p in (out / "run").rglob("*.png"))}))
"""


def test_png_writers_keep_the_callers_backend_and_figures(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("MPLBACKEND", None)
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp_path)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    state = json.loads(done.stdout.strip().splitlines()[-1])
    assert state["before"] == {"backend": "svg", "figures": [1]}
    assert state["writers"] == state["before"]  # was: backend Agg (matplotlib.use)
    assert state["run"] == state["before"]
    assert state["code"] == 0 and state["pngs"]  # the run did write its figures

    from matplotlib.image import imread

    a = imread(tmp_path / "a.png")  # one pixel per sample, the grey window of the image
    assert a.shape[:2] == (12, 10)
    assert a[0, 0, 0] == pytest.approx(0.0, abs=1 / 255) and a[-1, -1, 0] == pytest.approx(1.0, abs=1 / 255)
    b = imread(tmp_path / "b.png")
    assert b.shape[:2] == (340, 960)  # figsize 3.2 x 3 panels by 3.4 inches at 100 dpi
    assert imread(tmp_path / "c.png").shape[:2] == (350, 500)


_WRITE = r"""
import sys
from pathlib import Path
import numpy as np
from mrirecon.io.png import save_line_plot, save_panel, save_png
out = Path(sys.argv[1])
img = np.linspace(0, 1, 12 * 10).reshape(12, 10)
save_png(img, out / "a.png")
save_panel([img, img, "not available: test"], ["x", "y", "z"], out / "b.png", error_index=1)
save_line_plot([4, 8], {"m": [0.9, 0.8]}, out / "c.png", xlabel="R")
import matplotlib.pyplot as plt  # the user's pyplot still works in that process
plt.figure(); plt.plot([1, 2]); plt.close("all")
"""


def test_an_invalid_mplbackend_changes_no_png(tmp_path):
    """``MPLBACKEND=garbage`` made ``import matplotlib`` fail, so every input of a run with PNG
    export failed after its reconstruction ("Key backend: 'garbage' is not a valid value")."""
    pngs = {}
    for value in (None, "garbage"):
        out = tmp_path / str(value)
        out.mkdir()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.pop("MPLBACKEND", None)
        if value:
            env["MPLBACKEND"] = value
        done = subprocess.run([sys.executable, "-c", _WRITE, str(out)], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        warned = "MPLBACKEND='garbage' is not a matplotlib backend" in done.stderr
        assert warned == bool(value), done.stderr
        pngs[value] = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert len(pngs[None]) == 3 and pngs["garbage"] == pngs[None]  # byte for byte


_OTHER_USERS = r"""
import numpy as np
from mrirecon import viz
from mrirecon.io.heldout_sources import read_heldout_mr
from mrirecon.training.prior_images import natural_sources
grace = natural_sources()[-1]             # train prior / staged_ct: matplotlib's sample photo
mr = read_heldout_mr("s1045.ima.gz")      # the held-out MR image, a matplotlib sample file
fig, axes = viz.image_grid([np.eye(4)])   # a notebook's figure (pyplot)
print(repr((grace.shape, float(grace.sum()), mr.shape, float(mr.sum()), axes.shape)))
"""


def test_an_invalid_mplbackend_changes_nothing_matplotlib_reads_elsewhere(tmp_path):
    """``train prior`` / the ``staged_ct`` recipe (matplotlib's sample photo), the held-out MR
    image (a matplotlib sample file) and ``viz`` imported matplotlib themselves, so
    ``MPLBACKEND=garbage`` failed them at the import ("Key backend: 'garbage' is not a valid
    value") although none of them needs a backend: every import goes through
    ``mrirecon.mpl.import_matplotlib``."""
    seen = {}
    for value in (None, "garbage"):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        env.pop("MPLBACKEND", None)
        if value:
            env["MPLBACKEND"] = value
        done = subprocess.run([sys.executable, "-c", _OTHER_USERS], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        warned = "MPLBACKEND='garbage' is not a matplotlib backend" in done.stderr
        assert warned == bool(value), done.stderr
        seen[value] = done.stdout.strip().splitlines()[-1]
    assert seen["garbage"] == seen[None]  # the same images, to the last digit printed


def test_every_matplotlib_import_of_the_package_goes_through_the_helper():
    """A module of ``mrirecon`` that imports matplotlib calls ``import_matplotlib()`` first
    (``prior_images`` and ``heldout_sources`` had their own bare imports)."""
    import re

    bare = []
    for f in sorted((ROOT / "mrirecon").rglob("*.py")):
        if f.name == "mpl.py":
            continue
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"^[ \t]*(?:import|from) matplotlib\b", text, re.M):
            before = text[:m.start()]
            defs = list(re.finditer(r"^[ \t]*def ", before, re.M))  # the enclosing function
            scope = before[defs[-1].start():] if defs else before
            if "import_matplotlib()" not in scope:
                bare.append(f"{f.relative_to(ROOT)}:{before.count(chr(10)) + 1}")
    assert not bare, bare


@pytest.mark.parametrize("c", [0.3, 1e-6, 7.0, -0.3, -7.0, 0.0])
def test_a_constant_image_is_white_when_positive_and_black_otherwise(tmp_path, c):
    """No contrast: the window runs from 0 to c, so a positive constant is drawn white whatever
    its size (a 0.3 map was drawn 30 % grey, 7.0 white), a non-positive one black."""
    from matplotlib.image import imread

    lo, hi = display_range(np.full((5, 6), c), None, None)
    assert lo < hi and lo <= min(c, 0.0) and hi >= max(c, 0.0)
    png = imread(save_png(np.full((5, 6), c), tmp_path / "c.png"))[..., :3]
    expected = 1.0 if c > 0 else 0.0
    assert np.all(np.abs(png - expected) <= 1 / 255), (c, np.unique(png))


@pytest.mark.parametrize("values, bound, expected", [
    ((1.0, 2.0), {"vmin": 5.0}, 0.0),     # all below vmin: black
    ((-9.0, -8.0), {"vmin": -5.0}, 0.0),
    ((0.0, 0.5), {"vmin": 0.0}, None),    # vmin at the minimum: a real window, not saturated
    ((8.0, 9.0), {"vmax": 5.0}, 1.0),     # all above vmax: white
    ((-2.0, -1.0), {"vmax": -5.0}, 1.0),
])
def test_one_given_bound_that_leaves_the_image_on_one_side_saturates_it(tmp_path, values, bound,
                                                                         expected):
    from matplotlib.image import imread

    img = np.array([values] * 3)
    png = imread(save_png(img, tmp_path / "b.png", **bound))[..., :3]
    if expected is None:
        assert png.min() <= 1 / 255 and png.max() >= 1 - 1 / 255
    else:
        assert np.all(np.abs(png - expected) <= 1 / 255), np.unique(png)
