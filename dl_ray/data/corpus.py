"""Real text that the package registries carry, for language models and word embeddings.

Offline, the corpus is gensim's Wikipedia test sample: 106 English articles (about 453 k words) shipped inside
the gensim wheel, so every machine reads the same real text without a download. Online, text8 and
WikiText-2/-103 are read from a path (:func:`read_text8`, :func:`read_wikitext`).
"""
from __future__ import annotations

import functools
import gzip
import json
import os
import re
from pathlib import Path

from dl_ray.errors import SpecError


def _gensim_test_file(name: str) -> str:
    import gensim

    return os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", name)


WIKIPEDIA_SAMPLE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


@functools.lru_cache(maxsize=1)
def wikipedia_sample() -> list[list[str]]:
    """One list of lowercase word tokens per article of gensim's Wikipedia sample.

    Parsed once per gensim version, then read from a cache file (``$XDG_CACHE_HOME/dl_ray``, else
    ``~/.cache/dl_ray``): parsing takes seconds and forks a process pool, reading the cache a fraction of that."""
    cache = corpus_cache_path()
    if cache.is_file():
        return json.loads(gzip.decompress(cache.read_bytes()))
    articles = parse_wikipedia_sample()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(gzip.compress(json.dumps(articles).encode(), compresslevel=1))
        tmp.replace(cache)  # whole or not at all: another process may be reading it
    except OSError:  # a read-only home: parse again next time, the corpus is the same
        pass
    return articles


def corpus_cache_path() -> Path:
    import gensim

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dl_ray"
    return root / f"wikipedia_sample-gensim-{gensim.__version__}.json.gz"


def parse_wikipedia_sample() -> list[list[str]]:
    """gensim's own WikiCorpus strips the wiki markup and tokenises (it is the reference for that, so it is not
    rewritten here); one process suffices for 106 articles and keeps the result deterministic."""
    from gensim.corpora.wikicorpus import WikiCorpus

    corpus = WikiCorpus(_gensim_test_file(WIKIPEDIA_SAMPLE), dictionary={}, processes=1)
    return [list(tokens) for tokens in corpus.get_texts()]


# ---------------------------------------------------------------- corpora for users online (read from a path)
# Both readers give documents as lists of word tokens, as wikipedia_sample does, so the language-model data
# (dl_ray/data/text.py) lays them out the same way. Bad input is one SpecError line naming ``field``.

WIKITEXT_SPLITS = {"train": "wiki.train", "val": "wiki.valid", "test": "wiki.test"}
"""WikiText's file stems (``.raw`` for the raw character-level release, ``.tokens`` for the tokenised one)."""


def _read(path: Path, field: str) -> str:
    if not path.is_file():
        raise SpecError(f"{field}: no such file: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{field}: cannot read {path} as UTF-8 text ({type(e).__name__})") from None
    if not text.strip():
        raise SpecError(f"{field}: {path} is empty")
    return text


def read_text8(path: str | Path, field: str = "data.path") -> list[str]:
    """text8 (Matt Mahoney's first 10^8 characters of cleaned English Wikipedia, http://mattmahoney.net/dc/text8.zip,
    unzipped): one line of lowercase words; it has no article boundaries, so it is one document."""
    return _read(Path(path).expanduser(), field).split()


def read_wikitext(folder: str | Path, field: str = "data.path") -> dict[str, list[list[str]]]:
    """WikiText-2 or -103 (Merity et al. 2016; the raw or the tokenised release): the folder holding
    ``wiki.{train,valid,test}.raw`` (or ``.tokens``). Its own split, by article: ``{"train"|"val"|"test": articles}``,
    each a list of the whitespace-separated tokens of one article (a new article starts at each `` = Title = `` line)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise SpecError(f"{field}: no such folder: {folder} (expected the folder holding wiki.train.raw, "
                        f"wiki.valid.raw and wiki.test.raw)")
    ext = ".raw" if (folder / "wiki.train.raw").is_file() else ".tokens"
    return {split: _articles(_read(folder / (stem + ext), field)) for split, stem in WIKITEXT_SPLITS.items()}


_TITLE = re.compile(r"^ = [^=].* = $")  # top-level headings only; " = = Section = = " lines stay inside the article


def _articles(text: str) -> list[list[str]]:
    articles: list[list[str]] = []
    for line in text.splitlines():
        if _TITLE.match(line) or not articles:
            articles.append([])
        articles[-1].extend(line.split())
    return [a for a in articles if a]
