"""One entry point from a ``DatasetRef`` to a split ``CtrDataset``, and its checks.

Every loader caches per process (a campaign trains many trials on the same data in one
worker): MovieLens its parsed tensors, synthetic data its calibrated generator, Criteo
TSV its byte index, your own table (``name="table"``) the loaded dataset, keyed by the
files' sizes and times so a rewritten file is read again. Splits are fixed by the ref
alone and reported by ``CtrDataset.splits()`` and ``CtrDataset.split_rule``.
``check_data`` rejects what no model can learn from or be scored on, before a model is
built.
"""

import functools
from pathlib import Path

import torch

from contracts import DatasetRef
from ranking_models.criteo_tsv import load_criteo_tsv
from ranking_models.data import CtrDataset, StreamingSplit
from ranking_models.errors import BadDataError
from ranking_models.movielens import load_movielens
from ranking_models.synthetic import load_synthetic
from ranking_models.tables import load_table


def load_dataset(ref: DatasetRef, *, max_table_rows: int) -> CtrDataset:
    """Loads the dataset ``ref.name`` names.

    Args:
        ref: Which data and how to cut it.
        max_table_rows: Ids are hashed into at most this many rows per table.

    Returns:
        The split dataset: train (oldest), validation (selection), test (final report
        only). In-memory splits for MovieLens, streaming ones for the Criteo-like data.

    Raises:
        BadDataError: The data is missing or malformed, or a split would be empty.
    """
    match ref.name:
        case "movielens-100k":
            return load_movielens(ref, max_table_rows=max_table_rows)
        case "synthetic-criteo":
            return load_synthetic(ref, max_table_rows=max_table_rows)
        case "criteo-tsv":
            return load_criteo_tsv(ref, max_table_rows=max_table_rows)
        case "table":
            return _load_own_table(ref.model_dump_json(), max_table_rows, _stamps(ref.path))


def _stamps(path: str) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of the file or of a folder's files: part of the cache key."""
    root = Path(path)
    files = sorted(root.iterdir()) if root.is_dir() else [root] if root.exists() else []
    return tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file())


@functools.lru_cache(maxsize=8)
def _load_own_table(
    ref_json: str, max_table_rows: int, _stamps: tuple[tuple[str, int, int], ...]
) -> CtrDataset:
    # Imported here: pyarrow loads only for the data that needs it.
    from ranking_models.table_parquet import ParquetReader
    from ranking_models.table_text import TextReader
    from ranking_models.tables import table_files

    ref = DatasetRef.model_validate_json(ref_json)
    assert ref.table is not None  # DatasetRef's validator: name "table" has a table
    spec = ref.table
    if spec.format == "parquet":
        reader: ParquetReader | TextReader = ParquetReader(ref.path, spec, ref.max_rows)
    else:
        suffixes = (".csv", ".txt") if spec.format == "csv" else (".tsv", ".txt")
        files = table_files(ref.path, suffixes, spec.format.upper())
        reader = TextReader(files, spec, ref.max_rows)
    return load_table(ref, reader, spec, max_table_rows=max_table_rows)


def check_data(data: CtrDataset) -> None:
    """Rejects data no model can learn from or be scored on.

    Dense features are checked batch by batch (see ``train_step.batch_loss``): a streamed
    split holds no dense matrix to check up front. So are a streamed training split's
    labels: reading them here would be a whole extra pass over the largest split before
    training starts.

    Args:
        data: A dataset from ``load_dataset``.

    Raises:
        BadDataError: A split is empty, has labels other than 0/1, or (validation, test)
            only one class.
    """
    for split in (data.train, data.validation, data.test):
        if len(split) == 0:
            raise BadDataError(f"the {split.name} split is empty; check the DatasetRef fractions")
        if split.name == "train" and isinstance(split, StreamingSplit):
            continue
        labels = split.labels
        if not torch.all((labels == 0) | (labels == 1)):
            raise BadDataError(f"the {split.name} split has labels other than 0 and 1")
        if split.name != "train" and labels.min() == labels.max():
            raise BadDataError(
                f"the {split.name} split has one class only, so NE and AUC are undefined; "
                "use more rows"
            )
