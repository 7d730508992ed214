"""Sentiment: the Rotten Tomatoes data as cleaned, the averaged-embedding classifier against a hand computation,
the many-to-one RNN's padding, star-review CSVs, and a short real training run."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from dl_ray.cli import main
from dl_ray.data.reviews import (RottenTomatoesConfig, StarReviewsConfig, has_negation, read_star_reviews,
                                 review_stars, rotten_tomatoes, rotten_tomatoes_data, rotten_tomatoes_path,
                                 split_examples, tokenize)
from dl_ray.errors import SpecError
from dl_ray.models.base import ModelIO
from dl_ray.models.rnn import RecurrentConfig
from dl_ray.models.sentiment import AveragedEmbeddings, RnnSentiment, RnnSentimentConfig, SentimentConfig
from tests.conftest import write_job


def test_tokens_split_negations_off():
    assert tokenize("I didn’t LIKE it; it's a can't-miss, cannot-fail film!") == [
        "i", "did", "n't", "like", "it", ";", "it", "'s", "a", "ca", "n't", "-", "miss", ",", "can", "not", "-", "fail",
        "film", "!"]
    assert has_negation(tokenize("Never again.")) and not has_negation(tokenize("Nothing like it."))


def test_rotten_tomatoes_holds_only_distinct_review_sentences_of_both_classes():
    raw = pd.read_csv(rotten_tomatoes_path()).dropna(subset=["text"])
    examples = rotten_tomatoes()
    sentences = [tuple(tokens) for tokens, _ in examples]
    plots = {tuple(tokenize(t)) for t in raw.loc[raw["category"] == "plot", "text"]}
    reviews = raw[raw["category"] != "plot"]
    assert len(plots) > 1000 and plots.isdisjoint(sentences)  # the synopses are in the file, not in the data
    assert len(set(sentences)) == len(sentences)  # no sentence twice
    assert len(examples) == len({tuple(tokenize(t)) for t in reviews["text"]}) < len(reviews)  # the duplicates went
    labels = np.array([label for _, label in examples])
    fresh = {tuple(tokenize(t)) for t in reviews.loc[reviews["category"] == "fresh", "text"]}
    assert all((s in fresh) == bool(y) for s, y in zip(sentences, labels))
    assert 0.5 < labels.mean() < 0.65  # both classes, fresh the larger (7,368 of 12,751)


def test_the_split_is_fixed_and_shares_no_sentence():
    cfg = RottenTomatoesConfig(name="rotten_tomatoes")
    parts = split_examples(rotten_tomatoes(), cfg)
    sets = {name: {tuple(t) for t, _ in rows} for name, rows in parts.items()}
    assert sets["train"].isdisjoint(sets["test"]) and sets["val"].isdisjoint(sets["test"])
    assert parts == split_examples(rotten_tomatoes(), cfg)
    bundle = rotten_tomatoes_data(cfg)
    tokens, lengths, labels = bundle.test.tensors
    assert len(labels) == len(parts["test"]) and bundle.num_outputs == 2
    assert (tokens[torch.arange(tokens.shape[1]) >= lengths[:, None]] == 0).all()  # padding past each length
    assert ((tokens != 0).sum(1) == lengths).all()
    vocab = bundle.meta["vocab"]
    first = parts["test"][0][0]
    assert [vocab[i] if vocab[i] in first else "?" for i in tokens[0, : lengths[0]]] == [
        w if w in vocab else "?" for w in first]  # unknown words read <unk>, the rest round-trip


def io_for(vocab_size: int, classes: int = 3, max_len: int = 5) -> ModelIO:
    vocab = ["<pad>", "<unk>"] + [f"w{i}" for i in range(vocab_size - 2)]
    return ModelIO((max_len,), classes, "multiclass", {"vocab": vocab})


def test_averaged_embeddings_is_the_mean_over_real_tokens_then_a_linear_softmax_layer():
    torch.manual_seed(0)
    model = AveragedEmbeddings(SentimentConfig(name="averaged_embeddings", embedding_dim=4), io_for(7)).eval()
    with torch.no_grad():
        model.embed.weight.normal_()  # the padding row too: it must not count
    tokens = torch.tensor([[2, 3, 4, 0, 0], [5, 6, 6, 6, 1], [3, 5, 2, 2, 2]])
    lengths = torch.tensor([3, 5, 2])  # row 2: ids after its length are padding even though they are not 0
    E, W, b = model.embed.weight.detach(), model.head.weight.detach(), model.head.bias.detach()
    expected = torch.stack([
        (E[2] + E[3] + E[4]) / 3 @ W.T + b,
        (E[5] + E[6] + E[6] + E[6] + E[1]) / 5 @ W.T + b,
        (E[3] + E[5]) / 2 @ W.T + b,
    ])
    torch.testing.assert_close(model(tokens, lengths), expected)
    probabilities = torch.softmax(model(tokens, lengths), 1)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(3))


@pytest.mark.parametrize("impl", ["torch", "ours"])
def test_the_rnn_reads_a_padded_sentence_as_the_sentence_alone(impl):
    torch.manual_seed(0)
    cfg = RnnSentimentConfig(name="rnn_sentiment", embedding_dim=6, rnn=RecurrentConfig(cell="gru", impl=impl, hidden_size=5))
    model = RnnSentiment(cfg, io_for(9, classes=2, max_len=6)).eval()
    sentence = torch.tensor([[3, 4, 8, 2]])
    padded = torch.tensor([[3, 4, 8, 2, 7, 7], [5, 0, 0, 0, 0, 0]])
    alone = model(sentence, torch.tensor([4]))
    torch.testing.assert_close(model(padded, torch.tensor([4, 1]))[0], alone[0])
    assert not torch.allclose(model(padded, torch.tensor([6, 1]))[0], alone[0])  # the length is what hides the rest


def test_word_vectors_initialise_the_embeddings_and_the_missing_words_are_reported(tmp_path, capsys):
    path = tmp_path / "glove.txt"
    path.write_text("w0 1 2 3\nw2 4 5 6\nother 7 8 9\n")
    cfg = SentimentConfig(name="averaged_embeddings", embeddings=path, freeze=True)
    model = AveragedEmbeddings(cfg, io_for(6))
    torch.testing.assert_close(model.embed.weight[2], torch.tensor([1.0, 2, 3]))
    torch.testing.assert_close(model.embed.weight[4], torch.tensor([4.0, 5, 6]))
    assert model.embed.weight[0].abs().sum() == 0 and not model.embed.weight.requires_grad
    assert model.missing_words == ("w1", "w3")
    assert "2 of 4 vocabulary words found" in capsys.readouterr().err
    with pytest.raises(ValueError, match="model.embedding_dim: 8 differs from the 3 dimensions"):
        AveragedEmbeddings(SentimentConfig(name="averaged_embeddings", embeddings=path, embedding_dim=8), io_for(6))


def test_star_reviews_become_five_classes(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = [(f"review number {i} was {'great' if i % 5 > 2 else 'bad'}", 1 + i % 5) for i in range(40)]
    pd.DataFrame(rows, columns=["text", "stars"]).to_csv(path, index=False)
    bundle = review_stars(StarReviewsConfig(name="review_stars", path=path))
    assert bundle.num_outputs == 5 and len(bundle.train) + len(bundle.val) + len(bundle.test) == 40
    assert sorted(label for _, label in read_star_reviews(path)) == sorted(i % 5 for i in range(40))


@pytest.mark.parametrize("content, columns, message", [
    (None, {}, "data.path: no such file"),
    ("body,stars\nfine,3\n", {}, "data.text_column: .* has no column 'text'; its columns: body, stars"),
    ("text,rating\nfine,3\n", {"stars_column": "score"}, "data.stars_column: .* has no column 'score'"),
    ("text,stars\nfine,3\nawful,6\n", {}, "data.stars_column: 'stars' must hold whole stars 1-5; row 3 .* holds '6'"),
])
def test_bad_star_review_files_are_one_line(tmp_path, content, columns, message):
    path = tmp_path / "reviews.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError, match=message):
        read_star_reviews(path, **{"text_column": "text", "stars_column": "stars", **columns})


def test_bad_inputs_exit_2_with_one_line_and_write_nothing(tmp_path, capsys):
    base = {"model": {"name": "averaged_embeddings"}, "training": {"epochs": 1}}
    cases = [
        ({"data": {"name": "review_stars", "path": str(tmp_path / "missing.csv")}}, "data.path: no such file"),
        ({"data": {"name": "rotten_tomatoes", "min_count": 100000}}, "data.min_count: 100000 leaves 0 word"),
        ({"data": {"name": "rotten_tomatoes"}, "model": {"name": "averaged_embeddings", "embeddings": str(tmp_path / "v.txt")}},
         "model.embeddings: .*v.txt does not exist"),
        ({"data": {"name": "rotten_tomatoes"}, "model": {"name": "rnn_sentiment", "rnn": {"cell": "gru", "impl": "fast"}}},
         "model.rnn.impl"),
        ({"data": {"name": "digits"}}, "sentiment models read token ids"),
    ]
    for i, (sections, message) in enumerate(cases):
        job = write_job(tmp_path, f"bad{i}", **{**base, **sections})
        code, err = main(["train", str(job)]), capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), err
        assert not (tmp_path / "runs" / f"bad{i}").exists()


def test_a_short_training_of_the_averaged_classifier_beats_the_majority_class(tmp_path):
    job = write_job(tmp_path, "avg", model={"name": "averaged_embeddings", "embedding_dim": 50, "word_dropout": 0.2},
                    data={"name": "rotten_tomatoes"}, optimizer={"name": "adam", "lr": 0.003},
                    training={"epochs": 3, "batch_size": 64})
    assert main(["train", str(job)]) == 0
    final = json.loads((tmp_path / "runs" / "avg" / "summary.json").read_text())["final"]
    assert final["test/accuracy"] > 0.70, final  # the majority class (fresh) is 58 %
