"""The dense optimizer a ``ModelSpec`` asks for.

The sparse optimizer is fused into the embedding kernel (``kernels``); this module only
builds the dense one. How both learning rates move with the step is
``train_step.lr_factor``.
"""

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
