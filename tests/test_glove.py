"""GloVe: 1/distance co-occurrence counts, the weighted least-squares loss and its gradient, a short fit."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dl_ray.data.skipgram import cooccurrence
from dl_ray.models import build_model
from dl_ray.models.glove import GloVeConfig, glove_loss, weighting
from dl_ray.models.word2vec import with_row_gradients
from dl_ray.models.word_vector_fit import fit
from tests.conftest import cli, write_job
from tests.test_word2vec import topic_bundle, topic_corpus, topic_margin

torch.set_num_threads(1)


def test_cooccurrence_counts_pairs_within_the_window_weighted_by_one_over_distance():
    rng = np.random.default_rng(0)
    ids, docs, v, window = rng.integers(0, 6, 40), np.repeat([0, 1], 20), 6, 3
    rows, cols, counts = cooccurrence(ids, docs, v, window)
    dense = np.zeros((v, v))
    dense[rows, cols] = counts
    brute = np.zeros((v, v))
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i != j and abs(i - j) <= window and docs[i] == docs[j]:
                brute[ids[i], ids[j]] += 1 / abs(i - j)
    np.testing.assert_allclose(dense, brute)


def test_weighting_is_capped_at_one():
    x = torch.tensor([0.5, 5.0, 10.0, 300.0])
    torch.testing.assert_close(weighting(x, 10.0, 0.75), torch.tensor([0.05**0.75, 0.5**0.75, 1.0, 1.0]))


def test_loss_equals_a_brute_force_sum_and_its_gradient_equals_autograd():
    rng = np.random.default_rng(1)
    v, d = 7, 4
    counts = np.where(rng.random((v, v)) < 0.5, rng.gamma(1.0, 20.0, (v, v)), 0.0)
    w, w_ctx = rng.normal(size=(v, d)), rng.normal(size=(v, d))
    b, b_ctx = rng.normal(size=v), rng.normal(size=v)
    brute = 0.0
    for i in range(v):
        for j in range(v):
            if counts[i, j] > 0:
                f = min((counts[i, j] / 10.0) ** 0.75, 1.0)
                brute += f * (w[i] @ w_ctx[j] + b[i] + b_ctx[j] - np.log(counts[i, j])) ** 2
    rows, cols = np.nonzero(counts)
    tensors = [torch.tensor(a, requires_grad=True) for a in (w[rows], w_ctx[cols], b[rows], b_ctx[cols])]
    loss, g_w, g_ctx, g_b = glove_loss(*(t.detach() for t in tensors), torch.tensor(counts[rows, cols]), 10.0, 0.75)
    assert float(loss) == pytest.approx(brute, rel=1e-12)
    reference, *_ = glove_loss(*tensors, torch.tensor(counts[rows, cols]), 10.0, 0.75)
    reference.backward()
    for ours, t in zip((g_w, g_ctx, g_b, g_b), tensors):
        torch.testing.assert_close(ours, t.grad)


def test_a_training_step_gives_each_table_the_autograd_gradient():
    corpus, _ = topic_corpus(articles=4, length=40)
    data = topic_bundle(corpus, examples="cooccurrence")
    task = build_model(GloVeConfig(name="glove", dim=5), data.io)
    batch = next(iter(data.loader("train", 50, seed=0)))
    loss, rows, cols, g_w, g_ctx, g_b = task.objective(batch)
    tables = [task.word.weight, task.context.weight, task.bias.weight, task.context_bias.weight]
    with_row_gradients(loss, list(zip(tables, (rows, cols, rows, cols), (g_w, g_ctx, g_b[:, None], g_b[:, None])))).backward()
    dense = [t.detach().clone().requires_grad_() for t in tables]
    reference, *_ = glove_loss(dense[0][rows], dense[1][cols], dense[2][rows, 0], dense[3][cols, 0], batch[2].float(),
                               10.0, 0.75)
    reference.backward()
    for table, copy in zip(tables, dense):
        torch.testing.assert_close(table.grad.to_dense(), copy.grad)


def test_short_training_puts_words_of_one_topic_nearer():
    corpus, topics = topic_corpus()
    data = topic_bundle(corpus, examples="cooccurrence", window=5)
    torch.manual_seed(0)
    task = build_model(GloVeConfig(name="glove", dim=20), data.io)
    before = topic_margin(task.vectors(), topics)
    first = fit(task, data, epochs=1, batch_size=256, lr=0.05)["loss"]
    last = fit(task, data, epochs=10, batch_size=256, lr=0.05)["loss"]
    assert abs(before) < 0.05 and last < 0.5 * first and topic_margin(task.vectors(), topics) > 0.1


def test_glove_refuses_windows_data():
    from dl_ray.models import ModelIO

    with pytest.raises(ValueError, match="examples: cooccurrence"):
        build_model(GloVeConfig(name="glove"), ModelIO((10,), 5, "windows", {"words": list("abcde"), "counts": [1] * 5}))


@pytest.mark.slow
def test_glove_job_trains_and_reports_intrinsic_scores(tmp_path):
    job = write_job(tmp_path, "glove", kind="embedding", data={"name": "word_corpus", "examples": "cooccurrence",
                                                                "window": 10},
                    model={"name": "glove", "dim": 50}, optimizer={"name": "adam", "lr": 0.01},
                    training={"epochs": 3, "batch_size": 4096})
    code, out, err = cli("train", str(job))
    assert code == 0, err[-3000:]
    final = json.loads((next((tmp_path / "runs").iterdir()) / "summary.json").read_text())["final"]
    assert final["test/wordsim353"] > 0.1, final
