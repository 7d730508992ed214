"""Judging generated digits with the project's own LeNet-5: confidence, class coverage and Frechet distance.

A trained ``lenet5`` run (``dl-ray train jobs/mnist_lenet.yaml``) is the judge. For a set of images in [0, 1]:

* ``confidence``: mean top-class probability (a recognisable digit scores near 1);
* ``class_shares``: the share of each predicted digit (mode collapse shows as missing digits; ``min_share``);
* the Frechet distance between two sets in the LeNet's penultimate (84-d) features, the FID recipe with LeNet
  in place of Inception: ``|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` (:func:`frechet_distance`).

:func:`judge_table` puts a GAN's samples next to reference points (a VAE's prior samples, real training
digits), all against the real test digits; ``python -m dl_ray.models.gan_judge RUN [--vae RUN]`` prints it.
No Ray in here.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric

BATCH = 500


# ---------------------------------------------------------------- the Frechet distance


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Tr((S1 S2)^(1/2)) = sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2) (symmetric PSD, so
    ``eigh`` applies; the same eigenvalues as S1 S2, which torchmetrics' FID takes with a general ``eigvals``)."""
    mu1, mu2, s1, s2 = (t.detach().double().cpu() for t in (mu1, mu2, sigma1, sigma2))
    vals, vecs = torch.linalg.eigh((s1 + s1.T) / 2)
    root1 = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    middle = root1 @ s2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * trace_root)


@dataclass
class Gaussian:
    """Mean and covariance (unbiased) of a set of feature vectors."""

    mean: torch.Tensor
    cov: torch.Tensor
    n: int

    @classmethod
    def of(cls, feats: torch.Tensor) -> "Gaussian":
        f = feats.detach().double().cpu()
        return cls(f.mean(0), torch.cov(f.T), len(f))

    @classmethod
    def from_sums(cls, total: torch.Tensor, outer: torch.Tensor, n: float) -> "Gaussian":
        mean = total / n
        return cls(mean, (outer - n * torch.outer(mean, mean)) / (n - 1), int(n))

    def distance(self, other: "Gaussian") -> float:
        return frechet_distance(self.mean, self.cov, other.mean, other.cov)


class FrechetToReal(Metric):
    """Frechet distance between the split's real images (streamed, summed over workers) and generated ones.

    ``fake(seed)`` returns the generated set's :class:`Gaussian`; ``seed(n, raw_total)`` (optional) derives the
    generated samples' seed from the split's size and the sum of its raw values (``update(feats, raw)``)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, fake, features: int, seed=None, **kwargs: Any):
        super().__init__(**kwargs)
        self.fake, self.seed = fake, seed or (lambda n, total: 0)
        self.add_state("total", torch.zeros(features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(features, features, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("raw_total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, feats: torch.Tensor, raw: torch.Tensor | None = None) -> None:
        f = feats.detach().to(self.total)
        self.total += f.sum(0)
        self.outer += f.T @ f
        self.n += len(f)
        if raw is not None:
            self.raw_total += raw.detach().double().sum()

    def compute(self) -> torch.Tensor:
        real = Gaussian.from_sums(self.total.cpu(), self.outer.cpu(), float(self.n))
        fake = self.fake(self.seed(self.n, self.raw_total))
        return torch.tensor(real.distance(fake), dtype=torch.float64)


# ---------------------------------------------------------------- the judge


class Judge:
    """A trained LeNet-5 run, loaded on first use; takes images with pixels in [0, 1].

    Not an ``nn.Module`` attribute of the GAN on purpose: its weights are no part of the GAN's checkpoint."""

    def __init__(self, run: str | Path):
        self.run = Path(run)
        self._model = None
        self._norm: tuple[float, float] | None = None
        self.spec = None

    @staticmethod
    def problem(run: str | Path) -> str | None:
        """Why ``run`` cannot judge (no checkpoint there), or None."""
        from dl_ray.train import checkpoints

        path = Path(run)
        if not ((path / checkpoints.STATE).is_file() or (path.is_dir() and checkpoints.saved(path))):
            return (f"model.judge: no trained LeNet run at {path}; train it first (`dl-ray train jobs/mnist_lenet.yaml` "
                    "writes runs/mnist_lenet) or set model.judge: null")
        return None

    def load(self) -> "Judge":
        if self._model is not None:
            return self
        from dl_ray.data import build_data
        from dl_ray.runs import load_model

        model, spec = load_model(self.run)
        if not (hasattr(model, "features") and hasattr(model, "classifier")):
            raise ValueError(f"model.judge: {self.run} is a {spec.model.name} run; the judge is a lenet5 classifier")
        pixels = getattr(spec.data, "pixels", "unit")
        if pixels == "standardized":  # the judge saw (x - mean) / std with its training split's statistics
            x = build_data(spec.data.model_copy(update={"pixels": "unit"})).train.tensors[0]
            self._norm = (float(x.mean()), float(x.std(unbiased=False)) + 1e-6)
        self.pixels, self.spec, self._model = pixels, spec, model
        return self

    @property
    def model(self):
        return self.load()._model

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        if self.pixels == "binary":
            return (images > 0.5).to(images.dtype)
        if self._norm:
            return (images - self._norm[0]) / self._norm[1]
        return images

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(penultimate features (N, 84), class probabilities (N, 10)) of images in [0, 1], on the images' device."""
        model = self.model.to(images.device)
        feats, probs = [], []
        for chunk in images.split(BATCH):
            h = model.classifier[:-1](model.features(self._inputs(chunk.float())))
            feats.append(h)
            probs.append(torch.softmax(model.classifier[-1](h).float(), dim=1))
        return torch.cat(feats), torch.cat(probs)

    def verdict(self, images: torch.Tensor) -> "Verdict":
        feats, probs = self(images)
        return Verdict.of(feats, probs)


@dataclass
class Verdict:
    """What the judge says about one set of images."""

    gaussian: Gaussian
    confidence: float
    class_shares: list[float]
    predictions: torch.Tensor
    top: torch.Tensor

    @classmethod
    def of(cls, feats: torch.Tensor, probs: torch.Tensor) -> "Verdict":
        top, pred = probs.max(dim=1)
        shares = torch.bincount(pred.cpu(), minlength=probs.shape[1]).double() / len(pred)
        return cls(Gaussian.of(feats), float(top.mean()), shares.tolist(), pred.cpu(), top.cpu())

    @property
    def min_share(self) -> float:
        return min(self.class_shares)


# ---------------------------------------------------------------- the table


def judge_table(judge: Judge, test_images: torch.Tensor, entries: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One row per named set of images: its size, Frechet distance to ``test_images``, confidence, class coverage."""
    device = test_images.device
    real = judge.verdict(test_images)
    rows = []
    for name, images in entries.items():
        v = judge.verdict(images.to(device))
        rows.append({"images": name, "n": len(images), "fd_to_test": v.gaussian.distance(real.gaussian),
                     "confidence": v.confidence, "min_class_share": v.min_share,
                     "class_shares": " ".join(f"{s:.3f}" for s in v.class_shares)})
    return rows


def write_table(rows: list[dict[str, Any]], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'images':<32} {'n':>6} {'FD to test':>11} {'confidence':>11} {'min class':>10}"]
    for r in rows:
        lines.append(f"{r['images']:<32} {r['n']:>6} {r['fd_to_test']:>11.3f} {r['confidence']:>11.4f} "
                     f"{r['min_class_share']:>10.3f}")
    return "\n".join(lines)


def vae_samples(run: str | Path | None, n: int, seed: int = 0) -> torch.Tensor | None:
    """``n`` prior samples of a trained VAE run (dl_ray/models/vae.py), or None when there is none to use."""
    if run is None or Judge.problem(run):
        return None
    try:
        from dl_ray.models.vae import sample_run
    except ImportError:
        return None
    return sample_run(run, n, seed)


def ensure_judge(run_dir: str | Path = "runs/mnist_lenet", job: str | Path | None = None,
                 overrides: list[str] = ()) -> Path:
    """The LeNet judge's run folder, trained through the project (``dl-ray train jobs/mnist_lenet.yaml``) if it has
    no checkpoint yet; a finished run is reused as is."""
    run_dir = Path(run_dir).absolute()
    if Judge.problem(run_dir) is None:
        return run_dir
    from dl_ray.cli import main

    job = job or Path(__file__).resolve().parents[2] / "jobs" / "mnist_lenet.yaml"
    sets = [f"storage.path={run_dir.parent}", f"storage.name={run_dir.name}", "tracking.wandb=disabled", *overrides]
    code = main(["train", str(job), *(a for s in sets for a in ("--set", s))])
    if code != 0:
        raise RuntimeError(f"training the LeNet judge ({job}) failed with exit code {code}")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m dl_ray.models.gan_judge GAN_RUN [--vae VAE_RUN] [--judge LENET_RUN]``: the judge table again."""
    import argparse

    from dl_ray.data import build_data
    from dl_ray.runs import load_model

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("run")
    p.add_argument("--vae")
    p.add_argument("--judge")
    p.add_argument("-n", type=int, default=1000)
    args = p.parse_args(argv)
    gan, spec = load_model(args.run)
    judge = Judge(args.judge or gan.cfg.judge)
    data = build_data(spec.data)
    entries = {"GAN samples": gan.sample(args.n, torch.Generator().manual_seed(0))}
    if (vae := vae_samples(args.vae or gan.cfg.reference_vae, args.n)) is not None:
        entries["VAE samples"] = vae
    entries["real training digits"] = data.train.tensors[0][: args.n]
    print(format_table(judge_table(judge, data.test.tensors[0], entries)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
