"""Hyperparameter sweeps over any dotted field of a job, on Ray Tune.

* :mod:`dl_ray.tune.spec` — the sweep file (a job plus a ``tune:`` section), checked before anything starts;
* :mod:`dl_ray.tune.trial` — what one trial runs: the generic loop (train) or an evaluator (evaluate);
* :mod:`dl_ray.tune.evaluators` — registry of "evaluate this checkpoint with these settings" functions;
* :mod:`dl_ray.tune.sweep` — the driver: Tuner (or Tuner.restore), schedulers, search, concurrency;
* :mod:`dl_ray.tune.results` — results.csv, best.yaml, plots, the final table.
* :mod:`dl_ray.tune.pbt` — population based training: the budgeted scheduler, every exploit printed and kept.

Importing this package does not import Ray (model files may register evaluators).
"""
