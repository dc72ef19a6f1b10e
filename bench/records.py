"""What the agent benchmark records: each search's trials, choice and score, and the caches
its runs share."""

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts import DEFAULT_ACTION_SPACE, Metrics

# Every knob openrea may move: all of them build on every task (a dcn_low_rank at or above
# the cross width is refused by the trainer and told as a failed move, as it would be for
# openrea).
KNOB_FIELDS = [knob.field for knob in DEFAULT_ACTION_SPACE.knobs]


@dataclass
class TrialPoint:
    """One trial of a search: what it changed, what it cost, what it scored on validation.

    ``state`` is ``succeeded``, ``failed`` (invalid spec, divergence, out of memory) or
    ``cut`` (stopped when the budget ran out).
    """

    changes: dict[str, Any]
    state: str
    device_hours: float
    validation: float | None = None
    error: str = ""


@dataclass
class Score:
    """The choice against the baseline on the test split, paired by scoring seed."""

    seeds: list[int]
    baseline_test: list[float]
    choice_test: list[float | None]
    gains: list[float]

    @property
    def mean_gain(self) -> float:
        return statistics.fmean(self.gains) if self.gains else 0.0


@dataclass
class SearchRun:
    """One method on one task and search seed: its trials, its choice and its score.

    ``choice`` is the chosen change as a diff from the baseline (empty: keep the baseline).
    ``reference_validation`` is the baseline's validation metric on the search's trial seed,
    the zero of the validation curves. ``refused``: openrea's preflight refused its plan
    (too small a budget, say), so it ran nothing and keeps the baseline. ``story``: openrea's
    account of what it explored and why each phase ran short (its proposal's lines and its
    phase notes), for reading where its compute went.
    """

    task: str
    method: str
    seed: int
    budget_device_hours: float
    spent_device_hours: float
    reference_validation: float
    trials: list[TrialPoint]
    choice: dict[str, Any]
    note: str = ""
    score: Score | None = None
    wall_s: float = 0.0
    planned_device_hours: float | None = None
    launched: bool = False
    refused: bool = False
    story: list[str] = field(default_factory=list)

    @property
    def test_gain(self) -> float:
        return self.score.mean_gain if self.score else 0.0


@dataclass
class Reference:
    """The baseline trained on a search seed: the searchers' first trial and the curves' zero."""

    validation: float
    device_hours: float


@dataclass
class Bench:
    """What the runs share: the knobs the searchers move, and caches of the baseline's
    reference runs and of scoring runs, per task."""

    knobs: list[str] = field(default_factory=lambda: list(KNOB_FIELDS))
    references: dict[tuple[str, int], Reference] = field(default_factory=dict)
    scoring: dict[tuple[str, str], list[Metrics | None]] = field(default_factory=dict)


def read_runs(path: Path) -> tuple[dict[str, Any], list[SearchRun]]:
    """The settings and runs of a results file ``bench.tables.write_json`` wrote."""
    payload = json.loads(path.read_text())
    runs = []
    for raw in payload["runs"]:
        fields = {k: v for k, v in raw.items() if k in SearchRun.__dataclass_fields__}
        fields["trials"] = [TrialPoint(**t) for t in fields["trials"]]
        fields["score"] = Score(**fields["score"]) if fields.get("score") else None
        runs.append(SearchRun(**fields))
    return payload["settings"], runs
