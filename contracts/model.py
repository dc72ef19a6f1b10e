"""What to train and on what data: the agent's action space."""

from typing import Any, Literal

from pydantic import Field, model_validator

from contracts.base import Spec

Metric = Literal["ne", "auc", "logloss"]

# NE and log loss are losses; AUC is a score.
LOWER_IS_BETTER: dict[str, bool] = {"ne": True, "logloss": True, "auc": False}


class ModelSpec(Spec):
    """A DLRM-style ranking model and how to train it.

    Only ``ranking_models`` turns this into TorchRec objects; here it is plain JSON.

    Attributes:
        embedding_dim: D, the width of every sparse embedding (and of the dense arch output);
            a multiple of 4, as FBGEMM's table-batched kernels require.
        max_table_rows: Ids are hashed into at most this many rows per table.
        dense_hidden: Hidden widths of the dense arch; its output width is ``embedding_dim``.
        over_hidden: Hidden widths of the over arch (at least one); its output is one logit.
        dropout: Dropout after each over-arch hidden layer.
        dense_lr: Learning rate of the dense parts (Adam).
        sparse_lr: Learning rate of the embeddings (row-wise Adagrad fused into backward).
        weight_decay: L2 penalty on the dense parts.
        batch_size: Examples per step.
        epochs: Passes over the training split.
        seed: Seeds initialisation and data order, so a spec trains the same way twice.
    """

    embedding_dim: int = Field(default=16, ge=4, le=512, multiple_of=4)
    max_table_rows: int = Field(default=100_000, ge=16, le=100_000_000)
    dense_hidden: list[int] = Field(default_factory=lambda: [32])
    over_hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    dense_lr: float = Field(default=1e-3, gt=0.0, le=10.0)
    sparse_lr: float = Field(default=0.05, gt=0.0, le=10.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=512, ge=1, le=1_000_000)
    epochs: int = Field(default=2, ge=1, le=1000)
    seed: int = Field(default=0, ge=0)

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
        for field in ("dense_hidden", "over_hidden"):
            widths = getattr(self, field)
            if any(w < 1 for w in widths):
                raise ValueError(f"{field}: every width must be >= 1, got {widths}")
        return self
