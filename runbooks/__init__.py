"""Runbooks: failure patterns and their remedies as versioned data, with their loader, the
matcher that picks an entry and a remedy for a failed trial, and the remedies' effect on a
spec.

The shipped entries live in ``runbooks/patterns/*.yaml``, one pattern per file; an
engineer's entries (``rea runbook add-from-escalation``) go in ``<data dir>/runbooks/``.
"""

from runbooks.authoring import entry_from_escalation, entry_yaml
from runbooks.loader import BUILTIN_DIR, Runbook, RunbookError, load_runbook
from runbooks.matcher import RemedyStats, choose, signature_of
from runbooks.remedies import NotApplicable, apply_remedy

__all__ = [
    "BUILTIN_DIR",
    "NotApplicable",
    "RemedyStats",
    "Runbook",
    "RunbookError",
    "apply_remedy",
    "choose",
    "entry_from_escalation",
    "entry_yaml",
    "load_runbook",
    "signature_of",
]
