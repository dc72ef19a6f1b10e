"""How well the planner's cost model (``ranking_models.tasks.relative_cost``) predicts what
trials cost, from the agent benchmark's own runs.

    python -m bench.cost_model [.rea/bench/agent_vs_baselines.json]

Every whole-space trial the searchers finished (random, TPE, random-affordable) has a spec
and a measured cost; its baseline's cost on the same seed is the run's first trial. For each
task this prints how far the model's ratio is from the measured one (mean and root mean
square of log(predicted / measured): 0 is exact, +0.5 is 1.65x too dear), costed by FLOPs
alone, with the step's fixed part (``STEP_OVERHEAD_WORK``), and with the fixed part that
fits these trials best. Nothing trains: it reads the JSON and the tasks' data.
"""

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from scipy.optimize import minimize_scalar

from bench.tasks import seeded
from contracts import CampaignRequest, DatasetRef, ModelSpec
from ranking_models.errors import TrainingError
from ranking_models.tasks import STEP_OVERHEAD_WORK, relative_cost

SEARCHERS = ("random", "tpe", "random-affordable")


class Point(NamedTuple):
    task: str
    baseline: ModelSpec
    candidate: ModelSpec
    dataset: DatasetRef
    ratio: float  # measured: the trial's cost over its run's baseline trial


def measured(path: Path) -> list[Point]:
    """Every finished searcher trial with its cost over its run's baseline trial."""
    payload = json.loads(path.read_text())
    requests = {
        name: CampaignRequest.model_validate(r)
        for name, r in payload["settings"]["requests"].items()
    }
    points: list[Point] = []
    for run in payload["runs"]:
        if run["method"] not in SEARCHERS or not run["trials"]:
            continue
        request = seeded(requests[run["task"]], run["seed"])
        base_cost = run["trials"][0]["device_hours"]
        for trial in run["trials"][1:]:
            if trial["state"] != "succeeded" or not base_cost:
                continue
            try:
                candidate = request.baseline.with_changes(trial["changes"])
            except ValueError:
                continue
            points.append(
                Point(
                    run["task"],
                    request.baseline,
                    candidate,
                    request.dataset,
                    trial["device_hours"] / base_cost,
                )
            )
    return points


def log_errors(points: Sequence[Point], step_overhead: float) -> np.ndarray:
    """log(predicted / measured) of each point the model can cost."""
    errors = []
    for p in points:
        try:
            predicted = relative_cost(p.baseline, p.candidate, p.dataset, step_overhead)
        except TrainingError:  # a spec that does not build here (it finished elsewhere)
            continue
        errors.append(math.log(predicted / p.ratio))
    return np.array(errors)


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "json", type=Path, nargs="?", default=Path(".rea/bench/agent_vs_baselines.json")
    )
    points = measured(parser.parse_args(argv).json)
    fit = minimize_scalar(
        lambda x: float(np.mean(log_errors(points, 10.0**x) ** 2)),
        bounds=(3.0, 10.0),
        method="bounded",
        options={"xatol": 0.02},
    )
    overheads = {"FLOPs only": 0.0, "with the step": STEP_OVERHEAD_WORK, "best fit": 10.0**fit.x}
    print(f"{len(points)} finished searcher trials; log(predicted / measured cost ratio):")
    print(f"{'task':24s} {'n':>4s}  " + "  ".join(f"{name:>17s}" for name in overheads))
    for task in sorted({p.task for p in points}):
        mine = [p for p in points if p.task == task]
        cells = [log_errors(mine, k) for k in overheads.values()]
        shown = "  ".join(f"{e.mean():+.2f} (rms {np.sqrt(np.mean(e**2)):.2f})" for e in cells)
        print(f"{task:24s} {len(mine):4d}  {shown}")
    summary = {}
    for name, k in overheads.items():
        e = log_errors(points, k)
        summary[name] = float(np.sqrt(np.mean(e**2)))
        print(f"all, {name} (step overhead {k:.3g}): mean {e.mean():+.3f}, rms {summary[name]:.3f}")
    return summary


if __name__ == "__main__":
    main()
