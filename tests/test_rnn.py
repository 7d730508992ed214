"""The written-out recurrent cells against torch's kernels and an independent NumPy step; heads, dropout, clipping,
the gradient-flow lesson and bad configs."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import torch
import yaml
from pydantic import Field, ValidationError
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dl_ray.analysis import parse_analysis, run_analysis
from dl_ray.cli import main
from dl_ray.errors import SpecError
from dl_ray.models.base import ModelConfig
from dl_ray.models.rnn import ManyToMany, OneToMany, Recurrent, RecurrentConfig, last_outputs
from dl_ray.registry import Registry
from dl_ray.rnn_gradients import GradientFlowConfig, gradient_norms
from dl_ray.spec import TrainingSpec, describe, parse_named, read_job
from dl_ray.train.loop import StepContext
from tests.conftest import ROOT

F64 = torch.float64
TORCH = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
ALL_CELLS = ["rnn", "gru_simple", "gru", "lstm", "peephole_lstm", "coupled_lstm"]


def as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def ours(cell, hidden=5, layers=1, bidirectional=False, inputs=3, **kw) -> Recurrent:
    cfg = RecurrentConfig(cell=cell, hidden_size=hidden, num_layers=layers, bidirectional=bidirectional, **kw)
    return Recurrent(inputs, cfg).double()


def torch_forward(ref: nn.RNNBase, x, state, lengths):
    if lengths is None:
        return ref(x, state)
    out, final = ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False), state)
    return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final


def weighted_sum(out, final, weights):
    """A loss touching every output and final state with its own random weight."""
    tensors = (out, *as_tuple(final))
    return sum((t * w).sum() for t, w in zip(tensors, weights))


# ---------------------------------------------------------------- torch's cells: outputs and every gradient


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("padded", [False, True])
def test_equals_torch_with_its_weights(cell, layers, bidirectional, padded):
    torch.manual_seed(layers * 10 + bidirectional)
    ref = TORCH[cell](3, 5, layers, batch_first=True, bidirectional=bidirectional).double()
    net = ours(cell, 5, layers, bidirectional)
    net.rnn.load_state_dict(ref.state_dict())
    lengths = torch.tensor([6, 2, 4, 1, 6]) if padded else None
    x = torch.randn(5, 6, 3, dtype=F64)
    dirs = 2 if bidirectional else 1
    state = tuple(torch.randn(layers * dirs, 5, 5, dtype=F64) for _ in range(2 if cell == "lstm" else 1))
    results = []
    for run in (lambda xs, s: torch_forward(ref, xs, s, lengths), lambda xs, s: net(xs, s, lengths)):
        xs, s = x.clone().requires_grad_(), tuple(t.clone().requires_grad_() for t in state)
        out, final = run(xs, s if cell == "lstm" else s[0])
        torch.manual_seed(1)
        weighted_sum(out, final, [torch.randn(t.shape, dtype=F64) for t in (out, *as_tuple(final))]).backward()
        results.append((out, as_tuple(final), xs.grad, [t.grad for t in s]))
    (out_t, fin_t, gx_t, gs_t), (out_o, fin_o, gx_o, gs_o) = results
    torch.testing.assert_close(out_o, out_t, atol=1e-5, rtol=0)
    for a, b in zip(fin_o, fin_t):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(gx_o, gx_t, atol=1e-5, rtol=0)
    for a, b in zip(gs_o, gs_t):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(net.rnn.get_parameter(name).grad, p.grad, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_checkpoints_load_across_impls(cell):
    """Both impls store the same parameters under torch's names, so a state dict loads either way, strictly."""
    torch.manual_seed(0)
    mine, fused = ours(cell, layers=2, bidirectional=True), ours(cell, layers=2, bidirectional=True, impl="torch")
    fused.load_state_dict(mine.state_dict())
    x, lengths = torch.randn(3, 5, 3, dtype=F64), torch.tensor([5, 1, 3])
    torch.testing.assert_close(fused(x, lengths=lengths)[0], mine(x, lengths=lengths)[0], atol=1e-10, rtol=0)
    mine.load_state_dict(ours(cell, layers=2, bidirectional=True, impl="torch").state_dict())


# ---------------------------------------------------------------- cells torch lacks: an independent NumPy step


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def numpy_step(cell, p, x, a, c):
    """One step of the course's equations on one sequence; p holds one layer-direction's weights."""
    blocks = np.split(p["weight_ih"] @ x + p["bias_ih"] + p["weight_hh"] @ a + p["bias_hh"], p["gates"])
    if cell == "gru_simple":
        gamma_u, c_tilde = sigmoid(blocks[0]), np.tanh(blocks[1])
        a = gamma_u * c_tilde + (1 - gamma_u) * a
        return a, a
    if cell == "peephole_lstm":
        peep_u, peep_f, peep_o = np.split(p["weight_ch"], 3)
        gamma_u, gamma_f = sigmoid(blocks[0] + peep_u * c), sigmoid(blocks[1] + peep_f * c)
        gamma_o, c_tilde = sigmoid(blocks[3] + peep_o * c), np.tanh(blocks[2])
    else:  # coupled_lstm
        gamma_u, c_tilde, gamma_o = sigmoid(blocks[0]), np.tanh(blocks[1]), sigmoid(blocks[2])
        gamma_f = 1 - gamma_u
    c = gamma_u * c_tilde + gamma_f * c
    return gamma_o * np.tanh(c), c


def numpy_stack(cell, params, x, layers, dirs, hidden):
    """One unpadded sequence (T, F) through the stack: outputs (T, dirs*H) and each layer-direction's final a, c."""
    finals = []
    for layer in range(layers):
        outs = []
        for d, sfx in enumerate(["", "_reverse"][:dirs]):
            p = {k: params[f"{k}_l{layer}{sfx}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_ch")
                 if f"{k}_l{layer}{sfx}" in params}
            p["gates"] = p["weight_ih"].shape[0] // hidden
            a, c, seq = np.zeros(hidden), np.zeros(hidden), x if d == 0 else x[::-1]
            steps = []
            for x_t in seq:
                a, c = numpy_step(cell, p, x_t, a, c)
                steps.append(a)
            outs.append(np.stack(steps) if d == 0 else np.stack(steps)[::-1])
            finals.append((a, c))
        x = np.concatenate(outs, 1)
    return x, finals


@pytest.mark.parametrize("cell", ["gru_simple", "peephole_lstm", "coupled_lstm"])
def test_cells_torch_lacks_equal_numpy(cell):
    torch.manual_seed(3)
    net = ours(cell, hidden=4, layers=2, bidirectional=True)
    params = {k: v.numpy() for k, v in net.rnn.state_dict().items()}
    x, lengths = torch.randn(3, 5, 3, dtype=F64), torch.tensor([5, 2, 4])
    out, final = net(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        expected, finals = numpy_stack(cell, params, x[b, :n].numpy(), layers=2, dirs=2, hidden=4)
        np.testing.assert_allclose(out[b, :n].detach().numpy(), expected, atol=1e-10)
        assert (out[b, n:] == 0).all()
        for i, (a, c) in enumerate(finals):
            np.testing.assert_allclose(as_tuple(final)[0][i, b].detach().numpy(), a, atol=1e-10)
            if cell != "gru_simple":
                np.testing.assert_allclose(final[1][i, b].detach().numpy(), c, atol=1e-10)


@pytest.mark.parametrize("cell", ["gru_simple", "peephole_lstm", "coupled_lstm"])
def test_gradients_of_cells_torch_lacks_match_finite_differences(cell):
    torch.manual_seed(4)
    net = ours(cell, hidden=3, bidirectional=True, inputs=2)
    names = [name for name, _ in net.named_parameters()]
    x, lengths = torch.randn(2, 4, 2, dtype=F64), torch.tensor([4, 2])

    def outputs(*params):
        return torch.func.functional_call(net, dict(zip(names, params)), (x,), {"lengths": lengths})[0]

    assert torch.autograd.gradcheck(outputs, tuple(p.detach().requires_grad_() for p in net.parameters()))


def test_peephole_lstm_without_peepholes_is_the_lstm():
    torch.manual_seed(10)
    lstm, peephole = ours("lstm", layers=2), ours("peephole_lstm", layers=2)
    assert peephole.load_state_dict(lstm.state_dict(), strict=False).missing_keys == ["rnn.weight_ch_l0", "rnn.weight_ch_l1"]
    assert peephole.rnn.weight_ch_l0.abs().min() > 0
    for p in (peephole.rnn.weight_ch_l0, peephole.rnn.weight_ch_l1):
        nn.init.zeros_(p)
    x = torch.randn(2, 5, 3, dtype=F64)
    torch.testing.assert_close(peephole(x)[1], lstm(x)[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_padding_leaves_the_state_unchanged(cell):
    """A padded batch gives each sequence what it gives alone, cut to its length; padded steps output 0."""
    torch.manual_seed(5)
    net = ours(cell, layers=2, bidirectional=True)
    x, lengths = torch.randn(3, 6, 3, dtype=F64), torch.tensor([6, 3, 1])
    out, final = net(x, lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone, alone_final = net(x[b:b + 1, :n])
        torch.testing.assert_close(out[b:b + 1, :n], alone, atol=1e-12, rtol=0)
        assert (out[b, n:] == 0).all()
        for batched, single in zip(as_tuple(final), as_tuple(alone_final)):
            torch.testing.assert_close(batched[:, b:b + 1], single, atol=1e-12, rtol=0)


@pytest.mark.parametrize("cell", ALL_CELLS)
def test_runs_under_bf16_autocast(cell):
    """training.precision: bf16 autocasts the products; the states stay float32 and the outputs stay close."""
    torch.manual_seed(11)
    net = Recurrent(3, RecurrentConfig(cell=cell, hidden_size=4, num_layers=2, bidirectional=True))
    x, lengths = torch.randn(2, 5, 3), torch.tensor([5, 2])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, final = net(x, lengths=lengths)
    out.float().sum().backward()
    assert all(s.dtype == torch.float32 for s in as_tuple(final))
    torch.testing.assert_close(out.float(), net(x, lengths=lengths)[0], atol=0.03, rtol=0)


# ---------------------------------------------------------------- dropout: between layers only


@pytest.mark.parametrize("impl", ["ours", "torch"])
def test_dropout_never_touches_the_recurrent_path(impl):
    torch.manual_seed(6)
    net = ours("lstm", layers=1, dropout=0.9, impl=impl)
    x = torch.randn(4, 7, 3, dtype=F64)
    train_out = net.train()(x)[0]
    torch.testing.assert_close(train_out, net.eval()(x)[0], atol=0, rtol=0)


def test_dropout_acts_between_layers():
    """Two layers in training: layer 0 (its recurrence included) is untouched, layer 1 reads dropped outputs."""
    torch.manual_seed(7)
    net = ours("gru", layers=2, dropout=0.5)
    x = torch.randn(4, 7, 3, dtype=F64)
    (train_out, train_h), (eval_out, eval_h) = net.train()(x), net.eval()(x)
    torch.testing.assert_close(train_h[0], eval_h[0], atol=0, rtol=0)
    assert (train_out - eval_out).abs().max() > 1e-3


# ---------------------------------------------------------------- heads


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_many_to_one_reads_each_directions_end(cell):
    torch.manual_seed(8)
    net = ours(cell, bidirectional=True)
    x, lengths = torch.randn(3, 6, 3, dtype=F64), torch.tensor([2, 6, 4])
    out, final = net(x, lengths=lengths)
    a = as_tuple(final)[0]
    torch.testing.assert_close(last_outputs(out, lengths, True), torch.cat([a[0], a[1]], -1), atol=0, rtol=0)


def test_one_to_many_feeds_each_prediction_back():
    """Its predictions equal a many-to-many net (same weights) reading [x0, y1, ..., y(T-1)] in one pass."""
    torch.manual_seed(9)
    gen = OneToMany(ours("lstm", inputs=3), num_outputs=3).double()
    x0 = torch.randn(2, 3, dtype=F64)
    ys = gen(x0, steps=5)
    many = ManyToMany(gen.rnn, 3).double()
    many.head = gen.head
    teacher = torch.cat([x0[:, None], ys[:, :-1]], 1)
    torch.testing.assert_close(many(teacher)[0], ys, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- gradient clipping by value


@pytest.mark.parametrize("mode", ["value", "norm"])
def test_grad_clip_modes(mode):
    net = nn.Linear(4, 1, bias=False)
    nn.init.zeros_(net.weight)
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    ctx = StepContext({"main": net}, {"main": opt}, torch.device("cpu"), nullcontext(), 0.1, mode)
    x = torch.tensor([[10.0, 0.05, -3.0, 0.0]])  # the gradient of sum(w . x) is x
    ctx.backward(net(x).sum())
    step = -net.weight.detach()[0]
    expected = x[0].clamp(-0.1, 0.1) if mode == "value" else x[0] * 0.1 / x[0].norm()
    torch.testing.assert_close(step, expected)


def test_bad_grad_clip_mode_is_one_line():
    with pytest.raises(ValidationError) as err:
        TrainingSpec.model_validate({"grad_clip": 1.0, "grad_clip_mode": "l2"})
    assert describe(err.value, TrainingSpec, "training.") == \
        "training.grad_clip_mode: Input should be 'norm' or 'value' (got 'l2')"


# ---------------------------------------------------------------- the gradient-flow lesson


def test_rnn_gradient_vanishes_much_faster_than_lstm():
    cfg = GradientFlowConfig(lengths=[1, 30], hidden_size=32, batch_size=8, seeds=2)
    rnn, lstm = gradient_norms("rnn", cfg)[30], gradient_norms("lstm", cfg)[30]
    assert rnn < 1e-5 and lstm > 1e-4 and rnn < 1e-3 * lstm, (rnn, lstm)


def test_gradient_flow_job_writes_its_plot(tmp_path):
    job = tmp_path / "flow.yaml"
    analysis = {"cells": ["rnn", "coupled_lstm"], "lengths": [1, 20], "hidden_size": 32, "batch_size": 8, "seeds": 1,
                "recurrent_scales": [1.0, 3.0]}
    job.write_text(yaml.safe_dump({"kind": "gradient_flow", "analysis": analysis, "storage": {"path": str(tmp_path)}}))
    spec, figures = run_analysis(job)
    assert (spec.run_dir / "gradient_flow.png").stat().st_size > 10_000
    assert figures["rnn/W_hh_x1/ratio_T20_vs_T1"] < 1 < figures["rnn/W_hh_x3/ratio_T20_vs_T1"]
    parse_analysis(read_job(ROOT / "jobs/experiments/vanishing_gradients.yaml"))


# ---------------------------------------------------------------- bad configs: one line naming the field


class HoldsRnn(ModelConfig):
    rnn: RecurrentConfig = RecurrentConfig()
    """A family's recurrent net."""
    width: int = Field(1, gt=0)
    """Unused."""


@pytest.mark.parametrize("rnn,expected", [
    ({"cell": "elman"}, "model.rnn.cell: Input should be 'rnn', 'gru_simple', 'gru', 'lstm', 'peephole_lstm' or"),
    ({"cell": "peephole_lstm", "impl": "torch"}, "model.rnn: impl torch runs cell rnn | gru | lstm only (got cell peephole"),
    ({"impl": "cudnn"}, "model.rnn.impl: Input should be 'ours' or 'torch'"),
    ({"hidden_size": 0}, "model.rnn.hidden_size: Input should be greater than 0 (got 0)"),
])
def test_bad_rnn_config_is_one_line(rnn, expected):
    registry = Registry("model")
    registry.register("holds_rnn", HoldsRnn)(lambda cfg, io: None)
    with pytest.raises(SpecError) as err:
        parse_named({"name": "holds_rnn", "rnn": rnn}, "model", registry)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_bad_cell_in_a_job_exits_2_and_writes_nothing(tmp_path, capsys):
    job = tmp_path / "flow.yaml"
    job.write_text(yaml.safe_dump({"kind": "gradient_flow", "analysis": {"cells": ["rnn", "lstmm"]},
                                   "storage": {"path": str(tmp_path / "runs")}}))
    assert main(["analyze", str(job)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: analysis.cells.1: Input should be 'rnn', 'gru_simple'") and "\n" not in err
    assert not (tmp_path / "runs").exists()
