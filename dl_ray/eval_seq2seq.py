"""``dl-ray eval``: decode a trained seq2seq run's test split and say where its errors come from.

For greedy search and beam search (width B, length penalty alpha) it reports exact match,
character accuracy and BLEU, exact match by input length, and the course's error analysis:
for every wrong output y_hat, compare the model's P(y*|x) with P(y_hat|x) (length-normalised,
the objective beam search ranks by). P(y*|x) > P(y_hat|x): the search missed a sequence the model
prefers, so the beam is at fault (raise B). Otherwise the model itself prefers the wrong answer
(raising B cannot help; fix the model). It also draws attention heat maps for a few test dates.

It also registers the ``decode`` evaluator: decode-only Tune trials that score one checkpoint with
a sampled beam width and alpha, without retraining (``jobs/sweeps/dates_attention_beam.yaml``).
"""
from __future__ import annotations

import json
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from dl_ray.bleu import char_bleu
from dl_ray.data import DataBundle, build_data
from dl_ray.data.dates import decode
from dl_ray.decoding import Decoded, beam_search, char_matches, greedy, in_batches, normalized, sequence_log_probs
from dl_ray.fmt import file_lines, fit_table, fixed, num, pct
from dl_ray.spec import JobSpec, SpecError
from dl_ray.train import checkpoints
from dl_ray.tune.evaluators import EvalRequest, register_evaluator  # Ray-free

LENGTH_BUCKETS = (10, 15, 20, 25, 30)


@dataclass
class Run:
    spec: JobSpec
    run_dir: Path
    checkpoint: Path
    data: DataBundle
    model: Any


def load_run(target: str | Path, which: str = "best") -> Run:
    """A trained run from its folder or its job file: spec, data and the model at its best checkpoint
    (``which="last"``: its latest)."""
    from dl_ray.api import run_folder
    from dl_ray.runs import checkpoint_of, load_model, load_spec_of

    run_dir, _ = run_folder(target)
    spec = load_spec_of(run_dir)
    if not checkpoints.saved(run_dir):
        raise SpecError(f"eval: {run_dir} has no checkpoint yet; train it first: dl-ray train JOB")
    checkpoint = checkpoint_of(run_dir, which)
    data = build_data(spec.data)
    if data.task != "seq2seq":
        raise SpecError(f"eval: {run_dir.name} is a {data.task} run; dl-ray eval decodes seq2seq runs (e.g. jobs/dates_attention.yaml)")
    model, _ = load_model(checkpoint, spec=spec)
    return Run(spec, run_dir, checkpoint, data, model)


def decode_all(model, x: torch.Tensor, beam: int, alpha: float, batch_size: int = 256) -> tuple[Decoded, float]:
    """Greedy (``beam=1``) or beam search over ``x`` in batches; returns the outputs and sentences/s."""
    started = time.perf_counter()
    if beam == 1:
        decoded = in_batches(greedy, model, x, batch_size)
    else:
        decoded = in_batches(beam_search, model, x, batch_size, beam=beam, alpha=alpha)
    return decoded, len(x) / (time.perf_counter() - started)


def scores(model, decoded: Decoded, y: torch.Tensor) -> dict[str, float]:
    vocab = model.vocab
    outputs, targets = [decode(t, vocab) for t in decoded.tokens], [decode(t, vocab) for t in y]
    right, total = char_matches(decoded.tokens, y)
    return {"exact_match": int((decoded.tokens == y).all(dim=1).sum()) / len(y),
            "char_accuracy": float(right) / float(total), "bleu": char_bleu(outputs, targets)}


def error_analysis(model, x: torch.Tensor, y: torch.Tensor, decoded: Decoded, alpha: float) -> dict[str, Any]:
    """For each wrong output: log P(y*|x) vs log P(y_hat|x) and whose fault the error is."""
    wrong = (decoded.tokens != y).any(dim=1).nonzero().flatten()
    rows = []
    if len(wrong):
        gold, gold_len = sequence_log_probs(model, x[wrong], y[wrong])
        hyp, hyp_len = sequence_log_probs(model, x[wrong], decoded.tokens[wrong])
        gold_n, hyp_n = normalized(gold, gold_len, alpha), normalized(hyp, hyp_len, alpha)
        for k, i in enumerate(wrong.tolist()):
            rows.append({"index": i, "expected": decode(y[i], model.vocab), "output": decode(decoded.tokens[i], model.vocab),
                         "log_p_expected": float(gold[k]), "log_p_output": float(hyp[k]),
                         "fault": "beam" if gold_n[k] > hyp_n[k] else "model"})
    beam_faults = sum(r["fault"] == "beam" for r in rows)
    return {"errors": len(rows), "beam_faults": beam_faults, "model_faults": len(rows) - beam_faults,
            "advice": advice(len(rows), beam_faults), "rows": rows}


def advice(errors: int, beam_faults: int) -> str:
    if errors == 0:
        return "no errors on this split: nothing to fix"
    if beam_faults > errors - beam_faults:
        return "most errors are the search's fault (P(y*|x) > P(y_hat|x)): raise the beam width B"
    return "most errors are the model's (it prefers its wrong output): a larger B won't help; improve the model (data, epochs, size, regularisation)"


def by_length(texts: list[str], correct: torch.Tensor) -> list[tuple[str, int, float]]:
    """(input-length bucket, examples, exact match) rows."""
    lengths = torch.tensor([len(t) for t in texts])
    edges = (0, *LENGTH_BUCKETS, 10**6)
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        inside = (lengths > lo) & (lengths <= hi)
        if inside.any():
            label = f"{lo + 1}-{hi}" if hi < 10**6 else f">{lo}"
            rows.append((label, int(inside.sum()), float(correct[inside].float().mean())))
    return rows


def evaluate(run: Run, beam: int = 3, alpha: float = 0.7) -> dict[str, Any]:
    """Everything ``dl-ray eval`` prints, as a dict (also written to ``<run>/eval.json``)."""
    x, y = run.data.test.tensors
    texts = run.data.meta["texts"]["test"]
    report: dict[str, Any] = {"run": str(run.run_dir), "checkpoint": str(run.checkpoint), "examples": len(x),
                              "beam": beam, "alpha": alpha, "decoders": {}, "by_length": {}}
    methods = {"greedy": 1} | ({f"beam {beam} (alpha {alpha:g})": beam} if beam > 1 else {})
    for name, width in methods.items():
        decoded, rate = decode_all(run.model, x, width, alpha)
        correct = (decoded.tokens == y).all(dim=1)
        report["decoders"][name] = scores(run.model, decoded, y) | {"sentences_per_s": rate}
        report["by_length"][name] = by_length(texts, correct)
        analysis = error_analysis(run.model, x, y, decoded, alpha)
        report["decoders"][name] |= {k: analysis[k] for k in ("errors", "beam_faults", "model_faults")}
    for row in analysis["rows"]:  # rows of the widest decoder
        row["input"] = texts[row["index"]]
    report["error_analysis"] = analysis | {"decoder": name}
    return report


def print_report(report: dict[str, Any], console: Console, max_rows: int = 15) -> None:
    console.print(f"[bold]{Path(report['run']).name}[/]: {report['examples']} test dates, checkpoint {Path(report['checkpoint']).name}")
    width = console.width  # a pipe's is 80 unless COLUMNS says otherwise
    columns = ["decoder", "exact match", "char accuracy", "BLEU", "sentences/s"]
    rows = [[name, pct(s["exact_match"], 2), pct(s["char_accuracy"], 2), fixed(s["bleu"], 2), num(s["sentences_per_s"])]
            for name, s in report["decoders"].items()]
    _print_fitted(console, columns, rows, width, "test split")
    columns = ["input length", "dates", *report["by_length"]]
    by_decoder = list(report["by_length"].values())
    rows = [[label, str(n), *(pct(c[i][2], 2) for c in by_decoder)] for i, (label, n, _) in enumerate(by_decoder[0])]
    _print_fitted(console, columns, rows, width, "exact match by input length (characters)")
    ea = report["error_analysis"]
    columns = ["input", "expected y*", "output y_hat", "log P(y*|x)", "log P(y_hat|x)", "fault"]
    rows = [[repr(row["input"]), row["expected"], row["output"], f"{row['log_p_expected']:.3f}",
             f"{row['log_p_output']:.3f}", row["fault"]] for row in ea["rows"][:max_rows]]
    errors, dropped = fit_table(columns, rows, width,
                                title=f"error analysis ({ea['decoder']}): beam's fault or model's?",
                                drop_order=columns[4:2:-1], right=columns[3:5])
    console.print(errors)
    left = ([f"{len(ea['rows']) - max_rows} more rows"] if len(ea["rows"]) > max_rows else []) + \
        ([f"{', '.join(dropped)} (too wide for {width} columns)"] if dropped else [])
    if left:
        console.print(f"({' and '.join(left)} in eval.json)", highlight=False)
    for name, s in report["decoders"].items():
        console.print(f"{name}: errors {s['errors']} · beam at fault {s['beam_faults']} · model at fault {s['model_faults']}")
    for line in textwrap.wrap(f"→ {ea['advice']}", width, subsequent_indent="  "):
        console.print(line, highlight=False)


def plot_attention(run: Run, count: int = 4) -> list[Path]:
    """Heat maps of alpha<t,t'> (output character t vs input character t') for a few test dates."""
    if not hasattr(run.model, "score"):  # only the attention family has attention weights
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, _ = run.data.test.tensors
    texts = run.data.meta["texts"]["test"]
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    picks = [order[round(k * (len(order) - 1) / max(count - 1, 1))] for k in range(count)]  # short .. long
    decoded = greedy(run.model, x[picks])
    folder = run.run_dir / "attention"
    folder.mkdir(exist_ok=True)
    paths = []
    for k, i in enumerate(picks):
        source = list(texts[i])
        output = list(decode(decoded.tokens[k], run.model.vocab)) + ["<eos>"]
        alpha = decoded.attention[k, : len(output), : len(source)].numpy()
        fig, ax = plt.subplots(figsize=(0.32 * len(source) + 1.8, 0.32 * len(output) + 1.4))
        ax.imshow(alpha, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(source)), ["␣" if c == " " else c for c in source])
        ax.set_yticks(range(len(output)), output)
        ax.set(xlabel="input character", ylabel="output character", title=repr(texts[i]))
        fig.tight_layout()
        paths.append(folder / f"attention_{k}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def main(targets: list[str], beam: int, alpha: float, console: Console) -> int:
    """The ``dl-ray eval`` command of seq2seq runs (see :mod:`dl_ray.cli`)."""
    evaluate_runs(targets, beam, alpha, console)
    return 0


def evaluate_runs(targets: list[str | Path], beam: int, alpha: float, console: Console,
                  which: str = "best") -> list[dict[str, Any]]:
    """Decode each run's test split, print its report (and, for several runs, a comparison), write ``eval.json``."""
    if beam < 1:
        raise SpecError(f"--beam: must be an integer >= 1 (got {beam})")
    if alpha < 0:
        raise SpecError(f"--alpha: must be >= 0, typically 0.7 (got {alpha})")
    runs = [load_run(t, which) for t in targets]  # every target checked before any decoding
    reports = []
    for run in runs:
        with console.status(f"decoding {len(run.data.test)} test dates of {run.run_dir.name} ..."):
            report = evaluate(run, beam, alpha)
            pictures = plot_attention(run)
        (run.run_dir / "eval.json").write_text(json.dumps(report, indent=1))
        print_report(report, console)
        if pictures:
            for line in file_lines("attention heat maps", pictures):
                console.print(line, highlight=False, soft_wrap=True)
        reports.append(report)
    if len(reports) > 1:
        compare_lengths(reports, console)
    return reports


def compare_lengths(reports: list[dict[str, Any]], console: Console) -> None:
    """Exact match by input length, one column per run (the course: attention wins on long inputs)."""
    by_run = {Path(r["run"]).name: list(r["by_length"].values())[-1] for r in reports}
    labels = sorted({row[0] for c in by_run.values() for row in c}, key=lambda s: int(s.strip(">").split("-")[0]))
    rows = [[label, *(next((f"{pct(acc, 2)} ({n})" for lab, n, acc in c if lab == label), "-") for c in by_run.values())]
            for label in labels]
    _print_fitted(console, ["input length", *by_run], rows, console.width,
                  "exact match (dates) by input length, run against run, widest decoder")


def _print_fitted(console: Console, columns: list[str], rows: list[list[str]], width: int, title: str) -> None:
    """A table fitted to ``width`` (values whole, the first column kept), and what was left out, if anything."""
    table, dropped = fit_table(columns, rows, width, title=title, right=columns[1:])
    console.print(table)
    if dropped:
        for line in textwrap.wrap(f"({', '.join(dropped)}: too wide for {width} columns; in eval.json)", width):
            console.print(line, highlight=False)


# ---- decode-only Tune trials: `tune.trial: evaluate` with `evaluator: dl_ray.eval_seq2seq:decode`


class DecodeSettings(BaseModel):
    """What a decode trial may be given under ``settings.*`` in a sweep's space."""

    model_config = ConfigDict(extra="forbid")
    beam_width: int = Field(1, ge=1, le=64)
    """Beam width B; 1 = greedy search."""
    length_alpha: float = Field(0.7, ge=0, le=2)
    """Rank hypotheses by sum log P / T^alpha."""


@register_evaluator("decode", DecodeSettings)
def decode_trial(request: EvalRequest) -> dict[str, float]:
    """Greedy or beam search over a split of one checkpoint: exact match, char accuracy, BLEU, error analysis."""
    model, data = request.load()
    x, y = (t.to(request.device) for t in getattr(data, request.split).tensors)
    s = request.settings
    decoded, rate = decode_all(model, x, s.beam_width, s.length_alpha)
    analysis = error_analysis(model, x, y, decoded, s.length_alpha)
    metrics = scores(model, decoded, y) | {k: analysis[k] for k in ("errors", "beam_faults", "model_faults")}
    return {f"{request.split}/{k}": float(v) for k, v in (metrics | {"sentences_per_s": rate}).items()}
