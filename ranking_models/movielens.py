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
    joined = _join(raw, order)
    features = _sparse_features(joined)
    ids, lengths, table_rows = _into_tables(features, max_table_rows)
    columns = _Columns(
        ids=ids,
        lengths=lengths,
        dense=_dense_features(joined, n_train),
        labels=(raw.rating[order] >= 4.0).astype(np.float32),  # (N,)
        timestamp=joined.timestamp,
    )
    cut = functools.partial(_split, columns, f"MovieLens in {folder}")
    return CtrDataset(
        schema=FeatureSchema(
            sparse_features=SPARSE_FEATURES,
            table_rows=table_rows,
            dense_features=DENSE_FEATURES,
            id_counts=tuple(features[name][2] for name in SPARSE_FEATURES),
        ),
        train=cut("train", 0, n_train),
        validation=cut("validation", n_train, n_train + n_validation),
        test=cut("test", n_train + n_validation, n),
        split_rule=(
            f"by timestamp (stable on ties): the oldest {n_train} rows train, the next "
            f"{n_validation} validation, the newest {n_test} test"
        ),
    )


@dataclass(frozen=True)
class _Joined:
    """The interactions, in time order, beside their users' and items' attributes."""

    timestamp: np.ndarray  # (N,) ascending
    user_id: np.ndarray  # (N,) index in the vocabulary of every user id seen
    item_id: np.ndarray  # (N,) likewise for items
    num_users: int
    num_items: int
    user_row: np.ndarray  # (N,) the user's row in ``users``, or -1 when not listed
    item_row: np.ndarray  # (N,) likewise in ``items``
    users: dict[str, np.ndarray]  # the user file's columns, sorted by user id
    items: dict[str, np.ndarray]  # the item file's columns, sorted by item id
    year_tokens: np.ndarray  # per row of ``items``: the release year's digits, or ""


def _join(raw: _Raw, order: np.ndarray) -> _Joined:
    """Looks up each interaction's user and item (``order``: the rows kept, by time)."""
    users, items = raw.users, raw.items
    # User and item ids: vocabulary over the attribute files and the interactions, so an
    # interaction with an unlisted user still gets its own row.
    user_vocab = np.unique(np.concatenate([users["user_id"], raw.inter_user]))
    item_vocab = np.unique(np.concatenate([items["item_id"], raw.inter_item]))
    # _vocab_index gives positions in the sorted attribute table; sort the attributes
    # the same way.
    user_sort = np.argsort(users["user_id"], kind="stable")
    item_sort = np.argsort(items["item_id"], kind="stable")
    it = {k: v[item_sort] for k, v in items.items()}
    return _Joined(
        timestamp=raw.timestamp[order],
        user_id=np.searchsorted(user_vocab, raw.inter_user[order]),
        item_id=np.searchsorted(item_vocab, raw.inter_item[order]),
        num_users=len(user_vocab),
        num_items=len(item_vocab),
        user_row=_vocab_index(raw.inter_user[order], np.sort(users["user_id"])),
        item_row=_vocab_index(raw.inter_item[order], np.sort(items["item_id"])),
        users={k: v[user_sort] for k, v in users.items()},
        items=it,
        # The file has placeholders such as "unkonwn" and "V" for unknown years; treat
        # anything but digits as missing.
        year_tokens=np.array([y if y.isdigit() else "" for y in it["release_year"]], dtype=str),
    )


# One feature's (N, L_f) vocabulary ids (-1: missing), (N,) bag lengths and cardinality.
_Feature = tuple[np.ndarray, np.ndarray, int]


def _sparse_features(j: _Joined) -> dict[str, _Feature]:
    """Every sparse feature of every interaction, by name."""
    u = j.users
    age_bucket = np.searchsorted(AGE_BUCKET_EDGES, u["age"], side="right")
    gender, n_gender = _tokens_to_ids(u["gender"])
    occupation, n_occupation = _tokens_to_ids(u["occupation"])
    zip_prefix, n_zip = _tokens_to_ids(np.array([z[:3] for z in u["zip_code"]], dtype=str))
    year, n_year = _tokens_to_ids(j.year_tokens)
    genres, genre_lengths, n_genres = _genre_bags(j.items["class"])

    def single(ids: np.ndarray, cardinality: int) -> _Feature:
        return ids[:, None], (ids >= 0).astype(np.int64), cardinality

    return {
        "user_id": single(j.user_id, j.num_users),
        "item_id": single(j.item_id, j.num_items),
        "age_bucket": single(_lookup(j.user_row, age_bucket), len(AGE_BUCKET_EDGES) + 1),
        "gender": single(_lookup(j.user_row, gender), n_gender),
        "occupation": single(_lookup(j.user_row, occupation), n_occupation),
        "zip_prefix": single(_lookup(j.user_row, zip_prefix), n_zip),
        "genres": (
            np.where(j.item_row[:, None] >= 0, genres[j.item_row.clip(min=0)], 0),
            _lookup(j.item_row, genre_lengths, missing=0),
            n_genres,
        ),
        "release_year": single(_lookup(j.item_row, year), n_year),
        "hour": single((j.timestamp // 3600) % 24, 24),
        # Day 0 (1970-01-01) was a Thursday; +3 makes Monday 0.
        "weekday": single((j.timestamp // 86400 + 3) % 7, 7),
    }


def _into_tables(
    per_feature: dict[str, _Feature], max_table_rows: int
) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Padded (F, N, L) table rows, (F, N) lengths, and each feature's table size."""
    n = len(per_feature[SPARSE_FEATURES[0]][1])
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
    return ids, lengths, tuple(table_rows)


def _dense_features(j: _Joined, n_train: int) -> np.ndarray:
    """(N, num_dense) float32 dense features, scaled with train-split statistics."""
    # NaN marks a missing value (unknown user or item, no release year); _standardise
    # fills it with the train mean.
    age = _lookup(j.user_row, j.users["age"].astype(np.float64), missing=np.nan)  # (N,)
    year_value = np.array([float(y) if y else np.nan for y in j.year_tokens])
    release = _lookup(j.item_row, year_value, missing=np.nan)  # (N,)
    return np.stack(
        [
            _standardise(age, age[:n_train]),
            _standardise(release, release[:n_train]),
            _log_count(j.item_id, n_train, j.num_items),
            _log_count(j.user_id, n_train, j.num_users),
        ],
        axis=1,
    ).astype(np.float32)  # (N, num_dense)


@dataclass(frozen=True)
class _Columns:
    """Every interaction's tensors-to-be, in time order."""

    ids: np.ndarray  # (F, N, L)
    lengths: np.ndarray  # (F, N)
    dense: np.ndarray  # (N, num_dense)
    labels: np.ndarray  # (N,)
    timestamp: np.ndarray  # (N,)


def _split(columns: _Columns, data: str, name: str, start: int, stop: int) -> CtrSplit:
    """Rows ``start:stop`` as the split ``name``; validation and test need both classes."""
    rows = slice(start, stop)
    part = CtrSplit(
        name=name,
        keys=SPARSE_FEATURES,
        ids=torch.from_numpy(np.ascontiguousarray(columns.ids[:, rows])),
        lengths=torch.from_numpy(np.ascontiguousarray(columns.lengths[:, rows])),
        dense=torch.from_numpy(columns.dense[rows].copy()),
        labels=torch.from_numpy(columns.labels[rows].copy()),
        timestamps=torch.from_numpy(columns.timestamp[rows].copy()),
    )
    rate = part.labels.mean().item()
    if name != "train" and rate in (0.0, 1.0):
        raise BadDataError(
            f"{data}: the {name} split ({len(part)} rows) has only one class, so NE and AUC "
            f"are undefined; raise DatasetRef.max_rows or the {name} fraction"
        )
    return part
