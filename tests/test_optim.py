"""Optimisers, LR decay, L2, dropout and augmentation do what the spec says (checked against torch / by hand)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dl_ray.data.augment import shift_rotate
from dl_ray.models import ModelIO, build_model
from dl_ray.models.mlp import MLPConfig
from dl_ray.spec import OptimizerSpec, ScheduleSpec
from dl_ray.train.optim import make_optimizer, make_scheduler


def trace(make, epochs: int = 12, lr: float = 0.1) -> list[float]:
    """The learning rate of each epoch under the scheduler ``make(optimizer)`` builds."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler, out = make(opt), []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return out


def lrs(sched: ScheduleSpec, epochs: int = 12, lr: float = 0.1) -> list[float]:
    return trace(lambda opt: make_scheduler(opt, sched, epochs, lr), epochs, lr)


def reference(cls, epochs: int = 12, lr: float = 0.1, **kw) -> list[float]:
    return trace(lambda opt: cls(opt, **kw), epochs, lr)


def test_step_and_exponential_decay_match_torch():
    assert lrs(ScheduleSpec(name="step", decay_rate=0.3, step_size=4)) == pytest.approx(
        reference(torch.optim.lr_scheduler.StepLR, step_size=4, gamma=0.3))
    assert lrs(ScheduleSpec(name="exponential", decay_rate=0.9)) == pytest.approx(
        reference(torch.optim.lr_scheduler.ExponentialLR, gamma=0.9))


def test_cosine_decay_matches_torch_and_inverse_time_the_course_formula():
    assert lrs(ScheduleSpec(name="cosine", min_lr=0.001)) == pytest.approx(
        reference(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=12, eta_min=0.001))
    assert lrs(ScheduleSpec(name="inverse_time", decay_rate=0.5)) == pytest.approx([0.1 / (1 + 0.5 * e) for e in range(12)])
    assert lrs(ScheduleSpec(name="constant")) == [0.1] * 12


def test_l2_is_the_gradient_of_half_lambda_w_squared_on_weights_only():
    torch.manual_seed(0)
    model = build_model(MLPConfig(name="mlp", hidden=[4]), ModelIO((3,), 1, "regression"))
    x, y = torch.randn(8, 3), torch.randn(8)
    lam, lr = 0.3, 0.1
    manual = [p.detach().clone() for p in model.parameters()]
    loss = model.loss(model(x), (x, y)) + lam / 2 * sum((p**2).sum() for p in model.parameters() if p.ndim > 1)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected = [p - lr * g for p, g in zip(manual, grads)]
    opt = make_optimizer(model, OptimizerSpec(name="sgd", lr=lr), l2=lam)
    opt.zero_grad()
    model.loss(model(x), (x, y)).backward()
    opt.step()
    for p, e in zip(model.parameters(), expected):
        assert torch.allclose(p, e, atol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam"])
def test_optimisers_map_to_torch(name):
    model = nn.Linear(2, 1)
    opt = make_optimizer(model, OptimizerSpec(name=name, lr=0.01, momentum=0.5), l2=0.0)
    expected = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}[name]
    assert type(opt) is expected and opt.param_groups[0]["lr"] == 0.01
    if name != "adam":
        assert opt.param_groups[0]["momentum"] == 0.5


def test_dropout_is_random_in_training_and_off_in_eval():
    model = build_model(MLPConfig(name="mlp", hidden=[64, 64]), ModelIO((10,), 3, "multiclass"), dropout=0.5)
    x = torch.randn(16, 10)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))
    assert sum(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules()) == 2


def test_augmentation_shifts_and_rotates_within_bounds():
    img = torch.zeros(64, 1, 28, 28)
    img[:, :, 10:18, 12:16] = 1.0  # a bar
    assert torch.allclose(shift_rotate(img, 0, 0.0), img, atol=1e-5)  # no-op when off
    rows = torch.arange(28.0).view(1, 1, 28, 1)

    def centre(t):
        return (t * rows).sum((1, 2, 3)) / t.sum((1, 2, 3))

    out = shift_rotate(img, 3, 0.0, generator=torch.Generator().manual_seed(0))
    moved = (centre(out) - centre(img)).abs()
    assert moved.max() <= 3.01 and moved.mean() > 0.5  # real, bounded translations
    assert torch.allclose(out.sum((1, 2, 3)), img.sum((1, 2, 3)), rtol=0.05)  # content kept, not cropped
    rot = shift_rotate(img, 0, 30.0, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(rot, img, atol=1e-3)
    angle = math.radians(30)
    assert (centre(rot) - centre(img)).abs().max() <= 14 * math.sin(angle) + 1
