"""The benchmark's tasks: campaign request files, their quick versions, their seeding.

Every task is a ``CampaignRequest`` JSON file named by its stem (``examples/tasks/`` by
default). Search seed ``s`` moves the baseline's seed to ``s * SEED_STRIDE``, so every trial
seed of a search on it is offset from there.
"""

from dataclasses import dataclass
from pathlib import Path

from contracts import CampaignRequest

ROOT = Path(__file__).resolve().parents[1]
# Trial seeds of search seed s start at s * SEED_STRIDE; scoring seeds start far above them.
SEED_STRIDE = 1000
# --quick: the first task, cut to this many rows, with a small campaign.
QUICK_ROWS = 20_000
QUICK_REQUEST = {"seeds": 2, "exploitation_trials": 1, "max_seeds": 3}
QUICK_MAX_TRIALS = 40
# --quick: about this many seconds of training for openrea (the others match its spend).
QUICK_DEVICE_HOURS = 0.01  # 36 s


@dataclass
class Task:
    """One benchmark task: a campaign request, named by its file's stem."""

    name: str
    request: CampaignRequest


def load_tasks(folder: Path) -> list[Task]:
    """Every ``*.json`` request in ``folder``, by file name."""
    files = sorted(folder.glob("*.json"))
    if not files:
        raise SystemExit(f"--tasks: no *.json campaign requests in {folder}")
    return [Task(f.stem, CampaignRequest.model_validate_json(f.read_text())) for f in files]


def quick_task(task: Task) -> Task:
    """A tiny version of ``task``: fewer rows, one epoch and a small campaign.

    Only fields this version of the contracts has are set, so it works before and after the
    evidence protocol's fields land.
    """
    request = task.request
    extra = {k: v for k, v in QUICK_REQUEST.items() if k in CampaignRequest.model_fields}
    request = request.model_copy(
        update={
            "dataset": request.dataset.model_copy(update={"max_rows": QUICK_ROWS}),
            "baseline": request.baseline.model_copy(update={"epochs": 1}),
            "budget": request.budget.model_copy(
                update={"max_trials": QUICK_MAX_TRIALS, "device_hours": QUICK_DEVICE_HOURS}
            ),
            **extra,
        }
    )
    return Task(task.name, CampaignRequest.model_validate(request.model_dump()))


def scaled(task: Task, scale: float) -> Task:
    """``task`` with its approved device-hours multiplied by ``scale``."""
    if scale == 1.0:
        return task
    budget = task.request.budget
    request = task.request.model_copy(
        update={"budget": budget.model_copy(update={"device_hours": budget.device_hours * scale})}
    )
    return Task(f"{task.name}@x{scale:g}", request)


def seeded(request: CampaignRequest, seed: int) -> CampaignRequest:
    """``request`` with its baseline's seed moved to search seed ``seed``'s range."""
    baseline = request.baseline.model_copy(update={"seed": seed * SEED_STRIDE})
    return request.model_copy(update={"baseline": baseline})
