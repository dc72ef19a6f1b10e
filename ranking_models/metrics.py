"""Ranking metrics: log loss, normalized entropy (NE) and AUC.

NE is log loss divided by the entropy of the split's base rate (the log loss of always
predicting the mean label), so NE < 1 means the model beats that constant predictor and
values are comparable across splits with different click rates. All sums run in float64
so that a campaign's metric deltas of 1e-4 are not rounding noise.
"""

import math

import torch
import torch.nn.functional as F

from contracts import Metrics


def _check(labels: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels = labels.detach().reshape(-1).to(torch.float64)
    scores = scores.detach().reshape(-1).to(torch.float64)
    if labels.numel() == 0:
        raise ValueError("metrics need at least one example")
    if labels.shape != scores.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and scores {tuple(scores.shape)} differ")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if not torch.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be 0 or 1")
    return labels, scores


def log_loss(labels: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean binary cross-entropy, computed from logits for numerical stability.

    Args:
        labels: (N,) 0/1 labels.
        logits: (N,) or (N, 1) raw scores; the predicted probability is sigmoid(logit).

    Returns:
        The mean log loss in nats.
    """
    labels, logits = _check(labels, logits)
    return F.binary_cross_entropy_with_logits(logits, labels).item()


def base_rate_entropy(labels: torch.Tensor) -> float:
    """Entropy (nats) of a Bernoulli with the labels' mean: the constant predictor's log loss.

    Args:
        labels: (N,) 0/1 labels with both classes present.

    Returns:
        -p log p - (1 - p) log(1 - p) for p = mean(labels).

    Raises:
        ValueError: Only one class is present, so NE is undefined.
    """
    p = labels.detach().to(torch.float64).mean().item()
    if p <= 0.0 or p >= 1.0:
        raise ValueError(f"NE needs both classes; the base rate is {p}")
    return -(p * math.log(p) + (1.0 - p) * math.log(1.0 - p))


def normalized_entropy(labels: torch.Tensor, logits: torch.Tensor) -> float:
    """Log loss divided by the entropy of the labels' base rate.

    Args:
        labels: (N,) 0/1 labels with both classes present.
        logits: (N,) or (N, 1) raw scores.

    Returns:
        NE; 1.0 is the constant predictor, lower is better.
    """
    return log_loss(labels, logits) / base_rate_entropy(labels)


def auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic.

    Equal scores get their average rank, so a tie between a positive and a negative
    counts one half, as in the pairwise definition.

    Args:
        labels: (N,) 0/1 labels with both classes present.
        scores: (N,) or (N, 1) scores; any monotone transform (logits, probabilities)
            gives the same AUC.

    Returns:
        The probability that a random positive scores above a random negative.

    Raises:
        ValueError: Only one class is present.
    """
    labels, scores = _check(labels, scores)
    positives = labels.sum().item()
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both classes")
    sorted_scores, order = torch.sort(scores, stable=True)
    _, counts = torch.unique_consecutive(sorted_scores, return_counts=True)
    ends = torch.cumsum(counts, dim=0).to(torch.float64)  # 1-based rank of each group's last
    average = ends - (counts.to(torch.float64) - 1.0) / 2.0  # mean rank within a tie group
    ranks = torch.empty_like(scores)
    ranks[order] = torch.repeat_interleave(average, counts)
    positive_rank_sum = ranks[labels == 1].sum().item()
    return (positive_rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


def calibration(labels: torch.Tensor, logits: torch.Tensor) -> float:
    """Predicted CTR over actual CTR: 1.0 is calibrated, above 1 over-predicts clicks.

    Args:
        labels: (N,) 0/1 labels with at least one positive.
        logits: (N,) or (N, 1) raw scores; the predicted CTR is the mean of sigmoid(logit).

    Returns:
        mean(sigmoid(logits)) / mean(labels).

    Raises:
        ValueError: No positive label, so the ratio is undefined.
    """
    labels, logits = _check(labels, logits)
    actual = labels.mean().item()
    if actual == 0.0:
        raise ValueError("calibration needs at least one positive label")
    return torch.sigmoid(logits).mean().item() / actual


def compute_metrics(labels: torch.Tensor, logits: torch.Tensor) -> Metrics:
    """All ranking metrics for one split.

    Args:
        labels: (N,) 0/1 labels with both classes present.
        logits: (N,) or (N, 1) raw model outputs.

    Returns:
        The split's ``Metrics`` (NE, AUC, log loss, calibration, example count).
    """
    loss = log_loss(labels, logits)
    return Metrics(
        ne=loss / base_rate_entropy(labels),
        auc=auc(labels, logits),
        logloss=loss,
        calibration=calibration(labels, logits),
        examples=labels.numel(),
    )
