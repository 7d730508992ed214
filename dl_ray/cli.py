"""``dl-ray``: train a job file, evaluate a run, list what is registered (built on :mod:`dl_ray.api`).

Exit codes: 0 done, 1 a run failed, 2 bad input (nothing was started), 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import sys

from rich.console import Console


class OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes are one line too (``error: ...``, exit 2), pointing at ``--help``."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    parser, sub = _parser()
    args = parser.parse_args(argv)
    console = Console(stderr=False, soft_wrap=not sys.stdout.isatty())  # logs and pipes: one line per message
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    from dl_ray.spec import RunError, SpecError

    try:
        return _dispatch(args, sub, console)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except SpecError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # always one line
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the last checkpoint", file=sys.stderr)
        return 130


def _parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """Every ``dl-ray`` command and its arguments."""
    parser = OneLineParser(prog="dl-ray", description="Train every model of the course on Ray, locally or on a cluster.")
    sub = parser.add_subparsers(dest="command", required=True)

    _job_command(sub, "train", "job", "train a job file (resumes when its run folder exists)",
                 "job YAML, e.g. jobs/mnist_lenet.yaml", "training.epochs=3")
    listing = sub.add_parser("list", help="registered models, datasets and analyses, one line each; "
                                          "with a NAME, its config fields")
    listing.add_argument("name", nargs="?", help="a model, dataset or analysis, e.g. lenet5: its fields")
    # dl-ray describe (dl_ray/describe.py): the job's model layer by layer on its data, nothing trained or written
    _job_command(sub, "describe", "job", "per layer of the job's model: output shape, parameters, multiply-adds, "
                 "receptive field", "job YAML, e.g. jobs/mnist_lenet.yaml", "model.pooling=avg", starts=False)
    # dl-ray dqn (dl_ray/rl): DQN on Ray actors, tabular Q-learning
    _job_command(sub, "dqn", "job", "reinforcement learning: DQN on Ray actors or tabular Q-learning (resumes)",
                 "RL job YAML, e.g. jobs/rl/dqn_pong.yaml", "dqn.total_env_steps=100000")
    # dl-ray tune (dl_ray/tune): hyperparameter sweeps on Ray Tune
    tune = _job_command(sub, "tune", "sweep", "sweep a job's fields with Ray Tune (the same command again resumes)",
                        "sweep YAML (a job + a tune: section), e.g. jobs/sweeps/mnist_lr_decay_dropout.yaml",
                        "tune.num_samples=4")
    tune.add_argument("--resume", action="store_true", help="continue an interrupted sweep (fails if there is none)")
    # dl-ray analyze (dl_ray/analysis.py): jobs that train nothing (the gradient-flow lesson, debiasing word vectors)
    _job_command(sub, "analyze", "job", "run an analysis job, which trains nothing: the RNN gradient-flow lesson, "
                 "debiasing word vectors", "analysis job YAML, e.g. jobs/experiments/vanishing_gradients.yaml",
                 "analysis.seeds=3", starts=False)

    _eval_command(sub)

    # --- dl-ray submit / jobs / cluster (dl_ray/cluster): jobs on a Ray cluster, a local cluster ---
    from dl_ray.cluster import commands as cluster_commands

    cluster_commands.add_commands(sub)
    # dl-ray runs (dl_ray/run_index.py): run folders listed and compared, here or in a bucket
    from dl_ray import run_index

    run_index.add_command(sub)
    return parser, sub


def _dispatch(args: argparse.Namespace, sub, console: Console) -> int:
    """Run the command ``args`` names (heavy modules are imported only by the command that needs them)."""
    from dl_ray import run_index
    from dl_ray.cluster import commands as cluster_commands

    if args.command == "list":
        return _list(console, args.name)
    if args.command == "describe":
        from dl_ray.describe import describe_job

        print(describe_job(args.job, args.overrides))
        return 0
    if args.command == "runs":
        return run_index.command(args, console)
    if args.command in cluster_commands.COMMANDS:
        return cluster_commands.run(args, main, sub.choices, console)
    if args.command == "dqn":
        return _dqn(args, console)
    if args.command == "analyze":
        from dl_ray.analysis import command

        return command(args.job, args.overrides, console)
    if args.command == "eval":
        return _eval(args, console)
    if args.command == "tune":
        from dl_ray.tune.sweep import command

        return command(args.sweep, args.overrides, console, resume=args.resume, dry_run=args.dry_run, verbose=args.verbose)
    return _train(args, console)


def _eval_command(sub) -> None:
    """dl-ray eval (dl_ray/api.py evaluate_runs), by the run's kind: a classifier or regressor (dl_ray/eval_supervised.py:
    confusion matrix, most confident mistakes), a seq2seq run (dl_ray/eval_seq2seq.py: BLEU, beam search, error
    analysis, attention maps), an autoencoder / VAE / GAN / language model (dl_ray/eval_generative.py: test metrics,
    its pictures or samples), a detector (dl_ray/eval_detection.py), a Siamese net (dl_ray/eval_siamese.py:
    verification, recognition, one-shot) or an RL run (dl_ray/rl/evaluate.py: evaluation episodes again, video)."""
    evaluate = sub.add_parser("eval", help="evaluate a trained run by its kind: a classifier's confusion matrix and mistakes, "
                                           "seq2seq decoding (BLEU, beam, error analysis), a generative model's pictures, "
                                           "an RL agent (evaluation episodes, video)")
    evaluate.add_argument("runs", nargs="+", metavar="RUN_DIR_OR_JOB", help="run folder (runs/NAME) or its job YAML; several compare")
    evaluate.add_argument("--beam", type=int, help="seq2seq: beam width B compared with greedy search (default 3; 1 = greedy only)")
    evaluate.add_argument("--alpha", type=float, help="seq2seq: length normalisation, rank by sum log P / T^alpha (default 0.7)")
    evaluate.add_argument("--episodes", type=int, help="RL: evaluation episodes (default: the job's evaluation.episodes)")
    evaluate.add_argument("--epsilon", type=float, help="DQN: exploration while evaluating (default: the job's evaluation.epsilon)")
    evaluate.add_argument("--weights", choices=["best", "last"],
                          help="best checkpoint (default) or latest; DQN: best evaluation's weights or last checkpoint's")
    evaluate.add_argument("--video", action="store_true", help="DQN on Atari: also record one game as eval_<weights>.gif")
    evaluate.add_argument("--seed", type=int, help="RL: seed of the evaluation envs (default: the job's seed + 1)")


def _eval(args: argparse.Namespace, console: Console) -> int:
    from dl_ray.api import evaluate_runs

    evaluate_runs(args.runs, weights=args.weights, beam=args.beam, alpha=args.alpha, episodes=args.episodes,
                  epsilon=args.epsilon, video=args.video, seed=args.seed, console=console)
    return 0


def _job_command(sub, name: str, positional: str, help: str, what: str, example: str,
                 starts: bool = True) -> argparse.ArgumentParser:
    """A subcommand that runs one job file: FILE [--set PATH=VALUE ...] [--dry-run] [--verbose] (these two only
    for a command that ``starts`` something)."""
    cmd = sub.add_parser(name, help=help)
    cmd.add_argument(positional, help=what)
    cmd.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                     help=f"override a field, e.g. --set {example} (repeatable)")
    if not starts:
        return cmd
    cmd.add_argument("--dry-run", action="store_true", help="validate and print the resolved spec, start nothing")
    cmd.add_argument("--verbose", action="store_true", help="show Ray's own logs")
    return cmd


def _train(args: argparse.Namespace, console: Console) -> int:
    from dl_ray import api

    if api.is_style_transfer(args.job):  # pixels optimised, no dataset (dl_ray/style)
        from dl_ray.style.run import fit

        fit(args.job, args.overrides, console, dry_run=args.dry_run)
        return 0
    spec = api.job_spec(args.job, args.overrides)
    if args.dry_run:
        from dl_ray.train.runner import dry_run_plan

        _print_spec(spec, console)
        print(dry_run_plan(spec))  # a YAML comment: the printed spec stays a job file
        return 0
    api.fit(spec, console=console, verbose=args.verbose)
    return 0


def _dqn(args: argparse.Namespace, console: Console) -> int:
    from dl_ray.rl.driver import check, run
    from dl_ray.rl.spec import load_rl_spec

    spec = load_rl_spec(args.job, args.overrides)
    if args.dry_run:
        from dl_ray.rl.plan import dry_run_plan

        check(spec)
        _print_spec(spec, console)
        print(dry_run_plan(spec, console.width))  # YAML comments: the printed spec stays a job file
        return 0
    run(spec, console, verbose=args.verbose)
    return 0


def _print_spec(spec, console: Console) -> int:
    import yaml

    print(yaml.safe_dump(spec.to_dict(), sort_keys=False), end="")  # plain: rich would wrap long lines
    return 0


def _list(console: Console, name: str | None = None) -> int:
    from dl_ray.listing import details, overview

    for line in details(name, console.width) if name else overview(console.width):  # a pipe's: 80 (or COLUMNS)
        console.print(line, highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
