"""One-shot recognition of unseen digits by a Siamese network, against raw pixels and LeNet-5 features; and the
speed of embedding training through the generic loop against a plain PyTorch loop.

    python benchmarks/siamese_one_shot.py [--set model.miner=batch_hard ...] [--no-speed] [--no-one-shot] [--rounds 3]

(1) One-shot: trains the real jobs jobs/siamese/oneshot_triplet.yaml (the Siamese network, digits 0-6 of MNIST-5k
    only) and jobs/siamese/lenet_digits_0_6.yaml (a LeNet-5 classifier of the same size on the same digits), then
    on the test split (every digit; 7-9 never trained on) averages N-way 1-shot accuracy over 200 random galleries
    (one random image per class enrolled, every other image of those classes a query, nearest neighbour):
    3-way on the unseen 7-9 and 10-way, for the Siamese embedding, raw pixels (cosine) and the LeNet's penultimate
    features (cosine). Goals: the Siamese 3-way >= 0.85 and 10-way >= 0.80.
(2) Speed: train samples/s of the Siamese job (no augmentation, constant LR, W&B off) through `dl-ray train` in
    local mode vs a plain PyTorch loop over the same model, P x K batches, loss and optimizer, in this process;
    each round runs both, alternating which goes first; first epoch dropped; the ratio is the median over rounds.
    Goal >= 0.95.
Exits 1 when a goal is missed.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SIAMESE = ROOT / "jobs" / "siamese" / "oneshot_triplet.yaml"
LENET = ROOT / "jobs" / "siamese" / "lenet_digits_0_6.yaml"
GOALS = {"3-way unseen": 0.85, "10-way": 0.80}


def one_shot(storage: Path, sets: list[str]) -> list[str]:
    """Train both jobs, print the one-shot table; the goals missed."""
    import dl_ray
    from dl_ray.data import build_data
    from dl_ray.eval_siamese import GALLERIES, cosine_dissimilarity, embed, one_shot_table
    from dl_ray.runs import load_model

    runs = {}
    for job, extra in ((SIAMESE, sets), (LENET, [])):
        started = time.perf_counter()
        summary = dl_ray.fit(job, [f"storage.path={storage}", "tracking.wandb=disabled", *extra], quiet=True)
        runs[job] = load_model(storage / job.stem)
        print(f"{job.name}: {summary['epochs_run']} epochs, best {summary['best_epoch']}, {time.perf_counter() - started:.0f} s")
    (siamese, spec), (lenet, _) = runs[SIAMESE], runs[LENET]
    data = build_data(spec.data)
    x, y = data.test.tensors
    unseen = sorted(set(y.tolist()) - set(spec.data.train_classes))
    with torch.no_grad():
        penultimate = lenet.classifier[:-1](lenet.features(x))
    table = one_shot_table({"siamese": (embed(siamese, x), siamese.dissimilarity),
                            "raw pixels": (x, cosine_dissimilarity),
                            "LeNet-5 features (0-6 classifier)": (penultimate, cosine_dissimilarity)}, y, unseen)
    print(f"one-shot on the test split ({len(y)} images), mean over {GALLERIES} random galleries:")
    for method, accs in table.items():
        print(f"  {method:36s} " + "   ".join(f"{k} {v:.3f}" for k, v in accs.items()))
    return [f"{k} {table['siamese'][k]:.3f} < {goal}" for k, goal in GOALS.items() if table["siamese"][k] < goal]


def plain_pytorch(epochs: int) -> float:
    """The loop anyone would write by hand: same model, batches, loss and optimizer (L2 as weight decay)."""
    from train_overhead import PLAIN

    from dl_ray.data import build_data
    from dl_ray.data.pairs import class_batches
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec
    from dl_ray.train.optim import make_optimizer

    spec = load_spec(SIAMESE, PLAIN)
    data = build_data(spec.data)
    torch.manual_seed(0)
    model = build_model(spec.model, data.io)
    opt = make_optimizer(model, spec.optimizer, spec.regularization.l2)
    x, y = data.train.tensors
    views = SimpleNamespace(nets=model.networks(), autocast=nullcontext())  # what batch_loss reads
    rates = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.train()
        for rows in class_batches(y, spec.training.batch_size, spec.data.per_class, epoch):
            loss = model.batch_loss(x[rows], y[rows], views)
            opt.zero_grad()
            loss.backward()
            opt.step()
        rates.append(len(x) / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def speed(storage: Path, rounds: int, epochs: int) -> list[str]:
    from train_overhead import dl_ray_in_process

    ratios = []
    for r in range(rounds):
        ours = lambda: dl_ray_in_process(SIAMESE, epochs, storage, f"speed_{r}")  # noqa: E731
        if r % 2 == 0:
            base, mine = plain_pytorch(epochs), ours()
        else:
            mine, base = ours(), plain_pytorch(epochs)
        ratios.append(mine / base)
        print(f"round {r + 1}: plain PyTorch {base:7.0f} samples/s, dl-ray local mode {mine:7.0f}  ratio {mine / base:.3f}")
    ratio = statistics.median(ratios)
    print(f"embedding training, generic loop / plain PyTorch: median ratio {ratio:.3f} over {rounds} rounds   (goal >= 0.95)")
    return [f"speed ratio {ratio:.3f} < 0.95"] if ratio < 0.95 else []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", action="append", default=[], help="override of the Siamese job (repeatable)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--speed-epochs", type=int, default=4)
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--no-one-shot", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    missed = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.no_one_shot:
            missed += one_shot(Path(tmp), args.set)
        if not args.no_speed:
            missed += speed(Path(tmp), args.rounds, args.speed_epochs)
    if missed:
        print("MISSED: " + "; ".join(missed))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
