"""What a task looks like (for insights to transfer between similar ones) and what a change
costs relative to the baseline (for the planner to rank gain per cost)."""

from contracts import DatasetRef, ModelSpec, TaskDescriptor
from ranking_models.cost import work_per_sample
from ranking_models.data import CtrDataset
from ranking_models.datasets import load_dataset
from ranking_models.dlrm import validate_spec
from ranking_models.memory import dense_parameter_count

# Labels read to estimate the label rate: enough for three digits, cheap on streaming data.
LABEL_SAMPLE = 65_536


def describe_task(dataset: DatasetRef, baseline: ModelSpec) -> TaskDescriptor:
    """The descriptor of training ``baseline`` on ``dataset``.

    Raises:
        BadDataError: The data is missing or malformed.
    """
    data = load_dataset(dataset, max_table_rows=baseline.max_table_rows)
    schema = data.schema
    rows = sum(data.splits().values())
    labels = data.train.batch(slice(0, min(len(data.train), LABEL_SAMPLE))).labels
    params = (
        dense_parameter_count(baseline, schema) + sum(schema.table_rows) * baseline.embedding_dim
    )
    return TaskDescriptor(
        dataset=dataset.name,
        rows=rows,
        dense_features=schema.num_dense,
        sparse_features=len(schema.sparse_features),
        total_cardinality=sum(schema.table_rows),
        max_cardinality=max(schema.table_rows, default=0),
        label_rate=float(labels.float().mean()) if len(labels) else 0.0,
        model_family=baseline.interaction,
        model_params=params,
    )


def relative_cost(baseline: ModelSpec, candidate: ModelSpec, dataset: DatasetRef) -> float:
    """A candidate trial's expected cost over the baseline's: the per-sample work (FLOPs plus
    embedding traffic, weighted as the CPU trainer spends them) times the epochs ratio.

    Raises:
        BadSpecError: The candidate does not build on this data (e.g. a DCN rank not below
            the cross layer's width, which depends on the data's features).
    """
    data = load_dataset(dataset, max_table_rows=baseline.max_table_rows)
    validate_spec(candidate, data.schema)
    return _work(candidate, data) / _work(baseline, data) * candidate.epochs / baseline.epochs


def _work(spec: ModelSpec, data: CtrDataset) -> float:
    work = work_per_sample(
        spec, len(data.schema.sparse_features), data.schema.num_dense, data.ids_per_sample
    )
    # On a CPU a byte of embedding traffic costs about as much as ten FLOPs; only the ratio
    # between specs matters here, so the exact weight does not need to be calibrated.
    return work.flops + 10.0 * work.bytes
