"""Joining and leaving a ``torchrun``-style job: the rendezvous (checked variables, bounded
and interruptible waits), the collective timeout, and the ordered teardown of the process group.
Split from :mod:`mrirecon.training.trainer`, whose training loop runs inside the group."""

from __future__ import annotations

import importlib
import logging
import os

import torch
import torch.distributed as dist

from mrirecon.threads import env_int

log = logging.getLogger("mrirecon.train")


#: Seconds every ``WORLD_SIZE`` process has to arrive at the rendezvous
#: (``MRIRECON_RENDEZVOUS_TIMEOUT`` overrides it): ``torchrun``'s own ``join_timeout``. torch's
#: default, 30 minutes, kept a rank whose peers never came waiting that long.
RENDEZVOUS_TIMEOUT_S = 600

#: Seconds a collective (a barrier, a gradient all-reduce, the gathering of validation scores)
#: waits for every rank (``MRIRECON_COLLECTIVE_TIMEOUT`` overrides it). Rank 0 alone builds the
#: model card at the end of a run while the others wait; torch's default, 10 minutes under NCCL
#: (30 under gloo), ended a multi-GPU run at its first validation of a full validation set.
COLLECTIVE_TIMEOUT_S = 7200


def _timeout_seconds(name: str, default: int) -> int:
    """A timeout in whole seconds from the environment variable ``name`` (``default`` when unset
    or blank), refused naming the variable unless an integer >= 1."""
    seconds = env_int(name, default)
    if seconds < 1:
        raise ValueError(f"{name} in the environment must be >= 1 (seconds), got {seconds}")
    return seconds


def collective_timeout() -> int:
    """Seconds a collective waits for every rank: ``MRIRECON_COLLECTIVE_TIMEOUT``, default
    :data:`COLLECTIVE_TIMEOUT_S`."""
    return _timeout_seconds("MRIRECON_COLLECTIVE_TIMEOUT", COLLECTIVE_TIMEOUT_S)


def distributed_context() -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; initialises the process group under torchrun
    (:func:`rendezvous`)."""
    world = env_int("WORLD_SIZE", 1)
    if world > 1 and not dist.is_initialized():
        rendezvous()
        return dist.get_rank(), world, True
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    return 0, 1, False


#: The rendezvous store of the group this process initialised (rank 0 hosts it), kept for
#: :func:`leave_group`'s last handshake.
_RENDEZVOUS_STORE = None


def no_forward_buffer_sync() -> dict[str, bool]:
    """``DistributedDataParallel``'s keyword that stops its buffer broadcast at every forward
    (``forward_sync_buffers`` where torch has it, which still syncs them at construction; else
    ``broadcast_buffers``): the trainer broadcasts them once per step (:func:`broadcast_buffers`)."""
    import inspect

    ddp = torch.nn.parallel.DistributedDataParallel
    if "forward_sync_buffers" in inspect.signature(ddp.__init__).parameters:
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers on every rank, in place: what ``DistributedDataParallel`` does at every
    forward by default, done by the trainer once per step, before the step's first forward.

    A step may run several forwards before one backward (the SSDU loss: one per split; CT's
    view-split loss: one per part). Under torch 2.11 and older (2.4-2.11 seen; 2.13 not),
    ``batch_norm`` saved the running statistics for its backward, and DDP's broadcast at the
    second forward rewrote them in place: the backward failed with "one of the variables needed
    for gradient computation has been modified by an inplace operation" (both ranks exit 1;
    ``test_two_ranks_share_the_ssdu_validation``). Batch-norm statistics are made equal on every
    rank at the end of each step anyway
    (:class:`~mrirecon.training.batchnorm_order.RunningStatsInOrder`)."""
    with torch.no_grad():
        for b in module.buffers():
            t = torch.view_as_real(b) if b.is_complex() else b
            if t.dtype == torch.bool or not t.is_contiguous():  # gloo has no bool
                u = t.to(torch.uint8 if t.dtype == torch.bool else t.dtype).contiguous()
                dist.broadcast(u, 0)
                t.copy_(u)
            else:
                dist.broadcast(t, 0)


def leave_group() -> None:
    """Tear down the process group this process initialised, every rank done with it first,
    rank 0 (which hosts the store) last: each other rank destroys its group, then tells rank 0
    through the store, and rank 0 waits (at most a minute) for all of them before it destroys
    its own and, exiting, closes the store. Called after a barrier on the success path. Without
    the handshake a rank still tearing down when rank 0 exited aborted ("terminate called
    without an active exception", SIGABRT), so torchrun reported a finished training failed."""
    from datetime import timedelta

    global _RENDEZVOUS_STORE
    store, _RENDEZVOUS_STORE = _RENDEZVOUS_STORE, None
    rank, world = dist.get_rank(), dist.get_world_size()
    dist.destroy_process_group()  # rank 0's store lives on in ``store`` until the others left
    if store is None or world < 2:
        return
    try:
        if rank == 0:
            store.set_timeout(timedelta(seconds=60))
            store.wait([f"mrirecon/left/{r}" for r in range(1, world)])
        else:
            store.set(f"mrirecon/left/{rank}", "1")
    except (RuntimeError, dist.DistError) as err:  # a peer gone already: nothing to wait for
        log.debug("leave_group: %s", err)


def rendezvous() -> None:
    """Join the ``torchrun``-style job of the environment (``RANK``, ``WORLD_SIZE``,
    ``MASTER_ADDR``, ``MASTER_PORT``): checked first (``RANK=3 WORLD_SIZE=2`` and a missing
    ``MASTER_ADDR`` waited for peers forever), then given ``MRIRECON_RENDEZVOUS_TIMEOUT`` seconds
    (default :data:`RENDEZVOUS_TIMEOUT_S`) for every process to arrive, a :class:`TimeoutError`
    naming the address otherwise. SIGTERM and Ctrl-C stop the process meanwhile: torch waits in
    C++, where Python's handlers never ran, so only SIGKILL stopped it (nothing is written yet).
    The process group's collectives then wait ``MRIRECON_COLLECTIVE_TIMEOUT`` seconds (default
    :data:`COLLECTIVE_TIMEOUT_S`, 2 h) for a rank: torch's default, 10 minutes under NCCL, ended
    a run whose rank 0 validated (or, at the end, built the card) for longer while the others
    waited. Both variables are checked before anything waits."""
    from datetime import timedelta

    from mrirecon.threads import rank_and_world

    rank, world = rank_and_world()
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var, "").strip():
            raise ValueError(f"WORLD_SIZE={world} is set in the environment but {var} is not "
                             "(torchrun sets MASTER_ADDR and MASTER_PORT, the address of rank 0): "
                             f"set {var}, launch with torchrun, or unset WORLD_SIZE")
    port = env_int("MASTER_PORT", 0)
    if not 1 <= port <= 65535:
        raise ValueError(f"MASTER_PORT in the environment must be a port number in [1, 65535], "
                         f"got {port}")
    seconds = _timeout_seconds("MRIRECON_RENDEZVOUS_TIMEOUT", RENDEZVOUS_TIMEOUT_S)
    collective = timedelta(seconds=collective_timeout())
    where = f"{os.environ['MASTER_ADDR'].strip()}:{port}"
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    # torch._dynamo, first imported by DistributedDataParallel's constructor, keeps references to
    # a process group that exists when it is imported: the group then outlived
    # destroy_process_group, its gloo threads and sockets alive until the process exited, where
    # a peer's exit could meet them half torn down (a rare SIGABRT after a finished run).
    # Imported before the group, it keeps none, and leave_group's teardown frees the group.
    importlib.import_module("torch._dynamo")
    with _default_stop_signals():
        try:
            store, rank, world = next(dist.rendezvous("env://", rank, world,
                                                      timeout=timedelta(seconds=seconds)))
            store.set_timeout(timedelta(seconds=seconds))  # the group's set-up talks through it
            dist.init_process_group(backend=backend, store=dist.PrefixStore("default_pg", store),
                                    rank=rank, world_size=world, timeout=collective)
        except dist.DistError as err:  # a timeout, an unreachable or busy address
            first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(".")
            raise TimeoutError(
                f"rank {rank} of {world}: the rendezvous at MASTER_ADDR:MASTER_PORT={where} "
                f"failed within {seconds} s (MRIRECON_RENDEZVOUS_TIMEOUT): {first}; start all "
                f"{world} processes (torchrun --nproc-per-node / --nnodes) with the same "
                "MASTER_ADDR and MASTER_PORT") from None
    store.set_timeout(collective)  # later store use: as the collectives
    global _RENDEZVOUS_STORE
    _RENDEZVOUS_STORE = store


def _default_stop_signals():
    """A context in which SIGTERM, SIGINT and SIGHUP have their default action (the process
    ends), in the main thread; the handlers are restored after (the CLI's SIGHUP handler
    would otherwise hold a hangup until the rendezvous ends, up to its timeout)."""
    import contextlib
    import signal
    import threading

    stack = contextlib.ExitStack()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT, getattr(signal, "SIGHUP", None)):
            if sig is None:  # Windows has no SIGHUP
                continue
            previous = signal.signal(sig, signal.SIG_DFL)
            if previous is not None:
                stack.callback(signal.signal, sig, previous)
    return stack
