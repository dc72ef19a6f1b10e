"""What kind of task a campaign runs on, so that lessons transfer between similar ones."""

import math

from pydantic import Field

from contracts.base import Record


class TaskDescriptor(Record):
    """What kind of task a campaign ran on, so that lessons transfer between similar ones.

    Attributes:
        dataset: The dataset's name (``movielens-100k``, ``synthetic-criteo``...).
        rows: Rows in all splits.
        dense_features: Dense feature columns.
        sparse_features: Sparse features (embedding tables).
        total_cardinality: Embedding rows over all tables.
        max_cardinality: Distinct ids of the largest sparse feature before hashing (for data
            hashed as it is read, whose ids are not counted, the largest table's rows).
        label_rate: Share of positive labels in the train split.
        model_family: The baseline's interaction (``dot``, ``dcn``, ``projection``).
        model_params: Parameters of the baseline (embeddings included).
    """

    dataset: str
    rows: int = Field(ge=0)
    dense_features: int = Field(ge=0)
    sparse_features: int = Field(ge=0)
    total_cardinality: int = Field(ge=0)
    max_cardinality: int = Field(ge=0)
    label_rate: float = Field(ge=0.0, le=1.0)
    model_family: str
    model_params: int = Field(ge=0)

    def similarity(self, other: "TaskDescriptor") -> float:
        """1 for the same kind of task, falling toward 0 as sizes and shapes drift apart.

        A Gaussian kernel on log sizes (a task 10x larger is as far as one 10x smaller), plus
        the label rate's log-odds and whether the model family matches; the data set's name
        is not compared, so lessons from synthetic data reach a real set of the same shape.
        """

        def log_gap(a: float, b: float) -> float:
            return math.log1p(a) - math.log1p(b)

        def logit(p: float) -> float:
            p = min(max(p, 1e-4), 1 - 1e-4)
            return math.log(p / (1 - p))

        gaps = [
            log_gap(self.rows, other.rows) / 2.0,
            log_gap(self.dense_features, other.dense_features),
            log_gap(self.sparse_features, other.sparse_features),
            log_gap(self.total_cardinality, other.total_cardinality) / 2.0,
            log_gap(self.model_params, other.model_params) / 2.0,
            logit(self.label_rate) - logit(other.label_rate),
            0.0 if self.model_family == other.model_family else 1.0,
        ]
        return math.exp(-sum(g * g for g in gaps) / 2.0)
