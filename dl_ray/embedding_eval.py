"""How good are word vectors? The course's answers, as numbers and one picture.

* **Similarity functions:** cosine similarity u.v / (|u| |v|) (the one most used) and Euclidean distance |u - v|.
* **Analogies** (a : b :: c : ?, e.g. man : king :: woman : queen): 3CosAdd, the word x (not a, b or c) maximising
  cos(x, b) - cos(x, a) + cos(x, c), which is the word nearest to b - a + c on unit vectors. Questions from
  Mikolov's questions-words.txt (gensim's test data), lowercased; only those whose four words are all in the
  vocabulary count, and that coverage is reported with the accuracy.
* **Word similarity:** Spearman correlation between cosine similarities and human scores (WordSim-353, which
  rewards relatedness, and SimLex-999, which rewards similarity only), over the pairs whose words are in the
  vocabulary (coverage reported).
* **Nearest neighbours** by cosine similarity, and a t-SNE map of chosen words (a PNG).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from dl_ray.data.word_vectors import WordVectors
from dl_ray.errors import SpecError

ANALOGY_CHUNK = 2048
"""Questions scored against the whole vocabulary at once (a chunk x V similarity block)."""
TSNE_WORDS = ["king", "queen", "man", "woman", "prince", "princess", "father", "mother", "son", "daughter",
              "france", "paris", "germany", "berlin", "italy", "rome", "spain", "madrid", "china", "japan",
              "one", "two", "three", "four", "five", "war", "army", "battle", "music", "song", "album", "film",
              "river", "sea", "island", "city", "town", "village", "red", "blue", "green", "black", "white"]
"""Default words of the t-SNE picture: royalty, family, countries and capitals, numbers, war, music, places, colours."""


def gensim_test_file(name: str) -> Path:
    """A file of gensim's test data (questions-words.txt, wordsim353.tsv, simlex999.txt)."""
    import gensim

    return Path(os.path.dirname(gensim.__file__)) / "test" / "test_data" / name


def cosine_similarity(u: np.ndarray, v: np.ndarray) -> float:
    """u.v / (|u| |v|): 1 for the same direction, 0 for orthogonal, -1 for opposite."""
    return float(np.dot(u, v) / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))


def euclidean_distance(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(u) - np.asarray(v)))


def nearest(vectors: WordVectors, word: str, n: int = 10) -> list[tuple[str, float]]:
    """The n words of highest cosine similarity to ``word`` (itself excluded)."""
    if word not in vectors:
        raise SpecError(f"nearest: {word!r} is not in the vocabulary of {len(vectors)} words")
    unit = vectors.unit()
    sims = unit @ unit[vectors.index()[word]]
    sims[vectors.index()[word]] = -np.inf
    top = np.argsort(-sims)[:n]
    return [(vectors.words[i], float(sims[i])) for i in top]


# ---------------------------------------------------------------- analogies


Question = tuple[str, str, str, str]


def read_analogies(path: str | Path) -> dict[str, list[Question]]:
    """Sections (``: name`` lines) of ``a b c d`` questions, lowercased; any other line is a SpecError."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"analogies: {path} is not a file; expected questions-words.txt "
                        "(': section' lines, then 'a b c d' lines)")
    sections: dict[str, list[Question]] = {}
    current = None
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
            continue
        words = line.lower().split()
        if len(words) != 4 or current is None:
            why = "no ': section' line before it" if current is None else f"{len(words)} words"
            raise SpecError(f"analogies: {path} line {n}: expected 'a b c d' (4 words) after a ': section' line, "
                            f"got {line[:60]!r} ({why})")
        current.append(tuple(words))
    if not any(sections.values()):
        raise SpecError(f"analogies: {path} holds no questions; expected ': section' lines, then 'a b c d' lines")
    return sections


@dataclass
class AnalogyResult:
    accuracy: float
    """Share of the covered questions answered right (0 when none is covered)."""
    correct: int
    covered: int
    """Questions whose four words are all in the vocabulary."""
    total: int
    sections: dict[str, tuple[int, int]]
    """Per section: (correct, covered)."""

    @property
    def coverage(self) -> float:
        return self.covered / max(self.total, 1)


def answer_analogies(vectors: WordVectors, questions: list[Question]) -> np.ndarray:
    """3CosAdd's answer (a row index) to each question, all of whose words must be in the vocabulary."""
    unit, index = vectors.unit(), vectors.index()
    ids = np.array([[index[w] for w in q[:3]] for q in questions], dtype=np.int64).reshape(-1, 3)
    answers = np.empty(len(ids), dtype=np.int64)
    for start in range(0, len(ids), ANALOGY_CHUNK):
        a, b, c = ids[start:start + ANALOGY_CHUNK].T
        scores = (unit[b] - unit[a] + unit[c]) @ unit.T  # = cos(x, b) - cos(x, a) + cos(x, c) on unit rows
        rows = np.arange(len(a))
        for excluded in (a, b, c):
            scores[rows, excluded] = -np.inf
        answers[start:start + len(a)] = scores.argmax(axis=1)
    return answers


def analogy_accuracy(vectors: WordVectors, sections: dict[str, list[Question]]) -> AnalogyResult:
    """3CosAdd accuracy over the questions the vocabulary covers."""
    index = vectors.index()
    per_section, correct, covered, total = {}, 0, 0, 0
    for name, questions in sections.items():
        inside = [q for q in questions if all(w in index for w in q)]
        answers = answer_analogies(vectors, inside) if inside else np.empty(0, dtype=np.int64)
        right = int(sum(vectors.words[x] == q[3] for x, q in zip(answers, inside)))
        per_section[name] = (right, len(inside))
        correct, covered, total = correct + right, covered + len(inside), total + len(questions)
    return AnalogyResult(correct / covered if covered else 0.0, correct, covered, total, per_section)


# ---------------------------------------------------------------- word similarity


def read_word_pairs(path: str | Path) -> list[tuple[str, str, float]]:
    """``word1 <tab> word2 <tab> score`` lines (``#`` comments skipped), lowercased."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"similarity: {path} is not a file; expected 'word1<TAB>word2<TAB>score' lines")
    pairs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.lower().split("\t")
        try:
            pairs.append((parts[0], parts[1], float(parts[2])))
        except (IndexError, ValueError):
            raise SpecError(f"similarity: {path} line {n}: expected 'word1<TAB>word2<TAB>score', got {line[:60]!r}") from None
    return pairs


@dataclass
class SimilarityResult:
    spearman: float
    """Spearman rank correlation of cosine similarity with the human scores (nan with fewer than 3 pairs)."""
    covered: int
    total: int


def word_similarity(vectors: WordVectors, pairs: list[tuple[str, str, float]]) -> SimilarityResult:
    """Spearman correlation between cosine similarities and human scores, over the pairs in the vocabulary."""
    inside = [(a, b, s) for a, b, s in pairs if a in vectors and b in vectors]
    if len(inside) < 3:
        return SimilarityResult(float("nan"), len(inside), len(pairs))
    ours = [cosine_similarity(vectors[a], vectors[b]) for a, b, _ in inside]
    return SimilarityResult(float(spearmanr(ours, [s for *_, s in inside]).statistic), len(inside), len(pairs))


# ---------------------------------------------------------------- the report of a run


def evaluate_vectors(vectors: WordVectors, analogies: dict[str, list[Question]] | None = None) -> dict[str, float]:
    """The headline figures: analogy accuracy (on ``analogies``, by default questions-words.txt) and coverage,
    WordSim-353 and SimLex-999 Spearman and coverage."""
    result = analogy_accuracy(vectors, analogies or read_analogies(gensim_test_file("questions-words.txt")))
    out = {"analogy": result.accuracy, "analogy_coverage": result.coverage}
    for name, file in (("wordsim353", "wordsim353.tsv"), ("simlex999", "simlex999.txt")):
        sim = word_similarity(vectors, read_word_pairs(gensim_test_file(file)))
        out |= {name: sim.spearman, f"{name}_coverage": sim.covered / max(sim.total, 1)}
    return out


def tsne_png(vectors: WordVectors, path: str | Path, words: list[str] | None = None, seed: int = 0) -> Path:
    """A t-SNE map (cosine distances) of the chosen words that are in the vocabulary, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    shown = [w for w in (words or TSNE_WORDS) if w in vectors]
    if len(shown) < 3:
        raise SpecError(f"tsne words: only {len(shown)} of them are in the vocabulary; t-SNE needs at least 3")
    points = TSNE(2, perplexity=min(10.0, len(shown) - 1.0), metric="cosine", init="pca", random_state=seed
                  ).fit_transform(np.stack([vectors[w] for w in shown]))
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.scatter(points[:, 0], points[:, 1], s=8)
    for word, (x, y) in zip(shown, points):
        ax.annotate(word, (x, y), fontsize=9)
    ax.set_title(f"t-SNE of {len(shown)} word vectors (cosine)")
    ax.set_xticks([]), ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
