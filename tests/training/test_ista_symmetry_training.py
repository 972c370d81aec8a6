"""ISTA-Net+'s symmetry constraint in training (audit c7): its published loss is the image loss
plus 0.01 x ``mean_k mean |F~_k(F_k(D r)) - D r|^2``, but the term was reachable only through
``forward_with_symmetry``, which nothing but tests called: ``mrirecon train`` of
``ista_net_plus`` trained without it. A training forward now leaves the weighted term in
``model.auxiliary_loss`` and the trainer adds it."""

from __future__ import annotations

import pytest
import torch

from mrirecon.models.registry import build_model
from mrirecon.models.template import take_auxiliary_loss
from tests.helpers import TRAIN_MASK

TINY = {"iterations": 2, "features": 4}
#: terms are ~3e-4: compared relatively (assert_close's default atol 1e-5 would pass 3 %)
CLOSE = {"rtol": 16 * torch.finfo(torch.float32).eps, "atol": 0.0}


def _problem():
    from mrirecon.operators import sense

    g = torch.Generator().manual_seed(0)
    maps = torch.randn(1, 2, 16, 16, dtype=torch.complex64, generator=g)
    maps = maps / maps.abs().square().sum(1, keepdim=True).sqrt()
    mask = torch.zeros(16)
    mask[::2] = 1
    op = sense(maps, mask)
    return op(torch.randn(1, 16, 16, dtype=torch.complex64, generator=g)), op


def test_a_training_forward_leaves_the_weighted_symmetry_term():
    import copy

    y, op = _problem()
    model = build_model("ista_net_plus", **TINY, init_seed=1)
    x, symmetry = model.forward_with_symmetry(y, op)
    model.train()
    out = model(y, op)
    torch.testing.assert_close(out, x)
    assert copy.deepcopy(model).auxiliary_loss is None  # a term inside a graph: copies leave it
    aux = take_auxiliary_loss(model)
    torch.testing.assert_close(aux, 0.01 * symmetry, **CLOSE)
    assert float(symmetry.detach()) > 0 and aux.requires_grad
    assert model.auxiliary_loss is None and take_auxiliary_loss(model) == 0.0  # taken: cleared
    copy.deepcopy(model)
    model.eval()
    model(y, op)
    assert take_auxiliary_loss(model) == 0.0  # evaluation leaves no term (nor a graph) behind
    model.train()
    with torch.no_grad():
        model(y, op)
    assert take_auxiliary_loss(model) == 0.0
    off = build_model("ista_net_plus", **TINY, init_seed=1, symmetry_weight=0.0).train()
    off(y, op)
    assert take_auxiliary_loss(off) == 0.0
    with pytest.raises(ValueError, match="symmetry_weight must be >= 0"):
        build_model("ista_net_plus", **TINY, symmetry_weight=-1.0)


def test_several_forwards_before_a_take_leave_their_mean():
    """A self-supervised loss runs the model once per SSDU split (CT: per view part) and averages
    the losses; the term was the last forward's alone. Now the mean of the forwards' terms."""
    y, op = _problem()
    model = build_model("ista_net_plus", **TINY, init_seed=1)
    model.eval()
    terms = [0.01 * model.forward_with_symmetry(c * y, op)[1] for c in (1.0, 0.3 + 0.5j)]
    assert take_auxiliary_loss(model) == 0.0 and not torch.allclose(terms[0], terms[1])
    model.train()
    model(y, op)
    model((0.3 + 0.5j) * y, op)
    torch.testing.assert_close(take_auxiliary_loss(model), (terms[0] + terms[1]) / 2, **CLOSE)
    model(y, op)  # a take starts a new mean
    torch.testing.assert_close(take_auxiliary_loss(model), terms[0], **CLOSE)


def test_the_term_is_found_inside_a_wrapping_model():
    """A model inside another (``LearnedMapsModel`` keeps it as ``.model``, DistributedDataParallel
    as ``.module``) still has its term taken: the trainer read the outer module only."""
    y, op = _problem()
    inner = build_model("ista_net_plus", **TINY, init_seed=1)
    wrapper = torch.nn.Sequential()
    wrapper.model = inner
    inner.train()
    inner(y, op)
    expected = inner.auxiliary_loss
    torch.testing.assert_close(take_auxiliary_loss(wrapper), expected, **CLOSE)
    assert inner.auxiliary_loss is None


def _one_step(folder, tmp_path, weight: float, *, self_supervised: bool = False
              ) -> dict[str, torch.Tensor]:
    """One Adam step of the trainer with an image loss of zero: only the symmetry term moves
    the weights."""
    from mrirecon.training import trainer as T
    from mrirecon.training.config import (DataConfig, MaskConfig, ModelConfig, OptimConfig,
                                          TrainConfig)
    from mrirecon.training.data import MRITrainingSet

    params = {**TINY, "init_seed": 3, "symmetry_weight": weight}
    cfg = TrainConfig(name="t", output_dir=str(tmp_path / f"out{weight}"),
                      data=DataConfig(train=str(folder), val=""),
                      model=ModelConfig("ista_net_plus", params),
                      optim=OptimConfig(lr=1e-2, max_steps=1), device="cpu", log_every=1,
                      val_every=0, checkpoint_every=100)
    model = build_model("ista_net_plus", **params)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    zero = ({"loss_fn": None,
             "sample_loss": lambda m, sample, seed: 0.0 * m(sample.y, sample.operator()).abs().sum()}
            if self_supervised else
            {"loss_fn": lambda pred, target, max_value: 0.0 * pred.sum()})
    T.Trainer(cfg, model, MRITrainingSet(folder, MaskConfig(**TRAIN_MASK), train=True),
              validate_fn=None, progress=False, **zero).fit()
    import copy

    copy.deepcopy(model)  # trained: the term was taken, so the model copies (adapt_model copies)
    return {k: (v.detach() - before[k]).abs().max() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("self_supervised", [False, True], ids=["image-loss", "sample-loss"])
def test_the_trainer_adds_the_symmetry_term(tmp_path, self_supervised):
    from mrirecon.data.simulate_mri import simulate_mri_dataset

    simulate_mri_dataset(tmp_path / "d", volumes=1, slices=1, coils=2, size=(32, 32), seed=4)
    moved = _one_step(tmp_path / "d", tmp_path, 0.01, self_supervised=self_supervised)
    still = _one_step(tmp_path / "d", tmp_path, 0.0, self_supervised=self_supervised)
    transforms = [k for k in moved if any(n in k for n in ("conv_d", "forward_", "backward_"))]
    assert transforms and all(float(moved[k]) > 0 for k in transforms), {k: float(moved[k]) for k in moved}
    assert all(float(v) == 0 for v in still.values()), {k: float(v) for k, v in still.items()}
    # the last phase's G comes after every symmetry residual (an earlier G's output feeds the
    # next phase's residual)
    assert float(moved["phases.1.conv_g.weight"]) == 0 < float(moved["phases.0.conv_g.weight"])
