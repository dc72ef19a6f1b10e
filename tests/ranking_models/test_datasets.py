"""DatasetRef validation and the one loader that dispatches on its name."""

import pytest
from pydantic import ValidationError

from contracts import DatasetRef
from contracts.dataset import CRITEO_KAGGLE_CARDINALITIES, SyntheticSpec
from ranking_models import trainer
from ranking_models.data import CtrSplit, StreamingSplit
from ranking_models.datasets import load_dataset
from tests.ranking_models.test_criteo_tsv import _row, _write

SYNTHETIC = DatasetRef(name="synthetic-criteo", synthetic=SyntheticSpec(rows=10_000))


def test_existing_call_sites_keep_their_defaults():
    ref = DatasetRef()
    assert (ref.name, ref.path, ref.max_rows) == ("movielens-100k", "", 0)
    assert (ref.validation_fraction, ref.test_fraction) == (0.1, 0.1)
    assert ref.synthetic == SyntheticSpec()
    spec = SyntheticSpec()
    assert spec.num_dense == 13 and spec.cardinalities == CRITEO_KAGGLE_CARDINALITIES
    assert len(spec.cardinalities) == 26


def test_refs_round_trip_through_json_and_hash():
    for ref in (DatasetRef(), SYNTHETIC, DatasetRef(name="criteo-tsv", path="/data/day_0")):
        again = DatasetRef.model_validate_json(ref.model_dump_json())
        assert again == ref and hash(again) == hash(ref)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "criteo-tsv"}, "path: criteo-tsv needs path"),
        ({"synthetic": {"rows": 10}}, "synthetic: only used with name='synthetic-criteo'"),
        ({"name": "synthetic-criteo", "synthetic": {"cardinalities": [5, 0]}}, "cardinalities"),
        (
            {"name": "synthetic-criteo", "synthetic": {"cardinalities": [5], "cross_order": 2}},
            "cross_order: 2 exceeds the 1 sparse features",
        ),
        ({"name": "synthetic-criteo", "synthetic": {"label_rte": 0.1}}, "label_rte"),
    ],
)
def test_bad_refs_name_the_field(fields, message):
    with pytest.raises(ValidationError, match=message):
        DatasetRef.model_validate(fields)


def test_dispatches_on_the_name_and_caches(tmp_path):
    movielens = load_dataset(DatasetRef(max_rows=3000), max_table_rows=1000)
    assert isinstance(movielens.train, CtrSplit)
    assert movielens.splits() == {"train": 2400, "validation": 300, "test": 300}
    assert movielens.split_rule.startswith("by timestamp")

    synthetic = load_dataset(SYNTHETIC, max_table_rows=1000)
    assert isinstance(synthetic.train, StreamingSplit)
    assert synthetic.splits() == {"train": 8000, "validation": 1000, "test": 1000}
    assert synthetic.split_rule.startswith("by row number")
    assert synthetic.schema.table_rows[:3] == (1000, 583, 1000)  # min(cardinality, 1000)
    assert load_dataset(SYNTHETIC, max_table_rows=1000) is synthetic

    path = _write(tmp_path / "train.txt", [_row(i) for i in range(20)])
    criteo = load_dataset(DatasetRef(name="criteo-tsv", path=str(path)), max_table_rows=64)
    assert criteo.splits() == {"train": 16, "validation": 2, "test": 2}
    assert criteo.split_rule.startswith("by file order")


def test_the_trainer_loads_through_this_module():
    assert trainer.load_dataset(SYNTHETIC, max_table_rows=1000) is load_dataset(
        SYNTHETIC, max_table_rows=1000
    )
