"""The memory estimate and the fail-fast check in front of ``build_model``."""

import os

import pytest

from contracts import DatasetRef, ModelSpec
from ranking_models import datasets, memory, trainer
from ranking_models.data import FeatureSchema
from ranking_models.dlrm import build_model, dense_parameters
from ranking_models.errors import OutOfMemoryError
from ranking_models.memory import GIB, check_fits, memory_limit_bytes, training_bytes

TINY_DATA = DatasetRef(max_rows=3000)
# Two tables of 10 and 20 rows, three dense features.
SCHEMA = FeatureSchema(
    sparse_features=("a", "b"), table_rows=(10, 20), dense_features=("x", "y", "z")
)
SMALL = ModelSpec(embedding_dim=8, dense_hidden=[4], over_hidden=[6])
# A 100M-row user table of 512 dims: ~191 GiB of fp32 rows.
HUGE = ModelSpec(table_rows={"user_id": 100_000_000}, max_table_rows=100_000_000, embedding_dim=512)


@pytest.fixture(scope="module")
def movielens() -> FeatureSchema:
    return datasets.load_dataset(TINY_DATA, max_table_rows=HUGE.max_table_rows).schema


@pytest.fixture(autouse=True)
def _no_limit_override(monkeypatch):
    monkeypatch.delenv(memory.LIMIT_ENV, raising=False)


# Dense parameters of SMALL on SCHEMA: dense arch 3 -> 4 -> 8 is (3*4 + 4) + (4*8 + 8) = 56;
# the dot interaction emits 8 + 1 + 2 = 11 features; over arch 11 -> 6 -> 1 is
# (11*6 + 6) + (6 + 1) = 79. Total 135, held as weights, gradients and Adam's 2 slots.
DENSE = 135 * 4 * 4


@pytest.mark.parametrize(
    ("change", "embeddings"),
    [
        ({}, 30 * 8 * 4 + 30 * 4),  # fp32 rows + one rowwise Adagrad float per row
        ({"embedding_precision": "fp16"}, 30 * 8 * 2 + 30 * 4),
        ({"sparse_optimizer": "adam"}, 30 * 8 * 4 + 2 * 30 * 8 * 4),  # two fp32 moments
        ({"sparse_optimizer": "sgd", "embedding_precision": "fp16"}, 30 * 8 * 2),
        ({"table_rows": {"b": 5}}, 15 * 8 * 4 + 15 * 4),  # the override, not the data's 20
    ],
)
def test_training_bytes_by_hand(change, embeddings):
    assert training_bytes(SMALL.model_copy(update=change), SCHEMA) == embeddings + DENSE


@pytest.mark.parametrize(("optimizer", "slots"), [("adam", 2), ("adagrad", 1), ("sgd", 0)])
def test_dense_optimizer_state_is_counted(optimizer, slots):
    spec = SMALL.model_copy(update={"dense_optimizer": optimizer, "sparse_optimizer": "sgd"})
    assert training_bytes(spec, SCHEMA) == 30 * 8 * 4 + 135 * 4 * (2 + slots)


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"interaction": "dcn"},
        {"interaction": "dcn", "dcn_low_rank": 8, "dcn_layers": 2},
        {"interaction": "projection", "projection_hidden": [16], "projection_size": 2},
        {"dense_norm": "batch", "dropout": 0.1, "dense_hidden": [16, 8]},
        {"dense_norm": "layer"},
    ],
)
def test_dense_count_matches_the_built_model(change):
    spec = SMALL.model_copy(update=change)
    built = sum(p.numel() for p in dense_parameters(build_model(spec, SCHEMA)))
    assert memory.dense_parameter_count(spec, SCHEMA) == built


def test_a_table_larger_than_memory_fails_naming_the_fields(movielens):
    with pytest.raises(OutOfMemoryError) as e:
        check_fits(HUGE, movielens, limit_bytes=64 * GIB)
    message = str(e.value)
    assert message.startswith("ModelSpec.table_rows/embedding_dim: ")
    assert "needs 191.1 GiB" in message
    assert "80% of the 64.0 GiB memory limit" in message
    for fix in ("table_rows", "max_table_rows", "embedding_dim", "embedding_precision fp16"):
        assert fix in message
    assert "\n" not in message
    assert not e.value.retryable


def test_adam_tables_also_suggest_a_lighter_sparse_optimizer(movielens):
    spec = HUGE.model_copy(update={"sparse_optimizer": "adam", "embedding_precision": "fp16"})
    with pytest.raises(OutOfMemoryError, match="sparse_optimizer rowwise_adagrad") as e:
        check_fits(spec, movielens, limit_bytes=64 * GIB)
    assert "fp16" not in str(e.value)  # already set


def test_the_default_spec_fits(movielens):
    assert training_bytes(ModelSpec(), movielens) < 10 * 1024**2
    check_fits(ModelSpec(), movielens)  # this host's memory
    check_fits(ModelSpec(), movielens, limit_bytes=64 * 1024**2)


def test_the_safety_share_is_applied():
    need = training_bytes(SMALL, SCHEMA)
    check_fits(SMALL, SCHEMA, limit_bytes=int(need / memory.SAFETY_SHARE) + 1)
    with pytest.raises(OutOfMemoryError):
        check_fits(SMALL, SCHEMA, limit_bytes=int(need / memory.SAFETY_SHARE) - 1)


def test_the_limit_is_the_host_memory_unless_the_env_var_is_set(monkeypatch, movielens):
    assert memory_limit_bytes() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setenv(memory.LIMIT_ENV, "2.5")
    assert memory_limit_bytes() == int(2.5 * GIB)
    # ~1.2 GiB of rows: over 80% of 1 GiB, within 80% of 4 GiB.
    spec = ModelSpec(
        table_rows={"user_id": 10_000_000}, max_table_rows=10_000_000, embedding_dim=32
    )
    monkeypatch.setenv(memory.LIMIT_ENV, "1")
    with pytest.raises(OutOfMemoryError, match=r"of the 1\.0 GiB memory limit"):
        check_fits(spec, movielens)
    monkeypatch.setenv(memory.LIMIT_ENV, "4")
    check_fits(spec, movielens)


@pytest.mark.parametrize("value", ["lots", "0", "-1", "nan", "inf"])
def test_a_malformed_limit_is_rejected(monkeypatch, value):
    monkeypatch.setenv(memory.LIMIT_ENV, value)
    with pytest.raises(ValueError, match=memory.LIMIT_ENV):
        memory_limit_bytes()


def _never_build(*args, **kwargs):
    raise AssertionError("build_model must not run for a model that cannot fit")


def test_train_fails_fast_without_building_the_table(monkeypatch):
    # Without the check, the build would try to allocate the 191 GiB table.
    monkeypatch.setattr(trainer, "build_model", _never_build)
    with pytest.raises(OutOfMemoryError, match=r"ModelSpec\.table_rows/embedding_dim"):
        trainer.train(HUGE, TINY_DATA, memory_limit_bytes=16 * GIB)


def test_train_takes_the_limit_from_the_env_var(monkeypatch):
    monkeypatch.setattr(trainer, "build_model", _never_build)
    monkeypatch.setenv(memory.LIMIT_ENV, "0.5")
    spec = ModelSpec(table_rows={"user_id": 10_000_000}, max_table_rows=10_000_000, epochs=1)
    with pytest.raises(OutOfMemoryError, match=r"0\.5 GiB memory limit"):
        trainer.train(spec, TINY_DATA)
