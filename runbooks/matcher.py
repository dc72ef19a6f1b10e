"""Match a failed trial to a runbook entry and pick its next remedy."""

import json
import re
from collections import Counter

from contracts import Diagnosis, FailureReport, RunbookEntry, Signature, TrialResult
from runbooks.loader import Runbook
from runbooks.remedies import NotApplicable, apply_remedy

# (pattern id, remedy kind) -> (times tried, times the run it made succeeded), over every
# campaign in the insights database.
RemedyStats = dict[tuple[str, str], tuple[int, int]]

# A remedy tried at least this often for a pattern, succeeding less than this share of the
# time, is demoted: tried after the pattern's other remedies.
DEMOTE_AFTER = 3
DEMOTE_BELOW = 0.34
# Epochs without improvement before a validation metric counts as stalled.
STALLED_EPOCHS = 3


def signature_of(result: TrialResult) -> Signature | None:
    """The metric signature of a run, read from its state, error and per-epoch values."""
    error = result.error.lower()
    if result.state == "diverged":
        if "nan" in error or "inf" in error or "not finite" in error:
            return "nan_loss"
        # One step far above the reference ("... reference loss 0.7)"), not a run that stayed
        # above it ("... reference loss 0.7 for 20 steps)").
        if re.search(r"above [0-9.e+]+ x the reference loss [0-9.e+-]+\)", error):
            return "loss_spike"
        return "divergence"
    values = result.epoch_values
    if len(values) > STALLED_EPOCHS:
        best_before = min(values[:-STALLED_EPOCHS])
        if min(values[-STALLED_EPOCHS:]) >= best_before:
            return "stalled_validation"
    return None


def matches(entry: RunbookEntry, result: TrialResult, signature: Signature | None) -> bool:
    m = entry.match
    return (
        (not m.error_types or result.error_type in m.error_types)
        and (not m.states or result.state in m.states)
        and (not m.message or re.search(m.message, result.error, re.IGNORECASE) is not None)
        and (m.signature is None or m.signature == signature)
    )


def demoted(entry_id: str, kind: str, stats: RemedyStats) -> bool:
    tried, succeeded = stats.get((entry_id, kind), (0, 0))
    return tried >= DEMOTE_AFTER and succeeded / tried < DEMOTE_BELOW


def choose(runbook: Runbook, report: FailureReport, stats: RemedyStats) -> Diagnosis:
    """The first matching entry and its next applicable remedy, or why to escalate.

    Remedies of the entry already applied to this trial are used up (an entry may list one
    twice to allow two tries); demoted ones come last; one that cannot apply to this spec
    (fp16 rows that are already fp16) is passed over.
    """
    result = report.result
    signature = signature_of(result)
    entry = next((e for e in runbook.entries if matches(e, result, signature)), None)
    if entry is None:
        return Diagnosis(
            source="none",
            signature=signature,
            log_tail=report.log_tail,
            why_escalate=f"no runbook entry matches {result.error_type or result.state}",
        )
    found = Diagnosis(
        pattern_id=entry.id,
        pattern_version=entry.version,
        source="runbook",
        diagnosis=entry.diagnosis or entry.title,
        signature=signature,
        log_tail=report.log_tail,
    )
    mine = [a for a in report.tried if a.pattern_id == entry.id]
    if len(mine) >= entry.max_attempts:
        why = (
            f"runbook {entry.id!r} has no remedy for it"
            if entry.max_attempts == 0
            else f"runbook {entry.id!r}: {len(mine)} remedies tried, none worked"
        )
        return found.model_copy(update={"why_escalate": why})
    used = Counter(_key(a.remedy) for a in mine)
    ordered = sorted(entry.remedies, key=lambda r: demoted(entry.id, r.kind, stats))
    skipped: list[str] = []
    for remedy in ordered:
        if used[_key(remedy)] > 0:
            used[_key(remedy)] -= 1
            continue
        try:
            model, dataset = apply_remedy(remedy, report.spec, result)
        except NotApplicable as why:
            skipped.append(str(why))
            continue
        note = (
            " (demoted: it rarely worked before)" if demoted(entry.id, remedy.kind, stats) else ""
        )
        return found.model_copy(
            update={
                "remedy": remedy,
                "model": model,
                "dataset": dataset,
                "diagnosis": found.diagnosis + note,
            }
        )
    return found.model_copy(
        update={
            "why_escalate": f"runbook {entry.id!r}: remedies exhausted"
            + (f" ({'; '.join(skipped)})" if skipped else "")
        }
    )


def _key(remedy: object) -> str:
    dump = getattr(remedy, "model_dump", None)
    return json.dumps(dump(mode="json") if dump else remedy, sort_keys=True)
