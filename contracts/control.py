"""Steering a running campaign: what the ``pause``, ``resume`` and ``stop`` updates answer, and
the signals a campaign received but did not act on."""

from datetime import datetime

from contracts.base import Record


class ControlResult(Record):
    """What the ``pause``, ``resume`` and ``stop`` updates answer: the campaign as it is now.

    Attributes:
        phase: The campaign's phase (a stopped campaign reaches ``stopped`` once its running
            trials have checkpointed and its result is written).
        paused: True while no new trials start.
        stopping: True once a stop was accepted (by this update or an earlier one).
        message: The campaign's last message, e.g. ``Paused by alice@example.com: maintenance.``
    """

    phase: str
    paused: bool = False
    stopping: bool = False
    message: str = ""


class IgnoredSignal(Record):
    """A signal the campaign received and did not act on, and why (a signal cannot answer its
    sender, so the reason is kept in ``CampaignStatus.ignored_signals``).

    Attributes:
        signal: The signal's name (``pause``, ``resume``, ``stop``, ``job_finished``).
        by: Who sent it, as its input said (empty when it did not say, or did not parse).
        reason: Why it was ignored, naming the field, e.g. ``by: 'mallory' may not stop
            this campaign; ask one of ['alice@example.com']``.
        at: When it arrived (the campaign's clock).
    """

    signal: str
    by: str = ""
    reason: str
    at: datetime | None = None
