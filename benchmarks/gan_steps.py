"""GAN training steps/s through the project's generic loop vs a plain PyTorch loop of the same two networks.

    python benchmarks/gan_steps.py [--job dcgan|1d] [--epochs 4] [--rounds 3] [--limit 1500] [--threads 1]

Both sides train the same generator and discriminator (built by the registry from the same job, same seed), with
the same Adam settings, the same batch size and the same data tensors, doing the same work per batch: one
discriminator step on real and fake in one forward pass (fakes under no_grad), then one generator step.
The project side is `dl-ray train` in this process (Ray Train local mode, ``num_workers: 0``); its train-phase
throughput is ``perf/train_samples_per_s`` of metrics.csv (evaluation and checkpoints are not training steps).
Per round, each side's median over its epochs after the first (warm-up); rounds are interleaved (plain, project,
plain, project, ...) so a load change on a shared machine hits both. Prints the median ratio of the rounds;
goal >= 0.95, exit code 1 when missed.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
JOBS = {"dcgan": ROOT / "jobs" / "gan" / "dcgan_mnist.yaml", "1d": ROOT / "jobs" / "gan" / "inverse_cdf_exponential.yaml"}
GOAL = 0.95


def overrides(job: str, epochs: int, limit: int | None) -> list[str]:
    sets = [f"training.epochs={epochs}", "tracking.wandb=disabled", "schedule.name=constant", "model.d_steps=1",
            "model.sample_every=0"]
    if job == "dcgan":
        sets += ["model.judge=null", "model.reference_vae=null"]
    if limit:
        sets += [f"data.limit={limit}"]
    return sets


def plain_pytorch(job: str, sets: list[str], epochs: int) -> float:
    """Steps/s of the loop anyone would write by hand for the same networks and data."""
    from dl_ray.data import build_data
    from dl_ray.models import build_model
    from dl_ray.spec import load_spec

    spec = load_spec(JOBS[job], sets)
    data = build_data(spec.data)
    torch.manual_seed(spec.training.seed)
    task = build_model(spec.model, data.io)
    G, D = task.g, task.d
    opt = {n: spec.optimizers[n] for n in ("generator", "discriminator")}
    og = torch.optim.Adam(G.parameters(), lr=opt["generator"].lr, betas=opt["generator"].betas)
    od = torch.optim.Adam(D.parameters(), lr=opt["discriminator"].lr, betas=opt["discriminator"].betas)
    x = data.train.tensors[0]
    bs, dim = spec.training.batch_size, spec.model.noise_dim
    draw = torch.rand if spec.model.noise == "uniform" else torch.randn
    rates = []
    for epoch in range(epochs):
        start, steps = time.perf_counter(), 0
        G.train(), D.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for idx in order.split(bs):
            real = x[idx]
            m = len(real)
            with torch.no_grad():
                fake = G(draw(m, dim))
            logits = D(torch.cat([real, fake])).flatten()
            d_loss = F.softplus(-logits[:m]).mean() + F.softplus(logits[m:]).mean()
            od.zero_grad(set_to_none=True)
            d_loss.backward()
            od.step()
            g_loss = F.softplus(-D(G(draw(m, dim))).flatten()).mean()
            og.zero_grad(set_to_none=True)
            g_loss.backward()
            og.step()
            steps += 1
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def project_loop(job: str, sets: list[str], storage: Path, name: str) -> float:
    """Steps/s of `dl-ray train` (local mode) on the same job: train-phase samples/s of each epoch / batch size."""
    from dl_ray.cli import main
    from dl_ray.spec import load_spec

    code = main(["train", str(JOBS[job]), *(a for s in [*sets, f"storage.path={storage}", f"storage.name={name}"]
                                             for a in ("--set", s))])
    if code != 0:
        raise SystemExit(f"dl-ray train failed with exit code {code}")
    spec = load_spec(JOBS[job], sets)
    with (storage / name / "metrics.csv").open() as f:
        rates = [float(r["perf/train_samples_per_s"]) for r in csv.DictReader(f)]
    from dl_ray.data import build_data

    n_train = len(build_data(spec.data).train)
    steps = -(-n_train // spec.training.batch_size)  # batches (= GAN steps) of one epoch
    return statistics.median(r * steps / n_train for r in rates[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=sorted(JOBS), default="dcgan")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median of their ratios)")
    parser.add_argument("--limit", type=int, default=1500, help="data.limit: examples used (small = quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both sides")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sets = overrides(args.job, args.epochs, args.limit)
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            plain = plain_pytorch(args.job, sets, args.epochs)
            ours = project_loop(args.job, sets, Path(tmp), f"round{r}")
            ratios.append(ours / plain)
            print(f"round {r + 1}: plain {plain:.1f} steps/s, dl-ray loop {ours:.1f} steps/s, ratio {ours / plain:.3f}",
                  flush=True)
    ratio = statistics.median(ratios)
    ok = ratio >= GOAL
    print(f"{args.job}: dl-ray loop / plain PyTorch GAN steps/s = {ratio:.3f} (median of {args.rounds} rounds; "
          f"goal >= {GOAL}) {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
