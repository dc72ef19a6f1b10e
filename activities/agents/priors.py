"""What history says about a technique: its prior shrunk toward past observations.

A technique's prior (``knowledge.Prior``) meets what similar past campaigns observed (an
``Insight``) in a normal-normal update: thin or dissimilar evidence moves it little, precise
evidence from similar tasks dominates it. ``evidence_text`` says the result in words for the
hypothesis's provenance.
"""

import math

from contracts.insights import Insight
from knowledge import Prior

# Two-sided 95% normal quantile: insights' intervals are 95% intervals of the mean gain.
Z95 = 1.959963984540054


def normal_update(
    prior_mean: float, prior_sd: float, observed: float, standard_error: float
) -> tuple[float, float]:
    """The posterior (mean, sd) of a normal prior updated by one normal observation.

    The mean is the precision-weighted average of the prior mean and the observation: an
    observation with a large standard error (thin evidence) leaves the prior nearly as it
    was; one far more precise than the prior dominates it. An infinite standard error (no
    evidence) returns the prior.

    Args:
        prior_mean: The prior's mean.
        prior_sd: The prior's standard deviation (> 0).
        observed: The observed mean.
        standard_error: The observed mean's standard error (> 0; ``math.inf`` for none).
    """
    if prior_sd <= 0 or standard_error <= 0:
        raise ValueError(f"sds must be positive, got {prior_sd} and {standard_error}")
    if math.isinf(standard_error):
        return prior_mean, prior_sd
    prior_precision, precision = prior_sd**-2, standard_error**-2
    total = prior_precision + precision
    mean = (prior_precision * prior_mean + precision * observed) / total
    return mean, total**-0.5


def evidence_standard_error(insight: Insight, prior_sd: float) -> float:
    """How precisely ``insight`` measured its change's gain for the task asked about.

    From its 95% interval when it has one. The store pools comparisons with weights that
    are normalised, so the interval is as tight for evidence from dissimilar tasks as from
    identical ones; scaling the precision by the mean similarity (``weight / comparisons``)
    makes evidence from other kinds of tasks count for less. Without an interval, each unit
    of effective count (``weight``) counts as one observation as noisy as the prior. No
    weight: ``math.inf`` (no evidence).
    """
    if insight.weight <= 0:
        return math.inf
    if insight.gain_low is not None and insight.gain_high is not None:
        se = max((insight.gain_high - insight.gain_low) / (2 * Z95), 1e-6)
        share = min(1.0, insight.weight / max(insight.comparisons, 1))
        return se / math.sqrt(share)
    return prior_sd / math.sqrt(insight.weight)


def posterior(prior: Prior, insight: Insight | None) -> Prior:
    """``prior`` moved toward what ``insight`` observed (unchanged when there is none)."""
    if insight is None:
        return prior
    se = evidence_standard_error(insight, prior.sd)
    mean, sd = normal_update(prior.gain, prior.sd, insight.mean_gain, se)
    return Prior(gain=max(min(mean, 0.1), -0.1), sd=sd)


def pct(x: float) -> str:
    """A relative gain as a signed percentage (``+0.30%``)."""
    return f"{x:+.2%}"


def evidence_text(prior: Prior, insight: Insight | None, post: Prior) -> str:
    """What the prior and past experiments say about a move, in words."""
    head = f"prior {pct(prior.gain)} ±{prior.sd:.2%}"
    if insight is None or insight.weight <= 0:
        return f"{head}; no past evidence"
    interval = (
        f" [{pct(insight.gain_low)}, {pct(insight.gain_high)}]"
        if insight.gain_low is not None and insight.gain_high is not None
        else ""
    )
    return (
        f"{head}; {insight.comparisons} past comparison(s) on similar tasks "
        f"(effective {insight.weight:.1f}, {insight.passed} passed): "
        f"{pct(insight.mean_gain)}{interval}; expected {pct(post.gain)}"
    )
