"""How much memory training a ``ModelSpec`` needs, checked before anything is allocated.

A spec whose embedding tables cannot fit (say 100M rows x 512 dims) would otherwise
fail minutes into ``build_model``, or drive the host into swap, and look like a crash
worth retrying. ``check_fits`` turns it into a non-retryable ``OutOfMemoryError`` that
names the fields to change, from arithmetic on the spec and the data's schema alone.

The estimate (``training_bytes``) counts what training holds for its whole life:

    embeddings  sum(rows) * D * (4 fp32 | 2 fp16)              the tables
              + sum(rows) * 4                                  rowwise_adagrad's accumulator
              | sum(rows) * D * 4 * 2                          adam's two moments (fp32)
              | 0                                              sgd
    dense       P * 4 * (2 + slots)   P dense parameters, fp32 weights and gradients plus
                                      the optimizer's fp32 slots (adam 2, adagrad 1, sgd 0)

with rows from ``dlrm.table_rows`` and P counted from the architecture the spec
describes (``dense_parameter_count``). It leaves out what is transient or
data-dependent: activations, the loaded data, the fp32 draw that initialises the tables
and the copies a checkpoint takes. So it is a lower bound on the peak, and
``check_fits`` only lets the model take ``SAFETY_SHARE`` of the limit, leaving the
rest for those and for everything else on the host.
"""

import math
import os

from contracts import ModelSpec
from ranking_models.data import FeatureSchema
from ranking_models.dlrm import interaction_width, table_rows
from ranking_models.errors import OutOfMemoryError

# The share of the memory limit the estimate may use (see the module docstring).
SAFETY_SHARE = 0.8
# Overrides the host's physical memory as the limit, in GiB (e.g. "16" or "7.5").
LIMIT_ENV = "REA_MEMORY_LIMIT_GB"

GIB = 1024**3
_FP32 = 4
_ROW_BYTES = {"fp32": 4, "fp16": 2}
_DENSE_OPTIMIZER_SLOTS = {"adam": 2, "adagrad": 1, "sgd": 0}


def embedding_bytes(spec: ModelSpec, schema: FeatureSchema) -> int:
    """Bytes of the embedding tables and their sparse optimizer state.

    Args:
        spec: The model spec.
        schema: The data's features (table sizes before ``spec.table_rows`` overrides).

    Returns:
        ``rows * D * row_bytes`` plus the state of ``spec.sparse_optimizer``.
    """
    rows = sum(table_rows(spec, schema))
    elements = rows * spec.embedding_dim
    tables = elements * _ROW_BYTES[spec.embedding_precision]
    if spec.sparse_optimizer == "rowwise_adagrad":
        state = rows * _FP32  # one accumulator per row
    elif spec.sparse_optimizer == "adam":
        state = 2 * elements * _FP32  # first and second moments, fp32 whatever the rows
    else:
        state = 0
    return tables + state


def dense_parameter_count(spec: ModelSpec, schema: FeatureSchema) -> int:
    """Parameters of everything but the embedding tables, counted from the spec.

    The same count as ``dlrm.dense_parameters(build_model(spec, schema))``, without
    building anything.

    Args:
        spec: The model spec.
        schema: The data's features.

    Returns:
        Weights and biases of the dense arch, dense-input norm, interaction and over arch.
    """
    d, num_sparse = spec.embedding_dim, len(schema.sparse_features)
    count = _mlp(schema.num_dense, [*spec.dense_hidden, d])
    if spec.dense_norm != "none":
        count += 2 * schema.num_dense  # scale and shift of batch or layer norm
    if spec.interaction == "dcn":
        width = (num_sparse + 1) * d
        # Full rank: W (width, width); low rank: U (width, r) and V (r, width); both + bias.
        kernel = width * width if spec.dcn_low_rank == 0 else 2 * width * spec.dcn_low_rank
        count += spec.dcn_layers * (kernel + width)
    elif spec.interaction == "projection":
        branch = [*spec.projection_hidden, spec.projection_size * d]
        count += 2 * _mlp((num_sparse + 1) * d, branch)
    count += _mlp(interaction_width(spec, num_sparse), [*spec.over_hidden, 1])
    return count


def training_bytes(spec: ModelSpec, schema: FeatureSchema) -> int:
    """Estimated bytes that training ``spec`` on data with ``schema`` holds throughout.

    Embedding tables with their sparse optimizer state (``embedding_bytes``) plus dense
    parameters with their gradients and dense optimizer state; see the module
    docstring for the formula and what it leaves out.

    Args:
        spec: The model spec.
        schema: The data's features.

    Returns:
        The estimate in bytes.
    """
    slots = _DENSE_OPTIMIZER_SLOTS[spec.dense_optimizer]
    dense = dense_parameter_count(spec, schema) * _FP32 * (2 + slots)
    return embedding_bytes(spec, schema) + dense


def memory_limit_bytes() -> int:
    """The memory training may use: ``$REA_MEMORY_LIMIT_GB`` GiB, else the host's RAM.

    Returns:
        Bytes.

    Raises:
        ValueError: ``REA_MEMORY_LIMIT_GB`` is set but not a positive number.
    """
    value = os.environ.get(LIMIT_ENV, "").strip()
    if value:
        try:
            gib = float(value)
        except ValueError:
            gib = 0.0
        if not (math.isfinite(gib) and gib > 0.0):
            raise ValueError(f"{LIMIT_ENV} must be a positive number of GiB, got {value!r}")
        return int(gib * GIB)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(spec: ModelSpec, schema: FeatureSchema, limit_bytes: int | None = None) -> None:
    """Fails fast when training ``spec`` cannot fit in memory.

    Args:
        spec: The model spec.
        schema: The data's features.
        limit_bytes: The memory available; None: ``memory_limit_bytes()``.

    Raises:
        OutOfMemoryError: ``training_bytes`` is above ``SAFETY_SHARE`` of the limit; the
            message names the fields to change and the figures.
    """
    limit = memory_limit_bytes() if limit_bytes is None else limit_bytes
    need = training_bytes(spec, schema)
    if need <= SAFETY_SHARE * limit:
        return
    tables = embedding_bytes(spec, schema)
    if tables >= need - tables:
        fixes = "lower table_rows, max_table_rows or embedding_dim"
        if spec.sparse_optimizer == "adam":
            fixes += ", use sparse_optimizer rowwise_adagrad (adam keeps 2 floats per element)"
        if spec.embedding_precision == "fp32":
            fixes += ", or set embedding_precision fp16"
        fields = "table_rows/embedding_dim"
    else:
        # Only reachable with huge dense or cross layers (full-rank DCN on wide inputs).
        fixes = "narrow dense_hidden, over_hidden or projection_hidden, or set dcn_low_rank"
        fields = "interaction/over_hidden"
    raise OutOfMemoryError(
        f"ModelSpec.{fields}: the model needs {need / GIB:.1f} GiB to train "
        f"(embedding tables and their optimizer state {tables / GIB:.1f} GiB), more than "
        f"{SAFETY_SHARE:.0%} of the {limit / GIB:.1f} GiB memory limit (the host's memory, "
        f"or {LIMIT_ENV} when set); {fixes}"
    )


def _mlp(in_features: int, layer_sizes: list[int]) -> int:
    """Weights and biases of a stack of Linear layers."""
    count = 0
    for out in layer_sizes:
        count += in_features * out + out
        in_features = out
    return count
