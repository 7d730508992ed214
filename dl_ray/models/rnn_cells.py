"""The course's recurrent cells, one time step each, written out in its notation.

A step gets ``xp``, the input already projected for every gate (``W_ih x<t> + b_ih + b_hh``, the full GRU's
``b_hh`` apart: the stack does that for all time steps in one matrix product), the previous state, and the
recurrent weights transposed, so that ``addmm(xp, a, w_hh_t)`` is the whole pre-activation in one call (eager
torch pays per operation and time step, and that overhead, not the arithmetic, dominates small cells). It
returns the new state: ``(a,)`` for the RNN and the GRUs (their memory cell c<t> *is* the output a<t>),
``(a, c)`` for the LSTMs. Gate blocks are stacked in the rows of ``weight_ih``/``weight_hh`` in torch's order wherever torch has
the cell (rnn, gru, lstm), so its weights load unchanged; peephole_lstm shares the LSTM's layout and adds
``weight_ch`` (an LSTM's state dict loads into it with ``strict=False``; with ``weight_ch`` zeroed it is that LSTM).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

State = tuple[torch.Tensor, ...]


def rnn_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """a<t> = tanh(W_aa a<t-1> + W_ax x<t> + b_a)."""
    (a,) = state
    return (torch.addmm(xp, a, w_hh_t).tanh(),)


def gru_simple_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """The course's simplified GRU: one gate, rows [Gamma_u | c~].

    c~<t> = tanh(W_c [c<t-1>, x<t>] + b_c); Gamma_u = sigmoid(W_u [c<t-1>, x<t>] + b_u);
    c<t> = Gamma_u * c~<t> + (1 - Gamma_u) * c<t-1>."""
    (c,) = state
    pre_u, pre_c = torch.addmm(xp, c, w_hh_t).chunk(2, 1)
    gamma_u, c_tilde = pre_u.sigmoid(), pre_c.tanh()
    return (torch.lerp(c, c_tilde.to(c.dtype), gamma_u.to(c.dtype)),)  # .to: under bf16 autocast c stays float32


def gru_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """The full GRU as torch.nn.GRU computes it, rows [Gamma_r | z | c~].

    The course writes c~<t> = tanh(W_c [Gamma_r * c<t-1>, x<t>] + b_c): the relevance gate scales c<t-1> before
    the product. torch (Cho et al. 2014's other form) scales the product: c~<t> = tanh(W_in x + b_in +
    Gamma_r * (W_hn c<t-1> + b_hn)); we follow torch so its weights give equal outputs. torch's gate z is the
    share of c<t-1> kept, i.e. 1 - Gamma_u, so c<t> = Gamma_u * c~<t> + (1 - Gamma_u) * c<t-1> as in the course."""
    (c,) = state
    hidden = c.shape[1]
    hh = torch.addmm(b_hh, c, w_hh_t)  # b_hn must stay inside Gamma_r * (...): this cell's b_hh is not folded
    gamma_r, keep = (xp[:, :2 * hidden] + hh[:, :2 * hidden]).sigmoid().chunk(2, 1)  # keep = z = 1 - Gamma_u
    c_tilde = torch.addcmul(xp[:, 2 * hidden:], gamma_r, hh[:, 2 * hidden:]).tanh()
    return (torch.lerp(c_tilde.to(c.dtype), c, keep.to(c.dtype)),)  # .to: under bf16 autocast c stays float32


def _lstm_out(gamma_u, gamma_f, gamma_o, c_tilde, c_prev) -> State:
    """c<t> = Gamma_u * c~<t> + Gamma_f * c<t-1>; a<t> = Gamma_o * tanh(c<t>) (the course's notes drop the tanh
    of the read; the lecture and torch keep it)."""
    c = torch.addcmul(gamma_f * c_prev, gamma_u, c_tilde)
    return gamma_o * c.tanh(), c


def lstm_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """LSTM, rows [Gamma_u (write) | Gamma_f (forget) | c~ | Gamma_o (read)] (torch's i, f, g, o)."""
    a, c_prev = state
    z = torch.addmm(xp, a, w_hh_t)
    gamma_u, gamma_f, _, gamma_o = z.sigmoid().chunk(4, 1)  # one call for the three gates (the c~ block unused)
    return _lstm_out(gamma_u, gamma_f, gamma_o, z[:, 2 * a.shape[1]:3 * a.shape[1]].tanh(), c_prev)


def peephole_lstm_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """LSTM whose three gates also see c<t-1> (Gers & Schmidhuber 2000), one weight per unit (``w_ch``, rows
    [u | f | o]) as the lecture draws it: unit j of c<t-1> feeds only unit j of each gate."""
    a, c_prev = state
    pre_u, pre_f, pre_c, pre_o = torch.addmm(xp, a, w_hh_t).chunk(4, 1)
    p_u, p_f, p_o = (w_ch * c_prev.repeat(1, 3)).chunk(3, 1)
    return _lstm_out((pre_u + p_u).sigmoid(), (pre_f + p_f).sigmoid(), (pre_o + p_o).sigmoid(), pre_c.tanh(), c_prev)


def coupled_lstm_step(xp, state: State, w_hh_t, b_hh=None, w_ch=None) -> State:
    """LSTM with coupled forget and write gates, rows [Gamma_u | c~ | Gamma_o]: Gamma_f = 1 - Gamma_u, so what is
    written replaces exactly what is forgotten."""
    a, c_prev = state
    z = torch.addmm(xp, a, w_hh_t)
    gamma_u, _, gamma_o = z.sigmoid().chunk(3, 1)
    return _lstm_out(gamma_u, 1 - gamma_u, gamma_o, z[:, a.shape[1]:2 * a.shape[1]].tanh(), c_prev)


@dataclass(frozen=True)
class Cell:
    step: Callable[..., State]
    gates: int
    """Blocks of hidden_size rows in weight_ih / weight_hh (candidate included)."""
    memory: bool = False
    """The state is (a, c) rather than a alone."""
    peepholes: int = 0
    """Blocks of hidden_size entries in weight_ch."""
    torch_mode: str | None = None
    """The torch.nn.RNNBase mode with this exact computation and layout; None: torch has no such cell."""
    fold_bias: bool = True
    """b_hh is added to the input projection once for all steps (the GRU's cannot: Gamma_r multiplies b_hn)."""


CELLS: dict[str, Cell] = {
    "rnn": Cell(rnn_step, 1, torch_mode="RNN_TANH"),
    "gru_simple": Cell(gru_simple_step, 2),
    "gru": Cell(gru_step, 3, torch_mode="GRU", fold_bias=False),
    "lstm": Cell(lstm_step, 4, memory=True, torch_mode="LSTM"),
    "peephole_lstm": Cell(peephole_lstm_step, 4, memory=True, peepholes=3),
    "coupled_lstm": Cell(coupled_lstm_step, 3, memory=True),
}
