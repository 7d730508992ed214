"""Word vectors in memory, and the files people share them in.

``load_vectors(path)`` reads

* a GloVe text file: one ``word v1 v2 ... vD`` line per word, no header (Stanford's glove.6B.*.txt);
* a word2vec text file: the same lines after a ``V D`` header line;
* a word2vec binary file (``.bin``, Mikolov's format): a ``V D`` header line, then per word its UTF-8 bytes, one
  space and D little-endian float32 (a newline between records is optional, as in the C tool's output);
* a run folder of kind ``embedding``: the input vectors of its best checkpoint.

Every bad path or format is one :class:`~dl_ray.errors.SpecError` line naming the file and what is wrong.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dl_ray.errors import SpecError

FIELD = "vectors"
"""How errors name the input: a job's ``vectors:`` path (sentiment, debiasing) or the loader's argument."""


@dataclass
class WordVectors:
    words: list[str]
    matrix: np.ndarray
    """(V, D) float32: row i is the vector of ``words[i]``."""

    def __post_init__(self):
        self.matrix = np.asarray(self.matrix, dtype=np.float32)
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.words):
            raise ValueError(f"{len(self.words)} words need a (V, D) matrix with V = {len(self.words)}, "
                             f"got shape {self.matrix.shape}")
        self._index: dict[str, int] | None = None

    def index(self) -> dict[str, int]:
        """Word -> row (the first row, if a file repeats a word)."""
        if self._index is None:
            index: dict[str, int] = {}
            for i, w in enumerate(self.words):
                index.setdefault(w, i)
            self._index = index
        return self._index

    def __contains__(self, word: object) -> bool:
        return word in self.index()

    def __getitem__(self, word: str) -> np.ndarray:
        return self.matrix[self.index()[word]]

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def unit(self) -> np.ndarray:
        """Rows scaled to unit length (zero rows stay zero): cosine similarity is then a dot product."""
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        return self.matrix / np.maximum(norms, 1e-12)


def load_vectors(path: str | Path) -> WordVectors:
    """A GloVe text file, a word2vec text or binary (.bin) file, or a run folder of kind embedding (its best checkpoint)."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{FIELD}: {path} does not exist; give a GloVe text file, a word2vec .bin file "
                        "or a run folder of kind embedding")
    if path.is_dir():
        return _from_run(path)
    if path.stat().st_size == 0:
        raise SpecError(f"{FIELD}: {path} is empty")
    with open(path, "rb") as f:
        first = f.readline()
        rest_is_binary = path.suffix == ".bin" or _looks_binary(f.read(4096))
    header = _header(first)
    if header is not None and rest_is_binary:
        return _read_binary(path, *header)
    return _read_text(path, skip_header=header is not None)


def _header(line: bytes) -> tuple[int, int] | None:
    """(V, D) if the first line is a word2vec ``V D`` header, else None (a GloVe file starts with a word)."""
    parts = line.split()
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def _looks_binary(chunk: bytes) -> bool:
    """Float32 bytes after the header are nearly never all valid UTF-8 text."""
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(chunk) - 4  # a multi-byte character cut at the chunk's end is still text
    return b"\x00" in chunk


def _read_text(path: Path, skip_header: bool) -> WordVectors:
    words, rows = [], []
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            lines = f.readlines()
        except UnicodeDecodeError as e:
            raise SpecError(f"{FIELD}: {path} is neither UTF-8 text vectors nor a word2vec binary file ({e.reason})") from None
    for n, line in enumerate(lines[1:] if skip_header else lines, start=2 if skip_header else 1):
        if not line.strip():
            continue
        parts = line.rstrip("\n").rstrip(" ").split(" ")
        try:
            rows.append(np.asarray(parts[1:], dtype=np.float32))
        except ValueError:
            raise SpecError(f"{FIELD}: {path} line {n}: expected 'word v1 ... vD' with numbers, got {line[:60]!r}") from None
        words.append(parts[0])
        if len(rows[-1]) != len(rows[0]):
            raise SpecError(f"{FIELD}: {path} line {n}: {len(rows[-1])} numbers, the first vector has {len(rows[0])}")
    if not words:
        raise SpecError(f"{FIELD}: {path} holds no vectors")
    return WordVectors(words, np.stack(rows))


def _read_binary(path: Path, count: int, dim: int) -> WordVectors:
    data = path.read_bytes()
    pos = data.index(b"\n") + 1
    words, matrix = [], np.empty((count, dim), dtype=np.float32)
    width = 4 * dim
    for i in range(count):
        while pos < len(data) and data[pos:pos + 1] == b"\n":
            pos += 1
        space = data.find(b" ", pos)
        if space < 0 or space + 1 + width > len(data):
            raise SpecError(f"{FIELD}: {path}: the header promises {count} vectors of {dim} floats, "
                            f"the file ends after {i}")
        try:
            words.append(data[pos:space].decode("utf-8"))
        except UnicodeDecodeError:
            raise SpecError(f"{FIELD}: {path}: word {i + 1} is not UTF-8") from None
        matrix[i] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1)
        pos = space + 1 + width
    return WordVectors(words, matrix)


def save_word2vec_binary(vectors: WordVectors, path: str | Path) -> Path:
    """Write Mikolov's binary format (what ``load_vectors`` and gensim's ``load_word2vec_format`` read)."""
    path = Path(path)
    with open(path, "wb") as f:
        f.write(f"{len(vectors)} {vectors.dim}\n".encode())
        for word, row in zip(vectors.words, vectors.matrix):
            f.write(word.encode("utf-8") + b" " + row.astype("<f4").tobytes() + b"\n")
    return path


def save_glove_text(vectors: WordVectors, path: str | Path) -> Path:
    """Write the GloVe text format: ``word v1 ... vD`` per line, no header."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for word, row in zip(vectors.words, vectors.matrix):
            f.write(word + " " + " ".join(repr(float(v)) for v in row) + "\n")
    return path


def _from_run(run_dir: Path) -> WordVectors:
    """The vectors of a run folder's best checkpoint (a run of kind embedding)."""
    from dl_ray.models.word2vec import vectors_from_run

    return vectors_from_run(run_dir)
