"""Every interaction beats logistic regression on MovieLens-100k (full data, CPU)."""

import pytest

from contracts import DatasetRef, ModelSpec
from ranking_models.baselines import train_logistic_regression
from ranking_models.trainer import train

DATA = DatasetRef()


@pytest.fixture(scope="module")
def baseline():
    return train_logistic_regression(DATA)


def test_logistic_regression_beats_the_constant_predictor(baseline):
    assert baseline.validation.ne < 1.0
    assert baseline.validation.auc > 0.6
    assert baseline.test.examples == 10_000


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"interaction": "dcn"},
        {"interaction": "dcn", "dcn_low_rank": 8},
        {"interaction": "projection"},
    ],
    ids=["dot", "dcn-full", "dcn-low-rank", "projection"],
)
def test_every_interaction_beats_logistic_regression_on_validation_ne(baseline, change):
    outcome = train(ModelSpec().with_changes(change), DATA)
    assert outcome.validation.ne < baseline.validation.ne
