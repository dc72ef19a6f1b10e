"""Plain-torch reference for ``kernels.tbe``: one ``nn.EmbeddingBag`` per table.

Slow and obvious on purpose. Tests hold the fused FBGEMM kernel to this: same pooled
output for the same weights, and the same tables after each step of each sparse
optimizer (row-wise Adagrad, SGD, Adam), in fp32 and fp16 storage.
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


def sgd_update(weight: torch.Tensor, grad: torch.Tensor, *, learning_rate: float) -> None:
    """One exact SGD step, in place: ``weight -= learning_rate * grad``."""
    with torch.no_grad():
        weight.sub_(learning_rate * grad)


def adam_update(
    weight: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    rows: torch.Tensor,
    *,
    step: int,
    learning_rate: float,
    eps: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
) -> None:
    """One lazy Adam step, in place: only ``rows`` (those looked up) move.

    Written out in full (not shared with ``kernels.sparse_adam``) so that the test
    compares two independent derivations of the same maths.

    Args:
        weight: (rows, D) table.
        grad: (rows, D) gradient (summed over repeated ids).
        exp_avg: (rows, D) first moment, updated in place.
        exp_avg_sq: (rows, D) second moment, updated in place.
        rows: Row ids looked up since the last step.
        step: 1-based step number shared by all rows.
        learning_rate: Step size.
        eps: Added to the square root of the corrected second moment.
        beta1: First-moment decay.
        beta2: Second-moment decay.
    """
    with torch.no_grad():
        mask = torch.zeros(weight.shape[0], 1, dtype=torch.bool)
        mask[rows] = True
        m = torch.where(mask, beta1 * exp_avg + (1 - beta1) * grad, exp_avg)
        v = torch.where(mask, beta2 * exp_avg_sq + (1 - beta2) * grad * grad, exp_avg_sq)
        exp_avg.copy_(m)
        exp_avg_sq.copy_(v)
        update = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + eps)
        weight.sub_(torch.where(mask, learning_rate * update, torch.zeros_like(update)))


class ReferenceEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Sum-pooled ``nn.EmbeddingBag`` tables with a separate optimizer step.

    Unlike the fused kernel, backward only fills ``.grad``; call ``step`` to apply the
    update. Same constructor, seeded init and weight accessors as
    ``FusedEmbeddingBagCollection``. fp16 storage is modelled by fp32 tables rounded to
    fp16 after init and after every step (FBGEMM computes in fp32 and rounds to nearest).

    Args:
        tables: One config per table; every pooling must be sum.
        learning_rate: The optimizer's learning rate.
        optimizer: ``rowwise_adagrad``, ``adam`` or ``sgd``.
        precision: ``fp32`` or ``fp16``.
        eps: Adagrad's and Adam's epsilon.
        seed: Seeds the initial weights.
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        *,
        learning_rate: float,
        optimizer: str = "rowwise_adagrad",
        precision: str = "fp32",
        eps: float = 1e-8,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.precision = precision
        self._steps = 0
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
            self.register_buffer(f"exp_avg_{i}", torch.zeros(t.num_embeddings, t.embedding_dim))
            self.register_buffer(f"exp_avg_sq_{i}", torch.zeros(t.num_embeddings, t.embedding_dim))
        self._touched: list[list[torch.Tensor]] = [[] for _ in tables]
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
            self._touched[t].append(jt.values().long())
        return _common.pooled_to_keyed(torch.cat(pooled, dim=1), self._feature_names, self._dims)

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The table configs, in table order."""
        return self._tables

    def is_weighted(self) -> bool:
        """Always False: bags are plain sums."""
        return False

    def step(self) -> None:
        """Applies the optimizer to every table from its ``.grad``, then clears it."""
        self._steps += 1
        for i, weight in enumerate(self._weights()):
            rows = torch.cat(self._touched[i]).unique() if self._touched[i] else None
            self._touched[i] = []
            grad = weight.grad
            if grad is None or rows is None:
                continue
            if self.optimizer == "rowwise_adagrad":
                rowwise_adagrad_update(
                    weight,
                    grad,
                    self._state(f"momentum_{i}"),
                    learning_rate=self.learning_rate,
                    eps=self.eps,
                )
            elif self.optimizer == "sgd":
                sgd_update(weight, grad, learning_rate=self.learning_rate)
            elif self.optimizer == "adam":
                adam_update(
                    weight,
                    grad,
                    self._state(f"exp_avg_{i}"),
                    self._state(f"exp_avg_sq_{i}"),
                    rows,
                    step=self._steps,
                    learning_rate=self.learning_rate,
                    eps=self.eps,
                )
            else:
                raise ValueError(f"unknown optimizer {self.optimizer!r}")
            weight.grad = None
        self._round()

    def _weights(self) -> list[torch.Tensor]:
        return [bag.weight for bag in self.bags if isinstance(bag, nn.EmbeddingBag)]

    def _state(self, name: str) -> torch.Tensor:
        state = getattr(self, name)
        assert isinstance(state, torch.Tensor)
        return state

    def _round(self) -> None:
        if self.precision == "fp16":
            with torch.no_grad():
                for weight in self._weights():
                    weight.copy_(weight.half().float())

    def split_weights(self) -> list[torch.Tensor]:
        """Copies of the tables, one (rows, D) tensor per table."""
        return [w.detach().clone() for w in self._weights()]

    def load_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Overwrites the tables in place.

        Args:
            weights: One (rows, D) tensor per table.
        """
        if len(weights) != len(self.bags):
            raise ValueError(f"expected {len(self.bags)} tables, got {len(weights)}")
        with torch.no_grad():
            for weight, w in zip(self._weights(), weights, strict=True):
                weight.copy_(w)
        self._round()

    def optimizer_states(self) -> list[torch.Tensor]:
        """Copies of the optimizer state in ``FusedEmbeddingBagCollection`` order."""
        names = {"rowwise_adagrad": ["momentum"], "adam": ["exp_avg", "exp_avg_sq"], "sgd": []}
        return [
            self._state(f"{name}_{i}").clone()
            for i in range(len(self.bags))
            for name in names[self.optimizer]
        ]
