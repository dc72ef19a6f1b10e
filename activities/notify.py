"""Campaign events posted to Slack as Block Kit messages with buttons.

Message building (``blocks_for``) is pure: a ``Notification`` in, Block Kit out, tested
directly. Posting is the ``notify_slack`` activity, through slack_sdk's AsyncWebClient. The
buttons' values are ``SlackAction`` JSON; ``integrations/slack.py`` turns a click into the
campaign's update or signal.
"""

import logging
from collections.abc import Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from contracts import Notification, NotificationResult, SlackAction

log = logging.getLogger("openrea.notify")

Block = dict[str, Any]

# Slack errors a retry cannot fix: the token, the channel or the message is wrong. Anything
# else (a 5xx, rate limiting, a network error) is retried by Temporal, a few times.
PERMANENT_SLACK_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_blocks",
        "missing_scope",
    }
)
# Slack's limit on a section's text; longer texts (errors, plans) are cut.
SECTION_LIMIT = 3000


class NotifyActivities:
    """Posts notifications to one channel; does nothing (but log) without a client.

    Args:
        client: The Web API client (its ``base_url`` from settings), or None when Slack is not
            configured.
        channel: The channel id or name to post to.
        web_ui: The Web UI's address of a campaign (a link under each message).
    """

    def __init__(
        self,
        client: AsyncWebClient | None,
        channel: str,
        web_ui: Callable[[str], str] | None = None,
    ) -> None:
        self._client = client
        self._channel = channel
        self._web_ui = web_ui

    @activity.defn(name="notify_slack")
    async def notify_slack(self, notification: Notification) -> NotificationResult:
        """Post ``notification`` with its buttons; a skipped post says why."""
        if self._client is None or not self._channel:
            why = "Slack is not configured (set REA_SLACK_BOT_TOKEN and REA_SLACK_CHANNEL)"
            log.info("%s: %s not posted: %s", notification.campaign_id, notification.kind, why)
            return NotificationResult(sent=False, skipped_because=why)
        if self._web_ui is not None and not notification.status_url:
            url = self._web_ui(notification.campaign_id)
            notification = notification.model_copy(update={"status_url": url})
        try:
            response = await self._client.chat_postMessage(
                channel=self._channel,
                text=text_for(notification),
                blocks=blocks_for(notification),
            )
        except SlackApiError as err:
            error = str(err.response.get("error", "")) if err.response is not None else ""
            if error in PERMANENT_SLACK_ERRORS:
                raise ApplicationError(
                    f"Slack refused the message: {error}; check REA_SLACK_BOT_TOKEN and "
                    "REA_SLACK_CHANNEL (the bot must be in the channel)",
                    type="SlackConfigError",
                    non_retryable=True,
                ) from None
            raise
        return NotificationResult(
            sent=True, channel=str(response.get("channel", "")), ts=str(response.get("ts", ""))
        )


def slack_web_client(token: str, base_url: str) -> AsyncWebClient:
    """The Web API client. Its own retries are off: Temporal retries the activity (and the
    Slack app's calls are one-shot answers to a click)."""
    return AsyncWebClient(token=token, base_url=base_url, retry_handlers=[])


def text_for(n: Notification) -> str:
    """The message's plain text: what notifications and screen readers show."""
    match n.kind:
        case "plan_awaiting_approval":
            return f"Campaign {n.campaign_id}: plan awaits approval"
        case "budget_exhausted":
            return f"Campaign {n.campaign_id}: budget exhausted"
        case "trial_escalated":
            trial = n.escalation.trial_id if n.escalation else "?"
            return f"Campaign {n.campaign_id}: trial {trial} needs an engineer"
        case "launch_proposal":
            headline = n.proposal.headline if n.proposal else ""
            return f"Campaign {n.campaign_id}: launch proposal. {headline}".strip()


def blocks_for(n: Notification) -> list[Block]:
    """The Block Kit blocks of ``n``: a header, the facts, and its buttons."""
    builders = {
        "plan_awaiting_approval": _plan_blocks,
        "budget_exhausted": _budget_blocks,
        "trial_escalated": _escalation_blocks,
        "launch_proposal": _proposal_blocks,
    }
    blocks = [_header(text_for(n)), *builders[n.kind](n)]
    if n.status_url:
        blocks.append(_context(f"<{n.status_url}|Open in the Temporal Web UI>"))
    return blocks


def _plan_blocks(n: Notification) -> list[Block]:
    hypotheses = "\n".join(f"• {h}" for h in n.hypotheses) or "(none)"
    facts = [
        f"*Goal:* {n.goal or '-'}",
        f"*Cost estimate:* {n.estimated_device_hours:.4g} of {n.budget_device_hours:g} "
        "device-hours (budget)",
        f"*Approvers:* {', '.join(n.approvers) or '-'}",
    ]
    blocks = [_section("\n".join(facts)), _section(f"*Hypotheses*\n{hypotheses}")]
    if n.preflight is not None:
        if n.preflight.passed:
            blocks.append(_section(f":white_check_mark: {n.preflight.summary()}"))
        else:
            failures = "\n".join(
                f"• *{i.check}*: {i.detail}" + (f" (fix: {i.fix})" if i.fix else "")
                for i in n.preflight.failures
            )
            blocks.append(
                _section(
                    f":warning: *Preflight failures* (approval is refused until they are "
                    f"fixed or overridden with `rea campaign approve --override-preflight`)\n"
                    f"{failures}"
                )
            )
    blocks.append(
        _actions(
            _button("Approve", SlackAction(campaign_id=n.campaign_id, action="approve"), "primary"),
            _button("Reject", SlackAction(campaign_id=n.campaign_id, action="reject"), "danger"),
        )
    )
    return blocks


def _budget_blocks(n: Notification) -> list[Block]:
    spent = n.ledger.spent if n.ledger else 0.0
    approved = n.ledger.approved if n.ledger else n.budget_device_hours
    hours = n.extend_by_device_hours
    facts = (
        f"*Spent:* {spent:.4g} of {approved:g} approved device-hours; no further trial fits.\n"
        f"*Extend budget* adds {hours:g} device-hours (the originally approved amount); "
        "for another amount use `rea campaign extend-budget`."
    )
    blocks = [_section(facts)]
    if hours > 0:
        action = SlackAction(campaign_id=n.campaign_id, action="extend_budget", device_hours=hours)
        blocks.append(_actions(_button(f"Extend budget by {hours:g} device-hours", action)))
    return blocks


def _escalation_blocks(n: Notification) -> list[Block]:
    e = n.escalation
    if e is None:
        return [_section("(no escalation attached)")]
    tried = "\n".join(
        f"• {a.remedy.kind} ({a.pattern_id}) as {a.run_trial_id}: {a.state}" for a in e.tried
    )
    diagnosis = e.diagnosis.diagnosis or "-"
    why = e.diagnosis.why_escalate or "-"
    facts = (
        f"*Trial:* `{e.trial_id}`\n*Error:* {e.error_type or 'failed'}: {e.error or '-'}\n"
        f"*Diagnosis:* {diagnosis}\n*Why escalated:* {why}\n*Tried:*\n{tried or '• nothing'}"
    )
    retry = SlackAction(campaign_id=n.campaign_id, action="retry", trial_id=e.trial_id)
    skip = SlackAction(campaign_id=n.campaign_id, action="skip", trial_id=e.trial_id)
    return [
        _section(facts),
        _context("Retry runs it again as it is; for changes use `rea campaign resolve`."),
        _actions(_button("Retry", retry, "primary"), _button("Skip", skip)),
    ]


def _proposal_blocks(n: Notification) -> list[Block]:
    p = n.proposal
    if p is None:
        return [_section("(no proposal attached)")]
    lines = [f"*Verdict:* {p.verdict}", f"*Headline:* {p.headline or '-'}"]
    if p.candidate:
        lines.append(f"*Candidate:* `{p.candidate}`")
    c = p.confirmation
    if c is not None:
        interval = (
            f" (interval {c.gain_low:+.3%} to {c.gain_high:+.3%})"
            if c.gain_low is not None and c.gain_high is not None
            else " (no interval)"
        )
        lines.append(f"*Gain on the test split:* {c.gain:+.3%}{interval}, {c.n} paired seeds")
    learned = "\n".join(f"• {line}" for line in p.learned)
    blocks = [_section("\n".join(lines))]
    if learned:
        blocks.append(_section(f"*Learned*\n{learned}"))
    return blocks


def _header(text: str) -> Block:
    return {"type": "header", "text": {"type": "plain_text", "text": text[:150]}}


def _section(text: str) -> Block:
    if len(text) > SECTION_LIMIT:
        text = text[: SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _actions(*buttons: Block) -> Block:
    return {"type": "actions", "block_id": "rea_actions", "elements": list(buttons)}


def _button(label: str, action: SlackAction, style: str = "") -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": label[:75]},
        "action_id": action.action_id,
        "value": action.to_value(),
    }
    if style:
        button["style"] = style
    return button
