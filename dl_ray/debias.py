"""Hard debiasing of word vectors (Bolukbasi et al. 2016, "Man is to Computer Programmer as Woman is to
Homemaker?"), the course's answer to embeddings that learned society's stereotypes.

1. **Bias direction** g from definitional pairs (she/he, woman/man, ...): the first principal component of the
   pairs' vectors centred on each pair's mean (``direction: pca``, the paper), or the normalised mean of the
   differences (``direction: mean``). g points from the second word of the pairs to the first.
2. **Neutralise** every word whose gender is not part of its meaning (all but the gender-specific list and the
   pairs): w <- (w - (w.g) g) / |w - (w.g) g|, so its projection on g is 0: "doctor" is as near "he" as "she".
3. **Equalise** each pair (grandmother/grandfather, ...): with mu their mean and nu = mu - (mu.g) g,
   w <- nu + sqrt(1 - |nu|^2) * sign((w - mu).g) g. The two differ only along g (symmetric about the subspace
   orthogonal to it), stay unit-length, and so are equally far from every neutralised word.

All vectors are unit-normalised first (the paper's setting). Word lists are text files (``dl_ray/data/wordlists``);
the run folder gets the projections of occupation words before and after (``occupations.png``), the debiased
vectors (``debiased.bin``, word2vec binary) and the analogy accuracy before and after in ``summary.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from dl_ray.analysis import register_analysis
from dl_ray.data.word_vectors import WordVectors, load_vectors, save_word2vec_binary
from dl_ray.errors import SpecError
from dl_ray.plots import pyplot

WORDLISTS = Path(__file__).parent / "data" / "wordlists"
Pair = tuple[str, str]


class DebiasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    vectors: Path
    """The word vectors: a GloVe text file, a word2vec .bin/.txt file, or a run folder of kind embedding."""
    direction: Literal["pca", "mean"] = "pca"
    """pca: first principal component of the centred definitional pairs (Bolukbasi et al.); mean: the normalised
    mean of their differences."""
    definitional: Path = WORDLISTS / "definitional_pairs.txt"
    """Pairs that define the bias direction, one 'female male' pair per line ('#' starts a comment)."""
    equalize: Path = WORDLISTS / "equalize_pairs.txt"
    """Pairs made to differ only along the bias direction, one 'female male' pair per line."""
    gender_specific: Path = WORDLISTS / "gender_specific.txt"
    """Words never neutralised (gender is part of their meaning), one per line; words the vectors lack are ignored."""
    occupations: Path = WORDLISTS / "occupations.txt"
    """Occupation words whose projections are drawn before and after, one per line."""
    missing_words: Literal["error", "skip"] = "error"
    """A word of the definitional, equalise or occupation list that the vectors lack: error (one line naming every
    such word, nothing written) or skip (its pair or entry is left out and counted in the summary)."""
    analogies: Path | None = None
    """Analogy questions (': section' lines, then 'a b c d'); None: gensim's questions-words.txt."""
    analogy_vocabulary: int = Field(100_000, ge=10)
    """Answers are searched among the first N words of the vectors (files list the frequent words first)."""
    shown: int = Field(15, ge=1)
    """Occupations drawn at each end of the bias direction (the most female- and male-leaning before debiasing)."""
    save_vectors: bool = True
    """Write the debiased vectors to debiased.bin in the run folder (word2vec binary: load_vectors reads it)."""


# ---------------------------------------------------------------- word lists


def _lines(path: Path, field: str) -> list[tuple[int, list[str]]]:
    """(line number, words) of each non-empty line, '#' comments removed."""
    if not path.is_file():
        raise SpecError(f"analysis.{field}: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpecError(f"analysis.{field}: {path} is not UTF-8 text") from None
    rows = [(n, line.split("#", 1)[0].split()) for n, line in enumerate(text.splitlines(), 1)]
    return [(n, words) for n, words in rows if words]


def read_words(path: Path, field: str) -> list[str]:
    """One word per line."""
    words = []
    for n, row in _lines(path, field):
        if len(row) != 1:
            raise SpecError(f"analysis.{field}: {path} line {n}: expected one word, got {' '.join(row)!r}")
        words.append(row[0])
    return words


def read_pairs(path: Path, field: str) -> list[Pair]:
    """One 'female male' pair per line."""
    pairs = []
    for n, row in _lines(path, field):
        if len(row) != 2:
            raise SpecError(f"analysis.{field}: {path} line {n}: expected two words ('female male'), got {' '.join(row)!r}")
        pairs.append((row[0], row[1]))
    if not pairs:
        raise SpecError(f"analysis.{field}: {path} holds no pairs")
    return pairs


def present(vectors: WordVectors, field: str, entries: list, policy: str) -> tuple[list, int]:
    """The entries (words or pairs) all of whose words the vectors hold, and how many were left out; with
    policy error, a word the vectors lack is one SpecError line naming every such word."""
    words = lambda entry: entry if isinstance(entry, tuple) else (entry,)  # noqa: E731
    missing = list(dict.fromkeys(w for e in entries for w in words(e) if w not in vectors))
    if missing and policy == "error":
        raise SpecError(f"analysis.{field}: {len(missing)} word(s) not in the {len(vectors):,}-word vocabulary: "
                        f"{', '.join(missing)}; remove them or set analysis.missing_words: skip")
    kept = [e for e in entries if all(w in vectors for w in words(e))]
    return kept, len(entries) - len(kept)


# ---------------------------------------------------------------- the method


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def bias_direction(unit: np.ndarray, pairs: np.ndarray, method: str = "pca") -> tuple[np.ndarray, float]:
    """(g, share of the centred pairs' variance along g): a unit vector from the pairs' second words to their
    first. ``pairs`` (P, 2) holds row indices of ``unit``."""
    first, second = unit[pairs[:, 0]], unit[pairs[:, 1]]
    centre = (first + second) / 2
    centred = np.concatenate([first - centre, second - centre])
    if method == "pca":
        _, singular, components = np.linalg.svd(centred, full_matrices=False)
        g, share = components[0], float(singular[0] ** 2 / (singular ** 2).sum())
    else:
        g = (first - second).mean(axis=0)
        g = g / np.linalg.norm(g)
        share = float(((centred @ g) ** 2).sum() / (centred ** 2).sum())
    if ((first - second) @ g).mean() < 0:  # a principal component's sign is arbitrary: point it at the first words
        g = -g
    return g.astype(np.float64), share


def neutralize(unit: np.ndarray, g: np.ndarray, rows: np.ndarray) -> None:
    """In place: the rows' component along g removed, then unit length again."""
    kept = unit[rows] - np.outer(unit[rows] @ g, g)
    unit[rows] = unit_rows(kept)


def equalize(unit: np.ndarray, g: np.ndarray, pairs: np.ndarray) -> None:
    """In place: each pair moved to nu +- sqrt(1 - |nu|^2) g, nu the pair's mean without its component along g;
    the word that leaned further along g keeps the + side."""
    for a, b in pairs:
        mean = (unit[a] + unit[b]) / 2
        nu = mean - (mean @ g) * g
        z = np.sqrt(max(1.0 - float(nu @ nu), 0.0))
        side = 1.0 if (unit[a] - unit[b]) @ g >= 0 else -1.0
        unit[a], unit[b] = nu + side * z * g, nu - side * z * g


def hard_debias(vectors: WordVectors, definitional: list[Pair], equalize_pairs: list[Pair], specific: set[str],
                method: str = "pca") -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(debiased unit vectors (float64), g, the neutralised rows, the share of variance along g)."""
    index = vectors.index()
    unit = unit_rows(vectors.matrix.astype(np.float64))
    rows = lambda pairs: np.array([[index[a], index[b]] for a, b in pairs], dtype=np.int64).reshape(-1, 2)  # noqa: E731
    g, share = bias_direction(unit, rows(definitional), method)
    keep = specific | {w for pair in definitional + equalize_pairs for w in pair}
    neutral = np.array([i for i, w in enumerate(vectors.words) if w not in keep and index[w] == i], dtype=np.int64)
    neutralize(unit, g, neutral)
    equalize(unit, g, rows(equalize_pairs))
    return unit, g, neutral, share


# ---------------------------------------------------------------- the job


def check_pairs_distinct(pairs: list[Pair], field: str) -> None:
    """A word in two equalised pairs would be moved twice, and the first pair would lose its symmetry."""
    seen: dict[str, Pair] = {}
    for pair in pairs:
        for word in pair:
            if word in seen and seen[word] != pair:
                raise SpecError(f"analysis.{field}: {word!r} is in two pairs ({' '.join(seen[word])} and {' '.join(pair)}); "
                                "each word may be equalised once")
            seen[word] = pair


def analogy_figures(before: WordVectors, after: WordVectors, cfg: DebiasConfig) -> dict[str, float]:
    """3CosAdd accuracy before and after, over the questions the first ``analogy_vocabulary`` words cover."""
    from dl_ray.embedding_eval import analogy_accuracy, gensim_test_file, read_analogies

    questions = read_analogies(cfg.analogies or gensim_test_file("questions-words.txt"))
    n = min(cfg.analogy_vocabulary, len(before))
    first = lambda v: WordVectors(v.words[:n], v.matrix[:n])  # noqa: E731
    was, now = analogy_accuracy(first(before), questions), analogy_accuracy(first(after), questions)
    return {"analogy_before": was.accuracy, "analogy_after": now.accuracy, "analogy_questions": was.covered,
            "analogy_coverage": was.coverage}


def draw_projections(words: list[str], before: np.ndarray, after: np.ndarray, path: Path) -> Path:
    """Horizontal bars of each occupation's projection on g, before (left) and after (right)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 0.24 * len(words) + 1.5), sharey=True)
    y = np.arange(len(words))
    for ax, values, title in ((axes[0], before, "before"), (axes[1], after, "after hard debiasing")):
        ax.barh(y, values, color=np.where(values >= 0, "tab:red", "tab:blue"))
        ax.axvline(0, color="black", lw=0.6)
        ax.set_title(f"{title}: projection on g")
        ax.set_xlim(-np.abs(before).max() * 1.1, np.abs(before).max() * 1.1)
    axes[0].set_yticks(y, words, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("<- male-leaning   female-leaning ->")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@register_analysis("debias", DebiasConfig)
def debias(cfg: DebiasConfig, run_dir: Path) -> dict[str, float | int | str]:
    """Hard-debias word vectors (Bolukbasi et al. 2016): neutralise along a bias direction, equalise pairs."""
    vectors = load_vectors(cfg.vectors)
    definitional, skipped_def = present(vectors, "definitional", read_pairs(cfg.definitional, "definitional"), cfg.missing_words)
    pairs, skipped_eq = present(vectors, "equalize", read_pairs(cfg.equalize, "equalize"), cfg.missing_words)
    occupations, skipped_occ = present(vectors, "occupations", read_words(cfg.occupations, "occupations"), cfg.missing_words)
    specific = set(read_words(cfg.gender_specific, "gender_specific"))
    if not definitional:
        raise SpecError(f"analysis.definitional: none of the pairs in {cfg.definitional} is in the vocabulary")
    check_pairs_distinct(pairs, "equalize")
    unit, g, neutral, share = hard_debias(vectors, definitional, pairs, specific, cfg.direction)
    debiased = WordVectors(vectors.words, unit.astype(np.float32))
    figures: dict[str, float | int | str] = analogy_figures(vectors, debiased, cfg)

    index = vectors.index()
    occ_rows = np.array([index[w] for w in occupations], dtype=np.int64)
    before = unit_rows(vectors.matrix[occ_rows].astype(np.float64)) @ g if len(occ_rows) else np.zeros(0)
    after = unit[occ_rows] @ g
    order = np.argsort(-before)
    shown = order if len(order) <= 2 * cfg.shown else np.concatenate([order[: cfg.shown], order[-cfg.shown:]])
    if len(shown):
        draw_projections([occupations[i] for i in shown], before[shown], after[shown], run_dir / "occupations.png")
    if cfg.save_vectors:
        save_word2vec_binary(debiased, run_dir / "debiased.bin")
    return {
        "words": len(vectors), "dim": vectors.dim, "direction": cfg.direction, "variance_along_g": share,
        "definitional_pairs": len(definitional), "equalized_pairs": len(pairs), "neutralized_words": len(neutral),
        "skipped_entries": skipped_def + skipped_eq + skipped_occ, "occupations": len(occupations),
        "occupation_mean_abs_projection_before": float(np.abs(before).mean()) if len(before) else 0.0,
        "occupation_max_abs_projection_after": float(np.abs(after).max()) if len(after) else 0.0,
        "most_female_leaning_before": ", ".join(occupations[i] for i in order[:5]),
        "most_male_leaning_before": ", ".join(occupations[i] for i in order[::-1][:5]),
        **figures,
    }
