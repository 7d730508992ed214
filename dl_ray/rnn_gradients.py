"""The vanishing / exploding gradient lesson, measured: ||dL/ds<1>|| against the sequence length T.

Back-propagation through time multiplies the gradient by one Jacobian da<t>/da<t-1> per step. For the tanh RNN
that is diag(1 - a<t>^2) W_aa, whose norm is below 1 at the usual initialisation, so the gradient reaching the
first step shrinks geometrically with T (and grows geometrically when W_aa is scaled up: ``recurrent_scales``).
The GRU's and LSTM's memory cell is carried by gates instead: c<t> = Gamma_u * c~<t> + Gamma_f * c<t-1>, so
where the forget gate is near 1 the gradient crosses many steps almost unchanged. Nothing is trained: the
networks are freshly initialised (torch's init, ``forget_bias`` added to the LSTMs' forget gates), the loss is
a fixed random projection of the last output a<T>, and the gradient is taken at the state s<1> after the first
step: a<1>, and with it c<1> for the LSTMs (their memory is part of the state that carries the gradient).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dl_ray.analysis import register_analysis
from dl_ray.models.rnn import CellName, Recurrent, RecurrentConfig


class GradientFlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    cells: list[CellName] = ["rnn", "gru", "lstm"]
    """Cells compared: any of rnn | gru_simple | gru | lstm | peephole_lstm | coupled_lstm."""
    lengths: list[int] = [1, 2, 5, 10, 20, 30, 50, 75, 100]
    """Sequence lengths T at which ||dL/ds<1>|| is measured (1 must be among them: the ratios are against T=1)."""
    hidden_size: int = Field(64, gt=0)
    """Units of the state."""
    input_size: int = Field(16, gt=0)
    """Features of the random inputs x<t> (standard normal)."""
    batch_size: int = Field(32, gt=0)
    """Sequences per seed; each sequence's gradient norm is one sample."""
    seeds: int = Field(4, ge=1)
    """Fresh initialisations (and input batches) per cell; the figure is the geometric mean over all samples."""
    forget_bias: float = 1.0
    """Added to the LSTMs' forget-gate biases at initialisation (Gers et al. 2000; Jozefowicz et al. 2015);
    0 = torch's plain init, whose Gamma_f near 0.5 forgets half the memory per step."""
    recurrent_scales: list[float] = [1.0, 3.0]
    """One panel each: every recurrent weight W_hh multiplied by this at initialisation (1 = the usual init, where
    the RNN's gradient vanishes; 3: it explodes, while the gated cells' stays bounded)."""

    @field_validator("recurrent_scales")
    @classmethod
    def _scales(cls, scales: list[float]) -> list[float]:
        if not scales or min(scales) <= 0:
            raise ValueError(f"expected at least one scale, each > 0, got {scales}")
        return list(dict.fromkeys(scales))

    @field_validator("lengths")
    @classmethod
    def _lengths(cls, lengths: list[int]) -> list[int]:
        if 1 not in lengths or min(lengths) < 1:
            raise ValueError(f"expected lengths >= 1 that include 1 (the reference), got {lengths}")
        return sorted(set(lengths))

    @field_validator("cells")
    @classmethod
    def _cells(cls, cells: list[str]) -> list[str]:
        if not cells:
            raise ValueError("expected at least one cell")
        return list(dict.fromkeys(cells))


def fresh_rnn(cell: str, cfg: GradientFlowConfig, scale: float) -> Recurrent:
    """One layer of our written-out cell in float64 (the RNN's gradient underflows float32 by T=100)."""
    rnn = Recurrent(cfg.input_size, RecurrentConfig(cell=cell, hidden_size=cfg.hidden_size)).double()
    hidden = cfg.hidden_size
    with torch.no_grad():
        rnn.rnn.weight_hh_l0.mul_(scale)
        if cell in ("lstm", "peephole_lstm"):  # rows [u | f | c~ | o]: the forget gate is the second block
            rnn.rnn.bias_hh_l0[hidden:2 * hidden] += cfg.forget_bias
        if cell == "coupled_lstm":  # rows [u | c~ | o] and Gamma_f = 1 - Gamma_u: the same bias, on Gamma_u negated
            rnn.rnn.bias_hh_l0[:hidden] -= cfg.forget_bias
    return rnn


def first_state_gradients(rnn: Recurrent, x: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """(B,) norms of dL/ds<1> per sequence, L = readout . a<T> (sequences are independent, so one backward)."""
    _, state = rnn(x[:, :1])
    state = tuple(s.detach().requires_grad_() for s in (state if rnn.memory else (state,)))
    a_1 = state[0]
    if x.shape[1] == 1:
        a_last = a_1[0]
    else:
        outputs, _ = rnn(x[:, 1:], state if rnn.memory else a_1)
        a_last = outputs[:, -1]
    grads = torch.autograd.grad((a_last @ readout).sum(), state, allow_unused=True)
    return torch.cat([g[0] for g in grads if g is not None], 1).norm(dim=1)


def gradient_norms(cell: str, cfg: GradientFlowConfig, scale: float = 1.0) -> dict[int, float]:
    """T -> geometric mean of ||dL/ds<1>|| over seeds and sequences."""
    logs: dict[int, list[torch.Tensor]] = {t: [] for t in cfg.lengths}
    for seed in range(cfg.seeds):
        gen = torch.manual_seed(seed)
        rnn = fresh_rnn(cell, cfg, scale)
        readout = torch.randn(cfg.hidden_size, generator=gen, dtype=torch.float64)
        readout /= readout.norm()
        x = torch.randn(cfg.batch_size, max(cfg.lengths), cfg.input_size, generator=gen, dtype=torch.float64)
        for t in cfg.lengths:
            logs[t].append(first_state_gradients(rnn, x[:, :t], readout).log())
    return {t: math.exp(torch.cat(v).mean().item()) for t, v in logs.items()}


Norms = dict[float, dict[str, dict[int, float]]]  # scale -> cell -> T -> norm


def plot(norms: Norms, cfg: GradientFlowConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(norms), figsize=(5 * len(norms), 4), squeeze=False)
    for ax, (scale, by_cell) in zip(axes[0], norms.items()):
        for cell, by_length in by_cell.items():
            ax.plot(list(by_length), list(by_length.values()), marker="o", label=cell)
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("||dL/ds<1>|| (geometric mean)")
        ax.set_title(f"W_hh x{scale:g} at init (H={cfg.hidden_size}, forget bias +{cfg.forget_bias:g})", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@register_analysis("gradient_flow", GradientFlowConfig)
def gradient_flow(cfg: GradientFlowConfig, run_dir: Path) -> dict[str, float]:
    """The vanishing/exploding-gradient lesson: ||dL/ds<1>|| against sequence length for RNN, GRU, LSTM."""
    with torch.random.fork_rng():
        norms = {scale: {cell: gradient_norms(cell, cfg, scale) for cell in cfg.cells} for scale in cfg.recurrent_scales}
    plot(norms, cfg, run_dir / "gradient_flow.png")
    longest = max(cfg.lengths)
    return {f"{cell}/W_hh_x{scale:g}/ratio_T{longest}_vs_T1": by_length[longest] / by_length[1]
            for scale, by_cell in norms.items() for cell, by_length in by_cell.items()}
