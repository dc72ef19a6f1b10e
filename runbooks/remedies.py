"""What each typed remedy does to a failed trial's model and data."""

import re
from pathlib import Path

from pydantic import ValidationError

from contracts import (
    PLACEMENT_REMEDIES,
    AddGradClip,
    AddWarmup,
    DatasetRef,
    Fp16Embeddings,
    HalveBatchSize,
    LowerLearningRate,
    ModelSpec,
    Remedy,
    SetFields,
    ShrinkEmbeddings,
    SwitchOptimizer,
    TrialResult,
    TrialSpec,
)

_CRITEO_FILE = re.compile(r"Criteo file (\S+) line")


class NotApplicable(ValueError):
    """The remedy changes nothing for this spec (or cannot build a valid one)."""


def apply_remedy(
    remedy: Remedy, spec: TrialSpec, failure: TrialResult
) -> tuple[ModelSpec | None, DatasetRef | None]:
    """The model and dataset to run next; (None, None) for a placement remedy, which runs the
    same trial again.

    Raises:
        NotApplicable: the remedy would change nothing, or makes an invalid spec.
    """
    if remedy.kind in PLACEMENT_REMEDIES:
        return None, None
    model, dataset = spec.model, spec.dataset
    if remedy.kind == "skip_corrupt_shard":
        found = _CRITEO_FILE.search(failure.error)
        if dataset.name != "criteo-tsv" or found is None:
            raise NotApplicable("skip_corrupt_shard: the error names no Criteo day file")
        name = Path(found.group(1)).name
        if name in dataset.exclude_files or not Path(dataset.path).is_dir():
            raise NotApplicable(f"skip_corrupt_shard: {name} is not a shard of a folder")
        return model, dataset.model_copy(update={"exclude_files": (*dataset.exclude_files, name)})
    changes = _model_changes(remedy, model)
    if not changes or all(getattr(model, k, None) == v for k, v in changes.items()):
        raise NotApplicable(f"{remedy.kind}: changes nothing for this spec")
    try:
        return model.with_changes(changes), dataset
    except ValidationError as err:
        raise NotApplicable(f"{remedy.kind}: {err.errors()[0]['msg']}") from None


def _model_changes(remedy: Remedy, model: ModelSpec) -> dict[str, object]:
    match remedy:
        case HalveBatchSize():
            return {"batch_size": max(1, model.batch_size // 2)}
        case ShrinkEmbeddings(factor=factor):
            return {"embedding_dim": max(4, int(model.embedding_dim * factor) // 4 * 4)}
        case Fp16Embeddings():
            return {"embedding_precision": "fp16"}
        case LowerLearningRate(factor=factor, which=which):
            changes: dict[str, object] = {}
            if which in ("dense", "both"):
                changes["dense_lr"] = model.dense_lr * factor
            if which in ("sparse", "both"):
                changes["sparse_lr"] = model.sparse_lr * factor
            return changes
        case AddWarmup(steps=steps):
            return {"lr_warmup_steps": max(model.lr_warmup_steps, steps)}
        case AddGradClip(max_norm=max_norm):
            current = model.grad_clip_norm
            return {"grad_clip_norm": max_norm if current == 0 else min(current, max_norm)}
        case SwitchOptimizer(dense=dense, sparse=sparse):
            pairs = (("dense_optimizer", dense), ("sparse_optimizer", sparse))
            return {k: v for k, v in pairs if v is not None}
        case SetFields(changes=changes):
            return dict(changes)
    return {}
