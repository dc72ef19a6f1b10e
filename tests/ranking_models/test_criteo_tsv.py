"""Criteo TSV reading: format, transforms, hashing, blocks, order splits and bad lines."""

import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from contracts import DatasetRef
from ranking_models.criteo_tsv import CriteoTsv, criteo_files, load_criteo_tsv
from ranking_models.errors import BadDataError

HEX = ["68fd1e64", "80e26c9b", "fb936136", "7b4723c4", "25c83c98", "7e0ccccf"]


def _line(label: str, dense: list[str], cats: list[str]) -> str:
    return "\t".join([label, *dense, *cats])


def _row(i: int) -> str:
    """Row i: label i % 2, I1 = i, I2 = -i (clipped), I3 missing, C1 = HEX[i % 6], C2 missing."""
    dense = [str(i), str(-i), "", *["1"] * 10]
    cats = [HEX[i % len(HEX)], "", *[HEX[0]] * 24]
    return _line(str(i % 2), dense, cats)


def _write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + end)
    return path


def test_fields_are_parsed_transformed_and_hashed(tmp_path):
    path = _write(tmp_path / "train.txt", [_row(i) for i in range(10)])
    source = CriteoTsv((path,), max_rows=0, max_table_rows=97, block_rows=4)
    assert source.block_starts() == [0, 4, 8, 10]
    rows = [source.block(b) for b in range(3)]
    labels = torch.cat([r.labels for r in rows])
    dense = torch.cat([r.dense for r in rows])
    assert labels.tolist() == [i % 2 for i in range(10)]
    assert dense[:, 0].tolist() == pytest.approx([math.log1p(i) for i in range(10)])
    assert (dense[:, 1] == 0).all() and (dense[:, 2] == 0).all()  # negative clipped; missing
    ids = torch.cat([r.ids for r in rows], dim=1)[..., 0]  # (F, N)
    lengths = torch.cat([r.lengths for r in rows], dim=1)
    assert (lengths[0] == 1).all() and (lengths[1] == 0).all()  # C2 is always missing
    assert ids.max() < 97 and ids.min() >= 0
    # The same value hashes to the same row; C1 cycles through six values.
    assert ids[0, :6].unique().numel() == 6 and torch.equal(ids[0, :4], ids[0, 6:10])
    # The same value in another feature lands elsewhere (the feature is in the hash).
    assert ids[2, 0] != ids[3, 0] or ids[2, 0] != ids[0, 0]
    assert torch.cat([r.timestamps for r in rows]).tolist() == list(range(10))


def test_labels_only_pass_matches_full_parse(tmp_path):
    path = _write(tmp_path / "train.txt", [_row(i) for i in range(7)])
    source = CriteoTsv((path,), max_rows=0, max_table_rows=97, block_rows=3)
    for b in range(3):
        assert torch.equal(source.block_labels(b), source.block(b).labels)


def test_splits_follow_file_order_then_line_order(tmp_path):
    folder = tmp_path / "days"
    for day, lines in ((10, range(20, 30)), (0, range(0, 10)), (2, range(10, 20))):
        _write(folder / f"day_{day}", [_row(i) for i in lines])
    (folder / "notes.md").write_text("not data")
    assert [f.name for f in criteo_files(str(folder))] == ["day_0", "day_2", "day_10"]
    ds = load_criteo_tsv(
        DatasetRef(name="criteo-tsv", path=str(folder), validation_fraction=0.2, test_fraction=0.1),
        max_table_rows=1000,
    )
    assert ds.splits() == {"train": 21, "validation": 6, "test": 3}
    assert "file order" in ds.split_rule and "day_10" in ds.split_rule
    dense = torch.cat([b.dense[:, 0] for b in ds.test.batches(2)])
    assert dense.tolist() == pytest.approx([math.log1p(i) for i in (27, 28, 29)])
    assert ds.validation.labels.tolist() == [i % 2 for i in range(21, 27)]
    assert ds.schema.table_rows == (1000,) * 26 and len(ds.schema.dense_features) == 13


def test_max_rows_keeps_the_first_lines_and_crlf_and_no_final_newline_are_fine(tmp_path):
    path = tmp_path / "train.txt"
    path.write_bytes(("\r\n".join(_row(i) for i in range(30))).encode())
    full = CriteoTsv((path,), max_rows=0, max_table_rows=97, block_rows=8)
    assert full.num_rows == 30 and len(full.block(3)) == 6
    cut = load_criteo_tsv(
        DatasetRef(name="criteo-tsv", path=str(path), max_rows=20), max_table_rows=97
    )
    assert cut.splits() == {"train": 16, "validation": 2, "test": 2}
    assert cut.test.labels.tolist() == [0.0, 1.0]  # lines 19 and 20 (rows 18, 19)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("1\t2\t3", r"line 6: expected 40 tab-separated fields.*got 3"),
        ("", r"line 6: expected 40 tab-separated fields.*got 1"),
        (_line("2", ["1"] * 13, HEX[:1] * 26), r"line 6: label '2' is not 0 or 1"),
        (_line("0", ["x1", *["1"] * 12], HEX[:1] * 26), r"line 6: I1 'x1' is not a number"),
        (_line("0", ["1"] * 13, ["zz", *HEX[:1] * 25]), r"line 6: C1 'zz' is not a hex id"),
    ],
)
def test_a_malformed_line_names_the_file_and_line(tmp_path, bad, message):
    lines = [_row(i) for i in range(9)]
    lines[5] = bad
    path = _write(tmp_path / "day_0", lines)
    source = CriteoTsv((path,), max_rows=0, max_table_rows=97, block_rows=4)
    with pytest.raises(BadDataError, match=message) as e:
        source.block(1)  # lines 5..8
    assert str(path) in str(e.value)
    source.block(0)  # the other blocks are fine


def test_missing_path_and_bad_refs(tmp_path):
    with pytest.raises(BadDataError, match=r"does not exist; set DatasetRef\.path"):
        load_criteo_tsv(DatasetRef(name="criteo-tsv", path=str(tmp_path / "no")), max_table_rows=8)
    with pytest.raises(BadDataError, match="no day_N files"):
        load_criteo_tsv(DatasetRef(name="criteo-tsv", path=str(tmp_path)), max_table_rows=8)
    gz = _write(tmp_path / "day_0.gz", ["x"])
    with pytest.raises(BadDataError, match="compressed"):
        criteo_files(str(gz))
    few = _write(tmp_path / "few.txt", [_row(i) for i in range(4)])
    with pytest.raises(BadDataError, match="cannot be split"):
        load_criteo_tsv(DatasetRef(name="criteo-tsv", path=str(few)), max_table_rows=8)
    with pytest.raises(ValidationError, match="path: criteo-tsv needs path"):
        DatasetRef(name="criteo-tsv")
