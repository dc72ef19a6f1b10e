"""Trial results on disk: one row per (campaign, trial), written idempotently."""

import sqlite3
import threading
from pathlib import Path

from temporalio import activity

from contracts import TrialRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trials (
    campaign_id TEXT NOT NULL,
    trial_id    TEXT NOT NULL,
    state       TEXT,
    record      TEXT NOT NULL,
    PRIMARY KEY (campaign_id, trial_id)
)
"""


class SqliteTrialStore:
    """Trial records in a SQLite file.

    Writes are upserts keyed by (campaign id, trial id), so a retried activity or a replayed
    workflow writes the same row again instead of adding a duplicate.

    Args:
        path: The database file; its folder is created when missing.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._conn:
            self._conn.execute(_SCHEMA)

    def put(self, record: TrialRecord) -> None:
        """Insert or replace the record of ``record.spec``'s (campaign, trial)."""
        state = record.result.state if record.result else None
        with self._lock, self._conn:
            self._conn.execute(
                "INSERT INTO trials VALUES (?, ?, ?, ?) "
                "ON CONFLICT (campaign_id, trial_id) DO UPDATE SET "
                "state = excluded.state, record = excluded.record",
                (record.spec.campaign_id, record.spec.trial_id, state, record.model_dump_json()),
            )

    def list(self, campaign_id: str) -> list[TrialRecord]:
        """Every stored trial of a campaign, in insertion order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT record FROM trials WHERE campaign_id = ? ORDER BY rowid", (campaign_id,)
            ).fetchall()
        return [TrialRecord.model_validate_json(row[0]) for row in rows]

    def close(self) -> None:
        self._conn.close()


class ResultActivities:
    """Bookkeeping activities over an injected trial store."""

    def __init__(self, store: SqliteTrialStore) -> None:
        self._store = store

    @activity.defn(name="record_trial")
    def record_trial(self, record: TrialRecord) -> None:
        """Store a finished trial (idempotent)."""
        self._store.put(record)
