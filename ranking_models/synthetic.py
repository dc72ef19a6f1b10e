"""A synthetic Criteo-like click task with a planted click model, streamed in blocks.

Why synthetic: a known ground truth. The planted logit's structure (which features
cross, how strongly, how noisy) is set by ``SyntheticSpec``, so a campaign can ask
whether a model finds crosses of a given order, and the oracle's NE bounds what any
model can reach.

Row ``r`` lives in block ``r // block_rows``; each block is drawn from a generator
seeded by ``(seed, block)`` alone, so any block is regenerated on its own, in any order,
on any machine, and the train/validation/test row ranges are fixed. Weights of the
planted model are hash functions of (key, id) instead of tables, so a feature with 10M
ids costs no memory.

Sparse ids: rank-frequency follows a continuous power law, P(rank >= k) ~ k^(1-s) with
s = ``zipf_exponent``, drawn by inverse CDF (O(1) memory whatever the cardinality); the
most frequent id is 0. Dense features: log-normal counts x, seen as log(1 + x), as
Criteo's integer features are usually transformed.
"""

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from contracts.dataset import DatasetRef, SyntheticSpec
from ranking_models.data import CtrDataset, CtrSplit, FeatureSchema, StreamingSplit, split_sizes

# Stream tags in the seed sequence: rows of block i use (seed, _ROWS, i).
_MODEL, _ROWS, _CALIBRATION = 0, 1, 2
_CALIBRATION_ROWS = 1 << 17
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a cheap, well-mixed 64-bit hash (wraps modulo 2^64)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _hashed_weight(key: np.uint64, ids: np.ndarray) -> np.ndarray:
    """A unit-variance, zero-mean weight per id: uniform on +-sqrt(3), fixed by ``key``."""
    h = mix64(ids.astype(np.uint64) * _GOLDEN + key)
    u = (h >> np.uint64(11)).astype(np.float64) * 2.0**-53  # [0, 1)
    return (u - 0.5) * math.sqrt(12.0)


def zipf_ranks(u: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Maps uniforms to ranks in [0, cardinality) with density ~ (rank + 1)^-exponent.

    Args:
        u: Uniform [0, 1) draws, any shape.
        cardinality: Number of distinct ranks.
        exponent: The power law's exponent s.

    Returns:
        int64 ranks, the shape of ``u``.
    """
    top = cardinality + 1.0
    if abs(exponent - 1.0) < 1e-9:
        x = top**u
    else:
        a = 1.0 - exponent
        x = (1.0 + u * (top**a - 1.0)) ** (1.0 / a)
    return np.clip(np.floor(x).astype(np.int64) - 1, 0, cardinality - 1)


@dataclass(frozen=True)
class Block:
    """One generated block before hashing into tables, with the planted logit's parts.

    Attributes:
        ranks: (F, B) int64 ids (0 = most frequent), before hashing into table rows.
        dense: (B, num_dense) float32 log(1 + count) features.
        main: (B,) float64 per-id main effects.
        cross: (B,) float64 planted crosses.
        dense_term: (B,) float64 dense nonlinearity.
        noise: (B,) float64 logit noise.
        labels: (B,) float32 0/1 clicks.
    """

    ranks: np.ndarray
    dense: np.ndarray
    main: np.ndarray
    cross: np.ndarray
    dense_term: np.ndarray
    noise: np.ndarray
    labels: np.ndarray


class SyntheticCriteo:
    """A ``BlockSource`` of synthetic Criteo-like rows (see the module docstring).

    Args:
        spec: The generator's parameters.
        num_rows: Rows to serve (at most ``spec.rows``; ``DatasetRef.max_rows`` cuts it).
        max_table_rows: Ids are reduced modulo ``min(cardinality, max_table_rows)``.

    Example::

        source = SyntheticCriteo(SyntheticSpec(rows=1000), num_rows=1000, max_table_rows=64)
        block = source.block(0)  # CtrSplit of rows 0..999 (one block)
    """

    def __init__(self, spec: SyntheticSpec, *, num_rows: int, max_table_rows: int) -> None:
        self.spec = spec
        self.num_rows = num_rows
        self.keys = tuple(f"C{i + 1}" for i in range(len(spec.cardinalities)))
        self.dense_names = tuple(f"I{i + 1}" for i in range(spec.num_dense))
        self.table_rows = tuple(min(c, max_table_rows) for c in spec.cardinalities)
        rng = np.random.default_rng([spec.seed, _MODEL])
        num_sparse = len(spec.cardinalities)
        key_space = np.iinfo(np.int64).max
        self._main_keys = rng.integers(0, key_space, num_sparse).astype(np.uint64)
        # Each cross draws distinct features; its own keys give it its own embeddings.
        self._cross_features = np.array(
            [
                rng.choice(num_sparse, spec.cross_order, replace=False)
                for _ in range(spec.num_crosses)
            ],
            dtype=np.int64,
        ).reshape(spec.num_crosses, spec.cross_order)
        self._cross_keys = rng.integers(
            0, key_space, (spec.num_crosses, spec.cross_order, spec.cross_rank)
        ).astype(np.uint64)
        # Raw counts exp(mu + sigma z): medians from 1 to ~150, heavy right tails.
        self._dense_mu = rng.uniform(0.0, 5.0, spec.num_dense)
        self._dense_sigma = rng.uniform(0.5, 2.0, spec.num_dense)
        self._dense_slope = rng.uniform(1.0, 3.0, spec.num_dense) * rng.choice(
            [-1, 1], spec.num_dense
        )
        self._dense_shift = rng.uniform(-1.0, 1.0, spec.num_dense)
        self.bias = self._calibrate()

    # -- BlockSource --------------------------------------------------------------------

    def block_starts(self) -> list[int]:
        """First row of each block, then ``num_rows``."""
        return [*range(0, self.num_rows, self.spec.block_rows), self.num_rows]

    def block(self, index: int) -> CtrSplit:
        """Rows of block ``index`` hashed into the tables (``timestamps`` = row numbers)."""
        b = self.generate(index)
        rows = torch.tensor(self.table_rows, dtype=torch.int64).unsqueeze(1)  # (F, 1)
        ids = torch.from_numpy(b.ranks) % rows  # (F, B)
        start = index * self.spec.block_rows
        return CtrSplit(
            name="block",
            keys=self.keys,
            ids=ids.unsqueeze(2),  # (F, B, L=1)
            lengths=torch.ones_like(ids),
            dense=torch.from_numpy(b.dense),
            labels=torch.from_numpy(b.labels),
            timestamps=torch.arange(start, start + ids.shape[1]),
        )

    def block_labels(self, index: int) -> torch.Tensor:
        """(B,) labels of block ``index`` (the whole block is generated: labels need it)."""
        return torch.from_numpy(self.generate(index).labels)

    # -- generation ---------------------------------------------------------------------

    def generate(self, index: int) -> Block:
        """Generates block ``index`` from ``(seed, index)`` alone.

        Args:
            index: Block number; rows ``index * block_rows`` onwards.

        Returns:
            The block with the planted logit's parts (for oracle metrics in tests).
        """
        start = index * self.spec.block_rows
        n = min(self.spec.block_rows, self.num_rows - start)
        if index < 0 or n <= 0:
            raise IndexError(f"block {index} is outside the {self.num_rows} rows")
        rng = np.random.default_rng([self.spec.seed, _ROWS, index])
        # Always a full block, then cut: a last, partial block must hold the same rows
        # whatever num_rows is, so the draws cannot depend on its length.
        b = self._draw(rng, self.spec.block_rows, with_labels=True)
        if n == self.spec.block_rows:
            return b
        return Block(
            b.ranks[:, :n],
            b.dense[:n],
            b.main[:n],
            b.cross[:n],
            b.dense_term[:n],
            b.noise[:n],
            b.labels[:n],
        )

    def oracle_logits(self, block: Block, *, crosses: bool = True) -> np.ndarray:
        """The planted logit without its noise: the best a model can know.

        Args:
            block: A generated block.
            crosses: False drops the crosses, i.e. the best model without them (before
                recalibrating the bias).

        Returns:
            (B,) float64 logits.
        """
        cross = block.cross if crosses else 0.0
        return self.bias + block.main + cross + block.dense_term

    def _draw(self, rng: np.random.Generator, n: int, *, with_labels: bool) -> Block:
        spec = self.spec
        ranks = np.empty((len(spec.cardinalities), n), dtype=np.int64)  # (F, B)
        for f, cardinality in enumerate(spec.cardinalities):
            ranks[f] = zipf_ranks(rng.random(n), cardinality, spec.zipf_exponent)
        z = rng.standard_normal((n, spec.num_dense))  # (B, num_dense)
        counts = np.floor(np.exp(self._dense_mu + self._dense_sigma * z))
        dense = np.log1p(counts).astype(np.float32)

        main = np.zeros(n)
        for f in range(len(spec.cardinalities)):
            main += _hashed_weight(self._main_keys[f], ranks[f])
        main *= spec.main_weight / math.sqrt(len(spec.cardinalities))

        # Each cross: <e_1(id_1) * ... * e_k(id_k), 1> / sqrt(rank), unit variance; a
        # hashed product of low-rank id embeddings, which for k = 2 is a dot product.
        cross = np.zeros(n)
        for c in range(spec.num_crosses):
            for d in range(spec.cross_rank):
                product = np.ones(n)
                for j, f in enumerate(self._cross_features[c]):
                    product *= _hashed_weight(self._cross_keys[c, j, d], ranks[f])
                cross += product
        if spec.num_crosses:
            cross *= spec.cross_weight / math.sqrt(spec.num_crosses * spec.cross_rank)

        dense_term = np.zeros(n)
        if spec.num_dense:
            dense_term = np.tanh(self._dense_slope * z + self._dense_shift).sum(axis=1)
            dense_term *= spec.dense_weight / math.sqrt(spec.num_dense)
        noise = spec.noise * rng.standard_normal(n)
        labels = np.zeros(n, dtype=np.float32)
        if with_labels:
            logit = self.bias + main + cross + dense_term + noise
            labels = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
        return Block(ranks, dense, main, cross, dense_term, noise, labels)

    def _calibrate(self) -> float:
        """The bias giving mean click probability ``label_rate`` (bisection on a sample)."""
        rng = np.random.default_rng([self.spec.seed, _CALIBRATION])
        self.bias = 0.0
        sample = self._draw(rng, _CALIBRATION_ROWS, with_labels=False)
        logit = sample.main + sample.cross + sample.dense_term + sample.noise
        lo, hi = -50.0, 50.0
        for _ in range(100):
            mid = (lo + hi) / 2
            rate = np.mean(1.0 / (1.0 + np.exp(-(logit + mid))))
            lo, hi = (mid, hi) if rate < self.spec.label_rate else (lo, mid)
        return (lo + hi) / 2


def load_synthetic(dataset: DatasetRef, *, max_table_rows: int) -> CtrDataset:
    """The synthetic task as streaming splits by row-number ranges (cached per process).

    Args:
        dataset: ``dataset.synthetic`` holds the generator; ``max_rows`` (when > 0) cuts
            the rows; the fractions cut train, validation and test.
        max_table_rows: Ids are reduced into at most this many rows per table.

    Returns:
        The dataset; train is rows [0, n_train), validation the next rows, test the last.

    Raises:
        BadDataError: A split would be empty.
    """
    # Keyed by the fields that shape generated data (not the whole ref: its other fields,
    # such as Criteo exclusions, do not change it).
    return _load(
        dataset.synthetic,
        dataset.max_rows,
        dataset.validation_fraction,
        dataset.test_fraction,
        max_table_rows,
    )


@functools.lru_cache(maxsize=8)
def _load(
    spec: SyntheticSpec,
    max_rows: int,
    validation_fraction: float,
    test_fraction: float,
    max_table_rows: int,
) -> CtrDataset:
    n = min(spec.rows, max_rows) if max_rows else spec.rows
    n_train, n_validation, _ = split_sizes(
        n,
        validation_fraction,
        test_fraction,
        data="synthetic-criteo",
        fix="raise DatasetRef.synthetic.rows or DatasetRef.max_rows",
    )
    source = SyntheticCriteo(spec, num_rows=n, max_table_rows=max_table_rows)
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_validation)}
    bounds["test"] = (n_train + n_validation, n)
    splits = {
        k: StreamingSplit(name=k, source=source, start=a, stop=b) for k, (a, b) in bounds.items()
    }
    return CtrDataset(
        schema=FeatureSchema(
            sparse_features=source.keys,
            table_rows=source.table_rows,
            dense_features=source.dense_names,
            id_counts=tuple(spec.cardinalities),
        ),
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        split_rule=(
            f"by row number: train rows [0, {n_train}), validation [{n_train}, "
            f"{n_train + n_validation}), test [{n_train + n_validation}, {n}); row r is "
            f"generated from (seed={spec.seed}, block r // {spec.block_rows})"
        ),
    )
