"""Each layer of a network measured on real inputs: output shape, parameters, multiply-adds per example and
receptive field (what ``dl-ray describe`` prints and the experiments count).

Any ``nn.Module`` family works: each network is traced with ``torch.fx`` on the inputs the task feeds it in
evaluation (captured by a hook on one example batch), and an interpreter walks the graph in execution order,
running it for real so every shape is the true one. The receptive field (r, in input pixels, per spatial
axis) and the jump (j, the input-pixel distance between two neighbouring outputs) propagate as in the course:

* convolution and pooling with kernel k, stride s, dilation d: ``r_out = r_in + (k - 1) * d * j_in``,
  ``j_out = j_in * s``;
* element-wise layers (activations, batch norm, dropout) keep them; where branches meet (a residual add, an
  Inception concat) the output sees what the widest branch sees: the maximum;
* once the spatial axes are gone (flatten, linear, global pooling) every output sees the whole input.

Multiply-adds: a convolution ``out_elems * C_in / groups * prod(kernel)``, a linear layer ``in * out`` per
position, a matmul ``out_elems * inner``, a recurrent layer ``T * gates * h * (in + h)`` per layer and
direction. Activations, batch norm, pooling and additions are not counted (they are memory-bound, not
multiply-add-bound). A network that ``torch.fx`` cannot trace (data-dependent control flow) is described
from forward hooks on its layers, in call order, without receptive fields.
"""
from __future__ import annotations

import inspect
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import fx, nn

WHOLE = "whole"
"""The receptive field of an output that depends on every input pixel."""
UNKNOWN = "?"
"""The receptive field after an operation whose geometry is not known here (e.g. an upsampling)."""


@dataclass(frozen=True)
class Field:
    """Receptive field size ``r`` and jump ``j`` per spatial axis, in input pixels."""

    r: tuple[int, ...]
    j: tuple[float, ...]

    def through(self, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...]) -> "Field":
        r = tuple(r + (k - 1) * d * j for r, k, d, j in zip(self.r, kernel, dilation, self.j))
        return Field(tuple(int(v) for v in r), tuple(j * s for j, s in zip(self.j, stride)))

    def text(self) -> str:
        return str(self.r[0]) if len(set(self.r)) == 1 else "x".join(map(str, self.r))


Receptive = Field | str | None
"""A Field, WHOLE, UNKNOWN, or None where there is no spatial input (tabular data, token ids)."""


@dataclass
class Row:
    name: str
    kind: str
    shape: str
    params: int
    macs: int
    field: Receptive
    fully_connected: bool = False


@dataclass
class Summary:
    """One network described: its rows, the layers left out of the table, and the totals."""

    name: str
    input_shape: str
    rows: list[Row] = field(default_factory=list)
    hidden: Counter = field(default_factory=Counter)
    """Element-wise layers without parameters (ReLU, Dropout...), counted by type instead of listed."""
    params: int = 0
    trainable: int = 0
    traced: str | None = None
    """None when torch.fx traced the network, else why not (then there are no receptive fields)."""

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    @property
    def fc_params(self) -> int:
        return sum(r.params for r in self.rows if r.fully_connected)


# ---------------------------------------------------------------- per operation: multiply-adds, receptive field


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def module_macs(m: nn.Module, inputs: tuple, out: Any) -> int:
    """Multiply-adds of one call of a layer (the batch is one example)."""
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return inputs[0].numel() * m.out_channels // m.groups * math.prod(m.kernel_size)
    if isinstance(m, nn.modules.conv._ConvNd):
        return out.numel() * m.in_channels // m.groups * math.prod(m.kernel_size)
    if isinstance(m, nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, nn.RNNBase):
        x = inputs[0]
        packed = isinstance(x, nn.utils.rnn.PackedSequence)  # its data: one row per (sequence, step)
        steps = x.data.shape[0] if packed else x.shape[1 if m.batch_first and x.dim() == 3 else 0]
        gates = {"LSTM": 4, "GRU": 3}.get(m.mode, 1)
        dirs = 2 if m.bidirectional else 1
        widths = [m.input_size] + [m.hidden_size * dirs] * (m.num_layers - 1)
        return steps * dirs * sum(gates * m.hidden_size * (w + m.hidden_size) for w in widths)
    if isinstance(m, nn.RNNCellBase):
        gates = {nn.LSTMCell: 4, nn.GRUCell: 3}.get(type(m), 1)
        return gates * m.hidden_size * (m.input_size + m.hidden_size)
    return 0


MATMULS = {torch.matmul, torch.bmm, torch.mm, operator.matmul, "matmul", "bmm", "mm"}
CONV_FUNCTIONS = {F.conv1d, F.conv2d, F.conv3d}


def function_macs(target: Any, args: tuple, out: Any) -> int:
    if target in CONV_FUNCTIONS:
        weight = args[1]
        return out.numel() * math.prod(weight.shape[1:])
    if target is F.linear:
        return out.numel() * args[1].shape[-1]
    if target in MATMULS and isinstance(args[0], torch.Tensor):
        return out.numel() * args[0].shape[-1]
    return 0


def module_field(m: nn.Module, x: torch.Tensor, out: Any, given: Receptive) -> Receptive | None:
    """The receptive field after layer ``m``; None when ``m`` is not a layer that changes it (decided later)."""
    if not isinstance(given, Field):
        return given if isinstance(m, (nn.Linear, nn.Flatten)) else None
    n = len(given.r)
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return UNKNOWN
    if isinstance(m, nn.modules.conv._ConvNd):
        return given.through(m.kernel_size, m.stride, m.dilation)
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        return given.through(_tuple(m.kernel_size, n), _tuple(m.stride, n), _tuple(m.dilation, n))
    if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)):
        return given.through(_tuple(m.kernel_size, n), _tuple(m.stride, n), (1,) * n)
    if isinstance(m, nn.modules.pooling._AdaptiveAvgPoolNd | nn.modules.pooling._AdaptiveMaxPoolNd):
        return adaptive_field(given, x.shape[-n:], out.shape[-n:])
    if isinstance(m, (nn.Linear, nn.Flatten)):
        return WHOLE
    return None


def adaptive_field(given: Field, size_in: tuple[int, ...], size_out: tuple[int, ...]) -> Receptive:
    """Adaptive pooling as the plain pooling it amounts to: stride in // out, kernel in - (out - 1) * stride."""
    if all(o == 1 for o in size_out):
        return WHOLE  # global pooling
    stride = tuple(i // o for i, o in zip(size_in, size_out))
    kernel = tuple(i - (o - 1) * s for i, o, s in zip(size_in, size_out, stride))
    return given.through(kernel, stride, (1,) * len(stride))


POOL_FUNCTIONS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
ADAPTIVE_FUNCTIONS = {F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
                      F.adaptive_max_pool2d, F.adaptive_max_pool3d}


def function_field(target: Any, args: tuple, kwargs: dict, out: Any, given: Receptive) -> Receptive | None:
    """The receptive field after a functional call that changes it; None when it does not (decided later)."""
    if not isinstance(given, Field):
        return None
    n = len(given.r)
    if target in CONV_FUNCTIONS:
        weight = args[1]
        stride = _tuple(args[3] if len(args) > 3 else kwargs.get("stride", 1), n)
        dilation = _tuple(args[5] if len(args) > 5 else kwargs.get("dilation", 1), n)
        return given.through(tuple(weight.shape[2:]), stride, dilation)
    if target in POOL_FUNCTIONS:
        kernel = _tuple(args[1] if len(args) > 1 else kwargs["kernel_size"], n)
        stride = args[2] if len(args) > 2 else kwargs.get("stride")
        stride = _tuple(stride, n) if stride else kernel  # PyTorch: stride defaults to the kernel size
        dilation = _tuple(kwargs.get("dilation", 1), n) if "max" in target.__name__ else (1,) * n
        return given.through(kernel, stride, dilation)
    if target in ADAPTIVE_FUNCTIONS:
        return adaptive_field(given, args[0].shape[-n:], out.shape[-n:])
    if target is F.linear:
        return WHOLE
    return None


def merge_fields(fields: list[Receptive], inputs: list[torch.Tensor], out: Any) -> Receptive:
    """Any other operation: element-wise ones (and where branches meet) keep the widest input's field; one that
    removes the spatial axes (flatten, view, mean over H and W) sees the whole input; one that changes them
    otherwise (an upsampling, a crop) leaves it unknown here."""
    known = [f for f in fields if f is not None]
    if not known:
        return None
    if WHOLE in known:
        return WHOLE
    if UNKNOWN in known:
        return UNKNOWN
    spatial = next(x for x, f in zip(inputs, fields) if isinstance(f, Field))
    n = len(known[0].r)
    if not isinstance(out, torch.Tensor) or out.dim() < n + 2:
        return WHOLE if isinstance(out, torch.Tensor) else UNKNOWN
    if tuple(out.shape[-n:]) != tuple(spatial.shape[-n:]):
        return UNKNOWN
    return Field(tuple(max(rs) for rs in zip(*(f.r for f in known))), tuple(max(js) for js in zip(*(f.j for f in known))))


# ---------------------------------------------------------------- walking a traced network


class Walk(fx.Interpreter):
    """Runs the traced network node by node, recording a row per layer and the receptive field of every value."""

    def __init__(self, gm: fx.GraphModule, summary: Summary):
        super().__init__(gm)
        self.summary, self.fields, self.counted = summary, {}, set()

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.op == "placeholder":
            spatial = isinstance(out, torch.Tensor) and out.dim() >= 3 and out.is_floating_point()
            self.fields[n] = Field((1,) * (out.dim() - 2), (1,) * (out.dim() - 2)) if spatial else None
        elif n.op in ("call_module", "call_function", "call_method"):
            self.fields[n] = self.record(n, out)
        return out

    def record(self, n: fx.Node, out: Any) -> Receptive:
        """The receptive field of ``n``'s output; a row for it when it is a layer worth a line."""
        if shape_text(out) == "-":  # a size, a flag: no layer
            return None
        sources = [a for a in n.all_input_nodes if a.op != "get_attr"]
        fields, inputs = [self.fields.get(a) for a in sources], [self.env[a] for a in sources]
        given = fields[0] if fields else None
        kind, params, macs, found, fully_connected = self.layer(n, out, given)
        result = found if found is not None else merge_fields(fields, inputs, out)
        tensors_in = [x for x in inputs if isinstance(x, torch.Tensor)]
        merges = len(tensors_in) >= 2
        reshapes = isinstance(out, torch.Tensor) and tensors_in and out.shape != tensors_in[0].shape
        if params or macs or merges or reshapes or result != given:  # a stride-1 pooling widens the field only
            name = n.target if n.op == "call_module" else n.name
            self.summary.rows.append(Row(name, kind, shape_text(out), params, macs, result, fully_connected))
        elif isinstance(out, torch.Tensor) and tensors_in:
            self.summary.hidden[kind] += 1
        return result

    def layer(self, n: fx.Node, out: Any, given: Receptive) -> tuple[str, int, int, Receptive | None, bool]:
        """(type, new parameters, multiply-adds, receptive field if this layer sets it, fully connected?)."""
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        if n.op == "call_module":
            m = self.module.get_submodule(n.target)
            found = module_field(m, args[0], out, given) if args and isinstance(args[0], torch.Tensor) else None
            return type(m).__name__, self.new_params(m.parameters()), module_macs(m, args, out), found, isinstance(m, nn.Linear)
        target = n.target
        kind = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        used = [self.env[a] for a in n.all_input_nodes if a.op == "get_attr" and isinstance(self.env[a], nn.Parameter)]
        found = function_field(target, args, kwargs, out, given)
        return kind, self.new_params(used), function_macs(target, args, out), found, target is F.linear

    def new_params(self, params) -> int:
        """Parameters not yet counted (a layer called twice, shared weights, counts once)."""
        fresh = [p for p in params if id(p) not in self.counted]
        self.counted |= {id(p) for p in fresh}
        return sum(p.numel() for p in fresh)


def shape_text(out: Any) -> str:
    """The output's shape without the batch axis (the first tensor's, for a tuple such as an LSTM's)."""
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if not isinstance(out, torch.Tensor):
        return "-"
    return "x".join(map(str, out.shape[1:])) or "1"


def parameter_counts(net: nn.Module) -> dict[str, int]:
    return {"params": sum(p.numel() for p in net.parameters()),
            "trainable": sum(p.numel() for p in net.parameters() if p.requires_grad)}


def summarize(net: nn.Module, args: tuple, kwargs: dict | None = None, name: str = "model") -> Summary:
    """Describe ``net`` on one example (``args``: its inputs, batch of one; ``kwargs``: its other arguments)."""
    bound = inspect.signature(net.forward).bind(*args, **(kwargs or {}))
    bound.apply_defaults()
    values = bound.arguments  # tensors become the graph's inputs; anything else (a flag, a stage) is fixed
    concrete = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
    tensors = [v for v in values.values() if isinstance(v, torch.Tensor)]
    summary = Summary(name, shape_text(tensors[0]) if tensors else "-", **parameter_counts(net))
    was_training = net.training
    net.eval()  # batch norm on one example, dropout off: the shapes and counts do not depend on it
    try:
        with torch.no_grad():
            try:
                gm = fx.symbolic_trace(net, concrete_args=concrete or None)
            except Exception as e:  # noqa: BLE001 - fx raises many types for untraceable Python; the hooks take over
                summary.traced = f"{type(e).__name__}: {' '.join(str(e).split())}"[:200]
                by_hooks(net, lambda: net(*args, **(kwargs or {})), summary)
            else:
                Walk(gm, summary).run(*values.values())
    finally:
        net.train(was_training)
    return summary


def by_hooks(net: nn.Module, run: Callable[[], Any], summary: Summary) -> None:
    """Rows from forward hooks on ``net``'s leaf layers while ``run()`` runs, in call order (no graph: no
    receptive fields)."""
    counted: set[int] = set()

    def hook(m: nn.Module, inputs: tuple, out: Any) -> None:
        fresh = [p for p in m.parameters() if id(p) not in counted]
        counted.update(id(p) for p in fresh)
        params, macs = sum(p.numel() for p in fresh), module_macs(m, inputs, out)
        same = isinstance(out, torch.Tensor) and inputs and isinstance(inputs[0], torch.Tensor) and out.shape == inputs[0].shape
        if params or macs or not same:
            summary.rows.append(Row(names[m], type(m).__name__, shape_text(out), params, macs, None, isinstance(m, nn.Linear)))
        else:
            summary.hidden[type(m).__name__] += 1

    names = {m: name for name, m in net.named_modules() if not list(m.children())}
    handles = [m.register_forward_hook(hook) for m in names]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
