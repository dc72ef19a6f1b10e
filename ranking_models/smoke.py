"""Cheap checks before a campaign is approved: does the data load as expected, does one short
training run of a spec pass. No Temporal; the preflight activity calls these."""

from dataclasses import dataclass

from contracts import DatasetRef, ModelSpec
from ranking_models.data import FeatureSchema
from ranking_models.datasets import load_dataset
from ranking_models.trainer import check_data, train

# Rows of the smoke run: enough for a validation split with both labels, seconds to train.
SMOKE_ROWS = 2000
SMOKE_BATCH = 64


@dataclass(frozen=True)
class DataSummary:
    schema: FeatureSchema
    rows: int
    label_rate: float

    def describe(self) -> str:
        return (
            f"{self.rows:,} rows, {len(self.schema.sparse_features)} sparse and "
            f"{self.schema.num_dense} dense features, label rate {self.label_rate:.3f}"
        )


def inspect_data(dataset: DatasetRef, model: ModelSpec) -> DataSummary:
    """Load the data, check its splits, and read a batch of each (a sample, not a full scan:
    a bad line deep in a large file is found by training, and its runbook).

    Raises:
        BadDataError: missing, unreadable or malformed data, naming the file and the fix.
    """
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    for split in (data.train, data.validation, data.test):
        next(iter(split.batches(SMOKE_BATCH)), None)
    labels = data.validation.labels
    rows = len(data.train) + len(data.validation) + len(data.test)
    return DataSummary(schema=data.schema, rows=rows, label_rate=float(labels.float().mean()))


def smoke_step(model: ModelSpec, dataset: DatasetRef) -> float:
    """Train ``model`` for one short epoch on a few rows; its last training loss.

    Raises:
        BadSpecError, BadDataError, DivergenceError, OutOfMemoryError: as ``train``.
    """
    rows = min(dataset.max_rows or SMOKE_ROWS, SMOKE_ROWS)
    outcome = train(
        model.with_changes({"epochs": 1, "batch_size": min(model.batch_size, SMOKE_BATCH)}),
        dataset.model_copy(update={"max_rows": rows}),
    )
    return outcome.train_loss
