"""The compute ledger: what was approved, what running trials reserve, what was spent."""

from pydantic import Field, computed_field

from contracts.base import Record


class PhaseLedger(Record):
    """Device-hours of one executor phase.

    Attributes:
        estimated: The plan's estimate for the phase, shown at approval.
        reserved: Estimates of the phase's trials running now.
        spent: Actual cost of the phase's finished trials.
    """

    estimated: float = 0.0
    reserved: float = 0.0
    spent: float = 0.0


class Ledger(Record):
    """Approved budget and cost per phase, in device-hours."""

    approved: float = 0.0
    phases: dict[str, PhaseLedger] = Field(default_factory=dict)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def spent(self) -> float:
        return sum((p.spent for p in self.phases.values()), 0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reserved(self) -> float:
        return sum((p.reserved for p in self.phases.values()), 0.0)

    @property
    def remaining(self) -> float:
        """What a new trial may still reserve."""
        return self.approved - self.spent - self.reserved

    def change(self, phase: str, *, reserved: float = 0.0, spent: float = 0.0) -> "Ledger":
        """A copy with ``reserved`` and ``spent`` added to ``phase``."""
        old = self.phases.get(phase, PhaseLedger())
        new = old.model_copy(
            update={"reserved": old.reserved + reserved, "spent": old.spent + spent}
        )
        return self.model_copy(update={"phases": {**self.phases, phase: new}})
