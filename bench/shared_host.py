"""Trials per hour on a shared host: the default thread budget against fixed ones.

    python bench/shared_host.py [--trials 6] [--hogs 2] [--max-rows 0] [--epochs 1]

Runs the same campaign slice (``--trials`` trials of the example campaign's baseline on
MovieLens-100k, seeds 0, 1, ...) as a training worker runs them, ``slots`` at once in
threads of one process, for 1 and 2 training slots, on the host as it is ("idle") and
beside ``--hogs`` processes spinning ``while True: pass`` ("loaded"), under each thread
setting:

* ``auto``: the default budget (``ranking_models.threads``: cores / slots, less the
  cores others keep busy, rechecked as trials train);
* ``fixed N``: ``REA_TRIAL_THREADS=N`` for N = 1 and the host's cores;
* ``fixed N passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (threads sleep at
  barriers instead of spinning).

Each run is a fresh process (the OpenMP wait policy is read when torch loads), and a run
that passes ``--limit-s`` is stopped and counted at its elapsed time (a lower bound of its
slowness). Prints trials per hour for every cell, the loaded / idle ratio, auto against the
best fixed setting of its cell, and 2 slots against 1; exits non-zero when auto is more
than ``LIMIT`` x slower than the best fixed setting, or 2 slots are slower than 1.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Run as a script from anywhere: the repository root holds the packages.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGN = ROOT / "examples" / "ml100k-campaign.json"
LIMIT = 1.2
HOG = "while True: pass"
SETTLE_S = 0.5
CONDITIONS = ("idle", "loaded")


def settings(cores: int) -> dict[str, dict[str, str]]:
    """Thread settings by name: their environment (empty: the default budget)."""
    out: dict[str, dict[str, str]] = {"auto": {}}
    for n in sorted({1, cores}):
        out[f"fixed {n}"] = {"REA_TRIAL_THREADS": str(n)}
        if n > 1:
            out[f"fixed {n} passive"] = {"REA_TRIAL_THREADS": str(n), "OMP_WAIT_POLICY": "PASSIVE"}
    return out


def run_slice(slots: int, trials: int, max_rows: int, epochs: int) -> dict[str, float]:
    """The child's side: ``trials`` trials, ``slots`` at once in threads, as a worker runs them."""
    from concurrent.futures import ThreadPoolExecutor

    from contracts import CampaignRequest, DatasetRef
    from ranking_models import threads
    from ranking_models.datasets import load_dataset
    from ranking_models.trainer import train

    request = CampaignRequest.model_validate_json(CAMPAIGN.read_text())
    dataset = DatasetRef(max_rows=max_rows) if max_rows else request.dataset
    base = request.baseline.model_copy(update={"epochs": epochs})
    load_dataset(dataset, max_table_rows=base.max_table_rows)  # cached, as in a worker
    threads.configure(slots=slots)
    specs = [base.model_copy(update={"seed": s}) for s in range(trials)]
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=slots) as pool:
        list(pool.map(lambda spec: train(spec, dataset, device="cpu"), specs))
    return {"wall_s": time.perf_counter() - started}


def _child(env: dict[str, str], args: list[str], limit_s: float) -> tuple[float, bool]:
    """Wall seconds of one run in a fresh interpreter, and whether it finished in time."""
    started = time.perf_counter()
    try:
        out = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", *args],
            env=os.environ | env,
            capture_output=True,
            text=True,
            check=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, False
    return json.loads(out.stdout.strip().splitlines()[-1])["wall_s"], True


def _hogs(count: int) -> list[subprocess.Popen[bytes]]:
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(count)]
    time.sleep(SETTLE_S if count else 0)
    return hogs


def per_hour(trials: int, wall_s: float) -> float:
    """Trials per hour of a run that took ``wall_s``."""
    return trials * 3600.0 / wall_s


def verdicts(rates: dict[tuple[int, str, str], float]) -> list[str]:
    """The failures: auto slower than ``LIMIT`` x the best fixed setting of a (slots,
    condition) cell, or 2 slots slower than 1 under auto. ``rates`` are trials per hour by
    (slots, condition, setting)."""
    failures = []
    cells = {(slots, condition) for slots, condition, _ in rates}
    for slots, condition in sorted(cells):
        fixed = [
            v
            for (s, c, name), v in rates.items()
            if (s, c) == (slots, condition) and name != "auto"
        ]
        best, auto = max(fixed), rates[(slots, condition, "auto")]
        if best > LIMIT * auto:
            failures.append(
                f"{slots} slot(s) {condition}: auto {auto:.0f}/h, best fixed {best:.0f}/h"
            )
    for condition in CONDITIONS:
        one, two = rates.get((1, condition, "auto")), rates.get((2, condition, "auto"))
        if one and two and two < one:
            failures.append(f"{condition}: 2 slots {two:.0f}/h < 1 slot {one:.0f}/h")
    return failures


def main(argv: Sequence[str] | None = None) -> dict[tuple[int, str, str], float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--hogs", type=int, default=2)
    parser.add_argument("--max-rows", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit-s", type=float, default=240.0)
    parser.add_argument("--settings", nargs="+", help="Only these settings (default: all).")
    parser.add_argument("--child", nargs=1, metavar="SLOTS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = run_slice(int(args.child[0]), args.trials, args.max_rows, args.epochs)
        print(json.dumps(figures))
        return {}
    cores = len(os.sched_getaffinity(0))
    print(f"{cores} cores, load average {os.getloadavg()[0]:.2f} at the start; {args.trials} "
          f"trials of {args.epochs} epoch(s) per run")  # fmt: skip
    rates: dict[tuple[int, str, str], float] = {}
    child = [
        "--trials",
        str(args.trials),
        "--max-rows",
        str(args.max_rows),
        "--epochs",
        str(args.epochs),
    ]
    for slots in args.slots:
        for condition in CONDITIONS:
            hogs = _hogs(args.hogs if condition == "loaded" else 0)
            try:
                chosen = {k: v for k, v in settings(cores).items() if k in (args.settings or [k])}
                for name, env in chosen.items():
                    wall, done = _child(env, [str(slots), *child], args.limit_s)
                    rates[(slots, condition, name)] = per_hour(args.trials, wall)
                    mark = "" if done else f" (stopped at the {args.limit_s:.0f} s limit)"
                    rate = rates[(slots, condition, name)]
                    print(f"{slots} slot(s) {condition:6s} {name:16s} {wall:7.1f} s "
                          f"{rate:8.0f} trials/h{mark}", flush=True)  # fmt: skip
            finally:
                for hog in hogs:
                    hog.kill()
                    hog.wait()
    _summary(rates, args.slots)
    failures = verdicts(rates)
    for failure in failures:
        print(f"FAIL {failure}")
    if failures and argv is None:
        sys.exit(1)
    return rates


def _summary(rates: dict[tuple[int, str, str], float], slots_list: Sequence[int]) -> None:
    for slots in slots_list:
        idle, loaded = rates[(slots, "idle", "auto")], rates[(slots, "loaded", "auto")]
        print(f"{slots} slot(s) auto: loaded / idle time {idle / loaded:.2f}x")
        for condition in CONDITIONS:
            fixed = {
                n: v
                for (s, c, n), v in rates.items()
                if (s, c) == (slots, condition) and n != "auto"
            }
            best = max(fixed, key=fixed.__getitem__)
            auto = rates[(slots, condition, "auto")]
            print(
                f"{slots} slot(s) {condition}: best fixed is {best!r}; it runs "
                f"{fixed[best] / auto:.2f}x auto's trials/h"
            )
    if 1 in slots_list and 2 in slots_list:
        for condition in CONDITIONS:
            ratio = rates[(2, condition, "auto")] / rates[(1, condition, "auto")]
            print(f"{condition}: 2 slots / 1 slot trials/h (auto) {ratio:.2f}")


if __name__ == "__main__":
    main()
