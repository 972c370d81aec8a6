"""The end of one rank of a ``torchrun ... -m mrirecon run`` job whose inputs partly failed.

torchrun stops every rank once one exits non-zero. A rank whose input failed (exit 1, the
failure reported and skipped) usually finishes first, having less work, so it ended the other
ranks' work mid-input: their inputs in progress got no outputs, and they wrote no run files.
Each rank therefore counts itself done in torchrun's own store (the agent's, which outlives the
ranks: ``TORCHELASTIC_USE_AGENT_STORE``), and a rank about to exit 1 first waits until every rank
has, at most ``MRIRECON_COLLECTIVE_TIMEOUT`` seconds (default 7200, as training's collectives).
Outside torchrun, or where the store cannot be reached, nothing waits."""

from __future__ import annotations

import logging
import os
import time

from mrirecon.threads import env_int

log = logging.getLogger("mrirecon.pipeline")


def wait_for_other_ranks(code: int, world: int, poll_s: float = 0.5) -> None:
    """Count this rank done; with ``code`` non-zero, wait for the other ``world - 1`` ranks."""
    if world < 2 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return
    from datetime import timedelta

    try:
        import torch.distributed as dist

        store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                              is_master=False, timeout=timedelta(seconds=60))
        key = (f"mrirecon/run/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/"
               f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/ended")
        ended = int(store.add(key, 1))
    except (KeyError, ValueError, RuntimeError, OSError) as err:  # no store: exit as before
        log.debug("the torchrun store is out of reach (%s); not waiting for the other ranks", err)
        return
    if code == 0 or ended >= world:
        return
    log.info("waiting for the other %d rank(s) to finish before exiting with status %d "
             "(torchrun stops every rank once one exits non-zero)", world - ended, code)
    end = time.monotonic() + env_int("MRIRECON_COLLECTIVE_TIMEOUT", 7200)
    try:
        while int(store.add(key, 0)) < world:
            if time.monotonic() > end:
                log.warning("the other ranks did not finish within MRIRECON_COLLECTIVE_TIMEOUT "
                            "seconds; exiting with status %d", code)
                return
            time.sleep(poll_s)
    except (RuntimeError, OSError) as err:  # the agent is gone: the job is over anyway
        log.debug("the torchrun store went away while waiting (%s)", err)
