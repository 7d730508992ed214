"""Reinforcement learning: DQN on Ray actors (Ape-X style) and tabular Q-learning.

* ``envs``     — environment construction (ale-py's AtariVectorEnv, Gymnasium for the rest) and checks;
* ``replay``   — frame-deduplicated replay, stacks rebuilt by index at sampling time; uniform or prioritized;
* ``runner``   — an env runner: a vector of envs, a local Q-network copy, per-actor epsilon;
* ``learner``  — the DQN update with a target network copied every C updates;
* ``driver``   — the Ray code: actors, replay shards, learner, replay-ratio control, faults, checkpoints;
* ``evaluations`` — the run's evaluations (Ray tasks in the background), their progress, the best weights;
* ``progress`` — what a run prints and logs as it goes: progress lines, metrics rows, the evaluations' progress;
* ``plan``     — what ``dl-ray dqn`` would do now (``--dry-run``): new run, resuming or finished, the layout;
* ``inline``   — ``actors.num_actors: 0``: the driver's loop in one process, its Ray calls made in place;
* ``tabular``  — the course's Q-learning (Bellman update with rate alpha, discount gamma) for FrozenLake/Taxi.

Only ``driver`` and ``evaluations`` use Ray (on the lines marked ``# [Ray]``); the other modules are plain Python,
tested without a cluster.
"""
