"""New runbook entries from engineers' answers to escalated trials."""

import re

import yaml

from contracts import Escalation, Matcher, Remedy, ResumeFromCheckpoint, RunbookEntry, SetFields

# Error types too broad to match on alone: an entry made from one also needs a message.
GENERIC_ERRORS = frozenset(
    {"", "RuntimeError", "ValueError", "Exception", "BadDataError", "TrainingError", "OSError"}
)


def entry_from_escalation(
    escalation: Escalation, resolved_from: str, entry_id: str = "", message: str = ""
) -> RunbookEntry:
    """An entry that matches the escalated failure and applies the engineer's answer.

    Args:
        escalation: An answered escalation.
        resolved_from: ``campaign/trial``, kept in the entry.
        entry_id: The id; default: from the error type (``hashercrash-fix``).
        message: A regular expression for the error; default: the start of this error, with
            numbers generalised, when the error type alone is too broad.

    Raises:
        ValueError: the escalation has no answer yet.
    """
    answer = escalation.resolution
    if answer is None:
        raise ValueError(f"trial {escalation.trial_id}: the escalation has no answer yet")
    if not message and escalation.error_type in GENERIC_ERRORS:
        message = _pattern_of(escalation.error)
    remedies: list[Remedy] = []
    if answer.action == "retry":
        remedies = [SetFields(changes=answer.changes) if answer.changes else ResumeFromCheckpoint()]
    name = re.sub(r"[^a-z0-9]+", "-", (escalation.error_type or "failure").lower()).strip("-")
    why = answer.comment or escalation.diagnosis.diagnosis or "resolved by an engineer"
    return RunbookEntry(
        id=entry_id or f"{name}-fix",
        title=f"{escalation.error_type or 'failure'}: {why}"[:200],
        diagnosis=why,
        match=Matcher(
            error_types=[escalation.error_type] if escalation.error_type else [],
            message=message,
        ),
        remedies=remedies,
        max_attempts=len(remedies),
        resolved_from=resolved_from,
    )


def entry_yaml(entry: RunbookEntry) -> str:
    """The entry as YAML, in the shipped files' layout (defaults left out)."""
    data = {
        "id": entry.id,
        "version": entry.version,
        **entry.model_dump(mode="json", exclude_defaults=True),
        # Every remedy keeps its kind (a default of its class, but the union's tag).
        "remedies": [r.model_dump(mode="json") for r in entry.remedies],
        "max_attempts": entry.max_attempts,
    }
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _pattern_of(error: str, length: int = 60) -> str:
    start = error.splitlines()[0][:length] if error else ""
    return re.sub(r"\\\d+|\d+", "[0-9]+", re.escape(start))
