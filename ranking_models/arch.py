"""Small arch modules that ``ranking_models.dlrm`` swaps into TorchRec's DLRM variants.

Each one does one thing and takes built parts, the way TorchRec's ``DLRM_DCN`` swaps its
interaction and over arches into ``DLRM``.
"""

import torch
from torch import nn
from torchrec.models.dlrm import InteractionArch, SparseArch
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollectionInterface
from torchrec.modules.mlp import Perceptron
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


class SeededDropout(nn.Dropout):
    """``nn.Dropout`` drawing its masks from a private generator.

    The global RNG is shared by every trial a worker trains in its threads, so masks
    drawn from it would depend on what else runs; a private generator makes dropout part
    of the seeded, checkpointed state. It is seeded from the global RNG when built, which
    ``build_model`` seeds from the spec.

    Args:
        p: Probability of zeroing an element during training.

    Example::

        drop = SeededDropout(0.1)
        out = drop(torch.ones(4, 8))  # (B=4, 8), about 10% zeros, the rest 1 / 0.9
    """

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.seed = int(torch.randint(0, 2**62, (1,)).item())
        self._generator: torch.Generator | None = None

    def generator(self, device: torch.device) -> torch.Generator:
        """The module's generator, created on ``device`` on first use."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device).manual_seed(self.seed)
        return self._generator

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Zeroes each element with probability ``p`` and rescales the rest (training only)."""
        if not self.training or self.p == 0.0:
            return features
        keep = torch.rand(
            features.shape, generator=self.generator(features.device), device=features.device
        )
        return features * (keep >= self.p) / (1.0 - self.p)


class DropoutOverArch(nn.Module):
    """DLRM's over arch with dropout after each hidden layer.

    TorchRec's ``OverArch`` has no dropout, so this rebuilds it from the same pieces
    (ReLU ``Perceptron`` layers, then a linear output) with ``SeededDropout`` in between.

    Args:
        in_features: Width of the interaction output.
        layer_sizes: Hidden widths followed by the output width (1 for a logit).
        dropout: Probability of zeroing a hidden activation during training.
        device: Where to allocate the parameters.

    Example::

        over = DropoutOverArch(in_features=10, layer_sizes=[8, 1], dropout=0.1)
        logits = over(torch.rand(4, 10))  # (B=4, 1)
    """

    def __init__(
        self,
        in_features: int,
        layer_sizes: list[int],
        dropout: float,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for hidden in layer_sizes[:-1]:
            layers += [Perceptron(width, hidden, device=device), SeededDropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, layer_sizes[-1], device=device))
        self.model = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Maps (B, in_features) interactions to (B, layer_sizes[-1]) outputs."""
        return self.model(features)


class NormalizedDenseArch(nn.Module):
    """Normalises the raw dense features, then applies the dense arch.

    Args:
        norm: A module mapping (B, num_dense) to (B, num_dense), e.g. ``nn.BatchNorm1d``.
        dense_arch: TorchRec's ``DenseArch`` (or any (B, num_dense) -> (B, D) module).

    Example::

        arch = NormalizedDenseArch(nn.LayerNorm(3), DenseArch(3, [8, 4]))
        out = arch(torch.rand(5, 3))  # (B=5, D=4)
    """

    def __init__(self, norm: nn.Module, dense_arch: nn.Module) -> None:
        super().__init__()
        self.norm = norm
        self.dense_arch = dense_arch

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Maps (B, num_dense) features to the dense arch's (B, D) output."""
        return self.dense_arch(self.norm(features))


class ModuloEmbeddingBagCollection(EmbeddingBagCollectionInterface):
    """Hashes each feature's ids modulo its table's rows, then looks them up.

    Used when a spec shrinks a table below the id range the data was hashed into.

    Args:
        embedding_bag_collection: The collection whose tables hold the (smaller) rows.

    Example::

        ebc = ModuloEmbeddingBagCollection(FusedEmbeddingBagCollection(tables, learning_rate=0.05))
        pooled = ebc(kjt)  # KeyedTensor (B, F * D); ids >= rows wrap around
    """

    def __init__(self, embedding_bag_collection: EmbeddingBagCollectionInterface) -> None:
        super().__init__()
        self.embedding_bag_collection = embedding_bag_collection
        self._rows = {
            f: t.num_embeddings
            for t in embedding_bag_collection.embedding_bag_configs()
            for f in t.feature_names
        }

    def forward(self, features: KeyedJaggedTensor) -> KeyedTensor:
        """Looks up ``features`` with every id taken modulo its feature's table rows."""
        device = features.values().device
        keys: list[str] = features.keys()
        rows = torch.tensor([self._rows[k] for k in keys], device=device)
        counts = torch.tensor(features.length_per_key(), device=device)
        per_value = torch.repeat_interleave(rows, counts)  # (nnz,)
        hashed = KeyedJaggedTensor(
            keys=keys,
            values=features.values() % per_value,
            lengths=features.lengths(),
            offsets=features.offsets(),
            stride=features.stride(),
        )
        return self.embedding_bag_collection(hashed)

    def embedding_bag_configs(self) -> list[EmbeddingBagConfig]:
        """The wrapped collection's table configs."""
        return self.embedding_bag_collection.embedding_bag_configs()

    def is_weighted(self) -> bool:
        """Whether the wrapped collection is weighted."""
        return self.embedding_bag_collection.is_weighted()


class PooledSparseArch(SparseArch):
    """TorchRec's ``SparseArch`` without the split-then-concatenate of the pooled output.

    A collection whose KeyedTensor is already (B, F * D) in feature order (the fused
    FBGEMM collection's is: one kernel writes every feature's bag side by side) is read
    as a (B, F, D) view; TorchRec's ``SparseArch`` would split it into F tensors and copy
    them back together. Any other layout falls back to TorchRec's forward. The module
    tree (``embedding_bag_collection``) and so the ``state_dict`` keys are TorchRec's.

    Args:
        embedding_bag_collection: The collection, every table of dimension D.

    Example::

        arch = PooledSparseArch(FusedEmbeddingBagCollection(tables, learning_rate=0.05))
        sparse = arch(kjt)  # (B, F, D), a view of the collection's pooled output
    """

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """Maps F features for B examples to their (B, F, D) pooled embeddings."""
        pooled: KeyedTensor = self.embedding_bag_collection(features)
        if pooled.keys() != self.sparse_feature_names or pooled.key_dim() != 1:
            return _torchrec_sparse_features(pooled, self.sparse_feature_names, self.F, self.D)
        return pooled.values().view(-1, self.F, self.D)


def _torchrec_sparse_features(
    pooled: KeyedTensor, names: list[str], num_features: int, dim: int
) -> torch.Tensor:
    # TorchRec's SparseArch.forward after the lookup: reorder by name, then concatenate.
    by_name = pooled.to_dict()
    return torch.cat([by_name[n] for n in names], dim=1).reshape(-1, num_features, dim)


class _UpperDots(torch.autograd.Function):
    """Pairwise dot products i < j of each example's N vectors, in row-major order.

    Forward is one bmm and a gather. Backward uses that the Gram matrix is symmetric and
    only its upper triangle is read: the incoming (B, P) gradient is written (no
    accumulation) to both (i, j) and (j, i) of a zero (B, N, N) matrix S, and the input's
    gradient is the single bmm S @ X, where autograd through ``bmm(X, X.T)`` and an
    advanced-index gather would run two bmms and an accumulating scatter.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        combined: torch.Tensor,
        upper: torch.Tensor,
        lower: torch.Tensor,
    ) -> torch.Tensor:
        gram = torch.bmm(combined, combined.transpose(1, 2))  # (B, N, N)
        ctx.save_for_backward(combined, upper, lower)
        return gram.flatten(1).index_select(1, upper)  # (B, P)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor, None, None]:
        combined, upper, lower = ctx.saved_tensors  # type: ignore[attr-defined]
        b, n, _ = combined.shape
        sym = grad.new_zeros(b, n * n)
        sym.index_copy_(1, upper, grad)
        sym.index_copy_(1, lower, grad)
        return torch.bmm(sym.view(b, n, n), combined), None, None


class DotInteractionArch(InteractionArch):
    """TorchRec's dot ``InteractionArch`` with a cheaper backward.

    Same output, same order, same buffers: the dense embedding (D), then the dot product
    of every pair i < j of the F + 1 vectors (dense first, then the F sparse features in
    order), i.e. (B, D + F + F choose 2). The pairs come from ``_UpperDots``, whose
    backward runs one bmm instead of two and no accumulating scatter.

    Args:
        num_sparse_features: F.

    Example::

        inter = DotInteractionArch(num_sparse_features=3)
        out = inter(torch.rand(2, 4), torch.rand(2, 3, 4))  # (B=2, D + F + F choose 2 = 10)
    """

    def __init__(self, num_sparse_features: int) -> None:
        super().__init__(num_sparse_features)
        n = num_sparse_features + 1
        rows, cols = self.triu_indices
        self.register_buffer("_upper", rows * n + cols, persistent=False)
        self.register_buffer("_lower", cols * n + rows, persistent=False)

    def forward(self, dense_features: torch.Tensor, sparse_features: torch.Tensor) -> torch.Tensor:
        """Maps dense (B, D) and sparse (B, F, D) embeddings to (B, D + F + F choose 2)."""
        if self.F <= 0:
            return dense_features
        combined = torch.cat((dense_features.unsqueeze(1), sparse_features), dim=1)
        dots = _UpperDots.apply(combined, self._upper, self._lower)
        return torch.cat((dense_features, dots), dim=1)
