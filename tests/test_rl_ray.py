"""DQN on a real local Ray (2 CPUs, one instance for the module): data end to end, faults, resume, learning."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from rich.console import Console

from dl_ray.cli import main as cli_main
from dl_ray.rl import driver
from dl_ray.rl.envs import describe_env
from dl_ray.rl.runner import apex_epsilon, build_qnet
from dl_ray.rl.spec import load_rl_spec, parse_rl_spec
from tests.conftest import ROOT, Lines

SMALL = {"actors": {"num_actors": 2, "envs_per_actor": 2, "steps_per_call": 16, "cpus_per_actor": 0.5},
         "learner": {"num_cpus": 1}, "tracking": {"wandb": "offline"}}


def spec_for(tmp_path, name, **sections):
    raw = {"name": name, "kind": "dqn", "seed": 1, "storage": {"path": str(tmp_path)}, **SMALL}
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return parse_rl_spec(raw)


def cartpole(tmp_path, name, total):
    return spec_for(tmp_path, name, env={"id": "CartPole-v1"}, model={"name": "q_mlp", "hidden": [32, 32]},
                    dqn={"total_env_steps": total, "learning_starts": 500, "batch_size": 32, "replay_ratio": 4,
                         "updates_per_call": 16, "log_every_env_steps": 1000},
                    replay={"capacity": 10_000}, evaluation={"episodes": 5, "every_env_steps": None},
                    checkpoint={"every_env_steps": 1000})


@pytest.mark.slow
def test_short_pong_run_on_two_actors_moves_data_end_to_end(ray_cluster, tmp_path):
    spec = spec_for(tmp_path, "pong", env={"id": "ALE/Pong-v5"}, model={"name": "nature_cnn", "dueling": True},
                    actors={"overlap": True, "inference_dtype": "bfloat16"},
                    dqn={"total_env_steps": 1200, "learning_starts": 400, "replay_ratio": 8, "updates_per_call": 8,
                         "log_every_env_steps": 400},
                    replay={"capacity": 4000, "shards": 2, "prioritized": True},
                    evaluation={"episodes": 1, "every_env_steps": None, "video": True}, checkpoint={"every_env_steps": 600})
    summary = driver.run(spec, Console(file=open(os.devnull, "w")))
    assert summary["env_steps"] >= 1200 and summary["replay_frames"] >= 1200
    with Image.open(tmp_path / "pong" / "eval_episode.gif") as gif:  # one whole game, a frame per agent step
        assert gif.size == (160, 210) and 500 < gif.n_frames <= summary["video/steps"] + 1  # (Pillow merges repeats)
    assert -21 <= summary["video/return"] <= 0
    assert list((tmp_path / "pong" / "wandb").glob("offline-run-*/files/media/videos/eval/video_*.gif"))  # W&B has it
    expected_updates = (summary["env_steps"] - 400) * 8 // 32
    assert expected_updates - 8 < summary["updates"] <= expected_updates  # the driver held the replay ratio
    assert summary["eval/episodes"] == 1 and summary["eval/return_mean"] <= 0  # one whole game of Pong, raw score
    rows = pd.read_csv(tmp_path / "pong" / "metrics.csv")
    assert {"loss", "q_mean", "sps", "env_steps", "eval/return_mean"} <= set(rows.columns)  # no Pong game ends this soon
    assert rows["loss"].notna().any() and (tmp_path / "pong" / "checkpoint" / "state.pt").is_file()
    assert list((tmp_path / "pong" / "wandb").glob("offline-run-*"))  # W&B offline by default
    assert cli_main(["eval", str(tmp_path / "pong"), "--weights", "last", "--episodes", "1", "--video"]) == 0
    with Image.open(tmp_path / "pong" / "eval_last.gif") as gif:
        assert gif.size == (160, 210) and gif.n_frames > 500


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_replaced_and_training_goes_on(ray_cluster, tmp_path):
    spec = cartpole(tmp_path, "kill", total=6000)
    run = driver.DQNRun(spec, driver.check(spec), Console(file=open(os.devnull, "w")))
    training, training_done = threading.Event(), run._training_done

    def on_training_done(ref):  # the learner's first finished call sets the event the test waits on
        training_done(ref)
        if run.updates_done:
            training.set()

    run._training_done = on_training_done
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(run.run()), daemon=True)
    thread.start()
    assert training.wait(timeout=120), "the learner never finished an update call"
    victim = run.actors[0]
    ray_cluster.kill(victim)
    thread.join(timeout=240)
    assert not thread.is_alive(), "the run did not finish after its actor was replaced"
    assert outcome["actor_restarts"] >= 1 and run.actors[0] is not victim
    assert outcome["env_steps"] >= 6000 and outcome["updates"] > run.base_updates
    assert pd.read_csv(tmp_path / "kill" / "metrics.csv")["episodic_return"].notna().any()
    eps = [apex_epsilon(i, 2, 0.4, 7.0) for i in range(2)]
    assert sorted(run.log.epsilons.values()) == pytest.approx(sorted(eps))  # the replacement kept index 0's epsilon


@pytest.mark.slow
def test_killing_the_driver_and_rerunning_resumes_from_the_checkpoint(ray_cluster, tmp_path):
    spec = cartpole(tmp_path, "resume", total=5000)
    kill_and_rerun(tmp_path, spec.to_dict(), {"RAY_ADDRESS": ray_cluster.get_runtime_context().gcs_address})


def kill_and_rerun(tmp_path, raw: dict, env: dict[str, str]) -> str:
    """``dl-ray dqn`` on the job ``raw`` (a row and a checkpoint every 1,000 env steps, 5,000 in all), killed once
    it logs the row at >= 2,000 env steps, then run again: it must resume and finish. The second run's output."""
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps(raw))  # JSON is YAML
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **env}
    command = [sys.executable, "-m", "dl_ray.cli", "dqn", str(job)]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    # The driver logs a row, then checkpoints, every 1,000 env steps: once it logs the row at >= 2,000, the checkpoint
    # at ~1,000 is on disk (and the one at ~2,000 may be half written, which a resume must survive).
    Lines(first.stdout).wait_for(lambda line: (m := re.match(r"\s*([\d,]+) steps ", line)) is not None
                                 and int(m[1].replace(",", "")) >= 2000, timeout_s=180)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "resuming at env step" in second.stdout
    resumed_at = int(second.stdout.split("at env step ")[1].split()[0].replace(",", ""))
    assert 1000 <= resumed_at < 5000
    summary = json.loads((tmp_path / raw["name"] / "summary.json").read_text())
    assert summary["env_steps"] >= 5000 and summary["status"] == "completed"
    steps = pd.read_csv(tmp_path / raw["name"] / "metrics.csv")["env_steps"]
    assert steps.is_monotonic_increasing  # rows after the checkpoint were dropped, then redone
    return second.stdout


@pytest.mark.parametrize("actors, field", [
    ({"gpus_per_actor": 0.5}, "actors.gpus_per_actor: 2 actors x 0.5 GPU, the Ray cluster has 0 GPUs"),
    ({"cpus_per_actor": 2}, "actors.cpus_per_actor: 2 actors x 2.0 + learner.num_cpus 1.0 = 5 CPUs, the Ray cluster has 2"),
])
def test_resources_the_cluster_lacks_are_refused_before_anything_starts(ray_cluster, tmp_path, actors, field):
    spec = spec_for(tmp_path, "greedy", env={"id": "CartPole-v1"}, model={"name": "q_mlp"}, actors=actors)
    with pytest.raises(driver.SpecError, match=field.replace(".", r"\.").replace("+", r"\+")):
        driver.DQNRun(spec, driver.check(spec), Console(file=open(os.devnull, "w")))
    assert not (tmp_path / "greedy").exists()


@pytest.mark.slow
def test_max_time_stops_collecting_and_still_evaluates(ray_cluster, tmp_path):
    spec = cartpole(tmp_path, "timed", total=10**7)
    spec = parse_rl_spec(spec.to_dict() | {"dqn": spec.dqn.model_dump() | {"max_time_s": 8}})
    summary = driver.run(spec, Console(file=open(os.devnull, "w")))
    assert 0 < summary["env_steps"] < 10**7 and summary["eval/episodes"] == 5
    assert summary["status"] == "stopped"
    assert summary["stop_reason"] == f"max_time_s (8 s) at {summary['env_steps'] / 10**5:.1f} % of 10,000,000 env steps"
    owed = (summary["env_steps"] - 500) * 4 // 32
    assert owed - 16 < summary["updates"] <= owed  # the owed updates (whole learner calls) ran before the end


@pytest.mark.slow
def test_background_evaluations_report_their_progress_through_the_driver(ray_cluster, tmp_path):
    spec = cartpole(tmp_path, "evals", total=3000)
    raw = spec.to_dict()
    raw["dqn"]["progress_every_s"] = 1e-3  # every step of an evaluation but its last reports
    raw["evaluation"] |= {"every_env_steps": 1000, "episodes": 10}
    driver.run(parse_rl_spec(raw), Console(file=open(tmp_path / "out.txt", "w"), width=200))
    lines = (tmp_path / "out.txt").read_text().splitlines()
    evals = pd.read_csv(tmp_path / "evals" / "metrics.csv").dropna(subset=["eval/return_mean"])
    assert len(evals) >= 3
    for steps in evals["env_steps"]:  # each evaluation, a Ray task, reported while it played, before its result
        at = f"evaluation at {steps:,} env steps: "
        played = [i for i, line in enumerate(lines) if line.startswith(at) and re.search(r"\d+/10 games done", line)]
        result = next(i for i, line in enumerate(lines) if line.startswith(at + "return "))
        assert played and max(played) < result, lines


@pytest.mark.slow
def test_replay_on_the_learner_holds_the_ratio_and_resumes_with_its_replay(ray_cluster, tmp_path):
    raw = cartpole(tmp_path, "on_learner", total=3000).to_dict()
    raw["replay"] |= {"on_learner": True, "save_in_checkpoint": True}
    first = driver.run(parse_rl_spec(raw), Console(file=open(os.devnull, "w")))
    owed = (first["env_steps"] - 500) * 4 // 32
    assert owed - 16 < first["updates"] <= owed and first["replay_frames"] >= 3000
    saved = np.load(tmp_path / "on_learner" / "checkpoint" / "replay_0.npz")
    assert saved["frames"].shape == (10_000, 4) and int(saved["counters"][0]) == first["replay_frames"]
    raw["dqn"]["total_env_steps"] = 4000  # run on: the replay comes back, so learning goes on at once
    second = driver.run(parse_rl_spec(raw), Console(file=open(os.devnull, "w")))
    more = (second["env_steps"] - first["env_steps"]) * 4 // 32
    assert first["updates"] + more - 16 < second["updates"] <= first["updates"] + more, (first, second)


@pytest.mark.slow
@pytest.mark.parametrize("num_actors, reaches", [(2, 250), (0, 475)], ids=["fleet", "one_process"])
def test_the_shipped_cartpole_job_learns_to_balance_within_50k_env_steps(ray_cluster, tmp_path, num_actors, reaches):
    """The issue's CartPole figure is >= 475 over 100 evaluation episodes within 50k env steps. A fleet run's best
    evaluation varies with the seed and the machine's load (how often runs reach 475: benchmarks/README.md), so for
    the fleet this asserts that it learned (>= 250; random play ~22); one process plays and learns in a fixed order,
    so its run is the same on every run of the test and is held to the figure itself. Evaluations swing from one to
    the next: the best evaluation's weights are kept. Each run stops at the first evaluation that reaches its figure."""
    spec = load_rl_spec(ROOT / "jobs" / "rl" / "dqn_cartpole.yaml", [f"storage.path={tmp_path}", "tracking.wandb=disabled",
                                                                     f"actors.num_actors={num_actors}",
                                                                     f"evaluation.stop_at_return={reaches}"])
    summary = driver.run(spec, Console(file=open(os.devnull, "w")))
    assert summary["env_steps"] <= 50_000 + 8 * 32 and summary["eval/episodes"] == 100
    assert summary["best_eval/return_mean"] >= reaches, summary
    assert summary["status"] == "completed" or summary["stop_reason"].startswith("evaluation.stop_at_return"), summary
    best = torch.load(tmp_path / "dqn_cartpole" / "best_weights.pt", weights_only=True)
    assert set(best["state"]) == set(build_qnet(spec, describe_env(spec.env)).state_dict())
    # dl-ray eval plays the best weights again: with that evaluation's seed, exactly its figure
    run, seed = tmp_path / "dqn_cartpole", spec.seed + 7_777 + summary["best_eval/env_steps"]
    assert cli_main(["eval", str(run), "--seed", str(seed)]) == 0
    again = json.loads((run / "eval_best.json").read_text())
    assert again["eval/return_mean"] == summary["best_eval/return_mean"] and again["eval/episodes"] == 100
    assert cli_main(["eval", str(run), "--weights", "last", "--episodes", "5", "--epsilon", "0"]) == 0
    assert json.loads((run / "eval_last.json").read_text())["eval/episodes"] == 5
