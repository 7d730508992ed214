"""A trained dates model on dates written by a different generator: the outside check of issue 13, part 6.

The dates here are written with ``datetime.strftime`` templates and Python's ``random`` (nothing from
``dl_ray.data.dates``' generator), in the forms the issue lists: year-first numbers with slashes
(2042/11/20), year-first and day-first abbreviated months (2021-May-12, 18-Jun-2046), ordinals
(2nd June 1974), and the other orders, separators, weekday prefixes, casings and spacings people write.
Numbers are read day-first unless only month-first fits (month-first numeric dates have day > 12), and
years have four digits, as the generator's docstring promises. It prints exact match (greedy decoding)
overall and per template, the wrong outputs, and exits 1 below the goal (99.5 %), 2 on a bad --run.

    python benchmarks/dates_forms.py --run runs/dates_attention
"""
from __future__ import annotations

import argparse
import datetime as dt
import random
import sys
from collections import defaultdict
from pathlib import Path


def ordinal(n: int) -> str:
    return str(n) + ("th" if n in (11, 12, 13) else ["th", "st", "nd", "rd"][n % 10] if n % 10 < 4 else "th")


# (name, writer): strftime in the C locale spells English month and weekday names
TEMPLATES = [
    ("Y/m/d", lambda d: d.strftime("%Y/%m/%d")),
    ("Y-b-d", lambda d: d.strftime("%Y-%b-%d")),
    ("d-b-Y", lambda d: d.strftime("%d-%b-%Y")),
    ("ord B Y", lambda d: f"{ordinal(d.day)} {d:%B %Y}"),
    ("B ord, Y", lambda d: f"{d:%B} {ordinal(d.day)}, {d.year}"),
    ("d/m/Y", lambda d: d.strftime("%d/%m/%Y")),
    ("m/d/Y (day > 12)", lambda d: f"{d.month}/{d.day}/{d.year}"),
    ("d.m.Y", lambda d: f"{d.day}.{d.month}.{d.year}"),
    ("Y.m.d", lambda d: d.strftime("%Y.%m.%d")),
    ("Y-m-d", lambda d: d.isoformat()),
    ("d m Y", lambda d: d.strftime("%d %m %Y")),
    ("B d, Y", lambda d: f"{d:%B} {d.day}, {d.year}"),
    ("b d Y", lambda d: f"{d:%b} {d.day} {d.year}"),
    ("d B Y", lambda d: f"{d.day} {d:%B %Y}"),
    ("d b Y", lambda d: d.strftime("%d %b %Y")),
    ("Y B d", lambda d: f"{d:%Y %B} {d.day}"),
    ("b/d/Y", lambda d: d.strftime("%b/%d/%Y")),
    ("A, d B Y", lambda d: f"{d:%A}, {d.day} {d:%B %Y}"),
    ("A, B d, Y", lambda d: f"{d:%A, %B} {d.day}, {d.year}"),
    ("a b d Y (ctime)", lambda d: d.strftime("%a %b %d %Y")),
    ("a, d b Y", lambda d: d.strftime("%a, %d %b %Y")),
    ("A ord of B Y", lambda d: f"{d:%A} {ordinal(d.day)} of {d:%B %Y}"),
]


def outside_dates(n: int, seed: int) -> tuple[list[str], list[str], list[str]]:
    """``n`` (text, ISO target, template name) triples over 1900-2099, with casing and spacing variations."""
    rng = random.Random(seed)
    texts, targets, names = [], [], []
    while len(texts) < n:
        day = dt.date(1900, 1, 1) + dt.timedelta(days=rng.randrange(73_049))
        name, write = rng.choice(TEMPLATES)
        if name.startswith("m/d/Y") and day.day <= 12:
            continue  # "6/2/1974" would be read day-first
        text = write(day)
        text = rng.choice([str, str, str, str.lower, str.upper, str.title])(text)
        if rng.random() < 0.15:
            text = rng.choice([lambda t: " " + t, lambda t: t + "  ", lambda t: t.replace(" ", "  ", 1)])(text)
        texts.append(text), targets.append(day.isoformat()), names.append(name)
    return texts, targets, names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/dates_attention"), help="trained run folder or job file")
    parser.add_argument("--n", type=int, default=1000, help="dates to write")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--goal", type=float, default=0.995, help="exact match to reach")
    args = parser.parse_args()

    from dl_ray.data.dates import decode, encode
    from dl_ray.errors import SpecError
    from dl_ray.eval_seq2seq import decode_all, load_run

    try:
        run = load_run(args.run)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    texts, targets, names = outside_dates(args.n, args.seed)
    vocab = run.data.meta["source_vocab"]
    x = encode(texts, {c: i for i, c in enumerate(vocab)}, max(map(len, texts)), eos=False)
    decoded, _ = decode_all(run.model, x, beam=1, alpha=0.0)
    outputs = [decode(row, run.model.vocab) for row in decoded.tokens]
    by_name = defaultdict(list)
    for output, target, name in zip(outputs, targets, names):
        by_name[name].append(output == target)
    exact = sum(o == t for o, t in zip(outputs, targets)) / len(targets)
    print(f"{run.run_dir.name} ({run.checkpoint.name}) on {len(texts)} outside dates, greedy decoding")
    for name, _ in TEMPLATES:
        right = by_name[name]
        print(f"  {name:<18} {sum(right):>4}/{len(right):<4} {100 * sum(right) / max(len(right), 1):6.1f} %")
    for text, output, target in zip(texts, outputs, targets):
        if output != target:
            print(f"  wrong: {text!r} -> {output} (expected {target})")
    print(f"exact match {100 * exact:.2f} % (goal {100 * args.goal:.1f} %)")
    return 0 if exact >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
