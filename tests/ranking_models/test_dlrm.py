"""Building the DLRM from a ModelSpec."""

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torchrec.modules.crossnet import CrossNet, LowRankCrossNet

from contracts import DatasetRef, ModelSpec
from kernels import FusedEmbeddingBagCollection
from ranking_models.arch import ModuloEmbeddingBagCollection, NormalizedDenseArch
from ranking_models.datasets import load_dataset
from ranking_models.dlrm import DropoutOverArch, build_model, dense_parameters
from ranking_models.errors import BadSpecError

SPEC = ModelSpec(embedding_dim=8, dense_hidden=[16], over_hidden=[16, 8], seed=1)


@pytest.fixture(scope="module")
def data():
    return load_dataset(DatasetRef(max_rows=2000), max_table_rows=100_000)


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


@pytest.mark.parametrize(
    ("change", "model_type", "over_in"),
    [
        ({}, "DLRM", 8 + 45 + 10),  # D + F(F-1)/2 + F with F = 10
        ({"interaction": "dcn"}, "DLRM_DCN", 11 * 8),  # (F + 1) * D
        ({"interaction": "dcn", "dcn_low_rank": 4}, "DLRM_DCN", 11 * 8),
        ({"interaction": "projection", "projection_size": 3}, "DLRM_Projection", 8 + 9),
    ],
)
def test_interactions_build_torchrec_variants(data, change, model_type, over_in):
    model = build_model(SPEC.with_changes(change), data.schema)
    assert type(model).__name__ == model_type
    first_over = next(m for m in model.over_arch.modules() if isinstance(m, nn.Linear))
    assert first_over.in_features == over_in
    batch = data.train.batch(slice(0, 5))
    assert model(batch.dense, batch.sparse).shape == (5, 1)  # (B, 1)


def test_dcn_full_rank_uses_crossnet_and_low_rank_uses_lowrankcrossnet(data):
    full = build_model(SPEC.with_changes({"interaction": "dcn", "dcn_layers": 2}), data.schema)
    low = build_model(
        SPEC.with_changes({"interaction": "dcn", "dcn_layers": 2, "dcn_low_rank": 4}), data.schema
    )
    assert isinstance(full.inter_arch.crossnet, CrossNet)
    assert isinstance(low.inter_arch.crossnet, LowRankCrossNet)
    assert low.inter_arch.crossnet._low_rank == 4


@pytest.mark.parametrize(("norm", "cls"), [("batch", nn.BatchNorm1d), ("layer", nn.LayerNorm)])
def test_dense_norm_wraps_the_dense_arch(data, norm, cls):
    model = build_model(SPEC.with_changes({"dense_norm": norm}), data.schema)
    assert isinstance(model.dense_arch, NormalizedDenseArch)
    assert isinstance(model.dense_arch.norm, cls)


def test_table_rows_override_shrinks_a_table_and_hashes_ids(data):
    model = build_model(SPEC.with_changes({"table_rows": {"user_id": 17}}), data.schema)
    ebc = model.sparse_arch.embedding_bag_collection
    assert isinstance(ebc, ModuloEmbeddingBagCollection)
    rows = {t.feature_names[0]: t.num_embeddings for t in ebc.embedding_bag_configs()}
    assert rows["user_id"] == 17 and rows["item_id"] == data.schema.table_rows[1]
    batch = data.train.batch(slice(0, 64))  # user ids up to 943 wrap into 17 rows
    assert torch.isfinite(model(batch.dense, batch.sparse)).all()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"table_rows": {"no_such_feature": 4}}, "table_rows"),
        ({"interaction": "dcn", "dcn_low_rank": 88}, "dcn_low_rank"),
    ],
)
def test_spec_not_matching_the_data_names_the_field(data, change, field):
    with pytest.raises(BadSpecError, match=rf"ModelSpec\.{field}"):
        build_model(SPEC.with_changes(change), data.schema)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"interaction": "cross"}, "interaction"),
        ({"dense_optimizer": "lamb"}, "dense_optimizer"),
        ({"sparse_optimizer": "adagrad"}, "sparse_optimizer"),
        ({"embedding_precision": "int8"}, "embedding_precision"),
        ({"lr_schedule": "step"}, "lr_schedule"),
        ({"dcn_layers": 0}, "dcn_layers"),
        ({"grad_clip_norm": -1.0}, "grad_clip_norm"),
        ({"table_rows": {"user_id": 0}}, "table_rows"),
        ({"projection_hidden": [0]}, "projection_hidden"),
    ],
)
def test_invalid_spec_values_fail_validation_naming_the_field(change, field):
    with pytest.raises(ValidationError, match=field):
        ModelSpec().with_changes(change)


def test_sparse_optimizer_and_precision_reach_the_kernel(data):
    spec = SPEC.with_changes({"sparse_optimizer": "adam", "embedding_precision": "fp16"})
    ebc = build_model(spec, data.schema).sparse_arch.embedding_bag_collection
    assert ebc.optimizer == "adam" and ebc.precision == "fp16"
    assert ebc.split_weights()[0].dtype == torch.float16
