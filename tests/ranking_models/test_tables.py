"""Your own table: Parquet (written by pyarrow) and CSV/TSV by declared roles, hashing,
row-order and column splits, row caps over row groups, and one-line errors that name the
file, the column and the row."""

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from pydantic import ValidationError

from contracts import DatasetRef, ModelSpec, TableColumns, TableSpec
from ranking_models.datasets import check_data, load_dataset
from ranking_models.errors import BadDataError
from ranking_models.smoke import inspect_data
from ranking_models.trainer import train

COLUMNS = TableColumns(label="click", dense=("price",), sparse=("user", "ad"), multi=("recent",))


def _table(rows: int = 40, *, days: int = 4) -> pa.Table:
    """Row i: day i * days // rows + 1, click i % 2, price i (row 3 null), user "u{i % 5}",
    ad i % 7, recent [i, i + 1] (row 1 null, row 2 empty)."""
    recent: list[list[int] | None] = [[i, i + 1] for i in range(rows)]
    recent[1], recent[2] = None, []
    price: list[float | None] = [float(i) for i in range(rows)]
    price[3] = None
    return pa.table(
        {
            "day": pa.array([i * days // rows + 1 for i in range(rows)], pa.int32()),
            "click": pa.array([i % 2 for i in range(rows)], pa.int8()),
            "price": pa.array(price, pa.float64()),
            "user": pa.array([f"u{i % 5}" for i in range(rows)]).dictionary_encode(),
            "ad": pa.array([i % 7 for i in range(rows)], pa.int64()),
            "recent": pa.array(recent, pa.list_(pa.int64())),
            "unused": pa.array(["x"] * rows),
        }
    )


def _parquet(path: Path, table: pa.Table | None = None, row_group: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_table() if table is None else table, path, row_group_size=row_group)
    return path


def _ref(path: Path, **table: object) -> DatasetRef:
    spec = {"format": "parquet", "columns": COLUMNS} | table
    return DatasetRef(
        name="table",
        path=str(path),
        table=TableSpec.model_validate(spec),
        validation_fraction=0.25,
        test_fraction=0.25,
    )


def _rows(split) -> dict[str, torch.Tensor]:
    batch = split.batch(slice(0, None))
    return {"labels": batch.labels, "dense": batch.dense, "kjt": batch.sparse}


def test_parquet_roles_are_read_hashed_and_split_by_row_order(tmp_path):
    data = load_dataset(_ref(_parquet(tmp_path / "t.parquet")), max_table_rows=1000)
    assert data.splits() == {"train": 20, "validation": 10, "test": 10}
    assert data.schema.sparse_features == ("user", "ad", "recent")
    assert data.schema.dense_features == ("price",)
    assert "row order" in data.split_rule
    train = _rows(data.train)
    assert train["labels"].tolist() == [i % 2 for i in range(20)]
    assert train["dense"][:, 0].tolist() == [0, 1, 2, 0, *range(4, 20)]  # null -> 0
    kjt = train["kjt"].to_dict()
    assert kjt["recent"].lengths().tolist()[:4] == [2, 0, 0, 2]  # null and empty bags
    users = kjt["user"].values()
    assert users.max() < 1000 and torch.equal(users[:5], users[5:10])  # same id, same row
    assert kjt["ad"].values()[0] != kjt["user"].values()[0]
    # The test rows are the last ten, in order.
    assert _rows(data.test)["dense"][:, 0].tolist() == [float(i) for i in range(30, 40)]


def test_hashing_is_stable_across_loads_and_formats_of_the_same_text(tmp_path):
    first = load_dataset(_ref(_parquet(tmp_path / "a.parquet")), max_table_rows=97)
    table = _table().set_column(3, "user", pa.array([f"u{i % 5}" for i in range(40)]))
    second = load_dataset(_ref(_parquet(tmp_path / "b.parquet", table)), max_table_rows=97)
    a = _rows(first.train)["kjt"].to_dict()["user"].values()
    b = _rows(second.train)["kjt"].to_dict()["user"].values()
    assert torch.equal(a, b)  # dictionary-encoded or plain text: the same rows


def test_a_day_column_splits_whole_days_with_test_latest(tmp_path):
    path = _parquet(tmp_path / "t.parquet", _table(80, days=8))
    data = load_dataset(_ref(path, split_column="day"), max_table_rows=100)
    # A quarter of the rows each for validation and test: whole days, test the latest.
    assert data.splits() == {"train": 40, "validation": 20, "test": 20}
    assert "by 'day'" in data.split_rule and "test [7 .. 8]" in data.split_rule
    assert data.test.batch(slice(0, None)).dense[:, 0].min() == 60  # days 7-8: rows 60..79
    named = _ref(path, split_column="day", validation_values=("2",), test_values=("7", "8"))
    picked = load_dataset(named, max_table_rows=100)
    assert picked.splits() == {"train": 50, "validation": 10, "test": 20}
    check_data(picked)
    with pytest.raises(BadDataError, match=r"no rows with value\(s\) \['9'\]"):
        load_dataset(
            _ref(path, split_column="day", validation_values=("2",), test_values=("9",)),
            max_table_rows=100,
        )


def test_max_rows_caps_across_row_groups_and_text_multi_values_split(tmp_path):
    table = _table(40).set_column(
        5, "recent", pa.array(["1|2|3", "", None, "4||5"] * 10, pa.string())
    )
    path = _parquet(tmp_path / "t.parquet", table, row_group=7)
    ref = _ref(path, max_bag=2).model_copy(update={"max_rows": 20})
    data = load_dataset(ref, max_table_rows=50)
    assert data.splits() == {"train": 10, "validation": 5, "test": 5}
    lengths = _rows(data.train)["kjt"].to_dict()["recent"].lengths().tolist()
    assert lengths[:4] == [2, 0, 0, 2]  # capped at max_bag; empty ids dropped


def test_a_folder_of_parquet_files_reads_in_name_order(tmp_path):
    whole = _table(40)
    _parquet(tmp_path / "d" / "part-1.parquet", whole.slice(20, 20))
    _parquet(tmp_path / "d" / "part-0.parquet", whole.slice(0, 20))
    data = load_dataset(_ref(tmp_path / "d"), max_table_rows=100)
    assert _rows(data.test)["dense"][:, 0].tolist() == [float(i) for i in range(30, 40)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop_columns(["ad"]), r"no column 'ad' \(TableSpec.columns.sparse\)"),
        (
            lambda t: t.set_column(2, "price", pa.array(["cheap"] * 40)),
            r"column 'price' \(TableSpec.columns.dense\) is string, a dense column must be",
        ),
        (
            lambda t: t.set_column(1, "click", pa.array([0] * 25 + [2] * 15, pa.int8())),
            r"row 26 \(row group 2\), column 'click': label 2 is not 0 or 1",
        ),
        (
            lambda t: t.set_column(
                1, "click", pa.array([i % 2 if i != 33 else None for i in range(40)], pa.int8())
            ),
            r"row 34 \(row group 3\), column 'click': the label is missing",
        ),
        (
            lambda t: t.set_column(2, "price", pa.array([1.0] * 12 + [math.inf] * 28)),
            r"row 13 \(row group 1\), column 'price': inf is not finite",
        ),
    ],
)
def test_malformed_parquet_names_the_file_column_and_row(tmp_path, change, message):
    path = _parquet(tmp_path / "bad.parquet", change(_table()))
    with pytest.raises(BadDataError, match=message) as err:
        inspect_data(_ref(path), ModelSpec(max_table_rows=64))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_empty_and_unreadable_parquet(tmp_path):
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    with pytest.raises(BadDataError, match=r"empty.parquet is empty \(0 bytes\)"):
        load_dataset(_ref(empty), max_table_rows=64)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(_parquet(tmp_path / "ok.parquet").read_bytes()[:-100])
    with pytest.raises(BadDataError, match=r"cannot be read.*written completely"):
        load_dataset(_ref(broken), max_table_rows=64)
    no_rows = _parquet(tmp_path / "none.parquet", _table().slice(0, 0))
    with pytest.raises(BadDataError, match="the table has no rows"):
        load_dataset(_ref(no_rows), max_table_rows=64)
    with pytest.raises(BadDataError, match="does not exist"):
        load_dataset(_ref(tmp_path / "nowhere.parquet"), max_table_rows=64)


CSV_COLUMNS = "day,click,price,user,ad,recent"


def _csv(path: Path, lines: list[str], header: str = CSV_COLUMNS) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def _csv_row(i: int) -> str:
    return f"{i // 10 + 1},{i % 2},{i if i != 3 else ''},u{i % 5},{i % 7},{i}|{i + 1}"


def test_csv_with_a_header_reads_like_parquet(tmp_path):
    path = _csv(tmp_path / "t.csv", [_csv_row(i) for i in range(40)])
    ref = _ref(path, format="csv")
    data = load_dataset(ref, max_table_rows=1000)
    train = _rows(data.train)
    assert train["dense"][:, 0].tolist() == [0, 1, 2, 0, *range(4, 20)]
    assert train["kjt"].to_dict()["recent"].lengths().tolist()[:3] == [2, 2, 2]
    by_day = load_dataset(_ref(path, format="csv", split_column="day"), max_table_rows=100)
    assert by_day.splits() == {"train": 20, "validation": 10, "test": 10}
    summary = inspect_data(ref, ModelSpec(max_table_rows=64))
    assert summary.splits == {"train": 20, "validation": 10, "test": 10}


def test_headerless_tsv_with_names(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("".join(_csv_row(i).replace(",", "\t") + "\n" for i in range(20)))
    ref = _ref(path, format="tsv", header=False, names=tuple(CSV_COLUMNS.split(",")))
    assert load_dataset(ref, max_table_rows=64).splits() == {
        "train": 10,
        "validation": 5,
        "test": 5,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("1,0,x,u1,2,3", r"t.csv line 7: price 'x' is not a number"),
        ("1,7,1,u1,2,3", r"t.csv line 7: label '7' is not 0 or 1"),
        ("1,0,1,u1", r"t.csv line 7: expected 6 ','-separated fields .*got 4"),
    ],
)
def test_malformed_csv_names_the_file_line_and_column(tmp_path, line, message):
    lines = [_csv_row(i) for i in range(20)]
    lines[5] = line
    path = _csv(tmp_path / "t.csv", lines)
    with pytest.raises(BadDataError, match=message):
        inspect_data(_ref(path, format="csv"), ModelSpec(max_table_rows=64))


def test_csv_header_problems(tmp_path):
    path = _csv(tmp_path / "t.csv", [_csv_row(i) for i in range(20)], header="day,click,cost")
    with pytest.raises(BadDataError, match=r"no column 'price' \(columns.dense\); the header"):
        load_dataset(_ref(path, format="csv"), max_table_rows=64)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(BadDataError, match=r"e\.csv is empty"):
        load_dataset(_ref(empty, format="csv"), max_table_rows=64)


def test_table_refs_are_checked_at_the_boundary(tmp_path):
    with pytest.raises(ValidationError, match="path/table: name='table' needs path"):
        DatasetRef(name="table", path="x.parquet")
    with pytest.raises(ValidationError, match="in more than one role"):
        TableColumns(label="click", dense=("ad",), sparse=("ad",))
    with pytest.raises(ValidationError, match="split_column: 'ad' is also a feature"):
        TableSpec(columns=COLUMNS, split_column="ad")
    with pytest.raises(ValidationError, match="names: a text file without a header"):
        TableSpec(format="csv", columns=COLUMNS, header=False)
    with pytest.raises(ValidationError, match="table: only used with name='table'"):
        DatasetRef(table=TableSpec(columns=COLUMNS))


def test_a_model_trains_on_a_parquet_table_split_by_day(tmp_path):
    rng = np.random.default_rng(0)
    rows = 2000
    ad = rng.integers(0, 30, rows)
    click = (rng.random(rows) < np.where(ad < 10, 0.6, 0.1)).astype(np.int8)
    table = pa.table(
        {
            "day": pa.array(np.arange(rows) * 5 // rows, pa.int32()),
            "click": click,
            "price": rng.random(rows),
            "user": pa.array([f"u{u}" for u in rng.integers(0, 50, rows)]),
            "ad": ad,
            "recent": pa.array([[int(a)] for a in ad], pa.list_(pa.int64())),
        }
    )
    path = _parquet(tmp_path / "clicks.parquet", table, row_group=300)
    spec = ModelSpec(embedding_dim=8, batch_size=128, epochs=2, max_table_rows=256)
    outcome = train(spec, _ref(path, split_column="day"), device="cpu")
    assert outcome.validation.auc > 0.7  # the ad id carries the signal; the model finds it
    assert outcome.steps == 2 * math.ceil(1200 / 128)
