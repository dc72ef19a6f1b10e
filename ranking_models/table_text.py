"""Delimited text tables (CSV, TSV, Criteo's day files), read a block of lines at a time.

One indexing pass records the byte offset of every ``block_rows``-th line (numpy finds
the newlines a chunk at a time, so a 45M-line file takes seconds); after that any block is
one seek and read. Each file may start with a header naming its columns (every file of a
folder the same), or ``TableSpec.names`` names them. Fields are not quoted: a delimiter
inside a value is not supported (write Parquet for such data).

Values by role: label ``0``/``1`` (or ``0.0``/``1.0``); dense numbers, empty or ``nan``
read as 0; sparse ids as text, hashed (``TableSpec.hex_ids``: hexadecimal numbers, as
Criteo's); multi ids between ``TableSpec.separator``. An empty id is an empty bag. A bad
value names the file, the line (1-based, the header counted) and the column.
"""

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.dataset import TableSpec
from ranking_models.errors import BadDataError
from ranking_models.tables import Parsed, hash_text

BLOCK_ROWS = 65_536
_CHUNK_BYTES = 1 << 24
_MISSING = (b"", b"nan", b"NaN", b"NA", b"null")


@dataclass(frozen=True)
class _BlockAt:
    """Where a block lives: file, byte offset, 1-based first line, rows."""

    file: Path
    offset: int
    line: int
    rows: int


def _stamp(file: Path) -> tuple[int, int]:
    """Size and mtime: part of the index's cache key, so a rewritten file is re-indexed."""
    stat = file.stat()
    return stat.st_size, stat.st_mtime_ns


def _header(file: Path) -> bytes:
    with file.open("rb") as f:
        return f.readline()


@functools.lru_cache(maxsize=8)
def _index(
    files: tuple[Path, ...],
    max_rows: int,
    block_rows: int,
    header: bool,
    _stamps: tuple[tuple[int, int], ...],
) -> tuple[_BlockAt, ...]:
    blocks: list[_BlockAt] = []
    total = 0
    for file in files:
        skip = len(_header(file)) if header else 0
        newlines, size, last = 0, skip, b"\n"
        starts = [skip]  # byte offset of each block's first line
        with file.open("rb") as f:
            f.seek(skip)
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
        lines = newlines + (size > skip and last != b"\n")  # an unterminated last line counts
        if max_rows:
            lines = min(lines, max_rows - total)
        for b, start in enumerate(starts):
            rows = min(block_rows, lines - b * block_rows)
            if rows > 0:
                blocks.append(_BlockAt(file, start, b * block_rows + 1 + header, rows))
        total += lines
    return tuple(blocks)


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


class TextReader:
    """Blocks of lines of delimited text files as units (see the module docstring).

    Args:
        files: The files, in row order.
        spec: The columns' roles and the text format.
        max_rows: Only the first ``max_rows`` lines over all files (0 = all).
        block_rows: Lines per block (the unit of reading and shuffling).
        kind: Names the files in messages (``CSV``, ``TSV``, ``Criteo``).
        layout: What a line holds, for the wrong-field-count message; default: the names.

    Raises:
        BadDataError: A file is empty, or a declared column is not in its header.
    """

    def __init__(
        self,
        files: tuple[Path, ...],
        spec: TableSpec,
        max_rows: int,
        *,
        block_rows: int = BLOCK_ROWS,
        kind: str = "",
        layout: str = "",
    ) -> None:
        self._files, self._spec = files, spec
        self._kind = kind or spec.format.upper()
        self._sep = spec.field_delimiter.encode()
        names = spec.names or self._read_header()
        self._names = names
        self._layout = layout or ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        roles = spec.columns
        declared = [("label", roles.label)] + [("dense", c) for c in roles.dense]
        declared += [("sparse", c) for c in roles.sparse] + [("multi", c) for c in roles.multi]
        if spec.split_column:
            declared.append(("split_column", spec.split_column))
        for role, column in declared:
            if column not in names:
                field = "TableSpec.split_column" if role == "split_column" else f"columns.{role}"
                source = "TableSpec.names" if spec.names else f"the header of {files[0]}"
                raise BadDataError(
                    f"{self._kind} file {files[0]}: no column {column!r} ({field}); "
                    f"{source} has {list(names)[:40]}; fix the name or the file"
                )
        self._at = {name: i for i, name in enumerate(names)}
        self._blocks = _index(files, max_rows, block_rows, spec.header, tuple(map(_stamp, files)))

    def _read_header(self) -> tuple[str, ...]:
        headers = []
        for file in self._files:
            line = _header(file).rstrip(b"\r\n")
            if not line:
                raise BadDataError(
                    f"{self._kind} file {file} is empty: its first line should name the "
                    "columns (or set TableSpec.header false and TableSpec.names)"
                )
            headers.append(tuple(_text(v).strip() for v in line.split(self._sep)))
        for file, header in zip(self._files, headers, strict=True):
            if header != headers[0]:
                raise BadDataError(
                    f"{self._kind} file {file}: header {list(header)[:20]} differs from "
                    f"{self._files[0].name}'s {list(headers[0])[:20]}; every file must have "
                    "the same columns"
                )
        return headers[0]

    def describe(self) -> str:
        """The files, e.g. ``CSV ['clicks.csv'] at /data``."""
        return f"{self._kind} {[f.name for f in self._files]} at {self._files[0].parent}"

    def unit_rows(self) -> list[int]:
        """Lines of every block, in order (after ``max_rows``)."""
        return [b.rows for b in self._blocks]

    def _lines(self, at: _BlockAt) -> list[bytes]:
        with at.file.open("rb") as f:
            f.seek(at.offset)
            return [line.rstrip(b"\r\n") for line in itertools.islice(f, at.rows)]

    def _where(self, at: _BlockAt, i: int) -> str:
        return f"{self._kind} file {at.file} line {at.line + i}"

    def _columns(self, unit: int, wanted: list[str]) -> dict[str, tuple[bytes, ...]]:
        at = self._blocks[unit]
        n, sep, rows = len(self._names), self._sep, []
        for i, line in enumerate(self._lines(at)):
            fields = line.split(sep)
            if len(fields) != n:
                name = "tab" if sep == b"\t" else repr(sep.decode())
                raise BadDataError(
                    f"{self._where(at, i)}: expected {n} {name}-separated fields "
                    f"({self._layout}), got {len(fields)}; fix or drop the line"
                )
            rows.append(fields)
        columns = list(zip(*rows, strict=True)) if rows else [()] * n
        return {name: columns[self._at[name]] for name in wanted}

    def labels(self, unit: int) -> np.ndarray:
        """(N,) float32 0/1 labels of ``unit``."""
        label = self._spec.columns.label
        return self._labels(unit, self._columns(unit, [label])[label])

    def _labels(self, unit: int, values: tuple[bytes, ...]) -> np.ndarray:
        array = np.array(values, dtype="S")
        ones = (array == b"1") | (array == b"1.0")
        bad = np.flatnonzero(~ones & (array != b"0") & (array != b"0.0"))
        if len(bad):
            i = int(bad[0])
            raise BadDataError(
                f"{self._where(self._blocks[unit], i)}: label {_text(values[i])!r} is not 0 or 1"
            )
        return ones.astype(np.float32)

    def split_keys(self, unit: int) -> np.ndarray:
        """(N,) split-column values: int64 when every value is an integer, else text."""
        name = self._spec.split_column
        values = np.array(self._columns(unit, [name])[name], dtype="S")
        empty = np.flatnonzero(values == b"")
        if len(empty):
            raise BadDataError(
                f"{self._where(self._blocks[unit], int(empty[0]))}: no value in split column "
                f"{name!r}; fill it or drop the line"
            )
        try:
            return values.astype(np.int64)
        except ValueError:
            return values.astype(str)

    def parse(self, unit: int) -> Parsed:
        """Every line of ``unit`` by role (see the module docstring)."""
        roles = self._spec.columns
        columns = self._columns(unit, [roles.label, *roles.dense, *roles.features])
        labels = self._labels(unit, columns[roles.label])
        dense = np.zeros((len(labels), len(roles.dense)), dtype=np.float32)
        for j, name in enumerate(roles.dense):
            dense[:, j] = self._dense(unit, name, columns[name])
        ids = [self._ids(unit, name, columns[name]) for name in roles.sparse]
        ids += [self._bags(columns[name]) for name in roles.multi]
        return Parsed(labels, dense, tuple(ids))

    def _dense(self, unit: int, name: str, values: tuple[bytes, ...]) -> np.ndarray:
        array = np.array(values, dtype="S")
        array = np.where(np.isin(array, _MISSING), b"0", array)
        try:  # integers first: exact for counts, and the common case
            numbers = array.astype(np.int64).astype(np.float64)
        except ValueError:
            try:
                numbers = array.astype(np.float64)
            except ValueError:
                i = next(i for i, v in enumerate(array.tolist()) if not _is_number(v))
                raise BadDataError(
                    f"{self._where(self._blocks[unit], i)}: {name} {_text(values[i])!r} is "
                    "not a number"
                ) from None
        infinite = np.flatnonzero(~np.isfinite(numbers))
        if len(infinite):
            i = int(infinite[0])
            raise BadDataError(
                f"{self._where(self._blocks[unit], i)}: {name} {_text(values[i])!r} is not finite"
            )
        if self._spec.dense_transform == "log1p":
            numbers = np.log1p(np.maximum(numbers, 0))
        return numbers

    def _ids(
        self, unit: int, name: str, values: tuple[bytes, ...]
    ) -> tuple[np.ndarray, np.ndarray]:
        array = np.array(values, dtype="S")
        present = array != b""
        ids = self._hex(unit, name, values) if self._spec.hex_ids else hash_text(array[present])
        return ids, present.astype(np.int64)

    def _hex(self, unit: int, name: str, values: tuple[bytes, ...]) -> np.ndarray:
        out = []
        for i, v in enumerate(values):
            if not v:
                continue
            try:
                number = int(v, 16)
            except ValueError:
                number = -1
            if number < 0 or len(v) > 15:
                raise BadDataError(
                    f"{self._where(self._blocks[unit], i)}: {name} {_text(v)!r} is not a hex "
                    "id (TableSpec.hex_ids)"
                )
            out.append(number)
        return np.array(out, dtype=np.uint64)

    def _bags(self, values: tuple[bytes, ...]) -> tuple[np.ndarray, np.ndarray]:
        separator, cap = self._spec.separator.encode(), self._spec.max_bag
        bags = [[i for i in v.split(separator) if i][:cap] if v else [] for v in values]
        flat = np.array(list(itertools.chain.from_iterable(bags)), dtype="S")
        lengths = np.array([len(b) for b in bags], dtype=np.int64)
        return (hash_text(flat) if len(flat) else np.zeros(0, np.uint64)), lengths


def _is_number(text: bytes) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
