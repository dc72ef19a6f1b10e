"""Criteo's display-ads TSV files, streamed block by block.

Format (Kaggle ``train.txt``, the 1TB dataset's ``day_0`` ... ``day_23``): one example
a line, ``label \\t I1..I13 \\t C1..C26``; the label is 0/1, I are integer counts (a few
can be negative), C are 32-bit hex hashes; any feature may be empty (missing). Kaggle's
``test.txt`` has no label column and is not supported; gzipped files must be
decompressed first (seeking into gzip is linear).

Rows are split by file order, then line order: days are consecutive, so train is the
oldest traffic and test the newest. One indexing pass records the byte offset of every
``BLOCK_ROWS``-th line; after that any block is one seek and read, so training shuffles
blocks (and rows within them) while holding one block in memory.

Transforms: dense x -> log(1 + max(x, 0)), missing -> 0. Categorical value v of feature
f -> mix64(v + f * 2^40) mod ``max_table_rows`` (collisions spread evenly over the
rows); missing -> an empty bag.
"""

import functools
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contracts.dataset import DatasetRef
from ranking_models.data import CtrDataset, CtrSplit, FeatureSchema, StreamingSplit, split_sizes
from ranking_models.errors import BadDataError
from ranking_models.synthetic import mix64

NUM_DENSE, NUM_SPARSE = 13, 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
DENSE_FEATURES = tuple(f"I{i + 1}" for i in range(NUM_DENSE))
SPARSE_FEATURES = tuple(f"C{i + 1}" for i in range(NUM_SPARSE))
BLOCK_ROWS = 65_536
_CHUNK_BYTES = 1 << 24
_DAY = re.compile(r"day_(\d+)$")


@dataclass(frozen=True)
class _BlockAt:
    """Where a block lives: file, byte offset, 1-based first line, rows."""

    file: Path
    offset: int
    line: int
    rows: int


def criteo_files(path: str, exclude: Sequence[str] = ()) -> tuple[Path, ...]:
    """The files ``DatasetRef.path`` names: itself, or a folder's ``day_N`` in day order,
    less the file names in ``exclude``.

    Raises:
        BadDataError: Nothing readable is there.
    """
    fix = "set DatasetRef.path to a Criteo TSV file (e.g. train.txt) or a folder of day_N files"
    root = Path(path)
    if root.is_file():
        files: tuple[Path, ...] = (root,)
    elif root.is_dir():
        days = [(int(m.group(1)), p) for p in root.iterdir() if (m := _DAY.match(p.name))]
        files = tuple(p for _, p in sorted(days) if p.name not in exclude)
        if not files:
            raise BadDataError(f"Criteo folder {root} holds no day_N files; {fix}")
    else:
        raise BadDataError(f"Criteo path {root} does not exist; {fix}")
    for f in files:
        if f.suffix in (".gz", ".zst", ".bz2", ".xz"):
            raise BadDataError(f"Criteo file {f} is compressed; decompress it first")
    return files


class CriteoTsv:
    """A ``BlockSource`` over Criteo TSV files (see the module docstring).

    Args:
        files: The files, oldest first.
        max_rows: Keep only the first ``max_rows`` lines over all files (0 = all).
        max_table_rows: Rows of every categorical feature's table.
        block_rows: Lines per block (the unit of reading and shuffling).
    """

    def __init__(
        self,
        files: tuple[Path, ...],
        *,
        max_rows: int,
        max_table_rows: int,
        block_rows: int = BLOCK_ROWS,
    ) -> None:
        self.keys = SPARSE_FEATURES
        self.max_table_rows = max_table_rows
        self._blocks = _index(files, max_rows, block_rows, tuple(_stamp(f) for f in files))
        starts = [0]
        for b in self._blocks:
            starts.append(starts[-1] + b.rows)
        self._starts = starts

    @property
    def num_rows(self) -> int:
        """Lines indexed over all files."""
        return self._starts[-1]

    def block_starts(self) -> list[int]:
        """First row of each block, then ``num_rows``."""
        return self._starts

    def block(self, index: int) -> CtrSplit:
        """Reads and parses block ``index`` (``timestamps`` = global row numbers)."""
        at = self._blocks[index]
        fields = [_fields(line, at, i) for i, line in enumerate(self._lines(at))]
        columns = list(zip(*fields, strict=True))  # NUM_FIELDS tuples of bytes
        n = len(fields)
        labels = _labels(columns[0], at)
        dense = np.empty((n, NUM_DENSE), dtype=np.float32)
        for j in range(NUM_DENSE):
            dense[:, j] = _dense(columns[1 + j], at, DENSE_FEATURES[j])
        ids = np.zeros((NUM_SPARSE, n), dtype=np.int64)
        lengths = np.zeros((NUM_SPARSE, n), dtype=np.int64)
        for f in range(NUM_SPARSE):
            values = _hex(columns[1 + NUM_DENSE + f], at, SPARSE_FEATURES[f])  # -1 = missing
            present = values >= 0
            keyed = values.astype(np.uint64) + np.uint64(f << 40)
            ids[f] = np.where(present, mix64(keyed) % np.uint64(self.max_table_rows), 0)
            lengths[f] = present
        start = self._starts[index]
        return CtrSplit(
            name="block",
            keys=self.keys,
            ids=torch.from_numpy(ids).unsqueeze(2),  # (F, B, L=1)
            lengths=torch.from_numpy(lengths),
            dense=torch.from_numpy(dense),
            labels=torch.from_numpy(labels),
            timestamps=torch.arange(start, start + n),
        )

    def block_labels(self, index: int) -> torch.Tensor:
        """(B,) labels of block ``index``, reading only the first column."""
        at = self._blocks[index]
        labels = tuple(line.split(b"\t", 1)[0] for line in self._lines(at))
        return torch.from_numpy(_labels(labels, at))

    def _lines(self, at: _BlockAt) -> list[bytes]:
        with at.file.open("rb") as f:
            f.seek(at.offset)
            return [line.rstrip(b"\r\n") for line in itertools.islice(f, at.rows)]


def _stamp(file: Path) -> tuple[int, int]:
    """Size and mtime: part of the index's cache key, so a rewritten file is re-indexed."""
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _index(
    files: tuple[Path, ...], max_rows: int, block_rows: int, _stamps: tuple[tuple[int, int], ...]
) -> tuple[_BlockAt, ...]:
    # One pass over the bytes: newline positions come from numpy a chunk at a time, so
    # indexing a 45M-line file costs seconds, not a Python loop per line.
    blocks: list[_BlockAt] = []
    total = 0
    for file in files:
        newlines, size, last = 0, 0, b"\n"
        starts = [0]  # byte offset of each block's first line
        with file.open("rb") as f:
            while not max_rows or total + newlines < max_rows:
                chunk = f.read(_CHUNK_BYTES)
                if not chunk:
                    break
                ends = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + size
                # The line after newline j has index newlines + j + 1; blocks start at
                # multiples of block_rows.
                first = block_rows - newlines % block_rows - 1
                starts.extend(int(e) + 1 for e in ends[first::block_rows])
                newlines += len(ends)
                size += len(chunk)
                last = chunk[-1:]
        lines = newlines + (last != b"\n")  # an unterminated last line still counts
        if max_rows:
            lines = min(lines, max_rows - total)
        for b, start in enumerate(starts):
            rows = min(block_rows, lines - b * block_rows)
            if rows > 0:
                blocks.append(_BlockAt(file, start, b * block_rows + 1, rows))
        total += lines
    return tuple(blocks)


def _where(at: _BlockAt, i: int) -> str:
    return f"Criteo file {at.file} line {at.line + i}"


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


def _fields(line: bytes, at: _BlockAt, i: int) -> list[bytes]:
    fields = line.split(b"\t")
    if len(fields) != NUM_FIELDS:
        raise BadDataError(
            f"{_where(at, i)}: expected {NUM_FIELDS} tab-separated fields (label, "
            f"{NUM_DENSE} integers, {NUM_SPARSE} hex categoricals), got {len(fields)}; "
            "fix or drop the line (Kaggle's test.txt, which has no label, is not supported)"
        )
    return fields


def _labels(values: tuple[bytes, ...], at: _BlockAt) -> np.ndarray:
    array = np.array(values, dtype="S")
    bad = np.flatnonzero((array != b"0") & (array != b"1"))
    if len(bad):
        i = int(bad[0])
        raise BadDataError(f"{_where(at, i)}: label {_text(values[i])!r} is not 0 or 1")
    return (array == b"1").astype(np.float32)


def _dense(values: tuple[bytes, ...], at: _BlockAt, name: str) -> np.ndarray:
    array = np.array(values, dtype="S")
    try:
        counts = np.where(array == b"", b"0", array).astype(np.int64)
    except ValueError:
        i = next(i for i, v in enumerate(values) if v and not _is_int(v))
        raise BadDataError(
            f"{_where(at, i)}: {name} {_text(values[i])!r} is not an integer"
        ) from None
    return np.log1p(np.maximum(counts, 0)).astype(np.float32)


def _is_int(text: bytes) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _hex(values: tuple[bytes, ...], at: _BlockAt, name: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if not v:
            out[i] = -1
            continue
        try:
            out[i] = int(v, 16)
        except ValueError:
            raise BadDataError(f"{_where(at, i)}: {name} {_text(v)!r} is not a hex hash") from None
        if out[i] < 0 or len(v) > 15:
            raise BadDataError(f"{_where(at, i)}: {name} {_text(v)!r} is not a hex hash")
    return out


def load_criteo_tsv(dataset: DatasetRef, *, max_table_rows: int) -> CtrDataset:
    """Criteo TSV data as streaming splits, by file order then line order.

    Args:
        dataset: ``path`` (a file or a folder of day files), ``max_rows`` (first lines
            only, 0 = all) and the fractions.
        max_table_rows: Categorical values are hashed into this many rows per table.

    Returns:
        The dataset; the byte index is cached per process, blocks are read on demand.

    Raises:
        BadDataError: The path is missing, a split would be empty, or (when a block is
            read) a line is malformed; the message names the file and line.
    """
    files = criteo_files(dataset.path, dataset.exclude_files)
    source = CriteoTsv(files, max_rows=dataset.max_rows, max_table_rows=max_table_rows)
    n = source.num_rows
    n_train, n_validation, _ = split_sizes(
        n,
        dataset.validation_fraction,
        dataset.test_fraction,
        data=f"criteo-tsv at {dataset.path}",
        fix="add rows, raise DatasetRef.max_rows or adjust validation_fraction/test_fraction",
    )
    cut = (0, n_train, n_train + n_validation, n)
    names = ("train", "validation", "test")
    splits = [
        StreamingSplit(name=k, source=source, start=cut[i], stop=cut[i + 1])
        for i, k in enumerate(names)
    ]
    return CtrDataset(
        schema=FeatureSchema(
            sparse_features=SPARSE_FEATURES,
            table_rows=(max_table_rows,) * NUM_SPARSE,
            dense_features=DENSE_FEATURES,
        ),
        train=splits[0],
        validation=splits[1],
        test=splits[2],
        split_rule=(
            f"by file order, then line order over {[f.name for f in files]}: train rows "
            f"[0, {cut[1]}), validation [{cut[1]}, {cut[2]}), test [{cut[2]}, {n})"
        ),
    )
