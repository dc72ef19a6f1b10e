"""CTR data held as tensors that batch cheaply into TorchRec inputs.

A split stores its F sparse features as one padded (F, N, L) id tensor plus (F, N)
lengths, so any batch of rows (a slice for evaluation, a shuffled index for training)
becomes a ``KeyedJaggedTensor`` with a few indexing ops and no Python loop over
examples. L is the longest bag in the dataset (the genre bag for MovieLens), small
enough that the padding costs memory, not time.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class FeatureSchema:
    """What a model needs to know about the data to be built.

    Attributes:
        sparse_features: The F sparse feature names, in KJT key order.
        table_rows: Rows of each feature's embedding table (ids are hashed into this).
        dense_features: The dense feature names, in column order.
    """

    sparse_features: tuple[str, ...]
    table_rows: tuple[int, ...]
    dense_features: tuple[str, ...]

    @property
    def num_dense(self) -> int:
        """Number of dense feature columns."""
        return len(self.dense_features)


@dataclass(frozen=True)
class Batch:
    """One batch of B examples, ready for ``DLRM.forward``.

    Attributes:
        dense: (B, num_dense) float32 dense features.
        sparse: F sparse features of B examples.
        labels: (B,) float32 0/1 labels.
    """

    dense: torch.Tensor
    sparse: KeyedJaggedTensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()


@dataclass(frozen=True)
class CtrSplit:
    """One split (train, validation or test) of a CTR dataset.

    Shared between trials through a cache, so treat every tensor as read-only.

    Attributes:
        name: ``train``, ``validation`` or ``test``.
        keys: The F sparse feature names.
        ids: (F, N, L) int64 hashed ids, padded with 0 past each bag's length.
        lengths: (F, N) int64 bag lengths (0 is an empty bag).
        dense: (N, num_dense) float32 dense features.
        labels: (N,) float32 0/1 labels.
        timestamps: (N,) int64 interaction times (seconds), ascending.
    """

    name: str
    keys: tuple[str, ...]
    ids: torch.Tensor
    lengths: torch.Tensor
    dense: torch.Tensor
    labels: torch.Tensor
    timestamps: torch.Tensor

    def __len__(self) -> int:
        return self.labels.numel()

    def to(self, device: torch.device | str) -> "CtrSplit":
        """A copy with every tensor on ``device`` (self when already there)."""
        device = torch.device(device)
        if self.labels.device == device:
            return self
        return CtrSplit(
            name=self.name,
            keys=self.keys,
            ids=self.ids.to(device),
            lengths=self.lengths.to(device),
            dense=self.dense.to(device),
            labels=self.labels.to(device),
            timestamps=self.timestamps.to(device),
        )

    def batch(self, rows: torch.Tensor | slice) -> Batch:
        """Gathers the examples at ``rows`` into a batch.

        Args:
            rows: (B,) int64 row indices, or a slice of rows.

        Returns:
            The batch, examples in ``rows`` order.
        """
        ids = self.ids[:, rows]  # (F, B, L)
        lengths = self.lengths[:, rows]  # (F, B)
        positions = torch.arange(ids.shape[2], device=ids.device)  # (L,)
        # Boolean indexing flattens in (F, B, L) order: feature-major, then example,
        # then position, which is exactly the KJT value layout.
        values = ids[positions < lengths.unsqueeze(-1)]  # (sum of lengths,)
        flat_lengths = lengths.reshape(-1)  # (F * B,)
        offsets = torch.zeros(flat_lengths.numel() + 1, dtype=torch.int64, device=ids.device)
        torch.cumsum(flat_lengths, dim=0, out=offsets[1:])
        sparse = KeyedJaggedTensor(
            keys=list(self.keys),
            values=values,
            lengths=flat_lengths,
            offsets=offsets,
            stride=lengths.shape[1],
        )
        return Batch(dense=self.dense[rows], sparse=sparse, labels=self.labels[rows])

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Iterates over the split in batches (the last one may be smaller).

        Args:
            batch_size: Examples per batch.
            generator: When given, rows are shuffled with it (a CPU generator);
                otherwise they come in time order as contiguous slices.

        Yields:
            Batches covering every row exactly once.
        """
        n = len(self)
        if generator is None:
            for start in range(0, n, batch_size):
                yield self.batch(slice(start, start + batch_size))
            return
        order = torch.randperm(n, generator=generator).to(self.labels.device)
        for start in range(0, n, batch_size):
            yield self.batch(order[start : start + batch_size])

    def num_batches(self, batch_size: int) -> int:
        """How many batches ``batches(batch_size)`` yields."""
        return -(-len(self) // batch_size)


@dataclass(frozen=True)
class CtrDataset:
    """A CTR dataset split by time.

    Attributes:
        schema: Feature names and table sizes.
        train: The oldest rows; the model trains on these.
        validation: The next rows; used for model selection.
        test: The newest rows; reported, never used for selection.
    """

    schema: FeatureSchema
    train: CtrSplit
    validation: CtrSplit
    test: CtrSplit
