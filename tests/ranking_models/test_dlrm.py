"""Building the DLRM from a ModelSpec."""

import pytest
import torch
from torch import nn

from contracts import DatasetRef, ModelSpec
from kernels import FusedEmbeddingBagCollection
from ranking_models.dlrm import DropoutOverArch, build_model, dense_parameters
from ranking_models.errors import BadSpecError
from ranking_models.movielens import load_movielens

SPEC = ModelSpec(embedding_dim=8, dense_hidden=[16], over_hidden=[16, 8], seed=1)


@pytest.fixture(scope="module")
def data():
    return load_movielens(DatasetRef(max_rows=2000), max_table_rows=100_000)


def test_forward_gives_one_logit_per_example(data):
    model = build_model(SPEC, data.schema)
    batch = data.train.batch(slice(0, 7))
    logits = model(batch.dense, batch.sparse)
    assert logits.shape == (7, 1)  # (B, 1)
    assert torch.isfinite(logits).all()
    assert isinstance(model.sparse_arch.embedding_bag_collection, FusedEmbeddingBagCollection)


def test_arch_widths_follow_the_spec(data):
    model = build_model(SPEC, data.schema)
    linears = [m for m in model.dense_arch.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [16, 8]  # dense_hidden + [embedding_dim]
    linears = [m for m in model.over_arch.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [16, 8, 1]  # over_hidden + [1]
    tables = model.sparse_arch.embedding_bag_collection.embedding_bag_configs()
    assert [t.num_embeddings for t in tables] == list(data.schema.table_rows)


def test_same_seed_builds_the_same_model(data):
    a, b = build_model(SPEC, data.schema), build_model(SPEC, data.schema)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    c = build_model(SPEC.model_copy(update={"seed": 2}), data.schema)
    assert not torch.equal(
        a.sparse_arch.embedding_bag_collection.split_weights()[0],
        c.sparse_arch.embedding_bag_collection.split_weights()[0],
    )


def test_dropout_goes_into_the_over_arch(data):
    model = build_model(SPEC.model_copy(update={"dropout": 0.3}), data.schema)
    assert isinstance(model.over_arch, DropoutOverArch)
    drops = [m for m in model.over_arch.modules() if isinstance(m, nn.Dropout)]
    assert [d.p for d in drops] == [0.3, 0.3]
    batch = data.train.batch(slice(0, 64))
    model.eval()
    assert model(batch.dense, batch.sparse).shape == (64, 1)
    model.train()
    # Dropout is live in training: two passes differ.
    assert not torch.equal(model(batch.dense, batch.sparse), model(batch.dense, batch.sparse))


def test_dense_parameters_exclude_the_fused_tables(data):
    model = build_model(SPEC, data.schema)
    fused = set(map(id, model.sparse_arch.parameters()))
    dense = dense_parameters(model)
    assert dense and not any(id(p) in fused for p in dense)
    assert len(dense) == len(list(model.parameters())) - len(fused)


@pytest.mark.parametrize(
    ("change", "field"),
    [({"embedding_dim": 6}, "embedding_dim"), ({"over_hidden": []}, "over_hidden")],
)
def test_impossible_spec_names_the_field(data, change, field):
    with pytest.raises(BadSpecError, match=rf"ModelSpec\.{field}") as e:
        build_model(SPEC.model_copy(update=change), data.schema)
    assert e.value.field == field
