"""Which data a trial trains on and how it is cut."""

from typing import Literal

from pydantic import Field

from contracts.base import Spec


class DatasetRef(Spec):
    """A dataset and how to cut it.

    Attributes:
        name: The dataset. ``movielens-100k`` is MovieLens-100k turned into a CTR task
            (label = rating >= 4), split by time.
        path: Folder holding the raw files; empty means the copy shipped in the
            ``recbole`` wheel.
        max_rows: Keep only the first ``max_rows`` interactions in time (0 = all). Small
            values make tiny, fast runs for tests.
        validation_fraction: Share of the newest rows (before the test rows) used for
            validation and model selection.
        test_fraction: Share of the newest rows held out for the final report; never used
            for selection.
    """

    name: Literal["movielens-100k"] = "movielens-100k"
    path: str = ""
    max_rows: int = Field(default=0, ge=0)
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
