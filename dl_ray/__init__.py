"""dl_ray: every model of a deep-learning course, trained on Ray from a laptop to a GPU cluster.

The Python API (:mod:`dl_ray.api`)::

    import dl_ray

    summary = dl_ray.fit("jobs/mnist_lenet.yaml", ["training.epochs=3"], quiet=True)
    run = dl_ray.load("runs/mnist_lenet")      # spec, model, summary, metrics history
    dl_ray.evaluate("runs/mnist_lenet")        # as `dl-ray eval`
    dl_ray.registered()                        # models by kind, datasets

Importing ``dl_ray`` stays cheap: torch, Ray and the model families load on first use.
"""
from dl_ray.api import Run, evaluate, fit, job_spec, load, registered
from dl_ray.errors import RunError, SpecError

__version__ = "0.1.0"
__all__ = ["Run", "RunError", "SpecError", "evaluate", "fit", "job_spec", "load", "registered"]
