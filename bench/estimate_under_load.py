"""Cost estimate under load: one spec's estimate on an idle host and beside CPU-bound processes.

    python bench/estimate_under_load.py [--rounds 3] [--hogs 2] [--max-rows 0]

Estimates one trial of the default spec (``ModelSpec()``) on the default dataset
(``DatasetRef()``, MovieLens-100k) with ``ranking_models.cost.estimate_seconds_range``,
once on the host as it is ("idle") and once with ``--hogs`` processes spinning
``while True: pass`` beside it ("loaded"), and prints both estimates, their ranges and the
ratio loaded / idle of the point estimates. The estimate's calibration is cached per
process, so each one runs in a fresh interpreter. The two conditions alternate over the
rounds (idle first in even rounds, loaded first in odd ones) and the medians of the rounds
are compared, so drift in the machine's speed weighs on both alike; the worst single round
is printed too.

"Idle" means nothing of ours beside the estimate; the host's 1-minute load average at the
start is printed, since other work on the host weighs on that condition too.

Exits non-zero when the ratio of the medians, or its inverse, reaches ``LIMIT`` (2x): an
estimate that moves that much with the host's load, either way, is no basis for an
approved budget.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts import DatasetRef, ModelSpec

ROOT = Path(__file__).resolve().parents[1]

LIMIT = 2.0
HOG = "while True: pass"
# Lets the CPU-bound processes get going before the estimate starts.
SETTLE_S = 0.5
CONDITIONS = ("idle", "loaded")


def measure(max_rows: int) -> dict[str, float]:
    """The estimate in this process (the child's side): (low, high) s and calibration time."""
    # Imported here: only the children need torch; the parent just starts and reads them.
    from ranking_models.cost import estimate_seconds_range
    from ranking_models.datasets import load_dataset

    spec, dataset = ModelSpec(), DatasetRef(max_rows=max_rows)
    # Loading the data is cached per process and is not part of the calibration.
    load_dataset(dataset, max_table_rows=spec.max_table_rows)
    started = time.perf_counter()
    low, high = estimate_seconds_range(spec, dataset)
    return {"low_s": low, "high_s": high, "calibration_s": time.perf_counter() - started}


def measure_in_subprocess(max_rows: int, hogs: int) -> dict[str, float]:
    """``measure`` in a fresh interpreter, with ``hogs`` CPU-bound processes running beside it."""
    # sys.executable, not a launcher such as a pyenv shim: killing a shim's pid would leave
    # the spinning interpreter it started running.
    spinning: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(hogs):
            spinning.append(subprocess.Popen([sys.executable, "-c", HOG]))
        if spinning:
            time.sleep(SETTLE_S)
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", "--max-rows", str(max_rows)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        for process in spinning:
            process.kill()
        for process in spinning:
            process.wait()
    if child.returncode != 0:
        raise RuntimeError(f"estimate subprocess failed:\n{child.stderr}")
    return json.loads(child.stdout.splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, float]:
    """Measures both conditions over the rounds and prints the table; returns the figures."""
    rounds: dict[str, list[dict[str, float]]] = {c: [] for c in CONDITIONS}
    print(
        f"estimate of one trial of ModelSpec() on {DatasetRef().name}"
        f"{f' (max_rows {args.max_rows})' if args.max_rows else ''}, {os.cpu_count()} cores, "
        f"loaded = {args.hogs} CPU-bound processes beside it, {args.rounds} rounds, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )
    print(f"{'round':<7}{'condition':<11}{'low s':>9}{'high s':>9}{'calibration s':>15}")
    for r in range(args.rounds):
        # Alternate which condition goes first, so that drift hits both alike.
        for condition in CONDITIONS if r % 2 == 0 else CONDITIONS[::-1]:
            hogs = args.hogs if condition == "loaded" else 0
            result = measure_in_subprocess(args.max_rows, hogs)
            rounds[condition].append(result)
            print(
                f"{r:<7}{condition:<11}{result['low_s']:>9.3f}{result['high_s']:>9.3f}"
                f"{result['calibration_s']:>15.2f}"
            )
    figures: dict[str, float] = {}
    for condition in CONDITIONS:
        for key in ("low_s", "high_s", "calibration_s"):
            figures[f"{condition}_{key}"] = statistics.median(r[key] for r in rounds[condition])
    figures["ratio"] = figures["loaded_low_s"] / figures["idle_low_s"]
    figures["high_ratio"] = figures["loaded_high_s"] / figures["idle_high_s"]
    figures["swing"] = max(figures["ratio"], 1.0 / figures["ratio"])
    figures["worst_round_swing"] = max(
        max(loaded["low_s"] / idle["low_s"], idle["low_s"] / loaded["low_s"])
        for idle, loaded in zip(rounds["idle"], rounds["loaded"], strict=True)
    )
    print(f"{'median':<18}{'estimate s':>12}{'range s':>16}{'range h':>22}")
    for condition in CONDITIONS:
        low, high = figures[f"{condition}_low_s"], figures[f"{condition}_high_s"]
        print(
            f"{condition:<18}{low:>12.3f}{f'{low:.3f}-{high:.3f}':>16}"
            f"{f'{low / 3600:.5f}-{high / 3600:.5f} h':>22}"
        )
    print(
        f"loaded / idle: {figures['ratio']:.2f}x (high end {figures['high_ratio']:.2f}x; "
        f"worst round, either way, {figures['worst_round_swing']:.2f}x; "
        f"must stay under {LIMIT:g}x either way)"
    )
    return figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes when loaded")
    parser.add_argument("--max-rows", type=int, default=0, help="dataset rows (0 = all)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Entry point; returns the figures (for the smoke test)."""
    args = parse_args(argv)
    if args.child:
        figures = measure(args.max_rows)
        print(json.dumps(figures))
        return figures
    return run(args)


if __name__ == "__main__":
    figures = main()
    sys.exit(1 if figures.get("swing", 0.0) >= LIMIT else 0)
