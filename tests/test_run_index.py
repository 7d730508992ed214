"""``dl-ray runs`` / ``dl-ray runs compare``: run folders of every kind listed in 80 columns, compared, bad paths refused.

The fast tests build run folders with the writers the runs themselves use (``History``, ``write_summary``); the slow
one lists and compares two runs that really trained.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from dl_ray.cli import main
from dl_ray.fmt import num
from dl_ray.tracking import History, write_summary
from tests.conftest import cli, write_job
from tests.buckets import s3, s3_server  # noqa: F401 - the moto S3 server fixtures (helper C's)

HOUR = 3600


def make_run(root: Path, name: str, kind: str = "supervised", rows=(), summary=None, age_s: float = 0,
             spec_extra=None) -> Path:
    """A run folder as a run leaves it: spec.yaml at the start, metrics.csv per epoch, summary.json at the end;
    every file dated ``age_s`` ago."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": name, "kind": kind, **(spec_extra or {})}))
    history = History(folder / "metrics.csv")
    for row in rows:
        history.append(dict(row))
    if summary is not None:
        write_summary(folder, summary)
    stamp = time.time() - age_s
    for path in folder.iterdir():
        os.utime(path, (stamp, stamp))
    return folder


def epochs(val_acc: list[float], val_loss: list[float]) -> list[dict]:
    return [{"epoch": i + 1, "train/loss": 2 * loss, "val/loss": loss, "val/accuracy": acc}
            for i, (acc, loss) in enumerate(zip(val_acc, val_loss))]


def finished(final: dict, status="completed", **extra) -> dict:
    return {"status": status, "kind": "supervised", "final": final, **extra}


@pytest.fixture
def runs(tmp_path) -> Path:
    root = tmp_path / "runs"
    make_run(root, "mnist_lenet_with_a_long_name", rows=epochs([0.91, 0.95], [0.4, 0.2]), age_s=5 * HOUR,
             summary=finished({"val/accuracy": 0.9512, "test/accuracy": 0.94871, "val/loss": 0.2}))
    make_run(root, "char_lm", kind="language_model", rows=[{"epoch": 1, "val/bpc": 2.5, "val/loss": 1.7}],
             age_s=4 * HOUR, summary={"status": "stopped", "stop_reason": "early stopping", "kind": "language_model",
                                      "final": {"val/bpc": 2.1307, "val/loss": 1.47, "test/bpc": 1.944}})
    make_run(root, "pong", kind="dqn", rows=[{"env_steps": 10000, "episodic_return": -20.0}], age_s=3 * HOUR,
             summary={"status": "finished", "kind": "dqn", "eval/return_mean": -20.5, "time_s": 61.0})
    make_run(root, "killed", rows=epochs([0.5], [1.2]), age_s=2 * HOUR)  # no summary, silent for 2 h
    make_run(root, "training_now", rows=epochs([0.6, 0.7], [1.0, 0.8]), age_s=60)
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("hello")
    return root


def table(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(the headers, {first cell: the other cells}) of a rich table as printed (headers may break over lines)."""
    head = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if line.startswith("┃")]
    headers = ["".join(parts) for parts in zip(*head)]
    body = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    return headers, {row[0]: row[1:] for row in body}


def run_cli(capsys, monkeypatch, *args: str, columns: int = 80) -> tuple[int, list[str], str]:
    monkeypatch.setenv("COLUMNS", str(columns))
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


def test_runs_lists_every_kind_one_line_each_in_80_columns(runs, capsys, monkeypatch):
    code, lines, err = run_cli(capsys, monkeypatch, "runs", str(runs))
    assert code == 0, err
    header, body = lines[0], lines[1:]
    assert header.split()[:3] == ["run", "kind", "status"] and "key metric" in header
    names = [line.split()[0] for line in body]
    assert names == ["mnist_lenet_with_a_long_name", "char_lm", "pong", "killed", "training_now"]  # oldest first
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    by_name = {line.split()[0]: line.split() for line in body}
    assert by_name["mnist_lenet_with_a_long_name"][1:3] == ["supervised", "completed"]
    assert f"val/accuracy {num(0.9512)}" in " ".join(by_name["mnist_lenet_with_a_long_name"])
    assert by_name["char_lm"][1:3] == ["language_model", "stopped"] and "val/bpc 2.13" in " ".join(by_name["char_lm"])
    assert by_name["pong"][1:3] == ["dqn", "completed"]  # an RL run's old "finished" in the shared vocabulary
    assert "eval/return_mean -20.5" in " ".join(by_name["pong"])
    assert by_name["killed"][2] == "stopped"  # no summary and nothing written for 2 h: it did not finish
    assert by_name["training_now"][2] == "running" and "val/accuracy 0.7" in " ".join(by_name["training_now"])


def test_a_wide_terminal_also_shows_the_test_figure_and_start_time(runs, capsys, monkeypatch):
    code, lines, _ = run_cli(capsys, monkeypatch, "runs", str(runs), columns=200)
    assert code == 0 and "started" in lines[0]
    lenet = next(line for line in lines if line.startswith("mnist_lenet"))
    assert f"val/accuracy {num(0.9512)} test {num(0.94871)}" in lenet
    started = time.strftime("%m-%d %H:%M", time.localtime(time.time() - 5 * HOUR))
    assert started in lenet and "5h00m" not in lenet  # took: from spec.yaml to summary.json, both written then


def test_a_rerun_of_a_finished_run_is_running_again(tmp_path, capsys, monkeypatch):
    folder = make_run(tmp_path, "extended", rows=epochs([0.9], [0.3]), summary=finished({"val/accuracy": 0.9}),
                      age_s=HOUR)
    (folder / "spec.yaml").write_text(yaml.safe_dump({"name": "extended"}))  # restarted now: spec.yaml rewritten
    code, lines, _ = run_cli(capsys, monkeypatch, "runs", str(tmp_path))
    assert code == 0 and lines[1].split()[:3] == ["extended", "supervised", "running"]


def test_a_sweep_shows_its_best_trial_and_its_folder_lists_the_trials(tmp_path, capsys, monkeypatch):
    sweep = tmp_path / "runs" / "lr_sweep"
    sweep.mkdir(parents=True)
    (sweep / "sweep.yaml").write_text(yaml.safe_dump({"job": {"name": "lr_sweep"}, "tune": {"metric": "val/loss"}}))
    (sweep / "results.csv").write_text("trial,status,val/loss\nlr_sweep_00000,completed,0.31\n"
                                       "lr_sweep_00001,early_stopped,0.52\nlr_sweep_00002,completed,0.27\n")
    for i, loss in enumerate((0.31, 0.52, 0.27)):
        make_run(sweep, f"lr_sweep_{i:05d}", rows=epochs([0.9], [loss]), summary=finished({"val/loss": loss}))
    code, lines, _ = run_cli(capsys, monkeypatch, "runs", str(tmp_path / "runs"))
    assert code == 0 and len(lines) == 2
    assert lines[1].split()[:3] == ["lr_sweep", "sweep", "completed"] and "best val/loss 0.27 of 3" in lines[1]
    code, lines, _ = run_cli(capsys, monkeypatch, "runs", str(sweep))
    assert code == 0 and [line.split()[0] for line in lines[1:]] == [f"lr_sweep_{i:05d}" for i in range(3)]


def test_a_file_uri_lists_what_the_path_lists(runs, capsys, monkeypatch):
    _, by_path, _ = run_cli(capsys, monkeypatch, "runs", str(runs))
    code, by_uri, err = run_cli(capsys, monkeypatch, "runs", runs.as_uri())
    assert code == 0, err
    assert by_uri == by_path


def test_compare_tables_the_chosen_metrics_and_overlays_their_curves(runs, tmp_path, capsys, monkeypatch):
    other = make_run(runs, "lenet_b", rows=epochs([0.8, 0.85, 0.88], [0.6, 0.5, 0.45]),
                     summary=finished({"val/accuracy": 0.88, "test/accuracy": 0.87, "val/loss": 0.45}))
    png = tmp_path / "out" / "cmp.png"
    code, lines, err = run_cli(capsys, monkeypatch, "runs", "compare", str(runs / "mnist_lenet_with_a_long_name"),
                               str(other), "--metrics", "val/loss,test/accuracy,train/loss", "--out", str(png))
    assert code == 0, err
    assert all(len(line) <= 80 for line in lines[:-1]), "\n".join(lines)  # the last: a path, never cut
    headers, cells = table(lines)
    assert headers == ["run", "status", "val/loss", "test/accuracy", "train/loss"]
    # summary figures where the run has them, else the last metrics.csv value (train/loss of the last epoch)
    assert cells["mnist_lenet_with_a_long_name"] == ["completed", num(0.2), num(0.94871), num(0.4)]
    assert cells["lenet_b"] == ["completed", num(0.45), num(0.87), num(0.9)]
    assert lines[-1] == f"curves of val/loss, train/loss: {png}"  # test/accuracy: one figure per run, no curve
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[1] > 2 * matplotlib.image.imread(png).shape[0]  # two panels side by side


def test_compare_defaults_to_the_headline_metric_on_val_and_test_and_the_val_loss(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, lines, err = run_cli(capsys, monkeypatch, "runs", "compare", str(runs / "mnist_lenet_with_a_long_name"),
                               str(runs / "training_now"))
    assert code == 0, err
    headers, cells = table(lines)
    assert headers == ["run", "status", "val/accuracy", "test/accuracy", "val/loss"]
    assert cells["training_now"] == ["running", "0.7", "-", "0.8"]  # no summary yet: its last epoch, no test figure
    assert lines[-1] == f"curves of val/accuracy, val/loss: {tmp_path / 'runs_compare.png'}"
    assert (tmp_path / "runs_compare.png").is_file()


def test_a_bucket_lists_and_compares_what_the_same_folders_hold_on_disk(runs, s3, tmp_path, capsys, monkeypatch):
    from pyarrow import fs

    s3fs = fs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    fs.copy_files(str(runs), f"{s3}/runs", source_filesystem=fs.LocalFileSystem(), destination_filesystem=s3fs)
    # The copy dates every object by its upload, in no set order; a run writes its summary after its spec (a summary
    # older than the spec is the attempt before), so the summaries go again, last.
    for summary in runs.glob("*/summary.json"):
        fs.copy_files(str(summary), f"{s3}/runs/{summary.parent.name}/summary.json",
                      source_filesystem=fs.LocalFileSystem(), destination_filesystem=s3fs)
    _, on_disk, _ = run_cli(capsys, monkeypatch, "runs", str(runs), columns=200)
    code, in_bucket, err = run_cli(capsys, monkeypatch, "runs", f"s3://{s3}/runs", columns=200)
    assert code == 0, err

    def by_name(lines: list[str]) -> dict[str, tuple[str, str, str]]:
        at = lines[0].index("key metric")
        return {line.split()[0]: (line.split()[1], line.split()[2], line[at:]) for line in lines[1:]}

    # the same runs, kinds and metrics; the upload dated every object now, so the silent run counts as running again
    disk, bucket = by_name(on_disk), by_name(in_bucket)
    assert bucket == disk | {"killed": ("supervised", "running", disk["killed"][2])}
    code, lines, err = run_cli(capsys, monkeypatch, "runs", "compare", f"s3://{s3}/runs/mnist_lenet_with_a_long_name",
                               f"s3://{s3}/runs/training_now", "--out", str(tmp_path / "b.png"))
    assert code == 0 and table(lines)[1]["training_now"] == ["running", "0.7", "-", "0.8"], err
    code, _, err = run_cli(capsys, monkeypatch, "runs", f"s3://{s3}-missing/runs")
    assert code == 2 and err.strip() == f"error: runs: the bucket '{s3}-missing' of s3://{s3}-missing/runs does not exist; create it or fix the name"


@pytest.mark.parametrize("args, message", [
    (("runs", "{tmp}/nowhere"), "error: runs: no such folder: {tmp}/nowhere"),
    (("runs", "{tmp}/runs/pong/spec.yaml"), "error: runs: {tmp}/runs/pong/spec.yaml is a file; give a run folder or the folder holding runs"),
    (("runs", "ftp2://bucket/runs"), "error: runs: cannot read ftp2://bucket/runs: Unrecognized filesystem type in URI: ftp2://bucket/runs"),
    (("runs", "compare", "{tmp}/runs/pong"), "error: runs compare: give two or more run folders, e.g. dl-ray runs compare runs/a runs/b"),
    (("runs", "compare", "{tmp}/runs/pong", "{tmp}/runs/not_a_run"),
     "error: runs compare: {tmp}/runs/not_a_run is not a run folder (no spec.yaml, sweep.yaml, summary.json, job.log)"),
    (("runs", "{tmp}/runs", "--metrics", "val/loss"), "error: --metrics: only for `dl-ray runs compare A B ...`"),
])
def test_bad_paths_are_one_line_exit_2_and_nothing_is_written(runs, capsys, monkeypatch, args, message):
    tmp = str(runs.parent)
    monkeypatch.chdir(tmp)
    code, out, err = run_cli(capsys, monkeypatch, *(a.format(tmp=tmp) for a in args))
    assert code == 2 and err.strip() == message.format(tmp=tmp) and not out
    assert not (runs.parent / "runs_compare.png").exists()


@pytest.mark.slow
def test_two_trained_runs_are_listed_and_compared(tmp_path):
    digits = {"model": {"name": "mlp", "hidden": [32]}, "data": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 128}}
    for name, lr in (("fast", 0.01), ("slow", 0.0003)):
        job = write_job(tmp_path, name, optimizer={"name": "adam", "lr": lr}, **digits)
        code, _, err = cli("train", str(job))
        assert code == 0, err
    summaries = {n: json.loads((tmp_path / "runs" / n / "summary.json").read_text()) for n in ("fast", "slow")}
    code, out, err = cli("runs", str(tmp_path / "runs"))
    assert code == 0, err
    for name, summary in summaries.items():
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert line.split()[1:3] == ["supervised", "completed"]
        assert f"val/accuracy {num(summary['final']['val/accuracy'])} test {num(summary['final']['test/accuracy'])}" in line
    code, out, err = cli("runs", "compare", str(tmp_path / "runs" / "fast"), str(tmp_path / "runs" / "slow"),
                         "--out", str(tmp_path / "cmp.png"))
    assert code == 0 and (tmp_path / "cmp.png").is_file(), err
    assert summaries["fast"]["final"]["val/accuracy"] > summaries["slow"]["final"]["val/accuracy"]  # 30x the lr, 3 epochs


def test_a_style_transfer_run_shows_its_final_cost(tmp_path, capsys, monkeypatch):
    run = tmp_path / "style"
    run.mkdir()
    (run / "spec.yaml").write_text(yaml.safe_dump({"name": "style", "kind": "style_transfer"}))
    write_summary(run, {"status": "completed", "kind": "style_transfer", "final": {"j": 0.45, "j_content": 0.159,
                                                                                  "j_style": 2.9e-4}})
    code, lines, err = run_cli(capsys, monkeypatch, "runs", str(tmp_path))
    assert code == 0, err
    assert lines[1].split()[:3] == ["style", "style_transfer", "completed"] and "j 0.45" in lines[1], lines
