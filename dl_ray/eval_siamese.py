"""``dl-ray eval`` of a Siamese run (kind metric_learning): verification, recognition and one-shot reports.

As the course defines them, on the embeddings f(x) of the run's best (or latest) checkpoint:

* **verification** ("is this the claimed person?"): same / different by d(x1, x2) <= tau over every pair of a split.
  tau is chosen on the validation split (the best balanced accuracy: pairs are ~90 % different); the test split
  reports ROC AUC, the equal error rate (false accept rate = false reject rate) and the accuracy at tau.
* **recognition** ("who is this?"): a :class:`Gallery` of precomputed embeddings, one image per enrolled class;
  a query is the class of its nearest gallery embedding, or "unknown" when even that one is further than tau.
  Adding a person adds one embedding, no retraining: the report enrols the classes never trained on afterwards.
* **one-shot**: N-way 1-shot accuracy over random galleries (one random test image per class, the rest are
  queries), for the unseen classes alone and for every class, against raw pixels (cosine nearest neighbour).

Pictures: ``roc.png`` (test ROC with the EER point) and ``tsne.png`` (t-SNE of the test embeddings, unseen classes
marked). Everything in ``eval_test.json``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console

from dl_ray.errors import SpecError

UNKNOWN = -1
GALLERIES = 200
Dissimilarity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_dissimilarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """1 - cos(a_i, b_j) of flattened rows: the raw-pixel (and any feature) baseline's nearest neighbour."""
    return 1 - F.normalize(a.flatten(1).float(), dim=1) @ F.normalize(b.flatten(1).float(), dim=1).t()


def pair_scores(d: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(dissimilarity, same) of every unordered pair, from a square dissimilarity matrix."""
    i, j = torch.triu_indices(len(labels), len(labels), 1)
    return d[i, j].cpu().numpy(), (labels[i] == labels[j]).cpu().numpy()


def choose_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    """tau maximising the balanced accuracy (mean of the true accept and true reject rates) of d <= tau."""
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], same[order]
    tar = np.cumsum(s) / max(s.sum(), 1)  # accepting the first k+1 pairs
    trr = 1 - np.cumsum(~s) / max((~s).sum(), 1)
    best = int(np.argmax(tar + trr))
    return float(d[best] if best + 1 == len(d) else (d[best] + d[best + 1]) / 2)


def verification(dist: np.ndarray, same: np.ndarray, tau: float) -> dict[str, float]:
    """ROC AUC, equal error rate and the (balanced) accuracy of d <= tau on one split's pairs."""
    from sklearn.metrics import roc_auc_score, roc_curve

    far, tar, _ = roc_curve(same, -dist)
    k = int(np.argmin(np.abs(far - (1 - tar))))
    accept = dist <= tau
    tar_tau, trr_tau = accept[same].mean(), (~accept[~same]).mean()
    return {"auc": float(roc_auc_score(same, -dist)), "eer": float((far[k] + 1 - tar[k]) / 2), "threshold": tau,
            "true_accept_rate": float(tar_tau), "true_reject_rate": float(trr_tau),
            "balanced_accuracy": float((tar_tau + trr_tau) / 2), "accuracy": float((accept == same).mean()),
            "pairs": int(len(same)), "same_pairs": int(same.sum())}


@dataclass
class Gallery:
    """Enrolled embeddings and their classes; recognition is the nearest one, or UNKNOWN beyond ``threshold``."""

    dissimilarity: Dissimilarity
    threshold: float = float("inf")
    emb: list[torch.Tensor] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def enrol(self, emb: torch.Tensor, label: int) -> None:
        """Add a person: one embedding, no retraining."""
        self.emb.append(emb.reshape(1, -1))
        self.labels.append(int(label))

    def recognise(self, queries: torch.Tensor) -> torch.Tensor:
        d = self.dissimilarity(queries, torch.cat(self.emb))
        best, at = d.min(1)
        labels = torch.tensor(self.labels)[at.cpu()]
        return torch.where(best.cpu() <= self.threshold, labels, torch.full_like(labels, UNKNOWN))


def pick_one_per_class(labels: torch.Tensor, classes: list[int], generator: torch.Generator,
                       where: str = "gallery") -> torch.Tensor:
    """One random index of each class; a class with no image is one SpecError line naming those that have."""
    picked = []
    for c in classes:
        members = torch.nonzero(labels == c).squeeze(1)
        if len(members) < 2:
            have = sorted({int(v) for v in labels.unique() if (labels == v).sum() >= 2})
            raise SpecError(f"{where}: class {c} has {len(members)} image(s) in the test split, and a one-shot gallery "
                            f"needs one to enrol and one to query; allowed classes: {', '.join(map(str, have))}")
        picked.append(members[torch.randint(len(members), (1,), generator=generator)])
    return torch.cat(picked)


def one_shot(d: torch.Tensor, labels: torch.Tensor, classes: list[int], galleries: int = GALLERIES,
             seed: int = 0) -> float:
    """Mean N-way 1-shot accuracy over ``galleries`` random galleries (N = len(classes)); ``d`` is the pool's
    square dissimilarity matrix; every pool image of those classes not in the gallery is a query."""
    g = torch.Generator().manual_seed(seed)
    queries_of = torch.isin(labels, torch.tensor(classes))
    accs = []
    for _ in range(galleries):
        gallery = pick_one_per_class(labels, classes, g)
        queries = torch.nonzero(queries_of).squeeze(1)
        queries = queries[~torch.isin(queries, gallery)]
        predicted = labels[gallery][d[queries][:, gallery].argmin(1)]
        accs.append(float((predicted == labels[queries]).float().mean()))
    return float(np.mean(accs))


def one_shot_table(features: dict[str, tuple[torch.Tensor, Dissimilarity]], labels: torch.Tensor,
                   unseen: list[int], galleries: int = GALLERIES) -> dict[str, dict[str, float]]:
    """{method: {"3-way unseen": acc, "10-way": acc}} for each (features, dissimilarity) on the same galleries."""
    every = sorted(int(c) for c in labels.unique())
    out = {}
    for name, (feats, dis) in features.items():
        d = dis(feats, feats)
        out[name] = {f"{len(unseen)}-way unseen": one_shot(d, labels, unseen, galleries),
                     f"{len(every)}-way": one_shot(d, labels, every, galleries)}
    return out


def recognition(model: Any, emb: torch.Tensor, labels: torch.Tensor, seen: list[int], unseen: list[int], tau: float,
                seed: int = 0) -> dict[str, float]:
    """Enrol one test image per seen class; score the other test images; then enrol one per unseen class."""
    gallery = Gallery(model.dissimilarity, tau)
    picked = pick_one_per_class(labels, seen + unseen, torch.Generator().manual_seed(seed))
    for i in picked[: len(seen)]:
        gallery.enrol(emb[i], labels[i])
    rest = torch.ones(len(labels), dtype=torch.bool)
    rest[picked] = False
    is_seen, is_unseen = rest & torch.isin(labels, torch.tensor(seen)), rest & torch.isin(labels, torch.tensor(unseen))
    report = {"enrolled": len(seen), "known_correct": float((gallery.recognise(emb[is_seen]) == labels[is_seen]).float().mean())}
    if unseen:
        report["strangers_rejected"] = float((gallery.recognise(emb[is_unseen]) == UNKNOWN).float().mean())
        for i in picked[len(seen):]:
            gallery.enrol(emb[i], labels[i])
        report["new_correct_after_enrolling"] = float((gallery.recognise(emb[is_unseen]) == labels[is_unseen]).float().mean())
        report["known_correct_after_enrolling"] = float((gallery.recognise(emb[is_seen]) == labels[is_seen]).float().mean())
    return report


@torch.no_grad()
def embed(model: Any, x: torch.Tensor, transform: Callable | None = None, batch: int = 1024) -> torch.Tensor:
    parts = []
    for chunk in x.split(batch):
        if transform is not None:
            chunk = transform((chunk, torch.zeros(len(chunk))))[0]
        parts.append(model(chunk))
    return torch.cat(parts)


def draw(run_dir: Path, dist: np.ndarray, same: np.ndarray, eer: float, emb: torch.Tensor, labels: torch.Tensor,
         unseen: list[int]) -> list[str]:
    """roc.png and tsne.png."""
    from sklearn.manifold import TSNE
    from sklearn.metrics import roc_curve

    from dl_ray.plots import pyplot

    plt = pyplot()
    far, tar, _ = roc_curve(same, -dist)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(far, tar, label="test pairs")
    ax.plot([eer], [1 - eer], "o", label=f"EER {eer:.3f}")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false accept rate", ylabel="true accept rate", title="verification ROC")
    ax.legend()
    fig.savefig(run_dir / "roc.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    xy = TSNE(init="pca", random_state=0, perplexity=min(30, len(emb) - 1)).fit_transform(emb.cpu().numpy())
    fig, ax = plt.subplots(figsize=(6, 6))
    for c in sorted(int(v) for v in labels.unique()):
        at = (labels == c).numpy()
        new = c in unseen
        ax.scatter(xy[at, 0], xy[at, 1], s=8, marker="x" if new else "o", label=f"{c}{' (unseen)' if new else ''}")
    ax.legend(markerscale=2, fontsize=7)
    ax.set(title="t-SNE of the test embeddings")
    fig.savefig(run_dir / "tsne.png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [str(run_dir / "roc.png"), str(run_dir / "tsne.png")]


def evaluate_run(run_dir: str | Path, which: Literal["best", "last"] = "best", console: Console | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Verification, recognition and one-shot reports of one metric-learning run; prints and returns them."""
    from dl_ray.runs import score_test

    run_dir = Path(run_dir)
    scored = score_test(run_dir, which, torch.device("cpu"))
    model, spec, data = scored.model.eval(), scored.spec, scored.data
    (xv, yv), (xt, yt) = data.val.tensors, data.test.tensors
    ev, et = embed(model, xv, data.batch_transform), embed(model, xt, data.batch_transform)
    seen = sorted(int(c) for c in data.train.tensors[1].unique())
    unseen = sorted(int(c) for c in yt.unique() if int(c) not in seen)
    tau = choose_threshold(*pair_scores(model.dissimilarity(ev, ev), yv))
    dist, same = pair_scores(model.dissimilarity(et, et), yt)
    report: dict[str, Any] = {"run": str(run_dir), "name": spec.name, "kind": spec.kind, "weights": which,
                              "checkpoint": str(scored.checkpoint), "metrics": scored.metrics,
                              "verification": {"test": verification(dist, same, tau)}}
    if unseen:
        new = torch.isin(yt, torch.tensor(unseen))
        pairs = pair_scores(model.dissimilarity(et[new], et[new]), yt[new])
        report["verification"]["test unseen classes"] = verification(*pairs, tau)
    report["recognition"] = recognition(model, et, yt, seen, unseen, tau, spec.training.seed)
    if unseen:
        report["one_shot"] = one_shot_table({"siamese": (et, model.dissimilarity), "raw pixels": (xt, cosine_dissimilarity)},
                                            yt, unseen)
    report["pictures"] = draw(run_dir, dist, same, report["verification"]["test"]["eer"], et, yt, unseen)
    (run_dir / "eval_test.json").write_text(json.dumps(report, indent=1))
    print_report(report, spec, len(yt), scored.checkpoint.name, which, console or Console())
    return report


def print_report(report: dict[str, Any], spec: Any, n: int, checkpoint: str, which: str, console: Console) -> None:
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"[bold]{spec.name}[/]: {spec.model.name} ({spec.model.route}) on {spec.data.name}, {n} test examples, "
        f"{checkpoint} ({which})")
    say("test: " + " · ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in report["metrics"].items()))
    for split, v in report["verification"].items():
        say(f"verification ({split}, {v['pairs']} pairs, {v['same_pairs']} same): AUC {v['auc']:.4f} · EER {v['eer']:.4f} · "
            f"at the validation threshold {v['threshold']:.3f}: balanced accuracy {v['balanced_accuracy']:.4f} "
            f"(accept same {v['true_accept_rate']:.3f}, reject different {v['true_reject_rate']:.3f}), "
            f"accuracy {v['accuracy']:.4f}")
    r = report["recognition"]
    line = (f"recognition (gallery: 1 image of each of {r['enrolled']} trained classes): "
            f"known queries correct {r['known_correct']:.4f}")
    if "strangers_rejected" in r:
        line += (f" · unseen-class queries answered 'unknown' {r['strangers_rejected']:.4f}; after enrolling one image of each "
                 f"unseen class: those correct {r['new_correct_after_enrolling']:.4f}, "
                 f"known {r['known_correct_after_enrolling']:.4f}")
    say(line)
    for method, accs in report.get("one_shot", {}).items():
        say(f"one-shot, {GALLERIES} random galleries, {method}: " + " · ".join(f"{k} {v:.4f}" for k, v in accs.items()))
    say(f"pictures: {', '.join(report['pictures'])}")
