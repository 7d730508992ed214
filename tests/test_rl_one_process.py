"""DQN in one process (``actors.num_actors: 0``): no Ray, the same loop, run folder, resume and ``dl-ray eval``."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rich.console import Console

from dl_ray.cli import main as cli_main
from dl_ray.rl import driver
from dl_ray.rl.spec import parse_rl_spec
from tests.conftest import ROOT
from tests.test_rl_envs import in_process
from tests.test_rl_ray import kill_and_rerun


def cartpole(tmp_path, name: str, total: int, **replay) -> dict:
    return {"name": name, "kind": "dqn", "seed": 1, "env": {"id": "CartPole-v1"},
            "model": {"name": "q_mlp", "hidden": [32, 32]},
            "dqn": {"total_env_steps": total, "learning_starts": 500, "batch_size": 32, "replay_ratio": 4,
                    "updates_per_call": 16, "log_every_env_steps": 1000},
            "replay": {"capacity": 10_000, **replay}, "actors": {"num_actors": 0, "envs_per_actor": 4, "steps_per_call": 16},
            "evaluation": {"episodes": 5, "every_env_steps": 1000}, "checkpoint": {"every_env_steps": 1000},
            "tracking": {"wandb": "disabled"}, "storage": {"path": str(tmp_path)}}


def quiet() -> Console:
    return Console(file=open(os.devnull, "w"))


def test_fleet_only_fields_are_one_line_and_exit_2_with_nothing_written(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    cli = in_process(capsys)
    where = f"storage.path={tmp_path}"
    code, _, err = cli("dqn", "jobs/rl/dqn_pong.yaml", "--set", "actors.num_actors=0", "--set", where)
    assert code == 2 and err.count("\n") == 1
    assert "actors.gpus_per_actor: 0.05 is a Ray actor's GPU share; with actors.num_actors: 0 (one process) set it to 0" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_pong.yaml", "--set", "actors.num_actors=0", "--set", "actors.gpus_per_actor=0",
                       "--set", where)
    assert code == 2 and err.count("\n") == 1 and "replay.shards: 2 shards are Ray actors" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_cartpole.yaml", "--set", "actors.num_actors=-1", "--set", where)
    assert code == 2 and err.count("\n") == 1 and "actors.num_actors" in err
    assert not list(tmp_path.iterdir())


def test_one_process_holds_the_replay_ratio_and_eval_replays_its_evaluation(tmp_path):
    raw = cartpole(tmp_path, "one", total=3000)
    summary = driver.run(parse_rl_spec(raw), quiet())
    assert summary["status"] == "completed" and summary["env_steps"] == 3008  # whole calls of 16 steps x 4 envs
    owed = (summary["env_steps"] - 500) * 4 // 32
    assert owed - 16 < summary["updates"] <= owed  # the loop held the replay ratio (whole learner calls of 16)
    run = tmp_path / "one"
    rows = pd.read_csv(run / "metrics.csv")
    assert rows["env_steps"].is_monotonic_increasing and rows["loss"].notna().any()
    assert (run / "checkpoint" / "state.pt").is_file() and (run / "best_weights.pt").is_file()
    evals = rows.dropna(subset=["eval/return_mean"])
    assert list(evals["env_steps"]) == [1024, 2048, 3008]  # every 1,000 (whole calls of 64 steps), and the final one
    assert list(evals["eval/seed"]) == [1 + 7_777 + steps for steps in (1024, 2048, 3008)]
    # dl-ray eval plays the weights again, by default with the seed of the run's evaluation of them: its figure
    assert cli_main(["eval", str(run), "--weights", "last"]) == 0
    last = json.loads((run / "eval_last.json").read_text())
    assert last["eval/return_mean"] == summary["eval/return_mean"] and last["seed"] == summary["eval/seed"]
    assert cli_main(["eval", str(run)]) == 0
    best = json.loads((run / "eval_best.json").read_text())
    assert best["eval/return_mean"] == summary["best_eval/return_mean"] and best["seed"] == summary["best_eval/seed"]


def test_a_return_goal_stops_the_run_at_the_first_evaluation_that_reaches_it(tmp_path, capsys):
    raw = cartpole(tmp_path, "goal", total=20_000)
    raw["evaluation"] |= {"stop_at_return": 1}  # any policy's first evaluation reaches it (a CartPole step pays 1)
    summary = driver.run(parse_rl_spec(raw), quiet())
    assert summary["status"] == "stopped" and summary["env_steps"] < 2048, summary
    rows = pd.read_csv(tmp_path / "goal" / "metrics.csv").dropna(subset=["eval/return_mean"])
    assert list(rows["env_steps"]) == [1024, summary["env_steps"]]  # the one that reached it, then the final one
    first = rows["eval/return_mean"].iloc[0]
    assert summary["stop_reason"].startswith(f"evaluation.stop_at_return (1) reached: return {first:.2f} at 1,024 env "
                                             "steps"), summary
    raw["evaluation"]["stop_at_return"] = None  # the same run without the goal goes on to total_env_steps
    raw["dqn"]["total_env_steps"] = 3000
    assert driver.run(parse_rl_spec(raw), quiet())["status"] == "completed"
    raw["evaluation"] |= {"stop_at_return": 1, "every_env_steps": None}
    code, _, err = in_process(capsys)("dqn", str(write_json(tmp_path / "job.yaml", raw)))
    assert code == 2 and err.count("\n") == 1 and "evaluation.stop_at_return: 1 is judged by the evaluations during the " \
        "run: set evaluation.every_env_steps" in err, err


def write_json(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def dry_run(capsys, raw: dict, *overrides: str) -> str:
    """The plan ``dl-ray dqn JOB --dry-run`` prints after the resolved spec (YAML comments), its lines joined."""
    job = Path(raw["storage"]["path"]) / "job.yaml"
    job.write_text(json.dumps(raw))  # JSON is YAML
    code, out, _ = in_process(capsys)("dqn", str(job), "--dry-run", *(f"--set={o}" for o in overrides))
    job.unlink()
    assert code == 0 and all(len(line) <= 80 for line in out.splitlines()), out
    return " ".join(line[1:].strip() for line in out.splitlines() if line.startswith("#"))


def test_one_process_resumes_with_its_replay_as_if_never_stopped(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run folder shows as "again"
    raw = cartpole(tmp_path, "again", total=2000, save_in_checkpoint=True)
    plan = dry_run(capsys, raw)
    assert plan.startswith("run folder again: new run, from env step 0 of 2,000 actors: ")
    assert "actors: one process, no Ray: 4 envs, 1 torch thread, Ape-X ε 0.4 α 7, 16 steps/call" in plan
    assert "replay: 10,000 frames, 1 shard, uniform, ratio 4, from env step 500" in plan
    assert not list(tmp_path.iterdir())  # a dry run writes nothing
    out = Console(file=open(tmp_path / "first.txt", "w"), width=200)
    first = driver.run(parse_rl_spec(raw), out)
    assert "run folder again: new run, from env step 0 of 2,000" in (tmp_path / "first.txt").read_text()
    saved = np.load(tmp_path / "again" / "checkpoint" / "replay_0.npz")
    assert int(saved["counters"][0]) == first["replay_frames"] >= 2000
    finished = f"finished: {first['env_steps']:,} of 2,000 env steps; evaluates again and reports (nothing to train)"
    assert f"run folder again: {finished}" in dry_run(capsys, raw)
    resuming = f"resuming at env step {first['env_steps']:,} of 3,000 from checkpoint/ (with its replay)"
    assert f"run folder again: {resuming}" in dry_run(capsys, raw, "dqn.total_env_steps=3000")
    raw["dqn"]["total_env_steps"] = 3000  # run on: the replay comes back, so learning goes on at once
    second = driver.run(parse_rl_spec(raw), out)
    assert resuming in (tmp_path / "first.txt").read_text()
    uninterrupted = (second["env_steps"] - 500) * 4 // 32
    assert uninterrupted - 16 < second["updates"] <= uninterrupted, (first, second)
    state = torch.load(tmp_path / "again" / "checkpoint" / "state.pt", weights_only=True)  # tensors and plain Python
    assert state["counters"]["env_steps"] == second["env_steps"] and state["learner"]["updates"] == second["updates"]
    assert second["best_eval/return_mean"] >= first["best_eval/return_mean"]  # the first part's best is kept
    best = torch.load(tmp_path / "again" / "best_weights.pt", weights_only=True)
    assert best["env_steps"] == second["best_eval/env_steps"]  # the file holds the weights the summary names


@pytest.mark.slow
def test_killing_the_one_process_driver_and_rerunning_resumes(tmp_path):
    second = kill_and_rerun(tmp_path, cartpole(tmp_path, "killed", total=5000), {"OMP_NUM_THREADS": "1"})
    assert "one process (4 envs, 1 torch threads)" in second


def test_progress_comes_every_few_seconds_and_a_time_stop_says_so(tmp_path):
    raw = cartpole(tmp_path, "timed", total=10**7)
    raw["dqn"] |= {"log_every_env_steps": 10**9, "progress_every_s": 0.5, "max_time_s": 3}
    raw["evaluation"]["every_env_steps"] = None
    out = Console(file=open(tmp_path / "out.txt", "w"), width=200)
    summary = driver.run(parse_rl_spec(raw), out)
    lines = (tmp_path / "out.txt").read_text().splitlines()
    assert sum(bool(re.match(r"\s*[\d.,]+[kM]? steps  return ", line)) for line in lines) >= 4  # ~every 0.5 s of 3 s
    assert summary["status"] == "stopped"
    assert summary["stop_reason"] == f"max_time_s (3 s) at {summary['env_steps'] / 10**5:.1f} % of 10,000,000 env steps"
    assert f"done: {summary['env_steps']:,} env steps (stopped: {summary['stop_reason']})" in "\n".join(lines)
    assert any(line.startswith("evaluating at ") for line in lines)  # the final evaluation announces itself
    assert json.loads((tmp_path / "timed" / "summary.json").read_text())["stop_reason"] == summary["stop_reason"]


def test_rows_at_the_progress_interval_draw_curves_and_evaluations_report_as_they_play(tmp_path, capsys):
    from dl_ray.rl.outputs import plot_curves

    raw = cartpole(tmp_path, "steady", total=10**7)
    raw["dqn"] |= {"log_every_env_steps": 10**9, "progress_every_s": 1e-3, "max_time_s": 1.5}
    raw["evaluation"] |= {"every_env_steps": None, "episodes": 10}
    out = Console(file=open(tmp_path / "out.txt", "w"), width=200)
    summary = driver.run(parse_rl_spec(raw), out)
    run = tmp_path / "steady"
    rows = pd.read_csv(run / "metrics.csv").dropna(subset=["sps"])
    assert len(rows) >= 10 and rows["env_steps"].is_monotonic_increasing
    assert rows[["episodic_return", "epsilon", "time_s"]].notna().all().all() and rows["loss"].notna().sum() >= 5
    drawn = plot_curves(run / "metrics.csv", tmp_path / "curves.png")  # what the run's curves.png shows
    assert drawn["episodic_return"] == drawn["sps"] == drawn["epsilon"] == len(rows) and drawn["eval/return_mean"] == 1
    assert drawn["loss"] == rows["loss"].notna().sum()
    lines = (tmp_path / "out.txt").read_text().splitlines()
    played = [re.match(rf"evaluation at {summary['env_steps']:,} env steps: (\d+)/10 games done", line) for line in lines]
    done = [int(m[1]) for m in played if m]
    assert done and done == sorted(done) and done[-1] < 10, lines  # while it plays, before its result line
    # dl-ray eval of the run reports its progress at the run's interval too
    assert cli_main(["eval", str(run), "--weights", "last"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"steady: evaluating last weights: \d+/10 games done", printed), printed
    assert json.loads((run / "eval_last.json").read_text())["eval/return_mean"] == summary["eval/return_mean"]


def test_weights_saved_as_numpy_by_older_runs_are_refused_in_one_line(tmp_path):
    from dl_ray.rl.evaluate import load_weights_file

    torch.save({"version": 3, "state": {"value.0.weight": np.zeros((2, 2))}}, tmp_path / "best_weights.pt")
    with pytest.raises(driver.SpecError, match=r"holds NumPy arrays \(written by an older dl_ray\), which a safe load refuses"):
        load_weights_file(tmp_path, "best")
