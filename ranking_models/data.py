"""CTR data held as tensors that batch cheaply into TorchRec inputs.

A split stores its F sparse features as one padded (F, N, L) id tensor plus (F, N)
lengths, so any batch of rows (a slice for evaluation, a shuffled index for training)
becomes a ``KeyedJaggedTensor`` with a few indexing ops and no Python loop over
examples. L is the longest bag in the dataset (the genre bag for MovieLens), small
enough that the padding costs memory, not time.

Data too large for memory (synthetic Criteo, Criteo day files) comes as a
``StreamingSplit``: a row range over a ``BlockSource`` that produces any block of rows
on demand, so only one block and one batch are held at a time. Both kinds satisfy the
``Split`` protocol, which is all the trainer uses.
"""

import bisect
import functools
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from ranking_models.errors import BadDataError

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class FeatureSchema:
    """What a model needs to know about the data to be built.

    Attributes:
        sparse_features: The F sparse feature names, in KJT key order.
        table_rows: Rows of each feature's embedding table (ids are hashed into this).
        dense_features: The dense feature names, in column order.
        id_counts: Distinct ids of each feature before hashing, where the loader knows them
            (empty for data hashed as it is read, whose ids are never counted).
    """

    sparse_features: tuple[str, ...]
    table_rows: tuple[int, ...]
    dense_features: tuple[str, ...]
    id_counts: tuple[int, ...] = ()

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

    def take(self, rows: torch.Tensor | slice) -> "CtrSplit":
        """The sub-split of the rows at ``rows`` (a view for a slice, a copy otherwise)."""
        return CtrSplit(
            name=self.name,
            keys=self.keys,
            ids=self.ids[:, rows],
            lengths=self.lengths[:, rows],
            dense=self.dense[rows],
            labels=self.labels[rows],
            timestamps=self.timestamps[rows],
        )


def concat_splits(parts: list[CtrSplit]) -> CtrSplit:
    """The rows of ``parts`` one after another, bags padded to the widest L."""
    if len(parts) == 1:
        return parts[0]
    width = max(p.ids.shape[2] for p in parts)
    ids = [torch.nn.functional.pad(p.ids, (0, width - p.ids.shape[2])) for p in parts]
    return CtrSplit(
        name=parts[0].name,
        keys=parts[0].keys,
        ids=torch.cat(ids, dim=1),
        lengths=torch.cat([p.lengths for p in parts], dim=1),
        dense=torch.cat([p.dense for p in parts]),
        labels=torch.cat([p.labels for p in parts]),
        timestamps=torch.cat([p.timestamps for p in parts]),
    )


class Split(Protocol):
    """What the trainer, ``evaluate`` and ``predict`` read from a split.

    ``CtrSplit`` (in memory) and ``StreamingSplit`` (generated or read block by block)
    both satisfy it.
    """

    @property
    def name(self) -> str:
        """``train``, ``validation`` or ``test``."""
        ...

    @property
    def labels(self) -> torch.Tensor:
        """(N,) float32 0/1 labels of every row, in row order."""
        ...

    def __len__(self) -> int: ...

    def to(self, device: torch.device | str) -> "Split":
        """The split yielding batches on ``device``."""
        ...

    def batch(self, rows: torch.Tensor | slice) -> Batch:
        """The examples at ``rows`` (split-relative) as one batch."""
        ...

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Every row once, shuffled with ``generator`` when given, else in row order."""
        ...

    def num_batches(self, batch_size: int) -> int:
        """How many batches ``batches(batch_size)`` yields."""
        ...


class BlockSource(Protocol):
    """Rows produced block by block, each block on its own (by regeneration or a seek).

    Attributes:
        keys: The F sparse feature names.
    """

    keys: tuple[str, ...]

    def block_starts(self) -> list[int]:
        """First row of each block, ascending, then the total row count."""
        ...

    def block(self, index: int) -> CtrSplit:
        """Every row of block ``index``; ``timestamps`` holds the global row numbers."""
        ...

    def block_labels(self, index: int) -> torch.Tensor:
        """(rows,) float32 labels of block ``index`` (cheaper than ``block`` if it can)."""
        ...


@dataclass(frozen=True)
class StreamingSplit:
    """Rows ``[start, stop)`` of a ``BlockSource``, never all in memory at once.

    Shuffling (``generator`` given) permutes the block order and the rows inside each
    block: at most one block plus one batch is held, and for i.i.d. or day-ordered data
    this mixes as well as a global shuffle within the memory bound.

    Attributes:
        name: ``train``, ``validation`` or ``test``.
        source: Produces the rows.
        start: First row (global row number).
        stop: One past the last row.
        device: Where batches are built.
    """

    name: str
    source: BlockSource
    start: int
    stop: int
    device: torch.device = _CPU

    def __len__(self) -> int:
        return self.stop - self.start

    @property
    def keys(self) -> tuple[str, ...]:
        """The F sparse feature names."""
        return self.source.keys

    def to(self, device: torch.device | str) -> "StreamingSplit":
        """The same rows, with batches built on ``device``."""
        device = torch.device(device)
        return self if device == self.device else replace(self, device=device)

    @functools.cached_property
    def labels(self) -> torch.Tensor:
        """(N,) float32 labels (one pass over the blocks; 4 bytes a row, kept)."""
        parts = [self.source.block_labels(b)[lo:hi] for b, lo, hi in self._blocks()]
        return torch.cat(parts).to(self.device)

    def num_batches(self, batch_size: int) -> int:
        """How many batches ``batches(batch_size)`` yields."""
        return -(-len(self) // batch_size)

    def batches(
        self, batch_size: int, *, generator: torch.Generator | None = None
    ) -> Iterator[Batch]:
        """Iterates over the split in batches (the last one may be smaller).

        Args:
            batch_size: Examples per batch.
            generator: When given, shuffles the block order and the rows inside each
                block with it; otherwise rows come in order.

        Yields:
            Batches covering every row exactly once.
        """
        blocks = self._blocks()
        if generator is not None:
            blocks = [blocks[i] for i in torch.randperm(len(blocks), generator=generator)]
        pending: CtrSplit | None = None
        for b, lo, hi in blocks:
            chunk = self.source.block(b).take(slice(lo, hi))
            if generator is not None:
                chunk = chunk.take(torch.randperm(len(chunk), generator=generator))
            chunk = chunk if pending is None else concat_splits([pending, chunk])
            chunk = chunk.to(self.device)
            full = len(chunk) - len(chunk) % batch_size
            for s in range(0, full, batch_size):
                yield chunk.batch(slice(s, s + batch_size))
            pending = chunk.take(slice(full, None)) if full < len(chunk) else None
        if pending is not None:
            yield pending.batch(slice(0, None))

    def batch(self, rows: torch.Tensor | slice) -> Batch:
        """Gathers the examples at ``rows`` (split-relative) into one batch.

        Args:
            rows: (B,) int64 row indices, or a slice of rows.

        Returns:
            The batch, examples in ``rows`` order; only the blocks touched are produced.
        """
        index = torch.arange(len(self))[rows] if isinstance(rows, slice) else rows.cpu()
        starts = self.source.block_starts()
        global_rows = index + self.start
        owner = torch.bucketize(global_rows, torch.tensor(starts), right=True) - 1
        parts, positions = [], []
        for b in owner.unique().tolist():
            at = (owner == b).nonzero().squeeze(1)
            parts.append(self.source.block(b).take(global_rows[at] - starts[b]))
            positions.append(at)
        gathered = concat_splits(parts).to(self.device)
        return gathered.batch(torch.argsort(torch.cat(positions)).to(self.device))

    def _blocks(self) -> list[tuple[int, int, int]]:
        """(block, first row, stop row) inside each block that overlaps the split."""
        starts = self.source.block_starts()
        first = bisect.bisect_right(starts, self.start) - 1
        out = []
        for b in range(max(first, 0), len(starts) - 1):
            lo, hi = starts[b], starts[b + 1]
            if lo >= self.stop:
                break
            out.append((b, max(self.start, lo) - lo, min(self.stop, hi) - lo))
        return out


@dataclass(frozen=True)
class CtrDataset:
    """A CTR dataset cut into fixed train, validation and test splits.

    Only the trainer's final report reads ``test``; model selection (early stopping,
    choosing between trials) uses ``validation`` alone, so the test metrics stay an
    unbiased estimate.

    Attributes:
        schema: Feature names and table sizes.
        train: The oldest rows; the model trains on these.
        validation: The next rows; used for model selection.
        test: The newest rows; reported, never used for selection.
        split_rule: How the rows were cut, in words (for reports).
    """

    schema: FeatureSchema
    train: Split
    validation: Split
    test: Split
    split_rule: str = ""

    @functools.cached_property
    def ids_per_sample(self) -> float:
        """Mean ids looked up per sample over all sparse features (from the first train
        rows). Cached: generated data makes those rows anew on every read, and the planner
        costs hundreds of candidates on one dataset."""
        rows = min(len(self.train), 4096)
        return self.train.batch(slice(0, rows)).sparse.values().numel() / rows

    def splits(self) -> dict[str, int]:
        """Rows per split, in train, validation, test order."""
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": len(self.test),
        }


def split_sizes(
    rows: int, validation_fraction: float, test_fraction: float, *, data: str, fix: str
) -> tuple[int, int, int]:
    """Rows of the train, validation and test splits (in that order, oldest first).

    Args:
        rows: Rows in the dataset.
        validation_fraction: Share of rows for validation.
        test_fraction: Share of rows for test.
        data: Names the dataset in the error message.
        fix: What the user can change, for the error message.

    Raises:
        BadDataError: A split would be empty.
    """
    n_test = round(rows * test_fraction)
    n_validation = round(rows * validation_fraction)
    n_train = rows - n_validation - n_test
    if min(n_train, n_validation, n_test) < 1:
        raise BadDataError(
            f"{data}: {rows} rows cannot be split into non-empty train ({n_train}), "
            f"validation ({n_validation}) and test ({n_test}) splits; {fix}"
        )
    return n_train, n_validation, n_test
