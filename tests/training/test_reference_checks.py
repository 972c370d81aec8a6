"""``mrirecon.training.reference_checks`` and the scale rule beside it
(``mrirecon.data.dataset.off_scale``): the orientation check's correlations and the scale check's
norms are those of the whole volume, computed a chunk of slices at a time (bounded memory: both
run on every evaluated volume, and their whole-volume float64 copies made ``mrirecon run``'s peak
grow with the slices)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch


def _direct(a: torch.Tensor, b: torch.Tensor) -> float:
    """The correlation of two whole volumes in one float64 piece (the definition)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("shape", [(48, 40), (3, 40, 40), (40, 64, 64), (2, 3, 24, 32)])
def test_chunked_correlations_equal_the_whole_volume_definition(shape, monkeypatch):
    """Every transform's correlation equals the whole-volume float64 definition (chunks of a few
    slices forced, so a volume spans several chunks; a 2-D image and a 4-D stack included)."""
    from mrirecon.models.common import dihedral
    from mrirecon.training import reference_checks as rc

    monkeypatch.setattr(rc, "CHUNK_ELEMENTS", 3 * 64 * 64 - 1)  # 2 slices of 64^2 a chunk
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(shape, generator=g) + 0.5
    image = 0.7 * dihedral(reference, 0) + 0.3 * torch.rand(shape, generator=g)
    square = shape[-1] == shape[-2]
    transforms = [t for t in range(8) if square or t < 4]
    got = rc._correlations(reference, image, transforms)
    for t in transforms:
        want = _direct(dihedral(reference, t), image)
        # float64 sums of n products in another order: a few n * eps apart at most
        assert abs(got[t] - want) < 64 * reference.numel() * torch.finfo(torch.float64).eps, t
    assert rc._correlations(torch.ones(shape), image, [0]) == {0: 0.0}  # no variance: 0


def test_off_scale_norms_equal_the_whole_volume_definition(monkeypatch):
    from mrirecon.data import dataset

    monkeypatch.setattr(dataset, "NORM_CHUNK_ELEMENTS", 2 * 40 * 40)  # 2 slices a chunk
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(7, 40, 40, generator=g)
    for scale in (1.0, 25.0, 0.01):
        image = scale * torch.rand(7, 40, 40, generator=g)
        want = float(reference.double().norm() / image.double().norm())
        got = dataset.off_scale(reference, image)
        if dataset.REFERENCE_SCALE_FACTOR ** -1 <= want <= dataset.REFERENCE_SCALE_FACTOR:
            assert got is None
        else:
            assert abs(got - want) < 64 * reference.numel() * torch.finfo(torch.float64).eps * want
    assert dataset.off_scale(torch.zeros(7, 40, 40), reference) is None
    assert dataset.off_scale(reference, torch.full((7, 40, 40), float("inf"))) is None
    assert dataset.off_scale(torch.tensor(3.0), torch.tensor(0.1)) == pytest.approx(30.0)


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from mrirecon.data.dataset import off_scale
    from mrirecon.training.reference_checks import orientation_note
    check = {"orientation_note": lambda r, i: orientation_note(r, i, "it"),
             "off_scale": lambda r, i: off_scale(r, 30 * i)}[sys.argv[1]]

    def status(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(field)

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    reference = torch.rand(64, 256, 256, generator=g)
    image = reference.flip(-1).contiguous()  # noted: the reference matches flipped left-right
    check(reference[:2], image[:2])  # warm up imports and the allocator
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        raise SystemExit(print("skip cannot write /proc/self/clear_refs"))
    before = status("VmRSS")
    if status("VmHWM") > before + 2**20:
        raise SystemExit(print("skip VmHWM was not reset"))
    note = check(reference, image)
    print((status("VmHWM") - before) / 2**20, str(note)[:20].replace(" ", "_"))
    """
)


@pytest.mark.parametrize("check, result", [("orientation_note", "the_reference_matche"),
                                           ("off_scale", "0.0333")])
def test_the_reference_checks_memory_does_not_grow_with_the_volume(check, result):
    """Peak RSS growth of ``orientation_note`` and ``off_scale`` on a 64 x 256 x 256 float32
    volume (16 MiB) stays under two such volumes: whole-volume float64 copies (two per
    correlation, nine correlations; one per norm) grew it by up to 9x the volume, so ``mrirecon
    run``'s peak grew with the slice count (40 slices of 320 x 320: 841 instead of 553 MiB)."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, check], check=False, capture_output=True, text=True,
        timeout=120,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
    )
    assert proc.returncode == 0, proc.stderr
    if proc.stdout.startswith("skip"):
        pytest.skip(proc.stdout.strip())
    growth_mib, found = proc.stdout.split()
    assert found.startswith(result), found
    volume_mib = 64 * 256 * 256 * 4 / 2**20
    assert float(growth_mib) < 2 * volume_mib, growth_mib
