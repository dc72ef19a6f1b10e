"""Table layout and initialisation shared by the fused kernel and its reference.

Sharing these keeps the two implementations from drifting apart on anything except the
arithmetic under test: feature order, the table each feature reads, and the seeded
initial weights.
"""

from collections.abc import Sequence

import torch
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor, KeyedTensor


def validate_tables(tables: Sequence[EmbeddingBagConfig]) -> None:
    """Rejects table configs that neither implementation supports.

    Args:
        tables: The embedding bag configs, one per table.

    Raises:
        ValueError: No tables, duplicate table or feature names, or a pooling other than sum.
    """
    if not tables:
        raise ValueError("at least one embedding table is required")
    names = [t.name for t in tables]
    if len(set(names)) != len(names):
        raise ValueError(f"table names must be unique, got {names}")
    features = feature_names(tables)
    if len(set(features)) != len(features):
        raise ValueError(f"feature names must be unique across tables, got {features}")
    for t in tables:
        if t.pooling != PoolingType.SUM:
            raise ValueError(f"table {t.name!r}: only sum pooling is supported, got {t.pooling}")
        if t.num_embeddings < 1 or t.embedding_dim < 1:
            raise ValueError(
                f"table {t.name!r}: num_embeddings and embedding_dim must be >= 1, "
                f"got {t.num_embeddings} x {t.embedding_dim}"
            )


def feature_names(tables: Sequence[EmbeddingBagConfig]) -> list[str]:
    """The features in output order: each table's features, tables in order."""
    return [f for t in tables for f in t.feature_names]


def feature_table_map(tables: Sequence[EmbeddingBagConfig]) -> list[int]:
    """For each feature (in output order), the index of the table it looks up."""
    return [i for i, t in enumerate(tables) for _ in t.feature_names]


def seeded_weights(tables: Sequence[EmbeddingBagConfig], seed: int) -> list[torch.Tensor]:
    """Initial weights, one (rows, D) tensor per table, drawn from a private generator.

    The range is TorchRec's default for ``EmbeddingBagConfig`` (uniform in
    +-sqrt(1 / rows)). A private generator keeps the draw independent of the global RNG,
    so the same seed gives the same tables whatever was built before.

    Args:
        tables: The embedding bag configs.
        seed: Seeds the generator.

    Returns:
        One float32 CPU tensor of shape (num_embeddings, embedding_dim) per table.
    """
    generator = torch.Generator().manual_seed(seed)
    weights = []
    for t in tables:
        w = torch.empty(t.num_embeddings, t.embedding_dim, dtype=torch.float32)
        w.uniform_(t.get_weight_init_min(), t.get_weight_init_max(), generator=generator)
        weights.append(w)
    return weights


def in_feature_order(features: KeyedJaggedTensor, names: list[str]) -> KeyedJaggedTensor:
    """Returns ``features`` with its keys in ``names`` order (permuting only if needed).

    Raises:
        ValueError: A feature is missing or the features are weighted.
    """
    if features.weights_or_none() is not None:
        raise ValueError("weighted features are not supported (is_weighted() is False)")
    keys = features.keys()
    if keys == names:
        return features
    missing = sorted(set(names) - set(keys))
    if missing:
        raise ValueError(f"features {missing} are missing from the input (got keys {keys})")
    index = {k: i for i, k in enumerate(keys)}
    return features.permute([index[n] for n in names])


def pooled_to_keyed(pooled: torch.Tensor, names: list[str], dims: list[int]) -> KeyedTensor:
    """Wraps a (B, sum(D_f)) pooled output as a KeyedTensor keyed by feature name."""
    return KeyedTensor(keys=names, length_per_key=dims, values=pooled, key_dim=1)
