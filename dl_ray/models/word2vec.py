"""word2vec (Mikolov et al. 2013): skip-gram and CBOW, with negative sampling or hierarchical softmax.

Two tables of vectors: ``input`` v (the word vectors kept at the end) and ``output`` u (one per word for negative
sampling, one per inner node of the Huffman tree for hierarchical softmax). For an example with hidden vector h
(skip-gram: v of one context word; CBOW: the mean of its context words' v) and output word o:

* **negative sampling** (binary classification: is o the real neighbour, or noise?) minimises
  ``-log s(u_o.h) - K E_{n ~ P}[log s(-u_n.h)]`` with P(w) proportional to count(w)^0.75. The K noise words are
  estimated with ``noise_words`` >= K draws shared by the whole minibatch, each weighted K / noise_words: the same
  objective (and the same estimate when noise_words = K), but the step becomes three matrix products instead of
  B x K dot products (Ji et al. 2016 share negatives across a window for the same reason). A drawn noise word
  equal to o is not skipped as in the C tool (it costs a gather per pair; at this vocabulary's sizes it is rare).
* **hierarchical softmax** replaces the V-way softmax by log2(V)-ish binary decisions down a Huffman tree:
  ``P(o | h) = prod_l s((1 - 2 c_l) u_{n_l}.h)`` over the inner nodes n_l on o's path and its code bits c_l, so
  frequent words have short codes; the probabilities of all V words sum to 1 by construction.

A step costs O(batch), not O(V): the gradients are written in closed form for the gathered rows only and handed to
autograd as sparse row gradients (:class:`SparseRows`); for a task with ``sparse_gradients`` the loop builds plain
SGD (word2vec's) or SparseAdam (``optimizer: {name: adam}``), which update those rows only. The loss is summed over examples, as word2vec's
per-example SGD step, so ``lr`` keeps the C tool's meaning (0.025 skip-gram, 0.05 CBOW). CBOW hands each context
word the hidden layer's whole error (not a 1/n share), as the C tool and gensim do.

Reported: ``loss`` (per example, on a fixed val/test sample with fixed noise), and the vectors' intrinsic scores
``analogy`` (3CosAdd accuracy on questions-words.txt), ``wordsim353`` and ``simlex999`` (Spearman), computed from
the input vectors at each evaluation (see :mod:`dl_ray.embedding_eval`); ``artifacts`` draws the t-SNE map and
writes nearest neighbours and the vectors (word2vec binary) into the run folder.
"""
from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn
from torchmetrics import Metric

from dl_ray.data.word_vectors import WordVectors, save_word2vec_binary
from dl_ray.models.base import ModelConfig, ModelIO
from dl_ray.models.task import Direction, Ratio, StepContext, Task
from dl_ray.registry import register_model

EVAL_NOISE_SEED = 0
"""Seed of the noise words of every evaluation pass, so val/test losses of two epochs are comparable."""
NEIGHBOUR_WORDS = ["king", "france", "war", "music", "river", "one", "good", "city", "church", "science"]


class EmbeddingConfig(ModelConfig):
    analogies: str | None = None
    """Analogy questions for the analogy score (': section' lines, then 'a b c d' lines); None: Mikolov's
    questions-words.txt from gensim's test data."""


class Word2VecConfig(EmbeddingConfig):
    architecture: Literal["skipgram", "cbow"] = "skipgram"
    """skipgram: each context word predicts the centre word; cbow: the mean of the context predicts it."""
    output: Literal["negative_sampling", "hierarchical_softmax"] = "negative_sampling"
    """How the V-way softmax is avoided: K noise words (binary classification), or a Huffman tree's binary decisions."""
    dim: int = Field(100, ge=2)
    """Length of the word vectors."""
    negatives: int = Field(5, ge=1, le=30)
    """K: noise words per real pair in the objective (5-20 for small corpora, 2-5 for large ones)."""
    noise_words: int = Field(32, ge=1)
    """Noise words drawn per minibatch and shared by all its examples, each weighted negatives / noise_words
    (>= negatives; equal gives word2vec's own estimate, more gives lower variance at the same objective)."""

    @model_validator(mode="after")
    def _enough_noise(self):
        if self.output == "negative_sampling" and self.noise_words < self.negatives:
            raise ValueError(f"noise_words ({self.noise_words}) must be >= negatives ({self.negatives})")
        return self


# ---------------------------------------------------------------- Huffman tree


def huffman_tree(counts: np.ndarray) -> tuple[list[list[int]], list[list[int]]]:
    """(codes, points) of each word: its bits and the inner nodes (0..V-2, root = V-2) from the root down.

    The two least frequent subtrees merge first (heapq; ties by creation order), the later-created node taking
    bit 1, so the expected code length sum_w p(w) len(w) is minimal."""
    v = len(counts)
    heap = [(int(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent, bit = np.zeros(2 * v - 1, dtype=np.int64), np.zeros(2 * v - 1, dtype=np.int64)
    for node in range(v, 2 * v - 1):
        (c0, a), (c1, b) = heapq.heappop(heap), heapq.heappop(heap)
        parent[a], parent[b], bit[b] = node, node, 1
        heapq.heappush(heap, (c0 + c1, node))
    codes, points = [], []
    for word in range(v):
        code, path, node = [], [], word
        while node != 2 * v - 2:
            code.append(int(bit[node]))
            node = int(parent[node])
            path.append(node - v)
        codes.append(code[::-1])
        points.append(path[::-1])
    return codes, points


def padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(map(len, rows))
    return torch.tensor([r + [fill] * (width - len(r)) for r in rows], dtype=torch.int64)


# ---------------------------------------------------------------- closed-form gradients of gathered rows


class SparseRows(torch.autograd.Function):
    """``loss`` whose gradient with respect to each table is given: rows ``index`` of ``table`` get ``grad``.

    The backward returns sparse COO gradients (duplicate rows summed by the optimizer's update), so an SGD step
    touches only the batch's rows. Call it through :func:`with_row_gradients`."""

    @staticmethod
    def forward(ctx, loss, count, *args):
        tables, rest = args[:count], args[count:]
        ctx.shapes = [t.shape for t in tables]
        ctx.save_for_backward(*rest)
        return loss.detach().clone()

    @staticmethod
    def backward(ctx, g):
        saved, scale = ctx.saved_tensors, None if float(g) == 1.0 else g  # loss.backward() seeds 1: skip B x D products
        grads = [torch.sparse_coo_tensor(index[None], grad if scale is None else grad * scale.to(grad.dtype), shape,
                                         check_invariants=False)
                 for shape, index, grad in zip(ctx.shapes, saved[0::2], saved[1::2])]
        return (None, None, *grads, *([None] * len(saved)))


def with_row_gradients(loss: torch.Tensor, parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``loss``, differentiable: its gradient with respect to each ``table`` is ``grad`` on rows ``index``
    (``parts``: (table, index (N,), grad (N, ...)) triples)."""
    flat = [t for _, index, grad in parts for t in (index, grad)]
    return SparseRows.apply(loss, len(parts), *[table for table, _, _ in parts], *flat)


def negative_sampling(h: torch.Tensor, u_out: torch.Tensor, u_noise: torch.Tensor, weight: float):
    """Summed loss and its gradients with respect to h (B, D), u_o (B, D) and the shared noise vectors (S, D)."""
    pos = (h * u_out).sum(1)
    neg = h @ u_noise.T
    loss = -F.logsigmoid(pos).sum() - weight * F.logsigmoid(-neg).sum()
    g_pos = torch.sigmoid(pos) - 1  # d loss / d pos
    g_neg = torch.sigmoid(neg).mul_(weight)
    g_h = torch.addmm(g_pos[:, None] * u_out, g_neg, u_noise)
    return loss, g_h, g_pos[:, None] * h, g_neg.T @ h


def hierarchical_softmax(h: torch.Tensor, u_nodes: torch.Tensor, signs: torch.Tensor, example: torch.Tensor):
    """Summed loss -sum log s(sign u_n.h) over every (example, inner node on its word's path) and the gradients
    with respect to h (B, D) and the node vectors (N, D); ``example`` (N,) says which example each node serves."""
    h_rows = h.index_select(0, example)
    score = (h_rows * u_nodes).sum(1) * signs
    g = (torch.sigmoid(score) - 1) * signs
    g_h = torch.zeros_like(h).index_add_(0, example, g[:, None] * u_nodes)
    return -F.logsigmoid(score).sum(), g_h, g[:, None] * h_rows


def hs_probabilities(h: torch.Tensor, output: torch.Tensor, codes: torch.Tensor, points: torch.Tensor,
                     lengths: torch.Tensor) -> torch.Tensor:
    """P(w | h) for every word w (V,), from the tree: the product of its path's binary decisions."""
    steps = torch.arange(points.shape[1])
    mask = steps < lengths[:, None]
    scores = (output[points.clamp(min=0)] @ h) * (1 - 2 * codes.to(h.dtype))
    return torch.where(mask, torch.sigmoid(scores), torch.ones_like(scores)).prod(1)


# ---------------------------------------------------------------- the task


class WordVectorTask(Task):
    """What word2vec and GloVe share: steps on a batch's rows only, evaluation by the held-out loss and the
    vectors' intrinsic scores, the vectors themselves as the run's artifacts."""

    kind = "embedding"
    sparse_gradients = True
    """Its gradients are sparse rows: the loop builds SGD or SparseAdam (dl_ray/train/optim.py)."""
    reports: dict[str, Direction] = {"loss": "min", "analogy": "max", "wordsim353": "max", "simlex999": "max"}
    train_reports: dict[str, Direction] = {"loss": "min"}  # the vectors' scores are evaluations, not per batch

    def evaluation(self) -> dict[str, Metric]:
        scores = IntrinsicScores(self)
        return {"loss": Ratio(), **{name: Intrinsic(scores, name) for name in self.reports if name != "loss"}}

    def vectors(self) -> WordVectors:
        raise NotImplementedError

    def artifacts(self, run_dir: Path, epoch: int, data: Any) -> list[Path]:
        return write_vector_artifacts(self.vectors(), Path(run_dir))


class Word2Vec(WordVectorTask):

    @classmethod
    def accepts(cls, io: ModelIO) -> str | None:
        if io.task != "windows":
            return (f"model.name=word2vec learns from context windows: use data: {{name: word_corpus, "
                    f"examples: windows}}; got examples: {io.task}")
        return None

    def __init__(self, cfg: Word2VecConfig, io: ModelIO):
        super().__init__()
        self.cfg, self.words = cfg, list(io.meta["words"])
        self.analogies = read_analogy_file(cfg.analogies)
        counts = np.asarray(io.meta["counts"], dtype=np.int64)
        v, d = len(counts), cfg.dim
        hierarchical = cfg.output == "hierarchical_softmax"
        self.input = nn.Embedding(v, d, sparse=True)
        self.output = nn.Embedding(v - 1 if hierarchical else v, d, sparse=True)
        with torch.no_grad():  # the C tool's start: small random inputs, zero outputs
            self.input.weight.uniform_(-0.5 / d, 0.5 / d)
            self.output.weight.zero_()
        probs = counts.astype(np.float64) ** 0.75
        self.register_buffer("noise", torch.tensor(probs / probs.sum(), dtype=torch.float32), persistent=False)
        if hierarchical:
            codes, points = huffman_tree(counts)
            self.register_buffer("codes", padded(codes, 0), persistent=False)
            self.register_buffer("points", padded(points, -1), persistent=False)
            self.register_buffer("lengths", torch.tensor([len(c) for c in codes]), persistent=False)

    # ---- one batch of windows -> (hidden vectors, their output words, input rows and how they map to examples)
    def hidden(self, contexts: torch.Tensor, centres: torch.Tensor):
        """(h (B, D), outputs (B,), the input rows used, and for CBOW the example each row belongs to)."""
        mask = contexts >= 0
        if self.cfg.architecture == "skipgram":
            rows = contexts[mask]
            return self.input.weight.index_select(0, rows), centres.repeat_interleave(mask.sum(1)), rows, None
        example = torch.arange(len(centres), device=centres.device).repeat_interleave(mask.sum(1))
        rows = contexts[mask]
        h = torch.zeros(len(centres), self.cfg.dim, device=centres.device, dtype=self.input.weight.dtype)
        h.index_add_(0, example, self.input.weight.index_select(0, rows))
        h /= mask.sum(1, keepdim=True).clamp(min=1)
        return h, centres, rows, example

    def objective(self, batch, generator: torch.Generator | None = None):
        """(summed loss, examples, input rows, their gradients, output rows, their gradients)."""
        contexts, centres = batch
        with torch.no_grad():
            h, outputs, in_rows, example = self.hidden(contexts, centres)
            table = self.output.weight
            if self.cfg.output == "negative_sampling":
                noise = torch.multinomial(self.noise, self.cfg.noise_words, replacement=True, generator=generator)
                loss, g_h, g_out, g_noise = negative_sampling(
                    h, table.index_select(0, outputs), table.index_select(0, noise), self.cfg.negatives / self.cfg.noise_words)
                out_rows, out_grad = torch.cat([outputs, noise]), torch.cat([g_out, g_noise])
            else:
                mask = torch.arange(self.points.shape[1], device=h.device) < self.lengths[outputs][:, None]
                owner = torch.arange(len(outputs), device=h.device)[:, None].expand_as(mask)[mask]
                out_rows = self.points[outputs][mask]
                signs = 1 - 2 * self.codes[outputs][mask].to(h.dtype)
                loss, g_h, out_grad = hierarchical_softmax(h, table.index_select(0, out_rows), signs, owner)
            in_grad = g_h if example is None else g_h.index_select(0, example)
        return loss, len(outputs), in_rows, in_grad, out_rows, out_grad

    def training_step(self, batch, ctx: StepContext):
        loss, n, in_rows, in_grad, out_rows, out_grad = self.objective(batch)
        total = with_row_gradients(loss, [(self.input.weight, in_rows, in_grad), (self.output.weight, out_rows, out_grad)])
        ctx.backward(total)
        return {"loss": (loss, float(n))}

    # ---- evaluation: the sampled loss (the vectors' intrinsic scores come from WordVectorTask.evaluation)
    def eval_step(self, batch, metrics: dict[str, Metric], nets: dict[str, nn.Module]) -> None:
        generator = torch.Generator(device=batch[1].device).manual_seed(EVAL_NOISE_SEED)
        loss, n, *_ = self.objective(batch, generator)
        for name, metric in metrics.items():
            metric.update(loss, n) if name == "loss" else metric.update()

    def vectors(self) -> WordVectors:
        """The input vectors (what word2vec keeps)."""
        return WordVectors(self.words, self.input.weight.detach().float().cpu().numpy())


def write_vector_artifacts(vectors: WordVectors, run_dir: Path) -> list[Path]:
    """vectors.bin (word2vec binary), neighbours.json (nearest words of a few probes) and tsne.png."""
    from dl_ray.embedding_eval import nearest, tsne_png

    save_word2vec_binary(vectors, run_dir / "vectors.bin")
    probes = [w for w in NEIGHBOUR_WORDS if w in vectors]
    (run_dir / "neighbours.json").write_text(json.dumps({w: nearest(vectors, w, 8) for w in probes}, indent=1))
    return [tsne_png(vectors, run_dir / "tsne.png")]


class IntrinsicScores:
    """The vectors' analogy and similarity scores, computed once per evaluation pass for all their metrics."""

    def __init__(self, task):
        self.task, self.scores = task, None

    def get(self, name: str) -> float:
        if self.scores is None:
            from dl_ray.embedding_eval import evaluate_vectors

            self.scores = evaluate_vectors(self.task.vectors(), self.task.analogies)
        return self.scores[name]


class Intrinsic(Metric):
    """One of :class:`IntrinsicScores`: every worker holds the same vectors, so there is nothing to reduce."""

    full_state_update = False

    def __init__(self, scores: IntrinsicScores, name: str, **kwargs):
        super().__init__(**kwargs)
        self.source, self.key = scores, name
        self.add_state("batches", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, *_) -> None:
        self.batches += 1

    def compute(self) -> torch.Tensor:
        return torch.tensor(self.source.get(self.key))


def read_analogy_file(path: str | None):
    """The questions (checked now, so a malformed file stops the job before it trains: one SpecError line)."""
    from dl_ray.embedding_eval import gensim_test_file, read_analogies

    return read_analogies(path or gensim_test_file("questions-words.txt"))


def vectors_from_run(run_dir: Path) -> WordVectors:
    """The vectors of a run folder of kind embedding, at its best checkpoint."""
    from dl_ray.errors import SpecError
    from dl_ray.runs import load_model

    model, spec = load_model(run_dir)
    if not hasattr(model, "vectors"):
        raise SpecError(f"vectors: {run_dir} is a run of model {spec.model.name}, not of kind embedding "
                        "(word2vec, glove)")
    return model.vectors()


@register_model("word2vec", Word2VecConfig, kind="embedding", accepts=Word2Vec.accepts)
def word2vec(cfg: Word2VecConfig, io: ModelIO, dropout: float = 0.0) -> Word2Vec:
    """word2vec: skip-gram or CBOW, negative sampling or hierarchical softmax (sparse SGD steps)."""
    reason = Word2Vec.accepts(io)
    if reason:
        raise ValueError(reason)
    return Word2Vec(cfg, io)
