"""Bookkeeping activities: trials and campaigns into the insights database (idempotent)."""

from temporalio import activity

from contracts import CampaignRecord, TrialRecord
from store import InsightsStore


class ResultActivities:
    """Writes to an injected insights store; every write is an upsert, so retries are safe."""

    def __init__(self, store: InsightsStore) -> None:
        self._store = store

    @activity.defn(name="record_trial")
    def record_trial(self, record: TrialRecord) -> None:
        """Store a finished trial."""
        self._store.put_trial(record)

    @activity.defn(name="record_campaign")
    def record_campaign(self, record: CampaignRecord) -> None:
        """Store a campaign, its hypotheses with provenance and its gate decisions."""
        self._store.record_campaign(record)
