"""Sequence-to-sequence models: a plain RNN encoder-decoder and the course's attention model.

Both are trained with teacher forcing (the decoder reads the true previous character) and
decoded one step at a time through the same two methods, which is all
:mod:`dl_ray.decoding` needs:

* ``encode(x) -> (memory, state)``: what stays fixed per sentence, and the decoder's first state;
* ``step(tokens, state, memory) -> (log_probs, state)``: one decoder step for a batch of prefixes.

Every tensor is batch-first. ``memory`` has one row per sentence; ``state`` may hold ``g``
hypotheses per sentence, grouped (rows ``i*g .. i*g+g-1`` belong to sentence ``i``), so beam
search never copies the encoder's output and reorders hypotheses with one ``t[index]`` per
state tensor. ``<pad>`` and ``<sos>`` can never be produced.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dl_ray.decoding import EOS, PAD, SOS  # noqa: F401  (EOS: re-exported for the families' users)
from dl_ray.models.base import ModelConfig, ModelIO, Sums, TaskModel
from dl_ray.registry import register_model

State = dict[str, torch.Tensor]


class Seq2SeqConfig(ModelConfig):
    cell: Literal["gru", "lstm"] = "gru"
    """Recurrent cell of encoder and decoder."""
    embedding: int = Field(32, ge=1)
    """Size of the character embeddings."""
    hidden: int = Field(128, ge=1)
    """Hidden units of the encoder and decoder RNNs."""
    layers: int = Field(1, ge=1, le=4)
    """Stacked RNN layers (the decoder starts from the encoder's final state of each layer)."""


class AttentionConfig(ModelConfig):
    cell: Literal["gru", "lstm"] = "gru"
    """Recurrent cell of the bidirectional encoder and of the decoder."""
    embedding: int = Field(32, ge=1)
    """Size of the character embeddings."""
    encoder_hidden: int = Field(32, ge=1)
    """Hidden units of each direction of the encoder (its states a<t> have twice this size)."""
    decoder_hidden: int = Field(64, ge=1)
    """Hidden units of the decoder RNN (s<t> in the course)."""
    attention: int = Field(32, ge=1)
    """Units of the small network scoring e<t,t'> = v . tanh(W s<t-1> + U a<t'>)."""


class Seq2SeqModel(TaskModel):
    """What both families share: teacher-forced training, per-token loss, decoded evaluation."""

    tasks = ("seq2seq",)  # e.g. data.name=dates

    def __init__(self, io: ModelIO):
        super().__init__(io)
        self.max_len = int(io.meta["max_target_len"])
        self.vocab: list[str] = list(io.meta["target_vocab"])
        banned = torch.zeros(io.num_outputs, dtype=torch.bool)
        banned[[PAD, SOS]] = True
        self.register_buffer("banned", banned, persistent=False)

    def eval_metric_names(self) -> tuple[str, ...]:
        return ("loss", "accuracy", "exact_match", "char_accuracy")

    # ---- training: the generic loop calls these
    def inputs(self, batch):
        x, y = batch
        return x, F.pad(y[:, :-1], (1, 0), value=SOS)  # decoder reads <sos> y1 .. y(T-1)

    def loss(self, out, batch):
        return F.cross_entropy(out.flatten(0, 1), batch[-1].flatten(), ignore_index=PAD)

    def metrics(self, out, batch) -> Sums:
        y = batch[-1]
        tokens = (y != PAD).sum().float()
        sentences = torch.tensor(float(len(y)), device=y.device)
        # every teacher-forced argmax right <=> greedy decoding reproduces y exactly
        right = ((out.argmax(-1) == y) | (y == PAD)).all(dim=1).sum().float()
        return {"loss": (self.loss(out, batch).detach() * tokens, tokens), "accuracy": (right, sentences)}

    @torch.no_grad()
    def eval_metrics(self, batch) -> Sums:
        from dl_ray.decoding import char_matches, greedy

        x, y = batch
        sums = self.metrics(self(*self.inputs(batch)).float(), batch)
        decoded = greedy(self, x)
        exact = (decoded.tokens == y).all(dim=1).sum().float()
        chars, total = char_matches(decoded.tokens, y)
        return sums | {"accuracy": (exact, sums["accuracy"][1]), "exact_match": (exact, sums["accuracy"][1]),
                       "char_accuracy": (chars, total)}

    # ---- decoding: dl_ray.decoding calls these
    def log_probs(self, logits: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(logits.float().masked_fill(self.banned, float("-inf")), dim=-1)

    def encode(self, x: torch.Tensor) -> tuple[State, State]:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: State, memory: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError


def _rnn(cell: str, *args, **kwargs) -> nn.RNNBase:
    return (nn.GRU if cell == "gru" else nn.LSTM)(*args, batch_first=True, **kwargs)


def _trim(x: torch.Tensor) -> torch.Tensor:
    """Drop the padding columns that no sentence of this batch needs (inputs are right-padded with 0)."""
    return x[:, : max(int((x != 0).sum(dim=1).max()), 1)]


def _encode(rnn: nn.RNNBase, embedded: torch.Tensor, x: torch.Tensor):
    """Run ``rnn`` over the real characters only."""
    lengths = (x != 0).sum(dim=1).clamp(min=1).cpu()
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    out, final = rnn(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return out, final


class EncoderDecoder(Seq2SeqModel):
    """The course's encoder-decoder: the encoder's last state is the decoder's first state."""

    def __init__(self, cfg: Seq2SeqConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(io)
        self.cell = cfg.cell
        self.source_embed = nn.Embedding(len(io.meta["source_vocab"]), cfg.embedding, padding_idx=0)
        self.target_embed = nn.Embedding(io.num_outputs, cfg.embedding, padding_idx=PAD)
        between = dropout if cfg.layers > 1 else 0.0
        self.encoder = _rnn(cfg.cell, cfg.embedding, cfg.hidden, cfg.layers, dropout=between)
        self.decoder = _rnn(cfg.cell, cfg.embedding, cfg.hidden, cfg.layers, dropout=between)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(cfg.hidden, io.num_outputs)

    def forward(self, x, y_in):
        _, state = self.encode(x)
        out, _ = self.decoder(self.drop(self.target_embed(y_in)), self._hidden(state))
        return self.out(self.drop(out)).masked_fill(self.banned, float("-inf"))

    def encode(self, x):
        x = _trim(x)
        _, final = _encode(self.encoder, self.drop(self.source_embed(x)), x)
        finals = final if self.cell == "lstm" else (final,)
        return {}, {f"h{i}": t.transpose(0, 1) for i, t in enumerate(finals)}  # (layers, N, H) -> batch-first

    def _hidden(self, state: State):
        h = tuple(state[f"h{i}"].transpose(0, 1).contiguous() for i in range(len(state)))
        return h if self.cell == "lstm" else h[0]

    def step(self, tokens, state, memory):
        out, hidden = self.decoder(self.target_embed(tokens)[:, None], self._hidden(state))
        hidden = hidden if self.cell == "lstm" else (hidden,)
        return self.log_probs(self.out(out[:, 0])), {f"h{i}": t.transpose(0, 1) for i, t in enumerate(hidden)}


class AttentionSeq2Seq(Seq2SeqModel):
    """Bidirectional encoder a<t'>; additive attention alpha<t,t'> over it; the decoder RNN reads
    the context c<t> = sum_t' alpha<t,t'> a<t'> with the previous character."""

    def __init__(self, cfg: AttentionConfig, io: ModelIO, dropout: float = 0.0):
        super().__init__(io)
        self.cell = cfg.cell
        features = 2 * cfg.encoder_hidden
        self.source_embed = nn.Embedding(len(io.meta["source_vocab"]), cfg.embedding, padding_idx=0)
        self.target_embed = nn.Embedding(io.num_outputs, cfg.embedding, padding_idx=PAD)
        self.encoder = _rnn(cfg.cell, cfg.embedding, cfg.encoder_hidden, bidirectional=True)
        self.init_state = nn.Linear(features, cfg.decoder_hidden)
        self.score_keys = nn.Linear(features, cfg.attention, bias=False)  # U a<t'>, once per sentence
        self.score_query = nn.Linear(cfg.decoder_hidden, cfg.attention)  # W s<t-1>, every step
        self.score = nn.Linear(cfg.attention, 1, bias=False)  # v
        self.decoder = (nn.GRUCell if cfg.cell == "gru" else nn.LSTMCell)(cfg.embedding + features, cfg.decoder_hidden)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(cfg.decoder_hidden + features, io.num_outputs)

    def forward(self, x, y_in):
        memory, state = self.encode(x)
        logits = []
        for t in range(y_in.shape[1]):
            step_logits, state = self._step(y_in[:, t], state, memory)
            logits.append(step_logits)
        return torch.stack(logits, dim=1).masked_fill(self.banned, float("-inf"))

    def encode(self, x):
        x = _trim(x)
        features, final = _encode(self.encoder, self.drop(self.source_embed(x)), x)
        h = final[0] if self.cell == "lstm" else final  # (2, N, H): last forward, first backward
        s0 = torch.tanh(self.init_state(torch.cat([h[0], h[1]], dim=-1)))
        state = {"s": s0, "alpha": torch.zeros(x.shape, device=x.device)}
        if self.cell == "lstm":
            state["c"] = torch.zeros_like(s0)
        return {"values": features, "keys": self.score_keys(features), "mask": x != 0}, state

    def _step(self, tokens, state, memory):
        keys, values = memory["keys"], memory["values"]
        n, g = len(keys), len(tokens) // len(keys)  # sentences, hypotheses per sentence
        query = self.score_query(state["s"]).view(n, g, 1, -1)
        energy = self.score((keys[:, None] + query).tanh_()).squeeze(-1)  # (n, g, Tx)
        alpha = energy.masked_fill(~memory["mask"][:, None], float("-inf")).softmax(dim=-1)
        context = torch.bmm(alpha, values).flatten(0, 1)  # sum_t' alpha<t,t'> a<t'>
        alpha = alpha.flatten(0, 1)
        cell_in = torch.cat([self.drop(self.target_embed(tokens)), context], dim=-1)
        if self.cell == "lstm":
            s, c = self.decoder(cell_in, (state["s"], state["c"]))
            new = {"s": s, "c": c, "alpha": alpha}
        else:
            s = self.decoder(cell_in, state["s"])
            new = {"s": s, "alpha": alpha}
        return self.out(self.drop(torch.cat([s, context], dim=-1))), new

    def step(self, tokens, state, memory):
        logits, state = self._step(tokens, state, memory)
        return self.log_probs(logits), state


@register_model("seq2seq", Seq2SeqConfig, accepts=EncoderDecoder.accepts)
def seq2seq(cfg: Seq2SeqConfig, io: ModelIO, dropout: float = 0.0) -> EncoderDecoder:
    """Encoder-decoder RNN (GRU/LSTM), teacher forcing; decoded greedily or by beam search."""
    return EncoderDecoder(cfg, io, dropout)


@register_model("attention_seq2seq", AttentionConfig, accepts=AttentionSeq2Seq.accepts)
def attention_seq2seq(cfg: AttentionConfig, io: ModelIO, dropout: float = 0.0) -> AttentionSeq2Seq:
    """Bidirectional RNN encoder + additive attention + RNN decoder fed the context (the course's model)."""
    return AttentionSeq2Seq(cfg, io, dropout)
