"""Typed training errors, so callers map each failure to a decision without parsing text.

``retryable`` tells an activity whether running the same spec again could succeed; the
activity turns ``retryable=False`` into a non-retryable application error.
"""

from typing import ClassVar


class TrainingError(Exception):
    """Base of every error ``ranking_models`` raises on purpose."""

    retryable: ClassVar[bool] = False


class BadSpecError(TrainingError):
    """The ``ModelSpec`` cannot be built or trained as written.

    Args:
        field: The spec field at fault, e.g. ``embedding_dim``.
        reason: What is wrong and how to fix it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        super().__init__(f"ModelSpec.{field}: {reason}")


class BadDataError(TrainingError):
    """The dataset is missing, malformed or cut into an unusable split.

    Args:
        message: What is wrong, naming the file or ``DatasetRef`` field and the fix.
    """


class DivergenceError(TrainingError):
    """The training loss became NaN or infinite, or kept far above its starting value.

    Args:
        step: The step (1-based) at which divergence was detected.
        loss: The loss value at that step.
        reason: Why it counts as divergence; default: the loss is not finite.
    """

    def __init__(self, step: int, loss: float, reason: str = "") -> None:
        self.step = step
        self.loss = loss
        self.reason = reason or "not finite"
        super().__init__(
            f"training diverged: loss is {loss} at step {step} ({self.reason}); "
            "lower dense_lr or sparse_lr, add lr_warmup_steps or grad_clip_norm"
        )


class OutOfMemoryError(TrainingError):
    """The model or a batch did not fit in host or device memory.

    A retry on the same kind of machine fails the same way, so it is not retryable;
    a smaller ``batch_size``, ``embedding_dim`` or ``max_table_rows`` may fit.
    """


class KernelUnavailableError(TrainingError):
    """A compiled kernel or library (FBGEMM, TorchRec) failed to load on this host.

    Another host with another build may have it: runbooks retry elsewhere, then escalate.
    """


class TrainingCancelled(TrainingError):
    """``should_stop`` asked the trainer to stop before it finished.

    Args:
        step: The number of steps completed when training stopped.
        validation_history: Validation metrics (as dicts) after each finished epoch,
            restored ones included: what a pruned trial reports to its study.
    """

    def __init__(self, step: int, validation_history: tuple[dict[str, float], ...] = ()) -> None:
        self.step = step
        self.validation_history = validation_history
        super().__init__(f"training cancelled after {step} steps")
