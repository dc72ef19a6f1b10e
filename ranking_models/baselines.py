"""Logistic regression on the same features: the floor every ranking model must clear.

One weight per id (a 1-dim sum-pooled embedding bag per sparse feature, i.e. one-hot
features) plus a linear layer on the dense features, trained with Adam on the same data
pipeline and scored with the same metrics as ``ranking_models.trainer``.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from contracts import DatasetRef, Metrics
from ranking_models.data import FeatureSchema
from ranking_models.datasets import check_data, load_dataset
from ranking_models.trainer import evaluate


class LogisticRegression(nn.Module):
    """A logit that is a sum of per-id weights and a linear function of the dense features.

    Args:
        schema: The data's sparse features, table sizes and dense features.

    Example::

        lr = LogisticRegression(data.schema)
        logits = lr(batch.dense, batch.sparse)  # (B, 1)
    """

    def __init__(self, schema: FeatureSchema) -> None:
        super().__init__()
        self.sparse = EmbeddingBagCollection(
            tables=[
                EmbeddingBagConfig(
                    name=f"t_{name}", embedding_dim=1, num_embeddings=rows, feature_names=[name]
                )
                for name, rows in zip(schema.sparse_features, schema.table_rows, strict=True)
            ]
        )
        for p in self.sparse.parameters():
            nn.init.zeros_(p)
        self.dense = nn.Linear(schema.num_dense, 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """Maps dense (B, num_dense) and F sparse features to (B, 1) logits."""
        per_feature = self.sparse(sparse).values()  # (B, F)
        return self.dense(dense) + per_feature.sum(dim=1, keepdim=True)


@dataclass(frozen=True)
class BaselineOutcome:
    """Validation and test metrics of the baseline, and the steps it took."""

    validation: Metrics
    test: Metrics
    steps: int


def train_logistic_regression(
    dataset: DatasetRef,
    *,
    max_table_rows: int = 100_000,
    learning_rate: float = 0.01,
    epochs: int = 2,
    batch_size: int = 512,
    seed: int = 0,
) -> BaselineOutcome:
    """Trains the logistic-regression baseline on CPU and scores validation and test.

    Args:
        dataset: The data and how to split it.
        max_table_rows: Ids are hashed into at most this many rows per table.
        learning_rate: Adam's learning rate.
        epochs: Passes over the training split.
        batch_size: Examples per step.
        seed: Seeds initialisation and data order.

    Returns:
        The baseline's metrics.

    Raises:
        BadDataError: The dataset is missing, malformed or splits badly.
    """
    data = load_dataset(dataset, max_table_rows=max_table_rows)
    check_data(data)
    torch.manual_seed(seed)
    model = LogisticRegression(data.schema)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    steps = 0
    for _ in range(epochs):
        model.train()
        for batch in data.train.batches(batch_size, generator=generator):
            loss = F.binary_cross_entropy_with_logits(
                model(batch.dense, batch.sparse).squeeze(1), batch.labels
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    return BaselineOutcome(
        validation=evaluate(model, data.validation, step=steps),
        test=evaluate(model, data.test, step=steps),
        steps=steps,
    )
