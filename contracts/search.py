"""Exploitation's search: ask Optuna for moves, tell it the results, ask whether to prune.

The study itself lives in a database (Optuna's RDB storage) owned by the search activities;
the workflow only ever sees these JSON records, so it stays deterministic and a restarted
worker resumes the same study from the database.
"""

from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.base import Record, Spec
from contracts.exploration import KnownPoint
from contracts.model import ModelSpec

Sampler = Literal["tpe", "cmaes", "random"]
Direction = Literal["minimize", "maximize"]
TellState = Literal["complete", "pruned", "fail"]


class SearchSpace(Spec):
    """Which knobs a study tunes around a candidate, and what it keeps fixed.

    Attributes:
        fields: Knob fields of ``DEFAULT_ACTION_SPACE`` to tune (continuous, integer,
            categorical or widths knobs), each at most once.
        fixed: The candidate's changes kept as they are (e.g. the best hypothesis's move);
            every asked move carries them. A field may not be both tuned and fixed.
        center: A whole spec's knob values (e.g. the leading candidate's) to search around:
            each tuned knob's range narrows to a neighbourhood of its value there (see
            ``Knob.around``); empty: the whole box.
        radius: How wide the neighbourhood is (a factor either way on log knobs).
    """

    fields: list[str] = Field(min_length=1)
    fixed: dict[str, Any] = Field(default_factory=dict)
    center: dict[str, Any] = Field(default_factory=dict)
    radius: float = Field(default=4.0, gt=1.0)


class AskInput(Spec):
    """Ask a study for the next moves to try.

    Attributes:
        study_name: The study, e.g. ``f"{campaign_id}/exploitation"``; created on first use.
        ask_id: Key of this ask, unique within the study and derived deterministically by the
            workflow (e.g. ``f"round-{n}"``). It makes the activity idempotent under Temporal
            retries: a retried ask returns the trials already asked under this key (topping
            up to ``count`` if an earlier attempt died half way) instead of asking new ones,
            which would leave orphan RUNNING trials and skew the sampler.
        space: The knobs to tune and the changes kept fixed.
        sampler: ``tpe`` (default), ``cmaes`` (continuous and integer knobs; categoricals
            fall back to random sampling) or ``random``.
        seed: Seed of the sampler; with the study's history it fixes the moves asked.
        count: How many moves to ask at once (trials to run in parallel).
        direction: Whether the metric (validation NE by default) is minimised or maximised.
        known: Points already measured (on the study's seed and fidelity), told to the
            study when it is created, before it samples: a search around what the screen
            found rather than from nothing.
        baseline: The spec ``known`` points' changes apply to (needed with ``known``).
    """

    study_name: str = Field(min_length=1)
    ask_id: str = Field(min_length=1)
    space: SearchSpace
    sampler: Sampler = "tpe"
    seed: int = 0
    count: int = Field(default=1, ge=1)
    direction: Direction = "minimize"
    known: list[KnownPoint] = Field(default_factory=list)
    baseline: ModelSpec | None = None


class AskedTrial(Record):
    """One move asked of a study.

    Attributes:
        number: The Optuna trial number within the study; tell and prune name it.
        changes: The fixed changes plus the sampled values, ready for
            ``ModelSpec.with_changes`` (widths knobs come back as lists of widths).
    """

    number: int
    changes: dict[str, Any]


class TellInput(Spec):
    """Tell a study how a trial ended.

    Telling a finished trial again with the same outcome is a no-op (Temporal may retry);
    telling it a different outcome is a non-retryable error.

    Attributes:
        study_name: The study the trial belongs to.
        number: The trial number returned by ask.
        state: ``complete`` (``value`` required), ``pruned`` (the value recorded is the last
            intermediate value, as Optuna does) or ``fail``.
        value: The final validation metric of a complete trial. A non-finite value records
            the trial as failed, as Optuna does.
        intermediate: Per-epoch validation values; ``intermediate[i]`` is reported at step
            ``i + 1`` (the epoch number) unless already reported, e.g. by should_prune.
    """

    study_name: str = Field(min_length=1)
    number: int = Field(ge=0)
    state: TellState
    value: float | None = None
    intermediate: list[float] = Field(default_factory=list)

    @model_validator(mode="after")
    def _value_matches_state(self) -> "TellInput":
        if self.state == "complete" and self.value is None:
            raise ValueError("value: a complete trial needs a value")
        return self


class PruneInput(Spec):
    """Report a trial's validation value at a step and ask whether to stop it.

    Attributes:
        study_name: The study the trial belongs to.
        number: The trial number returned by ask.
        step: The epoch number (from 1) the value was measured after.
        value: The validation metric at ``step``.
    """

    study_name: str = Field(min_length=1)
    number: int = Field(ge=0)
    step: int = Field(ge=1)
    value: float


class PruneDecision(Record):
    """Whether to stop a trial early, and why.

    Attributes:
        prune: Stop the trial now (then tell it as ``pruned``).
        reason: The pruner's case in words, for the history and the report.
    """

    prune: bool
    reason: str
