"""A first cost model: seconds for one trial, scaled from a measured reference run.

The reference is the default ``ModelSpec`` on MovieLens-100k on a 2-core CPU host
(~115k samples/s through training and evaluation, measured with ``rea train``). A spec is
scaled by its dense FLOPs per sample relative to that reference. It is uncalibrated on
other hosts; the planner only needs the order of magnitude for the budget.
"""

from contracts import DatasetRef, ModelSpec
from ranking_models.trainer import load_dataset

REFERENCE_SAMPLES_PER_S = 115_000.0
# Data loading, model building and Temporal bookkeeping per trial.
FIXED_OVERHEAD_S = 2.0


def flops_per_sample(spec: ModelSpec, sparse_features: int, dense_features: int) -> float:
    """Multiply-adds per example, forward and backward (x3), of the dense arch, the dot
    interaction and the over arch; embedding lookups are memory-bound and counted as D each.
    """
    d = spec.embedding_dim
    dense = _mlp(dense_features, [*spec.dense_hidden, d])
    pairs = (sparse_features + 1) * sparse_features // 2
    interaction = pairs * d
    over = _mlp(d + pairs, [*spec.over_hidden, 1])
    lookups = sparse_features * d
    return 3.0 * (dense + interaction + over) + lookups


def _mlp(width: int, layers: list[int]) -> int:
    total = 0
    for out in layers:
        total += width * out
        width = out
    return total


def estimate_seconds(spec: ModelSpec, dataset: DatasetRef) -> float:
    """Estimated wall seconds of one trial of ``spec`` on ``dataset`` on one device."""
    data = load_dataset(dataset, max_table_rows=spec.max_table_rows)
    schema = data.schema
    samples = len(data.train) * spec.epochs + len(data.validation) + len(data.test)
    scale = flops_per_sample(
        spec, len(schema.sparse_features), schema.num_dense
    ) / flops_per_sample(ModelSpec(), len(schema.sparse_features), schema.num_dense)
    return FIXED_OVERHEAD_S + samples * scale / REFERENCE_SAMPLES_PER_S
