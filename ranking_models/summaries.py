"""What a training run reports as it goes: TensorBoard scalars and OpenTelemetry spans.

No Temporal here. Spans go to whatever tracer provider the process installed (none: they
cost nothing); scalars go to a trial's own folder of TensorBoard event files.
"""

import time
from pathlib import Path
from types import TracebackType
from typing import Any

from opentelemetry import trace

from contracts import Metrics

tracer = trace.get_tracer("openrea.ranking_models")

# Seconds between flushes of the event file: a job killed outright loses at most this much.
FLUSH_SECS = 5


class ScalarLog:
    """TensorBoard scalars of one run, written only when ``folder`` is set.

    The writer opens on the first scalar: importing ``torch.utils.tensorboard`` costs
    seconds, paid only by runs that write. Closing (also when training fails) flushes, so a
    diverged or cancelled run keeps its events so far.

    Args:
        folder: The run's folder (one per trial); None: write nothing.

    Example:
        with ScalarLog(folder) as log:
            log.resume_at(restored_step)
            log.add("train/loss", 0.69, step=1)
    """

    def __init__(self, folder: Path | None) -> None:
        self._folder = folder
        self._purge_step: int | None = None
        self._writer: Any = None

    def resume_at(self, step: int) -> None:
        """A run resumed from a checkpoint at ``step``: TensorBoard drops the earlier
        attempt's events after it (steps it trained past the checkpoint and this run
        trains again), so no step is plotted twice."""
        self._purge_step = step + 1 if step else None

    def add(self, tag: str, value: float, step: int) -> None:
        if self._folder is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                str(self._folder), purge_step=self._purge_step, flush_secs=FLUSH_SECS
            )
        self._writer.add_scalar(tag, value, step)

    def add_metrics(self, prefix: str, metrics: Metrics, step: int) -> None:
        """NE, AUC and log loss as ``<prefix>/ne``..."""
        for name in ("ne", "auc", "logloss"):
            self.add(f"{prefix}/{name}", getattr(metrics, name), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "ScalarLog":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def epoch_span(started_ns: int, epoch: int, step: int, train_loss: float, metrics: Metrics) -> None:
    """Record a finished epoch as a child span of the current one ("train").

    Recorded once the epoch is over, from its start time: nothing is left open when the
    epoch fails (its error is on the "train" span).
    """
    span = tracer.start_span(
        "epoch",
        start_time=started_ns,
        attributes={
            "rea.epoch": epoch,
            "rea.step": step,
            "rea.train_loss": train_loss,
            **{f"rea.validation.{k}": v for k, v in metrics.model_dump().items()},
        },
    )
    span.end()


def now_ns() -> int:
    return time.time_ns()
