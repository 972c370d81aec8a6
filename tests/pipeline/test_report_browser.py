"""``report.html`` in a real headless browser (Debian's chromium): every image renders.

Checking that the ``<img>`` links point at existing files is not enough: a PNG that the browser
cannot decode, a path relative to the wrong folder or a blocked ``file://`` load all leave a
broken image. Here chromium loads the report, a script appended to a copy of it records each
image's decoded size after the page's load event, and the DOM that chromium dumps is parsed.
A screenshot of the page is kept under the test's temp folder (and copied to
``$MRIRECON_SCREENSHOT_DIR`` when set) so that a person can look at it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mrirecon.pipeline.definitions import load_pipeline
from mrirecon.pipeline.report import VolumeResult, write_report
from mrirecon.pipeline.runner import run_pipeline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make sysdeps)")

_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--allow-file-access-from-files", "--hide-scrollbars"]

_PROBE = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (img) {
    out.push({src: img.getAttribute('src'), complete: img.complete,
              width: img.naturalWidth, height: img.naturalHeight});
  });
  var pre = document.createElement('pre');
  pre.id = 'mrirecon-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    root = tmp_path_factory.mktemp("report")
    files = simulate_mri_dataset(root / "data", volumes=2, slices=2, coils=4, size=(64, 48),
                                 seed=3, resolution=2)
    config, text = load_pipeline("mri_retrospective", [
        "reconstruct.params.iterations=3", "calibrate.calib_width=12",
        "calibrate.kernel_width=4", "export.formats=[hdf5,png]"])
    out = root / "out"
    assert run_pipeline(config, [str(p) for p in files], out, progress=False,
                        config_text=text) == 0
    return out / "report.html"


def test_report_images_render_in_chromium(report, tmp_path):
    html = report.read_text()
    expected = re.findall(r"<img src='([^']+)'", html)
    assert len(expected) >= 2  # figures of both volumes
    # linked, not embedded (a report mailed alone showed broken images): the page says so
    assert "share or move the whole output folder, not report.html alone" in html
    probe = report.with_name("report_probe.html")  # same folder: same relative figure paths
    probe.write_text(html.replace("</body>", _PROBE + "</body>"))
    res = _chromium(["--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                    tmp_path / "profile1")
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r"<pre id=\"mrirecon-probe\">(.*?)</pre>", res.stdout, re.S)
    assert found, res.stdout[-2000:]
    images = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    assert [i["src"] for i in images] == expected
    for img in images:
        # decoded: the figure's real pixel size, not a broken-image placeholder (0 x 0)
        assert img["complete"] and img["width"] > 100 and img["height"] > 50, img


def test_report_screenshot_shows_the_figures(report, tmp_path):
    shot = tmp_path / "report.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1400,2400", report.as_uri()],
                    tmp_path / "profile2")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    if os.environ.get("MRIRECON_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["MRIRECON_SCREENSHOT_DIR"]) / "report.png")
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    assert pixels.shape[0] == 2400 and pixels.shape[1] == 1400
    # rendered figures are large dark areas (MR panels on black); a page of text and tables
    # alone is nearly all white
    dark = (pixels.mean(axis=-1) < 0.2).mean()
    assert dark > 0.05, dark
    # and the rows carry image content (grey levels), not only flat black boxes
    assert np.unique((pixels[..., 0] * 255).astype(np.uint8)).size > 64


def test_a_skipped_input_is_shown_as_finished_not_failed(tmp_path):
    """--resume skips inputs finished before: their row is styled 'ok', a failure 'failed'."""
    rs = [VolumeResult(input="a.h5", status="skipped", name="a"),
          VolumeResult(input="b.h5", status="failed", error="boom", name="b")]
    text = write_report(tmp_path / "report.html", title="t", config_text="", results=rs,
                        summary={}).read_text()
    assert "<td class='l ok'>skipped" in text and "<td class='l failed'>failed" in text


_LINES = """<script>
window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('tr').forEach(function (tr) {
    var row = [];
    tr.querySelectorAll('td').forEach(function (td) {
      var r = document.createRange();
      r.selectNodeContents(td.firstChild || td);
      var tops = {};  // one entry per rendered line of the cell's first text
      Array.from(r.getClientRects()).forEach(function (q) { tops[Math.round(q.top)] = 1; });
      row.push({lines: Object.keys(tops).length, width: td.getBoundingClientRect().width});
    });
    if (row.length) out.push(row);
  });
  var pre = document.createElement('pre');
  pre.id = 'mrirecon-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def test_numbers_stay_on_one_line_and_names_keep_their_width(tmp_path):
    """At 1200 px, beside a long error, the input column shrank to a few characters
    ("good.h"/"5", "file_brain_"/"_SAGT2_"/…) and an NMSE read "2.477e-" over "04"."""
    long = "file_brain_AXT2_sim2_0000_" + "x" * 40 + ".h5"
    error = "the file ended 2048 bytes into the 65536 of kspace[3] to read: " * 6
    rs = [VolumeResult(input="good.h5", status="ok", name="good", slices=2, seconds=1.0,
                       metrics={"nmse": 2.4771e-4, "psnr": 31.25, "ssim": 0.8123}),
          VolumeResult(input=long, status="failed", error=error, name=long[:-3]),
          VolumeResult(input="b.h5", status="ok", name="b", slices=2, seconds=1.0,
                       metrics={"nmse": 1.5e-5, "psnr": 40.5, "ssim": 0.9}, warnings=[error])]
    page = write_report(tmp_path / "report.html", title="t", config_text="", results=rs,
                        summary={})
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _LINES + "</body>"))
    res = _chromium(["--window-size=1200,2000", "--virtual-time-budget=5000", "--dump-dom",
                     probe.as_uri()], tmp_path / "profile3")
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r"<pre id=\"mrirecon-probe\">(.*?)</pre>", res.stdout, re.S)
    rows = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    for row in rows:  # input, status, slices, seconds, NMSE, PSNR, SSIM
        assert all(cell["lines"] == 1 for cell in row[2:]), row
        assert row[0]["width"] >= 100, row  # 18 characters at least
    assert rows[0][0]["lines"] == 1 and rows[2][0]["lines"] == 1  # good.h5, b.h5 whole
