"""A trial's cost estimate, corrected by what past trials on the same data cost.

The host's estimate (``ranking_models.cost.estimate_seconds_range``) times real steps and
the measured fixed costs; what it cannot see (a busier worker, checkpoints, a slower job
process) shows in the insights database once trials ran. So when past trials of the same
spec (any seed) on the same data succeeded, the estimate is scaled by the median ratio of
what they took to what the host's estimate says for them now, and its high end by the
largest ratio; without those, trials of other specs on the same data do the same (each
re-estimated, so a spec's own cost stays in the estimate). ``source`` says which it was,
for the plan's notes.
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from contracts import DatasetRef, ModelSpec, TrialRecord

Estimator = Callable[[ModelSpec, DatasetRef], tuple[float, float]]
# Trials of the same spec that make a correction; trials of other specs (fewer distinct
# specs are re-estimated, each costs a short calibration).
MIN_SAME_SPEC = 2
MIN_SAME_DATA = 3
MAX_OTHER_SPECS = 3
# Past campaigns read, newest first.
MAX_CAMPAIGNS = 20
# A correction outside this range is more likely a broken record than a slow host.
RATIO_RANGE = (0.25, 20.0)


class TrialHistory(Protocol):
    """What ``HistoryCorrected`` reads (``store.InsightsStore`` in production)."""

    def campaigns(self) -> list[str]: ...

    def trials(self, campaign_id: str) -> list[TrialRecord]: ...


@dataclass(frozen=True)
class Corrected:
    """An estimate and where it came from."""

    typical_s: float
    high_s: float
    source: str


def _same_spec(a: ModelSpec, b: ModelSpec) -> bool:
    return a.model_copy(update={"seed": 0}) == b.model_copy(update={"seed": 0})


class HistoryCorrected:
    """``estimate(spec, dataset)`` corrected by past trials (see the module docstring).

    Args:
        estimate: The host's estimate, (typical, high) seconds.
        history: Past trials; None: the host's estimate alone.
    """

    def __init__(self, estimate: Estimator, history: TrialHistory | None) -> None:
        self._estimate = estimate
        self._history = history

    def __call__(self, spec: ModelSpec, dataset: DatasetRef) -> tuple[float, float]:
        corrected = self.corrected(spec, dataset)
        return corrected.typical_s, corrected.high_s

    def source(self, spec: ModelSpec, dataset: DatasetRef) -> str:
        """Where the estimate of ``spec`` on ``dataset`` came from, in words."""
        return self.corrected(spec, dataset).source

    def corrected(self, spec: ModelSpec, dataset: DatasetRef) -> Corrected:
        """The estimate and its source."""
        typical, high = self._estimate(spec, dataset)
        host = "timed steps and fixed costs on this host"
        past = self._past(dataset)
        same = [r for r in past if _same_spec(r.spec.model, spec)]
        if len(same) >= MIN_SAME_SPEC:
            ratios = [self._ratio(r, typical) for r in same]
            what = f"{len(same)} past trials of this spec"
        else:
            others: dict[str, list[TrialRecord]] = {}
            for r in past:
                key = r.spec.model.model_copy(update={"seed": 0}).model_dump_json()
                others.setdefault(key, []).append(r)
            chosen = sorted(others.values(), key=len, reverse=True)[:MAX_OTHER_SPECS]
            records = [r for group in chosen for r in group]
            if len(records) < MIN_SAME_DATA:
                return Corrected(typical, high, host)
            ratios = []
            for group in chosen:
                own = self._estimate(group[0].spec.model, dataset)[0]
                ratios += [self._ratio(r, own) for r in group]
            what = f"{len(records)} past trials of {len(chosen)} similar spec(s)"
        ratios = [min(max(x, RATIO_RANGE[0]), RATIO_RANGE[1]) for x in ratios]
        typical_ratio = statistics.median(ratios)
        high_ratio = max(max(ratios), typical_ratio)
        return Corrected(
            typical * typical_ratio,
            max(high * high_ratio, typical * typical_ratio),
            f"{host}, corrected x{typical_ratio:.2f} (high x{high_ratio:.2f}) by what {what} "
            "on this data took",
        )

    @staticmethod
    def _ratio(record: TrialRecord, estimate_s: float) -> float:
        """What the trial took over what the host's estimate says now."""
        assert record.result is not None
        return record.result.duration_s / max(estimate_s, 1e-9)

    def _past(self, dataset: DatasetRef) -> list[TrialRecord]:
        """Succeeded, uncut trials on ``dataset`` from the newest campaigns."""
        if self._history is None:
            return []
        found = []
        for campaign in self._history.campaigns()[-MAX_CAMPAIGNS:]:
            for record in self._history.trials(campaign):
                result = record.result
                if (
                    record.spec.dataset == dataset
                    and result is not None
                    and result.state == "succeeded"
                    and result.duration_s > 0
                    # A screening run on a share of the data costs less than a trial.
                    and getattr(record.spec, "data_fraction", 1.0) == 1.0
                ):
                    found.append(record)
        return found
