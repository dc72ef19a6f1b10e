"""Base classes for every contract: frozen, JSON-only pydantic models."""

from pydantic import BaseModel, ConfigDict


class Spec(BaseModel):
    """Something a person or another service writes: unknown fields are an error.

    A typo such as ``embeding_dim`` must fail loudly instead of silently training the
    baseline again, so specs forbid extra keys.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class Record(BaseModel):
    """Something openrea produces: unknown fields are ignored.

    Results and statuses travel between workers of different versions during a rolling
    deploy; an older reader must tolerate fields added by a newer writer.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")
