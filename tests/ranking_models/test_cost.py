"""The cost model: analytic work, host estimate and GPU-hours (no timing assertions)."""

import pytest

from contracts import DatasetRef, ModelSpec
from ranking_models.cost import (
    GPU_PROFILES,
    estimate_gpu_hours,
    estimate_seconds,
    work_per_sample,
)

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


def test_estimate_seconds_is_positive_and_scales_with_epochs():
    one = estimate_seconds(ModelSpec(epochs=1), TINY_DATA)
    four = estimate_seconds(ModelSpec(epochs=4), TINY_DATA)
    assert 0 < one < four


@pytest.mark.parametrize("gpu", sorted(GPU_PROFILES))
def test_gpu_hours_are_positive_and_grow_with_epochs(gpu):
    one = estimate_gpu_hours(ModelSpec(epochs=1), TINY_DATA, gpu)
    assert 0 < one < estimate_gpu_hours(ModelSpec(epochs=3), TINY_DATA, gpu)


def test_unknown_gpu_profile_lists_the_known_ones():
    with pytest.raises(KeyError, match="H100"):
        estimate_gpu_hours(ModelSpec(), TINY_DATA, "TPUv9")
