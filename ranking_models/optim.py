"""Dense optimizers and the learning-rate schedule a ``ModelSpec`` asks for.

The sparse optimizer is fused into the embedding kernel (``kernels``); this module only
builds the dense one and says how both learning rates move with the step.
"""

import math

import torch
from torch import nn

from contracts import ModelSpec


def dense_optimizer(spec: ModelSpec, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``spec.dense_optimizer`` names, at ``dense_lr`` with ``weight_decay``.

    Args:
        spec: The model spec.
        params: The dense parameters (see ``ranking_models.dlrm.dense_parameters``).

    Returns:
        Adam, Adagrad or plain SGD (no momentum), with L2 weight decay.
    """
    if spec.dense_optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=spec.dense_lr, weight_decay=spec.weight_decay)
    if spec.dense_optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.dense_lr, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.dense_lr, weight_decay=spec.weight_decay)


def lr_factor(spec: ModelSpec, step: int, total_steps: int) -> float:
    """The multiplier of both peak learning rates for the step about to run.

    Linear warmup from 0 over ``lr_warmup_steps``, then ``lr_schedule`` decays towards 0
    at ``total_steps`` (``none`` holds the peak).

    Args:
        spec: The model spec.
        step: Steps already taken (0 for the first step).
        total_steps: Steps of the whole run.

    Returns:
        A factor in (0, 1].
    """
    warmup = spec.lr_warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if spec.lr_schedule == "none":
        return 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)  # in [0, 1)
    if spec.lr_schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
