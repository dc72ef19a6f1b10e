"""MovieLens-100k loading: splits, features, batching and typed data errors."""

from pathlib import Path

import pytest
import torch

from contracts import DatasetRef
from ranking_models.errors import BadDataError
from ranking_models.movielens import DENSE_FEATURES, SPARSE_FEATURES, load_movielens

ROWS = 100_000


@pytest.fixture(scope="module")
def full():
    return load_movielens(DatasetRef(), max_table_rows=ROWS)


def test_split_sizes_follow_fractions(full):
    assert (len(full.train), len(full.validation), len(full.test)) == (80_000, 10_000, 10_000)
    assert full.schema.sparse_features == SPARSE_FEATURES
    assert full.schema.dense_features == DENSE_FEATURES
    assert full.train.ids.shape[:2] == (len(SPARSE_FEATURES), 80_000)  # (F, N, L)
    assert full.train.dense.shape == (80_000, len(DENSE_FEATURES))


def test_splits_are_in_time_order_without_overlap(full):
    for split in (full.train, full.validation, full.test):
        assert torch.all(split.timestamps[1:] >= split.timestamps[:-1])
    assert full.train.timestamps.max() <= full.validation.timestamps.min()
    assert full.validation.timestamps.max() <= full.test.timestamps.min()


def test_label_rate_is_sane(full):
    # rating >= 4 is a bit over half of MovieLens-100k.
    for split in (full.train, full.validation, full.test):
        assert 0.45 < split.labels.mean().item() < 0.65
        assert set(split.labels.unique().tolist()) == {0.0, 1.0}


def test_ids_fit_their_tables(full):
    rows = dict(zip(full.schema.sparse_features, full.schema.table_rows, strict=True))
    assert rows["user_id"] == 943 and rows["item_id"] == 1682
    assert rows["hour"] == 24 and rows["weekday"] == 7
    for f, name in enumerate(SPARSE_FEATURES):
        assert full.train.ids[f].max().item() < rows[name]
        assert full.train.ids[f].min().item() >= 0


def test_max_table_rows_hashes_ids_into_fewer_rows():
    small = load_movielens(DatasetRef(max_rows=2000), max_table_rows=50)
    rows = dict(zip(small.schema.sparse_features, small.schema.table_rows, strict=True))
    assert rows["user_id"] == 50 and rows["weekday"] == 7
    assert small.train.ids[0].max().item() < 50


def test_max_rows_keeps_the_oldest_rows(full):
    small = load_movielens(DatasetRef(max_rows=3000), max_table_rows=ROWS)
    assert len(small.train) + len(small.validation) + len(small.test) == 3000
    assert (len(small.validation), len(small.test)) == (300, 300)
    # The first 2400 rows in time are the full data's first 2400 train rows.
    assert torch.equal(small.train.timestamps, full.train.timestamps[:2400])
    assert torch.equal(small.train.labels, full.train.labels[:2400])


def test_genres_are_multi_hot_bags(full):
    genre = SPARSE_FEATURES.index("genres")
    lengths = full.train.lengths[genre]
    assert lengths.max().item() > 1
    assert (full.train.lengths[SPARSE_FEATURES.index("user_id")] == 1).all()


def test_batch_builds_the_matching_kjt(full):
    rows = torch.tensor([5, 0, 12345])
    batch = full.train.batch(rows)
    assert batch.dense.shape == (3, len(DENSE_FEATURES))
    assert torch.equal(batch.labels, full.train.labels[rows])
    per_feature = batch.sparse.to_dict()
    assert list(per_feature) == list(SPARSE_FEATURES)
    genre = SPARSE_FEATURES.index("genres")
    jt = per_feature["genres"]
    for i, r in enumerate(rows.tolist()):
        n = full.train.lengths[genre, r].item()
        assert jt.to_dense()[i].tolist() == full.train.ids[genre, r, :n].tolist()
    assert per_feature["user_id"].values().tolist() == full.train.ids[0, rows, 0].tolist()


def test_shuffled_batches_cover_every_row_once(full):
    split = load_movielens(DatasetRef(max_rows=1000), max_table_rows=ROWS).train
    seen = torch.cat(
        [b.dense for b in split.batches(64, generator=torch.Generator().manual_seed(0))]
    )
    assert seen.shape == split.dense.shape
    assert not torch.equal(seen, split.dense)  # shuffled
    assert torch.allclose(seen.sum(0), split.dense.sum(0), atol=1e-3)


def test_loading_is_cached(full):
    assert load_movielens(DatasetRef(), max_table_rows=ROWS) is full


# A hand-written five-interaction dataset, to check features and leakage exactly.
def _write(folder: Path, inter: list[str], user: list[str] | None = None, item=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    user = user or [
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
        "1\t24\tM\ttechnician\t85711",
        "2\t53\tF\tother\t94043",
    ]
    item = item or [
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
        "10\tToy Story\t1995\tAnimation Comedy",
        "20\tGoldenEye\tV\tAction",
        "30\tNew\t1998\t",
    ]
    for kind, lines in (("inter", inter), ("user", user), ("item", item)):
        (folder / f"ml-100k.{kind}").write_text("\n".join(lines) + "\n")
    return folder


INTER = [
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "1\t10\t5\t86400",  # 1970-01-02 00:00 UTC, a Friday
    "2\t10\t1\t3600",  # 01:00 on a Thursday: the oldest row, listed second
    "1\t20\t4\t90000",
    "2\t20\t2\t100000",
    "2\t30\t2\t200000",
    "1\t30\t5\t210000",
    "2\t30\t1\t310000",
    "1\t10\t4\t300000",
]


def test_hand_made_dataset_features(tmp_path):
    folder = _write(tmp_path / "ml", INTER)
    ds = load_movielens(
        DatasetRef(path=str(folder), validation_fraction=0.25, test_fraction=0.25),
        max_table_rows=ROWS,
    )
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (4, 2, 2)
    assert ds.train.timestamps.tolist() == [3600, 86400, 90000, 100000]
    assert ds.train.labels.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert ds.test.timestamps.tolist() == [300000, 310000]
    f = {name: i for i, name in enumerate(SPARSE_FEATURES)}
    assert ds.train.ids[f["hour"], :, 0].tolist() == [1, 0, 1, 3]
    assert ds.train.ids[f["weekday"], :, 0].tolist() == [3, 4, 4, 4]  # Thursday, Friday
    # Users 1 and 2 have distinct ids; zip prefixes 857 and 940 too.
    assert ds.train.ids[f["user_id"], :, 0].tolist() == [1, 0, 0, 1]
    assert ds.train.ids[f["zip_prefix"], :, 0].tolist() == [1, 0, 0, 1]
    # Item 20's year "V" is a placeholder: an empty bag, not a token.
    assert ds.train.lengths[f["release_year"]].tolist() == [1, 1, 0, 0]
    assert ds.train.lengths[f["genres"]].tolist() == [2, 2, 1, 1]
    # Item 30 has no genres: empty bags in the validation split.
    assert ds.validation.lengths[f["genres"]].tolist() == [0, 0]
    # Popularity comes from the train split only: item 30 never appears there.
    popularity = DENSE_FEATURES.index("item_popularity")
    assert ds.validation.dense[:, popularity].tolist() == [0.0, 0.0]
    assert ds.train.dense[:, popularity].tolist() == pytest.approx([1.0] * 4)


def test_a_one_class_evaluation_split_is_rejected(tmp_path):
    folder = _write(tmp_path / "ml", INTER)
    with pytest.raises(BadDataError, match="only one class"):
        load_movielens(
            DatasetRef(path=str(folder), validation_fraction=0.15, test_fraction=0.15),
            max_table_rows=ROWS,
        )


def test_missing_folder_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(BadDataError, match=r"DatasetRef\.path") as e:
        load_movielens(DatasetRef(path=str(missing)), max_table_rows=ROWS)
    assert str(missing) in str(e.value)


def test_missing_column_is_a_bad_data_error(tmp_path):
    folder = _write(tmp_path / "ml", ["user_id:token\titem_id:token\ttimestamp:float", "1\t10\t5"])
    with pytest.raises(BadDataError, match=r"lacks columns \['rating'\]"):
        load_movielens(DatasetRef(path=str(folder)), max_table_rows=ROWS)


def test_non_numeric_rating_names_the_line(tmp_path):
    bad = [*INTER[:3], "1\t20\tgood\t90000"]
    folder = _write(tmp_path / "ml", bad)
    with pytest.raises(BadDataError, match="line 4: rating 'good'"):
        load_movielens(DatasetRef(path=str(folder)), max_table_rows=ROWS)


def test_too_few_rows_for_the_split(tmp_path):
    with pytest.raises(BadDataError, match="max_rows"):
        load_movielens(DatasetRef(max_rows=3), max_table_rows=ROWS)


def test_split_sizes_and_rule_are_reported(full):
    assert full.splits() == {"train": 80_000, "validation": 10_000, "test": 10_000}
    assert full.split_rule.startswith("by timestamp")
