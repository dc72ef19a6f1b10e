"""The preflight checklist an engineer sees with the plan, and the campaign's access scope."""

from typing import Literal

from pydantic import Field

from contracts.base import Record, Spec

PreflightCheck = Literal["data", "specs", "smoke_step", "memory", "cost", "access"]


class AccessScope(Spec):
    """What a campaign's activities may read and write; anything else is refused.

    Attributes:
        read: Files or folders the campaign may read. Empty: only the dataset's own
            ``path`` (and the copy of MovieLens shipped in the ``recbole`` wheel, or
            generated data, which read no path).
        write: Folders the campaign may write checkpoints and job files under. Empty: the
            worker's data dir (``REA_DATA_DIR``).
    """

    read: list[str] = Field(default_factory=list)
    write: list[str] = Field(default_factory=list)


class PreflightItem(Record):
    """One line of the checklist.

    Attributes:
        check: What was checked.
        ok: Whether it passed.
        detail: What was found, with figures.
        fix: How to make it pass, when it failed.
    """

    check: PreflightCheck
    ok: bool
    detail: str = ""
    fix: str = ""


class PreflightReport(Record):
    """The checklist run before approval; approval is refused while an item fails, unless
    an approver overrides it with a reason."""

    items: list[PreflightItem] = Field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(item.ok for item in self.items)

    @property
    def failures(self) -> list[PreflightItem]:
        return [item for item in self.items if not item.ok]

    def summary(self) -> str:
        """One line: ``preflight passed (6 checks)`` or the failed checks and their fixes."""
        if self.passed:
            return f"preflight passed ({len(self.items)} checks)"
        return "preflight failed: " + "; ".join(
            f"{i.check}: {i.detail}" + (f" ({i.fix})" if i.fix else "") for i in self.failures
        )
