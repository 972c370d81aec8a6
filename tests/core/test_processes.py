"""Process liveness (:mod:`mrirecon.core.processes`): what tells a live run's folder from a
leftover of a killed one."""

from __future__ import annotations

import os

import pytest


@pytest.mark.skipif(os.name == "nt", reason="POSIX branch")
def test_pid_alive_counts_another_users_process_as_alive(monkeypatch):
    """New file tests/core/test_processes.py (pid_alive had no test). Fails if a
    ``PermissionError`` from ``os.kill(pid, 0)`` read as 'no such process': the folder of a run
    another user's live process owns must not be judged a leftover."""
    from mrirecon.core import processes

    def kill(pid, sig, exc):
        raise exc

    monkeypatch.setattr(processes.os, "kill", lambda p, s: kill(p, s, PermissionError(1, "EPERM")))
    assert processes.pid_alive(12345) is True
    monkeypatch.setattr(processes.os, "kill", lambda p, s: kill(p, s, ProcessLookupError(3, "ESRCH")))
    assert processes.pid_alive(12345) is False
    monkeypatch.setattr(processes.os, "kill", lambda p, s: None)
    assert processes.pid_alive(12345) is True
