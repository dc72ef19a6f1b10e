"""Criteo's display-ads TSV files, streamed block by block.

Format (Kaggle ``train.txt``, the 1TB dataset's ``day_0`` ... ``day_23``): one example
a line, ``label \\t I1..I13 \\t C1..C26``; the label is 0/1, I are integer counts (a few
can be negative), C are 32-bit hex hashes; any feature may be empty (missing). Kaggle's
``test.txt`` has no label column and is not supported; gzipped files must be
decompressed first (seeking into gzip is linear).

A preset of your own table (``tables``, ``table_text``): ``CRITEO_TABLE`` declares the 40
headerless tab-separated columns. Rows are split by file order, then line order: days are
consecutive, so train is the oldest traffic and test the newest. Any block is one seek and
read, so training shuffles blocks (and rows within them) while holding one block in
memory.

Transforms: dense x -> log(1 + max(x, 0)), missing -> 0. Categorical value v of feature
f -> mix64(v + f * 2^40) mod ``max_table_rows`` (collisions spread evenly over the
rows); missing -> an empty bag.
"""

import re
from collections.abc import Sequence
from pathlib import Path

from contracts.dataset import DatasetRef, TableColumns, TableSpec
from ranking_models.data import CtrDataset
from ranking_models.errors import BadDataError
from ranking_models.table_text import BLOCK_ROWS, TextReader
from ranking_models.tables import TableSource, load_table

NUM_DENSE, NUM_SPARSE = 13, 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
DENSE_FEATURES = tuple(f"I{i + 1}" for i in range(NUM_DENSE))
SPARSE_FEATURES = tuple(f"C{i + 1}" for i in range(NUM_SPARSE))
_DAY = re.compile(r"day_(\d+)$")
_LAYOUT = f"label, {NUM_DENSE} integers, {NUM_SPARSE} hex categoricals"
_KAGGLE_TEST = "; Kaggle's test.txt, which has no label, is not supported"

# Criteo's layout as a table: what `criteo-tsv` reads.
CRITEO_TABLE = TableSpec(
    format="tsv",
    columns=TableColumns(label="label", dense=DENSE_FEATURES, sparse=SPARSE_FEATURES),
    header=False,
    names=("label", *DENSE_FEATURES, *SPARSE_FEATURES),
    dense_transform="log1p",
    hex_ids=True,
)


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


def criteo_reader(
    files: tuple[Path, ...], *, max_rows: int, block_rows: int = BLOCK_ROWS
) -> TextReader:
    """The text reader of Criteo files, its messages naming them as Criteo's."""
    return TextReader(
        files, CRITEO_TABLE, max_rows, block_rows=block_rows, kind="Criteo",
        layout=_LAYOUT + _KAGGLE_TEST,
    )  # fmt: skip


class CriteoTsv(TableSource):
    """A ``BlockSource`` over every line of Criteo TSV files (see the module docstring).

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
        reader = criteo_reader(files, max_rows=max_rows, block_rows=block_rows)
        super().__init__(reader, SPARSE_FEATURES, max_table_rows, None, reader.unit_rows())

    @property
    def num_rows(self) -> int:
        """Lines indexed over all files."""
        return self.block_starts()[-1]


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
    reader = criteo_reader(files, max_rows=dataset.max_rows)
    return load_table(dataset, reader, CRITEO_TABLE, max_table_rows=max_table_rows)
