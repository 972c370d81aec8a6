"""A rank of a distributed run whose peer was killed: one line that says so and names
``--resume``, not "internal error: RuntimeError: [.../gloo/transport/tcp/pair.cc:537] Read
error ...: Connection reset by peer ... (report it)"."""

from __future__ import annotations

import pytest

from mrirecon import cli
from mrirecon.io.errors import lost_peer

GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:41101: Connection reset by peer. This is typically caused by a remote "
        "worker hanging or bugs in the application.")


def test_only_a_collective_of_a_distributed_run_counts(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert lost_peer(RuntimeError(GLOO)) is None  # one process: no peer to lose
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert lost_peer(ValueError(GLOO)) is None
    said = lost_peer(RuntimeError(GLOO))
    assert said.startswith("error: another process of this 2-process run stopped")
    assert "Connection reset by peer" in said and "--resume" in said and "typically" not in said


def test_the_command_line_prints_it_instead_of_an_internal_error(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")

    def gone(args):
        raise RuntimeError(GLOO)

    monkeypatch.setattr(cli, "cmd_run", gone)
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "mri_cs", "-i", "in", "-o", "out"])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and "another process of this 2-process run stopped" in err
    assert "internal error" not in err and "report it" not in err
