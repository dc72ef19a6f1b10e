"""Metric direction and relative gain: the one place that knows which way is better."""

from typing import Literal

Metric = Literal["ne", "auc", "logloss"]

# NE and log loss are losses; AUC is a score.
LOWER_IS_BETTER: dict[str, bool] = {"ne": True, "logloss": True, "auc": False}


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """The optimisation direction of ``metric`` (as Optuna names it)."""
    return "minimize" if LOWER_IS_BETTER[metric] else "maximize"


def best_first(metric: str) -> float:
    """A sign that makes ``sign * value`` smallest for the best value (a sort key factor)."""
    return 1.0 if LOWER_IS_BETTER[metric] else -1.0


def is_better(candidate: float, incumbent: float | None, metric: str) -> bool:
    """True when ``candidate`` beats ``incumbent`` on ``metric`` (anything beats nothing)."""
    if incumbent is None:
        return True
    return candidate < incumbent if LOWER_IS_BETTER[metric] else candidate > incumbent


def relative_gain(value: float, baseline: float, metric: str) -> float:
    """Gain of ``value`` over ``baseline`` relative to ``|baseline|``; positive is better on
    any metric, 0 for a zero baseline."""
    if baseline == 0:
        return 0.0
    diff = baseline - value if LOWER_IS_BETTER[metric] else value - baseline
    return diff / abs(baseline)
