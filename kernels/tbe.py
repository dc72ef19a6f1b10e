"""A fused table-batched embedding bag collection built on FBGEMM.

All tables live in one FBGEMM ``SplitTableBatchedEmbeddingBagsCodegen`` (TBE): one
kernel looks up every feature, and backward applies exact row-wise Adagrad in place, so
the embedding gradients are never materialised and no optimizer steps the tables. This
is how production DLRMs train their sparse part; ``kernels.reference`` is the same maths
in plain torch.
"""

from collections.abc import Sequence

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    BoundsCheckMode,
    ComputeDevice,
    EmbeddingLocation,
    PoolingMode,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor

from kernels import _common


class FusedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Sum-pooled embedding bags for many tables, trained by fused row-wise Adagrad.

    A drop-in ``embedding_bag_collection`` for ``torchrec.models.dlrm.DLRM``. The tables'
    storage shows up in ``parameters()`` (FBGEMM registers it so that ``state_dict``
    checkpoints it), but it must NOT be handed to a dense optimizer: backward already
    updates it. Exclude this module's parameters when building the dense optimizer.

    Args:
        tables: One config per table; every pooling must be sum. D must be a multiple
            of 4 (an FBGEMM requirement).
        learning_rate: Row-wise Adagrad learning rate.
        eps: Added to the square root of the accumulated squared gradient.
        device: CPU (tables on host memory) or CUDA (tables in HBM); default CPU.
        seed: Seeds the initial weights (TorchRec's default uniform range).

    Example::

        tables = [EmbeddingBagConfig(name="t_user", embedding_dim=8,
                                     num_embeddings=100, feature_names=["user"])]
        ebc = FusedEmbeddingBagCollection(tables, learning_rate=0.05)
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["user"], values=torch.tensor([3, 7, 9]), lengths=torch.tensor([2, 1]))
        pooled = ebc(kjt)  # KeyedTensor, values (B=2, 8)
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        *,
        learning_rate: float,
        eps: float = 1e-8,
        device: torch.device | str | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _common.validate_tables(tables)
        for t in tables:
            if t.embedding_dim % 4 != 0:
                raise ValueError(
                    f"table {t.name!r}: FBGEMM needs embedding_dim to be a multiple of 4, "
                    f"got {t.embedding_dim}"
                )
        if learning_rate <= 0.0 or eps <= 0.0:
            raise ValueError(f"learning_rate and eps must be > 0, got {learning_rate}, {eps}")
        self._tables = list(tables)
        self._feature_names = _common.feature_names(tables)
        self._dims = [tables[i].embedding_dim for i in _common.feature_table_map(tables)]
        device = torch.device(device or "cpu")
        if device.type == "cuda":
            location, compute = EmbeddingLocation.DEVICE, ComputeDevice.CUDA
        elif device.type == "cpu":
            location, compute = EmbeddingLocation.HOST, ComputeDevice.CPU
        else:
            raise ValueError(f"device must be cpu or cuda, got {device}")
        self._tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[
                (t.num_embeddings, t.embedding_dim, location, compute) for t in tables
            ],
            feature_table_map=_common.feature_table_map(tables),
            optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=learning_rate,
            eps=eps,
            pooling_mode=PoolingMode.SUM,
            # An out-of-range id is a data bug (hashing went wrong); FBGEMM's default
            # silently remaps it to row 0, which would train on garbage.
            bounds_check_mode=BoundsCheckMode.FATAL,
            device=device,
        )
        self.reset_parameters(seed)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Looks up and sum-pools every feature in one kernel.

        Args:
            features: F features for B examples; keys in any order, all of
                ``feature_names`` present. Values are row ids (int64), already hashed
                into each table's range.

        Returns:
            A KeyedTensor keyed by feature name whose values are (B, F * D).
        """
        features = _common.in_feature_order(features, self._feature_names)
        # KJT stores values feature-major with offsets of length F * B + 1, which is
        # exactly TBE's layout (bag b of feature f is offsets[f * B + b]).
        pooled = self._tbe(
            indices=features.values().long(),
            offsets=features.offsets().long(),
        )  # (B, F * D)
        return _common.pooled_to_keyed(pooled, self._feature_names, self._dims)

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The table configs, in table order."""
        return self._tables

    def is_weighted(self) -> bool:
        """Always False: bags are plain sums (no per-id weights)."""
        return False

    @property
    def feature_names(self) -> list[str]:
        """The features, in output order."""
        return list(self._feature_names)

    def reset_parameters(self, seed: int) -> None:
        """Seeded re-initialisation of every table; also zeroes the Adagrad state.

        Args:
            seed: Seeds the generator (see ``kernels._common.seeded_weights``).
        """
        self.load_weights(_common.seeded_weights(self._tables, seed))
        for (momentum,) in self._optimizer_views():
            momentum.zero_()

    def split_weights(self) -> list[torch.Tensor]:
        """Copies of the tables, one (rows, D) tensor per table, on the module's device."""
        return [w.detach().clone() for w in self._tbe.split_embedding_weights()]

    def load_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Overwrites the tables in place (the Adagrad state is left as is).

        Args:
            weights: One (rows, D) tensor per table, any device.

        Raises:
            ValueError: The number of tables or a shape does not match.
        """
        views = self._tbe.split_embedding_weights()
        if len(weights) != len(views):
            raise ValueError(f"expected {len(views)} tables, got {len(weights)}")
        for t, (view, w) in enumerate(zip(views, weights, strict=True)):
            if tuple(w.shape) != tuple(view.shape):
                raise ValueError(
                    f"table {self._tables[t].name!r}: expected shape {tuple(view.shape)}, "
                    f"got {tuple(w.shape)}"
                )
            with torch.no_grad():
                view.copy_(w)

    def optimizer_states(self) -> list[torch.Tensor]:
        """Copies of the row-wise Adagrad accumulators, one (rows,) tensor per table."""
        return [m.detach().clone() for (m,) in self._optimizer_views()]

    def _optimizer_views(self) -> list[list[torch.Tensor]]:
        # Views into FBGEMM's flat state; exact row-wise Adagrad with no weight-decay
        # counters keeps exactly one state (momentum1) per table.
        return self._tbe.split_optimizer_states()
