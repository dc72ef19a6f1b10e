"""Turns a ``ModelSpec`` into a TorchRec DLRM whose sparse part is the fused FBGEMM TBE.

The only place a ``ModelSpec`` becomes torch objects. The interaction picks TorchRec's
``DLRM`` (dot), ``DLRM_DCN`` (DCNv2 cross layers) or ``DLRM_Projection``; the small
modules of ``ranking_models.arch`` are then swapped in for what TorchRec does not offer
(full-rank cross layers, dense-input norm, over-arch dropout, shrunken tables). Anything
the spec allows but the model cannot be built with raises ``BadSpecError`` naming the
field, before any training time is spent.
"""

import logging
import threading
from typing import Literal

import torch
from torch import nn
from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRM_Projection, InteractionDCNArch
from torchrec.modules.crossnet import CrossNet
from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig
from torchrec.modules.embedding_modules import (
    EmbeddingBagCollection,
    EmbeddingBagCollectionInterface,
)

from contracts import ModelSpec
from kernels import FusedEmbeddingBagCollection
from kernels._common import seeded_weights
from ranking_models.arch import (
    DotInteractionArch,
    DropoutOverArch,
    ModuloEmbeddingBagCollection,
    NormalizedDenseArch,
    PooledSparseArch,
    SeededDropout,
)
from ranking_models.data import FeatureSchema
from ranking_models.errors import BadSpecError

# torchrec calls torch.fx.is_fx_tracing(), which warns once per process about an API change
# that does not concern eager training; it would land in every `rea` output.
logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)

# Adagrad's and Adam's epsilon for the embeddings; not part of the spec (it rarely matters
# at this scale).
SPARSE_EPS = 1e-8

# Which module holds the tables: our fused FBGEMM collection (single process), or
# TorchRec's own EmbeddingBagCollection, the one TorchRec's sharders can shard
# (``ranking_models.distributed``).
Embeddings = Literal["fused", "torchrec"]

# Dense layers initialise from the global RNG; the worker trains several trials in
# threads, so seeding and drawing must not interleave between two builds.
_GLOBAL_RNG = threading.Lock()

__all__ = [
    "DropoutOverArch",
    "build_model",
    "dense_parameters",
    "dropout_modules",
    "interaction_width",
    "sparse_modules",
    "table_rows",
    "validate_spec",
]


def table_rows(spec: ModelSpec, schema: FeatureSchema) -> list[int]:
    """Rows of each feature's table: the data's size unless ``spec.table_rows`` overrides it."""
    return [
        spec.table_rows.get(name, rows)
        for name, rows in zip(schema.sparse_features, schema.table_rows, strict=True)
    ]


def interaction_width(spec: ModelSpec, num_sparse: int) -> int:
    """Width of the interaction output, the over arch's input, for F = ``num_sparse``.

    Dot: the dense embedding (D), one dot product per pair of sparse features and one per
    sparse feature with the dense embedding. DCN: the concatenated (F + 1) * D embeddings.
    Projection: D plus F1 * F2 = ``projection_size ** 2`` products.
    """
    d = spec.embedding_dim
    if spec.interaction == "dcn":
        return (num_sparse + 1) * d
    if spec.interaction == "projection":
        return d + spec.projection_size**2
    return d + num_sparse * (num_sparse - 1) // 2 + num_sparse


def validate_spec(spec: ModelSpec, schema: FeatureSchema | None = None) -> None:
    """Rejects specs the model cannot be built from.

    Args:
        spec: The model spec.
        schema: The data's features, when known; checks ``table_rows`` and
            ``dcn_low_rank`` against them.

    Raises:
        BadSpecError: Naming the field and the fix.
    """
    if spec.embedding_dim % 4 != 0:
        raise BadSpecError(
            "embedding_dim",
            f"{spec.embedding_dim} is not a multiple of 4, which the fused FBGEMM "
            "embedding kernel requires; use e.g. 8, 16 or 32",
        )
    if not spec.over_hidden:
        raise BadSpecError(
            "over_hidden",
            "is empty; DLRM's over arch needs at least one hidden layer, e.g. [64, 32]",
        )
    if schema is None:
        return
    unknown = sorted(set(spec.table_rows) - set(schema.sparse_features))
    if unknown:
        raise BadSpecError(
            "table_rows",
            f"features {unknown} are not in the dataset; it has {list(schema.sparse_features)}",
        )
    width = interaction_width(spec, len(schema.sparse_features))
    if spec.interaction == "dcn" and spec.dcn_low_rank >= width:
        raise BadSpecError(
            "dcn_low_rank",
            f"{spec.dcn_low_rank} is not below the cross layer width {width}; "
            "use 0 for full rank or a smaller rank",
        )


def build_model(
    spec: ModelSpec,
    schema: FeatureSchema,
    *,
    device: torch.device | str | None = None,
    embeddings: Embeddings = "fused",
) -> DLRM:
    """Builds a seeded DLRM for ``schema``'s features.

    Dense arch: ``dense_hidden + [embedding_dim]`` (after ``dense_norm``); interaction:
    ``spec.interaction``; over arch: ``over_hidden + [1]`` (with dropout after each hidden
    layer when ``spec.dropout > 0``); sparse arch: one fused FBGEMM table per sparse
    feature in ``embedding_precision``, trained by ``sparse_optimizer`` at ``sparse_lr``
    inside backward.

    Args:
        spec: The model to build.
        schema: Sparse feature names, table sizes and the number of dense features.
        device: Where the model lives; default CPU.
        embeddings: ``fused`` (default): our ``FusedEmbeddingBagCollection``, trained
            inside backward. ``torchrec``: TorchRec's plain ``EmbeddingBagCollection``
            with the same seeded initial rows and no optimizer of its own, for
            ``DistributedModelParallel`` to shard and fuse its optimizer into
            (``ranking_models.distributed``).

    Returns:
        A ``DLRM`` (or subclass) mapping (dense (B, num_dense), sparse KJT) to logits (B, 1).

    Raises:
        BadSpecError: The spec cannot be built (see ``validate_spec``).
    """
    validate_spec(spec, schema)
    device = torch.device(device or "cpu")
    with _GLOBAL_RNG:
        # Seeding the global RNG here makes a spec build the same model every time.
        torch.manual_seed(spec.seed)
        return _build(spec, schema, device, embeddings).to(device)


def _build(
    spec: ModelSpec, schema: FeatureSchema, device: torch.device, embeddings: Embeddings
) -> DLRM:
    d, num_sparse = spec.embedding_dim, len(schema.sparse_features)
    rows = table_rows(spec, schema)
    tables = [
        EmbeddingBagConfig(
            name=f"t_{name}", embedding_dim=d, num_embeddings=n, feature_names=[name]
        )
        for name, n in zip(schema.sparse_features, rows, strict=True)
    ]
    sparse: EmbeddingBagCollectionInterface
    if embeddings == "torchrec":
        sparse = _torchrec_tables(spec, tables, device)
    else:
        sparse = FusedEmbeddingBagCollection(
            tables,
            learning_rate=spec.sparse_lr,
            optimizer=spec.sparse_optimizer,
            precision=spec.embedding_precision,
            eps=SPARSE_EPS,
            device=device,
            seed=spec.seed,
        )
    if any(n < m for n, m in zip(rows, schema.table_rows, strict=True)):
        sparse = ModuloEmbeddingBagCollection(sparse)
    common = {
        "embedding_bag_collection": sparse,
        "dense_in_features": schema.num_dense,
        "dense_arch_layer_sizes": [*spec.dense_hidden, d],
        "over_arch_layer_sizes": [*spec.over_hidden, 1],
        "dense_device": device,
    }
    model: DLRM
    if spec.interaction == "dcn":
        model = DLRM_DCN(
            **common,  # type: ignore[arg-type]
            dcn_num_layers=spec.dcn_layers,
            dcn_low_rank_dim=max(spec.dcn_low_rank, 1),
        )
        if spec.dcn_low_rank == 0:
            # TorchRec's DLRM_DCN is low-rank only; DCNv2's full-rank layers are CrossNet.
            crossnet = CrossNet(in_features=(num_sparse + 1) * d, num_layers=spec.dcn_layers)
            model.inter_arch = InteractionDCNArch(num_sparse, crossnet)
    elif spec.interaction == "projection":
        branch = [*spec.projection_hidden, spec.projection_size * d]
        model = DLRM_Projection(
            **common,  # type: ignore[arg-type]
            interaction_branch1_layer_sizes=branch,
            interaction_branch2_layer_sizes=list(branch),
        )
    else:
        model = DLRM(**common)  # type: ignore[arg-type]
        # Same output as TorchRec's InteractionArch; one bmm fewer in backward.
        model.inter_arch = DotInteractionArch(num_sparse)
    if embeddings == "fused":
        # The fused kernel's (B, F * D) output read as (B, F, D), not split and re-joined.
        # TorchRec's collection keeps TorchRec's SparseArch, which its sharders expect.
        model.sparse_arch = PooledSparseArch(sparse)  # type: ignore[arg-type]
    if spec.dense_norm != "none":
        norm: nn.Module = (
            nn.BatchNorm1d(schema.num_dense)
            if spec.dense_norm == "batch"
            else nn.LayerNorm(schema.num_dense)
        )
        model.dense_arch = NormalizedDenseArch(norm, model.dense_arch)  # type: ignore[assignment]
    if spec.dropout > 0.0:
        model.over_arch = DropoutOverArch(  # type: ignore[assignment]
            in_features=interaction_width(spec, num_sparse),
            layer_sizes=[*spec.over_hidden, 1],
            dropout=spec.dropout,
            device=device,
        )
    return model


def _torchrec_tables(
    spec: ModelSpec, tables: list[EmbeddingBagConfig], device: torch.device
) -> EmbeddingBagCollection:
    """TorchRec's collection over ``tables``, starting from the fused collection's rows."""
    if spec.embedding_precision == "fp16":
        # The sharded kernel reads the storage precision from each table's data type.
        tables = [
            EmbeddingBagConfig(
                name=t.name,
                embedding_dim=t.embedding_dim,
                num_embeddings=t.num_embeddings,
                feature_names=t.feature_names,
                data_type=DataType.FP16,
            )
            for t in tables
        ]
    # TorchRec initialises its rows from the global RNG; forking it leaves the dense
    # layers drawn after this exactly as in the fused build.
    with torch.random.fork_rng(devices=[]):
        ebc = EmbeddingBagCollection(tables, device=device)
    with torch.no_grad():
        for t, w in zip(tables, seeded_weights(tables, spec.seed), strict=True):
            weight = ebc.embedding_bags[t.name].weight
            weight.copy_(w.to(weight.dtype))
    return ebc


def sparse_modules(model: nn.Module) -> list[FusedEmbeddingBagCollection]:
    """The fused embedding collections inside ``model`` (one for a model from ``build_model``)."""
    return [m for m in model.modules() if isinstance(m, FusedEmbeddingBagCollection)]


def dropout_modules(model: nn.Module) -> list[SeededDropout]:
    """The seeded dropout layers inside ``model``, in registration order."""
    return [m for m in model.modules() if isinstance(m, SeededDropout)]


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters a dense optimizer should step: all but the fused embedding tables.

    The fused tables are registered as parameters (so ``state_dict`` saves them) but
    are updated inside backward; stepping them again would corrupt them.

    Args:
        model: A model from ``build_model``.

    Returns:
        The dense parameters, in registration order.
    """
    fused = {
        id(p)
        for m in model.modules()
        if isinstance(m, FusedEmbeddingBagCollection)
        for p in m.parameters()
    }
    return [p for p in model.parameters() if id(p) not in fused]
