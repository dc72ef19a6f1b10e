"""Atomic training checkpoints: everything a resumed run needs to continue bit for bit.

One file, ``<checkpoint_dir>/checkpoint.pt`` (``torch.save`` of plain tensors, numbers and
strings, so it loads with ``weights_only=True``). It is written to a temporary file in
the same folder, flushed to disk and renamed over the old one, so a crash mid-write
leaves the previous checkpoint intact.
"""

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from contracts import DatasetRef, ModelSpec
from ranking_models.dlrm import dropout_modules, sparse_modules

FILENAME = "checkpoint.pt"
FORMAT_VERSION = 1

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """The training loop's own state, beside the model's and optimizers'.

    Attributes:
        step: Optimizer steps taken.
        epoch_generator_state: The data-order generator's state at the start of the
            epoch of the next step (that epoch's shuffle is redrawn from it on resume).
        epoch_loss_sum: Sum of this epoch's step losses so far.
        last_epoch_loss: Mean loss of the last finished epoch.
        reference_loss: The divergence monitor's reference loss (0 until known).
        first_losses: No longer read (the reference comes from step 1 alone); kept so that
            checkpoints written before that still load.
        high_streak: Consecutive steps with the loss above the divergence threshold.
        validation_history: Validation metrics (as dicts) after each finished epoch.
        team: The trial's thread-team cap (``threads.TrialThreads.choose``; 0: not chosen).
    """

    step: int
    epoch_generator_state: torch.Tensor
    epoch_loss_sum: float = 0.0
    last_epoch_loss: float = 0.0
    reference_loss: float = 0.0
    first_losses: list[float] = field(default_factory=list)
    high_streak: int = 0
    validation_history: list[dict[str, float]] = field(default_factory=list)
    team: int = 0


def save(
    directory: Path,
    *,
    spec: ModelSpec,
    dataset: DatasetRef,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    loop: LoopState,
) -> Path:
    """Writes a checkpoint atomically and returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "spec": spec.model_dump_json(),
        "dataset": dataset.model_dump_json(),
        "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "sparse": [m.checkpoint_state() for m in sparse_modules(net)],
        "dropout": [m.generator(_device(net)).get_state() for m in dropout_modules(net)],
        "dense_optimizer": optimizer.state_dict(),
        "loop": loop.__dict__,
    }
    path = directory / FILENAME
    tmp = directory / f".{FILENAME}.{os.getpid()}.tmp"
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load(
    directory: Path,
    *,
    spec: ModelSpec,
    dataset: DatasetRef,
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
) -> LoopState | None:
    """Restores a checkpoint of the same spec and dataset into ``net`` and ``optimizer``.

    Returns:
        The loop state to continue from, or None when there is no checkpoint, or it was
        written for another spec or dataset (then training starts afresh and overwrites
        it; a trial's folder only changes spec when the trial id is reused).
    """
    path = directory / FILENAME
    if not path.exists():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if (
        payload.get("format") != FORMAT_VERSION
        or payload["spec"] != spec.model_dump_json()
        or payload["dataset"] != dataset.model_dump_json()
    ):
        log.warning("ignoring %s: written for another spec, dataset or format", path)
        return None
    net.load_state_dict(payload["model"])
    for module, state in zip(sparse_modules(net), payload["sparse"], strict=True):
        module.load_checkpoint_state(state)
    for dropout, rng in zip(dropout_modules(net), payload["dropout"], strict=True):
        dropout.generator(_device(net)).set_state(rng)
    optimizer.load_state_dict(payload["dense_optimizer"])
    return LoopState(**payload["loop"])


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device
