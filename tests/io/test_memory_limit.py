"""``io.errors.memory_bytes`` honours a container's cgroup memory limit (v2 ``memory.max``, v1
``memory.limit_in_bytes``), as the thread count honours its CPU quota; tested on fake cgroup
trees (no cgroup is created)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mrirecon.io import errors
from mrirecon.io.errors import DataFormatError, cgroup_memory_limit, memory_bytes, refuse_oversized

GiB = 1 << 30
#: What cgroup v1 reports for "no limit" (the largest page count times 4 KiB pages).
V1_UNLIMITED = "9223372036854771712"


def ram() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fake_tree(tmp_path: Path, proc: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    root.mkdir()
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    listing = tmp_path / "proc_self_cgroup"
    listing.write_text(proc)
    return root, listing


@pytest.fixture
def point_at(monkeypatch):
    def point(root: Path, listing: Path) -> None:
        monkeypatch.setattr(errors, "CGROUP_ROOT", root)
        monkeypatch.setattr(errors, "PROC_SELF_CGROUP", listing)
    return point


def test_a_cgroup_v2_limit_below_the_ram_is_the_memory(tmp_path, point_at):
    root, listing = fake_tree(tmp_path, "0::/user.slice/job_42\n",
                              {"user.slice/job_42/memory.max": f"{GiB}\n"})
    point_at(root, listing)
    assert cgroup_memory_limit() == GiB
    assert memory_bytes() == min(ram(), GiB)
    with pytest.raises(DataFormatError, match="a quarter of the 1 GiB of memory"):
        refuse_oversized("x.h5", "kspace", 0.3 * GiB, "a k-space")  # fine under the RAM
    refuse_oversized("x.h5", "kspace", 0.2 * GiB, "a k-space")


def test_a_parent_cgroups_limit_binds_its_child(tmp_path, point_at):
    root, listing = fake_tree(tmp_path, "0::/a/b\n",
                              {"a/memory.max": str(3 * GiB), "a/b/memory.max": "max"})
    point_at(root, listing)
    assert cgroup_memory_limit() == 3 * GiB


def test_max_and_huge_values_are_no_limit(tmp_path, point_at):
    root, listing = fake_tree(tmp_path, "4:memory:/docker/abc\n0::/\n",
                              {"memory.max": "max\n",
                               "memory/memory.limit_in_bytes": V1_UNLIMITED + "\n"})
    point_at(root, listing)
    assert cgroup_memory_limit() is None
    assert memory_bytes() == ram()


def test_a_cgroup_v1_limit_is_read_where_the_container_sees_its_own_cgroup(tmp_path, point_at):
    """Docker without a cgroup namespace lists the host's path (``/docker/<id>``), which the
    container's mount does not hold: its own cgroup is the mount's root."""
    root, listing = fake_tree(tmp_path, "11:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
                              {"memory/memory.limit_in_bytes": str(2 * GiB)})
    point_at(root, listing)
    assert cgroup_memory_limit() == 2 * GiB
    assert memory_bytes() == min(ram(), 2 * GiB)


def test_a_limit_above_the_ram_leaves_the_ram(tmp_path, point_at):
    root, listing = fake_tree(tmp_path, "0::/big\n", {"big/memory.max": str(ram() * 4)})
    point_at(root, listing)
    assert cgroup_memory_limit() == ram() * 4
    assert memory_bytes() == ram()


def test_no_cgroup_files_or_unreadable_ones_are_no_limit(tmp_path, point_at):
    root, listing = fake_tree(tmp_path, "garbage line\n0::/x\n",
                              {"x/memory.max": "not a number", "memory/memory.limit_in_bytes": "-1"})
    point_at(root, listing)
    assert cgroup_memory_limit() is None
    point_at(tmp_path / "absent", tmp_path / "absent_proc")
    assert cgroup_memory_limit() is None
    assert memory_bytes() == ram()


def test_explicit_paths_override_the_module_constants(tmp_path):
    root, listing = fake_tree(tmp_path, "0::/s\n", {"s/memory.max": str(5 * GiB)})
    assert cgroup_memory_limit(root, listing) == 5 * GiB


@pytest.mark.parametrize("child,parent", [(2, 3), (3, 2)])
def test_the_smallest_of_several_cgroup_limits_binds(tmp_path, child, parent):
    """Fails if errors.py:227 ``min(limits)`` -> ``max(limits)``. A child cgroup and its
    parent both limited (and a v1 limit beside them): the process is killed at the smallest,
    so that is the memory (the existing parent test has ``max`` in the child: one number)."""
    from mrirecon.io.errors import cgroup_memory_limit

    gib = 1 << 30
    root = tmp_path / "cgroup"
    for rel, text in {"a/memory.max": str(parent * gib), "a/b/memory.max": str(child * gib),
                      "memory/a/b/memory.limit_in_bytes": str(5 * gib)}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text + "\n")
    proc = tmp_path / "proc_self_cgroup"
    proc.write_text("0::/a/b\n4:memory:/a/b\n")
    assert cgroup_memory_limit(root, proc) == min(child, parent) * gib
