"""Model families. Each file registers its builders; importing this package registers them all."""
from __future__ import annotations

from dl_ray.models.base import ModelConfig, ModelIO, TaskModel
from dl_ray.models.task import Task
from dl_ray.registry import MODELS


def build_model(cfg: ModelConfig, io: ModelIO, dropout: float = 0.0):
    """The registered family's model for this data; a Task for every kind that ``dl-ray train`` runs."""
    entry = MODELS[cfg.name]
    model = entry.build(cfg, io, dropout)
    if isinstance(model, Task) and model.kind != entry.kind:
        raise TypeError(f"model {cfg.name} is registered as kind {entry.kind} but builds a {model.kind} task")
    return model


from dl_ray.models import autoencoders, gan_dcgan, gan_inverse_cdf, lenet, mlp, seq2seq, vae  # noqa: E402,F401  (register the families)
from dl_ray.models import qnets  # noqa: E402,F401  (Q-networks for dl_ray.rl)
from dl_ray.models import alexnet, inception, resnet, vgg  # noqa: E402,F401  (the CNN case studies)
from dl_ray.models import yolo  # noqa: E402,F401  (detection: YOLO)
from dl_ray.models import siamese  # noqa: E402,F401  (Siamese networks: triplet loss, pairs)
from dl_ray.models import language_model  # noqa: E402,F401  (recurrent language models)
from dl_ray.models import sentiment  # noqa: E402,F401  (averaged embeddings, many-to-one RNN sentiment)
from dl_ray.models import glove, word2vec  # noqa: E402,F401  (word vectors: word2vec, GloVe)

__all__ = ["ModelConfig", "ModelIO", "Task", "TaskModel", "build_model"]
