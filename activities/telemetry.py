"""OpenTelemetry for the trial: its span attributes, the ``rea.*`` metrics, trace propagation
to a job's process and TensorBoard folders.

Spans come from ``temporalio.contrib.opentelemetry.TracingInterceptor`` (client → workflow →
activity), from the trainer ("train", "epoch") and from a job's process, which joins its
launcher's trace through the W3C ``TRACEPARENT`` variable. Where they go is set up once per
process by ``observability.setup``.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from opentelemetry import metrics, propagate, trace
from temporalio import activity

from contracts import TrialResult, TrialSpec

_meter = metrics.get_meter("openrea")
# Proxies until a provider is installed: instruments made at import still export afterwards.
TRIALS = _meter.create_counter("rea.trials", unit="{trial}", description="Trials by end state.")
DEVICE_HOURS = _meter.create_counter(
    "rea.device_hours", unit="h", description="Device-hours charged, by campaign and phase."
)
QUEUE_LATENCY = _meter.create_histogram(
    "rea.activity.queue_latency",
    unit="s",
    description="From an activity attempt's scheduling to its start on a worker.",
)

# ---- the trial's attributes and metrics ------------------------------------------------------


def trial_attributes(spec: TrialSpec) -> dict[str, Any]:
    """What links a span to its campaign, hypotheses, trial and planned cost."""
    return {
        "rea.campaign_id": spec.campaign_id,
        "rea.trial_id": spec.trial_id,
        "rea.hypothesis_ids": list(spec.hypothesis_ids),
        "rea.phase": spec.phase,
        "rea.arm": spec.arm,
        "rea.seed": spec.model.seed,
        "rea.estimated_device_hours": spec.estimated_device_hours,
    }


def result_attributes(result: TrialResult) -> dict[str, Any]:
    """How the trial ended and what it cost."""
    found: dict[str, Any] = {"rea.state": result.state, "rea.device_hours": result.device_hours}
    if result.validation is not None:
        for name, value in result.validation.model_dump().items():
            found[f"rea.validation.{name}"] = value
    return found


def start_trial(spec: TrialSpec) -> None:
    """Tag the current span (the activity's, or a job's) with the trial."""
    trace.get_current_span().set_attributes(trial_attributes(spec))


def end_trial(spec: TrialSpec, result: TrialResult) -> TrialResult:
    """Tag the current span with the outcome and count the trial and its cost."""
    trace.get_current_span().set_attributes(result_attributes(result))
    TRIALS.add(1, {"state": result.state, "phase": spec.phase})
    DEVICE_HOURS.add(result.device_hours, {"campaign_id": spec.campaign_id, "phase": spec.phase})
    return result


def record_queue_latency() -> None:
    """Seconds this activity attempt waited in its task queue for a worker."""
    info = activity.info()
    # Both times are the server's: no clock skew between hosts.
    waited = info.started_time - info.current_attempt_scheduled_time
    QUEUE_LATENCY.record(max(waited.total_seconds(), 0.0), {"activity": info.activity_type})


# ---- a job's process joins its launcher's trace ------------------------------------------


def trace_env() -> dict[str, str]:
    """``TRACEPARENT`` (and ``TRACESTATE``) of the current span, for a child process."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {key.upper(): value for key, value in carrier.items()}


def context_from_env(env: Mapping[str, str] = os.environ) -> Any:
    """The context a parent process handed over in ``TRACEPARENT``; empty without it."""
    carrier = {key.lower(): env[key] for key in ("TRACEPARENT", "TRACESTATE") if key in env}
    return propagate.extract(carrier)


def tensorboard_root(data_dir: Path) -> Path:
    """The folder of every campaign's TensorBoard runs."""
    return data_dir / "tensorboard"


def tensorboard_dir(data_dir: Path, spec: TrialSpec) -> Path:
    """Where a trial's TensorBoard event files go: one run per trial, one folder per campaign
    (``rea tensorboard CAMPAIGN`` points TensorBoard at it)."""
    return tensorboard_root(data_dir) / spec.campaign_id / spec.trial_id
