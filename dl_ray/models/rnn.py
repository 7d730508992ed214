"""Recurrent networks: the course's cells written out (``impl: ours``) or torch's fused kernels (``impl: torch``).

:class:`Recurrent` is what families hold (``rnn: RecurrentConfig`` in their model config). Both impls store their
parameters under torch's names (``rnn.weight_ih_l0``, ``rnn.bias_hh_l1_reverse``, ...) and shapes, so a
checkpoint of one loads into the other and ``ours.rnn.load_state_dict(torch.nn.LSTM(...).state_dict())`` works.

Inputs are batch-first and may be padded: with ``lengths``, steps ``t >= lengths[b]`` output 0 and leave the
state unchanged, and the backward direction of a bidirectional layer starts at each sequence's own last real
step (what torch computes from a packed sequence). Dropout acts only between stacked layers, never on the
recurrent connection: the course's "we don't want to remove memory".
"""
from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dl_ray.models.rnn_cells import CELLS, State

CellName = Literal["rnn", "gru_simple", "gru", "lstm", "peephole_lstm", "coupled_lstm"]
TORCH_CELLS = tuple(name for name, cell in CELLS.items() if cell.torch_mode)


class RecurrentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    cell: CellName = "lstm"
    """rnn (tanh) | gru_simple (update gate only) | gru (update + relevance gates) | lstm (write, forget and
    read gates) | peephole_lstm (gates also see c<t-1>) | coupled_lstm (forget = 1 - write)."""
    impl: Literal["ours", "torch"] = "ours"
    """ours: the cells written out step by step (the lesson); torch: torch's fused kernels (the speed; rnn, gru and
    lstm only). Both store the same parameters, so a checkpoint of one loads into the other."""
    hidden_size: int = Field(128, gt=0)
    """Units of the state a<t> (and of the memory cell c<t>) per direction."""
    num_layers: int = Field(1, ge=1)
    """Stacked layers (a deep RNN): layer l+1 reads layer l's outputs."""
    bidirectional: bool = False
    """A second direction reads each sequence from its last real step back; outputs are [forward, backward]."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the outputs of each layer but the last, in training; never on the recurrent connection."""

    @model_validator(mode="after")
    def _torch_has_cell(self):
        if self.impl == "torch" and self.cell not in TORCH_CELLS:
            raise ValueError(f"impl torch runs cell {' | '.join(TORCH_CELLS)} only (got cell {self.cell}); "
                             "use impl: ours")
        return self


class Recurrent(nn.Module):
    """A deep, optionally bidirectional recurrent net. ``forward(x, state, lengths) -> (outputs, final state)``."""

    def __init__(self, input_size: int, cfg: RecurrentConfig):
        super().__init__()
        self.cfg = cfg
        self.memory = CELLS[cfg.cell].memory
        self.output_size = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.rnn = torch_rnn(input_size, cfg) if cfg.impl == "torch" else WrittenOut(input_size, cfg)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        """x (B, T, F) batch-first; lengths (B,) int64 or None (padded positions t >= length give 0 outputs and
        leave the state untouched); state like torch's: (h, c) for the LSTM cells, else h, each
        (num_layers * dirs, B, H). Returns (outputs (B, T, output_size), final state)."""
        if self.cfg.impl == "ours":
            return self.rnn(x, state, lengths)
        if lengths is None:
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed, state)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final


def torch_rnn(input_size: int, cfg: RecurrentConfig) -> nn.RNNBase:
    kind = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cfg.cell]
    dropout = cfg.dropout if cfg.num_layers > 1 else 0.0  # one layer: nothing lies between layers (torch warns)
    return kind(input_size, cfg.hidden_size, cfg.num_layers, batch_first=True, dropout=dropout,
                bidirectional=cfg.bidirectional)


class WrittenOut(nn.Module):
    """The stack of written-out cells, with torch's parameter names, shapes and initialisation."""

    def __init__(self, input_size: int, cfg: RecurrentConfig):
        super().__init__()
        self.cell, self.cfg = CELLS[cfg.cell], cfg
        self.suffixes = ("", "_reverse") if cfg.bidirectional else ("",)
        rows, hidden = self.cell.gates * cfg.hidden_size, cfg.hidden_size
        for layer in range(cfg.num_layers):
            width = input_size if layer == 0 else hidden * len(self.suffixes)
            for sfx in self.suffixes:
                self.register_parameter(f"weight_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows, width)))
                self.register_parameter(f"weight_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows, hidden)))
                self.register_parameter(f"bias_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
                if self.cell.peepholes:
                    peep = torch.empty(self.cell.peepholes * hidden)
                    self.register_parameter(f"weight_ch_l{layer}{sfx}", nn.Parameter(peep))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's: every weight and bias uniform in +-1/sqrt(hidden_size)."""
        bound = 1 / math.sqrt(self.cfg.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        cfg, dirs = self.cfg, len(self.suffixes)
        steps = x.shape[1]
        init = self._initial_state(x, state)
        mask = None if lengths is None else torch.arange(steps, device=x.device) < lengths.to(x.device)[:, None]
        flip = (lambda seq: reverse_padded(seq, lengths)) if dirs == 2 else None
        finals: list[State] = []
        for layer in range(cfg.num_layers):
            outs = []
            for d, sfx in enumerate(self.suffixes):
                start = tuple(s[layer * dirs + d] for s in init)
                seq = x if d == 0 else flip(x)
                out, final = self._direction(seq, start, mask, f"l{layer}{sfx}")
                outs.append(out if d == 0 else flip(out))
                finals.append(final)
            x = torch.cat(outs, -1) if dirs == 2 else outs[0]
            if layer < cfg.num_layers - 1 and cfg.dropout > 0:
                x = F.dropout(x, cfg.dropout, self.training)
        final = tuple(torch.stack(parts) for parts in zip(*finals))
        return x, final if self.cell.memory else final[0]

    def _initial_state(self, x: torch.Tensor, state) -> State:
        if state is not None:
            return tuple(state) if self.cell.memory else (state,)
        zeros = x.new_zeros(self.cfg.num_layers * len(self.suffixes), x.shape[0], self.cfg.hidden_size)
        return (zeros, zeros) if self.cell.memory else (zeros,)

    def _direction(self, seq: torch.Tensor, state: State, mask: torch.Tensor | None, name: str):
        """One layer, one direction, over time: the input projection for every step at once, then the cell."""
        p = lambda kind: getattr(self, f"{kind}_{name}", None)  # noqa: E731
        b_ih, b_hh, step = p("bias_ih"), p("bias_hh"), self.cell.step
        if self.cell.fold_bias:
            b_ih, b_hh = b_ih + b_hh, None
        xp = F.linear(seq, p("weight_ih"), b_ih)
        w_hh_t, w_ch = p("weight_hh").t(), p("weight_ch")
        outputs = []
        for t, xp_t in enumerate(xp.unbind(1)):  # one node; T xp[:, t] would each scatter into a zero xp backward
            new = step(xp_t, state, w_hh_t, b_hh, w_ch)
            if mask is None:
                state = new
                outputs.append(new[0])
            else:
                real = mask[:, t, None]
                state = tuple(torch.where(real, n, s) for n, s in zip(new, state))
                outputs.append(new[0] * real)
        return torch.stack(outputs, 1), state


def reverse_padded(seq: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Each sequence's real steps in reverse order, its padding left in place (its own inverse)."""
    if lengths is None:
        return seq.flip(1)
    steps = torch.arange(seq.shape[1], device=seq.device)
    lengths = lengths.to(seq.device)[:, None]
    index = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return seq.gather(1, index[..., None].expand_as(seq))


# ---------------------------------------------------------------- heads


def last_outputs(outputs: torch.Tensor, lengths: torch.Tensor | None, bidirectional: bool) -> torch.Tensor:
    """(B, output_size): the forward direction at each sequence's last real step, and the backward direction at
    step 0 (where it ends, having read the whole sequence)."""
    batch, steps, width = outputs.shape
    last = (torch.full((batch,), steps - 1) if lengths is None else lengths - 1).to(outputs.device)
    forward = outputs[torch.arange(batch, device=outputs.device), last]
    if not bidirectional:
        return forward
    half = width // 2
    return torch.cat([forward[:, :half], outputs[:, 0, half:]], -1)


class ManyToOne(nn.Module):
    """One prediction per sequence (sentiment): a linear layer on :func:`last_outputs`."""

    def __init__(self, rnn: Recurrent, num_outputs: int):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(rnn.output_size, num_outputs)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outputs, _ = self.rnn(x, lengths=lengths)
        return self.head(last_outputs(outputs, lengths, self.rnn.cfg.bidirectional))


class ManyToMany(nn.Module):
    """One prediction per step (tagging, language models): a linear layer on every output; returns the state too,
    so a caller can carry it across batches."""

    def __init__(self, rnn: Recurrent, num_outputs: int):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(rnn.output_size, num_outputs)

    def forward(self, x: torch.Tensor, state=None, lengths: torch.Tensor | None = None):
        outputs, state = self.rnn(x, state, lengths)
        return self.head(outputs), state


class OneToMany(nn.Module):
    """A sequence from one input (generation): each step's prediction, through ``feedback``, is the next input.

    ``feedback`` maps a prediction (B, num_outputs) to the next input (B, input_size): the identity by default
    (the prediction is the input: num_outputs must equal input_size); e.g. an embedding of the argmax for tokens."""

    def __init__(self, rnn: Recurrent, num_outputs: int, feedback: Callable[[torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if rnn.cfg.bidirectional:
            raise ValueError("rnn.bidirectional: a one-to-many net generates forward in time; set it to false")
        self.rnn, self.head = rnn, nn.Linear(rnn.output_size, num_outputs)
        self.feedback = feedback or (lambda y: y)

    def forward(self, x0: torch.Tensor, steps: int, state=None) -> torch.Tensor:
        """x0 (B, input_size) -> predictions (B, steps, num_outputs)."""
        x, predictions = x0, []
        for _ in range(steps):
            out, state = self.rnn(x[:, None], state)
            predictions.append(self.head(out[:, 0]))
            x = self.feedback(predictions[-1])
        return torch.stack(predictions, 1)
