"""Parquet tables (pyarrow), read a row group at a time: the ``TableReader`` of ``tables``.

Opening the files reads their footers only: every declared column is checked there, by
name and type, before a row is read. Values are checked as each row group is parsed, and a
bad one names the file, the column and the row (1-based in the file, with its row group).

Types by role: label integer, boolean or floating (values 0/1); dense integer, floating or
boolean; sparse integer or string/binary (dictionary-encoded too); multi a list of those,
or a string of ids between ``TableSpec.separator``. Missing ids are empty bags, missing
dense values 0 (null or NaN).
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from contracts.dataset import TableSpec
from ranking_models.errors import BadDataError
from ranking_models.tables import Parsed, hash_text, table_files

_IDS = "integer, string or binary"
_ALLOWED: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "label": ("integer, boolean or floating", lambda t: _numeric(t)),
    "dense": ("integer, floating or boolean", lambda t: _numeric(t)),
    "sparse": (_IDS, lambda t: _id_type(t)),
    "multi": (
        f"a list of {_IDS}, or a string of separated ids",
        lambda t: (
            ((pa.types.is_list(t) or pa.types.is_large_list(t)) and _id_type(t.value_type))
            or _text(t)
        ),
    ),
    "split": (
        "integer, string, date or timestamp",
        lambda t: pa.types.is_integer(t) or _text(t) or pa.types.is_temporal(t),
    ),
}


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _id_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or _text(t) or pa.types.is_binary(t)


def _open(file: Path) -> pq.ParquetFile:
    if file.stat().st_size == 0:
        raise BadDataError(f"Parquet file {file} is empty (0 bytes); write it again")
    try:
        return pq.ParquetFile(file)
    except (pa.ArrowException, OSError) as err:
        raise BadDataError(
            f"Parquet file {file} cannot be read ({err}); is it Parquet, written completely?"
        ) from None


class ParquetReader:
    """The row groups of Parquet files as units (see the module docstring).

    Args:
        path: A Parquet file, or a folder of ``*.parquet`` files (read in name order).
        spec: The columns' roles.
        max_rows: Only the first ``max_rows`` rows over all files (0 = all).

    Raises:
        BadDataError: A file is missing, empty, unreadable, or lacks a declared column or
            has it in a type its role cannot use.
    """

    def __init__(self, path: str, spec: TableSpec, max_rows: int) -> None:
        self._files = table_files(path, (".parquet", ".pq"), "Parquet")
        self._spec = spec
        roles = spec.columns
        self._roles = {roles.label: "label"}
        self._roles |= {c: "dense" for c in roles.dense} | {c: "sparse" for c in roles.sparse}
        self._roles |= {c: "multi" for c in roles.multi}
        if spec.split_column:
            self._roles[spec.split_column] = "split"
        self._units: list[tuple[int, int, int, int]] = []  # file, row group, first row, rows
        total = 0
        for index, file in enumerate(self._files):
            meta = _open(file)
            self._check_schema(file, meta.schema_arrow)
            first = 0
            for group in range(meta.metadata.num_row_groups):
                rows = meta.metadata.row_group(group).num_rows
                if max_rows:
                    rows = min(rows, max_rows - total)
                if rows > 0:
                    self._units.append((index, group, first, rows))
                first += rows
                total += rows

    def _check_schema(self, file: Path, schema: pa.Schema) -> None:
        for column, role in self._roles.items():
            field = f"TableSpec.columns.{role}" if role != "split" else "TableSpec.split_column"
            if column not in schema.names:
                raise BadDataError(
                    f"Parquet file {file}: no column {column!r} ({field}); its columns are "
                    f"{schema.names[:40]}; fix the name in {field} or the file"
                )
            allowed, ok = _ALLOWED[role]
            kind = schema.field(column).type
            if not ok(kind):
                raise BadDataError(
                    f"Parquet file {file}: column {column!r} ({field}) is {kind}, a {role} "
                    f"column must be {allowed}; cast it or give it another role"
                )

    def describe(self) -> str:
        """The files, e.g. ``Parquet [day1.parquet, day2.parquet]``."""
        return f"Parquet {[f.name for f in self._files]} at {self._files[0].parent}"

    def unit_rows(self) -> list[int]:
        """Rows of every row group, in order (after ``max_rows``)."""
        return [rows for *_, rows in self._units]

    def _read(self, unit: int, columns: list[str]) -> pa.Table:
        index, group, _, rows = self._units[unit]
        table = _open(self._files[index]).read_row_group(group, columns=columns)
        return table.slice(0, rows)

    def _where(self, unit: int, column: str, row: int) -> str:
        index, group, first, _ = self._units[unit]
        return (
            f"Parquet file {self._files[index]} row {first + row + 1:,} (row group {group}), "
            f"column {column!r}"
        )

    def labels(self, unit: int) -> np.ndarray:
        """(N,) float32 0/1 labels of ``unit``: reads the label column only."""
        label = self._spec.columns.label
        return self._labels(unit, self._read(unit, [label]).column(label))

    def _labels(self, unit: int, column: pa.ChunkedArray) -> np.ndarray:
        name = self._spec.columns.label
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
            raise BadDataError(f"{self._where(unit, name, row)}: the label is missing")
        values = pc.cast(column, pa.float64()).to_numpy()
        bad = np.flatnonzero((values != 0) & (values != 1))
        if len(bad):
            row = int(bad[0])
            raise BadDataError(
                f"{self._where(unit, name, row)}: label {values[row]:g} is not 0 or 1; fix "
                "the row or map the column to 0/1"
            )
        return values.astype(np.float32)

    def split_keys(self, unit: int) -> np.ndarray:
        """(N,) split-column values: int64, datetime64 or text."""
        name = self._spec.split_column
        column = self._read(unit, [name]).column(name)
        if column.null_count:
            row = int(np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))[0])
            raise BadDataError(
                f"{self._where(unit, name, row)}: no value in the split column; fill it or "
                "drop the row"
            )
        if _text(column.type):
            return np.array(column.to_pylist(), dtype=str)
        return column.to_numpy()

    def parse(self, unit: int) -> Parsed:
        """Every row of ``unit`` by role (see the module docstring)."""
        roles = self._spec.columns
        table = self._read(unit, [c for c in self._roles if self._roles[c] != "split"])
        dense = np.zeros((table.num_rows, len(roles.dense)), dtype=np.float32)
        for j, name in enumerate(roles.dense):
            dense[:, j] = self._dense(unit, name, table.column(name))
        ids = [self._bags(table.column(name), one=True) for name in roles.sparse]
        ids += [self._bags(table.column(name), one=False) for name in roles.multi]
        return Parsed(self._labels(unit, table.column(roles.label)), dense, tuple(ids))

    def _dense(self, unit: int, name: str, column: pa.ChunkedArray) -> np.ndarray:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)  # null -> NaN
        infinite = np.flatnonzero(np.isinf(values))
        if len(infinite):
            row = int(infinite[0])
            raise BadDataError(
                f"{self._where(unit, name, row)}: {values[row]} is not finite; fix the row"
            )
        values = np.nan_to_num(values, nan=0.0)
        if self._spec.dense_transform == "log1p":
            values = np.log1p(np.maximum(values, 0.0))
        return values

    def _bags(self, column: pa.ChunkedArray, *, one: bool) -> tuple[np.ndarray, np.ndarray]:
        """(flat uint64 ids, (N,) lengths) of an id column; nulls are empty bags."""
        array = column.combine_chunks()
        if pa.types.is_dictionary(array.type):
            array = array.cast(array.type.value_type)
        if one:
            array = pa.ListArray.from_arrays(
                pa.array(np.arange(len(array) + 1, dtype=np.int32)), array
            )
        elif _text(array.type):
            array = pc.split_pattern(array, self._spec.separator)
        flat = pc.list_flatten(array)
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy().astype(np.int64)
        valid = pc.is_valid(flat)
        if _text(flat.type) or pa.types.is_binary(flat.type):
            valid = pc.and_(valid, pc.greater(pc.binary_length(flat), 0))
        keep = valid.to_numpy(zero_copy_only=False)
        # Missing ids (null, empty text) leave their bags; then each bag keeps max_bag ids.
        kept = np.concatenate([[0], np.cumsum(keep)])
        ends = np.cumsum(lengths)
        lengths = (kept[ends] - kept[ends - lengths]).astype(np.int64)
        rank = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        capped = np.zeros(len(keep), dtype=bool)
        capped[np.flatnonzero(keep)[rank < self._spec.max_bag]] = True
        flat = flat.filter(pa.array(capped))
        lengths = np.minimum(lengths, self._spec.max_bag)
        return _hashable(flat), lengths


def _hashable(flat: pa.Array) -> np.ndarray:
    """Ids as uint64: integers as they are, text hashed (``hash_text``)."""
    if pa.types.is_integer(flat.type):
        return flat.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    encoded = pc.dictionary_encode(flat.cast(pa.binary()))
    words = np.array(encoded.dictionary.to_pylist(), dtype=object)
    hashed = hash_text(words.astype("S")) if len(words) else np.zeros(0, np.uint64)
    return hashed[encoded.indices.to_numpy(zero_copy_only=False)]
