"""Every interaction beats logistic regression on both datasets (MovieLens-100k and a planted
synthetic Criteo-like task), on validation NE."""

import functools

import pytest

from contracts import DatasetRef, Metrics, ModelSpec
from contracts.dataset import SyntheticSpec
from ranking_models.baselines import train_logistic_regression
from ranking_models.trainer import train

# Per dataset: the data and the base spec every variant changes.
DATASETS = {
    "movielens": (DatasetRef(), ModelSpec()),
    # Enough rows per id for the planted crosses to be learnable in one epoch, small enough
    # to train in seconds.
    "synthetic": (
        DatasetRef(
            name="synthetic-criteo",
            synthetic=SyntheticSpec(rows=200_000, cardinalities=(200,) * 8, num_crosses=8),
        ),
        ModelSpec(epochs=1),
    ),
}
VARIANTS = {
    "dot": {},
    "dcn-full": {"interaction": "dcn"},
    "dcn-low-rank": {"interaction": "dcn", "dcn_low_rank": 8},
    "projection": {"interaction": "projection"},
}


@functools.cache
def baseline(dataset: str) -> Metrics:
    return train_logistic_regression(DATASETS[dataset][0]).validation


def test_logistic_regression_beats_the_constant_predictor() -> None:
    outcome = train_logistic_regression(DatasetRef())
    assert outcome.validation.ne < 1.0
    assert outcome.validation.auc > 0.6
    assert outcome.test.examples == 10_000


@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_interaction_beats_logistic_regression_on_validation_ne(
    dataset: str, variant: str
) -> None:
    data, spec = DATASETS[dataset]
    outcome = train(spec.with_changes(VARIANTS[variant]), data)
    assert outcome.validation.ne < baseline(dataset).ne
