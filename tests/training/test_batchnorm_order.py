"""``RunningStatsInOrder`` (``mrirecon.training.batchnorm_order``): under DDP every rank ends a
step with the batch-norm running statistics one process would have after the global batch."""

from __future__ import annotations

import torch

from tests.helpers import two_ranks_gather


def test_running_stats_replay_the_one_process_order(monkeypatch):
    """Two ranks of batch 2: rank r's j-th sample is global sample j * 2 + r. The running mean /
    var / count every rank ends the step with are those of one process that ran the 4 samples in
    global order (the existing DDP test runs batch 1 per rank, where rank-major and global order
    coincide, and 1e-2 tolerances, where biased and unbiased variances of thousands of values
    per channel agree to 1/(n-1))."""
    from torch import nn

    from mrirecon.training.batchnorm_order import RunningStatsInOrder

    world, batch = 2, 2
    g = torch.Generator().manual_seed(0)
    # n = 1 x 2 x 2 = 4 values per channel: unbiased variance 4/3 of the biased one
    samples = [torch.randn(1, 3, 2, 2, generator=g) * (k + 1) + k for k in range(world * batch)]
    ref = nn.BatchNorm2d(3).train()
    for x in samples:
        ref(x)

    def run_rank(rank):
        bn = nn.BatchNorm2d(3).train()
        order = RunningStatsInOrder(bn, world)
        order.start()
        for j in range(batch):
            order.next_sample()
            bn(samples[j * world + rank])
        order.finish()
        return bn

    bn0 = two_ranks_gather(monkeypatch, run_rank)
    # float32 statistics of 4 values and 4 EMA updates: a few ulp
    torch.testing.assert_close(bn0.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bn0.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    assert int(bn0.num_batches_tracked) == int(ref.num_batches_tracked) == world * batch
