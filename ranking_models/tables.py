"""Your own table (Parquet, CSV or TSV) as a streaming ``CtrDataset``, by declared roles.

A ``TableReader`` (``table_parquet.ParquetReader``, ``table_text.TextReader``) cuts the
files into units (Parquet row groups, blocks of text lines) and parses one unit at a time
into ``Parsed`` columns by role; this module turns those into splits:

* Ids: every id of feature f (an integer, or a string hashed to 64 bits with BLAKE2b,
  stable across processes and hosts) goes to row mix64(id + f * 2^40) mod
  ``max_table_rows``, as Criteo's ids always did: collisions spread evenly, and the same id
  in two features lands on unrelated rows.
* Splits: by row order (files by name, then rows: train oldest, then validation, then
  test), or by ``TableSpec.split_column``: whole values of that column (e.g. days) go to
  one split each, the latest to test, so test is later than train. One pass over that
  column counts the rows of each value; after that a split's block is its unit's rows of
  that split, read on demand.

Only one unit (and one batch) is in memory at a time, so a table larger than memory
trains on its first ``DatasetRef.max_rows`` rows; a small table's parsed units are kept
(``KEEP_PARSED_ROWS``), so the epochs after the first read nothing.
"""

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from contracts.dataset import DatasetRef, TableSpec
from ranking_models.data import CtrDataset, CtrSplit, FeatureSchema, StreamingSplit, split_sizes
from ranking_models.errors import BadDataError
from ranking_models.synthetic import mix64

# Tables up to this many rows keep their parsed units in memory (about 100 bytes a row
# at Criteo's width): every epoch after the first reads nothing.
KEEP_PARSED_ROWS = 2_000_000


@dataclass(frozen=True)
class Parsed:
    """One unit's rows, parsed by role (before hashing into tables).

    Attributes:
        labels: (N,) float32 0/1.
        dense: (N, D) float32, transformed.
        ids: One (flat uint64 ids, (N,) int64 bag lengths) pair per feature, in
            ``TableColumns.features`` order; a bag's ids are consecutive in ``flat``.
    """

    labels: np.ndarray
    dense: np.ndarray
    ids: tuple[tuple[np.ndarray, np.ndarray], ...]


class TableReader(Protocol):
    """Units of a table's rows, each parsed on its own (see the module docstring)."""

    def unit_rows(self) -> list[int]:
        """Rows of every unit, in row order (after ``max_rows``)."""
        ...

    def parse(self, unit: int) -> Parsed:
        """Every row of ``unit`` by role; raises ``BadDataError`` naming file and row."""
        ...

    def labels(self, unit: int) -> np.ndarray:
        """(N,) float32 labels of ``unit``, reading as little as the format allows."""
        ...

    def split_keys(self, unit: int) -> np.ndarray:
        """(N,) values of ``TableSpec.split_column`` in ``unit`` (ints, dates or text)."""
        ...

    def describe(self) -> str:
        """The files, for split rules and messages."""
        ...


def hash_text(values: np.ndarray) -> np.ndarray:
    """(N,) uint64 BLAKE2b hashes of (N,) byte strings (``S`` dtype), one call per value.

    Hashes each distinct value once: ids repeat a lot (Zipf), so this is far fewer calls.
    """
    unique, inverse = np.unique(values, return_inverse=True)
    hashed = np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(v, digest_size=8).digest(), "little")
            for v in unique.tolist()
        ),
        dtype=np.uint64,
        count=len(unique),
    )
    return hashed[inverse.reshape(-1)]


def padded_bags(
    flat: np.ndarray, lengths: np.ndarray, feature: int, table_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """One feature's bags as (N, L) table rows, zero-padded, and their (N,) lengths.

    Args:
        flat: The uint64 ids of every bag, one bag after another.
        lengths: (N,) ids per bag.
        feature: The feature's index f (part of the hash).
        table_rows: Rows of the feature's table.
    """
    width = max(int(lengths.max(initial=0)), 1)
    rows = mix64(flat.astype(np.uint64) + np.uint64(feature << 40)) % np.uint64(table_rows)
    out = np.zeros((len(lengths), width), dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    positions = np.arange(width)
    inside = positions < lengths[:, None]
    out[inside] = rows.astype(np.int64)[(starts[:, None] + positions)[inside]]
    return out, lengths.astype(np.int64)


class TableSource:
    """A ``BlockSource`` over one split of a table: each block is one unit's rows of it.

    Args:
        reader: The table's units.
        keys: The F sparse feature names.
        table_rows: Rows of every feature's table.
        keep: Which of a unit's rows belong here (a boolean mask from the split keys);
            None: all of them.
        counts: Rows of each unit that belong here (``reader.unit_rows()`` when ``keep``
            is None).
        cache: Keeps parsed units for ``block`` (small tables; see ``KEEP_PARSED_ROWS``).
    """

    def __init__(
        self,
        reader: TableReader,
        keys: tuple[str, ...],
        table_rows: int,
        keep: Callable[[np.ndarray], np.ndarray] | None,
        counts: list[int],
        cache: Callable[[int], Parsed] | None = None,
    ) -> None:
        self.keys = keys
        self._reader, self._table_rows, self._keep = reader, table_rows, keep
        self._parse = cache or reader.parse
        self._units = [u for u, n in enumerate(counts) if n > 0]
        starts = [0]
        for u in self._units:
            starts.append(starts[-1] + counts[u])
        self._starts = starts
        global_starts = np.cumsum([0, *reader.unit_rows()])
        self._global = [int(global_starts[u]) for u in self._units]

    def block_starts(self) -> list[int]:
        """First row of each block, then the split's row count."""
        return self._starts

    def _mask(self, unit: int) -> np.ndarray | None:
        return None if self._keep is None else self._keep(self._reader.split_keys(unit))

    def block(self, index: int) -> CtrSplit:
        """Block ``index``'s rows (``timestamps`` = the rows' numbers in the whole table)."""
        unit = self._units[index]
        parsed, mask = self._parse(unit), self._mask(unit)
        rows = np.arange(len(parsed.labels)) if mask is None else np.flatnonzero(mask)
        bags = [padded_bags(f, n, i, self._table_rows) for i, (f, n) in enumerate(parsed.ids)]
        width = max(b.shape[1] for b, _ in bags)
        ids = np.stack([np.pad(b, ((0, 0), (0, width - b.shape[1])))[rows] for b, _ in bags])
        return CtrSplit(
            name="block",
            keys=self.keys,
            ids=torch.from_numpy(ids),  # (F, N, L)
            lengths=torch.from_numpy(np.stack([n[rows] for _, n in bags])),
            dense=torch.from_numpy(np.ascontiguousarray(parsed.dense[rows])),
            labels=torch.from_numpy(np.ascontiguousarray(parsed.labels[rows])),
            timestamps=torch.from_numpy(rows + self._global[index]),
        )

    def block_labels(self, index: int) -> torch.Tensor:
        """(N,) labels of block ``index``, reading the label (and split) column only."""
        unit = self._units[index]
        labels, mask = self._reader.labels(unit), self._mask(unit)
        return torch.from_numpy(labels if mask is None else labels[mask])


def _key_text(values: np.ndarray) -> list[str]:
    """Split keys as the text ``TableSpec.validation_values``/``test_values`` use."""
    return (
        [str(v) for v in values.tolist()]
        if values.dtype.kind != "M"
        else [str(v) for v in values.astype("datetime64[D]").astype(str).tolist()]
    )


def _assign_values(
    values: np.ndarray, counts: np.ndarray, spec: TableSpec, dataset: DatasetRef, where: str
) -> tuple[set[Any], set[Any]]:
    """The split column's values of validation and of test (by name, else by fraction)."""
    text = _key_text(values)
    if spec.test_values:
        chosen = []
        for wanted in (spec.validation_values, spec.test_values):
            missing = sorted(set(wanted) - set(text))
            if missing:
                raise BadDataError(
                    f"{where}: split column {spec.split_column!r} has no rows with value(s) "
                    f"{missing}; its values are {text[:20]}; fix TableSpec."
                    "validation_values/test_values"
                )
            chosen.append({values[i].item() for i, t in enumerate(text) if t in wanted})
        return chosen[0], chosen[1]
    total, picked = int(counts.sum()), len(values)
    parts: list[set[object]] = []
    for fraction in (dataset.test_fraction, dataset.validation_fraction):
        share: set[object] = set()
        rows = 0
        # Newest values first, whole values only, while one more brings the split closer
        # to its share (at least one value each).
        target = fraction * total
        while picked > 0 and (
            not share or abs(rows + counts[picked - 1] - target) < abs(rows - target)
        ):
            picked -= 1
            share.add(values[picked].item())
            rows += int(counts[picked])
        parts.append(share)
    if picked < 1:
        raise BadDataError(
            f"{where}: split column {spec.split_column!r} has {len(values)} distinct value(s) "
            f"({text[:20]}); train, validation and test need one each at least; use a column "
            "with more values (e.g. day, not month) or split by row order"
        )
    return parts[1], parts[0]


def _key_counts(reader: TableReader) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Distinct split-column values (sorted), their row counts, and each unit's keys.

    One pass over the split column (the caller caches the loaded dataset).
    """
    per_unit = [reader.split_keys(u) for u in range(len(reader.unit_rows()))]
    values, counts = np.unique(np.concatenate(per_unit), return_counts=True)
    return values, counts, per_unit


def load_table(
    dataset: DatasetRef, reader: TableReader, spec: TableSpec, *, max_table_rows: int
) -> CtrDataset:
    """A table as three streaming splits (see the module docstring).

    Args:
        dataset: The fractions (and ``max_rows``, already applied by ``reader``).
        reader: The table's units, its schema already checked.
        spec: The columns' roles and the split rule.
        max_table_rows: Ids are hashed into this many rows per feature.

    Raises:
        BadDataError: A split would be empty; the split column's values do not allow the
            split asked for.
    """
    rows = reader.unit_rows()
    n = sum(rows)
    where = reader.describe()
    if n == 0:
        raise BadDataError(f"{where}: the table has no rows; check the path and max_rows")
    keys = spec.columns.features
    cache = functools.lru_cache(maxsize=None)(reader.parse) if n <= KEEP_PARSED_ROWS else None
    schema = FeatureSchema(
        sparse_features=keys,
        table_rows=(max_table_rows,) * len(keys),
        dense_features=spec.columns.dense,
    )
    names = ("train", "validation", "test")
    if not spec.split_column:
        n_train, n_validation, _ = split_sizes(
            n,
            dataset.validation_fraction,
            dataset.test_fraction,
            data=where,
            fix="add rows, raise DatasetRef.max_rows or adjust validation_fraction/test_fraction",
        )
        source = TableSource(reader, keys, max_table_rows, None, rows, cache)
        cut = (0, n_train, n_train + n_validation, n)
        splits = [
            StreamingSplit(name=k, source=source, start=cut[i], stop=cut[i + 1])
            for i, k in enumerate(names)
        ]
        rule = (
            f"by file order, then row order over {where}: train rows [0, {cut[1]}), validation "
            f"[{cut[1]}, {cut[2]}), test [{cut[2]}, {n})"
        )
        return CtrDataset(schema, splits[0], splits[1], splits[2], split_rule=rule)
    values, counts, per_unit = _key_counts(reader)
    validation, test = _assign_values(values, counts, spec, dataset, where)
    members = {"validation": validation, "test": test}
    members["train"] = {v.item() for v in values} - validation - test
    splits = []
    for name in names:
        chosen = np.array(sorted(members[name]), dtype=values.dtype)

        def keep(keys_: np.ndarray, chosen: np.ndarray = chosen) -> np.ndarray:
            return np.isin(keys_, chosen)

        unit_counts = [int(keep(k).sum()) for k in per_unit]
        source = TableSource(reader, keys, max_table_rows, keep, unit_counts, cache)
        splits.append(StreamingSplit(name=name, source=source, start=0, stop=sum(unit_counts)))
    text = {k: _key_text(np.array(sorted(v), dtype=values.dtype)) for k, v in members.items()}
    rule = (
        f"by {spec.split_column!r} over {where}: train {_span(text['train'])}, validation "
        f"{_span(text['validation'])}, test {_span(text['test'])}"
    )
    return CtrDataset(schema, splits[0], splits[1], splits[2], split_rule=rule)


def _span(values: list[str]) -> str:
    return f"[{values[0]}]" if len(values) == 1 else f"[{values[0]} .. {values[-1]}]"


def table_files(path: str, suffixes: tuple[str, ...], kind: str) -> tuple[Path, ...]:
    """The files ``DatasetRef.path`` names: itself, or a folder's files with one of
    ``suffixes``, in name order.

    Raises:
        BadDataError: Nothing of the kind is there.
    """
    root = Path(path)
    if root.is_file():
        return (root,)
    if root.is_dir():
        files = tuple(sorted(p for p in root.iterdir() if p.is_file() and p.suffix in suffixes))
        if files:
            return files
        raise BadDataError(
            f"{kind} folder {root} holds no {'/'.join(suffixes)} files; set DatasetRef.path "
            "to a file or a folder of them"
        )
    raise BadDataError(f"{kind} path {root} does not exist; set DatasetRef.path")
