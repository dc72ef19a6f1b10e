"""The technique catalog as data: ranking-model techniques, their priors and citations.

``techniques.yaml`` lists what a ranking engineer would try on a DLRM-style model, each as
a small program of changes relative to the baseline. ``catalog.py`` holds its schema and
loader (validation names the file, the technique and the field), ``moves.py`` what a
technique does to a baseline; the offline research agent (``activities.agents.knowledge``)
ranks the moves. Like ``contracts``, this package sits below the activities: it imports
contracts, pydantic and yaml only.
"""

from knowledge.catalog import (
    MAX_TECHNIQUE_ID,
    CatalogError,
    Condition,
    Kind,
    Op,
    Prior,
    Technique,
    load_catalog,
)
from knowledge.moves import applies, changes_for, instantiate

__all__ = [
    "MAX_TECHNIQUE_ID",
    "CatalogError",
    "Condition",
    "Kind",
    "Op",
    "Prior",
    "Technique",
    "applies",
    "changes_for",
    "instantiate",
    "load_catalog",
]
