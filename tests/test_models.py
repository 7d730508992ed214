"""Every registered model and dataset, through the registry alone (new families are covered automatically).

Each family declares the data it takes (``accepts`` at registration). On every example that it accepts it
must build and train one step — any exception fails the test — and on every other it must refuse with a
ValueError. Tasks run through the same ``training_step`` / ``eval_step`` the generic loop calls; Q-networks
through their TD loss.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from dl_ray.data import DataConfig, build_data
from dl_ray.models import ModelIO, Task, build_model
from dl_ray.registry import DATASETS, MODELS, Registry
from dl_ray.train.loop import StepContext
from dl_ray.train.optim import make_optimizers
from dl_ray.spec import OptimizerSpec
from tests.test_cifar import write_cifar_batches

EXTRA_VARIANTS = {"mnist5k": ({"pixels": "unit"}, {"pixels": "binary"}), "word_corpus": ({"examples": "cooccurrence"},)}
"""Dataset settings some families need (autoencoders want pixels in [0, 1], a VAE binary ones, GloVe co-occurrences)."""


MODEL_SETTINGS = {"siamese": {"miner": "all"}}
"""Model settings for an 8-example batch: semi-hard mining may find no triplet there, and a zero loss moves nothing."""
SMALL = {"digit_canvases": {"train_canvases": 300, "eval_canvases": 60}}
"""Dataset settings that keep a build short (a tenth of the canvases: 3 s less per build); splits work the same."""


@functools.cache
def offline(name: str) -> dict[str, Path]:
    """Settings of a dataset that downloads by default or reads the user's files: small files in their formats,
    written once per session instead (no network)."""
    writers = {"cifar10": write_cifar_batches, "omniglot": write_omniglot_folders, "review_stars": write_star_reviews}
    if name not in writers:
        return {}
    folder = Path(tempfile.mkdtemp())
    written = writers[name](folder)
    return {"path": written if isinstance(written, Path) else folder}


def write_omniglot_folders(folder: Path) -> None:
    """Omniglot's layout: images_background / images_evaluation, alphabet, character, one PNG per drawing."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for part in ("images_background", "images_evaluation"):
        for c in range(4):
            for i in range(6):
                path = folder / part / "Alphabet" / f"character{c + 1:02d}" / f"{c}_{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(torch.randint(0, 256, (20, 20), generator=gen, dtype=torch.uint8).numpy()).save(path)


def write_star_reviews(folder: Path) -> Path:
    words = ["great", "awful", "fine", "plot", "cast", "dull", "moving", "long", "funny", "not"]
    rows = [f"{' '.join(words[(i * k) % 10] for k in range(1, 6))} {i},{1 + i % 5}" for i in range(60)]
    (folder / "reviews.csv").write_text("text,stars\n" + "\n".join(rows) + "\n")
    return folder / "reviews.csv"


@functools.cache
def supervised_examples() -> dict[str, tuple[ModelIO, tuple[torch.Tensor, ...]]]:
    """A real batch of every registered dataset (and variant), each dataset built once for the whole module."""
    out = {}
    for name in DATASETS.names():
        for extra in ({}, *EXTRA_VARIANTS.get(name, ())):
            data = build_data(DATASETS[name].config(name=name, **offline(name), **SMALL.get(name, {}), **extra))
            out[f"{name}{extra or ''}"] = (data.io, data.example_batch(8))
    return out


def rl_examples() -> dict[str, tuple[ModelIO, tuple[torch.Tensor, ...]]]:
    return {"atari frames": (ModelIO((4, 84, 84), 6, "q_values"), (torch.randint(0, 256, (5, 4, 84, 84), dtype=torch.uint8),)),
            "cartpole vectors": (ModelIO((4,), 2, "q_values"), (torch.randn(5, 4),))}


def test_duplicate_names_are_refused():
    reg = Registry("thing")
    reg.register("a", BaseModel)(lambda: None)
    with pytest.raises(ValueError, match="thing 'a' is already registered"):
        reg.register("a", BaseModel)(lambda: None)


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_trains_on_the_data_it_declares_and_refuses_the_rest(name):
    entry = MODELS[name]
    examples = rl_examples() if entry.kind == "dqn" else supervised_examples()
    accepted = []
    for label, (io, batch) in examples.items():
        reason = entry.accepts(io) if entry.accepts else None
        dropout = 0.1 if entry.kind == "supervised" else 0.0  # predictors have dropout layers; an autoencoder refuses it
        if reason:
            with pytest.raises(ValueError):
                build_model(entry.config(name=name), io, dropout=dropout)
            continue
        torch.manual_seed(0)
        model = build_model(entry.config(name=name, **MODEL_SETTINGS.get(name, {})), io, dropout=dropout)  # any exception here fails the test
        if entry.kind == "dqn":
            td_step(model, batch[0], io.num_outputs)
        else:
            assert isinstance(model, Task) and model.kind == entry.kind
            task_step(model, batch)
        accepted.append(label)
    assert accepted, f"{name} accepts none of the example datasets: {', '.join(examples)}"


def task_step(task: Task, batch) -> None:
    """One training step and one evaluation batch, as the generic loop runs them."""
    from contextlib import nullcontext

    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    optimizers = make_optimizers(task, {n: OptimizerSpec() for n in task.optimizer_names}, l2=0.0)
    ctx = StepContext(task.networks(), optimizers, torch.device("cpu"), nullcontext(), grad_clip=None)
    task.train()
    logged = task.training_step(batch, ctx)
    assert ctx.steps >= len(task.optimizer_names), "every optimizer takes a step"
    assert set(logged) >= set(task.train_reports), f"training_step logs {set(logged)}, declares {set(task.train_reports)}"
    for value in logged.values():
        total, count = value if isinstance(value, tuple) else (value, 1)
        assert torch.isfinite(torch.as_tensor(total)).all() and float(count) > 0
    assert any(not torch.equal(before[n], p) for n, p in task.named_parameters()), "a step changes the weights"
    task.eval()
    metrics = task.evaluation()
    with torch.no_grad():
        task.eval_step(batch, metrics, task.networks())
    values = {n: float(m.compute()) for n, m in metrics.items()}
    assert set(values) == set(task.reports) and all(torch.isfinite(torch.tensor(v)) for v in values.values()), values


def td_step(net, obs: torch.Tensor, actions: int) -> None:
    """Q-networks learn through their TD loss against a target copy."""
    import copy

    target = copy.deepcopy(net)
    n = len(obs)
    batch = {"obs": obs, "next_obs": obs.flip(0), "action": torch.arange(n) % actions, "reward": torch.ones(n),
             "done": torch.zeros(n, dtype=torch.bool), "weight": torch.ones(n)}
    loss, td_abs, _ = net.td_loss(batch, target, gamma=0.99)
    loss.backward()
    assert torch.isfinite(loss) and td_abs.shape == (n,)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert all(p.grad is None for p in target.parameters()), "no gradient flows into the target network"


OFFICIAL_TEST_SPLIT = {"omniglot"}
"""Datasets whose test split is the data's own (Omniglot's evaluation alphabets): split_seed cannot move it."""
STREAMS = {"wiki_chars", "wiki_words"}
"""Language-model corpora: split by whole article (tests/test_language_model.py checks that), then streams."""


@pytest.mark.parametrize("name", DATASETS.names())
def test_every_dataset_splits_disjointly_and_deterministically(name):
    cfg = DATASETS[name].config(name=name, **offline(name), **SMALL.get(name, {}))
    a, b = DATASETS[name].build(cfg), build_data(cfg)
    sizes = [len(a.train), len(a.val), len(a.test)]
    assert min(sizes) > 0 and sizes[0] > sizes[1]
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])  # same seed, same split
    if name not in OFFICIAL_TEST_SPLIT:
        other = DATASETS[name].build(cfg.model_copy(update={"split_seed": 1}))
        assert not torch.equal(a.test.tensors[0], other.test.tensors[0])
    if name in STREAMS:  # one long token stream per split, cut into windows by the loader: no rows to compare
        return
    rows = {tuple(r.tolist()) for r in a.train.tensors[0].flatten(1)}
    assert not any(tuple(r.tolist()) in rows for r in a.test.tensors[0].flatten(1)[:50])
    assert tuple(a.train.tensors[0].shape[1:]) == a.input_shape


def test_the_dataset_cache_holds_every_dataset_a_session_uses():
    """Building each dataset (and variant) again is a cache hit: the model test above does not rebuild data."""
    from dl_ray.data import _build

    supervised_examples()
    misses = _build.cache_info().misses
    supervised_examples.cache_clear()
    supervised_examples()
    assert _build.cache_info().misses == misses


def test_mnist5k_is_the_real_subset():
    data = build_data(DATASETS["mnist5k"].config(name="mnist5k"))
    assert len(data.train) + len(data.val) + len(data.test) == 5000
    assert data.input_shape == (1, 28, 28) and data.num_outputs == 10
    assert torch.bincount(data.train.tensors[1]).min() > 300  # every digit is there
    assert abs(float(data.train.tensors[0].mean())) < 0.05  # standardised on train statistics
    unit = build_data(DATASETS["mnist5k"].config(name="mnist5k", pixels="unit")).train.tensors[0]
    binary = build_data(DATASETS["mnist5k"].config(name="mnist5k", pixels="binary")).train.tensors[0]
    assert unit.min() == 0 and unit.max() == 1 and torch.equal(binary, (unit > 0.5).float())


def test_dataset_config_is_a_dataconfig():
    assert all(issubclass(DATASETS[n].config, DataConfig) for n in DATASETS.names())
