"""Batch-norm running statistics of a multi-process run, updated as one process updates them.

A ``torchrun`` run and a 1-process run with the same global batch see the same samples and masks
(:meth:`~mrirecon.training.trainer.Trainer._positions`) and train the same weights. The running
mean / variance of batch-norm layers, which validation and inference use, were not the same:
``DistributedDataParallel`` broadcasts rank 0's buffers at every forward, so they followed rank
0's samples alone (MoDL's default denoiser, 24 steps on 2 ranks: ``running_mean`` 7.6e-3 off,
``num_batches_tracked`` 48 for 96, validation PSNR 0.4 dB apart).

:class:`RunningStatsInOrder` records the batch statistics each batch-norm call of a step sees,
per sample, gathers them from every rank and replays the exponential (or cumulative, momentum
``None``) average over the global batch in the 1-process order: sample ``g`` of the step is
``j x world + rank`` (rank ``rank``'s ``j``-th), and a sample's calls (an unrolled network calls
its shared denoiser several times; gradient checkpointing calls it again in backward) keep their
order. Every rank ends the step with the same buffers.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class RunningStatsInOrder:
    """Replay ``model``'s batch-norm running statistics in the global sample order of a
    ``world``-process step: :meth:`start` before the step, :meth:`next_sample` before each of
    this rank's samples, :meth:`finish` after the last backward. :meth:`applies` says whether
    there is anything to do (more than one process, a batch-norm layer tracking statistics)."""

    def __init__(self, model: nn.Module, world: int) -> None:
        self.world = world
        self.layers = [m for m in model.modules()
                       if isinstance(m, _BatchNorm) and m.track_running_stats]
        self._calls: list[list[list[tuple[torch.Tensor, torch.Tensor]]]] = []
        self._saved: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if self.applies():
            for i, layer in enumerate(self.layers):
                layer.register_forward_pre_hook(self._hook(i))

    def applies(self) -> bool:
        return self.world > 1 and bool(self.layers)

    def _hook(self, index: int):
        def record(layer: _BatchNorm, args) -> None:
            if not (layer.training and self._calls):
                return
            x = args[0].detach()
            dims = [0, *range(2, x.ndim)]
            n = x.numel() // x.shape[1]
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=n > 1)  # what batch norm averages (unbiased)
            self._calls[-1][index].append((mean.cpu(), var.cpu()))
        return record

    def start(self) -> None:
        self._calls = []
        self._saved = [(m.running_mean.clone(), m.running_var.clone(),
                        m.num_batches_tracked.clone()) for m in self.layers]

    def next_sample(self) -> None:
        self._calls.append([[] for _ in self.layers])

    def finish(self) -> None:
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, self._calls)  # per rank: samples x layers x calls
        order = [gathered[r][j] for j in range(max(len(g) for g in gathered))
                 for r in range(self.world) if j < len(gathered[r])]
        with torch.no_grad():
            for i, layer in enumerate(self.layers):
                mean, var, count = (t.clone() for t in self._saved[i])
                for sample in order:
                    for m, v in sample[i]:
                        count += 1
                        f = layer.momentum if layer.momentum is not None else 1.0 / float(count)
                        mean = (1 - f) * mean + f * m.to(mean)
                        var = (1 - f) * var + f * v.to(var)
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                layer.num_batches_tracked.copy_(count)
        self._calls = []
