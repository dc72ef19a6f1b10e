"""MovieLens-100k as a click-through-rate task.

Label: rating >= 4 (a "click"). Rows are sorted by time and split by time (train, then
validation, then test), so a model is always scored on interactions newer than any it
trained on, as in production ranking.

Sparse features (F = 10): user_id, item_id, age_bucket, gender, occupation, zip_prefix
(first 3 characters), genres (a multi-hot bag), release_year, hour and weekday (UTC, from
the timestamp). Each is mapped to a vocabulary index, then hashed into
``min(cardinality, max_table_rows)`` rows.

Dense features: age and release year standardised with train-split statistics, and the
log-scaled number of train interactions of the item (popularity) and of the user
(activity). Statistics come from the train split only, so nothing leaks from the
validation or test periods.

The raw files are read without importing recbole (its import pulls in a heavy stack);
only its wheel's data folder is used.
"""

import csv
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contracts import DatasetRef
from ranking_models.data import CtrDataset, CtrSplit, FeatureSchema, split_sizes
from ranking_models.errors import BadDataError

SPARSE_FEATURES = (
    "user_id",
    "item_id",
    "age_bucket",
    "gender",
    "occupation",
    "zip_prefix",
    "genres",
    "release_year",
    "hour",
    "weekday",
)
DENSE_FEATURES = ("age", "release_year", "item_popularity", "user_activity")

# MovieLens-1M's age groups: under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+.
AGE_BUCKET_EDGES = np.array([18, 25, 35, 45, 50, 56])

_FILES = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "user": ("user_id", "age", "gender", "occupation", "zip_code"),
    "item": ("item_id", "release_year", "class"),
}


def default_folder() -> Path:
    """The ml-100k copy shipped in the ``recbole`` wheel (found without importing it).

    Raises:
        BadDataError: recbole is not installed.
    """
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise BadDataError(
            "MovieLens-100k: DatasetRef.path is empty and the recbole package, whose wheel "
            "ships the data, is not installed; pip install recbole or set DatasetRef.path "
            "to a folder holding ml-100k.inter, ml-100k.user and ml-100k.item"
        )
    return Path(spec.submodule_search_locations[0]) / "dataset_example" / "ml-100k"


def load_movielens(dataset: DatasetRef, *, max_table_rows: int) -> CtrDataset:
    """Loads, featurises and splits MovieLens-100k (cached per process).

    Args:
        dataset: Which folder, how many rows and how to split.
        max_table_rows: Ids are hashed into at most this many rows per table.

    Returns:
        The dataset; its tensors are shared with later calls, so do not mutate them.

    Raises:
        BadDataError: A file is missing or malformed, or a split is empty or has one class.
    """
    folder = Path(dataset.path) if dataset.path else default_folder()
    return _build(
        str(folder.resolve()),
        dataset.max_rows,
        dataset.validation_fraction,
        dataset.test_fraction,
        max_table_rows,
    )


@dataclass(frozen=True)
class _Raw:
    """The three files as column arrays of strings (numbers already parsed)."""

    inter_user: np.ndarray  # (N,) str
    inter_item: np.ndarray  # (N,) str
    rating: np.ndarray  # (N,) float64
    timestamp: np.ndarray  # (N,) int64
    users: dict[str, np.ndarray]
    items: dict[str, np.ndarray]


def _read_table(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Reads a RecBole atomic file: tab-separated, header fields like ``user_id:token``."""
    fix = (
        "set DatasetRef.path to a folder holding ml-100k.inter, ml-100k.user and "
        "ml-100k.item in RecBole's atomic format, or leave it empty for the recbole copy"
    )
    if not path.is_file():
        raise BadDataError(f"MovieLens file {path} does not exist; {fix}")
    try:
        with path.open(encoding="utf-8", errors="replace", newline="") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError as e:
        raise BadDataError(f"cannot read MovieLens file {path}: {e}; {fix}") from e
    if not rows:
        raise BadDataError(f"MovieLens file {path} is empty; {fix}")
    header = [h.split(":", 1)[0] for h in rows[0]]
    missing = [c for c in required if c not in header]
    if missing:
        raise BadDataError(
            f"MovieLens file {path} lacks columns {missing} (header: {rows[0]}); {fix}"
        )
    body = [r for r in rows[1:] if r]
    for line, r in enumerate(body, start=2):
        if len(r) != len(header):
            raise BadDataError(
                f"MovieLens file {path} line {line}: expected {len(header)} tab-separated "
                f"fields, got {len(r)}; {fix}"
            )
    if not body:
        raise BadDataError(f"MovieLens file {path} has a header but no rows; {fix}")
    columns = list(zip(*body, strict=True))
    return {c: np.array(columns[header.index(c)], dtype=str) for c in required}


def _numbers(path: Path, name: str, values: np.ndarray, dtype: type) -> np.ndarray:
    try:
        return values.astype(np.float64).astype(dtype)
    except ValueError:
        line = next(i for i, v in enumerate(values, start=2) if not _is_number(v))
        raise BadDataError(
            f"MovieLens file {path} line {line}: {name} {str(values[line - 2])!r} is not a number"
        ) from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _parse(folder: str) -> _Raw:
    # Cached because a campaign trains many trials on the same files in one worker.
    root = Path(folder)
    if not root.is_dir():
        raise BadDataError(
            f"MovieLens folder {root} does not exist; set DatasetRef.path to a folder "
            "holding ml-100k.inter, ml-100k.user and ml-100k.item, or leave it empty to "
            "use the copy in the recbole wheel"
        )
    paths = {kind: root / f"ml-100k.{kind}" for kind in _FILES}
    tables = {kind: _read_table(paths[kind], cols) for kind, cols in _FILES.items()}
    inter = tables["inter"]
    return _Raw(
        inter_user=inter["user_id"],
        inter_item=inter["item_id"],
        rating=_numbers(paths["inter"], "rating", inter["rating"], np.float64),
        timestamp=_numbers(paths["inter"], "timestamp", inter["timestamp"], np.int64),
        users={
            **tables["user"],
            "age": _numbers(paths["user"], "age", tables["user"]["age"], np.int64),
        },
        items=tables["item"],
    )


def _vocab_index(tokens: np.ndarray, vocab: np.ndarray) -> np.ndarray:
    """Position of each token in the sorted ``vocab``, or -1 when absent."""
    pos = np.searchsorted(vocab, tokens).clip(max=len(vocab) - 1)
    return np.where(vocab[pos] == tokens, pos, -1)


def _lookup(table_index: np.ndarray, values: np.ndarray, missing: float = -1) -> np.ndarray:
    """``values[table_index]`` with ``missing`` where the index is -1 (unknown user/item)."""
    return np.where(table_index >= 0, values[table_index.clip(min=0)], missing)


def _tokens_to_ids(tokens: np.ndarray) -> tuple[np.ndarray, int]:
    """Vocabulary ids (sorted unique tokens; empty token -> -1) and the cardinality."""
    present = tokens != ""
    vocab = np.unique(tokens[present])
    ids = np.full(tokens.shape, -1, dtype=np.int64)
    ids[present] = np.searchsorted(vocab, tokens[present])
    return ids, max(len(vocab), 1)


def _genre_bags(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Per item: padded genre ids (items, L), bag lengths (items,) and the genre count."""
    bags = [c.split() for c in classes]
    vocab = sorted({g for bag in bags for g in bag})
    index = {g: i for i, g in enumerate(vocab)}
    width = max((len(b) for b in bags), default=1) or 1
    padded = np.zeros((len(bags), width), dtype=np.int64)
    lengths = np.zeros(len(bags), dtype=np.int64)
    for i, bag in enumerate(bags):
        ids = sorted({index[g] for g in bag})  # a genre listed twice still counts once
        padded[i, : len(ids)] = ids
        lengths[i] = len(ids)
    return padded, lengths, max(len(vocab), 1)


def _standardise(values: np.ndarray, train: np.ndarray) -> np.ndarray:
    """(x - mean) / std with train-only statistics; NaN (missing) becomes 0, the mean."""
    known = train[~np.isnan(train)]
    mean = known.mean() if known.size else 0.0
    std = known.std() if known.size else 1.0
    out = (values - mean) / (std if std > 0 else 1.0)
    return np.nan_to_num(out, nan=0.0)


def _log_count(index: np.ndarray, train_rows: int, size: int) -> np.ndarray:
    """log1p of each row's entity count in the train split, scaled into [0, 1]."""
    counts = np.bincount(index[:train_rows].clip(min=0), minlength=size).astype(np.float64)
    scaled = np.log1p(counts) / max(np.log1p(counts.max()), 1.0)
    return _lookup(index, scaled, missing=0)


@functools.lru_cache(maxsize=8)
def _build(
    folder: str,
    max_rows: int,
    validation_fraction: float,
    test_fraction: float,
    max_table_rows: int,
) -> CtrDataset:
    raw = _parse(folder)
    # Stable sort: interactions with equal timestamps keep file order, so the cut is
    # reproducible.
    order = np.argsort(raw.timestamp, kind="stable")
    if max_rows > 0:
        order = order[:max_rows]
    n = len(order)
    n_train, n_validation, n_test = split_sizes(
        n,
        validation_fraction,
        test_fraction,
        data=f"MovieLens in {folder}",
        fix="raise DatasetRef.max_rows or adjust validation_fraction/test_fraction",
    )

    timestamp = raw.timestamp[order]  # (N,) ascending
    labels = (raw.rating[order] >= 4.0).astype(np.float32)  # (N,)

    # User and item ids: vocabulary over the attribute files and the interactions, so an
    # interaction with an unlisted user still gets its own row.
    users, items = raw.users, raw.items
    user_vocab = np.unique(np.concatenate([users["user_id"], raw.inter_user]))
    item_vocab = np.unique(np.concatenate([items["item_id"], raw.inter_item]))
    user_id = np.searchsorted(user_vocab, raw.inter_user[order])  # (N,)
    item_id = np.searchsorted(item_vocab, raw.inter_item[order])  # (N,)
    user_row = _vocab_index(raw.inter_user[order], np.sort(users["user_id"]))  # (N,) or -1
    item_row = _vocab_index(raw.inter_item[order], np.sort(items["item_id"]))  # (N,) or -1
    # _vocab_index gives positions in the sorted attribute table; sort the attributes
    # the same way.
    user_sort = np.argsort(users["user_id"], kind="stable")
    item_sort = np.argsort(items["item_id"], kind="stable")
    u = {k: v[user_sort] for k, v in users.items()}
    it = {k: v[item_sort] for k, v in items.items()}

    age_bucket = np.searchsorted(AGE_BUCKET_EDGES, u["age"], side="right")
    gender, n_gender = _tokens_to_ids(u["gender"])
    occupation, n_occupation = _tokens_to_ids(u["occupation"])
    zip_prefix, n_zip = _tokens_to_ids(np.array([z[:3] for z in u["zip_code"]], dtype=str))
    # The file has placeholders such as "unkonwn" and "V" for unknown years; treat
    # anything but digits as missing.
    year_tokens = np.array([y if y.isdigit() else "" for y in it["release_year"]], dtype=str)
    year, n_year = _tokens_to_ids(year_tokens)
    genres, genre_lengths, n_genres = _genre_bags(it["class"])

    # One (N, L_f) id array and (N,) lengths per feature, with its cardinality.
    def single(ids: np.ndarray, cardinality: int) -> tuple[np.ndarray, np.ndarray, int]:
        return ids[:, None], (ids >= 0).astype(np.int64), cardinality

    per_feature = {
        "user_id": single(user_id, len(user_vocab)),
        "item_id": single(item_id, len(item_vocab)),
        "age_bucket": single(_lookup(user_row, age_bucket), len(AGE_BUCKET_EDGES) + 1),
        "gender": single(_lookup(user_row, gender), n_gender),
        "occupation": single(_lookup(user_row, occupation), n_occupation),
        "zip_prefix": single(_lookup(user_row, zip_prefix), n_zip),
        "genres": (
            np.where(item_row[:, None] >= 0, genres[item_row.clip(min=0)], 0),
            _lookup(item_row, genre_lengths, missing=0),
            n_genres,
        ),
        "release_year": single(_lookup(item_row, year), n_year),
        "hour": single((timestamp // 3600) % 24, 24),
        # Day 0 (1970-01-01) was a Thursday; +3 makes Monday 0.
        "weekday": single((timestamp // 86400 + 3) % 7, 7),
    }
    width = max(ids.shape[1] for ids, _, _ in per_feature.values())
    ids = np.zeros((len(SPARSE_FEATURES), n, width), dtype=np.int64)  # (F, N, L)
    lengths = np.zeros((len(SPARSE_FEATURES), n), dtype=np.int64)  # (F, N)
    table_rows = []
    for f, name in enumerate(SPARSE_FEATURES):
        feature_ids, feature_lengths, cardinality = per_feature[name]
        rows = min(cardinality, max_table_rows)
        # The vocabulary index modulo the table size: collisions only once a feature
        # has more values than max_table_rows, spread evenly over the rows.
        ids[f, :, : feature_ids.shape[1]] = np.where(feature_ids >= 0, feature_ids % rows, 0)
        lengths[f] = feature_lengths
        table_rows.append(rows)

    # NaN marks a missing value (unknown user or item, no release year); _standardise
    # fills it with the train mean.
    age = _lookup(user_row, u["age"].astype(np.float64), missing=np.nan)  # (N,)
    year_value = np.array([float(y) if y else np.nan for y in year_tokens])
    release = _lookup(item_row, year_value, missing=np.nan)  # (N,)
    dense = np.stack(
        [
            _standardise(age, age[:n_train]),
            _standardise(release, release[:n_train]),
            _log_count(item_id, n_train, len(item_vocab)),
            _log_count(user_id, n_train, len(user_vocab)),
        ],
        axis=1,
    ).astype(np.float32)  # (N, num_dense)

    def split(name: str, start: int, stop: int) -> CtrSplit:
        rows = slice(start, stop)
        part = CtrSplit(
            name=name,
            keys=SPARSE_FEATURES,
            ids=torch.from_numpy(np.ascontiguousarray(ids[:, rows])),
            lengths=torch.from_numpy(np.ascontiguousarray(lengths[:, rows])),
            dense=torch.from_numpy(dense[rows].copy()),
            labels=torch.from_numpy(labels[rows].copy()),
            timestamps=torch.from_numpy(timestamp[rows].copy()),
        )
        rate = part.labels.mean().item()
        if name != "train" and rate in (0.0, 1.0):
            raise BadDataError(
                f"MovieLens in {folder}: the {name} split ({len(part)} rows) has only one "
                "class, so NE and AUC are undefined; raise DatasetRef.max_rows or the "
                f"{name} fraction"
            )
        return part

    return CtrDataset(
        schema=FeatureSchema(
            sparse_features=SPARSE_FEATURES,
            table_rows=tuple(table_rows),
            dense_features=DENSE_FEATURES,
        ),
        train=split("train", 0, n_train),
        validation=split("validation", n_train, n_train + n_validation),
        test=split("test", n_train + n_validation, n),
        split_rule=(
            f"by timestamp (stable on ties): the oldest {n_train} rows train, the next "
            f"{n_validation} validation, the newest {n_test} test"
        ),
    )
