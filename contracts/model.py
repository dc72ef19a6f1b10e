"""What to train and on what data: the agent's action space."""

from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.base import Spec

Interaction = Literal["dot", "dcn", "projection"]
DenseNorm = Literal["none", "batch", "layer"]
DenseOptimizer = Literal["adam", "adagrad", "sgd"]
SparseOptimizer = Literal["rowwise_adagrad", "adam", "sgd"]
LrSchedule = Literal["none", "linear", "cosine"]
EmbeddingPrecision = Literal["fp32", "fp16"]


class ModelSpec(Spec):
    """A DLRM-style ranking model and how to train it.

    Only ``ranking_models`` turns this into TorchRec objects; here it is plain JSON. Every
    field has a default equal to the original DLRM baseline, so older specs mean what they
    meant.

    Attributes:
        embedding_dim: D, the width of every sparse embedding (and of the dense arch output);
            a multiple of 4, as FBGEMM's table-batched kernels require.
        max_table_rows: Ids are hashed into at most this many rows per table.
        table_rows: Per-feature row counts overriding the table size the data implies
            (e.g. ``{"item": 512}``); a smaller table hashes ids modulo its rows. Feature
            names are checked against the dataset when the model is built.
        dense_hidden: Hidden widths of the dense arch; its output width is ``embedding_dim``.
        dense_norm: Normalisation of the raw dense inputs before the dense arch:
            ``none``, ``batch`` (BatchNorm1d) or ``layer`` (LayerNorm).
        interaction: How dense and sparse embeddings meet: ``dot`` (DLRM pairwise dot
            products), ``dcn`` (DCNv2 cross layers) or ``projection`` (DLRM_Projection:
            two MLP branches whose outputs are multiplied).
        dcn_layers: Cross layers when ``interaction`` is ``dcn``.
        dcn_low_rank: Rank of each cross layer's weight (U V^T); 0 means full rank.
        projection_hidden: Hidden widths of both projection branches.
        projection_size: Each projection branch ends at ``projection_size * embedding_dim``
            and the interaction emits ``projection_size ** 2`` features (F1 = F2).
        over_hidden: Hidden widths of the over arch (at least one); its output is one logit.
        dropout: Dropout after each over-arch hidden layer.
        dense_optimizer: Optimizer of the dense parts: ``adam``, ``adagrad`` or ``sgd``.
        dense_lr: Peak learning rate of the dense parts.
        sparse_optimizer: Optimizer fused into the embedding backward: ``rowwise_adagrad``,
            ``adam`` or ``sgd``.
        sparse_lr: Peak learning rate of the embeddings.
        lr_warmup_steps: Steps over which both learning rates rise linearly from 0.
        lr_schedule: Decay after warmup to 0 at the last step: ``none``, ``linear`` or
            ``cosine``.
        grad_clip_norm: Clip the dense gradients' global L2 norm to this; 0 turns it off.
        weight_decay: L2 penalty on the dense parts.
        embedding_precision: Storage of embedding rows: ``fp32`` or ``fp16``.
        batch_size: Examples per step.
        epochs: Passes over the training split.
        seed: Seeds initialisation and data order, so a spec trains the same way twice.
    """

    embedding_dim: int = Field(default=16, ge=4, le=512, multiple_of=4)
    max_table_rows: int = Field(default=100_000, ge=16, le=100_000_000)
    table_rows: dict[str, int] = Field(default_factory=dict)
    dense_hidden: list[int] = Field(default_factory=lambda: [32])
    dense_norm: DenseNorm = "none"
    interaction: Interaction = "dot"
    dcn_layers: int = Field(default=3, ge=1, le=16)
    dcn_low_rank: int = Field(default=0, ge=0, le=4096)
    projection_hidden: list[int] = Field(default_factory=lambda: [64])
    projection_size: int = Field(default=4, ge=1, le=64)
    over_hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    dense_optimizer: DenseOptimizer = "adam"
    dense_lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    sparse_optimizer: SparseOptimizer = "rowwise_adagrad"
    sparse_lr: float = Field(default=0.05, gt=0.0, le=10.0)
    lr_warmup_steps: int = Field(default=0, ge=0, le=10_000_000)
    lr_schedule: LrSchedule = "none"
    grad_clip_norm: float = Field(default=0.0, ge=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    embedding_precision: EmbeddingPrecision = "fp32"
    batch_size: int = Field(default=512, ge=1, le=1_000_000)
    epochs: int = Field(default=2, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)

    def changes_from(self, baseline: "ModelSpec", *, with_seed: bool = False) -> dict[str, Any]:
        """The fields (as JSON) where this spec differs from ``baseline``; the seed only when
        ``with_seed`` (a seed is a replicate, not a change, except to a trial's record)."""
        old, new = baseline.model_dump(mode="json"), self.model_dump(mode="json")
        return {k: v for k, v in new.items() if (with_seed or k != "seed") and old.get(k) != v}

    def with_changes(self, *changes: dict[str, Any]) -> "ModelSpec":
        """This spec with each change applied in order, validated as a whole.

        Raises:
            pydantic.ValidationError: when the result is invalid; the message names the field.
        """
        merged = self.model_dump()
        for change in changes:
            merged.update(change)
        return ModelSpec.model_validate(merged)

    @model_validator(mode="after")
    def _widths_positive(self) -> "ModelSpec":
        for field in ("dense_hidden", "over_hidden", "projection_hidden"):
            widths = getattr(self, field)
            if any(w < 1 for w in widths):
                raise ValueError(f"{field}: every width must be >= 1, got {widths}")
        for feature, rows in self.table_rows.items():
            if rows < 1 or rows > self.max_table_rows:
                raise ValueError(
                    f"table_rows: {feature!r} has {rows} rows; it must be between 1 and "
                    f"max_table_rows ({self.max_table_rows})"
                )
        return self
