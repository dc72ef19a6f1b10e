"""The synthetic Criteo-like generator: determinism, label rate, power law, crosses, memory."""

import math
import tracemalloc

import numpy as np
import pytest
import torch

from contracts import DatasetRef, ModelSpec
from contracts.dataset import SyntheticSpec
from ranking_models.dlrm import build_model
from ranking_models.synthetic import SyntheticCriteo, load_synthetic, zipf_ranks
from ranking_models.trainer import evaluate, predict, train

SMALL = SyntheticSpec(rows=50_000, block_rows=8192)


def _source(spec: SyntheticSpec = SMALL, rows: int | None = None) -> SyntheticCriteo:
    return SyntheticCriteo(spec, num_rows=rows or spec.rows, max_table_rows=1000)


def _ne(labels: np.ndarray, logits: np.ndarray) -> float:
    p = 1.0 / (1.0 + np.exp(-logits))
    log_loss = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    rate = labels.mean()
    return log_loss / -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def test_same_seed_same_rows_and_blocks_regenerate_alone():
    a, b = _source(), _source()
    for name in ("ids", "lengths", "dense", "labels", "timestamps"):
        assert torch.equal(getattr(a.block(3), name), getattr(b.block(3), name))
    # Block 3 regenerated on its own equals rows 3 * 8192.. seen by streaming in order.
    split = load_synthetic(
        DatasetRef(name="synthetic-criteo", synthetic=SMALL), max_table_rows=1000
    )
    streamed = torch.cat([batch.labels for batch in split.train.batches(1000)])
    assert torch.equal(streamed[3 * 8192 : 4 * 8192], a.block(3).labels)
    other = _source(SMALL.model_copy(update={"seed": 1}))
    assert not torch.equal(other.block(3).ids, a.block(3).ids)


def test_rows_do_not_move_when_the_dataset_is_cut_differently():
    # Row r depends on (seed, r // block_rows) only, so fixed splits stay fixed.
    short, long = _source(rows=10_000), _source(rows=50_000)
    assert torch.equal(short.block(1).dense, long.block(1).dense[: 10_000 - 8192])
    a = load_synthetic(DatasetRef(name="synthetic-criteo", synthetic=SMALL), max_table_rows=1000)
    b = load_synthetic(
        DatasetRef(name="synthetic-criteo", synthetic=SMALL, max_rows=20_000), max_table_rows=1000
    )
    assert torch.equal(a.train.labels[:16_000], b.train.labels)


@pytest.mark.parametrize("rate", [0.05, 0.25, 0.5])
def test_label_rate_is_calibrated(rate):
    spec = SMALL.model_copy(update={"label_rate": rate, "rows": 200_000, "block_rows": 65_536})
    source = _source(spec)
    labels = torch.cat([source.block_labels(b) for b in range(len(source.block_starts()) - 1)])
    assert labels.numel() == 200_000
    assert abs(labels.mean().item() - rate) < 0.01


def test_ids_follow_a_power_law():
    cardinality, s = 100_000, 1.1
    ranks = zipf_ranks(np.random.default_rng(0).random(1_000_000), cardinality, s)
    assert ranks.min() == 0 and ranks.max() < cardinality
    counts = np.bincount(ranks, minlength=cardinality)
    # The most frequent id's share matches the continuous power law on [1, C + 1).
    norm = (1 - (cardinality + 1) ** (1 - s)) / (s - 1)
    expected_top = (1 - 2 ** (1 - s)) / (s - 1) / norm
    assert counts[0] / ranks.size == pytest.approx(expected_top, rel=0.02)
    assert counts[:100].sum() / ranks.size > 0.4  # a head of 100 ids out of 100k
    # Rank-frequency slope in log-log space is -s.
    k = np.array([10, 30, 100, 300, 1000])
    slope = np.polyfit(np.log(k + 1.5), np.log(counts[k]), 1)[0]
    assert slope == pytest.approx(-s, abs=0.1)


def test_the_planted_crosses_matter():
    source = _source(SMALL.model_copy(update={"rows": 65_536, "block_rows": 65_536}))
    block = source.generate(0)
    oracle = _ne(block.labels, source.oracle_logits(block))
    without = _ne(block.labels, source.oracle_logits(block, crosses=False))
    assert oracle < 0.85  # the planted model is learnable
    assert without > oracle + 0.05  # and the crosses carry a real part of it
    flat = _source(SMALL.model_copy(update={"num_crosses": 0, "rows": 65_536}))
    flat_block = flat.generate(0)
    assert np.all(flat_block.cross == 0)


def test_streaming_two_million_rows_keeps_memory_bounded():
    spec = SyntheticSpec(rows=2_000_000, block_rows=65_536)
    data = load_synthetic(
        DatasetRef(
            name="synthetic-criteo", synthetic=spec, validation_fraction=0.01, test_fraction=0.01
        ),
        max_table_rows=100_000,
    )
    largest = 0
    source = data.train.source
    original = source.block

    def watched(index: int):
        block = original(index)
        nonlocal largest
        largest = max(largest, block.ids.nbytes, block.dense.nbytes)
        return block

    source.block = watched  # type: ignore[method-assign]
    rows = 0
    tracemalloc.start()
    try:
        for batch in data.train.batches(8192, generator=torch.Generator().manual_seed(0)):
            rows += len(batch)
            largest = max(largest, batch.sparse.values().nbytes, batch.dense.nbytes)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        del source.block
    assert rows == len(data.train) == 1_960_000
    # Materialised, the ids alone would be 26 x 1.96M x 8 bytes = 408 MB.
    assert largest <= 26 * 65_536 * 8
    assert peak < 64 * 2**20


def test_shuffled_streaming_covers_every_row_once():
    data = load_synthetic(DatasetRef(name="synthetic-criteo", synthetic=SMALL), max_table_rows=1000)
    ordered = torch.cat([b.dense for b in data.validation.batches(700)])
    shuffled = torch.cat(
        [b.dense for b in data.validation.batches(700, generator=torch.Generator().manual_seed(0))]
    )
    assert shuffled.shape == ordered.shape == (5000, 13)
    assert not torch.equal(shuffled, ordered)
    assert torch.equal(shuffled[:, 0].sort().values, ordered[:, 0].sort().values)
    assert data.validation.num_batches(700) == 8


def test_random_access_batch_matches_the_stream():
    data = load_synthetic(DatasetRef(name="synthetic-criteo", synthetic=SMALL), max_table_rows=1000)
    rows = torch.tensor([9000, 3, 8191, 8192, 39_999])
    batch = data.train.batch(rows)
    assert torch.equal(batch.labels, data.train.labels[rows])
    full = torch.cat([b.sparse.values() for b in data.train.batches(40_000)]).view(26, -1)
    assert torch.equal(batch.sparse.values().view(26, -1), full[:, rows])


def test_evaluate_scores_a_streaming_split():
    spec = SyntheticSpec(rows=20_000, cardinalities=(50,) * 26, block_rows=4096)
    data = load_synthetic(DatasetRef(name="synthetic-criteo", synthetic=spec), max_table_rows=64)
    net = build_model(ModelSpec(), data.schema)
    metrics = evaluate(net, data.validation)
    assert metrics.examples == 2000
    assert predict(net, data.validation).shape == (2000,)


def test_the_trainer_trains_on_streamed_synthetic_data():
    spec = SyntheticSpec(rows=20_000, cardinalities=(50,) * 26, block_rows=4096)
    ref = DatasetRef(name="synthetic-criteo", synthetic=spec)
    model = ModelSpec(epochs=1, batch_size=512)
    first, second = train(model, ref), train(model, ref)
    assert first.steps == 32  # ceil(16000 / 512)
    assert first.validation == second.validation
    assert first.validation.examples == first.test.examples == 2000
    assert first.validation.ne < 1.0
