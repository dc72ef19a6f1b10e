"""What past experiments taught, and where a hypothesis came from.

The insights database distils every gate comparison into ``Insight`` rows: for a change (e.g.
``embedding_dim ×2``) on tasks like this one, the observed relative gain with an interval, its
cost and how it interacted with other changes. The research agents read them, so every
experiment moves the next campaign's ranking.
"""

import json
import math
from typing import Any

from pydantic import Field

from contracts.actions import DEFAULT_ACTION_SPACE
from contracts.base import Record, Spec
from contracts.campaign import CampaignRequest, CampaignStatus, Hypothesis
from contracts.model import ModelSpec
from contracts.provenance import Provenance, Source
from contracts.task import TaskDescriptor


class Interaction(Record):
    """How a change did when merged with another one.

    Attributes:
        change: The other change.
        excess: Merged gain minus the sum of the parts' gains (negative: they overlap).
        n: Merges observed.
    """

    change: str
    excess: float
    n: int


class Insight(Record):
    """The distilled evidence on one change, weighted by similarity to a task.

    Attributes:
        change: The change in words, e.g. ``embedding_dim ×2`` or ``interaction → dcn``;
            several fields are joined with `` + ``.
        family: The action space's families the change touches, joined with ``+``.
        changes: One concrete instance of it (the latest seen), to propose it again.
        comparisons: Paired gate comparisons behind it.
        campaigns: Campaigns they came from.
        weight: Their summed similarity to the task asked about (the effective count).
        mean_gain: Similarity-weighted mean relative gain (positive is better).
        gain_low: Lower end of its 95% interval; None with a single comparison that had none.
        gain_high: Upper end.
        passed: Comparisons that passed their gate.
        cost_ratio: Mean device-hours of its trials over their baseline's.
        interactions: How it did merged with other changes.
    """

    change: str
    family: str
    changes: dict[str, Any] = Field(default_factory=dict)
    comparisons: int
    campaigns: int
    weight: float
    mean_gain: float
    gain_low: float | None = None
    gain_high: float | None = None
    passed: int = 0
    cost_ratio: float = 1.0
    interactions: list[Interaction] = Field(default_factory=list)


class InsightQuery(Spec):
    """Which insights to distil.

    Attributes:
        task: Weight evidence by similarity to this task; None weighs every task alike.
        family: Only changes touching this family.
        min_comparisons: Only changes with at least this many comparisons.
        metric: The metric whose gains are distilled.
        min_similarity: Ignore evidence from tasks less similar than this.
    """

    task: TaskDescriptor | None = None
    family: str = ""
    min_comparisons: int = Field(default=1, ge=1)
    metric: str = "ne"
    min_similarity: float = Field(default=0.05, ge=0.0, le=1.0)


class Proposals(Record):
    """One source's hypotheses for a campaign.

    Attributes:
        source: The source.
        hypotheses: Valid moves of the action space, best first, each with provenance,
            expected gain and cost factor.
        rejected: Proposals refused, each with the reason (outside the schema or the action
            space, a duplicate, a no-op).
        note: What a person should know (e.g. the LLM was not configured or failed).
        task: The task the proposals were made for.
        insights: The insights retrieved for the task (the knowledge source hands them to
            the other sources).
        estimated_device_hours_per_trial: The baseline trial's typical cost (only the source
            that estimates cost sets it).
        estimated_device_hours_per_trial_high: Its high end.
        fixed_cost_share: The share of the baseline trial's estimate that training on part of
            the data does not shrink (building, data checks, evaluation), as measured; None
            where not measured. The screen's rungs and their costs follow it.
        jobs_run_on: Where trials that run as jobs go, which the estimate assumes as fast as
            the host that measured it (e.g. ``Slurm partition gpu``).
    """

    source: Source
    hypotheses: list[Hypothesis] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    note: str = ""
    task: TaskDescriptor | None = None
    insights: list[Insight] = Field(default_factory=list)
    estimated_device_hours_per_trial: float = 0.0
    estimated_device_hours_per_trial_high: float = 0.0
    fixed_cost_share: float | None = Field(default=None, ge=0.0, le=1.0)
    jobs_run_on: str = ""


class ProposalInput(Spec):
    """Input of the research agents: the campaign, its task and what history says.

    Attributes:
        campaign_id: The campaign.
        request: Its request (baseline, dataset, metric, budget).
        task: The task, as described by the knowledge source (None before it is known).
        insights: Insights retrieved for the task.
        max_hypotheses: At most this many proposals.
        allow_unreadable_data: Propose even when the dataset cannot be read (no task
            descriptor, no measured cost; the preflight checklist reports the data).
        max_cost_factor: The action space's candidates cost at most this many baseline
            trials (the screen stops a dearer run before it tells anything); None: any.
    """

    campaign_id: str
    request: CampaignRequest
    task: TaskDescriptor | None = None
    insights: list[Insight] = Field(default_factory=list)
    max_hypotheses: int = Field(default=8, ge=1, le=2000)
    allow_unreadable_data: bool = False
    max_cost_factor: float | None = Field(default=None, gt=0)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def change_key(baseline: ModelSpec, field: str, value: Any) -> str:
    """One field's change in words, relative to ``baseline``, comparable across tasks.

    Numbers become a ratio (``embedding_dim ×2``, ``dense_lr ÷3``) or, from or to zero, the
    new value; widths become their depth and mean-width ratio; categories an arrow.
    """
    old = getattr(baseline, field, None)
    if isinstance(value, list):
        old_list = old if isinstance(old, list) else []
        parts = []
        if len(value) != len(old_list):
            parts.append(f"{len(old_list)}→{len(value)} layers")
        if value and old_list:
            ratio = (sum(value) / len(value)) / (sum(old_list) / len(old_list))
            if not math.isclose(ratio, 1.0, rel_tol=0.05):
                parts.append(_ratio(ratio))
        return f"{field} {', '.join(parts) or 'reshaped'}"
    if isinstance(value, dict):  # per-feature overrides, e.g. table_rows
        return f"{field} → {json.dumps(value, sort_keys=True)}"
    if isinstance(value, bool | str) or old is None:
        return f"{field} → {value}"
    if isinstance(old, int | float) and old != 0 and value != 0:
        return f"{field} {_ratio(value / old)}"
    return f"{field} → {_fmt(value)}"


def _ratio(ratio: float) -> str:
    """×2, ÷3, ×1.5: rounded to a half step so that nearby moves group together."""
    if ratio >= 1.0:
        return f"×{round(ratio * 2) / 2:g}"
    return f"÷{round(2 / ratio) / 2:g}"


def describe(baseline: ModelSpec, changes: dict[str, Any]) -> tuple[str, str]:
    """(change, family) of a move: what insights group it under.

    Fields that do not differ from the baseline are left out (a merge may restate them);
    fields outside the action space (``seed``) are named as they are.
    """
    keys, families = [], set()
    for field in sorted(changes):
        if getattr(baseline, field, object()) == changes[field]:
            continue
        keys.append(change_key(baseline, field, changes[field]))
        try:
            families.add(DEFAULT_ACTION_SPACE.knob(field).family)
        except ValueError:
            families.add(field)
    return " + ".join(keys) or "no change", "+".join(sorted(families)) or "none"


def with_provenance(hypothesis: Hypothesis, provenance: Provenance) -> Hypothesis:
    """A copy of ``hypothesis`` carrying ``provenance`` and its source."""
    return hypothesis.model_copy(update={"provenance": provenance, "source": provenance.source})


class LlmCall(Record):
    """One exchange with a language model, recorded whatever came of it.

    Attributes:
        prompt_digest: SHA-256 of the request (model, prompt version, messages, mode): the
            cache key of its reply.
        campaign_id: The campaign it planned for.
        model: The model named in the request.
        prompt_version: The prompt template's version.
        mode: How structured output was asked for: ``tool``, ``json_schema`` or
            ``json_object``.
        raw_reply: The reply's text (or the tool call's arguments) as received.
        reply_digest: SHA-256 of ``raw_reply``.
        prompt_tokens: Tokens of the prompt, as the endpoint reported them.
        completion_tokens: Tokens of the reply.
        accepted: Ids of the hypotheses it yielded.
        rejected: Why each refused proposal was refused.
        cached: True when the reply came from the cache rather than the endpoint.
    """

    prompt_digest: str
    campaign_id: str = ""
    model: str
    prompt_version: str
    mode: str
    raw_reply: str
    reply_digest: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    accepted: list[str] = Field(default_factory=list)
    rejected: list[str] = Field(default_factory=list)
    cached: bool = False


class CampaignRecord(Spec):
    """What the insights database keeps of a campaign: its request, its state without the
    trials (they are recorded one by one) and the changes behind every arm it compared.

    Attributes:
        campaign_id: The campaign.
        request: Its request.
        status: Its state (plan, decisions, additivity, proposal, task); trials left out.
        arm_changes: The changes each compared arm makes to the baseline, by arm.
    """

    campaign_id: str
    request: CampaignRequest
    status: CampaignStatus
    arm_changes: dict[str, dict[str, Any]] = Field(default_factory=dict)
