"""A fused table-batched embedding bag collection built on FBGEMM.

All tables live in one FBGEMM ``SplitTableBatchedEmbeddingBagsCodegen`` (TBE): one
kernel looks up every feature, and backward applies the sparse optimizer (exact row-wise
Adagrad, exact SGD or Adam) in place, so the embedding gradients are never materialised
and no optimizer steps the tables. This is how production DLRMs train their sparse part;
``kernels.reference`` is the same maths in plain torch.

Rows are stored in fp32 or fp16 (FBGEMM's ``weights_precision``); fp16 halves the bytes
every lookup and update moves, pooling and optimizer state stay fp32.
"""

from collections.abc import Sequence
from typing import Literal, get_args

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType, SparseType
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
from kernels.sparse_adam import CpuSparseAdam

SparseOptimizer = Literal["rowwise_adagrad", "adam", "sgd"]
EmbeddingPrecision = Literal["fp32", "fp16"]

_FBGEMM_OPTIMIZER = {
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adam": EmbOptimType.ADAM,
    "sgd": EmbOptimType.EXACT_SGD,
}
_FBGEMM_PRECISION = {"fp32": SparseType.FP32, "fp16": SparseType.FP16}


class FusedEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Sum-pooled embedding bags for many tables, trained by a fused sparse optimizer.

    A drop-in ``embedding_bag_collection`` for ``torchrec.models.dlrm.DLRM``. The tables'
    storage shows up in ``parameters()`` (FBGEMM registers it so that ``state_dict``
    checkpoints it), but it must NOT be handed to a dense optimizer: backward already
    updates it. Exclude this module's parameters when building the dense optimizer.

    Optimizers: ``rowwise_adagrad`` (exact, one accumulator per row), ``sgd`` (exact) and
    ``adam`` (lazy: only looked-up rows move, one step counter for all). FBGEMM's CPU
    build has no Adam kernel, so on CPU the lookup stays in FBGEMM and the Adam step runs
    in ``kernels.sparse_adam``; on CUDA all three run in FBGEMM.

    Args:
        tables: One config per table; every pooling must be sum. D must be a multiple
            of 4 (an FBGEMM requirement).
        learning_rate: The sparse optimizer's learning rate.
        optimizer: ``rowwise_adagrad``, ``adam`` or ``sgd``.
        precision: How rows are stored, ``fp32`` or ``fp16`` (rounded to nearest).
        eps: Adagrad's and Adam's epsilon.
        device: CPU (tables on host memory) or CUDA (tables in HBM); default CPU.
        seed: Seeds the initial weights (TorchRec's default uniform range).

    Example::

        tables = [EmbeddingBagConfig(name="t_user", embedding_dim=8,
                                     num_embeddings=100, feature_names=["user"])]
        ebc = FusedEmbeddingBagCollection(tables, learning_rate=0.05, precision="fp16")
        kjt = KeyedJaggedTensor.from_lengths_sync(
            keys=["user"], values=torch.tensor([3, 7, 9]), lengths=torch.tensor([2, 1]))
        pooled = ebc(kjt)  # KeyedTensor, values (B=2, 8) float32
    """

    def __init__(
        self,
        tables: Sequence[EmbeddingBagConfig],
        *,
        learning_rate: float,
        optimizer: SparseOptimizer = "rowwise_adagrad",
        precision: EmbeddingPrecision = "fp32",
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
        if optimizer not in get_args(SparseOptimizer):
            raise ValueError(
                f"optimizer must be one of {get_args(SparseOptimizer)}, got {optimizer!r}"
            )
        if precision not in get_args(EmbeddingPrecision):
            raise ValueError(
                f"precision must be one of {get_args(EmbeddingPrecision)}, got {precision!r}"
            )
        self._tables = list(tables)
        self._feature_names = _common.feature_names(tables)
        self._dims = [tables[i].embedding_dim for i in _common.feature_table_map(tables)]
        self.optimizer = optimizer
        self.precision = precision
        device = torch.device(device or "cpu")
        if device.type == "cuda":
            location, compute = EmbeddingLocation.DEVICE, ComputeDevice.CUDA
        elif device.type == "cpu":
            location, compute = EmbeddingLocation.HOST, ComputeDevice.CPU
        else:
            raise ValueError(f"device must be cpu or cuda, got {device}")
        cpu_adam = optimizer == "adam" and device.type == "cpu"
        self._tbe = SplitTableBatchedEmbeddingBagsCodegen(
            embedding_specs=[
                (t.num_embeddings, t.embedding_dim, location, compute) for t in tables
            ],
            feature_table_map=_common.feature_table_map(tables),
            # On CPU with Adam, FBGEMM only looks up (forward runs without autograd).
            optimizer=EmbOptimType.EXACT_SGD if cpu_adam else _FBGEMM_OPTIMIZER[optimizer],
            learning_rate=learning_rate,
            eps=eps,
            weights_precision=_FBGEMM_PRECISION[precision],
            output_dtype=SparseType.FP32,
            # Nearest rounding keeps fp16 training deterministic and checkpoint-resumable.
            stochastic_rounding=False,
            pooling_mode=PoolingMode.SUM,
            # An out-of-range id is a data bug (hashing went wrong); FBGEMM's default
            # silently remaps it to row 0, which would train on garbage.
            bounds_check_mode=BoundsCheckMode.FATAL,
            device=device,
        )
        self._cpu_adam = (
            CpuSparseAdam(
                self._tbe.split_embedding_weights(),
                _common.feature_table_map(tables),
                learning_rate=learning_rate,
                eps=eps,
            )
            if cpu_adam
            else None
        )
        self.reset_parameters(seed)

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Looks up and sum-pools every feature in one kernel.

        Args:
            features: F features for B examples; keys in any order, all of
                ``feature_names`` present. Values are row ids (int64), already hashed
                into each table's range.

        Returns:
            A KeyedTensor keyed by feature name whose values are (B, F * D) float32.
        """
        features = _common.in_feature_order(features, self._feature_names)
        # KJT stores values feature-major with offsets of length F * B + 1, which is
        # exactly TBE's layout (bag b of feature f is offsets[f * B + b]).
        indices, offsets = features.values().long(), features.offsets().long()
        if self._cpu_adam is None:
            pooled = self._tbe(indices=indices, offsets=offsets)  # (B, F * D)
        else:
            with torch.no_grad():
                pooled = self._tbe(indices=indices, offsets=offsets)
            if torch.is_grad_enabled() and self.training:
                pooled = self._cpu_adam.attach(pooled, indices, offsets)
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

    def set_learning_rate(self, learning_rate: float) -> None:
        """Changes the sparse learning rate (for warmup and decay schedules)."""
        if self._cpu_adam is not None:
            self._cpu_adam.learning_rate = learning_rate
        else:
            self._tbe.set_learning_rate(learning_rate)

    def reset_parameters(self, seed: int) -> None:
        """Seeded re-initialisation of every table; also zeroes the optimizer state.

        Args:
            seed: Seeds the generator (see ``kernels._common.seeded_weights``).
        """
        self.load_weights(_common.seeded_weights(self._tables, seed))
        for state in self._optimizer_views():
            state.zero_()
        self._set_step(0)

    def split_weights(self) -> list[torch.Tensor]:
        """Copies of the tables, one (rows, D) tensor per table, in the storage precision."""
        return [w.detach().clone() for w in self._tbe.split_embedding_weights()]

    def load_weights(self, weights: Sequence[torch.Tensor]) -> None:
        """Overwrites the tables in place (the optimizer state is left as is).

        Args:
            weights: One (rows, D) tensor per table, any device and float dtype
                (rounded to the storage precision).

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
        """Copies of the optimizer state, table by table.

        Row-wise Adagrad: one (rows,) accumulator per table; Adam: (rows, D) first then
        second moment per table; SGD: nothing.
        """
        return [s.detach().clone() for s in self._optimizer_views()]

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Everything training needs to resume: tables, optimizer state and step counter.

        FBGEMM's ``state_dict`` leaves some optimizer state (Adam's second moment, the
        step counter) out, so checkpoints use this instead.

        Returns:
            CPU tensors keyed ``weight.{t}``, ``state.{i}`` and ``step``.
        """
        state = {f"weight.{t}": w.cpu() for t, w in enumerate(self.split_weights())}
        state |= {f"state.{i}": s.cpu() for i, s in enumerate(self.optimizer_states())}
        state["step"] = torch.tensor(self._get_step())
        return state

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        """Restores what ``checkpoint_state`` saved.

        Raises:
            ValueError: The state does not match these tables and optimizer.
        """
        weights = [state[f"weight.{t}"] for t in range(len(self._tables))]
        views = self._optimizer_views()
        if sum(k.startswith("state.") for k in state) != len(views):
            raise ValueError("optimizer state does not match this optimizer")
        self.load_weights(weights)
        with torch.no_grad():
            for i, view in enumerate(views):
                view.copy_(state[f"state.{i}"])
        self._set_step(int(state["step"]))

    def _optimizer_views(self) -> list[torch.Tensor]:
        # Views into the optimizer state, flattened table by table.
        if self._cpu_adam is not None:
            return [
                s
                for pair in zip(self._cpu_adam.exp_avg, self._cpu_adam.exp_avg_sq, strict=True)
                for s in pair
            ]
        if self.optimizer == "sgd":
            return []
        return [s for table in self._tbe.split_optimizer_states() for s in table]

    def _get_step(self) -> int:
        if self._cpu_adam is not None:
            return self._cpu_adam.steps
        return int(self._tbe.iter.item())

    def _set_step(self, step: int) -> None:
        if self._cpu_adam is not None:
            self._cpu_adam.steps = step
        elif self.optimizer == "adam":
            # Adam's bias correction reads the counter; the others ignore it.
            self._tbe.set_optimizer_step(step)
            self._tbe.iter_cpu.fill_(step)
