"""Job kinds: every job file says what it is (``kind:``), and each kind has one command that runs it.

Commands dispatch on this typed field, never on which sections a file happens to have: ``dl-ray train``
given a DQN job, or ``dl-ray dqn`` given a classifier, is one line naming the kind and the command to use.
A file without ``kind:`` is a supervised job (the first kind, and the files written before kinds).
"""
from __future__ import annotations

from typing import Any, Literal

from dl_ray.errors import SpecError

TrainKind = Literal["supervised", "autoencoder", "vae", "gan", "detection", "language_model", "embedding",
                    "metric_learning"]
COMMANDS: dict[str, str] = {
    "supervised": "train",  # predictors: classifiers, regressors, seq2seq
    "autoencoder": "train",  # dl_ray/models/autoencoders.py
    "vae": "train",
    "gan": "train",
    "detection": "train",  # dl_ray/models/yolo.py
    "language_model": "train",  # dl_ray/models/language_model.py
    "embedding": "train",  # dl_ray/models/word2vec.py, glove.py
    "metric_learning": "train",  # dl_ray/models/siamese.py
    "dqn": "dqn",  # dl_ray/rl: DQN on Ray actors
    "q_learning": "dqn",  # dl_ray/rl/tabular.py
    "sweep": "tune",  # a job + a tune: section (dl_ray/tune)
    "gradient_flow": "analyze",  # dl_ray/rnn_gradients.py: nothing is trained (dl_ray/analysis.py)
    "debias": "analyze",  # dl_ray/debias.py
    "style_transfer": "train",  # dl_ray/style: the pixels of one image optimised, no dataset, no epochs
}
DEFAULT = "supervised"


def kind_of(raw: dict[str, Any]) -> str:
    """The kind a raw job file declares (supervised when it declares none); an unknown one is a SpecError."""
    kind = raw.get("kind", DEFAULT)
    if kind not in COMMANDS:
        raise SpecError(f"kind: unknown job kind {kind!r}; allowed: {', '.join(COMMANDS)}")
    return kind


def command_for(raw: dict[str, Any]) -> str:
    """The ``dl-ray`` command that runs this job file: train, dqn, tune or analyze."""
    return COMMANDS[kind_of(raw)]


def require(raw: dict[str, Any], command: str, where: str = "job file") -> str:
    """The file's kind, if ``dl-ray <command>`` runs it; else one line saying which command does."""
    kind = kind_of(raw)
    if COMMANDS[kind] != command:
        takes = ", ".join(k for k, c in COMMANDS.items() if c == command)
        raise SpecError(f"kind: {where} is a {kind} job, which `dl-ray {COMMANDS[kind]}` runs; "
                        f"`dl-ray {command}` takes kind {takes}")
    return kind
