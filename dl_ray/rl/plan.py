"""What ``dl-ray dqn`` would do with a job now, in words: ``--dry-run`` prints it (reading, never writing), and the
run itself prints the same first line (its folder, and whether it starts fresh, resumes or only reports)."""
from __future__ import annotations

import math
import textwrap

from dl_ray.rl.outputs import has_saved_replay, load_checkpoint
from dl_ray.rl.spec import RLJobSpec
from dl_ray.train.runner import folder_line


def start_plan(spec: RLJobSpec) -> str:
    """A new run, resuming at which env step (with its replay or refilling it), or finished and only reporting."""
    run_dir = spec.run_dir
    if spec.kind == "q_learning":
        again = (run_dir / "q_table.npy").is_file()
        return ("trains again from scratch (seconds of work), replacing q_table.npy" if again
                else f"new run, {spec.q_learning.episodes:,} episodes")
    total = spec.dqn.total_env_steps
    saved = load_checkpoint(run_dir, replay=False)
    if saved is None:
        return f"new run, from env step 0 of {total:,}"
    steps = saved["counters"]["env_steps"]
    if steps >= total:
        return f"finished: {steps:,} of {total:,} env steps; evaluates again and reports (nothing to train)"
    replay = ("with its replay" if has_saved_replay(run_dir)
              else f"the replay refills first: {spec.dqn.learning_starts:,} env steps before updates")
    return f"resuming at env step {steps:,} of {total:,} from checkpoint/ ({replay})"


def layout(spec: RLJobSpec) -> list[str]:
    """The actors, the learner, the replay, evaluations and checkpoints, when it stops: a line each."""
    a, d, r, e, learner = spec.actors, spec.dqn, spec.replay, spec.evaluation, spec.learner
    x = a.exploration
    explore = (f"Ape-X ε {x.epsilon:g} α {x.alpha:g}" if x.schedule == "apex"
               else f"ε {x.start:g} → {x.end:g} over {x.anneal_steps:,} steps")
    if a.one_process:
        threads = math.ceil(learner.num_cpus)
        actors = f"one process, no Ray: {a.envs_per_actor} envs, {threads} torch thread{'s' if threads > 1 else ''}"
    else:
        gpu = f" + {a.gpus_per_actor:g} GPU" if a.gpus_per_actor else ""
        actors = f"{a.num_actors} x {a.envs_per_actor} envs ({a.cpus_per_actor:g} CPU{gpu} each)"
    shards = f"{r.shards} shard{'s' if r.shards > 1 else ''}" + (" on the learner" if r.on_learner else "")
    every = f"every {e.every_env_steps:,} env steps and " if e.every_env_steps else ""
    limit = f" (or max_time_s {d.max_time_s:g} s)" if d.max_time_s else ""
    if e.stop_at_return is not None:
        limit += f" (or once an evaluation returns >= {e.stop_at_return:g})"
    return [f"actors: {actors}, {explore}, {a.steps_per_call} steps/call",
            f"learner: {learner.device}, {learner.num_cpus:g} CPU, batch {d.batch_size}, {d.updates_per_call} "
            f"updates/call, target every {d.target_update_every:,} updates",
            f"replay: {r.capacity:,} frames, {shards}, {'prioritized' if r.prioritized else 'uniform'}, ratio "
            f"{d.replay_ratio:g}, from env step {d.learning_starts:,}",
            f"evaluation: {e.episodes} episodes {every}at the end",
            f"checkpoint every {spec.checkpoint.every_env_steps:,} env steps; stops at {d.total_env_steps:,}{limit}",
            f"progress: every {d.log_every_env_steps:,} env steps or {d.progress_every_s:g} s"]


def dry_run_plan(spec: RLJobSpec, width: int = 80) -> str:
    """The plan as YAML comments (the printed spec above it stays a job file), lines wrapped to ``width``."""
    lines = folder_line(spec.run_dir, start_plan(spec), width - 2).splitlines()
    if spec.kind == "dqn":
        lines += layout(spec)
    return "\n".join("# " + wrapped for line in lines
                     for wrapped in textwrap.wrap(line, width - 2, subsequent_indent="    ",
                                                   break_long_words=False, break_on_hyphens=False) or [""])
