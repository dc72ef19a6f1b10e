"""Cheap checks before a campaign is approved: does the data load as expected, does one
training step of a spec run. No Temporal; the preflight activity calls these."""

from dataclasses import dataclass

import torch

from contracts import DatasetRef, ModelSpec
from ranking_models import memory
from ranking_models.data import CtrDataset, FeatureSchema, Split
from ranking_models.datasets import check_data, load_dataset
from ranking_models.dlrm import build_model, dense_parameters, sparse_modules
from ranking_models.errors import BadDataError
from ranking_models.optim import dense_optimizer
from ranking_models.train_step import DivergenceMonitor, TrainStep, typed_errors

# Rows the smoke step loads (``DatasetRef.max_rows``): enough for validation and test
# splits with both labels on MovieLens-like click rates, a fraction of a second to load.
SMOKE_ROWS = 2000
# Rows read from each end of each split when the data is inspected.
SAMPLE_ROWS = 64


@dataclass(frozen=True)
class DataSummary:
    """What ``inspect_data`` found.

    Attributes:
        schema: The data's features.
        splits: Rows per split, in train, validation, test order.
        label_rate: Share of positive labels in the validation split.
    """

    schema: FeatureSchema
    splits: dict[str, int]
    label_rate: float

    @property
    def rows(self) -> int:
        return sum(self.splits.values())

    def describe(self) -> str:
        """One line with the figures, e.g. ``3,000 rows (train 2,400, ...), 10 sparse ...``."""
        splits = ", ".join(f"{name} {n:,}" for name, n in self.splits.items())
        return (
            f"{self.rows:,} rows ({splits}), {len(self.schema.sparse_features)} sparse and "
            f"{self.schema.num_dense} dense features, validation label rate "
            f"{self.label_rate:.3f}"
        )


def inspect_data(dataset: DatasetRef, model: ModelSpec) -> DataSummary:
    """Load the data, check its splits, and read the first and last rows of each.

    A sample, not a full scan: the last rows catch a file cut short by an interrupted
    copy (it ends the data); a bad line deep in a large file is found by training, and
    its runbook.

    Args:
        dataset: The data to inspect.
        model: The baseline (``max_table_rows`` hashes the ids, as training will).

    Returns:
        The schema, the split sizes and the validation label rate.

    Raises:
        BadDataError: missing, unreadable or malformed data, an empty split, labels
            other than 0/1, or rows without the schema's features; naming the file or
            the ``DatasetRef`` field and the fix.
    """
    data = load_dataset(dataset, max_table_rows=model.max_table_rows)
    check_data(data)
    if not data.schema.sparse_features:
        raise BadDataError(f"{dataset.name}: no sparse features; a DLRM needs at least one")
    for split in (data.train, data.validation, data.test):
        _check_sample(split, data.schema)
    labels = data.validation.labels
    return DataSummary(
        schema=data.schema, splits=data.splits(), label_rate=float(labels.float().mean())
    )


def smoke_step(
    model: ModelSpec,
    dataset: DatasetRef,
    rows: int = 64,
    *,
    device: torch.device | str | None = None,
) -> float:
    """One training step of ``model`` on the first ``rows`` training rows; its loss.

    Builds the model and its optimizers as ``train`` does (memory checked first), runs
    one ``TrainStep`` as the first of a one-step run (its learning rates, its divergence
    check), on a cut of the data (``SMOKE_ROWS`` rows) so that even a large dataset loads
    quickly.

    Args:
        model: The spec to try.
        dataset: The data it trains on.
        rows: The batch's rows.
        device: Where to run; default CUDA when available, else CPU (as ``train``).

    Returns:
        The step's training loss (before the update).

    Raises:
        BadSpecError: The spec cannot be built.
        BadDataError: The data is missing or malformed.
        OutOfMemoryError: The model cannot fit (see ``memory.check_fits``), or an
            allocation failed.
        DivergenceError: The loss is NaN or infinite.
    """
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = _load_cut(dataset, model.max_table_rows)
    memory.check_fits(model, data.schema)
    with typed_errors(model):
        net = build_model(model, data.schema, device=device)
        optimizer = dense_optimizer(model, dense_parameters(net))
        net.train()
        train = data.train.to(device)
        batch = train.batch(torch.arange(min(rows, len(train))))
        # A fresh monitor judges step 1 by finiteness alone (it only sets the reference).
        only_step = TrainStep(
            model, net, optimizer, sparse_modules(net), DivergenceMonitor(), total_steps=1
        )
        return only_step(batch, step=0)


def _load_cut(dataset: DatasetRef, max_table_rows: int) -> CtrDataset:
    """The dataset's first ``SMOKE_ROWS`` rows, or all of it when the cut cannot be used.

    A cut can fail where the whole data does not (MovieLens refuses a validation split
    of one class, which a few rows of skewed data can give); the smoke step needs only
    training rows, so it then loads the data as given, whose own error stands.
    """
    rows = min(dataset.max_rows or SMOKE_ROWS, SMOKE_ROWS)
    if rows == dataset.max_rows:
        return load_dataset(dataset, max_table_rows=max_table_rows)
    cut = dataset.model_copy(update={"max_rows": rows})
    try:
        return load_dataset(cut, max_table_rows=max_table_rows)
    except BadDataError:
        return load_dataset(dataset, max_table_rows=max_table_rows)


def _check_sample(split: Split, schema: FeatureSchema) -> None:
    """Reads the first and last ``SAMPLE_ROWS`` rows of ``split`` and checks them.

    Raises:
        BadDataError: A row is malformed (raised by the reader), a label is not 0 or 1,
            a dense feature is NaN or infinite, or the features differ from ``schema``.
    """
    n = len(split)
    # Row indices, not a slice: a streamed split turns a slice into arange(len), which
    # for billions of rows is gigabytes.
    for rows in (torch.arange(min(SAMPLE_ROWS, n)), torch.arange(max(n - SAMPLE_ROWS, 0), n)):
        batch = split.batch(rows)
        where = f"the {split.name} split (rows {int(rows[0])}..{int(rows[-1])})"
        if not torch.all((batch.labels == 0) | (batch.labels == 1)):
            raise BadDataError(f"{where} has labels other than 0 and 1")
        if batch.dense.shape[1] != schema.num_dense or not torch.isfinite(batch.dense).all():
            raise BadDataError(
                f"{where} has dense features of shape {tuple(batch.dense.shape)} or NaN/"
                f"infinite values; expected {schema.num_dense} finite columns"
            )
        if tuple(batch.sparse.keys()) != schema.sparse_features:
            raise BadDataError(
                f"{where} has sparse features {batch.sparse.keys()}, expected "
                f"{list(schema.sparse_features)}"
            )
