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
        # Ids before hashing: counted on the hashed tables, the largest feature never had
        # more ids than rows, so nothing could tell that ids collide.
        max_cardinality=max(schema.id_counts or schema.table_rows, default=0),
        label_rate=float(labels.float().mean()) if len(labels) else 0.0,
        model_family=baseline.interaction,
        model_params=params,
    )


# What one training step costs whatever its batch holds (op dispatch, autograd, the
# optimizers' per-tensor loops), in ``sample_work``'s units. Without it a change to a small model
# was costed by its FLOPs alone: a DCN on an 8-feature, 8-wide baseline at 5.2 of its trials,
# where it ran at 1.0-1.3. Fitted by ``python -m bench.cost_model`` to 1,486 whole-space
# trials of the agent benchmark (2-core CPU host; log error of the ratio: mean +0.44, rms 0.77
# without it; +0.06, rms 0.46 with it). On a GPU the step's fixed part weighs more; refit there.
STEP_OVERHEAD_WORK = 1.8e7


def relative_cost(
    baseline: ModelSpec,
    candidate: ModelSpec,
    dataset: DatasetRef,
    step_overhead: float = STEP_OVERHEAD_WORK,
) -> float:
    """A candidate trial's expected cost over the baseline's: the per-sample work (FLOPs plus
    embedding traffic, weighted as the CPU trainer spends them, plus the step's fixed part
    shared by its batch) times the epochs ratio.

    Raises:
        BadSpecError: The candidate does not build on this data (e.g. a DCN rank not below
            the cross layer's width, which depends on the data's features).
    """
    data = load_dataset(dataset, max_table_rows=baseline.max_table_rows)
    validate_spec(candidate, data.schema)
    work = sample_work(candidate, data) + step_overhead / candidate.batch_size
    base = sample_work(baseline, data) + step_overhead / baseline.batch_size
    return work / base * candidate.epochs / baseline.epochs


def sample_work(spec: ModelSpec, data: CtrDataset) -> float:
    """The work of one training sample of ``spec`` on ``data`` (FLOPs and weighted bytes),
    without the step's fixed part."""
    work = work_per_sample(
        spec, len(data.schema.sparse_features), data.schema.num_dense, data.ids_per_sample
    )
    # On a CPU a byte of embedding traffic costs about as much as ten FLOPs; only the ratio
    # between specs matters here, so the exact weight does not need to be calibrated.
    return work.flops + 10.0 * work.bytes
