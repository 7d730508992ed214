"""Language models: token streams and truncated BPTT, tied weights, the metrics by hand, the n-gram baseline,
text8 / WikiText readers, bad input. Fast tests use small corpora the test writes; the slow one trains on the real
Wikipedia sample through ``dl-ray train``."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.char_lm import KneserNey
from benchmarks.word_lm import perplexity
from dl_ray.cli import main
from dl_ray.data import corpus
from dl_ray.data.text import CharTextConfig, TextBundle, WordTextConfig, split_documents, wiki_chars, wiki_words
from dl_ray.models.language_model import LanguageModel, LanguageModelConfig
from dl_ray.train.loop import StepContext
from tests.conftest import write_job

WORDS = ("the cat sat on the mat and the dog sat on the log while a bird sang in the tree near the river "
         "where fish swim and children play all day long under the warm summer sun").split()


def text8_file(folder: Path, words: int = 3000, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path = folder / "text8"
    path.write_text(" ".join(rng.choice(WORDS, words)))  # one line, no newline: as text8 is
    return path


def wikitext_folder(folder: Path, articles: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir()
    for stem in ("wiki.train", "wiki.valid", "wiki.test"):
        lines = [""]
        for a in range(articles):
            lines += [f" = {stem} Article {a} = ", "", " " + " ".join(rng.choice(WORDS, 200)) + " ", "",
                      " = = Section = = ", "", " " + " ".join(rng.choice(WORDS, 100)) + " ", ""]
        (folder / f"{stem}.raw").write_text("\n".join(lines))
    return folder


def small_model(vocab: list[str], impl: str = "torch", cell: str = "lstm", **kw) -> LanguageModel:
    from dl_ray.models.base import ModelIO

    torch.manual_seed(0)
    io = ModelIO((10,), len(vocab), "language_model", {"vocab": vocab, "level": "char"})
    return LanguageModel(LanguageModelConfig(name="rnn_lm", embedding_dim=8, rnn={"cell": cell, "impl": impl,
                                                                                   "hidden_size": 12}, **kw), io)


def stream_bundle(n: int = 301, vocab_size: int = 7, bptt: int = 9, eval_streams: int = 4) -> TextBundle:
    from dl_ray.data.text import TokenStream

    ids = torch.randint(vocab_size, (n,), generator=torch.Generator().manual_seed(1))
    split = TokenStream(ids)
    return TextBundle(split, split, split, "language_model", (bptt,), vocab_size,
                      meta={"vocab": [str(i) for i in range(vocab_size)], "level": "char"}, bptt=bptt,
                      eval_streams=eval_streams)


# ---------------------------------------------------------------- streams


def test_windows_are_the_streams_in_order_and_ranks_take_their_own_rows():
    data = stream_bundle(n=301, bptt=9)
    whole = data.loader("train", 6, seed=0, epoch=3)
    x, y = (torch.cat([b[i] for b in whole], 1) for i in (0, 1))
    assert [b[3] for b in whole] == [True] + [False] * (len(whole) - 1)  # the rows start once per epoch
    ids = data.train.ids
    offsets = [o for o in range(9) if torch.equal(x.flatten(), ids[o: o + x.numel()])]
    assert len(offsets) == 1 and torch.equal(y.flatten(), ids[offsets[0] + 1: offsets[0] + 1 + y.numel()])
    ranks = [data.loader("train", 3, seed=0, epoch=3, rank=r, world=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole)  # DDP needs every rank to take the same number of steps
    assert torch.equal(torch.cat([torch.cat([b[0] for b in r], 1) for r in ranks]), x)  # contiguous rows per rank
    shifted = [torch.cat([b[0] for b in data.loader("train", 6, seed=0, epoch=e)], 1) for e in range(4, 8)]
    assert any(s.shape != x.shape or not torch.equal(s, x) for s in shifted)  # window boundaries move between epochs
    val = data.loader("val", 1024)  # evaluation reads eval_streams streams whatever batch the loop asks for
    assert next(iter(val))[0].shape == (4, 9) and len(val) == math.ceil(300 // 4 / 9)


def test_documents_are_split_whole_and_each_split_gets_its_share():
    rng = np.random.default_rng(0)
    docs = [[f"d{i}"] * int(rng.integers(1, 400)) for i in range(40)] + [["tiny"]] * 2 + [["huge"] * 5000]
    total = sum(map(len, docs))
    for seed in range(5):
        cfg = CharTextConfig(name="wiki_chars", split_seed=seed, val_fraction=0.1, test_fraction=0.15)
        splits = split_documents(docs, cfg)
        names = {s: [id(d) for d in splits[s]] for s in ("train", "val", "test")}
        assert sorted(sum(names.values(), [])) == sorted(map(id, docs))  # every document once, in one split
        assert sum(map(len, splits["val"])) >= 0.1 * total and sum(map(len, splits["test"])) >= 0.15 * total
        assert splits == split_documents(docs, cfg)  # the seed alone decides
    few = split_documents([["x"] * 3, ["y"], ["z"] * 900], CharTextConfig(name="wiki_chars", split_seed=1))
    assert all(len(few[s]) == 1 for s in ("train", "val", "test"))


@pytest.mark.parametrize("impl,cell", [("torch", "lstm"), ("ours", "gru"), ("ours", "peephole_lstm")])
def test_the_state_is_carried_across_windows(impl, cell):
    """Evaluating window by window gives what one pass over each whole stream gives; restarting the state each
    window does not: the state really crosses batches."""
    data = stream_bundle()
    model = small_model(data.meta["vocab"], impl, cell).eval()
    windows = data.loader("val", 1024)
    metrics = model.evaluation()
    with torch.no_grad():
        for p in (*model.rnn.parameters(), *model.head.parameters()):
            p.mul_(4)  # an untrained net's weights are small: a longer memory shows a cut state more
        for batch in windows:
            model.eval_step(batch, metrics, model.networks())
        logits, _ = model(windows.x)
        whole = F.cross_entropy(logits.flatten(0, 1), windows.y.flatten()).item()
        cut = model.evaluation()
        for x, y, chars, _ in windows:
            model.eval_step((x, y, chars, True), cut, model.networks())
    assert metrics["loss"].compute().item() == pytest.approx(whole, abs=1e-6)
    assert abs(cut["loss"].compute().item() - whole) > 1e-3


def test_training_carries_the_detached_state_within_an_epoch():
    """training_step with a zero learning rate scores each window from the state the last one ended in (the
    losses it logs add up to one pass over the whole streams), and cuts the graph there."""
    data = stream_bundle()
    model = small_model(data.meta["vocab"]).train()
    model.drop.p = 0.0
    ctx = StepContext({"model": model}, {"main": torch.optim.SGD(model.parameters(), lr=0.0)}, torch.device("cpu"),
                      torch.autocast("cpu", enabled=False), grad_clip=None)
    windows = data.loader("train", 5, seed=0, epoch=1)
    total = 0.0
    for batch in windows:
        total += model.training_step(batch, ctx)["loss"][0].item()
        assert all(not s.requires_grad for s in model._train_state)
    with torch.no_grad():
        logits, _ = model(windows.x)
    assert total / windows.y.numel() == pytest.approx(F.cross_entropy(logits.flatten(0, 1), windows.y.flatten()).item(),
                                                      abs=1e-5)


# ---------------------------------------------------------------- model


def test_tied_weights_share_storage_and_mismatched_sizes_are_refused(tmp_path, capsys):
    vocab = [str(i) for i in range(9)]
    tied = small_model(vocab, tie_weights=False)
    from dl_ray.models.base import ModelIO

    io = ModelIO((10,), 9, "language_model", {"vocab": vocab, "level": "char"})
    cfg = LanguageModelConfig(name="rnn_lm", embedding_dim=12, tie_weights=True, rnn={"hidden_size": 12, "impl": "torch"})
    tied = LanguageModel(cfg, io)
    assert tied.head.weight.data_ptr() == tied.embed.weight.data_ptr()
    untied = LanguageModel(cfg.model_copy(update={"tie_weights": False}), io)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(untied) - count(tied) == 9 * 12
    logits, _ = tied(torch.tensor([[1, 2, 3]]))
    logits.sum().backward()
    torch.optim.SGD(tied.parameters(), lr=0.1).step()
    assert torch.equal(tied.head.weight, tied.embed.weight)
    path = text8_file(tmp_path)
    job = write_job(tmp_path, "tie", kind="language_model",
                    model={"name": "rnn_lm", "embedding_dim": 8, "tie_weights": True, "rnn": {"hidden_size": 16}},
                    data={"name": "wiki_chars", "corpus": "text8", "path": str(path), "min_count": 1})
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.tie_weights" in err and "model.embedding_dim (8)" in err, err
    assert not (tmp_path / "runs").exists()


def test_perplexity_and_bits_per_character_match_a_hand_computation():
    """All weights but the output bias zeroed: every token gets softmax(bias). Word level: each word counts its
    letters and the separator after it."""
    vocab = ["<unk>", "<eos>", "a", "bb", "ccc"]
    model = small_model(vocab)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 1.0, 2.0, -1.0, 0.5]))
    y = torch.tensor([[2, 3, 4, 1], [4, 4, 0, 2]])
    chars = torch.tensor([[2, 3, 4, 0], [4, 4, 6, 2]])  # the <unk> stood for a 5-letter word
    metrics = model.evaluation()
    model.eval().eval_step((torch.zeros_like(y), y, chars, True), metrics, model.networks())
    bias = [0.0, 1.0, 2.0, -1.0, 0.5]
    log_z = math.log(sum(math.exp(b) for b in bias))
    nll = [log_z - bias[t] for t in y.flatten().tolist()]
    assert metrics["loss"].compute().item() == pytest.approx(sum(nll) / 8, rel=1e-6)
    assert metrics["perplexity"].compute().item() == pytest.approx(math.exp(sum(nll) / 8), rel=1e-6)
    assert metrics["bpc"].compute().item() == pytest.approx(sum(nll) / math.log(2) / 25, rel=1e-6)


def test_samples_at_each_temperature_are_printed_and_saved(tmp_path, capsys):
    model = small_model(list("\n abc"), sample_length=40, temperatures=[0.5, 2.0]).eval()
    assert model.artifacts(tmp_path, 3, None) == [] and model.artifacts_due(3, 10)
    text = (tmp_path / "samples.txt").read_text()
    assert text.startswith("== epoch 3\n-- temperature 0.5\n") and "-- temperature 2\n" in text
    assert text in capsys.readouterr().out
    cold, hot = text.split("-- temperature 2\n")[0].splitlines()[-1], text.split("-- temperature 2\n")[1]
    assert set(cold + hot) <= set("\n abc")


# ---------------------------------------------------------------- the n-gram baseline


def test_kneser_ney_distributions_sum_to_one():
    rng = np.random.default_rng(0)
    text = rng.choice(6, 3000, p=[0.3, 0.25, 0.2, 0.15, 0.07, 0.03])
    text[::7] = 5  # some structure, so the higher orders have contexts of every kind of count
    model = KneserNey(text, vocab_size=7, max_order=4, start=0)  # symbol 6 never occurs
    for order in (1, 2, 3, 4):
        for scale in (0.5, 1.0, 1.6):
            for history in ([], [5], [1, 2, 3], [6, 6, 6], [5, 0, 1]):
                p = model.distribution(history, order, scale)
                assert p.sum() == pytest.approx(1.0, abs=1e-12) and (p > 0).all()
    assert model.bpc(text[:500], 1) < math.log2(7) and model.bpc(text[:500], 4) < model.bpc(text[:500], 1)


def test_word_ngram_perplexity_scores_the_lstms_targets():
    """benchmarks/word_lm.py scores ids[1:] (what the LSTM predicts), each given every id before it: brute force
    through the full next-word distribution."""
    ids = np.random.default_rng(1).choice(9, 400)
    model = KneserNey(ids, vocab_size=9, max_order=3, start=8)
    for order in (1, 3):
        nll = [-math.log(model.distribution(list(ids[:t]), order, 0.9)[ids[t]]) for t in range(1, 60)]
        assert perplexity(model, ids[:60], order, 0.9) == pytest.approx(math.exp(np.mean(nll)), rel=1e-12)


# ---------------------------------------------------------------- readers for users online


def test_text8_and_wikitext_readers(tmp_path):
    path = text8_file(tmp_path, words=1000)
    words = corpus.read_text8(path)
    assert len(words) == 1000 and set(words) <= set(WORDS)
    data = wiki_chars(CharTextConfig(name="wiki_chars", corpus="text8", path=str(path), min_count=1,
                                     val_fraction=0.1, test_fraction=0.1))
    assert data.meta["vocab"][0] == "\ufffd" and len(data.val.ids) + len(data.test.ids) < len(data.train.ids) / 3
    decoded = "".join(data.meta["vocab"][i] for i in data.train.ids[:50])
    assert decoded == " ".join(words)[:50]  # text8 is cut at its end, in order: training is its beginning
    folder = wikitext_folder(tmp_path / "wikitext-2-raw", articles=3)
    splits = corpus.read_wikitext(folder)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [3, 3, 3]
    assert splits["val"][0][:4] == ["=", "wiki.valid", "Article", "0"] and "Section" in splits["val"][0]
    data = wiki_words(WordTextConfig(name="wiki_words", corpus="wikitext", path=str(folder), min_count=1))
    assert data.meta["vocab"][:2] == ["<unk>", "<eos>"] and int((data.test.ids == 1).sum()) == 3
    assert int(data.test.chars.sum()) == sum(len(w) + 1 for article in splits["test"] for w in article)


@pytest.mark.parametrize("data,field", [
    ({"corpus": "text8", "path": "MISSING"}, "data.path: no such file"),
    ({"corpus": "text8", "path": "EMPTY"}, "is empty"),
    ({"corpus": "wikitext", "path": "MISSING"}, "data.path: no such folder"),
    ({"corpus": "text8"}, "data.path: corpus text8 is read from a path"),
    ({"name": "wiki_words", "corpus": "text8", "path": "TEXT8", "min_count": 10_000}, "data.min_count: only 0"),
    ({"corpus": "text8", "path": "TEXT8", "limit": 100, "eval_streams": 200}, "data.eval_streams: the train split has 99"),
])
def test_bad_corpus_input_is_one_line(tmp_path, capsys, data, field):
    (tmp_path / "empty.txt").write_text(" \n")
    paths = {"MISSING": str(tmp_path / "nope"), "EMPTY": str(tmp_path / "empty.txt"), "TEXT8": str(text8_file(tmp_path))}
    data = {"name": "wiki_chars", **data, **({"path": paths[data["path"]]} if "path" in data else {})}
    job = write_job(tmp_path, "bad", kind="language_model", model={"name": "rnn_lm"}, data=data)
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("model,field", [
    ({"rnn": {"hidden_size": 0}}, "model.rnn.hidden_size"),
    ({"rnn": {"bidirectional": True}}, "model.rnn"),
    ({"rnn": {"cell": "peephole_lstm", "impl": "torch"}}, "model.rnn"),
    ({"temperatures": [0.0]}, "model.temperatures"),
])
def test_bad_model_input_is_one_line(tmp_path, capsys, model, field):
    job = write_job(tmp_path, "bad", kind="language_model", model={"name": "rnn_lm", **model},
                    data={"name": "wiki_chars", "corpus": "text8", "path": str(text8_file(tmp_path))})
    assert main(["train", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err, err


# ---------------------------------------------------------------- end to end on the real corpus


@pytest.mark.slow
def test_a_short_run_beats_the_unigram_model(tmp_path):
    """A small LSTM trained for a few thousand windows of the Wikipedia sample's characters, through ``dl-ray
    train``, against the Kneser-Ney unigram model fitted to the same training characters."""
    job = write_job(tmp_path, "lm", kind="language_model",
                    model={"name": "rnn_lm", "embedding_dim": 16, "rnn": {"impl": "torch", "hidden_size": 128},
                           "sample_length": 50},
                    data={"name": "wiki_chars", "limit": 100_000, "bptt": 50, "eval_streams": 8},
                    optimizer={"name": "adam", "lr": 0.005}, training={"epochs": 3, "batch_size": 32})
    assert main(["train", str(job)]) == 0
    run = tmp_path / "runs" / "lm"
    summary = json.loads((run / "summary.json").read_text())
    from dl_ray.data import build_data
    from dl_ray.spec import load_spec

    data = build_data(load_spec(job).data)
    vocab = data.meta["vocab"]
    unigram = KneserNey(data.train.ids.numpy(), len(vocab), 1, vocab.index("\n")).bpc(data.val.ids.numpy(), 1)
    assert summary["final"]["val/bpc"] < unigram - 0.5, (summary["final"], unigram)
    assert (run / "samples.txt").read_text().count("-- temperature 0.5") == 4  # 3 epochs and the best weights


def test_the_wikipedia_sample_is_parsed_once_and_its_cache_reads_back_the_same_articles(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    corpus.wikipedia_sample.cache_clear()
    try:
        parsed = corpus.wikipedia_sample()  # no cache here yet: gensim parses, the cache is written
        assert corpus.corpus_cache_path().parent == tmp_path / "dl_ray" and corpus.corpus_cache_path().is_file()
        corpus.wikipedia_sample.cache_clear()
        assert corpus.wikipedia_sample() == parsed  # read from the cache file
        assert len(parsed) == 106 and sum(map(len, parsed)) > 400_000
    finally:
        corpus.wikipedia_sample.cache_clear()  # the next test reads the machine's own cache again
