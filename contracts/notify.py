"""Notifications: campaign events posted to Slack, and the actions their buttons carry."""

import json
from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Record, Spec
from contracts.evidence import LaunchProposal
from contracts.ledger import Ledger
from contracts.preflight import PreflightReport
from contracts.runbook import Escalation

# The four moments a campaign wants a person: its plan awaits approval, the budget ran out,
# a trial escalated, and the launch proposal (informational) is ready.
NotificationKind = Literal[
    "plan_awaiting_approval", "budget_exhausted", "trial_escalated", "launch_proposal"
]
# What a button asks for; the Slack app maps each to one update or signal of the campaign.
SlackActionKind = Literal["approve", "reject", "extend_budget", "retry", "skip"]
# Block Kit action ids are ``rea_<action>``; the Slack app listens on this prefix.
ACTION_ID_PREFIX = "rea_"


class Notification(Spec):
    """Input of ``notify_slack``: one campaign event, with what a person needs to act on it.

    Attributes:
        campaign_id: The campaign (the workflow id).
        kind: Which event (see ``NotificationKind``).
        goal: The campaign's goal, in the engineer's words.
        approvers: Who may press the buttons (the request's approvers).
        hypotheses: ``plan_awaiting_approval``: one line per planned hypothesis.
        estimated_device_hours: The plan's cost estimate.
        budget_device_hours: The budget asked for (or approved, when the budget ran out).
        preflight: The preflight checklist, when one ran.
        ledger: ``budget_exhausted``: what was approved and spent.
        extend_by_device_hours: ``budget_exhausted``: what the Extend button adds (the
            originally approved amount).
        escalation: ``trial_escalated``: the failure, diagnosis and what was tried.
        proposal: ``launch_proposal``: the verdict, headline and confirmed gain.
        status_url: Where the Web UI shows the campaign ("" when unknown).
    """

    campaign_id: str = Field(min_length=1)
    kind: NotificationKind
    goal: str = ""
    approvers: list[str] = Field(default_factory=list)
    hypotheses: list[str] = Field(default_factory=list)
    estimated_device_hours: float = 0.0
    budget_device_hours: float = 0.0
    preflight: PreflightReport | None = None
    ledger: Ledger | None = None
    extend_by_device_hours: float = 0.0
    escalation: Escalation | None = None
    proposal: LaunchProposal | None = None
    status_url: str = ""


class NotificationResult(Record):
    """What ``notify_slack`` did: posted (channel and message ts) or skipped, and why."""

    sent: bool
    channel: str = ""
    ts: str = ""
    skipped_because: str = ""


class SlackAction(Spec):
    """A button's ``value`` (as JSON): the campaign, what to do and, for trials, which one.

    The Slack app trusts it only as far as Slack's signature on the request goes; the
    campaign's validators still decide who may do what.

    Attributes:
        campaign_id: The campaign the button acts on.
        action: What the button asks for.
        trial_id: ``retry`` and ``skip``: the escalated trial.
        device_hours: ``extend_budget``: the hours to add.
    """

    campaign_id: str = Field(min_length=1)
    action: SlackActionKind
    trial_id: str = ""
    device_hours: float | None = Field(default=None, gt=0.0)

    @model_validator(mode="after")
    def _complete(self) -> "SlackAction":
        if self.action in ("retry", "skip") and not self.trial_id:
            raise ValueError(f"trial_id: a {self.action} button needs the escalated trial's id")
        if self.action == "extend_budget" and self.device_hours is None:
            raise ValueError("device_hours: an extend_budget button needs the hours to add")
        return self

    @property
    def action_id(self) -> str:
        return f"{ACTION_ID_PREFIX}{self.action}"

    def to_value(self) -> str:
        """The button's value: compact JSON without empty fields (Slack allows 2000 chars)."""
        return json.dumps(self.model_dump(exclude_defaults=True), separators=(",", ":"))
