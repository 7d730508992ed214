"""DQN building blocks without Ray: replay (dedup, index rebuilding, priorities), epsilon, target lag, TD loss,
bfloat16 actors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dl_ray.rl.learner import Learner
from dl_ray.rl.replay import FrameReplay, SumTree, split_window
from dl_ray.rl.runner import EnvRunner, apex_epsilon, linear_epsilon
from dl_ray.rl.envs import describe_env
from dl_ray.rl.spec import parse_rl_spec

STACK = 4


def synthetic_chunks(streams=3, steps=400, chunk=16, seed=0):
    """Interleaved env streams; every frame is (stream, episode, t) so a sample can be checked exactly.

    Context frames before an episode's first observation have t = -3, -2, -1. Yields (chunk, truth) where
    truth maps (stream, episode, t) -> (action, reward, done) of the step that led to frame t.
    """
    rng = np.random.default_rng(seed)
    episode = np.zeros(streams, dtype=int)
    t = np.zeros(streams, dtype=int)
    ended = np.ones(streams, dtype=bool)  # first row: reset observations
    truth = {}
    for start_row in range(0, steps, chunk):
        frames, actions, rewards, dones, starts, context = [], [], [], [], [], []
        for _ in range(chunk):
            start = ended.copy()
            episode[start] += 1
            t = np.where(start, 0, t + 1)
            action = rng.integers(0, 6, streams)
            reward = rng.choice([-1.0, 0.0, 1.0], streams).astype(np.float32)
            done = rng.random(streams) < 0.05
            done[start] = False
            ended = done | (rng.random(streams) < 0.02)  # terminated or truncated
            frame = np.stack([np.arange(streams), episode, t], axis=1)
            for s in np.flatnonzero(start):
                context.append([[s, episode[s], k - (STACK - 1)] for k in range(STACK - 1)])
            for s in np.flatnonzero(~start):
                truth[(s, episode[s], t[s])] = (action[s], reward[s], done[s])
            frames.append(frame), actions.append(action), rewards.append(reward), dones.append(done), starts.append(start)
        yield {"streams": np.arange(streams) + 10, "frames": np.array(frames), "action": np.array(actions),
               "reward": np.array(rewards), "done": np.array(dones), "start": np.array(starts),
               "context": np.array(context).reshape(-1, STACK - 1, 3)}, truth


@pytest.mark.parametrize(("prioritized", "device"), [(False, None), (True, None), (False, "cpu"), (True, "cpu")])
def test_replay_rebuilds_stacks_by_index_and_never_crosses_an_episode_end(prioritized, device):
    replay = FrameReplay(capacity=500, frame_shape=(3,), frame_dtype="int64", stack=STACK, prioritized=prioritized,
                         device=device)  # device: frames in a torch tensor (the learner's own replay)
    stored = 0
    for chunk, truth in synthetic_chunks():
        replay.add(chunk)
        stored += chunk["frames"].shape[0] * chunk["frames"].shape[1] + len(chunk["context"]) * (STACK - 1)
    assert replay.written == stored  # one slot per frame: nothing stored twice
    batch = replay.sample(4096)
    assert isinstance(batch["window"], np.ndarray if device is None else torch.Tensor)
    obs, nxt = split_window(np.asarray(batch["window"]), STACK)
    assert obs.shape == (4096, STACK, 3)
    stream, episode, t = nxt[:, -1, 0], nxt[:, -1, 1], nxt[:, -1, 2]
    assert (t >= 1).all()  # a transition ends on a real observation after the first one
    for k in range(STACK):  # every frame of both stacks: same stream, same episode, consecutive steps
        assert (obs[:, k, 0] == stream).all() and (nxt[:, k, 0] == stream).all()
        assert (obs[:, k, 1] == episode).all() and (nxt[:, k, 1] == episode).all()
        assert (obs[:, k, 2] == t - STACK + k).all() and (nxt[:, k, 2] == t - STACK + 1 + k).all()
    expected = np.array([truth[(s, e, tt)] for s, e, tt in zip(stream, episode, t)])
    np.testing.assert_array_equal(batch["action"], expected[:, 0])
    np.testing.assert_array_equal(batch["reward"], expected[:, 1])
    np.testing.assert_array_equal(batch["done"], expected[:, 2].astype(bool))
    assert (batch["position"] >= replay.written - replay.capacity).all()  # only frames still in the ring


def test_prioritized_replay_samples_in_proportion_to_priority():
    tree = SumTree(8)
    tree.set(np.arange(8), np.array([1, 0, 2, 0, 4, 0, 1, 0], dtype=float))
    slots = tree.find(np.random.default_rng(0).random(80_000) * tree.total)
    share = np.bincount(slots, minlength=8) / len(slots)
    np.testing.assert_allclose(share, np.array([1, 0, 2, 0, 4, 0, 1, 0]) / 8, atol=0.01)
    replay = FrameReplay(capacity=500, frame_shape=(3,), frame_dtype="int64", stack=STACK, prioritized=True)
    for chunk, _ in synthetic_chunks():
        replay.add(chunk)
    batch = replay.sample(64)
    replay.update_priorities(batch["position"][:1], np.array([1e6]))  # one transition dominates
    again = replay.sample(256)
    assert (again["position"] == batch["position"][0]).mean() > 0.9
    assert again["weight"].min() < again["weight"].max() == pytest.approx(1.0)


@pytest.mark.parametrize("prioritized", [False, True])
def test_replay_bytes_per_transition_for_atari_frames(prioritized):
    replay = FrameReplay(capacity=4096, frame_shape=(84, 84), frame_dtype="uint8", stack=4, prioritized=prioritized)
    assert replay.nbytes / replay.capacity <= 7.2 * 1024  # 1 M transitions <= 7.5 GB (a plain stack pair: 56 KB)


def test_apex_epsilons_follow_the_formula():
    eps = [apex_epsilon(i, 8, 0.4, 7.0) for i in range(8)]
    assert eps == pytest.approx([0.4 ** (1 + 7.0 * i / 7) for i in range(8)])
    assert eps[0] == pytest.approx(0.4) and eps[-1] == pytest.approx(0.4**8)
    assert apex_epsilon(0, 1, 0.4, 7.0) == 0.4
    assert linear_epsilon(0, 1.0, 0.1, 100) == 1.0 and linear_epsilon(50, 1.0, 0.1, 100) == pytest.approx(0.55)
    assert linear_epsilon(10_000, 1.0, 0.1, 100) == pytest.approx(0.1)


def cartpole_spec(**dqn):
    return parse_rl_spec({"name": "t", "kind": "dqn", "env": {"id": "CartPole-v1"}, "model": {"name": "q_mlp", "hidden": [16, 16]},
                          "optimizer": {"name": "adam", "lr": 0.01}, "dqn": {"batch_size": 8, **dqn}})


def random_batch(n, rng):
    return {"window": rng.normal(size=(n, 2, 4)).astype(np.float32),  # obs, next_obs (stack 1: see split_window)
            "action": rng.integers(0, 2, n), "reward": rng.normal(size=n).astype(np.float32),
            "done": rng.random(n) < 0.1, "weight": np.ones(n, np.float32), "position": np.arange(n)}


def test_target_network_lags_by_exactly_c_updates():
    spec = cartpole_spec(target_update_every=3)
    learner = Learner(spec, describe_env(spec.env))
    snapshots = {0: {k: v.clone() for k, v in learner.net.state_dict().items()}}
    rng = np.random.default_rng(0)
    for k in range(1, 11):
        learner.train(random_batch(8, rng), 1)
        snapshots[k] = {k2: v.clone() for k2, v in learner.net.state_dict().items()}
        expected = snapshots[k // 3 * 3]  # the online weights at the last multiple of C
        for name, value in learner.target.state_dict().items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
        if k % 3:
            assert not torch.equal(learner.target.state_dict()["value.2.weight"], learner.net.state_dict()["value.2.weight"])


@pytest.mark.parametrize("double", [False, True])
def test_td_loss_matches_the_bellman_target(double):
    spec = parse_rl_spec({"name": "t", "kind": "dqn", "env": {"id": "CartPole-v1"},
                          "model": {"name": "q_mlp", "hidden": [8], "double": double, "loss": "mse"}})
    learner = Learner(spec, describe_env(spec.env))
    for p in learner.target.parameters():
        p.data.normal_()
    b = {k: torch.from_numpy(v) for k, v in random_batch(32, np.random.default_rng(1)).items()}
    b["obs"], b["next_obs"] = split_window(b.pop("window"), 1)
    loss, _, _ = learner.net.td_loss(b, learner.target, 0.9)
    with torch.no_grad():
        q_next_target = learner.target(b["next_obs"])
        pick = (learner.net(b["next_obs"]) if double else q_next_target).argmax(1)
        y = b["reward"] + 0.9 * (~b["done"]).float() * q_next_target[torch.arange(32), pick]
        q = learner.net(b["obs"])[torch.arange(32), b["action"]]
    torch.testing.assert_close(loss, ((q - y) ** 2).mean())


def test_a_bfloat16_actor_acts_with_the_learner_weights_within_bfloat16_rounding():
    spec = parse_rl_spec({"name": "t", "kind": "dqn", "env": {"id": "ALE/Pong-v5"}, "model": {"name": "nature_cnn", "dueling": True},
                          "actors": {"envs_per_actor": 4, "inference_dtype": "bfloat16"}})
    info = describe_env(spec.env)
    learner = Learner(spec, info)
    runner = EnvRunner(spec, info, index=0, seed=0)
    stats, chunk = runner.collect(learner.weights(), 40, env_steps=0)
    assert {p.dtype for p in runner.net.parameters()} == {torch.bfloat16} and stats["steps"] == 160
    obs = torch.from_numpy(runner.obs)  # real Pong stacks after 40 steps
    with torch.no_grad():
        q32, q16 = learner.net(obs), runner.net(obs)
    assert q16.dtype == torch.bfloat16 and not torch.equal(q16.float(), q32)
    torch.testing.assert_close(q16.float(), q32, rtol=0, atol=0.02 * float(q32.abs().max()))
    top2 = q32.topk(2, dim=1).values
    clear = top2[:, 0] - top2[:, 1] > 0.04 * float(q32.abs().max())  # greedy choices bfloat16 cannot flip
    assert torch.equal(q16.argmax(1)[clear], q32.argmax(1)[clear])
