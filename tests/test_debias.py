"""Hard debiasing (Bolukbasi et al. 2016) on real word vectors: gensim's Word2Vec trained on the Wikipedia sample."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import yaml

from dl_ray.data.word_vectors import WordVectors, load_vectors, save_word2vec_binary
from dl_ray.debias import WORDLISTS, bias_direction, hard_debias, present, read_pairs, read_words, unit_rows
from dl_ray.cli import main


@pytest.fixture(scope="module")
def vectors(tmp_path_factory) -> tuple[WordVectors, object]:
    """Real vectors in a few seconds: skip-gram on gensim's Wikipedia sample (453 k words), saved as a .bin file."""
    from gensim.models import Word2Vec

    from dl_ray.data.corpus import wikipedia_sample

    model = Word2Vec(wikipedia_sample(), vector_size=64, window=5, min_count=5, sg=1, negative=5, epochs=3,
                     workers=2, seed=0)
    wv = WordVectors(list(model.wv.index_to_key), model.wv.vectors)
    return wv, save_word2vec_binary(wv, tmp_path_factory.mktemp("vectors") / "wiki.bin")


def lists(wv: WordVectors):
    definitional, _ = present(wv, "definitional", read_pairs(WORDLISTS / "definitional_pairs.txt", "d"), "skip")
    pairs, _ = present(wv, "equalize", read_pairs(WORDLISTS / "equalize_pairs.txt", "e"), "skip")
    return definitional, pairs, set(read_words(WORDLISTS / "gender_specific.txt", "g"))


def test_the_bias_direction_is_the_first_principal_component_of_the_centred_pairs(vectors):
    from sklearn.decomposition import PCA

    wv, _ = vectors
    definitional, _, _ = lists(wv)
    assert len(definitional) >= 8
    unit, index = wv.unit().astype(np.float64), wv.index()
    pairs = np.array([[index[a], index[b]] for a, b in definitional])
    g, share = bias_direction(unit, pairs, "pca")
    centre = (unit[pairs[:, 0]] + unit[pairs[:, 1]]) / 2
    pca = PCA(3).fit(np.concatenate([unit[pairs[:, 0]] - centre, unit[pairs[:, 1]] - centre]))
    assert abs(abs(pca.components_[0] @ g) - 1) < 1e-9 and abs(np.linalg.norm(g) - 1) < 1e-12
    assert share > pca.explained_variance_ratio_[1]  # the first component carries more than the second
    assert g @ (unit[index["she"]] - unit[index["he"]]) > 0  # it points from the male words to the female ones
    mean, _ = bias_direction(unit, pairs, "mean")
    assert mean @ g > 0.5  # the plain mean of the differences leans the same way


def test_neutralised_words_have_no_projection_and_equalised_pairs_are_symmetric_and_equidistant(vectors):
    wv, _ = vectors
    definitional, pairs, specific = lists(wv)
    assert len(pairs) >= 12
    unit, g, neutral, _ = hard_debias(wv, definitional, pairs, specific)
    index = wv.index()
    assert {"doctor", "engineer", "teacher"} <= {wv.words[i] for i in neutral}
    assert not {"she", "he", "queen", "king"} & {wv.words[i] for i in neutral}
    np.testing.assert_allclose(unit[neutral] @ g, 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1, atol=1e-6)
    others = unit[neutral]
    for a, b in pairs:
        va, vb = unit[index[a]], unit[index[b]]
        np.testing.assert_allclose(va - (va @ g) * g, vb - (vb @ g) * g, atol=1e-6)  # the same off the bias axis
        np.testing.assert_allclose(va @ g, -(vb @ g), atol=1e-6)  # mirror images across it
        np.testing.assert_allclose(np.linalg.norm(others - va, axis=1), np.linalg.norm(others - vb, axis=1), atol=1e-6)
    rows = np.array([[index[a], index[b]] for a, b in pairs])
    lean = lambda m: (m[rows[:, 0]] - m[rows[:, 1]]) @ g  # noqa: E731
    assert np.array_equal(np.sign(lean(unit)), np.sign(lean(unit_rows(wv.matrix.astype(np.float64)))))  # sides kept


def job(tmp_path, vectors_path, **analysis) -> object:
    spec = {"kind": "debias", "name": "debias", "analysis": {"vectors": str(vectors_path), **analysis},
            "storage": {"path": str(tmp_path / "runs")}}
    path = tmp_path / "debias.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_the_job_reports_analogies_before_and_after_and_draws_the_occupations(vectors, tmp_path, capsys):
    wv, path = vectors
    code = main(["analyze", str(job(tmp_path, path, missing_words="skip", analogy_vocabulary=20000))])
    out, err = capsys.readouterr()
    assert code == 0, err
    run = tmp_path / "runs" / "debias"
    summary = json.loads((run / "summary.json").read_text())
    # 3,800 questions answered among 9,000 words: chance is ~0.01 %; these small vectors get ~1 %
    assert summary["analogy_questions"] > 1000 and summary["analogy_before"] > 0.005, summary
    assert summary["analogy_after"] > 0.75 * summary["analogy_before"], summary  # no collapse
    assert summary["occupation_max_abs_projection_after"] < 1e-5 < summary["occupation_mean_abs_projection_before"]
    assert (run / "occupations.png").stat().st_size > 10_000
    debiased = load_vectors(run / "debiased.bin")
    assert debiased.words == wv.words and debiased.matrix.shape == wv.matrix.shape
    assert "analogy_after" in out


def test_a_word_list_naming_words_not_in_the_vocabulary_is_one_line_and_writes_nothing(vectors, tmp_path, capsys):
    _, path = vectors
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# mine\nshe he\nqzxwoman qzxman\nwoman manqzx\n")
    code, err = main(["analyze", str(job(tmp_path, path, definitional=str(pairs)))]), capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "analysis.definitional: 3 word(s) not in the" in err and "qzxwoman, qzxman, manqzx" in err
    assert not (tmp_path / "runs" / "debias").exists()


@pytest.mark.parametrize("field, content, message", [
    ("definitional", "she he her\n", "analysis.definitional: .* line 1: expected two words"),
    ("occupations", "nurse doctor\n", "analysis.occupations: .* line 1: expected one word"),
    ("equalize", "she he\nher she\n", "analysis.equalize: 'she' is in two pairs"),
])
def test_malformed_word_lists_are_one_line(vectors, tmp_path, capsys, field, content, message):
    _, path = vectors
    words = tmp_path / "words.txt"
    words.write_text(content)
    code, err = main(["analyze", str(job(tmp_path, path, missing_words="skip", **{field: str(words)}))]), capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and re.search(message, err), err
    assert not (tmp_path / "runs" / "debias").exists()
