"""Plain-torch reference for ``kernels.tbe``: one ``nn.EmbeddingBag`` per table.

Slow and obvious on purpose. Tests hold the fused FBGEMM kernel to this: same pooled
output for the same weights, and the same tables after each row-wise Adagrad step.
"""

from collections.abc import Sequence

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from kernels import _common


def rowwise_adagrad_update(
    weight: torch.Tensor,
    grad: torch.Tensor,
    momentum: torch.Tensor,
    *,
    learning_rate: float,
    eps: float,
) -> None:
    """One exact row-wise Adagrad step, in place.

    Each row keeps one accumulator: the running sum of the row's mean squared gradient.
    "Exact" means the gradients of repeated ids in a batch are summed before the step,
    which is what ``grad`` of an ``nn.EmbeddingBag`` weight already is. Rows with a zero
    gradient (not looked up) are left unchanged, so this dense form matches the sparse
    update of the fused kernel.

    Args:
        weight: (rows, D) table, updated in place.
        grad: (rows, D) gradient of the loss with respect to ``weight``.
        momentum: (rows,) accumulator, updated in place.
        learning_rate: Step size.
        eps: Added to the square root of the accumulator.
    """
    with torch.no_grad():
        momentum.add_(grad.pow(2).mean(dim=1))  # (rows,)
        step = learning_rate / (momentum.sqrt() + eps)  # (rows,)
        weight.sub_(step.unsqueeze(1) * grad)


class ReferenceEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Sum-pooled ``nn.EmbeddingBag`` tables with a separate row-wise Adagrad step.

    Unlike the fused kernel, backward only fills ``.grad``; call ``step`` to apply the
    update. Same constructor, seeded init and weight accessors as
    ``FusedEmbeddingBagCollection``.

    Args:
        tables: One config per table; every pooling must be sum.
        learning_rate: Row-wise Adagrad learning rate.
        eps: Added to the square root of the accumulated squared gradient.
        seed: Seeds the initial weights.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        *,
        learning_rate: float,
        eps: float = 1e-8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _common.validate_tables(tables)
        self._tables = list(tables)
        self._feature_names = _common.feature_names(tables)
        self._feature_table = _common.feature_table_map(tables)
        self._dims = [tables[i].embedding_dim for i in self._feature_table]
        self.learning_rate = learning_rate
        self.eps = eps
        self.bags = nn.ModuleList(
            nn.EmbeddingBag(t.num_embeddings, t.embedding_dim, mode="sum") for t in tables
        )
        for i, t in enumerate(tables):
            self.register_buffer(f"momentum_{i}", torch.zeros(t.num_embeddings))
        self.load_weights(_common.seeded_weights(self._tables, seed))

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Pools each feature with its table's ``nn.EmbeddingBag``.

        Args:
            features: F features for B examples (see ``FusedEmbeddingBagCollection``).

        Returns:
            A KeyedTensor keyed by feature name whose values are (B, F * D).
        """
        features = _common.in_feature_order(features, self._feature_names)
        per_feature = features.to_dict()
        pooled = []
        for name, t in zip(self._feature_names, self._feature_table, strict=True):
            jt = per_feature[name]
            # offsets without the final total: EmbeddingBag's include_last_offset=False.
            offsets = jt.offsets()[:-1]
            pooled.append(self.bags[t](jt.values().long(), offsets.long()))  # (B, D)
        return _common.pooled_to_keyed(torch.cat(pooled, dim=1), self._feature_names, self._dims)

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The table configs, in table order."""
        return self._tables

    def is_weighted(self) -> bool:
        """Always False: bags are plain sums."""
        return False

    def step(self) -> None:
        """Applies row-wise Adagrad to every table from its ``.grad``, then clears it."""
        for i, bag in enumerate(self.bags):
            if bag.weight.grad is None:
                continue
            rowwise_adagrad_update(
                bag.weight,
                bag.weight.grad,
                getattr(self, f"momentum_{i}"),
                learning_rate=self.learning_rate,
                eps=self.eps,
            )
            bag.weight.grad = None

    def split_weights(self) -> list[torch.Tensor]:
        """Copies of the tables, one (rows, D) tensor per table."""
        return [bag.weight.detach().clone() for bag in self.bags]

    def load_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Overwrites the tables in place.

        Args:
            weights: One (rows, D) tensor per table.
        """
        if len(weights) != len(self.bags):
            raise ValueError(f"expected {len(self.bags)} tables, got {len(weights)}")
        with torch.no_grad():
            for bag, w in zip(self.bags, weights, strict=True):
                bag.weight.copy_(w)

    def optimizer_states(self) -> list[torch.Tensor]:
        """Copies of the row-wise Adagrad accumulators, one (rows,) tensor per table."""
        return [getattr(self, f"momentum_{i}").clone() for i in range(len(self.bags))]
