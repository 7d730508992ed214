"""Sweeps on a real local Ray (2 CPUs): digits MLP trials run the generic loop in their trial process."""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Lines
from tests.wandb_records import records

DIGITS = ROOT / "jobs" / "sweeps" / "digits_tiny.yaml"
FLAKY = "flaky_00001:2"  # chaos hook: rank 0 of trial 00001 of the sweep named 'flaky' dies once at epoch 2


@pytest.fixture(scope="module")
def ray_up():
    import ray

    os.environ["DL_RAY_FAIL_AT"] = FLAKY  # trial processes inherit it from the raylet
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
    os.environ.pop("DL_RAY_FAIL_AT", None)


def tune(*args: str) -> int:
    from dl_ray.cli import main

    return main(["tune", *args])


def rows(folder: Path) -> list[dict[str, str]]:
    with (folder / "results.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_digits_sweep_retries_a_failed_trial_and_writes_a_best_job_that_trains(ray_up, tmp_path, capsys):
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "name=flaky") == 0
    folder = tmp_path / "flaky"
    results = rows(folder)
    assert [r["status"] for r in results] == ["completed"] * 4
    assert (folder / "flaky_00001" / ".failed_at_epoch_2").exists()  # it died once, was retried and finished
    best = max(results, key=lambda r: float(r["val/accuracy"]))
    assert float(best["val/accuracy"]) > 0.9
    assert (folder / "params.png").stat().st_size > 10_000 and (folder / "curves.png").stat().st_size > 10_000

    # every trial is an offline W&B run in the sweep's group (the killed attempt left only a header)
    for r in results:
        runs = [rec.run for f in (folder / r["trial"] / "wandb").glob("offline-run-*/run-*.wandb")
                for rec in records(f) if rec.WhichOneof("record_type") == "run"]
        assert {(run.run_group, run.display_name) for run in runs} == {("flaky", r["trial"])}

    # best.yaml is a job: training it reproduces the best trial (same seed, same loop)
    job = yaml.safe_load((folder / "best.yaml").read_text())
    assert job["optimizer"]["lr"] == pytest.approx(float(best["optimizer.lr"]))
    from dl_ray.cli import main

    assert main(["train", str(folder / "best.yaml"), "--set", "tracking.wandb=disabled"]) == 0
    summary = yaml.safe_load((tmp_path / "flaky_best" / "summary.json").read_text())
    assert summary["final"]["val/accuracy"] == pytest.approx(float(best["val/accuracy"]), abs=0.02)
    assert "best: flaky_" in capsys.readouterr().out


@pytest.mark.slow
def test_asha_stops_the_bad_trials_early(ray_up, tmp_path):
    lrs = "{grid: [0.03, 0.01, 1.0e-5, 3.0e-6]}"
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.search=grid", "--set", "tune.num_samples=1",
                "--set", f"tune.space.optimizer.lr={lrs}", "--set", "tune.space.regularization.dropout={grid: [0.0]}",
                "--set", "tune.scheduler={name: asha, grace_period: 1, reduction_factor: 2}") == 0
    by_lr = {float(r["optimizer.lr"]): r for r in rows(tmp_path / "digits_tiny")}
    # the two good trials ran first (2 at a time): the bad ones meet their results at the first rung
    assert by_lr[1e-5]["status"] == by_lr[3e-6]["status"] == "stopped"
    assert by_lr[1e-5]["epochs"] == by_lr[3e-6]["epochs"] == "1"
    assert "completed" in (by_lr[0.03]["status"], by_lr[0.01]["status"])  # the leader of each rung goes on
    assert yaml.safe_load((tmp_path / "digits_tiny" / "best.yaml").read_text())["optimizer"]["lr"] in (0.03, 0.01)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_up, tmp_path):
    args = [str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.max_concurrent_trials=1",
            "--set", "training.epochs=25", "--set", "model.hidden=[256, 256]"]
    env = {**os.environ, "RAY_ADDRESS": ray_up.get_runtime_context().gcs_address, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "dl_ray.cli", "tune", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder, output = tmp_path / "digits_tiny", Lines(driver.stdout)
    # Ctrl-C once Tune has marked two trials finished (the driver prints a line for each, from Tune's callback), not
    # once their summary.json exists: a trial writes that before Tune records it, and an unrecorded trial is rerun.
    output.wait_for(lambda line: re.match(r"trial \d+ ", line) is not None, timeout_s=180, count=2)
    driver.send_signal(signal.SIGINT)  # Ctrl-C, while the third trial trains (25 epochs)
    assert driver.wait(timeout=120) == 130, output.rest()
    assert "run the same command again" in output.rest()
    finished = {p.parent.name: (p.stat().st_mtime_ns, (p.parent / "metrics.csv").read_text())
                for p in folder.glob("*/summary.json")}
    assert 2 <= len(finished) < 4

    assert tune(*args) == 0  # the same command resumes
    results = rows(folder)
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    for trial, (mtime, history) in finished.items():  # not rerun: not even re-evaluated
        summary = folder / trial / "summary.json"
        assert (summary.stat().st_mtime_ns, (folder / trial / "metrics.csv").read_text()) == (mtime, history)


@pytest.mark.slow
def test_a_sweep_stopped_by_sigterm_keeps_its_finished_trials_and_says_it_stopped(ray_up, tmp_path):
    """What `dl-ray jobs stop` does to a sweep's driver: SIGTERM, then SIGKILL 3 s later (Ray's job supervisor)."""
    import json

    args = [str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "name=halted", "--set", "tune.max_concurrent_trials=1",
            "--set", "training.epochs=25", "--set", "model.hidden=[256, 256]", "--set", "tracking.wandb=disabled"]
    env = {**os.environ, "RAY_ADDRESS": ray_up.get_runtime_context().gcs_address, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    driver = subprocess.Popen([sys.executable, "-m", "dl_ray.cli", "tune", *args], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Lines(driver.stdout)
    output.wait_for(lambda line: re.match(r"trial \d+ ", line) is not None, timeout_s=180, count=2)
    driver.send_signal(signal.SIGTERM)
    try:
        driver.wait(timeout=3)
    except subprocess.TimeoutExpired:
        driver.kill()
        driver.wait()
    folder = tmp_path / "halted"
    finished = [r for r in rows(folder) if r["status"] == "completed"]
    assert len(finished) >= 2 and all(float(r["val/accuracy"]) > 0.5 for r in finished)
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["status"], summary["stop_reason"]) == ("stopped", "jobs stop"), summary


def read_history(folder: Path) -> list[dict[str, str]]:
    with (folder / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def trained_rows(history: list[dict[str, str]]) -> list[dict[str, str]]:
    """What training wrote in each row (not the PBT mark, not the final test metrics)."""
    return [{k: v for k, v in row.items() if not k.startswith(("pbt/", "test/"))} for row in history]


@pytest.mark.slow
def test_pbt_exploit_copies_a_top_trial_and_trains_on_with_the_explored_lr(ray_up, tmp_path, capsys):
    # Epochs of ~1.5 s (a wide net), so the four trials overlap despite their staggered start on 2 CPUs;
    # lr 3e-2 is too high for this net: that trial is the worst at an exploit step. Ray's PBT exploits only from a
    # donor holding a checkpoint it took as a top trial, and ranks only unfinished trials, so with staggered trials
    # an exploit step can pass without one: 8 epochs give three steps, at 2, 4 and 6, so that one of them exploits
    # (none at the last epoch: the trial could not train on, so our scheduler skips it).
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "name=pbt", "--set", "training.epochs=8",
                "--set", "model.hidden=[1024, 1024]", "--set", "training.batch_size=16", "--set", "tune.num_samples=1",
                "--set", "tracking.wandb=disabled",
                "--set", "tune.space.optimizer.lr={grid: [3.0e-2, 1.0e-2, 3.0e-3, 1.0e-5]}",
                "--set", "tune.scheduler={name: pbt, perturbation_interval: 2, quantile_fraction: 0.25}") == 0
    out = capsys.readouterr().out
    assert "PBT: population of 4 runs concurrently, 0.5 CPU per trial" in out
    folder = tmp_path / "pbt"
    trials = {r["trial"]: r for r in rows(folder)}
    histories = {name: read_history(folder / name) for name in trials}
    trained_on, compared = 0, 0
    for name, history in histories.items():
        assert [int(h["epoch"]) for h in history] == list(range(1, 9))  # one row per epoch: no gap, no repeat
        marks = [epoch for epoch, h in enumerate(history, 1) if h.get("pbt/copied_from")]
        if not marks:  # never exploited: constant schedule, one LR
            assert len({h["lr"] for h in history}) == 1
            continue
        at, donor = marks[-1], history[marks[-1] - 1]["pbt/copied_from"]  # its latest exploit: rows 1..at are the donor's
        assert donor in trials and donor != name
        after = [float(h["lr"]) for h in history[at:]]
        assert after == pytest.approx([float(trials[name]["optimizer.lr"])] * len(after))  # the explored LR, not the donor's
        assert 0 <= float(trials[name]["regularization.dropout"]) <= 0.3  # explore stays inside the swept range
        trained_on += bool(after)
        if not any(h.get("pbt/copied_from") for h in histories[donor]):  # the donor's own history was never replaced
            assert trained_rows(history[:at]) == trained_rows(histories[donor][:at])
            compared += 1
    assert trained_on >= 1 and compared >= 1
    assert not any(history[-1].get("pbt/copied_from") for history in histories.values())  # no exploit at the last epoch

    # every exploit was printed (who copied whom, at which epoch, with the new values) and kept in exploits.csv
    with (folder / "exploits.csv").open() as f:
        exploits = list(csv.DictReader(f))
    printed = re.findall(r"exploit at epoch (\d+): (\d+) \(val/accuracy \S+\) copies (\d+) \(\S+\); lr \S+ -> \S+", out)
    assert sorted(printed) == sorted((e["epoch"], e["trial"], e["donor"]) for e in exploits) and printed
    # a trial's last mark in its metrics.csv is its own latest exploit (earlier ones may be its donor's, inherited)
    last_marks = {(name[-5:], [h for h in history if h.get("pbt/copied_from")][-1]["pbt/copied_from"][-5:])
                  for name, history in histories.items() if any(h.get("pbt/copied_from") for h in history)}
    assert last_marks and last_marks <= {(e["trial"], e["donor"]) for e in exploits}
    # results.csv keeps each trial's starting value beside its final one; params.png draws both
    assert {float(r["start/optimizer.lr"]) for r in trials.values()} == {3.0e-2, 1.0e-2, 3.0e-3, 1.0e-5}
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["description"].startswith("mlp on digits, best of sweep pbt (val/accuracy ")


@pytest.mark.slow
def test_evaluate_trials_score_one_checkpoint_with_each_setting(ray_up, tmp_path):
    from dl_ray.cli import main

    job = tmp_path / "trained.yaml"
    job.write_text(yaml.safe_dump({"model": {"name": "mlp", "hidden": [32], "activation": "relu"}, "data": {"name": "digits"},
                                   "optimizer": {"lr": 0.01}, "training": {"epochs": 3}, "tracking": {"wandb": "disabled"},
                                   "storage": {"path": str(tmp_path)}}))
    assert main(["train", str(job)]) == 0
    trained = yaml.safe_load((tmp_path / "trained" / "summary.json").read_text())["final"]
    sweep = tmp_path / "activation.yaml"
    sweep.write_text(yaml.safe_dump({"kind": "sweep", "tune": {
        "trial": "evaluate", "checkpoint": str(tmp_path / "trained"), "metric": "val/accuracy", "search": "grid",
        "num_samples": 1, "space": {"model.activation": {"grid": ["relu", "tanh"]}}}}))
    assert tune(str(sweep), "--set", f"storage.path={tmp_path}") == 0
    by_activation = {r["model.activation"]: r for r in rows(tmp_path / "activation")}
    assert float(by_activation["relu"]["val/accuracy"]) == pytest.approx(trained["val/accuracy"], abs=1e-9)
    assert float(by_activation["tanh"]["val/accuracy"]) < trained["val/accuracy"]
    assert not list((tmp_path / "activation").glob("*/metrics.csv"))  # nothing was trained
    best = yaml.safe_load((tmp_path / "activation" / "best.yaml").read_text())
    assert best["model"]["activation"] == "relu" and best["training"]["epochs"] == 3
    header = (tmp_path / "activation" / "best.yaml").read_text()
    assert "nothing was trained" in header and "Train it" not in header
    assert not (tmp_path / "activation" / "curves.png").exists()  # one score per trial: no learning curve to draw
    for r in rows(tmp_path / "activation"):  # each trial folder reads like a run: the job it scored and its summary
        trial = yaml.safe_load((tmp_path / "activation" / r["trial"] / "summary.json").read_text())
        assert trial["status"] == "completed" and trial["final"]["val/accuracy"] == pytest.approx(float(r["val/accuracy"]))
        assert (tmp_path / "activation" / r["trial"] / "spec.yaml").is_file()


@pytest.mark.slow
def test_optuna_tpe_search_samples_distinct_values_inside_the_space(ray_up, tmp_path):
    # optuna is in the test extra: no skip, so a broken optuna search fails CI instead of vanishing from it
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.search=optuna") == 0
    results = rows(tmp_path / "digits_tiny")
    assert len(results) == 4 and all(r["status"] == "completed" for r in results)
    assert len({r["optimizer.lr"] for r in results}) == 4 and all(1e-3 <= float(r["optimizer.lr"]) <= 3e-2 for r in results)


BAD = [
    ("tune.space.optimizer.lrr", "{loguniform: [1.0e-4, 1.0e-2]}", "optimizer.lrr: unknown key (did you mean 'lr'?)"),
    ("tune.space.optimizer.lr", "{logunifrom: [1.0e-4, 1.0e-2]}", "unknown distribution 'logunifrom' (did you mean 'loguniform'?)"),
    ("tune.space.optimizer.lr", "{loguniform: [0, 1.0e-2]}", "bounds must be > 0"),
    ("tune.space.optimizer.lr", "{uniform: [0.1]}", "expected [low, high]"),
    ("tune.space.regularization.dropout", "{uniform: [0.0, 1.5]}", "regularization.dropout: Input should be less than 1"),
    ("tune.space.schedule.name", "{choice: [constant, cosine, linear]}", "schedule.name: Input should be"),
    ("tune.space.scaling.num_workers", "{choice: [1, 2]}", "cannot be swept"),
    ("tune.metric", "val/acc", "tune.metric: 'val/acc' is not reported"),
    ("tune.scheduler", "hyperband", "tune.scheduler.name: Input should be 'fifo', 'asha' or 'pbt'"),
    ("tune.search", "grid", "tune.search: grid needs grid or choice values"),
]


@pytest.mark.parametrize("key,value,message", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_search_spaces_exit_2_with_one_line_and_start_nothing(tmp_path, capsys, key, value, message):
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", f"{key}={value}") == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "digits_tiny").exists()


def test_step_decay_with_a_rate_above_one_is_caught_before_anything_starts(tmp_path, capsys):
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.space.schedule.name={choice: [step, constant]}",
                "--set", "tune.space.schedule.decay_rate={uniform: [0.5, 1.5]}") == 2
    assert "decay_rate must be < 1 for step decay" in capsys.readouterr().err
    assert not (tmp_path / "digits_tiny").exists()


def test_pbt_refuses_a_concurrency_below_its_population(tmp_path, capsys):
    assert tune(str(DIGITS), "--set", f"storage.path={tmp_path}", "--set", "tune.scheduler=pbt",
                "--set", "tune.max_concurrent_trials=2") == 2
    err = capsys.readouterr().err
    assert "tune.max_concurrent_trials: 2 is below the PBT population of 4" in err and err.count("\n") == 1, err
    assert not (tmp_path / "digits_tiny").exists()


def test_sweep_table_fits_80_columns_with_whole_values_and_headers():
    import io

    from rich.console import Console

    from dl_ray.tune.results import print_results
    from dl_ray.tune.spec import load_sweep

    sweep = load_sweep(ROOT / "jobs" / "sweeps" / "mnist_lr_decay_dropout.yaml")
    statuses = ["completed", "early_stopped", "stopped", "nonfinite_loss"]
    rows = [{"trial": f"mnist_lr_decay_dropout_{i:05d}", "status": statuses[i % 4], "epochs": 9 if i % 4 < 2 else 1,
             "optimizer.lr": [1.1e-4, 3.2e-3, 0.0213][i % 3], "schedule.name": ["exponential", "cosine"][i % 2],
             "schedule.decay_rate": 0.5 + i / 40, "regularization.dropout": i / 40, "val/accuracy": 0.9 + i / 200,
             "test/accuracy": 0.89 + i / 200, "train_s": 12.3 * i, "curve": [], "error": ""} for i in range(16)]
    out = io.StringIO()
    print_results(rows, sweep, rows[15], Console(file=out, width=80, color_system=None))
    text = out.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80, text
    assert "…" not in text, text  # nothing cut: values, headers, statuses
    for whole in ("1.1e-04", "3.2e-03", "0.0213", "exponential", "early_stopped", "nonfinite_loss", "dropout", "schedule"):
        assert whole in text, (whole, text)
    assert "not shown: train_s, test/accuracy" in text  # a dropped column is named


BEAM = ROOT / "jobs" / "sweeps" / "dates_attention_beam.yaml"


def test_beam_sweep_finds_its_run_under_storage_path_and_counts_its_trials(tmp_path):
    from dl_ray.spec import load_spec
    from dl_ray.tune.spec import load_sweep
    from dl_ray.tune.sweep import headline

    checkpoint = tmp_path / "dates_attention" / "checkpoint_epoch_0001"
    checkpoint.mkdir(parents=True)
    (checkpoint / "state.pt").write_bytes(b"")  # found by name; nothing loads it here
    (checkpoint / "spec.yaml").write_text(yaml.safe_dump(load_spec(ROOT / "jobs" / "dates_attention.yaml").to_dict()))
    sweep = load_sweep(BEAM, [f"storage.path={tmp_path}"])
    assert sweep.checkpoint == checkpoint  # under storage.path, not ./runs
    assert sweep.tune.split == "test" and sweep.tune.metric == "test/exact_match"  # the held-out forms
    assert headline(sweep, "in the trial process", 2).startswith(
        "sweep dates_attention_beam: 18 trials (grid of 6 x 3 over beam_width, length_alpha)")


def test_beam_sweep_without_its_trained_run_says_which_job_to_train(tmp_path, capsys):
    assert tune(str(BEAM), "--set", f"storage.path={tmp_path}") == 2
    err = capsys.readouterr().err
    assert "tune.checkpoint: no trained run dates_attention in storage.path" in err
    assert "train jobs/dates_attention.yaml first" in err and err.count("\n") == 1, err
