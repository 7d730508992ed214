"""A small attention model trained through the generic Ray Train loop, then `dl-ray eval` on its run."""
from __future__ import annotations

import csv
import json

import pytest
import yaml

from tests.conftest import cli, write_job

pytestmark = pytest.mark.slow  # trains a seq2seq model (a new process), then a Ray Tune sweep

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dates")
    job = write_job(
        folder, "dates_small",
        model={"name": "attention_seq2seq", "encoder_hidden": 32, "decoder_hidden": 64, "attention": 32},
        data={"name": "dates", "num_examples": 5000, "val_fraction": 0.05, "test_fraction": 0.1},
        optimizer={"name": "adam", "lr": 0.003}, schedule={"name": "cosine", "min_lr": 0.0001},
        training={"epochs": 5, "batch_size": 64, "grad_clip": 1.0, "seed": 0},
    )
    code, out, err = cli("train", str(job))
    assert code == 0, err
    return job, folder / "runs" / "dates_small", out


def test_attention_model_learns_dates_through_the_loop(trained):
    _, run_dir, out = trained
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5
    first, last = rows[0], rows[-1]
    exact = float(last["test/exact_match"])  # real greedy decoding of ~500 dates in forms never trained on
    assert exact >= 0.8, f"held-out-form exact match {exact:.3f} after 5 epochs on ~4,250 dates"
    assert float(last["val/exact_match"]) > float(first["val/exact_match"])
    assert float(last["test/char_accuracy"]) >= exact
    assert "exact_match" in out and "test" in out


def test_eval_prints_scores_length_table_and_error_analysis(trained):
    job, run_dir, _ = trained
    code, out, err = cli("eval", str(job), "--beam", "3")  # a job file finds its run folder
    assert code == 0, err
    for text in ("greedy", "beam 3 (alpha 0.7)", "BLEU", "exact match by input length",
                 "error analysis", "log P(y*|x)", "beam at fault", "model at fault", "→"):
        assert text in out, text
    report = json.loads((run_dir / "eval.json").read_text())
    greedy = report["decoders"]["greedy"]
    with (run_dir / "metrics.csv").open() as f:
        logged = float(list(csv.DictReader(f))[-1]["test/exact_match"])
    assert greedy["exact_match"] == pytest.approx(logged, abs=1e-9)  # the loop and eval decode alike
    analysis = report["error_analysis"]
    wrong = round((1 - report["decoders"]["beam 3 (alpha 0.7)"]["exact_match"]) * report["examples"])
    assert analysis["errors"] == wrong > 0 and analysis["beam_faults"] + analysis["model_faults"] == wrong
    for row in analysis["rows"]:  # beam's fault exactly when the model prefers y* (length-normalised)
        gold = row["log_p_expected"] / (len(row["expected"]) + 1) ** 0.7
        hyp = row["log_p_output"] / (len(row["output"]) + 1) ** 0.7
        assert row["fault"] == ("beam" if gold > hyp else "model")
    assert len(list((run_dir / "attention").glob("attention_*.png"))) == 4


def test_eval_refuses_bad_input(trained, tmp_path):
    _, run_dir, _ = trained
    code, _, err = cli("eval", str(tmp_path / "nowhere"))
    assert code == 2 and "no such run folder or job file" in err
    code, _, err = cli("eval", str(run_dir), "--beam", "0")
    assert code == 2 and "--beam" in err
    code, _, err = cli("eval", str(tmp_path))
    assert code == 2 and "no spec.yaml" in err


def test_decode_only_sweep_scores_the_checkpoint_without_retraining(trained, tmp_path):
    """`dl-ray tune` with decode trials (jobs/sweeps/dates_attention_beam.yaml's kind) on the trained run."""
    _, run_dir, _ = trained
    sweep = tmp_path / "beam.yaml"
    sweep.write_text(yaml.safe_dump({
        "kind": "sweep", "name": "beam", "tracking": {"wandb": "disabled"}, "storage": {"path": str(tmp_path / "runs")},
        "tune": {"trial": "evaluate", "checkpoint": str(run_dir), "evaluator": "dl_ray.eval_seq2seq:decode",
                 "split": "test", "metric": "test/exact_match", "search": "grid", "num_samples": 1,
                 "space": {"settings.beam_width": {"grid": [1, 3]}, "settings.length_alpha": {"grid": [0.7]}}}}))
    code, _, err = cli("tune", str(sweep))
    assert code == 0, err
    with (tmp_path / "runs" / "beam" / "results.csv").open() as f:
        by_width = {int(r["settings.beam_width"]): float(r["test/exact_match"]) for r in csv.DictReader(f)}
    if not (run_dir / "eval.json").is_file():  # the eval test above writes it (same checkpoint)
        assert cli("eval", str(run_dir), "--beam", "3")[0] == 0
    report = json.loads((run_dir / "eval.json").read_text())
    assert by_width[1] == pytest.approx(report["decoders"]["greedy"]["exact_match"], abs=1e-9)
    assert by_width[3] == pytest.approx(report["decoders"]["beam 3 (alpha 0.7)"]["exact_match"], abs=1e-9)
    assert not list((tmp_path / "runs" / "beam").glob("**/metrics.csv"))  # nothing was trained
    code, _, err = cli("tune", str(sweep), "--set", "tune.space.settings.beam_width={grid: [0, 3]}", "--dry-run")
    assert code == 2 and "beam_width" in err
