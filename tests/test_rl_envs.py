"""Environments (ale-py vector env == Gymnasium's reference wrappers), spec errors, tabular Q-learning."""
from __future__ import annotations

import json

import numpy as np
import pytest
from tests.conftest import ROOT, cli

from dl_ray.rl.envs import OverlappedVectorEnv, make_reference_env, make_vector_env, step_with
from dl_ray.rl.spec import EnvSpec


@pytest.mark.parametrize("env_id", ["ALE/Pong-v5", "ALE/Breakout-v5"])
def test_vector_env_matches_gymnasium_atari_preprocessing_and_frame_stack(env_id):
    """Same seed, same actions: identical 4x84x84 stacks, rewards and terminations at every step.

    Gymnasium's AtariPreprocessing has no FIRE reset and draws its no-op count from another random
    stream, so both are off here (they are on in training).
    """
    env = EnvSpec(id=env_id, noop_max=0, fire_reset=False)
    vec, ref = make_vector_env(env, 1), make_reference_env(env)
    obs, _ = vec.reset(seed=7)
    ref_obs, _ = ref.reset(seed=7)
    np.testing.assert_array_equal(obs[0], ref_obs)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(600):
        action = int(rng.integers(vec.single_action_space.n))
        obs, reward, terminated, truncated, _ = vec.step(np.array([action]))
        ref_next, ref_reward, ref_terminated, ref_truncated, _ = ref.step(action)
        changed += int((ref_next != ref_obs).any())
        ref_obs = ref_next
        np.testing.assert_array_equal(obs[0], ref_obs)
        assert (reward[0], terminated[0], truncated[0]) == (ref_reward, ref_terminated, ref_truncated)
        if terminated[0] or truncated[0]:
            break
    assert changed > 100 and obs.shape == (1, 4, 84, 84) and obs.dtype == np.uint8


def test_overlapped_halves_see_exactly_what_one_vector_env_sees():
    """The actors' overlapped stepping (one half emulates while the other half's actions are picked) changes
    nothing an env sees: same seed, same policy, identical observations, rewards, ends, lives and actions."""
    env = EnvSpec(id="ALE/Breakout-v5")  # FIRE reset, no-op starts and lives: all on
    plain, overlapped = make_vector_env(env, 6), OverlappedVectorEnv(env, 6)
    obs, info = plain.reset(seed=3)
    obs_o, info_o = overlapped.reset(seed=3)
    np.testing.assert_array_equal(obs, obs_o)
    np.testing.assert_array_equal(info["lives"], info_o["lives"])

    def policy(o):  # deterministic in each env's own observation
        return (o.reshape(len(o), -1)[:, ::7].sum(axis=1) % 4).astype(np.int64)

    ends = 0
    for _ in range(700):
        *plain_step, info, actions = step_with(plain, obs, policy)
        *overlapped_step, info_o, actions_o = step_with(overlapped, obs, policy)
        for a, b in zip(plain_step, overlapped_step):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(info["lives"], info_o["lives"])
        np.testing.assert_array_equal(actions, actions_o)
        obs, ends = plain_step[0], ends + int(plain_step[2].sum())
    assert ends >= 1  # games ended and restarted (autoreset) along the way


def in_process(capsys):
    """``dl-ray ARGS`` run by calling main() here: (exit code, stdout, stderr)."""
    from dl_ray.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            code = main(list(args))
        except SystemExit as e:  # argparse's own errors
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_bad_env_id_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    cli = in_process(capsys)  # in this process: the same main() as the console script, without 9 interpreter starts
    code, out, err = cli("dqn", "jobs/rl/dqn_pong.yaml", "--set", "env.id=ALE/Pongg-v5", "--dry-run")
    assert code == 2 and err.count("\n") == 1
    assert "env.id: unknown environment 'ALE/Pongg-v5' (did you mean 'ALE/Pong-v5'?)" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_cartpole.yaml", "--set", "model.name=nature_cnn", "--set", "model.hidden=512",
                       "--dry-run")
    assert code == 2 and "nature_cnn needs image observations" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_cartpole.yaml", "--set", "actors.exploration.schedule=cosine")
    assert code == 2 and "actors.exploration.schedule" in err and "'apex'" in err
    code, _, err = cli("dqn", "jobs/rl/q_learning_frozenlake.yaml", "--set", "kind=dqn")
    assert code == 2 and "dqn needs a model section" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_cartpole.yaml", "--set", "actors.inference_dtype=float16", "--dry-run")
    assert code == 2 and err == "error: actors.inference_dtype: Input should be 'float32' or 'bfloat16' (got 'float16')\n"
    code, _, err = cli("dqn", "jobs/rl/dqn_cartpole.yaml", "--set", "evaluation.video=true", "--dry-run")
    assert code == 2 and "evaluation.video records Atari games" in err
    code, _, err = cli("eval", "runs/none", "--weights", "worst")
    assert code == 2 and err == ("error: dl-ray eval: argument --weights: invalid choice: 'worst' (choose from 'best', "
                                 "'last') (see dl-ray eval --help)\n")
    code, _, err = cli("eval", "jobs/rl/dqn_cartpole.yaml", "--beam", "3")
    assert code == 2 and err.count("\n") == 1 and "--beam and --alpha decode seq2seq runs" in err
    code, _, err = cli("dqn", "jobs/rl/dqn_pong.yaml", "--set", "replay.on_learner=true", "--dry-run")
    assert code == 2 and err.count("\n") == 1 and "set replay.shards to 1 (got 2)" in err


@pytest.mark.slow  # 20,000 training episodes, 2 x 1,000 evaluation episodes, 3 processes
def test_q_learning_frozenlake_success_rate(tmp_path):
    """Acceptance: slippery 4x4 FrozenLake, greedy success >= 0.70 over 1000 evaluation episodes."""
    code, out, err = cli("dqn", "jobs/rl/q_learning_frozenlake.yaml", "--set", f"storage.path={tmp_path}",
                         "--set", "tracking.wandb=disabled")
    assert code == 0, err
    summary = json.loads((tmp_path / "q_learning_frozenlake" / "summary.json").read_text())
    assert summary["eval/episodes"] == 1000
    assert summary["eval/success_rate"] >= 0.70, summary
    assert (tmp_path / "q_learning_frozenlake" / "metrics.csv").read_text().count("\n") >= 50
    assert ROOT.joinpath("jobs/rl/q_learning_frozenlake.yaml").is_file()
    run = str(tmp_path / "q_learning_frozenlake")
    code, out, err = cli("eval", run)  # the saved table plays the run's own evaluation again: the same figure
    assert code == 0, err
    again = json.loads((tmp_path / "q_learning_frozenlake" / "eval_q_table.json").read_text())
    assert again["eval/success_rate"] == summary["eval/success_rate"] and again["eval/episodes"] == 1000
    assert f"success rate {summary['eval/success_rate']:.3f} over 1000 episodes" in out
    code, _, err = cli("eval", run, "--epsilon", "0.1")
    assert code == 2 and err.count("\n") == 1 and "a Q-learning run plays its greedy table" in err
