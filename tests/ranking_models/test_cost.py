"""The cost model: analytic work, host estimate and GPU-hours (no timing assertions)."""

import itertools
import threading

import pytest
import torch

from contracts import DatasetRef, ModelSpec
from ranking_models import cost, memory
from ranking_models.cost import (
    GPU_PROFILES,
    estimate_gpu_hours,
    estimate_seconds,
    estimate_seconds_range,
    work_per_sample,
)
from ranking_models.datasets import load_dataset
from ranking_models.errors import OutOfMemoryError
from ranking_models.tasks import relative_cost

TINY_DATA = DatasetRef(max_rows=3000)


def _work(**change):
    return work_per_sample(ModelSpec().with_changes(change), 10, 4, ids_per_sample=12.0)


def test_work_grows_with_the_model():
    base = _work()
    assert _work(over_hidden=[256, 128]).flops > base.flops
    assert _work(interaction="dcn").flops > _work(interaction="dcn", dcn_low_rank=4).flops
    assert _work(embedding_dim=32).bytes == pytest.approx(2 * base.bytes, rel=0.05)


def test_fp16_rows_halve_embedding_bytes_and_adam_moves_more():
    base = _work()
    assert _work(embedding_precision="fp16").bytes < 0.6 * base.bytes
    assert _work(sparse_optimizer="adam").bytes > 2 * base.bytes


def test_a_change_s_cost_counts_the_step_s_fixed_part():
    # A step costs its dispatch and optimizer loops whatever its batch: half the batch is
    # twice the steps, dearer per sample (by FLOPs alone it cost the same), and most so for
    # a small model, whose FLOPs are a small part of its step.
    small = ModelSpec(embedding_dim=4, dense_hidden=[8], over_hidden=[8], batch_size=512)
    large = ModelSpec(embedding_dim=64, dense_hidden=[512, 256], over_hidden=[512, 256])

    def halved(spec: ModelSpec, **overhead) -> float:
        return relative_cost(spec, spec.with_changes({"batch_size": 256}), TINY_DATA, **overhead)

    assert halved(small, step_overhead=0.0) == pytest.approx(1.0)
    assert 1.5 < halved(small) <= 2.0
    assert 1.0 < halved(large) < halved(small)
    # A DCN on the small model: its FLOPs several times the baseline's, its step much less.
    dcn = small.with_changes({"interaction": "dcn"})
    by_flops = relative_cost(small, dcn, TINY_DATA, step_overhead=0.0)
    assert 1.0 < relative_cost(small, dcn, TINY_DATA) < by_flops / 2


def test_estimate_seconds_is_positive_and_scales_with_epochs():
    one = estimate_seconds(ModelSpec(epochs=1), TINY_DATA)
    four = estimate_seconds(ModelSpec(epochs=4), TINY_DATA)
    assert 0 < one < four


def test_the_range_is_ordered_and_its_low_end_is_estimate_seconds():
    spec = ModelSpec(epochs=1)
    low, high = estimate_seconds_range(spec, TINY_DATA)
    assert cost.FIXED_OVERHEAD_S < low <= high
    assert estimate_seconds(spec, TINY_DATA) == low
    assert estimate_seconds_range(spec, TINY_DATA) == (low, high)  # cached per process


def test_the_share_a_data_fraction_cannot_shrink_falls_as_training_grows():
    # Building, checking and the test pass are paid once; the steps grow with the epochs.
    one = cost.fraction_fixed_share(ModelSpec(epochs=1), TINY_DATA)
    four = cost.fraction_fixed_share(ModelSpec(epochs=4), TINY_DATA)
    assert 0 < four < one < 1
    fixed = sum(cost.fixed_seconds(ModelSpec(epochs=1), TINY_DATA).values())
    assert one >= fixed / estimate_seconds(ModelSpec(epochs=1), TINY_DATA)


def test_both_ends_of_the_range_grow_with_epochs():
    one = estimate_seconds_range(ModelSpec(epochs=1), TINY_DATA)
    four = estimate_seconds_range(ModelSpec(epochs=4), TINY_DATA)
    assert one[0] < four[0] and one[1] < four[1]


def test_a_model_too_big_for_the_host_fails_before_it_is_built(monkeypatch):
    monkeypatch.setenv(memory.LIMIT_ENV, "16")
    spec = ModelSpec(
        max_table_rows=100_000_000, table_rows={"user_id": 100_000_000}, embedding_dim=512
    )
    with pytest.raises(OutOfMemoryError, match="table_rows"):
        estimate_seconds_range(spec, TINY_DATA)


def test_quantiles_by_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert cost._quantile(values, 0.0) == 1.0
    assert cost._quantile(values, cost.LOW_QUANTILE) == 1.0
    assert cost._quantile(values, cost.HIGH_QUANTILE) == 3.0
    assert cost._quantile(values, 1.0) == 5.0


def test_timings_warm_up_then_time_the_asked_count():
    calls = []
    ticks = itertools.count()
    times = cost._timings(lambda: calls.append(1), lambda: float(next(ticks)), 2, 6)
    assert len(calls) == 8 and times == [1.0] * 6


def test_timings_stop_at_the_minimum_once_the_budget_is_spent(monkeypatch):
    monkeypatch.setattr(cost, "CALIBRATION_BUDGET_S", 0.0)
    times = cost._timings(lambda: None, lambda: 0.0, 1, cost.TIMED_STEPS)
    assert len(times) == cost.MIN_TIMED_STEPS


def test_calibration_batches_leave_out_the_short_last_batch():
    spec = ModelSpec()
    train = load_dataset(TINY_DATA, max_table_rows=spec.max_table_rows).train
    assert len(train) % 512 != 0  # the split ends in a short batch
    batches = cost._full_batches(train, 512, seed=0)
    assert {len(next(batches)) for _ in range(3 * train.num_batches(512))} == {512}
    # A split smaller than one batch has only short batches: those are timed.
    assert len(next(cost._full_batches(train, len(train) + 1, seed=0))) == len(train)


def test_single_threaded_leaves_every_other_thread_its_count():
    seen: list[int] = []
    before = torch.get_num_threads()
    assert cost._single_threaded(torch.get_num_threads) == 1
    assert torch.get_num_threads() == before
    fresh = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    fresh.start()
    fresh.join()
    assert seen == [before]


def test_single_threaded_raises_what_the_function_raised():
    def fail() -> None:
        raise ValueError("bad spec")

    with pytest.raises(ValueError, match="bad spec"):
        cost._single_threaded(fail)


@pytest.mark.parametrize("gpu", sorted(GPU_PROFILES))
def test_gpu_hours_are_positive_and_grow_with_epochs(gpu):
    one = estimate_gpu_hours(ModelSpec(epochs=1), TINY_DATA, gpu)
    assert 0 < one < estimate_gpu_hours(ModelSpec(epochs=3), TINY_DATA, gpu)


def test_unknown_gpu_profile_lists_the_known_ones():
    with pytest.raises(KeyError, match="H100"):
        estimate_gpu_hours(ModelSpec(), TINY_DATA, "TPUv9")
