"""word2vec: its data (subsampling, windows, noise), Huffman tree, closed-form gradients, evaluation, loading."""
from __future__ import annotations

import heapq
import itertools
import json

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from dl_ray.data.skipgram import (WordCorpusBundle, WordCorpusConfig, build_vocab, keep_probability,
                                  noise_distribution, split_articles, subsample, windows)
from dl_ray.data.word_vectors import WordVectors, load_vectors, save_glove_text, save_word2vec_binary
from dl_ray.embedding_eval import (analogy_accuracy, cosine_similarity, euclidean_distance, nearest, read_analogies,
                                   read_word_pairs, word_similarity)
from dl_ray.errors import SpecError
from dl_ray.models import build_model
from dl_ray.models.word2vec import (Word2VecConfig, hierarchical_softmax, hs_probabilities, huffman_tree,
                                    negative_sampling, with_row_gradients)
from dl_ray.models.word_vector_fit import fit
from tests.conftest import cli, write_job

torch.set_num_threads(1)


# ---------------------------------------------------------------- data side


def test_keep_probability_is_the_c_tools_formula_and_subsampling_keeps_that_share():
    counts = np.array([50_000, 5_000, 500, 50, 5])
    t, z = 1e-3, counts / counts.sum()
    expected = np.minimum((np.sqrt(z / t) + 1) * t / z, 1)
    np.testing.assert_allclose(keep_probability(counts, t), expected)
    assert keep_probability(counts, t)[0] < 0.2 and keep_probability(counts, t)[-1] == 1.0
    np.testing.assert_array_equal(keep_probability(counts, 0.0), 1.0)
    ids = np.repeat(np.arange(5), counts)
    kept, _ = subsample(ids, np.zeros_like(ids), keep_probability(counts, t), np.random.default_rng(0))
    share = np.bincount(kept, minlength=5) / counts
    np.testing.assert_allclose(share[:3], expected[:3], atol=0.02)


def test_windows_are_the_dynamic_windows_within_each_article():
    rng = np.random.default_rng(3)
    ids, docs, window = rng.integers(0, 20, 60), np.repeat([0, 1, 2], 20), 4
    contexts, centres = windows(ids, docs, window, np.random.default_rng(7))
    reach = np.random.default_rng(7).integers(1, window + 1, len(ids))
    expected = []
    for i in range(len(ids)):
        near = [ids[j] for d in range(1, reach[i] + 1) for j in (i - d, i + d)
                if 0 <= j < len(ids) and docs[j] == docs[i]]
        if near:
            expected.append((ids[i], sorted(near)))
    got = [(c, sorted(x[x >= 0].tolist())) for c, x in zip(centres, contexts)]
    assert got == expected


def test_each_worker_makes_only_its_shard_of_the_epochs_windows():
    corpus, _ = topic_corpus(articles=12, length=40)
    data = topic_bundle(corpus)
    ids, docs, reach, order = data.epoch_examples(seed=5, epoch=2)
    contexts, centres = windows(ids, docs, data.cfg.window, np.random.default_rng(0))  # every centre, file order
    whole = data.loader("train", 1000, epoch=2, seed=5)
    shards = [data.loader("train", 1000, epoch=2, seed=5, rank=r, world=3) for r in range(3)]
    assert len(whole.tensors[1]) == len(centres) and sorted(whole.tensors[1].tolist()) == sorted(centres.tolist())
    for r, shard in enumerate(shards):
        usable = len(order) // 3 * 3
        torch.testing.assert_close(shard.tensors[0], whole.tensors[0][r:usable:3])
        torch.testing.assert_close(shard.tensors[1], whole.tensors[1][r:usable:3])


def test_review_sentences_join_the_training_text_only_from_their_training_split():
    from dl_ray.data.reviews import RottenTomatoesConfig, rotten_tomatoes, split_examples
    from dl_ray.data.skipgram import training_reviews

    split = RottenTomatoesConfig(name="rotten_tomatoes", split_seed=3)
    parts = split_examples(rotten_tomatoes(), split)
    reviews = {tuple(t) for t in training_reviews(split)}
    assert reviews == {tuple(t) for t, _ in parts["train"]}
    assert reviews.isdisjoint(tuple(t) for t, _ in parts["val"] + parts["test"])
    with pytest.raises(ValueError, match="reviews.name must be rotten_tomatoes"):
        WordCorpusConfig(name="word_corpus", reviews={"name": "review_stars"})


def test_vocabulary_of_fewer_than_two_words_is_one_spec_error():
    with pytest.raises(SpecError, match=r"^data\.min_count: 3 leaves 1 word") as e:
        build_vocab([["a", "a", "a", "b"]], min_count=3)
    assert "\n" not in str(e.value)


def test_noise_is_unigram_to_the_three_quarters_and_the_model_draws_from_it():
    counts = np.array([900, 400, 100, 25, 4, 1])
    p = noise_distribution(counts)
    np.testing.assert_allclose(p, counts**0.75 / (counts**0.75).sum())
    task = _task(counts, noise_words=200_000)
    torch.manual_seed(0)
    draws = torch.multinomial(task.noise, 200_000, replacement=True, generator=torch.Generator().manual_seed(1))
    share = np.bincount(draws.numpy(), minlength=len(counts)) / 200_000
    np.testing.assert_allclose(share, p, atol=4 * np.sqrt(p * (1 - p) / 200_000).max())


# ---------------------------------------------------------------- Huffman tree, hierarchical softmax


def _reference_huffman_cost(counts) -> int:
    """sum_w count(w) len(w) of an optimal prefix code: the sum of every merge's weight (the textbook identity)."""
    heap, cost = list(map(int, counts)), 0
    heapq.heapify(heap)
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


@pytest.mark.parametrize("v", [2, 3, 17, 200])
def test_huffman_codes_are_prefix_free_and_of_optimal_expected_length(v):
    counts = np.sort(np.random.default_rng(v).zipf(1.5, v).clip(max=10**6))[::-1]
    codes, points = huffman_tree(counts)
    words = ["".join(map(str, c)) for c in codes]
    assert all(not b.startswith(a) for a, b in itertools.permutations(words, 2))
    assert sum(c * len(w) for c, w in zip(counts, words)) == _reference_huffman_cost(counts)
    assert all(p[0] == v - 2 and len(p) == len(c) for p, c in zip(points, codes))  # every path starts at the root
    assert {n for p in points for n in p} == set(range(v - 1))


def test_hierarchical_softmax_probabilities_sum_to_one():
    counts = np.random.default_rng(0).integers(1, 1000, 300)
    task = _task(counts, output="hierarchical_softmax")
    output = torch.randn(len(counts) - 1, 8, dtype=torch.float64)
    h = torch.randn(8, dtype=torch.float64)
    probs = hs_probabilities(h, output, task.codes, task.points, task.lengths)
    assert probs.min() > 0 and abs(float(probs.sum()) - 1) < 1e-9


# ---------------------------------------------------------------- closed-form gradients


def test_negative_sampling_and_hierarchical_softmax_gradients_equal_autograd():
    g = torch.Generator().manual_seed(0)
    h, u_out, u_noise = (torch.randn(n, 6, dtype=torch.float64, generator=g, requires_grad=True) for n in (5, 5, 7))
    loss, g_h, g_out, g_noise = negative_sampling(h.detach(), u_out.detach(), u_noise.detach(), 5 / 7)
    reference = (-torch.nn.functional.logsigmoid((h * u_out).sum(1)).sum()
                 - 5 / 7 * torch.nn.functional.logsigmoid(-(h @ u_noise.T)).sum())
    reference.backward()
    torch.testing.assert_close(loss, reference.detach())
    for ours, param in ((g_h, h), (g_out, u_out), (g_noise, u_noise)):
        torch.testing.assert_close(ours, param.grad)

    nodes = torch.randn(9, 6, dtype=torch.float64, generator=g, requires_grad=True)
    h2 = torch.randn(4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    example, signs = torch.tensor([0, 0, 1, 2, 2, 2, 3, 3, 3]), torch.tensor([1., -1, 1, 1, -1, -1, 1, -1, 1], dtype=torch.float64)
    loss, g_h2, g_nodes = hierarchical_softmax(h2.detach(), nodes.detach(), signs, example)
    reference = -torch.nn.functional.logsigmoid((h2[example] * nodes).sum(1) * signs).sum()
    reference.backward()
    torch.testing.assert_close(loss, reference.detach())
    torch.testing.assert_close(g_h2, h2.grad)
    torch.testing.assert_close(g_nodes, nodes.grad)


@pytest.mark.parametrize("output", ["negative_sampling", "hierarchical_softmax"])
def test_a_skipgram_step_gives_the_tables_the_autograd_gradient(output):
    counts = np.arange(40, 0, -1) * 3
    task = _task(counts, output=output, noise_words=6)
    with torch.no_grad():
        task.output.weight.normal_()
    contexts = torch.tensor([[3, 5, -1, -1], [0, -1, -1, -1], [7, 7, 1, 2]])
    centres = torch.tensor([1, 4, 9])
    g = torch.Generator().manual_seed(5)
    loss, n, in_rows, in_grad, out_rows, out_grad = task.objective((contexts, centres), g)
    with_row_gradients(loss, [(task.input.weight, in_rows, in_grad), (task.output.weight, out_rows, out_grad)]).backward()
    ours = task.input.weight.grad.to_dense(), task.output.weight.grad.to_dense()

    w_in, w_out = (t.weight.detach().clone().requires_grad_() for t in (task.input, task.output))
    mask = contexts >= 0
    h, outs = w_in[contexts[mask]], centres.repeat_interleave(mask.sum(1))
    if output == "negative_sampling":
        noise = torch.multinomial(task.noise, 6, replacement=True, generator=torch.Generator().manual_seed(5))
        reference = (-torch.nn.functional.logsigmoid((h * w_out[outs]).sum(1)).sum()
                     - 5 / 6 * torch.nn.functional.logsigmoid(-(h @ w_out[noise].T)).sum())
    else:
        reference = sum(-torch.log(hs_probabilities(h[k], w_out, task.codes, task.points, task.lengths)[outs[k]])
                        for k in range(len(outs)))
    reference.backward()
    assert n == 7
    torch.testing.assert_close(loss, reference.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[0], w_in.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours[1], w_out.grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- evaluation


def _random_vectors(v=30, d=5, seed=0) -> WordVectors:
    rng = np.random.default_rng(seed)
    return WordVectors([f"w{i}" for i in range(v)], rng.normal(size=(v, d)).astype(np.float32))


def test_3cosadd_matches_a_brute_force_loop_and_reports_coverage(tmp_path):
    vectors = _random_vectors()
    rng = np.random.default_rng(1)
    lines = [": one"] + [" ".join(f"W{i}" for i in rng.choice(30, 4, replace=False)) for _ in range(40)]
    lines += [": two", "w1 w2 w3 missing", "w4 w5 w6 w7"]
    (tmp_path / "q.txt").write_text("\n".join(lines))
    result = analogy_accuracy(vectors, read_analogies(tmp_path / "q.txt"))
    questions = [line.lower().split() for line in lines if not line.startswith(":") and "missing" not in line]
    unit = {w: vectors[w] / np.linalg.norm(vectors[w]) for w in vectors.words}
    right = 0
    for a, b, c, d in questions:
        best = max((x for x in vectors.words if x not in (a, b, c)),
                   key=lambda x: unit[x] @ unit[b] - unit[x] @ unit[a] + unit[x] @ unit[c])
        right += best == d
    assert (result.correct, result.covered, result.total) == (right, 41, 42)
    assert result.sections["two"][1] == 1


def test_a_malformed_analogy_file_is_one_spec_error(tmp_path):
    (tmp_path / "bad.txt").write_text(": s\na b c d\na b c\n")
    with pytest.raises(SpecError, match=r"^analogies: .*bad.txt line 3: expected 'a b c d'") as e:
        read_analogies(tmp_path / "bad.txt")
    assert "\n" not in str(e.value)
    (tmp_path / "headless.txt").write_text("a b c d\n")
    with pytest.raises(SpecError, match="no ': section' line"):
        read_analogies(tmp_path / "headless.txt")


def test_word_similarity_is_the_spearman_correlation_over_covered_pairs(tmp_path):
    vectors = _random_vectors(12, 4, seed=2)
    rng = np.random.default_rng(4)
    pairs = [(f"w{a}", f"w{b}", float(s)) for (a, b), s in zip(itertools.combinations(range(12), 2), rng.random(66))]
    text = "# comment\n" + "\n".join(f"{a.upper()}\t{b}\t{s}" for a, b, s in pairs) + "\nw1\tabsent\t3.0\n"
    (tmp_path / "sim.tsv").write_text(text)
    result = word_similarity(vectors, read_word_pairs(tmp_path / "sim.tsv"))
    cos = np.array([cosine_similarity(vectors[a], vectors[b]) for a, b, _ in pairs])
    rx, ry = rankdata(cos), rankdata([s for *_, s in pairs])
    brute = 1 - 6 * ((rx - ry) ** 2).sum() / (len(rx) * (len(rx) ** 2 - 1))  # no ties: the textbook formula
    assert (result.covered, result.total) == (66, 67)
    assert abs(result.spearman - brute) < 1e-9


def test_similarity_functions_and_nearest_neighbours():
    vectors = WordVectors(["a", "b", "c"], np.array([[1, 0], [2, 0.1], [0, -3]], dtype=np.float32))
    assert cosine_similarity(vectors["a"], vectors["c"]) == pytest.approx(0.0)
    assert euclidean_distance(vectors["a"], vectors["c"]) == pytest.approx(np.sqrt(10))
    assert [w for w, _ in nearest(vectors, "a", 2)] == ["b", "c"]


# ---------------------------------------------------------------- loading vectors


def test_load_vectors_reads_what_gensim_reads(tmp_path):
    from gensim.models import KeyedVectors

    vectors = WordVectors(["the", "café", "naïve", "x"], np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32))
    for path, kwargs in ((save_word2vec_binary(vectors, tmp_path / "v.bin"), {"binary": True}),
                         (save_glove_text(vectors, tmp_path / "glove.txt"), {"binary": False, "no_header": True})):
        theirs, ours = KeyedVectors.load_word2vec_format(path, **kwargs), load_vectors(path)
        assert ours.words == list(theirs.index_to_key)
        np.testing.assert_array_equal(ours.matrix, theirs.vectors)
    text = tmp_path / "w2v.txt"  # word2vec's text format: a "V D" header, then GloVe-style lines
    text.write_text("2 3\na 1 2 3\nb 4 5 6\n")
    np.testing.assert_array_equal(load_vectors(text).matrix, KeyedVectors.load_word2vec_format(text).vectors)


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"", "is empty"),
    (b"a 1 2\nb 1 x\n", "line 2: expected 'word v1 ... vD' with numbers"),
    (b"a 1 2\nb 1\n", "line 2: 1 numbers, the first vector has 2"),
    (b"3 2\na \x00\x00\x80?\x00\x00\x00@\n", "promises 3 vectors of 2 floats, the file ends after 1"),
])
def test_bad_vector_files_are_one_spec_error(tmp_path, content, message):
    path = tmp_path / ("v.bin" if content and content[:1].isdigit() else "v.txt")
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SpecError, match=message) as e:
        load_vectors(path)
    assert str(e.value).startswith("vectors: ") and "\n" not in str(e.value)


# ---------------------------------------------------------------- learning


def _task(counts, **model):
    from dl_ray.models import ModelIO

    io = ModelIO((10,), len(counts), "windows", {"words": [f"w{i}" for i in range(len(counts))],
                                                 "counts": list(map(int, counts))})
    return build_model(Word2VecConfig(name="word2vec", dim=model.pop("dim", 6), **model), io)


def topic_corpus(seed=0, articles=60, length=300):
    """Articles each about one of 4 topics of 12 words; every article also uses 12 common words."""
    rng = np.random.default_rng(seed)
    topics = [[f"t{t}w{i}" for i in range(12)] for t in range(4)]
    common = [f"c{i}" for i in range(12)]
    corpus = []
    for a in range(articles):
        words = topics[a % 4] + common
        corpus.append([words[i] for i in rng.integers(0, len(words), length)])
    return corpus, topics


def topic_bundle(corpus, examples="windows", window=3):
    cfg = WordCorpusConfig(name="word_corpus", min_count=1, window=window, sample=0, examples=examples, eval_examples=100)
    articles = split_articles(corpus, cfg)
    return WordCorpusBundle(cfg, build_vocab(articles["train"], 1), articles)


def topic_margin(vectors: WordVectors, topics) -> float:
    """Mean cosine of same-topic word pairs minus that of different-topic pairs."""
    same = [cosine_similarity(vectors[a], vectors[b]) for t in topics for a, b in itertools.combinations(t, 2)]
    other = [cosine_similarity(vectors[a], vectors[b]) for t, u in itertools.combinations(topics, 2) for a in t for b in u]
    return float(np.mean(same) - np.mean(other))


@pytest.mark.parametrize("model, lr", [({"architecture": "skipgram"}, 0.025), ({"architecture": "cbow"}, 0.05),
                                       ({"output": "hierarchical_softmax"}, 0.025)])
def test_short_training_puts_words_of_one_topic_nearer(model, lr):
    corpus, topics = topic_corpus()
    data = topic_bundle(corpus)
    torch.manual_seed(0)
    task = build_model(Word2VecConfig(name="word2vec", dim=20, noise_words=16, **model), data.io)
    before = topic_margin(task.vectors(), topics)
    fit(task, data, epochs=3, batch_size=64, lr=lr, workers=2)
    assert abs(before) < 0.1 and topic_margin(task.vectors(), topics) > 0.3


# ---------------------------------------------------------------- jobs end to end


def test_bad_inputs_through_the_cli_exit_2_with_one_line(tmp_path):
    job = write_job(tmp_path, "w2v", kind="embedding", data={"name": "word_corpus", "min_count": 10**6},
                    model={"name": "word2vec"}, optimizer={"name": "sgd", "lr": 0.025}, training={"epochs": 1})
    code, out, err = cli("train", str(job))
    assert code == 2 and err.strip().count("\n") == 0 and "data.min_count" in err, (code, out, err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_optimizer_that_would_touch_every_row_is_refused_before_the_run_starts(tmp_path):
    job = write_job(tmp_path, "w2v", kind="embedding", data={"name": "word_corpus"}, model={"name": "word2vec"},
                    optimizer={"name": "rmsprop", "lr": 0.01}, training={"epochs": 1})
    code, out, err = cli("train", str(job))
    assert code == 2 and err.strip().count("\n") == 0 and "optimizer: this model's gradients are sparse rows" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_malformed_analogy_file_in_a_job_exits_2_with_one_line(tmp_path):
    (tmp_path / "questions.txt").write_text(": capitals\nathens greece\n")
    job = write_job(tmp_path, "w2v", kind="embedding", data={"name": "word_corpus"},
                    model={"name": "word2vec", "analogies": str(tmp_path / "questions.txt")},
                    optimizer={"name": "sgd", "lr": 0.025}, training={"epochs": 1})
    code, out, err = cli("train", str(job))
    assert code == 2 and err.strip().count("\n") == 0 and "analogies: " in err and "line 2" in err, (code, out, err)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_word2vec_job_trains_reports_intrinsic_scores_and_its_vectors_load(tmp_path):
    job = write_job(tmp_path, "w2v", kind="embedding", data={"name": "word_corpus"},
                    model={"name": "word2vec", "dim": 50}, optimizer={"name": "sgd", "lr": 0.04},
                    training={"epochs": 3, "batch_size": 256})
    code, out, err = cli("train", str(job))
    assert code == 0, err[-3000:]
    run = next((tmp_path / "runs").iterdir())
    final = json.loads((run / "summary.json").read_text())["final"]
    assert final["test/wordsim353"] > 0.15 and final["test/analogy"] > 0.005, final
    assert (run / "tsne.png").is_file()
    vectors = load_vectors(run)
    np.testing.assert_array_equal(vectors.matrix, load_vectors(run / "vectors.bin").matrix)


@pytest.mark.slow
def test_skipgram_on_wikipedia_beats_chance_on_wordsim_and_analogies():
    from dl_ray.data import build_data
    from dl_ray.embedding_eval import evaluate_vectors

    data = build_data(WordCorpusConfig(name="word_corpus"))
    torch.manual_seed(0)
    task = build_model(Word2VecConfig(name="word2vec", noise_words=32), data.io)
    fit(task, data, epochs=3, batch_size=256, lr=0.04)  # one process: two (Hogwild) make the figure vary run to run
    scores = evaluate_vectors(task.vectors())
    assert scores["wordsim353"] > 0.2 and scores["analogy"] > 0.01, scores
