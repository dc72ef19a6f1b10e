"""The insights database: every campaign, hypothesis, trial and decision, and what they teach.

SQLAlchemy 2 models with Alembic migrations; SQLite by default, PostgreSQL by URL, one
interface for both (as Optuna's RDB storage does).
"""

from store.store import InsightsStore

__all__ = ["InsightsStore"]
