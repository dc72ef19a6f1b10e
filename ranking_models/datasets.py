"""One entry point from a ``DatasetRef`` to a split ``CtrDataset``.

Every loader caches per process (a campaign trains many trials on the same data in one
worker): MovieLens its parsed tensors, synthetic data its calibrated generator, Criteo
TSV its byte index. Splits are fixed by the ref alone and reported by
``CtrDataset.splits()`` and ``CtrDataset.split_rule``.
"""

from contracts import DatasetRef
from ranking_models.criteo_tsv import load_criteo_tsv
from ranking_models.data import CtrDataset
from ranking_models.movielens import load_movielens
from ranking_models.synthetic import load_synthetic


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
