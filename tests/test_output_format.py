"""Output that reads in an 80-column terminal: numbers, tables, epoch lines, `dl-ray list`, statuses (issue 15)."""
from __future__ import annotations

import json

import pytest
from rich.console import Console

from dl_ray import statuses
from dl_ray.fmt import fit_table, num, pct


def _render(renderable, width: int = 80) -> list[str]:
    console = Console(width=width, record=True, file=open("/dev/null", "w"), color_system=None)
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("x, text", [
    (1.1e-4, "1.1e-04"), (0.0032, "3.2e-03"), (0.975, "0.975"), (1.3416, "1.34"), (0.01, "0.01"),
    (123.45, "123"), (12345.6, "12346"), (2_000_000, "2e+06"), (2_500_000.0, "2.5e+06"), (2000, "2000"),
    (0, "0"), (-0.5, "-0.5"), (None, "-"), (True, "True"), ("cosine", "cosine")])
def test_num_keeps_significant_figures_and_switches_to_scientific(x, text):
    assert num(x) == text


def test_num_tells_apart_learning_rates_that_fixed_width_truncation_merged():
    assert num(1.1e-4) != num(3.2e-3) and num(1.1e-4)[:3] != num(3.2e-3)[:3]


def test_pct_has_one_width_for_one_two_and_three_digit_percentages():
    assert [pct(x) for x in (0.099, 0.1, 1.0)] == ["  9.9 %", " 10.0 %", "100.0 %"]


def test_fit_table_drops_whole_columns_and_never_cuts_a_value():
    columns = ["trial", "lr", "weight_decay", "dropout", "val/accuracy", "val/loss", "status", "train/loss_of_run"]
    rows = [[f"trial_{i:05d}", num(1.1e-4 * (i + 1)), num(3.2e-3), "0.1", "0.975", "0.0823", statuses.COMPLETED,
             "1.23"] for i in range(4)]
    table, dropped = fit_table(columns, rows, 80, title="sweep", right=columns[1:6])
    lines = _render(table)
    assert max(map(len, lines)) <= 80
    assert dropped == ["train/loss_of_run"]
    text = "\n".join(lines)
    assert "…" not in text
    for row in rows:
        for value in row[:-1]:
            assert value in text
    assert "weight_" in text and "decay" in text  # the header broke at its separator instead of being cut


def test_fit_table_keeps_everything_when_it_fits():
    table, dropped = fit_table(["a", "b"], [["1", "2"]], 80)
    assert dropped == [] and len(table.columns) == 2


def test_status_fields_speak_one_vocabulary():
    assert statuses.status_fields(statuses.COMPLETED) == {"status": "completed"}
    assert statuses.status_fields(statuses.STOPPED, statuses.EARLY_STOPPING) == {
        "status": "stopped", "stop_reason": "early stopping"}
    with pytest.raises(ValueError):
        statuses.status_fields("finished")
    with pytest.raises(ValueError):
        statuses.status_fields(statuses.STOPPED)
    assert statuses.describe({"status": "stopped", "stop_reason": "interrupted"}) == "stopped (interrupted)"


# ---- training output: epoch lines, the report, picture paths

def _epoch(epoch: int, acc: float, loss: float = 0.1234) -> dict:
    return {"epoch": epoch, "train/loss": loss, "train/accuracy": acc, "val/loss": loss, "val/accuracy": acc,
            "lr": 1e-3, "time/epoch_s": 0.8, "perf/train_samples_per_s": 5000.0}


def _follow(events: list[dict], epochs: int) -> list[str]:
    """What the real progress printer writes to an 80-column (non-terminal) console for these epoch events."""
    import queue
    import threading

    from dl_ray.train.progress import follow

    sink: queue.Queue = queue.Queue()
    sink.put({"kind": "batch", "epoch": 1, "epochs": epochs, "step": 1, "steps": 1})
    for metrics in events:
        sink.put({"kind": "epoch", "metrics": metrics})
    done = threading.Event()
    done.set()  # follow drains the queue, then returns
    console = Console(width=80, record=True, file=open("/dev/null", "w"), color_system=None)
    follow(sink, done, console)
    return console.export_text().splitlines()


def test_epoch_lines_fit_80_columns_and_do_not_shift_at_10_or_100_percent():
    lines = _follow([_epoch(1, 0.099), _epoch(2, 0.1, loss=12.3456), _epoch(100, 1.0, loss=0.00012)], epochs=100)
    header, rows = lines[0], lines[1:]
    assert len(rows) == 3 and all(len(line) <= 80 for line in lines), lines
    assert len({len(r) for r in rows + [header]}) == 1  # right-aligned columns of fixed width
    for value in ("  9.9 %", " 10.0 %", "100.0 %"):
        assert sum(value in r for r in rows) == 1
    ends = [[i for i, c in enumerate(r) if c == "%"] for r in rows]
    assert ends[0] == ends[1] == ends[2]  # every percent sign in the same column
    assert "train loss" in header and "val acc" in header and "lr" in header
    assert rows[0].startswith("epoch   1/100") and "1.2e-04" in rows[2]


def test_epoch_lines_leave_out_metrics_that_do_not_fit_rather_than_overflow():
    metrics = _epoch(1, 0.5) | {f"{split}/{name}": 0.5 for split in ("train", "val")
                                 for name in ("exact_match", "char_accuracy", "bleu", "perplexity")}
    lines = _follow([metrics], epochs=30)
    assert all(len(line) <= 80 for line in lines), lines
    assert "train loss" in lines[0] and "val acc" in lines[0]  # loss and accuracy first


def _summary(final: dict, **extra) -> dict:
    return {"status": "completed", "epochs_run": 30, "best_epoch": 27, "best_metric": 0.0591, "task": "multiclass",
            "kind": "supervised", "final": final, **extra}


def _final(**metrics) -> dict:
    return {f"{split}/{name}": value[i] for name, value in metrics.items()
            for i, split in enumerate(("train_eval", "val", "test"))}


def test_report_fits_80_columns(tmp_path):
    from dl_ray.report import print_report

    summary = _summary(_final(loss=(0.0091, 0.0591, 0.0715), accuracy=(0.997, 0.98, 0.984)))
    lines = _render_with(print_report, summary, tmp_path / "runs" / ("a_rather_long_run_name_" * 2), )
    assert all(len(line) <= 80 for line in lines), lines
    text = "\n".join(lines)
    assert "bias/variance: train error 0.30 %" in text and "high variance" in text
    assert "0.9970" in text and "0.0715" in text


def test_report_of_many_metrics_drops_columns_not_values(tmp_path):
    from dl_ray.report import print_report

    names = ("loss", "neg_elbo", "recon", "kl", "judge_confidence", "judge_min_class", "mean_activation")
    summary = _summary(_final(**{n: (0.123456 + i, 12.3456 + i, 1.2e-4 * (i + 1)) for i, n in enumerate(names)}),
                       kind="vae", task="images")
    lines = _render_with(print_report, summary, tmp_path)
    assert all(len(line) <= 80 for line in lines), lines
    text = "\n".join(lines)
    assert "…" not in text and "left out to fit 80 columns: mean_activation" in text
    assert "elbo" in text and "12.3456" in text and "1.2e-04" in text  # the task's first metrics stay


def test_seq2seq_report_shows_accuracy_and_exact_match_once(tmp_path):
    """A seq2seq model's accuracy is its greedy exact match: one column, named both ways."""
    from dl_ray.report import final_table

    final = _final(loss=(0.1, 0.2, 0.3), accuracy=(0.99, 0.95, 0.94), exact_match=(0.99, 0.95, 0.94),
                   char_accuracy=(0.999, 0.99, 0.98))
    table, dropped = final_table(_summary(final, task="seq2seq"))
    headers = [str(c.header) for c in table.columns]
    assert headers == ["split", "loss", "accuracy = exact_match", "char_accuracy"] and not dropped
    assert sum("0.9500" in line for line in _render(table)) == 1
    final["test/exact_match"] = 0.93  # not the same figures: two columns
    table, _ = final_table(_summary(final, task="seq2seq"))
    assert [str(c.header) for c in table.columns][2:4] == ["accuracy", "exact_match"]


def test_picture_paths_are_relative_and_wrapped_between_names(tmp_path, monkeypatch):
    from dl_ray.fmt import file_lines

    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "dates_attention_with_a_long_name" / "attention"
    pictures = [folder / f"attention_{i}.png" for i in range(8)]
    lines = file_lines("attention heat maps", pictures)
    assert lines[0] == "attention heat maps in runs/dates_attention_with_a_long_name/attention/:"
    assert all(len(line) <= 80 for line in lines) and len(lines) == 3
    assert " ".join(lines[1:]).split() == [p.name for p in pictures]
    assert file_lines("pictures", [tmp_path / "a.png"]) == ["pictures: a.png"]


def _render_with(printer, *args) -> list[str]:
    console = Console(width=80, record=True, file=open("/dev/null", "w"), color_system=None)
    printer(*args, console)
    return console.export_text().splitlines()


# ---- dl-ray list

def test_list_is_one_line_per_name_within_80_columns(capsys):
    from dl_ray.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines)
    names = [line.split()[0] for line in lines if line.startswith("  ")]
    for name in ("lenet5", "mlp", "seq2seq", "mnist5k", "digits", "dates", "gradient_flow"):
        assert names.count(name) == 1
    assert len(lines) < 90  # 216 before: fields run together with the names


def test_list_name_shows_each_field_on_its_own_line(capsys):
    from dl_ray.cli import main

    assert main(["list", "lenet5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[0].startswith("lenet5 (model of kind supervised): LeNet-5")
    assert "  pooling: Literal['max', 'avg'] = 'max'" in lines
    doc = lines[lines.index("  pooling: Literal['max', 'avg'] = 'max'") + 1]
    assert doc.startswith("      Subsampling")


def test_list_of_an_unknown_name_is_one_line_naming_the_known_ones(capsys):
    from dl_ray.cli import main

    assert main(["list", "lenet"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1
    assert "unknown name 'lenet'" in err and "lenet5" in err and "mnist5k" in err


# ---- what a rerun does, and what --dry-run says it would do

def test_rerun_of_a_finished_run_says_it_only_reports_and_dry_run_says_where_it_goes(tmp_path, capsys, monkeypatch):
    from dl_ray.cli import main
    from tests.conftest import write_job

    monkeypatch.chdir(tmp_path)
    job = write_job(tmp_path, "tiny", model={"name": "mlp", "hidden": [8]}, data={"name": "digits"},
                    training={"epochs": 1})
    assert main(["train", str(job), "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "# run folder runs/tiny: new run, from epoch 1"
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    assert "run folder runs/tiny: new run, from epoch 1" in out
    assert all(len(line) <= 80 for line in out.splitlines()), out
    summary = json.loads((tmp_path / "runs/tiny/summary.json").read_text())
    assert summary["status"] == statuses.COMPLETED and "stop_reason" not in summary

    assert main(["train", str(job), "--dry-run"]) == 0
    finished = "run folder runs/tiny: finished: reporting epoch 1 of 1 (nothing to train)"
    assert capsys.readouterr().out.splitlines()[-1] == f"# {finished}"
    assert main(["train", str(job)]) == 0
    out = capsys.readouterr().out
    assert finished in out and "resuming" not in out
    assert main(["train", str(job), "--set", "training.epochs=3", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "# run folder runs/tiny: resuming from checkpoint_epoch_0001 (epoch 1 of 3 done)")


def test_an_interrupted_run_says_so_in_its_summary_unless_it_had_finished(tmp_path):
    from dl_ray.train import checkpoints
    from dl_ray.train.runner import note_interrupted, start_plan

    for epoch in (1, 2):
        folder = tmp_path / checkpoints.dir_name(epoch)
        folder.mkdir()
        (folder / checkpoints.STATE).write_bytes(b"")
    note_interrupted(tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["status"], summary["stop_reason"], summary["epochs_run"]) == ("stopped", "interrupted", 2)
    assert start_plan(tmp_path, 5).startswith("resuming from checkpoint_epoch_0002")
    finished = {"status": "completed", "epochs_run": 2, "final": {"test/loss": 0.1}}
    (tmp_path / "summary.json").write_text(json.dumps(finished))
    note_interrupted(tmp_path)  # only the report of a finished run was interrupted
    assert json.loads((tmp_path / "summary.json").read_text()) == finished
    stopped = {"status": "stopped", "stop_reason": "early stopping", "epochs_run": 2, "final": {"test/loss": 0.1}}
    (tmp_path / "summary.json").write_text(json.dumps(stopped))
    assert start_plan(tmp_path, 5) == "finished: early stopping at epoch 2 of 5; reporting (nothing to train)"


def test_bias_variance_of_a_regression_fits_80_columns():
    from dl_ray.report import bias_variance

    lines = bias_variance(_final(loss=(0.4567, 12.3456, 1.0)), "regression").splitlines()
    assert lines[0] == "bias/variance: train error 0.4567 · val error 12.3456 · gap 11.8889 (loss)"
    assert lines[1].startswith("  → high variance") and all(len(line) <= 80 for line in lines)


def test_seq2seq_eval_report_fits_80_columns_without_cutting_dates():
    from dl_ray.eval_seq2seq import advice, print_report

    decoders = {name: {"exact_match": 0.95, "char_accuracy": 0.99, "bleu": 97.5, "sentences_per_s": 1234.0,
                       "errors": 3, "beam_faults": 1, "model_faults": 2} for name in ("greedy", "beam 3 (alpha 0.7)")}
    rows = [{"input": "Tuesday, September 5, 1989", "expected": "1989-09-05", "output": "1989-09-15",
             "log_p_expected": -3.25, "log_p_output": -0.125, "fault": "model"}] * 3
    report = {"run": "runs/dates_attention", "checkpoint": "runs/dates_attention/checkpoint_epoch_0012",
              "examples": 500, "decoders": decoders,
              "by_length": {name: [("1-10", 100, 0.99), (">30", 20, 0.9)] for name in decoders},
              "error_analysis": {"decoder": "beam 3 (alpha 0.7)", "rows": rows, "advice": advice(3, 1)}}
    lines = _render_with(print_report, report)
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert text.count("'Tuesday, September 5, 1989'") == 3 and "1989-09-15" in text  # whole values
    assert "(log P(y_hat|x) (too wide for 80 columns) in eval.json)" in text
    assert "y_hat" in text  # a header breaks at its spaces before its underscores


def test_epoch_lines_show_validation_metrics_when_training_reports_only_its_loss():
    metrics = {"epoch": 1, "train/loss": 2.5, "val/loss": 2.4, "val/analogy": 0.25, "val/wordsim353": 0.5,
               "lr": 0.05, "time/epoch_s": 12.5}
    header, row = _follow([metrics], epochs=5)
    assert header.split() == ["train", "loss", "val", "loss", "val", "analogy", "val", "wordsim353", "lr", "time"]
    assert row.split() == ["epoch", "1/5", "2.5000", "2.4000", "0.2500", "0.5000", "5.0e-02", "12.5", "s"]


# ---- dl-ray eval tables: the confusion matrix, exact match by length, run against run

def _confusion_report(classes: int, diagonal: int, names=None) -> dict:
    confusion = [[diagonal if i == j else (i * j) % 13 for j in range(classes)] for i in range(classes)]
    support = [sum(row) for row in confusion]
    return {"classes": names or [str(c) for c in range(classes)], "confusion": confusion, "support": support,
            "per_class_accuracy": [confusion[c][c] / support[c] for c in range(classes)]}


@pytest.mark.parametrize("diagonal, left_out", [(98, None), (980, "examples")])
def test_a_ten_class_confusion_matrix_fits_80_columns_with_every_count_whole(diagonal, left_out):
    from dl_ray.eval_supervised import confusion_table

    report = _confusion_report(10, diagonal)
    table, note = confusion_table(report, 80)
    lines = _render(table)
    assert max(map(len, lines)) <= 80 and "…" not in "\n".join(lines), "\n".join(lines)
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    assert [r[0] for r in rows] == report["classes"]
    for r, counts, accuracy in zip(rows, report["confusion"], report["per_class_accuracy"]):
        assert r[1:11] == [str(c) if c else "·" for c in counts] and r[-1] == pct(accuracy, 2).strip()
        assert (r[11] == str(sum(counts))) == (left_out is None)
    assert (note is None) == (left_out is None) and (left_out or "") in (note or "")


def test_a_confusion_matrix_too_wide_for_the_terminal_becomes_one_row_per_class():
    from dl_ray.eval_supervised import confusion_table

    report = _confusion_report(14, 98, names=[f"class_{c}" for c in range(14)])
    table, note = confusion_table(report, 80)
    lines = _render(table)
    assert max(map(len, lines)) <= 80 and note is None, "\n".join(lines)
    assert "test accuracy by class" in lines[0]
    assert [str(c.header) for c in table.columns] == ["true", "examples", "accuracy", "most often taken for"]
    assert sum(line.startswith("│ class_") for line in lines) == 14


def test_seq2seq_run_against_run_table_keeps_values_whole_and_names_the_runs_left_out():
    from dl_ray.eval_seq2seq import compare_lengths

    buckets = [("1-10", 100, 0.99), ("11-15", 1000, 1.0), (">30", 20, 0.9)]
    reports = [{"run": f"runs/dates_{kind}_attention_long_name", "by_length": {"greedy": buckets}}
               for kind in ("no", "bahdanau", "luong", "gru", "lstm")]
    lines = _render_with(compare_lengths, reports)
    assert max(map(len, lines)) <= 80 and "…" not in "\n".join(lines), "\n".join(lines)
    rows = [line for line in lines if line.startswith("│")]
    assert all(row.count("100.00 % (1000)") == 3 for row in rows if "11-15" in row)
    text = " ".join(lines)
    assert "dates_lstm_attention_long_name" in text and "too wide for 80 columns" in text


def test_dqn_progress_lines_fit_80_columns_at_atari_scale(tmp_path):
    from dl_ray.rl.outputs import RunFolder
    from dl_ray.rl.progress import RunLog
    from dl_ray.rl.spec import load_rl_spec

    spec = load_rl_spec("jobs/rl/dqn_pong.yaml", [f"storage.path={tmp_path}"])
    out = Console(record=True, width=80)
    log = RunLog(spec, out, RunFolder(spec), {"env_steps": 1_999_872, "episodes": 12_345, "actor_restarts": 0}, 0)
    log.returns.extend([-20.4] * 10)
    log.epsilons = {0: 0.01}
    log.mark = (log.mark[0] - 10, 1_979_872, 1_598_400)  # 10 s since the last row: 2,000 env steps, 160 updates a second
    spec.run_dir.mkdir(parents=True)
    log.row(updates=1_600_000)
    line = out.export_text().rstrip("\n")
    assert "\n" not in line and len(line) <= 80, line
    assert line.startswith("2.00M steps  return -20.4  12.3k ep  ε 0.010"), line
