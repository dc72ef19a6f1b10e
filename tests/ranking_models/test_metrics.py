"""Metrics against hand-computed values and brute-force references."""

import itertools
import math

import pytest
import torch

from ranking_models.metrics import auc, compute_metrics, log_loss, normalized_entropy


def _pairwise_auc(labels: list[int], scores: list[float]) -> float:
    """AUC by definition: P(positive scores above negative), ties count one half."""
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_log_loss_and_ne_by_hand():
    labels = torch.tensor([1.0, 0.0, 1.0, 1.0])
    probs = torch.tensor([0.9, 0.2, 0.6, 0.5])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6) + math.log(0.5)) / 4
    assert log_loss(labels, torch.logit(probs)) == pytest.approx(expected, rel=1e-6)
    base = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert normalized_entropy(labels, torch.logit(probs)) == pytest.approx(
        expected / base, rel=1e-6
    )


def test_ne_of_the_base_rate_predictor_is_one():
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0])
    logits = torch.full((5,), math.log(0.6 / 0.4))
    assert normalized_entropy(labels, logits) == pytest.approx(1.0, rel=1e-6)


def test_auc_by_hand_with_ties():
    # Pairs (pos, neg): (0.8, 0.1) win, (0.8, 0.4) win, (0.4, 0.1) win, (0.4, 0.4) tie.
    labels = torch.tensor([1, 0, 1, 0])
    scores = torch.tensor([0.8, 0.1, 0.4, 0.4])
    assert auc(labels, scores) == pytest.approx(3.5 / 4)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_on_random_tied_scores(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (40,), generator=g)
    labels[0], labels[1] = 0, 1  # both classes
    scores = torch.randint(0, 6, (40,), generator=g).float()  # many ties
    assert auc(labels, scores) == pytest.approx(_pairwise_auc(labels.tolist(), scores.tolist()))


def test_auc_extremes_and_monotone_invariance():
    labels = torch.tensor([0, 0, 1, 1])
    scores = torch.tensor([-2.0, -1.0, 0.5, 3.0])
    assert auc(labels, scores) == 1.0
    assert auc(labels, -scores) == 0.0
    assert auc(labels, torch.sigmoid(scores)) == auc(labels, scores)
    assert auc(labels, torch.zeros(4)) == 0.5


def test_compute_metrics_accepts_column_logits():
    labels = torch.tensor([1.0, 0.0, 1.0])
    logits = torch.tensor([[2.0], [-1.0], [0.5]])  # (B, 1), as DLRM returns
    m = compute_metrics(labels, logits)
    assert m.examples == 3
    assert m.auc == 1.0
    assert m.logloss == pytest.approx(log_loss(labels, logits.squeeze(1)))
    assert m.ne == pytest.approx(normalized_entropy(labels, logits.squeeze(1)))


def test_single_class_is_rejected():
    with pytest.raises(ValueError, match="both classes"):
        normalized_entropy(torch.ones(3), torch.zeros(3))
    with pytest.raises(ValueError, match="both classes"):
        auc(torch.zeros(3), torch.arange(3.0))


def test_nan_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN"):
        compute_metrics(torch.tensor([0.0, 1.0]), torch.tensor([0.0, float("nan")]))
