"""``channels_last_convs``: the CPU inference layout the pipeline gives learned models changes
the convolutions' memory layout, not their results."""

from __future__ import annotations

import copy

import pytest
import torch

from mrirecon.models.inference import channels_last_convs, ready_for_inference
from mrirecon.training.weights import load_pretrained
from tests.models.problems import mri_problem


@pytest.mark.parametrize("name", ["modl_fastmri_diverse", "varnet_brain_sim"])
def test_channels_last_convs_give_the_same_image(name):
    _x, y, op = mri_problem(b=1)
    model = load_pretrained(name)
    fast = channels_last_convs(copy.deepcopy(model))
    convs = [m for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(m.weight.is_contiguous() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    with torch.no_grad():
        ref, got = model(y, op), fast(y, op)
    # same arithmetic in another order: float32 rounding, amplified by the unrolled depth
    tol = 1e3 * torch.finfo(torch.float32).eps * float(ref.abs().max())
    torch.testing.assert_close(got, ref, atol=tol, rtol=0)


def test_channels_last_convs_leave_other_four_d_tensors_alone():
    m = torch.nn.Module()
    m.conv = torch.nn.Conv2d(2, 4, 3)
    m.register_buffer("maps", torch.randn(1, 3, 5, 6))
    channels_last_convs(m)
    assert m.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert m.maps.is_contiguous()  # code may .view() it


def test_ready_for_inference_is_what_the_loaders_apply():
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Dropout(0.5))
    out = ready_for_inference(m.train(), "cpu")
    assert out is m and not m.training
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last)
