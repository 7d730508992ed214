"""Reinforcement learning: DQN on Ray actors (Ape-X style) and tabular Q-learning.

* ``envs``     — environment construction (ale-py's AtariVectorEnv, Gymnasium for the rest) and checks;
* ``replay``   — frame-deduplicated replay, stacks rebuilt by index at sampling time; uniform or prioritized;
* ``runner``   — an env runner: a vector of envs, a local Q-network copy, per-actor epsilon;
* ``learner``  — the DQN update with a target network copied every C updates;
* ``driver``   — the only Ray code: actors, replay shards, learner, replay-ratio control, faults, checkpoints;
* ``inline``   — ``actors.num_actors: 0``: the driver's loop in one process, its Ray calls made in place;
* ``tabular``  — the course's Q-learning (Bellman update with rate alpha, discount gamma) for FrozenLake/Taxi.

Only ``driver`` imports Ray; the other modules are plain Python, tested without a cluster.
"""
